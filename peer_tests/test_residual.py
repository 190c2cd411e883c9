"""nrm equals zennit, zennit-crp and captum on residual models (float64).

Models (``cases.RESNETS``): torchvision's ``resnet18`` and a bottleneck ResNet
(``ResNet(Bottleneck, [1, 1, 1, 1])``), seeded, 32×32 input. nrm traces them with torch.fx;
a residual sum is a layer of its own (fx node ``add``, ``add_1``, …). zennit runs with its
ResNet canonizer (each block's sum in a ``Sum`` module, ``Norm`` on it; batch norms merged,
with eps 0 while merged — ``zp.resnet_canonizers``), CRP with the same composite and both
``exclude_parallel`` settings, captum on the model rewritten with its ``Addition_Module``.

Relevance is compared at the input and at layers inside blocks (``conv1``, ``conv2``,
``downsample.0``), at block outputs (a block module's output = nrm's sum layer, the ReLU
after it passes relevance unchanged) and at the stem and classifier. Every peer result
comes from an :class:`~nrm_verify.peers.Explainer`.
"""

from __future__ import annotations

import pytest
import torch
import zennit
from captum.attr._utils.lrp_rules import IdentityRule
from cases import case, close
from torch import nn

import nrm
from nrm.rules import AlphaBeta, Epsilon, Gamma, ZPlus
from nrm_verify.peers import CaptumExplainer, CRPExplainer, PeerConventionError, ZennitExplainer
from nrm_verify.peers import captum as cp
from nrm_verify.peers import crp as cr
from nrm_verify.peers import zennit as zp
from nrm_verify.zoo import architectures

LOW, HIGH = -2.0, 2.0  # the seeded image lies in [-2, 2]
LAYERS = {
    "resnet18": ["conv1", "maxpool", "layer1.0.conv1", "layer1.0.conv2", "layer1.0", "layer2.0.conv2",
                 "layer2.0.downsample.0", "layer2.0", "layer3.1.conv2", "layer4.1", "fc"],
    "resnet_bottleneck": ["conv1", "maxpool", "layer1.0.conv2", "layer1.0.conv3", "layer1.0.downsample.0",
                          "layer1.0", "layer2.0.conv3", "layer2.0", "layer4.0", "fc"],
}
"""zennit modules whose output relevance is compared (block modules: their output)."""

COMPOSITES = {"EpsilonPlusFlat": "epsilon_plus_flat", "EpsilonGammaBox": "epsilon_gamma_box",
              "EpsilonAlpha2Beta1": "epsilon_alpha2_beta1"}


def block_outputs(model, x) -> dict[str, str]:
    """A residual block's module path → nrm's layer of its output (the sum; the ReLU after
    it is a trailing step)."""
    return {module.rsplit(".", 1)[0]: node for node, module in zp.sum_modules(model, x=x).items()}


def _kw(name):
    return {"low": LOW, "high": HIGH} if name == "epsilon_gamma_box" else {}


def _compare(record, label, model_name, m, explainer):
    """nrm's measure ``m`` against the zennit ``explainer`` at the input and :data:`LAYERS`."""
    model, x, target = case(model_name)
    theirs = record.uses(explainer)(model, x, target, layers=LAYERS[model_name])
    devs = {}
    for layer in ["input", *LAYERS[model_name]]:
        ours = m.relevance(layer)
        devs[layer] = (record(explainer, label, model_name, ours, theirs[layer], what=layer), float(ours.abs().max()))
    return devs


def _assert_close(devs):
    bad = {k: v for k, v in devs.items() if not close(*v)}
    assert not bad, f"deviation beyond tolerance (layer: (max |Δ|, max |R|)): {bad}"


# --- zennit ---------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["resnet18", "resnet_bottleneck"])
@pytest.mark.parametrize("preset", list(COMPOSITES))
def test_zennit_composite_equals_mirror(record, preset, model_name):
    """zennit's own composite with its ResNet canonizer (defaults ε = 1e-6, stabilizer 1e-6,
    Norm on each block's Sum) = nrm with ``zp.mirror``: the same rules, Epsilon(1e-6) on
    the sums and the pooling, GeneralizedGamma on the convolutions before a sum."""
    model, x, target = case(model_name)
    name = COMPOSITES[preset]
    rules = zp.mirror(name, model, x=x, **_kw(name))
    assert all(rules.by_name[s] == Epsilon(1e-6) for s in block_outputs(model, x).values())
    m = nrm.explain(model, x, target=target, rules=rules)
    zennit_own = ZennitExplainer(composite=zp.builtin_composite(name, resnet=True, **_kw(name)))  # = the mirror
    _assert_close(_compare(record, f"{preset} (zennit defaults, ResNet canonizer)", model_name, m, zennit_own))
    # conservation on the branched model: at a layer inside a block, through + bypassing + ⊥ = 1
    inside = "layer2.0.conv2" if model_name == "resnet18" else "layer2.0.conv3"
    total = m.marginal(inside).sum() + m.bypassing(inside).sum() + m.absorbed(inside).sum()
    assert abs(float(total) - 1.0) < 1e-9
    assert abs(float(m.bypassing(inside).sum())) > 1e-3  # the skip path carries relevance here


@pytest.mark.parametrize("preset", ["EpsilonPlusFlat", "EpsilonAlpha2Beta1"])
def test_nrm_preset_equals_zennit_with_zero_stabilizer(record, preset):
    """nrm's preset as it is (stabilizer 0, LRP-0 on pooling and on the sums) = zennit's
    composite with ``stabilizer=zp.safe_denominator`` (Norm on Sum with a zero stabilizer)."""
    model, x, target = case("resnet18")
    name = COMPOSITES[preset]
    m = nrm.explain(model, x, target=target, rules=nrm.presets.PRESETS[preset]())
    assert m.rule("add") == nrm.rules.Zero()
    zen = ZennitExplainer(composite=zp.builtin_composite(name, stabilizer=zp.safe_denominator, resnet=True), row=preset)
    _assert_close(_compare(record, f"{preset} (nrm preset)", "resnet18", m, zen))


@pytest.mark.parametrize("preset", sorted(nrm.presets.PRESETS))
def test_adapter_composite_of_every_preset(record, preset):
    """``zp.composite(resnet, preset)``: nrm's sums map to the canonizer's ``canonizer_sum``
    modules (Norm), nrm's γ / z⁺ on the convolutions before a sum are built from zennit's
    parts; zennit then computes nrm's relevance."""
    model, x, target = case("resnet18")
    rules = nrm.presets.PRESETS[preset](**({"low": LOW, "high": HIGH} if preset == "EpsilonGammaBox" else {}))
    m = nrm.explain(model, x, target=target, rules=rules)
    _assert_close(_compare(record, f"{preset} (adapter)", "resnet18", m, ZennitExplainer(rules)))


def test_generalized_gamma_before_the_sum(record):
    """zennit's γ is the generalized one: a column with z_k < 0 swaps w⁺ and w⁻. After a
    ReLU such columns carry no relevance, but ``conv2`` and ``downsample.0`` feed the
    residual sum directly, so their negative columns do. nrm's plain Gamma there differs
    from zennit (measured); GeneralizedGamma on exactly those layers (``zp.mirror``) removes
    the difference, and Gamma with GeneralizedGamma only on the first layer does not."""
    model, x, target = case("resnet18")
    mirror = zp.mirror("epsilon_gamma_box", model, x=x, low=LOW, high=HIGH)
    general = sorted(k for k, r in mirror.by_name.items() if type(r) is zp.GeneralizedGamma)
    assert "layer1.0.conv2" in general and "layer2.0.downsample.0" in general and "layer1.0.conv1" not in general
    plain = nrm.RuleMap(by_name={k: (Gamma(0.25, stabilizer=1e-6) if type(r) is zp.GeneralizedGamma else r)
                                 for k, r in mirror.by_name.items()})
    zen = ZennitExplainer(composite=zp.builtin_composite("epsilon_gamma_box", resnet=True, low=LOW, high=HIGH))
    theirs = zen(model, x, target)
    m_plain = nrm.explain(model, x, target=target, rules=plain)
    m_mirror = nrm.explain(model, x, target=target, rules=mirror)
    scale = float(theirs["input"].abs().max())
    dev_plain = record.difference(zen, "EpsilonGammaBox with nrm Gamma before the sums", "resnet18",
                                  m_plain.relevance("input"), theirs["input"])
    dev_mirror = record(zen, "EpsilonGammaBox with GeneralizedGamma before the sums", "resnet18",
                        m_mirror.relevance("input"), theirs["input"])
    assert close(dev_mirror, scale)
    assert dev_plain > 1e-3 * scale
    # the cause: relevance on columns with z_k < 0 of a convolution that feeds a sum
    z = m_mirror.activations("layer1.0.conv2")
    r = m_mirror.relevance("layer1.0.conv2")
    assert float(r[z < 0].abs().sum()) > 1e-3 * float(r.abs().sum())


def test_sum_rule_convention(record):
    """zennit's composites put Norm (ε = 1e-6 without bias) on each Sum, nrm's presets put
    LRP-0 there: the mirror without the sums' Epsilon(1e-6) differs from zennit by a small
    amount (measured), with it not at all."""
    model, x, target = case("resnet18")
    mirror = zp.mirror("epsilon_plus_flat", model, x=x)
    sums = set(block_outputs(model, x).values())
    bare = nrm.RuleMap(by_name={k: r for k, r in mirror.by_name.items() if k not in sums},
                       by_type={nrm.Sum: nrm.rules.Zero()})  # nrm's presets: LRP-0 on sums
    m_bare = nrm.explain(model, x, target=target, rules=bare)
    zen = ZennitExplainer(composite=zp.builtin_composite("epsilon_plus_flat", resnet=True))
    theirs = zen(model, x, target)["input"]
    ours = nrm.explain(model, x, target=target, rules=mirror).relevance("input")
    scale = float(ours.abs().max())
    dev = record.difference(zen, "EpsilonPlusFlat with LRP-0 on the sums", "resnet18", m_bare.relevance("input"),
                            theirs)
    assert 1e-13 * scale < dev < 1e-3 * scale
    assert close(float((ours - theirs).abs().max()), scale)


def test_resnet_canonizer_keeps_batchnorm_eps(record):
    """zennit's own ``ResNetCanonizer`` merges every batch norm (20 in resnet18, inside the
    blocks and the shortcuts) with ``SequentialMergeBatchNorm``, which keeps eps: each
    merged batch norm computes x / √(1 + eps), and the relevance is off by O(eps) (measured).
    ``zp.resnet_canonizers()`` (eps 0 while merged) matches nrm's exact folding."""
    model, x, target = case("resnet18")
    rules = zp.mirror("epsilon_plus_flat", model, x=x)
    ours = nrm.explain(model, x, target=target, rules=rules).relevance("input")
    zennit_canonizer = zennit.composites.EpsilonPlusFlat(canonizers=[zennit.torchvision.ResNetCanonizer()])
    zen = ZennitExplainer(composite=zennit_canonizer)
    theirs = zen(model, x, target)["input"]
    scale = float(ours.abs().max())
    dev = record.difference(zen, "EpsilonPlusFlat (zennit's ResNetCanonizer, BN eps kept)", "resnet18", ours, theirs)
    assert 1e-9 * scale < dev < 1e3 * 1e-5 * scale
    exact = ZennitExplainer(composite=zp.builtin_composite("epsilon_plus_flat", resnet=True))(model, x, target)["input"]
    assert close(float((ours - exact).abs().max()), scale)
    assert all(bn.eps == 1e-5 for bn in model.modules() if isinstance(bn, nn.BatchNorm2d))  # restored


def test_sum_outside_torchvision_blocks_is_refused():
    """zennit's canonizer rewrites only torchvision's BasicBlock / Bottleneck: a residual
    sum anywhere else has no zennit module, and the adapter says so."""
    model = architectures.resnet("basic", seed=0, dtype=torch.float64)
    with pytest.raises(PeerConventionError, match="BasicBlock or Bottleneck"):
        zp.sum_modules(model, x=torch.zeros(1, 3, 8, 8, dtype=torch.float64))
    resnet18, x, _ = case("resnet18")
    with pytest.raises(PeerConventionError, match="sum"):
        zp.composite(resnet18, {nn.Conv2d: ZPlus(), nn.Linear: Epsilon(0.1),
                                nn.AdaptiveAvgPool2d: Epsilon(1e-6), nrm.Sum: ZPlus()}, x=x)


# --- zennit-crp -----------------------------------------------------------------------

CRP_LAYERS = {  # CRP layer → (channels compared one by one, lower layers recorded)
    "layer2.0.conv2": ([0, 5, 17, 64, 127], ["layer2.0.conv1", "layer1.1"]),
    "layer2.0": ([0, 5, 17, 64, 127], ["layer2.0.conv2", "layer1.1"]),
}


def _crp_setup():
    model, x, target = case("resnet18")
    composite = zp.builtin_composite("epsilon_gamma_box", resnet=True, low=LOW, high=HIGH)
    m = nrm.explain(model, x, target=target, rules=zp.mirror("epsilon_gamma_box", model, x=x, low=LOW, high=HIGH))
    return model, x, target, composite, m


@pytest.mark.parametrize("exclude_parallel", [True, False])
@pytest.mark.parametrize("layer", list(CRP_LAYERS))
def test_crp_conditional_heatmaps(record, layer, exclude_parallel):
    """CRP's heatmap for channel c at ``layer`` = f · m.marginal("input",
    within=At(layer, channels=[c], parallel=not exclude_parallel)); the relevance CRP
    records at lower layers (inside the block, on its shortcut, the block below) under the
    condition likewise. Inside a block the two settings differ (the shortcut bypasses
    ``conv2``); at a block output nothing bypasses the layer and they coincide."""
    model, x, target, composite, m = _crp_setup()
    channels, lower = CRP_LAYERS[layer]
    crp = record.uses(CRPExplainer(composite=composite, condition=[{layer: [c]} for c in channels],
                                   exclude_parallel=exclude_parallel))
    theirs = crp(model, x, target, layers=lower)
    events = [nrm.At(layer, channels=[c], parallel=not exclude_parallel) for c in channels]
    f = m.f.reshape(-1)
    label = f"conditional heatmap, exclude_parallel={exclude_parallel}"
    ours = f * m.marginal("input", within=events)[:, 0]
    scale = float(ours.abs().max())
    assert scale > 0
    assert close(record(crp, label, "resnet18", ours, theirs["input"], what=f"input | {layer}"), scale)
    for low in lower:
        ours_low = f * m.marginal(low, within=events)[:, 0]
        assert close(record(crp, f"conditional relevance, exclude_parallel={exclude_parallel}", "resnet18",
                            ours_low, theirs[low], what=f"{low} | {layer}"),
                     float(ours_low.abs().max()))
    other = [nrm.At(layer, channels=[c], parallel=exclude_parallel) for c in channels]
    gap = float((f * m.marginal("input", within=other)[:, 0] - ours).abs().max())
    if layer == "layer2.0":
        assert close(gap, scale)  # a block output: no walk bypasses it
    else:
        assert gap > 1e-3 * scale  # the shortcut's walks: included by one setting only


def test_crp_relevance_on_the_parallel_branch(record):
    """CRP with exclude_parallel=False, condition on ``layer2.0.conv2``, relevance recorded on
    the parallel shortcut ``layer2.0.downsample.0``: CRP leaves the shortcut untouched, so
    it records the shortcut's whole relevance f · m_ds(j). nrm's f · μ(X_ds = j,
    At(conv2, S, parallel=True)) equals it: the walks through j that the shortcut's own bias
    absorbs never meet ``conv2`` — they bypass it — whether forward() computes the shortcut
    after ``conv2`` (torchvision; fx numbers it above) or before. ⊥ of a layer holds only
    what the layers reading it absorb, so the semantics do not depend on the order of
    parallel branches."""
    model, x, target, composite, m = _crp_setup()
    layer, ds, channels = "layer2.0.conv2", "layer2.0.downsample.0", [0, 17]
    crp = record.uses(CRPExplainer(composite=composite, condition=[{layer: [c]} for c in channels],
                                   exclude_parallel=False))
    theirs = crp(model, x, target, layers=[ds])[ds]
    f = m.f.reshape(-1)
    events = [nrm.At(layer, channels=[c], parallel=True) for c in channels]
    assert m.layers.index(ds) > m.layers.index(layer)  # torchvision's order: the shortcut is numbered above
    ours = f * m.marginal(ds, within=events)[:, 0]
    whole = m.relevance(ds)[0]
    scale = float(whole.abs().max())
    assert close(float((theirs - whole).abs().max()), scale)  # CRP: the shortcut's whole relevance
    assert close(record(crp, "relevance on the parallel shortcut, exclude_parallel=False (torchvision order)",
                        "resnet18", ours, theirs, what=f"{ds} | {layer}"), scale)
    # nothing of the shortcut's relevance is at conv2's absorber: its bias bypasses conv2
    at_bottom = f * m.marginal(ds, within=nrm.At(layer, index=[], absorber=True))[0]
    assert float(at_bottom.abs().max()) <= 1e-12 * scale
    # the same function and rules with the shortcut computed first: the same numbers
    first = cp.with_addition_modules(model)
    m_first = nrm.explain(first, x, target=target, rules=zp.mirror("epsilon_gamma_box", first, x=x, low=LOW, high=HIGH))
    assert m_first.layers.index(ds) < m_first.layers.index(layer)
    ours_first = f * m_first.marginal(ds, within=events)[:, 0]
    assert close(record(crp, "relevance on the parallel shortcut, exclude_parallel=False (shortcut first)",
                        "resnet18", ours_first, theirs, what=f"{ds} | {layer}"), scale)
    assert close(float((m_first.bypassing(layer) - m.bypassing(layer)).abs().max()), 1.0)


@pytest.mark.parametrize("exclude_parallel", [True, False])
@pytest.mark.parametrize("layer", ["layer1.0", "layer1.0.conv2"])
def test_crp_channel_heatmaps_sum(record, layer, exclude_parallel):
    """L17 on a residual model, over a partition of all 64 channels into K = 8 concepts.
    At a block output the concepts' heatmaps sum to the plain heatmap. Inside a block
    (``conv2``) the decomposition is through + bypassing = plain: with exclude_parallel=True
    the concepts sum to the walks through ``conv2`` (plain − bypassing heatmap); with
    exclude_parallel=False each concept's heatmap also holds all the bypassing walks, so
    the sum is through + K · bypassing."""
    model, x, target, composite, m = _crp_setup()
    name = layer
    groups = [list(range(i, m.layer_shape(name)[0], 8)) for i in range(8)]
    assert sorted(c for g in groups for c in g) == list(range(64))
    crp = record.uses(CRPExplainer(composite=composite, condition=[{layer: g} for g in groups],
                                   exclude_parallel=exclude_parallel))
    theirs = crp(model, x, target)["input"].sum(0)
    plain = CRPExplainer(composite=composite)(model, x, target)["input"][0]
    f = m.f.reshape(-1)
    plain_ours = m.relevance("input")[0]
    scale = float(plain_ours.abs().max())
    assert close(float((plain - plain_ours).abs().max()), scale)
    bypass = (f * m.marginal("input", within=nrm.At(name, index=[], parallel=True)))[0]
    ours = (f * m.marginal("input", within=[nrm.At(name, channels=g, parallel=not exclude_parallel)
                                            for g in groups])[:, 0]).sum(0)
    record(crp, f"sum of channel heatmaps, exclude_parallel={exclude_parallel}", "resnet18", ours, theirs,
           what=f"input | {layer}")
    assert close(float((ours - theirs).abs().max()), scale)
    if layer == "layer1.0":
        assert close(float(bypass.abs().max()), scale)
        assert close(float((theirs - plain).abs().max()), scale)  # L17
    else:
        assert float(bypass.abs().max()) > 1e-3 * scale
        predicted = plain - bypass if exclude_parallel else plain + (len(groups) - 1) * bypass
        assert close(float((theirs - predicted).abs().max()), scale)


@pytest.mark.parametrize("layer", ["layer2.0.conv2", "layer2.0"])
def test_crp_concept_relevance(record, layer):
    """ChannelConcept relevance (abs_norm=False) at a layer inside a block and at a block
    output = f · m_l(c), the marginal summed over the channel."""
    model, x, target, composite, m = _crp_setup()
    marg = m.marginal(layer)
    ours = m.f.reshape(-1, 1) * marg.reshape(marg.shape[0], marg.shape[1], -1).sum(-1)
    crp = record.uses(CRPExplainer(composite=composite))
    theirs = cr.concept_relevance(crp(model, x, target, layers=[layer])[layer], abs_norm=False)
    assert close(record(crp, "concept relevance", "resnet18", ours, theirs, what=layer),
                 float(ours.abs().max()))


# --- captum ---------------------------------------------------------------------------

CAPTUM_EPS = 1e-9
CAPTUM_RULES = {  # captum's rule → (the conformance row, the matched nrm rule), as in test_captum.py
    "EpsilonRule(0.05)": ("Epsilon", lambda: Epsilon(0.05)),
    "GammaRule()": ("Gamma", lambda: Gamma(0.25, stabilizer=CAPTUM_EPS, modify_bias=False)),
    "Alpha1_Beta0_Rule()": ("AlphaBeta", lambda: cp.RawBiasZPlus(stabilizer=CAPTUM_EPS)),
}
CAPTUM_LAYERS = ["conv1", "layer1.0.conv2", "layer1.0.bn2", "layer2.0.downsample.0", "layer2.0.addition",
                 "layer3.1.conv1", "fc"]


def _captum_case():
    """resnet18 with its sums in captum's Addition_Module and batch norms as depthwise 1×1
    convolutions (captum has no batch-norm canonizer): IdentityRule there = nrm's Flat."""
    model, x, target = case("resnet18")
    rewritten = cp.bn_as_conv(cp.with_addition_modules(model))
    bns = [n for n, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)]
    return rewritten, x, target, bns


def _captum_rules(rule, bns, sum_rule):
    return nrm.RuleMap(by_type={nn.Conv2d: rule, nn.Linear: rule, nn.AdaptiveAvgPool2d: Epsilon(CAPTUM_EPS),
                                nrm.Sum: sum_rule},
                       by_name={n: nrm.rules.Flat() for n in bns})


@pytest.mark.parametrize("rule", list(CAPTUM_RULES))
def test_captum_with_addition_module(record, rule):
    """captum's LRP on resnet18 rewritten with ``Addition_Module`` (EpsilonRule, ε = 1e-9)
    = nrm with Epsilon(1e-9) on the sums, at the input and inside the blocks. (captum's
    GammaRule is the plain γ with the raw bias, so columns of ``conv2`` with z_k ≈ 0 give
    large relevance, |R| ~ 10⁴ here, in both libraries alike.)"""
    model, x, target, bns = _captum_case()
    original = case("resnet18")[0]
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), rtol=1e-12, atol=1e-14)  # the same function
    row, make = CAPTUM_RULES[rule]
    rules = _captum_rules(make(), bns, Epsilon(CAPTUM_EPS))
    m = nrm.explain(model, x, target=target, rules=rules)
    sums = cp.addition_modules(model, x=x)
    assert sums["layer1.0.addition"] == "layer1.0.addition"  # the sum is the one operation of its module
    nrm_names = {v: k for k, v in sums.items()}
    cap = record.uses(CaptumExplainer(rules, module_rules={n: IdentityRule() for n in bns},
                                      row=row))
    theirs = cap(model, x, target, layers=CAPTUM_LAYERS)
    for layer in ["input", *CAPTUM_LAYERS]:
        ours = m.relevance(nrm_names.get(layer, layer))
        dev = record(cap, f"{rule}, Addition_Module", "resnet18", ours, theirs[layer], what=layer)
        assert close(dev, float(ours.abs().max())), f"{layer}: max |Δ| = {dev:.3g}"


def test_captum_plain_sum_copies_relevance(record):
    """Without ``Addition_Module`` captum cannot express a residual sum: ``out += identity``
    is no module, so no rule runs there and autograd gives *each* summand the sum's whole
    relevance. Measured on the top block: captum's relevance at ``layer4.1.bn2`` (the residual
    branch) equals nrm's relevance at the sum ``add_7`` itself, not nrm's share of it for that
    branch; and the adapter refuses such a model unless told ``plain_sums=True``."""
    model, x, target = case("resnet18")
    plain = cp.bn_as_conv(model)  # torchvision's blocks: `out += identity`
    bns = [n for n, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)]
    rules = _captum_rules(Epsilon(0.05), bns, Epsilon(CAPTUM_EPS))
    with pytest.raises(PeerConventionError, match="Addition_Module"):
        CaptumExplainer(rules)(plain, x, target)
    cap = record.uses(CaptumExplainer(rules, plain_sums=True, module_rules={n: IdentityRule() for n in bns},
                                      row="Epsilon"))
    theirs = cap(plain, x, target, layers=["layer4.1.bn2"])
    m = nrm.explain(plain, x, target=target, rules=rules)
    whole, share = m.relevance("add_7"), m.relevance("layer4.1.bn2")
    scale = float(whole.abs().max())
    assert close(record.difference(cap, "plain '+': branch gets the sum's relevance", "resnet18", whole,
                        theirs["layer4.1.bn2"], what="layer4.1.bn2 vs add_7"), scale)
    assert float((share - theirs["layer4.1.bn2"]).abs().max()) > 1e-2 * scale


def test_addition_rule_must_be_epsilon():
    model, x, target, bns = _captum_case()
    rules = _captum_rules(Epsilon(0.05), bns, AlphaBeta(2, 1))
    with pytest.raises(PeerConventionError, match="Addition_Module takes EpsilonRule"):
        CaptumExplainer(rules)(model, x, target)
