"""engine = exact DAG oracle = explicit reference at every layer: the check that every new
kind's tests make (NRM-SPEC "exact first"), written once."""

from __future__ import annotations

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


def agree(model, x, target, rules=None, check="full") -> nrm.Measure:
    """Explain, and :func:`compare_layers` against the exact oracle and the explicit reference; the measure."""
    m = nrm.explain(model, x, target=target, rules=rules, check=check)
    exact, bottom = ExactGraph(model, x, rules).marginals(target)
    compare_layers(m, exact, bottom, reference_lrp(model, x, target, rules))
    return m
