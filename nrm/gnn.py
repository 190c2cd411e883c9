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

__all__ = ["GraphError", "OnGraph", "check_graph", "explain", "walk_relevance", "graph_walks", "top_walks",
           "edge_events", "edge_relevance", "subgraph_events", "subgraph_relevance"]


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
    from .errors import NRMError
    from .measure import DEFAULT_CHUNK, check_options, measure_of, prepared

    wrapped = OnGraph(model, edge_index, *args, **kwargs)
    check_graph(x, edge_index, wrapped.edge_weight(), kwargs.get("batch"))
    check_options(DEFAULT_CHUNK, check, None)
    try:  # the model runs once: its output's shape is read from the capture
        network, engine = prepared(wrapped, x.unsqueeze(0), rules, None, check)
    except NRMError as error:  # a graph on which the model's output is not finite says so (run again to see)
        try:
            with torch.no_grad():
                out = wrapped(x.unsqueeze(0))
        except Exception:  # the model raises on the batched graph itself: the capture's error names where
            raise GraphError(f"{error} — nrm.gnn.explain calls the model on x of shape (1, N, F), one graph as a "
                             "batch of one; a layer that reads only an unbatched (N, F) graph (PyG's node_dim=0, as "
                             "GeneralConv and GatedGraphConv) cannot run so: nrm reads GATConv and GATv2Conv through "
                             "their definition, other such layers are not read yet") from error
        if bool(torch.isfinite(out).all()):
            raise
        weight = wrapped.edge_weight()
        why = ("; edge_weight has negative entries, and a degree normalization such as GCNConv's deg^(-1/2) is NaN "
               "where a node's weights sum below 0: use non-negative edge weights there"
               if weight is not None and bool((weight < 0).any()) else "")
        raise GraphError(f"the model's output on this graph is not finite{why}") from error
    shape = engine.output.shape
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
    return measure_of(network, engine, x.unsqueeze(0), node * classes + target, None, DEFAULT_CHUNK)


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
    rows, firsts = [], []  # the walks, tail by tail: (tail k, i_0) for every i_0 a step into the tail may come from
    for k, t in enumerate(tails):
        allowed = before(1, t[0])
        rows += [k] * len(allowed)
        firsts += allowed
    rows_t, firsts_t = torch.tensor(rows, dtype=torch.int64), torch.tensor(firsts, dtype=torch.int64)
    at = (rows_t.to(starts.device), firsts_t.to(starts.device))
    on_edges = torch.zeros(starts.shape, dtype=torch.bool, device=starts.device)
    on_edges[at] = True
    off = float(starts.abs().masked_fill(on_edges, 0).max()) if starts.numel() else 0.0
    listed = starts[at]
    tails_t = torch.tensor(tails, dtype=torch.int64).reshape(len(tails), len(layers) - 1)
    walks = torch.cat([firsts_t.unsqueeze(1), tails_t[rows_t]], 1)
    every = At(layers[-1], nodes=[end]) if end is not None else At(layers[-1])
    for layer in layers[:-1]:
        every = At(layer) & every
    total = float(f * m.measure([every])[0, sample])
    if off > scale or abs(float(listed.sum()) - total) > scale * max(1, len(walks)) ** 0.5:
        raise GraphError(f"walks off the edges of edge_index carry relevance here (first steps off the edges up to "
                         f"{off:.3g}; the walks along the edges sum to {float(listed.sum()):.6g} of "
                         f"{total:.6g}): the model mixes nodes other than along these edges — pass the edges it "
                         "uses, or use walk_relevance (every walk, small graphs)")
    return walks, listed


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


# -- edge and subgraph events: sums over walks, as events (one cylinder or a few, not one per walk) --------
def _walk_cylinder(layers: list[str], chosen: dict[int, list[int]], end: int | None):
    """∩_l At(layers[l], nodes=chosen[l]) (every node where l is not chosen), the last layer at ``end``."""
    from .events import At

    ev = None
    for l, layer in enumerate(layers):
        nodes = chosen.get(l)
        if l == len(layers) - 1 and end is not None:
            nodes = [end] if nodes is None else [v for v in nodes if v == end]
        atom = At(layer) if nodes is None else At(layer, nodes=nodes)
        ev = atom if ev is None else ev & atom
    return ev


def _node_set(nodes, n: int, who: str) -> list[int]:
    """Sorted distinct node ids in 0 … n − 1; GraphError for an empty set, a non-integer or an id out of range."""
    if isinstance(nodes, torch.Tensor):
        nodes = nodes.reshape(-1).tolist()
    try:
        values = sorted({int(v) for v in nodes} if not isinstance(nodes, int) else {int(nodes)})
    except (TypeError, ValueError):
        raise GraphError(f"{who} takes node ids (integers), got {nodes!r}") from None
    if not values:
        raise GraphError(f"{who} got an empty set of nodes: name at least one node (the relevance of no walk is 0)")
    bad = [v for v in values if not 0 <= v < n]
    if bad:
        raise GraphError(f"{who}: nodes {bad[:5]} are outside 0 … {n - 1} (the graph has {n} nodes)")
    return values


def _edge_set(edges, edge_index: torch.Tensor, n: int, who: str) -> list[tuple[int, int]]:
    """Distinct (source, target) pairs, each an edge of ``edge_index`` or a self-step (i, i)."""
    if not isinstance(edge_index, torch.Tensor) or edge_index.dtype != torch.int64 or edge_index.dim() != 2 \
            or edge_index.shape[0] != 2:
        raise GraphError(f"{who} needs the graph's edge_index, an int64 tensor of shape (2, E)")
    if isinstance(edges, torch.Tensor):
        edges = edges.t().tolist() if edges.dim() == 2 and edges.shape[0] == 2 else edges.tolist()
    try:
        pairs = list(dict.fromkeys((int(u), int(v)) for u, v in edges))
    except (TypeError, ValueError):
        raise GraphError(f"{who} takes edges as (source, target) pairs, got {edges!r}") from None
    if not pairs:
        raise GraphError(f"{who} got an empty set of edges: name at least one (source, target) pair")
    _node_set([v for e in pairs for v in e], n, who)
    known = set(map(tuple, edge_index.t().tolist()))
    missing = [e for e in pairs if e[0] != e[1] and e not in known]
    if missing:
        raise GraphError(f"{who}: {missing[:5]} {'is not an edge' if len(missing) == 1 else 'are not edges'} of "
                         "edge_index (a walk steps along an edge source → target, or stays at a node: (i, i)); "
                         "for an undirected graph name the direction the walk takes, or both")
    return pairs


def _steps(layers: list[str], nodes: list[int], step: int | None, who: str) -> list[int]:
    """The steps l (layers[l] → layers[l + 1]) between node-level layers an edge may take."""
    steps = [l for l in range(len(layers) - 1) if nodes[l + 1] == nodes[0]]
    if not steps:
        raise GraphError(f"{who}: the walks through {layers} take no step between node-level layers")
    if step is None:
        return steps
    if not isinstance(step, int) or step not in steps:
        raise GraphError(f"{who}: step={step!r} is not a step between node-level layers; the steps are {steps} "
                         f"(step l goes from layers[l] to layers[l + 1])")
    return [step]


def edge_events(m, layers: list[str], edge_index: torch.Tensor, edges, *, step: int | None = None,
                end: int | None = None) -> list:
    """One event per edge (u → v): the walks (i_0, …, i_{L−1}) through ``layers`` whose step
    ``step`` (from layers[step] to layers[step + 1]) goes u → v,

        E_uv = ∩_{k ≠ step, step+1} At(layers[k]) ∩ At(layers[step], nodes=[u]) ∩ At(layers[step + 1], nodes=[v]),

    one cylinder; with ``step=None`` the walks that take u → v at any step, ∪_l E_uv^l (exact by
    inclusion–exclusion, :mod:`nrm.events`). ``end``: the walks end at that node (or graph) of
    the last layer. An edge is a pair of ``edge_index`` or a self-step (i, i) (GCN's self-loop,
    GIN's (1 + ε) x); the events of distinct edges at one step are disjoint."""
    nodes = _walk_nodes(m, layers, end, "edge_events")
    pairs = _edge_set(edges, edge_index, nodes[0], "edge_events")
    steps = _steps(layers, nodes, step, "edge_events")
    events = []
    for u, v in pairs:
        ev = None
        for l in steps:
            cyl = _walk_cylinder(layers, {l: [u], l + 1: [v]}, end)
            ev = cyl if ev is None else ev | cyl
        events.append(ev)
    return events


def edge_relevance(m, layers: list[str], edge_index: torch.Tensor, edges, *, step: int | None = None,
                   end: int | None = None, sample: int = 0) -> torch.Tensor:
    """f · μ(:func:`edge_events`): per edge (K,), the sum of the relevances of the walks that take
    it (at ``step``, or at any step with ``step=None``) — the entries of :func:`walk_relevance`'s
    tensor with i_step = u and i_{step+1} = v, summed, computed as K events in stacked masked
    passes (one cylinder each at a fixed step), not by listing walks. At a fixed step the
    events are disjoint: their sum is the relevance of the walks through any edge of the set."""
    events = edge_events(m, layers, edge_index, edges, step=step, end=end)
    return m.f[sample] * m.measure(events)[:, sample]


def subgraph_events(m, layers: list[str], nodes, *, how: str = "inside", end: int | None = None):
    """The walks through ``layers`` that stay inside the node set S (``how="inside"``: every node
    of the walk in S, one cylinder ∩_l At(layers[l], nodes=S)) or touch it (``how="touch"``: at
    least one node in S, the walks reaching ``end`` minus those avoiding S, two cylinders). A
    graph-level last layer (a pooled output) is not a node: it is left free (or at ``end``)."""
    if how not in ("inside", "touch"):
        raise GraphError(f"subgraph_events: how={how!r}; it is 'inside' (every node of the walk in the set) or "
                         "'touch' (at least one)")
    counts = _walk_nodes(m, layers, end, "subgraph_events")
    chosen = _node_set(nodes, counts[0], "subgraph_events")
    node_level = [l for l in range(len(layers)) if counts[l] == counts[0]]
    if how == "inside":
        return _walk_cylinder(layers, {l: chosen for l in node_level}, end)
    every = _walk_cylinder(layers, {}, end)
    rest = [v for v in range(counts[0]) if v not in set(chosen)]
    if not rest:
        return every
    return every - _walk_cylinder(layers, {l: rest for l in node_level}, end)


def subgraph_relevance(m, layers: list[str], nodes, *, how: str = "inside", end: int | None = None,
                       sample: int = 0) -> torch.Tensor:
    """f · μ(:func:`subgraph_events`): the sum of the relevances of the walks that stay inside
    the node set (``how="inside"``) or touch it (``how="touch"``) — the entries of
    :func:`walk_relevance`'s tensor whose nodes are all in S (or one at least), summed, from
    one or two masked events."""
    return m.f[sample] * m.measure([subgraph_events(m, layers, nodes, how=how, end=end)])[0, sample]
