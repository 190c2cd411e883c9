"""Graph attention (PyG's ``GATConv`` and ``GATv2Conv``) read through its definition: the
capture (:mod:`nrm.capture`) runs the module's own forward on one sample, unrecorded, and
records these operations in its place, batch first (PyG's layers refuse a batch dimension:
"Static graphs not supported"); the two must agree within 10³ ulp. Every operation is read
by an existing kind, the edge softmax by :class:`~nrm.layers.message.SegmentSoftmax`:

    GATConv:    h = x Wᵀ (heads H × C);  e_ij = LeakyReLU(a_srcᵀ h_j + a_dstᵀ h_i (+ a_edgeᵀ W_e x_ij))
    GATv2Conv:  h_l = x W_lᵀ, h_r = x W_rᵀ;  e_ij = a ᵀ LeakyReLU(h_l,j + h_r,i (+ W_e x_ij))
    both:       α_ij = segment_softmax_{j → i}(e_ij);  z_i = Σ_{j → i} α_ij h_j  (concat the heads, or their mean)
                (+ the residual x W_resᵀ) (+ b)

The message α_ij · h_j is a product of two activations (:class:`~nrm.layers.products.Multiply`)
whose attention factor is a gate: under ``split="signal"`` (the default) α takes nothing and is
held at its forward value (CP-LRP; the message is a linear map of h with weights α), under
``split="equal"`` it takes ½ (AttnLRP's uniform rule) and its relevance flows through the
segment softmax, the LeakyReLU and the scores to x (``docs/gnn.md``, "Graph attention").

Edge attributes and self-loops are constants of the graph (``add_self_loops``, ``fill_value``,
``lin_edge``): they enter the scores as a constant added (:class:`~nrm.layers.constants.AddConstant`).
Refused, by name: a bipartite pair (x_src, x_dst), ``size=``, ``return_attention_weights``, a
``SparseTensor`` adjacency, dropout in training mode, another ``flow`` or ``aggr``, no edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .message import segment_softmax


def _gat_arguments(x, edge_index, edge_attr=None, size=None, return_attention_weights=None) -> dict:
    return dict(x=x, edge_index=edge_index, edge_attr=edge_attr, size=size,
                return_attention_weights=return_attention_weights)


def _linear(x: torch.Tensor, lin) -> torch.Tensor:
    """A PyG ``Linear`` (or ``nn.Linear``) applied as F.linear (not a module call)."""
    return F.linear(x, lin.weight, getattr(lin, "bias", None))


class GATDecomposition:
    """``torch_geometric.nn.GATConv`` as the operations that define it (module docstring)."""

    unbatched = True  # PyG's forward reads one graph (N, F): the capture runs it per sample
    v2 = False

    def refusal(self, module: nn.Module, args: tuple, kwargs: dict) -> str | None:
        try:
            a = _gat_arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of {type(module).__name__}.forward ({e})"
        x, edge_index = a["x"], a["edge_index"]
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            return ("takes a bipartite pair (x_src, x_dst) or features of another shape; nrm reads node features "
                    "(batch, nodes, features) (nrm.gnn)")
        if a["size"] is not None or a["return_attention_weights"] is not None:
            return "is called with size= or return_attention_weights=; nrm reads GAT's node output alone"
        if not isinstance(edge_index, torch.Tensor) or edge_index.dtype != torch.int64 or edge_index.dim() != 2:
            return "takes edge_index as a SparseTensor or another type; nrm reads an int64 tensor (2, E)"
        if module.training and module.dropout:
            return "applies dropout to the attention in training mode; call model.eval()"
        if module.flow != "source_to_target" or module.aggr not in ("add", "sum"):
            return f"uses flow={module.flow!r}, aggr={module.aggr!r}; nrm reads GAT's 'source_to_target' sum"
        if edge_index.shape[1] == 0 and not module.add_self_loops:
            return "has no edges: its output does not depend on the features"
        return None

    def edges(self, module: nn.Module, edge_index: torch.Tensor, edge_attr, nodes: int) -> tuple:
        """(src, dst, edge features or None): the graph as the module uses it (self-loops
        removed and added again with ``fill_value``, as GATConv does)."""
        from torch_geometric.utils import add_self_loops, remove_self_loops

        with torch._C.DisableTorchFunction():
            if module.add_self_loops:
                edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
                edge_index, edge_attr = add_self_loops(edge_index, edge_attr, fill_value=module.fill_value,
                                                       num_nodes=nodes)
            if edge_attr is not None and module.lin_edge is not None:
                edge_attr = _linear(edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr, module.lin_edge)
                edge_attr = edge_attr.view(-1, module.heads, module.out_channels)
            else:
                edge_attr = None
        return edge_index[0], edge_index[1], edge_attr

    def scores(self, module: nn.Module, x: torch.Tensor, src, dst, edge) -> tuple:
        """(h_j per source node (B, N, H, C), the scores e (B, E, H))."""
        B, N, H, C = x.shape[0], x.shape[1], module.heads, module.out_channels
        if module.lin is not None:
            h_src = h_dst = _linear(x, module.lin).view(B, N, H, C)
        else:
            h_src, h_dst = (_linear(x, lin).view(B, N, H, C) for lin in (module.lin_src, module.lin_dst))
        score = (h_src * module.att_src).sum(-1).index_select(1, src) \
            + (h_dst * module.att_dst).sum(-1).index_select(1, dst)
        if edge is not None:
            with torch._C.DisableTorchFunction():
                edge = (edge * module.att_edge).sum(-1)
            score = score + edge
        return h_src, F.leaky_relu(score, module.negative_slope)

    def __call__(self, module: nn.Module, *args, **kwargs) -> torch.Tensor:
        a = _gat_arguments(*args, **kwargs)
        x = a["x"]
        B, N, H, C = x.shape[0], x.shape[1], module.heads, module.out_channels
        src, dst, edge = self.edges(module, a["edge_index"], a["edge_attr"], N)
        h_src, score = self.scores(module, x, src, dst, edge)
        alpha = segment_softmax(score, dst, N)
        message = h_src.index_select(1, src) * alpha.unsqueeze(-1)
        out = message.new_zeros((B, N, H, C)).index_add_(1, dst, message)
        out = out.reshape(B, N, H * C) if module.concat else out.mean(2)
        if getattr(module, "res", None) is not None:
            out = out + _linear(x, module.res)
        if module.bias is not None:
            out = out + module.bias
        return out


class GATv2Decomposition(GATDecomposition):
    """``torch_geometric.nn.GATv2Conv`` as the operations that define it: the scores are
    aᵀ LeakyReLU(h_l,j + h_r,i (+ W_e x_ij)) (module docstring)."""

    def scores(self, module: nn.Module, x: torch.Tensor, src, dst, edge) -> tuple:
        B, N, H, C = x.shape[0], x.shape[1], module.heads, module.out_channels
        h_l = _linear(x, module.lin_l).view(B, N, H, C)
        h_r = h_l if module.share_weights else _linear(x, module.lin_r).view(B, N, H, C)
        pre = h_l.index_select(1, src) + h_r.index_select(1, dst)
        if edge is not None:
            pre = pre + edge
        return h_l, (F.leaky_relu(pre, module.negative_slope) * module.att).sum(-1)

