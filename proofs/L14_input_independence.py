"""L14 — Flat and w² ignore the input; z^B is non-negative in the box (NRM-SPEC §4).

Kernels of rules with depends_on_input = False (flat, w²) do not depend on the input or the
activations; z^B kernels are non-negative for ℓ < x < h.

What is checked: the free symbols of every flat/w² kernel entry, after expanding the
pre-activations into inputs, weights and biases, contain no input; every z^B entry is decided
≥ 0 from the box and the weight signs (each term is (x − ℓ) w⁺ or (h − x)(−w⁻)).

    python proofs/L14_input_independence.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L14", sys.argv[1:]))
