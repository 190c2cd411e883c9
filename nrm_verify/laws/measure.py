"""Laws of the measure itself (NRM-SPEC §4): L1 normalization, L2 additivity, L3 marginalization,
L4 chain rule and multiplicative law, L5 Bayes, L6 total measure, L7 Markov, L8 LRP equivalence,
L17 channel-conditional heatmaps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from nrm.events import OMEGA, At, Event
from nrm.measure import Measure
from nrm_verify.laws.base import (
    LawResult,
    Worst,
    big_terms,
    canonical_layers,
    is_null,
    law_result,
    restricted,
    tolerance_for,
    worst_pair,
)
from nrm_verify.references import autograd as lrp


def complement_atom(m: Measure, event: At) -> At:
    """The complement of a one-layer event, {X_l ∈ V̄_l ∖ S} (the copies of a branched model's
    layer flip with S's ``parallel``): one atom (:meth:`nrm.events.Atom.complement`), measured
    by its own mask, not as 1 − μ(S)."""
    return ~event


# -- L1 ------------------------------------------------------------------------------
def every_bypassing(m: Measure, names: Sequence[str]) -> dict[str, torch.Tensor] | None:
    """:meth:`Measure.bypassing` at every layer in ``names``, (B,) each, from one batch of
    masked passes (the jobs share their path down to the layer each constrains), or None on
    a sequential model, where no walk bypasses a layer."""
    if m.network.sequential:
        return None
    values = m.measure([At(name, index=[], parallel=True) for name in names])
    return dict(zip(names, values.reshape(len(names), -1)))


def normalization(m: Measure, *, tol: float | None = None) -> LawResult:
    """L1: μ(Ω) = 1 and Σ_{j ∈ V̄_l} m_l(j) = 1 at every layer (on a branched model V̄_l also
    holds the copies of the walks that bypass the layer's node: ``m.bypassing``)."""
    tol = tolerance_for(m, tol)
    worst = Worst()
    omega = m(OMEGA)
    worst.add(omega, torch.ones_like(omega), big_terms(m, 1.0), where="μ(Ω)")
    names = canonical_layers(m)
    every = m.marginals(absorber=True)  # every layer's marginal and absorber from one pass
    bypassing = every_bypassing(m, names)
    for name in names:
        marg, absorbed = every[name]
        total = marg.reshape(marg.shape[0], -1).sum(1) + absorbed
        if bypassing is not None:  # the copies of the walks that bypass the layer's node (NRM-SPEC §1)
            total = total + bypassing[name]
        scale = marg.reshape(marg.shape[0], -1).abs().sum(1)
        worst.add(total, torch.ones_like(total), big_terms(m, scale), where=f"Σ_j m(j) + m(⊥) at {name!r}")
    return law_result("L1", "normalization", worst.deviation, tol,
                   f"μ(Ω) and Σ_j m_l(j) + m_l(⊥) over {len(names)} layers" +
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
    shares, _ = eng.columns(l, unit)
    lmap = eng.maps[l]
    inputs = eng.inputs[l]
    total = torch.zeros((K, B) + eng.shape[l], dtype=eng.dtype, device=eng.device)
    for scale, parts in shares:
        size = None
        for u, w in parts:
            a = torch.ones_like(inputs) if u is None else u.abs().reshape(inputs.shape)  # the call's rows
            dense = lmap.weight if w is lmap.own_weight() else w  # |W|: a map applied as itself forms W here
            t = lmap.forward(a, dense.abs()).reshape((B,) + eng.shape[l])  # per sample (a folded layer's rows)
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
    tol = tolerance_for(m, tol)
    eng = m.engine
    worst = Worst()
    names = canonical_layers(m)
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
    return law_result("L1", "column-stochastic kernels", worst.deviation, tol,
                   f"Σ_j q(j | k) + q(⊥ | k) over {columns} columns of {m.depth} layers" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


# -- L2 ------------------------------------------------------------------------------
def additivity(m: Measure, a: Event, b: Event, *, tol: float | None = None) -> LawResult:
    """L2: μ(A ∪ B) = μ(A) + μ(B) − μ(A ∩ B), and, for one-layer events, μ(Aᶜ) = 1 − μ(A)
    (the complement written as an explicit set) and μ(X_l ∈ S) = Σ_{j∈S} m_l(j)."""
    tol = tolerance_for(m, tol)
    ua, ub, uab, uu = m.measure([a, b, a & b, a | b])
    scale = ua.abs() + ub.abs() + uab.abs()
    worst = Worst()
    worst.add(uu, ua + ub - uab, big_terms(m, scale), where="μ(A ∪ B) against μ(A) + μ(B) − μ(A ∩ B)")
    checked = ["union"]
    for ev in (a, b):
        if isinstance(ev, At):
            comp = m(complement_atom(m, ev))
            base = m(ev)
            worst.add(comp, 1 - base, big_terms(m, base.abs()), where=f"μ(complement of {ev!r}) against 1 − μ")
            marg = m.marginal(ev.atom.layer)
            mask = m.constraint(ev.atom)
            full = torch.ones_like(marg[0], dtype=torch.bool)
            layer_mask = full if mask.mask is None else mask.mask.reshape(marg.shape[1:])
            summed = (marg * layer_mask).reshape(marg.shape[0], -1).sum(1)
            if ev.atom.absorber:
                summed = summed + m.absorbed(ev.atom.layer)
            if ev.atom.parallel and not m.network.sequential:
                summed = summed + m.bypassing(ev.atom.layer)
            worst.add(base, summed, big_terms(m, marg.abs().reshape(marg.shape[0], -1).sum(1)),
                      where=f"μ({ev!r}) against the sum of its marginals")
            checked += ["explicit complement", "sum of marginals"]
    detail = "; ".join(dict.fromkeys(checked)) + (f"; worst: {worst.where}" if worst.deviation > 0 else "")
    return law_result("L2", "additivity", worst.deviation, tol, detail, pair=worst.pair)


# -- L3 ------------------------------------------------------------------------------
def marginalization(m: Measure, layer: str, event: Event = OMEGA, *, tol: float | None = None) -> LawResult:
    """L3: Σ_{j ∈ V̄_l} μ(X_l = j, E) = μ(E) for an event E not constraining layer l."""
    tol = tolerance_for(m, tol)
    l = m.layer_index(layer)
    if any(m.layer_index(name) == l for name in event.layers()):
        return LawResult("L3", "marginalization", None, detail=f"the event constrains layer {layer!r} itself")
    joint = m.marginal(layer, within=event)
    total = joint.reshape(joint.shape[0], -1).sum(1) + m.absorbed(layer, within=event)
    if not m.network.sequential:  # V̄_l also holds the copies of the walks that bypass the node
        total = total + m.bypassing(layer, within=event)
    direct = m(event)
    d, a, b = worst_pair(total, direct, big_terms(m, joint.abs().reshape(joint.shape[0], -1).sum(1)))
    return law_result("L3", "marginalization", d, tol, f"Σ_j μ(X_{layer} = j, E) against μ(E) for E = {event!r}",
                   pair=(a, b))


def joint_marginals(m: Measure, layer_a: str, layer_b: str, *, tol: float | None = None) -> LawResult:
    """L3 for joints: the channel joint's row sums plus the mass through ⊥_b give layer a's
    channel marginal, and likewise for columns."""
    tol = tolerance_for(m, tol)
    J = m.joint(layer_a, layer_b)
    worst = Worst()
    for mine, other, axis in ((layer_a, layer_b, 2), (layer_b, layer_a, 1)):
        # walks at ⊥ of the other layer, and (branched models) on the copies that bypass its node
        through_bot = m.marginal(mine, within=At(other, index=[], absorber=True, parallel=True))
        marg = m.marginal(mine)
        per_channel = marg.reshape(marg.shape[0], marg.shape[1] if marg.dim() > 1 else 1, -1).sum(-1)
        bot = through_bot.reshape(per_channel.shape[0], per_channel.shape[1], -1).sum(-1)
        worst.add(J.sum(axis) + bot, per_channel, big_terms(m, J.abs().sum(axis)),
                  where=f"sums over {other!r} against m_{mine}")
    return law_result("L3", "joint marginals", worst.deviation, tol,
                   f"row and column sums of joint({layer_a!r}, {layer_b!r})", pair=worst.pair)


# -- L4, L5, L6 ---------------------------------------------------------------------------
def chain_rule(m: Measure, walk: Sequence[int | None], *, tol: float | None = None) -> LawResult:
    """L4: μ(n_0, …, n_L) = m_L(n_L) Π_l μ(X_{l−1} = n_{l−1} | X_l = n_l), when defined."""
    tol = tolerance_for(m, tol)
    names = canonical_layers(m)
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
        keep &= ~is_null(base)
        product = product * both / torch.where(is_null(base), torch.ones_like(base), base)
    if not bool(keep.any()):
        return LawResult("L4", "chain rule", None, detail="a one-step conditional is undefined (μ(X_l = n_l) = 0) "
                         "for every sample")
    d, a, b = worst_pair(restricted(direct, keep), restricted(product, keep), restricted(direct, keep).abs())
    return law_result("L4", "chain rule", d, tol,
                   f"walk {list(walk)} against m_L · Π of one-step conditionals on {int(keep.sum())} samples",
                   pair=(a, b))


def multiplicative(m: Measure, a: Event, b: Event, *, tol: float | None = None) -> LawResult:
    """L4: μ(A ∩ B) = μ(A) μ(B | A) when μ(A) ≠ 0."""
    tol = tolerance_for(m, tol)
    ua, uab = m.measure([a, a & b])
    keep = ~is_null(ua)
    if not bool(keep.any()):
        return LawResult("L4", "multiplicative law", None, detail="μ(A) = 0 for every sample: μ(B | A) is undefined")
    cond = restricted(uab, keep) / restricted(ua, keep)
    d, x, y = worst_pair(restricted(uab, keep), restricted(ua, keep) * cond, restricted(ua, keep).abs())
    return law_result("L4", "multiplicative law", d, tol, f"A = {a!r}, B = {b!r}", pair=(x, y))


def bayes(m: Measure, a: Event, b: Event, *, tol: float | None = None) -> LawResult:
    """L5: μ(A | B) μ(B) = μ(B | A) μ(A) when both conditionals are defined."""
    tol = tolerance_for(m, tol)
    ua, ub, uab, uba = m.measure([a, b, a & b, b & a])
    keep = ~is_null(ua) & ~is_null(ub)
    if not bool(keep.any()):
        return LawResult("L5", "Bayes", None,
                         detail="μ(A) = 0 or μ(B) = 0 for every sample: a conditional is undefined")
    ua, ub, uab, uba = (restricted(t, keep) for t in (ua, ub, uab, uba))
    lhs = (uab / ub) * ub
    rhs = (uba / ua) * ua
    d, x, y = worst_pair(lhs, rhs, lhs.abs())
    return law_result("L5", "Bayes", d, tol, f"A = {a!r}, B = {b!r}", pair=(x, y))


def total_measure(m: Measure, b: Event, layer: str, *, tol: float | None = None) -> LawResult:
    """L6: μ(B) = Σ_i μ(B ∩ A_i) over the partition of V̄_layer into its channels and ⊥."""
    tol = tolerance_for(m, tol)
    shape = m.layer_shape(layer)
    channels = shape[0] if shape else 1
    parts = [At(layer, channels=[c]) for c in range(channels)] if len(shape) > 1 else [
        At(layer, index=[j]) for j in range(channels)]
    parts.append(At(layer, index=[], absorber=True, parallel=True))  # ⊥ and the copies that bypass the node
    values = m.measure([b & p for p in parts])
    d, x, y = worst_pair(values.sum(0), m(b), big_terms(m, values.abs().sum(0)))
    return law_result("L6", "total measure", d, tol, f"{len(parts)} cells of V̄_{layer} (channels and ⊥), B = {b!r}",
                   pair=(x, y))


# -- L7 ---------------------------------------------------------------------------------
MARKOV_SINGLES = 16  # the most neurons of A also checked alone


def markov(m: Measure, layer: str, neuron: int | Sequence[int], lower: Sequence[int], above: Event = OMEGA, *,
           tol: float | None = None) -> LawResult:
    """L7: μ(X_{l−1} ∈ A | X_l = k, E_{>l}) = Σ_{j∈A} q_l(j | k) for any event E_{>l} on
    the layers above l with non-zero measure. The right side is the kernel column read
    without any conditioning (a unit relevance at k sent one layer down).

    ``neuron`` is one k or several (each checked); the law is checked for A and for each of
    the first :data:`MARKOV_SINGLES` neurons of A alone (a kernel that reads the relevance
    arriving at k can move mass between neurons of A and keep their sum)."""
    tol = tolerance_for(m, tol)
    l = m.layer_index(layer)
    if l == 0:
        return LawResult("L7", "Markov", None, detail="the input layer has no layer below")
    if any(m.layer_index(name) <= l for name in above.layers()):
        return LawResult("L7", "Markov", None, detail="E must constrain only layers above l")
    if m.network.blocks[l].inputs != [l - 1]:
        return LawResult("L7", "Markov", None,
                         detail=f"layer {layer!r} does not read the layer before it (a branch): its kernel "
                                "goes to another layer")
    names = canonical_layers(m)
    ks = [neuron] if isinstance(neuron, int) else list(neuron)
    lower = list(lower)
    sets = [lower] + ([[j] for j in lower[:MARKOV_SINGLES]] if len(lower) > 1 else [])
    eng = m.engine
    worst, defined = Worst(), False
    for k in ks:
        given = At(names[l], index=[k]) & above
        *joint, base = m.measure([At(names[l - 1], index=s) & given for s in sets] + [given])
        keep = ~is_null(base)
        if not bool(keep.any()):
            continue
        defined = True
        safe = torch.where(keep, base, torch.ones_like(base))
        unit = torch.zeros((1, eng.batch) + eng.shape[l], dtype=eng.dtype, device=eng.device)
        unit.reshape(1, eng.batch, -1)[:, :, k] = 1
        column, _ = eng.step_down(l, unit, torch.zeros((1, eng.batch), dtype=eng.dtype, device=eng.device))
        column = column.reshape(eng.batch, -1)
        for s, both in zip(sets, joint):
            rhs = restricted(column[:, s].sum(1), keep)
            worst.add(restricted(both / safe, keep), rhs, rhs.abs(), where=f"{s} | X_{l} = {k}")
    if not defined:
        return LawResult("L7", "Markov", None, detail=f"μ(X_{l} = k, E) = 0 for every sample and k in {ks}")
    a, k = worst.where.split(" | ") if worst.where else (str(lower), f"X_{l} = {ks[0]}")
    return law_result("L7", "Markov", worst.deviation, tol,
                   f"μ(X_{l - 1} ∈ {a} | {k}, E) against q_{l}({a} | {k.split(' = ')[1]}) "
                   f"for E = {above!r}", pair=worst.pair)


# -- L8 ---------------------------------------------------------------------------------
def lrp_equivalence(m: Measure, reference: dict | None = None, f: torch.Tensor | None = None, *,
                    tol: float | None = None) -> LawResult:
    """L8: m_l(j) = R_j^(l) / f_c(x) for real j and m_l(⊥_l) = 1 − Σ_j R_j^(l) / f_c(x),
    where R^(l) is standard LRP with the same rules and conventions.

    ``reference`` maps layer names to R^(l) (B, *shape) — relevance from any LRP
    implementation, with ``f`` (B,) the relevance it started from (default: the measure's
    f). Without ``reference``, :func:`nrm_verify.references.autograd.relevance` computes it (autograd,
    the gradient trick) for the measure's own model, input, start vector and rules; it reads
    sequential models, so on a branched model L8 is then "not applicable", saying so."""

    tol = tolerance_for(m, tol)
    if reference is None and not m.network.sequential:
        return LawResult("L8", "LRP equivalence", None,
                         detail="the model branches (a residual sum, a concatenation or a product) and the autograd "
                                "LRP reference reads sequential models only; pass reference= (R per layer) from an "
                                "LRP implementation that reads branches")
    if reference is None:
        x = m.input
        rules = {b.name: b.rule for b in m.network.linear_blocks()}
        start = m.start * m.f.reshape((-1,) + (1,) * (m.start.dim() - 1))
        reference, f = lrp.relevance(m.network.model, x, rules=rules, start=start)
    f = m.f if f is None else f
    worst = Worst()
    m.marginals(absorber=True)  # every layer's plain pass at once; the calls below read them
    for name, R in reference.items():
        marg = m.marginal(name)
        expected = R.reshape(marg.shape) / f.reshape((-1,) + (1,) * (marg.dim() - 1))
        scale = marg.abs().reshape(marg.shape[0], -1).sum(1).reshape((-1,) + (1,) * (marg.dim() - 1))
        scale = big_terms(m, scale)
        worst.add(marg, expected, scale, where=f"m(j) against R_j / f at {name!r}")
        absorbed = 1 - expected.reshape(expected.shape[0], -1).sum(1)
        worst.add(m.absorbed(name), absorbed, scale.reshape(-1), where=f"m(⊥) against 1 − Σ R / f at {name!r}")
    return law_result("L8", "LRP equivalence", worst.deviation, tol,
                   f"marginals against standard LRP at {len(reference)} layers" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


# -- L17 and invariances ------------------------------------------------------------------
def channel_sum(m: Measure, layer: str, target: str = "input", *, tol: float | None = None) -> LawResult:
    """L17: the channel-conditional heatmaps of a layer plus the absorber's sum to the
    plain heatmap: Σ_c μ(X_0 = i, X_layer ∈ c) + μ(X_0 = i, X_layer = ⊥) = m_0(i). In a
    model with branches the walks that bypass the layer's node (a skip path's copies,
    NRM-SPEC §1) are a cell of the partition too, as in L3 and L6."""
    tol = tolerance_for(m, tol)
    shape = m.layer_shape(layer)
    channels = shape[0] if len(shape) > 1 else (shape[0] if shape else 1)
    events = [At(layer, channels=[c]) if len(shape) > 1 else At(layer, index=[c]) for c in range(channels)]
    events.append(At(layer, index=[], absorber=True, parallel=not m.network.sequential))
    maps = m.marginal(target, within=events)
    plain = m.marginal(target)
    d, x, y = worst_pair(maps.sum(0), plain, big_terms(m, maps.abs().sum(0)))
    cells = "⊥" if m.network.sequential else "⊥ and the walks that bypass it"
    return law_result("L17", "channel-conditional heatmaps add up", d, tol,
                   f"{channels} channels of {layer!r} and {cells}, heatmaps at {target!r}", pair=(x, y))
