"""Proof primitives: an identity that simplifies to zero, a limit, a sign, and the search
for a rational counterexample when an identity does not hold.

A *step* is one claim ``lhs = rhs`` (or ``expr ≥ 0``, or ``expr does not depend on …``)
about closed forms of a :class:`~nrm_verify.symbolic.derive.SymbolicMeasure`. It is

* **proved** when lhs − rhs is identically zero as a rational function — first in the
  abbreviated variables (pre-activations as symbols), then, if needed, after expanding
  every abbreviation into the base symbols. Piecewise expressions are folded and every
  branch must vanish. Because the regions of the assumptions are open (strict signs) and
  non-empty (a witness point is found for every case), a rational function that vanishes
  there vanishes identically, so this is exactly "holds under the assumptions";
* **refuted** when a seeded search finds a rational point that satisfies every
  assumption and at which the two sides differ (both values are recorded);
* **failed** otherwise (it did not simplify and no counterexample was found) — the
  residual is recorded so that the failing step can be shown.

Simplification is rational-function arithmetic (``together`` + ``expand`` of the
numerator), never ``simplify``: it is exact, and fast on these sizes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from nrm_verify.laws.status import NOT_APPLICABLE, NOT_SETTLED, PROVED, REFUTED
from nrm_verify.symbolic.ops import NONNEGATIVE, settle, to_sympy

SEARCH_TRIES = 40


@dataclass
class ProofStep:
    """One checked claim."""

    claim: str  # plain text
    kind: str = "identity"  # "identity" | "nonnegative" | "independent"
    status: str = NOT_SETTLED
    residual: str = ""  # the non-zero simplified lhs − rhs, when it did not vanish
    point: dict | None = None  # the counterexample
    lhs_value: Any = None
    rhs_value: Any = None
    latex: str = ""

    @property
    def ok(self) -> bool:
        return self.status == PROVED


@dataclass
class Proof:
    """The result of one law for one rule on one network case."""

    law: str
    rule: str
    arch: str
    case: str
    expect: str  # "holds" (the law claims it), "fails" (shown false), "either" (a user's rule)
    status: str = NOT_SETTLED
    steps: list[ProofStep] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    note: str = ""

    def counterexample(self) -> ProofStep | None:
        for s in self.steps:
            if s.status == REFUTED:
                return s
        return None

    @property
    def good(self) -> bool:
        """As expected: proved where the law claims to hold, refuted where it is shown
        false, either of the two for a user's rule (never "not settled")."""
        if self.status == NOT_APPLICABLE:
            return True
        if self.expect == "holds":
            return self.status == PROVED
        if self.expect == "fails":
            return self.status == REFUTED
        return self.status in (PROVED, REFUTED)

    def settle(self) -> Proof:
        """The status from the steps: refuted if one is, not settled if one is, else proved."""
        if any(s.status == REFUTED for s in self.steps):
            self.status = REFUTED
        elif any(s.status == NOT_SETTLED for s in self.steps):
            self.status = NOT_SETTLED
        elif not self.steps:
            self.status = NOT_APPLICABLE
            self.note = self.note or "vacuous: nothing in this case satisfies the law's hypothesis"
        else:
            self.status = PROVED
        return self


class NotApplicable(Exception):
    """Raised by a law for a rule it says nothing about; the message is the reason."""


def _rational_zero(e: sp.Expr) -> bool:
    if e == 0:
        return True
    num, _ = sp.fraction(sp.together(e))
    return sp.expand(num) == 0


def _is_field(x) -> bool:
    return not isinstance(x, sp.Basic) and hasattr(x, "as_expr")


def as_expr(x) -> sp.Expr:
    """A value of either algebra as a sympy expression."""
    return x.as_expr() if _is_field(x) else to_sympy(x)


def vanishes(e, network) -> tuple[bool, sp.Expr]:
    """Whether e is identically 0 in the reduced variables (where no relation is left,
    so this is exactly "0 on the region of the assumptions"); also returns the residual.
    Piecewise conditions are first decided where the assumptions decide them; what
    remains is folded and every branch must vanish."""
    if _is_field(e):
        zero = not e.num
        return zero, (sp.Integer(0) if zero else e.as_expr())
    e = to_sympy(e)
    if e == 0:
        return True, sp.Integer(0)
    if e.has(sp.Piecewise):
        e = settle(e, network.decider)
    e = network.reduce(e)
    if e.has(sp.Piecewise):
        folded = sp.piecewise_fold(e)
        if isinstance(folded, sp.Piecewise):
            ok = all(_rational_zero(x) for x, cond in folded.args if cond is not sp.false)
            return ok, (sp.Integer(0) if ok else folded)
        e = folded
    if _rational_zero(e):
        return True, sp.Integer(0)
    return False, e


def search_counterexample(lhs, rhs, network, params, seed: int = 0, tries: int = SEARCH_TRIES):
    """A rational point satisfying every assumption at which lhs ≠ rhs (or None)."""
    rng = random.Random(seed)
    lhs, rhs = as_expr(lhs), as_expr(rhs)
    for _ in range(tries):
        point = network.sample(rng, extra=params)
        try:
            a = network.evaluate(lhs, point)
            b = network.evaluate(rhs, point)
        except ZeroDivisionError:
            continue
        if not (a.is_number and b.is_number) or a.has(sp.zoo, sp.nan) or b.has(sp.zoo, sp.nan):
            continue
        if sp.nsimplify(a - b) != 0:
            return point, a, b
    return None


def check_identity(claim: str, lhs, rhs, network, params=(), convert=None, latex: str = "", seed: int = 0) -> ProofStep:
    """Prove lhs = rhs under the network's assumptions, or refute it with a rational
    counterexample, or record the failing residual.

    ``convert`` maps a sympy expression into the proof algebra (the field of rational
    functions of the measure); both sides are compared there when both convert."""
    if convert is not None:
        lhs = convert(lhs) if isinstance(lhs, (sp.Basic, int)) else lhs
        rhs = convert(rhs) if isinstance(rhs, (sp.Basic, int)) else rhs
    step = ProofStep(claim, "identity", latex=latex)
    if _is_field(lhs) and _is_field(rhs) and lhs.field is rhs.field:
        diff = lhs - rhs
    else:
        diff = as_expr(lhs) - as_expr(rhs)
    ok, residual = vanishes(diff, network)
    if ok:
        step.status = PROVED
        return step
    found = search_counterexample(lhs, rhs, network, params, seed)
    if found:
        step.status = REFUTED
        step.point, step.lhs_value, step.rhs_value = found
    else:
        step.status = NOT_SETTLED
    step.residual = _short(residual)
    return step


def check_finite(claim: str, expr) -> ProofStep:
    """Prove that a limit came out finite (e.g. lim (q^ε − q^0)/ε: the error is O(ε))."""
    expr = as_expr(expr)
    step = ProofStep(claim, "finite")
    if expr.has(sp.oo, -sp.oo, sp.zoo, sp.nan, sp.Limit):
        step.status = NOT_SETTLED
        step.residual = _short(expr)
    else:
        step.status = PROVED
    return step


def check_nonnegative(claim: str, expr, network, params=(), seed: int = 0) -> ProofStep:
    """Prove expr ≥ 0 from the assumptions (sign decision), or refute it at a point."""
    step = ProofStep(claim, "nonnegative")
    expr = as_expr(expr)
    if network.decider.signs(expr) <= NONNEGATIVE:
        step.status = PROVED
        return step
    rng = random.Random(seed)
    for _ in range(SEARCH_TRIES):
        point = network.sample(rng, extra=params)
        v = network.evaluate(expr, point)
        if v.is_number and v < 0:
            step.status, step.point, step.lhs_value, step.rhs_value = REFUTED, point, v, sp.Integer(0)
            return step
    step.status = NOT_SETTLED
    step.residual = _short(expr)
    return step


def check_independent(claim: str, expr, symbols: set, network, params=(), seed: int = 0) -> ProofStep:
    """Prove that expr does not contain any of ``symbols`` (after expanding the
    abbreviations), or show two points that differ only in those symbols' values and give
    different values."""
    step = ProofStep(claim, "independent")
    expr = as_expr(expr)
    free = network.expand(expr).free_symbols
    if not free & symbols:
        step.status = PROVED
        return step
    step.status = NOT_SETTLED
    step.residual = f"depends on {', '.join(sorted(map(str, free & symbols)))}"
    rng = random.Random(seed)
    for _ in range(SEARCH_TRIES):
        p1 = network.sample(rng, extra=params)
        p2 = network.sample(rng, extra=params)
        p2 = {s: (p2[s] if s in symbols else v) for s, v in p1.items()}
        if not network.satisfies(p2):
            continue
        a, b = network.evaluate(expr, p1), network.evaluate(expr, p2)
        if a != b:
            step.status, step.point, step.lhs_value, step.rhs_value = REFUTED, {"first": p1, "second": p2}, a, b
            return step
    return step


def _short(e, limit: int = 400) -> str:
    text = str(e)
    return text if len(text) <= limit else text[:limit] + " …"


def point_text(point: dict) -> str:
    """A counterexample point as text, symbols in a stable order."""
    if point is None:
        return ""
    if set(point) == {"first", "second"}:
        return f"first {point_text(point['first'])}; second {point_text(point['second'])}"
    return ", ".join(f"{s} = {v}" for s, v in sorted(point.items(), key=lambda kv: _symbol_order(kv[0])))


def _symbol_order(s) -> tuple:
    name = str(s)
    head = name.rstrip("0123456789_")
    key = head[:2] if head.startswith(("lo", "hi")) else head[:1]
    order = {"x": 0, "lo": 1, "hi": 2, "w": 3, "c": 3, "b": 4}.get(key, 5)
    return (order, name)
