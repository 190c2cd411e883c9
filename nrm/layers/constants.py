"""Operations of one input-derived tensor with a constant that transformers are made of
(issue 14): a constant added (position embeddings, an additive attention mask, a norm's ε), a
constant selection (``torch.where(mask, x, c)``, ``masked_fill``: a causal mask), a negation
(rotary embeddings' ``rotate_half``), a power and a reciprocal square root (the statistics of
RMSNorm), ``expand`` (grouped-query attention's ``repeat_kv``), and an activation placed among
constants (a class token, ``F.pad``). Each is a diagonal linear map, a placement, an elementwise
function or an index map of its one input (``docs/attention.md``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..linear import DiagonalMap, PlaceMap
from ..markers import Scale, Shift
from ..recorded import Value
from .base import Alias, Elementwise, ExactMap, Linear, Reshape, seeded, to_fractions, zeros_object

__all__ = ["Shift", "AddConstant", "Select", "Negate", "Power", "Rsqrt", "Expand", "CatConstant", "Pad", "Unpadded"]
# Shift, the rule key of the constants, is nrm.markers.Shift (one rule key for additive constants)


_SUBTRACTIONS = ("sub", "sub_", "__sub__", "__isub__", "subtract")


def _constant_shape_refusal(call, constant) -> str | None:
    """Why ``constant`` (a number or a tensor not computed from the input) cannot be read as a
    per-sample constant of the call's input-derived operand, or None."""
    if isinstance(constant, bool) or not isinstance(constant, (int, float, torch.Tensor)):
        return f"combines with {type(constant).__name__}; nrm reads a constant tensor or number"
    if isinstance(constant, torch.Tensor) and (constant.is_complex() or not constant.is_floating_point()):
        return f"combines with a constant of dtype {constant.dtype}"
    shape, out = tuple(call.in_shapes[0]), tuple(call.output.shape)
    if shape != out:
        return (f"broadcasts an input of shape {shape} to {out}: the constant enlarges it; nrm reads constants that "
                "keep the input's shape")
    if isinstance(constant, torch.Tensor) and constant.dim() == len(out) and not _same_for_every_sample(constant):
        if call.batch and out[0] != call.batch:  # the input folds each sample into rows (docs/capture.md)
            return ("combines with a constant that differs between the rows that fold one sample (one per head or "
                    "window, as BLOOM's ALiBi bias); nrm reads a constant that is the same for every row")
        return "combines with a constant that differs between samples (one per sample); give one per-sample shape"
    t = torch.as_tensor(constant, dtype=torch.float64) if not isinstance(constant, torch.Tensor) else constant
    if bool((torch.isnan(t) | torch.isposinf(t)).any()):
        return ("combines with +inf or NaN; nrm reads finite constants and −inf (a mask: masked_fill(mask, -inf), an "
                "additive −inf mask)")
    return None


def masked(t: torch.Tensor) -> torch.Tensor:
    """A recorded value with its −inf entries (masked scores) as ``finfo(dtype).min``, the finite
    mask value nrm records (``docs/attention.md``, Masks): exp(finfo.min − m) and exp(−∞) are both
    0, so the softmax that reads it gives the model's value exactly. ``t`` itself when it has none."""
    if not t.is_floating_point() or not bool(torch.isneginf(t).any()):
        return t
    return t.clamp(min=torch.finfo(t.dtype).min)


def _same_for_every_sample(t: torch.Tensor) -> bool:
    """Whether a constant with a batch dimension holds one value per sample position for the whole
    batch (transformers expands one causal mask to (B, 1, T, S)): it is then read as its first sample."""
    return t.shape[0] == 1 or bool((t == t[:1]).all())


def _per_sample(c, like: torch.Tensor, dtype: torch.dtype | None = None, clamp: bool = True) -> torch.Tensor:
    """A constant broadcast to one sample's shape of ``like``, in its dtype and device; a −inf
    entry (a mask) becomes ``finfo(dtype).min`` — ``dtype`` the call's (``like``'s by default) —
    unless ``clamp`` is False."""
    c = (c.detach() if isinstance(c, torch.Tensor) else torch.tensor(c, dtype=torch.float64))
    floor = torch.finfo(dtype or like.dtype).min
    c = c.to(torch.float64)
    c = (c.clamp(min=floor) if clamp else c).to(like.dtype).to(like.device)
    per = tuple(like.shape[1:])
    if c.dim() == len(per) + 1:
        c = c[0]
    return torch.broadcast_to(c, per).contiguous()


def _diagonal_exact(weight: torch.Tensor, bias: torch.Tensor | None, shape: tuple) -> ExactMap:
    """The exact form of a diagonal map: its float64 weights and bias read as fractions."""
    n = math.prod(shape)
    w = to_fractions(weight.double().reshape(-1))
    W = zeros_object((n, n))
    W[np.arange(n), np.arange(n)] = list(w) if n else []
    S = np.eye(n, dtype=bool)  # each neuron's one edge, as the engine's DiagonalMap has it (also at weight 0)
    b = None if bias is None else to_fractions(bias.double().reshape(-1))
    return ExactMap(W, S, b, shape)


class AddConstant(Linear):
    """``x + c``, ``c + x``, ``x - c``, ``c - x``, ``torch.add``, ``torch.sub``, ``x += c`` with one
    input-derived operand x and a constant c (a parameter, a buffer, a tensor computed without
    the input, a number) that keeps x's shape: a position embedding added to the input
    embeddings, an additive attention mask (0 or ``finfo.min``), a norm's ε. A diagonal linear
    map with the constant as its bias (rule key :class:`Shift`): the constant goes to ⊥.

    Definition (α the ``alpha=`` factor of torch.add/sub, 1 by default; it scales the second
    operand, and the input in c − x)::

        z_k = w a_k + b_k,   (w, b_k) = (1, ±α c_k) for x ± c,  (α, c_k) for c + x,  (−α, c_k) for c − x
        LRP-0: q(a_k | z_k) = w a_k / z_k,  q(⊥ | z_k) = b_k / z_k

    **Masks** (``docs/attention.md``, Masks). A constant −inf, or a sum that overflows to −inf
    (GPT-2's eager attention adds its ``finfo.min`` mask to scores already set to ``finfo.min``),
    is a masked neuron: −∞ + a = −∞ whatever a, so it has no parent — weight 0, bias the mask
    value m = ``finfo(dtype).min``, and the capture records it as m (:func:`masked`)::

        saturated k (w a_k + b_k = −∞ in the call's dtype):  z_k = 0 · a_k + m,  q(⊥ | z_k) = 1

    A finite ``finfo.min`` bias keeps weight w. Either way the softmax after it maps the neuron to
    0 exactly, so it takes no relevance. +inf or NaN constants and outputs are refused. The
    −∞ pattern must be the same for every sample. Exact form: the bias as its float64 value.
    """

    masks = True  # its −inf outputs are recorded as finfo.min (nrm.capture)
    reads_masks = True  # a further mask keeps −inf as −inf (nrm.capture)
    functions = (torch.Tensor.add, torch.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__radd__,
                 torch.Tensor.__iadd__, torch.Tensor.sub, torch.sub, torch.subtract, torch.Tensor.sub_,
                 torch.Tensor.__sub__, torch.Tensor.__rsub__, torch.Tensor.__isub__)
    rule_types = (Shift,)

    def examples(self):
        return [(Shifted(3), (2, 3)), (Shifted(2, how="rsub"), (2,))]

    def operands(self, call) -> tuple:
        other = call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        return call.args[0], other

    def coefficients(self, call) -> tuple[float, float]:
        """(w, β) with z = w x + β c: torch.add/sub(input, other, alpha=α) is input ± α·other and
        ``__rsub__`` (c − x) is c − α x, so α scales the second operand."""
        a, _ = self.operands(call)
        name, alpha, first = getattr(call.func, "__name__", ""), self.alpha(call), isinstance(a, Value)
        if name == "__rsub__":
            return -alpha, 1.0
        if name in _SUBTRACTIONS:
            return (1.0, -alpha) if first else (-alpha, 1.0)
        return (1.0, alpha) if first else (alpha, 1.0)

    def alpha(self, call) -> float:
        return call.kwargs.get("alpha", call.args[2] if len(call.args) > 2 else 1)

    def accepts(self, call):
        a, b = self.operands(call)
        if isinstance(a, Value) and isinstance(b, Value):
            if getattr(call.func, "__name__", "").endswith("_") or "__i" in getattr(call.func, "__name__", ""):
                return ("adds or subtracts two input-derived tensors in place (a -= b, sub_); nrm reads the "
                        "out-of-place form, a = a - b (a sum of branches after a negation)")
            return ("adds two input-derived tensors with alpha= or of different dtypes (nrm.layers.Add reads a sum "
                    "of branches: a + b, a - b)")
        alpha = self.alpha(call)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
            return f"adds with alpha={alpha!r}; nrm reads a finite number"
        why = _constant_shape_refusal(call, b if isinstance(a, Value) else a)
        out = call.output
        if why is None and bool((torch.isnan(out) | torch.isposinf(out)).any()):
            why = "overflows to +inf or NaN; nrm reads finite values and −inf (a mask)"
        if why is None and not _same_for_every_sample(torch.isneginf(out)):
            why = ("masks (−inf) different positions in different samples; explain such samples one at a time")
        return why

    def constant(self, call, like: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """The constant c of one sample (−inf as the mask value unless ``clamp`` is False)."""
        a, b = self.operands(call)
        return _per_sample(b if isinstance(a, Value) else a, like, call.output.dtype, clamp)

    def saturated(self, call, like: torch.Tensor) -> torch.Tensor:
        """Where w a_k + β c_k is −inf in the call's dtype (a masked neuron), one sample's shape."""
        w, beta = self.coefficients(call)
        x = like.to(call.output.dtype)
        z = w * x + beta * self.constant(call, x, clamp=False)
        return torch.isneginf(z).any(0).to(like.device)

    def bias(self, call, like: torch.Tensor) -> torch.Tensor:
        b = self.constant(call, like) * self.coefficients(call)[1]
        return b.masked_fill(self.saturated(call, like), torch.finfo(call.output.dtype).min)

    def weight(self, call, like: torch.Tensor) -> torch.Tensor:
        w = torch.full(tuple(like.shape[1:]), float(self.coefficients(call)[0]), dtype=like.dtype, device=like.device)
        return w.masked_fill(self.saturated(call, like), 0.0)

    def map(self, call, a, rule=None):
        return DiagonalMap(self.weight(call, a), self.bias(call, a))

    def exact(self, call, a, rule=None) -> ExactMap:
        a = a.double()
        return _diagonal_exact(self.weight(call, a), self.bias(call, a), tuple(a.shape[1:]))


class Select(Linear):
    """``torch.where(mask, x, c)``, ``torch.where(mask, c, x)`` and ``x.masked_fill(mask, c)`` with
    a constant boolean mask (not computed from the input) and a constant c: a causal mask
    (GPT-2's ``torch.where(causal_mask, w, finfo.min)``). A diagonal linear map (rule key
    :class:`Shift`): a kept neuron has weight 1 and no bias, a replaced one weight 0 and the
    constant as its bias — it has no parent, and its relevance goes to ⊥.

    Definition (m_k = 1 where x is kept)::

        z_k = m_k a_k + (1 − m_k) c_k;    q(a_k | z_k) = m_k a_k / z_k (LRP-0), q(⊥ | z_k) = (1 − m_k) c_k / z_k

    A constant c = −inf (``masked_fill(mask, float("-inf"))``) is a mask: its bias is the mask
    value ``finfo(dtype).min``, the value the capture records there (:func:`masked`); +inf and
    NaN are refused. Exact form: c as its float64 value."""

    masks = True  # its −inf outputs are recorded as finfo.min (nrm.capture)
    reads_masks = True  # a further mask keeps −inf as −inf (nrm.capture)

    functions = (torch.where, torch.Tensor.where, torch.Tensor.masked_fill, torch.masked_fill,
                 torch.Tensor.masked_fill_)
    rule_types = (Shift,)

    def examples(self):
        return [(Masked(2), (2, 2)), (Masked(3, how="masked_fill"), (3, 3))]

    def parts(self, call) -> tuple:
        """(mask as 'keep x', x, constant)."""
        name = getattr(call.func, "__name__", "")
        if name.startswith("masked_fill"):
            mask = call.args[1] if len(call.args) > 1 else call.kwargs.get("mask")
            value = call.args[2] if len(call.args) > 2 else call.kwargs.get("value")
            return ("not", mask), call.args[0], value
        if call.func is torch.Tensor.where:  # x.where(condition, other)
            cond = call.args[1] if len(call.args) > 1 else call.kwargs.get("condition")
            other = call.args[2] if len(call.args) > 2 else call.kwargs.get("other")
            return ("keep", cond), call.args[0], other
        cond = call.args[0] if call.args else call.kwargs.get("condition")
        x = call.args[1] if len(call.args) > 1 else call.kwargs.get("input")
        other = call.args[2] if len(call.args) > 2 else call.kwargs.get("other")
        if isinstance(other, Value) and not isinstance(x, Value):
            return ("not", cond), other, x
        return ("keep", cond), x, other

    def accepts(self, call):
        try:
            (_, mask), x, c = self.parts(call)
        except IndexError:
            return "is called without a condition and two values"
        if isinstance(mask, Value):
            return "selects by a mask computed from the input (a data-dependent selection); nrm reads constant masks"
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            return "selects by something other than a boolean tensor"
        if not isinstance(x, Value) or isinstance(c, Value):
            return "selects between two input-derived tensors; nrm reads a selection between one and a constant"
        if mask.dim() == call.output.dim() and not _same_for_every_sample(mask):
            return ("selects by a mask that differs between samples (one mask per sample, as padding of sequences of "
                    "different lengths); explain such samples one at a time")
        if isinstance(c, torch.Tensor) and c.dim() == 0:
            c = float(c)
        return _constant_shape_refusal(call, c)

    def weight_bias(self, call, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (how, mask), _, c = self.parts(call)
        keep = _per_sample(mask.to(like.dtype), like)
        keep = keep if how == "keep" else 1 - keep
        c = _per_sample(c, like, call.output.dtype)
        return keep.contiguous(), ((1 - keep) * c).contiguous()

    def map(self, call, a, rule=None):
        return DiagonalMap(*self.weight_bias(call, a))

    def exact(self, call, a, rule=None) -> ExactMap:
        a = a.double()
        return _diagonal_exact(*self.weight_bias(call, a), tuple(a.shape[1:]))


class Negate(Linear):
    """``-x``, ``torch.neg``, ``Tensor.neg`` (rotary embeddings' ``rotate_half``): the diagonal map
    of weight −1 (rule key :class:`nrm.markers.Scale`), q(j | k) = δ_jk under any rule.

    Definition::

        z_k = −a_k
    """

    functions = (torch.neg, torch.Tensor.neg, torch.Tensor.__neg__, torch.negative, torch.Tensor.negative)

    rule_types = (Scale,)

    def examples(self):
        return [(Negated(), (2, 3))]

    def map(self, call, a, rule=None):
        return DiagonalMap(torch.full(tuple(a.shape[1:]), -1.0, dtype=a.dtype, device=a.device))


class Power(Elementwise):
    """``x ** p``, ``torch.pow(x, p)``, ``Tensor.pow`` with a constant number p (the mean square of
    RMSNorm): an elementwise function, its kernel δ_jk (the identity rule). In RMSNorm it only
    feeds the reciprocal square root, a factor held at its forward value (:class:`Rsqrt`), so
    it receives nothing there. Exact for an integer p (rational powers of the input's value)."""

    functions = (torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, torch.square, torch.Tensor.square)

    def examples(self):
        return [(Powered(2), (2, 3)), (Powered(3), (3,))]

    def exponent(self, call):
        if getattr(call.func, "__name__", "") == "square":
            return 2
        return call.args[1] if len(call.args) > 1 else call.kwargs.get("exponent")

    def accepts(self, call):
        p = self.exponent(call)
        if isinstance(call.args[0], Value) is False:
            return "raises a constant to an input-derived power"
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
            return f"raises to the power {p!r}; nrm reads a constant finite number"
        return None

    def evaluate(self, call, z):
        return torch.pow(z, self.exponent(call))

    def exact(self, call, z):
        p = self.exponent(call)
        if float(p).is_integer() and p >= 0:
            flat = np.asarray(z).reshape(-1)
            return np.array([v ** int(p) for v in flat], dtype=object).reshape(np.asarray(z).shape)
        return super().exact(call, z)


class Rsqrt(Elementwise):
    """``torch.rsqrt``, ``Tensor.rsqrt``: 1/√x, the reciprocal standard deviation of RMSNorm,
    x · rsqrt(mean(x²) + ε). Kernel δ_jk (the identity rule). As a factor of a product it is
    a normalizer **held at its forward value** (:attr:`held`; AttnLRP Prop. 3.4, the identity
    on 1/σ): the product gives it nothing under every split, and the other factor gets all,
    so RMSNorm is the diagonal map x ↦ x / σ with σ fixed. Exact given its float64 value."""

    functions = (torch.rsqrt, torch.Tensor.rsqrt)
    held = True

    def examples(self):
        return [(RootMeanSquare(), (2, 3))]

    def evaluate(self, call, z):
        return torch.rsqrt(z)


class Sqrt(Elementwise):
    """``torch.sqrt``, ``Tensor.sqrt``: √x, the standard deviation of a norm written by hand
    ((x − u) / √(s + ε), ConvNeXt's channels-first LayerNorm) or the Euclidean norm
    (:class:`~nrm.layers.fused.VectorNormDecomposition`). Kernel δ_jk (the identity rule). As a
    factor of a product — a divisor, through :class:`Reciprocal` — it is a normalizer **held at
    its forward value** (:attr:`held`; AttnLRP Prop. 3.4, the identity on 1/σ): the product gives
    it nothing. Exact given its float64 value (an irrational in general)."""

    functions = (torch.sqrt, torch.Tensor.sqrt)
    held = True

    def examples(self):
        return [(StandardDeviation(), (2, 3))]

    def accepts(self, call):
        if isinstance(call.args[0], Value) is False:
            return "takes the square root of a constant"
        return None

    def evaluate(self, call, z):
        return torch.sqrt(z)


class Reciprocal(Elementwise):
    """``torch.reciprocal``, ``Tensor.reciprocal``: 1/x — and the divisor of a division of two
    input-derived tensors, a / b = a · (1/b) (:class:`~nrm.layers.fused.DivisionDecomposition`).
    Kernel δ_jk (the identity rule). As a factor of a product the reciprocal of a held
    normalizer (1/√(s + ε)) is held too: a value computed from held values alone is held
    (:meth:`nrm.graph.ProperFFNN._is_gate`). Exact: 1/x of a fraction is a fraction."""

    functions = (torch.reciprocal, torch.Tensor.reciprocal)

    def examples(self):
        return [(Reciprocated(), (2, 3))]

    def evaluate(self, call, z):
        return torch.reciprocal(z)

    def exact(self, call, z):
        flat = np.asarray(z).reshape(-1)
        if any(v == 0 for v in flat):
            raise ZeroDivisionError("1/x at x = 0 has no exact value")
        return np.array([1 / v for v in flat], dtype=object).reshape(np.asarray(z).shape)


class Expand(Reshape):
    """``x.expand(*sizes)`` keeping the batch dimension and the number of dimensions (grouped-query
    attention's ``repeat_kv``: x[:, :, None].expand(B, h_kv, n_rep, T, d)): an index map, each
    output neuron one input neuron; an input neuron copied n times receives the sum of their
    relevance.

    Definition::

        y[b, k] = x[b, index[k]],   index = the broadcast of the input's neuron numbers
    """

    functions = (torch.Tensor.expand, torch.Tensor.expand_as, torch.broadcast_to)

    def examples(self):
        return [(Expanded(), (2, 1, 3))]

    def accepts(self, call):
        before, after = tuple(call.in_shapes[0]), tuple(call.output.shape)
        if len(before) != len(after) or after[0] != before[0]:
            return (f"expands {before} to {after}, adding or changing the batch dimension; nrm keeps it first "
                    "(x[:, None] first, then expand)")
        return None

    def index(self, call):
        before, after = tuple(call.in_shapes[0]), tuple(call.output.shape)
        names = np.arange(math.prod(before[1:]), dtype=np.int64).reshape(before[1:])
        return np.ascontiguousarray(np.broadcast_to(names, after[1:])).reshape(-1)


class Shifted(nn.Module):
    """relu(W x) + c (or c − relu(W x)) for a constant c (an example of :class:`AddConstant`)."""

    def __init__(self, n: int, how: str = "add"):
        super().__init__()
        self.lin, self.how = seeded(nn.Linear(n, n), 21), how
        self.register_buffer("c", torch.linspace(-1.0, 1.5, n, dtype=torch.float64))

    def forward(self, x):
        h = torch.relu(self.lin(x))
        return self.c - h if self.how == "rsub" else h + self.c


class Masked(nn.Module):
    """A causal mask on W x of shape (n, n): where(tril, W x, finfo.min) or masked_fill (an example
    of :class:`Select`)."""

    def __init__(self, n: int, how: str = "where"):
        super().__init__()
        self.lin, self.how = seeded(nn.Linear(n, n), 22), how
        self.register_buffer("keep", torch.ones(n, n, dtype=torch.bool).tril())

    def forward(self, x):
        h = self.lin(x)
        low = torch.finfo(h.dtype).min
        if self.how == "masked_fill":
            return torch.softmax(h.masked_fill(~self.keep, low), dim=-1)
        return torch.softmax(torch.where(self.keep, h, low), dim=-1)


class Negated(nn.Module):
    """cat(−x₂, x₁) of W x's halves, rotary embeddings' rotate_half (an example of :class:`Negate`)."""

    def __init__(self):
        super().__init__()
        self.lin = seeded(nn.Linear(3, 4), 23)

    def forward(self, x):
        h = self.lin(x)
        return torch.cat((-h[..., 2:], h[..., :2]), dim=-1)


class Powered(nn.Module):
    """relu(x) + (W x)^p (an example of :class:`Power`)."""

    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def forward(self, x):
        return torch.relu(x) + torch.pow(x, self.p)


class RootMeanSquare(nn.Module):
    """RMSNorm as Llama writes it, x · rsqrt(mean(x²) + ε) · w (an example of :class:`Rsqrt`)."""

    def __init__(self, n: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(25)
        self.weight = nn.Parameter(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + 1e-6))


class Expanded(nn.Module):
    """W x of shape (2, 1, 3) expanded to (2, 2, 3), then a linear map (an example of :class:`Expand`)."""

    def __init__(self):
        super().__init__()
        self.lin = seeded(nn.Linear(3, 3), 26)

    def forward(self, x):
        return self.lin(self.lin(x).expand(x.shape[0], 2, 2, 3))


def placed_exact(in_shape: tuple, bias: torch.Tensor, dims, offsets) -> ExactMap:
    """x placed among constants (``bias``, one sample's output, zero at x's places): input j at
    its position shifted by ``offsets`` along ``dims``, weight 1; the constants are the bias."""
    out_shape = tuple(bias.shape)
    n, m = math.prod(in_shape), math.prod(out_shape)
    W, S = zeros_object((n, m)), np.zeros((n, m), bool)
    for j, pos in enumerate(np.ndindex(*in_shape)):
        target = list(pos)
        for d, o in zip(dims, offsets):
            target[d] += o
        k = int(np.ravel_multi_index(tuple(target), out_shape))
        W[j, k], S[j, k] = 1, True
    return ExactMap(W, S, to_fractions(bias.reshape(-1)), out_shape)


class CatConstant(Linear):
    """``torch.cat`` of one input-derived tensor x with constants along a per-sample dimension
    (ViT's class token before the patch tokens; each constant the same for every sample).

    Definition (k the copy of x_j, c a constant neuron)::

        z_k = x_j,  z_c = c         q(x_j | z_k) = 1,  q(⊥ | z_c) = 1   (LRP-0)

    a linear map with weights 1 at the copies and the constants as its bias
    (:class:`nrm.linear.PlaceMap`, rule key :class:`nrm.markers.Shift`). Under a rule with a
    stabilizer (ε) a copy keeps x_j / (x_j + ε s) and ⊥ the rest, as for any linear map. Exact
    form: the constants' float64 values as fractions. Refused: several input-derived parts (a
    concatenation of branches with constants among them), the batch dimension, a constant that
    differs between samples or is not finite.
    """

    functions = (torch.cat, torch.concat, torch.concatenate)
    rule_types = (Shift,)

    def examples(self):
        return [(ClassToken(2), (3, 2)), (ClassToken(2, after=True), (2, 2))]

    def parts(self, call) -> list:
        return list(call.arg(0, "tensors"))

    def dim(self, call) -> int:
        d = call.arg(1, "dim", call.kwargs.get("axis", 0))
        return d % call.output.dim()

    def accepts(self, call):
        parts = call.arg(0, "tensors", None)
        if not isinstance(parts, (list, tuple)):
            return "concatenates something other than a list of tensors"
        derived = [p for p in parts if isinstance(p, Value)]
        if len(derived) != 1:
            return ("concatenates several input-derived tensors with constants; nrm reads a concatenation of "
                    "branches, or one activation placed among constants")
        if len(parts) == 1:  # DenseNet's torch.cat([x], 1): no constant to place, an index map (shape.Cat)
            return "concatenates one tensor alone; nrm reads it as the index map it is (Cat)"
        if self.dim(call) == 0:
            return "concatenates along the batch dimension"
        batch = call.output.shape[0]
        for p in parts:
            if isinstance(p, Value):
                continue
            if not isinstance(p, torch.Tensor) or p.is_complex() or not p.is_floating_point():
                return f"concatenates a constant {type(p).__name__} that is not a floating-point tensor"
            if not bool(torch.isfinite(p).all()):
                return "concatenates a constant that is not finite; every value nrm records is finite"
            if p.dim() != call.output.dim() or p.shape[0] not in (1, batch):
                return f"concatenates a constant of shape {tuple(p.shape)} without the batch dimension"
            if not bool((p == p[:1]).all()):
                return "concatenates a constant that differs between the samples of the batch"
        return None

    def layout(self, call) -> tuple[int, int]:
        """(the per-sample concatenation dimension, where x starts along it)."""
        d = self.dim(call)
        offset = 0
        for p in self.parts(call):
            if isinstance(p, Value):
                break
            offset += p.shape[d]
        return d - 1, offset

    def constants(self, call, like: torch.Tensor) -> torch.Tensor:
        """The bias: the constants at their places, zero at the copies of x (one sample's shape)."""
        pieces = []
        for p in self.parts(call):
            if isinstance(p, Value):
                pieces.append(torch.zeros((1,) + tuple(like.shape[1:]), dtype=like.dtype, device=like.device))
            else:
                pieces.append(p[:1].detach().to(like.dtype).to(like.device))
        return torch.cat(pieces, self.dim(call))[0].contiguous()

    def map(self, call, a, rule=None):
        d, offset = self.layout(call)
        bias = self.constants(call, a)
        return PlaceMap(torch.ones(tuple(a.shape[1:]), dtype=a.dtype, device=a.device), bias, tuple(bias.shape),
                        d, offset)

    def exact(self, call, a, rule=None) -> ExactMap:
        d, offset = self.layout(call)
        return placed_exact(tuple(a.shape[1:]), self.constants(call, a.double()), (d,), (offset,))


class ClassToken(nn.Module):
    """cat([t, relu(x)], 1) with a learned token t of width ``width`` expanded over the batch
    (ViT's class token), or after x: an example of :class:`CatConstant`."""

    def __init__(self, width: int, after: bool = False):
        super().__init__()
        self.after = after
        self.token = nn.Parameter(torch.zeros(1, 1, width, dtype=torch.float64))
        seeded(self, 5)

    def forward(self, x):
        t = self.token.expand(x.shape[0], -1, -1)
        h = torch.relu(x)
        return torch.cat([h, t] if self.after else [t, h], dim=1)


def _pad_arguments(input, pad, mode="constant", value=None) -> dict:
    return dict(input=input, pad=pad, mode=mode, value=value)


def _pads(call) -> tuple[int, ...]:
    """F.pad's ``pad``: (before, after) pairs from the last dimension backwards, without the
    trailing (0, 0) pairs (which pad nothing: MobileBERT writes the batch dimension's as
    ``[0, 0, 0, 1, 0, 0]``)."""
    a = _pad_arguments(*call.args, **call.kwargs)
    pads = tuple(int(p) for p in a["pad"])
    while len(pads) >= 2 and len(pads) % 2 == 0 and pads[-2:] == (0, 0):
        pads = pads[:-2]
    return pads


class Unpadded(Alias):
    """``F.pad`` with every pad 0 (torchvision's ``_patch_merging_pad`` at even sizes, Swin's
    window padding where the windows divide the image): the same neurons, unchanged."""

    functions = (F.pad,)

    def examples(self):
        return [(Padded((0, 0, 0, 0), 6), (2, 3))]

    def accepts(self, call):
        if any(_pads(call)):
            return "pads something (Pad reads a constant padding)"
        return None


class Pad(Linear):
    """``F.pad(x, pad, mode="constant", value=c)`` (``nn.ZeroPad2d``, ``nn.ConstantPad*d``; Swin's
    zero padding of the image to a multiple of the window, torchvision's ``_patch_merging_pad``
    at odd sizes) with non-negative pads on per-sample dimensions: x placed among constants c
    (0 by default), a linear map like :class:`CatConstant` (:class:`nrm.linear.PlaceMap`, rule
    key :class:`nrm.markers.Shift`).

    Definition (k the copy of x_j, c a padding neuron, which has no parent)::

        z_k = x_j,  z_c = c         q(x_j | z_k) = 1,  q(⊥ | z_c) = 1   (LRP-0)

    A zero padding neuron has the value 0: a linear map after it takes nothing from it under a
    rule that weighs contributions a_j w_jk, and relevance that reaches it (a flat rule) goes to
    ⊥. Exact form: c's float64 value as a fraction. Another mode (reflect, replicate, circular:
    copies of input neurons) is :class:`~nrm.layers.shape.Copies`'. A negative pad (a crop) is read
    as a slice first (:class:`~nrm.layers.fused.CropPadDecomposition`). Refused: a pad or crop of
    the batch dimension (a pair (0, 0) there pads nothing and is read), a value that is not a finite
    number. A pad of 0 everywhere is :class:`Unpadded`."""

    functions = (F.pad,)
    rule_types = (Shift,)

    def examples(self):
        return [(Padded((1, 2), 12), (2, 3)), (Padded((0, 1, 2, 0), 24, value=0.5), (2, 2, 2))]

    def accepts(self, call):
        try:
            a = _pad_arguments(*call.args, **call.kwargs)
        except TypeError as e:
            return f"its arguments are not those of F.pad ({e})"
        pads = _pads(call)
        if a["mode"] != "constant":
            return f"pads in mode {a['mode']!r}; nrm reads a constant padding (mode='constant')"
        value = 0.0 if a["value"] is None else a["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"pads with {value!r}; nrm reads a finite number"
        if len(pads) % 2 or len(pads) // 2 >= len(call.in_shapes[0]):
            return "pads (or crops) the batch dimension; nrm keeps every sample apart"
        if any(p < 0 for p in pads):  # per-sample: a slice first (fused.CropPadDecomposition)
            return "crops (a negative pad); write it as a slice"
        if not any(pads):
            return "pads nothing (Unpadded reads it)"
        return None

    def layout(self, call) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(the padded per-sample dimensions, where x starts along each)."""
        pads = _pads(call)
        ndim = len(call.in_shapes[0]) - 1  # per sample
        dims = tuple(ndim - 1 - i for i in range(len(pads) // 2))
        return dims, tuple(pads[2 * i] for i in range(len(pads) // 2))

    def constants(self, call, like: torch.Tensor) -> torch.Tensor:
        """The bias: c at the padding, zero at the copies of x (one sample's shape)."""
        a = _pad_arguments(*call.args, **call.kwargs)
        value = 0.0 if a["value"] is None else float(a["value"])
        zeros = torch.zeros((1,) + tuple(like.shape[1:]), dtype=like.dtype, device=like.device)
        full = torch.full((1,) + tuple(call.output.shape[1:]), value, dtype=like.dtype, device=like.device)
        dims, offsets = self.layout(call)
        region = full[0]
        for d, o in zip(dims, offsets):
            region = region.narrow(d, o, like.shape[d + 1])
        region.copy_(zeros[0])
        return full[0].contiguous()

    def map(self, call, a, rule=None):
        dims, offsets = self.layout(call)
        bias = self.constants(call, a)
        return PlaceMap(torch.ones(tuple(a.shape[1:]), dtype=a.dtype, device=a.device), bias, tuple(bias.shape),
                        dims, offsets)

    def exact(self, call, a, rule=None) -> ExactMap:
        dims, offsets = self.layout(call)
        return placed_exact(tuple(a.shape[1:]), self.constants(call, a.double()), dims, offsets)


class Padded(nn.Module):
    """A linear map, F.pad, a linear map (an example of :class:`Pad` and :class:`Unpadded`)."""

    def __init__(self, pad: tuple, padded: int, value: float | None = None):
        super().__init__()
        self.pad, self.value = tuple(pad), value
        self.head = nn.Linear(padded, 2)
        seeded(self, 27)

    def forward(self, x):
        h = torch.relu(x)
        h = F.pad(h, self.pad) if self.value is None else F.pad(h, self.pad, value=self.value)
        return self.head(h.flatten(1))


class StandardDeviation(nn.Module):
    """(W x) / √(mean((W x)²) + 1) (an example of :class:`Sqrt`, read through the division)."""

    def __init__(self):
        super().__init__()
        self.fc = seeded(nn.Linear(3, 3), 6)

    def forward(self, x):
        h = self.fc(x)
        return h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1.0)


class Reciprocated(nn.Module):
    """W x · 1/√(mean((W x)²) + 1): a product with the reciprocal of a held normalizer, itself
    held (an example of :class:`Reciprocal`)."""

    def __init__(self):
        super().__init__()
        self.fc = seeded(nn.Linear(3, 3), 7)

    def forward(self, x):
        h = self.fc(x)
        return h * torch.reciprocal(torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1.0))
