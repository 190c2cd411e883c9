"""The laws of the measure (NRM-SPEC §4), one public function each.

Every law returns a :class:`LawResult`: whether it holds (``None`` when it does not
apply, with the reason), the worst deviation and the tolerance it was held to, the
assumptions that were checked, and a one-line human-readable detail. The test suite,
the validator and users call these same functions.

Where a law would be a tautology of the implementation (μ(A ∪ B) is *computed* by
inclusion–exclusion), the two sides are computed by different paths: a complement is
also written as an explicit set of neurons (with the absorber), a union of sets in one
layer as one mask, a marginal as a masked pass, so that the check can fail.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import nrm
from nrm.events import OMEGA, At, Event
from nrm.measure import Measure

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


def _tol(m: Measure, tol: float | None) -> float:
    if tol is not None:
        return tol
    return DEFAULT_TOL if m.engine.dtype == torch.float64 else 1e-4


def _result(law, name, deviation, tol, detail, assumptions=(), pair=None) -> LawResult:
    """``pair`` = (measured, expected) where the deviation is worst; a NaN deviation (a
    kernel or measure that is not a number) never holds."""
    deviation = float(deviation)
    measured, expected = pair if pair is not None else (None, None)
    if math.isnan(deviation):
        detail += " (NaN: the kernel or the measure is not a number)"
    return LawResult(law, name, deviation <= tol, deviation, tol, list(assumptions), detail, measured, expected)


def _dev(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float = 1.0) -> float:
    """max |a − b| / max(1, scale) — relative to the size of the terms that were added."""
    return _worst(a, b, scale)[0]


def _worst(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float = 1.0) -> tuple[float, float, float]:
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


class _Worst:
    """The worst of several comparisons, with the values where it occurred."""

    def __init__(self):
        self.deviation, self.pair, self.where = 0.0, None, ""

    def add(self, a, b, scale=1.0, where: str = "") -> None:
        d, ma, mb = _worst(a, b, scale)
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
        sizes = [m.marginal(n).reshape(m.engine.batch, -1).abs().sum(1) + m.absorbed(n).abs()
                 for n in _canonical_layers(m)]
        _MAGNITUDES[m] = torch.stack(sizes).max(0).values
    return _MAGNITUDES[m]


def _big(m: Measure, scale: torch.Tensor | float) -> torch.Tensor:
    """The larger of a law's own scale and the measure's magnitude, broadcast per sample."""
    mag = magnitude(m)
    scale = torch.as_tensor(scale, dtype=mag.dtype, device=mag.device)
    return torch.maximum(scale, mag.reshape((-1,) + (1,) * max(scale.dim() - 1, 0)))


def _null(x: torch.Tensor) -> torch.Tensor:
    return x.abs() <= 64 * torch.finfo(x.dtype).eps


def _on(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The samples (first dimension) where the law is defined."""
    return values[keep]


def _canonical_layers(m: Measure) -> list[str]:
    return m._canonical_names()


def complement_atom(m: Measure, event: At) -> At:
    """The complement of a one-layer event written explicitly: {X_l ∈ V̄_l ∖ S} (the copies
    of a branched model's layer flip with S's ``parallel``)."""
    atom = event.atom
    layer = atom.layer
    shape = m.layer_shape(layer)
    inside = m._constraint(atom)
    mask = torch.ones(m.engine.shape[inside.layer], dtype=torch.bool, device=m.engine.device)
    if inside.mask is not None:
        mask = ~inside.mask
    elif atom.selector == "all":
        mask = torch.zeros_like(mask)
    return At(layer, mask=mask.reshape(shape).cpu(), absorber=not atom.absorber, parallel=not atom.parallel)


# -- L1 ------------------------------------------------------------------------------
def normalization(m: Measure, *, tol: float | None = None) -> LawResult:
    """L1: μ(Ω) = 1 and Σ_{j ∈ V̄_l} m_l(j) = 1 at every layer (on a branched model V̄_l also
    holds the copies of the walks that bypass the layer's node: ``m.bypassing``)."""
    tol = _tol(m, tol)
    worst = _Worst()
    omega = m(OMEGA)
    worst.add(omega, torch.ones_like(omega), _big(m, 1.0), where="μ(Ω)")
    branched = not m.network.sequential
    for name in _canonical_layers(m):
        marg = m.marginal(name)
        total = marg.reshape(marg.shape[0], -1).sum(1) + m.absorbed(name)
        if branched:  # the copies of the walks that bypass the layer's node (NRM-SPEC §1)
            total = total + m.bypassing(name)
        scale = marg.reshape(marg.shape[0], -1).abs().sum(1)
        worst.add(total, torch.ones_like(total), _big(m, scale), where=f"Σ_j m(j) + m(⊥) at {name!r}")
    return _result("L1", "normalization", worst.deviation, tol,
                   f"μ(Ω) and Σ_j m_l(j) + m_l(⊥) over {len(_canonical_layers(m))} layers" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


def _column_magnitude(eng, l: int, unit: torch.Tensor) -> torch.Tensor:
    """Σ_s |κ_s(k)/D_s(k)| Σ_j Σ_p |u_p(a_j)| |v_p(w_jk)| for the columns k in the unit stack
    (K, B, *shape): the size of the terms whose sum is the real part of the column, so that
    cancellation inside a contribution c_s(j, k) (z^B at the corners of its box, tiny
    pre-activations) is measured against the terms, not against their sum. Max-pool: 1."""
    K, B = unit.shape[:2]
    block = eng.net.blocks[l]
    if block.producer.kind != "linear":
        return torch.ones((K, B), dtype=eng.dtype, device=eng.device)
    shares, _ = eng._columns(l, unit)
    lmap = eng.maps[l]
    inputs = eng.inputs[l]
    total = torch.zeros((K, B) + eng.shape[l], dtype=eng.dtype, device=eng.device)
    for scale, parts in shares:
        size = None
        for u, w in parts:
            a = torch.ones_like(inputs) if u is None else u.abs()
            t = lmap.forward(a, w.abs())
            size = t if size is None else size + t
        if size is not None:
            total = total + scale.abs() * size
    return (total * unit).reshape(K, B, -1).sum(-1)


def column_sums(m: Measure, *, tol: float | None = None, chunk: int = 256) -> LawResult:
    """L1 for the kernels: every column is stochastic, Σ_{j ∈ V̄_{l−1}} q_l(j | k) = 1 for
    every neuron k of every layer l ≥ 1 and every sample (a signed kernel: entries may be
    negative or exceed 1, the sum may not move). Each column is read by sending a unit
    relevance at k one layer down; a rule that reads the incoming relevance is read at
    that unit relevance. The deviation is relative to the size of the terms that were
    added, Σ_s |κ_s/D_s| Σ_j Σ_p |u_p(a_j) v_p(w_jk)| + |q(⊥ | k)| (see
    :func:`_column_magnitude`): a column whose denominator is rounding noise (a
    mathematically zero denominator computed as 1e-16) is ill-conditioned, not leaking."""
    tol = _tol(m, tol)
    eng = m.engine
    worst = _Worst()
    names = _canonical_layers(m)
    columns = 0
    for l in range(1, m.depth + 1):
        n = math.prod(eng.shape[l])
        columns += n
        for first in range(0, n, chunk):
            ks = list(range(first, min(n, first + chunk)))
            unit = torch.zeros((len(ks), eng.batch, n), dtype=eng.dtype, device=eng.device)
            unit[torch.arange(len(ks)), :, torch.tensor(ks)] = 1
            unit = unit.reshape((len(ks), eng.batch) + eng.shape[l])
            col, bot = eng.step_down(l, unit, torch.zeros((len(ks), eng.batch), dtype=eng.dtype, device=eng.device))
            col = col.reshape(len(ks), eng.batch, -1)
            total = col.sum(-1) + bot
            scale = torch.maximum(col.abs().sum(-1), _column_magnitude(eng, l, unit)) + bot.abs()
            rel = ((total - 1).abs() / scale.clamp(min=1.0)).reshape(-1)
            rel = torch.where(torch.isnan(rel), torch.full_like(rel, math.inf), rel)
            i = int(rel.argmax())
            k, b = ks[i // eng.batch], i % eng.batch
            worst.add(total, torch.ones_like(total), scale, where=f"column {k} of {names[l]!r} (sample {b})")
    return _result("L1", "column-stochastic kernels", worst.deviation, tol,
                   f"Σ_j q(j | k) + q(⊥ | k) over {columns} columns of {m.depth} layers" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


# -- L2 ------------------------------------------------------------------------------
def additivity(m: Measure, a: Event, b: Event, *, tol: float | None = None) -> LawResult:
    """L2: μ(A ∪ B) = μ(A) + μ(B) − μ(A ∩ B), and, for one-layer events, μ(Aᶜ) = 1 − μ(A)
    (the complement written as an explicit set) and μ(X_l ∈ S) = Σ_{j∈S} m_l(j)."""
    tol = _tol(m, tol)
    ua, ub, uab, uu = m.measure([a, b, a & b, a | b])
    scale = ua.abs() + ub.abs() + uab.abs()
    worst = _Worst()
    worst.add(uu, ua + ub - uab, _big(m, scale), where="μ(A ∪ B) against μ(A) + μ(B) − μ(A ∩ B)")
    checked = ["union"]
    for ev in (a, b):
        if isinstance(ev, At):
            comp = m(complement_atom(m, ev))
            base = m(ev)
            worst.add(comp, 1 - base, _big(m, base.abs()), where=f"μ(complement of {ev!r}) against 1 − μ")
            marg = m.marginal(ev.atom.layer)
            mask = m._constraint(ev.atom)
            full = torch.ones_like(marg[0], dtype=torch.bool)
            layer_mask = full if mask.mask is None else mask.mask.reshape(marg.shape[1:])
            summed = (marg * layer_mask).reshape(marg.shape[0], -1).sum(1)
            if ev.atom.absorber:
                summed = summed + m.absorbed(ev.atom.layer)
            if ev.atom.parallel and not m.network.sequential:
                summed = summed + m.bypassing(ev.atom.layer)
            worst.add(base, summed, _big(m, marg.abs().reshape(marg.shape[0], -1).sum(1)),
                      where=f"μ({ev!r}) against the sum of its marginals")
            checked += ["explicit complement", "sum of marginals"]
    detail = "; ".join(dict.fromkeys(checked)) + (f"; worst: {worst.where}" if worst.deviation > 0 else "")
    return _result("L2", "additivity", worst.deviation, tol, detail, pair=worst.pair)


# -- L3 ------------------------------------------------------------------------------
def marginalization(m: Measure, layer: str, event: Event = OMEGA, *, tol: float | None = None) -> LawResult:
    """L3: Σ_{j ∈ V̄_l} μ(X_l = j, E) = μ(E) for an event E not constraining layer l."""
    tol = _tol(m, tol)
    l = m.layer_index(layer)
    if any(m.layer_index(name) == l for name in event.layers()):
        return LawResult("L3", "marginalization", None, detail=f"the event constrains layer {layer!r} itself")
    joint = m.marginal(layer, within=event)
    total = joint.reshape(joint.shape[0], -1).sum(1) + m.absorbed(layer, within=event)
    if not m.network.sequential:  # V̄_l also holds the copies of the walks that bypass the node
        total = total + m.bypassing(layer, within=event)
    direct = m(event)
    d, a, b = _worst(total, direct, _big(m, joint.abs().reshape(joint.shape[0], -1).sum(1)))
    return _result("L3", "marginalization", d, tol, f"Σ_j μ(X_{layer} = j, E) against μ(E) for E = {event!r}",
                   pair=(a, b))


def joint_marginals(m: Measure, layer_a: str, layer_b: str, *, tol: float | None = None) -> LawResult:
    """L3 for joints: the channel joint's row sums plus the mass through ⊥_b give layer a's
    channel marginal, and likewise for columns."""
    tol = _tol(m, tol)
    J = m.joint(layer_a, layer_b)
    worst = _Worst()
    for mine, other, axis in ((layer_a, layer_b, 2), (layer_b, layer_a, 1)):
        # walks at ⊥ of the other layer, and (branched models) on the copies that bypass its node
        through_bot = m.marginal(mine, within=At(other, index=[], absorber=True, parallel=True))
        marg = m.marginal(mine)
        per_channel = marg.reshape(marg.shape[0], marg.shape[1] if marg.dim() > 1 else 1, -1).sum(-1)
        bot = through_bot.reshape(per_channel.shape[0], per_channel.shape[1], -1).sum(-1)
        worst.add(J.sum(axis) + bot, per_channel, _big(m, J.abs().sum(axis)),
                  where=f"sums over {other!r} against m_{mine}")
    return _result("L3", "joint marginals", worst.deviation, tol,
                   f"row and column sums of joint({layer_a!r}, {layer_b!r})", pair=worst.pair)


# -- L4, L5, L6 ---------------------------------------------------------------------------
def chain_rule(m: Measure, walk: Sequence[int | None], *, tol: float | None = None) -> LawResult:
    """L4: μ(n_0, …, n_L) = m_L(n_L) Π_l μ(X_{l−1} = n_{l−1} | X_l = n_l), when defined."""
    tol = _tol(m, tol)
    names = _canonical_layers(m)
    if len(walk) != len(names):
        raise ValueError(f"a walk names one neuron per layer ({len(names)}), got {len(walk)}")

    def atom(name, n):
        return At(name, index=[], absorber=True) if n is None else At(name, index=[n])

    direct = m.walk(list(walk))
    product = m(atom(names[-1], walk[-1]))
    keep = torch.ones_like(product, dtype=torch.bool)
    for l in range(len(names) - 1, 0, -1):
        given = atom(names[l], walk[l])
        both, base = m.measure([atom(names[l - 1], walk[l - 1]) & given, given])
        keep &= ~_null(base)
        product = product * both / torch.where(_null(base), torch.ones_like(base), base)
    if not bool(keep.any()):
        return LawResult("L4", "chain rule", None, detail="a one-step conditional is undefined (μ(X_l = n_l) = 0) "
                         "for every sample")
    d, a, b = _worst(_on(direct, keep), _on(product, keep), _on(direct, keep).abs())
    return _result("L4", "chain rule", d, tol,
                   f"walk {list(walk)} against m_L · Π of one-step conditionals on {int(keep.sum())} samples",
                   pair=(a, b))


def multiplicative(m: Measure, a: Event, b: Event, *, tol: float | None = None) -> LawResult:
    """L4: μ(A ∩ B) = μ(A) μ(B | A) when μ(A) ≠ 0."""
    tol = _tol(m, tol)
    ua, uab = m.measure([a, a & b])
    keep = ~_null(ua)
    if not bool(keep.any()):
        return LawResult("L4", "multiplicative law", None, detail="μ(A) = 0 for every sample: μ(B | A) is undefined")
    cond = _on(uab, keep) / _on(ua, keep)
    d, x, y = _worst(_on(uab, keep), _on(ua, keep) * cond, _on(ua, keep).abs())
    return _result("L4", "multiplicative law", d, tol, f"A = {a!r}, B = {b!r}", pair=(x, y))


def bayes(m: Measure, a: Event, b: Event, *, tol: float | None = None) -> LawResult:
    """L5: μ(A | B) μ(B) = μ(B | A) μ(A) when both conditionals are defined."""
    tol = _tol(m, tol)
    ua, ub, uab, uba = m.measure([a, b, a & b, b & a])
    keep = ~_null(ua) & ~_null(ub)
    if not bool(keep.any()):
        return LawResult("L5", "Bayes", None,
                         detail="μ(A) = 0 or μ(B) = 0 for every sample: a conditional is undefined")
    ua, ub, uab, uba = (_on(t, keep) for t in (ua, ub, uab, uba))
    lhs = (uab / ub) * ub
    rhs = (uba / ua) * ua
    d, x, y = _worst(lhs, rhs, lhs.abs())
    return _result("L5", "Bayes", d, tol, f"A = {a!r}, B = {b!r}", pair=(x, y))


def total_measure(m: Measure, b: Event, layer: str, *, tol: float | None = None) -> LawResult:
    """L6: μ(B) = Σ_i μ(B ∩ A_i) over the partition of V̄_layer into its channels and ⊥."""
    tol = _tol(m, tol)
    shape = m.layer_shape(layer)
    channels = shape[0] if shape else 1
    parts = [At(layer, channels=[c]) for c in range(channels)] if len(shape) > 1 else [
        At(layer, index=[j]) for j in range(channels)]
    parts.append(At(layer, index=[], absorber=True, parallel=True))  # ⊥ and the copies that bypass the node
    values = m.measure([b & p for p in parts])
    d, x, y = _worst(values.sum(0), m(b), _big(m, values.abs().sum(0)))
    return _result("L6", "total measure", d, tol, f"{len(parts)} cells of V̄_{layer} (channels and ⊥), B = {b!r}",
                   pair=(x, y))


# -- L7 ---------------------------------------------------------------------------------
def markov(m: Measure, layer: str, neuron: int, lower: Sequence[int], above: Event = OMEGA, *,
           tol: float | None = None) -> LawResult:
    """L7: μ(X_{l−1} ∈ A | X_l = k, E_{>l}) = Σ_{j∈A} q_l(j | k) for any event E_{>l} on
    the layers above l with non-zero measure. The right side is the kernel column read
    without any conditioning (a unit relevance at k sent one layer down)."""
    tol = _tol(m, tol)
    l = m.layer_index(layer)
    if l == 0:
        return LawResult("L7", "Markov", None, detail="the input layer has no layer below")
    if any(m.layer_index(name) <= l for name in above.layers()):
        return LawResult("L7", "Markov", None, detail="E must constrain only layers above l")
    if m.network.blocks[l].inputs != [l - 1]:
        return LawResult("L7", "Markov", None,
                         detail=f"layer {layer!r} does not read the layer before it (a branch): its kernel "
                                "goes to another layer")
    names = _canonical_layers(m)
    given = At(names[l], index=[neuron]) & above
    both, base = m.measure([At(names[l - 1], index=list(lower)) & given, given])
    keep = ~_null(base)
    if not bool(keep.any()):
        return LawResult("L7", "Markov", None, detail=f"μ(X_{l} = {neuron}, E) = 0 for every sample")
    lhs = both / torch.where(keep, base, torch.ones_like(base))
    eng = m.engine
    unit = torch.zeros((1, eng.batch) + eng.shape[l], dtype=eng.dtype, device=eng.device)
    unit.reshape(1, eng.batch, -1)[:, :, neuron] = 1
    column, _ = eng.step_down(l, unit, torch.zeros((1, eng.batch), dtype=eng.dtype, device=eng.device))
    rhs = column.reshape(eng.batch, -1)[:, list(lower)].sum(1)
    lhs, rhs = _on(lhs, keep), _on(rhs, keep)
    d, x, y = _worst(lhs, rhs, rhs.abs())
    return _result("L7", "Markov", d, tol,
                   f"μ(X_{l - 1} ∈ {list(lower)} | X_{l} = {neuron}, E) against q_{l}({list(lower)} | {neuron}) "
                   f"for E = {above!r}", pair=(x, y))


# -- L8 ---------------------------------------------------------------------------------
def lrp_equivalence(m: Measure, reference: dict | None = None, f: torch.Tensor | None = None, *,
                    tol: float | None = None) -> LawResult:
    """L8: m_l(j) = R_j^(l) / f_c(x) for real j and m_l(⊥_l) = 1 − Σ_j R_j^(l) / f_c(x),
    where R^(l) is standard LRP with the same rules and conventions.

    ``reference`` maps layer names to R^(l) (B, *shape) — relevance from any LRP
    implementation, with ``f`` (B,) the relevance it started from (default: the measure's
    f). Without ``reference``, :func:`nrm_verify.lrp.relevance` computes it (autograd,
    the gradient trick) for the measure's own model, input, start vector and rules."""
    from . import lrp

    tol = _tol(m, tol)
    if reference is None:
        x = m.input
        rules = {b.name: b.rule for b in m.network.linear_blocks()}
        start = m.start * m.f.reshape((-1,) + (1,) * (m.start.dim() - 1))
        reference, f = lrp.relevance(m.network.model, x, rules=rules, start=start)
    f = m.f if f is None else f
    worst = _Worst()
    for name, R in reference.items():
        marg = m.marginal(name)
        expected = R.reshape(marg.shape) / f.reshape((-1,) + (1,) * (marg.dim() - 1))
        scale = marg.abs().reshape(marg.shape[0], -1).sum(1).reshape((-1,) + (1,) * (marg.dim() - 1))
        scale = _big(m, scale)
        worst.add(marg, expected, scale, where=f"m(j) against R_j / f at {name!r}")
        absorbed = 1 - expected.reshape(expected.shape[0], -1).sum(1)
        worst.add(m.absorbed(name), absorbed, scale.reshape(-1), where=f"m(⊥) against 1 − Σ R / f at {name!r}")
    return _result("L8", "LRP equivalence", worst.deviation, tol,
                   f"marginals against standard LRP at {len(reference)} layers" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


# -- L9–L14: relations between rules ------------------------------------------------------
def _all_marginals(m: Measure) -> dict[str, torch.Tensor]:
    return {name: m.marginal(name) for name in _canonical_layers(m)}


def _max_dev(a: dict, b: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for k in a:
        d = _dev(a[k], b[k], a[k].abs().reshape(a[k].shape[0], -1).sum(1).reshape((-1,) + (1,) * (a[k].dim() - 1)))
        if d > worst or (math.isnan(d) and not math.isnan(worst)):
            worst, where = d, k
    return worst, where


def gradient_x_input(model, x, target, *, tol: float | None = None) -> LawResult:
    """L9: with LRP-0 everywhere, m_l(j) = a_j ∂f_c/∂a_j / f_c at every layer (activations
    with σ(z) = σ'(z) z: ReLU, leaky ReLU, identity, max-pool).

    LRP-0 needs z_k ≠ 0: a neuron with z_k = 0 exactly has its column sent to ⊥ while the
    gradient may still pass it (identity or leaky activations, σ'(0) ≠ 0). Such samples —
    z_k = 0 with ∂f/∂z_k ≠ 0 — are outside the law and skipped."""
    m = nrm.explain(model, x, target, rules=nrm.rules.Zero())
    tol = _tol(m, tol)
    eng = m.engine
    names = _canonical_layers(m)
    # a differentiable replay of the proper FFNN, reading the same forward record
    acts = [eng.values[0].detach().clone().requires_grad_(True)]
    pres = []
    a = acts[0]
    for block in m.network.blocks[1:]:
        l = block.index
        inp = a.reshape((a.shape[0],) + eng.in_shape[l])
        if block.producer.kind == "linear":
            lmap = eng.maps[l]
            z = lmap.forward(inp, lmap.weight)
            bias = lmap.bias_for(z)
            out = z if bias is None else z + bias
            pres.append(out)
        else:
            k, s, p, d, ceil = block.producer.layer_kind.params(block.producer.call)
            out = torch.nn.functional.max_pool2d(inp, k, s, p, d, ceil)
        for step in block.trailing:
            if step.role == "elementwise":
                out = step.layer_kind.evaluate(step.call, out)
        out = out.reshape((out.shape[0],) + eng.shape[l])
        acts.append(out)
        a = out
    f = m.f
    # Σ_k π_k y_k = f_c for π = δ_c
    objective = (acts[-1].reshape(acts[-1].shape[0], -1) * m.start.reshape(m.start.shape[0], -1)).sum()
    grads = torch.autograd.grad(objective, acts[:-1] + pres, allow_unused=True)
    keep = torch.ones(eng.batch, dtype=torch.bool, device=eng.device)
    for z, g in zip(pres, grads[len(acts) - 1:]):
        if g is not None:
            keep &= ~((z.detach() == 0) & (g != 0)).reshape(eng.batch, -1).any(1)
    if not bool(keep.any()):
        return LawResult("L9", "LRP-0 = gradient × input", None,
                         detail="a neuron with z_k = 0 passes gradient in every sample (LRP-0 needs z_k ≠ 0)")
    worst = _Worst()
    for name, act, g in zip(names[:-1], acts[:-1], grads):
        if g is None:
            g = torch.zeros_like(act)
        gxi = (act * g).detach() / f.reshape((-1,) + (1,) * (act.dim() - 1))
        marg = m.marginal(name).reshape(gxi.shape)
        scale = marg.abs().reshape(marg.shape[0], -1).sum(1).reshape((-1,) + (1,) * (marg.dim() - 1))
        worst.add(marg[keep], gxi[keep], scale[keep], where=name)
    skipped = int((~keep).sum())
    return _result("L9", "LRP-0 = gradient × input", worst.deviation, tol,
                   "every layer" + (f"; worst at {worst.where!r}" if worst.deviation > 0 else "") +
                   (f"; {skipped} samples skipped (z_k = 0 passing gradient)" if skipped else ""),
                   ["LRP-0 on every layer", "activations with σ(z) = σ'(z)·z", "z_k ≠ 0 where gradient passes"],
                   pair=worst.pair)


def _relevant_preactivations(m: Measure) -> torch.Tensor:
    """|z_k| (bias included) of every neuron of a linear layer that carries relevance under
    ``m`` (m_l(k) ≠ 0), per sample: (B, n), +inf where a neuron carries none."""
    eng, names = m.engine, _canonical_layers(m)
    out = []
    for block in m.network.linear_blocks():
        l = block.index
        z = eng.z_nobias[l]
        bias = eng.maps[l].bias_for(z)
        z = (z if bias is None else z + bias).reshape(eng.batch, -1).abs()
        carries = m.marginal(names[l]).reshape(eng.batch, -1) != 0
        out.append(torch.where(carries, z, torch.full_like(z, math.inf)))
    return torch.cat(out, 1) if out else torch.full((eng.batch, 1), math.inf, dtype=eng.dtype)


def epsilon_limit(model, x, target, *, epsilons=(1e-3, 1e-5, 1e-7), tol: float | None = None) -> LawResult:
    """L10: LRP-ε → LRP-0 as ε → 0 where z_k ≠ 0, with error O(ε / |z_k|).

    Checked on the samples where every neuron that carries relevance has |z_k| ≥ 100 ε
    for the smallest ε (z_k = 0 is excluded by the law, and a pre-activation within a few
    ε of 0 is not yet in the asymptotic regime the law describes). The deviation per unit
    ε must stay bounded as ε shrinks, and the deviation at the smallest ε must be within
    ``tol`` plus the error bound 10 · L · ε / min |z_k| over the neurons that carry
    relevance — a small pre-activation widens the bound instead of failing the law."""
    finest = nrm.explain(model, x, target, rules=nrm.rules.Epsilon(epsilons[-1]))
    z = _relevant_preactivations(finest)
    keep = (z >= 100 * epsilons[-1]).all(1)
    if not bool(keep.any()):
        return LawResult("L10", "ε → 0 gives LRP-0", None,
                         detail=f"a neuron on the relevance path has |z_k| < 100·ε = {100 * epsilons[-1]:.1g} in every "
                                "sample (L10 needs z_k ≠ 0, and ε ≪ |z_k| to show its limit)")
    zero = _all_marginals(nrm.explain(model, x, target, rules=nrm.rules.Zero()))
    devs = []
    for e in epsilons:
        eps = finest if e == epsilons[-1] else nrm.explain(model, x, target, rules=nrm.rules.Epsilon(e))
        devs.append(_restricted_dev(zero, _all_marginals(eps), keep))
    tol = tol if tol is not None else (1e-4 if x.dtype == torch.float64 else 1e-2)
    z_min = float(z[keep].min())
    bound = tol + 10 * finest.depth * epsilons[-1] / z_min
    ratios = [d / e for d, e in zip(devs, epsilons)]
    # O(ε / |z|): the deviation per unit ε stays bounded as ε shrinks (up to rounding)
    linear = all(r2 <= 10 * r1 + 1e-3 for r1, r2 in zip(ratios, ratios[1:]))
    res = _result("L10", "ε → 0 gives LRP-0", devs[-1], bound,
                  f"deviations {[f'{d:.2g}' for d in devs]} at ε = {list(epsilons)}; min |z_k| on the relevance "
                  f"path {z_min:.3g} (bound {bound:.2g}) on {int(keep.sum())} samples", ["z_k ≠ 0"])
    if not linear:
        res.holds = False
        res.detail += " (not O(ε))"
    return res


def gamma_zero(model, x, target, *, tol: float | None = None) -> LawResult:
    """L11: γ = 0 gives LRP-0 exactly."""
    a = _all_marginals(nrm.explain(model, x, target, rules=nrm.rules.Zero()))
    b = _all_marginals(nrm.explain(model, x, target, rules=nrm.rules.Gamma(0.0)))
    worst, where = _max_dev(a, b)
    tol = tol if tol is not None else (DEFAULT_TOL if x.dtype == torch.float64 else 1e-4)
    return _result("L11", "γ = 0 gives LRP-0", worst, tol, f"worst at {where!r}" if where else "all layers")


def _nonnegative_inputs(m: Measure) -> bool:
    return all(bool((m.engine.inputs[b.index] >= 0).all()) for b in m.network.linear_blocks())


def _zplus_defined(plus: Measure, other: Measure) -> torch.Tensor:
    """Per sample: every neuron that receives relevance under ``other`` has a positive z⁺
    denominator Σ_j a_j w_jk⁺ + b_k⁺ (z⁺ is undefined, and sends the column to ⊥, elsewhere)."""
    keep = torch.ones(plus.engine.batch, dtype=torch.bool, device=plus.engine.device)
    names = _canonical_layers(plus)
    for block in plus.network.linear_blocks():
        scale = plus.engine.kernel(block.index).shares[0][0] if plus.engine.kernel(block.index).shares else None
        dead = torch.ones_like(plus.marginal(names[block.index]), dtype=torch.bool) if scale is None else scale == 0
        reached = other.marginal(names[block.index]) != 0
        keep &= ~(dead & reached).reshape(keep.shape[0], -1).any(1)
    return keep


def _restricted_dev(a: dict, b: dict, keep: torch.Tensor) -> float:
    return _max_dev({k: v[keep] for k, v in a.items()}, {k: v[keep] for k, v in b.items()})[0]


def _gamma_ratio(plus: Measure, other: Measure) -> torch.Tensor:
    """Per sample, max over the neurons that carry relevance (under z⁺ or ``other``) of
    κ_k = (Σ_j a_j |w_jk⁻| + |b_k⁻|) / (Σ_j a_j w_jk⁺ + b_k⁺): LRP-γ is within O(κ_k / γ) of
    z⁺ at neuron k, so γ must be large against κ before the limit shows (0 where none)."""
    eng, names = plus.engine, _canonical_layers(plus)
    worst = torch.zeros(eng.batch, dtype=eng.dtype, device=eng.device)
    for block in plus.network.linear_blocks():
        l = block.index
        lmap, a = eng.maps[l], eng.inputs[l]
        pos = lmap.forward(a, lmap.structured(lmap.weight.clamp(min=0)))
        neg = lmap.forward(a, lmap.structured(-lmap.weight.clamp(max=0)))
        bias = lmap.bias_for(pos)
        if bias is not None:
            pos, neg = pos + bias.clamp(min=0), neg - bias.clamp(max=0)
        carries = (plus.marginal(names[l]) != 0) | (other.marginal(names[l]) != 0)
        ratio = torch.where(carries.reshape(pos.shape) & (pos > 0), neg / pos.clamp(min=torch.finfo(pos.dtype).tiny),
                            torch.zeros_like(pos))
        worst = torch.maximum(worst, ratio.reshape(eng.batch, -1).max(1).values)
    return worst


def gamma_limit(model, x, target, *, gammas=(1e2, 1e4, 1e6), tol: float | None = None) -> LawResult:
    """L12: γ → ∞ gives z⁺ when a ≥ 0 and Σ_j a_j w_jk⁺ + b_k⁺ > 0 (error O(κ/γ) with
    κ = (Σ_j a_j |w_jk⁻| + |b_k⁻|) / (Σ_j a_j w_jk⁺ + b_k⁺)).

    Checked on the samples where every neuron that carries relevance has a positive z⁺
    denominator and the largest γ is at least 100 κ (a neuron whose positive part is tiny
    against its negative part — a near-zero z⁺ denominator — reaches the limit only for
    larger γ). Over the γ that are at least 10 κ the deviation must decrease, and at the
    largest it must be within ``tol`` plus the bound 10 · L · κ / γ."""
    plus = nrm.explain(model, x, target, rules=nrm.rules.ZPlus())
    if not _nonnegative_inputs(plus):
        return LawResult("L12", "γ → ∞ gives z⁺", None, detail="some layer's input has a < 0 (the law needs a ≥ 0)")
    ref = _all_marginals(plus)
    measures = [nrm.explain(model, x, target, rules=nrm.rules.Gamma(g)) for g in gammas]
    keep = _zplus_defined(plus, measures[-1])
    if not bool(keep.any()):
        return LawResult("L12", "γ → ∞ gives z⁺", None,
                         detail="a z⁺ denominator is 0 on the relevance path of every sample")
    kappa = _gamma_ratio(plus, measures[-1])
    regime = keep & (100 * kappa <= gammas[-1])
    if not bool(regime.any()):
        return LawResult("L12", "γ → ∞ gives z⁺", None,
                         detail=f"the largest γ = {gammas[-1]:.0e} is not ≫ κ = {float(kappa[keep].min()):.3g} (a "
                                "near-zero z⁺ denominator against its negative part) on any sample")
    k_max = float(kappa[regime].max())
    devs = [_restricted_dev(ref, _all_marginals(g), regime) for g in measures]
    tol = tol if tol is not None else (1e-4 if x.dtype == torch.float64 else 1e-2)
    bound = tol + 10 * plus.depth * k_max / gammas[-1]
    res = _result("L12", "γ → ∞ gives z⁺", devs[-1], bound,
                  f"deviations {[f'{d:.2g}' for d in devs]} at γ = {list(gammas)}; κ ≤ {k_max:.3g} "
                  f"(bound {bound:.2g}) on {int(regime.sum())} samples", ["a ≥ 0 at every layer"])
    in_regime = [d for d, g in zip(devs, gammas) if g >= 10 * k_max]
    if not all(d2 <= d1 * 1.01 + 1e-12 for d1, d2 in zip(in_regime, in_regime[1:])):
        res.holds = False
        res.detail += " (does not decrease with γ)"
    return res


def alpha1_beta0(model, x, target, *, tol: float | None = None) -> LawResult:
    """L13: αβ with α = 1, β = 0 equals z⁺ when a ≥ 0."""
    plus = nrm.explain(model, x, target, rules=nrm.rules.ZPlus())
    if not _nonnegative_inputs(plus):
        return LawResult("L13", "α1β0 = z⁺", None, detail="some layer's input has a < 0 (the law needs a ≥ 0)")
    ab = nrm.explain(model, x, target, rules=nrm.rules.AlphaBeta(1, 0))
    keep = _zplus_defined(plus, ab)
    if not bool(keep.any()):
        return LawResult("L13", "α1β0 = z⁺", None, detail="a z⁺ denominator is 0 on the relevance path of every sample "
                         "(αβ then falls back to (0, −1), z⁺ to ⊥)")
    a_m, b_m = _all_marginals(plus), _all_marginals(ab)
    worst, where = _max_dev({k: v[keep] for k, v in a_m.items()}, {k: v[keep] for k, v in b_m.items()})
    tol = tol if tol is not None else (DEFAULT_TOL if x.dtype == torch.float64 else 1e-4)
    return _result("L13", "α1β0 = z⁺", worst, tol, f"worst at {where!r}" if where else "all layers", ["a ≥ 0"])


def input_independence(model, x1, x2, target, rule, *, tol: float | None = None) -> LawResult:
    """L14: the kernels of flat and w² do not depend on the input: the kernel column of
    every neuron of every linear layer is the same at x1 and x2 (no target is needed: the
    kernels are read from the forward pass; ``target`` is accepted for a uniform call)."""
    from nrm.engine import Engine
    from nrm.graph import ProperFFNN, check_eval_mode
    from nrm.presets import assign

    if rule.depends_on_input:
        return LawResult("L14", "input independence", None, detail=f"{rule!r} reads the activations")
    engines = []
    for x in (x1, x2):
        check_eval_mode(model)
        network = ProperFFNN(model, x)
        assign(network, rule)
        engines.append(Engine(network))
    worst = _Worst()
    for block in engines[0].net.linear_blocks():
        kernels = [e.kernel(block.index) for e in engines]
        for (s1, _), (s2, _) in zip(kernels[0].shares, kernels[1].shares):
            worst.add(s1, s2, where=f"kernel scales of {block.name!r}")
        worst.add(kernels[0].qbot, kernels[1].qbot, where=f"q(⊥ | k) of {block.name!r}")
    tol = tol if tol is not None else (DEFAULT_TOL if x1.dtype == torch.float64 else 1e-5)
    return _result("L14", "input independence", worst.deviation, tol, f"kernels of {rule!r} at two inputs" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


def zbox_nonnegative(m: Measure, layer: str | None = None) -> LawResult:
    """L14: the z^B kernel is non-negative inside the box l ≤ a ≤ h (checked on the
    first layer's kernel columns; a column is q(·|k) = Σ_j terms ≥ 0 over D_k > 0)."""
    block = m.network.linear_blocks()[0] if layer is None else m.network.blocks[m.layer_index(layer)]
    rule = block.rule
    if not isinstance(rule, nrm.rules.ZBox):
        return LawResult("L14", "z^B non-negative", None, detail=f"the first layer uses {rule!r}, not ZBox")
    a = m.engine.inputs[block.index]
    low = torch.as_tensor(rule.low, dtype=a.dtype, device=a.device)
    high = torch.as_tensor(rule.high, dtype=a.dtype, device=a.device)
    if not bool(((a >= low) & (a <= high)).all()):
        return LawResult("L14", "z^B non-negative", None, detail="the input leaves the box [low, high]")
    eng = m.engine
    l = block.index
    n = int(torch.tensor(eng.shape[l]).prod())
    worst = 0.0
    for k in range(min(n, 64)):
        unit = torch.zeros((1, eng.batch) + eng.shape[l], dtype=eng.dtype, device=eng.device)
        unit.reshape(1, eng.batch, -1)[:, :, k] = 1
        col, _ = eng.step_down(l, unit, torch.zeros((1, eng.batch), dtype=eng.dtype, device=eng.device))
        worst = max(worst, float((-col).clamp(min=0).max()))
    tol = DEFAULT_TOL if a.dtype == torch.float64 else 1e-6
    return _result("L14", "z^B non-negative", worst, tol, f"most negative kernel entry (first {min(n, 64)} columns)",
                   ["low ≤ a ≤ high"])


# -- L17 and invariances ------------------------------------------------------------------
def channel_sum(m: Measure, layer: str, target: str = "input", *, tol: float | None = None) -> LawResult:
    """L17: the channel-conditional heatmaps of a layer plus the absorber's sum to the
    plain heatmap: Σ_c μ(X_0 = i, X_layer ∈ c) + μ(X_0 = i, X_layer = ⊥) = m_0(i)."""
    tol = _tol(m, tol)
    shape = m.layer_shape(layer)
    channels = shape[0] if len(shape) > 1 else (shape[0] if shape else 1)
    events = [At(layer, channels=[c]) if len(shape) > 1 else At(layer, index=[c]) for c in range(channels)]
    events.append(At(layer, index=[], absorber=True))
    maps = m.marginal(target, within=events)
    plain = m.marginal(target)
    d, x, y = _worst(maps.sum(0), plain, _big(m, maps.abs().sum(0)))
    return _result("L17", "channel-conditional heatmaps add up", d, tol,
                   f"{channels} channels of {layer!r} and ⊥, heatmaps at {target!r}", pair=(x, y))


def layer_maps(m: Measure, *, tol: float | None = None) -> LawResult:
    """The captured computation is the model's (NRM-SPEC §4, invariances): at every layer,
    the layer kind's interpretation reproduces what the model computed there — a linear
    kind's map W a + b its recorded pre-activation (relative to Σ_j |a_j w_jk| + |b_k|), an
    elementwise kind its recorded activation, a winner-takes-all kind its recorded output."""
    eng, net = m.engine, m.network
    worst = _Worst()
    for block in net.blocks[1:]:
        step, l = block.producer, block.index
        if block.kind == "linear":
            a, lmap = eng.inputs[l], eng.maps[l]
            z = lmap.forward(a, lmap.weight)
            bias = lmap.bias_for(z) if lmap.bias is not None else None
            z = z if bias is None else z + bias
            scale = lmap.forward(a.abs(), lmap.structured(lmap.weight.abs()))
            scale = scale if bias is None else scale + bias.abs()
            worst.add(z / scale.clamp(min=1e-300), eng.pre[l] / scale.clamp(min=1e-300),
                      where=f"map of {block.name!r} ({step.layer_kind.name})")
        elif block.kind == "maxpool":
            _, pooled = step.layer_kind.winners(step.call, eng.inputs[l])
            worst.add(pooled, net.value(step.value), where=f"winners of {block.name!r}")
        for s in ([step] if block.kind == "pass" else []) + list(block.trailing):
            if s.role == "elementwise":
                src = net.value(s.call.kind.relevance_inputs(s.call)[0])
                worst.add(s.layer_kind.evaluate(s.call, src), net.value(s.value),
                          where=f"{s.name!r} ({s.layer_kind.name})")
    tol = tol if tol is not None else (1e-12 if eng.dtype == torch.float64 else 1e-5)
    return _result("K2", "layer maps reproduce the model", worst.deviation, tol,
                   "every layer kind's map against the recorded computation" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


def layer_transposes(m: Measure, *, tol: float | None = None) -> LawResult:
    """Each linear layer's transpose is the adjoint of its map: for the weight and for every
    elementwise modification of it that the rules use (w⁺, w⁻, w², 1), map.transpose(g, v(W))
    equals the autograd VJP of a ↦ map.forward(a, v(W)), for a random g (relative to |g| Σ|v(W)|)."""
    eng = m.engine
    worst = _Worst()
    gen = torch.Generator(device="cpu").manual_seed(0)
    for block in m.network.linear_blocks():
        l = block.index
        lmap = eng.maps[l]
        a = eng.inputs[l].detach()
        for what, modify in (("W", lambda w: w), ("W⁺", lambda w: w.clamp(min=0)), ("W⁻", lambda w: w.clamp(max=0)),
                             ("W²", lambda w: w * w), ("1", torch.ones_like)):
            w = lmap.structured(modify(lmap.weight))
            leaf = a.clone().requires_grad_(True)
            with torch.enable_grad():
                z = lmap.forward(leaf, w)
                g = torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device)
                (expected,) = torch.autograd.grad(z, leaf, g)
            got = lmap.transpose(g, w, tuple(a.shape[1:]))
            scale = lmap.transpose(g.abs(), w.abs(), tuple(a.shape[1:]))
            worst.add(got.reshape(expected.shape), expected, scale.reshape(expected.shape),
                      where=f"transpose of {block.name!r} with {what}")
    tol = tol if tol is not None else (1e-12 if eng.dtype == torch.float64 else 1e-5)
    return _result("K3", "transposes are adjoints", worst.deviation, tol,
                   "map.transpose against autograd of map.forward" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


def exact_oracle(model, x, target, rules=None, *, tol: float | None = None) -> LawResult:
    """The engine computes the measure exactly defined by the rules (NRM-SPEC §5): the
    marginal of every layer equals the exact rational oracle's
    (:class:`nrm_verify.oracle.ExactNetwork`, walk enumeration) at the first sample, within
    ``tol`` × max(1, Σ_ω |μ(ω)|). Sequential models only (the oracle's scope)."""
    from .oracle import ExactNetwork

    m = nrm.explain(model, x[:1], target if isinstance(target, int) else int(torch.as_tensor(target).reshape(-1)[0]),
                    rules=rules)
    if not m.network.sequential:
        return LawResult("K5", "exact oracle", None, detail="the exact oracle reads sequential models")
    try:
        net = ExactNetwork.from_model(model, x[:1], rules)
    except nrm.RelevanceDependentRuleError as e:
        return LawResult("K5", "exact oracle", None, detail=str(e))
    c = int(torch.as_tensor(target).reshape(-1)[0])
    exact = net.explain(target=c)
    scale = float(exact.total_variation())
    worst = _Worst()
    for name in m._canonical_names():
        got = m.marginal(name)[0]
        want = torch.tensor([float(v) for v in exact.marginal(name).reshape(-1)], dtype=torch.float64)
        worst.add(got.double().reshape(-1), want, scale, where=f"marginal of {name!r}")
        worst.add(m.absorbed(name)[0].double().reshape(1), torch.tensor([float(exact.absorbed(name))],
                                                                        dtype=torch.float64), scale,
                  where=f"absorbed at {name!r}")
    tol = tol if tol is not None else (DEFAULT_TOL if x.dtype == torch.float64 else 1e-4)
    return _result("K5", "exact oracle", worst.deviation, tol, "every layer's marginal against exact enumeration" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


def batch_invariance(model, x, target, rules=None, *, tol: float | None = None) -> LawResult:
    """A batch gives the same per-sample marginals as one sample at a time."""
    whole = nrm.explain(model, x, target, rules=rules)
    tol = _tol(whole, tol)
    targets = torch.as_tensor(target).reshape(-1).expand(x.shape[0]) if torch.as_tensor(target).numel() == 1 else \
        torch.as_tensor(target).reshape(-1)
    worst = _Worst()
    for i in range(x.shape[0]):
        one = nrm.explain(model, x[i:i + 1], int(targets[i]), rules=rules)
        for name in _canonical_layers(whole):
            size = torch.maximum(magnitude(one), magnitude(whole)[i:i + 1])
            worst.add(whole.marginal(name)[i:i + 1], one.marginal(name), _big(one, size).reshape(
                (1,) + (1,) * (one.marginal(name).dim() - 1)), where=f"sample {i}, m at {name!r}")
            worst.add(whole.absorbed(name)[i:i + 1], one.absorbed(name), size, where=f"sample {i}, m(⊥) at {name!r}")
    return _result("INV", "batch invariance", worst.deviation, tol, f"{x.shape[0]} samples, every layer" +
                   (f"; worst: {worst.where} (batched, alone)" if worst.deviation > 0 else ""), pair=worst.pair)


# -- L15 GNN-LRP --------------------------------------------------------------------------------
def walk_relevance(model, x, target, walks, rules=None, *, tol: float | None = None) -> LawResult:
    """L15 (GNN-LRP, Schnake et al., TPAMI 2022): the relevance of a walk, or of the set of
    walks through chosen neurons at chosen layers, computed by higher-order LRP with
    nested masking, equals f_c · μ(walks) under the same rules:

        R_walk = Σ ( M_{l_min} ⊙ Q_{l_min+1} ( … M_{L−1} ⊙ Q_L (M_L ⊙ f_c δ_c) ) ) = f_c · μ(walks).

    The left side is :func:`nrm_verify.gnnlrp.walk_relevance`, written independently of
    the nrm engine (dense kernels from the NRM-SPEC §2 table). The deviation is
    |f_c μ − R_walk| over the larger of |f_c| · max(1, magnitude(m)) and the size of the
    terms the reference added (a near-zero f_c is rounding noise of much larger terms). ``walks``: one neuron per
    layer (``None`` = ⊥), a mapping {layer: neurons}, or an :class:`nrm.Event`. Not
    applicable to rules that read the incoming relevance (no fixed kernel) and to models
    the reference cannot read (it says which)."""
    from . import gnnlrp

    m = nrm.explain(model, x, target, rules=rules)
    tol = _tol(m, tol)
    readers = [b.rule for b in m.network.linear_blocks() if getattr(b.rule, "reads_relevance", False)]
    if readers:
        return LawResult("L15", "GNN-LRP walk relevance", None,
                         detail=f"{readers[0]!r} reads the incoming relevance: walk relevance by nested masking is "
                                "not defined by fixed kernels")
    try:
        expected, size = gnnlrp.walk_relevance(model, x, target, walks, rules, with_size=True)
        event = gnnlrp.as_event(model, x, walks)
    except gnnlrp.UnsupportedModelError as e:
        return LawResult("L15", "GNN-LRP walk relevance", None, detail=str(e))
    f = m.f
    measured = f * m(event)
    # relevance units: |f| max(1, magnitude) is the engine's scale, ``size`` the reference's
    scale = torch.maximum(f.abs() * _big(m, 1.0), size).clamp(min=torch.finfo(f.dtype).tiny)
    rel = (measured - expected).abs() / scale
    rel = torch.where(torch.isnan(rel), torch.full_like(rel, math.inf), rel)
    i = int(rel.argmax())
    d = float((measured - expected).abs()[i] / scale[i]) if not bool(torch.isnan(measured[i] - expected[i])) \
        else math.nan
    pair = (float(measured[i]), float(expected[i]))
    return _result("L15", "GNN-LRP walk relevance", d, tol,
                   f"f_c · μ({_short(event)}) against higher-order LRP with nested masking (nrm_verify.gnnlrp)",
                   ["rules with a fixed kernel (no relevance-reading rule)"], pair=pair)


gnn_lrp = walk_relevance
"""L15 under the paper's name."""


def _short(event) -> str:
    text = repr(event)
    return text if len(text) <= 120 else text[:117] + "…"


# -- L16 CRP ------------------------------------------------------------------------------------
def _at_takes_parallel() -> bool:
    import inspect
    try:
        return "parallel" in inspect.signature(At.__init__).parameters
    except (TypeError, ValueError):
        return False


def _sequential_leaves(model) -> list[tuple[str, torch.nn.Module]] | None:
    if not isinstance(model, torch.nn.Sequential):
        return None
    out = []
    for name, child in model.named_children():
        if isinstance(child, torch.nn.Sequential):
            inner = _sequential_leaves(child)
            if inner is None:
                return None
            out += [(f"{name}.{n}", c) for n, c in inner]
        else:
            out.append((name, child))
    return out


def _crp_reference(m: Measure, layer: str, keep: torch.Tensor):
    """(R^(layer) of standard LRP (B, n_layer), the CRP heatmap at the input (B, *input)):
    standard LRP (:func:`nrm_verify.lrp.relevance`, autograd) from the output down to
    ``layer``, the relevance there masked to ``keep`` (n_layer,), then LRP of the model
    cut after ``layer`` started from the masked relevance, down to the input."""
    from . import lrp

    eng = m.engine
    model = m.network.model
    x = m.input
    rules = {b.name: b.rule for b in m.network.linear_blocks()}
    start = m.start * m.f.reshape((-1,) + (1,) * (m.start.dim() - 1))
    full, _ = lrp.relevance(model, x, rules=rules, start=start)
    l = m.layer_index(layer)
    block = m.network.blocks[l]
    R = full[_canonical_layers(m)[l]].reshape(eng.batch, -1)
    masked = R * keep.to(R.dtype)
    if l == 0:
        return R, masked.reshape(x.shape)
    # the model cut after the layer's block: its last module is the last one naming the layer
    last = (block.trailing[-1] if block.trailing else block.producer).name
    leaves = _sequential_leaves(model)
    cut = [i for i, (name, _) in enumerate(leaves) if name == last][0]
    sub = torch.nn.Sequential(*[mod for _, mod in leaves[:cut + 1]]).eval()
    index = {name: str(i) for i, (name, _) in enumerate(leaves[:cut + 1])}
    sub_rules = {index[name]: rule for name, rule in rules.items() if name in index}
    lower, _ = lrp.relevance(sub, x, rules=sub_rules, start=masked)
    return R, lower["input"].reshape(x.shape)


def crp_conditional(m: Measure, layer: str, channels: Sequence[int], *, parallel: bool | None = None,
                    tol: float | None = None) -> LawResult:
    """L16 (CRP, Achtibat et al., Nature MI 2023): the conditional heatmap of the condition
    {layer: channels} equals f_c · μ(X_0 = i, X_layer ∈ channels), and the concept
    relevance equals f_c · m_layer(channels).

    The CRP side is computed independently of the engine: standard LRP by autograd
    (:func:`nrm_verify.lrp.relevance`) down to ``layer``, the relevance masked to the
    channels (to the neurons ``channels`` for a layer without a channel dimension), then
    LRP of the model cut after that layer, from the masked relevance down to the input.

    ``parallel`` is CRP's ``exclude_parallel`` negated, for residual models: it is passed
    to ``nrm.At(layer, channels=…, parallel=parallel)`` when the installed nrm supports
    it (the DAG engine); ``None`` (default) leaves the event as it is. The masked-LRP
    reference here reads ``nn.Sequential`` models (where both settings coincide); for
    other models, and for a ``parallel`` the installed nrm does not take, the law reports
    "not applicable" with the reason."""
    tol = _tol(m, tol)
    name = "CRP conditional heatmap"
    kwargs = {}
    if parallel is not None:
        if not _at_takes_parallel():
            return LawResult("L16", name, None, detail="the installed nrm.At takes no parallel= (it needs the DAG "
                             "engine for residual models); call without parallel= on a sequential model")
        kwargs["parallel"] = parallel
    if _sequential_leaves(m.network.model) is None:
        return LawResult("L16", name, None, detail="the masked-LRP reference reads nn.Sequential models only")
    if any(getattr(b.rule, "reads_relevance", False) for b in m.network.linear_blocks()):
        return LawResult("L16", name, None, detail="a rule reads the incoming relevance: the conditional heatmap "
                         "is not a measure of fixed kernels")
    shape = m.layer_shape(layer)
    channels = sorted({int(c) for c in channels})
    if len(shape) > 1:
        event = At(layer, channels=channels, **kwargs)
        keep = torch.zeros(shape[0], math.prod(shape[1:]), dtype=torch.bool)
        keep[channels] = True
    else:
        event = At(layer, index=channels, **kwargs)
        keep = torch.zeros(math.prod(shape), dtype=torch.bool)
        keep[channels] = True
    keep = keep.reshape(-1).to(m.engine.device)
    R, heatmap = _crp_reference(m, layer, keep)
    f = m.f
    per = (-1,) + (1,) * (heatmap.dim() - 1)
    worst = _Worst()
    conditional = m.marginal("input", within=event)
    scale = _big(m, conditional.abs().reshape(conditional.shape[0], -1).sum(1)).reshape(per)
    worst.add(conditional, heatmap.reshape(conditional.shape) / f.reshape(per), scale,
              where="μ(X_0 = i, X_layer ∈ channels) against the CRP heatmap / f")
    concept = m(event)
    worst.add(concept, (R * keep.to(R.dtype)).sum(1) / f, _big(m, 1.0),
              where="m_layer(channels) against the concept relevance / f")
    return _result("L16", name, worst.deviation, tol,
                   f"condition {{{layer!r}: {channels}}}" + (f", parallel={parallel}" if parallel is not None else "")
                   + " against masked LRP (nrm_verify.lrp)"
                   + (f"; worst: {worst.where}" if worst.deviation > 0 else ""),
                   pair=worst.pair)


# -- CPU/CUDA invariance ------------------------------------------------------------------------
def available_devices() -> list[str]:
    """"cpu", and "cuda" when torch sees a CUDA device."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rules_on(rules, device):
    """A copy of ``rules`` whose tensor parameters (z^B boxes) live on ``device``."""
    import copy

    rules = copy.deepcopy(rules)
    seen = set()

    def move(obj):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, nrm.rules.Rule):
            for key, value in vars(obj).items():
                if isinstance(value, torch.Tensor):
                    setattr(obj, key, value.to(device))
        elif isinstance(obj, dict):
            for v in obj.values():
                move(v)
        elif hasattr(obj, "__dict__"):
            for v in vars(obj).values():
                move(v)

    move(rules)
    return rules


def device_invariance(model, x, target, rules=None, devices: Sequence[str] | None = None, *,
                      tol: float | None = None, allow_tf32: bool = False) -> LawResult:
    """CPU and CUDA agree: the marginals and the absorbed mass at every layer, and f_c,
    are the same on every device within the float tolerance (1e-9 relative for float64,
    1e-4 for float32, relative to the measure's magnitude).

    ``devices`` defaults to :func:`available_devices`; the model and the input are copied
    to each (the user's model is not moved). With fewer than two devices the law is not
    applicable, and says so. TF32 (cuDNN convolutions use it by default for float32) is
    switched off during the comparison unless ``allow_tf32``: with it, float32 results
    legitimately differ by ~1e-3."""
    import copy

    devices = list(devices) if devices is not None else available_devices()
    if len(devices) < 2:
        return LawResult("INV", "device invariance", None,
                         detail=f"only one device available ({', '.join(devices) or 'none'}): "
                                "torch.cuda.is_available() is False, so there is nothing to compare")
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow_tf32
    try:
        measures = []
        for d in devices:
            moved = copy.deepcopy(model).to(d)
            measures.append(nrm.explain(moved, x.to(d), target, rules=_rules_on(rules, d)))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    base = measures[0]
    tol = _tol(base, tol)
    worst = _Worst()
    mag = magnitude(base).cpu()
    for d, m in zip(devices[1:], measures[1:]):
        size = torch.maximum(mag, magnitude(m).cpu())
        worst.add(m.f.cpu(), base.f.cpu(), base.f.abs().cpu(), where=f"f_c on {d}")
        for name in _canonical_layers(base):
            a, b = m.marginal(name).cpu(), base.marginal(name).cpu()
            worst.add(a, b, size.reshape((-1,) + (1,) * (a.dim() - 1)), where=f"m at {name!r} on {d}")
            worst.add(m.absorbed(name).cpu(), base.absorbed(name).cpu(), size, where=f"m(⊥) at {name!r} on {d}")
    return _result("INV", "device invariance", worst.deviation, tol,
                   f"marginals at {len(_canonical_layers(base))} layers on {devices} against {devices[0]}" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


# -- models with branches (L1 with copies, L18), in their own module -------------------------------
from .laws_graph import modularity, normalization_with_copies  # noqa: E402, F401  (re-exported; they build on the helpers above)
