"""A rule whose split depends on the incoming relevance: a relevance-gated mix of LRP-0
and z⁺. Normalized, but not Markov.

The more relevance arrives at a neuron, the more of it goes to the positive
contributions:

Definition::

    λ_k = r_k² / (1 + r_k²)                 (r_k: the relevance arriving at neuron k)
    q(j | k) = (1 − λ_k) a_j w_jk / z_k + λ_k a_j w_jk⁺ / (Σ_j a_j w_jk⁺ + b_k⁺)
    q(⊥ | k) = 1 − Σ_j q(j | k)

Every column sums to one, so normalization (L1) holds. But the kernel is no longer a
fixed conditional: μ(X_{l−1} ∈ A | X_l = k, E) depends on the event E above (it changes
the relevance r_k that arrives), while the Markov law L7 says it must equal q_l(A | k).
The rule declares ``reads_relevance = True``; nrm runs it downwards so that the validator
can show the violation (and refuses upward passes, which need a fixed kernel).

    nrm-verify check-rule examples/rules/relevance_dependent.py:RelevanceGatedZPlus   # exit 1

What the validator says (``ci``): L1 holds (both forms); L7 Markov VIOLATED on
Linear(1,1) → ReLU → Linear(1,1) at x = −0.25: half the output's relevance reaches the
hidden neuron, so λ = 0.2 there, while the kernel column read with a unit relevance has
λ = 0.5 — μ(X_0 = x | X_1 = h) = 0.8 against q(x | h) = 0.5. L8 is violated as well
(standard LRP passes the unnormalized relevance f·μ).
"""

from __future__ import annotations

from nrm.rules import Part, Rule, Share, identity, positive


class RelevanceGatedZPlus(Rule):
    """LRP-0 / z⁺ mixed by λ = r² / (1 + r²) of the incoming relevance r."""

    reads_relevance = True

    def __repr__(self) -> str:
        return "RelevanceGatedZPlus()"

    def shares(self):
        return (Share((Part(identity, identity),), identity),      # LRP-0
                Share((Part(identity, positive),), positive))      # z⁺

    def column(self, ops, contributions, biases, relevance=None):
        if relevance is None:
            raise TypeError("RelevanceGatedZPlus needs the incoming relevance (reads_relevance = True)")
        (z0, zp), (b0, bp) = contributions, biases
        d0 = z0 if b0 is None else z0 + b0
        dp = zp if bp is None else zp + bp
        r2 = relevance * relevance
        lam = r2 / (1 + r2)
        scale0 = (1 - lam) * ops.safe_divide(1, d0)
        scalep = lam * ops.safe_divide(1, dp)
        real = scale0 * z0 + scalep * zp
        return (scale0, scalep), 1 - real
