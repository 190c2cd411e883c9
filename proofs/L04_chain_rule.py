"""L4 — Multiplicative law and chain rule (NRM-SPEC §4).

μ(A ∩ B) = μ(A) μ(B | A) when μ(A) ≠ 0; for every walk,
μ(n_0, …, n_L) = m_L(n_L) Π_l μ(X_{l−1} = n_{l−1} | X_l = n_l) when the conditionals are defined.

Why it holds: the first is the definition of the conditional; the second is the Markov
property (L7) applied layer by layer: μ(X_{l−1} = j | X_l = k) = q_l(j | k).

What is checked: three pairs of named events of non-zero measure; the chain rule for every
walk whose marginals m_l(n_l) are not identically zero (the others are skipped: their
conditionals are undefined). μ(A) ≠ 0 is stated as a condition of each conditional.

    python proofs/L04_chain_rule.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L4", sys.argv[1:]))
