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

from collections.abc import Sequence
from dataclasses import dataclass, field

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

    @property
    def applicable(self) -> bool:
        return self.holds is not None

    def __bool__(self) -> bool:
        """True when the law holds or does not apply."""
        return self.holds is not False

    def __str__(self) -> str:
        verdict = {True: "holds", False: "VIOLATED", None: "not applicable"}[self.holds]
        dev = f" (worst deviation {self.deviation:.3g}, tolerance {self.tolerance:.1g})" if self.applicable else ""
        return f"{self.law} {self.name}: {verdict}{dev} — {self.detail}"


def _tol(m: Measure, tol: float | None) -> float:
    if tol is not None:
        return tol
    return DEFAULT_TOL if m.engine.dtype == torch.float64 else 1e-4


def _result(law, name, deviation, tol, detail, assumptions=()) -> LawResult:
    deviation = float(deviation)
    return LawResult(law, name, deviation <= tol, deviation, tol, list(assumptions), detail)


def _dev(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float = 1.0) -> float:
    """max |a − b| / max(1, scale) — relative to the size of the terms that were added."""
    s = torch.as_tensor(scale, dtype=a.dtype, device=a.device).clamp(min=1.0)
    return float(((a - b).abs() / s).max()) if a.numel() else 0.0


def _null(x: torch.Tensor) -> torch.Tensor:
    return x.abs() <= 64 * torch.finfo(x.dtype).eps


def _on(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The samples (first dimension) where the law is defined."""
    return values[keep]


def _canonical_layers(m: Measure) -> list[str]:
    return m._canonical_names()


def complement_atom(m: Measure, event: At) -> At:
    """The complement of a one-layer event written explicitly: {X_l ∈ V̄_l ∖ S}."""
    atom = event.atom
    layer = atom.layer
    shape = m.layer_shape(layer)
    inside = m._constraint(atom)
    mask = torch.ones(m.engine.shape[inside.layer], dtype=torch.bool, device=m.engine.device)
    if inside.mask is not None:
        mask = ~inside.mask
    elif atom.selector == "all":
        mask = torch.zeros_like(mask)
    return At(layer, mask=mask.reshape(shape).cpu(), absorber=not atom.absorber)


# -- L1 ------------------------------------------------------------------------------
def normalization(m: Measure, *, tol: float | None = None) -> LawResult:
    """L1: μ(Ω) = 1 and Σ_{j ∈ V̄_l} m_l(j) = 1 at every layer."""
    tol = _tol(m, tol)
    worst, where = 0.0, ""
    for name in _canonical_layers(m):
        marg = m.marginal(name)
        total = marg.reshape(marg.shape[0], -1).sum(1) + m.absorbed(name)
        scale = marg.reshape(marg.shape[0], -1).abs().sum(1)
        d = _dev(total, torch.ones_like(total), scale)
        if d > worst:
            worst, where = d, name
    omega = m(OMEGA)
    worst = max(worst, _dev(omega, torch.ones_like(omega)))
    return _result("L1", "normalization", worst, tol,
                   f"μ(Ω) and Σ_j m_l(j) + m_l(⊥) over {len(_canonical_layers(m))} layers" +
                   (f"; worst at {where!r}" if where else ""))


# -- L2 ------------------------------------------------------------------------------
def additivity(m: Measure, a: Event, b: Event, *, tol: float | None = None) -> LawResult:
    """L2: μ(A ∪ B) = μ(A) + μ(B) − μ(A ∩ B), and, for one-layer events, μ(Aᶜ) = 1 − μ(A)
    (the complement written as an explicit set) and μ(X_l ∈ S) = Σ_{j∈S} m_l(j)."""
    tol = _tol(m, tol)
    ua, ub, uab, uu = m.measure([a, b, a & b, a | b])
    scale = ua.abs() + ub.abs() + uab.abs()
    worst = _dev(uu, ua + ub - uab, scale)
    checked = ["union"]
    for ev in (a, b):
        if isinstance(ev, At):
            comp = m(complement_atom(m, ev))
            base = m(ev)
            worst = max(worst, _dev(comp, 1 - base, base.abs()))
            marg = m.marginal(ev.atom.layer)
            mask = m._constraint(ev.atom)
            full = torch.ones_like(marg[0], dtype=torch.bool)
            layer_mask = full if mask.mask is None else mask.mask.reshape(marg.shape[1:])
            summed = (marg * layer_mask).reshape(marg.shape[0], -1).sum(1)
            if ev.atom.absorber:
                summed = summed + m.absorbed(ev.atom.layer)
            worst = max(worst, _dev(base, summed, marg.abs().reshape(marg.shape[0], -1).sum(1)))
            checked += ["explicit complement", "sum of marginals"]
    return _result("L2", "additivity", worst, tol, "; ".join(dict.fromkeys(checked)))


# -- L3 ------------------------------------------------------------------------------
def marginalization(m: Measure, layer: str, event: Event = OMEGA, *, tol: float | None = None) -> LawResult:
    """L3: Σ_{j ∈ V̄_l} μ(X_l = j, E) = μ(E) for an event E not constraining layer l."""
    tol = _tol(m, tol)
    l = m.layer_index(layer)
    if any(m.layer_index(name) == l for name in event.layers()):
        return LawResult("L3", "marginalization", None, detail=f"the event constrains layer {layer!r} itself")
    joint = m.marginal(layer, within=event)
    total = joint.reshape(joint.shape[0], -1).sum(1) + m.absorbed(layer, within=event)
    direct = m(event)
    return _result("L3", "marginalization", _dev(total, direct, joint.abs().reshape(joint.shape[0], -1).sum(1)), tol,
                   f"Σ_j μ(X_{layer} = j, E) against μ(E) for E = {event!r}")


def joint_marginals(m: Measure, layer_a: str, layer_b: str, *, tol: float | None = None) -> LawResult:
    """L3 for joints: the channel joint's row sums plus the mass through ⊥_b give layer a's
    channel marginal, and likewise for columns."""
    tol = _tol(m, tol)
    J = m.joint(layer_a, layer_b)
    worst = 0.0
    for mine, other, axis in ((layer_a, layer_b, 2), (layer_b, layer_a, 1)):
        through_bot = m.marginal(mine, within=At(other, index=[], absorber=True))
        marg = m.marginal(mine)
        per_channel = marg.reshape(marg.shape[0], marg.shape[1] if marg.dim() > 1 else 1, -1).sum(-1)
        bot = through_bot.reshape(per_channel.shape[0], per_channel.shape[1], -1).sum(-1)
        worst = max(worst, _dev(J.sum(axis) + bot, per_channel, J.abs().sum(axis)))
    return _result("L3", "joint marginals", worst, tol, f"row and column sums of joint({layer_a!r}, {layer_b!r})")


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
    return _result("L4", "chain rule", _dev(_on(direct, keep), _on(product, keep), _on(direct, keep).abs()), tol,
                   f"walk {list(walk)} against m_L · Π of one-step conditionals on {int(keep.sum())} samples")


def multiplicative(m: Measure, a: Event, b: Event, *, tol: float | None = None) -> LawResult:
    """L4: μ(A ∩ B) = μ(A) μ(B | A) when μ(A) ≠ 0."""
    tol = _tol(m, tol)
    ua, uab = m.measure([a, a & b])
    keep = ~_null(ua)
    if not bool(keep.any()):
        return LawResult("L4", "multiplicative law", None, detail="μ(A) = 0 for every sample: μ(B | A) is undefined")
    cond = _on(uab, keep) / _on(ua, keep)
    return _result("L4", "multiplicative law", _dev(_on(uab, keep), _on(ua, keep) * cond, _on(ua, keep).abs()), tol,
                   f"A = {a!r}, B = {b!r}")


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
    return _result("L5", "Bayes", _dev(lhs, rhs, lhs.abs()), tol, f"A = {a!r}, B = {b!r}")


def total_measure(m: Measure, b: Event, layer: str, *, tol: float | None = None) -> LawResult:
    """L6: μ(B) = Σ_i μ(B ∩ A_i) over the partition of V̄_layer into its channels and ⊥."""
    tol = _tol(m, tol)
    shape = m.layer_shape(layer)
    channels = shape[0] if shape else 1
    parts = [At(layer, channels=[c]) for c in range(channels)] if len(shape) > 1 else [
        At(layer, index=[j]) for j in range(channels)]
    parts.append(At(layer, index=[], absorber=True))
    values = m.measure([b & p for p in parts])
    return _result("L6", "total measure", _dev(values.sum(0), m(b), values.abs().sum(0)), tol,
                   f"{len(parts)} cells of V̄_{layer} (channels and ⊥), B = {b!r}")


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
    return _result("L7", "Markov", _dev(lhs, rhs, rhs.abs()), tol,
                   f"q_{l}(A | {neuron}) against the conditional given X_{l} = {neuron} and E = {above!r}")


# -- L9–L14: relations between rules ------------------------------------------------------
def _all_marginals(m: Measure) -> dict[str, torch.Tensor]:
    return {name: m.marginal(name) for name in _canonical_layers(m)}


def _max_dev(a: dict, b: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for k in a:
        d = _dev(a[k], b[k], a[k].abs().reshape(a[k].shape[0], -1).sum(1).reshape((-1,) + (1,) * (a[k].dim() - 1)))
        if d > worst:
            worst, where = d, k
    return worst, where


def gradient_x_input(model, x, target, *, tol: float | None = None) -> LawResult:
    """L9: with LRP-0 everywhere, m_l(j) = a_j ∂f_c/∂a_j / f_c at every layer (activations
    with σ(z) = σ'(z) z: ReLU, leaky ReLU, identity, max-pool)."""
    m = nrm.explain(model, x, target, rules=nrm.rules.Zero())
    tol = _tol(m, tol)
    eng = m.engine
    names = _canonical_layers(m)
    # a differentiable replay of the proper FFNN, reading the same forward record
    acts = [eng.values[0].detach().clone().requires_grad_(True)]
    a = acts[0]
    for block in m.network.blocks[1:]:
        l = block.index
        inp = a.reshape((a.shape[0],) + eng.in_shape[l])
        if block.producer.kind == "linear":
            lmap = eng.maps[l]
            z = lmap.forward(inp, lmap.weight)
            bias = lmap.bias_for(z)
            out = z if bias is None else z + bias
        else:
            mod = block.producer.module
            out = torch.nn.functional.max_pool2d(inp, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                                                 mod.ceil_mode)
        for step in block.trailing:
            if step.kind == "activation":
                slope = getattr(step.module, "negative_slope", 0.0)
                out = torch.nn.functional.leaky_relu(out, slope)
        out = out.reshape((out.shape[0],) + eng.shape[l])
        acts.append(out)
        a = out
    f = m.f
    # Σ_k π_k y_k = f_c for π = δ_c
    objective = (acts[-1].reshape(acts[-1].shape[0], -1) * m.start.reshape(m.start.shape[0], -1)).sum()
    grads = torch.autograd.grad(objective, acts[:-1], allow_unused=True)
    worst, where = 0.0, ""
    for name, act, g in zip(names[:-1], acts[:-1], grads):
        if g is None:
            g = torch.zeros_like(act)
        gxi = (act * g).detach() / f.reshape((-1,) + (1,) * (act.dim() - 1))
        marg = m.marginal(name).reshape(gxi.shape)
        d = _dev(marg, gxi, marg.abs().reshape(marg.shape[0], -1).sum(1).reshape((-1,) + (1,) * (marg.dim() - 1)))
        if d > worst:
            worst, where = d, name
    return _result("L9", "LRP-0 = gradient × input", worst, tol,
                   "every layer" + (f"; worst at {where!r}" if where else ""),
                   ["LRP-0 on every layer", "activations with σ(z) = σ'(z)·z"])


def epsilon_limit(model, x, target, *, epsilons=(1e-3, 1e-5, 1e-7), tol: float | None = None) -> LawResult:
    """L10: LRP-ε → LRP-0 as ε → 0 where z_k ≠ 0, with error O(ε / |z_k|)."""
    zero = _all_marginals(nrm.explain(model, x, target, rules=nrm.rules.Zero()))
    devs = []
    for e in epsilons:
        devs.append(_max_dev(zero, _all_marginals(nrm.explain(model, x, target, rules=nrm.rules.Epsilon(e))))[0])
    tol = tol if tol is not None else (1e-4 if x.dtype == torch.float64 else 1e-2)
    ratios = [d / e for d, e in zip(devs, epsilons)]
    # O(ε / |z|): the deviation per unit ε stays bounded as ε shrinks (up to rounding)
    linear = all(r2 <= 10 * r1 + 1e-3 for r1, r2 in zip(ratios, ratios[1:]))
    res = _result("L10", "ε → 0 gives LRP-0", devs[-1], tol,
                  f"deviations {[f'{d:.2g}' for d in devs]} at ε = {list(epsilons)}", ["z_k ≠ 0"])
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


def gamma_limit(model, x, target, *, gammas=(1e2, 1e4, 1e6), tol: float | None = None) -> LawResult:
    """L12: γ → ∞ gives z⁺ when a ≥ 0 and Σ_j a_j w_jk⁺ + b_k⁺ > 0 (error O(1/γ)); checked on
    the samples where every neuron that carries relevance has a positive z⁺ denominator."""
    plus = nrm.explain(model, x, target, rules=nrm.rules.ZPlus())
    if not _nonnegative_inputs(plus):
        return LawResult("L12", "γ → ∞ gives z⁺", None, detail="some layer's input has a < 0 (the law needs a ≥ 0)")
    ref = _all_marginals(plus)
    measures = [nrm.explain(model, x, target, rules=nrm.rules.Gamma(g)) for g in gammas]
    keep = _zplus_defined(plus, measures[-1])
    if not bool(keep.any()):
        return LawResult("L12", "γ → ∞ gives z⁺", None,
                         detail="a z⁺ denominator is 0 on the relevance path of every sample")
    devs = [_restricted_dev(ref, _all_marginals(g), keep) for g in measures]
    tol = tol if tol is not None else (1e-4 if x.dtype == torch.float64 else 1e-2)
    res = _result("L12", "γ → ∞ gives z⁺", devs[-1], tol,
                  f"deviations {[f'{d:.2g}' for d in devs]} at γ = {list(gammas)}", ["a ≥ 0 at every layer"])
    if not all(d2 <= d1 * 1.01 + 1e-12 for d1, d2 in zip(devs, devs[1:])):
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
    every neuron of every linear layer is the same at x1 and x2."""
    if rule.depends_on_input:
        return LawResult("L14", "input independence", None, detail=f"{rule!r} reads the activations")
    worst = 0.0
    ms = [nrm.explain(model, x, target, rules=rule) for x in (x1, x2)]
    for block in ms[0].network.linear_blocks():
        kernels = [m.engine.kernel(block.index) for m in ms]
        for (s1, _), (s2, _) in zip(kernels[0].shares, kernels[1].shares):
            worst = max(worst, _dev(s1, s2))
        worst = max(worst, _dev(kernels[0].qbot, kernels[1].qbot))
    tol = tol if tol is not None else (DEFAULT_TOL if x1.dtype == torch.float64 else 1e-5)
    return _result("L14", "input independence", worst, tol, f"kernels of {rule!r} at two inputs")


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
    return _result("L17", "channel-conditional heatmaps add up", _dev(maps.sum(0), plain, maps.abs().sum(0)), tol,
                   f"{channels} channels of {layer!r} and ⊥, heatmaps at {target!r}")


def batch_invariance(model, x, target, rules=None, *, tol: float | None = None) -> LawResult:
    """A batch gives the same per-sample marginals as one sample at a time."""
    whole = nrm.explain(model, x, target, rules=rules)
    tol = _tol(whole, tol)
    targets = torch.as_tensor(target).reshape(-1).expand(x.shape[0]) if torch.as_tensor(target).numel() == 1 else \
        torch.as_tensor(target).reshape(-1)
    worst = 0.0
    for i in range(x.shape[0]):
        one = nrm.explain(model, x[i:i + 1], int(targets[i]), rules=rules)
        for name in _canonical_layers(whole):
            worst = max(worst, _dev(whole.marginal(name)[i:i + 1], one.marginal(name)))
            worst = max(worst, _dev(whole.absorbed(name)[i:i + 1], one.absorbed(name)))
    return _result("INV", "batch invariance", worst, tol, f"{x.shape[0]} samples, every layer")
