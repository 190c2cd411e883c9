"""L5 — Bayes (NRM-SPEC §4).

μ(A | B) μ(B) = μ(B | A) μ(A) when μ(A), μ(B) ≠ 0.

Why it holds: both sides are μ(A ∩ B).

What is checked: three pairs of the named events (and complements) with non-zero measure.

    python proofs/L05_bayes.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L5", sys.argv[1:]))
