"""What a failing test shows (issue 12, item 14): ``assert report.ok, report`` in pytest
prints the verdict (pytest keeps the two ends of a long repr, so a report's repr starts and
ends with its summary), and a failing ``assert_laws`` stays readable on a model with
thousands of input neurons (long neuron lists abbreviated, lines and the message capped)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from torch import nn

import nrm
from nrm.rules import Part, Rule, Share, identity
from nrm_verify.properties import abbreviate
from nrm_verify.pytest_plugin import assert_laws
from nrm_verify.report.snapshots import CaseResult, Comparison
from nrm_verify.validate import VIOLATED, RuleReport, Verdict

USER_TEST = '''
from nrm_verify.report.snapshots import CaseResult, Comparison
from nrm_verify.validate import VIOLATED, RuleReport, Verdict


def test_rule_report():
    report = RuleReport("mypkg.rules:Leaky", verdicts=[
        Verdict("L1", "normalization", VIOLATED, detail="measured 0, expected 1 " + "x" * 3000),
        Verdict("L7", "Markov", "held", cases=20)])
    assert report.ok, report


def test_comparison():
    bad = CaseResult("eps", "small_cnn", 1e-10, 0.0, max_abs=0.04, abs_at="absorbed/input[0]", max_rel=1.42,
                     rel_at="absorbed/input[0]", exceeded=["absorbed/input: max |Δ| 0.0415 > atol 0 + rtol 1e-10"])
    report = Comparison("snaps/eps", [CaseResult("eps", "mlp", 1e-10, 0.0), bad] * 40, {"nrm": "0.1.0"})
    assert report.ok, report
'''


def test_pytest_shows_the_verdict_of_a_failing_report(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TEST), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "RuleReport(mypkg.rules:Leaky): 1 law check(s) violated or raising (L1)" in out, out
    assert "1 law check(s) violated or raising (L1); print(report) for the whole report" in out, out
    assert "Comparison(snaps/eps): FAILED 40 of 80: eps @ small_cnn, eps @ small_cnn, eps @ small_cnn, …" in out
    assert "FAILED 40 of 80" in out.split("Comparison(snaps/eps)")[1]  # at both ends


def test_the_repr_holds_the_report_capped():
    verdicts = [Verdict("L1", f"check {i}", VIOLATED, detail="x" * 5000) for i in range(40)]
    report = RuleReport("r", verdicts=verdicts)
    text = repr(report)
    assert text.splitlines()[0] == "RuleReport(r): 40 law check(s) violated or raising (L1)"
    assert len(text) < 12_000 and max(len(line) for line in text.splitlines()) < 700
    assert "more characters" in text
    ok = Comparison("s", [CaseResult("e", "c", 1e-10, 0.0)], {})
    assert repr(ok).splitlines()[0] == "Comparison(s): OK: 1 results within their tolerance"


class _Leaky(Rule):
    """LRP-0 that drops the bias share: every column leaks (L1, L2, L3, … fail)."""

    def shares(self):
        return (Share((Part(identity, identity),), identity),)

    def column(self, ops, contributions, biases):
        scales, _ = super().column(ops, contributions, biases)
        return scales, ops.zeros_like(contributions[0])


def test_a_failing_assert_laws_on_a_large_input_is_readable(single_thread):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3072, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.05)
    x = torch.randn(1, 3072, generator=g, dtype=torch.float64)
    try:
        assert_laws(model, x, 0, _Leaky())
    except AssertionError as e:
        message, results = str(e), e.results
    else:
        raise AssertionError("the leaking rule passed")
    lines = message.splitlines()
    assert "L1 normalization: VIOLATED" in message
    assert len(message) < 20_000 and max(len(line) for line in lines) <= abbreviate.LINE + 40, \
        (len(message), max(len(line) for line in lines))
    assert "neurons)" in message and "laws_on_case" in message  # lists shortened, and where the full calls are
    assert any(len(code) > 5000 for code, _ in results)  # the full calls are kept on the error
    assert nrm.explain(model, x, 0, rules=nrm.rules.Zero()).f.isfinite().all()


def test_abbreviations():
    long = "At('input', index=[" + ", ".join(map(str, range(64))) + "])"
    assert abbreviate.lists(long) == "At('input', index=[0, 1, 2, …, 63] (64 neurons))"
    assert abbreviate.lists("channels=[0, 1, 2, 3, 4, 5, 6, 7, 8]") == "channels=[0, 1, 2, …, 8] (9 channels)"
    assert abbreviate.lists("index=[0, 1, 2, 3, 4, 5, 6, 7]") == "index=[0, 1, 2, 3, 4, 5, 6, 7]"  # short: kept
    assert abbreviate.lists("[0.5, -1e-3, 2, 3, 4, 5, 6, 7, 8.25]") == "[0.5, -1e-3, 2, …, 8.25] (9 entries)"
    assert abbreviate.line("x" * 450) == "x" * 400 + "… (50 more characters)"
    assert abbreviate.text("a\n" * 10, limit=6).splitlines()[-1] == "… (7 more lines)"
