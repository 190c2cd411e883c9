"""L7 — Markov property (NRM-SPEC §4).

μ(X_{l−1} ∈ A | X_l = k, E_{>l}) = Σ_{j∈A} q_l(j | k) for any event E_{>l} above layer l
with non-zero measure.

Why it holds: a walk's measure factorizes as π(n_L) Π q_l(n_{l−1} | n_l), and every q_l depends
only on forward quantities (the Rule interface gives a rule nothing else), so the part below
layer l is independent of the part above given X_l = k.

What is checked: the division-free form μ(X_{l−1} ∈ A, X_l = k, E) = q_l(A | k) μ(X_l = k, E)
(it implies the conditional form wherever μ(X_l = k, E) ≠ 0), with both measures by walk
enumeration, for every layer, every k, singletons A and A = {first, ⊥}, and E among Ω,
{X_{l+1} = first} and a union reaching the output.

    python proofs/L07_markov.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L7", sys.argv[1:]))
