"""``nrm-verify explain --modality graph``: a user's PyG model on a graph file (a dict, a PyG
Data), end to end — the files it writes hold nrm.gnn's numbers — the built-in demo, and every
bad value of the new arguments as one line on stderr, exit status 2 and the model untouched."""

from __future__ import annotations

import copy
import json
import sys
import textwrap

import pytest
import torch

pytest.importorskip("torch_geometric", reason="graph models need torch_geometric (pip install -e '.[graph]')")
pytest.importorskip("matplotlib", reason="the graph drawing needs matplotlib (the report extra)")

import nrm  # noqa: E402
from nrm_verify.commands import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

NETS = '''
import torch
from torch import nn
from torch_geometric.nn import GCNConv, global_add_pool


class NodeGCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.head = GCNConv(3, 6), GCNConv(6, 5), nn.Linear(5, 3)

    def forward(self, x, edge_index, edge_weight=None):
        x = torch.relu(self.conv1(x, edge_index, edge_weight))
        return self.head(torch.relu(self.conv2(x, edge_index, edge_weight)))


class GraphGCN(NodeGCN):
    def forward(self, x, edge_index, batch=None):
        x = torch.relu(self.conv1(x, edge_index))
        return self.head(global_add_pool(torch.relu(self.conv2(x, edge_index)), batch))


torch.manual_seed(0)
NODE, GRAPH = NodeGCN(), GraphGCN()


def node_model():
    return NODE


def graph_model():
    return GRAPH
'''
EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (3, 4), (4, 5), (5, 6), (6, 4), (6, 7), (2, 2)]  # a self-loop; 8 nodes


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """The module of the models (imported once: the CLI gets the same objects), and the graphs."""
    folder = tmp_path_factory.mktemp("nets")
    (folder / "gnets_cli.py").write_text(textwrap.dedent(NETS))
    sys.path.insert(0, str(folder))
    import gnets_cli

    ei = torch.tensor(EDGES + [(b, a) for a, b in EDGES if a != b]).t().contiguous()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    weight = torch.rand(ei.shape[1], generator=torch.Generator().manual_seed(2)) + 0.5
    torch.save({"x": x, "edge_index": ei, "edge_weight": weight}, folder / "graph.pt")
    yield folder, gnets_cli, x, ei, weight
    sys.path.remove(str(folder))
    sys.modules.pop("gnets_cli", None)


def _untouched(model, before):
    after = model.state_dict()
    return model.training == before[1] and all(torch.equal(after[k], v) and after[k].dtype == v.dtype
                                               for k, v in before[0].items())


def _snapshot(model):
    return copy.deepcopy(model.state_dict()), model.training


def test_node_model_end_to_end_holds_the_numbers_of_nrm_gnn(nets, tmp_path):
    folder, mod, x, ei, weight = nets
    before = _snapshot(mod.NODE)
    out = tmp_path / "node"
    code = main(["explain", "--modality", "graph", "--model", "gnets_cli:node_model()", "--input",
                 str(folder / "graph.pt"), "--node", "3", "--top-walks", "6", "--out", str(out)])
    assert code == 0
    assert _untouched(mod.NODE, before)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["level"] == "node" and summary["node"] == 3 and summary["nodes"] == 8
    assert summary["walk_layers"] == ["input", "add", "add_1"]
    model = copy.deepcopy(mod.NODE).double().eval()
    with torch.no_grad():
        target = int(model(x.double(), ei, edge_weight=weight.double())[3].argmax())
    assert summary["target"] == target
    m = nrm.gnn.explain(model, x.double(), ei, edge_weight=weight.double(), target=target, node=3,
                        rules=nrm.rules.Epsilon(0.1))
    nodes = json.loads((out / "nodes.json").read_text())
    mu = m.marginal("input")[0].sum(-1)
    assert nodes["f"] == pytest.approx(float(m.f[0]), abs=1e-12)
    assert nodes["relevance"] == pytest.approx((m.f[0] * mu).tolist(), abs=1e-12)
    assert nodes["mu"] == pytest.approx(mu.tolist(), abs=1e-12)
    assert sum(nodes["mu"]) + nodes["absorbed"] == pytest.approx(1.0, abs=1e-10)  # L1 at the input (a chain)
    walks = json.loads((out / "walks.json").read_text())
    expected = nrm.gnn.top_walks(m, ["input", "add", "add_1"], 3, k=6, edge_index=ei)
    assert [tuple(w["nodes"]) for w in walks["walks"]] == [w for w, _ in expected]
    assert [w["relevance"] for w in walks["walks"]] == pytest.approx([r for _, r in expected], abs=1e-12)
    assert all(w["nodes"][-1] == 3 for w in walks["walks"])
    _check_png(out / "graph.png")


def test_graph_model_from_a_pyg_data_file(nets, tmp_path):
    from torch_geometric.data import Data

    folder, mod, x, ei, _ = nets
    torch.save(Data(x=x, edge_index=ei, y=torch.tensor([1])), tmp_path / "data.pt")
    out = tmp_path / "graph"
    code = main(["explain", "--modality", "graph", "--model", "gnets_cli:graph_model()", "--input",
                 str(tmp_path / "data.pt"), "--target", "2", "--rules", "Gamma(0.25)", "--out", str(out)])
    assert code == 0
    model = copy.deepcopy(mod.GRAPH).double().eval()
    m = nrm.gnn.explain(model, x.double(), ei, target=2, rules=nrm.rules.Gamma(0.25))
    nodes = json.loads((out / "nodes.json").read_text())
    assert nodes["level"] == "graph" and nodes["target"] == 2
    assert nodes["relevance"] == pytest.approx((m.f[0] * m.marginal("input")[0].sum(-1)).tolist(), abs=1e-12)
    walks = json.loads((out / "walks.json").read_text())
    expected = nrm.gnn.top_walks(m, ["input", "add", "add_1"], None, k=10, edge_index=ei)
    assert [(tuple(w["nodes"]), w["relevance"]) for w in walks["walks"]] == \
        [(w, pytest.approx(r, abs=1e-12)) for w, r in expected]
    _check_png(out / "graph.png")


def test_the_built_in_demo(tmp_path):
    code = main(["explain", "--modality", "graph", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["demo_accuracy"] > 0.8  # the GCN learned BA-Shapes
    walks = json.loads((tmp_path / "walks.json").read_text())
    assert len(walks["walks"]) == 10 and all(w["nodes"][-1] == summary["node"] for w in walks["walks"])
    _check_png(tmp_path / "graph.png")


def _check_png(path):
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= 300 and float(img[..., :3].var()) > 0


# -- bad values: one line on stderr, exit status 2, the model untouched -------------------------
def _bad_graphs(folder, x, ei):
    nan = x.clone()
    nan[2, 1] = float("nan")
    files = {"wrong_keys": {"feat": x, "edge_index": ei}, "unknown_key": {"x": x, "edge_index": ei, "pos": x},
             "nan": {"x": nan, "edge_index": ei}, "out_of_range": {"x": x, "edge_index": ei + 5},
             "float_edges": {"x": x, "edge_index": ei.double()}, "not_a_dict": x,
             "edges_e2": {"x": x, "edge_index": ei.t().contiguous()}}
    for name, obj in files.items():
        torch.save(obj, folder / f"{name}.pt")
    (folder / "garbage.pt").write_text("not a torch file")


BAD = {
    "--modality": [["--modality", "video"], ["--modality", ""], ["--modality", "GRAPH"]],
    "--node": [["--node", "-1"], ["--node", "x"], ["--node", "8"], ["--node", "1.5"]],
    "--top-walks": [["--top-walks", "0"], ["--top-walks", "-2"], ["--top-walks", "many"]],
    "--walk-layers": [["--walk-layers", "nosuch"], ["--walk-layers", "input"],
                      ["--walk-layers", "input", "index_select", "add_1"]],
    "--input": [["--input", "{folder}/missing.pt"], ["--input", "{folder}/wrong_keys.pt"],
                ["--input", "{folder}/unknown_key.pt"], ["--input", "{folder}/nan.pt"],
                ["--input", "{folder}/out_of_range.pt"], ["--input", "{folder}/float_edges.pt"],
                ["--input", "{folder}/not_a_dict.pt"], ["--input", "{folder}/garbage.pt"],
                ["--input", "{folder}/edges_e2.pt"]],
    "--model": [["--model", "gnets_cli:nothing"], ["--model", "no_such_module_xyz:Net"], ["--model", "net.pt"]],
    "--target": [["--target", "3"], ["--target", "-1"]],
    "--rules": [["--rules", "Bogus(1)"]],
}


@pytest.mark.parametrize("flag,argv", [(flag, argv) for flag, cases in BAD.items() for argv in cases],
                         ids=[f"{flag}={' '.join(argv[1:]) or repr('')}" for flag, cases in BAD.items()
                              for argv in cases])
def test_a_bad_value_is_one_line_exit_2_and_the_model_untouched(nets, tmp_path, capsys, flag, argv):
    folder, mod, x, ei, _ = nets
    _bad_graphs(tmp_path, x, ei)
    given = {"--modality": ["--modality", "graph"], "--model": ["--model", "gnets_cli:node_model()"],
             "--input": ["--input", str(folder / "graph.pt")], "--node": ["--node", "3"]}
    given[flag] = [a.replace("{folder}", str(tmp_path)) for a in argv]
    before = _snapshot(mod.NODE)
    capsys.readouterr()
    try:
        code = main(["explain", "--out", str(tmp_path / "out"), *[a for v in given.values() for a in v]])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("nrm-verify explain: error:"), err
    assert _untouched(mod.NODE, before)
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("argv", [["--node", "3"], ["--top-walks", "4"], ["--walk-layers", "input", "add"]])
def test_graph_arguments_need_the_graph_modality(tmp_path, capsys, argv):
    code = main(["explain", "--quiet", "--size", "16", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--modality graph" in err


def test_image_figures_are_refused_for_graphs(nets, tmp_path, capsys):
    folder, *_ = nets
    code = main(["explain", "--modality", "graph", "--model", "gnets_cli:node_model()", "--input",
                 str(folder / "graph.pt"), "--node", "0", "--selection", "conv1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--selection" in err
