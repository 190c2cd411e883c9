"""engine = exact DAG oracle = explicit reference at every layer: the check that every new
kind's tests make (NRM-SPEC "exact first"), written once."""

from __future__ import annotations

import contextlib
from fractions import Fraction

import numpy as np

import nrm
from nrm_verify.references.exact_dag import ExactGraph
from nrm_verify.references.explicit import reference_lrp


def compare_layers(m: nrm.Measure, exact, bottom, ref, tolerance: float = 1e-12) -> int:
    """Assert the oracle's L1 exactly (in fractions), then the engine's marginal and absorbed
    mass at every layer against the oracle's, and the reference's marginal where it has the
    layer, each to ``tolerance`` × (1 + Σ|m_input|); the number of layers the reference had."""
    assert sum(exact[0], Fraction(0)) + bottom[0] == 1  # L1, exactly
    scale = 1 + float(sum(abs(v) for v in exact[0]))
    compared = 0
    for name in m.layers:
        layer = m.layer_index(name)
        want = np.array([float(v) for v in exact[layer]])
        assert np.abs(m.marginal(name).reshape(-1).numpy() - want).max() <= tolerance * scale, name
        assert abs(float(m.absorbed(name)[0]) - float(bottom[layer])) <= tolerance * scale, name
        if name in ref.relevance:
            assert np.abs(ref.marginal(name).reshape(-1).numpy() - want).max() <= tolerance * scale, name
            compared += 1
    return compared


def seeded(model, seed: int = 1, scale: float = 0.7, statistics: bool = False):
    """``model`` in float64 and eval mode with every parameter drawn N(0, scale²) from ``seed``
    (and, with ``statistics``, every batch norm's running mean N(0, 0.1²) and variance in [0.5, 1.5))."""
    import torch

    g = torch.Generator().manual_seed(seed)
    model = model.to(torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale)
        for m in model.modules() if statistics else ():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
    return model.eval()


def agree(model, x, target, rules=None, check="full") -> nrm.Measure:
    """Explain, and :func:`compare_layers` against the exact oracle and the explicit reference; the measure."""
    m = nrm.explain(model, x, target=target, rules=rules, check=check)
    exact, bottom = ExactGraph(model, x, rules).marginals(target)
    compare_layers(m, exact, bottom, reference_lrp(model, x, target, rules))
    return m


def held_laws(model, x, target, rules=None) -> set:
    """Every law that applies to the case (``nrm_verify.properties.checks.laws_on_case``): assert
    that none is violated (the first two shown), and return the names of those that held."""
    from nrm_verify.properties.checks import laws_on_case

    results = laws_on_case(model, x, target, rules)
    failed = [(call, r) for call, r in results if r.holds is False]
    assert not failed, failed[:2]
    return {r.law for _, r in results if r.holds is True}


class NoReference:
    """In place of the explicit reference for :func:`compare_layers` where it reads nothing (a
    model that folds each sample into rows: the reference refuses folds by name)."""

    relevance: dict = {}


def twin_and_oracle(model, twin, x, target, rules=None) -> nrm.Measure:
    """Explain ``model`` and ``twin`` (the same function written another way: without folds, batch
    first): f and the input marginal equal (to rounding), and every layer of ``model`` equals the
    exact oracle's; the model's measure."""
    import torch

    m = nrm.explain(model, x, target=target, rules=rules, check="full")
    w = nrm.explain(twin, x, target=target, rules=rules)
    torch.testing.assert_close(m.f, w.f, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(m.marginal("input"), w.marginal("input"), rtol=1e-10, atol=1e-12)
    exact, bottom = ExactGraph(model, x, rules).marginals(target)
    compare_layers(m, exact, bottom, NoReference())
    return m


@contextlib.contextmanager
def product_split(**kwargs):
    """Products of activations read with ``Multiply(**kwargs)`` inside (``split="equal"``: AttnLRP's
    uniform rule), nrm's default kind again after."""
    from nrm.layers.products import Multiply

    nrm.layers.register(Multiply(**kwargs))
    try:
        yield
    finally:
        nrm.layers.register(Multiply())
