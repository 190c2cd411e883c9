"""The report of a run (issue 16, item 7): box plots of the absorbed mass per layer, the law
residual histograms and the top samples per channel, as figures, PNGs and an HTML page."""

from __future__ import annotations

import json

import pytest
import torch

import nrm
from nrm_verify.report.dataset import build_report, figures, run
from nrm_verify.zoo.models import small_cnn


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("report") / "run"
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = run(small_cnn(seed=0), x, folder, rules=nrm.presets.EpsilonGammaFlat(), layers=["input", "features.3"],
                 full=["input"], laws=["L1", "L9"], channel_top_k=3, batch_size=4, progress=False)
    return folder, result


def test_the_figures_hold_one_box_per_layer_one_histogram_per_law_and_channels_by_k_samples(finished):
    folder, result = finished
    manifest = json.loads((folder / "manifest.json").read_text())
    figs = figures(folder, channels=2)
    assert sorted(figs) == ["absorbed", "residuals", "top-features.3", "top-input"]
    (box,) = figs["absorbed"].axes
    assert [t.get_text() for t in box.get_xticklabels()] == manifest["layers"]
    assert len(box.get_xticks()) == len(manifest["layers"]) > 3

    l1, l9 = figs["residuals"].axes
    assert "L1" in l1.get_title() and "L9" in l9.get_title()
    assert sum(p.get_height() for p in l1.patches) == 8  # every sample's L1 residual is in [0, 1]
    assert sum(p.get_height() for p in l9.patches) == result.reductions["l9_histogram"].counts.sum()

    top = result.reductions["channel_top/features.3"]
    grid = figs["top-features.3"].axes
    assert len(grid) == 2 * 3  # 2 channels shown, 3 samples each
    for c in range(2):
        for j in range(3):
            assert grid[3 * c + j].get_title().split()[0] == str(top.rows[c, j])
            assert len(grid[3 * c + j].images) == 1  # the input heatmap the run stored
    assert len(figs["top-input"].axes) == 2 * 3


def test_without_stored_heatmaps_or_data_the_grid_names_the_samples(tmp_path):
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    result = run(small_cnn(seed=0), x, tmp_path / "run", layers=["features.3"], laws=[], channel_top_k=2,
                 progress=False)
    figs = figures(tmp_path / "run", channels=1)
    assert sorted(figs) == ["absorbed", "top-features.3"]  # no law checked: no residual histogram
    first = figs["top-features.3"].axes[0]
    assert first.texts[0].get_text() == str(result.reductions["channel_top/features.3"].rows[0, 0])
    with_data = figures(tmp_path / "run", data=x, channels=1)["top-features.3"].axes[0]
    assert len(with_data.images) == 1 and with_data.images[0].get_array().shape == (16, 16, 3)


def test_build_report_writes_the_page_and_its_figures(finished, tmp_path):
    folder, _ = finished
    page = build_report(folder, tmp_path / "rep", channels=2)
    assert page == tmp_path / "rep" / "index.html"
    text = page.read_text()
    for name in ("absorbed", "residuals", "top-input", "top-features.3"):
        assert (tmp_path / "rep" / f"{name}.png").stat().st_size > 1000 and f"'{name}.png'" in text
    assert "worst L1 residuals" in text and text.count("<tr>") == 1 + 8


def report(capsys, *argv: str) -> tuple[int, str, str]:
    from nrm_verify.commands.cli import main

    try:
        code = main(["report", *argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_nrm_verify_report_writes_into_the_run_folder(finished, capsys):
    folder, _ = finished
    code, out, err = report(capsys, str(folder), "--channels", "1")
    assert code == 0, err
    assert out.strip().endswith("report/index.html") and (folder / "report" / "top-input.png").is_file()


@pytest.mark.parametrize("argv, words", [
    (["NOT_A_RUN"], "is not the folder of a run"),
    (["RUN", "--channels", "0"], "--channels"),
    (["RUN", "--data", "no/such/file.pt"], "no such folder or file"),
    ([], "required"),
])
def test_bad_arguments_are_one_line_and_exit_2(finished, tmp_path, capsys, argv, words):
    folder, _ = finished
    argv = [str(folder) if a == "RUN" else str(tmp_path) if a == "NOT_A_RUN" else a for a in argv]
    code, out, err = report(capsys, *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and words in err


def test_the_readme_two_commands_analyse_a_folder_of_images_and_open_its_report(tmp_path, capsys, monkeypatch):
    """README's two lines, with a folder of 5 PNGs, the small CNN for net.pt and 16×16 images."""
    import re
    import webbrowser
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from nrm_verify.commands.cli import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    first, second = re.search(r"two commands.*?```bash\n(.*?)\n(.*?)\n```", readme, re.S).groups()
    assert first == "nrm-verify run images/ --model net.pt --out runs/net"
    assert second == "nrm-verify report runs/net --open"
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for k in range(5):
        Image.fromarray(rng.integers(0, 255, (18, 18, 3), dtype=np.uint8)).save(tmp_path / "images" / f"im{k}.png")
    monkeypatch.chdir(tmp_path)
    opened = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    small = "nrm_verify.zoo.models:small_cnn()"
    assert main(first.replace("net.pt", small).split()[1:] + ["--size", "16", "--quiet"]) == 0
    assert main(second.split()[1:]) == 0, capsys.readouterr().err
    assert opened == [(tmp_path / "runs" / "net" / "report" / "index.html").as_uri()]
    grid = figures("runs/net", channels=1)["top-input"].axes
    assert grid[0].images[0].get_array().shape == (16, 16, 3)  # the images, read again from the folder
    assert grid[0].get_title().split()[0].startswith("im")
