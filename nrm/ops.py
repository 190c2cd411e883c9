"""The backend-neutral elementwise operations that every rule is written against.

A rule (:mod:`nrm.rules`) never calls torch, numpy or sympy directly. It receives an
``ops`` object and uses only the operations below, plus ``+``, ``-``, ``*`` and ``/``
of its arguments. The same rule object is therefore evaluated

* on torch tensors by the engine (:class:`TorchOps`),
* on numpy object arrays of :class:`fractions.Fraction` by the exact oracle
  (:class:`ObjectOps` with :class:`FractionScalars`, in :mod:`nrm_verify.oracle`),
* on sympy expressions by the symbolic layer (:mod:`nrm_verify.symbolic`).

Conventions (NRM-SPEC §2): ``pos(x) = max(x, 0)``, ``neg(x) = min(x, 0)`` and
``sign(x)`` with ``sign(0) = +1``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch


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
    """Exact rational arithmetic with :class:`fractions.Fraction`."""

    name = "fraction"

    from fractions import Fraction as _Fraction

    zero = _Fraction(0)
    one = _Fraction(1)

    def convert(self, value):
        if isinstance(value, torch.Tensor):
            value = value.item()
        return self._Fraction(value)

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


TORCH = TorchOps()
FRACTIONS = ObjectOps(FractionScalars())
