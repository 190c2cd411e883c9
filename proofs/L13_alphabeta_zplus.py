"""L13 — αβ(1, 0) = z⁺ (NRM-SPEC §4).

With α = 1, β = 0 the αβ-rule is z⁺ when a ≥ 0.

What is checked: the αβ kernel with symbolic α = 1 + β, β ≥ 0, at β = 0, against z⁺, entry by
entry, on the columns with a ≥ 0 inputs and P_k > 0. Outside the hypothesis the suite shows
counterexamples: a negative input ((a w)⁺ = a⁺w⁺ + a⁻w⁻ ≠ a w⁺), and P_k = 0, where αβ falls
back to (α, β) = (0, −1) (NRM-SPEC §2) while z⁺ sends the column to ⊥ — so, precisely, L13
holds when a ≥ 0 and P_k > 0.

    python proofs/L13_alphabeta_zplus.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L13", sys.argv[1:]))
