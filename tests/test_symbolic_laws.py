"""The proof machinery: what it proves, what it refutes (with counterexamples that satisfy
the assumptions), the failing step it shows, the case split, and a broken rule caught."""

from __future__ import annotations

import sympy as sp

from nrm.rules import Zero
from nrm_verify.laws import catalogue
from nrm_verify.laws.status import NOT_SETTLED, PROVED, REFUTED
from nrm_verify.symbolic import SymbolicNetwork
from nrm_verify.symbolic.catalog import ARCHITECTURES, CASES, RULES
from nrm_verify.symbolic.derive import SymbolicMeasure
from nrm_verify.symbolic.proof import check_identity
from nrm_verify.symbolic.prove import CASE_C, prove_rule, run_law, subject, subjects

ARCH = {a.key: a for a in ARCHITECTURES}
SPEC = {r.key: r for r in RULES}
LAW = {law.key: law for law in catalogue.symbolic_laws()}


def _run(law, arch, rule, case=CASES[0]):
    return run_law(LAW[law], subject(ARCH[arch], SPEC[rule], case))


def test_gradient_times_input_is_proved_for_lrp0_and_refuted_for_epsilon():
    (proof,) = _run("L9", "2-2-2-1", "zero")
    assert proof.status == PROVED and proof.expect == "holds" and len(proof.steps) == 6
    (proof,) = _run("L9", "conv", "epsilon", CASES[1])
    assert proof.status == REFUTED and proof.expect == "fails"
    step = proof.counterexample()
    s = subject(ARCH["conv"], SPEC["epsilon"], CASES[1])
    assert s.network.satisfies(step.point), "a counterexample must satisfy every assumption"
    assert step.lhs_value != step.rhs_value
    assert s.network.evaluate(s.m.marginal(0)[0], step.point) == step.lhs_value


def test_the_gamma_limits_and_their_boundary():
    proofs = _run("L12", "2-2-1", "gamma", CASE_C)
    inside = [p for p in proofs if "outside" not in p.case]
    outside = [p for p in proofs if "outside" in p.case]
    assert all(p.status == PROVED for p in inside)  # the hidden columns, where P_k > 0
    assert outside and outside[0].status == REFUTED and outside[0].counterexample().rhs_value == 0
    (proof,) = _run("L11", "3-2-2", "gamma", CASES[1])
    assert proof.status == PROVED


def test_alphabeta_is_zplus_only_for_nonnegative_inputs():
    proofs = _run("L13", "2-2-1", "alphabeta", CASES[1])  # case B: mixed-sign inputs
    by_label = {p.case: p for p in proofs}
    negative = next(p for label, p in by_label.items() if "negative input" in label)
    assert negative.status == REFUTED and negative.good
    assert any(p.status == PROVED for p in proofs)


def test_not_applicable_says_why():
    (proof,) = _run("L11", "2-2-1", "zero")
    assert proof.status == "not applicable" and "γ" in proof.note


def test_a_failing_identity_shows_its_residual_and_a_counterexample():
    net = SymbolicNetwork.dense([2, 2, 1], inputs="positive")
    m = SymbolicMeasure(net, Zero())
    step = check_identity("m0(x1) = q1(x1|h1_1)", m.marginal(0)[0], m.q(1, 0, 0), net)
    assert step.status == REFUTED and step.residual and net.satisfies(step.point)
    ok = check_identity("column sum", sum(m.q(1, j, 0) for j in (0, 1, None)), 1, net)
    assert ok.status == PROVED


def test_a_broken_rule_is_caught():
    class Leaky(Zero):
        """LRP-0 that forgets the bias share: columns no longer sum to one."""

        def column(self, ops, contributions, biases):
            scales, _ = super().column(ops, contributions, biases)
            return scales, ops.zeros_like(contributions[0])

    proofs = prove_rule(Leaky(), title="leaky", laws=["L1", "L7"], cases=CASES[:1])
    l1 = next(p for p in proofs if p.law == "L1")
    assert l1.status == REFUTED and l1.expect == "either"
    assert "Σ_j q1" in l1.counterexample().claim
    l7 = next(p for p in proofs if p.law == "L7")
    assert l7.status == REFUTED  # walks sum the layers below too: without normalized columns they do not sum to 1


def test_undecided_signs_split_the_case():
    eps = sp.Symbol("eps", positive=True)

    class Unsigned(Zero):
        """A rule whose stabilizer follows the sign of a mixed-sign sum (undecidable on its own)."""

        def stabilize(self, ops, d):
            return d + eps * ops.sign(d - 1)

    spec = SPEC["zero"].__class__("unsigned", "unsigned", lambda net: [Unsigned()] * net.depth, params=(eps,))
    parts = subjects(ARCH["2-2-1"], spec, CASES[0])
    assert len(parts) >= 2 and all(p.case.startswith("A") and len(p.case) > 1 for p in parts)
    assert all(not [u for u in p.m.undecided if u[1] == "sign"] for p in parts)


def test_every_symbolic_law_has_a_statement_and_a_check():
    laws = catalogue.symbolic_laws()
    assert [law.key for law in laws] == ["L1", "L2", "L3", "L4", "L5", "L6", "L7", "L9", "L10", "L11", "L12", "L13",
                                         "L14"]
    for law in laws:
        assert law.statement and law.symbolic_function().__doc__
    assert NOT_SETTLED == "not settled"
