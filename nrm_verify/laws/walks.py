"""Walks and concepts (NRM-SPEC §4): L15 GNN-LRP walk relevance, L16 CRP conditional heatmaps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

import nrm
from nrm.events import At
from nrm.measure import Measure
from nrm_verify.laws.base import LawResult, Worst, big_terms, canonical_layers, law_result, tolerance_for
from nrm_verify.references import autograd as lrp
from nrm_verify.references import gnnlrp


# -- L15 GNN-LRP --------------------------------------------------------------------------------
def walk_relevance(model, x, target, walks, rules=None, *, tol: float | None = None) -> LawResult:
    """L15 (GNN-LRP, Schnake et al., TPAMI 2022): the relevance of a walk, or of the set of
    walks through chosen neurons at chosen layers, computed by higher-order LRP with
    nested masking, equals f_c · μ(walks) under the same rules:

        R_walk = Σ ( M_{l_min} ⊙ Q_{l_min+1} ( … M_{L−1} ⊙ Q_L (M_L ⊙ f_c δ_c) ) ) = f_c · μ(walks).

    The left side is :func:`nrm_verify.references.gnnlrp.walk_relevance`, written independently of
    the nrm engine (dense kernels from the NRM-SPEC §2 table). The deviation is
    |f_c μ − R_walk| over the larger of |f_c| · max(1, magnitude(m)) and the size of the
    terms the reference added (a near-zero f_c is rounding noise of much larger terms). ``walks``: one neuron per
    layer (``None`` = ⊥), a mapping {layer: neurons}, or an :class:`nrm.Event`. Not
    applicable to rules that read the incoming relevance (no fixed kernel) and to models
    the reference cannot read (it says which)."""

    m = nrm.explain(model, x, target, rules=rules)
    tol = tolerance_for(m, tol)
    readers = [b.rule for b in m.network.linear_blocks() if getattr(b.rule, "reads_relevance", False)]
    if readers:
        return LawResult("L15", "GNN-LRP walk relevance", None,
                         detail=f"{readers[0]!r} reads the incoming relevance: walk relevance by nested masking is "
                                "not defined by fixed kernels")
    try:
        expected, size = gnnlrp.walk_relevance(model, x, target, walks, rules, with_size=True)
        event = gnnlrp.as_event(model, x, walks)
    except gnnlrp.UnsupportedModelError as e:
        return LawResult("L15", "GNN-LRP walk relevance", None, detail=str(e))
    f = m.f
    measured = f * m(event)
    # relevance units: |f| max(1, magnitude) is the engine's scale, ``size`` the reference's
    scale = torch.maximum(f.abs() * big_terms(m, 1.0), size).clamp(min=torch.finfo(f.dtype).tiny)
    rel = (measured - expected).abs() / scale
    rel = torch.where(torch.isnan(rel), torch.full_like(rel, math.inf), rel)
    i = int(rel.argmax())
    d = float((measured - expected).abs()[i] / scale[i]) if not bool(torch.isnan(measured[i] - expected[i])) \
        else math.nan
    pair = (float(measured[i]), float(expected[i]))
    return law_result("L15", "GNN-LRP walk relevance", d, tol,
                   f"f_c · μ({_short(event)}) against higher-order LRP with nested masking "
                   "(nrm_verify.references.gnnlrp)",
                   ["rules with a fixed kernel (no relevance-reading rule)"], pair=pair)


gnn_lrp = walk_relevance
"""L15 under the paper's name."""


def _short(event) -> str:
    text = repr(event)
    return text if len(text) <= 120 else text[:117] + "…"


# -- L16 CRP ------------------------------------------------------------------------------------
def _at_takes_parallel() -> bool:
    import inspect
    try:
        return "parallel" in inspect.signature(At.__init__).parameters
    except (TypeError, ValueError):
        return False


def _sequential_leaves(model) -> list[tuple[str, torch.nn.Module]] | None:
    if not isinstance(model, torch.nn.Sequential):
        return None
    out = []
    for name, child in model.named_children():
        if isinstance(child, torch.nn.Sequential):
            inner = _sequential_leaves(child)
            if inner is None:
                return None
            out += [(f"{name}.{n}", c) for n, c in inner]
        else:
            out.append((name, child))
    return out


def _crp_reference(m: Measure, layer: str, keep: torch.Tensor):
    """(R^(layer) of standard LRP (B, n_layer), the CRP heatmap at the input (B, *input)):
    standard LRP (:func:`nrm_verify.references.autograd.relevance`, autograd) from the output down to
    ``layer``, the relevance there masked to ``keep`` (n_layer,), then LRP of the model
    cut after ``layer`` started from the masked relevance, down to the input."""

    eng = m.engine
    model = m.network.model
    x = m.input
    rules = {b.name: b.rule for b in m.network.linear_blocks()}
    start = m.start * m.f.reshape((-1,) + (1,) * (m.start.dim() - 1))
    full, _ = lrp.relevance(model, x, rules=rules, start=start)
    l = m.layer_index(layer)
    block = m.network.blocks[l]
    R = full[canonical_layers(m)[l]].reshape(eng.batch, -1)
    masked = R * keep.to(R.dtype)
    if l == 0:
        return R, masked.reshape(x.shape)
    # the model cut after the layer's block: its last module is the last one naming the layer
    last = (block.trailing[-1] if block.trailing else block.producer).name
    leaves = _sequential_leaves(model)
    cut = [i for i, (name, _) in enumerate(leaves) if name == last][0]
    sub = torch.nn.Sequential(*[mod for _, mod in leaves[:cut + 1]]).eval()
    index = {name: str(i) for i, (name, _) in enumerate(leaves[:cut + 1])}
    sub_rules = {index[name]: rule for name, rule in rules.items() if name in index}
    lower, _ = lrp.relevance(sub, x, rules=sub_rules, start=masked)
    return R, lower["input"].reshape(x.shape)


def crp_conditional(m: Measure, layer: str, channels: Sequence[int], *, parallel: bool | None = None,
                    tol: float | None = None) -> LawResult:
    """L16 (CRP, Achtibat et al., Nature MI 2023): the conditional heatmap of the condition
    {layer: channels} equals f_c · μ(X_0 = i, X_layer ∈ channels), and the concept
    relevance equals f_c · m_layer(channels).

    The CRP side is computed independently of the engine: standard LRP by autograd
    (:func:`nrm_verify.references.autograd.relevance`) down to ``layer``, the relevance masked to the
    channels (to the neurons ``channels`` for a layer without a channel dimension), then
    LRP of the model cut after that layer, from the masked relevance down to the input.

    ``parallel`` is CRP's ``exclude_parallel`` negated, for residual models: it is passed
    to ``nrm.At(layer, channels=…, parallel=parallel)`` when the installed nrm supports
    it (the DAG engine); ``None`` (default) leaves the event as it is. The masked-LRP
    reference here reads ``nn.Sequential`` models (where both settings coincide); for
    other models, and for a ``parallel`` the installed nrm does not take, the law reports
    "not applicable" with the reason."""
    tol = tolerance_for(m, tol)
    name = "CRP conditional heatmap"
    kwargs = {}
    if parallel is not None:
        if not _at_takes_parallel():
            return LawResult("L16", name, None, detail="the installed nrm.At takes no parallel= (it needs the DAG "
                             "engine for residual models); call without parallel= on a sequential model")
        kwargs["parallel"] = parallel
    if _sequential_leaves(m.network.model) is None:
        return LawResult("L16", name, None, detail="the masked-LRP reference reads nn.Sequential models only")
    if any(getattr(b.rule, "reads_relevance", False) for b in m.network.linear_blocks()):
        return LawResult("L16", name, None, detail="a rule reads the incoming relevance: the conditional heatmap "
                         "is not a measure of fixed kernels")
    shape = m.layer_shape(layer)
    channels = sorted({int(c) for c in channels})
    if len(shape) > 1:
        event = At(layer, channels=channels, **kwargs)
        keep = torch.zeros(shape[0], math.prod(shape[1:]), dtype=torch.bool)
        keep[channels] = True
    else:
        event = At(layer, index=channels, **kwargs)
        keep = torch.zeros(math.prod(shape), dtype=torch.bool)
        keep[channels] = True
    keep = keep.reshape(-1).to(m.engine.device)
    R, heatmap = _crp_reference(m, layer, keep)
    f = m.f
    per = (-1,) + (1,) * (heatmap.dim() - 1)
    worst = Worst()
    conditional = m.marginal("input", within=event)
    scale = big_terms(m, conditional.abs().reshape(conditional.shape[0], -1).sum(1)).reshape(per)
    worst.add(conditional, heatmap.reshape(conditional.shape) / f.reshape(per), scale,
              where="μ(X_0 = i, X_layer ∈ channels) against the CRP heatmap / f")
    concept = m(event)
    worst.add(concept, (R * keep.to(R.dtype)).sum(1) / f, big_terms(m, 1.0),
              where="m_layer(channels) against the concept relevance / f")
    return law_result("L16", name, worst.deviation, tol,
                   f"condition {{{layer!r}: {channels}}}" + (f", parallel={parallel}" if parallel is not None else "")
                   + " against masked LRP (nrm_verify.references.autograd)"
                   + (f"; worst: {worst.where}" if worst.deviation > 0 else ""),
                   pair=worst.pair)
