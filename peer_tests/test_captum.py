"""nrm equals captum's LRP with its rules (float64).

captum divides every layer by z + ε·s(z) (1e-9 unless ``EpsilonRule(ε)``) and keeps the
raw bias in γ and α1β0; the matched nrm rules carry those conventions
(``Gamma(modify_bias=False, stabilizer=1e-9)``, ``RawBiasZPlus``, …). Max-pooling and
flatten get ``EpsilonRule(1e-300)`` in captum, exact in float64 (see
``nrm_verify.peers.captum``). Every captum result comes from a
:class:`~nrm_verify.peers.CaptumExplainer`.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule
from cases import LAYERS, case, close, is_vgg
from torch import nn

import nrm
from nrm.rules import Epsilon, Gamma, ZPlus
from nrm_verify.peers import CaptumExplainer, PeerConventionError
from nrm_verify.peers import captum as cp

CAPTUM_EPS = 1e-9

# captum's rule → (the conformance row it speaks for, the matched nrm rule). captum's
# Alpha1_Beta0_Rule is α1β0, the AlphaBeta row (as zennit's AlphaBeta(1, 0) in cases.py);
# cp.BiaslessGamma and cp.RawBiasZPlus carry captum's bias conventions.
RULES = {
    "EpsilonRule(0.05)": ("Epsilon", lambda: Epsilon(0.05)),
    "GammaRule()": ("Gamma", lambda: Gamma(0.25, stabilizer=CAPTUM_EPS, modify_bias=False)),
    "GammaRule(set_bias_to_zero=True)": ("Gamma", lambda: cp.BiaslessGamma(0.25, stabilizer=CAPTUM_EPS)),
    "Alpha1_Beta0_Rule()": ("AlphaBeta", lambda: cp.RawBiasZPlus(stabilizer=CAPTUM_EPS)),
    "Alpha1_Beta0_Rule(set_bias_to_zero=True)": ("AlphaBeta", lambda: ZPlus(bias=False, stabilizer=CAPTUM_EPS)),
}


def _rules(rule: str, model_name: str):
    """The rule on every convolution and dense layer (VGG: dense layers keep ε = 1e-9,
    captum's default), average pooling with captum's default EpsilonRule (ε = 1e-9)."""
    r = RULES[rule][1]()
    dense = Epsilon(CAPTUM_EPS) if is_vgg(model_name) else r
    return nrm.RuleMap(by_type={nn.Conv2d: r, nn.Linear: dense, nn.AdaptiveAvgPool2d: Epsilon(CAPTUM_EPS)})


CASES = [(r, m) for r in RULES for m in ("mlp", "cnn")] + [(r, "vgg16") for r in ("EpsilonRule(0.05)", "GammaRule()")]


@pytest.mark.parametrize("rule,model_name", CASES)
def test_rule(record, rule, model_name):
    model, x, target = case(model_name)
    rules = _rules(rule, model_name)
    m = nrm.explain(model, x, target=target, rules=rules)
    layers = LAYERS[model_name]
    cap = record.uses(CaptumExplainer(rules, row=RULES[rule][0]))
    theirs = cap(model, x, target, layers=layers)
    for layer in ["input", *layers]:
        ours = m.relevance(layer)
        dev = record(cap, rule, model_name, ours, theirs[layer], what=layer)
        assert close(dev, float(ours.abs().max())), f"{layer}: max |Δ| = {dev:.3g}"


def test_identity_rule_on_batch_norm(record):
    """captum has no batch-norm canonizer. With ``IdentityRule`` on the batch norm, the
    relevance passes it unchanged and the convolution's rule reads the convolution's own
    outputs: nrm computes exactly that on ``bn_as_conv(model)`` (the batch norm as a
    depthwise 1×1 convolution) with ``Flat`` there (q(k|k) = 1). nrm's folding of the batch
    norm into the convolution — zennit's SequentialMergeBatchNorm — gives another
    relevance, and the difference is measured."""
    model, x, target = case("cnn_bn")
    eps = Epsilon(0.05)
    rules = nrm.RuleMap(by_type={nn.Conv2d: eps, nn.Linear: eps, nn.AdaptiveAvgPool2d: Epsilon(CAPTUM_EPS)})
    ident = {"features.1": IdentityRule(), "features.5": IdentityRule()}
    cap = record.uses(CaptumExplainer(rules, module_rules=ident, row="Epsilon"))
    theirs = cap(model, x, target)["input"]
    split = cp.bn_as_conv(model)
    bridged = nrm.RuleMap(by_type={nn.Conv2d: eps, nn.Linear: eps, nn.AdaptiveAvgPool2d: Epsilon(CAPTUM_EPS)},
                          by_name={"features.1": nrm.rules.Flat(), "features.5": nrm.rules.Flat()})
    ours = nrm.explain(split, x, target=target, rules=bridged).relevance("input")
    folded = nrm.explain(model, x, target=target, rules=rules).relevance("input")
    scale = float(theirs.abs().max())
    assert close(record(cap, "EpsilonRule(0.05) + IdentityRule on BN (nrm: BN as 1x1 conv, Flat)", "cnn_bn",
                        ours, theirs), scale)
    dev_folded = record.difference(cap, "EpsilonRule(0.05) + IdentityRule on BN (nrm: BN folded)", "cnn_bn", folded,
                                   theirs)
    assert dev_folded > 1e-3 * scale
    # captum's default EpsilonRule on the batch norm is ε on its own layer: nrm with Epsilon there
    cap_default = CaptumExplainer(rules, row="Epsilon", module_rules={
        "features.1": EpsilonRule(epsilon=0.05), "features.5": EpsilonRule(epsilon=0.05)})
    default = cap_default(model, x, target)["input"]
    own = nrm.explain(split, x, target=target, rules=nrm.RuleMap(
        by_type={nn.Conv2d: eps, nn.Linear: eps, nn.AdaptiveAvgPool2d: Epsilon(CAPTUM_EPS)})).relevance("input")
    assert close(record(cap_default, "EpsilonRule(0.05) on BN (nrm: BN as 1x1 conv, Epsilon)", "cnn_bn", own, default),
                 float(default.abs().max()))


def test_gamma_bias_convention(record):
    """captum's GammaRule keeps the raw bias b in the denominator; nrm's default Gamma puts
    ρ_γ(b) = b + γ b⁺ there. They differ (measured); ``Gamma(modify_bias=False)`` matches."""
    model, x, target = case("cnn")
    cap = record.uses(CaptumExplainer(_rules("GammaRule()", "cnn"), row="Gamma"))
    theirs = cap(model, x, target)["input"]
    g = Gamma(0.25, stabilizer=CAPTUM_EPS)
    ours = nrm.explain(model, x, target=target, rules=nrm.RuleMap(
        by_type={nn.Conv2d: g, nn.Linear: g, nn.AdaptiveAvgPool2d: Epsilon(CAPTUM_EPS)})).relevance("input")
    dev = record.difference(cap, "GammaRule() vs nrm Gamma(modify_bias=True)", "cnn", ours, theirs)
    assert dev > 1e-6 * float(theirs.abs().max())


def test_unmappable_conventions_are_refused():
    with pytest.raises(PeerConventionError, match="modify_bias"):
        cp.captum_rule(Gamma(0.25, stabilizer=1e-9))
    with pytest.raises(PeerConventionError, match="RawBiasZPlus"):
        cp.captum_rule(ZPlus(stabilizer=1e-9))
    with pytest.raises(PeerConventionError, match="stabilizer"):
        cp.captum_rule(Gamma(0.25, modify_bias=False))
    with pytest.raises(PeerConventionError, match="unsigned|signed"):
        cp.captum_rule(Epsilon(0.1, stabilizer_sign="unsigned"))
    model, x, target = case("mlp")
    with pytest.raises(PeerConventionError, match="modify_bias"):  # the explainer maps its rules with captum_rule
        CaptumExplainer(Gamma(0.25, stabilizer=1e-9))(model, x, target)


def test_model_left_as_found():
    model, x, target = case("cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    CaptumExplainer(_rules("GammaRule()", "cnn"))(model, x, target, layers=["features.0"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in model.modules())
