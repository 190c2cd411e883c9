"""Issue 12's findings in the core, each pinned by a test that failed before the fix:
a flattened pooled output, a stabilizer below the dtype's range, start vectors that are not
finite or overflow, unions of many atoms, arguments that escaped nrm's errors."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import nrm
from nrm.errors import ArgumentError, EventTooLargeError
from nrm_verify import laws

pytestmark = pytest.mark.usefixtures("single_thread")


def _seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


# -- 1. a flatten of a pooled convolution as the model's output (SqueezeNet, all-convolutional nets)


def test_a_flattened_pooled_output_has_marginals_at_every_layer():
    model = _seeded(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).double())
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    m = nrm.explain(model, x, target=1)
    for layer in ("input", "0", "2", "3"):
        total = m.marginal(layer).reshape(2, -1).sum(1) + m.absorbed(layer)
        torch.testing.assert_close(total, torch.ones(2, dtype=torch.float64))
    assert m.marginal("3").shape == (2, 4) and m.marginal("2").shape == (2, 4, 1, 1)


# -- 2. a stabilizer below what the dtype can hold ------------------------------------------------


@pytest.mark.parametrize(("dtype", "eps"), [(torch.float32, 1e-300), (torch.float16, 1e-8)])
@pytest.mark.parametrize("make", [lambda e: nrm.rules.Epsilon(e), lambda e: nrm.rules.AlphaBeta(2, 1, stabilizer=e),
                                  lambda e: nrm.rules.Gamma(0.25, stabilizer=e)], ids=["epsilon", "alphabeta", "gamma"])
def test_a_stabilizer_that_rounds_to_zero_gives_no_nan(dtype, eps, make):
    """ε > 0 in Python rounds to 0 in the dtype: a zero denominator then goes to ⊥, as for ε = 0."""
    model = nn.Sequential(nn.Linear(3, 2, bias=False)).to(dtype).eval()
    m = nrm.explain(model, torch.zeros(1, 3, dtype=dtype), start=torch.ones(1, 2, dtype=dtype), rules=make(eps))
    assert torch.equal(m.marginal("input"), torch.zeros(1, 3, dtype=dtype))
    assert float(m.absorbed("input")) == 1.0


# -- 4. start vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "error", "words"), [
    (torch.tensor([[float("nan"), 1.0, 0.0]]), nrm.NonFiniteError, "NaN or Inf"),
    (torch.tensor([[float("inf"), 1.0, 0.0]]), nrm.NonFiniteError, "NaN or Inf"),
    (torch.tensor([[1e308, 1e308, 0.0]], dtype=torch.float64), nrm.NonFiniteError, "overflows"),
    ([[1.0, 2.0, 3.0]], ArgumentError, "tensor"),
    (torch.ones(1, 3, dtype=torch.complex128), nrm.DtypeMismatchError, "real numbers"),
])
def test_bad_start_vectors_are_named(start, error, words):
    model = _seeded(nn.Sequential(nn.Linear(4, 3)).double())
    with pytest.raises(error, match=words):
        nrm.explain(model, torch.ones(1, 4, dtype=torch.float64), start=start)


# -- 6. unions of many atoms ----------------------------------------------------------------------


def test_a_union_of_atoms_of_one_layer_is_one_atom():
    model = _seeded(nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 3)).double())
    m = nrm.explain(model, torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)),
                    target=0)
    start = time.perf_counter()
    event = nrm.At("0", index=[0])
    for i in range(1, 18):
        event = event | nrm.At("0", index=[i])
    assert len(event.terms) == 1
    torch.testing.assert_close(m(event), m(nrm.At("0", index=range(18))), rtol=0, atol=0)
    assert time.perf_counter() - start < 5  # 62 s and 1.7 GB before


def test_a_union_across_layers_grows_linearly_and_equals_inclusion_exclusion():
    model = _seeded(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double())
    m = nrm.explain(model, torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)),
                    target=1)
    atoms = [nrm.At(layer, index=[i]) for layer in ("input", "0", "2") for i in range(3)]
    union = atoms[0]
    for a in atoms[1:]:
        union = union | a
    assert len(union.terms) <= len(atoms)  # the disjoint decomposition, not 2⁹ − 1
    # the same event by brute force: 1 − μ(no atom holds) on single walks
    everything = m.measure(nrm.OMEGA)
    nothing = m(~atoms[0] & ~atoms[1] & ~atoms[2] & ~atoms[3] & ~atoms[4] & ~atoms[5] & ~atoms[6] & ~atoms[7]
                & ~atoms[8])
    torch.testing.assert_close(m(union), everything - nothing)
    torch.testing.assert_close(m(~union), nothing)


_DECOMPOSE = """
import nrm
atoms = [nrm.At(layer, index=[i]) for layer in ("input", "0", "2") for i in range(3)]
union = atoms[0]
for a in atoms[1:]:
    union = union | a
for event in (atoms[0] | atoms[4], union, (atoms[1] | atoms[5]) & ~atoms[8], union - atoms[2]):
    print(sorted(sorted(map(repr, cylinder)) + [c] for cylinder, c in event.terms.items()))
"""


def test_an_event_has_one_decomposition_whatever_the_hash_seed():
    """The cylinders an event is written with decide how μ(event) is summed (and how the
    proof report prints it): they must not follow Python's per-process string hashing."""
    import os
    import subprocess
    import sys

    outputs = set()
    for seed in ("0", "1", "5", "77"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _DECOMPOSE], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1, outputs


def test_the_complement_of_an_atom_is_one_atom():
    a = nrm.At("0", index=[1, 2], absorber=True)
    assert len((~a).terms) == 1 and repr(~a) == "~At('0', index=[1, 2], absorber=True)"
    assert ~(~a) == a
    assert (a & ~a) == nrm.EMPTY


def test_an_event_that_would_blow_up_is_refused_at_once():
    union = [nrm.At("input", index=[i]) | nrm.At("0", index=[i]) for i in range(15)]
    start = time.perf_counter()
    with pytest.raises(EventTooLargeError, match="cylinders"):
        event = union[0]
        for u in union[1:]:
            event = event & u
    assert time.perf_counter() - start < 5


# -- 9. arguments that escaped nrm's errors --------------------------------------------------------


@pytest.mark.parametrize(("act", "error"), [
    (lambda m: nrm.At(0), ArgumentError),
    (lambda m: nrm.At("0") & 3, ArgumentError),
    (lambda m: m.marginal("input", within="0"), ArgumentError),
    (lambda m: m.marginal("input", within=[]), ArgumentError),
    (lambda m: m.conditional(nrm.At("0"), given="x"), ArgumentError),
    (lambda m: m.joint("0", "0"), ArgumentError),
    (lambda m: m.joint("0", "1"), ArgumentError),  # "1" is the ReLU of layer "0": the same layer
    (lambda m: m.joint("input", "0", by="pixel"), ArgumentError),
    (lambda m: m.walk("012"), ArgumentError),
    (lambda m: nrm.At("0", index=[True]), nrm.EventIndexError),
    (lambda m: nrm.At("0", index=torch.tensor([True, False])), nrm.EventIndexError),
    (lambda m: nrm.At("0", index="1"), nrm.EventIndexError),
    (lambda m: nrm.At("0", absorber="yes"), ArgumentError),
])
def test_bad_arguments_raise_nrm_errors(act, error):
    model = _seeded(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double())
    m = nrm.explain(model, torch.ones(1, 3, dtype=torch.float64), target=0)
    with pytest.raises(error) as info:
        act(m)
    assert isinstance(info.value, nrm.NRMError)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"target": True}, nrm.ShapeError),
    ({"target": "1"}, nrm.ShapeError),
    ({"target": [0, None]}, nrm.ShapeError),
    ({"target": 2 ** 70}, nrm.ShapeError),
    ({"target": 0, "chunk": 0}, ArgumentError),
    ({"target": 0, "chunk": -1}, ArgumentError),
    ({"target": 0, "chunk": 2.5}, ArgumentError),
    ({"target": 0, "check": "yes"}, ArgumentError),
    ({"target": 0, "output": 3}, ArgumentError),
])
def test_bad_explain_arguments_raise_nrm_errors(kwargs, error):
    model = _seeded(nn.Sequential(nn.Linear(3, 2)).double())
    with pytest.raises(error):
        nrm.explain(model, torch.ones(2, 3, dtype=torch.float64), **kwargs)


def test_empty_and_meta_inputs_are_named():
    model = _seeded(nn.Sequential(nn.Linear(3, 2)).double())
    with pytest.raises(nrm.ShapeError, match="empty batch"):
        nrm.explain(model, torch.ones(0, 3, dtype=torch.float64), target=0)
    with pytest.raises(nrm.DeviceMismatchError, match="meta"):
        nrm.explain(model.to("meta"), torch.ones(1, 3, dtype=torch.float64, device="meta"), target=0)


def test_a_rule_without_usable_shares_is_named():
    class NoShares(nrm.rules.Rule):
        pass

    class EmptyShares(nrm.rules.Rule):
        def shares(self):
            return ()

    model = _seeded(nn.Sequential(nn.Linear(3, 2)).double())
    for rule in (NoShares(), EmptyShares()):
        with pytest.raises(nrm.RuleParameterError, match="shares()"):
            nrm.explain(model, torch.ones(1, 3, dtype=torch.float64), target=0, rules=rule)


def test_zbox_bounds_of_the_wrong_shape_are_named():
    model = _seeded(nn.Sequential(nn.Linear(3, 2)).double())
    with pytest.raises(nrm.RuleParameterError, match="does not broadcast"):
        nrm.explain(model, torch.ones(1, 3, dtype=torch.float64), target=0,
                    rules=nrm.rules.ZBox(torch.zeros(2), torch.ones(2)))


def test_a_value_that_leaves_its_domain_is_named_where_it_first_is():
    """log of a negative pre-activation, then x − mean(x) (a decomposed subtraction): the NaN
    is not a mismatch of the decomposition but the model's own value, named where it starts."""
    class LogCentred(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.log(self.a(x))
            return self.b(h - h.mean(-1, keepdim=True))

    model = _seeded(LogCentred().double())
    x = torch.ones(1, 4, dtype=torch.float64)
    assert bool((model.a(x) < 0).any())  # the seeded weights give a negative pre-activation
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(nrm.NonFiniteError, match=r"first at torch\.log in LogCentred.*outside its domain"):
        nrm.explain(model, x, target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class EmptyPart(torch.nn.Module):
    """A slice that selects nothing, concatenated back (Phi-3's rotary part when the whole head
    rotates: ``q[..., rotary_dim:]`` of zero width): a layer with no neurons."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a, self.b = torch.nn.Linear(4, 4).double(), torch.nn.Linear(4, 3).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(torch.cat([h[:, :4], h[:, 4:]], 1))


def test_a_layer_with_no_neurons_has_empty_marginals_and_activations():
    """``marginals()`` and ``activations()`` of a layer of zero neurons are empty tensors with the
    batch (they raised torch's "cannot reshape tensor of 0 elements" before 2026-12-08, found as a
    stranger on transformers' Phi-3); L1 and L9 hold at every layer."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m = nrm.explain(EmptyPart().eval(), x, target=0)
    empty = [n for n in m.layers if 0 in m.layer_shape(n)]
    assert empty
    every = m.marginals(absorber=True)
    for name in empty:
        assert every[name][0].shape == (3,) + tuple(m.layer_shape(name))
        assert m.activations(name).shape == (3,) + tuple(m.layer_shape(name))
        assert m.marginal(name).shape == (3,) + tuple(m.layer_shape(name))
    assert float(laws.normalization(m).deviation) <= 1e-13
    assert laws.gradient_x_input(EmptyPart().eval(), x, 0).holds  # L9's replay reads the empty layer's rows too
