"""A rule that leaks relevance: LRP-0 whose kernel column forgets the bias share.

A common slip when writing a rule by hand: the real neurons get a_j w_jk / z_k, and the
bias's share b_k / z_k is simply dropped instead of going to the absorber ⊥:

Definition::

    q(j | k) = a_j w_jk / z_k,     q(⊥ | k) = 0,     so Σ_{j ∈ V̄} q(j | k) = 1 − b_k / z_k ≠ 1

:meth:`nrm.rules.Rule.column` completes every column by construction (q(⊥|k) = 1 − Σ_j
q(j|k)), so the rule has to override ``column`` to leak. The validator catches it with L1
(normalization and column-stochastic kernels) on a network of a handful of neurons, and
the standard-LRP comparison L8 through the absorber.

    nrm-verify check-rule examples/rules/leaky.py:BiasDroppingZero     # exit status 1

What the validator says (``ci``): L1 normalization and column-stochastic kernels
VIOLATED (measured 0, expected 1) on ``nn.Sequential(linear([[0.0]], [0.25]))`` at x = 0 —
two neurons, the output's relevance is all bias and the column drops it; L2, L3, L6 and
L8 violated too; L4, L5, L7, L17, L18 and batch invariance hold (L18: the explicit LRP
reference calls the rule's own ``column`` too, so both sides leak alike; leaking is L1's
business).
"""

from __future__ import annotations

from nrm.rules import Part, Rule, Share, identity


class BiasDroppingZero(Rule):
    """LRP-0 without the bias share: q(⊥ | k) = 0 (leaks b_k / z_k per column)."""

    def __repr__(self) -> str:
        return "BiasDroppingZero()"

    def shares(self):
        return (Share((Part(identity, identity),), identity),)

    def column(self, ops, contributions, biases):
        scales, _ = super().column(ops, contributions, biases)
        return scales, ops.zeros_like(contributions[0])  # the bug: the absorber gets nothing
