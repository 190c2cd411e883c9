"""nrm equals zennit-crp: conditional heatmaps are f · μ(X_0 = i, X_l ∈ S), concept
relevances are f · m_l(c), and the channels' heatmaps sum to the plain heatmap (L17).

CRP runs with zennit's EpsilonGammaBox composite (defaults), through a
:class:`~nrm_verify.peers.CRPExplainer` per condition; nrm with ``zp.mirror`` of it.
"""

from __future__ import annotations

import pytest
import torch
from cases import box, case, close

import nrm
from nrm_verify.peers import CRPExplainer
from nrm_verify.peers import crp as cr
from nrm_verify.peers import zennit as zp


def _setup(model_name):
    model, x, target = case(model_name)
    low, high = box(model_name)
    rules = zp.mirror("epsilon_gamma_box", model, x=x, low=low, high=high)
    composite = zp.builtin_composite("epsilon_gamma_box", low=low, high=high)
    m = nrm.explain(model, x, target=target, rules=rules)
    return model, x, target, composite, m


CHANNELS = {  # model → (layer, channels compared one by one, lower layer recorded)
    "mlp": ("fc2", list(range(16)), "fc1"),
    "cnn": ("features.3", list(range(16)), "features.0"),
    "cnn_bn": ("features.4", list(range(16)), "features.0"),
    "vgg16": ("features.26", [0, 7, 100, 300, 511], "features.14"),
}


@pytest.mark.parametrize("model_name", list(CHANNELS))
def test_conditional_heatmaps(record, model_name):
    """CRP's heatmap for channel c at layer l = f · m.marginal("input", within=At(l, channels=[c])),
    and the relevance CRP records at a lower layer under that condition =
    f · m.marginal(lower, within=At(l, channels=[c]))."""
    model, x, target, composite, m = _setup(model_name)
    layer, channels, lower = CHANNELS[model_name]
    crp = record.uses(CRPExplainer(composite=composite, condition=[{layer: [c]} for c in channels]))
    theirs = crp(model, x, target, layers=[lower])
    events = [nrm.At(layer, channels=[c]) if model_name != "mlp" else nrm.At(layer, index=[c]) for c in channels]
    f = m.f.reshape(-1)
    ours = f * m.marginal("input", within=events)[:, 0]
    ours_lower = f * m.marginal(lower, within=events)[:, 0]
    scale = float(ours.abs().max())
    assert scale > 0
    assert close(record(crp, "conditional heatmap (EpsilonGammaBox)", model_name, ours, theirs["input"]), scale)
    assert close(record(crp, "conditional relevance (EpsilonGammaBox)", model_name, ours_lower, theirs[lower],
                        what=lower), float(ours_lower.abs().max()))


@pytest.mark.parametrize("model_name,layer,groups", [
    ("cnn", "features.3", [[c] for c in range(16)]),
    ("cnn_bn", "features.0", [[c] for c in range(8)]),
    ("vgg16", "features.28", [list(range(i, 512, 4)) for i in range(4)]),
])
def test_channel_heatmaps_sum_to_plain_heatmap(record, model_name, layer, groups):
    """L17: the conditional heatmaps of a partition of the channels sum to the plain
    heatmap — in CRP, in nrm, and the two agree."""
    model, x, target, composite, m = _setup(model_name)
    crp = record.uses(CRPExplainer(composite=composite, condition=[{layer: g} for g in groups]))
    theirs = crp(model, x, target)["input"].sum(0)
    plain_theirs = CRPExplainer(composite=composite)(model, x, target)["input"][0]
    plain_ours = m.relevance("input")[0]
    scale = float(plain_ours.abs().max())
    assert close(float((theirs - plain_theirs).abs().max()), scale)
    events = [nrm.At(layer, channels=g) for g in groups]
    ours = (m.f * m.marginal("input", within=events)[:, 0]).sum(0)
    assert close(float((ours - plain_ours).abs().max()), scale)
    assert close(record(crp, "sum of channel heatmaps (L17)", model_name, ours, theirs), scale)


@pytest.mark.parametrize("model_name,layer", [("mlp", "fc2"), ("cnn", "features.3"), ("vgg16", "features.28")])
def test_concept_relevance(record, model_name, layer):
    """CRP's ChannelConcept relevance: with abs_norm=False it is f · m_l(c) (summed over the
    channel's neurons); with CRP's default abs_norm=True it is R_c / (Σ_c |R_c| + 1e-10)
    — CRP normalizes by the absolute total, nrm by f."""
    model, x, target, composite, m = _setup(model_name)
    marg = m.marginal(layer)
    per_channel = (m.f.reshape(-1, 1) * marg.reshape(marg.shape[0], marg.shape[1], -1).sum(-1))
    crp = record.uses(CRPExplainer(composite=composite))  # no condition: the relevance recorded at the layer
    at_layer = crp(model, x, target, layers=[layer])[layer]
    raw = cr.concept_relevance(at_layer, abs_norm=False)
    scale = float(per_channel.abs().max())
    assert close(record(crp, "concept relevance", model_name, per_channel, raw, what=layer), scale)
    normed = cr.concept_relevance(at_layer, abs_norm=True)
    predicted = per_channel / (per_channel.abs().sum(-1, keepdim=True) + 1e-10)
    assert close(record(crp, "concept relevance (abs_norm)", model_name, predicted, normed, what=layer), 1.0)
    # and the abs-normalized values are not nrm's m_l(c) unless all channels share one sign
    m_c = marg.reshape(marg.shape[0], marg.shape[1], -1).sum(-1)
    if bool((m_c < 0).any()) and bool((m_c > 0).any()):
        assert float((normed - m_c).abs().max()) > 1e-6


def test_model_left_as_found():
    model, x, target, composite, _ = _setup("cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    CRPExplainer(composite=composite, condition=[{"features.3": [0]}, {"features.3": [1]}])(model, x, target)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert flags == [p.requires_grad for p in model.parameters()]
