"""The figures of ``nrm-verify explain`` on a branched model (issue 12, item 18): the default
flow layers lie on one path (each read by the next, never a layer beside its parallel
shortcut), zero edges and zero paths are left out and said so, the masses axis is symlog
when the signed parts are large, the conditional heatmaps have colour bars and the flow's
columns carry their layers' names."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib", reason="the explain figures need matplotlib (the report extra)")

import nrm  # noqa: E402
from nrm_verify import report  # noqa: E402
from nrm_verify.commands import main  # noqa: E402
from nrm_verify.commands.explain import default_flow_layers  # noqa: E402
from nrm_verify.report import figures  # noqa: E402
from nrm_verify.zoo.architectures import resnet  # noqa: E402
from nrm_verify.zoo.models import seeded_image  # noqa: E402


def check_image(path, min_side: int = 200) -> None:
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side, (path, img.shape)
    assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 8, f"{path} has almost one colour"


@pytest.fixture(scope="module")
def residual():
    torch.set_num_threads(1)
    model = resnet(seed=0).eval()
    x = seeded_image(16, seed=0).to(next(model.parameters()).dtype)
    target = int(model(x).argmax())
    return model, x, nrm.explain(model, x, target=target, rules=nrm.presets.EpsilonGammaFlat())


def test_the_default_flow_layers_lie_on_one_path(residual):
    model, _, m = residual
    names = report.layer_names(m)
    assert "layer2.0.downsample.0" in names  # the model has a parallel shortcut
    chosen = default_flow_layers(model, names, m)
    assert len(chosen) == 4 and "layer2.0.downsample.0" not in chosen, chosen
    for a, b in zip(chosen[:-1], chosen[1:]):
        assert m.layer_index(a) in report.ancestors(m, b), (a, b)  # b reads a
    assert report.parallel_pairs(m, chosen) == []
    flow = report.flow(m, chosen, top=3, paths=3, beam=4)
    assert flow.notes == [] or all("edges have μ = 0" in n for n in flow.notes)
    assert len(flow.paths) == 3 and all(abs(p["mu"]) > report.ZERO for p in flow.paths)
    assert len({tuple(p["channels"]) for p in flow.paths}) == 3


def test_parallel_layers_are_said_and_zero_paths_left_out(residual, tmp_path):
    _, _, m = residual
    layers = ["layer1.0.conv2", "layer2.0.downsample.0", "layer2.0.conv1", "layer2.0.conv2"]
    assert report.parallel_pairs(m, layers) == [("layer2.0.downsample.0", "layer2.0.conv1")]
    flow = report.flow(m, layers, top=3, paths=3, beam=4).to_dict()
    between = [e for e in flow["edges"] if e["from"][0] == "layer2.0.downsample.0"]
    assert between and all(e["mu"] == 0 for e in between)  # no walk goes through both
    assert flow["paths"] == []  # every path crosses the pair: μ = 0, not listed
    notes = " ".join(flow["notes"])
    assert "on parallel branches" in notes and "edges have μ = 0 and are not drawn" in notes
    assert "every critical path found has μ = 0" in notes
    check_image(figures.flow(tmp_path / "flow.png", flow))


def test_an_all_zero_flow_says_so(tmp_path):
    data = {"layers": ["a", "b"], "nodes": {"a": [{"channel": 0, "mu": 0.5}], "b": [{"channel": 1, "mu": 0.5}]},
            "edges": [{"from": ["a", 0], "to": ["b", 1], "mu": 0.0}], "paths": [],
            "notes": ["every joint μ between consecutive flow layers is 0: nothing flows between them"]}
    figs = _captured(lambda: figures.flow(tmp_path / "f.png", data))
    ax = figs[0].axes[0]
    assert "nothing flows" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]  # columns named, not numbered
    assert {"a", "b"} <= {t.get_text() for t in ax.texts}  # and named above the columns
    assert not ax.lines  # the zero edge is not drawn


def _captured(draw) -> list:
    figs = []
    original = figures._save

    def keep(fig, path):
        figs.append(fig)
        return original(fig, path)

    figures._save = keep
    try:
        draw()
    finally:
        figures._save = original
    return figs


def test_masses_use_a_symlog_axis_when_the_signed_parts_are_large(tmp_path):
    rows = [{"layer": f"l{i}", "real": 1.0, "absorbed": 0.0, "total": 1.0, "positive": 950.0, "negative": -949.0}
            for i in range(5)]
    (fig,) = _captured(lambda: figures.masses(tmp_path / "m.png", rows))
    assert fig.axes[0].get_yscale() == "symlog"
    small = [dict(r, positive=1.5, negative=-0.5) for r in rows]
    (fig,) = _captured(lambda: figures.masses(tmp_path / "s.png", small))
    assert fig.axes[0].get_yscale() == "linear"
    check_image(tmp_path / "m.png")


def test_conditional_heatmaps_have_colour_bars(tmp_path):
    x = torch.zeros(3, 8, 8)
    maps = np.random.default_rng(0).normal(size=(3, 8, 8))
    (fig,) = _captured(lambda: figures.concepts(tmp_path / "c.png", x, maps[0], maps, "layer", [0, 1, 2],
                                                [0.5, 0.3, -0.1]))
    panels = 2 + 3
    colourbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colourbars) == panels - 1  # every heatmap, not the input
    check_image(tmp_path / "c.png")


def test_explain_on_a_residual_model_writes_its_figures(tmp_path, capsys):
    code = main(["explain", "--model", "nrm_verify.zoo.architectures:resnet()", "--size", "16", "--quiet", "--top", "3",
                 "--beam", "4", "--paths", "3", "--concepts", "2", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["flow_layers"] == ["layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2"]
    assert all(abs(p["mu"]) > 0 for p in summary["critical_paths"]) and "notes" in summary
    for name in ("flow.png", "masses.png", "concepts.png", "heatmap.png", "joint.png"):
        check_image(tmp_path / name)
