"""benchmarks/gnn_groundtruth.py on a tiny BA-Shapes and BA-2motifs: what it computes with nrm
(node marginals, every walk of non-zero relevance, masks from the top walks) holds the laws it
relies on, agrees with nrm.gnn.walk_relevance's full enumeration, is deterministic, and its
scores are finite and in range. The table itself is a benchmark (README "Graph networks")."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("torch_geometric", reason="the ground-truth benchmark needs torch_geometric "
                                              "(pip install -e '.[graph]')")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gnn_groundtruth as G  # noqa: E402

import nrm  # noqa: E402
from nrm import At  # noqa: E402
from nrm_verify import laws  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    data = G.ba_shapes(0, base=12, motifs=2)
    models = {kind: G.train_node(kind, data, 0, epochs=15)[0].double().eval() for kind in ("gcn", "gin")}
    return data, models


def _explain(model, data, node, rule):
    x = data.x.double()
    with torch.no_grad():
        target = int(model(x, data.edge_index)[node].argmax())
    return nrm.gnn.explain(model, x, data.edge_index, target=target, node=node, rules=rule)


@pytest.mark.parametrize("rule", sorted(G.RULES))
@pytest.mark.parametrize("kind", ["gcn", "gin"])
def test_node_marginals_and_the_absorber_sum_to_one(tiny, kind, rule):
    """L1 at the input: Σ_nodes Σ_features m(i, f) + m(⊥) (+ the walks bypassing it) = 1, and the
    explainer's node mask is |m| itself."""
    data, models = tiny
    node = int(data.node_mask.nonzero()[0])
    m = _explain(models[kind], data, node, G.RULES[rule])
    marg = m.marginal("input")[0]
    total = marg.sum() + m.absorbed("input")[0] + m.bypassing("input")[0]
    assert abs(float(total) - 1.0) <= 1e-10
    assert laws.normalization(m).holds is True
    model32 = copy.deepcopy(models[kind]).float()
    with torch.no_grad():
        predictions = model32(data.x, data.edge_index).argmax(-1)
    exp = G.NRMAlgorithm(G.RULES[rule])(model32, data.x, data.edge_index, target=predictions, index=node)
    assert torch.allclose(exp.node_mask.double(), marg.abs(), atol=1e-6)


@pytest.mark.parametrize("kind", ["gcn", "gin"])
def test_all_walks_are_the_walk_measure_of_every_node_walk(kind):
    """all_walks lists the walks along edges; every other walk has relevance 0. Checked against
    nrm.gnn.walk_relevance's enumeration of all N³ walks (11 nodes: 1331 walks), and the walks
    sum to f · μ(walks through every node state reaching the node)."""
    data = G.ba_shapes(1, base=6, motifs=1)
    models = {kind: G.train_node(kind, data, 0, epochs=15)[0].double().eval()}
    node = int(data.node_mask.nonzero()[1])
    m = _explain(models[kind], data, node, nrm.rules.Epsilon(0.1))
    layers = G.walk_layers(m)
    walks, rel = G.all_walks(m, data.edge_index, node)
    full = nrm.gnn.walk_relevance(m, layers, node)
    listed = torch.zeros_like(full, dtype=torch.bool)
    for w, r in zip(walks.tolist(), rel):
        assert abs(float(full[tuple(w[:-1])]) - float(r)) <= 1e-10 * max(1.0, abs(float(m.f[0])))
        listed[tuple(w[:-1])] = True
    assert float(full[~listed].abs().max()) <= 1e-12  # a walk off the edges carries nothing
    assert rel.abs().max() > 0
    reaching = m.f[0] * m(At(layers[0]) & At(layers[1]) & At(layers[2]) & At(layers[3], nodes=[node]))[0]
    assert abs(float(rel.sum() - reaching)) <= 1e-10 * max(1.0, abs(float(m.f[0])))


@pytest.mark.parametrize("kind", ["gcn", "gin"])
def test_walks_of_a_graph_output_sum_to_the_pooled_relevance(kind):
    """BA-2motifs' models (the GCN without its degree normalization, GRAPH_SCHEDULE): the walks
    along the edges sum to the relevance through every node state."""
    train, _ = G.ba_motifs(0, graphs=8, nodes=8)
    model = G.train_graph(kind, train, train, 0, epochs=2)[0].double().eval()
    if kind == "gcn":
        assert not any(conv.normalize for conv in model.convs)
    g = train[0]
    batch = torch.zeros(g.num_nodes, dtype=torch.int64)
    m = nrm.gnn.explain(model, g.x.double(), g.edge_index, target=1, node=0, batch=batch, rules=nrm.rules.Zero())
    layers = G.walk_layers(m)
    walks, rel = G.all_walks(m, g.edge_index, None)
    assert walks.shape[1] == 4 and len(set(map(tuple, walks.tolist()))) == len(walks)
    through = m.f[0] * m(At(layers[0]) & At(layers[1]) & At(layers[2]) & At(layers[3]))[0]
    assert abs(float(rel.sum() - through)) <= 1e-10 * max(1.0, abs(float(m.f[0])))


def test_the_top_walks_and_their_masks_are_deterministic(tiny):
    data, models = tiny
    node = int(data.node_mask.nonzero()[2])
    out = []
    for _ in range(2):
        m = _explain(models["gcn"], data, node, nrm.rules.Gamma(0.25))
        walks, rel = G.all_walks(m, data.edge_index, node)
        order = torch.argsort(rel.abs(), descending=True, stable=True)[:G.TOP_WALKS]
        out.append((walks[order], rel[order], *G.walk_masks(walks, rel, data.edge_index, data.num_nodes)))
    for a, b in zip(*out):
        assert torch.equal(a, b)
    node_mask, edge_mask = out[0][2], out[0][3]
    assert float(node_mask[node]) == pytest.approx(float(out[0][1].abs().sum()))  # every walk ends at the node
    assert bool((edge_mask >= 0).all()) and float(edge_mask.max()) > 0


def test_motif_of_gives_the_five_nodes_of_the_house():
    data = G.ba_shapes(0, base=12, motifs=3)
    for v in data.node_mask.nonzero().flatten().tolist():
        truth = G.motif_of(data, v)
        assert int(truth.sum()) == 5 and bool(truth[v]) and bool((data.node_mask | ~truth).all())
        assert int((truth[data.edge_index[0]] & truth[data.edge_index[1]]).sum()) == 12  # 6 edges, both ways


def test_scores_are_finite_and_in_range(tiny):
    pytest.importorskip("torchmetrics", reason="groundtruth_metrics needs torchmetrics (pip install torchmetrics)")
    data, models = tiny
    nodes = data.node_mask.nonzero().flatten().tolist()[:1]
    result = G.evaluate_nodes(copy.deepcopy(models["gcn"]).float(), data, nodes, quick=True, captum=False)
    assert {"nrm marginal LRP-0", "nrm top walks LRP-γ (0.25)", "GNNExplainer"} <= set(result)
    for name, r in result.items():
        assert 0.0 <= r["node_auroc"] <= 1.0, (name, r)
        assert math.isnan(r["edge_auroc"]) == name.startswith("nrm marginal"), (name, r)
        assert all(0.0 <= r[k] <= 1.0 for k in ("fid+", "fid-")), (name, r)
