"""The log-softmax as a kernel (:class:`nrm.layers.attention.LogSoftmax`): the output of
classifiers trained with ``nll_loss`` (PyTorch's MNIST example ends with ``F.log_softmax``),
linearized at the forward value as the softmax is (AttnLRP Prop. 3.1's construction).

Exact first: the kernel in fractions against its closed form q(x_i | y_j) = x_i (δ_ij − s_i) / y_j,
q(⊥ | y_j) = (y_j − x_j + Σ_i s_i x_i) / y_j; then the engine against the exact oracle and the
explicit reference at every layer for several rules; L1, L9 (its W is the Jacobian), the map
applied as itself against its dense weight, every spelling of the call, float32, and the
refusals by name. ``check-layer`` runs on it with every built-in kind (tests/test_layers.py).
"""

from __future__ import annotations

from fractions import Fraction

import nets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from agreement import agree
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError
from nrm.linear import LogSoftmaxMap
from nrm_verify import laws
from nrm_verify.references.exact_dag import ExactGraph

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.rules.AlphaBeta(2, 1),
         nrm.rules.Flat(), nrm.presets.EpsilonPlus(), nrm.presets.EpsilonGammaFlat()]


class LogSoftmaxOfInput(nn.Module):
    def forward(self, x):
        return F.log_softmax(x, dim=-1).flatten(1)


def classifier(seed: int = 0, spelling=None) -> nn.Module:
    """Linear → ReLU → Linear → log-softmax over the classes (dim 1), float64."""
    last = spelling or nn.LogSoftmax(dim=1)
    return nets.seeded(nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), last).double().eval(), seed)


def batch(n: int = 3, seed: int = 1, shape=(5,)) -> torch.Tensor:
    return torch.randn((n,) + tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=D)


# -- the kernel in closed form, exactly -------------------------------------------------------


def test_log_softmax_kernel_is_the_jacobian_over_the_output_exactly():
    """q(x_i | y_j) = x_i (δ_ij − s_i) / y_j and q(⊥ | y_j) = (y_j − x_j + Σ_i s_i x_i) / y_j under
    LRP-0, in fractions of the float64 x, s and y; columns sum to one; no edge across groups."""
    x = batch(1, seed=5, shape=(2, 3))
    graph = ExactGraph(LogSoftmaxOfInput().eval(), x, nrm.rules.Zero())
    l = next(b.index for b in graph.network.blocks if b.kind == "linear")
    q, qbot = graph.kernels[l]
    fr = lambda t: np.array([Fraction(float(v)) for v in t.reshape(-1)], dtype=object)  # noqa: E731
    xs, s, y = fr(x), fr(torch.softmax(x, -1)), fr(torch.log_softmax(x, -1))
    for g in range(2):
        group = range(3 * g, 3 * g + 3)
        for j in group:
            for i in group:
                assert q[i, j] == xs[i] * ((1 if i == j else 0) - s[i]) / y[j]
            assert qbot[j] == (y[j] - xs[j] + sum(s[i] * xs[i] for i in group)) / y[j]
            assert sum(q[:, j]) + qbot[j] == 1
        for i in group:
            assert all(q[i, j] == 0 for j in range(6) if j not in group)


def test_log_softmax_relevance_is_gradient_times_input_of_the_log_probability():
    """Explaining log s_c: the logits get x_c (1 − s_c) and −x_i s_i (i ≠ c), ⊥ gets −H(s) = Σ s x − LSE."""
    model = nn.Sequential(nn.LogSoftmax(dim=1)).double().eval()
    x = batch(2, seed=6, shape=(4,))
    m = nrm.explain(model, x, target=2, rules=nrm.rules.Zero())
    s = torch.softmax(x, 1)
    want = -x * s
    want[:, 2] = x[:, 2] * (1 - s[:, 2])
    torch.testing.assert_close(m.relevance("input"), want, rtol=1e-12, atol=1e-14)
    entropy = -(s * torch.log(s)).sum(1)
    torch.testing.assert_close(m.absorbed("input") * m.f, -entropy, rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 2])


def test_the_kernel_is_derived_from_the_definition_in_sympy():
    """From y_j = x_j − log Σ_i e^{x_i} alone (3 symbols): ∂y_j/∂x_i = δ_ij − s_i, the remainder
    b_j = y_j − Σ_i x_i ∂y_j/∂x_i = Σ_i s_i x_i − log Σ_i e^{x_i} = −H(s), every column sums to one
    (L1: Σ_i x_i W_ij / y_j + b_j / y_j = 1), and the relevance y_j q(x_i | y_j) is x_i ∂y_j/∂x_i
    (L9), as identities; and the kind's float64 map equals the derived Jacobian at a point."""
    import sympy as sp

    xs = sp.symbols("x0:3", real=True)
    Z = sum(sp.exp(v) for v in xs)
    s = [sp.exp(v) / Z for v in xs]
    y = [v - sp.log(Z) for v in xs]
    W = [[sp.diff(y[j], xs[i]) for j in range(3)] for i in range(3)]
    for i in range(3):
        for j in range(3):
            assert sp.simplify(W[i][j] - ((1 if i == j else 0) - s[i])) == 0
    entropy = -sum(si * sp.log(si) for si in s)
    for j in range(3):
        b = y[j] - sum(xs[i] * W[i][j] for i in range(3))
        assert sp.simplify(sp.expand_log(b + entropy, force=True)) == 0
        assert sp.simplify(sum(xs[i] * W[i][j] / y[j] for i in range(3)) + b / y[j] - 1) == 0
        for i in range(3):
            assert sp.simplify(y[j] * (xs[i] * W[i][j] / y[j]) - xs[i] * sp.diff(y[j], xs[i])) == 0
    point = [0.5, -1.25, 2.0]
    model = nn.Sequential(nn.LogSoftmax(dim=1)).double().eval()
    m = nrm.explain(model, torch.tensor([point], dtype=D), target=0, rules=nrm.rules.Zero())
    (lmap,) = [t for t in m.engine.maps.values() if isinstance(t, LogSoftmaxMap)]
    dense = lmap.weight[0, 0].numpy()
    at = dict(zip(xs, point))
    derived = np.array([[float(W[i][j].subs(at)) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(dense, derived, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_log_softmax_map_applied_as_itself_equals_its_dense_weight(dim):
    """LogSoftmaxMap applies W = I − s 1ᵀ without forming it: forward, transpose (on R·B stacked
    rows) and magnitude Σ_j |x_j| |W_jk| equal those of the dense W; forward + bias = log_softmax."""
    gen = torch.Generator().manual_seed(21)
    x = torch.randn((2, 3, 4, 5), generator=gen, dtype=D)
    model = nets.seeded(nn.Sequential(nn.LogSoftmax(dim=dim + 1), nn.Flatten(), nn.Linear(60, 2)).double().eval(), 22)
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero())
    (lmap,) = [t for t in m.engine.maps.values() if isinstance(t, LogSoftmaxMap)]
    own, dense = lmap.own_weight(), lmap.weight
    assert own.dim() == 3 and dense.shape == own.shape + own.shape[-1:]
    rows = torch.randn((6,) + tuple(x.shape[1:]), generator=gen, dtype=D)
    for t in (x, rows):
        torch.testing.assert_close(lmap.forward(t, own), lmap.forward(t, dense), rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(lmap.transpose(t, own, x.shape[1:]), lmap.transpose(t, dense, x.shape[1:]),
                                   rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(lmap.magnitude(x), lmap.forward(x.abs(), dense.abs()), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(lmap.forward(x, own) + lmap.bias, torch.log_softmax(x, dim + 1), rtol=1e-13,
                               atol=1e-14)


# -- engine = exact oracle = explicit reference -----------------------------------------------


@pytest.mark.parametrize("rules", RULES, ids=repr)
def test_classifier_ending_in_log_softmax_engine_equals_oracle_and_reference(rules):
    model, x = classifier(seed=3), batch(1, seed=4)
    m = agree(model, x, 1, rules)
    assert float(laws.normalization(m).deviation) <= 1e-12
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])


@pytest.mark.parametrize("rules", [nrm.rules.Zero(), nrm.rules.Epsilon(0.01)], ids=repr)
def test_log_softmax_inside_the_network_agrees(rules):
    """A log-softmax feeding a linear layer (the kernel under a rule's stabilizer too)."""
    inner = nn.Sequential(nn.Unflatten(1, (2, 3)), LogSoftmaxOfInput())
    model = nets.seeded(nn.Sequential(nn.Linear(4, 6), inner, nn.Linear(6, 2)).double().eval(), 8)
    x = batch(1, seed=9, shape=(4,))
    m = agree(model, x, 0, rules)
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_l9_holds_through_the_log_softmax():
    """LRP-0 through the log-softmax is Gradient × Input (W is the Jacobian), on the whole model."""
    result = laws.gradient_x_input(classifier(seed=10), batch(3, seed=11), 2)
    assert result.holds is True, result.detail


@pytest.mark.parametrize("spelling", [
    nn.LogSoftmax(dim=1), nn.LogSoftmax(dim=-1),
    nets.Fn(lambda t: F.log_softmax(t, dim=1)), nets.Fn(lambda t: torch.log_softmax(t, 1)),
    nets.Fn(lambda t: t.log_softmax(-1)),
], ids=["module", "module-neg", "F", "torch", "method"])
def test_every_spelling_is_read_and_gives_the_same_measure(spelling):
    x = batch(2, seed=12)
    base = nrm.explain(classifier(seed=13), x, target=3)
    m = nrm.explain(classifier(seed=13, spelling=spelling), x, target=3)
    torch.testing.assert_close(m.marginal("input"), base.marginal("input"), rtol=0, atol=0)
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_presets_give_the_log_softmax_lrp_0():
    """Like the softmax, the log-softmax is in the presets' normalizations (LRP-0)."""
    model = classifier(seed=14)
    m = nrm.explain(model, batch(1, seed=15), target=0, rules=nrm.presets.EpsilonGammaFlat())
    (block,) = [b for b in m.network.blocks if b.name == "3"]
    assert isinstance(block.rule, nrm.rules.Zero), block.rule


def test_float32_gives_no_nan_and_keeps_l1():
    model = classifier(seed=16).float()
    x = batch(4, seed=17).float()
    m = nrm.explain(model, x, target=[int(i) for i in model(x).argmax(1)])
    for name, (mm, bottom) in m.marginals(absorber=True).items():
        assert bool(torch.isfinite(mm).all()) and bool(torch.isfinite(bottom).all()), name
    assert float(laws.normalization(m).deviation) <= 1e-4


def test_a_certain_class_has_log_probability_0_and_is_refused_by_name():
    """Confident logits in float32: s_c = 1 and y_c = log 1 = 0 exactly — the measure π = R / f_c is
    undefined, so explain says so (ZeroOutputError naming the samples) instead of dividing by 0."""
    model = classifier(seed=16).float()
    x = batch(4, seed=17).float() * 30
    with torch.no_grad():
        out = model(x)
    certain = [i for i in range(4) if float(out[i].max()) == 0.0]
    assert certain, out
    with pytest.raises(nrm.ZeroOutputError, match="f_c"):
        nrm.explain(model, x, target=[int(i) for i in out.argmax(1)])


# -- refusals --------------------------------------------------------------------------------------


class BatchLogSoftmax(nn.Module):
    def forward(self, x):
        return torch.log_softmax(x, dim=0)


class NoDim(nn.Module):
    def forward(self, x):
        return F.log_softmax(x, dim=None)


class Masked(nn.Module):
    def forward(self, x):
        return F.log_softmax(x.masked_fill(torch.arange(x.shape[1]) == 0, float("-inf")), dim=1)


@pytest.mark.parametrize("module,words", [
    (BatchLogSoftmax(), ("log_softmax", "batch dimension")),
    (NoDim(), ("log_softmax", "explicit dim")),
    (Masked(), ("log_softmax", "−inf", "explain the logits")),
], ids=["batch", "no-dim", "masked"])
def test_unreadable_log_softmax_is_named_and_the_model_untouched(module, words):
    x = batch(2, seed=18, shape=(4,))
    model = nn.Sequential(nets.seeded(nn.Linear(4, 4), 19), module).double().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning) if isinstance(module, NoDim) else _nothing():
        with pytest.raises(UnsupportedOperationError) as info:
            nrm.explain(model, x, target=0)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
