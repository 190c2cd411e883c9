"""A user's own rule, as a research group would write it: LRP-ε whose stabilizer scales
with the neuron's bias magnitude (an "adaptive ε")."""

from __future__ import annotations

from nrm.rules import Part, Rule, Share, identity


class AdaptiveEpsilon(Rule):
    """q(j | k) = a_j w_jk / (z_k + (ε + |b_k|) s(z_k)); the rest goes to ⊥."""

    def __init__(self, epsilon: float = 0.01):
        super().__init__()
        self.epsilon = epsilon

    def __repr__(self) -> str:
        return f"AdaptiveEpsilon({self.epsilon!r})"

    def shares(self):
        return (Share((Part(identity, identity),), identity),)

    def column(self, ops, contributions, biases):
        (z,), (b,) = contributions, biases
        d = z if b is None else z + b
        size = self.epsilon if b is None else self.epsilon + ops.pos(b) - ops.neg(b)
        scale = ops.safe_divide(1, d + size * ops.sign(d))
        qbot = 1 - scale * z
        return (scale,), qbot  # nrm-verify's test_plugin breaks this line to check that the tests fail
