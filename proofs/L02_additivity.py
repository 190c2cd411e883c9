"""L2 — Additivity and inclusion–exclusion (NRM-SPEC §4).

μ(A ∪ B) = μ(A) + μ(B) − μ(A ∩ B); μ(A ∪ B ∪ C) by inclusion–exclusion; μ(Aᶜ) = 1 − μ(A);
μ(X_l ∈ S) = Σ_{j∈S} m_l(j).

Why it holds: μ is a sum over walks, so it is additive on disjoint sets of walks.

What is checked: the left sides by *enumerating* the walks in the set (the definition of §3);
the right sides by masked backward passes over cylinders (§5). A = {X_0 = x1},
B = {X_1 = first neuron}, C = {X_0 = ⊥0} ∪ {X_{L−1} = last neuron}.

    python proofs/L02_additivity.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L2", sys.argv[1:]))
