"""Linear kinds: dense layers, convolutions, average pooling, sums of branches.

Each is a map z = W a + b whose kernel a rule writes (NRM-SPEC §2): q(j|k) from the rule's
shares over u(a_j) v(w_jk). The map on tensors is :mod:`nrm.linear`; the exact form on
fractions (for the exact oracle and the symbolic layer) is written here, from the
definition of the operation, not from the fast map.
"""

from __future__ import annotations

import itertools
import math
import operator
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..linear import (
    ConvMap,
    ConvTransposeMap,
    DenseMap,
    ReduceMap,
    adaptive_avgpool_map,
    avgpool_map,
    pool_out,
    window_average_map,
    window_divisors,
)
from ..markers import Sum as SumMarker
from ..recorded import Value
from .base import ExactMap, Linear, Sum, seeded, to_fractions, zeros_object


def pair(v, n: int = 2) -> tuple:
    """``v`` as a tuple of ``n`` (an int for every axis, or one per axis as given)."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _constant_weights(call, *positions) -> str | None:
    """A refusal when a weight argument is itself computed from the input (a product of two
    activations, which is not a linear map of one of them)."""
    for i, name in positions:
        if isinstance(call.arg(i, name, None), Value):
            return (f"its {name} is computed from the input, so it is a product of activations, not a linear map; "
                    "nrm reads it once a product kind is declared for it")
    return None


class Dense(Linear):
    """``F.linear`` (``nn.Linear``): z = a Wᵀ + b on the last dimension.

    Definition::

        z_k = Σ_j a_j w_kj + b_k          (for every leading index of a)
    """

    functions = (F.linear,)
    rule_types = (nn.Linear,)
    folds_batchnorm = True

    def examples(self):
        return [(seeded(nn.Linear(3, 2)), (3,)), (seeded(nn.Linear(3, 2, bias=False)), (2, 3))]

    def accepts(self, call):
        return _constant_weights(call, (1, "weight"), (2, "bias"))

    def map(self, call, a, rule=None):
        w, b = call.arg(1, "weight"), call.arg(2, "bias", None)
        return DenseMap(w.detach(), None if b is None else b.detach())

    def exact(self, call, a, rule=None) -> ExactMap:
        b = call.arg(2, "bias", None)
        return self.unroll(to_fractions(call.arg(1, "weight")), None if b is None else to_fractions(b),
                           tuple(a.shape[1:]))

    @staticmethod
    def unroll(w: np.ndarray, b: np.ndarray | None, in_shape: tuple) -> ExactMap:
        """The map with weight ``w`` (out, in) and bias ``b`` on inputs of ``in_shape``, over
        any exact scalars (fractions, sympy): block-diagonal over the leading dimensions,
        W[(p, j), (p, k)] = w_kj."""
        n_o, n_i = w.shape
        lead = math.prod(in_shape[:-1])
        zero = w.flat[0] * 0 if w.size else Fraction(0)
        W = np.full((lead * n_i, lead * n_o), zero, dtype=object)
        S = np.zeros((lead * n_i, lead * n_o), bool)
        for p in range(lead):
            W[p * n_i:(p + 1) * n_i, p * n_o:(p + 1) * n_o] = w.T
            S[p * n_i:(p + 1) * n_i, p * n_o:(p + 1) * n_o] = True
        bias = None if b is None else np.tile(b, lead)
        return ExactMap(W, S, bias, tuple(in_shape[:-1]) + (n_o,))


class ConstantMatMul(Linear):
    """``a @ W`` (``torch.matmul``, ``Tensor.matmul``, the ``@`` operator) with a constant
    matrix W (a parameter, a buffer or a tensor built from them, such as ``weight.T``) on the
    right: the dense map of W on the last dimension, read as ``F.linear(a, Wᵀ)`` (Falcon's and
    other hand-written projections ``x @ self.weight.T``). A product of two input-derived
    tensors is :class:`nrm.layers.attention.MatMul`'s; a constant on the left (``W @ a``,
    which maps dimension −2) and batched constants are refused with how to rewrite them.

    Definition (W of shape (n, m))::

        z_k = Σ_j a_j W_jk          (for every leading index of a)
    """

    functions = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, operator.matmul)
    rule_types = (nn.Linear,)
    folds_batchnorm = True

    def examples(self):
        return [(MatMulConstant(3, 2).eval(), (3,)), (MatMulConstant(3, 2).eval(), (2, 3))]

    @staticmethod
    def operands(call) -> tuple:
        first = call.args[0] if call.args else call.kwargs.get("input")
        second = call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        return first, second

    def accepts(self, call):
        a, w = self.operands(call)
        if isinstance(a, Value) and isinstance(w, Value):
            return "multiplies two input-derived tensors: a product of activations (attention.MatMul reads it)"
        if not isinstance(a, Value):
            return ("multiplies a constant matrix on the left (W @ a maps dimension −2); write it as "
                    "(a.transpose(-1, -2) @ W.T).transpose(-1, -2) or with F.linear on the transposed tensor")
        if call.kwargs.get("out") is not None:
            return "writes into out="
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            return (f"multiplies by a constant of shape {shape}; nrm reads a @ W with W a matrix (n, m), or a stack of "
                    "matrices (…, k, m) over a's last positions, of their sizes (a vector or a batched constant that "
                    "broadcasts: use F.linear or expand it into an nn.Linear)")
        if len(call.in_shapes[0]) < 2:
            return "multiplies a tensor without a batch dimension"
        if w.dtype != call.output.dtype:
            return f"multiplies by a constant of dtype {w.dtype} into {call.output.dtype}"
        return None

    def map(self, call, a, rule=None):
        return DenseMap(self.operands(call)[1].detach().T, None)

    def exact(self, call, a, rule=None) -> ExactMap:
        return Dense.unroll(to_fractions(self.operands(call)[1].T), None, tuple(a.shape[1:]))


class MatMulConstant(nn.Module):
    """relu(x) @ W with a seeded constant W (an example of :class:`ConstantMatMul`)."""

    def __init__(self, n: int, m: int):
        super().__init__()
        self.weight = nn.Parameter(seeded(nn.Linear(n, m, bias=False)).weight.detach().T.contiguous())

    def forward(self, x):
        return F.relu(x) @ self.weight


class Conv(Linear):
    """``F.conv1d`` / ``F.conv2d`` / ``F.conv3d`` (``nn.Conv1d`` / ``2d`` / ``3d``, zero padding; 3-d:
    video and volumetric models).

    Definition::

        z_{c,p} = Σ_{c' ∈ group(c)} Σ_t a_{c', s·p − pad + d·t} w_{c, c', t} + b_c

    Padding positions are not neurons. ``padding_mode`` other than zeros reaches the
    capture as ``F.pad`` (reflect, replicate, circular: :class:`~nrm.layers.shape.Copies`)
    followed by an unpadded convolution.
    """

    functions = (F.conv1d, F.conv2d, F.conv3d)
    folds_batchnorm = True

    def examples(self):
        return [(seeded(nn.Conv2d(2, 2, 2, padding=1)), (2, 3, 3)),
                (seeded(nn.Conv2d(2, 2, 2, stride=2, groups=2, bias=False)), (2, 4, 4)),
                (seeded(nn.Conv1d(2, 3, 3, padding=1, dilation=2)), (2, 5)),
                (seeded(nn.Conv3d(2, 2, (1, 2, 2), stride=(1, 2, 1), padding=(0, 1, 1))), (2, 2, 3, 3))]

    def types(self, call):
        return {F.conv1d: (nn.Conv1d,), F.conv3d: (nn.Conv3d,)}.get(call.func, (nn.Conv2d,))

    def accepts(self, call):
        refused = _constant_weights(call, (1, "weight"), (2, "bias"))
        if refused:
            return refused
        padding = call.arg(4, "padding", 0)
        if padding == "same":
            w = call.arg(1, "weight")
            span = [d * (k - 1) for d, k in zip(pair(call.arg(5, "dilation", 1), w.dim() - 2), w.shape[2:])]
            if any(s % 2 for s in span):
                return ("padding='same' with an even kernel span pads asymmetrically; give explicit integer "
                        "padding")
        return None

    def params(self, call):
        """(weight, bias, stride, padding before, dilation, groups, padding after)."""
        w = call.arg(1, "weight").detach()
        d = w.dim() - 2
        b = call.arg(2, "bias", None)
        stride, padding = pair(call.arg(3, "stride", 1), d), call.arg(4, "padding", 0)
        dilation, groups = pair(call.arg(5, "dilation", 1), d), call.arg(6, "groups", 1)
        if padding == "valid":
            before = after = (0,) * d
        elif padding == "same":  # torch pads total // 2 before, the rest after
            total = [dl * (k - 1) for dl, k in zip(dilation, w.shape[2:])]
            before, after = tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)
        else:
            before = after = pair(padding, d)
        return w, (None if b is None else b.detach()), stride, before, dilation, groups, after

    def map(self, call, a, rule=None):
        w, b, stride, padding, dilation, groups, _ = self.params(call)
        return ConvMap(w, b, stride, padding, dilation, groups)

    def exact(self, call, a, rule=None) -> ExactMap:
        weight, b, stride, pad, dilation, groups, after = self.params(call)
        return self.unroll(to_fractions(weight), None if b is None else to_fractions(b), tuple(a.shape[1:]), stride,
                           pad, dilation, groups, after)

    @staticmethod
    def unroll(w: np.ndarray, b: np.ndarray | None, in_shape: tuple, stride: tuple, pad: tuple, dilation: tuple,
               groups: int = 1, after: tuple | None = None) -> ExactMap:
        """The convolution with weight ``w`` (c_out, c_in/groups, *kernel), over any exact
        scalars, unrolled: W[(c_in, pos_in), (c_out, pos_out)] = w[c_out, c_in mod group, tap];
        padding positions are not neurons (``pad`` before, ``after`` after; default symmetric)."""
        after = pad if after is None else after
        kernel = tuple(w.shape[2:])
        spatial = in_shape[1:]
        out_spatial = tuple((n + p + q - dl * (k - 1) - 1) // s + 1
                            for n, p, q, dl, k, s in zip(spatial, pad, after, dilation, kernel, stride))
        c_out, c_in = w.shape[0], in_shape[0]
        per_in, per_out = c_in // groups, c_out // groups
        out_shape = (c_out,) + out_spatial
        n_in, n_out = math.prod(in_shape), math.prod(out_shape)
        zero = w.flat[0] * 0 if w.size else Fraction(0)
        W, S = np.full((n_in, n_out), zero, dtype=object), np.zeros((n_in, n_out), bool)
        for opos, taps in windows(spatial, out_spatial, kernel, stride, pad, dilation):
            for oc in range(c_out):
                k = np.ravel_multi_index((oc,) + opos, out_shape)
                for icl in range(per_in):
                    ic = (oc // per_out) * per_in + icl
                    for kpos, ipos in taps:
                        if ipos is not None:
                            j = np.ravel_multi_index((ic,) + ipos, in_shape)
                            W[j, k], S[j, k] = w[(oc, icl) + kpos], True
        bias = None if b is None else np.repeat(b, math.prod(out_spatial))
        return ExactMap(W, S, bias, out_shape)


class ConvTranspose(Linear):
    """``F.conv_transpose1d`` / ``2d`` / ``3d`` (``nn.ConvTranspose1d`` / ``2d`` / ``3d``: U-Net and
    segmentation decoders, generators), the adjoint of a convolution as a linear map of its own.

    Definition (W of shape (in, out/groups, *k); each input neuron spreads over its window)::

        z_{c,o} = Σ_{c' ∈ group(c)} Σ_{i, t : o = s·i − pad + d·t} a_{c',i} w_{c', c mod group, t} + b_c

    A batch norm after it is a diagonal layer of its own (not folded). Its exact form is the map
    on the unit basis (each output of a unit input is one weight). Rule keys
    ``nn.ConvTranspose1d`` / ``2d`` / ``3d``; a convolution in the presets."""

    functions = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)

    def examples(self):
        return [(seeded(nn.ConvTranspose2d(2, 2, 2, stride=2)), (2, 2, 3)),
                (seeded(nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2)), (2, 2, 2)),
                (seeded(nn.ConvTranspose1d(2, 3, 3, stride=2, dilation=2, bias=False)), (2, 4))]

    def types(self, call):
        return {F.conv_transpose1d: (nn.ConvTranspose1d,), F.conv_transpose3d: (nn.ConvTranspose3d,)}.get(
            call.func, (nn.ConvTranspose2d,))

    def accepts(self, call):
        return _constant_weights(call, (1, "weight"), (2, "bias"))

    def map(self, call, a, rule=None):
        w = call.arg(1, "weight").detach()
        b = call.arg(2, "bias", None)
        return ConvTransposeMap(w, None if b is None else b.detach(), call.arg(3, "stride", 1),
                                call.arg(4, "padding", 0), call.arg(5, "output_padding", 0), call.arg(6, "groups", 1),
                                call.arg(7, "dilation", 1))


def windows(in_spatial, out_spatial, kernel, stride, pad_before, dilation):
    """For every output position and kernel offset, the input position (None: padding)."""
    for opos in itertools.product(*map(range, out_spatial)):
        taps = []
        for kpos in itertools.product(*map(range, kernel)):
            ipos = tuple(o * s - p + k * d for o, s, p, k, d in zip(opos, stride, pad_before, kpos, dilation))
            inside = all(0 <= i < n for i, n in zip(ipos, in_spatial))
            taps.append((kpos, ipos if inside else None))
        yield opos, taps


class AvgPool(Linear):
    """``F.avg_pool1d`` / ``2d`` / ``3d`` (``nn.AvgPool1d`` / ``2d`` / ``3d``): each output is
    a linear neuron with weights 1/divisor on its window (NRM-SPEC §1: average pooling is a
    linear neuron).

    Definition::

        z_{c,p} = (1 / |window|) Σ_{i ∈ window(p)} a_{c,i}

    |window| counts the padding's zeros (``count_include_pad=True``), or is ``divisor_override``; with
    ``count_include_pad=False`` it is n_p, the window's taps inside the input; with
    ``ceil_mode=True`` the last windows reach past the padding and count only what they cover
    (:class:`~nrm.linear.WindowAverageMap`, torch's divisors: :func:`~nrm.linear.window_divisors`).
    """

    functions = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)

    def examples(self):
        return [(nn.AvgPool2d(2).eval(), (2, 4, 4)), (nn.AvgPool2d(3, stride=1, padding=1).eval(), (1, 3, 3)),
                (nn.AvgPool1d(3, stride=2, padding=1).eval(), (2, 7)),
                (nn.AvgPool3d((1, 2, 2)).eval(), (2, 2, 4, 4)),
                (nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False).eval(), (2, 4, 5)),
                (nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False).eval(), (2, 6)),
                (nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False).eval(), (2, 3, 5)),
                (nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True).eval(), (1, 4, 4))]

    def types(self, call):
        return {F.avg_pool1d: (nn.AvgPool1d,), F.avg_pool3d: (nn.AvgPool3d,)}.get(call.func, (nn.AvgPool2d,))

    def params(self, call):
        n = {F.avg_pool1d: 1, F.avg_pool3d: 3}.get(call.func, 2)
        k = pair(call.arg(1, "kernel_size"), n)
        stride = call.arg(2, "stride", None)
        s = pair(stride, n) if stride not in (None, [], ()) else k
        divisor = call.arg(6, "divisor_override", None) if n > 1 else None  # avg_pool1d has none
        return k, s, pair(call.arg(3, "padding", 0), n), call.arg(4, "ceil_mode", False), \
            call.arg(5, "count_include_pad", True), divisor

    def accepts(self, call):
        k, _, p, ceil, include, _ = self.params(call)
        if call.output.dim() != len(k) + 2:
            return f"expects (batch, channels, *{len(k)} spatial), got output shape {tuple(call.output.shape)}"
        return None

    @staticmethod
    def varies(ceil: bool, include: bool, padding: tuple, divisor) -> bool:
        """Whether the divisor varies by window (``count_include_pad=False`` with padding, or
        ``ceil_mode=True``) rather than being one constant (|window| or ``divisor_override``)."""
        return divisor is None and (ceil or (not include and any(padding)))

    def map(self, call, a, rule=None):
        k, s, p, ceil, include, divisor = self.params(call)
        if self.varies(ceil, include, p, divisor):
            return window_average_map(a.shape[1], tuple(a.shape[2:]), k, s, p, ceil, include, a.dtype, a.device)
        if ceil:  # ceil_mode with divisor_override: the constant divisor, windows reaching past the padding
            return window_average_map(a.shape[1], tuple(a.shape[2:]), k, s, p, ceil, include, a.dtype, a.device,
                                      divisor=divisor)
        return avgpool_map(a.shape[1], k, s, p, a.dtype, a.device, divisor)

    def exact(self, call, a, rule=None) -> ExactMap:
        k, s, p, ceil, include, divisor = self.params(call)
        in_shape = tuple(a.shape[1:])
        C, spatial = in_shape[0], in_shape[1:]
        counts = window_divisors(spatial, k, s, p, ceil, include)[0] if divisor is None else None
        out_spatial = tuple(pool_out(n, kk, ss, pp, 1, ceil) for n, kk, ss, pp in zip(spatial, k, s, p))
        out_shape = (C,) + out_spatial
        n_in, n_out = math.prod(in_shape), math.prod(out_shape)
        W, S = zeros_object((n_in, n_out)), np.zeros((n_in, n_out), bool)
        for opos, taps in windows(spatial, out_spatial, k, s, p, (1,) * len(k)):
            n = divisor if counts is None else math.prod(c[o] for c, o in zip(counts, opos))  # torch's divisor
            for c in range(C):
                kk = np.ravel_multi_index((c,) + opos, out_shape)
                for _, ipos in taps:
                    if ipos is not None:
                        j = np.ravel_multi_index((c,) + ipos, in_shape)
                        W[j, kk], S[j, kk] = Fraction(1, n), True
        return ExactMap(W, S, None, out_shape)


class AdaptiveAvgPool(Linear):
    """``F.adaptive_avg_pool1d`` / ``2d`` / ``3d`` (``nn.AdaptiveAvgPool1d`` / ``2d`` / ``3d``): along
    each spatial axis, window i of n inputs → h outputs covers
    ⌊i n / h⌋ … ⌈(i+1) n / h⌉ − 1; the window of an output is the product of its axes' windows.

    Definition::

        z_{c,p} = (1 / |window(p)|) Σ_{i ∈ window(p)} a_{c,i}
    """

    functions = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)

    def examples(self):
        return [(nn.AdaptiveAvgPool2d((2, 1)).eval(), (2, 3, 3)), (nn.AdaptiveAvgPool2d(1).eval(), (2, 2, 2)),
                (nn.AdaptiveAvgPool1d(3).eval(), (2, 7)), (nn.AdaptiveAvgPool1d(2).eval(), (1, 4)),
                (nn.AdaptiveAvgPool3d((1, 2, 1)).eval(), (2, 2, 3, 2))]

    def types(self, call):
        return {F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d,), F.adaptive_avg_pool3d: (nn.AdaptiveAvgPool3d,)}.get(
            call.func, (nn.AdaptiveAvgPool2d,))

    def spatial(self, call) -> int:
        return {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool3d: 3}.get(call.func, 2)

    def out_size(self, call, in_size):
        size = pair(call.arg(1, "output_size"), len(in_size))
        return tuple(in_size[i] if size[i] is None else size[i] for i in range(len(in_size)))

    def accepts(self, call):
        shape, n = call.output.shape, self.spatial(call)
        if call.output.dim() != n + 2:
            return f"expects (batch, channels, *{n} spatial), got output shape {tuple(shape)}"
        return None

    def map(self, call, a, rule=None):
        size = tuple(a.shape[2:])
        return adaptive_avgpool_map(a.shape[1], size, self.out_size(call, size), a.dtype, a.device)

    def exact(self, call, a, rule=None) -> ExactMap:
        C, spatial = a.shape[1], tuple(a.shape[2:])
        out_spatial = self.out_size(call, spatial)
        in_shape, out_shape = (C,) + spatial, (C,) + out_spatial
        n_in, n_out = math.prod(in_shape), math.prod(out_shape)
        W, S = zeros_object((n_in, n_out)), np.zeros((n_in, n_out), bool)
        for opos in itertools.product(*map(range, out_spatial)):
            spans = [range((i * n) // h, -(-((i + 1) * n) // h)) for i, n, h in zip(opos, spatial, out_spatial)]
            size = math.prod(len(r) for r in spans)
            for c in range(C):
                k = np.ravel_multi_index((c,) + opos, out_shape)
                for ipos in itertools.product(*spans):
                    src = np.ravel_multi_index((c,) + ipos, in_shape)
                    W[src, k], S[src, k] = Fraction(1, size), True
        return ExactMap(W, S, None, out_shape)


class Reduce(Linear):
    """``x.mean(dim, keepdim)``, ``torch.mean``, ``x.sum(dim, keepdim)``, ``torch.sum`` over
    per-sample dimensions: a linear neuron per kept position whose weights are 1/n (a mean
    over n positions) or 1 (a sum) on the positions it reduces, no bias — the rules split it,
    as they split a global average pool. A reduction over the batch dimension (or over every
    dimension: ``x.mean()``) mixes the samples of the batch and is refused.

    Definition (R the reduced dimensions, n = Π_{d∈R} size_d)::

        z_k = Σ_{j : j agrees with k outside R} w a_j,   w = 1/n (mean) or 1 (sum)
    """

    functions = (torch.Tensor.mean, torch.mean, torch.Tensor.sum, torch.sum)
    rule_types = (nn.AdaptiveAvgPool2d,)
    """A mean over positions is a global average pool: keyed like ``nn.AdaptiveAvgPool2d``."""

    def examples(self):
        return [(Reduced("mean", (2, 3)), (2, 2, 3)), (Reduced("sum", (-1,), keepdim=True), (3, 2))]

    def dims(self, call) -> tuple[int, ...] | None:
        """The reduced dimensions of the batched tensor, or None for every dimension."""
        dim = call.arg(1, "dim", None)
        ndim = len(call.in_shapes[0])
        if dim is None or (isinstance(dim, (tuple, list)) and not dim):
            return None
        dims = dim if isinstance(dim, (tuple, list, torch.Size)) else (dim,)
        return tuple(sorted({int(d) % ndim for d in dims}))

    def keepdim(self, call) -> bool:
        return bool(call.arg(2, "keepdim", False))

    def accepts(self, call):
        if len(call.args) > 1 and not isinstance(call.args[1], (int, tuple, list, torch.Size)):
            return f"reduces with arguments {call.args[1:]!r}; nrm reads mean/sum over integer dimensions"
        if call.kwargs.get("dtype") is not None or (len(call.args) > 3 and call.args[3] is not None):
            return "reduces with a dtype= conversion; convert the tensor before the reduction"
        dims = self.dims(call)
        if dims is None or 0 in dims:
            what = "every dimension" if dims is None else "the batch dimension"
            return (f"reduces over {what}, which mixes the samples of the batch; nrm explains each sample on its "
                    "own: reduce over per-sample dimensions only (x.mean([2, 3]), x.sum(1))")
        return None

    def weight(self, call, shape: tuple) -> float | Fraction:
        """The weight of every input: 1/n for a mean, 1 for a sum (``shape`` the batched input's)."""
        if call.func.__name__ != "mean":
            return 1
        return Fraction(1, math.prod(shape[d] for d in self.dims(call)))

    def map(self, call, a, rule=None):
        w = torch.full(tuple(a.shape[1:]), float(self.weight(call, tuple(a.shape))), dtype=a.dtype, device=a.device)
        return ReduceMap(w, self.dims(call), self.keepdim(call))

    def exact(self, call, a, rule=None) -> ExactMap:
        in_shape = tuple(a.shape[1:])
        dims, keep = self.dims(call), self.keepdim(call)
        kept = tuple(1 if d + 1 in dims else s for d, s in enumerate(in_shape))
        out_shape = kept if keep else tuple(s for d, s in enumerate(in_shape) if d + 1 not in dims)
        n_in, n_out = math.prod(in_shape), math.prod(out_shape)
        W, S = zeros_object((n_in, n_out)), np.zeros((n_in, n_out), bool)
        w = Fraction(self.weight(call, tuple(a.shape)))
        for j, pos in enumerate(np.ndindex(*in_shape)):
            k = np.ravel_multi_index(tuple(0 if d + 1 in dims else p for d, p in enumerate(pos)), kept)
            W[j, k], S[j, k] = w, True
        return ExactMap(W, S, None, out_shape)


class Add(Sum):
    """``a + b``, ``torch.add``, ``a += b`` of two input-derived tensors of one shape: the sum
    of branches, a linear neuron with weights 1 (rule key :class:`nrm.Sum`; LRP-0 splits
    it in proportion to the summands).

    Definition::

        z_k = a⁽¹⁾_k + a⁽²⁾_k          (no bias)
    """

    functions = (torch.Tensor.add, torch.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__radd__,
                 torch.Tensor.__iadd__)
    rule_types = (SumMarker,)

    def examples(self):
        return [(Residual(3), (3,))]

    def accepts(self, call):

        operands = [call.args[0], call.args[1] if len(call.args) > 1 else call.kwargs.get("other")]
        if "alpha" in call.kwargs or len(call.args) > 2:
            return "adds a scaled term (alpha=); nrm reads sums of tensors computed by the model"
        if not all(isinstance(o, Value) for o in operands):
            return ("adds a constant to an input-derived tensor; nrm reads sums of tensors computed by the model "
                    "(residual connections). Fold the constant into the bias of a layer")
        if len(set(call.in_shapes)) != 1:
            return (f"adds tensors of shapes {[tuple(s) for s in call.in_shapes]}; nrm reads sums of equal shapes "
                    "(no broadcasting)")
        return None


class Residual(nn.Module):
    """x + W relu(x): a sum of two branches (an example of :class:`Add`)."""

    def __init__(self, n: int):
        super().__init__()
        self.inner = seeded(nn.Linear(n, n), 1)

    def forward(self, x):
        return x + self.inner(F.relu(x))


class Reduced(nn.Module):
    """relu(x).mean(dims) or .sum(dims) (an example of :class:`Reduce`)."""

    def __init__(self, how: str = "mean", dims: tuple = (2, 3), keepdim: bool = False):
        super().__init__()
        self.how, self.dims, self.keepdim = how, dims, keepdim

    def forward(self, x):
        return getattr(F.relu(x), self.how)(list(self.dims), keepdim=self.keepdim)
