"""Message passing of graph networks (PyG's ``propagate``), read operation by operation:
gathering the messages along the edges is an index map, and scattering them onto the
receiving nodes (sum or mean) is a linear map with weights 1 or 1/deg, whatever layer class
issues them (``GCNConv``, ``GraphConv``, ``GINConv``, ``SAGEConv``, global pooling, a
model's own code). The edge weights of ``GCNConv`` (Â, computed from ``edge_index``, not
from the features) reach the capture as a product by a constant (:class:`~nrm.layers.scale.ConstantScale`).

A graph of N nodes with F features per node is one sample of shape (N, F) (``nrm.gnn``
adds the batch dimension), so the node dimension is per-sample dimension 0 (dim 1, or -2,
of the tensors the layers see: PyG's ``node_dim = -2``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from ..errors import GraphError, RuleAssignmentError
from ..linear import LinearMap, PairMap
from ..markers import Aggregate
from ..recorded import Value
from .attention import softmax_exact
from .base import ExactMap, Linear, Reshape, to_fractions, zeros_object


def _per_sample_dim(dim, ndim: int) -> int | None:
    """A dimension of a tensor with ``ndim`` dimensions (batch first), normalized; None when
    it is not an int."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        return None
    return dim + ndim if dim < 0 else dim


def _constant_index(index, what: str) -> str | None:
    if isinstance(index, Value):
        return (f"{what} with an input-derived index (a data-dependent selection); nrm reads indices that do not "
                "depend on the features (edge_index)")
    if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int64, torch.int32):
        return f"{what} with an index that is not an integer tensor ({type(index).__name__})"
    return None


class IndexSelect(Reshape):
    """``torch.index_select(x, dim, index)`` (``x.index_select``) along a per-sample dimension with a
    constant index: the gather of messages along the edges, x_j = x[:, edge_index[0]] (PyG's
    ``_index_select``, ``node_dim = -2``). Each output neuron is one input neuron; a node
    several edges leave gets the sum of their relevances, a node no edge leaves (isolated)
    gets nothing from this path.

    Definition (e indexes the gathered positions along ``dim``)::

        y[b, …, e, …] = x[b, …, index[e], …]        q(j | k) = [j = index[k]]
    """

    functions = (torch.index_select, torch.Tensor.index_select)

    def examples(self):
        return [(Gather().eval(), (4, 2))]

    def accepts(self, call):
        if not isinstance(call.args[0], Value):
            return "selects from a constant; nrm reads selections from input-derived tensors"
        ndim = len(call.in_shapes[0])
        d = _per_sample_dim(call.arg(1, "dim"), ndim)
        if d is None or d == 0:
            return "selects along the batch dimension; nrm keeps every sample (select along dimension 1 on)"
        return _constant_index(call.arg(2, "index"), "selects")

    def index(self, call):
        shape = tuple(call.in_shapes[0][1:])
        d = _per_sample_dim(call.arg(1, "dim"), len(shape) + 1) - 1
        names = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
        picked = np.take(names, call.arg(2, "index").detach().cpu().numpy().astype(np.int64), axis=d)
        return np.ascontiguousarray(picked).reshape(-1)


class ScatterMap(LinearMap):
    """The scatter of a tensor of shape (R, *src) onto (R, *out) along dimension ``dim``:
    z[…, index[p], …] += w_p a_p for every source position p (``index`` and ``weight`` have
    one sample's source shape), plus a constant ``bias`` of one sample's output shape.

    Definition::

        forward:    z_k = Σ_{p : dest(p) = k} w_p a_p + b_k
        transpose:  t_p = w_p g_{dest(p)}
    """

    fuses_bias = True

    def __init__(self, index: torch.Tensor, dim: int, out_shape: tuple, weight: torch.Tensor,
                 bias: torch.Tensor | None, batch: int | None = None):
        self.index, self.dim, self.out_shape = index, dim, tuple(out_shape)
        self.weight, self.bias = weight, bias
        self.batch = batch  # weights and bias per sample (B, …): a map built at the input (a max)
        if batch is not None:
            self.mask = weight != 0  # the winners: the structural fan-in of a max
        self.line = _line(index, dim - 1, self.out_shape)

    def _index(self, rows: int) -> torch.Tensor:
        return self.index.unsqueeze(0).expand((rows,) + tuple(self.index.shape))

    def _rows(self, t: torch.Tensor | None, rows: int) -> torch.Tensor | None:
        """A per-sample tensor (B, …) for R·B stacked rows (row i is sample i mod B), or a
        shared one (…) broadcast."""
        if t is None or self.batch is None:
            return None if t is None else t.unsqueeze(0)
        if rows % self.batch:
            raise ValueError(f"the map was built for a batch of {self.batch} samples but got {rows} rows")
        return t.repeat((rows // self.batch,) + (1,) * (t.dim() - 1))

    def forward(self, x, weight, bias=None):
        rows = x.shape[0]
        z = x.new_zeros((rows,) + self.out_shape)
        if self.line is not None:  # whole slices along dim: index_add, not an element-wise scatter
            z.index_add_(self.dim, self.line, x * self._rows(weight, rows))
        else:
            z.scatter_add_(self.dim, self._index(rows), x * self._rows(weight, rows))
        return z if bias is None else z + self._rows(bias, rows)

    def transpose(self, g, weight, in_shape):
        rows = g.shape[0]
        g = g.reshape((rows,) + self.out_shape)
        if self.line is not None:  # whole slices along dim: index_select, not an element-wise gather
            return g.index_select(self.dim, self.line) * self._rows(weight, rows)
        return torch.gather(g, self.dim, self._index(rows)) * self._rows(weight, rows)

    def structured(self, weight):
        return weight if self.batch is None else weight * self.mask

    def bias_for(self, z, bias=None):
        bias = self.bias if bias is None else bias
        return None if bias is None else self._rows(bias, z.shape[0])


def _line(index: torch.Tensor, axis: int, out_shape: tuple) -> torch.Tensor | None:
    """The 1-D index along ``axis`` when ``index`` (one sample's source shape) is it broadcast over
    the other dimensions and those are the output's (PyG's ``index.view(-1, 1).expand_as(src)``): the
    scatter then moves whole slices, ``index_add`` / ``index_select``; else None."""
    if index.dim() == 0 or index.numel() == 0 or any(
            n != m for d, (n, m) in enumerate(zip(index.shape, out_shape)) if d != axis):
        return None
    moved = index.movedim(axis, 0)
    line = moved.reshape(moved.shape[0], -1)[:, 0].contiguous()
    view = [1] * index.dim()
    view[axis] = -1
    return line if torch.equal(index, line.view(view).expand_as(index)) else None


_SCATTER_ADD = (torch.Tensor.scatter_add_, torch.Tensor.scatter_add, torch.scatter_add)
_SCATTER_REDUCE = (torch.Tensor.scatter_reduce_, torch.Tensor.scatter_reduce, torch.scatter_reduce)
_INDEX_ADD = (torch.Tensor.index_add_, torch.Tensor.index_add, torch.index_add)


class Scatter(Linear):
    """A scatter-sum or scatter-mean of input-derived messages into a constant tensor: the
    aggregation of message passing (PyG's ``scatter(…, reduce='sum' | 'mean')``, which is
    ``src.new_zeros(size).scatter_add_(dim, index, src)``), ``scatter_reduce`` with ``'sum'``
    or ``'mean'``, ``index_add`` (with ``alpha``), along a per-sample dimension. A linear map of
    the messages, to which any rule applies (rule key :class:`nrm.markers.Aggregate`); what the
    constant held before is the bias (zeros: none).

    Definition (dest(p): the output position message p lands on; n_k: how many land on k,
    plus one when ``include_self`` counts the constant's own value in a mean)::

        sum:   z_k = Σ_{p : dest(p) = k} α a_p + b_k            (b = the constant, or 0 where
                                                                   include_self=False replaces it)
        mean:  z_k = Σ_{p : dest(p) = k} a_p / n_k + b_k        (b_k = self_k / n_k with
                                                                   include_self, else 0; self_k
                                                                   where nothing lands)

    A scatter-max (``scatter_reduce(…, "amax")``: ``SAGEConv(aggr="max")``, ``global_max_pool``
    with a batch vector) is winner takes all, as max pooling: a map built at the input with
    weight 1 from the first message (row-major) attaining its destination's maximum and no
    other connection (the structural fan-in is the winner alone), so every rule but ε gives the
    winner q = 1 (ε: a_w / (a_w + ε s), the rest to ⊥), and LRP-0 is the gradient (L9)::

        max:   z_k = a_{w(k)} (w(k) = the winner of k), or b_k = the constant where nothing lands
               (or where the constant wins, with include_self)

    Exact form: the weights as fractions (1/n_k exactly, α as its float64 value; a max's
    winners at the sample, weight 1).
    """

    functions = _SCATTER_ADD + _SCATTER_REDUCE + _INDEX_ADD
    rule_types = (Aggregate,)

    def examples(self):
        return [(Aggregation("sum").eval(), (4, 2)), (Aggregation("mean").eval(), (4, 2)),
                (Aggregation("max").eval(), (4, 2))]

    # -- reading the call -----------------------------------------------------------------
    def parts(self, call):
        """(base, dim, index, src, reduce, include_self, alpha) of the call, as given."""
        f = call.func
        if f in _INDEX_ADD:
            return (call.args[0], call.arg(1, "dim"), call.arg(2, "index"), call.arg(3, "source"), "sum", True,
                    call.kwargs.get("alpha", 1))
        if f in _SCATTER_ADD:
            return call.args[0], call.arg(1, "dim"), call.arg(2, "index"), call.arg(3, "src"), "sum", True, 1
        return (call.args[0], call.arg(1, "dim"), call.arg(2, "index"), call.arg(3, "src"), call.arg(4, "reduce"),
                call.kwargs.get("include_self", True), 1)

    def accepts(self, call):
        try:
            base, dim, index, src, reduce, _, alpha = self.parts(call)
        except (IndexError, KeyError, TypeError):
            return "is called with arguments nrm does not read (self, dim, index, src[, reduce])"
        if isinstance(base, Value):
            return ("scatters into an input-derived tensor; nrm reads scatters of messages into a constant "
                    "(src.new_zeros(size).scatter_add_(…))")
        if not isinstance(src, Value):
            return "scatters a constant"
        if reduce not in ("sum", "mean", "amax"):
            return (f"reduces with {reduce!r}; nrm reads scatter-sum, scatter-mean and scatter-max ('amax'); for a "
                    "minimum aggregation use aggr='sum', 'mean' or 'max'")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            return f"scales by alpha={alpha!r}; nrm reads a number"
        ndim = len(call.in_shapes[0])
        d = _per_sample_dim(dim, ndim)
        if d is None or d == 0:
            return "scatters along the batch dimension; nrm keeps every sample apart (scatter along dimension 1 on)"
        why = _constant_index(index, "scatters")
        if why is not None:
            return why
        if base.dim() != ndim or base.shape[0] not in (1, call.output.shape[0]) or not bool((base == base[:1]).all()):
            return "scatters into a constant that differs between samples; nrm reads one per-sample constant"
        if call.func not in _INDEX_ADD:
            if index.dim() != ndim or tuple(index.shape[1:]) != tuple(call.in_shapes[0][1:]) \
                    or not bool((index == index[:1]).all()):
                return ("scatters with an index of another shape than the messages, or one that differs between "
                        "samples; nrm reads PyG's index, broadcast to the messages' shape")
        return None

    def layout(self, call, counts_only: bool = False, exact: bool = True):
        """(index (one sample's source shape, int64), d (dim in (R, *) tensors), out shape,
        weights (source shape) as fractions (numpy object; ``exact=False``: float64, computed
        directly — the fast path, no fraction per edge), bias (out shape) or None) of the call."""
        base, dim, index, src, reduce, include_self, alpha = self.parts(call)
        src_shape = tuple(call.in_shapes[0][1:])
        d = _per_sample_dim(dim, len(src_shape) + 1)
        index = index.detach().to("cpu", torch.int64)
        if call.func in _INDEX_ADD:  # a 1-D index along d: broadcast to the source's shape
            view = [1] * len(src_shape)
            view[d - 1] = -1
            full = index.view(view).expand(src_shape)
        else:
            full = index[0]
        out_shape = tuple(base.shape[1:])
        dest = _destinations(full.numpy(), d - 1, out_shape)
        counts = np.bincount(dest.reshape(-1), minlength=math.prod(out_shape)).reshape(out_shape)
        landed = counts > 0
        base0 = base[0].detach()
        if counts_only:
            return full, d, out_shape, None, None
        if reduce == "sum":
            weights = (np.full(src_shape, Fraction(float(alpha)), dtype=object) if exact
                       else np.full(src_shape, float(alpha)))
            bias = base0 if include_self else base0 * torch.as_tensor(~landed, dtype=base0.dtype, device=base0.device)
        else:
            n = counts + int(bool(include_self))
            weights = (np.vectorize(lambda c: Fraction(1, int(c)), otypes=[object])(n.reshape(-1)[dest]) if exact
                       else 1.0 / n.reshape(-1)[dest].astype(np.float64))
            scale = torch.as_tensor(np.where(landed, 1.0 / np.maximum(n, 1), 1.0), dtype=base0.dtype)
            keep = torch.as_tensor(np.where(landed, float(bool(include_self)), 1.0), dtype=base0.dtype)
            bias = base0 * (keep * scale).to(base0.device)
        if not bool((bias != 0).any()):
            bias = None
        return full, d, out_shape, weights, bias

    def winners(self, call, a: torch.Tensor) -> tuple:
        """A scatter-max at its input a (B, *src): (w (B, *src): 1 at the first message (in
        row-major order) attaining its destination's maximum, 0 elsewhere; bias (B, *out): the
        constant where nothing lands, or where it wins with ``include_self``; index; d; out shape)."""
        base, _, _, _, _, include_self, _ = self.parts(call)
        full, d, out_shape, _, _ = self.layout(call, counts_only=True)
        B = a.shape[0]
        idx = full.to(a.device).unsqueeze(0).expand((B,) + tuple(full.shape))
        start = base[:1].detach().to(a).expand((B,) + out_shape)
        top = start.clone().scatter_reduce_(d, idx, a, "amax", include_self=bool(include_self))
        at_max = a == torch.gather(top, d, idx)
        dest = torch.as_tensor(_destinations(full.numpy(), d - 1, out_shape), device=a.device).reshape(1, -1)
        order = torch.arange(dest.shape[1], device=a.device).expand(B, -1)
        big = torch.full_like(order, dest.shape[1])
        first = torch.full((B, math.prod(out_shape)), dest.shape[1], dtype=torch.int64, device=a.device)
        first.scatter_reduce_(1, dest.expand(B, -1), torch.where(at_max.reshape(B, -1), order, big), "amin")
        landed = torch.zeros(B, math.prod(out_shape), dtype=torch.bool, device=a.device)
        landed[:, dest.reshape(-1)] = True
        if include_self:  # the constant wins where it is at least every message
            landed &= start.reshape(B, -1) < top.reshape(B, -1)
        win = (order == torch.gather(first, 1, dest.expand(B, -1))) & torch.gather(landed, 1, dest.expand(B, -1))
        w = win.to(a.dtype).reshape(a.shape)
        bias = torch.where(landed, 0.0, start.reshape(B, -1).to(a.dtype)).reshape((B,) + out_shape)
        return w, (bias if bool((bias != 0).any()) else None), full, d, out_shape

    def map(self, call, a, rule=None):
        if self.parts(call)[4] == "amax":
            w, bias, full, d, out_shape = self.winners(call, a)
            return ScatterMap(full.to(a.device), d, out_shape, w[:, ...], bias, batch=a.shape[0])
        full, d, out_shape, weights, bias = self.layout(call, exact=False)
        w = torch.as_tensor(weights, dtype=torch.float64).to(dtype=a.dtype, device=a.device)
        return ScatterMap(full.to(a.device), d, out_shape, w, None if bias is None else bias.to(a.dtype))

    def exact(self, call, a, rule=None) -> ExactMap:
        if self.parts(call)[4] == "amax":  # the winners at this sample: weights 1, structure the winners alone
            w, bias, full, d, out_shape = self.winners(call, a)
            dest = _destinations(full.numpy(), d - 1, out_shape).reshape(-1)
            n_in, n_out = math.prod(tuple(full.shape)), math.prod(out_shape)
            W, S = zeros_object((n_in, n_out)), np.zeros((n_in, n_out), bool)
            rows = np.nonzero(w[0].reshape(-1).cpu().numpy())[0]
            W[rows, dest[rows]] = Fraction(1)
            S[rows, dest[rows]] = True
            b = None if bias is None else np.array([Fraction(float(v)) for v in bias[0].double().reshape(-1).tolist()],
                                                   dtype=object)
            return ExactMap(W, S, b, out_shape)
        full, d, out_shape, weights, bias = self.layout(call)
        src_shape = tuple(full.shape)
        dest = _destinations(full.numpy(), d - 1, out_shape).reshape(-1)
        n_in, n_out = math.prod(src_shape), math.prod(out_shape)
        W, S = zeros_object((n_in, n_out)), np.zeros((n_in, n_out), bool)
        W[np.arange(n_in), dest] = weights.reshape(-1)
        S[np.arange(n_in), dest] = True
        b = None
        if bias is not None:
            b = np.array([Fraction(float(v)) for v in bias.double().reshape(-1).tolist()], dtype=object)
        return ExactMap(W, S, b, out_shape)


class GCNMap(LinearMap):
    """``GCNConv`` as one linear map of the node features (Schnake et al.'s GNN-LRP layer): with
    the normalized edge coefficients c_e = Â_{dst_e, src_e} (self-loops included),

        z_{j,g} = Σ_{e: dst_e = j} c_e Σ_f a_{src_e, f} W_gf + b_g,    weight (i, f) → (j, g): Â_ji W_gf.

    ``weight`` is W (G, F): a rule modifies it elementwise and the map applies Â to the result,
    which is the rule on Â ⊗ W when the modification is positively homogeneous (ρ(c w) = c ρ(w)
    for c ≥ 0: LRP-0, ε, γ, z⁺, αβ, the z^B bounds) and Â ≥ 0.

    Definition::

        forward:    z = scatter_dst(c ⊙ gather_src(a Wᵀ)) + b
        transpose:  t = scatter_src(c ⊙ gather_dst(g)) W
    """

    fuses_bias = True

    def __init__(self, weight, bias, src, dst, coef, nodes: int):
        self.weight, self.bias = weight, bias
        self.src, self.dst, self.coef, self.nodes = src, dst, coef, nodes

    def forward(self, x, weight, bias=None):
        h = x @ weight.T  # (R, N, G)
        msg = h.index_select(1, self.src) * self.coef.view(1, -1, 1)
        z = h.new_zeros((x.shape[0], self.nodes, weight.shape[0])).index_add_(1, self.dst, msg)
        return z if bias is None else z + bias.view(1, 1, -1)

    def transpose(self, g, weight, in_shape):
        g = g.reshape(g.shape[0], self.nodes, weight.shape[0])
        back = g.index_select(1, self.dst) * self.coef.view(1, -1, 1)
        t = g.new_zeros(g.shape).index_add_(1, self.src, back)
        return t @ weight

    def bias_for(self, z, bias=None):
        bias = self.bias if bias is None else bias
        return None if bias is None else bias.view(1, 1, -1)


class GCNLayer(Linear):
    """``torch_geometric.nn.GCNConv`` recorded whole, read as the one linear map Â ⊗ W
    (:class:`GCNMap`), so that a rule sees the weights of GNN-LRP's layer, neuron (i, f) →
    (j, g) with weight Â_ji W_gf (Schnake et al., TPAMI 2022). **Opt-in**: by default nrm reads
    GCNConv operation by operation (lin, gather, ·Â, scatter, + b; docs/gnn.md), where a rule
    other than LRP-0 on lin is not the rule on Â ⊗ W. Register it to get the paper's layer::

        nrm.layers.register(nrm.layers.message.GCNLayer())     # needs torch_geometric

    Rules whose weight modification is positively homogeneous apply exactly (LRP-0, ε, γ, z⁺,
    αβ, z^B): ρ(Â_ji W_gf) = Â_ji ρ(W_gf) for Â ≥ 0. Flat and w² are not (their weights are 1 and
    w² of the product): refused, as are negative edge coefficients under a rule that modifies
    weights by sign (a :class:`~nrm.errors.GraphError`). Rule key: ``GCNConv`` (and ``nn.Linear``,
    as the presets treat dense layers). The self-check verifies the map against the module's
    recorded output on every signature.
    """

    refused_rules = ("flat", "wsquare")

    def __init__(self):
        from torch_geometric.nn import GCNConv

        self.modules = (GCNConv,)
        self.rule_types = (GCNConv, nn.Linear)

    def examples(self):
        return [(OnFixedGraph(3, 2).eval(), (4, 3))]

    def accepts(self, call):
        module = call.module
        edge_index = call.arg(1, "edge_index")
        if not isinstance(edge_index, torch.Tensor) or edge_index.dtype != torch.int64:
            return "takes edge_index as a SparseTensor or another type; nrm reads an int64 tensor (2, E)"
        if getattr(module, "cached", False):
            return "is cached=True (its normalization from an earlier graph); use cached=False"
        if len(call.in_shapes) != 1 or len(call.in_shapes[0]) != 3:
            return "is called on features of another shape; nrm reads (batch, nodes, features) (nrm.gnn)"
        return None

    def coefficients(self, call, dtype) -> tuple:
        """(src, dst, c) of the call: PyG's gcn_norm of its graph, as GCNConv computes it."""
        from torch_geometric.nn.conv.gcn_conv import gcn_norm

        module = call.module
        edge_index, weight = call.arg(1, "edge_index"), call.arg(2, "edge_weight", None)
        nodes = call.in_shapes[0][1]
        if module.normalize:
            edge_index, weight = gcn_norm(edge_index, weight, nodes, module.improved, module.add_self_loops,
                                          module.flow, dtype)
        if weight is None:
            weight = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
        src, dst = (edge_index[0], edge_index[1]) if module.flow == "source_to_target" else (edge_index[1],
                                                                                              edge_index[0])
        return src, dst, weight.detach().to(dtype)

    layer, dense, edge_words = "GCNConv", "Â ⊗ W", "normalized edge weights"
    """How the refusals of :meth:`refuse` name the layer, its dense map and its coefficients."""

    def refuse(self, call, rule, src, dst, coef) -> None:
        """Raise where ``rule`` on the dense map is not the rule applied to W: flat and w² (their
        weights 1 and w² of the product), and a negative coefficient under a rule that modifies
        weights by sign (ρ(c w) = c ρ(w) needs c ≥ 0)."""
        from ..rules import Epsilon, Flat, WSquare, Zero

        name = type(self).__name__
        if isinstance(rule, (Flat, WSquare)):
            raise RuleAssignmentError(
                f"{type(rule).__name__} on {self.layer} at '{call.name}' read as {self.dense}: its weights (1, w²) of "
                "the dense map are not the modified W; give this layer LRP-0, ε, γ, z⁺ or αβ, or unregister "
                f"nrm.layers.message.{name} to read {self.layer} operation by operation")
        if rule is not None and type(rule) not in (Zero, Epsilon) and bool((coef < 0).any()):
            raise GraphError(f"{self.layer} at '{call.name}' has negative {self.edge_words}, and {rule!r} modifies "
                             f"weights by their sign, which {self.dense} splits as A ρ(W) only for A ≥ 0: use "
                             "non-negative edge weights, or LRP-0 / ε on this layer")

    def map(self, call, a, rule=None):
        src, dst, coef = self.coefficients(call, a.dtype)
        self.refuse(call, rule, src, dst, coef)
        module = call.module
        bias = None if module.bias is None else module.bias.detach()
        return GCNMap(module.lin.weight.detach(), bias, src.to(a.device), dst.to(a.device), coef.to(a.device),
                      call.in_shapes[0][1])


class GraphConvMap(GCNMap):
    """``GraphConv`` as one linear map of the node features: messages along the edges with
    coefficients c_e (the edge weight, 1 without; divided by the number of messages a node
    receives for ``aggr="mean"``), the relation weight W_rel after the aggregation, and the
    node's own features through W_root:

        z_{j,g} = Σ_{e: dst_e = j} c_e Σ_f a_{src_e, f} W_rel,gf + Σ_f a_{j,f} W_root,gf + b_g

    weight (i, f) → (j, g): A_ji W_rel,gf + δ_ij W_root,gf, with A_ji = Σ_{e: i → j} c_e.
    ``weight`` is [W_rel | W_root] (G, 2F): a rule modifies both elementwise (the rule on the
    dense map when the modification is positively homogeneous, A ≥ 0, and no edge is a
    self-loop, which would add a W_rel and a W_root term into one weight).

    Definition::

        forward:    z = scatter_dst(c ⊙ gather_src(a W_relᵀ)) + a W_rootᵀ + b
        transpose:  t = scatter_src(c ⊙ gather_dst(g)) W_rel + g W_root
    """

    def _split(self, weight):
        half = weight.shape[1] // 2
        return weight[:, :half], weight[:, half:]

    def forward(self, x, weight, bias=None):
        rel, root = self._split(weight)
        return super().forward(x, rel, bias) + x @ root.T

    def transpose(self, g, weight, in_shape):
        rel, root = self._split(weight)
        return super().transpose(g, rel, in_shape) + g.reshape(g.shape[0], self.nodes, rel.shape[0]) @ root


class GraphConvLayer(GCNLayer):
    """``torch_geometric.nn.GraphConv`` (``aggr="add"`` or ``"mean"``) recorded whole, read as the
    one linear map of :class:`GraphConvMap`: GNN-LRP's layer (i, f) → (j, g) with weight
    A_ji W_rel,gf + δ_ij W_root,gf, so that γ, z⁺ and αβ apply to the dense map as
    :class:`GCNLayer` does for ``GCNConv``. **Opt-in** (by default GraphConv is read operation by
    operation)::

        nrm.layers.register(nrm.layers.message.GraphConvLayer())     # needs torch_geometric

    ``aggr="max"`` (not linear) is left to the operation-by-operation reading. Refused: flat and
    w² (as GCNLayer), a bipartite ``(x_src, x_dst)``
    or ``size=`` call, and, under a rule that modifies weights by sign, a negative edge weight or
    a self-loop (the two terms of the diagonal weight A_jj W_rel + W_root would be modified apart,
    not as their sum: a :class:`~nrm.errors.GraphError`). Rule key: ``GraphConv`` (and
    ``nn.Linear``).
    """

    def __init__(self):
        from torch_geometric.nn import GraphConv

        self.modules = (GraphConv,)
        self.rule_types = (GraphConv, nn.Linear)

    def examples(self):
        return [(OnFixedGraph(3, 2, "graphconv").eval(), (4, 3)), (OnFixedGraph(2, 2, "graphconv-mean").eval(), (4, 2))]

    def records(self, module):
        """``aggr="add"`` and ``"mean"`` (linear maps); another aggregation is read operation by
        operation."""
        return module.aggr in ("add", "sum", "mean")

    def accepts(self, call):
        if call.arg(3, "size", None) is not None:
            return "is called with size=; nrm reads one node set (batch, nodes, features)"
        edge_index = call.arg(1, "edge_index")
        if not isinstance(edge_index, torch.Tensor) or edge_index.dtype != torch.int64:
            return "takes edge_index as a SparseTensor or another type; nrm reads an int64 tensor (2, E)"
        if len(call.in_shapes) != 1 or len(call.in_shapes[0]) != 3:
            return ("is called on a pair (x_src, x_dst) or features of another shape; nrm reads (batch, nodes, "
                    "features) (nrm.gnn)")
        return None

    def coefficients(self, call, dtype) -> tuple:
        """(src, dst, c) of the call: c_e the edge weight (1 without), over the number of
        messages into dst_e for aggr="mean"."""
        module = call.module
        edge_index, weight = call.arg(1, "edge_index"), call.arg(2, "edge_weight", None)
        src, dst = (edge_index[0], edge_index[1]) if module.flow == "source_to_target" else (edge_index[1],
                                                                                              edge_index[0])
        coef = (torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device) if weight is None
                else weight.detach().to(dtype))
        if module.aggr == "mean":
            count = torch.zeros(call.in_shapes[0][1], dtype=dtype, device=coef.device).index_add_(
                0, dst, torch.ones_like(coef))
            coef = coef / count[dst]
        return src, dst, coef

    layer, dense, edge_words = "GraphConv", "A ⊗ W_rel + I ⊗ W_root", "edge weights"

    def refuse(self, call, rule, src, dst, coef) -> None:
        """:meth:`GCNLayer.refuse`, and self-loops under a rule that modifies weights by sign."""
        from ..rules import Epsilon, Zero

        super().refuse(call, rule, src, dst, coef)
        if rule is not None and type(rule) not in (Zero, Epsilon) and bool((src == dst).any()):
            raise GraphError(f"GraphConv at '{call.name}' has self-loops, and {rule!r} modifies weights by their "
                             "sign: the diagonal weight A_jj W_rel + W_root would be modified term by term, not as "
                             "the sum; remove the self-loops (GraphConv adds the node itself through lin_root), or "
                             "use LRP-0 / ε on this layer")

    def map(self, call, a, rule=None):
        src, dst, coef = self.coefficients(call, a.dtype)
        self.refuse(call, rule, src, dst, coef)
        module = call.module
        weight = torch.cat([module.lin_rel.weight.detach(), module.lin_root.weight.detach()], 1)
        bias = None if module.lin_rel.bias is None else module.lin_rel.bias.detach()
        return GraphConvMap(weight, bias, src.to(a.device), dst.to(a.device), coef.to(a.device), call.in_shapes[0][1])


def segment_softmax(src: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """The softmax of ``src`` (B, E, *rest) over the positions e of dimension 1 that share a
    segment ``index[e]`` (E,), separately for every sample and every position of ``rest``:
    a graph attention's normalization over the edges into each node (PyG's
    ``torch_geometric.utils.softmax(alpha, edge_index[1], num_nodes=N)``, batch first)::

        s_e = exp(x_e − m_k) / Σ_{e': index[e'] = k} exp(x_e' − m_k),   k = index[e],  m_k = max_{index[e'] = k} x_e'

    One torch function for the capture (it dispatches ``__torch_function__``), read by
    :class:`SegmentSoftmax`."""
    if torch.overrides.has_torch_function((src,)):
        return torch.overrides.handle_torch_function(segment_softmax, (src,), src, index, num_segments)
    idx = index.view((1, -1) + (1,) * (src.dim() - 2)).expand_as(src)
    size = (src.shape[0], num_segments) + tuple(src.shape[2:])
    top = src.new_full(size, float("-inf")).scatter_reduce(1, idx, src, "amax", include_self=True)
    e = (src - top.gather(1, idx)).exp()
    return e / src.new_zeros(size).scatter_add(1, idx, e).gather(1, idx)


class SegmentSoftmax(Linear):
    """:func:`segment_softmax` (a graph attention's softmax over the edges into each node),
    linearized at the forward value as :class:`~nrm.layers.attention.Softmax` is (AttnLRP
    Prop. 3.1), one group per (segment k, position r of the trailing dimensions): the edges
    e with index[e] = k. Its output is an attention weight, a **gate** of the product that
    uses it (:class:`~nrm.layers.products.Multiply`'s ``split="signal"``, the default, gives
    it nothing: the attention held constant, CP-LRP; ``split="equal"``, AttnLRP's uniform
    rule, ½). Rule key ``nn.Softmax`` (LRP-0 in the presets).

    Definition (i, j in one group G(j); under LRP-0, any rule applies)::

        W_ij = ∂s_j/∂x_i = s_j (δ_ij − s_i),    b_j = s_j − Σ_{i ∈ G(j)} x_i W_ij
        q(x_i | s_j) = x_i (δ_ij − s_i),        q(⊥ | s_j) = 1 − x_j + Σ_{i ∈ G(j)} s_i x_i

    Exact form: s and x as their float64 values in fractions, W and b from them exactly.
    """

    functions = (segment_softmax,)
    rule_types = (nn.Softmax,)
    gate = True

    def accepts(self, call):
        src, index, segments = call.args[0], call.arg(1, "index"), call.arg(2, "num_segments")
        if not isinstance(src, Value) or len(call.in_shapes[0]) < 2:
            return "normalizes a constant; nrm reads a segment softmax of input-derived scores (B, E, …)"
        why = _constant_index(index, "normalizes")
        if why is not None:
            return why
        if index.dim() != 1 or index.shape[0] != call.in_shapes[0][1] or isinstance(segments, bool) \
                or not isinstance(segments, int) or (index.numel() and not 0 <= int(index.min())
                                                     <= int(index.max()) < segments):
            return "takes an index that is not one segment in 0 … num_segments − 1 per position of dimension 1"
        return None

    def groups(self, call) -> list[list[int]]:
        """The groups of one sample's flat neurons: for every segment and trailing position, the
        neurons of the edges in that segment (in edge order)."""
        shape = tuple(call.in_shapes[0][1:])
        rest = math.prod(shape[1:])
        index = call.arg(1, "index").detach().cpu().tolist()
        members: dict[int, list[int]] = {}
        for e, k in enumerate(index):
            members.setdefault(k, []).append(e)
        return [[e * rest + r for e in edges] for k in sorted(members) for r in range(rest)
                for edges in (members[k],)]

    def pairs(self, call) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols): every pair (i, j) of neurons in one group."""
        rows, cols = [], []
        for group in self.groups(call):
            for j in group:
                rows += group
                cols += [j] * len(group)
        return torch.tensor(rows, dtype=torch.int64), torch.tensor(cols, dtype=torch.int64)

    def map(self, call, a, rule=None):
        rows, cols = (t.to(a.device) for t in self.pairs(call))
        s = segment_softmax(a, call.arg(1, "index").to(a.device), call.arg(2, "num_segments")).reshape(a.shape[0], -1)
        weight = s[:, cols] * ((rows == cols).to(a.dtype) - s[:, rows])
        lmap = PairMap(weight, None, tuple(a.shape[1:]), rows, cols)
        lmap.bias = s.reshape(a.shape) - lmap.forward(a, weight)
        return lmap

    def exact(self, call, a, rule=None) -> ExactMap:
        """W and b from the definition, in fractions of the float64 s and x (loops over the groups)."""
        shape = tuple(a.shape[1:])
        s = segment_softmax(a.double(), call.arg(1, "index").to(a.device), call.arg(2, "num_segments"))
        x, s = to_fractions(a[0]).reshape(-1), to_fractions(s[0]).reshape(-1)
        return ExactMap(*softmax_exact(x, s, self.groups(call)), shape)

    def examples(self):
        return [(EdgeSoftmax().eval(), (5, 2))]


def _destinations(index: np.ndarray, axis: int, out_shape: tuple) -> np.ndarray:
    """The flat output position of every source position (source shape): the source's own
    coordinates with ``axis`` replaced by the index."""
    strides = [math.prod(out_shape[k + 1:]) for k in range(len(out_shape))]
    dest = index.astype(np.int64) * strides[axis]  # the indices are the model's, which torch's scatter accepted
    for k, n in enumerate(index.shape):
        if k != axis:
            dest = dest + (np.arange(n, dtype=np.int64) * strides[k]).reshape((-1,) + (1,) * (index.ndim - 1 - k))
    return dest


class Gather(nn.Module):
    """relu(x) gathered along a fixed edge list (an example of :class:`nrm.layers.message.IndexSelect`)."""

    def __init__(self, index=(0, 2, 2, 3, 1)):
        super().__init__()
        self.register_buffer("index", torch.tensor(index, dtype=torch.int64))

    def forward(self, x):
        return torch.relu(x).index_select(1, self.index)


class Aggregation(nn.Module):
    """relu(x) summed, averaged or maximized over the in-neighbours of a fixed graph with an isolated node
    and a self-loop (an example of :class:`nrm.layers.message.Scatter`)."""

    def __init__(self, how: str = "sum"):
        super().__init__()
        self.how = how
        self.register_buffer("src", torch.tensor([0, 1, 1, 2, 0], dtype=torch.int64))
        self.register_buffer("dst", torch.tensor([1, 0, 2, 2, 1], dtype=torch.int64))

    def forward(self, x):
        h = torch.relu(x)
        msg = h.index_select(1, self.src)
        index = self.dst.view(1, -1, 1).expand_as(msg)
        out = msg.new_zeros(h.shape)
        if self.how == "sum":
            return out.scatter_add_(1, index, msg)
        return out.scatter_reduce_(1, index, msg, reduce="amax" if self.how == "max" else "mean", include_self=False)


class OnFixedGraph(nn.Module):
    """A ``GCNConv`` (``layer="gcn"``) or ``GraphConv`` (``"graphconv"``, ``"graphconv-mean"``) on a
    fixed graph of 4 nodes (an isolated node, a multi-edge, and for GCNConv a self-loop), as a
    model of the features alone: the examples of :class:`GCNLayer` and :class:`GraphConvLayer`
    (needs torch_geometric)."""

    def __init__(self, features: int = 3, out: int = 2, layer: str = "gcn"):
        super().__init__()
        from torch_geometric.nn import GCNConv, GraphConv

        g = torch.Generator().manual_seed(7)
        self.conv = (GCNConv(features, out) if layer == "gcn" else
                     GraphConv(features, out, aggr="mean" if layer.endswith("mean") else "add")).double()
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        edges = [[0, 1, 1, 2, 0], [1, 0, 2, 2, 1]] if layer == "gcn" else [[0, 1, 1, 3, 0], [1, 0, 2, 2, 1]]
        self.register_buffer("edge_index", torch.tensor(edges, dtype=torch.int64))
        self.register_buffer("edge_weight", torch.tensor([1.0, 0.5, 2.0, 1.5, 0.75], dtype=torch.float64))

    def forward(self, x):
        # the convolution alone: a whole-recorded module beside another operation of its parent
        # lets that operation take the parent's name in the capture (a naming bug, docs/gnn.md)
        return self.conv(x, self.edge_index, self.edge_weight)


class EdgeSoftmax(nn.Module):
    """Scores of the 5 edges of a fixed graph (a self-loop, a multi-edge, a node no edge enters)
    normalized over the edges into each node: relu(x) · w then :func:`segment_softmax` (an
    example of :class:`SegmentSoftmax`; x (5, 2): one row of scores per edge)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("dst", torch.tensor([1, 0, 2, 2, 1], dtype=torch.int64))

    def forward(self, x):
        return segment_softmax(torch.relu(x), self.dst, 4)
