"""L1–L7 and L18 on models with branches, through :mod:`nrm_verify.laws`, for every built-in
rule and preset (issue 5: "Laws L1–L7 and L18 hold on the residual, concatenation and
dense-block models").

Hypothesis draws the architecture (ResNet basic and bottleneck blocks, Inception-style
concatenation, DenseNet-style dense block — :mod:`nrm_verify.zoo.architectures`), the seed of
its weights and input, the target, and the layers and neurons the laws are asked about.
Events on branch layers are drawn with both semantics (``parallel=False`` / ``True``).
"""

from __future__ import annotations

import dag_models
import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

import nrm
from nrm import At
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus
from nrm_verify import laws
from nrm_verify.zoo import architectures as A

RULES = {
    "zero": lambda: Zero(),
    "epsilon": lambda: Epsilon(0.01),
    "gamma": lambda: Gamma(0.25),
    "zplus": lambda: ZPlus(),
    "alphabeta": lambda: AlphaBeta(2.0, 1.0),
    "wsquare": lambda: WSquare(),
    "flat": lambda: Flat(),
    "zbox": lambda: nrm.RuleMap(Epsilon(1e-6), first=ZBox(-3.0, 3.0)),
}
CONFIGS = list(RULES) + list(nrm.presets.PRESETS)


def _rules(config):
    if config in RULES:
        return RULES[config]()
    if config == "EpsilonGammaBox":
        return nrm.presets.EpsilonGammaBox(-3.0, 3.0)
    return nrm.presets.PRESETS[config]()


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add start-up cost


@st.composite
def dag_cases(draw, config):
    name = draw(st.sampled_from(sorted(A.BUILDERS)))
    seed = draw(st.integers(0, 2**16))
    model = A.BUILDERS[name](seed=seed, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=gen) * 6 - 3).clamp(-3, 3)
    target = draw(st.integers(0, 9))
    note(f"model = nrm_verify.zoo.architectures.BUILDERS[{name!r}](seed={seed}, dtype=torch.float64); "
         f"x = (torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed({seed})) * 6 - 3)"
         f"; target = {target}; rules = {config}")
    m = nrm.explain(model, x, target=target, rules=_rules(config))
    layers = [n for n in m.canonical_names()[1:-1]]
    picks = draw(st.lists(st.sampled_from(layers), min_size=2, max_size=2, unique=True))
    lo, hi = sorted(picks, key=m.layer_index)
    parallel = draw(st.booleans())

    def event(layer):
        n = max(1, int(torch.tensor(m.layer_shape(layer)).prod()))
        idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True))
        return At(layer, index=idx, parallel=parallel)

    return model, x, target, m, lo, hi, event(lo), event(hi)


def _check(result):
    note(str(result))
    assert result.holds is not False, str(result)
    return result.holds is True


@pytest.mark.parametrize("config", CONFIGS)
@settings(deadline=None)
@given(data=st.data())
def test_laws_on_branched_models(config, data):
    model, x, target, m, lo, hi, a, b = data.draw(dag_cases(config))
    applied = 0
    applied += _check(laws.normalization(m))
    applied += _check(laws.column_sums(m))
    applied += _check(laws.additivity(m, a, b))
    applied += _check(laws.marginalization(m, lo, b))
    applied += _check(laws.joint_marginals(m, lo, hi))
    applied += _check(laws.multiplicative(m, a, b))
    applied += _check(laws.bayes(m, a, b))
    applied += _check(laws.total_measure(m, b, lo))
    hi_index = m.layer_index(hi)
    if m.network.blocks[hi_index].inputs == [hi_index - 1]:
        n = int(torch.tensor(m.layer_shape(hi)).prod())
        _check(laws.markov(m, hi, n // 2, [0, 1], OMEGA_ABOVE(m, hi)))
    applied += _check(laws.modularity(m, model, x, target, _rules(config)))
    applied += _check(laws.channel_sum(m, lo))  # L17: with ⊥ and the walks that bypass the layer
    applied += _check(laws.channel_sum(m, hi))
    assert applied >= 8


@pytest.mark.parametrize("name", sorted(dag_models.BUILDERS))
def test_channel_heatmaps_add_up_with_the_walks_that_bypass_the_layer(name):
    """L17 on a branched model: the channel heatmaps of a layer, its ⊥ and the walks that
    bypass its node (a skip path's copies) partition the input heatmap, at every layer.
    Without the bypassing cell the sum misses the skip path's mass (it did, before)."""
    model, x = dag_models.BUILDERS[name](3)
    m = nrm.explain(model, x, target=0, rules=nrm.presets.EpsilonGammaFlat())
    names = m.canonical_names()
    for layer in names[1:]:
        result = laws.channel_sum(m, layer)
        assert result.holds is True, str(result)
    skipped = [n for n in names[1:] if float(m.bypassing(n).abs().max()) > 1e-6]
    assert skipped, "a branched model has layers that walks bypass"


@pytest.mark.parametrize("name", sorted(dag_models.BUILDERS))
def test_lrp_equivalence_says_why_it_does_not_apply_to_a_branched_model(name):
    """L8 compares with the autograd LRP reference, which reads chains: on a branched model
    it is not applicable, with the reason (it raised a RuntimeError from deep in a convolution
    before), and the reference itself refuses with a named error."""
    from nrm.errors import UnsupportedModuleError
    from nrm_verify.references import autograd

    model, x = dag_models.BUILDERS[name](3)
    m = nrm.explain(model, x, target=0)
    result = laws.lrp_equivalence(m)
    assert result.holds is None and "sequential models only" in result.detail, str(result)
    with pytest.raises(UnsupportedModuleError, match="reads sequential models; layer '.+' reads"):
        autograd.relevance(model, x, 0)


def OMEGA_ABOVE(m, layer):
    """An event on the layer just above ``layer`` (or Ω at the top)."""
    names = m.canonical_names()
    l = m.layer_index(layer)
    if l + 1 >= len(names) - 1:
        return nrm.OMEGA
    return ~At(names[l + 1], index=[0])


# -- L9 on branched models -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(dag_models.BUILDERS))
def test_l9_replays_the_dag(name):
    """L9's differentiable replay follows the sums and concatenations of a branched model
    (it read the layers as a chain and crashed with a shape error on torchvision's resnet18)."""
    model, x = dag_models.BUILDERS[name](3)
    target = int(model(x)[0].argmax())
    r = laws.gradient_x_input(model, x, target)
    assert r.holds in (True, None), str(r)
    if r.holds is None:  # only where a cancelling z_k = 0 passes gradient
        assert "z_k = 0" in r.detail, str(r)


def test_l9_holds_through_an_average_of_dead_relus():
    """A channel whose ReLUs are all 0 averages to z_k = 0 exactly while the gradient passes
    it: its column has no contribution, so both sides are 0 and the law applies (it was
    reported not applicable on every torchvision ResNet)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(2, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[[[1.0]]], [[[-1.0]]]]))
        model[0].bias.zero_()
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64) + 0.5  # channel 1 is dead everywhere
    r = laws.gradient_x_input(model, x, 0)
    assert r.holds is True, str(r)


# -- L9 in its general form: the gradient of the model with σ, gates and ratios detached ------
class _GatedNormed(torch.nn.Module):
    """conv → SiLU → squeeze-excitation gate (sigmoid) × → mean → LayerNorm → GELU → linear:
    every convention the general L9 detaches (an activation's ratio, a gate, σ)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.se = torch.nn.Conv2d(4, 4, 1)
        self.norm = torch.nn.LayerNorm(4)
        self.fc = torch.nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.7)

    def forward(self, x, detach=False):
        ratio = (lambda z, a: z * (a / z).detach()) if detach else (lambda z, a: a)
        z = self.conv(x)
        a = ratio(z, torch.nn.functional.silu(z))
        gate = torch.sigmoid(self.se(a.mean((2, 3), keepdim=True)))
        o = (a * (gate.detach() if detach else gate)).mean((2, 3))
        if detach:  # the layer norm with σ at its forward value: a linear map with centring
            sigma = torch.sqrt(o.var(1, unbiased=False, keepdim=True) + self.norm.eps).detach()
            n = (o - o.mean(1, keepdim=True)) / sigma * self.norm.weight + self.norm.bias
        else:
            n = self.norm(o)
        h = torch.nn.functional.gelu(n)
        return self.fc(ratio(n, h) if detach else h)


def test_l9_detached_is_the_gradient_of_the_model_written_with_its_conventions_detached():
    """The general L9 (``detached=True``) against an independent reference: the same model
    written by hand with the ratios σ(z)/z, the gate and the layer norm's σ detached. LRP-0's
    input marginal is that model's gradient × input over f; the plain L9 is not applicable
    (it names the product), the general one holds at every layer."""
    model = _GatedNormed().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    target = 1
    xx = x.clone().requires_grad_(True)
    out = model(xx, detach=True)[:, target]
    torch.testing.assert_close(out.detach(), model(x)[:, target], rtol=1e-12, atol=1e-14)  # same values
    (grad,) = torch.autograd.grad(out.sum(), xx)
    m = nrm.explain(model, x, target, rules=nrm.rules.Zero())
    expected = x * grad / m.f.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(m.marginal("input"), expected, rtol=1e-10, atol=1e-12)
    plain = laws.gradient_x_input(model, x, target)
    assert plain.holds is None and "multiplies activations" in plain.detail, str(plain)
    general = laws.gradient_x_input(model, x, target, detached=True)
    assert general.holds is True and general.deviation < 1e-12, str(general)
    with pytest.raises(TypeError, match="detached must be True or False"):
        laws.gradient_x_input(model, x, target, detached="yes")


@pytest.mark.parametrize("name", sorted(dag_models.BUILDERS))
def test_l9_detached_agrees_with_l9_where_both_apply(name):
    """On a model of ReLUs, sums and concatenations nothing is detached: both forms agree."""
    model, x = dag_models.BUILDERS[name](3)
    target = int(model(x)[0].argmax())
    plain, general = laws.gradient_x_input(model, x, target), laws.gradient_x_input(model, x, target, detached=True)
    assert plain.holds == general.holds, (str(plain), str(general))
