"""examples/custom_rule_symbolic.py: a user's own rule gets its closed forms, its proofs
and counterexamples, its own identities, and agrees with the engine and the oracle."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "custom_rule_symbolic.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("custom_rule_symbolic", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_closed_forms(example):
    eq = dict(example.equations())
    expected = "w1_11*x1*(gamma + 1)/(b1_1*gamma + b1_1 + eps + gamma*w1_11*x1 + w1_11*x1 + w1_21*x2)"
    assert eq["q1(x1 | h1_1)"] == expected


def test_laws_proved_or_refuted(example):
    proofs = example.laws()
    status = {}
    for p in proofs:
        status.setdefault(p.law, set()).add(p.status)
    for law in ("L1", "L2", "L3", "L4", "L5", "L6", "L7", "L12"):
        assert status[law] == {"proved"}, law
    for law in ("L9", "L10", "L11"):  # the hybrid is not LRP-0, neither as ε → 0 nor at γ = 0
        assert status[law] == {"refuted"}, law
        ce = next(p.counterexample() for p in proofs if p.law == law)
        assert ce.point and ce.lhs_value != ce.rhs_value
    assert status["L13"] == {"not applicable"} and status["L14"] == {"not applicable"}
    assert {p.case for p in proofs} >= {"A", "B++", "B--"}  # case B split on the open signs


def test_own_identities(example):
    steps = example.own_identities()
    assert len(steps) == 18 and all(s.status == "proved" for s in steps)


def test_engine_and_oracle(example):
    assert example.engine_agrees(seed=3) < 1e-12


def test_main_prints(example, capsys):
    example.main()
    out = capsys.readouterr().out
    assert "L9" in out and "refuted" in out and "LRP-γ — 9 of 9 entries proved" in out
