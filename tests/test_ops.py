"""The ops vocabulary on every backend (issue 12, item 16): ``abs``, ``sqrt`` and ``pow``
on torch tensors, on exact fractions (exact where the value is rational, a named error
where it is not) and on sympy expressions (decided from the assumptions, else kept as a
Piecewise)."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest
import sympy as sp
import torch

import nrm
from nrm.ops import FRACTIONS, TORCH, InexactError
from nrm_verify.symbolic.ops import sympy_ops


def objects(*values):
    return np.array(values, dtype=object)


def test_torch():
    x = torch.tensor([-2.25, 0.0, 4.0], dtype=torch.float64)
    assert TORCH.abs(x).tolist() == [2.25, 0.0, 4.0]
    assert TORCH.sqrt(TORCH.abs(x)).tolist() == [1.5, 0.0, 2.0]
    assert TORCH.pow(x, 2).tolist() == [5.0625, 0.0, 16.0]
    assert TORCH.pow(TORCH.abs(x), 0.5).tolist() == [1.5, 0.0, 2.0]
    assert TORCH.sqrt(x).isnan()[0]  # the domain is x >= 0, as documented


def test_fractions_are_exact_where_the_value_is_rational():
    x = objects(F(-9, 4), F(0), F(16, 25))
    assert list(FRACTIONS.abs(x)) == [F(9, 4), 0, F(16, 25)]
    assert list(FRACTIONS.sqrt(FRACTIONS.abs(x))) == [F(3, 2), 0, F(4, 5)]
    assert list(FRACTIONS.pow(x, 3)) == [F(-729, 64), 0, F(4096, 15625)]
    assert list(FRACTIONS.pow(objects(F(8, 27)), F(2, 3))) == [F(4, 9)]
    assert list(FRACTIONS.pow(objects(F(2)), -2)) == [F(1, 4)]
    big = F(3 ** 400, 7 ** 200)
    assert list(FRACTIONS.sqrt(objects(big * big))) == [big]
    assert all(isinstance(v, F) for v in FRACTIONS.sqrt(objects(F(1, 4))))


@pytest.mark.parametrize("call, words", [
    (lambda: FRACTIONS.sqrt(objects(F(2))), ("irrational", "exact backend")),
    (lambda: FRACTIONS.sqrt(objects(F(-4))), ("negative", "ops.abs")),
    (lambda: FRACTIONS.pow(objects(F(0)), -1), ("0 ** -1", "non-zero")),
    (lambda: FRACTIONS.pow(objects(F(3)), 0.5), ("irrational",)),
])
def test_fractions_refuse_what_they_cannot_represent(call, words):
    with pytest.raises(InexactError) as info:
        call()
    assert isinstance(info.value, nrm.NRMError) and isinstance(info.value, ArithmeticError)
    for w in words:
        assert w in str(info.value)


def test_sympy_decides_from_the_assumptions_and_keeps_the_rest():
    ops = sympy_ops()
    p, n, x = sp.Symbol("p", positive=True), sp.Symbol("n", negative=True), sp.Symbol("x", real=True)
    assert list(ops.abs(objects(p, n, sp.Rational(-3, 2)))) == [p, -n, sp.Rational(3, 2)]
    assert ops.scalars.undecided == []
    (kept,) = ops.abs(objects(x))
    assert isinstance(kept, sp.Piecewise) and ops.scalars.undecided == [("abs", x)]
    assert kept.subs(x, -2) == 2 and kept.subs(x, 3) == 3
    assert list(ops.sqrt(objects(p ** 2, 4))) == [p, 2]
    assert list(ops.pow(objects(p, 2), sp.Rational(1, 2))) == [sp.sqrt(p), sp.sqrt(2)]
    assert list(ops.pow(objects(x), 2)) == [x ** 2]


def test_one_rule_agrees_on_every_backend():
    """A rule written with abs/sqrt/pow: q ∝ sqrt(|w|)^4 = w², the w² rule, on all three."""
    from nrm.rules import Part, Rule, Share, ones

    class Rooted(Rule):
        def shares(self):
            return (Share((Part(ones, lambda ops, w: ops.pow(ops.sqrt(ops.abs(w)), 4)),), None),)

    w = [F(1, 4), F(-9, 4), F(1)]
    exact = FRACTIONS.pow(FRACTIONS.sqrt(FRACTIONS.abs(objects(*w))), 4)
    assert list(exact) == [v * v for v in w]
    tensor = TORCH.pow(TORCH.sqrt(TORCH.abs(torch.tensor([float(v) for v in w], dtype=torch.float64))), 4)
    assert tensor.tolist() == [float(v * v) for v in w]
    symbolic = sympy_ops().pow(sympy_ops().sqrt(sympy_ops().abs(objects(*[sp.Rational(v.numerator, v.denominator)
                                                                         for v in w]))), 4)
    assert [sp.Rational(v.numerator, v.denominator) ** 2 for v in w] == list(symbolic)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).double().eval()
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    ours = nrm.explain(model, x, 0, rules=Rooted()).marginal("input")
    w2 = nrm.explain(model, x, 0, rules=nrm.rules.WSquare()).marginal("input")
    assert torch.allclose(ours, w2, rtol=1e-12, atol=1e-15)
