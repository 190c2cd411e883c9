"""Propagation rules as column-stochastic signed kernels q_l(j | k) (NRM-SPEC §2).

Every rule is written **once**, as data: a tuple of :class:`Share` objects, each a
fraction of the form

    share_s(j | k) = c_s(j, k) / D_s(k),   c_s(j, k) = Σ_p  u_p(a_j) · v_p(w_jk),
    D_s(k) = Σ_j c_s(j, k) + β_s(b_k)   (then stabilized),

where u_p, v_p and β_s are elementwise functions built from the backend-neutral
operations of :mod:`nrm.ops`. The kernel of a rule is

    q(j | k) = Σ_s κ_s(k) · share_s(j | k),     q(⊥ | k) = 1 − Σ_j q(j | k),

with coefficients κ_s (1 for single-share rules, (α, −β) for αβ). So every column
sums to one over V̄_{l−1} = V_{l−1} ∪ {⊥}: the kernel is column-stochastic, signed.

The engine evaluates the shares with modified linear maps on tensors, the oracle on
exact fractions and the symbolic layer on sympy expressions: the *same* objects.

Conventions (NRM-SPEC §2, §7) are named parameters:

* ``stabilizer`` ε ≥ 0 and ``stabilizer_sign``: ``"signed"`` gives D + ε·s(D) with
  s(0) = +1 (zennit's convention and this project's default); ``"unsigned"`` gives
  D + ε (LXT's).
* ``leak``: ``"absorb"`` (default) sends the bias and stabilizer share to the absorber
  ⊥; ``"renormalize"`` rescales each column, q̃(j|k) = q(j|k) / (1 − q(⊥|k)), so no
  relevance leaks (this breaks L9 when biases are present).
* A zero denominator sends the column wholly to ⊥: q(⊥ | k) = 1. Never NaN, never Inf.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch

from .errors import RuleParameterError

ElementFn = Callable[[Any, Any], Any]


def identity(ops, x):
    """u(x) = x (recognized by the engine, which then reuses the ordinary forward)."""
    return x


def positive(ops, x):
    """x⁺."""
    return ops.pos(x)


def negative(ops, x):
    """x⁻."""
    return ops.neg(x)


def ones(ops, x):
    """1 (drop the argument)."""
    return ops.ones_like(x)


def square(ops, x):
    """x²."""
    return ops.square(x)


@dataclass(frozen=True)
class Part:
    """One product term u(a_j) · v(w_jk) of a share's contribution c_s(j, k)."""

    input: ElementFn = identity
    weight: ElementFn = identity


@dataclass(frozen=True)
class Share:
    """A fraction c_s(j,k) / D_s(k) of a rule; ``bias=None`` keeps the bias out of D_s."""

    parts: tuple[Part, ...]
    bias: ElementFn | None = identity


STABILIZER_SIGNS = ("signed", "unsigned")
LEAKS = ("absorb", "renormalize")


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _is_symbolic(x) -> bool:
    """A sympy object (the symbolic layer passes symbols as parameters); recognized by its
    module so that the core does not import sympy."""
    return type(x).__module__.split(".")[0] == "sympy"


def check_parameter(owner: str, name: str, value: Any, example: str, minimum: float | None = 0.0) -> None:
    """Raise :class:`RuleParameterError` for a parameter ``name`` of the rule ``owner`` that
    is not a finite real number ≥ ``minimum`` (None: any sign); the message ends with
    ``example``, a call that works. A sympy expression passes (the symbolic layer builds
    rules with symbolic parameters; a non-finite or negative sympy *number* does not), and
    so does a real tensor whose every entry passes. For rules of your own (docs/rules.md)."""
    def refuse(why: str):
        raise RuleParameterError(f"{owner}: {name} must be {why}; got {_shown(value)}. Give e.g. {example}")

    nonfinite = "finite (NaN or infinity would make every measure NaN)"
    negative = "" if minimum is None else f">= {minimum:g}"
    if _is_symbolic(value):
        if getattr(value, "is_number", False):
            if value.is_finite is not True or value.is_extended_real is not True:  # sympy's nan, oo, I
                refuse(nonfinite)
            if minimum is not None and (value - minimum).is_negative:
                refuse(negative)
        return
    if isinstance(value, torch.Tensor) and not value.is_complex() and value.dtype != torch.bool:
        v = value.detach().cpu().double()
        if not bool(torch.isfinite(v).all()):
            refuse(nonfinite + " in every entry")
        if minimum is not None and bool((v < minimum).any()):
            refuse(negative + " in every entry")
        return
    if not _is_number(value):
        refuse("a real number" + (" (True and False are not numbers here)" if isinstance(value, bool)
                                  else f", not a {type(value).__name__}"))
    if not math.isfinite(float(value)):
        refuse(nonfinite)
    if minimum is not None and value < minimum:
        refuse(negative)


def _flag(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise RuleParameterError(f"{owner}: {name} must be True or False, got {_shown(value)}")


def _shown(value: Any) -> str:
    """How a parameter is quoted in a message: its repr, shortened, and its type when that
    is not obvious from the repr (a string '0.1' reads like the number)."""
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "…"
    return f"the {type(value).__name__} {text}" if isinstance(value, (str, bytes)) else text


def _bound(owner: str, name: str, value: Any) -> torch.Tensor | None:
    """A ZBox bound as a float64 tensor for the checks (None when it holds sympy
    expressions: those pass, and only their finite numbers are compared). Raises for
    anything that is not a finite real number or an array of them."""
    example = "ZBox(-1.0, 1.0) or ZBox(low_tensor, high_tensor)"
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise RuleParameterError(f"{owner}: {name} must hold real numbers, got a {value.dtype} tensor")
        v = value.detach().cpu().double()
    elif _is_number(value) or _is_symbolic(value):
        check_parameter(owner, name, value, example, minimum=None)
        return None if _is_symbolic(value) else torch.tensor(float(value), dtype=torch.float64)
    elif isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        v = torch.from_numpy(value.astype(np.float64))
    elif isinstance(value, (list, tuple, np.ndarray)):
        try:
            a = np.asarray(value, dtype=object)
        except ValueError:  # a ragged list
            raise RuleParameterError(f"{owner}: {name} must be a number or a rectangular array of numbers; got "
                                     f"{_shown(value)}. Give e.g. {example}") from None
        for item in a.reshape(-1):
            check_parameter(owner, f"every entry of {name}", item, example, minimum=None)
        if any(_is_symbolic(item) for item in a.reshape(-1)):
            return None
        v = torch.tensor(a.astype(np.float64), dtype=torch.float64)
    else:
        raise RuleParameterError(f"{owner}: {name} must be a number or a tensor; got {_shown(value)}. Give e.g. "
                                 f"{example}")
    if not bool(torch.isfinite(v).all()):
        raise RuleParameterError(f"{owner}: {name} must be finite everywhere (NaN or infinity would make every "
                                 f"measure NaN); got {_shown(value)}. Give e.g. {example}")
    return v


class Rule:
    """Base class of all rules. Subclasses define :meth:`shares` (and rarely
    :meth:`coefficients`); they never touch a tensor library.

    Attributes read by the validator and the law library:

    * ``depends_on_input`` — False when q does not depend on the activations (L14);
    * ``requires_nonnegative_input`` — the rule's assumptions need a ≥ 0;
    * ``input_layer_only`` — the rule is meant for the first layer (z^B);
    * ``reads_relevance`` — the split depends on the incoming relevance (not Markov).
    """

    depends_on_input = True
    requires_nonnegative_input = False
    input_layer_only = False
    reads_relevance = False
    """True for a rule whose split depends on the relevance arriving at the neuron: its
    ``column`` then takes ``relevance=`` (shape (K, B, *out)). Such a rule breaks the
    Markov law L7, and the walk measure is no longer defined by fixed kernels; nrm runs
    it (downwards only) so that the validator can show the violation."""

    def __init_subclass__(cls, **kwargs):
        """A rule written for nrm ≤ 0.1 names its presentation hooks ``_params`` and
        ``_conventions``: they keep working as :meth:`parameters` and :meth:`conventions`."""
        super().__init_subclass__(**kwargs)
        for old, new in (("_params", "parameters"), ("_conventions", "conventions")):
            if old in vars(cls) and new not in vars(cls):
                setattr(cls, new, vars(cls)[old])

    def __init__(self, *, stabilizer: Any = 0.0, stabilizer_sign: str = "signed", leak: str = "absorb"):
        check_parameter(type(self).__name__, "stabilizer", stabilizer, f"{type(self).__name__}(stabilizer=1e-9)")
        if not isinstance(stabilizer_sign, str) or stabilizer_sign not in STABILIZER_SIGNS:
            raise RuleParameterError(
                f"{type(self).__name__}: stabilizer_sign must be one of {STABILIZER_SIGNS}, got {stabilizer_sign!r}"
            )
        if not isinstance(leak, str) or leak not in LEAKS:
            raise RuleParameterError(f"{type(self).__name__}: leak must be one of {LEAKS}, got {leak!r}")
        self.stabilizer = stabilizer
        self.stabilizer_sign = stabilizer_sign
        self.leak = leak

    # -- what a subclass defines -------------------------------------------------
    def shares(self) -> tuple[Share, ...]:
        raise NotImplementedError(f"{type(self).__name__} must define shares()")  # abstract

    def share_coefficients(self) -> tuple[Any, ...]:
        """κ_s, constant over columns; they must sum to 1."""
        return (1,) * len(self.shares())

    def coefficients(self, ops, denominators: tuple) -> tuple[tuple, Any]:
        """(κ_s(k) per share, dead(k) or None).

        A column is *dead* (sent wholly to ⊥) when a share with a non-zero coefficient
        has a zero denominator. A single share needs no flag: its scale κ/D is then 0,
        so the column's real mass is 0 and q(⊥|k) = 1 by construction.
        """
        if len(denominators) == 1:
            return self.share_coefficients(), None
        product = denominators[0]
        for d in denominators[1:]:
            product = product * d
        return self.share_coefficients(), ops.is_zero(product)

    # -- the one place shares become a kernel column ---------------------------------
    def stabilize(self, ops, d):
        """D ↦ D + ε·s(D) (signed, s(0)=+1) or D + ε (unsigned)."""
        eps = self.stabilizer
        if _is_number(eps) and eps == 0:
            return d
        if self.stabilizer_sign == "signed":
            return d + eps * ops.sign(d)
        return d + eps

    def denominators_nonzero(self, like: Any = None) -> bool:
        """A signed stabilizer ε > 0 keeps |D + ε s(D)| ≥ ε: no zero test is needed — unless
        ε is below what the denominators' dtype can hold (ε = 1e-300 in float32, 1e-8 in
        float16 round to 0): ``like`` is a denominator, and its ``new_tensor(ε)`` decides."""
        eps = self.stabilizer
        if not (self.stabilizer_sign == "signed" and _is_number(eps) and eps > 0):
            return False
        dtype = getattr(like, "dtype", None)
        return not isinstance(dtype, torch.dtype) or _representable(float(eps), dtype)

    def column(self, ops, contributions: tuple, biases: tuple) -> tuple[tuple, Any]:
        """Turn per-share sums into per-column factors.

        ``contributions[s]`` is Z_s(k) = Σ_j c_s(j, k); ``biases[s]`` is β_s(b_k), or None
        when the share leaves the bias out. Returns ``(scales, qbot)`` with
        q(j | k) = Σ_s scales[s](k) · c_s(j, k) and q(⊥ | k) = qbot(k):

            D_s = stabilize(Z_s + β_s),   scales[s] = κ_s / D_s (0 where D_s = 0),
            q(⊥ | k) = 1 − Σ_s scales[s] Z_s            (leak="absorb")
            scales[s] /= Σ_s scales[s] Z_s, q(⊥ | k) = 0  (leak="renormalize")

        Works elementwise on tensors, object arrays or scalars.
        """
        denominators = tuple(
            self.stabilize(ops, z if b is None else z + b) for z, b in zip(contributions, biases)
        )
        coefficients, dead = self.coefficients(ops, denominators)
        if self.denominators_nonzero(denominators[0]):
            scales = [k / d for k, d in zip(coefficients, denominators)]
        else:
            scales = [ops.safe_divide(k, d) for k, d in zip(coefficients, denominators)]
        if dead is not None:
            scales = [ops.where(dead, ops.zeros_like(s), s) for s in scales]
        real = scales[0] * contributions[0]
        for s, z in zip(scales[1:], contributions[1:]):
            real = real + s * z
        if self.leak == "absorb":
            return tuple(scales), 1 - real
        empty = ops.is_zero(real)
        scales = [ops.safe_divide(s, real) for s in scales]
        return tuple(scales), ops.where(empty, ops.ones_like(real), ops.zeros_like(real))

    # -- presentation --------------------------------------------------------------
    def parameters(self) -> dict:
        """The rule's own parameters ``{name: value}`` in the constructor's order: they make
        the repr, equality and hashing, and the code a counterexample program rebuilds it with."""
        return {}

    def conventions(self) -> dict:
        """The keyword conventions that differ from their defaults (part of the repr)."""
        out = {}
        if not (_is_number(self.stabilizer) and self.stabilizer == 0) and type(self) is not Epsilon:
            out["stabilizer"] = self.stabilizer
        if self.stabilizer_sign != "signed":
            out["stabilizer_sign"] = self.stabilizer_sign
        if self.leak != "absorb":
            out["leak"] = self.leak
        return out

    def __repr__(self) -> str:
        args = [repr(v) for v in self.parameters().values()]
        args += [f"{k}={v!r}" for k, v in self.conventions().items()]
        return f"nrm.rules.{type(self).__name__}({', '.join(args)})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class Zero(Rule):
    """LRP-0.

    Definition::

        q(j | k) = a_j w_jk / z_k,     q(⊥ | k) = b_k / z_k,     z_k = Σ_j a_j w_jk + b_k

    Valid when z_k ≠ 0 (a zero z_k sends the column to ⊥). With LRP-0 on every layer and
    activations with σ(z) = σ'(z) z the marginals equal Gradient × Input / f (L9).

    Reference: Bach et al., *On pixel-wise explanations for non-linear classifier
    decisions by layer-wise relevance propagation*, PLoS ONE 10(7), 2015.
    """

    def __init__(self, *, leak: str = "absorb"):
        super().__init__(leak=leak)

    def shares(self):
        return (Share((Part(identity, identity),), identity),)


class Epsilon(Rule):
    """LRP-ε.

    Definition::

        q(j | k) = a_j w_jk / (z_k + ε s(z_k)),   q(⊥ | k) = (b_k + ε s(z_k)) / (z_k + ε s(z_k))

    with s(0) = +1 (``stabilizer_sign="signed"``, zennit) or D + ε
    (``stabilizer_sign="unsigned"``, LXT). Valid for ε > 0. As ε → 0 it tends to LRP-0
    where z_k ≠ 0, with error O(ε/|z_k|) (L10).

    Reference: Bach et al., PLoS ONE 2015; Montavon et al., *Layer-wise relevance
    propagation: an overview*, in Explainable AI, LNCS 11700, 2019.
    """

    def __init__(self, epsilon: Any = 1e-6, *, stabilizer_sign: str = "signed", leak: str = "absorb"):
        check_parameter("Epsilon", "epsilon", epsilon, "Epsilon(1e-6)")
        super().__init__(stabilizer=epsilon, stabilizer_sign=stabilizer_sign, leak=leak)
        self.epsilon = epsilon

    def parameters(self):
        return {"epsilon": self.epsilon}

    def shares(self):
        return (Share((Part(identity, identity),), identity),)


class Gamma(Rule):
    """LRP-γ.

    Definition::

        ρ_γ(w) = w + γ w⁺
        q(j | k) = a_j ρ_γ(w_jk) / D_k,   D_k = Σ_j a_j ρ_γ(w_jk) + ρ_γ(b_k)
        q(⊥ | k) = ρ_γ(b_k) / D_k

    ``modify_bias=False`` keeps the raw bias b_k in D_k (captum's convention).
    Assumes a ≥ 0 and D_k ≠ 0. γ = 0 is LRP-0 exactly (L11); γ → ∞ tends to z⁺ when
    a ≥ 0 (L12).

    Reference: Montavon et al., *Layer-wise relevance propagation: an overview*, 2019.
    """

    requires_nonnegative_input = True

    def __init__(self, gamma: Any = 0.25, *, stabilizer: Any = 0.0, stabilizer_sign: str = "signed",
                 modify_bias: bool = True, leak: str = "absorb"):
        check_parameter("Gamma", "gamma", gamma, "Gamma(0.25)")
        _flag("Gamma", "modify_bias", modify_bias)
        super().__init__(stabilizer=stabilizer, stabilizer_sign=stabilizer_sign, leak=leak)
        self.gamma = gamma
        self.modify_bias = modify_bias

    def parameters(self):
        return {"gamma": self.gamma}

    def conventions(self):
        out = super().conventions()
        if not self.modify_bias:
            out["modify_bias"] = False
        return out

    def rho(self, ops, w):
        """ρ_γ(w) = w + γ w⁺."""
        return w + self.gamma * ops.pos(w)

    def shares(self):
        return (Share((Part(identity, self.rho),), self.rho if self.modify_bias else identity),)


class ZPlus(Rule):
    """z⁺ (LRP-α1β0 for non-negative inputs).

    Definition::

        q(j | k) = a_j w_jk⁺ / (Σ_j a_j w_jk⁺ + b_k⁺),   q(⊥ | k) = b_k⁺ / (…)

    ``bias=False`` leaves b⁺ out of the denominator. Assumes a ≥ 0 and a positive
    denominator. Equals αβ with α = 1, β = 0 when a ≥ 0 (L13).

    Reference: Montavon et al., *Explaining nonlinear classification decisions with
    deep Taylor decomposition*, Pattern Recognition 65, 2017.
    """

    requires_nonnegative_input = True

    def __init__(self, *, stabilizer: Any = 0.0, stabilizer_sign: str = "signed", bias: bool = True,
                 leak: str = "absorb"):
        super().__init__(stabilizer=stabilizer, stabilizer_sign=stabilizer_sign, leak=leak)
        self.bias = bias

    def conventions(self):
        out = super().conventions()
        if not self.bias:
            out["bias"] = False
        return out

    def shares(self):
        return (Share((Part(identity, positive),), positive if self.bias else None),)


class AlphaBeta(Rule):
    """LRP-αβ with α − β = 1.

    Definition::

        (a w)⁺ = a⁺ w⁺ + a⁻ w⁻,   (a w)⁻ = a⁺ w⁻ + a⁻ w⁺
        P_k = Σ_j (a_j w_jk)⁺ + b_k⁺,   N_k = Σ_j (a_j w_jk)⁻ + b_k⁻
        q(j | k) = α (a_j w_jk)⁺ / P_k − β (a_j w_jk)⁻ / N_k
        q(⊥ | k) = α b_k⁺ / P_k − β b_k⁻ / N_k

    Fallbacks (NRM-SPEC §2): N_k = 0 uses (α, β) = (1, 0); P_k = 0 uses (0, −1); both
    zero sends the column to ⊥.

    Reference: Bach et al., PLoS ONE 2015.
    """

    def __init__(self, alpha: Any = 2, beta: Any = 1, *, stabilizer: Any = 0.0, stabilizer_sign: str = "signed",
                 leak: str = "absorb"):
        check_parameter("AlphaBeta", "alpha", alpha, "AlphaBeta(2, 1)", minimum=None)
        check_parameter("AlphaBeta", "beta", beta, "AlphaBeta(2, 1)")
        if _is_number(alpha) and _is_number(beta) and abs((alpha - beta) - 1) > 1e-12:
            raise RuleParameterError(
                f"AlphaBeta needs alpha - beta = 1 for a normalized measure, got alpha={alpha!r}, beta={beta!r}; "
                "use e.g. AlphaBeta(2, 1) or AlphaBeta(1, 0)"
            )
        super().__init__(stabilizer=stabilizer, stabilizer_sign=stabilizer_sign, leak=leak)
        self.alpha = alpha
        self.beta = beta

    def parameters(self):
        return {"alpha": self.alpha, "beta": self.beta}

    def shares(self):
        return (
            Share((Part(positive, positive), Part(negative, negative)), positive),
            Share((Part(positive, negative), Part(negative, positive)), negative),
        )

    def coefficients(self, ops, denominators):
        p, n = denominators
        one, zero = ops.ones_like(p), ops.zeros_like(p)
        alpha = ops.where(ops.is_zero(n), one, ops.where(ops.is_zero(p), zero, self.alpha * one))
        beta = ops.where(ops.is_zero(n), zero, ops.where(ops.is_zero(p), -one, self.beta * one))
        # both zero: κ/D = 0 for both shares, so the column goes to ⊥ without a flag
        return (alpha, -beta), None


class WSquare(Rule):
    """w² rule.

    Definition::

        q(j | k) = w_jk² / (Σ_j' w_j'k² [+ b_k²]),   q(⊥ | k) = 0 [or b_k² / (…)]

    ``bias=True`` keeps b² in the denominator (zennit's convention); the default
    leaves it out. Ignores the activations (L14).

    Reference: Montavon et al., Pattern Recognition 65, 2017.
    """

    depends_on_input = False

    def __init__(self, *, bias: bool = False, stabilizer: Any = 0.0, stabilizer_sign: str = "signed",
                 leak: str = "absorb"):
        super().__init__(stabilizer=stabilizer, stabilizer_sign=stabilizer_sign, leak=leak)
        self.bias = bias

    def conventions(self):
        out = super().conventions()
        if self.bias:
            out["bias"] = True
        return out

    def shares(self):
        return (Share((Part(ones, square),), square if self.bias else None),)


class Flat(Rule):
    """Flat rule.

    Definition::

        q(j | k) = 1 / |in(k)|,   q(⊥ | k) = 0

    in(k) is the structural fan-in (a convolution's receptive field without padding,
    all inputs of a dense layer). Ignores activations and weights (L14).

    Reference: Lapuschkin et al., *Unmasking Clever Hans predictors and assessing what
    machines really learn*, Nature Communications 10, 2019.
    """

    depends_on_input = False

    def __init__(self, *, stabilizer: Any = 0.0, stabilizer_sign: str = "signed", leak: str = "absorb"):
        super().__init__(stabilizer=stabilizer, stabilizer_sign=stabilizer_sign, leak=leak)

    def shares(self):
        return (Share((Part(ones, ones),), None),)


class ZBox(Rule):
    """z^B rule for a bounded input l ≤ a ≤ h.

    Definition::

        q(j | k) = (a_j w_jk − l_j w_jk⁺ − h_j w_jk⁻) / D_k,   D_k = Σ_j (…),   q(⊥ | k) = 0

    The bias cancels. ``low`` and ``high`` are numbers or tensors of one sample's input
    shape. Meant for the input layer; every term is non-negative inside the box (L14).

    Checked here: both bounds are finite real numbers (or arrays of them, or sympy
    expressions), their shapes broadcast together, and low ≤ high wherever both are
    numbers. Whether a tensor bound fits the layer's input shape can only be known with
    the model, so it is checked when the rule meets its layer (at explain time).

    Reference: Montavon et al., Pattern Recognition 65, 2017.
    """

    input_layer_only = True

    def __init__(self, low: Any, high: Any, *, stabilizer: Any = 0.0, stabilizer_sign: str = "signed",
                 leak: str = "absorb"):
        lo, hi = _bound("ZBox", "low", low), _bound("ZBox", "high", high)
        if lo is not None and hi is not None:
            try:
                lo_b, hi_b = torch.broadcast_tensors(lo, hi)
            except RuntimeError:
                raise RuleParameterError(f"ZBox: low and high must have shapes that broadcast together, got "
                                         f"{tuple(lo.shape)} and {tuple(hi.shape)}; give numbers or tensors of one "
                                         "sample's input shape") from None
            empty = lo_b > hi_b
            if bool(empty.any()):
                where = tuple(int(i) for i in empty.nonzero()[0])
                at = f" at index {where}" if where else ""
                raise RuleParameterError(
                    f"ZBox: low must be <= high everywhere, got low={float(lo_b[where]):g} > high="
                    f"{float(hi_b[where]):g}{at} ({int(empty.sum())} entries); the box [low, high] must contain "
                    "the input: swap the bounds or widen them")
        super().__init__(stabilizer=stabilizer, stabilizer_sign=stabilizer_sign, leak=leak)
        self.low = low
        self.high = high

    def parameters(self):
        return {"low": self.low, "high": self.high}

    def _minus_low(self, ops, a):
        return -ops.fill(a, self.low)

    def _minus_high(self, ops, a):
        return -ops.fill(a, self.high)

    def shares(self):
        return (
            Share((Part(identity, identity), Part(self._minus_low, positive), Part(self._minus_high, negative)), None),
        )


BUILTIN_RULES = (Zero, Epsilon, Gamma, ZPlus, AlphaBeta, WSquare, Flat, ZBox)

RULES: dict[str, type[Rule]] = {cls.__name__: cls for cls in BUILTIN_RULES}
"""The built-in rules by name — the one table every command and parser reads."""


@functools.lru_cache(maxsize=64)
def _representable(eps: float, dtype: torch.dtype) -> bool:
    """Whether ε > 0 stays non-zero in ``dtype`` (1e-300 rounds to 0 in float32)."""
    return bool(torch.tensor(eps, dtype=dtype) != 0)
