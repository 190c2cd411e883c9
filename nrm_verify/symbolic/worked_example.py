"""The worked example of NRM-SPEC §6, derived symbolically and then evaluated.

The network is 2-2-1 with symbolic inputs and weights whose signs are those of the
example (x > 0; w1_22 = −1 and w2_21 = −1 negative, the other weights positive), both
hidden units active and f > 0. Every quantity is first derived as a closed form; only
then are the example's numbers substituted:

    x = (1, 2),  h1 = ReLU(x1 + x2) = 3,  h2 = ReLU(3 x1 − x2) = 1,  y = h1 − h2 = 2.

:func:`derivations` returns each quantity with its closed form, its value at the point
and the value the spec states, so that a test (and the proof report) can compare them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy as sp

from nrm.errors import NullEventError
from nrm.events import At
from nrm.rules import Epsilon, Gamma, Zero, ZPlus
from nrm_verify.symbolic.catalog import EPS, GAMMA
from nrm_verify.symbolic.derive import SymbolicMeasure
from nrm_verify.symbolic.network import SymbolicNetwork

SIGNS = {(1, 0, 0): "+", (1, 1, 0): "+", (1, 0, 1): "+", (1, 1, 1): "-", (2, 0, 0): "+", (2, 1, 0): "-"}
WEIGHTS = {"w1_11": 1, "w1_21": 1, "w1_12": 3, "w1_22": -1, "w2_11": 1, "w2_21": -1}
INPUTS = {"x1": 1, "x2": 2}


@dataclass
class Quantity:
    """One number of §6: its name, closed form, value at the example's point, spec value."""

    name: str
    closed_form: sp.Expr
    value: sp.Expr
    spec: Fraction
    latex: str = ""

    @property
    def agrees(self) -> bool:
        return sp.Rational(self.spec.numerator, self.spec.denominator) == self.value


def network(biases: bool = False) -> SymbolicNetwork:
    """The example's network with symbolic parameters (``biases=True``: real b's)."""
    return SymbolicNetwork.dense([2, 2, 1], inputs="positive", weights=lambda l, j, k: SIGNS[(l, j, k)],
                                 biases="real" if biases else None, pattern="active", output_signs="+")


def point(net: SymbolicNetwork, **extra) -> dict:
    """The example's numbers as a point of the network's symbols (plus ``extra``)."""
    values = {**WEIGHTS, **INPUTS, **extra}
    return {s: sp.Rational(values[str(s)]) for s in net.base_symbols()}


def derivations() -> list[Quantity]:
    """Every number of NRM-SPEC §6, derived symbolically first."""
    out: list[Quantity] = []
    F = Fraction

    def add(name, m, expr, pt, spec):
        closed = sp.factor(sp.together(sp.sympify(expr)))
        out.append(Quantity(name, closed, m.network.evaluate(expr, pt), F(spec), m.latex(closed)))

    net = network()
    pt = point(net)
    m = SymbolicMeasure(net, Zero())
    for (j, k, name), v in zip([(0, 0, "q(h1|y)"), (1, 0, "q(h2|y)")], ["3/2", "-1/2"]):
        add(name, m, m.q(2, j, k), pt, v)
    for (j, k), name, v in [((0, 0), "q(x1|h1)", "1/3"), ((1, 0), "q(x2|h1)", "2/3"), ((0, 1), "q(x1|h2)", "3"),
                            ((1, 1), "q(x2|h2)", "-2")]:
        add(name, m, m.q(1, j, k), pt, v)
    for path, name, v in [((0, 0, 0), "μ(x1, h1, y)", "1/2"), ((1, 0, 0), "μ(x2, h1, y)", "1"),
                          ((0, 1, 0), "μ(x1, h2, y)", "-3/2"), ((1, 1, 0), "μ(x2, h2, y)", "1")]:
        add(name, m, m.walk(path), pt, v)
    add("Σ walks", m, sum(m.walks().values()), pt, "1")
    for j, v in enumerate(["3/2", "-1/2"]):
        add(f"m1(h{j + 1})", m, m.marginal(1)[j], pt, v)
    for j, v in enumerate(["-1", "2"]):
        add(f"m0(x{j + 1})", m, m.marginal(0)[j], pt, v)
    x1, h1, h2 = At("input", index=[0]), At("h1", index=[0]), At("h1", index=[1])
    add("μ(X0 = x1 | X1 = h2)", m, m.conditional(x1, h2), pt, "3")
    add("μ(X1 = h2 | X0 = x1)", m, m.conditional(h2, x1), pt, "3/2")
    add("μ({X0 = x1} ∪ {X1 = h1})", m, m.measure(x1 | h1), pt, "0")

    bnet = network(biases=True)
    bpt = point(bnet, b1_1=1, b1_2=0, b2_1=0)
    bm = SymbolicMeasure(bnet, Zero())
    for j, v in enumerate(["4/3", "-1/3", "0"]):
        add(f"bias: m1({['h1', 'h2', '⊥'][j]})", bm, bm.full_marginal(1)[j], bpt, v)
    for j, v in enumerate(["-2/3", "4/3", "1/3"]):
        add(f"bias: m0({['x1', 'x2', '⊥'][j]})", bm, bm.full_marginal(0)[j], bpt, v)

    em = SymbolicMeasure(net, [Zero(), Epsilon(EPS)])
    ept = {**pt, EPS: sp.Rational(1, 10)}
    for j, v in enumerate(["-20/21", "40/21", "1/21"]):
        add(f"ε = 1/10 at the output: m0({['x1', 'x2', '⊥'][j]})", em, em.full_marginal(0)[j], ept, v)

    gm = SymbolicMeasure(net, Gamma(GAMMA))
    gpt = {**pt, GAMMA: sp.Integer(1)}
    for j, v in enumerate(["1/10", "9/10"]):
        add(f"γ = 1: m0(x{j + 1})", gm, gm.marginal(0)[j], gpt, v)

    zm = SymbolicMeasure(net, ZPlus())
    for j, v in enumerate(["1", "0"]):
        add(f"z⁺: m1(h{j + 1})", zm, zm.marginal(1)[j], pt, v)
    for j, v in enumerate(["1/3", "2/3"]):
        add(f"z⁺: m0(x{j + 1})", zm, zm.marginal(0)[j], pt, v)
    return out


def null_conditional_raises() -> bool:
    """Conditioning on {X0 = x1} ∪ {X1 = h1} at the example's point raises
    :class:`nrm.errors.NullEventError` (its measure is 0 there)."""

    net = network()
    m = SymbolicMeasure(net, Zero()).at(point(net))
    try:
        m.conditional(At("h1", index=[1]), At("input", index=[0]) | At("h1", index=[0]))
    except NullEventError:
        return True
    return False
