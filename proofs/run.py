"""Run every proof of the NRM laws and write proofs/REPORT.md (or check it).

    python proofs/run.py            # prove everything, write REPORT.md
    python proofs/run.py --check    # exit 1 if a proof fails or REPORT.md is stale (CI)

The same as ``python -m nrm_verify.symbolic.prove``; one file per law sits beside this one
(``python proofs/L09_gradient_times_input.py --show`` prints every step of one law).
"""

import sys

from nrm_verify.symbolic.prove import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
