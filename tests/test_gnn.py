"""Graph networks (PyG) read operation by operation: nrm.layers.message and nrm.gnn.

Every model of tests/graphs.py (GCNConv with edge weights, GraphConv, GINConv and GINEConv
with a learned ε, SAGEConv with mean and sum aggregation, global sum and mean pooling with
a batch vector, PyG's Sequential) runs on a generated graph with an isolated node, a
self-loop, a multi-edge and two components, in float64. Checked: the laws L1–L7 with node
events, L18 (explicit LRP reference on the original graph), K5 (the exact rational oracle),
L9 (LRP-0 = gradient × input), L15 (node walks against the nested-masking GNN-LRP reference,
on GCN, and on the branched GIN, GINE, SAGE and GraphConv by nested masking on the traced
graph), the dense Â ⊗ W form of GCNConv, edge and subgraph events, and malformed graphs.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_geometric", reason="the graph tests need torch_geometric (pip install -e '.[graph]')")

import graphs  # noqa: E402  (tests/graphs.py imports torch_geometric)

import nrm  # noqa: E402
from nrm import At  # noqa: E402
from nrm.gnn import GraphError, OnGraph  # noqa: E402
from nrm_verify import laws  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

MODELS = sorted(graphs.builders())
RULES = {
    "zero": nrm.rules.Zero(),
    "epsilon": nrm.rules.Epsilon(0.1),
    "gamma": nrm.rules.Gamma(0.25),
    "flat-preset": nrm.presets.EpsilonGammaFlat(),
}


def wrapped(name, seed=0):
    """(OnGraph model of x (1, N, F), x (1, N, F), target (flat output index), graph)."""
    model, g, kwargs = graphs.case(name, seed)
    m = OnGraph(model, g.edge_index, **kwargs)
    out = m(g.x.unsqueeze(0))
    rows, classes = out.shape[1:]
    node = min(1, rows - 1)
    return m, g.x.unsqueeze(0), node * classes + 1, g


@pytest.mark.parametrize("name", MODELS)
def test_every_operation_of_the_model_is_read_by_a_kind(name):
    model, x, target, _ = wrapped(name)
    cap = nrm.capture(model, x)
    kinds = {c.kind.name for c in cap.calls if c.kind is not None}
    assert all(c.kind is not None for c in cap.calls), [c.describe() for c in cap.calls if c.kind is None]
    assert {"IndexSelect", "Scatter"} <= kinds, kinds


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("name", MODELS)
def test_laws_l1_to_l7_and_l18_with_node_events(name, rule):
    model, x, target, g = wrapped(name)
    m = nrm.explain(model, x, target, rules=RULES[rule], check="full")
    names = m.canonical_names()
    node_layers = [n for n in names if len(m.layer_shape(n)) == 2 and m.layer_shape(n)[0] == x.shape[1]]
    lo, hi = node_layers[0], node_layers[-1]
    a, b = At(lo, nodes=[0, 2]), At(hi, nodes=[1, x.shape[1] - 1])  # the last node is isolated
    graphs.held(laws.normalization(m))  # L1 at every layer
    graphs.held(laws.column_sums(m))
    for result in (laws.additivity(m, a, b), laws.marginalization(m, lo, b), laws.joint_marginals(m, lo, hi),
                   laws.multiplicative(m, a, b), laws.bayes(m, a, b), laws.total_measure(m, b, lo)):
        assert result.holds is not False, str(result)
    graphs.held(laws.modularity(m, model, x, target, RULES[rule]))  # L18: explicit LRP on the original graph


@pytest.mark.parametrize("name", MODELS)
def test_the_exact_rational_oracle(name):
    model, x, target, _ = wrapped(name)
    for rule in ("zero", "gamma"):
        graphs.held(laws.exact_oracle(model, x, target, RULES[rule]))


@pytest.mark.parametrize("name", MODELS)
def test_lrp_zero_is_gradient_times_input(name):
    model, x, target, _ = wrapped(name)
    graphs.held(laws.gradient_x_input(model, x, target))


def test_an_isolated_node_gets_relevance_only_from_its_own_output():
    """The isolated node N−1 has no edge: explaining another node's output gives it nothing
    at the input (GCN: only self-loop and neighbours reach a node)."""
    model, x, _, g = wrapped("gcn")
    m = nrm.explain(model, x, 0 * 2 + 1)
    assert float(m.marginal("input")[0, -1].abs().max()) == 0.0
    own = nrm.explain(model, x, (x.shape[1] - 1) * 2 + 1)
    inp = own.marginal("input")[0]
    assert float(inp[:-1].abs().max()) == 0.0 and float(inp[-1].abs().sum()) > 0


def _dense_gcn(conv, x, edge_index, edge_weight):
    """GCNConv as Z = Â X Wᵀ with Â dense, from PyG's own normalization gcn_norm."""
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    ei, w = gcn_norm(edge_index, edge_weight, x.shape[-2], add_self_loops=True, dtype=x.dtype)
    A = torch.zeros(x.shape[-2], x.shape[-2], dtype=x.dtype)
    A.index_put_((ei[1], ei[0]), w, accumulate=True)
    return A, conv.lin.weight.detach()


@pytest.mark.parametrize("rule", ["zero", "epsilon"])
def test_gcn_layer_equals_its_dense_form(rule):
    """One GCNConv explained by nrm equals LRP on the dense map (i, f) → (j, g) with weight
    Â_ji W_gf written by hand (Schnake et al.'s GNN-LRP layer), R_if = a_if Â_ji W_gf /
    (z_jg + ε s_jg) R_jg. nrm reads the chain lin → gather → ·Â → scatter: LRP-0 on lin
    divides by lin's own output u_ig, which cancels in the product, so ε on the aggregation
    (rule key nrm.markers.Aggregate) and LRP-0 on the rest is ε on the dense map exactly
    (the layer without bias: a bias added after the scatter is a layer of its own)."""
    from torch_geometric.nn import GCNConv

    from nrm.markers import Aggregate

    g = graphs.graph(0)
    conv = graphs.seeded(GCNConv(3, 4, bias=False), 5)
    A, W = _dense_gcn(conv, g.x, g.edge_index, g.edge_weight)
    x = g.x
    z = A @ x @ W.T  # (N, H)
    node, feature = 1, 2
    eps = 0.1 if rule == "epsilon" else 0.0
    zc = z[node, feature]
    contrib = A[node].unsqueeze(1) * x * W[feature].unsqueeze(0)  # a_if Â_ji W_gf, (N, F)
    expected = contrib / (zc + eps * (1.0 if zc >= 0 else -1.0))  # the measure: R / f, f = z_jg

    rules = nrm.RuleMap(nrm.rules.Zero(), by_type={Aggregate: nrm.rules.Epsilon(eps) if eps else nrm.rules.Zero()})
    m = nrm.gnn.explain(conv, x, g.edge_index, g.edge_weight, target=feature, node=node, rules=rules)
    got = m.marginal("input")[0]
    assert torch.allclose(got, expected, atol=1e-12, rtol=0), (got - expected).abs().max()


def _gcn_walk_event(m, walk):
    """At(input, nodes=[i0]) & At(conv1 output, nodes=[i1]) & At(conv2 output, nodes=[i2])."""
    layers = ["input", "add", "add_1"]
    ev = nrm.OMEGA
    for layer, node in zip(layers, walk):
        ev = ev & At(layer, nodes=[node])
    return ev


@pytest.mark.parametrize("rule", ["zero", "epsilon", "gamma", "zplus", "flat-preset"])
def test_node_walks_are_gnn_lrp_walk_relevances(rule):
    """L15 on node walks: the relevance of walk (i0, i1, i2) by higher-order LRP with nested
    masking (every feature of node i_l kept at layer l) equals f · μ(walk), for any rule."""
    rules = dict(RULES, zplus=nrm.rules.ZPlus())[rule]
    model, x, target, g = wrapped("gcn")
    m = nrm.explain(model, x, target, rules=rules)
    node = 1
    walks = [(i0, i1, node) for i0 in range(x.shape[1]) for i1 in range(x.shape[1])]
    checked = 0
    for walk in walks[::5]:
        result = laws.walk_relevance(model, x, target, _gcn_walk_event(m, walk), rules)
        graphs.held(result)
        checked += 1
    assert checked >= 9


# the node states of the branched models (a self branch and a neighbour branch summed): input, conv1, conv2
BRANCHED = {
    "gin": ["input", "model.conv1.nn.2", "model.conv2.nn.2"],
    "gine": ["input", "model.conv1.nn.2", "model.conv2.nn.2"],
    "sage_mean": ["input", "add", "add_1"],
    "sage_sum": ["input", "add", "add_1"],
    "sage_max": ["input", "add", "add_1"],
    "graphconv": ["input", "add", "add_1"],
}


def _walk_event(layers, walk):
    ev = nrm.OMEGA
    for layer, node in zip(layers, walk):
        ev = ev & At(layer, nodes=[node])
    return ev


@pytest.mark.parametrize("rule", ["zero", "gamma", "flat-preset"])
@pytest.mark.parametrize("name", sorted(BRANCHED))
def test_node_walks_on_branched_layers_are_nested_masking_walk_relevances(name, rule):
    """L15 on GIN/GINE, SAGE (mean, sum, max) and GraphConv: the reference's nested masking runs
    on the traced graph (nrm_verify.references.nested_masking.nested_masking), so the self branch and
    the neighbour branch of each layer are two ways down to the same node. Checked: the two
    walks of largest |R| ending at node 1, the self-walk (1, 1, 1), and a walk that carries
    nothing (from the isolated node)."""
    from nrm_verify.references import gnnlrp

    rules = RULES[rule]
    model, x, target, _ = wrapped(name)
    m = nrm.explain(model, x, target, rules=rules)
    layers, end, n = BRANCHED[name], 1, x.shape[1]
    R = nrm.gnn.walk_relevance(m, layers, end)
    top = [tuple(int(v) for v in torch.unravel_index(torch.tensor(i), R.shape))
           for i in torch.argsort(R.reshape(-1).abs(), descending=True)[:2].tolist()]
    assert float(R.abs().max()) > 1e-3 * float(m.f.abs())
    assert float(R[n - 1].abs().max()) == 0.0  # the isolated node starts no walk to another node
    for i0, i1 in top + [(1, 1), (n - 1, 0)]:
        event = _walk_event(layers, (i0, i1, end))
        graphs.held(laws.walk_relevance(model, x, target, event, rules))
        expected = gnnlrp.walk_relevance(model, x, target, event, rules)
        assert abs(float(R[i0, i1]) - float(expected)) <= 1e-10 * max(1.0, float(m.f.abs())), (i0, i1)


def test_branched_nested_masking_is_linear_and_drops_what_bypasses_a_named_layer():
    """The branched reference on its own: the walks (i0, i1, 1) over all i0 sum to the relevance
    of the cylinder with every input node (by linearity of nested masking; without the input
    named, the cylinder also holds what conv1's biases absorb), and a
    cylinder naming a layer of one branch only (GIN's self term (1 + ε) x, ``mul``) keeps the
    walks through that branch: less than both branches together."""
    from nrm_verify.references import gnnlrp

    model, x, target, _ = wrapped("gin")
    layers, n = BRANCHED["gin"], x.shape[1]
    for i1 in (0, 1):
        walks = sum(float(gnnlrp.walk_relevance(model, x, target, _walk_event(layers, (i0, i1, 1)), None))
                    for i0 in range(n))
        both = At("input") & At(layers[1], nodes=[i1]) & At(layers[2], nodes=[1])
        assert abs(walks - float(gnnlrp.walk_relevance(model, x, target, both, None))) <= 1e-12
    m = nrm.explain(model, x, target)
    own = At("mul", nodes=[1]) & At("add", nodes=[1]) & At(layers[2], nodes=[1])
    self_only = float(gnnlrp.walk_relevance(model, x, target, own, None))
    assert abs(self_only - float(m.f * m(own))) <= 1e-12 * max(1.0, float(m.f.abs()))
    all_in = float(gnnlrp.walk_relevance(model, x, target, At("add", nodes=[1]) & At(layers[2], nodes=[1]), None))
    assert abs(self_only - all_in) > 1e-6  # the neighbour branch into node 1 carries relevance too


def test_branched_nested_masking_refuses_events_with_bottom_complements_or_parallel_walks():
    model, x, target, _ = wrapped("sage_sum")
    event = At("input", nodes=[0]) & At("add_1", nodes=[1], absorber=True)
    result = laws.walk_relevance(model, x, target, event)
    assert result.holds is None and "⊥" in result.detail
    for event, why in ((At("input", nodes=[0]) & ~At("add", nodes=[1]), "a complement"),
                       (At("input", nodes=[0]) & At("add", nodes=[1], parallel=True), "parallel=True")):
        result = laws.walk_relevance(model, x, target, event)  # both admit walks that bypass the layer's node
        assert result.holds is None and why in result.detail, str(result)


def test_node_walks_partition_the_relevance():
    """The walks (i0, i1, node) over all i0, i1 plus ⊥ partition the output's relevance: their
    measures add up to m(node at the last layer) = 1 minus what the bias terms absorb."""
    model, x, target, _ = wrapped("gcn")
    m = nrm.explain(model, x, target)
    n = x.shape[1]
    events = [_gcn_walk_event(m, (i0, i1, 1)) for i0 in range(n) for i1 in range(n)]
    total = m.measure(events).sum(0)
    expected = m(At("input") & At("add") & At("add_1", nodes=[1]))
    assert torch.allclose(total, expected, atol=1e-12)


def test_nodes_selects_every_feature_of_a_node():
    model, x, target, _ = wrapped("gcn")
    m = nrm.explain(model, x, target)
    F = x.shape[2]
    by_nodes = m(At("input", nodes=[2, 3]))
    by_index = m(At("input", index=[2 * F + f for f in range(F)] + [3 * F + f for f in range(F)]))
    assert torch.allclose(by_nodes, by_index, atol=1e-15)
    with pytest.raises(nrm.EventIndexError, match="out of range"):
        m(At("input", nodes=[x.shape[1]]))


# -- malformed graphs --------------------------------------------------------------------------
def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


@pytest.mark.parametrize("how, match", [
    ("int32", "int64"), ("float", "int64"), ("transposed", r"shape \(2, E\)"), ("one row", r"shape \(2, E\)"),
    ("out of range", "outside 0"), ("negative", "outside 0"), ("nan features", "NaN"),
    ("weight length", "one weight per edge"), ("nan weight", "NaN"),
    ("negative weights", "negative entries.*deg"),
])
def test_a_malformed_graph_is_a_named_error_and_the_model_is_untouched(how, match):
    model, g, kwargs = graphs.case("gcn")
    x, ei, w = g.x.clone(), g.edge_index.clone(), g.edge_weight.clone()
    if how == "int32":
        ei = ei.int()
    elif how == "float":
        ei = ei.double()
    elif how == "transposed":
        ei = ei.t().contiguous()
    elif how == "one row":
        ei = ei[:1]
    elif how == "out of range":
        ei[1, 0] = x.shape[0]
    elif how == "negative":
        ei[0, 1] = -1
    elif how == "nan features":
        x[2, 1] = float("nan")
    elif how == "weight length":
        w = w[:-1]
    elif how == "nan weight":
        w[0] = float("nan")
    elif how == "negative weights":  # every weight < 0: GCN's degrees are negative, deg^(-1/2) NaN
        w = -w
    before, modes = _state(model)
    with pytest.raises(GraphError, match=match):
        nrm.gnn.explain(model, x, ei, target=0, node=1, edge_weight=w)
    with pytest.raises(GraphError, match=match):  # the weights given by position, as GCNConv takes them
        nrm.gnn.explain(model, x, ei, w, target=0, node=1)
    after, modes_after = _state(model)
    assert modes == modes_after and all(torch.equal(before[k], after[k]) for k in before)


def test_a_min_aggregation_is_refused_with_what_to_do():
    from torch_geometric.nn import SAGEConv

    model = graphs.seeded(SAGEConv(3, 2, aggr="min"), 1)
    g = graphs.graph(0)
    with pytest.raises(nrm.UnsupportedOperationError, match="reduces with 'amin'.*aggr='sum', 'mean' or 'max'"):
        nrm.gnn.explain(model, g.x, g.edge_index, target=0, node=1)


def test_global_max_pooling_gives_each_feature_to_its_winning_node():
    """Winner takes all, as max pooling: under LRP-0 the pooled feature f of graph g sends all
    its relevance to the first node of g (row-major) with the largest h_{i,f}."""
    model, x, target, g = wrapped("gcn_max_pool")
    m = nrm.explain(model, x, target)
    h = m.activations("add_1")[0]  # (N, H): the node states the pooling reads
    names = m.canonical_names()
    pool = [n for n in names if n not in ("input",) and m.layer_shape(n) == (2, h.shape[1])][0]
    pooled = m.marginal(pool)[0]  # (G, H)
    nodes = m.marginal("add_1")[0]
    members = g.batch == 1
    expected = torch.zeros_like(nodes)
    for f in range(h.shape[1]):
        i = int(torch.nonzero(members)[0]) + int(torch.argmax(h[members, f]))
        expected[i, f] = pooled[1, f]
    assert torch.allclose(nodes, expected, atol=1e-14), (nodes, expected)


def test_explain_asks_for_the_node_of_a_node_level_output():
    model, g, kwargs = graphs.case("gcn")
    with pytest.raises(GraphError, match="say which with node="):
        nrm.gnn.explain(model, g.x, g.edge_index, target=0, **kwargs)
    with pytest.raises(GraphError, match="outside the model's output"):
        nrm.gnn.explain(model, g.x, g.edge_index, target=5, node=0, **kwargs)


# -- all walks ending at a node --------------------------------------------------------------
def test_the_walk_relevance_tensor_is_the_nested_masking_relevance_of_each_walk():
    """nrm.gnn.walk_relevance (all walks ending at a node, stacked passes) equals GNN-LRP's
    nested masking walk by walk, sums with ⊥ to f, and top_walks sorts it by |R|."""
    from nrm_verify.references import gnnlrp

    rules = nrm.rules.Gamma(0.25)
    model, x, target, _ = wrapped("gcn")
    m = nrm.explain(model, x, target, rules=rules)
    layers, end = ["input", "add", "add_1"], 1
    R = nrm.gnn.walk_relevance(m, layers, end)
    n = x.shape[1]
    assert R.shape == (n, n)
    for i0, i1 in [(0, 1), (1, 0), (2, 0), (0, 0), (n - 1, 1)]:
        ev = _gcn_walk_event(m, (i0, i1, end))
        expected = gnnlrp.walk_relevance(model, x, target, ev, rules)
        assert abs(float(R[i0, i1]) - float(expected)) <= 1e-10 * max(1.0, float(m.f.abs())), (i0, i1)
    reaching = m.f * m(At("input") & At("add") & At("add_1", nodes=[end]))
    assert torch.allclose(R.sum(), reaching[0], atol=1e-12)
    assert float(R[n - 1].abs().max()) == 0.0  # the isolated node starts no walk to another node
    top = nrm.gnn.top_walks(m, layers, end, k=4)
    assert [w[-1] for w, _ in top] == [end] * 4
    assert [abs(r) for _, r in top] == sorted((abs(float(v)) for v in R.reshape(-1)), reverse=True)[:4]
    assert all(float(R[w[0], w[1]]) == r for w, r in top)


@pytest.mark.parametrize("rules", [None, nrm.rules.Gamma(0.25)], ids=["lrp0", "gamma"])
def test_graph_walks_lists_the_walks_along_the_edges_with_the_relevances_of_the_full_tensor(rules):
    """nrm.gnn.graph_walks grows the walks along the edges (one masked pass per upper part)
    and gives each the entry of walk_relevance's N^L tensor; every entry it leaves out is 0."""
    model, x, target, g = wrapped("gcn")
    m = nrm.explain(model, x, target, rules=rules)
    layers, end = ["input", "add", "add_1"], 1
    R = nrm.gnn.walk_relevance(m, layers, end)
    walks, rel = nrm.gnn.graph_walks(m, layers, g.edge_index, end)
    assert walks.shape == (rel.shape[0], 3) and bool((walks[:, -1] == end).all())
    listed = torch.zeros_like(R)
    for (i0, i1, _), r in zip(walks.tolist(), rel):
        listed[i0, i1] = r
    torch.testing.assert_close(listed, R, rtol=1e-12, atol=1e-14)
    assert len({tuple(w) for w in walks.tolist()}) == len(walks) < R.numel()
    by_edges = nrm.gnn.top_walks(m, layers, end, k=5, edge_index=g.edge_index)
    by_grid = nrm.gnn.top_walks(m, layers, end, k=5)
    assert [w for w, _ in by_edges] == [w for w, _ in by_grid]
    assert all(abs(a - b) <= 1e-12 for (_, a), (_, b) in zip(by_edges, by_grid))


def test_graph_walks_to_a_graph_output():
    model, x, target, g = wrapped("gcn_add_pool")
    m = nrm.explain(model, x, target)
    layers = ["input", "add", "add_1", "model.head"]
    R = nrm.gnn.walk_relevance(m, layers, end=1)
    walks, rel = nrm.gnn.graph_walks(m, layers, g.edge_index, end=1)
    listed = torch.zeros_like(R)
    for w, r in zip(walks.tolist(), rel):
        listed[tuple(w[:-1])] = r
    torch.testing.assert_close(listed, R, rtol=1e-12, atol=1e-14)


def test_graph_walks_refuse_edges_that_are_not_the_model_s():
    """An edge_index missing an edge the model passes messages along would drop walks that
    carry relevance: refused, not a silently smaller list; bad arguments are named."""
    model, x, target, g = wrapped("gcn")
    m = nrm.explain(model, x, target)
    layers = ["input", "add", "add_1"]
    end = int(g.edge_index[1, 0])
    fewer = g.edge_index[:, (g.edge_index[1] != end)]  # no edge into the end node
    with pytest.raises(GraphError, match="walks off the edges"):
        nrm.gnn.graph_walks(m, layers, fewer, end)
    with pytest.raises(GraphError, match="int64"):
        nrm.gnn.graph_walks(m, layers, g.edge_index.double(), end)
    with pytest.raises(GraphError, match="outside"):
        nrm.gnn.graph_walks(m, layers, g.edge_index + 100, end)
    with pytest.raises(GraphError, match="outside"):
        nrm.gnn.graph_walks(m, layers, g.edge_index, 10_000)
    with pytest.raises(GraphError, match="at least two layers"):
        nrm.gnn.graph_walks(m, ["add_1"], g.edge_index, end)


def test_walks_to_a_graph_output_and_a_layer_that_is_not_node_level():
    model, x, target, _ = wrapped("gcn_add_pool")
    m = nrm.explain(model, x, target)
    with pytest.raises(GraphError, match="not \\(nodes, features\\)"):
        nrm.gnn.walk_relevance(m, ["input", "model.head", "add_1"])
    R = nrm.gnn.walk_relevance(m, ["input", "add", "add_1", "model.head"], end=1)  # walks to the output unit
    assert R.shape == (x.shape[1],) * 3
    assert torch.allclose(R.sum(), (m.f * m(At("input") & At("add") & At("add_1")))[0], atol=1e-12)


@pytest.mark.parametrize("pool", ["global_add_pool", "global_mean_pool", "global_max_pool"])
def test_one_graph_pooled_without_a_batch_vector(pool):
    """Without a batch vector PyG pools with x.sum(-2) / x.mean(-2) (read by Reduce) and
    x.max(-2, keepdim=True)[0] (its values read as a max pooling over the nodes, the indices a
    constant: MaxOverDimsDecomposition); L1 and L9 hold."""
    from torch_geometric import nn as gnn

    model = graphs.seeded(graphs.Net(gnn.GCNConv(3, 4), gnn.GCNConv(4, 4), "plain", getattr(gnn, pool), 4), 3)
    g = graphs.graph(0)
    m = nrm.gnn.explain(model, g.x, g.edge_index, target=1)
    kinds = {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    assert ("MaxPool" in kinds) == (pool == "global_max_pool"), kinds
    graphs.held(laws.normalization(m))
    graphs.held(laws.gradient_x_input(OnGraph(model, g.edge_index), g.x.unsqueeze(0), 1))


# -- GCNConv read whole, as GNN-LRP's layer Â ⊗ W (opt-in) -------------------------------------
@pytest.fixture
def gcn_layer():
    """nrm.layers.message.GCNLayer registered for the test, and unregistered after it."""
    kind = nrm.layers.message.GCNLayer()
    nrm.layers.register(kind)
    yield kind
    nrm.layers.unregister(kind)


@pytest.mark.parametrize("rule", ["zero", "epsilon", "gamma", "zplus"])
@pytest.mark.parametrize("name", ["gcn", "gcn_add_pool", "pyg_sequential"])
def test_gcn_read_whole_keeps_every_law(gcn_layer, name, rule):
    rules = dict(RULES, zplus=nrm.rules.ZPlus())[rule]
    model, x, target, _ = wrapped(name)
    m = nrm.explain(model, x, target, rules=rules, check="full")
    whole = [n for n in m.canonical_names() if n.endswith(("conv1", "conv2", "module_0"))]
    assert whole and all(m.network.blocks[m.layer_index(n)].producer.layer_kind is gcn_layer for n in whole)
    graphs.held(laws.normalization(m))
    graphs.held(laws.modularity(m, model, x, target, rules))  # the explicit reference applies the rule to Â ⊗ W itself
    graphs.held(laws.exact_oracle(model, x, target, rules))
    first, second = whole[0], whole[1] if len(whole) > 1 else whole[0]  # GraphConv's branches: on the traced graph
    walk = At("input", nodes=[0]) & At(first, nodes=[1]) & At(second, nodes=[min(1, m.layer_shape(second)[0] - 1)])
    graphs.held(laws.walk_relevance(model, x, target, walk, rules))
    if rule == "zero":
        graphs.held(laws.gradient_x_input(model, x, target))


def _schnake_gamma(A, W, x, node, feature, gamma):
    """GNN-LRP's γ-rule on the dense map (i, f) → (j, g), weight Â_ji W_gf (no bias): the share of
    input (i, f) in z_{node, feature}."""
    V = W + gamma * W.clamp(min=0)
    contrib = A[node].unsqueeze(1) * x * V[feature].unsqueeze(0)
    return contrib / contrib.sum()


def test_gcn_read_whole_is_schnakes_gamma_rule_and_the_chain_is_not(gcn_layer):
    """With GCNLayer, γ on GCNConv is the γ-rule on Â ⊗ W (Schnake et al.); read operation by
    operation (γ on lin, LRP-0 on the aggregation) it is another kernel — why GCNLayer exists."""
    from torch_geometric.nn import GCNConv

    g = graphs.graph(0)
    conv = graphs.seeded(GCNConv(3, 4, bias=False), 5)
    A, W = _dense_gcn(conv, g.x, g.edge_index, g.edge_weight)
    node, feature, gamma = 1, 2, 0.25
    expected = _schnake_gamma(A, W, g.x, node, feature, gamma)
    m = nrm.gnn.explain(conv, g.x, g.edge_index, g.edge_weight, target=feature, node=node,
                        rules=nrm.rules.Gamma(gamma))
    assert torch.allclose(m.marginal("input")[0], expected, atol=1e-12, rtol=0)
    nrm.layers.unregister(gcn_layer)
    chain = nrm.gnn.explain(conv, g.x, g.edge_index, g.edge_weight, target=feature, node=node,
                            rules=nrm.RuleMap(nrm.rules.Zero(), by_type={torch.nn.Linear: nrm.rules.Gamma(gamma)}))
    assert float((chain.marginal("input")[0] - expected).abs().max()) > 1e-3


def test_gcn_read_whole_refuses_rules_it_cannot_split_and_negative_weights_under_gamma(gcn_layer):
    model, g, kwargs = graphs.case("gcn")
    with pytest.raises(nrm.RuleAssignmentError, match="Flat on GCNConv.*unregister"):
        nrm.gnn.explain(model, g.x, g.edge_index, target=0, node=1, rules=nrm.rules.Flat(), **kwargs)
    w = g.edge_weight.clone()
    w[0] = -0.2  # a degree stays positive, one coefficient of Â is negative
    with pytest.raises(GraphError, match="negative normalized edge weights"):
        nrm.gnn.explain(model, g.x, g.edge_index, w, target=0, node=1, rules=nrm.rules.Gamma(0.25))
    m = nrm.gnn.explain(model, g.x, g.edge_index, w, target=0, node=1, rules=nrm.rules.Epsilon(0.1))
    graphs.held(laws.normalization(m))


def test_check_layer_passes_gcn_read_whole():
    """check-layer on the opt-in GCNLayer (flat and w² not drawn: Kind.refused_rules)."""
    from nrm_verify.validate import check_layer

    report = check_layer(nrm.layers.message.GCNLayer(), max_examples=2, only=["K2", "K3", "K5", "L1", "L18"])
    assert report.ok, str(report)


# -- edge and subgraph events -----------------------------------------------------------------
def _sums(R: torch.Tensor, keep) -> float:
    """Σ of the walk tensor's entries whose walk (a row of node ids) satisfies ``keep``."""
    idx = torch.cartesian_prod(*[torch.arange(n) for n in R.shape]).reshape(-1, R.dim())
    return float(R.reshape(-1)[keep(idx)].sum())


@pytest.mark.parametrize("name", ["gcn", "gin"])
def test_edge_and_subgraph_relevances_are_sums_of_the_walk_tensor(name):
    """nrm.gnn.edge_relevance (walks taking u → v at a step, or at any step) and
    subgraph_relevance (walks inside a node set, or touching it) equal the sums of
    walk_relevance's entries over those walks, on the full N^3 tensor and with an end node."""
    model, x, target, g = wrapped(name)
    m = nrm.explain(model, x, target, rules=nrm.rules.Gamma(0.25))
    layers = BRANCHED.get(name, ["input", "add", "add_1"])
    R = nrm.gnn.walk_relevance(m, layers)  # (N, N, N): every walk
    tol = 1e-10 * max(1.0, float(m.f.abs()))
    ei = g.edge_index
    edges = list(dict.fromkeys(map(tuple, ei.t().tolist())))[:4] + [(1, 1)]
    for step in (0, 1):
        got = nrm.gnn.edge_relevance(m, layers, ei, edges, step=step)
        want = [_sums(R, lambda w, u=u, v=v, s=step: (w[:, s] == u) & (w[:, s + 1] == v)) for u, v in edges]
        assert torch.allclose(got, torch.tensor(want, dtype=got.dtype), atol=tol, rtol=0), (step, got, want)
    got = nrm.gnn.edge_relevance(m, layers, ei, edges)  # at any step: a union, not a sum over the steps
    for (u, v), r in zip(edges, got.tolist()):
        want = _sums(R, lambda w, u=u, v=v: ((w[:, 0] == u) & (w[:, 1] == v)) | ((w[:, 1] == u) & (w[:, 2] == v)))
        assert abs(r - want) <= tol, ((u, v), r, want)
    assert float(got.abs().max()) > 1e-3 * float(m.f.abs())
    end = 1
    R1 = nrm.gnn.walk_relevance(m, layers, end)  # (N, N): the walks ending at node 1
    got = nrm.gnn.edge_relevance(m, layers, ei, [(0, 1), (1, 1)], step=1, end=end)
    assert torch.allclose(got, torch.stack([R1[:, 0].sum(), R1[:, 1].sum()]), atol=tol, rtol=0)
    S = [0, 1, 2]
    inside = torch.tensor(S)
    cases = [("inside", lambda w: torch.isin(w, inside).all(1)), ("touch", lambda w: torch.isin(w, inside).any(1))]
    for how, keep in cases:
        got = float(nrm.gnn.subgraph_relevance(m, layers, S, how=how))
        assert abs(got - _sums(R, keep)) <= tol, (how, got)
        with_end = float(nrm.gnn.subgraph_relevance(m, layers, S, how=how, end=end))  # the end (1) is in S
        assert abs(with_end - _sums(R1, lambda w, k=keep: k(torch.cat([w, torch.full_like(w[:, :1], end)], 1)))) <= tol
    assert float(nrm.gnn.subgraph_relevance(m, layers, [0, 2], end=end)) == 0.0  # the end is outside the set
    assert abs(float(nrm.gnn.subgraph_relevance(m, layers, range(x.shape[1]), how="touch")) - float(R.sum())) <= tol


def test_subgraph_relevance_to_a_graph_output_leaves_the_pooled_layer_free():
    model, x, target, _ = wrapped("gcn_add_pool")
    m = nrm.explain(model, x, target)
    layers = ["input", "add", "add_1", "model.head"]
    R = nrm.gnn.walk_relevance(m, layers, end=1)  # (N, N, N): walks to the output unit of graph 1
    S = torch.tensor([0, 1, 2, 3])
    got = float(nrm.gnn.subgraph_relevance(m, layers, S.tolist(), end=1))
    assert abs(got - _sums(R, lambda w: torch.isin(w, S).all(1))) <= 1e-10 * max(1.0, float(m.f.abs()))
    assert abs(got) > 0  # a graph output's walks reach it from the nodes of graph 1


def test_edge_and_subgraph_events_refuse_bad_values():
    model, x, target, g = wrapped("gcn")
    m = nrm.explain(model, x, target)
    layers, ei, n = ["input", "add", "add_1"], g.edge_index, x.shape[1]
    known = set(map(tuple, ei.t().tolist()))
    absent = next((u, v) for u in range(n) for v in range(n) if u != v and (u, v) not in known)
    with pytest.raises(GraphError, match="is not an edge of edge_index"):
        nrm.gnn.edge_relevance(m, layers, ei, [absent], step=0)
    with pytest.raises(GraphError, match=f"outside 0 … {n - 1}"):
        nrm.gnn.edge_relevance(m, layers, ei, [(0, n)], step=0)
    with pytest.raises(GraphError, match="empty set of edges"):
        nrm.gnn.edge_relevance(m, layers, ei, [])
    with pytest.raises(GraphError, match="step=2 is not a step"):
        nrm.gnn.edge_relevance(m, layers, ei, [(1, 1)], step=2)
    with pytest.raises(GraphError, match="int64 tensor of shape"):
        nrm.gnn.edge_relevance(m, layers, ei.int(), [(1, 1)])
    with pytest.raises(GraphError, match="empty set of nodes"):
        nrm.gnn.subgraph_relevance(m, layers, [])
    with pytest.raises(GraphError, match=f"outside 0 … {n - 1}"):
        nrm.gnn.subgraph_relevance(m, layers, [0, -1])
    with pytest.raises(GraphError, match="how='near'"):
        nrm.gnn.subgraph_relevance(m, layers, [1], how="near")
    with pytest.raises(GraphError, match="end=99"):
        nrm.gnn.subgraph_relevance(m, layers, [1], end=99)


class _OnOneGraph(torch.nn.Module):
    """A layer that reads only an unbatched (N, F) graph (PyG's ``node_dim=0``), then a head."""

    def __init__(self, conv):
        super().__init__()
        self.conv, self.head = conv, torch.nn.Linear(4, 2)

    def forward(self, x, edge_index):
        return self.head(torch.relu(self.conv(x, edge_index)))


@pytest.mark.parametrize("layer", ["GeneralConv", "GatedGraphConv"])
def test_a_layer_that_refuses_the_batched_graph_is_a_named_error(layer):
    """The model raising on x of shape (1, N, F) is a GraphError that names the call and says why
    (found as a stranger: the raw IndexError / RuntimeError of PyG escaped nrm.gnn.explain, which
    ran the model a second time to diagnose the capture's error); the model untouched."""
    import torch_geometric.nn as pyg

    torch.manual_seed(0)
    conv = pyg.GeneralConv(3, 4) if layer == "GeneralConv" else pyg.GatedGraphConv(4, 2)
    model = _OnOneGraph(conv).double().eval()
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ei = torch.tensor([[0, 1, 1, 2, 3, 4, 5, 6, 7, 2], [1, 0, 2, 1, 4, 3, 6, 5, 0, 2]])
    with torch.no_grad():
        model(x, ei)  # the model itself reads the unbatched graph
    before, modes = _state(model)
    with pytest.raises(GraphError, match=r"model\(x\) raised .*\(1, N, F\)"):
        nrm.gnn.explain(model, x, ei, target=0, node=1)
    after, modes_after = _state(model)
    assert modes == modes_after and all(torch.equal(before[k], after[k]) for k in before)
