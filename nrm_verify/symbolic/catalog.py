"""What the proof suite runs on: architectures, rules (with symbolic parameters) and the
stated cases (activation pattern, output signs, sign pattern of the weights).

Every result of the suite holds *under the case's assumptions*, which the report lists.
The cases are a representative, stated set — not every sign pattern:

* **A** — every hidden unit active, every output f > 0;
* **B** — the last unit of the first hidden layer inactive (z < 0, a = 0), every output
  f < 0.

Rules whose kernels branch on the sign of a weight (γ, z⁺, αβ, z^B) get a sign pattern:
in the first layer w_jk > 0 exactly when j + k is even (1-based) and b_k > 0 for odd k
(case B flips these); in every later layer the weight from the first unit (always
active) is positive into an output or an active unit and negative into an inactive one,
the others alternate as above; an output's bias has the declared sign of the output.
Every case is checked to be feasible (a rational witness point is found). Rules that never
look at a weight's sign (LRP-0, ε, w², flat) keep
every weight a free non-zero real. Rules that assume a ≥ 0 get positive inputs; z^B gets
the box ℓ_j < x_j < h_j; the others get free real inputs (αβ: mixed signs in case B).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, WSquare, ZBox, Zero, ZPlus
from nrm_verify.symbolic.network import SymbolicNetwork, alternating

EPS = sp.Symbol("eps", positive=True)
GAMMA = sp.Symbol("gamma", nonnegative=True)
BETA = sp.Symbol("beta", nonnegative=True)


@dataclass(frozen=True)
class SignCase:
    """One stated set of assumptions for a network."""

    key: str
    title: str
    inactive_last_hidden: bool
    output_sign: str
    flip_signs: bool
    inputs: object = None  # overrides the rule's input domain ("positive", a list of specs …)
    weights: object = None  # overrides the weight signs (a callable (l, j, k) -> spec)
    biases: object = None


CASE_A = SignCase("A", "all hidden units active, f > 0", False, "+", False)
CASE_B = SignCase("B", "last unit of the first hidden layer inactive, f < 0", True, "-", True)
CASES = (CASE_A, CASE_B)


@dataclass(frozen=True)
class Architecture:
    """A network shape: ``widths`` (input first) and whether layer 1 is a convolution."""

    key: str
    widths: tuple[int, ...]
    conv: bool = False

    @property
    def title(self) -> str:
        if self.conv:
            return f"conv1d(k=2) {self.widths[0]}→{self.widths[1]}, dense →{self.widths[2]}"
        return "-".join(map(str, self.widths))

    def build(self, spec: RuleSpec, case: SignCase) -> SymbolicNetwork:
        """The symbolic network for a rule and a case."""
        signed = spec.signed_weights
        depth = len(self.widths) - 1
        hidden = self.widths[1:-1]
        pattern = []
        for i, n in enumerate(hidden):
            row = ["+"] * n
            if i == 0 and case.inactive_last_hidden:
                row[-1] = "-"
            pattern.append("".join(row))

        def declared(l, k):
            return case.output_sign if l == depth else pattern[l - 1][k]

        def sign_pattern(l, j, k):
            if l == 1:
                return alternating(case.flip_signs, j, k)
            if j == 0:  # the first unit of every hidden layer is active: it decides feasibility
                return "+" if l == depth else declared(l, k)
            return alternating(False, j, k)

        def bias_pattern(l, k):
            if l == depth:
                return declared(l, k)
            return alternating(case.flip_signs and l == 1, k, 0)

        if case.weights is not None:
            weights = case.weights
        elif not signed:
            weights = "nonzero"
        else:
            weights = sign_pattern
        if case.biases is not None:
            biases = case.biases
        else:
            biases = bias_pattern if signed else "real"
        inputs = case.inputs if case.inputs is not None else spec.inputs_for(case)
        if inputs == "mixed":
            inputs = mixed_inputs(self.widths[0])
        if self.conv:
            net = SymbolicNetwork.conv1d(self.widths[0], self.widths[0] - self.widths[1] + 1, self.widths[2],
                                         inputs=inputs, weights=weights, biases=biases, pattern=pattern,
                                         output_signs=case.output_sign)
        else:
            net = SymbolicNetwork.dense(self.widths, inputs=inputs, weights=weights, biases=biases, pattern=pattern,
                                        output_signs=case.output_sign)
        if spec.assume is not None:
            spec.assume(net)
        return net


ARCHITECTURES = (
    Architecture("2-2-1", (2, 2, 1)),
    Architecture("2-2-2-1", (2, 2, 2, 1)),
    Architecture("3-2-2", (3, 2, 2)),
    Architecture("conv", (3, 2, 1), conv=True),
)


@dataclass(frozen=True)
class RuleSpec:
    """A rule of the matrix: how to build its rule objects for a network.

    ``build(network)`` returns one rule per layer 1..L. ``inputs`` is the input domain
    ("real", "positive", "box"); ``signed_weights`` asks for a sign pattern of the
    weights; ``params`` are the rule's symbolic parameters (drawn by their sign
    assumptions when a counterexample is searched).
    """

    key: str
    title: str
    build: Callable[[SymbolicNetwork], list[Rule]]
    inputs: str = "real"
    signed_weights: bool = False
    params: tuple = ()
    note: str = ""
    inputs_b: str | None = None  # a different input domain in case B
    assume: Callable[[SymbolicNetwork], None] | None = None  # extra assumptions the rule needs

    def inputs_for(self, case: SignCase):
        if case.key == "B" and self.inputs_b is not None:
            return self.inputs_b
        return self.inputs

    def rules(self, network: SymbolicNetwork) -> list[Rule]:
        return self.build(network)


def _every(rule: Rule) -> Callable[[SymbolicNetwork], list[Rule]]:
    return lambda net: [rule] * net.depth


def _weighted_sums_nonzero(net: SymbolicNetwork) -> None:
    """leak="renormalize" divides by the real part of a column, Σ_j a_j w_jk / z_k."""
    for l in range(1, net.depth + 1):
        for k, s in enumerate(net.z_nobias[l]):
            if sp.sympify(s).free_symbols:
                net.assume(s, "nonzero", f"Σ_j a_j w_jk of {net.label(l, k)}: leak='renormalize' divides by it")


def _zbox(net: SymbolicNetwork) -> list[Rule]:
    import numpy as np

    lo = np.array([b[1] for b in net.box], dtype=object)
    hi = np.array([b[2] for b in net.box], dtype=object)
    return [ZBox(lo, hi)] + [Zero()] * (net.depth - 1)


RULES = (
    RuleSpec("zero", "LRP-0", _every(Zero())),
    RuleSpec("epsilon", "LRP-ε", _every(Epsilon(EPS)), params=(EPS,)),
    RuleSpec("gamma", "LRP-γ", _every(Gamma(GAMMA)), inputs="positive", signed_weights=True, params=(GAMMA,)),
    RuleSpec("zplus", "z⁺", _every(ZPlus()), inputs="positive", signed_weights=True),
    RuleSpec("alphabeta", "αβ (α = 1 + β)", _every(AlphaBeta(1 + BETA, BETA)), inputs="positive",
             signed_weights=True, params=(BETA,), inputs_b="mixed"),
    RuleSpec("wsquare", "w²", _every(WSquare())),
    RuleSpec("flat", "flat", _every(Flat())),
    RuleSpec("zbox", "z^B (first layer; LRP-0 above)", _zbox, inputs="box", signed_weights=True),
    RuleSpec("zero_renormalize", "LRP-0, leak=renormalize", _every(Zero(leak="renormalize")),
             note="§7 open choice 1: each column rescaled so nothing leaks to ⊥", assume=_weighted_sums_nonzero),
)


def mixed_inputs(n: int) -> list[str]:
    """x_j < 0 for odd j, x_j > 0 for even j (1-based)."""
    return ["-" if j % 2 == 0 else "+" for j in range(n)]
