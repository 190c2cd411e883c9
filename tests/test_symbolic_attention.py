"""The symbolic attention block (issue 14, item 2): the kernels derived in sympy are nrm's
kernels entry by entry (exactly, against the exact DAG oracle) and give the oracle's marginals
exactly and the engine's to rounding; L1, L2, L7 are proved; every refutation's point is a
counterexample when evaluated exactly, independently of the proof code."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

from nrm.rules import Zero
from nrm_verify.laws.status import PROVED, REFUTED
from nrm_verify.symbolic.attention import KINDS, THETA, TORCH_NAMES, AttentionBlock, base_symbols, forward, signs_at
from nrm_verify.symbolic.attention_proofs import EntryMeasure, block, identity_step, proofs, render_section, witness
from nrm_verify.symbolic.crosscheck import attention_kernel_differences, attention_oracle
from nrm_verify.symbolic.prove import REPORT

pytestmark = pytest.mark.usefixtures("single_thread")


def _rationals(values: dict) -> dict:
    return {k: sp.Rational(v.numerator, v.denominator) if isinstance(v, Fraction) else v for k, v in values.items()}


SETTINGS = [("A", None, Fraction(1, 2)), ("B", None, Fraction(1, 2)), ("B", None, Fraction(0)),
            ("B", "zero", Fraction(1, 2)), ("A", "zero", Fraction(1, 3))]


@pytest.mark.parametrize("case,rules,theta", SETTINGS)
def test_derived_kernels_are_nrms_kernels_and_give_its_marginals(case, rules, theta):
    point = {**witness(case), "theta": theta}
    b = block(case) if rules is None else AttentionBlock(signs_at(point), {k: Zero() for k in KINDS})
    graph, engine, values = attention_oracle(b, point)
    assert attention_kernel_differences(b, graph, values) == []
    marginals = b.marginals_at(_rationals(values))
    exact, bottom = graph.marginals(0)
    assert sum(marginals[0]) == 1  # L1 at the input, exactly
    for l, name in [(0, "input"), (1, "q"), (1, "k"), (1, "v"), (2, "matmul"), (3, "mul"), (4, "softmax"),
                    (5, "matmul_1"), (6, "ln")]:
        start = {"k": 4, "v": 8}.get(name, 0)
        mine = marginals[l][start:start + 4]
        assert mine == [sp.Rational(e.numerator, e.denominator) for e in exact[graph.layer(name)]], name
        got = engine.marginal(name).reshape(-1).numpy()
        assert np.abs(got - np.array([float(v) for v in mine])).max() <= 1e-12 * (1 + float(sum(map(abs, mine)))), name


def test_a_wrong_kernel_is_caught_by_the_comparison():
    b = block("B")
    graph, _, values = attention_oracle(b, {**witness("B"), "theta": Fraction(1, 2)})
    other = AttentionBlock(b.signs, {"softmax": b.rules["ln"]})  # LRP-ε on the softmax: not what nrm was given
    assert any(d.startswith("softmax") for d in attention_kernel_differences(other, graph, values))


def test_the_laws_are_proved_and_the_refutations_refuted():
    by_law = {}
    for p in proofs():
        assert p.good, (p.law, p.case, p.status, [(s.claim, s.residual) for s in p.steps if s.status != PROVED])
        by_law.setdefault(p.law, []).append(p.status)
    for law in ("kernels", "L1", "L2", "L7"):
        assert by_law[law] == [PROVED, PROVED]
    assert by_law["L9 (general form)"] == [PROVED] and by_law["L9"] == [REFUTED]
    assert by_law["q ≥ 0"] == [REFUTED] and by_law["softmax shift, ⊥"] == [PROVED]
    assert by_law["softmax shift, real shares"] == [REFUTED]
    l1 = next(p for p in proofs() if p.law == "L1")
    assert sum("Σ_j q(j |" in s.claim for s in l1.steps) == sum(len(layer) for layer in block("A").layers[1:])
    assert all(s.status == PROVED for s in l1.steps)


def test_a_column_identity_needs_its_definition_and_a_broken_kernel_breaks_l1():
    b = block("A")
    Q, col = b.kernels[5], b.columns[5][0]  # O11's column
    assert identity_step("without the definition", sum(Q[:, 0]), 1).status != PROVED
    assert identity_step("with it", sum(Q[:, 0]).xreplace({col.z: b.definitions[col.z]}), 1).status == PROVED
    em = EntryMeasure(b)  # q(⊥ | k) an indeterminate of its own: L1 is no longer implied
    assert sum(em.marginal(0), em.ring.zero) != em.ring.one
    norm = EntryMeasure(b, normalized=True)
    assert sum(norm.marginal(0), norm.ring.zero) == norm.ring.one and len(norm.walks()) > 500


def _refuted(law: str):
    p = next(p for p in proofs() if p.law == law)
    return [s for s in p.steps if s.status == REFUTED]


def test_negative_entries_are_negative_at_their_rational_points():
    steps = _refuted("q ≥ 0")
    assert {s.claim.split(":")[0] for s in steps} == {"q", "scores", "softmax", "values", "ln"}
    for s in steps:
        assert all(isinstance(v, Fraction) for v in s.point.values())
        entry = sp.sympify(s.claim.split(") = ", 1)[1], locals={k: v for k, v in block("B").symbols.items()})
        values = forward(s.point)
        value = entry.xreplace({sym: values[name] for name, sym in block("B").symbols.items() if name in values})
        assert sp.simplify(value - s.lhs_value) == 0
        assert value.is_negative or sp.N(value, 60) < -sp.Float("1e-10")


def test_l9_fails_for_the_product_by_a_factor_theta():
    (step,) = _refuted("L9")
    v = {str(k): Fraction(int(x.p), int(x.q)) for k, x in step.point.items()}
    O = {(j, p): sum(v[f"A{j}{k}"] * v[f"V{k}{p}"] for k in (1, 2)) for j in (1, 2) for p in (1, 2)}
    f = sum(v[f"r{j}{p}"] * O[j, p] for j, p in O) + v["c"]
    grad_x_input = v["A11"] * sum(v[f"V1{p}"] * v[f"r1{p}"] for p in (1, 2)) / f  # A11 ∂f/∂A11 / f
    lrp0 = sum(v["theta"] * v["A11"] * v[f"V1{p}"] / O[1, p] * v[f"r1{p}"] * O[1, p] / f for p in (1, 2))
    assert lrp0 != grad_x_input and lrp0 == v["theta"] * grad_x_input
    assert (sp.Rational(lrp0.numerator, lrp0.denominator), sp.Rational(grad_x_input.numerator,
                                                                        grad_x_input.denominator)) == \
        (step.lhs_value, step.rhs_value)


def test_the_softmax_kernel_moves_under_a_shift_and_its_absorber_does_not():
    (step,) = _refuted("softmax shift, real shares")
    point = {str(k): v for k, v in step.point.items()}
    x1, x2, c = point["x1"], point["x2"], point["c"]
    s1 = sp.exp(x1) / (sp.exp(x1) + sp.exp(x2))
    assert sp.simplify(((x1 + c) * (1 - s1)) - (x1 * (1 - s1))) != 0
    bot = [1 - y1 + s1 * y1 + (1 - s1) * y2 for y1, y2 in ((x1, x2), (x1 + c, x2 + c))]
    assert sp.simplify(bot[0] - bot[1]) == 0


def test_the_witness_points_satisfy_their_cases():
    for case in ("A", "B"):
        signs = signs_at(witness(case))
        assert signs == block(case).signs
        assert set(witness(case)) == {k for k in base_symbols() if not k.startswith("sigma")}
    assert all(v > 0 for v in block("A").signs.values()) and block("B").signs["f"] < 0
    assert set(TORCH_NAMES) == set(KINDS) and THETA in block("A").kernels[5][0, 0].free_symbols


def test_the_report_shows_the_block():
    assert "\n".join(render_section(proofs())) in REPORT.read_text(encoding="utf-8")


def test_the_proof_file_prints_every_step(capsys):
    from nrm_verify.symbolic.attention_proofs import main

    assert main(["--show"]) == 0
    out = capsys.readouterr().out
    assert "L7 | A" in out and "refuted: L9: m(A11)" in out and "NOT AS EXPECTED" not in out
    assert out.count("    proved: ") == sum(len(p.steps) for p in proofs()) - sum(
        s.status == REFUTED for p in proofs() for s in p.steps)
