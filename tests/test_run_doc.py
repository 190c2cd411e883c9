"""docs/run.md runs: its Python blocks, in order, in one namespace, in a fresh folder, as a
reader would paste them; the numbers the page prints are the ones it shows."""

from __future__ import annotations

import re
from pathlib import Path

import torch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "run.md"


def test_every_python_block_of_the_page_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": "docs_run"}
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"{PAGE}:block {i + 1}", "exec"), namespace)  # noqa: S102 — the page's own code
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "40 0"
    assert "40 (40, 3, 16, 16) (8, 3, 16, 16)" in lines
    assert namespace["top"].rows.shape == (16, 8) and namespace["worst"]["l1_residual"] < 1e-5
    assert (tmp_path / "runs" / "demo" / "manifest.json").is_file()
    assert lines[-4:] == ["runs/demo/report/index.html", "True 40", "False ['15', '1', '13']",
                          "runs/demo-vs-epsilonplus/comparison.html"]
    for name in ("absorbed", "residuals", "top-input", "top-features.3"):
        assert (tmp_path / "runs" / "demo" / "report" / f"{name}.png").is_file()
    assert (tmp_path / "runs" / "demo-vs-epsilonplus" / "worst.png").is_file()
