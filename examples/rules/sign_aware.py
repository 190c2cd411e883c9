"""A sound new rule: a sign-aware hybrid of LRP-γ and LRP-ε.

LRP-γ favours the positive contributions of a neuron. That is right for a neuron with a
positive pre-activation; for a negative one it favours the contributions that *oppose*
the neuron's output. The sign-aware hybrid favours the contributions that agree with the
sign of z_k, and stabilizes with ε in the direction of that sign:

Definition::

    c⁺(j, k) = a_j w_jk + γ (a_j w_jk)⁺,      c⁻(j, k) = a_j w_jk + γ (a_j w_jk)⁻
    z_k = Σ_j a_j w_jk + b_k
    q(j | k) = c⁺(j, k) / (Σ_j c⁺(j, k) + b_k + γ b_k⁺ + ε)     if z_k ≥ 0
    q(j | k) = c⁻(j, k) / (Σ_j c⁻(j, k) + b_k + γ b_k⁻ − ε)     if z_k < 0
    q(⊥ | k) = 1 − Σ_j q(j | k)

(x w)⁺ = x⁺ w⁺ + x⁻ w⁻, so the rule is written as two shares of parts u(a) · v(w), and it
makes no assumption on the sign of the activations. The denominators never vanish for
ε > 0: for z_k ≥ 0 the chosen denominator is z_k + γ(Σ (a w)⁺ + b⁺) + ε ≥ ε, for z_k < 0 it
is ≤ −ε. With γ = 0 it is LRP-ε. Every column sums to one by construction, and the kernel
depends on forward quantities only, so every law of the measure applies.

    nrm-verify check-rule examples/rules/sign_aware.py:SignAwareGammaEpsilon

What the validator says (``ci``): every applicable law holds — L1–L8, L15–L18 and batch
invariance on 18–30 generated cases each (L18 against the explicit LRP reference, which
derives this rule's kernel from its shares and calls its own ``column``), L9–L14 not
applicable with the reason; exit status 0 (details and timing in docs/validate.md; tested
in tests/test_validate.py).
"""

from __future__ import annotations

from nrm.rules import Part, Rule, Share, identity, negative, positive


class SignAwareGammaEpsilon(Rule):
    """Sign-aware γ–ε hybrid (see the module docstring for the definition)."""

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-6):
        if gamma < 0 or epsilon < 0:
            raise ValueError(f"gamma and epsilon must be >= 0, got gamma={gamma!r}, epsilon={epsilon!r}")
        super().__init__()
        self.gamma = gamma
        self.epsilon = epsilon

    def __repr__(self) -> str:
        return f"SignAwareGammaEpsilon(gamma={self.gamma!r}, epsilon={self.epsilon!r})"

    # u(a) for the γ parts: γ a⁺ and γ a⁻
    def gamma_positive(self, ops, a):
        return self.gamma * ops.pos(a)

    def gamma_negative(self, ops, a):
        return self.gamma * ops.neg(a)

    def bias_up(self, ops, b):
        return b + self.gamma * ops.pos(b)

    def bias_down(self, ops, b):
        return b + self.gamma * ops.neg(b)

    def shares(self):
        up = Share((Part(identity, identity), Part(self.gamma_positive, positive),
                    Part(self.gamma_negative, negative)), self.bias_up)      # a w + γ (a w)⁺
        down = Share((Part(identity, identity), Part(self.gamma_positive, negative),
                      Part(self.gamma_negative, positive)), self.bias_down)  # a w + γ (a w)⁻
        return (up, down)

    def column(self, ops, contributions, biases):
        (z_up, z_down), (b_up, b_down) = contributions, biases
        d_up = z_up if b_up is None else z_up + b_up
        d_down = z_down if b_down is None else z_down + b_down
        z = (d_up + d_down) / (2 + self.gamma)  # Σ_j a_j w_jk + b_k
        s = ops.sign(z)  # +1 for z ≥ 0
        agree = (1 + s) / 2  # 1 where z ≥ 0, 0 where z < 0
        scale_up = agree * ops.safe_divide(1, d_up + self.epsilon * s)
        scale_down = (1 - agree) * ops.safe_divide(1, d_down + self.epsilon * s)
        real = scale_up * z_up + scale_down * z_down
        return (scale_up, scale_down), 1 - real
