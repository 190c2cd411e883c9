"""The result of a law check, tolerances, and the measures of deviation the laws share."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from nrm.measure import Measure
from nrm_verify.laws.status import HELD, NOT_APPLICABLE, VIOLATED

DEFAULT_TOL = 1e-9


@dataclass
class LawResult:
    """The outcome of checking one law on one case."""

    law: str
    name: str
    holds: bool | None
    deviation: float = 0.0
    tolerance: float = DEFAULT_TOL
    assumptions: list[str] = field(default_factory=list)
    detail: str = ""
    measured: Any = None
    """The measured side of the law where it deviates most (a float), when it applies."""
    expected: Any = None
    """What the law says that value should be."""

    @property
    def applicable(self) -> bool:
        return self.holds is not None

    @property
    def status(self) -> str:
        """"held", "violated" or "not applicable" (:mod:`nrm_verify.laws.status`)."""
        return {True: HELD, False: VIOLATED, None: NOT_APPLICABLE}[self.holds]

    def __bool__(self) -> bool:
        """True when the law holds or does not apply."""
        return self.holds is not False

    def __str__(self) -> str:
        verdict = {True: "holds", False: "VIOLATED", None: "not applicable"}[self.holds]
        dev = f" (worst deviation {self.deviation:.3g}, tolerance {self.tolerance:.1g})" if self.applicable else ""
        values = ""
        if self.holds is False and self.measured is not None:
            values = f"; measured {self.measured!r}, expected {self.expected!r}"
        return f"{self.law} {self.name}: {verdict}{dev} — {self.detail}{values}"


def tolerance_for(m: Measure, tol: float | None) -> float:
    if tol is not None:
        return tol
    return DEFAULT_TOL if m.engine.dtype == torch.float64 else 1e-4


def law_result(law, name, deviation, tol, detail, assumptions=(), pair=None) -> LawResult:
    """``pair`` = (measured, expected) where the deviation is worst; a NaN deviation (a
    kernel or measure that is not a number) never holds."""
    deviation = float(deviation)
    measured, expected = pair if pair is not None else (None, None)
    if math.isnan(deviation):
        detail += " (NaN: the kernel or the measure is not a number)"
    return LawResult(law, name, deviation <= tol, deviation, tol, list(assumptions), detail, measured, expected)


def relative_deviation(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float = 1.0) -> float:
    """max |a − b| / max(1, scale) — relative to the size of the terms that were added."""
    return worst_pair(a, b, scale)[0]


def worst_pair(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float = 1.0) -> tuple[float, float, float]:
    """(max |a − b| / max(1, scale), a and b where that maximum is reached); NaN first."""
    if not a.numel():
        return 0.0, 0.0, 0.0
    a, b = torch.broadcast_tensors(a, b)
    s = torch.as_tensor(scale, dtype=a.dtype, device=a.device).clamp(min=1.0)
    rel = ((a - b).abs() / s).expand_as(a).reshape(-1)
    values_bad = (torch.isnan(a) | torch.isnan(b)).reshape(-1)
    bad = values_bad if bool(values_bad.any()) else torch.isnan(rel)
    i = int(bad.nonzero()[0]) if bool(bad.any()) else int(rel.argmax())
    return float(rel[i]), float(a.reshape(-1)[i]), float(b.reshape(-1)[i])


class Worst:
    """The worst of several comparisons, with the values where it occurred."""

    def __init__(self):
        self.deviation, self.pair, self.where = 0.0, None, ""

    def add(self, a, b, scale=1.0, where: str = "") -> None:
        d, ma, mb = worst_pair(a, b, scale)
        nan_values = math.isnan(ma) or math.isnan(mb)
        known_nan = self.pair is not None and (math.isnan(self.pair[0]) or math.isnan(self.pair[1]))
        if (self.pair is None or d > self.deviation or (math.isnan(d) and not math.isnan(self.deviation))
                or (nan_values and not known_nan)):
            self.deviation, self.pair, self.where = d, (ma, mb), where


_MAGNITUDES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def magnitude(m: Measure) -> torch.Tensor:
    """Per sample, max over layers of Σ_{j ∈ V̄_l} |m_l(j)|: how large the values were that
    the engine added up on the way down (a lower bound of the total variation Σ_ω |μ(ω)|).
    A near-zero f_c or pre-activation makes it huge, and float cancellation is then of
    that order even where the marginals of a layer are small; the linear laws measure
    their deviations against it (besides the size of their own terms)."""
    if m not in _MAGNITUDES:
        every = m.marginals(absorber=True)  # one pass for every layer
        sizes = [marg.reshape(m.engine.batch, -1).abs().sum(1) + absorbed.abs() for marg, absorbed in every.values()]
        _MAGNITUDES[m] = torch.stack(sizes).max(0).values
    return _MAGNITUDES[m]


def big_terms(m: Measure, scale: torch.Tensor | float) -> torch.Tensor:
    """The larger of a law's own scale and the measure's magnitude, broadcast per sample."""
    mag = magnitude(m)
    scale = torch.as_tensor(scale, dtype=mag.dtype, device=mag.device)
    return torch.maximum(scale, mag.reshape((-1,) + (1,) * max(scale.dim() - 1, 0)))


def is_null(x: torch.Tensor) -> torch.Tensor:
    return x.abs() <= 64 * torch.finfo(x.dtype).eps


def restricted(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The samples (first dimension) where the law is defined."""
    return values[keep]


def canonical_layers(m: Measure) -> list[str]:
    return m.canonical_names()


# -- L9–L14: relations between rules ------------------------------------------------------
def all_marginals(m: Measure) -> dict[str, torch.Tensor]:
    return m.marginals()  # one pass for every layer


def largest_deviation(a: dict, b: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for k in a:
        mass = a[k].abs().reshape(a[k].shape[0], -1).sum(1).reshape((-1,) + (1,) * (a[k].dim() - 1))
        d = relative_deviation(a[k], b[k], mass)
        if d > worst or (math.isnan(d) and not math.isnan(worst)):
            worst, where = d, k
    return worst, where


def restricted_deviation(a: dict, b: dict, keep: torch.Tensor) -> float:
    return largest_deviation({k: v[keep] for k, v in a.items()}, {k: v[keep] for k, v in b.items()})[0]
