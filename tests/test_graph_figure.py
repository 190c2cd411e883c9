"""nrm_verify.report.graph.draw_graph: a generated graph explained by nrm.gnn.explain (a
2-layer GCN of tests/graphs.py), its node relevance and top walks drawn; the drawn colours,
arrows and nodes checked on the matplotlib artists, and malformed arguments refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric", reason="the graph figure test needs torch_geometric (pip install -e '.[graph]')")
pytest.importorskip("matplotlib", reason="the figures need matplotlib (pip install 'nrm-verify[report]')")

import graphs  # noqa: E402  (tests/graphs.py imports torch_geometric)

import nrm  # noqa: E402
from nrm_verify.report.graph import draw_graph, graph_figure, layout, neighbourhood  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
LAYERS, END = ["input", "add", "add_1"], 1


@pytest.fixture(scope="module")
def explained():
    """(graph, node relevance f · μ(X_input ∈ node) (N,), the top 5 walks ending at node 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model, g, kwargs = graphs.case("gcn", 0)
    m = nrm.gnn.explain(model, g.x, g.edge_index, target=1, node=END, **kwargs)
    relevance = m.f[0] * m.marginal("input")[0].sum(-1)
    walks = nrm.gnn.top_walks(m, LAYERS, END, k=5, edge_index=g.edge_index)
    torch.set_num_threads(before)
    return g, relevance, walks


def _artists(fig, gid):
    return [a for ax in fig.axes for a in list(ax.collections) + list(ax.patches) if a.get_gid() == gid]


def test_the_png_is_written_and_not_blank(explained, tmp_path):
    g, relevance, walks = explained
    path = draw_graph(g.edge_index, relevance, walks, path=tmp_path / "sub" / "walks.png", title="GCN, node 1",
                      highlight=[0, 1, 2], explained=END)
    assert path.exists() and path.stat().st_size > 10_000
    from matplotlib.image import imread

    pixels = imread(path)[..., :3]
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    reddish = (pixels[..., 0] > 0.7) & (pixels[..., 2] < 0.45)  # the positive walks and nodes
    assert reddish.mean() > 0.002 and (pixels < 0.99).any(-1).mean() > 0.02


def test_node_colours_follow_the_relevance_and_one_arrow_per_walk(explained):
    g, relevance, walks = explained
    drawn = graph_figure(g.edge_index, relevance, walks, nodes=range(g.x.shape[0]), highlight=[0, 2])
    try:
        drawn.figure.canvas.draw()  # the colours as rendered
        (nodes,) = _artists(drawn.figure, "nodes")
        assert drawn.nodes.tolist() == list(range(g.x.shape[0]))
        colours = nodes.get_facecolors()
        assert colours.shape[0] == g.x.shape[0]
        # bwr: red − blue rises strictly with the value; equal values, equal colours
        warmth = colours[:, 0] - colours[:, 2]
        r = relevance.numpy()
        for i in range(len(r)):
            for j in range(len(r)):
                if r[i] < r[j] - 1e-9:
                    assert warmth[i] < warmth[j], (i, j, r[i], r[j])
        assert abs(warmth[int(np.argmax(np.abs(r)))]) > 0.95  # the largest |R| at the map's end
        arrows = _artists(drawn.figure, "walk")
        assert len(arrows) == len(walks) == 5
        widths = [a.get_linewidth() for a in arrows]
        assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]  # top_walks: largest |R| first
        for a, (_, rel) in zip(arrows, walks):
            red, _, blue, _ = a.get_edgecolor()
            assert (red > blue) == (rel > 0)
        assert drawn.self_steps == sum(a == b for w, _ in walks for a, b in zip(w, w[1:])) > 0
        (rings,) = _artists(drawn.figure, "highlight")
        assert len(rings.get_offsets()) == 2
    finally:
        import matplotlib.pyplot as plt

        plt.close(drawn.figure)


def test_by_default_the_walks_and_their_one_hop_neighbourhood_are_drawn(explained):
    g, relevance, walks = explained
    drawn = graph_figure(g.edge_index, relevance, walks[:1])
    try:
        on_walk = set(walks[0][0])
        expected = set(on_walk)
        for s, t in g.edge_index.t().tolist():
            if s in on_walk or t in on_walk:
                expected |= {s, t}
        assert set(drawn.nodes.tolist()) == expected and len(expected) < g.x.shape[0]
        assert neighbourhood(g.edge_index.numpy(), on_walk).tolist() == sorted(expected)
    finally:
        import matplotlib.pyplot as plt

        plt.close(drawn.figure)


def test_the_layout_is_seeded_and_pulls_neighbours_together():
    ring = np.array([[i for i in range(12)], [(i + 1) % 12 for i in range(12)]])
    a, b = layout(12, ring, seed=3), layout(12, ring, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (12, 2) and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    dist = np.linalg.norm(a[:, None] - a[None], axis=-1)
    neighbours = dist[ring[0], ring[1]].mean()
    assert neighbours < dist[np.triu_indices(12, 1)].mean()


@pytest.mark.parametrize("change, message", [
    (dict(edge_index=torch.zeros(3, 4, dtype=torch.int64)), "shape \\(2, E\\)"),
    (dict(edge_index=torch.zeros(2, 4)), "integer node ids"),
    (dict(edge_index=torch.tensor([[0, 99], [1, 2]])), "outside 0 … 6"),
    (dict(node_relevance=torch.zeros(7, 3, dtype=torch.float64)), "1-D float"),
    (dict(node_relevance=torch.tensor([0.0, float("nan"), 0, 0, 0, 0, 0])), "NaN or infinite"),
    (dict(node_relevance=np.arange(7)), "1-D float"),
    (dict(walks=[((0, 1, 70), 0.5)]), "walks\\[0\\].*outside 0 … 6"),
    (dict(walks=[((0, 1, 1), float("nan"))]), "finite relevance"),
    (dict(walks=[(0.5, (0, 1))]), "tuple of node ids, relevance"),
    (dict(highlight=[8]), "highlight names nodes outside"),
    (dict(highlight=np.array([True, False])), "boolean mask"),
    (dict(positions=np.zeros((7, 3))), "positions must be"),
    (dict(nodes=[]), "nodes is empty"),
    (dict(nodes=[0, 1]), "walks pass nodes that nodes= leaves out"),
])
def test_malformed_arguments_are_refused_by_name(explained, tmp_path, change, message):
    g, relevance, walks = explained
    args = dict(edge_index=g.edge_index, node_relevance=relevance, walks=walks)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        draw_graph(args.pop("edge_index"), args.pop("node_relevance"), args.pop("walks"), path=tmp_path / "x.png",
                   **args)
    assert not (tmp_path / "x.png").exists()
