"""The symbolic evaluation of the rules agrees with the torch engine (float64, 1e-9) and
with the exact oracle (exactly) at seeded random rational points, for every built-in rule
on dense and convolutional networks, active and inactive units, positive and negative
outputs. The points are dyadic, so that the float64 model holds them exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sympy as sp

from nrm.rules import BUILTIN_RULES, AlphaBeta, Flat, WSquare, Zero, ZPlus
from nrm_verify.symbolic import SymbolicNetwork
from nrm_verify.symbolic.catalog import ARCHITECTURES, CASES, RULES
from nrm_verify.symbolic.crosscheck import crosscheck, numeric_rule
from nrm_verify.symbolic.derive import SymbolicMeasure
from nrm_verify.symbolic.network import DYADIC_MAGNITUDES
from nrm_verify.symbolic.prove import subject

TOL = 1e-9


def _agree(rows, what):
    for r in rows:
        assert r.oracle_agrees, f"{what}: {r.name} closed form {r.symbolic} ≠ oracle {r.oracle}"
        scale = max(1.0, abs(float(r.symbolic)))
        assert r.engine_error() <= TOL * scale, f"{what}: {r.name} closed form {r.symbolic} vs engine {r.engine}"


def test_the_catalogue_covers_every_builtin_rule():
    covered = set()
    for spec in RULES:
        net = ARCHITECTURES[0].build(spec, CASES[0])
        covered |= {type(r) for r in spec.rules(net)}
    assert covered == set(BUILTIN_RULES)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.key)
@pytest.mark.parametrize("spec", RULES, ids=lambda r: r.key)
def test_closed_forms_equal_engine_and_oracle(arch, spec):
    for case in CASES:
        s = subject(arch, spec, case)
        for seed in (1, 2):
            point = s.network.sample(random.Random(seed), extra=spec.params, magnitudes=DYADIC_MAGNITUDES)
            ev = s.events()
            rows = crosscheck(s.m, point, events=[(k, ev[k]) for k in ("A", "B", "C", "Cᶜ")])
            assert len(rows) > 6
            _agree(rows, f"{arch.key} {spec.key} case {case.key} seed {seed}")


@pytest.mark.parametrize("rule", [Zero(), ZPlus(), AlphaBeta(2, 1), WSquare(bias=True), Flat()], ids=repr)
def test_the_very_same_rule_object_runs_in_both(rule):
    """A rule without symbolic parameters is handed to the engine as the same object."""
    net = SymbolicNetwork.dense([3, 2, 2], inputs="positive", weights="alternating", biases="alternating",
                                pattern=["+-"], output_signs="+-")
    m = SymbolicMeasure(net, rule)
    point = net.sample(random.Random(3), magnitudes=DYADIC_MAGNITUDES)
    assert numeric_rule(rule, point, net.input_shape) is rule
    _agree(crosscheck(m, point), repr(rule))


def test_piecewise_closed_forms_also_agree():
    """Free real weights: z⁺ and αβ keep their branches as Piecewise; evaluated at points,
    the branches the numbers select agree with the engine."""
    net = SymbolicNetwork.dense([2, 2, 1], inputs="positive", pattern="active")
    for rule in (ZPlus(), AlphaBeta(2, 1)):
        m = SymbolicMeasure(net, rule)
        assert any(m.q(1, j, k).has(sp.Piecewise) for j in range(3) for k in range(2))
        for seed in range(4):
            point = net.sample(random.Random(seed), magnitudes=DYADIC_MAGNITUDES)
            _agree(crosscheck(m, point, oracle=False), f"{rule!r} seed {seed}")


def test_numeric_rule_replaces_symbolic_parameters():
    from nrm.rules import Epsilon, ZBox

    e = sp.Symbol("e", positive=True)
    rule = numeric_rule(Epsilon(e), {e: sp.Rational(1, 8)}, (2,))
    assert rule.epsilon == 0.125 and rule.stabilizer == 0.125
    lo, hi = sp.symbols("lo hi")
    box = numeric_rule(ZBox(np.array([lo, lo], dtype=object), np.array([hi, hi], dtype=object)),
                       {lo: sp.Integer(-1), hi: sp.Integer(2)}, (1, 2))
    assert tuple(box.low.shape) == (1, 2) and float(box.high[0, 1]) == 2.0
