"""L10 — ε → 0 gives LRP-0 (NRM-SPEC §4).

lim_{ε→0⁺} q^ε_l(j | k) = q^0_l(j | k) wherever z_k ≠ 0 (error O(ε/|z_k|)).

What is checked: sympy.limit of every kernel entry of LRP-ε (ε a positive symbol) equals the
LRP-0 entry; the pre-activations have declared signs, so z_k ≠ 0 everywhere here.

    python proofs/L10_epsilon_limit.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L10", sys.argv[1:]))
