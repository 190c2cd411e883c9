"""Attention's kernels on a 2-token × 2-dimension single head (issue 14, item 2).

X → Q, K, V → S = Q Kᵀ → L = τ S → A = softmax(L) → O = A V → Y = LayerNorm(O) → f: every kernel
derived by the rule objects of nrm.rules on the layer kinds' maps (MatMul with a symbolic θ,
Softmax, LayerNorm with σ held), LRP-ε (symbolic ε) on the maps and LRP-0 on the softmax.

Why the laws hold: every column sums to one over its parents and ⊥ once the column's forward
value is replaced by its definition (L1, then at every layer by induction, checked as an
identity); the walk measure factorizes over kernels that depend on forward quantities only,
so additivity (L2) and the Markov property (L7) are identities of polynomials in the entries.
What does not hold, refuted at rational points: non-negative entries, L9 for the product
(only its general form, θ and 1 − θ of Gradient × Input), the softmax kernel's real shares
under a constant shift of the logits.

    python proofs/attention_block.py [--show]
"""

import sys

from nrm_verify.symbolic.attention_proofs import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
