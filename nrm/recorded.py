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


__all__ = ["Value", "DISPATCH_NAMES", "dispatch_name"]
