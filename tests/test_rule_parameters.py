"""Rule parameters are checked when a rule is built (issue 12, item 3): NaN, infinity, a
string, a bool, an empty box — each a :class:`nrm.errors.RuleParameterError` whose message
names the parameter and says what to give instead. Symbolic (sympy) parameters, exact
fractions and tensors keep working."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
import torch

import nrm
from nrm.errors import RuleParameterError
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

NAN, INF = math.nan, math.inf

BAD = [
    # (id, build, words the message must hold)
    ("epsilon-nan", lambda: Epsilon(NAN), ("Epsilon", "epsilon", "finite", "nan", "Epsilon(1e-6)")),
    ("epsilon-inf", lambda: Epsilon(INF), ("epsilon", "finite", "inf")),
    ("epsilon-string", lambda: Epsilon("0.1"), ("epsilon", "real number", "str", "'0.1'")),
    ("epsilon-bool", lambda: Epsilon(True), ("epsilon", "True and False are not numbers")),
    ("epsilon-none", lambda: Epsilon(None), ("epsilon", "real number", "NoneType")),
    ("epsilon-complex", lambda: Epsilon(1j), ("epsilon", "real number", "complex")),
    ("epsilon-list", lambda: Epsilon([0.1]), ("epsilon", "real number", "list")),
    ("epsilon-nan-tensor", lambda: Epsilon(torch.tensor(NAN)), ("epsilon", "finite", "every entry")),
    ("epsilon-sympy-nan", lambda: Epsilon(sp.nan), ("epsilon", "finite")),
    ("epsilon-sympy-infinity", lambda: Epsilon(sp.oo), ("epsilon", "finite")),
    ("gamma-nan", lambda: Gamma(NAN), ("Gamma", "gamma", "finite", "Gamma(0.25)")),
    ("gamma-inf", lambda: Gamma(INF), ("gamma", "finite", "inf")),
    ("gamma-string", lambda: Gamma("0.25"), ("gamma", "str")),
    ("gamma-negative-sympy", lambda: Gamma(-sp.Rational(1, 2)), ("gamma", ">= 0", "-1/2")),
    ("gamma-modify-bias-not-a-bool", lambda: Gamma(0.25, modify_bias="no"), ("modify_bias", "True or False")),
    ("alphabeta-nan", lambda: AlphaBeta(NAN, NAN), ("AlphaBeta", "alpha", "finite", "AlphaBeta(2, 1)")),
    ("alphabeta-inf", lambda: AlphaBeta(INF, INF), ("alpha", "finite", "inf")),
    ("alphabeta-beta-inf", lambda: AlphaBeta(2, INF), ("beta", "finite")),
    ("alphabeta-string", lambda: AlphaBeta("2", "1"), ("alpha", "str")),
    ("stabilizer-nan", lambda: ZPlus(stabilizer=NAN), ("ZPlus", "stabilizer", "finite")),
    ("stabilizer-inf", lambda: Gamma(0.25, stabilizer=INF), ("Gamma", "stabilizer", "finite")),
    ("stabilizer-string", lambda: WSquare(stabilizer="1e-9"), ("WSquare", "stabilizer", "str")),
    ("stabilizer-sign-not-a-string", lambda: Flat(stabilizer_sign=1), ("stabilizer_sign", "'signed'")),
    ("zbox-nan", lambda: ZBox(NAN, NAN), ("ZBox", "low", "finite", "ZBox(-1.0, 1.0)")),
    ("zbox-infinite", lambda: ZBox(-INF, INF), ("ZBox", "low", "finite")),
    ("zbox-string", lambda: ZBox("a", 1.0), ("ZBox", "low", "str")),
    ("zbox-nan-entry", lambda: ZBox(0.0, [1.0, NAN]), ("ZBox", "high", "finite")),
    ("zbox-nan-tensor", lambda: ZBox(torch.tensor([0.0, NAN]), 1.0), ("ZBox", "low", "finite")),
    ("zbox-empty-tensor-box", lambda: ZBox(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0])),
     ("low must be <= high", "index (1,)", "1 entries")),
    ("zbox-empty-array-box", lambda: ZBox(np.zeros((2, 2)), -np.ones((2, 2))), ("low must be <= high", "4 entries")),
    ("zbox-shapes-do-not-broadcast", lambda: ZBox([0.0, 1.0], [2.0, 3.0, 4.0]), ("broadcast", "(2,)", "(3,)")),
    ("zbox-complex-tensor", lambda: ZBox(torch.zeros(2, dtype=torch.complex64), 1.0), ("low", "real numbers")),
]


@pytest.mark.parametrize("build, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_parameters_are_refused_with_advice(build, words):
    with pytest.raises(RuleParameterError) as info:
        build()
    assert isinstance(info.value, nrm.NRMError) and isinstance(info.value, ValueError)
    message = str(info.value)
    for w in words:
        assert w in message, (w, message)


GOOD = [
    ("symbolic-epsilon", lambda: Epsilon(sp.Symbol("eps", positive=True))),
    ("symbolic-alphabeta", lambda: AlphaBeta(1 + sp.Symbol("b", nonnegative=True), sp.Symbol("b", nonnegative=True))),
    ("symbolic-number", lambda: Epsilon(sp.pi)),
    ("fraction", lambda: Epsilon(Fraction(1, 3))),
    ("numpy-float32", lambda: Epsilon(np.float32(0.1))),
    ("numpy-int", lambda: Gamma(np.int64(1))),
    ("tensor-epsilon", lambda: Epsilon(torch.tensor(0.1))),
    ("zero-epsilon", lambda: Epsilon(0)),
    ("tensor-box", lambda: ZBox(torch.tensor([-1.0, 0.5]), 1.0)),
    ("list-box", lambda: ZBox([0.0, 1.0], [2.0])),
    ("fraction-box", lambda: ZBox(Fraction(-1), Fraction(1))),
    ("symbolic-box", lambda: ZBox(np.array([sp.Symbol("l")], dtype=object), np.array([sp.Symbol("h")], dtype=object))),
    ("flat-box", lambda: ZBox(2.0, 2.0)),
]


@pytest.mark.parametrize("build", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_numbers_fractions_tensors_and_sympy_still_work(build):
    rule = build()
    assert rule.shares()


def test_a_zbox_tensor_bound_that_fits_explains(single_thread):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1)).double().eval()
    x = torch.tensor([[0.25, 0.5]], dtype=torch.float64)
    m = nrm.explain(model, x, 0, rules=nrm.RuleMap(Epsilon(1e-6), first=ZBox([0.0, 0.0], torch.tensor([1.0, 1.0]))))
    total = m.marginal("input").sum() + m.absorbed("input").sum()
    assert torch.isfinite(total) and abs(float(total) - 1.0) < 1e-12
