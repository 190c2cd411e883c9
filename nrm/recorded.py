"""How a capture names an input-derived tensor: a :class:`Value` stands for it in the
recorded calls' arguments (what :mod:`nrm.capture` records and :mod:`nrm.layers` reads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F


@dataclass(frozen=True)
class Value:
    """An input-derived tensor inside a recorded call's arguments: the output of call
    ``node`` (``-1`` is the model's input), item ``item`` of it when the call returned
    several tensors."""

    node: int
    item: int | None = None

    def __repr__(self) -> str:
        return f"%{'input' if self.node < 0 else self.node}" + ("" if self.item is None else f"[{self.item}]")


class Piece:
    """Piece ``item`` of an operation that returns several tensors (``torch.chunk``,
    ``torch.split``, ``Tensor.unbind``): the capture records each piece as one call of its
    own, ``Piece(torch.chunk, 1)(x, 2, 1)`` = ``torch.chunk(x, 2, 1)[1]``, so that every
    recorded call has one output and a kind reads each piece as an index map. It is named
    as the function it is a piece of (``__name__``, ``__module__``, ``__objclass__``)."""

    def __init__(self, func: Any, item: int):
        self.func, self.item = func, item
        self.__name__ = getattr(func, "__name__", "piece")
        self.__module__ = getattr(func, "__module__", "") or ""
        self.__objclass__ = getattr(func, "__objclass__", None)

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)[self.item]

    def __repr__(self) -> str:
        return f"Piece({getattr(self.func, '__qualname__', self.func)}, {self.item})"


DISPATCH_NAMES = {
    f: name for name in ("max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
                         "adaptive_max_pool3d", "fractional_max_pool2d", "fractional_max_pool3d")
    if (f := getattr(F, name, None)) is not None
}
"""The names of torch's boolean-dispatch wrappers (``F.max_pool2d`` is a function named
``fn`` that picks the variant with or without indices)."""


def dispatch_name(func: Any, default: str) -> str:
    """``func``'s name when it is one of torch's boolean-dispatch wrappers, else ``default``."""
    try:
        return DISPATCH_NAMES.get(func, default)
    except TypeError:  # an unhashable callable
        return default


__all__ = ["Value", "Piece", "DISPATCH_NAMES", "dispatch_name"]
