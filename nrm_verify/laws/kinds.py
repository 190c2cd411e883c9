"""The layer kinds' interpretation of the model (nrm.layers), checked: K2 every map reproduces what
the model computed, K3 every transpose is the adjoint of its map, K5 the engine equals the exact oracle."""

from __future__ import annotations

import torch

import nrm
from nrm.measure import Measure
from nrm_verify.laws.base import DEFAULT_TOL, LawResult, Worst, law_result
from nrm_verify.references.exact_dag import ExactGraph
from nrm_verify.references.oracle import ExactNetwork


def layer_maps(m: Measure, *, tol: float | None = None) -> LawResult:
    """The captured computation is the model's (NRM-SPEC §4, invariances): at every layer,
    the layer kind's interpretation reproduces what the model computed there — a linear
    kind's map W a + b its recorded pre-activation (relative to Σ_j |a_j w_jk| + |b_k|), an
    elementwise kind its recorded activation, a winner-takes-all kind its recorded output.
    An elementwise operation the model computed in a narrower dtype than the record's (a
    float64 Llama's float32 RMSNorm, widened by ``nrm.capture.upcast``) is evaluated in that
    dtype, as the model did (in the record's dtype it differs by the narrower dtype's rounding,
    about 1e-7, which is not the kind's error)."""
    eng, net = m.engine, m.network
    worst = Worst()
    for block in net.blocks[1:]:
        step, l = block.producer, block.index
        if block.kind == "linear":
            a, lmap = eng.inputs[l], eng.maps[l]
            z = lmap.forward(a, lmap.own_weight())  # the map as the engine applies it
            bias = lmap.bias_for(z) if lmap.bias is not None else None
            z = z if bias is None else z + bias
            scale = lmap.magnitude(a)
            scale = scale if bias is None else scale + bias.abs()
            worst.add(z / scale.clamp(min=1e-300), eng.pre[l] / scale.clamp(min=1e-300),
                      where=f"map of {block.name!r} ({step.layer_kind.name})")
        elif block.kind == "maxpool":
            _, pooled = step.layer_kind.winners(step.call, eng.inputs[l])
            worst.add(pooled, net.value(step.value), where=f"winners of {block.name!r}")
        for s in ([step] if block.kind == "pass" else []) + list(block.trailing):
            if s.role == "elementwise":
                src = net.value(s.call.kind.relevance_inputs(s.call)[0])
                narrow = getattr(s.call, "computed_in", None)
                if narrow is not None:  # the model computed it in a narrower dtype (nrm.capture.upcast): so here
                    ours = s.layer_kind.evaluate(s.call, src.to(narrow)).to(src.dtype)
                else:
                    ours = s.layer_kind.evaluate(s.call, src)
                worst.add(ours, net.value(s.value), where=f"{s.name!r} ({s.layer_kind.name})")
    tol = tol if tol is not None else (1e-12 if eng.dtype == torch.float64 else 1e-5)
    return law_result("K2", "layer maps reproduce the model", worst.deviation, tol,
                   "every layer kind's map against the recorded computation" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


def layer_transposes(m: Measure, *, tol: float | None = None) -> LawResult:
    """Each linear layer's transpose is the adjoint of its map: for the weight and for every
    elementwise modification of it that the rules use (w⁺, w⁻, w², 1), map.transpose(g, v(W))
    equals the autograd VJP of a ↦ map.forward(a, v(W)), for a random g (relative to |g| Σ|v(W)|);
    also for the map applied as itself (``own_weight``) where that is not W (a softmax's)."""
    eng = m.engine
    worst = Worst()
    gen = torch.Generator(device="cpu").manual_seed(0)
    for block in m.network.linear_blocks():
        l = block.index
        lmap = eng.maps[l]
        a = eng.inputs[l].detach()
        cases = []
        for what, modify in (("W", lambda w: w), ("W⁺", lambda w: w.clamp(min=0)), ("W⁻", lambda w: w.clamp(max=0)),
                             ("W²", lambda w: w * w), ("1", torch.ones_like)):
            w = lmap.structured(modify(lmap.weight))
            cases.append((what, w, w))
        if lmap.own_weight() is not lmap.weight:
            cases.append(("W as applied", lmap.own_weight(), lmap.structured(lmap.weight)))
        for what, w, dense in cases:
            worst.add(*_adjoint(lmap, a, w, dense, gen), where=f"transpose of {block.name!r} with {what}")
    tol = tol if tol is not None else (1e-12 if eng.dtype == torch.float64 else 1e-5)
    return law_result("K3", "transposes are adjoints", worst.deviation, tol,
                   "map.transpose against autograd of map.forward" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


def _adjoint(lmap, a: torch.Tensor, w, dense: torch.Tensor, gen: torch.Generator) -> tuple:
    """(map.transpose(g, w), the autograd VJP of x ↦ map.forward(x, w) at a, |g| Σ|dense|) for a
    random g; ``dense`` is w as a tensor of the weight's shape (w itself, or W for ``own_weight``)."""
    in_shape = tuple(a.shape[1:])
    leaf = a.clone().requires_grad_(True)
    with torch.enable_grad():
        z = lmap.forward(leaf, w)
        g = torch.randn(z.shape, generator=gen, dtype=z.dtype).to(z.device)
        (expected,) = torch.autograd.grad(z, leaf, g)
    got = lmap.transpose(g, w, in_shape)
    scale = lmap.transpose(g.abs(), dense.abs(), in_shape)
    return got.reshape(expected.shape), expected, scale.reshape(expected.shape)


def exact_oracle(model, x, target, rules=None, *, tol: float | None = None) -> LawResult:
    """The engine computes the measure exactly defined by the rules (NRM-SPEC §5): the
    marginal of every layer equals the exact rational oracle's
    (:class:`nrm_verify.references.oracle.ExactNetwork`, walk enumeration) at the first sample, within
    ``tol`` × max(1, Σ_ω |μ(ω)|). Sequential models only (the oracle's scope)."""

    m = nrm.explain(model, x[:1], target if isinstance(target, int) else int(torch.as_tensor(target).reshape(-1)[0]),
                    rules=rules)
    if not m.network.sequential:
        return _exact_graph(m, model, x, target, rules, tol)
    try:
        net = ExactNetwork.from_model(model, x[:1], rules)
    except nrm.RelevanceDependentRuleError as e:
        return LawResult("K5", "exact oracle", None, detail=str(e))
    c = int(torch.as_tensor(target).reshape(-1)[0])
    exact = net.explain(target=c)
    scale = float(exact.total_variation())
    worst = Worst()
    for name in m.canonical_names():
        got = m.marginal(name)[0]
        want = torch.tensor([float(v) for v in exact.marginal(name).reshape(-1)], dtype=torch.float64)
        worst.add(got.double().reshape(-1), want, scale, where=f"marginal of {name!r}")
        worst.add(m.absorbed(name)[0].double().reshape(1), torch.tensor([float(exact.absorbed(name))],
                                                                        dtype=torch.float64), scale,
                  where=f"absorbed at {name!r}")
    tol = tol if tol is not None else (DEFAULT_TOL if x.dtype == torch.float64 else 1e-4)
    return law_result("K5", "exact oracle", worst.deviation, tol, "every layer's marginal against exact enumeration" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)


def _exact_graph(m, model, x, target, rules, tol) -> LawResult:
    """K5 on a branched model: every layer's marginal and absorber against the exact DAG oracle
    (:class:`nrm_verify.references.exact_dag.ExactGraph`, fractions)."""
    try:
        graph = ExactGraph(model, x[:1], rules)
    except nrm.RelevanceDependentRuleError as e:
        return LawResult("K5", "exact oracle", None, detail=str(e))
    c = int(torch.as_tensor(target).reshape(-1)[0])
    exact, bottom = graph.marginals(c)
    scale = float(sum(abs(v) for v in exact[0]) + abs(bottom[0]))
    worst = Worst()
    for name in m.canonical_names():
        l = m.layer_index(name)
        want = torch.tensor([float(v) for v in exact[l]], dtype=torch.float64)
        worst.add(m.marginal(name)[0].double().reshape(-1), want, max(scale, 1.0), where=f"marginal of {name!r}")
        worst.add(m.absorbed(name)[0].double().reshape(1), torch.tensor([float(bottom[l])], dtype=torch.float64),
                  max(scale, 1.0), where=f"absorbed at {name!r}")
    tol = tol if tol is not None else (DEFAULT_TOL if x.dtype == torch.float64 else 1e-4)
    return law_result("K5", "exact oracle", worst.deviation, tol, "every layer's marginal against the exact DAG "
                      "oracle" + (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)
