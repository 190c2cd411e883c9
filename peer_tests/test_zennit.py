"""nrm equals zennit: every rule, the composites, on an MLP, CNNs and VGG16 (float64).

Each test compares nrm's ``m.relevance(layer)`` (= f · m_l, LRP's R) with the relevance
zennit's hooks put on the same layer (a :class:`~nrm_verify.peers.ZennitExplainer`), at the
input and at intermediate linear layers.
Where nrm and zennit differ by convention, a test measures the difference and checks that
it is the predicted one (the convention bridged on the nrm side removes it).
"""

from __future__ import annotations

import pytest
import torch
import zennit
from cases import LAYERS, MODELS, RULES, ZENNIT_EPS, box, case, close, rule_row, single_rule
from torch import nn

import nrm
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, Zero, ZPlus
from nrm_verify.peers import PeerConventionError, ZennitExplainer
from nrm_verify.peers import zennit as zp

COMPOSITES = {  # nrm preset name → zennit composite name
    "EpsilonPlusFlat": "epsilon_plus_flat",
    "EpsilonGammaBox": "epsilon_gamma_box",
    "EpsilonAlpha2Beta1": "epsilon_alpha2_beta1",
}


def _compare(record, label, model_name, rules, explainer, layers=None):
    model, x, target = case(model_name)
    layers = LAYERS[model_name] if layers is None else layers
    m = nrm.explain(model, x, target=target, rules=rules)
    theirs = record.uses(explainer)(model, x, target, layers=layers)
    devs = {}
    for layer in ["input", *layers]:
        ours = m.relevance(layer)
        dev = record(explainer, label, model_name, ours, theirs[layer], what=layer)
        devs[layer] = (dev, float(ours.abs().max()))
    return devs


def _assert_close(devs):
    bad = {k: v for k, v in devs.items() if not close(*v)}
    assert not bad, f"deviation beyond tolerance (layer: (max |Δ|, max |R|)): {bad}"


VGG_RULES = ("ZPlus", "Gamma(0.25)", "AlphaBeta(2,1)", "Flat", "ZBox")  # VGG costs seconds per case
SINGLE = [(r, mname) for r in RULES for mname in ("mlp", "cnn", "cnn_bn")] + [
    (r, "vgg16") for r in VGG_RULES] + [("Gamma(0.25)", "vgg16_bn")]


@pytest.mark.parametrize("rule,model_name", SINGLE)
def test_single_rule(record, rule, model_name):
    rules, composite = single_rule(rule, model_name)
    _assert_close(_compare(record, rule, model_name, rules, ZennitExplainer(composite=composite, row=rule_row(rule))))


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("preset", list(COMPOSITES))
def test_builtin_composite_equals_mirror(record, preset, model_name):
    """zennit's own composite (defaults: ε = 1e-6, stabilizer 1e-6) = nrm with
    ``zp.mirror`` (the same rules, Norm on pooling as Epsilon(1e-6))."""
    model, x, _ = case(model_name)
    name = COMPOSITES[preset]
    low, high = box(model_name)
    kw = {"low": low, "high": high} if name == "epsilon_gamma_box" else {}
    rules = zp.mirror(name, model, x=x, **kw)
    zennit_own = ZennitExplainer(composite=zp.builtin_composite(name, **kw))  # reproduces the mirror, no nrm row
    _assert_close(_compare(record, f"{preset} (zennit defaults)", model_name, rules, zennit_own))


NRM_PRESETS = [(p, mname) for p in COMPOSITES for mname in ("mlp", "cnn", "cnn_bn")
               if not (p == "EpsilonGammaBox" and mname == "mlp")] + [("EpsilonGammaBox", "vgg16_bn")]


@pytest.mark.parametrize("preset,model_name", NRM_PRESETS)
def test_nrm_preset_equals_zennit_composite(record, preset, model_name):
    """nrm's own preset (stabilizer 0 outside ε, LRP-0 on pooling) = zennit's composite
    with a zero stabilizer (``safe_denominator``: D = 0 sends the column to ⊥)."""
    low, high = box(model_name)
    name = COMPOSITES[preset]
    kw = {"low": low, "high": high} if name == "epsilon_gamma_box" else {}
    rules = nrm.presets.PRESETS[preset](**kw)
    composite = ZennitExplainer(composite=zp.builtin_composite(name, stabilizer=zp.safe_denominator, **kw), row=preset)
    _assert_close(_compare(record, f"{preset} (nrm preset)", model_name, rules, composite))


@pytest.mark.parametrize("preset", sorted(nrm.presets.PRESETS))
def test_adapter_composite_of_every_preset(record, preset):
    """``zp.composite(model, rules)`` turns any nrm preset into a zennit composite that
    computes the same relevance (here on the CNN with batch norm)."""
    low, high = box("cnn_bn")
    kw = {"low": low, "high": high} if preset == "EpsilonGammaBox" else {}
    rules = nrm.presets.PRESETS[preset](**kw)
    explainer = ZennitExplainer(rules)
    assert explainer.row == preset
    _assert_close(_compare(record, f"{preset} (adapter)", "cnn_bn", rules, explainer))


@pytest.mark.parametrize("rule", list(RULES))
def test_adapter_maps_each_rule(record, rule):
    """``zp.composite`` of the nrm side of every single-rule case equals nrm (on the CNN)."""
    rules, _ = single_rule(rule, "cnn")
    _assert_close(_compare(record, f"{rule} (adapter)", "cnn", rules, ZennitExplainer(rules, row=rule_row(rule))))


# --- conventions that differ: measured, and bridged -----------------------------------


@pytest.mark.parametrize("plain,bridged,zname", [
    (Gamma(0.25, stabilizer=ZENNIT_EPS), zp.GeneralizedGamma(0.25, stabilizer=ZENNIT_EPS), "Gamma(0.25)"),
    (ZPlus(stabilizer=ZENNIT_EPS), AlphaBeta(1, 0, stabilizer=ZENNIT_EPS), "ZPlus"),
])
def test_signed_input_convention(record, plain, bridged, zname):
    """On the first layer, which reads the signed image, zennit's γ and z⁺ treat negative
    inputs with w⁻ (generalized γ, α1β0); nrm's Gamma and ZPlus multiply a by ρ(w) / w⁺.
    The measured difference is confined to that convention: with the first layer given
    GeneralizedGamma / AlphaBeta(1, 0) it vanishes; with nrm's rule everywhere it does
    not. On a non-negative input the plain nrm rules match zennit everywhere."""
    model, x, target = case("cnn")
    _, composite = single_rule(zname, "cnn")
    zen = record.uses(ZennitExplainer(composite=composite, row=rule_row(zname)))
    theirs = zen(model, x, target)["input"]

    def rules(first):
        return nrm.RuleMap(by_type={nn.Conv2d: plain, nn.Linear: plain, nn.AdaptiveAvgPool2d: Epsilon(ZENNIT_EPS)},
                           first=first)

    plain_m = nrm.explain(model, x, target=target, rules=rules(plain))
    bridged_m = nrm.explain(model, x, target=target, rules=rules(bridged))
    dev_plain = record.difference(zen, f"{zname} with nrm {type(plain).__name__} on signed input", "cnn",
                                  plain_m.relevance("input"), theirs)
    dev_bridged = record(zen, f"{zname} with nrm {type(bridged).__name__} first", "cnn",
                         bridged_m.relevance("input"), theirs)
    scale = float(theirs.abs().max())
    assert close(dev_bridged, scale)
    assert dev_plain > 1e-3 * scale, "the signed-input convention should show on this input"
    assert bool((x < 0).any())
    # with x ≥ 0 the plain nrm rule is zennit's rule on every layer
    xp = x.abs()
    zplus = nrm.explain(model, xp, target=target, rules=rules(plain))
    theirs_p = zen(model, xp, target)["input"]
    assert close(record(zen, f"{zname} with nrm {type(plain).__name__}, input >= 0", "cnn",
                        zplus.relevance("input"), theirs_p), float(theirs_p.abs().max()))


def _zero_column_net():
    """2 → 2 → 1 with hidden neuron 1 at z = 0 exactly, and Flat on the output layer, so
    that relevance reaches a column whose denominator is 0 (a_1 = ReLU(0) = 0)."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [1.0, -1.0]]))
        model[0].bias.copy_(torch.tensor([0.5, 0.0]))
        model[2].weight.copy_(torch.tensor([[1.0, 3.0]]))
        model[2].bias.zero_()
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)  # z = (3.5, 0)
    return model, x


def test_epsilon_sign_at_zero_and_zero_denominator(record):
    """zennit's stabilizer adds +ε at z = 0 (s(0) = +1), as nrm's signed default does; with
    ε = 0 zennit divides by 0 (±inf) where nrm sends the column to ⊥ — the adapter's
    ``safe_denominator`` reproduces nrm's convention."""
    model, x = _zero_column_net()
    layer_map = lambda hidden: [(nn.ReLU, zennit.rules.Pass()), (nn.Linear, hidden)]  # noqa: E731
    name_map = [(("2",), zennit.rules.Flat(stabilizer=ZENNIT_EPS))]

    def zennit_with(hidden, row):
        comp = zennit.composites.NameLayerMapComposite(name_map=name_map, layer_map=layer_map(hidden))
        return record.uses(ZennitExplainer(composite=comp, row=row))

    for eps in (0.1, ZENNIT_EPS):
        m = nrm.explain(model, x, target=0, rules={"0": Epsilon(eps), "2": Flat(stabilizer=ZENNIT_EPS)})
        ours = m.relevance("input")
        zen = zennit_with(zennit.rules.Epsilon(eps), "Epsilon")
        dev = record(zen, f"Epsilon({eps}) at z=0", "2-2-1 zero column", ours, zen(model, x, 0)["input"])
        assert close(dev, float(ours.abs().max()))
        assert float(ours.abs().max()) > 0.1 / eps  # the zero column carries R_1 · (1, -1) / ε
        # the unsigned convention (D + ε) maps to a callable stabilizer
        mu = nrm.explain(model, x, target=0,
                         rules={"0": Epsilon(eps, stabilizer_sign="unsigned"), "2": Flat(stabilizer=ZENNIT_EPS)})
        zen_u = zennit_with(zp.zennit_rule(Epsilon(eps, stabilizer_sign="unsigned")), "Epsilon")
        dev_u = record(zen_u, f"Epsilon({eps}, unsigned) at z=0", "2-2-1 zero column", mu.relevance("input"),
                       zen_u(model, x, 0)["input"])
        assert close(dev_u, float(mu.relevance("input").abs().max()))
    m0 = nrm.explain(model, x, target=0, rules={"0": Zero(), "2": Flat(stabilizer=ZENNIT_EPS)})
    raw = zennit_with(zennit.rules.Epsilon(0.0), "Zero")(model, x, 0)["input"]
    assert not bool(torch.isfinite(raw).any()), "zennit's LRP-0 divides by the zero denominator"
    assert bool(torch.isfinite(m0.relevance("input")).all())
    assert float(m0.absorbed("0")) > 0  # nrm: the zero column's share went to ⊥
    zen0 = zennit_with(zp.zennit_rule(Zero()), "Zero")
    dev0 = record(zen0, "Zero at z=0 (safe_denominator)", "2-2-1 zero column", m0.relevance("input"),
                  zen0(model, x, 0)["input"])
    assert close(dev0, 1.0)


def test_box_rule_only_on_a_convolution(record):
    """zennit's EpsilonGammaBox puts z^B on the first *convolution* only: on a dense
    network it leaves the first layer with ε, where nrm's preset puts ZBox on FIRST. The
    difference is that layer's rule: with ε on FIRST (``zp.mirror``) they agree."""
    model, x, target = case("mlp")
    low, high = box("mlp")
    composite = zp.builtin_composite("epsilon_gamma_box", low=low, high=high, stabilizer=zp.safe_denominator)
    zen = record.uses(ZennitExplainer(composite=composite, row="EpsilonGammaBox"))  # the preset's, on CNNs
    theirs = zen(model, x, target)["input"]
    preset = nrm.explain(model, x, target=target, rules=nrm.presets.EpsilonGammaBox(low, high))
    mirrored = nrm.explain(model, x, target=target, rules=zp.mirror("epsilon_gamma_box", model, x=x, low=low, high=high,
                                                                    stabilizer=zp.safe_denominator))
    dev_preset = record.difference(zen, "EpsilonGammaBox (nrm preset, dense first layer)", "mlp",
                                   preset.relevance("input"), theirs)
    dev_mirror = record(zen, "EpsilonGammaBox (mirror, dense first layer)", "mlp", mirrored.relevance("input"),
                        theirs, row=None)  # equal to the mirror, not to the preset
    scale = float(theirs.abs().max())
    assert close(dev_mirror, scale)
    assert dev_preset > 1e-3 * scale
    assert mirrored.rule("fc1") == Epsilon(1e-6)


def test_default_stabilizer_difference(record):
    """zennit's defaults stabilize γ, z⁺, z^B, flat and pooling with 1e-6; nrm's presets
    with 0. The difference is small, of order ε/|D|, and not float64-small; it vanishes with
    either the nrm rules given stabilizer=1e-6 (``mirror``) or zennit given a zero one."""
    model, x, target = case("cnn")
    low, high = box("cnn")
    zen = ZennitExplainer(composite=zp.builtin_composite("epsilon_gamma_box", low=low, high=high))
    theirs = zen(model, x, target)["input"]
    ours = nrm.explain(model, x, target=target, rules=nrm.presets.EpsilonGammaBox(low, high)).relevance("input")
    dev = record.difference(zen, "EpsilonGammaBox (nrm preset vs zennit defaults)", "cnn", ours, theirs,
                            row="EpsilonGammaBox")
    scale = float(theirs.abs().max())
    assert 1e-12 * scale < dev < 1e-3 * scale


def test_wsquare_bias_convention(record):
    """zennit's w² keeps b² in the denominator: nrm's WSquare(bias=True); nrm's default
    WSquare() leaves it out, which is zennit's WSquare(zero_params=['bias'])."""
    model, x, target = case("mlp")
    def zennit_with(rule):
        return record.uses(ZennitExplainer(row="WSquare", composite=zennit.composites.LayerMapComposite(
            [(nn.ReLU, zennit.rules.Pass()), (nn.Linear, rule)])))

    default = zennit_with(zennit.rules.WSquare())(model, x, target)["input"]
    zen = zennit_with(zennit.rules.WSquare(zero_params=["bias"]))
    nobias = zen(model, x, target)["input"]
    ours = nrm.explain(model, x, target=target, rules=WSquare(stabilizer=ZENNIT_EPS)).relevance("input")
    assert close(record(zen, "WSquare(zero_params=bias)", "mlp", ours, nobias), float(nobias.abs().max()))
    assert float((ours - default).abs().max()) > 1e-6 * float(default.abs().max())


def test_unmappable_conventions_are_refused():
    with pytest.raises(PeerConventionError, match="renormalize"):
        zp.zennit_rule(Epsilon(0.1, leak="renormalize"))
    with pytest.raises(PeerConventionError, match="modify_bias"):
        zp.zennit_rule(Gamma(0.25, modify_bias=False))
    model, x, target = case("cnn")
    with pytest.raises(PeerConventionError, match="Norm"):
        zp.composite(model, nrm.RuleMap(Epsilon(0.1), by_type={nn.AdaptiveAvgPool2d: Flat()}), x=x)
    with pytest.raises(PeerConventionError, match="Norm"):  # the explainer maps its rules with the same adapter
        ZennitExplainer(nrm.RuleMap(Epsilon(0.1), by_type={nn.AdaptiveAvgPool2d: Flat()}))(model, x, target)


def test_model_left_as_found():
    model, x, target = case("cnn_bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ZennitExplainer(composite=zp.builtin_composite("epsilon_plus_flat"))(model, x, target, layers=["features.0"])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_batchnorm_merge_keeps_eps(record):
    """zennit's SequentialMergeBatchNorm leaves the merged batch norm at mean 0, variance 1
    but with its eps, so it computes x / √(1 + eps) instead of x: the canonized network
    differs from the model by O(eps) = 1e-5, and so does its relevance. With eps = 0 while
    merged (``zp.merge_batchnorm()``) zennit equals nrm's exact folding."""
    model, x, target = case("cnn_bn")
    bn = model.features[1]
    plain = zp.builtin_composite("epsilon_plus_flat", exact_batchnorm=False)
    with plain.context(model):
        t = torch.linspace(-1, 1, 8 * 3 * 3, dtype=torch.float64).reshape(1, 8, 3, 3)
        assert torch.allclose(bn(t), t / (1 + bn.eps) ** 0.5, rtol=1e-15, atol=0)
    ours = nrm.explain(model, x, target=target, rules=zp.mirror("epsilon_plus_flat", model, x=x)).relevance("input")
    zen_plain = ZennitExplainer(composite=plain)
    theirs = zen_plain(model, x, target)["input"]
    scale = float(ours.abs().max())
    dev = record.difference(zen_plain, "EpsilonPlusFlat (zennit's BN merge, eps kept)", "cnn_bn", ours, theirs)
    assert 1e-9 * scale < dev < 1e3 * bn.eps * scale
    zen_exact = ZennitExplainer(composite=zp.builtin_composite("epsilon_plus_flat"))
    exact = zen_exact(model, x, target)["input"]
    assert close(record(zen_exact, "EpsilonPlusFlat (BN merge with eps 0)", "cnn_bn", ours, exact), scale)
    assert bn.eps == 1e-5  # restored


def _separable_cnn():
    """conv → ReLU → depthwise conv → pointwise conv (no ReLU between: MobileNet's and
    ShuffleNet's pattern) → ReLU → dense, seeded, float64; and a seeded signed image."""
    g = torch.Generator().manual_seed(11)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    return model, x, int(model(x).argmax())


@pytest.mark.parametrize("name", ["epsilon_plus", "epsilon_gamma_box"])
def test_mirror_reads_signed_inputs_after_a_convolution_without_relu(record, name):
    """The pointwise convolution after a depthwise one without a ReLU reads signed inputs:
    zennit's own ZPlus there is α1β0 and its γ the generalized one. ``zp.signed_inputs``
    finds it (and the first layer); ``zp.mirror`` puts the matching rule there and equals
    zennit's composite, where nrm's plain ZPlus / Gamma on it differ (measured)."""
    from cases import TOL

    from nrm_verify.peers.sweep import compare

    model, x, target = _separable_cnn()
    assert zp.signed_inputs(model, x) == {"0", "3"}
    kw = {"low": -3.0, "high": 3.0} if name == "epsilon_gamma_box" else {}
    rules = zp.mirror(name, model, x=x, **kw)
    assert type(rules.by_name["3"]) is (AlphaBeta if name == "epsilon_plus" else zp.GeneralizedGamma)
    zennit_own = record.uses(ZennitExplainer(composite=zp.builtin_composite(name, **kw)))
    theirs = zennit_own(model, x, target, layers=["2", "3"])
    m = nrm.explain(model, x, target, rules=rules)
    for layer in ("input", "2", "3"):
        ours = m.relevance(layer)
        assert close(record(zennit_own, f"{name} mirror, signed pointwise input", "separable_cnn", ours,
                            theirs[layer], what=layer), float(ours.abs().max())), layer
    plain = ZPlus(stabilizer=ZENNIT_EPS) if name == "epsilon_plus" else Gamma(0.25, stabilizer=ZENNIT_EPS)
    old = nrm.RuleMap(by_name={**rules.by_name, "3": plain})
    ours = nrm.explain(model, x, target, rules=old).relevance("input")
    dev = record.difference(zennit_own, f"{name} with nrm's plain rule on the signed pointwise input", "separable_cnn",
                            ours, theirs["input"])
    assert dev > 1e-3 * float(ours.abs().max()), dev
    # the adapter's composite of nrm's rules is exact there too (nrm's rule from zennit's parts)
    outcome = compare(record.uses(ZennitExplainer(old)), model, x, target, layers=["2", "3"], tolerance=TOL)
    assert outcome.verdict == "equal", outcome.summary()
