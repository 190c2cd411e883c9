"""L11 — γ = 0 gives LRP-0 (NRM-SPEC §4).

The γ-rule at γ = 0 is LRP-0 exactly.

What is checked: γ is declared γ ≥ 0, so every case distinction made while deriving the
γ-kernel holds at γ = 0 too; substituting γ = 0 gives the LRP-0 kernel entry by entry.

    python proofs/L11_gamma_zero.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L11", sys.argv[1:]))
