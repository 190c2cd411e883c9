"""Writes into a slice, ``t[index] = v`` and ``t[index] += v`` (torchvision's MViT adds its
relative-position bias as ``attn[:, :, 1:, 1:] += rel``; class tokens and padding are written
as ``h[:, 0] = …``), read as an index map over t's and v's neurons
(``nrm.capture._Recorder._setitem``, ``nrm.capture.overwrite_route``): each neuron of the
result is the neuron of t or of v whose value it holds, so relevance moves with the values.

For each model (float64): f is the model's, bitwise; L1 at every layer; LRP-0 = Gradient ×
Input (L9: linear maps, ReLU and index maps only); the engine equals the exact oracle
(sequential models) and the explicit reference under four rule sets. The model is untouched.
What is not a per-sample index map is refused by name, and the capture fails no later read.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from agreement import seeded
from torch import nn

import nrm
from nrm.capture import capture, overwrite_route
from nrm_verify.references.explicit import reference_lrp
from nrm_verify.references.oracle import ExactNetwork

pytestmark = pytest.mark.usefixtures("single_thread")

D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.presets.EpsilonGammaFlat()]


def _x(*shape, seed=1):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class Overwrite(nn.Module):
    """h[:, 1:3] = b(x): two input-derived tensors."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 6), nn.Linear(4, 2), nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        h[:, 1:3] = self.b(x)
        return self.head(F.relu(h))


class AddInto(nn.Module):
    """h[:, 1:4] += b(x), Python's h.__setitem__(i, h[i].__iadd__(b(x)))."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 6), nn.Linear(4, 3), nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        h[:, 1:4] += self.b(x)
        return self.head(F.relu(h))


class ConstantInto(nn.Module):
    """h[:, 0] = 0.5 and h[:, 4:6] = a parameter (broadcast over the batch)."""

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(4, 6), nn.Linear(6, 3)
        self.fill = nn.Parameter(torch.tensor([0.25, -0.5]))

    def forward(self, x):
        h = self.a(x)
        h[:, 0] = 0.5
        h[:, 4:6] = self.fill
        return self.head(F.relu(h))


class Interleave(nn.Module):
    """out = zeros; out[:, ::2] = a(x); out[:, 1::2] = c(x): input-derived values into a constant."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.head = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 2)

    def forward(self, x):
        out = x.new_zeros(x.shape[0], 6)
        out[:, ::2] = self.a(x)
        out[:, 1::2] = F.relu(self.c(x))
        return self.head(out)


class RelativeBias(nn.Module):
    """MViT's ``attn[:, :, 1:, 1:] += rel``: a constant bias into a slice of a 4-d map, then a
    write of an input-derived row into another slice."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(3 * 4 * 4, 2)
        self.rel = nn.Parameter(torch.zeros(3, 3, 3))

    def forward(self, x):
        a = self.conv(x)
        a[:, :, 1:, 1:] += self.rel
        a[:, :, 0, :] = F.relu(a[:, :, 3, :])
        return self.head(a.flatten(1))


class Scatter(nn.Module):
    """h[:, idx] = v with a constant index tensor, and a broadcast value h[:, :, 0:1] = v[:, 1:2, :]."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 12), nn.Linear(4, 3), nn.Linear(12, 2)
        self.register_buffer("idx", torch.tensor([5, 0, 9]))

    def forward(self, x):
        h = self.a(x)
        h[:, self.idx] = self.b(x)
        g = h.reshape(x.shape[0], 3, 4)
        g[:, :, 0:1] = g[:, 1:2, 1:2]
        return self.head(F.relu(g.reshape(x.shape[0], 12)))


MODELS = {"overwrite": (Overwrite, (3, 4)), "add-into": (AddInto, (3, 4)), "constant": (ConstantInto, (3, 4)),
          "interleave": (Interleave, (3, 4)), "relative-bias": (RelativeBias, (2, 2, 4, 4)),
          "scatter": (Scatter, (3, 4))}


def _model(name: str, seed: int = 0):
    make, shape = MODELS[name]
    return seeded(make(), seed), _x(*shape, seed=seed + 1)


@pytest.mark.parametrize("name", list(MODELS))
def test_read_as_an_index_map_faithful_normalized_and_gradient_x_input(name):
    model, x = _model(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = {c.kind.name for c in capture(model, x).calls if c.kind is not None}
    assert "IndexSelect" in kinds or "Index" in kinds, kinds
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero(), check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    for layer in m.canonical_names():
        total = m.marginal(layer).reshape(x.shape[0], -1).sum(1) + m.absorbed(layer)
        if not m.network.sequential:
            total = total + m.bypassing(layer)
        assert float((total - 1).abs().max()) <= 1e-12, layer
    xx = x.clone().requires_grad_(True)
    f = model(xx)[:, 1]
    g, = torch.autograd.grad(f.sum(), xx)
    torch.testing.assert_close(m.marginal("input"), g * x / f.detach().reshape(-1, *[1] * (x.dim() - 1)),
                               rtol=1e-9, atol=1e-12)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("rules", RULES, ids=repr)
@pytest.mark.parametrize("name", list(MODELS))
def test_engine_equals_the_reference_and_the_oracle(name, rules):
    model, x = _model(name, seed=2)
    m = nrm.explain(model, x, target=0, rules=rules)
    ref = reference_lrp(model, x, 0, rules)
    torch.testing.assert_close(m.relevance("input"), ref.relevance["input"].reshape(x.shape), rtol=1e-9,
                               atol=1e-12)
    if m.network.sequential:  # the oracle explains one sample
        exact = ExactNetwork.from_model(model, x[:1], rules).explain(target=0)
        want = torch.tensor([float(v) for v in exact.marginal("input").reshape(-1)], dtype=D)
        scale = max(1.0, float(exact.total_variation()))
        assert float((m.marginal("input")[:1].reshape(-1) - want).abs().max()) <= 1e-9 * scale


def test_the_written_neurons_of_the_old_value_take_nothing():
    """h[:, 1:3] = b(x): the old h[:, 1:3] is overwritten, so a's output neurons 1 and 2 (and the
    walks through them) carry no relevance; the rest of a and b do (where the ReLU passes)."""
    model, x = _model("overwrite")
    m = nrm.explain(model, x, target=0)
    a = m.marginal("a")
    assert torch.equal(a[:, 1:3], torch.zeros_like(a[:, 1:3]))
    assert bool((a[:, [0, 3, 4, 5]] != 0).any()) and bool((m.marginal("b") != 0).any())


def test_the_route_of_a_write():
    t = torch.zeros(2, 5)
    route, v = overwrite_route(t, (slice(None), slice(1, 3)), torch.ones(2, 2), True, "here")
    assert route.tolist() == [0, 5, 6, 3, 4] and v.shape == (2, 2)
    route, v = overwrite_route(t, (slice(None), 4), torch.tensor(7.0), False, "here")  # a constant, expanded
    assert route.tolist() == [0, 1, 2, 3, 5] and v.shape == (2,) and v.tolist() == [7.0, 7.0]
    route, _ = overwrite_route(torch.zeros(2, 2, 3), (slice(None), slice(None), 0), torch.ones(2, 1), True, "here")
    assert route.tolist() == [6, 1, 2, 6, 4, 5]  # one value broadcast over dimension 1: two neurons hold it


class Bad(nn.Module):
    def __init__(self, write):
        super().__init__()
        self.a, self.b, self.write = nn.Linear(4, 6), nn.Linear(4, 6), write

    def forward(self, x):
        h, v = self.a(x), self.b(x)
        self.write(h, v)
        return h.sum(1, keepdim=True)


def _at_input_positions(h, v):
    h[:, (v[0] > 0).nonzero().flatten()[:1]] = 0.0


def _elsewhere_then_write(h, v):
    w = h[:, 3:]
    w.mul_(2)  # changes h through another view, then the write below
    h[:, :2] = v[:, :2]


def _read_changed_view(h, v):
    w = h[:, :3]
    h[:, 1:2] = v[:, :1]
    h.add_(w.sum(1, keepdim=True))  # w changed by the write: reading it is refused


@pytest.mark.parametrize("write, error, words", [
    (lambda h, v: h.__setitem__(0, v[0]), nrm.UnsupportedOperationError, "across samples"),
    (lambda h, v: h.__setitem__((slice(None), slice(0, 2)), v[:1, :2]), nrm.UnsupportedOperationError,
     "batch dimension first"),
    (lambda h, v: h.__setitem__((slice(None), slice(0, 2)), v[:, :2].flip(0)), None, None),
    (_at_input_positions, nrm.errors.DataDependentControlFlowError, "data-dependent"),
    (_elsewhere_then_write, nrm.errors.InPlaceViewError, "changed in place"),
    (_read_changed_view, nrm.errors.InPlaceViewError, "changed in place"),
    (lambda h, v: h.__setitem__((slice(None), slice(1, 6)), h[:, 0:5]), nrm.UnsupportedOperationError, "overlapping"),
], ids=["batch-index", "value-without-batch", "flipped-samples", "input-positions", "changed-elsewhere",
        "stale-view", "overlap"])
def test_what_is_not_a_per_sample_index_map_is_refused_by_name(write, error, words):
    model = seeded(Bad(write))
    x = _x(2, 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if error is None:  # v flipped along the batch is another input-derived tensor: read (flip is refused by name)
        with pytest.raises(nrm.UnsupportedOperationError, match="flip"):
            nrm.explain(model, x, target=0)
    else:
        with pytest.raises(error, match=words):
            nrm.explain(model, x, target=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


class CacheStep(nn.Module):
    """A recurrence's cache (RWKV's state): a constant tensor read by one step (``h − state``), then
    written with the step's value (``state[:] = h``) and read again: the first read keeps the
    value it read (``twin=True``: the same computation written out of place)."""

    def __init__(self, twin: bool = False):
        super().__init__()
        self.a, self.b, self.head, self.twin = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2), twin

    def forward(self, x):
        state = torch.full((x.shape[0], 4), 0.5, dtype=x.dtype)
        h = torch.relu(self.a(x))
        y = h - state
        if self.twin:
            state = h.clone()
        else:
            state[:, :] = h
        return self.head(torch.relu(self.b(y)) + state)


@pytest.mark.parametrize("rules", RULES, ids=["lrp0", "eps", "gamma", "EpsilonGammaFlat"])
def test_a_constant_read_then_written_in_place_keeps_the_value_it_was_read_with(rules):
    """The capture gives the first read a copy of the constant before the write (it was a map
    mismatch before 2026-12-07, "max |W a + b − z| = …", or a stale measure without the check):
    f the model's, every map checked, L1 at every layer (the write's layers are a cut only with
    what bypasses them), the engine the explicit reference's."""
    x = _x(1, 3)
    model = seeded(CacheStep())
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    for name in m.layers:
        total = m.marginal(name).flatten(1).sum(1) + m.absorbed(name) + m.bypassing(name)
        assert float((total - 1).abs().max()) <= 1e-12, name
    ref = reference_lrp(model, x, 1, rules)
    torch.testing.assert_close(m.marginal("input"), ref.marginal("input"), rtol=1e-12, atol=1e-13)


def test_under_lrp0_the_cache_step_is_its_out_of_place_twin():
    """Under LRP-0 (no rule on the write's placement of the new value) the measure at the input
    is the twin's that writes ``state = h.clone()``."""
    x = _x(1, 3)
    m = nrm.explain(seeded(CacheStep()), x, target=1, rules=nrm.rules.Zero())
    w = nrm.explain(seeded(CacheStep(twin=True)), x, target=1, rules=nrm.rules.Zero())
    torch.testing.assert_close(m.marginal("input"), w.marginal("input"), rtol=1e-12, atol=1e-13)
