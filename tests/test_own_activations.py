"""Activations written by hand (``nrm.graph``: a product's own signal): a product whose
factors are all per-neuron functions of one tensor x, one of them x itself up to views and
constant factors — x · Φ(x) as ``0.5 * x * (1 + erf(x / √2))``, GPT-2's and minGPT's tanh
GELU, Mish as ``x * tanh(softplus(x))``, x · x, sign(x) · x — is read as an activation of x
under the default ``split="signal"``: the other factors are gates of the signal's own neurons
(θ = 0), so relevance passes to x whole, as through the activation's module (the identity
rule). Checked: equal to the module's spelling at every layer, engine = exact oracle =
explicit reference, L1; what is still ambiguous stays refused by name."""

from __future__ import annotations

import math
from fractions import Fraction

import nets
import pytest
import torch
import torch.nn.functional as F
from agreement import agree
from torch import nn

import nrm
from nrm.graph import ProperFFNN
from nrm_verify.laws.limits import gradient_x_input

D = torch.float64
SQRT_2_PI = math.sqrt(2.0 / math.pi)

# (id, the activation written by hand, the same activation as torch spells it)
HANDWRITTEN = [
    ("erf-GELU", lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))), lambda x: F.gelu(x)),
    ("erf-GELU-divided", lambda x: x * (1.0 + torch.special.erf(x * (1 / math.sqrt(2.0)))) / 2,
     lambda x: F.gelu(x)),
    ("tanh-GELU", lambda x: 0.5 * x * (1.0 + torch.tanh(SQRT_2_PI * (x + 0.044715 * torch.pow(x, 3.0)))),
     lambda x: F.gelu(x, approximate="tanh")),
    ("Mish", lambda x: x * torch.tanh(F.softplus(x)), F.mish),
    ("square", lambda x: x * x, torch.square),
    ("cube", lambda x: x * x * x, lambda x: torch.pow(x, 3)),
    ("abs-by-sign", lambda x: x.sign() * x, torch.abs),
    ("negated", lambda x: (-x) * torch.tanh(x), lambda x: -(x * torch.tanh(x))),
    ("view-of-x", lambda x: x.reshape(x.shape) * torch.tanh(F.softplus(x.view(x.shape))), F.mish),
    ("reshaped", lambda x: _mish_of(x.reshape(x.shape[0], 2, 3)).reshape(x.shape), F.mish),
]


def _mish_of(h):
    """Mish by hand on a reshaped value (x is the view, whose input has another shape)."""
    return h * torch.tanh(F.softplus(h))


IDS = [c[0] for c in HANDWRITTEN]


def _pair(fn, ref, seed: int = 0) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """Linear(5, 6) → fn → Linear(6, 3), and the same weights around ``ref``."""
    a = nets.seeded(nn.Sequential(nn.Linear(5, 6), nets.Fn(fn, "own"), nn.Linear(6, 3)).double(), seed, scale=1.0)
    b = nn.Sequential(nn.Linear(5, 6), nets.Fn(ref, "module"), nn.Linear(6, 3)).double().eval()
    b.load_state_dict(a.state_dict())
    return a, b, torch.randn((1, 5), generator=torch.Generator().manual_seed(seed + 100), dtype=D)


def _products(model, x) -> list:
    return [b for b in ProperFFNN(model, x).blocks if b.factors is not None]


@pytest.mark.parametrize(("case", "fn", "ref"), HANDWRITTEN, ids=IDS)
def test_a_handwritten_activation_equals_its_module_at_the_input(case, fn, ref):
    """Under LRP-0 the input heatmap and f are the module spelling's."""
    a, b, x = _pair(fn, ref)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), rtol=1e-13, atol=1e-15)
    target = int(a(x)[0].abs().argmax())
    ma = nrm.explain(a, x, target=target, check="full")
    mb = nrm.explain(b, x, target=target, check="full")
    assert torch.equal(ma.f, mb.f) or torch.allclose(ma.f, mb.f, rtol=1e-14)
    scale = 1.0 + float(mb.marginal("input").abs().sum())
    assert float((ma.marginal("input") - mb.marginal("input")).abs().max()) <= 1e-12 * scale
    assert float((ma.absorbed("input") - mb.absorbed("input")).abs().max()) <= 1e-12 * scale


@pytest.mark.parametrize(("case", "fn", "ref"), HANDWRITTEN, ids=IDS)
def test_the_signal_takes_everything_and_the_gates_nothing(case, fn, ref):
    """One flattened product (K6), θ = 1 on the factor that is x up to views and constants."""
    a, _, x = _pair(fn, ref)
    (block,) = _products(a, x)
    assert sorted(block.split) == [0] * (len(block.factors) - 1) + [1]
    assert block.split[0] == 1  # the first factor computed from x through maps that pass relevance whole


@pytest.mark.parametrize(("case", "fn", "ref"), HANDWRITTEN, ids=IDS)
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.25), nrm.presets.EpsilonPlusFlat()],
                         ids=["zero", "epsilon", "preset"])
def test_engine_equals_the_exact_oracle_and_the_explicit_reference(case, fn, ref, rules):
    """At every layer, L1 exactly in fractions (``agreement.compare_layers``), batch of one."""
    a, _, x = _pair(fn, ref, seed=3)
    agree(a, x, target=1, rules=rules)


def test_a_constant_factor_on_the_signal_is_a_layer_of_its_own_under_epsilon():
    """``0.5 * x`` is a diagonal linear layer (rule key ``nrm.markers.Scale``): ε everywhere
    absorbs part of it, which ``nn.GELU`` has no layer for; giving Scale layers LRP-0 reads the
    hand-written GELU exactly as the module under ε."""
    a, b, x = _pair(HANDWRITTEN[0][1], HANDWRITTEN[0][2])
    eps = nrm.rules.Epsilon(0.5)
    plain = nrm.explain(a, x, target=0, rules=eps).marginal("input")
    module = nrm.explain(b, x, target=0, rules=eps).marginal("input")
    assert float((plain - module).abs().max()) > 1e-6  # the scale layer absorbed a share
    scale_free = nrm.RuleMap(eps, by_type={nrm.markers.Scale: nrm.rules.Zero()})
    mended = nrm.explain(a, x, target=0, rules=scale_free).marginal("input")
    assert float((mended - module).abs().max()) <= 1e-12 * (1.0 + float(module.abs().sum()))


def test_a_batch_is_read_per_sample():
    a, b, _ = _pair(HANDWRITTEN[2][1], HANDWRITTEN[2][2])
    x = torch.randn((4, 5), generator=torch.Generator().manual_seed(5), dtype=D)
    ma, mb = nrm.explain(a, x, target=2), nrm.explain(b, x, target=2)
    assert ma.marginal("input").shape == (4, 5)
    assert torch.allclose(ma.marginal("input"), mb.marginal("input"), rtol=1e-12, atol=1e-13)


class _Two(nn.Module):
    """Two tensors computed from the input, multiplied as ``how`` says."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.b = nets.seeded(nn.Linear(4, 4), 1), nets.seeded(nn.Linear(4, 4), 2)
        self.head = nets.seeded(nn.Linear(4, 2), 3)

    def forward(self, x):
        h = self.a(x)
        if self.how == "two-branches":  # relu(A x) · B x: neither a function of the other's neurons
            y = torch.relu(h) * self.b(x)
        elif self.how == "mixed-gate":  # h · tanh(B h): the gate mixes h's neurons
            y = h * torch.tanh(self.b(h))
        elif self.how == "reduced-gate":  # h · tanh(mean h): a gate over all of h's neurons
            y = h * torch.tanh(h.mean(-1, keepdim=True)).expand_as(h)
        elif self.how == "biases-only":  # (h + 1) · (h − 2): every factor's path to h has a bias, which absorbs
            y = (h + 1.0) * (h - 2.0)
        elif self.how == "elementwise-chain":  # tanh(h) · softplus(h): tanh(h) is the signal (the identity rule)
            y = torch.tanh(h) * F.softplus(h)
        elif self.how == "added-constant":  # (h + 1) · tanh(h): tanh(h) is the signal, h + 1 its gate
            y = (h + 1.0) * torch.tanh(h)
        else:
            raise ValueError(self.how)
        return self.head(y)


@pytest.mark.parametrize("how", ["two-branches", "mixed-gate", "reduced-gate", "biases-only"])
def test_what_is_not_an_activation_of_one_tensor_stays_ambiguous(how):
    """Factors from different tensors, a gate that mixes neurons, or no factor whose path to x
    passes relevance whole: :class:`~nrm.errors.AmbiguousProductError` naming the product and
    the splits."""
    model = _Two(how).double().eval()
    with pytest.raises(nrm.AmbiguousProductError, match=r"split='signal'.*split='equal'"):
        nrm.explain(model, torch.randn(1, 4, dtype=D), target=0)


@pytest.mark.parametrize(("how", "signal"), [("elementwise-chain", 0), ("added-constant", 1)])
def test_the_signal_may_reach_x_through_elementwise_kinds(how, signal):
    """The signal's path to x may hold elementwise kinds (the identity rule): the product's
    relevance reaches h = a(x) whole under LRP-0, and the engine agrees with the oracle and the
    reference."""
    model = _Two(how).double().eval()
    x = torch.randn((1, 4), generator=torch.Generator().manual_seed(6), dtype=D)
    (block,) = _products(model, x)
    assert block.split == tuple(Fraction(int(i == signal)) for i in range(2))
    m = agree(model, x, target=0)
    assert torch.allclose(m.marginal(block.producer.name).sum(), m.marginal("a").sum(), rtol=1e-12, atol=1e-14)
    assert torch.allclose(m.marginal(block.producer.name), m.marginal("a"), rtol=1e-12, atol=1e-14)


def test_a_chosen_split_is_kept():
    """``split="equal"`` is the user's choice: x · x splits in halves to the same neuron (the
    same heatmap), and the own-signal reading does not override it."""
    a, _, x = _pair(HANDWRITTEN[4][1], HANDWRITTEN[4][2])
    signal = nrm.explain(a, x, target=0).marginal("input")
    with nets.product_split("equal"):
        (block,) = _products(a, x)
        assert block.split == (Fraction(1, 2), Fraction(1, 2))
        equal = nrm.explain(a, x, target=0).marginal("input")
    assert torch.allclose(signal, equal, rtol=1e-13, atol=1e-15)


def test_the_model_is_untouched_and_non_finite_values_are_named():
    a, _, x = _pair(HANDWRITTEN[0][1], HANDWRITTEN[0][2])
    before = {k: v.clone() for k, v in a.state_dict().items()}
    nrm.explain(a, x, target=0)
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())
    with pytest.raises(nrm.NonFiniteError):
        nrm.explain(a, torch.full((1, 5), float("nan"), dtype=D), target=0)


@pytest.mark.parametrize(("case", "fn", "ref"), HANDWRITTEN, ids=IDS)
def test_l9_in_its_general_form_holds(case, fn, ref):
    """LRP-0 = gradient × input of the model with each product's gates detached (the split θ),
    as for the module spelling with σ's ratio detached (``laws.gradient_x_input(detached=True)``)."""
    a, _, x = _pair(fn, ref, seed=4)
    result = gradient_x_input(a, x, 0, detached=True)
    assert result.holds is True, str(result)
