"""Graph networks: a model called as ``model(x, edge_index, …)`` explained w.r.t. its node
features ``x``, with the graph (``edge_index``, edge weights, the ``batch`` vector) held
constant.

nrm explains a function of one input with a batch dimension first. A graph of N nodes with
F features is one sample of shape (N, F): :class:`OnGraph` binds the graph to the model and
takes x of shape (B, N, F) (B copies of the graph with other features; PyG's layers act on
``node_dim = -2``), and :func:`explain` takes x of shape (N, F) as PyG gives it::

    m = nrm.gnn.explain(model, data.x, data.edge_index, target=c, node=i, rules=nrm.rules.Gamma(0.25))
    m.marginal("input")                          # (1, N, F): relevance of every node feature
    m.measure(At("input", nodes=[3]) & At("model.conv1", nodes=[5]) & At("model.conv2", nodes=[i]))

The graph is checked before the model runs (:func:`check_graph`): an ``edge_index`` of
another dtype or shape, node ids out of range, edge weights of another length or not finite,
and features that are not finite are refused with :class:`GraphError`, naming what to fix.
What the capture reads of message passing: :mod:`nrm.layers.message`; docs/gnn.md.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import GraphError

__all__ = ["GraphError", "OnGraph", "check_graph", "explain", "walk_relevance", "graph_walks", "top_walks"]


def check_graph(x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None,
                batch: torch.Tensor | None = None) -> None:
    """Refuse a malformed graph with :class:`GraphError` (x: (…, N, F) node features)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise GraphError(f"x must be a floating-point tensor of node features (N, F), got "
                         f"{type(x).__name__ if not isinstance(x, torch.Tensor) else (tuple(x.shape), x.dtype)}")
    n = x.shape[-2]
    if not isinstance(edge_index, torch.Tensor) or edge_index.dtype != torch.int64:
        what = edge_index.dtype if isinstance(edge_index, torch.Tensor) else type(edge_index).__name__
        raise GraphError(f"edge_index must be an int64 tensor of shape (2, E), got {what}; "
                         "convert it with edge_index.long()")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise GraphError(f"edge_index must have shape (2, E) (sources, targets), got {tuple(edge_index.shape)}; "
                         "a list of (source, target) pairs of shape (E, 2) is edge_index.t()")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
        bad = edge_index[:, ((edge_index < 0) | (edge_index >= n)).any(0)]
        raise GraphError(f"edge_index names nodes outside 0 … {n - 1} (x has {n} nodes): edges "
                         f"{bad.t().tolist()[:5]}{' …' if bad.shape[1] > 5 else ''}; drop them or pass every node's "
                         "features")
    if edge_weight is not None:
        if not isinstance(edge_weight, torch.Tensor) or not edge_weight.is_floating_point() \
                or tuple(edge_weight.shape) != (edge_index.shape[1],):
            shape = tuple(edge_weight.shape) if isinstance(edge_weight, torch.Tensor) else type(edge_weight).__name__
            raise GraphError(f"edge_weight must be a floating-point tensor of shape (E,) = ({edge_index.shape[1]},), "
                             f"one weight per edge, got {shape}")
        if not bool(torch.isfinite(edge_weight).all()):
            raise GraphError("edge_weight has NaN or infinite entries; nrm explains finite graphs")
    if batch is not None:
        if not isinstance(batch, torch.Tensor) or batch.dtype != torch.int64 or tuple(batch.shape) != (n,):
            raise GraphError(f"batch must be an int64 tensor of shape (N,) = ({n},), the graph of every node")
        if n and int(batch.min()) < 0:
            raise GraphError("batch has negative graph ids")
    if not bool(torch.isfinite(x).all()):
        nodes = (~torch.isfinite(x)).reshape(-1, n, x.shape[-1]).any(-1).any(0).nonzero().flatten().tolist()
        raise GraphError(f"x has NaN or infinite features at nodes {nodes[:10]}; nrm explains finite inputs")


class OnGraph(nn.Module):
    """``model(x, edge_index, *args, **kwargs)`` as a model of x alone: the graph and every other
    argument are constants of the computation. ``forward(x)`` takes x of shape (B, N, F) and
    checks the graph against it (:func:`check_graph`). The model is registered as the
    submodule ``model`` (its layers are named ``model.conv1``, …); it is only called."""

    def __init__(self, model: nn.Module, edge_index: torch.Tensor, *args: Any, **kwargs: Any):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise GraphError(f"OnGraph takes the graph network (an nn.Module) first, got {type(model).__name__}")
        self.model = model
        self.training = model.training  # the wrapper's own flag only: the model's modes stay as they are
        self.edge_index, self.args, self.kwargs = edge_index, args, kwargs

    def edge_weight(self) -> torch.Tensor | None:
        """The edge weights among the arguments: ``edge_weight=``, or a 1-d tensor right after ``edge_index``."""
        return self.kwargs.get("edge_weight", self.args[0] if self.args and isinstance(self.args[0], torch.Tensor)
                               and self.args[0].dim() == 1 else None)

    def unbatched(self) -> bool:
        """Whether the model has a layer that reads one graph without a batch dimension (PyG's
        ``GATConv``: "Static graphs not supported"), which the capture reads through its
        batch-first definition (``nrm.layers.gat``)."""
        from .layers.fused import decomposition_of

        return any(getattr(decomposition_of(m), "unbatched", False) for m in self.model.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .capture import recording

        with torch._C.DisableTorchFunction():  # reading the graph is not part of what the model computes
            check_graph(x, self.edge_index, self.edge_weight(), self.kwargs.get("batch"))
        if self.unbatched() and not recording():  # one graph at a time, outside a capture
            return torch.stack([self.model(x[b], self.edge_index, *self.args, **self.kwargs)
                                for b in range(x.shape[0])])
        return self.model(x, self.edge_index, *self.args, **self.kwargs)


def explain(model: nn.Module, x: torch.Tensor, edge_index: torch.Tensor, *args: Any, target: int,
            node: int | None = None, rules=None, check: bool | str = True, **kwargs: Any):
    """The NRM of a graph network at node features ``x`` (N, F) for one output.

    ``model(x, edge_index, *args, **kwargs)`` returns (N, C) node outputs or (G, C) graph
    outputs; ``target`` is the class c, and ``node`` the node (or graph) whose output f_{node, c}
    is explained (default: the only row). The measure's input layer has shape (N, F) per sample
    (a batch of one); ``At(layer, nodes=[…])`` selects every feature of the named nodes."""
    from .measure import explain as explain_measure

    wrapped = OnGraph(model, edge_index, *args, **kwargs)
    check_graph(x, edge_index, wrapped.edge_weight(), kwargs.get("batch"))
    with torch.no_grad():
        out = wrapped(x.unsqueeze(0))
    shape = out.shape
    if not bool(torch.isfinite(out).all()):
        weight = wrapped.edge_weight()
        why = ("; edge_weight has negative entries, and a degree normalization such as GCNConv's deg^(-1/2) is NaN "
               "where a node's weights sum below 0: use non-negative edge weights there"
               if weight is not None and bool((weight < 0).any()) else "")
        raise GraphError(f"the model's output on this graph is not finite{why}")
    if len(shape) not in (2, 3):
        raise GraphError(f"the model returns shape {tuple(shape[1:])} for one graph; nrm.gnn.explain reads outputs of "
                         "shape (rows, classes): node outputs (N, C) or graph outputs (G, C), or (C,) for one graph "
                         "pooled without a batch vector")
    rows, classes = (1, shape[1]) if len(shape) == 2 else (shape[1], shape[2])
    if node is None:
        if rows != 1:
            raise GraphError(f"the model returns {rows} rows (one per node or graph): say which with node=")
        node = 0
    if not 0 <= node < rows or not 0 <= target < classes:
        raise GraphError(f"node={node}, target={target} is outside the model's output of shape ({rows}, {classes})")
    return explain_measure(wrapped, x.unsqueeze(0), node * classes + target, rules=rules, check=check)


def _walk_nodes(m, layers: list[str], end: int | None, who: str) -> list[int]:
    """The node count of each layer a walk passes; refuses layers that are not node-level
    (only the last may be graph-level) and an ``end`` outside the last layer."""
    if not layers:
        raise GraphError(f"{who} needs the node-level layers a walk passes (e.g. ['input', 'add', 'add_1'])")
    nodes, n = [], m.layer_shape("input")[0]
    for i, layer in enumerate(layers):
        shape = m.layer_shape(layer)
        if len(shape) != 2 or (i < len(layers) - 1 and shape[0] != n):
            raise GraphError(f"layer {layer!r} has shape {tuple(shape)} per sample, not (nodes, features) with the "
                             f"input's {n} nodes: a walk passes node-level layers (the node states after each "
                             "aggregation); only the last may be a graph-level output (graphs, classes)")
        nodes.append(shape[0])
    if end is not None and not (isinstance(end, int) and 0 <= end < nodes[-1]):
        raise GraphError(f"end={end!r} is outside the {nodes[-1]} nodes of layer {layers[-1]!r}")
    return nodes


def walk_relevance(m, layers: list[str], end: int | None = None, *, sample: int = 0) -> torch.Tensor:
    """GNN-LRP's relevance f · μ(walk) of every node walk (i_0, …, i_{L−1}) through the node-level
    ``layers`` (each of shape (N, F) per sample, in the order a walk passes them; the last may be
    a pooled (G, C) layer, its "node" the graph), as a tensor
    (N, …, N) — with ``end`` given, the walks ending at that node of the last layer, a tensor
    over the first L − 1 nodes. A walk is the cylinder ∩_l At(layers[l], nodes=[i_l]) (law L15:
    the nested-masking relevance of the walk, for any rule with a fixed kernel); all walks are
    evaluated in stacked passes of the engine (``m.measure``), not one backward pass each.

    The tensor has N^L entries (N^{L−1} with ``end``): meant for small graphs. With every layer
    of a chain named, the walks and ⊥ partition the output: the entries sum to f · μ(walks
    reaching ``end``) = f minus what the layers' bias and stabilizer terms absorb."""
    from .events import At

    nodes = _walk_nodes(m, layers, end, "walk_relevance")
    free = nodes[:-1] if end is not None else nodes
    grid = torch.cartesian_prod(*[torch.arange(n) for n in free]).reshape(-1, len(free)) if free else \
        torch.zeros(1, 0, dtype=torch.int64)
    events = []
    for walk in grid.tolist():
        path = walk + ([end] if end is not None else [])
        ev = At(layers[0], nodes=[path[0]])
        for layer, node in zip(layers[1:], path[1:]):
            ev = ev & At(layer, nodes=[node])
        events.append(ev)
    mu = m.measure(events)[:, sample]
    return (m.f[sample] * mu).reshape(tuple(free))


def graph_walks(m, layers: list[str], edge_index: torch.Tensor, end: int | None = None, *, sample: int = 0,
                tolerance: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Every node walk (i_0, …, i_{L−1}) along the graph's edges, with its relevance f · μ(walk)
    (:func:`walk_relevance`'s entries, without the N^L grid): tensors (K, L) of nodes and (K,)
    of relevances. A step i → j between node-level layers follows an edge i → j of
    ``edge_index`` or stays at the node (a self term: GCN's self-loop, GIN's (1 + ε) x); a step
    into a graph-level last layer comes from any node.

    The walks' upper parts (i_1, …, i_{L−1}) are grown downward from ``end`` along in-edges and
    are the events; one batched ``m.marginal(layers[0], within=…)`` gives i_0 for all of them at
    once — a cost of one masked pass per upper part, not one backward pass per walk (DIG's way).
    Faithful or refused: relevance that a walk off the edges would carry (a model that mixes
    nodes some other way: a global mean broadcast back, attention over all nodes) is not
    dropped — the listed walks must sum to f · μ(every walk reaching ``end``), and a first step
    off the edges must carry nothing, both to ``tolerance`` · max(1, |f|); else GraphError."""
    from .events import At

    nodes = _walk_nodes(m, layers, end, "graph_walks")
    if len(layers) < 2:
        raise GraphError("graph_walks needs at least two layers (a walk takes at least one step)")
    n = nodes[0]
    if not isinstance(edge_index, torch.Tensor) or edge_index.dtype != torch.int64 or edge_index.dim() != 2 \
            or edge_index.shape[0] != 2:
        raise GraphError("edge_index must be the graph's int64 tensor of shape (2, E) (sources, targets)")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
        raise GraphError(f"edge_index names nodes outside 0 … {n - 1}: give the graph the measure was explained on")
    into: list[set[int]] = [{i} for i in range(n)]
    for src, dst in edge_index.t().tolist():
        into[dst].add(src)

    def before(layer: int, node: int) -> list[int]:
        """The nodes of layers[layer − 1] a step into (layers[layer], node) may come from."""
        return sorted(into[node]) if nodes[layer] == n else list(range(n))

    tails = [(end,)] if end is not None else [(i,) for i in range(nodes[-1])]
    for layer in range(len(layers) - 1, 1, -1):
        tails = [(j,) + t for t in tails for j in before(layer, t[0])]
    events = []
    for t in tails:
        ev = At(layers[1], nodes=[t[0]])
        for layer, node in zip(layers[2:], t[1:]):
            ev = ev & At(layer, nodes=[node])
        events.append(ev)
    f = m.f[sample]
    starts = f * m.marginal(layers[0], within=events)[:, sample].sum(-1)  # (K, N): R of (i_0, tail)
    scale = tolerance * max(1.0, float(f.abs()))
    walks, relevance = [], []
    off = 0.0
    for k, t in enumerate(tails):
        allowed = before(1, t[0])
        mask = torch.ones(n, dtype=torch.bool)
        mask[allowed] = False
        off = max(off, float(starts[k][mask].abs().max()) if bool(mask.any()) else 0.0)
        walks += [(i0,) + t for i0 in allowed]
        relevance.append(starts[k, allowed])
    every = At(layers[-1], nodes=[end]) if end is not None else At(layers[-1])
    for layer in layers[:-1]:
        every = At(layer) & every
    total = float(f * m.measure([every])[0, sample])
    listed = torch.cat(relevance) if relevance else starts.new_zeros(0)
    if off > scale or abs(float(listed.sum()) - total) > scale * max(1, len(walks)) ** 0.5:
        raise GraphError(f"walks off the edges of edge_index carry relevance here (first steps off the edges up to "
                         f"{off:.3g}; the walks along the edges sum to {float(listed.sum()):.6g} of "
                         f"{total:.6g}): the model mixes nodes other than along these edges — pass the edges it "
                         "uses, or use walk_relevance (every walk, small graphs)")
    return torch.tensor(walks, dtype=torch.int64).reshape(-1, len(layers)), listed


def top_walks(m, layers: list[str], end: int | None = None, k: int = 10, *, sample: int = 0,
              edge_index: torch.Tensor | None = None) -> list:
    """The ``k`` node walks of largest |relevance| (:func:`walk_relevance`, or with
    ``edge_index`` :func:`graph_walks`, which lists only the walks along the edges and scales
    to graphs of hundreds of nodes), as [(walk as a tuple of nodes, relevance)], largest first;
    ties in the order of the walks."""
    if edge_index is not None:
        walks, rel = graph_walks(m, layers, edge_index, end, sample=sample)
        order = torch.argsort(rel.abs(), descending=True, stable=True)[:k]
        return [(tuple(int(v) for v in walks[i]), float(rel[i])) for i in order.tolist()]
    R = walk_relevance(m, layers, end, sample=sample)
    flat = R.reshape(-1)
    order = torch.argsort(flat.abs(), descending=True, stable=True)[:k]
    out = []
    for i in order.tolist():
        walk = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), R.shape)) if R.dim() else ()
        out.append((walk + ((end,) if end is not None else ()), float(flat[i])))
    return out
