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
* CRP's ``heatmap`` sums over the input's channel axis; :func:`conditional_heatmaps`
  returns the unsummed relevance so that it compares pixel by pixel.

The composite is any zennit composite; :func:`nrm_verify.peers.zennit.composite` builds the
one matching an nrm ``rules=`` specification. ``exclude_parallel`` has no effect on a
sequential model; on a model with skip connections CRP's default (True) is nrm's
``At(layer, ..., parallel=False)`` and ``exclude_parallel=False`` is ``parallel=True``
(``peer_tests/test_residual.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nrm_verify.peers import require


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


def conditional_heatmaps(model: nn.Module, x: torch.Tensor, target: int, composite, layer: str,
                         concepts: Sequence[Sequence[int]], record: Sequence[str] = (),
                         exclude_parallel: bool = True) -> dict:
    """CRP's conditional heatmaps of ``model`` at the single sample ``x`` (batch 1) for
    output ``target``, one per concept (a list of channel indices at ``layer``).

    ``exclude_parallel`` is CRP's: True (its default) keeps only the walks through the
    concept (nrm's ``At(layer, channels=S)``), False also the walks that bypass ``layer``
    through a skip or parallel path (``At(layer, channels=S, parallel=True)``).

    Returns ``{"heatmap": (K, *x.shape[1:]), "relevances": {name: (K, *shape)}}`` with the
    relevance at the recorded layers under each condition.
    """
    if x.shape[0] != 1:
        raise ValueError(f"conditional_heatmaps takes one sample (batch 1), got a batch of {x.shape[0]}")
    attribution = _attribution(model)
    conditions = [{"y": [int(target)], layer: [int(c) for c in concept]} for concept in concepts]
    data = x.detach().clone().requires_grad_(True)
    result = attribution(data, conditions, composite, record_layer=list(record), exclude_parallel=exclude_parallel)
    return {"heatmap": result.heatmap, "relevances": {k: v.detach() for k, v in result.relevances.items()},
            "prediction": result.prediction.detach()}


def heatmap(model: nn.Module, x: torch.Tensor, target: int, composite) -> torch.Tensor:
    """CRP's unconditional heatmap (the condition on the output only), channel axis kept."""
    attribution = _attribution(model)
    data = x.detach().clone().requires_grad_(True)
    return attribution(data, [{"y": [int(target)]}], composite).heatmap


def concept_relevance(model: nn.Module, x: torch.Tensor, target: int, composite, layer: str,
                      abs_norm: bool = False) -> torch.Tensor:
    """CRP's relevance of each channel at ``layer`` (``ChannelConcept.attribute``), (B, C)."""
    attribution = _attribution(model)
    _, concepts = _crp()
    data = x.detach().clone().requires_grad_(True)
    result = attribution(data, [{"y": [int(target)]}], composite, record_layer=[layer])
    return concepts.ChannelConcept().attribute(result.relevances[layer], abs_norm=abs_norm)


__all__ = ["conditional_heatmaps", "heatmap", "concept_relevance"]
