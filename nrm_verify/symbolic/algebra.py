"""Exact rational functions with factored denominators: the proof algebra.

Every quantity of a symbolic measure is a sum of products of kernel entries, and every
kernel entry is (polynomial) / (product of a few known denominators: z_k, z_k + ε,
Σ_j a_j ρ(w_jk) + ρ(b_k), …). Keeping each value as

    numerator / Π_i factor_i^{p_i}

with the factors as *atoms* (never multiplied out, never divided by a gcd) makes sums a
matter of raising each side to the common multiset of factors — no polynomial gcd,
which in twenty variables is what makes sympy's own rational-function field slow. The
representation is not canonical, but the one question a proof asks is canonical: a
value is zero exactly when its numerator is the zero polynomial (the factors are
non-zero on the region of the assumptions).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sympy as sp
from sympy.polys.rings import PolyRing


class FactoredField:
    """The rational functions over QQ in ``symbols``, with factored denominators."""

    def __init__(self, symbols):
        self.symbols = tuple(symbols)
        self.ring = PolyRing(self.symbols, sp.QQ)
        self.zero = Frac(self, self.ring.zero, Counter())
        self.one = Frac(self, self.ring.one, Counter())

    def poly(self, expr: sp.Expr):
        return self.ring.from_expr(expr)

    def from_expr(self, expr: Any) -> Frac:
        """A sympy expression (a rational function of the field's symbols) as a Frac.
        Raises ValueError when it is not one (a Piecewise, an unknown symbol …)."""
        expr = sp.sympify(expr)
        if expr.is_Rational:
            return Frac(self, self.ring(expr), Counter())
        num, den = sp.fraction(sp.together(expr))
        out = Frac(self, self.poly(sp.expand(num)), Counter())
        coeff = sp.Integer(1)
        for factor in sp.Mul.make_args(den):
            base, power = factor.as_base_exp()
            if base.is_Rational:
                coeff *= factor
                continue
            if not (power.is_Integer and power > 0):
                raise ValueError(f"not a rational function: {expr}")
            p = self.poly(sp.expand(base))
            if p.is_ground:
                coeff *= factor
                continue
            out.den[p] += int(power)
        if coeff != 1:
            out.num = out.num * self.ring(1 / coeff)
        return out

    def convert(self, x) -> Frac:
        if isinstance(x, Frac):
            return x
        if isinstance(x, int) or (isinstance(x, sp.Basic) and x.is_Rational):
            return Frac(self, self.ring(x), Counter())
        return self.from_expr(x)


class Frac:
    """numerator / Π factor^power; see :class:`FactoredField`."""

    __slots__ = ("field", "num", "den")

    def __init__(self, field: FactoredField, num, den: Counter):
        self.field = field
        self.num = num
        self.den = den

    def _lift(self, den: Counter):
        """The numerator over the larger multiset ``den`` ⊇ self.den."""
        num = self.num
        for f, p in den.items():
            extra = p - self.den.get(f, 0)
            if extra:
                num = num * f**extra
        return num

    def __add__(self, other) -> Frac:
        other = self.field.convert(other)
        if not other.num:
            return self
        if not self.num:
            return other
        den = self.den | other.den  # the maximum power of each factor
        return Frac(self.field, self._lift(den) + other._lift(den), den)

    __radd__ = __add__

    def __neg__(self) -> Frac:
        return Frac(self.field, -self.num, Counter(self.den))

    def __sub__(self, other) -> Frac:
        return self + (-self.field.convert(other))

    def __rsub__(self, other) -> Frac:
        return self.field.convert(other) + (-self)

    def __mul__(self, other) -> Frac:
        other = self.field.convert(other)
        if not self.num or not other.num:
            return self.field.zero
        # a numerator that is one of the other side's denominator factors cancels against it
        # (μ(A | B) · μ(B) after a division by μ(B)): exact, and it keeps the sizes down
        if self.den.get(other.num):
            return Frac(self.field, self.num, (self.den - Counter({other.num: 1})) + other.den)
        if other.den.get(self.num):
            return Frac(self.field, other.num, (other.den - Counter({self.num: 1})) + self.den)
        return Frac(self.field, self.num * other.num, self.den + other.den)

    __rmul__ = __mul__

    def __truediv__(self, other) -> Frac:
        other = self.field.convert(other)
        if not other.num:
            raise ZeroDivisionError("division by an identically zero rational function")
        num = self.num
        for f, p in other.den.items():
            num = num * f**p
        den = Counter(self.den)
        if other.num.is_ground:
            num = num * (1 / other.num.LC)
        else:
            den[other.num] += 1
        return Frac(self.field, num, den)

    def __rtruediv__(self, other) -> Frac:
        return self.field.convert(other) / self

    def __eq__(self, other) -> bool:
        if isinstance(other, (int, sp.Basic, Frac)):
            return not (self - other).num
        return NotImplemented

    def __hash__(self):  # values are compared, not hashed; keep them out of sets
        raise TypeError("Frac values are not hashable")

    @property
    def is_constant(self) -> bool:
        return self.num.is_ground and not any(self.den.values())

    def as_expr(self) -> sp.Expr:
        den = sp.Mul(*[f.as_expr() ** p for f, p in sorted(self.den.items(), key=lambda fp: str(fp[0]))])
        return self.num.as_expr() / den

    def __repr__(self) -> str:
        return f"Frac({self.as_expr()})"
