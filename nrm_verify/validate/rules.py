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

import ast
import math
import multiprocessing
import os
import queue
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from hypothesis import HealthCheck, Phase, Verbosity, assume, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from nrm.errors import RelevanceDependentRuleError, ZeroOutputError
from nrm.rules import Part, Rule, Share
from nrm_verify import laws
from nrm_verify.properties import abbreviate
from nrm_verify.properties.checks import CHECKS, LATER, Context, LawCheck, default_events, laws_on_case
from nrm_verify.properties.codegen import Writer, load_object, neurons
from nrm_verify.properties.strategies import Case
from nrm_verify.validate.deadline import OutOfTime, alarm

PROVED, HELD, VIOLATED, NOT_APPLICABLE, ERROR = "proved", "held", "violated", "not applicable", "error"
NOT_SETTLED = "not settled"
REPR_LIMIT = 8000
"""Characters of a report's repr at most (its str is the whole report)."""
SEARCH_TIMEOUT = {"ci": 300.0, "thorough": 3600.0}
"""Seconds the property search of one rule may take by default, per profile (300 s for
others): shared fairly among the laws, the time one law leaves unused going to the next.
A law whose search the budget cuts short is reported "not settled" (or "held" on the
cases it did check); a rule that blocks cannot keep ``check_rule`` from returning."""





# -- the report ---------------------------------------------------------------------------------
@dataclass
class Counterexample:
    """A minimal failing case: ``script`` is a program that rebuilds it and sets ``result``
    (the :class:`~nrm_verify.laws.LawResult`; for an error, running it raises)."""

    script: str
    call: str
    result: laws.LawResult | None
    neurons: int
    case: Case = field(repr=False)

    @property
    def measured(self):
        return None if self.result is None else self.result.measured

    @property
    def expected(self):
        return None if self.result is None else self.result.expected


@dataclass
class Verdict:
    """What the validator concluded about one law for one rule."""

    law: str
    name: str
    status: str
    cases: int = 0
    skipped: int = 0
    detail: str = ""
    counterexample: Counterexample | None = None
    proof: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in (VIOLATED, ERROR)

    def line(self) -> str:
        if self.status == PROVED:
            text = "proved symbolically" + (f"; held on {self.cases} generated cases" if self.cases else "")
        elif self.status == HELD:
            text = f"held on {self.cases} generated cases"
        elif self.status == VIOLATED:
            text = "VIOLATED"
            c = self.counterexample
            if c is not None and c.result is not None:
                values = "" if c.measured is None else f"measured {_num(c.measured)}, expected {_num(c.expected)} "
                text += f": {values}(deviation {c.result.deviation:.3g} > {c.result.tolerance:.2g}); " \
                        f"{c.neurons} neurons"
            elif self.detail:
                text += f": {self.detail}"
        elif self.status == ERROR:
            text = f"ERROR: {self.detail}"
        elif self.status == NOT_SETTLED:
            text = f"not settled — {self.detail}"
        else:
            text = f"not applicable — {self.detail}"
        if self.status in (HELD, PROVED) and self.skipped:
            text += f" ({self.skipped} cases where it did not apply)"
        if self.status in (HELD, PROVED) and self.detail.startswith("search stopped"):
            text += f" ({self.detail})"
        if self.proof and self.status not in (PROVED,):
            short = self.proof if len(self.proof) <= 90 else self.proof[:87] + "…"
            text += f" [symbolic: {short}]"
        return text


def _num(v) -> str:
    return f"{v:.17g}" if isinstance(v, float) else repr(v)


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
            laws = sorted({v.law for v in bad}, key=_law_order)
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
    """Every law key the validator knows (L1 … L18, INV), in order."""
    return sorted({c.law for c in CHECKS} | {law for law, _, _ in LATER}, key=_law_order)


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
class InvalidRule(ValueError):
    """The validator's input is not a rule it can check (the message says why)."""


def load_rule(spec: str) -> Rule:
    """A rule from ``"package.module:RuleClass"`` (instantiated without arguments),
    ``"package.module:factory()"``, ``"package.module:RuleClass(0.5, eps=1e-3)"``
    (literal arguments only) or ``"path/to/file.py:…"`` in any of these forms."""
    if not isinstance(spec, str) or ":" not in spec:
        raise InvalidRule(f"expected 'package.module:RuleClass' or 'path/to/file.py:RuleClass', got {spec!r}")
    where, _, what = spec.rpartition(":")
    try:
        call = ast.parse(what.strip(), mode="eval").body
    except SyntaxError as e:
        raise InvalidRule(f"{what!r} is not a name or a call with literal arguments: {e.msg}") from None
    args, kwargs, name = (), {}, what.strip()
    if isinstance(call, ast.Call):
        name = ast.unparse(call.func)
        try:
            args = tuple(ast.literal_eval(a) for a in call.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except ValueError:
            raise InvalidRule(f"{what!r}: only literal arguments (numbers, strings, lists…) can be given") from None
    elif not isinstance(call, (ast.Name, ast.Attribute)):
        raise InvalidRule(f"{what!r} is not a name or a call")
    try:
        obj = load_object(f"{where}:{name}")
    except (ImportError, AttributeError, FileNotFoundError, ValueError) as e:
        raise InvalidRule(f"cannot load {spec!r}: {type(e).__name__}: {e}") from None
    except Exception as e:  # the user's module raised while importing
        raise InvalidRule(f"importing {where!r} raised {type(e).__name__}: {e}") from None
    if isinstance(call, ast.Call) or (isinstance(obj, type) and issubclass(obj, Rule)):
        if not callable(obj):
            raise InvalidRule(f"{spec!r}: {name} is not callable")
        try:
            obj = obj(*args, **kwargs)
        except Exception as e:
            raise InvalidRule(f"{name}({_args_text(args, kwargs)}) raised {type(e).__name__}: {e}") from None
    if not isinstance(obj, Rule):
        raise InvalidRule(f"{spec!r} gives {_what(obj)}, not an nrm.rules.Rule")
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    try:  # counterexample programs load the rule the same way
        obj.__nrm_source__ = f"{Path(where).expanduser().resolve()}:{what}" if is_file else spec
    except AttributeError:  # a rule with __slots__: code falls back to its repr or a pickle
        pass
    return obj


def _args_text(args, kwargs) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


def _what(obj) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__name__} (not a Rule subclass)"
    return f"a {type(obj).__name__} ({obj!r:.60})"


def _structure(rule) -> str:
    """Why ``rule`` cannot be run at all ('' when it can)."""
    if isinstance(rule, type) and issubclass(rule, Rule):
        return f"{rule.__name__} is a rule class; pass an instance, e.g. {rule.__name__}()"
    if not isinstance(rule, Rule):
        return f"expected an nrm.rules.Rule, got {_what(rule)}"
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


# -- the search ----------------------------------------------------------------------------------
class _Failure(Exception):
    def __init__(self, case, call, result=None, error=None, tb=None):
        super().__init__("law violated" if error is None else f"{type(error).__name__}: {error}")
        self.case, self.call, self.result, self.error, self.tb = case, call, result, error, tb


@dataclass
class _State:
    held: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    last: _Failure | None = None
    failing: bool = False
    spent: int = 0
    since: float = 0.0
    deadline: float = math.inf
    out_of_time: bool = False


def search_settings(profile: str = "ci", max_examples: int | None = None) -> settings:
    """The hypothesis settings of a validator search: the profile's, quiet, no example
    database, one bug reported."""
    base = settings.get_profile(profile)
    return settings(
        base, max_examples=max_examples or base.max_examples, deadline=None, database=None,
        verbosity=Verbosity.quiet, report_multiple_bugs=False, print_blob=False,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in base.phases if p != Phase.explain],
    )


def _not_applicable_error(error: Exception) -> str:
    if isinstance(error, RelevanceDependentRuleError):
        return "the rule reads the incoming relevance, so the measure of events below a conditioned layer is undefined"
    return ""


SHRINK_BUDGET = 100
SHRINK_SECONDS = 6.0
"""Law evaluations (and seconds) spent on shrinking one counterexample; past either the
smallest failing case found so far is reported."""


def _search(check: LawCheck, ctx: Context, hyp: settings, strategy, state: _State) -> str:
    """One hypothesis search; returns '' or why it could not run."""

    @hyp
    @given(data=st.data())
    def probe(data):
        if time.perf_counter() > state.deadline:
            state.out_of_time = True
            return  # past the time budget: every further candidate "passes", state.last is kept
        if state.failing and (state.spent >= SHRINK_BUDGET or time.perf_counter() - state.since > SHRINK_SECONDS):
            return  # stop shrinking: every further candidate "passes", state.last is kept
        case = data.draw(strategy, label="case")
        call = check.draw(data, case, ctx)
        if state.failing:
            state.spent += 1
        try:
            result = call.run(case)
        except ZeroOutputError:
            assume(False)
        except HypothesisException:
            raise
        except Exception as error:  # noqa: BLE001 — anything the rule raises is reported
            reason = _not_applicable_error(error)
            if reason:
                state.skipped += not state.failing
                state.reasons[reason] += 1
                return
            if not state.failing:
                state.failing, state.since = True, time.perf_counter()
            state.last = _Failure(case, call, error=error, tb=traceback.extract_tb(error.__traceback__))
            raise state.last from None
        if result.holds is None:
            state.skipped += not state.failing
            state.reasons[result.detail] += 1
            return
        if result.holds:
            state.held += not state.failing
            return
        if not state.failing:
            state.failing, state.since = True, time.perf_counter()
        state.last = _Failure(case, call, result=result)
        raise state.last

    try:
        with alarm(state.deadline):
            probe()
    except _Failure:  # the failing case is recorded in state.last by the probe itself
        pass
    except Exception as e:  # noqa: BLE001 — hypothesis's own errors (also as exception groups)
        if state.last is None:  # Unsatisfiable: no case could be drawn
            return f"no case could be generated ({type(e).__name__})"
        # past the shrink budget the final replay "passes": hypothesis calls that flaky
    except BaseException as e:  # a case ran past the deadline; a failure found before it is kept
        if not _out_of_time(e):
            raise  # KeyboardInterrupt, SystemExit: the user's
        state.out_of_time = True
    return ""


def _out_of_time(error: BaseException) -> bool:
    """Whether ``error`` is the timer's (alone, or in a group hypothesis made while
    replaying a failing case)."""
    group = getattr(error, "exceptions", None)  # a BaseExceptionGroup (Python ≥ 3.11, or hypothesis's backport)
    if isinstance(group, (tuple, list)):
        return all(_out_of_time(e) or isinstance(e, _Failure) for e in group)
    return isinstance(error, OutOfTime)


def _run_check(check: LawCheck, ctx: Context, hyp: settings, deadline: float = math.inf) -> Verdict:
    """Three searches, smallest networks first, so that a counterexample is found where it
    is small: one linear layer (a quarter of the examples), MLPs of at most two layers of
    width two (a quarter), then every architecture (the profile's number of examples).
    At ``deadline`` (time.perf_counter) the search stops, inside a case if need be: the
    law is then "not settled", or "held" on the cases checked before."""
    state = _State(deadline=deadline)
    start = time.perf_counter()
    verdict = Verdict(check.law, check.name, HELD)
    quarter = settings(hyp, max_examples=max(2, hyp.max_examples // 4))
    problem = ""
    for size, stage_settings in (("one layer", quarter), ("small", quarter), ("any", hyp)):
        problem = _search(check, ctx, stage_settings, ctx.cases(batch=check.batch, size=size), state) or problem
        if state.last is not None or state.out_of_time:
            break
    if problem and not state.held and state.last is None and not state.out_of_time:
        verdict.status, verdict.detail = NOT_APPLICABLE, problem
    verdict.seconds = time.perf_counter() - start
    verdict.cases, verdict.skipped = state.held, state.skipped
    if state.last is not None:
        _describe_failure(verdict, state.last, ctx)
    elif state.out_of_time and state.held:
        verdict.detail = f"search stopped by its time budget after {verdict.seconds:.1f} s"
    elif state.out_of_time:
        verdict.status = NOT_SETTLED
        verdict.detail = (f"the search's time budget ran out after {verdict.seconds:.1f} s, before a case was "
                          "checked (a slow or blocking rule?)")
    elif verdict.status == HELD and state.held == 0:
        verdict.status = NOT_APPLICABLE
        common = state.reasons.most_common(1)
        verdict.detail = f"did not apply on any of {state.skipped} generated cases" + (
            f" ({common[0][0]})" if common else "")
    return verdict


def _describe_failure(verdict: Verdict, failure: _Failure, ctx: Context) -> None:
    case, call = failure.case, failure.call
    w = Writer()
    lines = call.code(w)
    if failure.error is not None:
        verdict.status = ERROR
        verdict.detail = f"{type(failure.error).__name__}: {failure.error}{_where(failure.tb, ctx.rule)}"
        comment = f"nrm-verify: {verdict.law} {verdict.name} raised {type(failure.error).__name__} for {ctx.rule!r}"
        result = None
    else:
        verdict.status = VIOLATED
        verdict.detail = str(failure.result)
        comment = f"nrm-verify: {verdict.law} {verdict.name} is violated for {ctx.rule!r}\n" \
                  f"expected: result.holds is False ({failure.result.detail})"
        result = failure.result
        lines = lines + ["print(result)"]
    script = case.script(*lines, comment=comment, writer=w)
    try:
        size = neurons(case.model, case.x)
    except Exception:  # noqa: BLE001 — the size is informative only
        size = -1
    verdict.counterexample = Counterexample(script, lines[-2] if result is not None else lines[-1], result, size, case)


def _where(tb, rule) -> str:
    """' (raised in File:line, in function)' — the innermost frame in the rule's own file
    when there is one, else the innermost frame."""
    if not tb:
        return ""
    try:
        import inspect
        source = inspect.getsourcefile(type(rule))
    except (TypeError, OSError):
        source = None
    frames = [f for f in tb if source and os.path.samefile(f.filename, source)] if source else []
    frame = (frames or list(tb))[-1]
    return f" (raised in {frame.filename}:{frame.lineno}, in {frame.name})"


# -- symbolic proofs ---------------------------------------------------------------------------
def _symbolic_verdicts(rule: Rule, laws_wanted: Sequence[str] = ("L1", "L2", "L3", "L4", "L5", "L6", "L7"),
                       timeout: float = 40.0) -> tuple[dict[str, tuple[str, str]], str]:
    """The symbolic layer's verdicts for ``rule``: :func:`nrm_verify.symbolic.prove.prove_rule`
    law by law in a child process, for at most ``timeout`` seconds. Returns ({law: (status,
    note)}, a note on what was not done); status is "proved", "refuted", "failed" or "n/a".
    :func:`check_rule` starts the same job before its search and collects it after."""
    return _SymbolicJob(rule, laws_wanted, timeout).collect()


def _prove_child(rule, wanted, results, budget: float | None = None) -> None:  # pragma: no cover — a child
    try:
        from nrm_verify.symbolic.prove import prove_rule
        deadline = None if budget is None else time.perf_counter() + budget
        for i, law in enumerate(wanted):
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            try:
                proofs = prove_rule(rule, laws=[law], budget=left)
            except Exception as e:  # noqa: BLE001 — the symbolic layer cannot evaluate the rule: say so for all
                message = f"the symbolic layer could not evaluate the rule: {type(e).__name__}: {e}"[:300]
                for rest in wanted[i:]:
                    results.put((rest, "failed", message))
                return
            unsettled = next((p.note for p in proofs if p.status == "failed" and p.note.startswith("not ")), "")
            if unsettled.startswith("not settled"):  # the kernel itself is beyond the budget: so for every law
                for rest in wanted[i:]:
                    results.put((rest, "failed", unsettled[:300]))
                return
            statuses = [p.status for p in proofs if p.status != "n/a"]
            if not statuses:
                note = next((p.note for p in proofs if p.note), "")
                results.put((law, "n/a", note))
            elif "refuted" in statuses:
                p = next(p for p in proofs if p.status == "refuted")
                step = p.counterexample()
                point = "" if step is None else \
                    f"{step.claim}: lhs {step.lhs_value}, rhs {step.rhs_value} at {step.point}"
                results.put((law, "refuted", f"{p.arch} case {p.case}: {point}"[:400]))
            elif all(s == "proved" for s in statuses):
                results.put((law, "proved", f"on {len(statuses)} symbolic network case(s)"))
            elif unsettled:
                results.put((law, "failed", unsettled[:300]))
            else:
                results.put((law, "failed", "a step did not simplify and no counterexample was found"))
    finally:
        results.put(None)


def _merge_symbolic(verdict: Verdict, symbolic: dict[str, tuple[str, str]]) -> str:
    """Fold the symbolic layer's result for the verdict's law into it; returns a note when
    the two disagree. A proof upgrades "held" to "proved". A symbolic refutation is
    recorded but does not by itself make the law violated: a violation is reported with a
    runnable counterexample, and the symbolic point has none — the disagreement is noted."""
    if verdict.law not in symbolic:
        return ""
    status, note = symbolic[verdict.law]
    if status == "proved":
        verdict.proof = f"proved ({note})"
        if verdict.status == HELD:
            verdict.status = PROVED
        elif verdict.status == VIOLATED:
            return f"{verdict.law}: proved symbolically but violated numerically ({verdict.name}); " \
                   "the symbolic networks may not cover the counterexample's structure"
    elif status == "refuted":
        verdict.proof = f"refuted: {note}"
        if verdict.status in (HELD, PROVED):
            return f"{verdict.law}: the symbolic layer refutes it but the search found no counterexample " \
                   f"({verdict.name}); see its point: {note[:200]}"
    elif status == "failed":
        verdict.proof = note if note.startswith("not ") else f"not settled ({note})"
    elif status == "n/a" and note:
        verdict.proof = f"n/a ({note})"
    return ""


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
            problem = _structure(rule)
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
            reason = check.applies(rule)
            report.verdicts.append(Verdict(check.law, check.name, NOT_APPLICABLE if reason else NOT_SETTLED,
                                           detail=reason or detail))
    report.verdicts.sort(key=lambda v: _law_order(v.law))
    report.seconds = time.perf_counter() - start
    return report


def _check(rule, label, profile, max_examples, only, symbolic, symbolic_timeout,
           deadline: float = math.inf) -> RuleReport:
    report = RuleReport(label, profile=profile)
    ctx = Context.of(rule)
    hyp = search_settings(profile, max_examples)
    checks = [c for c in CHECKS if not only or c.law in only]
    wanted = sorted({c.law for c in checks if not c.applies(rule)}, key=_law_order)
    symbolic_job = None
    if symbolic and wanted:
        symbolic_job = _SymbolicJob(rule, wanted, symbolic_timeout)
    runnable = [c for c in checks if not c.applies(rule)]
    for check in checks:
        reason = check.applies(rule)
        if reason:
            report.verdicts.append(Verdict(check.law, check.name, NOT_APPLICABLE, detail=reason))
            continue
        now = time.perf_counter()
        share = now + max(0.0, deadline - now) / (len(runnable) - runnable.index(check))  # a fair share of what is left
        report.verdicts.append(_run_check(check, ctx, hyp, share))
    for law, name, reason in LATER:
        if not only or law in only:
            report.verdicts.append(Verdict(law, name, NOT_APPLICABLE, detail=reason))
    if symbolic_job is not None:
        searched = time.perf_counter()
        results, note = symbolic_job.collect()
        report.symbolic_wait = time.perf_counter() - searched
        if symbolic_job.child is not None:  # the proofs ran (not skipped for a relevance-reading rule)
            report.symbolic_unsettled = [law for law in symbolic_job.wanted
                                         if results.get(law, ("failed", ""))[0] == "failed"]
        for v in report.verdicts:
            disagreement = _merge_symbolic(v, results)
            if disagreement and disagreement not in report.notes:
                report.notes.append(disagreement)
        if note:
            report.notes.append(note)
    elif not symbolic:
        report.notes.append("symbolic proofs not run (symbolic=False)")
    report.verdicts.sort(key=lambda v: _law_order(v.law))
    return report


class _SymbolicJob:
    """The symbolic proofs, started before the search and collected after it: a child
    process runs them while the search runs here."""

    def __init__(self, rule, wanted, timeout):
        self.wanted, self.timeout = list(wanted), timeout
        self.deadline = time.perf_counter() + timeout
        self.results: dict[str, tuple[str, str]] = {}
        self.child, self.queue, self.note = None, None, ""
        try:
            from nrm_verify.symbolic.laws import LAWS
            from nrm_verify.symbolic.prove import prove_rule  # noqa: F401 — imported here, in the main thread
        except Exception as e:  # noqa: BLE001
            self.note = f"symbolic proofs unavailable ({type(e).__name__}: {e})"
            return
        known = {law.key for law in LAWS}
        self.wanted = [law for law in self.wanted if law in known]
        if getattr(rule, "reads_relevance", False):
            self.note = "symbolic proofs skipped: the rule reads the incoming relevance (no fixed symbolic kernel)"
            return
        try:
            ctx = multiprocessing.get_context("fork")
        except ValueError:
            self.note = "symbolic proofs skipped: no fork() on this platform"
            return
        self.queue = ctx.Queue()
        self.child = ctx.Process(target=_prove_child, args=(rule, tuple(self.wanted), self.queue, timeout),
                                 daemon=True)
        self.child.start()

    def collect(self) -> tuple[dict[str, tuple[str, str]], str]:
        """Wait for the proofs until the deadline; ({law: (status, note)}, a note)."""
        if self.child is None:
            return {}, self.note
        finished = False
        while True:
            left = self.deadline - time.perf_counter()
            try:
                item = self.queue.get(timeout=max(0.05, min(1.0, left)))
            except queue.Empty:
                if left <= 0 or not self.child.is_alive():
                    break
                continue
            if item is None:
                finished = True
                break
            self.results[item[0]] = (item[1], item[2])
        if self.child.is_alive():
            self.child.kill()
        self.child.join(1)
        missing = [law for law in self.wanted if law not in self.results]
        note = ""
        if missing:
            note = (f"symbolic proofs stopped after {self.timeout:.0f} s; not reached: {', '.join(missing)}"
                    if not finished else f"symbolic proofs gave no result for {', '.join(missing)}")
        return self.results, note


def _law_order(law: str) -> tuple:
    return (law == "INV", int(law[1:]) if law[1:].isdigit() else 99)


def _safe_repr(obj) -> str:
    try:
        return repr(obj)
    except Exception as e:  # noqa: BLE001
        return f"<{type(obj).__name__} whose repr raised {type(e).__name__}>"


run_check = _run_check
"""Run one :class:`~nrm_verify.properties.checks.LawCheck` as the validator does (three searches, smallest
networks first, a shrunk counterexample): also what ``check-layer`` runs."""

__all__ = ["check_rule", "load_rule", "run_check", "laws_on_case", "default_events", "RuleReport", "Verdict",
           "Counterexample", "InvalidRule", "UnknownLaw", "CHECKS", "law_keys", "normalize_laws", "SEARCH_TIMEOUT",
           "search_settings", "PROVED", "HELD", "VIOLATED", "NOT_APPLICABLE", "ERROR", "NOT_SETTLED"]
