"""L12 — γ → ∞ gives z⁺ (NRM-SPEC §4).

lim_{γ→∞} q^γ_l(j | k) = q^{z⁺}_l(j | k) when a ≥ 0 and P_k = Σ_j a_j w_jk⁺ + b_k⁺ > 0
(error O(1/γ)).

What is checked: sympy.limit(γ → ∞) of every γ-kernel entry on the columns with P_k > 0
(decided from the sign pattern) equals the z⁺ entry. On a column with P_k = 0 the suite shows
a counterexample: z⁺ sends that column to ⊥, the γ-rule does not (boundary case C). The
derivation shows that the identity itself needs P_k ≠ 0; a ≥ 0 is what makes P_k ≥ 0.

    python proofs/L12_gamma_infinity.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L12", sys.argv[1:]))
