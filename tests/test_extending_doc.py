"""docs/extending.md runs: every Python block of the page (a rule, a layer kind, a law, a
peer), in order, in one namespace, as a reader would paste them (issue 11). The law it
registers shows up in check_rule and in nrm-verify check's matrix, and is gone after."""

from __future__ import annotations

import re
from pathlib import Path

from nrm_verify.laws import catalogue

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_every_python_block_of_the_page_runs(tmp_path, monkeypatch, single_thread, capsys):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_extending"}
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"{PAGE}:block {i + 1}", "exec"), namespace)  # noqa: S102 — the page's own code
    finally:
        if "L19" in catalogue.keys():
            catalogue.unregister("L19")
    out = capsys.readouterr().out
    assert namespace["report"].ok and namespace["layer_report"].ok
    assert "L19 complement" in out and "held" in out
    assert namespace["matrix"].cell("Epsilon", "L19").status == "held"
    assert "L19" not in catalogue.keys()
    assert namespace["peer"].row == "Zero" and namespace["peer_deviation"] < 1e-12


def test_the_page_names_where_each_thing_goes():
    text = PAGE.read_text(encoding="utf-8")
    for where in ("nrm/rules.py", "nrm/layers/", "nrm_verify/laws/catalogue.py", "nrm_verify/peers/", "proofs/",
                  "peer_tests/"):
        assert where in text, where
    for path in ("nrm/rules.py", "nrm/layers/__init__.py", "nrm_verify/laws/catalogue.py",
                 "nrm_verify/properties/draws.py", "nrm_verify/symbolic/laws.py"):
        assert (PAGE.parents[1] / path).is_file(), path
