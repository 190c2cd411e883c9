"""Small generated graphs and graph networks for tests/test_gnn.py (needs torch_geometric).

Every graph has the awkward parts a graph-learning user meets: an isolated node, a
self-loop, a repeated edge (a multi-edge), positive edge weights other than 1, and two
connected components (two graphs of a batch, for the pooling models).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric import nn as gnn


@dataclass
class Graph:
    x: torch.Tensor  # (N, F) float64
    edge_index: torch.Tensor  # (2, E) int64
    edge_weight: torch.Tensor  # (E,) float64, positive
    edge_attr: torch.Tensor  # (E, F) float64
    batch: torch.Tensor  # (N,) int64: two graphs


def graph(seed: int = 0, nodes: int = 7, features: int = 3, edges: int = 9) -> Graph:
    """Two components: nodes 0 … h−1 and h … N−2; node N−1 is isolated (no edge at all).
    Edges are drawn inside each component, plus a self-loop at node 0 and a copy of the first
    edge (a multi-edge)."""
    g = torch.Generator().manual_seed(seed)
    h = (nodes - 1) // 2
    half = edges // 2
    first = torch.randint(0, h, (2, half), generator=g)
    second = torch.randint(h, nodes - 1, (2, edges - half), generator=g)
    edge_index = torch.cat([first, second, torch.tensor([[0], [0]]), first[:, :1]], dim=1)
    E = edge_index.shape[1]
    x = torch.randn(nodes, features, generator=g, dtype=torch.float64)
    weight = 0.5 + torch.rand(E, generator=g, dtype=torch.float64)
    attr = torch.randn(E, features, generator=g, dtype=torch.float64)
    batch = torch.tensor([0] * h + [1] * (nodes - h), dtype=torch.int64)
    return Graph(x, edge_index, weight, attr, batch)


def seeded(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.7)
    return module.eval()


def mlp(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, 4), nn.ReLU(), nn.Linear(4, o))


class Net(nn.Module):
    """conv1 → ReLU → conv2 (node outputs), or then a global pooling and a linear head
    (graph outputs). ``call`` says which graph arguments the convolutions take."""

    def __init__(self, conv1, conv2, call: str = "plain", pool=None, head: int | None = None):
        super().__init__()
        self.conv1, self.conv2, self.call, self.pool = conv1, conv2, call, pool
        self.head = nn.Linear(head, 2) if head else None

    def forward(self, x, edge_index, edge_weight=None, edge_attr=None, batch=None):
        extra = {"plain": (), "weight": (edge_weight,), "attr": (edge_attr,)}[self.call]
        h = self.conv1(x, edge_index, *extra).relu()
        h = self.conv2(h, edge_index, *extra)
        if self.pool is None:
            return h
        return self.head(self.pool(h, batch).relu())


F_IN, HIDDEN, OUT = 3, 4, 2


def gine_conv(i, o):
    return gnn.GINEConv(mlp(i, o), train_eps=True)


def builders():
    """name → (model, the keyword arguments of its call besides x and edge_index)."""
    return {
        "gcn": (Net(gnn.GCNConv(F_IN, HIDDEN), gnn.GCNConv(HIDDEN, OUT), "weight"), ("edge_weight",)),
        "gcn_plain": (Net(gnn.GCNConv(F_IN, HIDDEN), gnn.GCNConv(HIDDEN, OUT)), ()),
        "graphconv": (Net(gnn.GraphConv(F_IN, HIDDEN), gnn.GraphConv(HIDDEN, OUT), "weight"), ("edge_weight",)),
        "gin": (Net(gnn.GINConv(mlp(F_IN, HIDDEN), train_eps=True), gnn.GINConv(mlp(HIDDEN, OUT), train_eps=True)),
                ()),
        "gine": (Net(gine_conv(F_IN, F_IN), gine_conv(F_IN, OUT), "attr"), ("edge_attr",)),
        "sage_mean": (Net(gnn.SAGEConv(F_IN, HIDDEN), gnn.SAGEConv(HIDDEN, OUT)), ()),
        "sage_sum": (Net(gnn.SAGEConv(F_IN, HIDDEN, aggr="sum"), gnn.SAGEConv(HIDDEN, OUT, aggr="sum")), ()),
        "sage_max": (Net(gnn.SAGEConv(F_IN, HIDDEN, aggr="max"), gnn.SAGEConv(HIDDEN, OUT, aggr="max")), ()),
        "gcn_max_pool": (Net(gnn.GCNConv(F_IN, HIDDEN), gnn.GCNConv(HIDDEN, HIDDEN), "plain", gnn.global_max_pool,
                             HIDDEN), ("batch",)),
        "gcn_add_pool": (Net(gnn.GCNConv(F_IN, HIDDEN), gnn.GCNConv(HIDDEN, HIDDEN), "weight", gnn.global_add_pool,
                             HIDDEN), ("edge_weight", "batch")),
        "gin_mean_pool": (Net(gnn.GINConv(mlp(F_IN, HIDDEN)), gnn.GINConv(mlp(HIDDEN, HIDDEN)), "plain",
                              gnn.global_mean_pool, HIDDEN), ("batch",)),
        "pyg_sequential": (gnn.Sequential("x, edge_index", [
            (gnn.GCNConv(F_IN, HIDDEN), "x, edge_index -> x"), nn.ReLU(inplace=True),
            (gnn.GraphConv(HIDDEN, OUT), "x, edge_index -> x")]), ()),
    }


def more_builders():
    """PyG layers read by the same kinds with no layer-specific code (checked 2026-12-07, a
    stranger's sweep; tests/test_gnn_more_convs.py), name → (model, keyword arguments, whether L9,
    LRP-0 = gradient × input, applies: a piecewise linear model without a zero pre-activation that
    passes gradient)."""
    return {
        "cheb": (Net(gnn.ChebConv(F_IN, HIDDEN, K=2), gnn.ChebConv(HIDDEN, OUT, K=2)), (), True),
        "sg": (Net(gnn.SGConv(F_IN, HIDDEN, K=2), gnn.SGConv(HIDDEN, OUT, K=2)), (), True),
        "tag": (Net(gnn.TAGConv(F_IN, HIDDEN, K=2), gnn.TAGConv(HIDDEN, OUT, K=2)), (), True),
        "arma": (Net(gnn.ARMAConv(F_IN, HIDDEN), gnn.ARMAConv(HIDDEN, OUT)), (), True),
        "le": (Net(gnn.LEConv(F_IN, HIDDEN), gnn.LEConv(HIDDEN, OUT)), (), True),
        "cluster_gcn": (Net(gnn.ClusterGCNConv(F_IN, HIDDEN), gnn.ClusterGCNConv(HIDDEN, OUT)), (), True),
        # the isolated node's max over no messages is 0 with a gradient through it: L9 not applicable
        "edge_conv": (Net(gnn.EdgeConv(mlp(2 * F_IN, HIDDEN)), gnn.EdgeConv(mlp(2 * HIDDEN, OUT))), (), False),
        "appnp": (Net(gnn.APPNP(K=2, alpha=0.1), gnn.APPNP(K=2, alpha=0.1)), (), True),
        "ssg": (Net(gnn.SSGConv(F_IN, HIDDEN, alpha=0.1, K=2), gnn.SSGConv(HIDDEN, OUT, alpha=0.1, K=2)), (), True),
        # gated: h_i' = W1 h_i + Σ_j σ(W3 h_i + W4 h_j) ⊙ W2 h_j, the sigmoid a gate (takes nothing)
        "res_gated": (Net(gnn.ResGatedGraphConv(F_IN, HIDDEN), gnn.ResGatedGraphConv(HIDDEN, OUT)), (), False),
    }


def gat_builders():
    """Graph attention models (tests/test_gat.py), name → (model, keyword arguments): heads
    concatenated and averaged, with and without self-loops, edge weights and edge features as
    GAT's edge_attr (edge_dim), a residual, GATv2, a graph-level output."""
    return {
        "gat": (Net(gnn.GATConv(F_IN, 2, heads=2), gnn.GATConv(HIDDEN, OUT, heads=2, concat=False)), ()),
        "gat_no_loops": (Net(gnn.GATConv(F_IN, HIDDEN, add_self_loops=False),
                             gnn.GATConv(HIDDEN, OUT, add_self_loops=False)), ()),
        "gat_edge_weight": (Net(gnn.GATConv(F_IN, 2, heads=2, edge_dim=1),
                                gnn.GATConv(HIDDEN, OUT, edge_dim=1, residual=True), "weight"), ("edge_weight",)),
        "gat_edge_attr": (Net(gnn.GATConv(F_IN, 2, heads=2, edge_dim=F_IN, fill_value=0.5),
                              gnn.GATConv(HIDDEN, OUT, heads=2, concat=False, edge_dim=F_IN), "attr"), ("edge_attr",)),
        "gatv2": (Net(gnn.GATv2Conv(F_IN, 2, heads=2, edge_dim=F_IN), gnn.GATv2Conv(HIDDEN, OUT, edge_dim=F_IN),
                      "attr"), ("edge_attr",)),
        "gat_add_pool": (Net(gnn.GATConv(F_IN, HIDDEN), gnn.GATConv(HIDDEN, HIDDEN), "plain", gnn.global_add_pool,
                             HIDDEN), ("batch",)),
    }


def case(name: str, seed: int = 0):
    """(the float64 model in eval mode, the graph, its keyword arguments)."""
    more = {k: v[:2] for k, v in more_builders().items()}
    model, keys = {**builders(), **gat_builders(), **more}[name]
    model = seeded(model, seed + 11)
    for m in model.modules():  # GIN's ε: a value other than its initial 0
        if isinstance(getattr(m, "eps", None), torch.Tensor):
            with torch.no_grad():
                m.eps.fill_(0.3)
    g = graph(seed)
    kwargs = {k: getattr(g, k) for k in keys}
    return model, g, kwargs


def held(result) -> None:
    """Assert a law result holds (its own text says why when it does not)."""
    assert result.holds is True, str(result)
