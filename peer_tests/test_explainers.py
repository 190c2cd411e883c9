"""The Explainer interface on the peers themselves: each peer explainer is its adapter (no
number changes), zennit's and captum's own composites and methods run as the peers define
them, CRP's conditions, and the ``record`` fixture's rows. (Without the peers:
``tests/test_explainers.py``.)"""

from __future__ import annotations

import pytest
import torch
import zennit
from captum.attr import InputXGradient
from cases import case

import nrm
from nrm.errors import ArgumentError, UnknownLayerError
from nrm.rules import Epsilon, Zero
from nrm_verify.peers import CaptumExplainer, CRPExplainer, NRMExplainer, ZennitExplainer
from nrm_verify.peers import captum as cp
from nrm_verify.peers import zennit as zp


def test_zennit_explainer_is_the_adapter():
    model, x, target = case("cnn")
    rules = nrm.presets.EpsilonPlusFlat()
    out = ZennitExplainer(rules)(model, x, target, layers=["input", "features.3"])
    direct = zp.relevance(model, x, target, zp.composite(model, rules, x=x), layers=["features.3"])
    assert list(out) == ["input", "features.3"]
    assert torch.equal(out["input"], direct["input"]) and torch.equal(out["features.3"], direct["features.3"])
    with pytest.raises(UnknownLayerError, match="no modules"):
        ZennitExplainer(rules)(model, x, target, layers=["features.99"])


def test_zennit_own_composite_by_name_and_its_start():
    """``ZennitExplainer.named`` runs ``zennit.composites.<name>``; ``start="one-hot"`` is
    zennit's ``Gradient`` attributor with the one-hot of the target (the snapshot spec
    ``zennit:…``, unchanged), and R = f_c times it."""
    model, x, target = case("cnn")
    onehot = ZennitExplainer.named("EpsilonPlusFlat", start="one-hot")(model, x, target)["input"]
    with torch.no_grad():
        f = model(x)[0, target]
    composite = zennit.composites.EpsilonPlusFlat()
    with zennit.attribution.Gradient(model=model, composite=composite) as attributor:
        grad_out = torch.zeros(1, 10, dtype=x.dtype)
        grad_out[0, target] = 1.0
        _, attribution = attributor(x.clone().requires_grad_(True), grad_out)
    assert torch.equal(onehot, attribution)
    lrp = ZennitExplainer.named("EpsilonPlusFlat")(model, x, target)["input"]
    assert torch.allclose(lrp, f * onehot, rtol=1e-12, atol=1e-15)
    gamma = ZennitExplainer.named("EpsilonGammaBox", kwargs={"low": -2.0, "high": 2.0})
    assert gamma.row is None and gamma(model, x, target)["input"].shape == x.shape
    with pytest.raises(ArgumentError, match="no composite 'Nope'"):
        ZennitExplainer.named("Nope")


def test_captum_explainer_is_the_adapter_and_runs_captum_methods():
    model, x, target = case("cnn")
    rules = nrm.RuleMap(Epsilon(0.05), by_type={torch.nn.AdaptiveAvgPool2d: Epsilon(1e-9)})
    out = CaptumExplainer(rules)(model, x, target, layers=["features.0"])
    direct = cp.relevance(model, x, target, rules, layers=["features.0"])
    assert torch.equal(out["input"], direct["input"]) and torch.equal(out["features.0"], direct["features.0"])
    ours = NRMExplainer(rules)(model, x, target, layers=["input"])["input"]
    assert float((ours - out["input"]).abs().max()) <= 1e-9 * max(1.0, float(ours.abs().max()))
    native = CaptumExplainer(method="InputXGradient")
    assert torch.equal(native(model, x, target)["input"], InputXGradient(model).attribute(x, target=target))
    with pytest.raises(ArgumentError, match="input only"):
        native(model, x, target, layers=["features.0"])
    with pytest.raises(ArgumentError, match="no attribution method 'Nope'"):
        CaptumExplainer(method="Nope")


def test_crp_explainer_conditions():
    """One condition gives a batch of one; a list, one heatmap per condition; no condition,
    the plain heatmap, which is zennit's relevance under the same composite."""
    model, x, target = case("cnn")
    composite = zp.builtin_composite("epsilon_plus_flat")
    one = CRPExplainer(composite=composite, condition={"features.3": [2, 5]})(model, x, target)
    several = CRPExplainer(composite=composite, condition=[{"features.3": [2, 5]}, {"features.3": [0]}])(
        model, x, target, layers=["features.0"])
    assert one["input"].shape == x.shape and several["input"].shape == (2, *x.shape[1:])
    assert torch.allclose(one["input"][0], several["input"][0], rtol=1e-12, atol=1e-15)
    assert several["features.0"].shape[0] == 2
    plain = CRPExplainer(composite=composite)(model, x, target)["input"]
    assert torch.allclose(plain, ZennitExplainer(composite=composite)(model, x, target)["input"], rtol=1e-12,
                          atol=1e-15)
    # a condition through nrm rules: CRP's heatmap is f · μ(X_0 = i, X_l ∈ S)
    rules = nrm.presets.EpsilonPlusFlat()
    theirs = CRPExplainer(rules, condition={"features.3": [2, 5]})(model, x, target)["input"]
    m = nrm.explain(model, x, target=target, rules=rules)
    ours = m.f * m.marginal("input", within=nrm.At("features.3", channels=[2, 5]))
    assert float((ours - theirs).abs().max()) <= 1e-9 * max(1.0, float(ours.abs().max()))


def test_record_marks_the_rows_a_test_speaks_for(record, request):
    """``record.uses`` puts the explainer's row among the test's JUnit properties (once),
    before the peer runs: a test that fails inside the peer is still attributed."""
    zen = ZennitExplainer(Zero())
    assert record.uses(zen) is zen
    record.uses(ZennitExplainer(Zero(), start="one-hot"))
    record.uses(CaptumExplainer(method="InputXGradient"))  # speaks for no row
    assert request.node.user_properties == [("row", "Zero")]
