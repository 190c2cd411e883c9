"""L1 — Normalization (NRM-SPEC §4).

μ(Ω) = 1; Σ_{j∈V̄_l} m_l(j) = 1 at every layer; over real neurons Σ_{j∈V_l} m_l(j) = 1 − m_l(⊥_l).

Why it holds: Rule.column sets q(⊥|k) = 1 − Σ_j q(j|k) (or renormalizes the column), so every
column of every kernel sums to one over V̄_{l−1} = V_{l−1} ∪ {⊥}; the absorber chain has
q(⊥|⊥) = 1. A product of column-stochastic matrices is column-stochastic, hence
m_{l−1} = Q̄_l m_l keeps the total, and μ(Ω) = Σ π = 1.

What is checked, per rule and network: each column sum, μ(Ω) by the masked pass, the sum of
all walk measures, and both forms of the layer sums — each an identity of rational functions
in the reduced variables, after the rule's case distinctions were decided by the assumptions.

    python proofs/L01_normalization.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L1", sys.argv[1:]))
