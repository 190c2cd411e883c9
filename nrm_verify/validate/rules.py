"""Check a new propagation rule against the laws of the measure (NRM-SPEC §4).

    from nrm_verify.validate.rules import check_rule
    report = check_rule(MyRule(0.5))          # or check_rule("mypkg.rules:MyRule")
    print(report)                             # law by law
    report.ok                                 # no law violated, nothing raised

and on the command line ``nrm-verify check-rule mypkg.rules:MyRule`` (exit status 1 on a
violation, 2 when the argument is not a rule).

For every law the report says one of

* **proved** — the symbolic layer (:mod:`nrm_verify.symbolic`) proved it for this rule on
  its symbolic networks (and the search below found no counterexample either);
* **held on N cases** — a hypothesis search over :mod:`nrm_verify.properties.strategies` (networks
  with the rule on every layer or mixed with built-in rules, inputs, events, walks)
  found no violation in N cases where the law applied;
* **violated** — with the shrunk counterexample as a runnable program (it rebuilds the
  network with its exact weights, the input and the events, and recomputes the law into
  ``result``), the measured and the expected numbers, and the size of the network;
* **not applicable** — with the reason (the law concerns another rule, or its
  preconditions never held on the generated cases);
* **error** — the rule raised (or returned something unusable) on a case: the exception,
  where it was raised, and the program that raises it again.

Where the rule is placed: everywhere, or on some layers with built-in rules on the
others; only on the first layer if it declares ``input_layer_only``; on non-negative
inputs and ReLU networks if it declares ``requires_nonnegative_input``
(:class:`nrm_verify.properties.checks.Context`). Which arguments each law gets is in
:mod:`nrm_verify.properties.checks`. The search runs with one torch thread (restored afterwards),
and the symbolic proofs run in a forked child process at the same time.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from hypothesis import settings
from hypothesis.errors import HypothesisException

from nrm.rules import Part, Rule, Share
from nrm_verify.laws import catalogue
from nrm_verify.laws.catalogue import CHECKS
from nrm_verify.laws.status import ERROR, HELD, NOT_APPLICABLE, NOT_SETTLED, PROVED, REFUTED, VIOLATED
from nrm_verify.properties import abbreviate, specs
from nrm_verify.properties.checks import Context, default_events, laws_on_case
from nrm_verify.symbolic.job import ProofJob, ProofResults
from nrm_verify.validate.deadline import OutOfTime, alarm
from nrm_verify.validate.search import (
    Counterexample,
    Verdict,
    law_order,
    run_check,
    search_settings,
)

REPR_LIMIT = 8000
"""Characters of a report's repr at most (its str is the whole report)."""
SEARCH_TIMEOUT = {"ci": 300.0, "thorough": 3600.0}
"""Seconds the property search of one rule may take by default, per profile (300 s for
others): shared fairly among the laws, the time one law leaves unused going to the next.
A law whose search the budget cuts short is reported "not settled" (or "held" on the
cases it did check); a rule that blocks cannot keep ``check_rule`` from returning."""





# -- the report ---------------------------------------------------------------------------------
@dataclass
class RuleReport:
    """The validator's verdicts for one rule, law by law."""

    rule: str
    verdicts: list[Verdict] = field(default_factory=list)
    invalid: str = ""
    profile: str = "ci"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    search_timeout: float = math.inf
    symbolic_wait: float = 0.0
    """Seconds spent waiting for the symbolic proofs after the search had finished."""
    symbolic_unsettled: list[str] = field(default_factory=list)
    """Laws whose symbolic proof ended not settled (beyond its budget, or undecided)."""

    @property
    def ok(self) -> bool:
        return not self.invalid and not any(v.failed for v in self.verdicts)

    @property
    def exit_code(self) -> int:
        """0 when no law is violated, 1 on a violation or an error of the rule, 2 when the
        input is not a rule at all."""
        if self.invalid:
            return 2
        return 0 if self.ok else 1

    def verdict(self, law: str, name: str | None = None) -> Verdict:
        for v in self.verdicts:
            if v.law == law and (name is None or v.name == name):
                return v
        raise KeyError(f"no verdict for {law} {name or ''}".strip())

    def violated(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.failed]

    command: ClassVar[str] = "check-rule"
    unusable: ClassVar[str] = "NOT A USABLE RULE"

    def __str__(self) -> str:
        lines = [f"nrm-verify {self.command}: {self.rule}"]
        if self.invalid:
            lines.append(f"{self.unusable}: {self.invalid}")
            return "\n".join(lines)
        lines.append(f"profile {self.profile!r}, {self.seconds:.1f} s")
        lines += [f"note: {n}" for n in self.notes]
        lines.append("")
        width = max((len(f"{v.law} {v.name}") for v in self.verdicts), default=10)
        for v in self.verdicts:  # what a person reads is abbreviated; the counterexample programs below are not
            lines.append(abbreviate.line(f"  {f'{v.law} {v.name}':<{width}}  {abbreviate.lists(v.line())}", 600))
        bad = self.violated()
        lines.append("")
        lines.append(f"{len(bad)} law(s) violated or raising" if bad else "no law violated")
        lines += self.hints()
        for v in bad:
            if v.counterexample is None:
                continue
            lines.append("")
            lines.append(f"--- counterexample for {v.law} {v.name} ({v.counterexample.neurons} neurons) ---")
            if v.status == ERROR:
                lines.append(f"# {v.detail}")
            lines.append(v.counterexample.script.rstrip())
        return "\n".join(lines)

    def summary(self) -> str:
        """The verdict in one line: what was violated, or that nothing was."""
        if self.invalid:
            return f"not a usable rule: {self.invalid}"
        bad = self.violated()
        if bad:
            laws = sorted({v.law for v in bad}, key=law_order)
            return f"{len(bad)} law check(s) violated or raising ({', '.join(laws)})"
        open_laws = self.not_settled()
        return "no law violated" + (f", {len(open_laws)} not settled" if open_laws else "")

    def __repr__(self) -> str:
        """The summary first and last (pytest shows the two ends of a long repr, as in
        ``assert report.ok, report``), the report between them, abbreviated."""
        head = abbreviate.line(f"RuleReport({self.rule}): {self.summary()}", 110)
        tail = abbreviate.line(f"{self.summary()}; print(report) for the whole report", 110)
        return f"{head}\n{abbreviate.text(str(self), limit=REPR_LIMIT)}\n{tail}"

    def not_settled(self) -> list[Verdict]:
        """The laws whose search the time budget cut short before a case was checked."""
        return [v for v in self.verdicts if v.status == NOT_SETTLED]

    def hints(self) -> list[str]:
        """What to do about laws left not settled, by the search or by the symbolic proofs."""
        out = []
        open_laws = self.not_settled()
        if open_laws:
            out.append(f"{len(open_laws)} law check(s) not settled: the search's time budget "
                       f"({self.search_timeout:g} s) ran out; give it more with --search-timeout SECONDS "
                       "(search_timeout= in Python)")
        if self.symbolic_unsettled:
            waited = f", {self.symbolic_wait:.0f} s of it after the search had finished" if self.symbolic_wait >= 1 \
                else ""
            out.append(f"hint: the symbolic proofs of {len(self.symbolic_unsettled)} law(s) "
                       f"({', '.join(self.symbolic_unsettled)}) ended not settled{waited}; --no-symbolic skips them "
                       "(the search alone decides), --symbolic-timeout SECONDS changes their budget "
                       "(symbolic=False / symbolic_timeout= in Python)")
        return out

    def to_dict(self) -> dict:
        return {
            "rule": self.rule, "ok": self.ok, "invalid": self.invalid, "profile": self.profile,
            "seconds": self.seconds, "notes": self.notes, "search_timeout": self.search_timeout,
            "symbolic_wait": self.symbolic_wait, "symbolic_unsettled": self.symbolic_unsettled,
            "verdicts": [{
                "law": v.law, "name": v.name, "status": v.status, "cases": v.cases, "skipped": v.skipped,
                "detail": v.detail, "proof": v.proof, "seconds": v.seconds,
                "counterexample": None if v.counterexample is None else {
                    "script": v.counterexample.script, "call": v.counterexample.call,
                    "measured": v.counterexample.measured, "expected": v.counterexample.expected,
                    "neurons": v.counterexample.neurons,
                    "deviation": None if v.counterexample.result is None else v.counterexample.result.deviation,
                },
            } for v in self.verdicts],
        }


# -- law keys -----------------------------------------------------------------------------------
def law_keys() -> list[str]:
    """Every law key ``check-rule`` knows (L1 … L18, INV and registered laws), in the
    catalogue's order."""
    return sorted({c.law for c in catalogue.checks("rule")}, key=law_order)


def normalize_laws(names: Sequence[str]) -> list[str]:
    """Law keys as the validator spells them: case does not matter (``l1`` is L1, ``inv``
    is INV); an unknown key raises :class:`UnknownLaw` naming the valid ones."""
    known = {k.upper(): k for k in law_keys()}
    out, unknown = [], []
    for name in names:
        key = known.get(str(name).strip().upper())
        if key is None:
            unknown.append(str(name))
        elif key not in out:
            out.append(key)
    if unknown:
        raise UnknownLaw(f"unknown law {', '.join(map(repr, unknown))}; the laws are {', '.join(law_keys())} "
                         "(case does not matter)")
    return out


class UnknownLaw(ValueError):
    """A law key that names no law (a typo must not give a green run)."""


# -- loading a rule -----------------------------------------------------------------------------
class InvalidRule(specs.RuleSpecError):
    """The validator's input is not a rule it can check (the message says why)."""


def load_rule(spec: str) -> Rule:
    """A rule from ``"package.module:RuleClass"`` (instantiated without arguments),
    ``"package.module:factory()"``, ``"package.module:RuleClass(0.5, eps=1e-3)"``
    (literal arguments only) or ``"path/to/file.py:…"`` in any of these forms
    (:func:`nrm_verify.properties.specs.user_rule`); :class:`InvalidRule` says what is wrong."""
    try:
        return specs.user_rule(spec)
    except specs.RuleSpecError as e:
        raise InvalidRule(str(e)) from None


def rule_problem(rule) -> str:
    """Why ``rule`` cannot be run at all ('' when it can)."""
    if isinstance(rule, type) and issubclass(rule, Rule):
        return f"{rule.__name__} is a rule class; pass an instance, e.g. {rule.__name__}()"
    if not isinstance(rule, Rule):
        return f"expected an nrm.rules.Rule, got {specs.describe(rule)}"
    try:
        shares = rule.shares()
    except Exception as e:
        return f"{type(rule).__name__}.shares() raised {type(e).__name__}: {e}"
    if not isinstance(shares, (tuple, list)) or not shares:
        return f"{type(rule).__name__}.shares() must return a non-empty tuple of nrm.rules.Share, got {shares!r:.80}"
    for s in shares:
        if not isinstance(s, Share) or not s.parts or not all(isinstance(p, Part) for p in s.parts):
            return f"{type(rule).__name__}.shares() must return Share objects with a tuple of Part, got {s!r:.80}"
        if s.bias is not None and not callable(s.bias):
            return f"a Share's bias must be a function (ops, b) or None, got {s.bias!r:.60}"
        for p in s.parts:
            if not callable(p.input) or not callable(p.weight):
                return f"a Part's input and weight must be functions (ops, x), got {p!r:.80}"
    return ""


# -- symbolic proofs ---------------------------------------------------------------------------
def _merge_symbolic(verdict: Verdict, symbolic: dict[str, tuple[str, str]]) -> str:
    """Fold the symbolic layer's result for the verdict's law into it; returns a note when
    the two disagree. A proof upgrades "held" to "proved". A symbolic refutation is
    recorded but does not by itself make the law violated: a violation is reported with a
    runnable counterexample, and the symbolic point has none — the disagreement is noted."""
    if verdict.law not in symbolic:
        return ""
    status, note = symbolic[verdict.law]
    if status == PROVED:
        verdict.proof = f"proved ({note})"
        if verdict.status == HELD:
            verdict.status = PROVED
        elif verdict.status == VIOLATED:
            return f"{verdict.law}: proved symbolically but violated numerically ({verdict.name}); " \
                   "the symbolic networks may not cover the counterexample's structure"
    elif status == REFUTED:
        verdict.proof = f"refuted: {note}"
        if verdict.status in (HELD, PROVED):
            return f"{verdict.law}: the symbolic layer refutes it but the search found no counterexample " \
                   f"({verdict.name}); see its point: {note[:200]}"
    elif status == NOT_SETTLED:
        verdict.proof = note if note.startswith("not ") else f"not settled ({note})"
    elif status == NOT_APPLICABLE and note:
        verdict.proof = f"not applicable ({note})"
    return ""


def _start_proofs(rule, wanted: list[str], timeout: float) -> tuple[ProofJob | None, str]:
    """The symbolic proofs of the laws in ``wanted`` that have a symbolic form, started in
    a child process (None and why when there is nothing to start)."""
    laws = [k for k in wanted if k in {law.key for law in catalogue.symbolic_laws()}]
    if not laws:
        return None, ""
    if getattr(rule, "reads_relevance", False):
        return None, "symbolic proofs skipped: the rule reads the incoming relevance (no fixed symbolic kernel)"
    job = ProofJob([rule], laws, timeout)
    return (job, "") if job.started_child else (None, job.note)


def _merge_proofs(report: RuleReport, job: ProofJob) -> None:
    """Wait for the proofs and fold them into the report's verdicts."""
    searched = time.perf_counter()
    results: ProofResults = job.collect()
    report.symbolic_wait = time.perf_counter() - searched
    symbolic = {law: results.summary(0, law) for law in job.laws}
    report.symbolic_unsettled = [law for law in job.laws if symbolic[law][0] == NOT_SETTLED]
    for v in report.verdicts:
        disagreement = _merge_symbolic(v, symbolic)
        if disagreement and disagreement not in report.notes:
            report.notes.append(disagreement)
    if results.note:
        report.notes.append(results.note)


# -- the validator ------------------------------------------------------------------------------
def check_rule(rule: Rule | str, *, profile: str | None = None, max_examples: int | None = None,
               only: Sequence[str] | None = None, symbolic: bool = True,
               symbolic_timeout: float = 40.0, search_timeout: float | None = None) -> RuleReport:
    """Check ``rule`` (a :class:`nrm.rules.Rule`, or a spec string as :func:`load_rule`
    takes) against every law; returns a :class:`RuleReport`. Never raises for a bad rule:
    the report says what was wrong.

    ``profile`` is a hypothesis profile ("ci" by default, "thorough" for long searches;
    the environment variable HYPOTHESIS_PROFILE is used when not given);
    ``max_examples`` overrides its number of cases per law; ``only`` restricts the laws
    (e.g. ``["L1", "L7"]``, case does not matter; an unknown key makes the report
    invalid); ``symbolic`` runs the symbolic proofs in a child process for at most
    ``symbolic_timeout`` seconds, in parallel with the search; ``search_timeout`` bounds
    the property search in seconds (default :data:`SEARCH_TIMEOUT` of the profile; None
    there, or ``math.inf``, for no bound): laws it does not reach are "not settled"."""
    start = time.perf_counter()
    profile = profile or os.environ.get("HYPOTHESIS_PROFILE") or "ci"
    try:
        settings.get_profile(profile)
    except HypothesisException:
        return RuleReport(_safe_repr(rule), invalid=f"unknown hypothesis profile {profile!r}; use 'ci' or 'thorough'")
    label = rule if isinstance(rule, str) else _safe_repr(rule)
    problem = _options_problem(max_examples, symbolic_timeout, search_timeout)
    if not problem and only is not None:
        try:
            only = normalize_laws([only] if isinstance(only, str) else only)
        except UnknownLaw as e:
            problem = str(e)
    if problem:
        return RuleReport(label, invalid=problem, profile=profile)
    budget = SEARCH_TIMEOUT.get(profile, SEARCH_TIMEOUT["ci"]) if search_timeout is None else float(search_timeout)
    deadline = start + budget
    if isinstance(rule, str):
        try:
            rule = load_rule(rule)
        except InvalidRule as e:
            return RuleReport(label, invalid=str(e), profile=profile)
    try:
        with alarm(deadline):
            problem = rule_problem(rule)
    except OutOfTime:
        return _not_settled(rule, label, profile, only, budget, start)
    if problem:
        return RuleReport(label, invalid=problem, profile=profile)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: thread start-up costs far more than it saves
    try:
        report = _check(rule, label, profile, max_examples, only, symbolic, symbolic_timeout, deadline)
    finally:
        torch.set_num_threads(threads)
    report.seconds = time.perf_counter() - start
    report.search_timeout = budget
    return report


def _options_problem(max_examples, symbolic_timeout, search_timeout) -> str:
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                     or max_examples < 1):
        return f"max_examples must be a whole number >= 1, got {max_examples!r}"
    for name, value in (("symbolic_timeout", symbolic_timeout), ("search_timeout", search_timeout)):
        if value is None and name == "search_timeout":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
            return f"{name} must be a number of seconds > 0, got {value!r}"
    return ""


def _not_settled(rule, label, profile, only, budget, start) -> RuleReport:
    """Every law "not settled": the rule's shares() did not return within the budget."""
    report = RuleReport(label, profile=profile, search_timeout=budget)
    detail = f"the rule's shares() did not return within the {budget:g} s time budget (a blocking rule?)"
    for check in CHECKS:
        if not only or check.law in only:
            try:  # a predicate may read the rule's shares() again (L18's explicit reference): 1 s each
                with alarm(time.perf_counter() + 1.0):
                    reason = check.applies(rule)
            except OutOfTime:
                reason = ""
            report.verdicts.append(Verdict(check.law, check.name, NOT_APPLICABLE if reason else NOT_SETTLED,
                                           detail=reason or detail))
    report.verdicts.sort(key=lambda v: law_order(v.law))
    report.seconds = time.perf_counter() - start
    return report


def _check(rule, label, profile, max_examples, only, symbolic, symbolic_timeout,
           deadline: float = math.inf) -> RuleReport:
    report = RuleReport(label, profile=profile)
    ctx = Context.of(rule)
    hyp = search_settings(profile, max_examples)
    checks = [c for c in catalogue.checks("rule") if not only or c.law in only]
    wanted = sorted({c.law for c in checks if not c.applies(rule)}, key=law_order)
    job, note = _start_proofs(rule, wanted, symbolic_timeout) if symbolic else (None, "")
    runnable = [c for c in checks if not c.applies(rule)]
    for check in checks:
        reason = check.applies(rule)
        if reason:
            report.verdicts.append(Verdict(check.law, check.name, NOT_APPLICABLE, detail=reason))
            continue
        now = time.perf_counter()
        share = now + max(0.0, deadline - now) / (len(runnable) - runnable.index(check))  # a fair share of what is left
        report.verdicts.append(run_check(check, ctx, hyp, share))
    if job is not None:
        _merge_proofs(report, job)
    if note:
        report.notes.append(note)
    if not symbolic:
        report.notes.append("symbolic proofs not run (symbolic=False)")
    report.verdicts.sort(key=lambda v: law_order(v.law))
    return report


def _safe_repr(obj) -> str:
    try:
        return repr(obj)
    except Exception as e:  # noqa: BLE001
        return f"<{type(obj).__name__} whose repr raised {type(e).__name__}>"



__all__ = ["check_rule", "load_rule", "run_check", "laws_on_case", "default_events", "RuleReport", "Verdict",
           "Counterexample", "InvalidRule", "UnknownLaw", "CHECKS", "law_keys", "normalize_laws", "SEARCH_TIMEOUT",
           "search_settings", "rule_problem", "PROVED", "HELD", "VIOLATED", "NOT_APPLICABLE", "ERROR", "NOT_SETTLED"]
