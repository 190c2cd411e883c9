"""The sympy backend of the backend-neutral rule operations (:mod:`nrm.ops`).

The rules of :mod:`nrm.rules` are evaluated here on sympy expressions through
:class:`nrm.ops.ObjectOps` with :class:`SympyScalars` as its scalar half, so a rule is
never written a second time. The only thing the symbolic backend adds is *deciding*
the case distinctions a rule makes (x⁺, x⁻, s(x) with s(0) = +1, x = 0):

* a decision is made only when the stated assumptions imply it — the sign assumptions of
  the symbols (``positive=True``, ``negative=True``, ``nonzero=True`` …) and the *facts*
  of a symbolic network (each pre-activation symbol z with its definition
  z = Σ_j a_j w_jk + b_k, and the box facts l < x < h);
* an undecided case is **kept** as a ``Piecewise`` (x⁺ = Piecewise((x, x > 0), (0, True)),
  s(x) = Piecewise((−1, x < 0), (1, True)), |x| = Piecewise((−x, x < 0), (x, True)),
  [x = 0] = Eq(x, 0)) and recorded in
  :attr:`SympyScalars.undecided`, so that a derivation can report the assumption it
  would need. A branch is never picked silently.

The sign decision (:class:`SignDecider`) is sound but not complete: it works on sets of
possible signs ⊆ {−1, 0, +1} — exact for numbers, read off the symbol assumptions,
multiplied through products and powers, added through sums of terms of one sign, and,
for a sum of mixed signs, by rewriting p = c · z + g with a fact z = d (c read off a
monomial of d) and deciding c, z and g.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import sympy as sp

from nrm.ops import ObjectOps

ANY = frozenset({-1, 0, 1})
POSITIVE = frozenset({1})
NEGATIVE = frozenset({-1})
ZERO = frozenset({0})
NONNEGATIVE = frozenset({0, 1})
NONPOSITIVE = frozenset({-1, 0})
NONZERO = frozenset({-1, 1})
MAX_FACT_TERMS = 16
"""Polynomials with more terms than this are not rewritten with facts (cost control)."""
SEARCH_BUDGET = 200
"""Rewritings p = c·t + g tried per sign decision at most (cost control)."""
MAX_NODES = 20000
MAX_DEPTH = 100
"""The size budget of one expression: more nodes or a deeper tree than this, and

* a sign decision answers "any" (sound — the case stays open);
* a rule operation that would build a ``Piecewise`` or ``Eq`` around it raises
  :class:`SymbolicSizeError`, which the proofs report as "not settled within the symbolic
  layer's budget" instead of recursing on.

sympy's algorithms (printing, sorting, ``Piecewise``, ``together``, ``expand``) recurse
once per level of an expression; a rule that branches on the sign of a pre-activation
that is itself built from branches (the sign-aware γ–ε hybrid of ``examples/rules``)
produced kernels 328 levels deep with 22 000 nodes, and Python's stack overflowed
(RecursionError). The budget keeps them away from such expressions and bounds the time
spent on one decision. Raise it only together with ``sys.setrecursionlimit``."""


class SymbolicSizeError(ValueError):
    """An expression of a rule's kernel exceeds the symbolic layer's size budget
    (:data:`MAX_NODES`, :data:`MAX_DEPTH`): the law is not settled symbolically."""


def too_large(e: Any, nodes: int = MAX_NODES, depth: int = MAX_DEPTH) -> bool:
    """Whether the expression tree of ``e`` has more than ``nodes`` nodes or is deeper than
    ``depth``, found with an explicit stack (no recursion; stops at the first excess)."""
    if not isinstance(e, sp.Basic):
        return False
    stack, seen = [(e, 1)], 0
    while stack:
        node, level = stack.pop()
        seen += 1
        if seen > nodes or level > depth:
            return True
        stack.extend((a, level + 1) for a in node.args)
    return False


def to_sympy(value: Any) -> sp.Expr:
    """A number or expression as an exact sympy object (floats become their exact binary
    rational value, Fractions become Rationals)."""
    if isinstance(value, sp.Basic):
        return value
    if isinstance(value, Fraction):
        return sp.Rational(value.numerator, value.denominator)
    if isinstance(value, bool):
        return sp.Integer(int(value))
    if isinstance(value, int):
        return sp.Integer(value)
    if isinstance(value, float):
        return sp.Rational(value)
    item = getattr(value, "item", None)
    if callable(item):  # a 0-d numpy or torch scalar
        return to_sympy(item())
    return sp.sympify(value)


def _symbol_signs(s: sp.Symbol) -> frozenset:
    if s.is_zero:
        return ZERO
    if s.is_positive:
        return POSITIVE
    if s.is_negative:
        return NEGATIVE
    if s.is_real is not True:
        return ANY
    if s.is_nonnegative:
        return NONNEGATIVE
    if s.is_nonpositive:
        return NONPOSITIVE
    if s.is_nonzero:
        return NONZERO
    return ANY


def _mul(a: frozenset, b: frozenset) -> frozenset:
    return frozenset(x * y for x in a for y in b)


def _add(sets) -> frozenset:
    sets = [s for s in sets if s != ZERO]
    if not sets:
        return ZERO
    if len(sets) == 1:
        return sets[0]
    if all(s <= NONNEGATIVE for s in sets):
        if all(s == ZERO for s in sets):
            return ZERO
        return POSITIVE if any(s == POSITIVE for s in sets) else NONNEGATIVE
    if all(s <= NONPOSITIVE for s in sets):
        return NEGATIVE if any(s == NEGATIVE for s in sets) else NONPOSITIVE
    return ANY


def _definite(s: frozenset) -> bool:
    return s in (POSITIVE, NEGATIVE, ZERO)


class Fact:
    """A symbol ``t`` (whose sympy assumptions state its sign) defined as ``t = definition``.

    Example: the pre-activation ``z1_1`` (positive: the unit is active) with
    ``z1_1 = x1·w1_11 + x2·w1_21 + b1_1``.
    """

    __slots__ = ("symbol", "definition", "terms", "symbols")

    def __init__(self, symbol: sp.Symbol, definition: sp.Expr):
        self.symbol = symbol
        self.definition = sp.expand(definition)
        # the monomials a coefficient can be read off (a constant term cannot)
        self.terms = [(c, m) for c, m in (t.as_coeff_Mul() for t in sp.Add.make_args(self.definition)) if m != 1]
        self.symbols = self.definition.free_symbols

    def __repr__(self) -> str:
        return f"Fact({self.symbol} = {self.definition})"


class SignDecider:
    """Possible signs of an expression under symbol assumptions and network facts.

    ``facts`` are :class:`Fact` objects; ``definitions`` maps abbreviation symbols to
    their (abbreviated) definitions, used as a last resort to expand an expression.
    Results are cached per expression.
    """

    def __init__(self, facts: list[Fact] | None = None, definitions: dict | None = None, depth: int = 8):
        self.facts = list(facts or [])
        self.definitions = dict(definitions or {})
        self.depth = depth
        self._cache: dict = {}

    def signs(self, e: Any) -> frozenset:
        e = to_sympy(e)
        if too_large(e):
            return ANY  # undecided: see MAX_NODES
        try:
            return self._cache[e]
        except KeyError:
            pass
        out = self._signs(e, tuple(self.facts), self.depth)
        if not _definite(out) and self.definitions and e.free_symbols & set(self.definitions):
            # expand the abbreviations (z ↦ its definition) and decide again; both are sound
            expanded = sp.expand(e.xreplace(self.definitions))
            if not too_large(expanded):
                out = (out & self._signs(expanded, tuple(self.facts), self.depth)) or out
        self._cache[e] = out
        return out

    # -- the recursive decision --------------------------------------------------------
    def _signs(self, e, facts, depth) -> frozenset:
        if e.is_Number:
            if e.is_zero:
                return ZERO
            return POSITIVE if e.is_positive else NEGATIVE if e.is_negative else ANY
        if e.is_Symbol:
            out = _symbol_signs(e)
            if not _definite(out) and depth > 0 and any(e in f.symbols for f in facts):
                out = (out & self._with_facts(e, facts, depth)) or out  # a fact about the symbol itself
            return out
        if isinstance(e, sp.Mul):
            out = POSITIVE
            for f in e.args:
                out = _mul(out, self._signs(f, facts, depth))
                if out == ZERO:
                    return ZERO
            return out
        if isinstance(e, sp.Pow):
            base = self._signs(e.base, facts, depth)
            n = e.exp
            if n.is_Integer:
                if n.is_negative:
                    base = (base - ZERO) or NONZERO  # defined only where the base is non-zero
                if int(n) % 2 == 0:
                    return POSITIVE if 0 not in base else NONNEGATIVE
                return base
            return POSITIVE if base == POSITIVE else ANY
        if isinstance(e, sp.Piecewise):
            out = frozenset()
            for expr, cond in e.args:
                if cond is not sp.false:
                    out = out | self._signs(expr, facts, depth)
            return out or ANY
        if isinstance(e, sp.Add):
            out = _add(self._signs(t, facts, depth) for t in e.args)
            if out != ANY or depth <= 0:
                return out
            num, den = sp.fraction(sp.together(e))
            if too_large(num) or too_large(den):
                return ANY
            if den != 1:
                return _mul(self._signs(num, facts, depth), (self._signs(den, facts, depth) - ZERO) or NONZERO)
            return self._polynomial(sp.expand(num), facts, depth)
        return ANY

    def _polynomial(self, p, facts, depth) -> frozenset:
        """Signs of an expanded polynomial: its monomials, then p = c·t + g with a fact."""
        key = (p, tuple(id(f) for f in facts), depth)
        if key in self._cache:
            return self._cache[key]
        if too_large(p):
            return ANY
        terms = sp.Add.make_args(p)
        out = _add(self._signs(t, (), 0) for t in terms)
        if out == ANY and depth > 0 and len(terms) <= MAX_FACT_TERMS:
            out = self._with_facts(p, facts, depth)
        self._cache[key] = out
        return out

    def _with_facts(self, p, facts, depth) -> frozenset:
        """p = c·t + g for a fact t = d, with c read off a monomial of d.

        Candidates (fact, c) whose head c·t has a known sign are tried with the tail g
        decided from its monomials; when none settles p, the tails are rewritten the same
        way with the remaining facts, shortest tail first (a depth-first search bounded by
        ``SEARCH_BUDGET`` rewritings per decision)."""
        self._budget = SEARCH_BUDGET
        return self._search(p, facts, depth)

    def _search(self, p, facts, depth) -> frozenset:
        free = p.free_symbols
        candidates = []
        n_terms = len(sp.Add.make_args(p))
        for i, fact in enumerate(facts):
            if not fact.symbols & free:
                continue
            rest = facts[:i] + facts[i + 1:]
            tried = set()
            for coeff, mono in fact.terms:
                c = p.coeff(mono)
                if c == 0:
                    continue
                c = sp.expand(c / coeff)
                if c in tried:
                    continue
                tried.add(c)
                head = _mul(self._signs(c, (), 0), _symbol_signs(fact.symbol))
                if head == ANY:
                    continue
                self._budget -= 1
                g = sp.expand(p - c * fact.definition)
                tail = ZERO if g == 0 else _add(self._signs(t, (), 0) for t in sp.Add.make_args(g))
                out = _add([head, tail])
                if _definite(out) or (out != ANY and g == 0):
                    return out
                size = len(sp.Add.make_args(g))
                if size < n_terms and not too_large(g):
                    candidates.append((size, str(g), head, g, rest))
                if self._budget <= 0:
                    break
        best = ANY
        if depth <= 0:
            return best
        for _, _, head, g, rest in sorted(candidates, key=lambda c: (c[0], c[1])):
            if self._budget <= 0:
                break
            out = _add([head, self._search(g, rest, depth - 1)])
            if _definite(out):
                return out
            if out != ANY and best == ANY:
                best = out
        return best

    def add_fact(self, fact: Fact) -> None:
        """A new fact; cached decisions are dropped (they stay sound, but may now be decided)."""
        self.facts.append(fact)
        self._cache.clear()


def settle(expr: Any, decider: SignDecider) -> sp.Expr:
    """Resolve the conditions of every Piecewise in ``expr`` that the decider can decide
    (Eq(e, 0), e > 0, e < 0, e ≥ 0, e ≤ 0 and their conjunctions/disjunctions)."""
    expr = to_sympy(expr)
    if not expr.has(sp.Piecewise):
        return expr

    def cond(c):
        if c in (sp.true, sp.false):
            return c
        if isinstance(c, (sp.And, sp.Or)):
            parts = [cond(a) for a in c.args]
            return c.func(*parts)
        if isinstance(c, sp.Not):
            return sp.Not(cond(c.args[0]))
        if isinstance(c, sp.core.relational.Relational):
            signs = decider.signs(sp.expand(c.lhs - c.rhs) if c.rhs != 0 else c.lhs)
            op = c.rel_op
            allowed = {"==": {0}, "!=": {-1, 1}, ">": {1}, "<": {-1}, ">=": {0, 1}, "<=": {-1, 0}}.get(op)
            if allowed is None:
                return c
            if signs <= allowed:
                return sp.true
            if not signs & allowed:
                return sp.false
        return c

    def walk(e):
        if not e.args or not e.has(sp.Piecewise):
            return e
        if isinstance(e, sp.Piecewise):
            pieces = [(walk(x), cond(c)) for x, c in e.args]
            return sp.Piecewise(*pieces)
        return e.func(*[walk(a) for a in e.args])

    return walk(expr)


class SympyScalars:
    """The scalar half of :class:`nrm.ops.ObjectOps` for sympy expressions.

    Decides x⁺, x⁻, s(x) and x = 0 under the assumptions of ``decider``; keeps every
    undecided case as a ``Piecewise`` and records it in :attr:`undecided` as
    ``(operation, expression)`` in first-seen order. With ``assume_nonzero`` (a callback
    taking the expression), an undecided x = 0 is instead answered "no" *and* handed to
    the callback, which must state it as an assumption (a rule's validity condition:
    its denominators are non-zero).
    """

    name = "sympy"
    zero = sp.Integer(0)
    one = sp.Integer(1)

    def __init__(self, decider: SignDecider | None = None, assume_nonzero=None):
        self.decider = decider or SignDecider()
        self.undecided: list[tuple[str, sp.Expr]] = []
        self.assume_nonzero = assume_nonzero

    def _record(self, op: str, x) -> None:
        if (op, x) not in self.undecided:
            self.undecided.append((op, x))

    def convert(self, value):
        return to_sympy(value)

    def signs(self, x) -> frozenset:
        return self.decider.signs(x)

    def _guard(self, op: str, x) -> None:
        if too_large(x):
            raise SymbolicSizeError(
                f"{op}() of an expression with more than {MAX_NODES} nodes or {MAX_DEPTH} levels: the rule's "
                "kernel is too large for the symbolic layer's budget (it branches on signs of expressions that "
                "are themselves branched); the law is not settled symbolically")

    def pos(self, x):
        x = to_sympy(x)
        s = self.signs(x)
        if s <= NONNEGATIVE:
            return x
        if s <= NONPOSITIVE:
            return self.zero
        self._guard("pos", x)
        self._record("pos", x)
        return sp.Piecewise((x, x > 0), (0, True))

    def neg(self, x):
        x = to_sympy(x)
        s = self.signs(x)
        if s <= NONPOSITIVE:
            return x
        if s <= NONNEGATIVE:
            return self.zero
        self._guard("neg", x)
        self._record("neg", x)
        return sp.Piecewise((x, x < 0), (0, True))

    def sign(self, x):
        x = to_sympy(x)
        s = self.signs(x)
        if s <= NONNEGATIVE:
            return self.one
        if s == NEGATIVE:
            return -self.one
        self._guard("sign", x)
        self._record("sign", x)
        return sp.Piecewise((-1, x < 0), (1, True))

    def abs(self, x):
        x = to_sympy(x)
        s = self.signs(x)
        if s <= NONNEGATIVE:
            return x
        if s <= NONPOSITIVE:
            return -x
        self._guard("abs", x)
        self._record("abs", x)
        return sp.Piecewise((-x, x < 0), (x, True))

    def sqrt(self, x):
        """√x (sympy's principal root; the rules take it of values ≥ 0)."""
        x = to_sympy(x)
        self._guard("sqrt", x)
        return sp.sqrt(x)

    def pow(self, x, exponent):
        x = to_sympy(x)
        self._guard("pow", x)
        return x ** to_sympy(exponent)

    def is_zero(self, x):
        x = to_sympy(x)
        s = self.signs(x)
        if s == ZERO:
            return True
        if 0 not in s:
            return False
        if self.assume_nonzero is not None:
            self.assume_nonzero(x)  # a stated assumption: the rule's denominator is non-zero
            return False
        self._guard("is_zero", x)
        self._record("is_zero", x)
        return sp.Eq(x, 0)

    def where(self, condition, if_true, if_false):
        if condition is True or condition is sp.true:
            return to_sympy(if_true)
        if condition is False or condition is sp.false:
            return to_sympy(if_false)
        if_true, if_false = to_sympy(if_true), to_sympy(if_false)
        for part in (condition, if_true, if_false):
            self._guard("where", part)
        if if_true == if_false:
            return if_true
        return sp.Piecewise((if_true, condition), (if_false, True))


def sympy_ops(decider: SignDecider | None = None, assume_nonzero=None) -> ObjectOps:
    """An :class:`nrm.ops.ObjectOps` on sympy expressions (a fresh record of undecided cases)."""
    return ObjectOps(SympyScalars(decider, assume_nonzero))
