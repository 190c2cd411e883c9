"""``python -m nrm_verify.report.deviations``: the peer suite's records as the Markdown table the
README and docs/peers.md print (one row per peer, rule and model; worst deviation over the
compared layers), and its errors (one line on stderr, exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys

from nrm_verify.report.deviations import main, table


def _record(peer, rule, model, layer, dev, scale, equivalence=True):
    return {"peer": peer, "row": None, "equivalence": equivalence, "rule": rule, "model": model, "layer": layer,
            "max_abs_dev": dev, "max_abs_relevance": scale}


RECORDS = [
    _record("lxt", "efficient attnlrp", "gpt2 (sdpa)", "input", 1e-18, 1e-3),
    _record("lxt", "efficient attnlrp", "gpt2 (sdpa)", "transformer.h.0", 4e-18, 2e-3),
    _record("lxt-explicit", "explicit cp", "vit (patch 8)", "input", 3e-19, 1e-2),
    _record("zennit", "ZPlus on signed input", "cnn", "input", 0.5, 1.0, equivalence=False),
]


def test_one_row_per_peer_rule_and_model_with_the_worst_layer():
    text = table(RECORDS, ["lxt", "lxt-explicit"])
    lines = text.splitlines()
    assert lines[0].startswith("| peer | rule | model |") and len(lines) == 4  # header, rule, two rows
    gpt2 = next(line for line in lines if "gpt2" in line)
    cells = [c.strip() for c in gpt2.strip("|").split("|")]
    assert cells == ["lxt", "efficient attnlrp", "gpt2 (sdpa)", "equal", "2", "4.0e-18", "2.0e-03", "2.0e-15"]
    assert "zennit" not in text
    assert "a measured difference" in table(RECORDS)


def test_the_command_prints_the_table_of_a_file(tmp_path, capsys):
    path = tmp_path / "deviations.json"
    path.write_text(json.dumps(RECORDS))
    assert main([str(path), "--peer", "lxt"]) == 0
    out = capsys.readouterr().out
    assert "gpt2 (sdpa)" in out and "vit" not in out


def test_a_missing_or_malformed_file_is_one_line_on_stderr_and_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for path in (tmp_path / "missing.json", bad):
        run = subprocess.run([sys.executable, "-m", "nrm_verify.report.deviations", str(path)], capture_output=True,
                             text=True)
        assert run.returncode == 2 and run.stdout == ""
        assert len(run.stderr.strip().splitlines()) == 1 and "pytest peer_tests" in run.stderr
