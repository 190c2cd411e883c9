"""A rule of your own, derived and proved symbolically.

The rule below — a *sign-aware γ–ε hybrid* — is new: it boosts positive weights like LRP-γ
and stabilizes the denominator like LRP-ε, with the stabilizer following the sign of the
denominator (s(0) = +1):

    ρ_γ(w) = w + γ w⁺,   D_k = Σ_j a_j ρ_γ(w_jk) + ρ_γ(b_k),
    q(j | k) = a_j ρ_γ(w_jk) / (D_k + ε s(D_k)),   q(⊥ | k) = 1 − Σ_j q(j | k).

It is written once, against the backend-neutral operations of ``nrm.ops`` (``ops.pos``),
exactly like the built-in rules, so the same object runs in the torch engine, in the exact
oracle and in the symbolic layer. Here it gets

1. its closed-form kernels on a 2-2-1 network (text and LaTeX);
2. every law of NRM-SPEC §4, proved or refuted with a rational counterexample;
3. two identities of its own: ε → 0 gives LRP-γ, and γ = 0 gives LRP-ε;
4. a cross-check of its closed forms against the torch engine and the exact oracle.

    python examples/custom_rule_symbolic.py
"""

from __future__ import annotations

import random

import sympy as sp

from nrm.rules import Epsilon, Gamma, Part, Rule, Share, identity
from nrm_verify.symbolic import SymbolicNetwork
from nrm_verify.symbolic.crosscheck import crosscheck
from nrm_verify.symbolic.derive import SymbolicMeasure
from nrm_verify.symbolic.network import DYADIC_MAGNITUDES
from nrm_verify.symbolic.proof import check_identity, point_text
from nrm_verify.symbolic.prove import prove_rule


class GammaEpsilon(Rule):
    """Sign-aware γ–ε hybrid.

    Definition::

        q(j | k) = a_j ρ_γ(w_jk) / (D_k + ε s(D_k)),   D_k = Σ_j a_j ρ_γ(w_jk) + ρ_γ(b_k)

    Assumes a ≥ 0. γ = 0 gives LRP-ε, ε = 0 gives LRP-γ.
    """

    requires_nonnegative_input = True

    def __init__(self, gamma, epsilon):
        super().__init__(stabilizer=epsilon)  # D ↦ D + ε s(D): the base class's signed stabilizer
        self.gamma = gamma
        self.epsilon = epsilon

    def parameters(self):
        return {"gamma": self.gamma, "epsilon": self.epsilon}

    def rho(self, ops, w):
        """ρ_γ(w) = w + γ w⁺."""
        return w + self.gamma * ops.pos(w)

    def shares(self):
        return (Share((Part(identity, self.rho),), self.rho),)


GAMMA = sp.Symbol("gamma", nonnegative=True)
EPS = sp.Symbol("eps", positive=True)
RULE = GammaEpsilon(GAMMA, EPS)


def network() -> SymbolicNetwork:
    """2-2-1, positive inputs, a sign pattern of the weights (the rule branches on w⁺),
    both hidden units active, f > 0."""
    signs = {(1, 0, 0): "+", (1, 1, 0): "-", (1, 0, 1): "-", (1, 1, 1): "+", (2, 0, 0): "+", (2, 1, 0): "-"}
    return SymbolicNetwork.dense([2, 2, 1], inputs="positive", weights=lambda l, j, k: signs[(l, j, k)],
                                 biases="positive", pattern="active", output_signs="+")


def equations() -> list[tuple[str, str]]:
    """The kernels and marginals of the hybrid on the 2-2-1 network, as text."""
    m = SymbolicMeasure(network(), RULE)
    return m.equations(walks=False)


def own_identities() -> list:
    """ε → 0 gives LRP-γ and γ = 0 gives LRP-ε, entry by entry of every kernel."""
    net = network()
    hybrid = SymbolicMeasure(net, RULE, assume_nonzero_denominators=True)
    gamma = SymbolicMeasure(net, Gamma(GAMMA), assume_nonzero_denominators=True)
    eps = SymbolicMeasure(net, Epsilon(EPS), assume_nonzero_denominators=True)
    steps = []
    for l in (1, 2):
        rows, cols = hybrid.kernels[l].shape
        for j in range(rows):
            for k in range(cols):
                q = hybrid.kernels[l][j, k]
                steps.append(check_identity(f"lim ε→0 q{l}[{j},{k}] = LRP-γ", sp.limit(q, EPS, 0, "+"),
                                            gamma.kernels[l][j, k], net, (GAMMA, EPS)))
                steps.append(check_identity(f"q{l}[{j},{k}] at γ = 0 = LRP-ε", q.xreplace({GAMMA: 0}),
                                            eps.kernels[l][j, k], net, (GAMMA, EPS)))
    return steps


def laws():
    """Every law of §4 for the hybrid on 2-2-1 (cases A and B of the proof suite)."""
    return prove_rule(RULE, title="γ–ε hybrid", inputs="positive", signed_weights=True, params=(GAMMA, EPS))


def engine_agrees(seed: int = 0) -> float:
    """The largest difference between the closed forms at a dyadic point and the torch
    engine (float64); the exact oracle must agree exactly (checked inside)."""
    net = network()
    m = SymbolicMeasure(net, RULE)
    point = net.sample(random.Random(seed), extra=(GAMMA, EPS), magnitudes=DYADIC_MAGNITUDES)
    rows = crosscheck(m, point)
    if not all(r.oracle_agrees for r in rows):
        raise AssertionError("the exact oracle disagrees with the closed form")
    return max(r.engine_error() for r in rows)


def main() -> None:
    print("Closed forms of the γ–ε hybrid on 2-2-1 (x > 0, sign pattern, both hidden units active, f > 0):")
    for left, right in equations():
        if len(right) < 300:
            print(f"  {left} = {right}")
        else:
            print(f"  {left} = … ({len(right)} characters)")
    print("\nIn LaTeX, the first kernel entry:")
    m = SymbolicMeasure(network(), RULE)
    print("  " + m.equations(latex=True, walks=False, marginals=False)[0][1])
    print("\nThe laws (NRM-SPEC §4) on 2-2-1; case B is split on the signs of the denominators the")
    print("assumptions leave open (the stabilizer ε s(D) branches on them): B++, B+-, B-+, B--.")
    proofs = laws()
    for key in dict.fromkeys(p.law for p in proofs):
        mine = [p for p in proofs if p.law == key]
        cases = ", ".join(f"{p.case} {p.status}" for p in mine)
        print(f"  {key:4} {cases}")
        first = next((p for p in mine if p.counterexample() is not None), None)
        if first is not None:
            ce = first.counterexample()
            print(f"       e.g. `{ce.claim}` fails at {point_text(ce.point)}: {ce.lhs_value} vs {ce.rhs_value}")
        elif all(p.status == "not applicable" for p in mine):
            print(f"       {mine[0].note}")
    print("\nIts own identities, entry by entry of both kernels:")
    steps = own_identities()
    for kind in ("lim ε→0", "at γ = 0"):
        mine = [s for s in steps if kind in s.claim]
        proved = sum(s.status == "proved" for s in mine)
        target = "LRP-γ" if kind.startswith("lim") else "LRP-ε"
        print(f"  {kind}: the hybrid is {target} — {proved} of {len(mine)} entries proved")
    print(f"\nEngine vs closed form at a dyadic point: largest difference {engine_agrees():.2e}")


if __name__ == "__main__":
    main()
