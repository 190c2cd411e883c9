"""nrm's node-walk relevances against DIG's GNN-LRP (dive-into-graphs 1.1.0), walk by walk.

DIG 1.1.0 does not import beside PyG 2.8.1 (``pip install --no-deps dive-into-graphs``
installs it; ``import dig.xgraph.method.gnn_lrp`` then needs the compiled ``torch_sparse``,
captum's ``ExpansionTypes``, absent from the captum 0.9.0 installed here, and ``rdkit``). The comparison runs
against ``nrm_verify.references.dig_gnnlrp``, DIG's algorithm re-implemented from its source
(one forward and one backward pass per walk, γ = (2, 1, 1) on the convs and 1 on the head,
the p · (std / p).detach() trick, node masks); ``test_the_reimplementation_is_dig`` checks it
against DIG itself where DIG imports.

What is equal, and where they differ (each asserted):

* LRP-0 (DIG's γ = 0): equal per walk, GCN and GIN, with biases (1e-10 relative to |f|);
* GCN with DIG's γ: DIG applies γ to the dense map Â ⊗ W (normalized once over every sending
  node and feature); nrm applies Gamma to ``lin`` (W) and splits the aggregation by the
  unmodified messages (docs/gnn.md, "how rules compose"). Equal per walk where every node
  has one in-neighbour (a directed cycle, no self-loops, no bias); on a BA graph they differ
  walk by walk while both conserve f;
* GIN: DIG modifies its MLP's Linears as W + γW (not W⁺). With the γ-rule proper
  (``gin_plus=True``) DIG equals nrm's Gamma on the MLP's Linears, biases included (the
  aggregation is LRP-0 in both); DIG as shipped equals nrm's LRP-0 on the MLP when its Linears
  have no bias (the factor 1 + γ cancels) and differs from both when they have one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("torch_geometric", reason="the DIG comparison needs torch_geometric (pip install -e '.[graph]')")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gnn_groundtruth as G  # noqa: E402
from torch_geometric.datasets.graph_generator import BAGraph  # noqa: E402

import nrm  # noqa: E402
from nrm_verify.references import dig_gnnlrp as dig  # noqa: E402

DIG_INSTALL = ("DIG does not import with PyG 2.8.1: pip install --no-deps dive-into-graphs, then it needs "
               "torch_sparse (compiled), a captum with ExpansionTypes (0.9.0 has none) and rdkit")
TOL = 1e-10


def model(kind: str, seed: int, bias: bool = True, self_loops: bool = True, hidden: int = 5):
    torch.manual_seed(seed)
    net = G.GraphNet(kind, 3, hidden=hidden)
    if kind == "gcn" and not self_loops:
        from torch_geometric.nn import GCNConv

        dims = [G.FEATURES] + [hidden] * G.LAYERS
        net.convs = torch.nn.ModuleList(GCNConv(i, o, add_self_loops=False, bias=bias) for i, o in zip(dims, dims[1:]))
    net = net.double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "bias" in name and not bias:
                p.zero_()
            elif name.endswith("eps"):
                p.fill_(0.2)
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.6)
    return net


def ba_graph(seed: int, nodes: int = 12):
    G.seed_everything(seed)  # PyG's BA generator draws with numpy
    ei = BAGraph(num_nodes=nodes, num_edges=2)().edge_index
    x = torch.rand(nodes, G.FEATURES, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, ei


def directed_cycle(nodes: int = 7, seed: int = 0):
    ei = torch.stack([torch.arange(nodes), (torch.arange(nodes) + 1) % nodes])
    x = torch.rand(nodes, G.FEATURES, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, ei


def nrm_walks(net, x, ei, node, rules):
    with torch.no_grad():
        target = int(net(x, ei)[node].argmax())
    m = nrm.gnn.explain(net, x, ei, target=target, node=node, rules=rules)
    walks, rel = G.all_walks(m, ei, node)
    return m, target, walks, rel


def dig_walks(net, x, ei, node, target, walks, **kw):
    return dig.walk_relevances(net, x, ei, walks.tolist(), target, node, **kw)


def by_name(net, kind, gammas, head=1.0):
    """nrm's rules that match DIG's γ: Gamma on what DIG modifies (raw bias, as DIG keeps it)."""
    rules = {"model.head": nrm.rules.Gamma(head, modify_bias=False)}
    for i, g in enumerate(gammas):
        if kind == "gcn":
            rules[f"model.convs.{i}.lin"] = nrm.rules.Gamma(g, modify_bias=False)
        else:
            for j in (0, 2):
                rules[f"model.convs.{i}.nn.{j}"] = nrm.rules.Gamma(g, modify_bias=False)
    return nrm.RuleMap(nrm.rules.Zero(), by_name=rules)


def _close(a, b, f):
    return float((a - b).abs().max()) <= TOL * max(1.0, abs(float(f)))


@pytest.mark.parametrize("kind", ["gcn", "gin"])
def test_lrp_zero_walks_equal_dig_with_gamma_zero(kind):
    net = model(kind, 1)
    x, ei = ba_graph(1)
    node = 3
    m, target, walks, rel = nrm_walks(net, x, ei, node, nrm.rules.Zero())
    theirs = dig_walks(net, x, ei, node, target, walks, gammas=(0.0, 0.0, 0.0), head_gamma=0.0)
    assert rel.abs().max() > 1e-3 and len(walks) > 20  # walks that carry relevance were compared
    assert _close(rel, theirs, m.f[0]), float((rel - theirs).abs().max())


def test_gcn_with_digs_gamma_equals_nrm_where_each_node_has_one_in_neighbour():
    net = model("gcn", 2, bias=False, self_loops=False)
    x, ei = directed_cycle()
    node = 4
    m, target, walks, rel = nrm_walks(net, x, ei, node, by_name(net, "gcn", dig.DIG_GAMMAS))
    theirs = dig_walks(net, x, ei, node, target, walks)
    assert rel.abs().max() > 1e-6
    assert _close(rel, theirs, m.f[0]), float((rel - theirs).abs().max())


def test_gcn_with_digs_gamma_differs_from_nrm_on_a_ba_graph_while_both_conserve():
    net = model("gcn", 3, bias=False)
    x, ei = ba_graph(3)
    node = 2
    m, target, walks, rel = nrm_walks(net, x, ei, node, by_name(net, "gcn", dig.DIG_GAMMAS))
    theirs = dig_walks(net, x, ei, node, target, walks)
    f = float(m.f[0])
    assert abs(float(rel.sum()) - f) <= TOL * max(1.0, abs(f))  # no bias, no stabilizer: the walks carry f
    assert abs(float(theirs.sum()) - f) <= 1e-8 * max(1.0, abs(f))
    gap = float((rel - theirs).abs().max()) / max(1.0, abs(f))
    assert gap > 1e-6, gap  # far above TOL: the dense Â ⊗ W normalization versus nrm's per-sender γ on lin


def test_gin_with_the_gamma_rule_proper_equals_nrms_gamma_on_the_mlp():
    net = model("gin", 4)
    x, ei = ba_graph(4)
    node = 5
    m, target, walks, rel = nrm_walks(net, x, ei, node, by_name(net, "gin", dig.DIG_GAMMAS))
    theirs = dig_walks(net, x, ei, node, target, walks, gin_plus=True)
    assert rel.abs().max() > 1e-3
    assert _close(rel, theirs, m.f[0]), float((rel - theirs).abs().max())


def test_gin_as_dig_ships_it_is_lrp_zero_on_the_mlp_without_bias_and_differs_with_bias():
    for bias in (False, True):
        net = model("gin", 7, bias=bias)
        x, ei = ba_graph(7)
        node = 1
        lrp0_mlp = by_name(net, "gin", (0.0, 0.0, 0.0))
        m, target, walks, rel = nrm_walks(net, x, ei, node, lrp0_mlp)
        theirs = dig_walks(net, x, ei, node, target, walks)  # W + γW on the MLP's Linears
        assert rel.abs().max() > 1e-3
        if not bias:
            assert _close(rel, theirs, m.f[0]), float((rel - theirs).abs().max())
        else:
            assert float((rel - theirs).abs().max()) > 1e-6  # the bias enters as b / (1 + γ)


def test_the_reimplementation_is_dig():
    gnn_lrp = pytest.importorskip("dig.xgraph.method.gnn_lrp", reason=DIG_INSTALL)
    assert hasattr(gnn_lrp, "GNN_LRP")  # reached only where DIG imports: compare its walks then
    pytest.fail("DIG imports here: write the direct comparison (DIG's GNN_LRP on DIG's GCN_3l) before relying on "
                "the re-implementation")
