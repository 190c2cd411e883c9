"""Laws relating rules to each other and to the gradient (NRM-SPEC §4): L9 LRP-0 = Gradient × Input,
L10 ε → 0, L11 γ = 0, L12 γ → ∞, L13 αβ(1, 0) = z⁺, L14 input independence and z^B positivity."""

from __future__ import annotations

import math

import torch

import nrm
from nrm.engine import Engine
from nrm.errors import UnsupportedModuleError
from nrm.graph import ProperFFNN, check_eval_mode, pack_inputs
from nrm.measure import Measure
from nrm.presets import assign
from nrm_verify.laws.base import (
    DEFAULT_TOL,
    LawResult,
    Worst,
    all_marginals,
    canonical_layers,
    largest_deviation,
    law_result,
    restricted_deviation,
    tolerance_for,
)
from nrm_verify.references.autograd import routed


def non_homogeneous_activations(m: Measure) -> list[str]:
    """The kinds of the model's elementwise activations with σ(z) ≠ σ'(z) z for some z
    (sigmoid, a clamp, …), in order: L9 does not apply through them."""
    found: list[str] = []
    for block in m.network.blocks:
        for step in ([block.producer] if block.producer is not None else []) + list(block.trailing):
            kind = step.layer_kind
            if step.role == "elementwise" and not getattr(kind, "homogeneous", False) and kind.name not in found:
                found.append(kind.name)
    return found


def pass_through(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """a = σ(z) with the ratio r = a / z detached: the value is a, the derivative r (0 where
    z = 0). z ∂f/∂z = a ∂f/∂a, which is what the identity rule does with the relevance."""
    r = torch.where(z != 0, a / torch.where(z != 0, z, torch.ones_like(z)), torch.zeros_like(z)).detach()
    out = z * r
    return out + (a - out).detach()


def split_product(factors: list[torch.Tensor], thetas: list[float]) -> torch.Tensor:
    """o = Π_i a⁽ⁱ⁾ (broadcast) with the derivative Σ_i θ_i ∂/∂a⁽ⁱ⁾ of the detached others:
    a⁽ⁱ⁾ ∂f/∂a⁽ⁱ⁾ = θ_i o ∂f/∂o, the product kernel's split (a gate with θ = 0 detached)."""
    value = factors[0]
    for a in factors[1:]:
        value = value * a
    out = torch.zeros((), dtype=value.dtype, device=value.device)
    for i, (a, theta) in enumerate(zip(factors, thetas)):
        if isinstance(theta, torch.Tensor):  # the proportional split: θ_i(k) of the factors' values, held
            theta = theta.detach()
        elif theta == 0:
            continue
        term = a
        for j, b in enumerate(factors):
            if j != i:
                term = term * b.detach()
        out = out + theta * term
    return out + (value - out).detach()


def _as_rows(eng, u: int, t: torch.Tensor) -> torch.Tensor:
    """Layer u's value ``t`` as its readers' calls hold it: rows (B, or B·G where each sample folds
    G) of ``eng.post_rows[u]``; the row count read from the engine where the layer holds no
    neurons (a slice of zero width), which its size cannot say."""
    per_row = math.prod(eng.post_rows[u])
    lead = t.numel() // per_row if per_row else eng.batch * (eng.shape[u][0] if eng.folded.get(u) else 1)
    return t.reshape((lead,) + eng.post_rows[u])


def _replay(m: Measure, detached: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A differentiable replay of the proper FFNN (a DAG: sums and concatenations read
    several layers), reading the same forward record: every layer's value after its
    elementwise steps (the first one a leaf that requires grad), and the pre-activations
    of the linear layers with Σ_j |a_j w_jk| (the column's total contribution).

    Linear maps are the engine's (a layer norm's σ held at its forward value). With
    ``detached``, an activation that is not homogeneous is :func:`pass_through` and a product
    :func:`split_product` with its split θ — the model whose gradient × input is LRP-0."""
    eng = m.engine
    B = eng.batch
    acts = [eng.values[0].detach().clone().requires_grad_(True)]
    post = {0: acts[0].reshape((B,) + eng.post_shape[0])}
    pres = []
    for block in m.network.blocks[1:]:
        l = block.index
        ins = [post[u] for u in block.inputs]
        rows = [_as_rows(eng, u, post[u]) for u in block.inputs]  # as the calls hold them
        if block.kind == "concat":
            out = torch.cat(ins, eng.concat[l][0])
        elif block.kind == "product" and detached:
            factors = [a.reshape((a.shape[0],) + shape) for a, (_, shape) in zip(ins, eng.splits[l])]
            out = split_product(factors, [theta for theta, _ in eng.splits[l]])
        elif block.producer.kind == "linear":
            inp = pack_inputs(block.producer, rows).reshape((-1,) + eng.in_rows[l])
            lmap = eng.maps[l]
            z = lmap.forward(inp, lmap.own_weight())
            bias = lmap.bias_for(z)
            out = (z if bias is None else z + bias).reshape((B,) + eng.shape[l])
            with torch.no_grad():  # Σ_j |a_j w_jk|: 0 where the column has no contribution at all
                mass = lmap.magnitude(inp).reshape((B,) + eng.shape[l])
            pres.append((out, mass))
        elif block.route() is not None:  # an index map (permute, slicing), row by row
            out = routed(m.network, block, rows[0].reshape((-1,) + eng.in_rows[l]))
        elif block.producer.kind == "maxpool":
            k, s, p, d, ceil = block.producer.layer_kind.params(block.producer.call)
            a = rows[0].reshape((-1,) + eng.in_rows[l])
            F = torch.nn.functional
            pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[a.dim() - 3]
            out = pool(a, k, s, p, d, ceil)
        elif block.producer.role in ("elementwise", "reshape", "alias"):
            # an activation that opens its layer, or a row-major reshape (or alias) of a value other layers
            # read too (Swin V2's window attention views the residual stream): q = δ
            out = ins[0].reshape((B,) + eng.in_shape[l])
        else:
            raise UnsupportedModuleError(f"L9's replay does not read the {block.kind} layer {block.name!r}")
        steps = ([block.producer] if block.producer is not None and block.producer.role == "elementwise" else [])
        for step in steps + [t for t in block.trailing if t.role == "elementwise"]:
            a = step.layer_kind.evaluate(step.call, out)
            out = pass_through(out, a) if detached and not getattr(step.layer_kind, "homogeneous", False) else a
        act = out.reshape((B,) + eng.shape[l])
        acts.append(act)
        post[l] = act.reshape((B,) + eng.post_shape[l])
    return acts, pres


def held_factor_maps(m: Measure) -> list[str]:
    """The kinds of the model's linear layers whose map holds an input-dependent factor at
    its forward value (layer norm's σ, the other factor of a matrix product of activations:
    ``jacobian = False``), in order: their W is not the layer's Jacobian, so L9 does not hold
    against the model's gradient through them."""
    found: list[str] = []
    for block in m.network.linear_blocks():
        kind = block.producer.layer_kind
        if not getattr(kind, "jacobian", True) and kind.name not in found:
            found.append(kind.name)
    return found


def gradient_x_input(model, x, target, *, detached: bool = False, tol: float | None = None) -> LawResult:
    """L9: with LRP-0 everywhere, m_l(j) = a_j ∂f_c/∂a_j / f_c at every layer (activations
    with σ(z) = σ'(z) z: ReLU, leaky ReLU, PReLU, identity, max-pool; not applicable when
    the model uses another elementwise activation, multiplies activations or holds a layer
    norm's σ).

    ``detached=True`` is the general form, for every model: the gradient is that of the
    model with what the default conventions hold fixed detached (autograd on a replay, the
    model untouched) — each activation that is not homogeneous as a = z · (σ(z)/z) with the
    ratio detached (the identity rule: the relevance at z is the relevance at a), each
    product as Σ_i θ_i a⁽ⁱ⁾ Π_{j≠i} a⁽ʲ⁾ with the others detached (its split θ; a gate,
    θ = 0, detached entirely), each layer norm's σ at its forward value. In NRM-SPEC terms:
    the kernels of LRP-0 are q(j | k) = a_j ∂z_k/∂a_j / z_k of that model's linear layers,
    so μ's marginal at every layer is its gradient × input over f (§4, L9).

    LRP-0 needs z_k ≠ 0: a neuron with z_k = 0 exactly has its column sent to ⊥ while the
    gradient may still pass it (identity or leaky activations, σ'(0) ≠ 0). Such samples —
    z_k = 0 with ∂f/∂z_k ≠ 0 and some contribution a_j w_jk ≠ 0 that cancels — are outside
    the law and skipped (a column with no contribution at all, e.g. an average of dead ReLUs,
    gives 0 on both sides). Branched models (sums, concatenations) are replayed as the DAG
    they are."""
    if not isinstance(detached, bool):
        raise TypeError(f"detached must be True or False, got {detached!r}")
    m = nrm.explain(model, x, target, rules=nrm.rules.Zero())
    law = "LRP-0 = gradient × input" + (" (σ, gates and ratios detached)" if detached else "")
    products = [b.name for b in m.network.blocks if b.kind == "product"]
    if products and not detached:
        return LawResult("L9", "LRP-0 = gradient × input", None,
                         detail=f"the model multiplies activations ({', '.join(products)}): a product's kernel splits "
                                "its relevance by fixed shares θ_i, while the gradient gives every factor the whole "
                                "product (a·∂(ab)/∂a = ab for each factor): LRP-0 is not Gradient × Input through it")
    kinds = non_homogeneous_activations(m)
    if kinds and not detached:
        return LawResult("L9", "LRP-0 = gradient × input", None,
                         detail=f"the model uses {', '.join(kinds)}: elementwise functions that are not positively "
                                "homogeneous (σ(z) ≠ σ'(z) z), so LRP-0 through them is not Gradient × Input")
    held = held_factor_maps(m)
    if held and not detached:
        return LawResult("L9", "LRP-0 = gradient × input", None,
                         detail=f"the model uses {', '.join(held)}: linear maps that hold an input-dependent factor at "
                                "its forward value (a layer norm's σ, the other factor of a matrix product split by "
                                "θ), so LRP-0 through them is Gradient × Input only with that factor detached, not "
                                "with the model's gradient")
    tol = tolerance_for(m, tol)
    eng = m.engine
    names = canonical_layers(m)
    acts, pres = _replay(m, detached)
    f = m.f
    # Σ_k π_k y_k = f_c for π = δ_c
    objective = (acts[-1].reshape(acts[-1].shape[0], -1) * m.start.reshape(m.start.shape[0], -1)).sum()
    grads = torch.autograd.grad(objective, acts[:-1] + [z for z, _ in pres], allow_unused=True)
    keep = torch.ones(eng.batch, dtype=torch.bool, device=eng.device)
    for (z, mass), g in zip(pres, grads[len(acts) - 1:]):
        if g is not None:  # a column without any contribution (mass 0) gives 0 on both sides
            keep &= ~((z.detach() == 0) & (mass != 0) & (g != 0)).reshape(eng.batch, -1).any(1)
    if not bool(keep.any()):
        return LawResult("L9", law, None,
                         detail="a neuron with z_k = 0 passes gradient in every sample (LRP-0 needs z_k ≠ 0)")
    worst = Worst()
    for name, act, g in zip(names[:-1], acts[:-1], grads):
        if g is None:
            g = torch.zeros_like(act)
        gxi = (act * g).detach() / f.reshape((-1,) + (1,) * (act.dim() - 1))
        marg = m.marginal(name).reshape(gxi.shape)
        scale = marg.abs().reshape(marg.shape[0], -1).sum(1).reshape((-1,) + (1,) * (marg.dim() - 1))
        worst.add(marg[keep], gxi[keep], scale[keep], where=name)
    skipped = int((~keep).sum())
    conditions = ["LRP-0 on every layer", "z_k ≠ 0 where gradient passes"]
    conditions.insert(1, "the gradient of the model with σ, gates and activation ratios detached" if detached
                      else "activations with σ(z) = σ'(z)·z")
    return law_result("L9", law, worst.deviation, tol,
                      "every layer" + (f"; worst at {worst.where!r}" if worst.deviation > 0 else "") +
                      (f"; {skipped} samples skipped (z_k = 0 passing gradient)" if skipped else ""),
                      conditions, pair=worst.pair)


def gradient_x_input_detached(model, x, target, *, tol: float | None = None) -> LawResult:
    """L9 in its general form: :func:`gradient_x_input` with ``detached=True`` (the gradient
    of the model with activation ratios, gates and layer norms' σ detached)."""
    return gradient_x_input(model, x, target, detached=True, tol=tol)


def _relevant_preactivations(m: Measure) -> torch.Tensor:
    """|z_k| (bias included) of every neuron of a linear layer that carries relevance under
    ``m`` (m_l(k) ≠ 0), per sample: (B, n), +inf where a neuron carries none."""
    eng, names = m.engine, canonical_layers(m)
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
    zero = all_marginals(nrm.explain(model, x, target, rules=nrm.rules.Zero()))
    devs = []
    for e in epsilons:
        eps = finest if e == epsilons[-1] else nrm.explain(model, x, target, rules=nrm.rules.Epsilon(e))
        devs.append(restricted_deviation(zero, all_marginals(eps), keep))
    tol = tol if tol is not None else (1e-4 if x.dtype == torch.float64 else 1e-2)
    z_min = float(z[keep].min())
    bound = tol + 10 * finest.depth * epsilons[-1] / z_min
    ratios = [d / e for d, e in zip(devs, epsilons)]
    # O(ε / |z|): the deviation per unit ε stays bounded as ε shrinks (up to rounding)
    linear = all(r2 <= 10 * r1 + 1e-3 for r1, r2 in zip(ratios, ratios[1:]))
    res = law_result("L10", "ε → 0 gives LRP-0", devs[-1], bound,
                  f"deviations {[f'{d:.2g}' for d in devs]} at ε = {list(epsilons)}; min |z_k| on the relevance "
                  f"path {z_min:.3g} (bound {bound:.2g}) on {int(keep.sum())} samples", ["z_k ≠ 0"])
    if not linear:
        res.holds = False
        res.detail += " (not O(ε))"
    return res


def gamma_zero(model, x, target, *, tol: float | None = None) -> LawResult:
    """L11: γ = 0 gives LRP-0 exactly."""
    a = all_marginals(nrm.explain(model, x, target, rules=nrm.rules.Zero()))
    b = all_marginals(nrm.explain(model, x, target, rules=nrm.rules.Gamma(0.0)))
    worst, where = largest_deviation(a, b)
    tol = tol if tol is not None else (DEFAULT_TOL if x.dtype == torch.float64 else 1e-4)
    return law_result("L11", "γ = 0 gives LRP-0", worst, tol, f"worst at {where!r}" if where else "all layers")


def _nonnegative_inputs(m: Measure) -> bool:
    return all(bool((m.engine.inputs[b.index] >= 0).all()) for b in m.network.linear_blocks())


def _zplus_defined(plus: Measure, other: Measure) -> torch.Tensor:
    """Per sample: every neuron that receives relevance under ``other`` has a positive z⁺
    denominator Σ_j a_j w_jk⁺ + b_k⁺ (z⁺ is undefined, and sends the column to ⊥, elsewhere)."""
    keep = torch.ones(plus.engine.batch, dtype=torch.bool, device=plus.engine.device)
    names = canonical_layers(plus)
    for block in plus.network.linear_blocks():
        scale = plus.engine.kernel(block.index).shares[0][0] if plus.engine.kernel(block.index).shares else None
        dead = torch.ones_like(plus.marginal(names[block.index]), dtype=torch.bool) if scale is None else scale == 0
        reached = other.marginal(names[block.index]) != 0
        keep &= ~(dead & reached).reshape(keep.shape[0], -1).any(1)
    return keep


def _gamma_ratio(plus: Measure, other: Measure) -> torch.Tensor:
    """Per sample, max over the neurons that carry relevance (under z⁺ or ``other``) of
    κ_k = (Σ_j a_j |w_jk⁻| + |b_k⁻|) / (Σ_j a_j w_jk⁺ + b_k⁺): LRP-γ is within O(κ_k / γ) of
    z⁺ at neuron k, so γ must be large against κ before the limit shows (0 where none)."""
    eng, names = plus.engine, canonical_layers(plus)
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
    ref = all_marginals(plus)
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
    devs = [restricted_deviation(ref, all_marginals(g), regime) for g in measures]
    tol = tol if tol is not None else (1e-4 if x.dtype == torch.float64 else 1e-2)
    bound = tol + 10 * plus.depth * k_max / gammas[-1]
    res = law_result("L12", "γ → ∞ gives z⁺", devs[-1], bound,
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
    a_m, b_m = all_marginals(plus), all_marginals(ab)
    worst, where = largest_deviation({k: v[keep] for k, v in a_m.items()}, {k: v[keep] for k, v in b_m.items()})
    tol = tol if tol is not None else (DEFAULT_TOL if x.dtype == torch.float64 else 1e-4)
    return law_result("L13", "α1β0 = z⁺", worst, tol, f"worst at {where!r}" if where else "all layers", ["a ≥ 0"])


def input_independence(model, x1, x2, target, rule, *, tol: float | None = None) -> LawResult:
    """L14: the kernels of flat and w² do not depend on the input: the kernel column of
    every neuron of every linear layer is the same at x1 and x2 (no target is needed: the
    kernels are read from the forward pass; ``target`` is accepted for a uniform call)."""

    if rule.depends_on_input:
        return LawResult("L14", "input independence", None, detail=f"{rule!r} reads the activations")
    engines = []
    for x in (x1, x2):
        check_eval_mode(model)
        network = ProperFFNN(model, x)
        assign(network, rule)
        engines.append(Engine(network))
    worst = Worst()
    for block in engines[0].net.linear_blocks():
        kernels = [e.kernel(block.index) for e in engines]
        for (s1, _), (s2, _) in zip(kernels[0].shares, kernels[1].shares):
            worst.add(s1, s2, where=f"kernel scales of {block.name!r}")
        worst.add(kernels[0].qbot, kernels[1].qbot, where=f"q(⊥ | k) of {block.name!r}")
    tol = tol if tol is not None else (DEFAULT_TOL if x1.dtype == torch.float64 else 1e-5)
    return law_result("L14", "input independence", worst.deviation, tol, f"kernels of {rule!r} at two inputs" +
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
    return law_result("L14", "z^B non-negative", worst, tol, f"most negative kernel entry (first {min(n, 64)} columns)",
                   ["low ≤ a ≤ high"])
