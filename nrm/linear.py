"""Linear maps of the proper FFNN: z = W a (+ b), with the two operations the engine
needs for any (modified) weight: the map itself and its transpose (the VJP).

A rule never sees these classes: it modifies ``weight`` elementwise, and the engine
feeds the modified weight back through :meth:`LinearMap.forward` (to form the
denominators) and :meth:`LinearMap.transpose` (to send relevance down).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F


class LinearMap:
    """Base class. ``weight`` is the tensor rules modify; ``bias`` broadcasts to the output."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    fuses_bias = False  # whether forward() takes the bias (else the engine adds bias_for(z))

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_j x_j w_jk for every output k, plus ``bias`` (shaped like ``self.bias``) when given."""
        raise NotImplementedError  # abstract

    def transpose(self, g: torch.Tensor, weight: torch.Tensor, in_shape: tuple[int, ...]) -> torch.Tensor:
        """Σ_k w_jk g_k for every input j: the VJP of :meth:`forward` w.r.t. x."""
        raise NotImplementedError  # abstract

    def structured(self, weight: torch.Tensor) -> torch.Tensor:
        """Zero the entries of a modified weight that are not structural connections."""
        return weight

    def own_weight(self) -> torch.Tensor:
        """What :meth:`forward` and :meth:`transpose` take to apply the map itself, unmodified:
        ``weight``, or for a map that applies its weight without forming it
        (:class:`SoftmaxMap`) the smaller tensor it is computed from. Only ``weight`` is for a
        rule to modify."""
        return self.weight

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_j |x_j| |w_jk| over the structural connections: the scale of the rounding in W x
        (:func:`nrm.check.check_map`)."""
        return self.forward(x.abs(), self.structured(self.weight.abs()))

    def bias_for(self, z: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor | None:
        """The bias (or ``bias``, shaped like it) to broadcast against an output ``z`` of shape (N, *out)."""
        bias = self.bias if bias is None else bias
        if bias is None:
            return None
        return bias.view((1, -1) + (1,) * (z.dim() - 2))

    def _plus(self, z: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return z if bias is None else z.add_(self.bias_for(z, bias))


class DenseMap(LinearMap):
    """``torch.nn.Linear``: weight (out, in)."""

    fuses_bias = True

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias

    def forward(self, x, weight, bias=None):
        return F.linear(x, weight, bias)

    def transpose(self, g, weight, in_shape):
        """gᵀ W row by row; rows of g that are all zero (a language model's logits explained at
        one position: relevance only in that row of (T, vocabulary)) are skipped when they are
        at least half of the rows, and give exact zeros."""
        rows = g.reshape(-1, g.shape[-1])
        # a row with a non-zero among its first 8 entries is live: when those are more than half the rows
        # (the common, dense case), a read of 8 columns settles it without a pass over g
        if rows.shape[0] >= 8 and 2 * int(torch.count_nonzero(rows[:, :8].any(1))) <= rows.shape[0]:
            live = rows.any(1).nonzero().squeeze(1)
            if 2 * live.numel() <= rows.shape[0]:
                out = rows.new_zeros((rows.shape[0], weight.shape[-1]))
                out.index_copy_(0, live, rows.index_select(0, live) @ weight)
                return out.reshape(tuple(g.shape[:-1]) + (weight.shape[-1],))
        return g @ weight

    def bias_for(self, z, bias=None):
        # nn.Linear acts on the last dimension, also for an input of shape (N, P, F)
        bias = self.bias if bias is None else bias
        return None if bias is None else bias.view((1,) * (z.dim() - 1) + (-1,))


class ConvMap(LinearMap):
    """``Conv1d`` / ``Conv2d`` / ``Conv3d`` (also average pooling as a depthwise convolution)."""

    fuses_bias = True

    def __init__(self, weight, bias, stride, padding, dilation, groups):
        self.weight, self.bias = weight, bias
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.dim = weight.dim() - 2

    def forward(self, x, weight, bias=None):
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dim - 1]
        if self._tiled(weight, x.shape[1]):
            return self._plus(_tiled_forward(x, weight), bias)
        kernel = self._shared(weight)
        if kernel is not None:  # every channel alike: one single-channel convolution over all channels
            n, c = x.shape[:2]
            z = conv(x.reshape((n * c, 1) + tuple(x.shape[2:])), kernel, None, self.stride, self.padding, self.dilation)
            return self._plus(z.reshape((n, c) + tuple(z.shape[2:])), bias)
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _shared(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The kernel (1, 1, *k) of a depthwise map whose channels all have the same one
        (average pooling), else None. Torch runs a grouped convolution group by group."""
        if self.groups == 1 or weight.shape[0] != self.groups or weight.shape[1] != 1:
            return None
        first = weight[:1]
        return first if torch.equal(weight, first.expand_as(weight)) else None

    def _tiled(self, weight, channels: int) -> bool:
        """Whether the map is depthwise (one kernel per channel) with windows that tile the
        input without overlap (stride = kernel, no padding or dilation): average pooling,
        global average pooling (a squeeze-excitation's) — computed by reshapes, not by a
        grouped convolution, whose CPU kernels are slow for large windows and many channels."""
        n = self.dim
        return (weight.shape[1] == 1 and self.groups == weight.shape[0] == channels
                and not isinstance(self.padding, str) and _tuple(self.padding, n) == (0,) * n
                and _tuple(self.dilation, n) == (1,) * n and _tuple(self.stride, n) == tuple(weight.shape[2:]))

    def _pointwise(self, weight) -> bool:
        """Whether the map is a 1×1 convolution of stride 1, no padding, no groups: z = W a per position."""
        n = self.dim
        return (self.groups == 1 and tuple(weight.shape[2:]) == (1,) * n and _tuple(self.stride, n) == (1,) * n
                and not isinstance(self.padding, str) and _tuple(self.padding, n) == (0,) * n)

    def transpose(self, g, weight, in_shape):
        if self._tiled(weight, in_shape[0]):
            return _tiled_transpose(g, weight, in_shape)
        if self._pointwise(weight):  # Σ_k w_kj g_k per position: one matrix product
            w = weight.reshape(weight.shape[0], weight.shape[1])
            return torch.matmul(w.t(), g.reshape(g.shape[0], g.shape[1], -1)).reshape((g.shape[0],) + tuple(in_shape))
        kernel = self._shared(weight)
        if kernel is not None:
            n, c = g.shape[:2]
            flat = ConvMap(kernel, None, self.stride, self.padding, self.dilation, 1)
            t = flat.transpose(g.reshape((n * c, 1) + tuple(g.shape[2:])), kernel, (1,) + tuple(in_shape[1:]))
            return t.reshape((n,) + tuple(in_shape))
        # the VJP alone (output_mask: input only). The input argument only gives the shape;
        # an uninitialized tensor, since an expanded one (torch.nn.grad.conv2d_input) is
        # made contiguous inside, a copy as large as the layer on every call
        shape = (g.shape[0],) + tuple(in_shape)
        n = self.dim
        return torch.ops.aten.convolution_backward(
            g, g.new_empty(shape), weight, None, _tuple(self.stride, n), _tuple(self.padding, n),
            _tuple(self.dilation, n), False, (0,) * n, self.groups, (True, False, False))[0]


class ConvTransposeMap(LinearMap):
    """``ConvTranspose1d`` / ``2d`` / ``3d``: z = conv_transpose(a, W) + b with W (in, out/groups, *k);
    its transpose is the convolution's VJP with ``transposed=True`` (the adjoint, exactly)."""

    fuses_bias = True

    def __init__(self, weight, bias, stride, padding, output_padding, groups, dilation):
        self.weight, self.bias = weight, bias
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.groups, self.dilation = groups, dilation
        self.dim = weight.dim() - 2

    def forward(self, x, weight, bias=None):
        conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.dim - 1]
        return conv(x, weight, bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation)

    def transpose(self, g, weight, in_shape):
        n = self.dim
        shape = (g.shape[0],) + tuple(in_shape)
        return torch.ops.aten.convolution_backward(
            g, g.new_empty(shape), weight, None, _tuple(self.stride, n), _tuple(self.padding, n),
            _tuple(self.dilation, n), True, _tuple(self.output_padding, n), self.groups, (True, False, False))[0]

    def bias_for(self, z, bias=None):
        bias = self.bias if bias is None else bias
        return None if bias is None else bias.view((1, -1) + (1,) * (z.dim() - 2))


class SumMap(LinearMap):
    """The sum of n branches, z_k = Σ_i w_i a^(i)_k with w = 1 (NRM-SPEC §1): the input is
    the stack of the summands, shape (N, n, *shape); weight (n,)."""

    fuses_bias = True

    def __init__(self, n: int, dtype, device):
        self.weight, self.bias = torch.ones(n, dtype=dtype, device=device), None

    def forward(self, x, weight, bias=None):
        return self._plus(torch.einsum("ni...,i->n...", x, weight), bias)

    def transpose(self, g, weight, in_shape):
        return g.unsqueeze(1) * weight.view((1, -1) + (1,) * (g.dim() - 1))


class DiagonalMap(LinearMap):
    """A gain per channel or per neuron: z_k = w_k a_k (+ b_k), the weight of one shape
    broadcast against the input — (C,) along dim 1 (a learned channel scale, a standalone
    batch norm), or one sample's full shape.

    Definition::

        q(j | k) = δ_jk a_k w_k / D_k   under any rule (each neuron has one input)
    """

    fuses_bias = True

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight, bias

    def _view(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if w.dim() == 1 and x.dim() > 2:
            return w.view((1, -1) + (1,) * (x.dim() - 2))
        return w.view((1,) + tuple(w.shape))

    def forward(self, x, weight, bias=None):
        return self._plus(x * self._view(weight, x), bias)

    def transpose(self, g, weight, in_shape):
        return (g.reshape((g.shape[0],) + tuple(in_shape)) * self._view(weight, g.reshape((g.shape[0],) +
                                                                                          tuple(in_shape))))

    def bias_for(self, z, bias=None):
        bias = self.bias if bias is None else bias
        return None if bias is None else self._view(bias, z)


class CentringMap(LinearMap):
    """A normalization with its σ held at the forward value (layer norm, group norm): the
    per-sample flat input splits into P contiguous groups of n neurons, and within a group

        z_k = Σ_j a_j W_jk + b_k,    W_jk = (γ_k / σ_g) (δ_jk − 1/n)

    (AttnLRP Prop. 3.4, the identity on 1/σ). Every entry of a column k off its diagonal is
    the same number, so a weight modified elementwise (w⁺, w + γw⁺, 1 for flat) is held as
    two values per column: ``weight`` (B, P, 2, n) is [diagonal W_kk, off-diagonal W_jk]
    per sample b, group and output k. ``bias`` (P, n) is β. σ depends on the sample, so
    :meth:`forward` and :meth:`transpose` accept R·B stacked rows (row i is sample i mod B).

    Definition::

        forward:    z_k = d_k a_k + o_k (Σ_{j ∈ g} a_j − a_k)
        transpose:  t_j = d_j g_j + Σ_{k ∈ g} o_k g_k − o_j g_j
    """

    fuses_bias = False
    same_form = True
    """Built from the input (σ per sample), but of one form at every input: the self-check
    (:func:`nrm.check.check_map`) runs once per signature, as for a map of weights alone."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight, self.bias = weight, bias
        self.batch = weight.shape[0]

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        if rows % self.batch:
            raise ValueError(f"the map was built for a batch of {self.batch} samples but got {rows} rows")
        return x.reshape((rows // self.batch, self.batch) + tuple(self.weight.shape[1:2]) + (-1,))

    def forward(self, x, weight, bias=None):
        a = self._groups(x)
        d, o = weight[:, :, 0], weight[:, :, 1]
        z = d * a + o * (a.sum(-1, keepdim=True) - a)
        z = z.reshape(x.shape)
        return z if bias is None else z + bias.reshape((1,) + tuple(x.shape[1:]))

    def transpose(self, g, weight, in_shape):
        r = self._groups(g)
        d, o = weight[:, :, 0], weight[:, :, 1]
        og = o * r
        t = d * r + og.sum(-1, keepdim=True) - og
        return t.reshape((g.shape[0],) + tuple(in_shape))

    def bias_for(self, z, bias=None):
        bias = self.bias if bias is None else bias
        return None if bias is None else bias.reshape((1,) + tuple(z.shape[1:]))


class PoolMatrixMap(LinearMap):
    """Adaptive average pooling with windows of unequal size, as a per-channel matrix
    P (out_positions, in_positions); zeros of P are not connections."""

    fuses_bias = True

    def __init__(self, matrix: torch.Tensor, out_spatial: tuple[int, ...]):
        self.weight, self.bias = matrix, None
        self.mask = matrix != 0
        self.out_spatial = out_spatial

    def forward(self, x, weight, bias=None):
        n, c = x.shape[:2]
        return self._plus((x.reshape(n, c, -1) @ weight.T).reshape((n, c) + self.out_spatial), bias)

    def transpose(self, g, weight, in_shape):
        n, c = g.shape[:2]
        return (g.reshape(n, c, -1) @ weight).reshape((n,) + tuple(in_shape))

    def structured(self, weight):
        return weight * self.mask


class ResampleMap(LinearMap):
    """``F.interpolate`` as one 1-D matrix per spatial dimension: P = P₁ ⊗ P₂ ⊗ … (out
    positions × in positions of one channel), applied one dimension at a time, as torch's
    interpolation is separable. ``factors`` (P_d: out_d × in_d) are what the map applies as
    itself (:meth:`own_weight`): O(n · Σ_d out_d) per channel instead of O(n_in · n_out);
    ``weight``, the dense P (torch's weights on the unit basis), is formed on first use only (a
    rule that modifies it, the laws, the exact form), by ``dense``, which refuses a P too large
    to form.

    Definition (c a channel, p = (p₁, p₂, …) an output position, i an input position)::

        z_{c,p} = Σ_i P_{p,i} a_{c,i},   P_{p,i} = Π_d (P_d)_{p_d, i_d}
    """

    fuses_bias = True

    def __init__(self, factors: tuple[torch.Tensor, ...], out_spatial: tuple[int, ...], dense):
        self.factors, self.out_spatial, self._dense = tuple(factors), tuple(out_spatial), dense
        self.bias, self._weight, self._mask = None, None, None

    @property
    def weight(self) -> torch.Tensor:
        """The dense P (out positions, in positions), formed once when first asked for."""
        if self._weight is None:
            self._weight = self._dense()
        return self._weight

    def own_weight(self):
        return self.factors

    def _along(self, t: torch.Tensor, matrices, transpose: bool) -> torch.Tensor:
        for d, P in enumerate(matrices):
            t = (t.movedim(2 + d, -1) @ (P if transpose else P.T)).movedim(-1, 2 + d)
        return t.contiguous()

    def forward(self, x, weight, bias=None):
        if weight is self.factors:
            return self._plus(self._along(x, weight, transpose=False), bias)
        n, c = x.shape[:2]
        return self._plus((x.reshape(n, c, -1) @ weight.T).reshape((n, c) + self.out_spatial), bias)

    def transpose(self, g, weight, in_shape):
        if weight is self.factors:
            return self._along(g, weight, transpose=True)
        n, c = g.shape[:2]
        return (g.reshape(n, c, -1) @ weight).reshape((n,) + tuple(in_shape))

    def magnitude(self, x):
        """Σ_i |x_i| |P_{p,i}|, with |P| = ⊗_d |P_d|."""
        return self._along(x.abs(), tuple(P.abs() for P in self.factors), transpose=False)

    def structured(self, weight):
        if self._mask is None:
            self._mask = self.weight != 0
        return weight * self._mask


class ReduceMap(LinearMap):
    """A weighted sum over some per-sample dimensions (``x.mean(dims)``, ``x.sum(dims)``):
    z_k = Σ_{j reduced into k} w_j a_j. ``weight`` has one sample's input shape (1 for a sum,
    1/n for a mean over n positions); ``dims`` are dimensions of the batched tensor (≥ 1)."""

    fuses_bias = True

    def __init__(self, weight: torch.Tensor, dims: tuple[int, ...], keepdim: bool):
        self.weight, self.bias = weight, None
        self.dims, self.keepdim = tuple(sorted(dims)), keepdim

    def forward(self, x, weight, bias=None):
        return self._plus((x * weight.unsqueeze(0)).sum(self.dims, keepdim=self.keepdim), bias)

    def transpose(self, g, weight, in_shape):
        n = g.shape[0]
        if not self.keepdim:
            g = g.reshape((n,) + tuple(1 if d + 1 in self.dims else s for d, s in enumerate(in_shape)))
        return g.expand((n,) + tuple(in_shape)) * weight.unsqueeze(0)


def avgpool_map(channels: int, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
                dtype: torch.dtype, device: torch.device, divisor: float | None = None) -> ConvMap:
    """Average pooling (1-D, 2-D or 3-D) as a depthwise convolution with constant weights 1/|window|."""
    n = divisor if divisor is not None else math.prod(kernel)
    weight = _constant_weight((channels, 1) + tuple(kernel), 1.0 / n, dtype, device)
    return ConvMap(weight, None, tuple(stride), tuple(padding), (1,) * len(kernel), channels)


@functools.lru_cache(maxsize=128)
def _constant_weight(shape: tuple, value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A weight with one value everywhere (average pooling's 1/|window|), made once per shape:
    no map writes into its weight (rules make new tensors), so the same tensor serves every
    explain."""
    return torch.full(shape, value, dtype=dtype, device=device)


class WindowAverageMap(LinearMap):
    """Average pooling whose divisor varies by position — ``count_include_pad=False`` with
    padding (PoolFormer's token mixer), ``ceil_mode=True`` (timm's ResNet-D and NFNet shortcuts):
    the input padded with zeros (``before`` / ``after`` per spatial dimension, ``after`` reaching
    the last window), the window sum (a depthwise convolution with weights one), divided at each
    output position by its divisor n_k (torch's: the window's taps inside the input, or inside
    the input and its symmetric padding)::

        z_{c,k} = (1 / n_k) Σ_{i ∈ window(k) ∩ input} a_{c,i}

    ``weight`` (the ones) is what rules modify; 1/n_k > 0 is applied after it, so a modified
    map is (1/n_k) · (modified sum), which every rule's column treats as it treats W itself."""

    fuses_bias = True

    def __init__(self, weight: torch.Tensor, stride: tuple, before: tuple, after: tuple, scale: torch.Tensor):
        self.weight, self.bias = weight, None
        self.stride, self.before, self.after = tuple(stride), tuple(before), tuple(after)
        self.scale = scale  # (1, 1, *out_spatial): 1 / n_k
        self.conv = ConvMap(weight, None, self.stride, (0,) * len(stride), (1,) * len(stride), weight.shape[0])

    def _pads(self) -> list[int]:
        return [v for b, a in zip(reversed(self.before), reversed(self.after)) for v in (b, a)]

    def forward(self, x, weight, bias=None):
        return self._plus(self.conv.forward(F.pad(x, self._pads()), weight) * self.scale, bias)

    def transpose(self, g, weight, in_shape):
        spatial = tuple(in_shape[1:])
        padded = (in_shape[0],) + tuple(n + b + a for n, b, a in zip(spatial, self.before, self.after))
        full = self.conv.transpose(g * self.scale, weight, padded)
        return full[(slice(None), slice(None)) + tuple(slice(b, b + n) for b, n in zip(self.before, spatial))]


def pool_out(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """torch's output length of a pooling window sweep."""
    num = n + 2 * p - d * (k - 1) - 1
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def window_divisors(in_spatial: tuple, kernel: tuple, stride: tuple, padding: tuple, ceil: bool,
                    include_pad: bool) -> tuple[list[list[int]], tuple, tuple]:
    """torch's divisor of every window along each spatial dimension (their product is n_k), and
    the zero padding before / after that reaches every window: window o covers s·o − p … s·o − p
    + k − 1; its divisor counts the positions inside the input (``include_pad=False``) or inside
    the input and its symmetric padding (``True``; the overhang of ``ceil_mode`` never counts)."""
    counts, after = [], []
    for n, k, s, p in zip(in_spatial, kernel, stride, padding):
        out = pool_out(n, k, s, p, 1, ceil)
        lo, hi = (0, n) if not include_pad else (-p, n + p)
        counts.append([max(0, min(o * s - p + k, hi) - max(o * s - p, lo)) for o in range(out)])
        after.append(max(0, (out - 1) * s - p + k - n))
    return counts, tuple(padding), tuple(after)


def window_average_map(channels: int, in_spatial: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                       padding: tuple[int, ...], ceil: bool, include_pad: bool, dtype, device,
                       divisor: float | None = None) -> WindowAverageMap:
    """:class:`WindowAverageMap` of a pooling window sweep (:func:`window_divisors`; one
    ``divisor`` for every window where ``divisor_override`` gives it)."""
    counts, before, after = window_divisors(in_spatial, kernel, stride, padding, ceil, include_pad)
    n = torch.ones((1, 1) + tuple(len(c) for c in counts), dtype=torch.float64)
    for d, c in enumerate(counts):
        axis = torch.tensor(c, dtype=torch.float64) if divisor is None else torch.ones(len(c), dtype=torch.float64)
        n = n * axis.reshape((1, 1) + tuple(-1 if i == d else 1 for i in range(len(counts))))
    if divisor is not None:
        n = n * float(divisor)
    ones = torch.ones((channels, 1) + tuple(kernel), dtype=dtype, device=device)
    return WindowAverageMap(ones, stride, before, after, (1.0 / n).to(dtype=dtype, device=device))


def adaptive_avgpool_map(channels: int, in_size: tuple[int, ...], out_size: tuple[int, ...], dtype,
                         device) -> LinearMap:
    """``AdaptiveAvgPool1d`` / ``2d`` / ``3d``: a strided average pool when the sizes
    divide, else a per-channel matrix over the flattened positions."""
    if all(n % h == 0 for n, h in zip(in_size, out_size)):
        k = tuple(n // h for n, h in zip(in_size, out_size))
        return avgpool_map(channels, k, k, (0,) * len(k), dtype, device)
    spans = [[((i * n) // h, -((-(i + 1) * n) // h)) for i in range(h)] for n, h in zip(in_size, out_size)]
    matrix = torch.zeros(math.prod(out_size), math.prod(in_size), dtype=torch.float64)
    for o, opos in enumerate(itertools.product(*map(range, out_size))):
        window = [range(*spans[d][i]) for d, i in enumerate(opos)]
        size = math.prod(len(r) for r in window)
        for ipos in itertools.product(*window):
            matrix[o, int(np.ravel_multi_index(ipos, in_size))] = 1.0 / size
    return PoolMatrixMap(matrix.to(dtype=dtype, device=device), tuple(out_size))


def _tuple(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _tiled_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """z[n, c, o] = Σ_a x[n, c, o·k + a] w[c, 0, a] over non-overlapping windows k (the rows
    and columns past the last whole window are not read, as a convolution of stride k)."""
    k = tuple(weight.shape[2:])
    n, c = x.shape[:2]
    out = tuple(s // w for s, w in zip(x.shape[2:], k))
    x = x[(slice(None), slice(None)) + tuple(slice(0, o * w) for o, w in zip(out, k))]
    split = (n, c) + tuple(v for pair in zip(out, k) for v in pair)
    kernel = weight.reshape((1, c) + tuple(v for w in k for v in (1, w)))
    return (x.reshape(split) * kernel).sum(dim=tuple(range(3, 2 + 2 * len(k), 2)))


def _tiled_transpose(g: torch.Tensor, weight: torch.Tensor, in_shape: tuple) -> torch.Tensor:
    """t[n, c, o·k + a] = g[n, c, o] w[c, 0, a]: each input neuron lies in at most one window
    (the rows and columns past the last whole window get 0)."""
    k = tuple(weight.shape[2:])
    n, c = g.shape[:2]
    out = tuple(g.shape[2:])
    spread = g.reshape((n, c) + tuple(v for o in out for v in (o, 1)))
    kernel = weight.reshape((1, c) + tuple(v for w in k for v in (1, w)))
    t = (spread * kernel).reshape((n, c) + tuple(o * w for o, w in zip(out, k)))
    missing = [s - o * w for s, o, w in zip(in_shape[1:], out, k)]
    if any(missing):
        t = F.pad(t, [v for m in reversed(missing) for v in (0, m)])
    return t


class MatMulMap(LinearMap):
    """A matrix product of two activations, O = A · V (``A @ V``, ``torch.bmm``; attention's
    Q · Kᵀ and A · V), as a linear map of the packed input [A, V] (``nrm.graph.pack_inputs``)
    with the other factor held at its forward value and the product split by θ:

        O_jp = Σ_i A_ji (θ V_ip) + Σ_i ((1 − θ) A_ji) V_ip

    ``weight`` (B, |V| + |A|) holds, per sample, θ V (the weights of A's edges) then (1 − θ) A
    (the weights of V's edges), so a rule modifies them elementwise as any weight; it is formed
    on first use only (a rule that modifies it, the laws): applied as itself
    (:meth:`own_weight`, the packed factors [A, V]) the map multiplies by θ and 1 − θ after the
    products, and skips the product of a factor with no share. A and V have the shapes
    (*lead_A, n, m) and (*lead_V, m, d) per sample, the leading dimensions equal or broadcast from
    size 1 (a key/value head shared by several query heads: its weights are read by every head,
    and its transpose sums over them). The map depends on the sample: :meth:`forward` and
    :meth:`transpose` accept R·B stacked rows (row i is sample i mod B). A factor with no share
    (θ = 0: A, θ = 1: V) is no parent: :meth:`structured` zeroes its edges.

    Definition::

        forward:    z = x_A @ W_A + W_V @ x_V             (own: θ x_A @ V + (1 − θ) A @ x_V)
        transpose:  t_A = g @ W_Aᵀ,   t_V = W_Vᵀ @ g      (own: θ g @ Vᵀ,  (1 − θ) Aᵀ @ g)
    """

    fuses_bias = True
    same_form = True
    """Built from the recorded factors (per sample), but of one form at every input — which index
    contracts with which depends on the call's shapes alone: the self-check
    (:func:`nrm.check.check_map`) runs once per signature, as for a map of weights alone."""

    def __init__(self, factors: torch.Tensor, a_shape: tuple, v_shape: tuple, theta: float):
        self.factors, self.bias, self.theta, self._weight = factors, None, float(theta), None
        self.a_shape, self.v_shape = tuple(a_shape), tuple(v_shape)
        self.na, self.nv = _numel(self.a_shape), _numel(self.v_shape)
        # the leading dimensions broadcast (a key/value head shared by the query heads: size 1 on one side)
        self.lead = tuple(torch.broadcast_shapes(self.a_shape[:-2], self.v_shape[:-2]))
        self.out_shape = self.lead + self.a_shape[-2:-1] + self.v_shape[-1:]
        self.batch = factors.shape[0]
        self.everywhere = self.theta not in (0.0, 1.0)  # 0 < θ < 1: every edge is a connection

    def _unpack(self, t: torch.Tensor, lead: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """The A and V parts of packed rows ``t`` (*lead, |A| + |V|), shaped (*lead, *a_shape) and (*lead, *v_shape)."""
        flat = t.reshape(lead + (-1,))
        return flat[..., :self.na].reshape(lead + self.a_shape), flat[..., self.na:].reshape(lead + self.v_shape)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A (B, *a_shape) and V (B, *v_shape) from the packed factors."""
        return self._unpack(self.factors, (self.batch,))

    @property
    def weight(self) -> torch.Tensor:
        """[θ V, (1 − θ) A] per sample (B, |V| + |A|), formed once when first asked for."""
        if self._weight is None:
            A, V = self._factors()
            B = self.batch
            self._weight = torch.cat([(self.theta * V).reshape(B, -1), ((1 - self.theta) * A).reshape(B, -1)], 1)
        return self._weight

    @property
    def connected(self) -> torch.Tensor:
        """(|V| + |A|,) bool: which edges are connections (a factor with no share has none)."""
        device = self.factors.device
        return torch.cat([torch.full((self.nv,), self.theta != 0, device=device),
                          torch.full((self.na,), self.theta != 1, device=device)])

    def own_weight(self):
        return self.factors

    def _rows(self, t: torch.Tensor) -> int:
        if t.shape[0] % self.batch:
            raise ValueError(f"the map was built for a batch of {self.batch} samples but got {t.shape[0]} rows")
        return t.shape[0] // self.batch

    def _weights(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = self.batch
        return (weight[:, :self.nv].reshape((B,) + self.v_shape), weight[:, self.nv:].reshape((B,) + self.a_shape))

    def forward(self, x, weight, bias=None):
        R, B = self._rows(x), self.batch
        xa, xv = self._unpack(x, (R, B))
        if weight is self.factors:
            A, V = self._factors()
            z = self._scaled(self.theta, lambda: torch.matmul(xa, V))
            z = self._plus_scaled(z, 1 - self.theta, lambda: torch.matmul(A, xv))
            if z is None:
                z = x.new_zeros((R, B) + self.out_shape)
            return z.reshape((R * B,) + self.out_shape)
        wa, wv = self._weights(weight)
        z = torch.matmul(xa, wa) + torch.matmul(wv, xv)
        return z.reshape((R * B,) + self.out_shape)

    @staticmethod
    def _scaled(c: float, product) -> torch.Tensor | None:
        """c · product(), or None when c = 0 (the product is not formed)."""
        if c == 0:
            return None
        p = product()
        return p if c == 1 else p.mul_(c)

    def _plus_scaled(self, z: torch.Tensor | None, c: float, product) -> torch.Tensor | None:
        t = self._scaled(c, product)
        return t if z is None else z if t is None else z.add_(t)

    def transpose(self, g, weight, in_shape):
        R, B = self._rows(g), self.batch
        g = g.reshape((R, B) + self.out_shape)
        if weight is self.factors:
            A, V = self._factors()
            ta = self._scaled(self.theta, lambda: _sum_to(torch.matmul(g, V.transpose(-1, -2)), self.a_shape))
            tv = self._scaled(1 - self.theta, lambda: _sum_to(torch.matmul(A.transpose(-1, -2), g), self.v_shape))
            ta = g.new_zeros((R, B) + self.a_shape) if ta is None else ta
            tv = g.new_zeros((R, B) + self.v_shape) if tv is None else tv
        else:
            wa, wv = self._weights(weight)
            ta = _sum_to(torch.matmul(g, wa.transpose(-1, -2)), self.a_shape)
            tv = _sum_to(torch.matmul(wv.transpose(-1, -2), g), self.v_shape)
        return torch.cat([ta.reshape(R * B, -1), tv.reshape(R * B, -1)], 1).reshape((R * B,) + tuple(in_shape))

    def magnitude(self, x):
        """Σ_j |x_j| |w_jk| = |θ| |x_A| @ |V| + |1 − θ| |A| @ |x_V| (the weight not formed)."""
        R, B = self._rows(x), self.batch
        xa, xv = self._unpack(x.abs(), (R, B))
        A, V = self._factors()
        z = abs(self.theta) * torch.matmul(xa, V.abs()) + abs(1 - self.theta) * torch.matmul(A.abs(), xv)
        return z.reshape((R * B,) + self.out_shape)

    def structured(self, weight):
        return weight if self.everywhere else weight * self.connected.to(weight.dtype)


def _sum_to(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    """``t`` (R, B, *lead, …) summed over the leading dimensions that ``shape`` (one sample's) broadcast
    from size 1: the transpose of a broadcast."""
    dims = [2 + i for i, (s, n) in enumerate(zip(shape, t.shape[2:])) if s == 1 and n != 1]
    return t.sum(dims, keepdim=True) if dims else t


def repeated_rows(bias: torch.Tensor, rows: int, batch: int) -> torch.Tensor:
    """A per-sample bias (batch, …) for ``rows`` = k · batch stacked rows (k events per sample)."""
    return bias.repeat((rows // batch,) + (1,) * (bias.dim() - 1)) if rows != batch else bias


class SoftmaxMap(LinearMap):
    """s = softmax(x) along one per-sample dimension, linearized at the forward value x (the
    Taylor expansion of AttnLRP Prop. 3.1): z = J x + b with J the Jacobian and the remainder
    b = s − J x as the bias, so z = s. Within a group of n neurons along the softmax
    dimension (every other index fixed), in-neuron j and out-neuron k:

        W_jk = ∂s_k/∂x_j = s_k (δ_jk − s_j),    b_k = s_k − Σ_j x_j W_jk

    ``probabilities`` (B, G, n) is s per sample and group, ``bias`` (B, *shape) per sample;
    ``weight`` (B, G, n, n), W per sample and group, is formed on first use only (a rule
    that modifies it, the laws): applied as itself (:meth:`own_weight`, the probabilities)
    the map costs O(n) per output, not O(n²). The map depends on the sample:
    :meth:`forward` and :meth:`transpose` accept R·B stacked rows. ``dim`` is the softmax
    dimension of one sample (0-based, the batch dimension excluded).

    Definition::

        forward:    z_k = Σ_{j in k's group} x_j W_jk     = s_k x_k − s_k Σ_j s_j x_j
        transpose:  t_j = Σ_{k in j's group} W_jk g_k     = s_j g_j − s_j Σ_k s_k g_k
    """

    fuses_bias = False
    same_form = True
    """Built from the input (s per sample), but of one form at every input — the softmax along the
    call's dimension, linearized: the self-check (:func:`nrm.check.check_map`, s recomputed by torch
    against the model's own output) runs once per signature, as for a map of weights alone."""

    def __init__(self, probabilities: torch.Tensor, bias: torch.Tensor | None, shape: tuple, dim: int):
        self.probabilities, self.bias, self._weight = probabilities, bias, None
        self.shape, self.dim = tuple(shape), dim
        self.batch = probabilities.shape[0]

    @property
    def weight(self) -> torch.Tensor:
        """W (B, G, n, n): W[b, g, j, k] = s_k (δ_jk − s_j), formed once when first asked for."""
        if self._weight is None:
            s = self.probabilities
            eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)
            self._weight = s.unsqueeze(-2) * (eye - s.unsqueeze(-1))
        return self._weight

    def own_weight(self):
        return self.probabilities

    def _groups(self, t: torch.Tensor) -> tuple[torch.Tensor, int]:
        rows = t.shape[0]
        if rows % self.batch:
            raise ValueError(f"the map was built for a batch of {self.batch} samples but got {rows} rows")
        moved = t.reshape((rows,) + self.shape).movedim(self.dim + 1, -1)
        return moved.reshape(rows // self.batch, self.batch, -1, self.shape[self.dim]), rows

    def _back(self, t: torch.Tensor, rows: int) -> torch.Tensor:
        moved = tuple(s for i, s in enumerate(self.shape) if i != self.dim) + (self.shape[self.dim],)
        return t.reshape((rows,) + moved).movedim(-1, self.dim + 1).contiguous()

    @staticmethod
    def _jacobian_times(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s ⊙ t − s (s · t) per group (s (B, G, n), t (R, B, G, n)): Wᵀ t, and W t as well,
        W = diag(s) − s sᵀ being symmetric. s ⊙ t first, so that a masked entry
        (s = 0, t = finfo.min) gives 0, never 0 · ∞."""
        st = s * t
        return st - s * st.sum(-1, keepdim=True)

    def _forward_own(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Σ_j x_j W_jk per group with W applied as itself (s the probabilities)."""
        return self._jacobian_times(s, x)

    def _transpose_own(self, s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Σ_k W_jk g_k per group with W applied as itself."""
        return self._jacobian_times(s, g)

    def forward(self, x, weight, bias=None):
        xg, rows = self._groups(x)
        if weight is self.probabilities:
            z = self._forward_own(weight, xg)
        else:
            z = torch.einsum("rbgj,bgjk->rbgk", xg, weight)
        z = self._back(z, rows)
        return z if bias is None else z + self.bias_for(z, bias)

    def transpose(self, g, weight, in_shape):
        gg, rows = self._groups(g)
        if weight is self.probabilities:
            return self._back(self._transpose_own(weight, gg), rows)
        return self._back(torch.einsum("bgjk,rbgk->rbgj", weight, gg), rows)

    def magnitude(self, x):
        """Σ_j |x_j| |W_jk| = s_k ((1 − s_k) |x_k| + Σ_{j≠k} s_j |x_j|) (0 ≤ s ≤ 1)."""
        xg, rows = self._groups(x.abs())
        s = self.probabilities
        sx = s * xg
        return self._back(s * (sx.sum(-1, keepdim=True) - 2 * sx + xg), rows)

    def bias_for(self, z, bias=None):
        bias = self.bias if bias is None else bias
        return None if bias is None else repeated_rows(bias, z.shape[0], self.batch)


class LogSoftmaxMap(SoftmaxMap):
    """y = log_softmax(x) along one per-sample dimension, linearized at the forward value x
    as the softmax is (:class:`SoftmaxMap`): z = J x + b with J the Jacobian and the remainder
    b = y − J x as the bias, so z = y. Within a group of n neurons along the dimension, in-neuron
    j and out-neuron k:

        W_jk = ∂y_k/∂x_j = δ_jk − s_j,    b_k = y_k − Σ_j x_j W_jk = −log Σ_i e^{x_i} + Σ_j s_j x_j

    with s = softmax(x). ``probabilities`` (B, G, n) is s; W (B, G, n, n) is formed on first
    use only. W is not symmetric: the map costs O(n) per output either way.

    Definition::

        forward:    z_k = Σ_j x_j W_jk = x_k − Σ_j s_j x_j
        transpose:  t_j = Σ_k W_jk g_k = g_j − s_j Σ_k g_k
    """

    @property
    def weight(self) -> torch.Tensor:
        """W (B, G, n, n): W[b, g, j, k] = δ_jk − s_j, formed once when first asked for."""
        if self._weight is None:
            s = self.probabilities
            eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)
            self._weight = eye - s.unsqueeze(-1)
        return self._weight

    def _forward_own(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """z_k = x_k − Σ_j s_j x_j per group."""
        return x - (s * x).sum(-1, keepdim=True)

    def _transpose_own(self, s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """t_j = g_j − s_j Σ_k g_k per group."""
        return g - s * g.sum(-1, keepdim=True)

    def magnitude(self, x):
        """Σ_j |x_j| |W_jk| = (1 − s_k) |x_k| + Σ_{j≠k} s_j |x_j| = Σ_j s_j |x_j| + (1 − 2 s_k) |x_k|."""
        xg, rows = self._groups(x.abs())
        s = self.probabilities
        return self._back((s * xg).sum(-1, keepdim=True) + (1 - 2 * s) * xg, rows)


class LogSumExpMap(LinearMap):
    """y = logsumexp(x) over some per-sample dimensions, linearized at the forward value x as
    the softmax is (:class:`SoftmaxMap`): z = W x + b with W the Jacobian — s = softmax(x) over
    each reduced group — and the Taylor remainder b = y − W x as the bias, so z = y. In-neuron
    j, out-neuron k (the group that j reduces into):

        W_jk = s_j [j ∈ k],    b_k = y_k − Σ_{j ∈ k} s_j x_j = H(s over k)   (the entropy)

    ``weight`` (B, *in) is s per sample, ``bias`` (B, *out); ``dims`` are dimensions of the
    batched tensor (≥ 1). The map depends on the sample: :meth:`forward` and :meth:`transpose`
    accept R·B stacked rows (row r is sample r mod B).

    Definition::

        forward:    z_k = Σ_{j ∈ k} w_j x_j
        transpose:  t_j = w_j g_{k(j)}
    """

    fuses_bias = False

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dims: tuple[int, ...], keepdim: bool):
        self.weight, self.bias = weight, bias
        self.dims, self.keepdim = tuple(sorted(dims)), keepdim
        self.batch = weight.shape[0]

    def _per_row(self, weight: torch.Tensor, rows: int) -> torch.Tensor:
        if rows % self.batch:
            raise ValueError(f"the map was built for a batch of {self.batch} samples but got {rows} rows")
        return repeated_rows(weight, rows, self.batch)

    def forward(self, x, weight, bias=None):
        z = (x * self._per_row(weight, x.shape[0])).sum(self.dims, keepdim=self.keepdim)
        return z if bias is None else z + self.bias_for(z, bias)

    def transpose(self, g, weight, in_shape):
        n = g.shape[0]
        if not self.keepdim:
            g = g.reshape((n,) + tuple(1 if d + 1 in self.dims else s for d, s in enumerate(in_shape)))
        return g.expand((n,) + tuple(in_shape)) * self._per_row(weight, n)

    def bias_for(self, z, bias=None):
        bias = self.bias if bias is None else bias
        return None if bias is None else repeated_rows(bias, z.shape[0], self.batch)


class PlaceMap(LinearMap):
    """An activation placed among constants along per-sample dimensions (``torch.cat`` of one
    input-derived tensor with constants: a class token before the patch tokens; ``F.pad``
    with a constant): the copies of x's neurons with weight 1, the constants as the bias, zero
    at the copies.

    ``weight`` has x's per-sample shape (ones); ``bias`` the output's per-sample shape;
    ``dim`` is the dimension of one sample (0-based, the batch excluded) along which x is
    placed and ``offset`` where x starts along it — or tuples of both, one entry per
    dimension (a padding on several sides).

    Definition (k a copy of x's neuron j, c a constant neuron)::

        z_k = w_j x_j,   z_c = b_c            q(x_j | z_k) = 1 under LRP-0,  q(⊥ | z_c) = 1
        forward:    z = place(x ⊙ w) + b
        transpose:  t = narrow(g) ⊙ w
    """

    fuses_bias = True

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, out_shape: tuple, dim, offset):
        self.weight, self.bias = weight, bias
        self.out_shape = tuple(out_shape)
        self.dims = (dim,) if isinstance(dim, int) else tuple(dim)
        self.offsets = (offset,) if isinstance(offset, int) else tuple(offset)

    def _region(self, t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The part of ``t`` (rows, *out_shape) where x is placed."""
        for d, o in zip(self.dims, self.offsets):
            t = t.narrow(d + 1, o, weight.shape[d])
        return t

    def forward(self, x, weight, bias=None):
        rows = x.shape[0]
        placed = x.new_zeros((rows,) + self.out_shape)
        self._region(placed, weight).copy_(x * weight.unsqueeze(0))
        return placed if bias is None else placed + self.bias_for(placed, bias)

    def transpose(self, g, weight, in_shape):
        g = g.reshape((g.shape[0],) + self.out_shape)
        return self._region(g, weight) * weight.unsqueeze(0)

    def bias_for(self, z, bias=None):
        bias = self.bias if bias is None else bias
        return None if bias is None else bias.unsqueeze(0)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class PairMap(LinearMap):
    """A linear map of one sample's n neurons onto themselves given by a list of P pairs
    (row_p → col_p) with per-sample weights (B, P): the segment softmax of a graph attention
    (:class:`nrm.layers.message.SegmentSoftmax`), whose groups (the edges into one node, one
    head) have different sizes. ``bias`` (B, *shape) per sample. The map depends on the sample:
    :meth:`forward` and :meth:`transpose` accept R·B stacked rows (row i is sample i mod B).

    Definition::

        forward:    z_k = Σ_{p: col_p = k} w_p x_{row_p}
        transpose:  t_j = Σ_{p: row_p = j} w_p g_{col_p}
    """

    fuses_bias = False

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, shape: tuple, rows: torch.Tensor,
                 cols: torch.Tensor):
        self.weight, self.bias = weight, bias
        self.shape, self.rows, self.cols = tuple(shape), rows, cols
        self.batch = weight.shape[0]

    def _weights(self, weight: torch.Tensor, rows: int) -> torch.Tensor:
        if rows % self.batch:
            raise ValueError(f"the map was built for a batch of {self.batch} samples but got {rows} rows")
        return weight.repeat(rows // self.batch, 1) if rows != self.batch else weight

    def forward(self, x, weight, bias=None):
        rows = x.shape[0]
        flat = x.reshape(rows, -1)
        z = flat.new_zeros(flat.shape).index_add_(1, self.cols, flat[:, self.rows] * self._weights(weight, rows))
        z = z.reshape((rows,) + self.shape)
        return z if bias is None else z + self.bias_for(z, bias)

    def transpose(self, g, weight, in_shape):
        rows = g.shape[0]
        flat = g.reshape(rows, -1)
        t = flat.new_zeros(flat.shape).index_add_(1, self.rows, flat[:, self.cols] * self._weights(weight, rows))
        return t.reshape((rows,) + tuple(in_shape))

    def bias_for(self, z, bias=None):
        bias = self.bias if bias is None else bias
        return None if bias is None else repeated_rows(bias, z.shape[0], self.batch)
