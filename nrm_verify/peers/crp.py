"""zennit-crp's concept relevance propagation (Achtibat et al., *From attribution maps to
human-understandable explanations through Concept Relevance Propagation*, Nature Machine
Intelligence 5, 2023) on the same case as nrm.

CRP masks the relevance at a layer to a set of channels (a *concept*) and propagates the
rest down with zennit's rules. In NRM terms (NRM-SPEC §4, L15–L17):

* the conditional heatmap of channels S at layer l is f · μ(X_0 = i, X_l ∈ S) —
  ``f * m.marginal("input", within=nrm.At(l, channels=S))``;
* the concept relevance of channel c (``ChannelConcept.attribute(R_l, abs_norm=False)``)
  is f · m_l(c), the marginal summed over the channel; with CRP's default
  ``abs_norm=True`` it is m_l(c) / Σ_c' |m_l(c')| (CRP normalizes by the absolute total,
  nrm by f: the two differ by the factor f / Σ_c |f m_l(c)|);
* the heatmaps of all channels sum to the plain heatmap (L17);
* CRP's ``heatmap`` sums over the input's channel axis; :class:`CRPExplainer` returns the
  unsummed relevance so that it compares pixel by pixel.

The composite is any zennit composite; :func:`nrm_verify.peers.zennit.composite` builds the
one matching an nrm ``rules=`` specification (``CRPExplainer(rules=…)``). ``exclude_parallel`` has no effect on a
sequential model; on a model with skip connections CRP's default (True) is nrm's
``At(layer, ..., parallel=False)`` and ``exclude_parallel=False`` is ``parallel=True``
(``peer_tests/test_residual.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral

import torch
from torch import nn

from nrm.errors import ArgumentError
from nrm_verify.peers.base import require
from nrm_verify.peers.explainer import Explainer


def _crp():
    require("torchvision", "torchvision")
    return require("crp.attribution", "zennit-crp"), require("crp.concepts", "zennit-crp")


def _attribution(model: nn.Module):
    attribution, _ = _crp()

    class FullHeatmap(attribution.CondAttribution):
        """CondAttribution whose heatmap keeps the input's channel axis (CRP sums it)."""

        def heatmap_modifier(self, data, on_device=None):
            heatmap = data.grad.detach()
            return heatmap.to(on_device) if on_device else heatmap

    # no_param_grad=False: CRP would otherwise switch requires_grad off on the user's model
    return FullHeatmap(model, no_param_grad=False)


def _conditions(condition) -> list[dict[str, list[int]]]:
    """``condition`` ({layer: channels}, a list of them, or None) as a list of conditions."""
    if condition is None:
        return [{}]
    many = condition if isinstance(condition, (list, tuple)) else [condition]
    out = []
    for one in many:
        if not isinstance(one, Mapping) or not all(isinstance(k, str) for k in one):
            raise ArgumentError(f"condition= takes {{layer name: channels}} (e.g. {{'features.3': [0, 5]}}), a list of "
                                f"them, or None; got {one!r:.80}")
        cond = {}
        for layer, channels in one.items():
            if (isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence)
                    or not all(isinstance(c, Integral) and not isinstance(c, bool) for c in channels)):
                raise ArgumentError(f"condition= {{layer: channels}} takes a list of channel indices for '{layer}', "
                                    f"got {channels!r:.80}")
            cond[layer] = [int(c) for c in channels]
        out.append(cond)
    if not out:
        raise ArgumentError("condition= is an empty list; give at least one {layer: channels}")
    return out


class CRPExplainer(Explainer):
    """zennit-crp's conditional attribution (``CondAttribution``) as an
    :class:`~nrm_verify.peers.Explainer`.

    The condition is given when the explainer is made, ``condition={layer: channels}``: the
    relevance at ``layer`` (a module name) is kept on those channels only and propagated
    down — CRP's condition ``{"y": [target], layer: channels}``; several layers may be
    conditioned at once. A list of such dicts gives one conditional heatmap per condition,
    stacked along the batch axis (CRP runs them as one batch). ``condition=None`` is the plain
    heatmap (CRP's condition on the output only). In nrm terms the heatmap of channels S at
    layer l is ``f * m.marginal("input", within=nrm.At(l, channels=S))``.

    The composite, as for :class:`~nrm_verify.peers.zennit.ZennitExplainer`: ``rules`` (nrm
    rules, mapped by :func:`nrm_verify.peers.zennit.composite`) or ``composite`` (zennit's
    own, an object or a function that builds one). ``exclude_parallel`` is CRP's (True: only
    the walks through the condition's layer, nrm's ``At(l, …, parallel=False)``).

    ``x`` is one sample (batch 1). Returns ``{"input": heatmap (K, *x.shape[1:]), layer:
    R_layer (K, …)}`` for K conditions: the heatmap keeps the input's channel axis (CRP's
    sums it), ``layers`` are CRP's ``record_layer`` (relevance at the modules' outputs under
    each condition).
    """

    name = "zennit-crp"

    def __init__(self, rules=None, *, composite=None, condition=None, exclude_parallel: bool = True,
                 row: str | None = None, spec: str | None = None):
        from nrm_verify.peers.zennit import ZennitExplainer

        if not isinstance(exclude_parallel, bool):
            raise ArgumentError(f"exclude_parallel= takes True or False, got {exclude_parallel!r}")
        self.zennit = ZennitExplainer(rules, composite=composite)  # the composite, checked and built as zennit's
        super().__init__(rules, row=row, spec=spec)
        self.composite, self.conditions, self.exclude_parallel = composite, _conditions(condition), exclude_parallel

    def relevance(self, model, x, target, layers):
        if x.shape[0] != 1:
            raise ArgumentError(f"CRPExplainer takes one sample (batch 1), got a batch of {x.shape[0]}; CRP runs the "
                                "conditions of one sample as its batch")
        target = target[0] if isinstance(target, list) else target
        composite = self.zennit.composite_for(model, x)
        record = [n for n in layers or [] if n != "input"]
        conditions = [{"y": [int(target)], **cond} for cond in self.conditions]
        data = x.detach().clone().requires_grad_(True)
        result = _attribution(model)(data, conditions, composite, record_layer=record,
                                     exclude_parallel=self.exclude_parallel)
        out = {"input": result.heatmap}
        out.update({k: v.detach() for k, v in result.relevances.items()})
        return out


def concept_relevance(relevance: torch.Tensor, abs_norm: bool = False) -> torch.Tensor:
    """CRP's relevance of each channel (``ChannelConcept.attribute``), (B, C), from the
    relevance at a layer (B, C, …) — e.g. a :class:`CRPExplainer`'s ``out[layer]``: the sum
    over the channel's neurons, f · m_l(c); with ``abs_norm=True`` divided by Σ_c |R_c|."""
    _, concepts = _crp()
    return concepts.ChannelConcept().attribute(relevance, abs_norm=abs_norm)


__all__ = ["CRPExplainer", "concept_relevance"]
