"""What the validators share: the hypothesis search of one law check, with its time
budget and a shrunk counterexample, and the verdict it gives.

* :func:`run_check` — one :class:`~nrm_verify.laws.catalogue.Check` as ``check-rule``,
  ``check-layer`` and ``nrm-verify check`` run it: three searches, smallest networks first,
  a shrunk counterexample written as a runnable program;
* :class:`Verdict` — what was concluded about one law (a status of
  :mod:`nrm_verify.laws.status`), with its :class:`Counterexample`;
* :func:`describe_failure` — a failing case turned into a verdict and a program;
* :func:`search_settings` — the hypothesis settings of a search (quiet, no database).
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, Verbosity, assume, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from nrm.errors import RelevanceDependentRuleError, ZeroOutputError
from nrm_verify import laws
from nrm_verify.laws import catalogue
from nrm_verify.laws.catalogue import Check
from nrm_verify.laws.status import ERROR, HELD, NOT_APPLICABLE, NOT_SETTLED, PROVED, VIOLATED
from nrm_verify.properties.codegen import Writer, neurons
from nrm_verify.properties.strategies import Case
from nrm_verify.validate.deadline import OutOfTime, alarm


# -- the verdicts ------------------------------------------------------------------------------
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



# -- the search ----------------------------------------------------------------------------------
class Failure(Exception):
    def __init__(self, case, call, result=None, error=None, tb=None):
        super().__init__("law violated" if error is None else f"{type(error).__name__}: {error}")
        self.case, self.call, self.result, self.error, self.tb = case, call, result, error, tb


@dataclass
class SearchState:
    held: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    last: Failure | None = None
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


def not_applicable_error(error: Exception) -> str:
    if isinstance(error, RelevanceDependentRuleError):
        return "the rule reads the incoming relevance, so the measure of events below a conditioned layer is undefined"
    return ""


SHRINK_BUDGET = 100
SHRINK_SECONDS = 6.0
"""Law evaluations (and seconds) spent on shrinking one counterexample; past either the
smallest failing case found so far is reported."""


def search(check: Check, ctx, hyp: settings, strategy, state: SearchState) -> str:
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
        call = check.call(data, case, ctx)
        if state.failing:
            state.spent += 1
        try:
            result = call.run(case)
        except ZeroOutputError:
            assume(False)
        except HypothesisException:
            raise
        except Exception as error:  # noqa: BLE001 — anything the rule raises is reported
            reason = not_applicable_error(error)
            if reason:
                state.skipped += not state.failing
                state.reasons[reason] += 1
                return
            if not state.failing:
                state.failing, state.since = True, time.perf_counter()
            state.last = Failure(case, call, error=error, tb=traceback.extract_tb(error.__traceback__))
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
        state.last = Failure(case, call, result=result)
        raise state.last

    try:
        with alarm(state.deadline):
            probe()
    except Failure:  # the failing case is recorded in state.last by the probe itself
        pass
    except Exception as e:  # noqa: BLE001 — hypothesis's own errors (also as exception groups)
        if state.last is None:  # Unsatisfiable: no case could be drawn
            return f"no case could be generated ({type(e).__name__})"
        # past the shrink budget the final replay "passes": hypothesis calls that flaky
    except BaseException as e:  # a case ran past the deadline; a failure found before it is kept
        if not out_of_time(e):
            raise  # KeyboardInterrupt, SystemExit: the user's
        state.out_of_time = True
    return ""


def out_of_time(error: BaseException) -> bool:
    """Whether ``error`` is the timer's (alone, or in a group hypothesis made while
    replaying a failing case)."""
    group = getattr(error, "exceptions", None)  # a BaseExceptionGroup (Python ≥ 3.11, or hypothesis's backport)
    if isinstance(group, (tuple, list)):
        return all(out_of_time(e) or isinstance(e, Failure) for e in group)
    return isinstance(error, OutOfTime)


def run_check(check: Check, ctx, hyp: settings, deadline: float = math.inf) -> Verdict:
    """Three searches, smallest networks first, so that a counterexample is found where it
    is small: one linear layer (a quarter of the examples), MLPs of at most two layers of
    width two (a quarter), then every architecture (the profile's number of examples).
    At ``deadline`` (time.perf_counter) the search stops, inside a case if need be: the
    law is then "not settled", or "held" on the cases checked before."""
    state = SearchState(deadline=deadline)
    start = time.perf_counter()
    verdict = Verdict(check.law, check.name, HELD)
    quarter = settings(hyp, max_examples=max(2, hyp.max_examples // 4))
    problem = ""
    for size, stage_settings in (("one layer", quarter), ("small", quarter), ("any", hyp)):
        problem = search(check, ctx, stage_settings, ctx.cases(batch=check.batch, size=size), state) or problem
        if state.last is not None or state.out_of_time:
            break
    if problem and not state.held and state.last is None and not state.out_of_time:
        verdict.status, verdict.detail = NOT_APPLICABLE, problem
    verdict.seconds = time.perf_counter() - start
    verdict.cases, verdict.skipped = state.held, state.skipped
    if state.last is not None:
        describe_failure(verdict, state.last, ctx)
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


def describe_failure(verdict: Verdict, failure: Failure, ctx) -> None:
    case, call = failure.case, failure.call
    w = Writer()
    lines = call.code(w)
    if failure.error is not None:
        verdict.status = ERROR
        verdict.detail = f"{type(failure.error).__name__}: {failure.error}{where_raised(failure.tb, ctx.rule)}"
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


def where_raised(tb, rule) -> str:
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




def law_order(law: str) -> tuple:
    """Sort key of a law key: the catalogue's order (unknown keys last, by name)."""
    order = catalogue.keys()
    return (order.index(law), "") if law in order else (len(order), law)


__all__ = ["run_check", "search", "search_settings", "describe_failure", "Verdict", "Counterexample", "Failure",
           "SearchState", "law_order", "not_applicable_error", "where_raised", "SHRINK_BUDGET", "SHRINK_SECONDS"]
