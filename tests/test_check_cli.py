"""``nrm-verify check`` and :mod:`nrm_verify.validate.conformance`: the report folder (Markdown, HTML,
JSON, figures), the verdict sources, and the exit status (0 nothing violated, 1 a violation,
2 a usage error)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

import nrm
from nrm.rules import Zero
from nrm_verify.commands import main
from nrm_verify.report import conformance as report
from nrm_verify.symbolic.job import ProofOutcome
from nrm_verify.validate import conformance as C
from nrm_verify.validate import load_rule

ROOT = Path(__file__).resolve().parents[1]
LEAKY = f"{ROOT / 'examples' / 'rules' / 'leaky.py'}:BiasDroppingZero"


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add start-up cost


@pytest.fixture(scope="module")
def epsilon_report(tmp_path_factory):
    """One run of ``check --only Epsilon --quick --no-peers`` (symbolic proofs included)."""
    out = tmp_path_factory.mktemp("report")
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["check", "--only", "Epsilon", "--quick", "--no-peers", "--no-progress", "--out", str(out)])
    return code, buf.getvalue(), out


def _assert_image(path: Path, min_height: int, min_width: int) -> None:
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] >= min_height and img.shape[1] >= min_width, img.shape
    rgb = img[..., :3].reshape(-1, 3)
    assert float(rgb.std()) > 0.02, f"{path.name} looks blank"
    assert len(np.unique((rgb * 255).round().astype(int), axis=0)) > 8, f"{path.name} has almost no colours"


def test_report_folder_for_one_rule(epsilon_report):
    code, stdout, out = epsilon_report
    assert code == 0, stdout
    for name in ("report.md", "report.html", "report.json", "matrix.png", "deviations.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "report.json").read_text())
    assert data["ok"] is True and data["exit_code"] == 0
    assert [r["name"] for r in data["rows"]] == ["Epsilon"]
    cells = data["cells"]["Epsilon"]
    assert [c["key"] for c in data["columns"]] == list(C.COLUMNS) + ["PEERS"]
    # L1–L7 are proved symbolically for LRP-ε; the search checked them too
    for law in ("L1", "L2", "L3", "L6", "L7"):
        assert cells[law]["status"] == "proved", (law, cells[law])
        assert cells[law]["symbolic"].startswith("proved")
    assert cells["L10"]["status"] in ("proved", "held")
    assert cells["L8"]["status"] == "held" and cells["L8"]["cases"] >= 1
    assert cells["L8"]["deviation"] is not None and cells["L8"]["deviation"] <= cells["L8"]["tolerance"]
    assert cells["L9"]["status"] == "not applicable" and "LRP-0" in cells["L9"]["detail"]
    for law in ("L15", "L16", "L18"):  # walk relevance, CRP and modularity against their references
        assert cells[law]["status"] == "held" and cells[law]["cases"] >= 1, (law, cells[law])
    assert cells["PEERS"]["status"] == "not checked" and "--no-peers" in cells["PEERS"]["detail"]
    assert data["violated"] == []
    assert "L1" in data["worst_deviations"]


def test_terminal_table_and_text_reports(epsilon_report):
    code, stdout, out = epsilon_report
    lines = stdout.splitlines()
    header = next(line for line in lines if line.strip().startswith("L1"))
    assert all(col in header for col in ("L1", "L10", "L18", "INV", "PEERS"))
    row = next(line for line in lines if line.startswith("Epsilon"))
    assert "proved" in row and "n/a" in row
    assert lines[-1] == "OK"
    md = (out / "report.md").read_text()
    assert "| rule / preset | L1 |" in md and "| Epsilon |" in md and "![pass/fail matrix](matrix.png)" in md
    html = (out / "report.html").read_text()
    assert "<table>" in html and "matrix.png" in html and "Epsilon" in html


def test_figures_are_images_with_content(epsilon_report):
    _, _, out = epsilon_report
    _assert_image(out / "matrix.png", 150, 600)
    _assert_image(out / "deviations.png", 250, 400)


def test_a_leaking_rule_exits_1_with_a_runnable_counterexample(tmp_path, capsys):
    code = main(["check", "--rule", LEAKY, "--quick", "--no-symbolic", "--no-peers", "--no-progress",
                 "--out", str(tmp_path)])
    stdout = capsys.readouterr().out
    assert code == 1, stdout
    assert "VIOLATED BiasDroppingZero L1" in stdout and stdout.splitlines()[-1] == "VIOLATED"
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["ok"] is False and {"row": "BiasDroppingZero", "column": "L1"} in data["violated"]
    script = data["cells"]["BiasDroppingZero"]["L1"]["counterexample"]
    assert "result = laws." in script
    env: dict = {}
    exec(compile(script, "counterexample.py", "exec"), env)  # noqa: S102 — the program the report hands out
    assert env["result"].holds is False
    assert "Runnable counterexample" in (tmp_path / "report.md").read_text()
    _assert_image(tmp_path / "matrix.png", 100, 400)


def test_conformance_api_with_a_broken_rule_and_a_sound_one():
    broken = load_rule(LEAKY)
    result = C.check(rows=[C.Row.of_rule(broken, "leaky"), C.Row.of_rule(Zero(), "zero")], examples=4,
                     symbolic=False, peers=False)
    assert result.exit_code == 1
    assert result.cell("leaky", "L1").status == C.VIOLATED
    assert result.cell("zero", "L1").status == C.HELD and result.cell("zero", "L1").cases >= 1
    assert all(row == "leaky" for row, _ in result.violated)


@pytest.mark.parametrize("argv, message", [
    (["--only", "NoSuchRule"], "unknown rule or preset"),
    (["--rule", "not-a-spec"], "--rule not-a-spec"),
    (["--examples", "0"], "--examples must be at least 1"),
])
def test_usage_errors_exit_2(argv, message, tmp_path, capsys):
    code = main(["check", *argv, "--no-peers", "--no-symbolic", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "report.json").exists()


def test_unknown_profile_is_a_usage_error():
    run = subprocess.run([sys.executable, "-m", "nrm_verify.commands", "check", "--profile", "fast"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "invalid choice: 'fast'" in run.stderr


# -- the sources of verdicts, one at a time -------------------------------------------------------
def _proof(status, expect="holds", law="L1"):
    return ProofOutcome(subject=0, law=law, rule="r", arch="2-2-1", case="A", status=status,
                        expect=expect, good=True, point="x = 1: left 1, right 2")


def test_symbolic_merge():
    cell = C.Cell(status=C.HELD, cases=5, checks=["normalization"])
    C.merge_symbolic(cell, [_proof("proved"), _proof("proved")])
    assert cell.status == C.PROVED and "2 symbolic" in cell.symbolic
    cell = C.Cell(status=C.HELD, cases=5, checks=["normalization"])
    C.merge_symbolic(cell, [_proof("proved"), _proof("refuted")])
    assert cell.status == C.VIOLATED and "left 1, right 2" in cell.symbolic
    cell = C.Cell(status=C.NOT_APPLICABLE, detail="L9 concerns LRP-0")
    C.merge_symbolic(cell, [_proof("refuted", expect="fails", law="L9")])
    assert cell.status == C.NOT_APPLICABLE and "does not extend" in cell.symbolic


def _record(peer, rule, row, equivalence, dev, scale=0.5):
    return {"peer": peer, "row": row, "equivalence": equivalence, "rule": rule, "model": "cnn", "layer": "input",
            "max_abs_dev": dev, "max_abs_relevance": scale}


def test_peer_results_are_merged_per_row(tmp_path):
    path = tmp_path / "deviations.json"
    path.write_text(json.dumps([
        _record("zennit", "Epsilon(0.05)", "Epsilon", True, 1e-16),
        _record("captum", "EpsilonRule(0.05)", "Epsilon", True, 2e-16),
        # a documented convention difference: it speaks for the row, but states no equivalence
        _record("zennit", "ZPlus with nrm ZPlus on signed input", "ZPlus", False, 0.5),
        _record("zennit", "EpsilonPlusFlat (nrm preset)", "EpsilonPlusFlat", True, 1e-16, 1.0),
        # a label that names a row but a record that speaks for none: not the row's evidence
        _record("zennit", "Flat (zennit defaults)", None, True, 0.4),
    ]))
    result = C.Conformance(["Epsilon", "ZPlus", "EpsilonPlusFlat", "Flat"], {})
    rows = [r for r in C.default_rows() if r.name in result.rows]
    failures = [C.PeerFailure("peer_tests.test_zennit::test_nrm_preset_equals_zennit_composite[x-cnn]", "Δ 0.3",
                              ("EpsilonPlusFlat",))]
    C.merge_peers(result, rows, C.read_peer_results(path), failures)
    eps = result.cell("Epsilon", "PEERS")
    assert eps.status == C.HELD and eps.cases == 2 and eps.deviation == pytest.approx(4e-16)
    assert "captum, zennit" in eps.detail
    zplus = result.cell("ZPlus", "PEERS")
    assert zplus.status == C.HELD and zplus.cases == 0 and zplus.deviation is None
    assert result.cell("EpsilonPlusFlat", "PEERS").status == C.VIOLATED
    flat = result.cell("Flat", "PEERS")
    assert flat.status == C.NOT_APPLICABLE and flat.deviation is None
    assert result.exit_code == 1 and not result.failures and not result.notes
    # a failure that speaks for no row of the table (by its id it would look like Flat's) fails the check
    other = C.Conformance(["Flat"], {})
    flat_row = [r for r in rows if r.name == "Flat"]
    C.merge_peers(other, flat_row, [], [("peer_tests.test_zennit::test_single_rule[Flat-cnn]", "boom", ())])
    assert other.failures == ["peer suite: peer_tests.test_zennit::test_single_rule[Flat-cnn]: boom"]
    assert other.cell("Flat", "PEERS").status == C.NOT_APPLICABLE and other.exit_code == 1
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="list of objects"):
        C.read_peer_results(path)


def test_the_check_finds_the_peer_suite_of_its_checkout():
    """ROOT is the checkout (it was nrm_verify/ after the package was grouped by role, and the
    check then reported the peers as not installed); every conformance peer module exists."""
    assert C.ROOT == ROOT
    assert C.PEER_RESULTS == ROOT / "peer_tests" / "results" / "deviations.json"
    assert C.PEER_PYTHON == ROOT / ".venv-peers" / "bin" / "python"
    for name in C.CONFORMANCE_PEER_TESTS:
        assert (ROOT / "peer_tests" / name).is_file(), name


def test_the_peer_job_runs_the_conformance_modules_and_leaves_the_committed_records(tmp_path):
    """A stand-in for .venv-peers' python records what it was asked to run and writes one record
    where $NRM_PEER_RESULTS says: the job passes the conformance modules only, reads the record
    into the PEERS column, removes its own file and never touches the committed deviations.json."""
    args_file = tmp_path / "args.txt"
    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\n"
                    f"printf '%s\\n' \"$@\" > {args_file}\n"
                    "echo '[{\"peer\": \"zennit\", \"row\": \"Epsilon\", \"equivalence\": true, \"rule\": \"e\", "
                    "\"model\": \"cnn\", \"layer\": \"input\", \"max_abs_dev\": 1e-16, \"max_abs_relevance\": 0.5}]' "
                    "> \"$NRM_PEER_RESULTS\"\necho '1 passed'\n")
    fake.chmod(0o755)
    committed = C.PEER_RESULTS.stat().st_mtime_ns if C.PEER_RESULTS.exists() else None
    job = C.PeerJob(True, python=fake)
    result = C.Conformance(["Epsilon"], {})
    job.collect(result, [r for r in C.default_rows() if r.name == "Epsilon"], timeout=60)
    ran = args_file.read_text().split()
    assert [Path(a).name for a in ran if a.endswith(".py")] == list(C.CONFORMANCE_PEER_TESTS)
    cell = result.cell("Epsilon", "PEERS")
    assert cell.status == C.HELD and cell.cases == 1, cell
    assert not job.results.exists()
    assert (C.PEER_RESULTS.stat().st_mtime_ns if C.PEER_RESULTS.exists() else None) == committed


def test_peer_results_of_the_older_format_ask_to_be_regenerated(tmp_path):
    """A deviations.json of free-text labels only (no ``row``): the rows are not checked, and
    a note says how to regenerate the file; a failure that carries its row still counts."""
    old = [{"peer": "zennit", "rule": "Epsilon(0.05)", "model": "cnn", "layer": "input", "max_abs_dev": 1e-16,
            "max_abs_relevance": 0.5}]
    result = C.Conformance(["Epsilon", "Gamma"], {})
    rows = [r for r in C.default_rows() if r.name in result.rows]
    C.merge_peers(result, rows, old, [C.PeerFailure("peer_tests.test_zennit::t", "Δ", ("Gamma",))])
    eps = result.cell("Epsilon", "PEERS")
    assert eps.status == C.NOT_CHECKED and "regenerate" in eps.detail and "pytest peer_tests" in eps.detail
    assert result.notes == [C.UNSTRUCTURED_PEER_RESULTS]
    assert result.cell("Gamma", "PEERS").status == C.VIOLATED


def test_junit_failures_carry_their_rows(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(
        '<testsuites><testsuite><testcase classname="peer_tests.test_zennit" name="test_single_rule[Gamma-cnn]">'
        '<properties><property name="row" value="Gamma"/><property name="other" value="x"/></properties>'
        '<failure message="deviation beyond tolerance"/></testcase>'
        '<testcase classname="peer_tests.test_crp" name="test_sum"><error message="boom"/></testcase>'
        '<testcase classname="peer_tests.test_crp" name="test_ok"><properties><property name="row" value="Zero"/>'
        '</properties></testcase></testsuite></testsuites>')
    assert C.read_junit_failures(path) == [
        C.PeerFailure("peer_tests.test_zennit::test_single_rule[Gamma-cnn]", "deviation beyond tolerance", ("Gamma",)),
        C.PeerFailure("peer_tests.test_crp::test_sum", "boom", ())]
    assert C.read_junit_failures(tmp_path / "missing.xml") == []


def test_missing_peer_environment_is_reported(tmp_path):
    job = C.PeerJob(True, python=tmp_path / "no-python")
    result = C.Conformance(["Zero"], {})
    job.collect(result, [r for r in C.default_rows() if r.name == "Zero"], 1.0)
    assert "peers not installed" in result.sources["peers"]
    assert result.cell("Zero", "PEERS").status == C.NOT_CHECKED
    assert "peers not installed" in result.cell("Zero", "PEERS").detail


def test_rows_and_applicability():
    rows = C.default_rows()
    names = [r.name for r in rows]
    assert names[:8] == ["Zero", "Epsilon", "Gamma", "ZPlus", "AlphaBeta", "WSquare", "Flat", "ZBox"]
    assert set(names[8:]) == set(nrm.presets.PRESETS)
    assert [r.name for r in C.select_rows(["epsilon, zbox"])] == ["Epsilon", "ZBox"]
    box = next(r for r in rows if r.name == "EpsilonGammaBox")
    usable, reasons = C.checks_for(box)
    assert "z^B non-negative" in [c.name for c in usable] and "L10" in reasons
    flat = next(r for r in rows if r.name == "Flat")
    usable, reasons = C.checks_for(flat)
    assert "input independence" in [c.name for c in usable] and "L9" in reasons


def test_terminal_table_marks_violations():
    result = C.Conformance(["A"], {"A": "custom"})
    result.cell("A", "L1").status = C.VIOLATED
    result.cell("A", "L2").status, result.cell("A", "L2").cases = C.HELD, 7
    text = report.terminal_table(result)
    assert "VIOLATED" in text and "held 7" in text
    assert "1 cell(s) VIOLATED" in report.summary(result)
