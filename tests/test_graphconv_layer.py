"""``GraphConv`` read whole as GNN-LRP's layer (opt-in ``nrm.layers.message.GraphConvLayer``): the
dense map (i, f) → (j, g) with weight A_ji W_rel,gf + δ_ij W_root,gf, so that γ on GraphConv is
Schnake et al.'s γ-rule on that map (as :class:`GCNLayer` for GCNConv). Checked: every law the
GCN reading keeps (L1, L18 against the explicit reference, K5 the exact oracle, L15 node walks,
L9), γ equal to the γ-rule on the dense map written by hand (add and mean aggregation) and
different from the operation-by-operation reading, check-layer, and the refusals named."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_geometric", reason="the graph tests need torch_geometric (pip install -e '.[graph]')")

import graphs  # noqa: E402  (tests/graphs.py imports torch_geometric)

import nrm  # noqa: E402
from nrm import At  # noqa: E402
from nrm.gnn import GraphError  # noqa: E402
from nrm_verify import laws  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
RULES = {"zero": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "gamma": nrm.rules.Gamma(0.25),
         "zplus": nrm.rules.ZPlus()}


@pytest.fixture
def graphconv_layer():
    """nrm.layers.message.GraphConvLayer registered for the test, and unregistered after it."""
    kind = nrm.layers.message.GraphConvLayer()
    nrm.layers.register(kind)
    yield kind
    nrm.layers.unregister(kind)


def _without_self_loops(g):
    keep = g.edge_index[0] != g.edge_index[1]
    return g.edge_index[:, keep], g.edge_weight[keep]


def _model_and_input():
    """tests/graphs.py's two-GraphConv network on its graph without the self-loop, as a model of
    the features alone (nrm.gnn.OnGraph), with the target its arg-max at node 1."""
    model, g, _ = graphs.case("graphconv")
    edge_index, edge_weight = _without_self_loops(g)
    wrapped = nrm.gnn.OnGraph(model, edge_index, edge_weight=edge_weight).eval()
    x = g.x.unsqueeze(0)
    with torch.no_grad():
        target = int(wrapped(x)[0].reshape(-1).argmax())
    return wrapped, x, target


@pytest.mark.parametrize("rule", list(RULES))
def test_graphconv_read_whole_keeps_every_law(graphconv_layer, rule):
    model, x, target = _model_and_input()
    rules = RULES[rule]
    m = nrm.explain(model, x, target, rules=rules, check="full")
    whole = [n for n in m.canonical_names() if n.endswith(("conv1", "conv2"))]
    assert len(whole) == 2 and all(m.network.blocks[m.layer_index(n)].producer.layer_kind is graphconv_layer
                                   for n in whole), m.canonical_names()
    graphs.held(laws.normalization(m))
    graphs.held(laws.modularity(m, model, x, target, rules))  # the explicit reference applies the rule to the dense map
    graphs.held(laws.exact_oracle(model, x, target, rules))
    walk = At("input", nodes=[0]) & At(whole[0], nodes=[1]) & At(whole[1], nodes=[1])
    graphs.held(laws.walk_relevance(model, x, target, walk, rules))
    if rule == "zero":
        graphs.held(laws.gradient_x_input(model, x, target))


def _dense(conv, n, edge_index, edge_weight, mean):
    """A (n, n) with A_ji = Σ_{e: i → j} c_e (c_e = w_e, over the messages into j for mean)."""
    src, dst = edge_index
    c = edge_weight.clone()
    if mean:
        count = torch.zeros(n, dtype=c.dtype).index_add_(0, dst, torch.ones_like(c))
        c = c / count[dst]
    A = torch.zeros(n, n, dtype=c.dtype)
    A.index_put_((dst, src), c, accumulate=True)
    return A


def _schnake_gamma(A, rel, root, x, node, feature, gamma):
    """The γ-rule on the dense map, weight (i, f) → (j, g) = A_ji W_rel,gf + δ_ij W_root,gf (no
    bias): the share of input (i, f) in z_{node, feature}."""
    n = A.shape[0]
    dense = A[node].reshape(n, 1) * rel[feature].reshape(1, -1)
    dense[node] += root[feature]
    V = dense + gamma * dense.clamp(min=0)
    contrib = x * V
    return contrib / contrib.sum()


@pytest.mark.parametrize("aggr", ["add", "mean"])
def test_gamma_on_graphconv_read_whole_is_schnakes_gamma_rule_and_the_chain_is_not(graphconv_layer, aggr):
    from torch_geometric.nn import GraphConv

    g = graphs.graph(0)
    edge_index, edge_weight = _without_self_loops(g)
    conv = graphs.seeded(GraphConv(3, 4, aggr=aggr, bias=False), 5)
    A = _dense(conv, g.x.shape[0], edge_index, edge_weight, aggr == "mean")
    node, feature, gamma = 1, 2, 0.25
    expected = _schnake_gamma(A, conv.lin_rel.weight.detach(), conv.lin_root.weight.detach(), g.x, node, feature,
                              gamma)
    m = nrm.gnn.explain(conv, g.x, edge_index, edge_weight, target=feature, node=node, rules=nrm.rules.Gamma(gamma))
    assert torch.allclose(m.marginal("input")[0], expected, atol=1e-12, rtol=0)
    nrm.layers.unregister(graphconv_layer)
    chain = nrm.gnn.explain(conv, g.x, edge_index, edge_weight, target=feature, node=node,
                            rules=nrm.RuleMap(nrm.rules.Zero(), by_type={torch.nn.Linear: nrm.rules.Gamma(gamma)}))
    assert float((chain.marginal("input")[0] - expected).abs().max()) > 1e-3


def test_what_it_cannot_read_as_the_dense_rule_is_refused_by_name(graphconv_layer):
    from torch_geometric.nn import GraphConv

    g = graphs.graph(0)  # with a self-loop at node 0
    conv = graphs.seeded(GraphConv(3, 4), 5)
    with pytest.raises(nrm.RuleAssignmentError, match="Flat on GraphConv.*unregister"):
        nrm.gnn.explain(conv, g.x, g.edge_index, g.edge_weight, target=0, node=1, rules=nrm.rules.Flat())
    with pytest.raises(GraphError, match="self-loops.*LRP-0 / ε"):
        nrm.gnn.explain(conv, g.x, g.edge_index, g.edge_weight, target=0, node=1, rules=nrm.rules.Gamma(0.25))
    edge_index, edge_weight = _without_self_loops(g)
    negative = edge_weight.clone()
    negative[0] = -0.2
    with pytest.raises(GraphError, match="negative edge weights"):
        nrm.gnn.explain(conv, g.x, edge_index, negative, target=0, node=1, rules=nrm.rules.Gamma(0.25))
    for w, ei in ((negative, edge_index), (g.edge_weight, g.edge_index)):  # LRP-0 and ε read them
        m = nrm.gnn.explain(conv, g.x, ei, w, target=0, node=1, rules=nrm.rules.Epsilon(0.1))
        graphs.held(laws.normalization(m))
    maxed = graphs.seeded(GraphConv(3, 4, aggr="max"), 5)  # not linear: read operation by operation, not whole
    m = nrm.gnn.explain(maxed, g.x, edge_index, edge_weight, target=0, node=1)
    assert not any(b.producer is not None and b.producer.layer_kind is graphconv_layer for b in m.network.blocks)


def test_check_layer_passes_graphconv_read_whole():
    """check-layer on the opt-in GraphConvLayer, add and mean (flat and w² not drawn)."""
    from nrm_verify.validate import check_layer

    report = check_layer(nrm.layers.message.GraphConvLayer(), max_examples=2, only=["K2", "K3", "K5", "L1", "L18"])
    assert report.ok, str(report)
