"""Laws of models with branches (NRM-SPEC §1, L1 and L18), re-exported by :mod:`nrm_verify.laws`.

* :func:`normalization_with_copies` — L1 on the proper FFNN of a branched model: at every
  layer, the node's neurons, the copies on the paths that bypass it and the absorber hold
  the whole mass: Σ_j m_l(j) + μ(bypasses l) + m_l(⊥_l) = 1.
* :func:`modularity` — L18: (a) at every value, the relevance that its readers send to it
  adds up to its marginal (skip and branch relevance add at the fan-out neuron: the
  duplication neurons' q(u | u^(i)) = 1); (b) with a model given, the marginals equal the
  explicit layer-by-layer LRP on the original graph (:func:`nrm_verify.references.explicit.reference_lrp`,
  written from the equations, independent of the engine), so the proper-FFNN view with its
  duplication and padding neurons computes exactly what LRP computes on the graph.
* :func:`association` — K6: two models that write one n-ary product as different binary
  products ((a·b)·c and a·(b·c)) give the same measure: the product is flattened first.
"""

from __future__ import annotations

import torch

from nrm.measure import Measure
from nrm_verify.laws.base import LawResult, Worst, law_result, magnitude, tolerance_for
from nrm_verify.laws.measure import every_bypassing
from nrm_verify.references.explicit import reference_lrp


def _names(m: Measure) -> list[str]:
    """One name per layer (the first name that shows the layer's own shape)."""
    return m.canonical_names()


def normalization_with_copies(m: Measure, *, tol: float | None = None) -> LawResult:
    """L1 on a branched model: Σ_j m_l(j) + bypassing(l) + m_l(⊥_l) = 1 at every layer."""
    tol = tolerance_for(m, tol)
    worst, scale = Worst(), magnitude(m)
    names = _names(m)
    every = m.marginals(absorber=True)  # one pass for every layer's marginal and absorber
    bypassing = every_bypassing(m, names[:-1]) or {}
    for name in names[:-1]:
        marg, absorbed = every[name]
        total = marg.reshape(m.engine.batch, -1).sum(1) + bypassing.get(name, 0.0) + absorbed
        worst.add(total, torch.ones_like(total), scale, name)
    return law_result("L1", "normalization with copies", worst.deviation, tol,
                   f"Σ m_l + bypassing + m_l(⊥) = 1 at all {len(names) - 1} layers; worst at {worst.where!r}",
                   ["sums over the node's neurons, the copies on bypassing paths and the absorber"], worst.pair)


def modularity(m: Measure, model=None, x=None, target=None, rules=None, *, tol: float | None = None) -> LawResult:
    """L18: relevance adds up at every fan-out, and (with ``model``, ``x``, ``target``,
    ``rules``) the marginals equal explicit LRP on the original graph.

    (a) For every layer u: Σ_{c reads u} Q_{c→u} m_c = m_u, where Q_{c→u} is the part of
        layer c's kernel that goes to u (the engine's :meth:`~nrm.engine.Engine.step_down_parts`
        applied to the marginal of c).
    (b) m_l(j) = R_j^(l) / f_c(x) and m_l(⊥) = absorbed_l / f_c(x) for every named value,
        R from :func:`nrm_verify.references.explicit.reference_lrp`.
    """
    tol = tolerance_for(m, tol)
    eng, net = m.engine, m.network
    names = _names(m)
    scale = magnitude(m)
    worst = Worst()
    fanouts = 0
    incoming: dict[int, torch.Tensor] = {}
    every = m.marginals()  # all layers' marginals from one backward pass
    for c in range(net.depth, 0, -1):
        mc = every[names[c]].reshape((1, eng.batch) + eng.shape[c])
        parts, _ = eng.step_down_parts(c, mc, None)
        for u, t in parts:
            incoming[u] = t[0] if u not in incoming else incoming[u] + t[0]
    for u, total in incoming.items():
        if len(net.consumers[u]) > 1:
            fanouts += 1
        mu = every[names[u]].reshape(total.shape)
        worst.add(total, mu, _per_sample(scale, total), f"fan-in of {names[u]!r}")
    detail = f"relevance from every reader adds up at all {len(incoming)} values ({fanouts} fan-outs)"
    assumptions = ["relevance sent along each edge computed from the marginal of the reading layer"]
    if model is not None:

        ref = reference_lrp(model, x, target, rules)
        f = ref.f.reshape(-1).to(m.f)  # the reference's own f_c(x): each side normalized by its own forward
        compared = 0
        for name in m.layers:
            if name not in ref.relevance:
                continue
            r = ref.relevance[name]
            got = m.marginal(name)
            worst.add(got, r.reshape(got.shape) / f.reshape((-1,) + (1,) * (got.dim() - 1)), _per_sample(scale, got),
                      name)
            compared += 1
        if compared == 0:
            return LawResult("L18", "modularity", None, 0.0, tol, assumptions,
                             "the reference LRP names none of the measure's layers")
        detail += f"; marginals equal explicit LRP on the original graph at {compared} names"
        assumptions.append("reference: nrm_verify.references.explicit.reference_lrp (dense matrices from the rule "
                           "equations)")
    return law_result("L18", "modularity", worst.deviation, tol, f"{detail}; worst at {worst.where!r}", assumptions,
                   worst.pair)


def association(left: Measure, right: Measure, layers=None, *, tol: float | None = None) -> LawResult:
    """K6: μ does not depend on how an n-ary product was associated. ``left`` and ``right``
    are the measures of two models that compute the same function with the product written
    as different binary products (same input, target, rules and split); their marginals agree
    at every layer both name (``layers``: the names to compare, default all shared names but
    the products' own), and so does the absorber."""
    tol = tolerance_for(left, tol)
    names = list(layers) if layers is not None else [n for n in left.layers if n in right.layers]
    scale = magnitude(left)
    worst = Worst()
    for name in names:
        a, b = left.marginal(name), right.marginal(name)
        if a.shape != b.shape:
            continue
        worst.add(a, b, _per_sample(scale, a), name)
        worst.add(left.absorbed(name), right.absorbed(name), scale, f"⊥ of {name!r}")
    return law_result("K6", "association of products", worst.deviation, tol,
                      f"marginals of both associations agree at {len(names)} layers; worst at {worst.where!r}",
                      ["both models compute the same product of the same factors"], worst.pair)


def _per_sample(scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scale.reshape((-1,) + (1,) * (like.dim() - 1))


def is_branched(m: Measure) -> bool:
    """Whether the model has a fan-out, a sum or a concatenation (not a chain)."""
    return not m.network.sequential


__all__ = ["normalization_with_copies", "modularity", "is_branched"]
