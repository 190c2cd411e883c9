"""Regression testing at dataset scale (issue 16, item 6): a run's folder is the record;
``compare_run`` / ``nrm-verify snapshot compare RUN`` explains the run's samples again and
finds the samples that moved."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import zarr

import nrm
from nrm_verify.peers import NRMExplainer
from nrm_verify.report.dataset import RunMismatchError, SpecError, compare_run, run
from nrm_verify.report.dataset.report import worst_figure
from nrm_verify.zoo.models import small_cnn

MODEL = "nrm_verify.zoo.models:small_cnn()"


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """A run of small_cnn over 10 seeded inputs with the input heatmaps stored, and the data as a .pt file."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("record")
    x = torch.randn(10, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    torch.save(x, folder / "x.pt")
    run(small_cnn(seed=0), x, folder / "run", rules=nrm.presets.EpsilonGammaFlat(), layers=["input"], full=["input"],
        laws=["L1"], batch_size=5, progress=False)
    return folder, x


@pytest.fixture
def perturbed(record, tmp_path):
    """The record with sample 3's heatmap scaled by 1.5 (deviation 1/3) and one entry of sample 7's
    moved by 1 % of its largest magnitude (deviation 0.01)."""
    folder, x = record
    shutil.copytree(folder / "run", tmp_path / "run")
    heat = zarr.open_group(str(tmp_path / "run" / "arrays.zarr"), mode="a")["marginal/input"]
    heat[3] = np.asarray(heat[3]) * 1.5
    seven = np.asarray(heat[7])
    seven[0, 4, 4] += 0.01 * np.abs(seven).max()
    heat[7] = seven
    return tmp_path / "run", x


def test_the_worst_cases_are_the_perturbed_samples_in_order(perturbed, tmp_path):
    folder, x = perturbed
    result = compare_run(folder, small_cnn(seed=0), x, "nrm:EpsilonGammaFlat", worst=3, batch_size=4)
    assert [s.id for s in result.worst[:2]] == ["3", "7"]
    assert result.worst[0].deviation == pytest.approx(1 / 3, rel=1e-4)
    assert result.worst[1].deviation == pytest.approx(0.01, rel=1e-3)
    assert sorted(s.id for s in result.failures) == ["3", "7"] and result.exit_code == 1
    assert len(result.samples) == 10 and all(s.deviation < 1e-5 for s in result.samples if s.id not in ("3", "7"))
    assert result.quantity == "marginal"

    page = result.write(tmp_path / "cmp")
    summary = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [w["id"] for w in summary["worst"]] == ["3", "7", result.worst[2].id] and summary["failures"] == 2
    table = pq.read_table(tmp_path / "cmp" / "deviations.parquet").to_pydict()
    assert table["id"] == [str(i) for i in range(10)] and table["ok"].count(False) == 2
    assert (tmp_path / "cmp" / "worst.png").stat().st_size > 1000 and "worst.png" in page.read_text()
    figure = worst_figure(result)  # side by side: recorded, current, difference for each of the 3 worst
    assert len(figure.axes) == 9 and figure.axes[0].get_title().startswith("3 recorded")
    assert figure.axes[5].get_title().startswith("7 difference")


def test_a_peer_explainer_is_compared_as_relevance_and_passes_on_the_unchanged_record(record):
    folder, x = record
    result = compare_run(folder / "run", small_cnn(seed=0), x, NRMExplainer(nrm.presets.EpsilonGammaFlat()),
                         worst=2)
    assert result.quantity == "relevance" and result.ok and result.exit_code == 0
    assert max(s.deviation for s in result.samples) < 1e-5 and len(result.worst) == 2


def test_another_model_another_dataset_or_no_heatmaps_is_refused(record, tmp_path):
    folder, x = record
    with pytest.raises(RunMismatchError, match="another model"):
        compare_run(folder / "run", small_cnn(seed=1), x, "nrm:EpsilonGammaFlat")
    with pytest.raises(RunMismatchError, match="another dataset"):
        compare_run(folder / "run", small_cnn(seed=0), x[:9], "nrm:EpsilonGammaFlat")
    run(small_cnn(seed=0), x[:2], tmp_path / "bare", layers=[], laws=[], progress=False)
    with pytest.raises(SpecError, match="recorded no marginal"):
        compare_run(tmp_path / "bare", small_cnn(seed=0), x[:2], "nrm:EpsilonGammaFlat")
    with pytest.raises(RunMismatchError, match="not the folder of a run"):
        compare_run(tmp_path, small_cnn(seed=0), x, "nrm:EpsilonGammaFlat")


def snapshot(capsys, *argv: str) -> tuple[int, str, str]:
    from nrm_verify.commands.cli import main

    try:
        code = main(["snapshot", *argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_snapshot_compare_of_a_run_folder_lists_the_worst_and_fails(perturbed, record, tmp_path, capsys):
    folder, _ = perturbed
    code, out, err = snapshot(capsys, "compare", str(folder), "--model", MODEL, "--data", str(record[0] / "x.pt"),
                              "--explainer", "nrm:EpsilonGammaFlat", "--worst", "2", "--out", str(tmp_path / "c"),
                              "--json", str(tmp_path / "c.json"))
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].endswith("2 beyond tolerance") and lines[2].startswith("  3 (row 3)")
    assert lines[3].startswith("  7 (row 7)") and (tmp_path / "c" / "comparison.html").is_file()
    assert [w["id"] for w in json.loads((tmp_path / "c.json").read_text())["worst"]] == ["3", "7"]


@pytest.mark.parametrize("extra, words", [
    ([], "give --data"),
    (["--data", "DATA", "--cases", "quick"], "--cases is for snapshots"),
    (["--data", "DATA", "--suite", "nrm-core"], "one --explainer"),
    (["--data", "DATA", "--worst", "0"], "--worst"),
])
def test_bad_arguments_for_a_run_folder_are_one_line_and_exit_2(record, capsys, extra, words):
    folder, _ = record
    extra = [str(folder / "x.pt") if e == "DATA" else e for e in extra]
    code, out, err = snapshot(capsys, "compare", str(folder / "run"), "--model", MODEL, "--explainer",
                              "nrm:EpsilonGammaFlat", *extra)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and words in err


@pytest.mark.parametrize("option", [["--data", "x.pt"], ["--engine", "ray"], ["--concurrency", "3"],
                                    ["--worker-cpus", "0.5"]], ids=lambda o: o[0])
def test_run_options_with_a_snapshot_path_are_refused(tmp_path, capsys, option):
    code, out, err = snapshot(capsys, "compare", str(tmp_path / "snap"), *option)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "only go with a run folder" in err
    assert option[0] in err


class OneHotStart:
    """An explainer in the convention of the zennit:… specs (start="one-hot"): under "input" it
    returns R / f_c, which is nrm's marginal m_input."""

    start = "one-hot"

    def __call__(self, model, x, target):
        return {"input": nrm.explain(model, x, target, rules=nrm.presets.EpsilonGammaFlat()).marginal("input")}


def test_an_explainer_that_starts_from_the_one_hot_is_compared_with_the_marginal(record):
    folder, x = record
    result = compare_run(folder / "run", small_cnn(seed=0), x, OneHotStart(), worst=1)
    assert result.quantity == "marginal" and result.ok and max(s.deviation for s in result.samples) < 1e-5
