"""The rule validator (:mod:`nrm_verify.validate`) and its command, on the three example
rules of ``examples/rules`` and on bad input.

* the sound sign-aware γ–ε hybrid passes every applicable law;
* the leaking rule is caught by L1 with a counterexample of at most a handful of neurons;
* the relevance-dependent rule is caught by L7 (and keeps L1);
* every counterexample program, executed, recomputes the law and finds it violated again;
* a bad argument (not a rule, a rule raising inside, a rule returning NaN) gives a clear
  report and an exit status, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nrm
from nrm.rules import Part, Rule, Share, identity
from nrm_verify import validate
from nrm_verify.symbolic.job import ProofJob
from nrm_verify.validate import ERROR, HELD, NOT_APPLICABLE, PROVED, VIOLATED, check_rule, load_rule
from nrm_verify.validate import rules as validate_rules

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "examples" / "rules"
SOUND = f"{RULES / 'sign_aware.py'}:SignAwareGammaEpsilon"
LEAKY = f"{RULES / 'leaky.py'}:BiasDroppingZero"
RELEVANCE = f"{RULES / 'relevance_dependent.py'}:RelevanceGatedZPlus"
GENERAL = ("L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8", "L15", "L16", "L17", "L18", "INV")


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add start-up cost


@pytest.fixture(scope="module")
def sound_report():
    return check_rule(SOUND, symbolic=False)


@pytest.fixture(scope="module")
def leaky_report():
    return check_rule(LEAKY, only=["L1", "L7"], symbolic=False)


@pytest.fixture(scope="module")
def relevance_report():
    return check_rule(RELEVANCE, only=["L1", "L7"], symbolic=False)


def _reproduces(verdict) -> bool:
    """Run the counterexample program in a fresh namespace: does ``result`` show the
    violation again, with the same numbers?"""
    ns: dict = {}
    exec(verdict.counterexample.script, ns)  # noqa: S102
    result = ns["result"]
    same = math.isclose(result.deviation, verdict.counterexample.result.deviation, rel_tol=1e-12, abs_tol=1e-15)
    return result.holds is False and same


# -- the three example rules -----------------------------------------------------------------
def test_the_sound_hybrid_passes_every_applicable_law(sound_report):
    report = sound_report
    assert report.ok and report.exit_code == 0, str(report)
    statuses = {(v.law, v.name): v.status for v in report.verdicts}
    for law in GENERAL:
        checked = [s for (l, _), s in statuses.items() if l == law]
        assert checked and all(s in (HELD, PROVED) for s in checked), (law, checked)
    assert all(v.cases > 0 for v in report.verdicts if v.status in (HELD, PROVED))
    # the laws about other rules say why they do not apply
    for law in ("L9", "L10", "L11", "L12", "L13", "L14"):
        assert all(v.status == NOT_APPLICABLE and v.detail for v in report.verdicts if v.law == law), law


def test_the_leaking_rule_is_caught_by_l1_with_a_tiny_counterexample(leaky_report):
    report = leaky_report
    assert not report.ok and report.exit_code == 1
    for name in ("normalization", "column-stochastic kernels"):
        v = report.verdict("L1", name)
        assert v.status == VIOLATED, str(report)
        c = v.counterexample
        assert c.neurons <= 5, c.script  # a handful of neurons
        assert c.measured is not None and c.expected == 1.0 and abs(c.measured - c.expected) > 1e-3
        assert "result = laws." in c.script and "BiasDroppingZero" in c.script
        assert _reproduces(v)
    assert report.verdict("L7").status in (HELD, PROVED)  # leaking is L1's business, not L7's
    text = str(report)
    assert "VIOLATED" in text and "counterexample for L1 normalization" in text


def test_l15_and_l16_do_not_apply_to_a_relevance_reading_rule():
    report = check_rule(RELEVANCE, only=["L15", "L16"], symbolic=False)
    for law in ("L15", "L16"):
        v = report.verdict(law)
        assert v.status == NOT_APPLICABLE and "reads the incoming relevance" in v.detail, str(report)


def test_the_relevance_dependent_rule_is_caught_by_l7(relevance_report):
    report = relevance_report
    assert report.exit_code == 1
    v = report.verdict("L7")
    assert v.status == VIOLATED, str(report)
    assert _reproduces(v)
    assert v.counterexample.measured != pytest.approx(v.counterexample.expected)
    assert report.verdict("L1", "normalization").status in (HELD, PROVED)  # normalized, but not Markov


def test_counterexample_programs_run_standalone(tmp_path, leaky_report):
    """The printed program also runs as a file in a fresh interpreter."""
    v = leaky_report.verdict("L1", "normalization")
    script = tmp_path / "counterexample.py"
    script.write_text(v.counterexample.script + "\nassert result.holds is False\n", encoding="utf-8")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "VIOLATED" in run.stdout


# -- loading rules -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ("nrm.rules:Zero", nrm.rules.Zero()),
    ("nrm.rules:Epsilon(0.25)", nrm.rules.Epsilon(0.25)),
    ("nrm.rules:Gamma(gamma=0.5, modify_bias=False)", nrm.rules.Gamma(0.5, modify_bias=False)),
    ("nrm.rules:AlphaBeta(2, 1)", nrm.rules.AlphaBeta(2, 1)),
])
def test_load_rule_forms(spec, expected):
    assert load_rule(spec) == expected


def test_load_rule_from_a_file_and_a_factory(tmp_path):
    (tmp_path / "mine.py").write_text(
        "import nrm\n"
        "def make():\n    return nrm.rules.Epsilon(0.125)\n", encoding="utf-8")
    assert load_rule(f"{tmp_path / 'mine.py'}:make()") == nrm.rules.Epsilon(0.125)
    assert type(load_rule(SOUND)).__name__ == "SignAwareGammaEpsilon"


# -- bad input -------------------------------------------------------------------------------------
class RaisingRule(Rule):
    """A rule whose column raises."""

    def __repr__(self):
        return "RaisingRule()"

    def shares(self):
        return (Share((Part(identity, identity),), identity),)

    def column(self, ops, contributions, biases):
        raise ZeroDivisionError("my column divides by zero")


class NaNRule(Rule):
    """A rule whose kernel is NaN."""

    def __repr__(self):
        return "NaNRule()"

    def shares(self):
        return (Share((Part(identity, identity),), identity),)

    def column(self, ops, contributions, biases):
        scales, qbot = super().column(ops, contributions, biases)
        return tuple(s * float("nan") for s in scales), qbot


class BrokenShares(Rule):
    def shares(self):
        raise RuntimeError("shares are not ready")


class WrongShares(Rule):
    def shares(self):
        return ("not a share",)


@pytest.mark.parametrize("bad, message", [
    (42, "expected an nrm.rules.Rule, got a int"),
    (nrm.rules.Zero, "pass an instance"),
    (BrokenShares(), "shares() raised RuntimeError: shares are not ready"),
    (WrongShares(), "must return Share objects"),
    ("nrm.rules:nothing", "has no attribute 'nothing'"),
    ("no_such_module_xyz:Rule", "No module named 'no_such_module_xyz'"),
    ("math:pi", "gives a float"),
    ("nrm.rules:Epsilon(-1.0)", "Epsilon(-1.0) raised RuleParameterError"),
    ("nrm.rules:Epsilon(", "is not a name or a call"),
    ("nrm.rules:Epsilon(x)", "only literal arguments"),
    ("just-a-name", "expected 'package.module:RuleClass'"),
])
def test_not_a_rule_gives_a_clear_report(bad, message):
    report = check_rule(bad, symbolic=False)
    assert report.invalid and message in report.invalid, report.invalid
    assert report.exit_code == 2 and not report.ok
    assert "NOT A USABLE RULE" in str(report)


def test_a_rule_raising_inside_gives_a_clear_report():
    report = check_rule(RaisingRule(), only=["L1"], symbolic=False)
    assert report.exit_code == 1
    v = report.verdict("L1", "normalization")
    assert v.status == ERROR
    assert "ZeroDivisionError: my column divides by zero" in v.detail and "in column" in v.detail
    assert "test_validate.py" in v.detail  # where: the rule's own file
    ns: dict = {}
    with pytest.raises(ZeroDivisionError, match="my column divides by zero"):
        exec(v.counterexample.script, ns)  # noqa: S102 — the program raises it again
    assert "ERROR" in str(report)


def test_a_rule_returning_nan_gives_a_clear_report():
    report = check_rule(NaNRule(), only=["L1"], symbolic=False)
    assert report.exit_code == 1
    v = report.verdict("L1", "normalization")
    assert v.status == VIOLATED and math.isnan(v.counterexample.measured)
    assert "NaN" in v.detail
    assert _reproduces_nan(v)


def _reproduces_nan(verdict) -> bool:
    ns: dict = {}
    exec(verdict.counterexample.script, ns)  # noqa: S102
    return ns["result"].holds is False and math.isnan(ns["result"].deviation)


def test_an_unknown_profile_is_a_clear_report():
    report = check_rule(nrm.rules.Zero(), profile="no-such-profile", symbolic=False)
    assert report.exit_code == 2 and "unknown hypothesis profile" in report.invalid


# -- the symbolic proofs -----------------------------------------------------------------------------
def test_symbolic_proofs_are_merged_law_by_law():
    report = check_rule(nrm.rules.Zero(), only=["L1"], max_examples=4, symbolic_timeout=60)
    v = report.verdict("L1", "normalization")
    assert v.status == PROVED and v.cases > 0 and v.proof.startswith("proved"), (v, report.notes)


def test_a_symbolic_refutation_without_a_numeric_counterexample_is_a_note():
    v = validate.Verdict("L1", "normalization", HELD, cases=5)
    note = validate_rules._merge_symbolic(v, {"L1": ("refuted", "2-2-1 case A: lhs 1.0, rhs 1")})
    assert v.status == HELD and "refuted" in v.proof and "found no counterexample" in note
    w = validate.Verdict("L7", "Markov", HELD, cases=5)
    assert validate_rules._merge_symbolic(w, {"L7": ("proved", "on 2 cases")}) == "" and w.status == PROVED


# -- the command ---------------------------------------------------------------------------------------
def _cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "nrm_verify.commands", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def test_the_command_exits_1_on_a_violation_and_writes_json(tmp_path):
    out = tmp_path / "report.json"
    run = _cli("check-rule", "examples/rules/leaky.py:BiasDroppingZero", "--law", "L1", "--no-symbolic",
               "--json", str(out))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "L1 normalization" in run.stdout and "VIOLATED" in run.stdout and "Traceback" not in run.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    assert not data["ok"] and any(v["status"] == VIOLATED for v in data["verdicts"])


def test_the_command_exits_0_when_the_laws_hold_and_2_for_a_non_rule():
    ok = _cli("check-rule", "nrm.rules:Epsilon(0.25)", "--law", "L1", "--no-symbolic", "--max-examples", "4")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = _cli("check-rule", "math:pi")
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "nrm-verify check-rule: error: 'math:pi' gives a float (3.141592653589793), not an " \
                                 "nrm.rules.Rule"  # one line on stderr, as every usage error


# -- the symbolic layer's budget -------------------------------------------------------------------
def test_a_kernel_beyond_the_symbolic_budget_is_reported_not_settled():
    """The sign-aware hybrid branches on sign(z_k) of an expression built from branches: its
    symbolic kernel is beyond the size budget. The report says so law by law (it used to be
    a RecursionError inside sympy)."""
    job = ProofJob([load_rule(SOUND)], ["L1", "L7"], timeout=120)
    results = job.collect()
    summaries = {law: results.summary(0, law) for law in ("L1", "L7")}
    for status, text in summaries.values():
        assert status == "not settled" and text.startswith("not settled") and "budget" in text, (text, results.note)
        assert "RecursionError" not in text


def test_prove_rule_stops_at_its_time_budget():
    from nrm_verify.symbolic.prove import prove_rule

    proofs = prove_rule(nrm.rules.Zero(), laws=["L1", "L2"], budget=0.0)
    assert proofs and all(p.status == "not settled" and "not proved within the time budget" in p.note for p in proofs)


def test_the_size_budget_is_found_without_recursion():
    import sympy as sp

    from nrm_verify.symbolic.ops import MAX_DEPTH, SymbolicSizeError, sympy_ops, too_large

    deep = sp.Symbol("x", real=True)
    for i in range(3 * MAX_DEPTH):  # nested far deeper than sympy's printer could recurse
        deep = sp.Symbol(f"c{i}", real=True) * (deep + 1)
    assert too_large(deep) and not too_large(sp.Symbol("y") + 1)
    with pytest.raises(SymbolicSizeError, match="budget"):
        sympy_ops().scalars.sign(deep)
