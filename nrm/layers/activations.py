"""Elementwise activations beyond ReLU: relevance passes each unchanged, q(j | k) = δ_jk.

This is the identity rule of AttnLRP (Achtibat et al., ICML 2024) and zennit's ``Pass``:
an activation belongs to its neuron (NRM-SPEC §1, §8), so the kernel of its layer is the
identity and the measure is normalized through it whatever σ is. What σ changes is the
value a_k = σ(z_k) the next linear layer's rule reads.

Exact forms (what the exact oracle evaluates):

* piecewise linear or rational with rational breakpoints — ReLU6, Hardtanh, PReLU,
  Hardsigmoid, Hardswish, Hardshrink, Softshrink, Softsign, Threshold, Sign — on fractions, with the
  parameters read from the call (a float parameter is read as the fraction it is exactly);
* transcendental — GELU, SiLU, Sigmoid, Tanh, Tanhshrink, LogSigmoid, Softplus, Mish, ELU,
  SELU, CELU, Exp, Log, Erf — σ in float64, read as fractions (the base class's default): σ(z) has no
  exact rational value, so the oracle takes the float64 value torch computes and is exact in
  everything after it.

Law L9 (LRP-0 = Gradient × Input) needs σ(z) = σ'(z)·z for every z (``homogeneous``):
true of PReLU, Hardshrink and Abs only. A clamp is not homogeneous (on the flat part σ' = 0
while σ(z) ≠ 0), nor is any smooth activation here; L9 is reported not applicable for models using them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Elementwise, seeded

_NN = torch._C._nn
HALF, ONE, SIX = Fraction(1, 2), Fraction(1), Fraction(6)


def elementwise_exact(z, sigma: Callable[[Fraction], Fraction]) -> np.ndarray:
    """``sigma`` applied to every entry of an object array of fractions, same shape."""
    flat = [sigma(v) for v in np.asarray(z).reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(np.shape(z))


def clamp(v: Fraction, low: Fraction, high: Fraction) -> Fraction:
    return low if v < low else high if v > high else v


# -- piecewise linear -------------------------------------------------------------------------------


class Hardtanh(Elementwise):
    """σ(z) = min(max(z, a), b) (``F.hardtanh``, ``nn.Hardtanh``; a = ``min_val``,
    b = ``max_val``). Kernel δ_jk (the identity rule). Exact on fractions: the clamp at a and
    b read as fractions. Not homogeneous — on the flat parts σ'(z) = 0 while σ(z) = a or b —
    so L9 (LRP-0 = Gradient × Input) does not hold through it and is reported not applicable."""

    functions = (F.hardtanh, _NN.hardtanh, _NN.hardtanh_)

    def examples(self):
        return [(nn.Hardtanh(-0.5, 0.5).eval(), (3,)), (nn.Hardtanh(-1.0, 0.25, inplace=True).eval(), (2, 2, 2))]

    def bounds(self, call) -> tuple[float, float]:
        return float(call.arg(1, "min_val", -1.0)), float(call.arg(2, "max_val", 1.0))

    def accepts(self, call):
        low, high = self.bounds(call)
        return None if low <= high else f"min_val {low} > max_val {high}"

    def exact(self, call, z):
        low, high = (Fraction(b) for b in self.bounds(call))
        return elementwise_exact(z, lambda v: clamp(v, low, high))

    def evaluate(self, call, z):
        return F.hardtanh(z, *self.bounds(call))


class Clamp(Elementwise):
    """σ(z) = min(max(z, a), b) for ``torch.clamp``, ``clamp_min``, ``clamp_max``, ``clip`` (and
    their ``Tensor`` methods) with constant number bounds, either of which may be absent
    (a = −∞, b = +∞): the ε floor of a norm (``F.normalize``'s max(‖x‖, ε), read through
    :class:`~nrm.layers.fused.NormalizeDecomposition`). Kernel δ_jk (the identity rule), as
    :class:`Hardtanh`, the same function with both bounds. Exact on fractions: the clamp at a
    and b read as fractions. Not homogeneous (σ' = 0 on the clamped part while σ(z) ≠ 0): L9
    is reported not applicable through it. An infinite bound on the side it does not clamp
    (a = −∞, b = +∞) is absent. Refused: a bound that is a tensor or not a finite number
    otherwise, a > b, ``out=``."""

    functions = (torch.clamp, torch.Tensor.clamp, torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_max,
                 torch.Tensor.clamp_max, torch.clip, torch.Tensor.clip)

    def examples(self):
        return [(Clamped(-0.5, 0.25).eval(), (3,)), (Clamped(0.1, None).eval(), (2, 2)),
                (Clamped(None, 0.3).eval(), (2, 2))]

    def bounds(self, call) -> tuple:
        """(a, b) as given: a number or None (absent; a = −∞ and b = +∞ clamp nothing and are
        read as absent — Mamba-2's ``torch.clamp(dt, 0.0, float("inf"))``)."""
        name = getattr(call.func, "__name__", "")
        if name == "clamp_min":
            low, high = call.arg(1, "min"), None
        elif name == "clamp_max":
            low, high = None, call.arg(1, "max")
        else:
            low, high = call.arg(1, "min", None), call.arg(2, "max", None)
        if isinstance(low, float) and low == -math.inf:
            low = None
        if isinstance(high, float) and high == math.inf:
            high = None
        return low, high

    def accepts(self, call):
        if call.kwargs.get("out") is not None:
            return "writes into out="
        bounds = self.bounds(call)
        for b in bounds:
            if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b)):
                return f"clamps at {b!r}; nrm reads constant finite numbers as bounds"
        if all(b is None for b in bounds):
            return "clamps at neither bound"
        low, high = bounds
        if low is not None and high is not None and low > high:
            return f"clamps with min {low} > max {high}"
        return None

    def evaluate(self, call, z):
        low, high = self.bounds(call)
        return torch.clamp(z, low, high)

    def exact(self, call, z):
        low, high = (None if b is None else Fraction(b) for b in self.bounds(call))

        def sigma(v: Fraction) -> Fraction:  # torch's order: min(max(v, a), b)
            v = v if low is None or v >= low else low
            return v if high is None or v <= high else high

        return elementwise_exact(z, sigma)


class Clamped(nn.Module):
    """tanh(x) clamped (an example of :class:`Clamp`): ``torch.clamp(h, a, b)``, ``h.clamp_min(a)``
    or ``h.clamp_max(b)``."""

    def __init__(self, low, high):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x):
        h = torch.tanh(x)
        if self.high is None:
            return h.clamp_min(self.low)
        if self.low is None:
            return h.clamp_max(self.high)
        return torch.clamp(h, self.low, self.high)


class ReLU6(Hardtanh):
    """σ(z) = min(max(z, 0), 6) (``F.relu6``; ``nn.ReLU6`` calls ``F.hardtanh(z, 0, 6)``,
    read here too). Kernel δ_jk (the identity rule). Exact on fractions. Not homogeneous (a
    clamp: σ(z) = 6 with σ'(z) = 0 for z > 6), so L9 is reported not applicable."""

    functions = (F.relu6, _NN.relu6, _NN.relu6_) + Hardtanh.functions

    def examples(self):
        return [(nn.ReLU6().eval(), (3,)), (nn.ReLU6(inplace=True).eval(), (2, 3))]

    def bounds(self, call):
        if call.func in Hardtanh.functions:
            return super().bounds(call)
        return 0.0, 6.0

    def accepts(self, call):
        return None if self.bounds(call) == (0.0, 6.0) else "a hardtanh with bounds other than (0, 6)"


class PReLU(Elementwise):
    """σ(z) = z for z ≥ 0, w_c·z otherwise, with a learned slope w_c per channel (dimension 1)
    or one for all (``F.prelu``, ``nn.PReLU``). Kernel δ_jk (the identity rule). Exact on
    fractions: each slope read as the fraction its float is. Positively homogeneous,
    σ(z) = σ'(z)·z for every z, so LRP-0 through it is Gradient × Input (L9 holds)."""

    functions = (F.prelu, torch.prelu, torch.Tensor.prelu)
    homogeneous = True

    def examples(self):
        return [(seeded(nn.PReLU(3), 3), (3, 2)), (nn.PReLU().double().eval(), (4,))]

    def weight(self, call) -> torch.Tensor:
        return call.arg(1, "weight")

    def accepts(self, call):
        return None if isinstance(self.weight(call), torch.Tensor) else "its weight is not a tensor"

    def slopes(self, call, n: int) -> np.ndarray:
        """The slope of each of the n per-sample neurons (flat), as fractions."""
        w = self.weight(call).detach()
        shape = call.in_shapes[0] if call.in_shapes else (1, n)
        minus = -torch.ones((1,) + tuple(shape[1:]), dtype=w.dtype, device=w.device)
        per_neuron = -torch.prelu(minus, w)  # prelu(-1) = -w_c: w broadcast as torch does
        values = per_neuron.reshape(-1).to("cpu", torch.float64).tolist()
        if len(values) != n:
            raise ValueError(f"PReLU: {n} values for a layer of {len(values)} neurons")
        return np.array([Fraction(v) for v in values], dtype=object)

    def exact(self, call, z):
        flat = np.asarray(z).reshape(-1)
        slopes = self.slopes(call, len(flat))
        out = np.array([v if v >= 0 else s * v for v, s in zip(flat, slopes)], dtype=object)
        return out.reshape(np.shape(z))

    def evaluate(self, call, z):
        return torch.prelu(z, self.weight(call).detach())


class Hardsigmoid(Elementwise):
    """σ(z) = min(max(z/6 + 1/2, 0), 1) (``F.hardsigmoid``, ``nn.Hardsigmoid``). Kernel δ_jk
    (the identity rule). Piecewise rational: exact on fractions. Not homogeneous (σ(0) = 1/2),
    so L9 is reported not applicable."""

    functions = (F.hardsigmoid, _NN.hardsigmoid, _NN.hardsigmoid_)
    gate = True

    def examples(self):
        return [(nn.Hardsigmoid().eval(), (3,)), (nn.Hardsigmoid(inplace=True).eval(), (2, 2))]

    def exact(self, call, z):
        return elementwise_exact(z, lambda v: clamp(v / SIX + HALF, Fraction(0), ONE))

    def evaluate(self, call, z):
        return F.hardsigmoid(z)


class Hardswish(Elementwise):
    """σ(z) = z · min(max(z/6 + 1/2, 0), 1) = z · hardsigmoid(z) (``F.hardswish``,
    ``nn.Hardswish``). Kernel δ_jk (the identity rule). Piecewise rational: exact on fractions.
    Not homogeneous (σ'(z)·z = 2z²/6 + z/2 ≠ σ(z) = z²/6 + z/2 on (−3, 3)), so L9 is reported
    not applicable."""

    functions = (F.hardswish, _NN.hardswish, _NN.hardswish_)

    def examples(self):
        return [(nn.Hardswish().eval(), (3,)), (nn.Hardswish(inplace=True).eval(), (2, 2))]

    def exact(self, call, z):
        return elementwise_exact(z, lambda v: v * clamp(v / SIX + HALF, Fraction(0), ONE))

    def evaluate(self, call, z):
        return F.hardswish(z)


class Hardshrink(Elementwise):
    """σ(z) = z where |z| > λ, else 0 (``F.hardshrink``, ``torch.hardshrink``,
    ``Tensor.hardshrink``, ``nn.Hardshrink``; λ = ``lambd``, 0.5 by default). Kernel δ_jk (the
    identity rule). Piecewise linear: exact on fractions, λ read as the fraction its float is.
    Homogeneous (σ'(z)·z = σ(z) on both pieces, like ReLU), so L9 holds through it."""

    functions = (torch.hardshrink, torch.Tensor.hardshrink)
    homogeneous = True

    def examples(self):
        return [(nn.Hardshrink().eval(), (3,)), (nn.Hardshrink(lambd=0.25).eval(), (2, 2))]

    def lambd(self, call) -> float:
        return float(call.arg(1, "lambd", 0.5))

    def accepts(self, call):
        return None if self.lambd(call) >= 0 else f"lambd {self.lambd(call)} < 0"

    def exact(self, call, z):
        lam = Fraction(self.lambd(call))
        return elementwise_exact(z, lambda v: v if abs(v) > lam else Fraction(0))

    def evaluate(self, call, z):
        return torch.hardshrink(z, self.lambd(call))


class Softshrink(Hardshrink):
    """σ(z) = z − λ where z > λ, z + λ where z < −λ, else 0 (``F.softshrink``,
    ``nn.Softshrink``; λ = ``lambd``, 0.5 by default). Kernel δ_jk (the identity rule).
    Piecewise linear: exact on fractions. Not homogeneous (σ'(z)·z = z ≠ σ(z) where |z| > λ > 0):
    L9 is reported not applicable."""

    functions = (F.softshrink, _NN.softshrink)
    homogeneous = False

    def examples(self):
        return [(nn.Softshrink().eval(), (3,)), (nn.Softshrink(lambd=0.25).eval(), (2, 2))]

    def exact(self, call, z):
        lam = Fraction(self.lambd(call))
        return elementwise_exact(z, lambda v: v - lam if v > lam else v + lam if v < -lam else Fraction(0))

    def evaluate(self, call, z):
        return F.softshrink(z, self.lambd(call))


class Softsign(Elementwise):
    """σ(z) = z / (1 + |z|) (``F.softsign``, ``nn.Softsign``). Kernel δ_jk (the identity rule).
    Rational: exact on fractions. Not homogeneous (σ'(z)·z = z / (1 + |z|)² ≠ σ(z) for z ≠ 0): L9
    is reported not applicable."""

    functions = (F.softsign,)

    def examples(self):
        return [(nn.Softsign().eval(), (3,))]

    def exact(self, call, z):
        return elementwise_exact(z, lambda v: v / (1 + abs(v)))

    def evaluate(self, call, z):
        return F.softsign(z)


class Threshold(Elementwise):
    """σ(z) = z where z > t, else v (``F.threshold``, ``torch.threshold``, ``nn.Threshold``; t =
    ``threshold``, v = ``value``). Kernel δ_jk (the identity rule). Piecewise linear: exact on
    fractions, t and v read as the fractions their floats are. Not homogeneous unless v = 0
    (σ(z) = v ≠ 0 = σ'(z)·z on the flat part): L9 is reported not applicable."""

    functions = (F.threshold, torch.threshold, torch.threshold_)

    def examples(self):
        return [(nn.Threshold(0.25, -0.5).eval(), (3,)), (nn.Threshold(0.0, 2.0).eval(), (2, 2))]

    def parameters(self, call) -> tuple[float, float]:
        return float(call.arg(1, "threshold")), float(call.arg(2, "value"))

    def accepts(self, call):
        t, v = self.parameters(call)
        if not (math.isfinite(t) and math.isfinite(v)):
            return f"thresholds at {t} with value {v}; nrm reads finite numbers"
        return None

    def exact(self, call, z):
        t, v = (Fraction(p) for p in self.parameters(call))
        return elementwise_exact(z, lambda x: x if x > t else v)

    def evaluate(self, call, z):
        return F.threshold(z, *self.parameters(call))


# -- smooth (transcendental): exact given σ's float64 value ------------------------------------------


class Smooth(Elementwise):
    """A transcendental activation: σ(z) has no exact rational value, so its exact form is
    the base class's default, σ in float64 read as fractions — everything after the
    activation is exact given its float64 value. Not homogeneous: L9 does not apply."""

    def evaluate(self, call, z):
        raise NotImplementedError(f"{self.name} must define evaluate(call, z)")  # abstract


class GELU(Smooth):
    """σ(z) = z·Φ(z) (``approximate='none'``, Φ the standard normal CDF) or
    z·(1 + tanh(√(2/π)(z + 0.044715 z³)))/2 (``approximate='tanh'``) (``F.gelu``, ``nn.GELU``).
    Kernel δ_jk (the identity rule). Exact given σ's float64 value (transcendental). Not
    homogeneous (σ'(z)·z ≠ σ(z)): L9 is reported not applicable."""

    functions = (F.gelu, _NN.gelu_)

    def examples(self):
        return [(nn.GELU().eval(), (3,)), (nn.GELU(approximate="tanh").eval(), (2, 2))]

    def approximate(self, call) -> str:
        return call.arg(1, "approximate", "none")

    def accepts(self, call):
        mode = self.approximate(call)
        return None if mode in ("none", "tanh") else f"approximate={mode!r} (torch knows 'none' and 'tanh')"

    def evaluate(self, call, z):
        return F.gelu(z, approximate=self.approximate(call))


class SiLU(Smooth):
    """σ(z) = z·s(z), s the logistic sigmoid (swish; ``F.silu``, ``nn.SiLU``). Kernel δ_jk (the
    identity rule). Exact given σ's float64 value (transcendental). Not homogeneous: L9 is
    reported not applicable."""

    functions = (F.silu, _NN.silu, _NN.silu_)

    def examples(self):
        return [(nn.SiLU().eval(), (3,)), (nn.SiLU(inplace=True).eval(), (2, 2))]

    def evaluate(self, call, z):
        return F.silu(z)


class Sigmoid(Smooth):
    """σ(z) = 1 / (1 + e^{−z}) (``torch.sigmoid``, ``Tensor.sigmoid``, ``F.sigmoid``,
    ``torch.special.expit``, ``nn.Sigmoid``, and in place). Kernel δ_jk (the identity rule).
    Exact given σ's float64 value (transcendental). Not homogeneous (σ(0) = 1/2): L9 is
    reported not applicable."""

    functions = (torch.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid, torch.Tensor.sigmoid_, F.sigmoid,
                 torch.special.expit)
    gate = True

    def examples(self):
        return [(nn.Sigmoid().eval(), (3,))]

    def evaluate(self, call, z):
        return torch.sigmoid(z)


class Tanh(Smooth):
    """σ(z) = tanh(z) (``torch.tanh``, ``Tensor.tanh``, ``F.tanh``, ``nn.Tanh``, and in place).
    Kernel δ_jk (the identity rule). Exact given σ's float64 value (transcendental). Not
    homogeneous (σ'(z)·z ≠ tanh z for z ≠ 0): L9 is reported not applicable."""

    functions = (torch.tanh, torch.tanh_, torch.Tensor.tanh, torch.Tensor.tanh_, F.tanh)

    def examples(self):
        return [(nn.Tanh().eval(), (3,))]

    def evaluate(self, call, z):
        return torch.tanh(z)


class Softplus(Smooth):
    """σ(z) = log(1 + e^{βz}) / β, and z where βz > threshold (``F.softplus``, ``nn.Softplus``;
    β = ``beta``). Kernel δ_jk (the identity rule). Exact given σ's float64 value
    (transcendental). Not homogeneous (σ(0) = log 2 / β): L9 is reported not applicable."""

    functions = (F.softplus,)

    def examples(self):
        return [(nn.Softplus().eval(), (3,)), (nn.Softplus(beta=2.0, threshold=1.0).eval(), (2, 2))]

    def parameters(self, call) -> tuple[float, float]:
        return float(call.arg(1, "beta", 1.0)), float(call.arg(2, "threshold", 20.0))

    def evaluate(self, call, z):
        beta, threshold = self.parameters(call)
        return F.softplus(z, beta, threshold)


class Tanhshrink(Smooth):
    """σ(z) = z − tanh(z) (``F.tanhshrink``, ``nn.Tanhshrink``). Kernel δ_jk (the identity rule).
    Exact given σ's float64 value (transcendental). Not homogeneous: L9 is reported not applicable."""

    functions = (F.tanhshrink,)

    def examples(self):
        return [(nn.Tanhshrink().eval(), (3,))]

    def evaluate(self, call, z):
        return F.tanhshrink(z)


class LogSigmoid(Smooth):
    """σ(z) = log(1 / (1 + e^{−z})) (``F.logsigmoid``, ``nn.LogSigmoid``). Kernel δ_jk (the identity
    rule). Exact given σ's float64 value (transcendental). Not homogeneous: L9 is reported not
    applicable."""

    functions = (F.logsigmoid,)

    def examples(self):
        return [(nn.LogSigmoid().eval(), (3,))]

    def evaluate(self, call, z):
        return F.logsigmoid(z)


class Mish(Smooth):
    """σ(z) = z·tanh(softplus(z)) (``F.mish``, ``nn.Mish``). Kernel δ_jk (the identity rule).
    Exact given σ's float64 value (transcendental). Not homogeneous: L9 is reported not
    applicable."""

    functions = (F.mish, _NN.mish, _NN.mish_)

    def examples(self):
        return [(nn.Mish().eval(), (3,)), (nn.Mish(inplace=True).eval(), (2, 2))]

    def evaluate(self, call, z):
        return F.mish(z)


class ELU(Smooth):
    """σ(z) = z for z > 0, α(e^z − 1) otherwise (``F.elu``, ``F.elu_``, ``nn.ELU``; α =
    ``alpha``; torch's ``elu`` with ``scale`` s and ``input_scale`` r: s·z, s·α(e^{rz} − 1)).
    Kernel δ_jk (the identity rule). Exact given σ's float64 value (transcendental). Not
    homogeneous (σ'(z)·z = αz e^z ≠ σ(z) for z < 0): L9 is reported not applicable."""

    functions = (F.elu, _NN.elu, _NN.elu_)

    def examples(self):
        return [(nn.ELU().eval(), (3,)), (nn.ELU(alpha=0.5, inplace=True).eval(), (2, 2))]

    def parameters(self, call) -> tuple[float, float, float]:
        """(α, scale, input_scale); ``F.elu``'s third argument is ``inplace``, not a scale."""
        alpha = float(call.arg(1, "alpha", 1.0))
        if call.func is F.elu:
            return alpha, 1.0, 1.0
        return alpha, float(call.arg(2, "scale", 1.0)), float(call.arg(3, "input_scale", 1.0))

    def evaluate(self, call, z):
        return _NN.elu(z, *self.parameters(call))


class Exp(Smooth):
    """σ(z) = e^z (``torch.exp``, ``Tensor.exp``, and in place; the numerator of a softmax
    written by hand, whose division by Σ e^z is then a product for the user's split). Kernel
    δ_jk (the identity rule). Exact given σ's float64 value (transcendental). Not homogeneous
    (σ'(z)·z = z e^z ≠ e^z): L9 is reported not applicable. It reads a masked value (−∞,
    recorded as finfo.min: Mamba-2's segment sums, exp(−∞) on the masked triangle) as the model
    does: e^(finfo.min) = e^(−∞) = 0."""

    functions = (torch.exp, torch.exp_, torch.Tensor.exp, torch.Tensor.exp_)
    reads_masks = True  # exp(−∞) = exp(finfo.min) = 0: a masked entry gives 0 either way (nrm.capture)

    def examples(self):
        return [(Applied(torch.exp).eval(), (3,)), (Applied(torch.Tensor.exp_).eval(), (3,))]

    def evaluate(self, call, z):
        return torch.exp(z)


class Log(Smooth):
    """σ(z) = log z (``torch.log``, ``Tensor.log``, and in place), defined for z > 0: a
    non-positive z gives −∞ or NaN, which the engine refuses by name (``NonFiniteError``).
    Kernel δ_jk (the identity rule). Exact given σ's float64 value. Not homogeneous: L9 is
    reported not applicable."""

    functions = (torch.log, torch.log_, torch.Tensor.log, torch.Tensor.log_)

    def examples(self):
        return [(Applied(lambda h: torch.log(torch.exp(h) + 1.0)).eval(), (3,))]

    def evaluate(self, call, z):
        return torch.log(z)


class Erf(Smooth):
    """σ(z) = erf(z) = (2/√π) ∫₀ᶻ e^{−t²} dt (``torch.erf``, ``Tensor.erf``, ``torch.special.erf``,
    and in place; the Gauss error function of a GELU written by hand, x · (1 + erf(x/√2)) / 2,
    whose product is then read as that activation of x: :mod:`nrm.graph`, a product's own signal).
    Kernel δ_jk (the identity rule). Exact given σ's float64 value (transcendental). Not
    homogeneous (σ'(z)·z ≠ erf z for z ≠ 0): L9 is reported not applicable."""

    functions = (torch.erf, torch.erf_, torch.Tensor.erf, torch.Tensor.erf_, torch.special.erf)

    def examples(self):
        return [(Applied(torch.erf).eval(), (3,)), (Applied(torch.Tensor.erf_).eval(), (3,))]

    def evaluate(self, call, z):
        return torch.erf(z)


class Sign(Elementwise):
    """σ(z) = sign(z) ∈ {−1, 0, 1} (``torch.sign``, ``Tensor.sign``, ``torch.sgn`` of a real
    tensor, and in place; |x| written as ``x.sign() * x``, whose product is then read as an
    activation of x). Kernel δ_jk (the identity rule). Exact on fractions. Not homogeneous
    (σ'(z)·z = 0 ≠ sign z for z ≠ 0): L9 is reported not applicable."""

    functions = (torch.sign, torch.Tensor.sign, torch.Tensor.sign_, torch.sgn, torch.Tensor.sgn,
                 torch.Tensor.sgn_)

    def examples(self):
        return [(Applied(torch.sign).eval(), (3,)), (Applied(torch.Tensor.sgn_).eval(), (3,))]

    def exact(self, call, z):
        return elementwise_exact(z, lambda v: Fraction((v > 0) - (v < 0)))

    def evaluate(self, call, z):
        return torch.sign(z)


class Abs(Elementwise):
    """σ(z) = |z| (``torch.abs``, ``Tensor.abs``, ``torch.absolute``, and in place). Kernel δ_jk
    (the identity rule). Homogeneous (σ'(z)·z = sign(z)·z = |z|): LRP-0 through it is Gradient ×
    Input (L9 holds). Exact on fractions."""

    functions = (torch.abs, torch.abs_, torch.Tensor.abs, torch.Tensor.abs_, torch.absolute,
                 torch.Tensor.absolute)
    homogeneous = True

    def examples(self):
        return [(Applied(torch.abs).eval(), (3,)), (Applied(torch.Tensor.abs_).eval(), (3,))]

    def exact(self, call, z):
        return elementwise_exact(z, abs)

    def evaluate(self, call, z):
        return torch.abs(z)


class Applied(nn.Module):
    """A linear map, then ``fn`` (an example of :class:`Exp`, :class:`Log`, :class:`Abs`, :class:`Erf`
    and :class:`Sign`)."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.fc = fn, seeded(nn.Linear(3, 3), 9)

    def forward(self, x):
        return self.fn(self.fc(x))


class SELU(Smooth):
    """σ(z) = λz for z > 0, λα(e^z − 1) otherwise, with Klambauer et al.'s fixed
    λ = 1.0507009873554805, α = 1.6732632423543772 (``F.selu``, ``torch.selu``, ``nn.SELU``,
    self-normalizing networks). Kernel δ_jk (the identity rule). Exact given σ's float64 value
    (transcendental). Not homogeneous (σ'(z)·z = λαz e^z ≠ σ(z) for z < 0): L9 is reported not
    applicable."""

    functions = (F.selu, torch.selu, torch.selu_)

    def examples(self):
        return [(nn.SELU().eval(), (3,)), (nn.SELU(inplace=True).eval(), (2, 2))]

    def evaluate(self, call, z):
        return torch.selu(z)


class CELU(Smooth):
    """σ(z) = max(0, z) + min(0, α(e^{z/α} − 1)) (``F.celu``, ``torch.celu``, ``nn.CELU``;
    α = ``alpha``). Kernel δ_jk (the identity rule). Exact given σ's float64 value
    (transcendental). Not homogeneous (σ'(z)·z = z e^{z/α} ≠ σ(z) for z < 0): L9 is reported
    not applicable."""

    functions = (F.celu, torch.celu, torch.celu_)

    def examples(self):
        return [(nn.CELU().eval(), (3,)), (nn.CELU(alpha=0.5, inplace=True).eval(), (2, 2))]

    def evaluate(self, call, z):
        return torch.celu(z, float(call.arg(1, "alpha", 1.0)))
