"""L6 — Total measure (NRM-SPEC §4).

μ(B) = Σ_i μ(B ∩ A_i) over a partition (A_i) of Ω. The measure is signed, so μ(A_i) = 0 does
not imply μ(B ∩ A_i) = 0.

What is checked: B and C against the partition by the neurons of every layer, and against a
partition that mixes two layers: {X_0 = x1}, {X_0 ≠ x1, X_1 = first}, the rest (it is checked
to be a partition walk by walk). Left sides by walk enumeration.

    python proofs/L06_total_measure.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L6", sys.argv[1:]))
