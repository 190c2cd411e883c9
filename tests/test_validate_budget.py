"""The validator's time budgets (issue 12, items 7, 11 and 15): a rule that blocks cannot
keep ``check-rule`` from returning — the search has a wall-clock budget and the laws it
does not reach are "not settled"; unknown law keys are errors; symbolic proofs that end
not settled come with a hint about ``--no-symbolic`` and ``--symbolic-timeout``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nrm.rules import Epsilon
from nrm_verify.validate import NOT_SETTLED, UnknownLaw, check_rule, law_keys, normalize_laws

ROOT = Path(__file__).resolve().parents[1]

RULES = textwrap.dedent('''
    import time

    from nrm.rules import Epsilon, Part, Share, identity


    class Blocking(Epsilon):
        """LRP-ε whose shares() never returns (an hour is forever here)."""

        def shares(self):
            time.sleep(3600)
            return super().shares()


    class TorchOnly(Epsilon):
        """LRP-ε that refuses to be evaluated anywhere but on torch: its symbolic proofs cannot settle."""

        def shares(self):
            def weight(ops, w):
                if ops.name != "torch":
                    raise TypeError("TorchOnly runs on torch tensors only")
                return w
            return (Share((Part(identity, weight),), identity),)


    class Slow(Epsilon):
        """LRP-ε whose shares() takes a while on every call (a rule that waits on I/O, say)."""

        def __init__(self):
            super().__init__(1e-6)
            self.calls = 0

        def shares(self):
            self.calls += 1
            if self.calls > 1:  # the structure check passes; every case after it is slow
                time.sleep(1.5)
            return super().shares()
''')


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "blocking_rules.py"
    path.write_text(RULES, encoding="utf-8")
    return path


def run_cli(*argv: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "nrm_verify.commands", *argv], capture_output=True, text=True, cwd=ROOT,
                         timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return run, time.perf_counter() - start


def test_a_rule_that_blocks_returns_not_settled_within_the_budget(rules_file):
    run, seconds = run_cli("check-rule", f"{rules_file}:Blocking", "--search-timeout", "3", "--no-symbolic")
    assert run.returncode == 0, run.stdout + run.stderr
    assert seconds < 40, seconds  # the budget (3 s) plus start-up, not an hour
    assert "L1 normalization" in run.stdout and "not settled — the rule's shares() did not return" in run.stdout
    assert "not settled: the search's time budget (3 s) ran out" in run.stdout and "--search-timeout" in run.stdout
    assert "L9 LRP-0 = gradient × input" in run.stdout and "not applicable" in run.stdout  # still said


def test_a_slow_rule_is_stopped_inside_a_case_and_the_budget_is_shared(rules_file):
    sys.path.insert(0, str(rules_file.parent))
    try:
        from blocking_rules import Slow
    finally:
        sys.path.remove(str(rules_file.parent))
    start = time.perf_counter()
    report = check_rule(Slow(), search_timeout=4.0, symbolic=False, only=["L1", "L2", "L7"])
    seconds = time.perf_counter() - start
    assert seconds < 4.0 + 3.0, seconds
    statuses = {v.status for v in report.verdicts}
    assert statuses <= {NOT_SETTLED, "held"} and NOT_SETTLED in statuses, str(report)
    assert all(v.seconds < 4.0 for v in report.verdicts), [v.seconds for v in report.verdicts]  # a share each
    assert report.ok and report.exit_code == 0  # nothing was violated; the report says what was not settled
    assert report.to_dict()["search_timeout"] == 4.0


def test_the_default_budget_leaves_a_sound_rule_alone():
    report = check_rule(Epsilon(1e-6), only=["L1"], max_examples=3, symbolic=False)
    assert report.search_timeout == 300.0
    assert all(v.status == "held" and "time budget" not in v.line() for v in report.verdicts), str(report)


@pytest.mark.parametrize("given, expected", [(["l1", "L7", "inv"], ["L1", "L7", "INV"]), (["L1", "l1"], ["L1"])])
def test_law_keys_are_case_insensitive(given, expected):
    assert normalize_laws(given) == expected


@pytest.mark.parametrize("bad", [["L99"], ["l1", "L1x"], ["normalization"]])
def test_unknown_laws_are_errors_naming_the_valid_keys(bad):
    with pytest.raises(UnknownLaw) as info:
        normalize_laws(bad)
    assert all(k in str(info.value) for k in ("L1", "L18", "INV"))
    report = check_rule(Epsilon(1e-6), only=bad, symbolic=False)
    assert report.exit_code == 2 and "unknown law" in report.invalid and not report.verdicts
    assert law_keys()[0] == "L1" and law_keys()[-1] == "INV"


@pytest.mark.parametrize("options, word", [({"max_examples": -5}, "max_examples"),
                                           ({"max_examples": 0}, "max_examples"),
                                           ({"search_timeout": 0}, "search_timeout"),
                                           ({"symbolic_timeout": float("nan")}, "symbolic_timeout")])
def test_bad_options_make_an_invalid_report_not_a_traceback(options, word):
    report = check_rule(Epsilon(1e-6), **options)
    assert report.exit_code == 2 and word in report.invalid


def test_unsettled_symbolic_proofs_come_with_a_hint(rules_file):
    run, _ = run_cli("check-rule", f"{rules_file}:TorchOnly", "--law", "L1", "--max-examples", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    hint = next(line for line in run.stdout.splitlines() if line.startswith("hint:"))
    assert "ended not settled" in hint and "--no-symbolic" in hint and "--symbolic-timeout" in hint and "L1" in hint
    # and the options it names are documented
    doc = (ROOT / "docs" / "validate.md").read_text(encoding="utf-8")
    for option in ("--no-symbolic", "--symbolic-timeout", "--search-timeout"):
        assert option in doc, option
