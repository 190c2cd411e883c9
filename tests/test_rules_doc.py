"""docs/rules.md ("Writing a rule") runs: every Python block of the page, in order, in one
namespace, as a reader would paste them (issue 12, item 16)."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def test_every_python_block_of_the_page_runs(tmp_path, monkeypatch, single_thread, capsys):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_rules"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{PAGE}:block {i + 1}", "exec"), namespace)  # noqa: S102 — the page's own code
    out = capsys.readouterr().out
    assert "WPower(2)" in out and "no law violated" in out
    assert namespace["report"].ok


def test_the_page_names_every_operation_of_the_vocabulary():
    import nrm.ops

    text = PAGE.read_text(encoding="utf-8")
    operations = [n for n in vars(nrm.ops.Ops) if not n.startswith("_")]
    assert {"sqrt", "abs", "pow"} <= set(operations)
    for name in operations:
        assert f"`{name}(" in text, name
    for word in ("Share", "Part", "column", "parameters", "reads_relevance", "stabilizer_sign", "leak"):
        assert word in text, word
