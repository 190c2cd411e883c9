"""GNN-LRP's relevance of an event by nested masking on the traced graph, branched or not.

The walks of Schnake et al. (*Higher-order explanations of graph neural networks via relevant
walks*, IEEE TPAMI 44(11), 2022) on a model that is not a chain of layers: a GIN, SAGE or
GraphConv layer sums a self branch and a neighbour branch, a residual block skips. Relevance
goes down the graph of :mod:`nrm_verify.references.explicit` (its dense kernels, its reverse
topological order), and at every node v the event names

    R^(v) ← M_v ⊙ R^(v),     R^(u) ← 0 for every node u still waiting for relevance,

M_v the event's neurons at v; relevance waiting elsewhere bypassed v, so it is not in the
event. A cylinder ∩_v {X_v ∈ S_v} gets Σ R^(v_min) at its lowest named node, an event
Σ_cylinders coefficient × that (linearity); by L15 this is f_c · μ(event). Events over real
neurons only: ⊥, a complement and ``parallel=True`` are refused. The chain reference
:mod:`nrm_verify.references.gnnlrp` falls back to this on a branched model.
"""

from __future__ import annotations

import torch
from torch import nn

from nrm_verify.references.call_matrices import DTYPE, numel
from nrm_verify.references.explicit import RefGraph, start_relevance


def atom_neurons(atom, shape: tuple) -> torch.Tensor:
    """The real neurons an event atom selects in one sample's layer of ``shape``, as a flat
    boolean mask (its ⊥ and its complement are the caller's to read)."""
    n = numel(shape)
    if atom.selector == "all":
        return torch.ones(n, dtype=torch.bool)
    if atom.selector == "mask":
        return atom.mask.reshape(-1).clone()
    mask = torch.zeros(n, dtype=torch.bool)
    if atom.selector == "index":
        mask[list(atom.values)] = True
    elif atom.selector == "channels":
        mask = mask.reshape(shape[0], -1)
        mask[list(atom.values)] = True
        mask = mask.reshape(-1)
    return mask


def _atom_mask(graph: RefGraph, atom) -> tuple[str, torch.Tensor]:
    """(node, mask over one sample's neurons) of an event atom; ⊥ kept, a complement and
    ``parallel=True`` are refused (the branched reference masks a node's own real neurons)."""
    node = graph.resolve(atom.layer)
    mask = atom_neurons(atom, graph.nodes[node].shape)
    if atom.negated or atom.parallel:
        raise ValueError(f"the event has {'a complement' if atom.negated else 'parallel=True'} at {atom.layer!r}: it "
                         "admits the walks that bypass the layer's node, which nested masking on a branched graph "
                         "does not separate; write the event over the node's own neurons")
    bot = atom.absorber
    if bot:
        raise ValueError(f"the event keeps ⊥ at {atom.layer!r}: nested masking on a branched graph reads events "
                         "over real neurons only (walks that end in ⊥ at a layer are not masked here)")
    return node, mask


def nested_masking(model: nn.Module, x: torch.Tensor, target, rules, event) -> tuple[torch.Tensor, torch.Tensor]:
    """GNN-LRP's relevance of ``event`` (an :class:`nrm.Event` over real neurons) by
    higher-order LRP with nested masking on the traced graph, branched or not (a GIN, SAGE or
    GraphConv layer: a self branch and a neighbour branch summed): per cylinder ∩_v {X_v ∈ S_v},
    relevance goes down the graph in reverse topological order with the dense kernels of
    :mod:`nrm_verify.references.explicit`, and at every named node v

        R^(v) ← M_v ⊙ R^(v),     R^(u) ← 0 for every node u still waiting for relevance,

    the second because a walk of the event passes v: relevance waiting on a node that v does
    not read bypassed v. The cylinder's relevance is Σ R^(v_min) at the lowest named node;
    an event's is Σ over its cylinders of coefficient × that (linearity). Returns (relevance
    (B,), size (B,)): ``size`` is the largest Σ_{j,k} |q(j | k) R_k| of a step, the scale of
    float rounding in the result (as in :mod:`nrm_verify.references.gnnlrp`)."""
    graph = RefGraph(model, x, rules)
    start, _ = start_relevance(graph, target)
    total = torch.zeros(graph.B, dtype=DTYPE)
    size = torch.zeros(graph.B, dtype=DTYPE)
    for cylinder, coeff in event.cylinders():
        masks: dict[str, torch.Tensor] = {}
        for atom in cylinder:
            node, mask = _atom_mask(graph, atom)
            masks[node] = masks[node] & mask if node in masks else mask
        lowest = min((graph.order.index(n) for n in masks), default=None)
        if lowest is None:
            raise ValueError("the event names no layer: its relevance is f itself")
        incoming = {n: torch.zeros((graph.B,) + graph.nodes[n].shape, dtype=DTYPE) for n in graph.order}
        incoming[graph.output] = incoming[graph.output] + start
        steps = torch.zeros(graph.B, dtype=DTYPE)
        for n in reversed(graph.order[lowest:]):
            node, r = graph.nodes[n], incoming.pop(n)
            if n in masks:
                r = r * masks[n].reshape(r.shape[1:]).to(DTYPE)
                incoming = {k: torch.zeros_like(v) for k, v in incoming.items()}
            if graph.order.index(n) == lowest:
                total = total + coeff * r.reshape(graph.B, -1).sum(1)
                break
            if node.kind == "input":
                continue
            parts, leak = graph.down(node, r)
            flat = r.reshape(graph.B, -1).abs()
            term = torch.einsum("bnk,bk->b", node.Q.abs(), flat) if node.Q is not None else flat.sum(1)
            steps = torch.maximum(steps, term + leak.abs())
            for i, part in zip(node.inputs, parts):
                incoming[i] = incoming[i] + part.reshape(incoming[i].shape)
        size = size + abs(coeff) * steps
    return total, size
