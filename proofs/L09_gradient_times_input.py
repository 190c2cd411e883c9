"""L9 — LRP-0 = Gradient × Input (NRM-SPEC §4).

With LRP-0 on every layer (absorbing leak) and ReLU (σ(z) = σ'(z) z), m_l(j) = a_j ∂f/∂a_j / f
at every layer l < L, biases allowed.

Why it holds: under a fixed activation pattern f is linear in each layer's activations
through the active units, and LRP-0's kernel a_j w_jk / z_k telescopes:
m_{l}(j) = a_j Σ_k w_jk m_{l+1}(k) / z_k = a_j ∂f/∂a_j / f by induction from the top.

What is checked: f as an explicit function of layer l's activations (the network above l
under the declared pattern), differentiated with sympy.diff, against the derived marginal.
For every other rule (and for LRP-0 with leak="renormalize") a rational counterexample shows
that the law does not extend.

    python proofs/L09_gradient_times_input.py [--arch 2-2-1] [--rule zero] [--show]
"""

import sys

from nrm_verify.symbolic.prove import law_main

if __name__ == "__main__":
    sys.exit(law_main("L9", sys.argv[1:]))
