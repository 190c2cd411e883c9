"""The symbolic layer: the sympy backend of the rule operations, symbolic networks, closed
forms of kernels, walks, marginals, events, joints and conditionals, and the worked
example of NRM-SPEC §6 derived symbolically."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from nrm.errors import NullEventError, ZeroOutputError
from nrm.events import OMEGA, At
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, Zero, ZPlus
from nrm_verify.symbolic import (
    SignDecider,
    SymbolicMeasure,
    SymbolicNetwork,
    SymbolicNetworkError,
    SympyScalars,
    sympy_ops,
)
from nrm_verify.symbolic.ops import ANY, NEGATIVE, NONNEGATIVE, POSITIVE, Fact, settle
from nrm_verify.symbolic.worked_example import derivations, null_conditional_raises

x = sp.Symbol("x", positive=True)
y = sp.Symbol("y", negative=True)
r = sp.Symbol("r", real=True)


# -- the backend ---------------------------------------------------------------------------------
def test_scalars_decide_what_the_assumptions_decide():
    s = SympyScalars()
    assert s.pos(x) == x and s.neg(x) == 0
    assert s.pos(y) == 0 and s.neg(y) == y
    assert s.sign(x) == 1 and s.sign(y) == -1
    assert s.sign(sp.Integer(0)) == 1  # s(0) = +1 (NRM-SPEC §2)
    assert s.is_zero(sp.Integer(0)) is True and s.is_zero(x + 1) is False
    assert s.pos(x * y) == 0 and s.pos(x**2 + r**2 + 1) == x**2 + r**2 + 1
    assert s.undecided == []


def test_an_undecided_case_stays_a_piecewise_and_is_recorded():
    s = SympyScalars()
    p = s.pos(r)
    assert isinstance(p, sp.Piecewise)
    assert p.subs(r, 3) == 3 and p.subs(r, -3) == 0
    sign = s.sign(r)
    assert sign.subs(r, 0) == 1 and sign.subs(r, -2) == -1
    cond = s.is_zero(r)
    assert cond == sp.Eq(r, 0)
    assert [op for op, _ in s.undecided] == ["pos", "sign", "is_zero"]


def test_assume_nonzero_answers_and_hands_over_the_assumption():
    seen = []
    s = SympyScalars(assume_nonzero=seen.append)
    assert s.is_zero(r + x) is False
    assert seen == [r + x] and s.undecided == []


def test_facts_decide_mixed_sums():
    # z = a w1 + b w2 with a, b > 0, w1 > 0 > w2, declared z > 0: then z + γ a w1 > 0 for γ ≥ 0
    a, b = sp.symbols("a b", positive=True)
    w1, w2 = sp.Symbol("w1", positive=True), sp.Symbol("w2", negative=True)
    z = sp.Symbol("z", positive=True)
    g = sp.Symbol("g", nonnegative=True)
    d = SignDecider([Fact(z, a * w1 + b * w2)])
    assert d.signs(a * w1 + b * w2) == POSITIVE
    assert d.signs((1 + g) * a * w1 + b * w2) == POSITIVE
    assert d.signs(a * w1 + b * w2 - 7) == ANY  # not implied: left undecided
    assert SignDecider().signs(a * w1 + b * w2) == ANY
    assert d.signs(-(a * w1 + b * w2) ** 2) == NEGATIVE
    assert d.signs(a * w1 / (a * w1 + b * w2)) == POSITIVE


def test_box_facts_make_zbox_terms_nonnegative():
    lo, xx, hi = sp.symbols("lo xx hi", real=True)
    w = sp.Symbol("w", positive=True)
    v = sp.Symbol("v", negative=True)
    d = SignDecider([Fact(sp.Dummy(positive=True), xx - lo), Fact(sp.Dummy(positive=True), hi - xx)])
    assert d.signs(xx * w - lo * w) == POSITIVE
    assert d.signs(xx * v - hi * v) == POSITIVE
    assert d.signs(xx * w - lo * w + xx * v - hi * v) == POSITIVE


def test_settle_resolves_decidable_piecewise_conditions():
    z = sp.Symbol("z", negative=True)
    e = sp.Piecewise((1, sp.Eq(z, 0)), (2, True))
    assert settle(e, SignDecider()) == 2


def test_object_ops_run_the_rules_own_code_on_sympy():
    ops = sympy_ops()
    w = np.array([x, y], dtype=object)
    rule = Gamma(sp.Symbol("g", nonnegative=True))
    rho = rule.rho(ops, w)
    g = rule.gamma
    assert list(rho) == [x + g * x, y]


# -- networks ------------------------------------------------------------------------------------
def test_dense_network_states_its_assumptions():
    net = SymbolicNetwork.dense([2, 2, 1], inputs="positive", pattern=["+-"], output_signs="-")
    text = "\n".join(net.assumptions())
    assert "x1, x2 > 0" in text
    assert "z1_1 > 0 (active)" in text and "z1_2 < 0 (inactive)" in text and "z2_1 < 0" in text
    assert "z1_1 = b1_1 + w1_11*x1 + w1_21*x2" in text
    assert net.activations[1][1] == 0  # an inactive unit's activation
    assert net.names == ["input", "h1", "output"]


def test_a_relu_unit_without_a_declared_state_is_an_error():
    with pytest.raises(SymbolicNetworkError, match="declare it active"):
        SymbolicNetwork.dense([2, 2, 1], pattern=None)


def test_numbers_fix_parameters_and_must_agree_with_the_pattern():
    net = SymbolicNetwork.dense([1, 1, 1], inputs=[2], weights=lambda l, j, k: 3 if l == 1 else "nonzero", biases=None)
    assert net.preactivations[1][0] == 6
    with pytest.raises(SymbolicNetworkError, match="declares it -0"):
        SymbolicNetwork.dense([1, 1, 1], inputs=[2], weights=lambda l, j, k: 3 if l == 1 else "nonzero", biases=None,
                              pattern=["-"])


def test_infeasible_patterns_are_reported():
    net = SymbolicNetwork.dense([1, 1, 1], inputs="positive", weights="+", biases="positive", pattern=["-"])
    import random

    with pytest.raises(SymbolicNetworkError, match="infeasible"):
        net.sample(random.Random(0), tries=200)


def test_conv_network_shares_taps_and_has_receptive_fields():
    net = SymbolicNetwork.conv1d(3, 2, 1)
    conv = net.layers[0]
    c1, c2 = conv.taps
    assert conv.weight[0, 0] == c1 and conv.weight[0, 1] == c2 and conv.weight[1, 1] == c1
    assert conv.mask.tolist() == [[True, True, False], [False, True, True]]
    m = SymbolicMeasure(net, Flat())
    assert m.q(1, 0, 0) == sp.Rational(1, 2) and m.q(1, 2, 0) == 0  # |in(k)| = 2 (L14's flat rule)
    assert m.q(1, 2, 1) == sp.Rational(1, 2)


# -- closed forms --------------------------------------------------------------------------------
def test_lrp0_kernels_walks_and_marginals_in_closed_form():
    net = SymbolicNetwork.dense([2, 2, 1])
    m = SymbolicMeasure(net, Zero())
    z1, z2 = net.preactivations[1]
    f = net.preactivations[2][0]
    x1, x2 = net.inputs
    W1, W2 = net.layers[0].weight, net.layers[1].weight
    assert m.q(1, 0, 0) == x1 * W1[0, 0] / z1
    assert m.q(1, None, 1) == net.layers[0].bias[1] / z2
    assert sp.simplify(m.walk([0, 0, 0]) - x1 * W1[0, 0] * W2[0, 0] / f) == 0
    assert sp.simplify(m.marginal(0)[0] - x1 * (W1[0, 0] * W2[0, 0] + W1[1, 0] * W2[0, 1]) / f) == 0
    assert m.kernel(1).shape == (3, 2)


def test_every_column_sums_to_one_after_expanding_the_definitions():
    net = SymbolicNetwork.dense([2, 2, 1], inputs="positive", weights="alternating", biases="alternating")
    for rule in (Zero(), Epsilon(sp.Symbol("e", positive=True)), ZPlus(), AlphaBeta(2, 1), WSquare(), Flat()):
        m = SymbolicMeasure(net, rule)
        for l in (1, 2):
            for k in range(net.widths()[l]):
                col = sum(m.q(l, j, k) for j in list(range(net.widths()[l - 1])) + [None])
                assert sp.cancel(net.expand(col) - 1) == 0, (rule, l, k)


def test_events_joints_and_conditionals():
    net = SymbolicNetwork.dense([2, 2, 1], biases=None)
    m = SymbolicMeasure(net, Zero())
    x0, h0 = At("input", index=[0]), At("h1", index=[0])
    assert sp.simplify(m(OMEGA) - 1) == 0
    assert sp.cancel(net.expand(m(x0 | h0) - m.enumerate(x0 | h0))) == 0  # equal once z is expanded
    J = m.joint("input", "h1")
    assert J.shape == (3, 3)
    assert sp.simplify(sum(J.row(0)) - m.marginal(0)[0]) == 0
    c = m.conditional(x0, given=h0)
    assert sp.simplify(net.expand(c - m.q(1, 0, 0))) == 0  # Markov: μ(X0 = x1 | X1 = h1) = q1(x1 | h1)
    assert any("≠ 0" in a for a in m.assumptions())  # μ(given) ≠ 0 is stated
    with pytest.raises(NullEventError):
        m.conditional(x0, given=At("input", index=[], absorber=True))  # no bias: ⊥0 has measure 0


def test_text_and_latex():
    m = SymbolicMeasure(SymbolicNetwork.dense([2, 2, 1]), Epsilon(sp.Symbol("eps", positive=True)))
    text = m.text()
    assert "q1(x1 | h1_1) = w1_11*x1/(eps + z1_1)" in text
    latex = dict(m.equations(latex=True))
    assert latex[r"q_{1}(x_{1} \mid h^{(1)}_{1})"] == r"\frac{w^{(1)}_{11} x_{1}}{\varepsilon + z^{(1)}_{1}}"


def test_a_zero_output_is_an_error():
    net = SymbolicNetwork.dense([1, 1], inputs=[0], weights=lambda l, j, k: 1, biases=None, output_signs=None)
    with pytest.raises(ZeroOutputError):
        SymbolicMeasure(net, Zero())


def test_undecided_rule_branches_are_listed_as_assumptions():
    net = SymbolicNetwork.dense([2, 2, 1])  # real weights: z⁺ cannot decide w⁺
    m = SymbolicMeasure(net, ZPlus())
    assert m.undecided and all(op == "pos" or op == "is_zero" for _, op, _ in m.undecided)
    assert any("kept as a Piecewise" in a for a in m.assumptions())
    assert m.q(1, 0, 0).has(sp.Piecewise)


# -- the worked example (NRM-SPEC §6) --------------------------------------------------------------
@pytest.mark.parametrize("quantity", derivations(), ids=lambda q: q.name)
def test_worked_example_symbolically(quantity):
    assert quantity.agrees, f"{quantity.name}: derived {quantity.closed_form} = {quantity.value}, spec {quantity.spec}"


def test_worked_example_null_conditional_raises():
    assert null_conditional_raises()


def test_worked_example_gradient_times_input_symbolically():
    from nrm_verify.symbolic import worked_example as ex

    net = ex.network()
    m = SymbolicMeasure(net, Zero())
    f = net.forward_from(0, net.inputs, 0)
    for j in range(2):
        grad_x = net.inputs[j] * sp.diff(f, net.inputs[j]) / f
        assert sp.cancel(net.expand(m.marginal(0)[j]) - grad_x) == 0
    assert net.evaluate(m.marginal(0)[0], ex.point(net)) == -1
    assert NONNEGATIVE  # the sign sets are importable constants
