"""The backend-neutral elementwise operations that every rule is written against.

A rule (:mod:`nrm.rules`) never calls torch, numpy or sympy directly. It receives an
``ops`` object and uses only the operations below, plus ``+``, ``-``, ``*`` and ``/``
of its arguments. The same rule object is therefore evaluated

* on torch tensors by the engine (:class:`TorchOps`),
* on numpy object arrays of :class:`fractions.Fraction` by the exact oracle
  (:class:`ObjectOps` with :class:`FractionScalars`, in :mod:`nrm_verify.references.oracle`),
* on sympy expressions by the symbolic layer (:mod:`nrm_verify.symbolic`).

Conventions (NRM-SPEC §2): ``pos(x) = max(x, 0)``, ``neg(x) = min(x, 0)`` and
``sign(x)`` with ``sign(0) = +1``. ``sqrt`` and ``pow`` with a fractional exponent are
meant for x ≥ 0 (a rule takes them of squares, magnitudes or x⁺); the exact backend
computes them only where the result is rational (:class:`FractionScalars`).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Protocol

import numpy as np
import torch

from .errors import NRMError


class InexactError(NRMError, ArithmeticError):
    """An exact backend asked for a value it cannot represent exactly: the square root (or
    a fractional power) of a rational number that is not a perfect square (power)."""


class Ops(Protocol):
    """What a rule may do with its arguments, beyond ``+ - * /``."""

    def pos(self, x: Any) -> Any:
        """x⁺ = max(x, 0)."""

    def neg(self, x: Any) -> Any:
        """x⁻ = min(x, 0)."""

    def sign(self, x: Any) -> Any:
        """s(x) = +1 for x ≥ 0, −1 for x < 0 (so s(0) = +1)."""

    def square(self, x: Any) -> Any:
        """x²."""

    def abs(self, x: Any) -> Any:
        """|x| = x⁺ − x⁻."""

    def sqrt(self, x: Any) -> Any:
        """√x, for x ≥ 0."""

    def pow(self, x: Any, exponent: Any) -> Any:
        """x ** exponent for a number ``exponent`` (x ≥ 0 when it is not an integer; x ≠ 0
        when it is negative)."""

    def ones_like(self, x: Any) -> Any:
        """1 with the shape of x."""

    def zeros_like(self, x: Any) -> Any:
        """0 with the shape of x."""

    def fill(self, x: Any, value: Any) -> Any:
        """``value`` broadcast to the shape of x (a scalar or an array of x's shape)."""

    def is_zero(self, x: Any) -> Any:
        """Elementwise test x == 0 (a condition usable by :meth:`where`)."""

    def where(self, condition: Any, if_true: Any, if_false: Any) -> Any:
        """Elementwise choice."""

    def safe_divide(self, numerator: Any, denominator: Any) -> Any:
        """numerator / denominator where the denominator is non-zero, 0 elsewhere."""


class TorchOps:
    """:class:`Ops` on torch tensors (any device, any floating dtype)."""

    name = "torch"

    def pos(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)

    def neg(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(max=0)

    def sign(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x < 0, x.new_tensor(-1.0), x.new_tensor(1.0))

    def square(self, x: torch.Tensor) -> torch.Tensor:
        return x * x

    def abs(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()

    def sqrt(self, x: torch.Tensor) -> torch.Tensor:
        return x.sqrt()

    def pow(self, x: torch.Tensor, exponent: Any) -> torch.Tensor:
        return x.pow(exponent)

    def ones_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)

    def zeros_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def fill(self, x: torch.Tensor, value: Any) -> torch.Tensor:
        v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        return v.expand_as(x) if v.dim() <= x.dim() else v

    def is_zero(self, x: torch.Tensor) -> torch.Tensor:
        return x == 0

    def where(self, condition: Any, if_true: Any, if_false: Any) -> torch.Tensor:
        return torch.where(condition, if_true, if_false)

    def safe_divide(self, numerator, denominator: torch.Tensor) -> torch.Tensor:
        # the quotient is computed everywhere and replaced where the denominator is 0
        return torch.where(denominator == 0, denominator.new_tensor(0.0), numerator / denominator)


class ScalarOps(Protocol):
    """The scalar half of an exact backend: how one number is compared and clipped."""

    def pos(self, x: Any) -> Any: ...
    def neg(self, x: Any) -> Any: ...
    def sign(self, x: Any) -> Any: ...
    def abs(self, x: Any) -> Any: ...
    def sqrt(self, x: Any) -> Any: ...
    def pow(self, x: Any, exponent: Any) -> Any: ...
    def is_zero(self, x: Any) -> bool: ...
    def where(self, condition: Any, if_true: Any, if_false: Any) -> Any: ...
    def convert(self, value: Any) -> Any: ...
    zero: Any
    one: Any


class ObjectOps:
    """:class:`Ops` on numpy object arrays whose elements are exact scalars.

    ``scalars`` supplies the elementwise meaning (:class:`FractionScalars` for exact
    rationals; the symbolic layer supplies sympy's).
    """

    def __init__(self, scalars: ScalarOps):
        self.scalars = scalars
        self.name = getattr(scalars, "name", type(scalars).__name__)

    def _map(self, fn, *arrays):
        arrays = np.broadcast_arrays(*[np.asarray(a, dtype=object) for a in arrays])
        out = np.empty(arrays[0].shape, dtype=object)
        for idx in np.ndindex(out.shape):
            out[idx] = fn(*(a[idx] for a in arrays))
        return out

    def pos(self, x):
        return self._map(self.scalars.pos, x)

    def neg(self, x):
        return self._map(self.scalars.neg, x)

    def sign(self, x):
        return self._map(self.scalars.sign, x)

    def square(self, x):
        return self._map(lambda v: v * v, x)

    def abs(self, x):
        return self._map(self.scalars.abs, x)

    def sqrt(self, x):
        return self._map(self.scalars.sqrt, x)

    def pow(self, x, exponent):
        return self._map(lambda v: self.scalars.pow(v, exponent), x)

    def ones_like(self, x):
        return self._map(lambda v: self.scalars.one, x)

    def zeros_like(self, x):
        return self._map(lambda v: self.scalars.zero, x)

    def fill(self, x, value):
        value = self._map(self.scalars.convert, np.asarray(value, dtype=object))
        return np.broadcast_to(value, np.shape(x)).copy()

    def is_zero(self, x):
        return self._map(self.scalars.is_zero, x)

    def where(self, condition, if_true, if_false):
        return self._map(self.scalars.where, condition, if_true, if_false)

    def safe_divide(self, numerator, denominator):
        zero = self.scalars.zero

        def div(n, d):
            return self.scalars.where(self.scalars.is_zero(d), zero, _div(n, d, self.scalars))

        return self._map(div, numerator, denominator)


def _div(n, d, scalars):
    """n / d, or 0 when d is (known to be) zero; never raises for exact zeros."""
    if scalars.is_zero(d) is True:
        return scalars.zero
    return n / d


class FractionScalars:
    """Exact rational arithmetic with :class:`fractions.Fraction`.

    ``sqrt(x)`` and ``pow(x, p/q)`` are exact where the result is rational — x a perfect
    square (q-th power) of a rational, as ``sqrt(9/4) = 3/2`` — and raise
    :class:`InexactError` elsewhere (√2 has no Fraction; rounding it would make the
    oracle inexact without saying so). A negative x under a root and 0 to a negative power
    raise too: the torch backend would give NaN or Inf there.
    """

    name = "fraction"

    zero = Fraction(0)
    one = Fraction(1)

    def convert(self, value):
        if isinstance(value, torch.Tensor):
            value = value.item()
        return Fraction(value)

    def abs(self, x):
        return -x if x < 0 else x

    def sqrt(self, x):
        return self.pow(x, Fraction(1, 2))

    def pow(self, x, exponent):
        x, p = Fraction(x), Fraction(exponent)
        if x == 0 and p < 0:
            raise InexactError(f"0 ** {p} is not a number (the torch backend gives inf); keep the base non-zero, "
                               "e.g. with ops.where or ops.safe_divide")
        if p.denominator == 1:
            return x ** p.numerator
        if x < 0:
            raise InexactError(f"({x}) ** {p}: a fractional power of a negative number is not real (the torch "
                               "backend gives NaN); take it of a non-negative value such as ops.abs(x) or ops.pos(x)")
        num, den = _root(x.numerator, p.denominator), _root(x.denominator, p.denominator)
        if num is None or den is None:
            raise InexactError(f"({x}) ** {p} is irrational, so the exact backend cannot compute it; the torch "
                               "and sympy backends can (the exact oracle only checks rules whose values are rational)")
        return Fraction(num, den) ** p.numerator

    def pos(self, x):
        return x if x > 0 else self.zero

    def neg(self, x):
        return x if x < 0 else self.zero

    def sign(self, x):
        return -self.one if x < 0 else self.one

    def is_zero(self, x) -> bool:
        return x == 0

    def where(self, condition, if_true, if_false):
        return if_true if condition else if_false


def _root(n: int, q: int) -> int | None:
    """The integer q-th root of n ≥ 0 when n is a perfect q-th power, else None."""
    r = round(n ** (1.0 / q)) if n < 2 ** 1000 else _integer_root(n, q)
    for c in (r - 1, r, r + 1):
        if c >= 0 and c ** q == n:
            return c
    c = _integer_root(n, q)
    return c if c ** q == n else None


def _integer_root(n: int, q: int) -> int:
    """⌊n^(1/q)⌋ by Newton's method on integers."""
    if n < 2:
        return n
    x = 1 << -(-n.bit_length() // q)
    while True:
        y = ((q - 1) * x + n // x ** (q - 1)) // q
        if y >= x:
            return x
        x = y


TORCH = TorchOps()
FRACTIONS = ObjectOps(FractionScalars())
