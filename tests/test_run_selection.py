"""Neuron-selection curves over a dataset (issue 16: "Guercio-style neuron-selection curves
averaged over a dataset"): each row holds the sample's curves, equal to
:func:`~nrm_verify.report.selection.selection_curves` on the sample alone; the run's
reductions hold their mean and variance over the samples; the report draws them; bad
selections are refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

import nrm
from nrm_verify.report.dataset import SpecError, run
from nrm_verify.report.dataset.report import build_report, figures
from nrm_verify.report.selection import default_ks, selection_curves
from nrm_verify.zoo.models import small_cnn

RULES = nrm.presets.EpsilonGammaFlat()
pytestmark = pytest.mark.usefixtures("single_thread")


class Wrapped(nn.Module):
    """Not an nn.Sequential: the curves cut a deep copy of the model (one per batch)."""

    def __init__(self):
        super().__init__()
        self.net = small_cnn(seed=2)

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return torch.randn(7, 3, 16, 16, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("make, layer", [(lambda: small_cnn(seed=1), "features.3"),
                                         (lambda: Wrapped().eval(), "net.features.3")],
                         ids=["sequential", "module"])
def test_each_row_holds_the_curves_of_the_sample_alone_and_the_reductions_their_moments(tmp_path, data, make, layer):
    model = make()
    result = run(model, data, tmp_path / "r", rules=RULES, layers=[layer], selection=[layer], selection_draws=2,
                 batch_size=3, progress=False)
    assert (result.samples, result.errors) == (7, 0)
    rows = pq.read_table(tmp_path / "r" / "samples").sort_by("row").to_pylist()
    ks = default_ks(16)
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["selection"] == {layer: ks}
    stacked = {}
    for row in rows:
        i = row["row"]
        alone = selection_curves(model, data[i:i + 1], layer, row["target"], rules=RULES, random_draws=2, seed=0)
        assert alone.ks == ks
        for r in ("relevance", "gradient×input", "random"):
            for metric, curve in (("mse", alone.mse[r]), ("smape", alone.smape[r])):
                got = np.asarray(row[f"selection/{layer}/{r}/{metric}"])
                np.testing.assert_allclose(got, curve, rtol=1e-9, atol=1e-12)
                stacked.setdefault((r, metric), []).append(got)
        assert row[f"selection/{layer}/relevance/mse"][-1] == 0.0  # every channel kept: the full output
    for (r, metric), curves in stacked.items():
        moments = result.reductions[f"selection/{layer}/{r}/{metric}"]
        assert moments.count == 7
        np.testing.assert_allclose(moments.mean, np.mean(curves, 0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(moments.m2 / 7, np.var(curves, 0), rtol=1e-9, atol=1e-12)


def test_without_random_draws_there_is_no_random_curve(tmp_path, data):
    run(small_cnn(seed=1), data[:3], tmp_path / "r", rules=RULES, layers=["input"], selection=["features.3"],
        selection_draws=0, progress=False)
    names = pq.read_schema(next((tmp_path / "r" / "samples").glob("*.parquet"))).names
    assert [n for n in names if n.startswith("selection/")] == [
        "selection/features.3/relevance/mse", "selection/features.3/relevance/smape",
        "selection/features.3/gradient×input/mse", "selection/features.3/gradient×input/smape"]


def test_the_report_draws_the_averaged_curves(tmp_path, data):
    run(small_cnn(seed=1), data, tmp_path / "r", rules=RULES, layers=["input"], selection=["features.3"],
        batch_size=4, progress=False)
    figs = figures(tmp_path / "r")
    assert "selection-features.3" in figs
    axes = figs["selection-features.3"].axes
    assert [len(ax.get_lines()) for ax in axes] == [3, 3]  # one line per ranking, MSE and SMAPE
    mean = [line.get_ydata() for line in axes[0].get_lines()][0]
    rows = pq.read_table(tmp_path / "r" / "samples").column("selection/features.3/relevance/mse").to_pylist()
    np.testing.assert_allclose(mean, np.mean(rows, 0), rtol=1e-12)
    page = build_report(tmp_path / "r")
    assert (page.parent / "selection-features.3.png").stat().st_size > 1000
    assert "selection-features.3.png" in page.read_text()


@pytest.mark.parametrize("selection, draws, error, words", [
    (["output"], 3, SpecError, "output"),
    (["nope"], 3, nrm.UnknownLayerError, "'nope'"),
    ("features.3", 3, SpecError, "list of names"),
    ([3], 3, SpecError, "list of names"),
    (["features.3"], -1, SpecError, "selection_draws"),
    (["features.3"], 1.5, SpecError, "selection_draws"),
    (["features.3"], True, SpecError, "selection_draws"),
], ids=["output", "unknown", "a string", "not names", "negative draws", "fractional draws", "bool draws"])
def test_a_bad_selection_is_refused_before_anything_is_written(tmp_path, data, selection, draws, error, words):
    model = small_cnn(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=words):
        run(model, data[:2], tmp_path / "r", rules=RULES, selection=selection, selection_draws=draws, progress=False)
    assert not (tmp_path / "r" / "samples").exists() or not any((tmp_path / "r" / "samples").iterdir())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training


def test_the_command_computes_the_curves_and_writes_the_report(tmp_path, data, capsys):
    from nrm_verify.commands.cli import main

    torch.save(data[:4], tmp_path / "d.pt")
    code = main(["run", str(tmp_path / "d.pt"), "--model", "nrm_verify.zoo.models:small_cnn()", "--selection",
                 "features.3", "--full", "--report", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "report:" in out and (tmp_path / "o" / "report" / "selection-features.3.png").exists()
