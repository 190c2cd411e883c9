"""torchvision's convolutional models, small, in the suite (issue 13).

torchvision imports only in ``.venv-peers``, so this module lives with the peer suite (run
by ``tests/test_peers.py`` in CI). Each model runs through the same code as the zoo command
that writes the README's table (``benchmarks/zoo_torchvision.py``: random weights, seed 0,
float64, eval mode, one seeded image, target = the arg-max logit): LRP-0, LRP-ε and every
preset accepted, L1 at every layer (with ⊥ and the bypassing walks) for LRP-0 and
EpsilonGammaFlat, L9 (LRP-0 = gradient × input) where it applies — or not applicable
with its reason (smooth activations, products, layer norms) — and L9's general form on
every model (the gradient with activation ratios, gates and σ detached). Then batch invariance: a batch of two
images gives each image's measure alone. The models are one of each family that the
earlier layer vocabulary refused: dense blocks (BN → ReLU → conv), SE gates with
Hardswish/SiLU, channel shuffle, inverted residuals with ReLU6, ConvNeXt's permute →
LayerNorm → GELU → layer scale, and squeezenet's pooled flatten as the output.
"""

from __future__ import annotations

import pathlib
import re
import sys

import pytest
import torch

import nrm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import zoo_torchvision as zoo  # noqa: E402 — the zoo command's build and per-model check

SMALL = ("squeezenet1_1", "densenet121", "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5",
         "efficientnet_b0", "convnext_tiny")
SIZE = 32


@pytest.mark.parametrize("name", SMALL)
def test_every_rule_is_accepted_and_the_laws_hold(name):
    row = zoo.child(name, SIZE)
    refused = {k: v["error"] for k, v in row["rules"].items() if not v["accepted"]}
    assert not refused, refused
    for label in zoo.FULL_L1:
        assert row["rules"][label]["l1_holds"], (label, row["rules"][label]["l1"])
        assert row["rules"][label]["l1"] <= 1e-12, (label, row["rules"][label]["l1"])
    l9, general = row["l9"], row["l9_detached"]
    assert "error" not in l9 and "error" not in general, (l9, general)
    assert l9["holds"] is not False, l9  # held, or not applicable, naming what it cannot pass
    if l9["holds"] is None:
        assert any(w in l9["detail"] for w in ("multiplies activations", "not positively homogeneous",
                                                  "hold σ at its forward value")), l9
    assert general["holds"] is True and general["deviation"] <= 1e-12, general  # the general form: every model


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5"])
def test_a_batch_gives_each_image_its_own_measure(name):
    """Batch invariance (:func:`nrm_verify.laws.batch_invariance`, every layer and its ⊥):
    a batch of two images gives each image's measure alone, each with its own target."""
    from nrm_verify import laws

    model, x = zoo.build(name, SIZE)
    x2 = torch.cat([x, torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(7))])
    with torch.no_grad():
        targets = model(x2).argmax(1)
    result = laws.batch_invariance(model, x2, targets, nrm.presets.EpsilonGammaFlat())
    assert result.holds is True, str(result)


# -- zennit and captum on the zoo ---------------------------------------------------------------
ZENNIT_PRESETS = ("EpsilonPlusFlat", "EpsilonGammaFlat")


def _squeezenet_cases():
    from nrm.rules import Epsilon, Gamma

    captum_gamma = nrm.RuleMap(Epsilon(1e-6), by_type={torch.nn.Conv2d: Gamma(0.25, modify_bias=False,
                                                                             stabilizer=1e-9)})
    return {("zennit", preset): getattr(nrm.presets, preset)() for preset in ZENNIT_PRESETS} | {
        ("captum", "Epsilon(1e-6)"): Epsilon(1e-6),
        ("captum", "ε on dense, γ=0.25 (raw bias) on convolutions"): captum_gamma}


SQUEEZENET_CASES = [("zennit", p) for p in ZENNIT_PRESETS] + [
    ("captum", "Epsilon(1e-6)"), ("captum", "ε on dense, γ=0.25 (raw bias) on convolutions")]


@pytest.mark.parametrize("peer, label", SQUEEZENET_CASES, ids=[f"{p}-{label}" for p, label in SQUEEZENET_CASES])
def test_the_peer_equals_nrm_on_squeezenet(record, peer, label):
    """squeezenet1_1 is a model zennit and captum run as nrm does: convolutions (every linear
    layer a module the peer gives a rule, the adaptive pooling too), ReLUs passed, max pooling
    and flatten with ε = 1e-300 (exact), the concatenations routed by their gradient, the
    pooled flatten as the output."""
    from cases import close

    from nrm_verify.peers import CaptumExplainer, ZennitExplainer

    model, x = zoo.build("squeezenet1_1", SIZE)
    target = int(model(x).argmax())
    rules = _squeezenet_cases()[(peer, label)]
    explainer = (ZennitExplainer if peer == "zennit" else CaptumExplainer)(rules)
    m = nrm.explain(model, x, target, rules=rules)
    layers = ["features.0", "features.3.squeeze", "features.3.expand3x3", "features.12.squeeze", "classifier.1"]
    theirs = record.uses(explainer)(model, x, target, layers=layers)
    for layer in ["input", *layers]:
        ours = m.relevance(layer)
        dev = record(explainer, label, "squeezenet1_1", ours, theirs[layer], what=layer)
        assert close(dev, float(ours.abs().max())), (layer, dev)


@pytest.mark.parametrize("name,cause", [
    ("mobilenet_v2", "not the residual sum of a torchvision BasicBlock"),  # InvertedResidual's x + conv(x)
    ("efficientnet_b0", "multiplies activations"),  # squeeze-excitation gates
    ("mobilenet_v3_small", "multiplies activations"),
    ("densenet121", "BatchNorm2d"),  # a batch norm of its own: zennit passes it, nrm applies the rule
    ("convnext_tiny", "is not a module zennit"),  # layer norm over permuted channels, layer scale
    ("mnasnet0_5", "a function call"),  # x.mean([2, 3]): zennit would pass its gradient
])
def test_zennit_refuses_what_it_cannot_reproduce_and_names_the_cause(name, cause):
    """Where zennit has no rule or canonizer for a layer, running it would give relevance
    that differs from the rules asked for; the adapter refuses and names the layer."""
    from nrm_verify.peers import PeerConventionError, ZennitExplainer

    model, x = zoo.build(name, SIZE)
    target = int(model(x).argmax())
    with pytest.raises(PeerConventionError, match=cause):
        ZennitExplainer(nrm.presets.EpsilonPlusFlat())(model, x, target)


# -- captum on the zoo ------------------------------------------------------------------------
@pytest.mark.parametrize("name,cause", [
    ("densenet121", "'adaptive_avg_pool2d' (AdaptiveAvgPool, a function call)"),  # F.adaptive_avg_pool2d in forward
    ("shufflenet_v2_x0_5", "'stage2.1.branch1' (Sequential) has no captum rule"),  # an empty Sequential, and x.mean
    ("mobilenet_v2", "is a plain '+'"),  # InvertedResidual's x + conv(x): no Addition_Module
    ("efficientnet_b0", "is a plain '+'"),
    ("convnext_tiny", "is a plain '+'"),
])
def test_captum_refuses_what_it_cannot_reproduce_and_names_the_cause(name, cause):
    """Where captum's LRP would pass a layer by its gradient (a functional pooling or mean,
    a plain residual '+') or stop with a TypeError (a leaf module it has no rule for), the
    adapter refuses and names the layer, instead of measuring a difference that only says
    captum ran another method."""
    from nrm_verify.peers import CaptumExplainer, PeerConventionError

    model, x = zoo.build(name, SIZE)
    target = int(model(x).argmax())
    with pytest.raises(PeerConventionError, match=re.escape(cause)):
        CaptumExplainer(nrm.rules.Epsilon(1e-6))(model, x, target)


def test_captum_refuses_a_product_of_activations():
    """A squeeze-excitation gate without residual sums (the product is captum's gradient,
    which gives each factor the whole product): refused, naming the product."""
    from torch import nn

    from nrm_verify.peers import CaptumExplainer, PeerConventionError

    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc, self.head = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.Linear(4 * 4 * 4, 3)
            self.pool, self.relu, self.gate = nn.AdaptiveAvgPool2d(1), nn.ReLU(), nn.Sigmoid()

        def forward(self, x):
            h = self.relu(self.conv(x))
            return self.head((h * self.gate(self.fc(self.pool(h)))).flatten(1))

    model = SE().double().eval()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    with pytest.raises(PeerConventionError, match="multiplies activations"):
        CaptumExplainer(nrm.rules.Epsilon(1e-6))(model, x, 0)


def test_alpha_beta_on_squeezenet_differs_by_nrm_s_fallback_and_only_by_it(record):
    """EpsilonAlpha2Beta1 on squeezenet1_1 differs from zennit by about 2% of the largest
    relevance: at 7×7 the fire modules' expand convolutions have columns whose contributions
    are all positive (N_k = 0). nrm's αβ then falls back to (α, β) = (1, 0) (NRM-SPEC §2) and
    keeps Σ R = f; zennit's β term is 0/ε there, so the column passes α R = 2R and the input
    relevance exceeds f. With a stabilizer (zennit's P + ε, N − ε) nrm's fallback never
    applies, and the two agree."""
    from cases import close
    from torch import nn

    from nrm.rules import AlphaBeta, Epsilon
    from nrm_verify.peers import ZennitExplainer

    model, x = zoo.build("squeezenet1_1", SIZE)
    target = int(model(x).argmax())
    preset = nrm.presets.EpsilonAlpha2Beta1()
    m = nrm.explain(model, x, target, rules=preset)
    zen = record.uses(ZennitExplainer(preset))
    theirs = zen(model, x, target)["input"]
    ours = m.relevance("input")
    dev = record.difference(zen, "EpsilonAlpha2Beta1 (fallback)", "squeezenet1_1", ours, theirs)
    assert dev > 1e-3 * float(ours.abs().max()), dev  # a real difference
    assert float(ours.sum()) == pytest.approx(float(m.f), rel=1e-12)  # nrm conserves (L1, no bias absorbs here)
    assert float(theirs.sum()) > float(m.f) * (1 + 1e-3)  # zennit passes 2R where N_k = 0
    stabilized = nrm.RuleMap(Epsilon(1e-6), by_type={nn.Conv2d: AlphaBeta(2, 1, stabilizer=1e-6)})
    bridged = ZennitExplainer(stabilized)
    ours = nrm.explain(model, x, target, rules=stabilized).relevance("input")
    dev = record(bridged, "αβ(2,1) with stabilizer 1e-6", "squeezenet1_1", ours, bridged(model, x, target)["input"])
    assert close(dev, float(ours.abs().max())), dev


# -- stochastic depth ------------------------------------------------------------------------
class _Residual(torch.nn.Module):
    """x + drop(conv(relu(conv(x)))), ConvNeXt's and EfficientNet's residual with
    torchvision's ``StochasticDepth`` (or anything else as ``drop``)."""

    def __init__(self, drop: torch.nn.Module, functional: bool = False):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.a, self.b = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 3, padding=1)
        self.head = torch.nn.Linear(3 * 6 * 6, 4)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.5
        self.drop, self.functional = drop, functional

    def forward(self, x):
        h = self.b(torch.relu(self.a(x)))
        if self.functional:
            from torchvision.ops import stochastic_depth
            h = stochastic_depth(h, 0.5, "row", self.training)
        else:
            h = self.drop(h)
        return self.head(torch.relu(x + h).flatten(1))


@pytest.mark.parametrize("functional", [False, True], ids=["module", "functional"])
def test_stochastic_depth_in_eval_mode_is_the_identity(functional):
    """torchvision's stochastic depth in eval mode returns its input: the measure of a model
    with it equals, bit for bit at every layer and its ⊥, the measure of the same model
    without it (``nn.Identity`` in its place); its output is ``model(x)``."""
    from torchvision.ops import StochasticDepth

    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with_sd = _Residual(StochasticDepth(0.5, "row"), functional).double().eval()
    without = _Residual(torch.nn.Identity()).double().eval()
    without.load_state_dict(with_sd.state_dict())
    targets = with_sd(x).argmax(1)
    m, ref = (nrm.explain(model, x, targets, rules=nrm.presets.EpsilonGammaFlat()) for model in (with_sd, without))
    assert torch.equal(m.f, with_sd(x).gather(1, targets[:, None])[:, 0])
    assert m.canonical_names() == ref.canonical_names()
    for name in m.canonical_names():
        assert torch.equal(m.marginal(name), ref.marginal(name)), name
        assert torch.equal(m.absorbed(name), ref.absorbed(name)), name


def test_stochastic_depth_in_training_mode_is_refused():
    """In training mode stochastic depth drops residual branches at random: refused, naming it
    (nrm never switches a model's mode)."""
    from torchvision.ops import StochasticDepth

    model = _Residual(StochasticDepth(0.5, "row")).double().eval()
    model.drop.train()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    with pytest.raises(nrm.errors.TrainingModeError, match="drop"):
        nrm.explain(model, x, 0)
