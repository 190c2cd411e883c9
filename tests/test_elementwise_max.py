"""The elementwise maximum and minimum of two tensors — ``torch.maximum``, ``torch.max(a, b)``,
``Tensor.max(b)``, ``torch.minimum``, ``torch.min(a, b)`` — read as a max pooling over the pair
(``nrm.layers.fused.ElementwiseMaxDecomposition``): LightCNN's max-feature-map (the channels
split in two halves, their elementwise maximum), maxout of two branches, a floor or a bound.

For each (float64): f is the model's, bitwise; L1 at every layer; LRP-0 = Gradient × Input
(L9: ReLU-free linear maps and max only, no ties); the engine equals the explicit reference
under four rule sets. The larger operand takes its neuron's relevance; where a constant wins,
the neuron's relevance goes to ⊥. What it does not read is refused by name.
"""

from __future__ import annotations

import pytest
import torch
from agreement import seeded
from torch import nn

import nrm
from nrm.capture import capture
from nrm_verify import laws
from nrm_verify.references.explicit import reference_lrp

pytestmark = pytest.mark.usefixtures("single_thread")

D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.presets.EpsilonGammaFlat()]


def _x(*shape, seed=1):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class MaxFeatureMap(nn.Module):
    """LightCNN's MFM: a convolution to 2C channels, the elementwise maximum of the halves."""

    def __init__(self, op):
        super().__init__()
        self.conv, self.head, self.op = nn.Conv2d(2, 8, 3, padding=1), nn.Linear(4 * 4 * 4, 3), op

    def forward(self, x):
        a, b = self.conv(x).chunk(2, 1)
        return self.head(self.op(a, b).flatten(1))


OPS = {
    "torch.max(a, b)": lambda a, b: torch.max(a, b),
    "torch.maximum": torch.maximum,
    "Tensor.max(other)": lambda a, b: a.max(b),
    "Tensor.maximum": lambda a, b: a.maximum(b),
    "torch.min(a, b)": lambda a, b: torch.min(a, b),
    "torch.minimum": torch.minimum,
    "Tensor.minimum": lambda a, b: a.minimum(b),
    "broadcast over channels": lambda a, b: torch.maximum(a, b[:, :1]),
    "a constant floor": lambda a, b: torch.maximum(a, torch.full((1, 4, 4, 4), 0.1, dtype=D)),
    "a constant per-channel bound (min)": lambda a, b: torch.minimum(torch.zeros(4, 1, 1, dtype=D), a),
}


def _model(name: str, seed: int = 0):
    return seeded(MaxFeatureMap(OPS[name]), seed), _x(2, 2, 4, 4, seed=seed + 1)


@pytest.mark.parametrize("name", list(OPS))
def test_read_as_max_pooling_faithful_normalized_and_gradient_x_input(name):
    model, x = _model(name)
    assert "MaxPool" in {c.kind.name for c in capture(model, x).calls if c.kind is not None}
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero(), check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    for layer in m.canonical_names():
        total = m.marginal(layer).reshape(x.shape[0], -1).sum(1) + m.absorbed(layer) + m.bypassing(layer)
        assert float((total - 1).abs().max()) <= 1e-12, layer
    xx = x.clone().requires_grad_(True)
    f = model(xx)[:, 1]
    g, = torch.autograd.grad(f.sum(), xx)
    torch.testing.assert_close(m.marginal("input"), g * x / f.detach().reshape(-1, 1, 1, 1), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rules", RULES, ids=repr)
@pytest.mark.parametrize("name", list(OPS))
def test_engine_equals_the_reference(name, rules):
    model, x = _model(name, seed=2)
    m = nrm.explain(model, x, target=0, rules=rules)
    ref = reference_lrp(model, x, 0, rules)
    torch.testing.assert_close(m.relevance("input"), ref.relevance["input"].reshape(x.shape), rtol=1e-9, atol=1e-12)


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.maximum(self.a(x), self.b(x)))


def test_the_larger_operand_takes_the_relevance_and_a_winning_constant_gives_it_to_bottom():
    model = seeded(Two())
    x = _x(3, 3)
    m = nrm.explain(model, x, target=0)
    with torch.no_grad():
        a_wins = model.a(x) >= model.b(x)
    ra, rb = m.marginal("a"), m.marginal("b")
    assert torch.equal(rb[a_wins], torch.zeros_like(rb[a_wins]))
    assert torch.equal(ra[~a_wins], torch.zeros_like(ra[~a_wins]))
    floor = seeded(MaxFeatureMap(OPS["a constant floor"]))
    x = _x(2, 2, 4, 4)
    m = nrm.explain(floor, x, target=0, rules=nrm.rules.Zero())
    with torch.no_grad():
        a, _ = floor.conv(x).chunk(2, 1)
    assert bool((a < 0.1).any())  # the floor wins somewhere: those neurons' relevance is absorbed
    assert float(m.absorbed("input").abs().max()) > 0


class Op(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.a, self.op = nn.Linear(3, 4), op

    def forward(self, x):
        h = self.a(x)
        return self.op(h, torch.relu(h)).sum(1, keepdim=True)


@pytest.mark.parametrize("op, error, words", [
    (lambda h, r: torch.maximum(h, r[:1]), nrm.UnsupportedOperationError, "batch"),
    (lambda h, r: torch.maximum(h, torch.zeros(3, 1, 4, dtype=D)).sum(0), nrm.UnsupportedOperationError, "shapes"),
    (lambda h, r: torch.max(h, r, out=torch.empty_like(h)), nrm.UnsupportedOperationError, "out="),
    (lambda h, r: torch.min(h, 0, keepdim=True)[0], nrm.UnsupportedOperationError, "minimum along the batch"),
], ids=["derived-without-batch", "constant-batch-of-3", "out", "min-over-batch"])
def test_what_is_not_read_is_refused_by_name(op, error, words):
    model = seeded(Op(op))
    x = _x(2, 3)
    with pytest.raises(error, match=words):
        nrm.explain(model, x, target=0)


def test_a_maximum_computed_in_float32_inside_a_float64_model_is_read_widened():
    """The maximum of float32 copies in a float64 model (refused by name before 2026-12-07): the
    record is explained in float64 (nrm.capture.upcast), f is the model's float32 output and L1
    holds to 1e-12."""
    model = seeded(Op(lambda h, r: torch.maximum(h.to(torch.float32), r.to(torch.float32)) * 1.0))
    x = _x(2, 3)
    m = nrm.explain(model, x, target=0, check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 0].double())
    assert float(laws.normalization(m).deviation) <= 1e-12
