"""L3 — Marginalization (NRM-SPEC §4).

Σ_{j∈V̄_l} μ(X_l = j, E) = μ(E) for E not constraining layer l; the row sums of a joint matrix
give one marginal, its column sums the other.

Why it holds: {X_l = j}, j ∈ V̄_l, partition Ω.

What is checked: for every layer l, E = Ω and E = {X_m = first neuron} on another layer
(left side by walk enumeration); the joints of layers (0, 1) and (L−1, L) over V̄ × V̄.

    python proofs/L03_marginalization.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L3", sys.argv[1:]))
