"""nrm's node-walk relevances against DIG's GNN-LRP (dive-into-graphs 1.1.0), walk by walk.

DIG itself runs here (``peer_tests/dig_native.py``): ``dig/xgraph/method/gnn_lrp.py`` and the
modules it imports, unchanged, with shims for the two imports its GNN-LRP path never calls
(``torch_sparse``, ``rdkit``; asserted unused) and adapters of DIG's layers to PyG 2.8's
renamed internals (asserted faithful: DIG's models compute PyG's, and DIG reads the walk
steps it read with PyG 2.0). The tests after "DIG itself" compare DIG's own ``GNN_LRP`` on
its own ``GCN_3l`` / ``GIN_3l`` with nrm and with ``nrm_verify.references.dig_gnnlrp``, DIG's
algorithm re-implemented from its source (one forward and one backward pass per walk, γ =
(2, 1, 1) on the convs and 1 on the head, the p · (std / p).detach() trick, node masks), which
the first tests compare with nrm on more configurations (γ = 0, ``gin_plus``).

What is equal, and where they differ (each asserted, against DIG itself where it says so):

* the re-implementation with γ = 0 (LRP-0): equal to nrm per walk, GCN and GIN, with biases (1e-10 relative to |f|);
* DIG itself equals the re-implementation walk by walk (GCN and GIN, γ as shipped);
* LRP-0: DIG hard-codes γ, so DIG itself is compared where its γ is inert (non-positive
  weights: W + γW⁺ = W; GIN's bias-free MLP: W + γW cancels): equal per walk, GCN and GIN;
* GCN with DIG's γ: DIG applies γ to the dense map Â ⊗ W (normalized once over every sending
  node and feature). DIG itself equals nrm's Gamma on GCNConv read whole (the opt-in
  ``GCNLayer``, GNN-LRP's layer), biases included; read operation by operation nrm applies
  Gamma to ``lin`` (W) and splits the aggregation by the unmodified messages (docs/gnn.md,
  "how rules compose"): equal per walk where every node has one in-neighbour (a directed
  cycle, no self-loops, no bias), different on a BA graph (DIG itself too) while both conserve f;
* GIN: DIG modifies its MLP's Linears as W + γW (not W⁺). With the γ-rule proper
  (``gin_plus=True``) DIG equals nrm's Gamma on the MLP's Linears, biases included (the
  aggregation is LRP-0 in both); DIG as shipped equals nrm's LRP-0 on the MLP when its Linears
  have no bias (the factor 1 + γ cancels) and differs from both when they have one.
"""

from __future__ import annotations

import importlib.util
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

DIG_INSTALL = ("DIG is not installed in this environment: pip install --no-deps dive-into-graphs==1.1.0 "
               "(scripts/setup-peers.sh does)")
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


# -- DIG itself (dig/xgraph/method/gnn_lrp.py, unchanged; peer_tests/dig_native.py) -----------
def dig_itself():
    import dig_native  # beside this file: an ImportError here is a failure, not a skip

    if importlib.util.find_spec("dig") is None:
        pytest.skip(DIG_INSTALL)
    return dig_native


def twin_pair(kind: str, seed: int, *, conv_sign: str = "any", mlp_bias: bool = True, head_sign: str = "any",
              classes: int = 2, hidden: int = 5):
    """DIG's own GCN_3l / GIN_3l (node level) and the benchmark's GraphNet with the same weights.
    DIG's ffn is set to one Linear (GraphNet's head; DIG reads whatever its model runs); DIG's GIN
    MLP ends with a ReLU where GraphNet applies one after the conv (the same function).
    ``"nonpositive"`` weights make DIG's γ inert on a layer (W + γW⁺ = W): biases then positive."""
    native = dig_itself()
    _, dm = native.load()
    torch.manual_seed(seed)
    ours = G.GraphNet(kind, classes, hidden=hidden).double().eval()
    theirs = (dm.GCN_3l if kind == "gcn" else dm.GIN_3l)("node", G.FEATURES, hidden, classes)
    theirs.ffn = torch.nn.Sequential(torch.nn.Linear(hidden, classes))
    theirs = theirs.double().eval()
    g = torch.Generator().manual_seed(seed)

    def draw(shape, sign):
        w = torch.randn(shape, generator=g, dtype=torch.float64) * 0.6
        return -w.abs() * 0.25 if sign == "nonpositive" else w  # small: the positive biases keep units alive

    def bias(shape, sign, keep=True):
        b = torch.randn(shape, generator=g, dtype=torch.float64) * 0.6
        return (b.abs() + 1.0 if sign == "nonpositive" else b) * keep

    dig_convs = [theirs.conv1, *theirs.convs]
    with torch.no_grad():
        for conv, twin in zip(ours.convs, dig_convs):
            if kind == "gcn":
                conv.lin.weight.copy_(draw(conv.lin.weight.shape, conv_sign))
                conv.bias.copy_(bias(conv.bias.shape, conv_sign))
                twin.weight.copy_(conv.lin.weight.T)
                twin.bias.copy_(conv.bias)
            else:
                conv.eps.fill_(0.25)  # DIG's GIN weighs its self-loop messages in float32 (ones + ε):
                twin.eps.fill_(0.25)  # ε = 0.25 is exact there
                for j in (0, 2):
                    conv.nn[j].weight.copy_(draw(conv.nn[j].weight.shape, conv_sign))
                    conv.nn[j].bias.copy_(bias(conv.nn[j].bias.shape, conv_sign, mlp_bias))
                    twin.nn[j].load_state_dict(conv.nn[j].state_dict())
        ours.head.weight.copy_(draw(ours.head.weight.shape, head_sign))
        ours.head.bias.copy_(bias(ours.head.bias.shape, head_sign))
        theirs.ffn[0].load_state_dict(ours.head.state_dict())
    return native, ours, theirs


def dig_scores(native, theirs, x, ei, node, target, classes=2):
    """DIG's GNN_LRP on its own model: its walks (edge ids of the graph with self-loops) as node
    walks (i_0, …, i_3), and its scores for ``target``."""
    from torch_geometric.utils import add_remaining_self_loops

    gnn_lrp, _ = native.load()
    explainer = gnn_lrp.GNN_LRP(theirs, explain_graph=False)
    walks, _, _ = explainer(x.clone(), ei, node_idx=torch.tensor(node), num_classes=classes, sparsity=0.5)
    loops, _ = add_remaining_self_loops(ei, num_nodes=x.shape[0])
    ids = walks["ids"]
    node_walks = torch.cat([loops[0, ids[:, :1]], loops[1, ids]], 1)
    return node_walks, walks["score"][:, target].detach()


def nrm_on_dig_walks(net, x, ei, node, target, rules, dig_walks, layers=None):
    """nrm's relevance of each of DIG's walks (graph_walks over the conv outputs), and f."""
    m = nrm.gnn.explain(net, x, ei, target=target, node=node, rules=rules)
    walks, rel = nrm.gnn.graph_walks(m, layers or G.walk_layers(m), ei, node)
    table = {tuple(w): float(r) for w, r in zip(walks.tolist(), rel)}
    assert set(table) == {tuple(w) for w in dig_walks.tolist()}  # the same walks: along the edges and self-loops
    return torch.tensor([table[tuple(w)] for w in dig_walks.tolist()], dtype=torch.float64), m.f[0]


def _target(net, x, ei, node):
    with torch.no_grad():
        return int(net(x, ei)[node].argmax())


@pytest.mark.parametrize("kind", ["gcn", "gin"])
def test_dig_imports_beside_pyg_28_its_shims_unused_and_its_models_are_pygs(kind):
    native, ours, theirs = twin_pair(kind, 11)
    x, ei = ba_graph(11)
    with torch.no_grad():
        gap = float((ours(x, ei) - theirs(x, ei)).abs().max())
    assert gap <= 1e-12, gap  # the propagate adapters are faithful: DIG's layers compute PyG's
    gnn_lrp, _ = native.load()
    steps, fc = gnn_lrp.GNN_LRP(theirs, explain_graph=False).extract_step(x, ei, detach=False, split_fc=True)
    read = [[type(m).__name__ for m in step["module"]] for step in steps]
    assert read == [["GCNConv", "ReLU"] if kind == "gcn" else ["GINConv"]] * G.LAYERS, read
    assert [[type(m).__name__ for m in step["module"]] for step in fc] == [["IdenticalPool"], ["Linear"]]
    dig_scores(native, theirs, x, ei, 3, 0)
    assert native.CALLED == []  # GNN_LRP, its explainer base and its edge-mask evaluation never reach a shim


@pytest.mark.parametrize("kind", ["gcn", "gin"])
def test_digs_own_walks_equal_the_reimplementation(kind):
    native, ours, theirs = twin_pair(kind, 12)
    x, ei = ba_graph(12)
    node = 4
    target = _target(ours, x, ei, node)
    walks, scores = dig_scores(native, theirs, x, ei, node, target)
    mine = dig.walk_relevances(ours, x, ei, walks.tolist(), target, node)  # γ = (2, 1, 1), GIN's W + γW
    assert scores.abs().max() > 1e-3 and len(walks) > 20
    assert _close(scores, mine, scores.sum()), float((scores - mine).abs().max())
    assert native.CALLED == []


@pytest.mark.parametrize("kind", ["gcn", "gin"])
def test_digs_own_walks_equal_nrm_lrp_zero_where_its_gamma_is_inert(kind):
    """DIG hard-codes γ; it is LRP-0 where W + γW⁺ = W (non-positive weights: GCN's convs, the
    head) and on GIN's bias-free MLP (W + γW: the factor 1 + γ cancels)."""
    signs = dict(conv_sign="nonpositive") if kind == "gcn" else dict(mlp_bias=False)
    native, ours, theirs = twin_pair(kind, 13, head_sign="nonpositive", **signs)
    x, ei = ba_graph(13)
    x = x - 0.5  # signed features: GIN's bias-free first layer and GCN's non-positive weights stay alive
    node = 2
    target = _target(ours, x, ei, node)
    walks, scores = dig_scores(native, theirs, x, ei, node, target)
    rel, f = nrm_on_dig_walks(ours, x, ei, node, target, nrm.rules.Zero(), walks)
    assert scores.abs().max() > 1e-5  # 10^5 × the tolerance (GCN: most of f is the positive biases')
    assert _close(rel, scores, f), float((rel - scores).abs().max())
    assert native.CALLED == []


@pytest.fixture
def gcn_read_whole():
    kind = nrm.layers.message.GCNLayer()
    nrm.layers.register(kind)
    yield kind
    nrm.layers.unregister(kind)


def test_digs_own_gamma_on_gcn_is_nrms_gamma_on_gcnconv_read_whole_and_not_on_the_chain(gcn_read_whole):
    """DIG's γ = (2, 1, 1) normalizes over the dense Â ⊗ W: nrm's Gamma on GCNConv read whole
    (GCNLayer, GNN-LRP's layer) equals it walk by walk, biases included; read operation by
    operation (Gamma on lin, LRP-0 on the aggregation) it is another kernel (docs/gnn.md)."""
    native, ours, theirs = twin_pair("gcn", 14)
    x, ei = ba_graph(14)
    node = 5
    target = _target(ours, x, ei, node)
    walks, scores = dig_scores(native, theirs, x, ei, node, target)
    whole = nrm.RuleMap(nrm.rules.Zero(), by_name={
        "model.head": nrm.rules.Gamma(1.0, modify_bias=False),
        **{f"model.convs.{i}": nrm.rules.Gamma(g, modify_bias=False) for i, g in enumerate(dig.DIG_GAMMAS)}})
    layers = ["input"] + [f"model.convs.{i}" for i in range(G.LAYERS)]
    rel, f = nrm_on_dig_walks(ours, x, ei, node, target, whole, walks, layers)
    assert scores.abs().max() > 1e-3
    assert _close(rel, scores, f), float((rel - scores).abs().max())
    nrm.layers.unregister(gcn_read_whole)  # read operation by operation
    chain, f = nrm_on_dig_walks(ours, x, ei, node, target, by_name(ours, "gcn", dig.DIG_GAMMAS), walks)
    assert float((chain - scores).abs().max()) > 1e-6 * max(1.0, abs(float(f)))  # per-sender γ on lin
    nrm.layers.register(gcn_read_whole)
    assert native.CALLED == []


def test_digs_own_gin_is_lrp_zero_on_the_mlp_without_bias_and_differs_with_bias():
    """DIG's GIN modifies its MLP's Linears as W + γW: LRP-0 there when they have no bias (1 + γ
    cancels), the bias entering as b / (1 + γ) when they have one; the head gets γ = 1."""
    for bias in (False, True):
        native, ours, theirs = twin_pair("gin", 15, mlp_bias=bias)
        x, ei = ba_graph(15)
        x = x - 0.5
        node = 1
        target = _target(ours, x, ei, node)
        walks, scores = dig_scores(native, theirs, x, ei, node, target)
        rel, f = nrm_on_dig_walks(ours, x, ei, node, target, by_name(ours, "gin", (0.0, 0.0, 0.0)), walks)
        assert scores.abs().max() > 1e-3
        if not bias:
            assert _close(rel, scores, f), float((rel - scores).abs().max())
        else:
            assert float((rel - scores).abs().max()) > 1e-6 * max(1.0, abs(float(f)))
    assert native.CALLED == []
