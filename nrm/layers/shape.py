"""Shape kinds: the same neurons under another per-sample shape, and concatenations.

A reshape renames neurons (q = 1 to the one neuron it is); an index map (permute,
transpose, slicing, a piece of chunk or split) takes each output neuron from one input
neuron, q(j | k) = [j = index[k]], so relevance moves with the values; a concatenation
joins branches into one layer whose parts are the branches' neurons (q = 1 to each part).
The batch dimension stays first and is never mixed: an operation that would move or mix
it is refused. A view may fold each sample into several rows (B·G in dimension 0, each sample's
rows one block: ``x.reshape(-1, E)``) and back; the kinds then read the rows as samples
(``docs/capture.md``, *Values that fold each sample into several rows*).

Every index map is written here from the definition of the operation, on numpy index
arrays (never by running the torch operation): the explicit reference reads the recorded
operation itself, so the two are independent.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError
from ..recorded import Piece, Value
from .base import Concat, Reshape
from .linear import pair


class View(Reshape):
    """``view``, ``reshape``, ``flatten``, ``unflatten`` (``nn.Unflatten``), ``squeeze``,
    ``unsqueeze`` that keep the batch dimension first: each sample's neurons in row-major order
    under another shape — also when dimension 0 becomes or stops being B·G rows (a multiple of
    the batch size B before and after: OPT's ``x.reshape(-1, E)``, Swin's windows), which keeps
    each sample's neurons one block."""

    functions = (torch.Tensor.view, torch.Tensor.reshape, torch.Tensor.flatten, torch.flatten, torch.reshape,
                 torch.Tensor.view_as, torch.Tensor.reshape_as, torch.Tensor.squeeze, torch.squeeze,
                 torch.Tensor.unsqueeze, torch.unsqueeze, torch.Tensor.unflatten, torch.unflatten)

    def examples(self):
        return [(nn.Flatten().eval(), (2, 2, 2)), (Unflatten().eval(), (6,)), (nn.Unflatten(1, (3, 2)).eval(), (6,))]

    def accepts(self, call):
        before, after = tuple(call.in_shapes[0]), tuple(call.output.shape)
        if after and before and call.batch and before[0] % call.batch == 0 and after[0] % call.batch == 0:
            return None  # each sample's rows stay one block, in row-major order: a fold or an unfold
        if not after or after[0] != before[0]:
            return (f"changes the batch dimension ({before} → {after}); nrm keeps it first "
                    "(x.flatten(1), x.view(x.size(0), -1))")
        return None


def _sample_dims(call) -> tuple[int, ...]:
    """The per-sample shape of the call's (first) input."""
    return tuple(call.in_shapes[0][1:])


def _dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def permute_order(name: str, rest: tuple, kwargs: dict, ndim: int) -> tuple[int, ...]:
    """The permutation of all ``ndim`` dimensions that ``permute`` / ``transpose`` / ``t`` (its
    ``name``) makes with the arguments after the tensor (output dim i is input dim order[i])."""
    if name == "t":
        return tuple(range(ndim))[::-1] if ndim == 2 else tuple(range(ndim))
    if name == "permute":
        dims = rest if rest else kwargs.get("dims", ())
        if len(dims) == 1 and isinstance(dims[0], (tuple, list, torch.Size)):
            dims = dims[0]
        return tuple(_dim(int(d), ndim) for d in dims)
    d0 = rest[0] if rest else kwargs.get("dim0", kwargs.get("axis0"))
    d1 = rest[1] if len(rest) > 1 else kwargs.get("dim1", kwargs.get("axis1"))
    d0, d1 = _dim(int(d0), ndim), _dim(int(d1), ndim)
    order = list(range(ndim))
    order[d0], order[d1] = d1, d0
    return tuple(order)


class Permute(Reshape):
    """``permute``, ``transpose`` / ``swapaxes`` / ``swapdims`` and ``t`` with the batch
    dimension left first: the same neurons, reordered.

    Definition (σ the permutation of the per-sample dimensions)::

        y[b, i_σ(1), …, i_σ(d)] = x[b, i_1, …, i_d]        q(j | k) = [j = index[k]]
    """

    functions = (torch.Tensor.permute, torch.permute, torch.Tensor.transpose, torch.transpose, torch.Tensor.t,
                 torch.t, torch.Tensor.swapaxes, torch.swapaxes, torch.Tensor.swapdims, torch.swapdims)

    def examples(self):
        return [(Transposed().eval(), (2, 3, 2)), (ChannelsLast().eval(), (2, 2, 3))]

    def order(self, call) -> tuple[int, ...]:
        """The permutation of all dimensions, batch included (output dim i is input dim order[i])."""
        return permute_order(call.func.__name__, call.args[1:], call.kwargs, len(call.in_shapes[0]))

    def accepts(self, call):
        order = self.order(call)
        if order and order[0] != 0:
            if self.is_view(call):
                return None
            return (f"moves the batch dimension (dimension order {order}); nrm keeps it first and never mixes "
                    "samples" + (" (with a batch of one sample, a transpose of the batch with the sequence is a view "
                                 "and is read: explain one sample at a time)" if call.batch and call.batch > 1 else ""))
        return None

    def is_view(self, call) -> bool:
        """A permute that moves the batch but keeps every dimension of more than one element in
        its order — ``x.transpose(0, 1)`` of a batch of one sample (1, L, E) → (L, 1, E), the
        sequence-first layout of ``nn.MultiheadAttention(batch_first=False)`` — is a view: the
        same values in the same row-major order under another shape, read as :class:`View` reads
        it (dimension 0 then holds the sample's rows, a fold, or is the batch again)::

            y = x.reshape(shape of y)        when the dimensions of size > 1 keep their order

        Only where dimension 0 is a multiple of the batch size before and after — in effect a
        batch of one sample: with more, moving the batch behind dimensions of size 1 leaves one
        of them first, not a multiple of the batch."""
        order, shape, after = self.order(call), tuple(call.in_shapes[0]), tuple(call.output.shape)
        kept = [d for d in order if shape[d] != 1]
        return (bool(order) and order[0] != 0 and kept == sorted(kept) and bool(call.batch)
                and shape[0] % call.batch == 0 and after[0] % call.batch == 0)

    def permutation(self, call) -> tuple[int, ...] | None:
        """σ over the per-sample dimensions (0-based): output dimension i is input dimension σ[i].
        The engine moves relevance by the inverse permutation instead of the index (the same
        map, q(j | k) = [j = index[k]], without a gather over every neuron). None for a kind that
        redefines :meth:`index`: the engine then reads that index; None for a view
        (:meth:`is_view`), which has no index."""
        if type(self).index is not Permute.index or self.is_view(call):
            return None
        return tuple(d - 1 for d in self.order(call)[1:])

    def route_key(self, call):
        return _sample_dims(call), self.order(call), self.is_view(call)

    def index(self, call):
        if self.is_view(call):
            return None  # the same row-major order: a renaming, as View
        shape = _sample_dims(call)
        perm = [d - 1 for d in self.order(call)[1:]]
        return np.arange(math.prod(shape), dtype=np.int64).reshape(shape).transpose(perm).reshape(-1)


class Roll(Reshape):
    """``torch.roll`` / ``Tensor.roll`` along per-sample dimensions (Swin's cyclic shift of the
    windows): the same neurons, shifted cyclically.

    Definition (shifts s_d along dimensions d, n_d their sizes)::

        y[b, …, i_d, …] = x[b, …, (i_d − s_d) mod n_d, …]        q(j | k) = [j = index[k]]
    """

    functions = (torch.roll, torch.Tensor.roll)

    def examples(self):
        return [(Rolled().eval(), (3, 2)), (Rolled(shifts=(1, -1), dims=(1, 2)).eval(), (2, 3))]

    @staticmethod
    def shifts_dims(call) -> tuple[tuple[int, ...], tuple[int, ...]]:
        shifts, dims = call.arg(1, "shifts"), call.arg(2, "dims", None)
        as_tuple = lambda v: tuple(int(i) for i in v) if isinstance(v, (tuple, list, torch.Size)) else (int(v),)  # noqa: E731
        return as_tuple(shifts), (() if dims is None else as_tuple(dims))

    def accepts(self, call):
        shifts, dims = self.shifts_dims(call)
        ndim = len(call.in_shapes[0])
        if not dims:
            return "rolls the flattened tensor (no dims=), which moves neurons across samples"
        if len(shifts) != len(dims):
            return "has as many shifts as dims only when they are given in pairs"
        if any(_dim(d, ndim) == 0 for d in dims):
            return "rolls along the batch dimension; nrm keeps every sample in its place"
        return None

    def route_key(self, call):
        return _sample_dims(call), self.shifts_dims(call)

    def index(self, call):
        shape = _sample_dims(call)
        shifts, dims = self.shifts_dims(call)
        ndim = len(shape) + 1
        return np.roll(np.arange(math.prod(shape), dtype=np.int64).reshape(shape), shifts,
                       tuple(_dim(d, ndim) - 1 for d in dims)).reshape(-1)


class Repeat(Reshape):
    """``Tensor.repeat`` with the batch repeated once (a token tiled over positions, a map tiled
    over a grid) and ``torch.repeat_interleave`` / ``Tensor.repeat_interleave`` with an int
    count along a per-sample dimension: copies of the same neurons. A neuron copied n times
    receives the sum of its copies' relevance.

    Definition (repeat: r_d copies of the whole along d; repeat_interleave: each element r
    times along d)::

        repeat: y[b, …, i_d, …] = x[b, …, i_d mod n_d, …]     interleave: y[…, i_d, …] = x[…, ⌊i_d / r⌋, …]
        q(j | k) = [j = index[k]]
    """

    functions = (torch.Tensor.repeat, torch.repeat_interleave, torch.Tensor.repeat_interleave)

    def examples(self):
        return [(Tiled().eval(), (2, 3)), (Tiled(interleave=True).eval(), (3, 2))]

    @staticmethod
    def reps(call) -> tuple[int, ...]:
        sizes = call.args[1:] if len(call.args) > 1 else (call.kwargs.get("repeats", call.kwargs.get("sizes", ())),)
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
            sizes = sizes[0]
        return tuple(int(v) for v in sizes)

    @staticmethod
    def interleave(call) -> tuple[int, int | None]:
        """(r, d) of repeat_interleave (d None: the flattened tensor)."""
        repeats = call.arg(1, "repeats")
        dim = call.arg(2, "dim", None)
        return repeats, dim

    def accepts(self, call):
        ndim = len(call.in_shapes[0])
        if call.func.__name__ == "repeat_interleave":
            repeats, dim = self.interleave(call)
            if isinstance(repeats, bool) or not isinstance(repeats, int):
                return "repeats by a tensor of counts; nrm reads one int count"
            size = call.kwargs.get("output_size")
            if size is not None and (dim is None or size != call.output.shape[_dim(int(dim), ndim)]):
                return "takes output_size= other than its output's size; nrm reads repeat_interleave(x, r, dim)"
            if dim is None or _dim(int(dim), ndim) == 0:
                return "repeats along the batch dimension (or the flattened tensor); nrm keeps every sample apart"
            return None
        try:
            reps = self.reps(call)
        except (TypeError, ValueError):
            return "repeats by something other than ints"
        if len(reps) != ndim:
            return (f"repeats a tensor of {ndim} dimensions {len(reps)} ways; nrm reads as many counts as dimensions "
                    "(more would add dimensions in front of the batch)")
        if reps[0] != 1:
            return "repeats the batch; nrm keeps every sample once"
        return None

    def route_key(self, call):
        if call.func.__name__ == "repeat_interleave":
            repeats, dim = self.interleave(call)
            return _sample_dims(call), "interleave", repeats, _dim(int(dim), len(call.in_shapes[0]))
        return _sample_dims(call), "repeat", self.reps(call)

    def index(self, call):
        shape = _sample_dims(call)
        names = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
        if call.func.__name__ == "repeat_interleave":
            repeats, dim = self.interleave(call)
            return np.repeat(names, repeats, axis=_dim(int(dim), len(shape) + 1) - 1).reshape(-1)
        return np.tile(names, self.reps(call)[1:]).reshape(-1)


class Copies(Reshape):
    """Operations that only move or copy neurons within each sample, read by running them on
    the neurons' names: ``F.pad`` in mode ``"reflect"``, ``"replicate"`` or ``"circular"``
    (``nn.ReflectionPad*d``, ``nn.ReplicationPad*d``, ``nn.CircularPad*d``: the padding of
    style-transfer, image-to-image and GAN generators), ``torch.channel_shuffle``
    (``nn.ChannelShuffle``), ``flip`` / ``fliplr`` / ``flipud``, ``rot90``, ``narrow``,
    ``movedim`` / ``moveaxis``, ``gather`` / ``take_along_dim`` with a constant index, and
    ``Tensor.unfold`` (sliding windows along a dimension, HaloNet's key/value blocks). Every
    output neuron is a copy of one input neuron, so relevance moves with the values, and a
    neuron copied n times receives the sum of its copies' relevance.

    Definition (reflect along a padded dimension of size n with p before; the other modes)::

        y[…, i, …] = x[…, ρ(i − p), …]    ρ(t) = |t| if t < 0, 2(n − 1) − t if t ≥ n      (reflect)
                                          ρ(t) = clamp(t, 0, n − 1)                         (replicate)
                                          ρ(t) = t mod n                                    (circular)
        channel_shuffle, g groups of m:   y[c·g + i] = x[i·m + c]
        flip along d:                     y[…, i, …] = x[…, n − 1 − i, …]
        gather along d with index I:      y[…, i, …] = x[…, I[…, i, …], …]
        x.unfold(d, size, step):          y[…, w, …, t] = x[…, w·step + t, …]   (a new last dimension t)
        q(j | k) = [j = index[k]]

    The index is what torch's own function does to the names: the call applied, with its own
    arguments, to the whole batch with every neuron holding its flat position (exact in float64
    below 2^53), so it is torch's copy pattern, not a re-implementation — and that run proves
    the call per-sample: every sample's output must be its own neurons in the same pattern, or
    the call is refused (a flip, a narrow or a gather along the batch, an index that differs
    between samples). Refused too: a pad in another mode (``"constant"`` is
    :class:`~nrm.layers.constants.Pad`'s), a negative pad (a crop: write a slice)."""

    functions = (F.pad, torch.channel_shuffle, torch.native_channel_shuffle,
                 torch.flip, torch.Tensor.flip, torch.fliplr, torch.Tensor.fliplr, torch.flipud, torch.Tensor.flipud,
                 torch.rot90, torch.Tensor.rot90, torch.narrow, torch.Tensor.narrow, torch.movedim,
                 torch.Tensor.movedim, torch.moveaxis, torch.Tensor.moveaxis, torch.gather, torch.Tensor.gather,
                 torch.take_along_dim, torch.Tensor.take_along_dim, torch.Tensor.unfold)
    MODES = ("reflect", "replicate", "circular")

    def examples(self):
        return [(nn.ReflectionPad1d((2, 1)).eval(), (2, 4)), (nn.ReplicationPad2d((1, 0, 2, 1)).eval(), (2, 3, 3)),
                (nn.CircularPad2d(1).eval(), (1, 3, 2)), (nn.ChannelShuffle(2).eval(), (6, 2, 1)),
                (Flipped().eval(), (2, 3))]

    def accepts(self, call):
        if call.kwargs.get("out") is not None:
            return "writes into out=; nrm reads the out-of-place call"
        if call.func is F.pad:
            mode = call.arg(2, "mode", "constant")
            if mode not in self.MODES:
                return f"pads in mode {mode!r} (this kind reads {', '.join(self.MODES)})"
            if any(int(v) < 0 for v in call.arg(1, "pad")):
                return "crops (a negative pad); write it as a slice"
        try:
            index = self._names(call)
        except (RuntimeError, TypeError, ValueError, IndexError) as e:
            return f"cannot be run on the neurons' names ({' '.join(str(e).split())[:200]})"
        if index is None:
            return ("moves neurons between samples, or copies them in another pattern in each sample (the batch "
                    "dimension moved, flipped, narrowed or gathered, or an index that differs between samples); nrm "
                    "keeps every sample apart")
        call.__dict__["_names_index"] = index
        return None

    @staticmethod
    def _names(call) -> np.ndarray | None:
        """The call run on a batch whose neurons hold their flat positions: sample 0's output
        positions' sources, or None unless every sample b gives sample 0's plus b·N. Two samples
        show a call that moves, flips or narrows the batch; a call with a tensor argument (a
        gather's index) runs on the whole batch, whose index may differ between samples."""
        batch, shape = int(call.in_shapes[0][0]), _sample_dims(call)
        if not any(isinstance(v, torch.Tensor) for v in list(call.args[1:]) + list(call.kwargs.values())):
            batch = min(batch, 2)
        n = math.prod(shape)
        device = call.output.device  # where a gather's index is
        names = torch.arange(batch * n, dtype=torch.float64, device=device).reshape((batch,) + shape)
        with torch._C.DisableTorchFunction():
            out = call.func(names, *call.args[1:], **call.kwargs)
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != batch:
            return None
        flat = out.reshape(batch, -1)
        first = flat[0]
        offsets = torch.arange(batch, dtype=torch.float64, device=device).reshape(-1, 1) * n
        if not bool((first >= 0).all() and (first < n).all()) or not torch.equal(flat, first + offsets):
            return None
        return first.to(torch.int64).cpu().numpy()

    def route_key(self, call):
        return None  # the index is the call's own, computed once per call in accepts()

    def index(self, call):
        index = call.__dict__.get("_names_index")
        return index if index is not None else self._names(call)


class Flipped(nn.Module):
    """relu(x) flipped along its last dimension (an example of :class:`Copies`)."""

    def forward(self, x):
        return torch.relu(x).flip(-1)


class PixelShuffle(Reshape):
    """``F.pixel_shuffle`` / ``nn.PixelShuffle`` (sub-pixel convolution, ESPCN and
    super-resolution decoders) and its inverse ``F.pixel_unshuffle`` / ``nn.PixelUnshuffle``:
    the same neurons, moved between channels and space by the factor r.

    Definition (r the factor; the per-sample dimensions before the last three carried along)::

        shuffle:    y[b, c, h·r + i, w·r + j] = x[b, c·r² + i·r + j, h, w]
        unshuffle:  y[b, c·r² + i·r + j, h, w] = x[b, c, h·r + i, w·r + j]
                                                         q(j | k) = [j = index[k]]
    """

    functions = (F.pixel_shuffle, torch.pixel_shuffle, F.pixel_unshuffle, torch.pixel_unshuffle)

    def examples(self):
        return [(nn.PixelShuffle(2).eval(), (8, 1, 2)), (nn.PixelUnshuffle(2).eval(), (1, 2, 4))]

    def factor(self, call) -> int:
        name = "upscale_factor" if call.func.__name__ == "pixel_shuffle" else "downscale_factor"
        return int(call.arg(1, name))

    def accepts(self, call):
        if len(call.in_shapes[0]) < 4:
            return (f"has an input of shape {tuple(call.in_shapes[0])}; nrm reads (B, C, H, W) with the batch "
                    "dimension first")
        return None

    def route_key(self, call):
        return _sample_dims(call), call.func.__name__, self.factor(call)

    def index(self, call):
        shape, r = _sample_dims(call), self.factor(call)
        *lead, C, H, W = shape
        flat = np.arange(math.prod(shape), dtype=np.int64)
        if call.func.__name__ == "pixel_shuffle":   # input (L, C·r², H, W) as (L, C, i, j, h, w)
            x = flat.reshape(-1, C // (r * r), r, r, H, W)
            return x.transpose(0, 1, 4, 2, 5, 3).reshape(-1)       # output order (L, C, h, i, w, j)
        x = flat.reshape(-1, C, H // r, r, W // r, r)             # input (L, C, h, i, w, j)
        return x.transpose(0, 1, 3, 5, 2, 4).reshape(-1)           # output order (L, C, i, j, h, w)


def _ints(v) -> tuple[int, int]:
    return tuple(int(i) for i in pair(v))


def patch_index(shape: tuple, kernel: tuple, dilation: tuple, stride: tuple) -> np.ndarray:
    """The flat (row-major) pixel of a (C, H, W) image under each entry of its patches
    (C·k_h·k_w, OH·OW), in their row-major order — im2col's map, read by :class:`Unfold` and by
    ``F.fold``'s scatter (:class:`~nrm.layers.fused.FoldDecomposition`)::

        index[c·k_h·k_w + i·k_w + j, oh·OW + ow] = c·H·W + (oh·s_h + i·d_h)·W + ow·s_w + j·d_w
    """
    C, H, W = shape
    (kh, kw), (dh, dw), (sh, sw) = kernel, dilation, stride
    OH, OW = (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1
    c = np.arange(C).reshape(C, 1, 1, 1, 1)
    i, j = np.arange(kh).reshape(1, kh, 1, 1, 1), np.arange(kw).reshape(1, 1, kw, 1, 1)
    oh, ow = np.arange(OH).reshape(1, 1, 1, OH, 1), np.arange(OW).reshape(1, 1, 1, 1, OW)
    return (c * H * W + (oh * sh + i * dh) * W + ow * sw + j * dw).astype(np.int64).reshape(-1)


class Unfold(Reshape):
    """``F.unfold`` / ``nn.Unfold`` without padding (im2col: the patches of a convolution written
    by hand, T2T-ViT's soft split, involution): each output neuron is one input pixel, a pixel
    in several patches receives the sum of their relevance. With ``padding`` > 0 the capture
    records ``F.pad`` first (:class:`~nrm.layers.fused.UnfoldDecomposition`), so the padding's
    zeros are constants (their share to ⊥).

    Definition (kernel k_h × k_w, dilation d, stride s, OH × OW patches)::

        y[b, c·k_h·k_w + i·k_w + j, oh·OW + ow] = x[b, c, oh·s_h + i·d_h, ow·s_w + j·d_w]
                                                         q(j | k) = [j = index[k]]
    """

    functions = (F.unfold,)

    def examples(self):
        return [(nn.Unfold(2).eval(), (2, 3, 3)), (nn.Unfold((2, 1), dilation=(1, 2), stride=(2, 1)).eval(), (1, 4, 5))]

    @staticmethod
    def parameters(call) -> tuple:
        """(kernel, dilation, padding, stride), each an (h, w) pair."""
        return (_ints(call.arg(1, "kernel_size")), _ints(call.arg(2, "dilation", 1)), _ints(call.arg(3, "padding", 0)),
                _ints(call.arg(4, "stride", 1)))

    def accepts(self, call):
        if len(call.in_shapes[0]) != 4:
            return (f"unfolds an input of shape {tuple(call.in_shapes[0])}; nrm reads (B, C, H, W) with the batch "
                    "dimension first")
        if any(self.parameters(call)[2]):
            return "pads (padding=); the capture records F.pad first"
        return None

    def route_key(self, call):
        return _sample_dims(call), self.parameters(call)

    def index(self, call):
        kernel, dilation, _, stride = self.parameters(call)
        return patch_index(_sample_dims(call), kernel, dilation, stride)


class Index(Reshape):
    """``x[...]`` (``Tensor.__getitem__``) with integers, slices, ``None``, ``...`` and constant
    integer index lists, keeping the whole batch first: each output neuron is one input
    neuron (a slice drops the others; a repeated index copies one).

    Definition (numpy's basic and advanced indexing, as torch's)::

        y[b, k] = x[b, index[k]]        q(j | k) = [j = index[k]]
    """

    functions = (torch.Tensor.__getitem__,)

    def examples(self):
        return [(Sliced().eval(), (4, 2)), (Sliced(key=(slice(None), 1)).eval(), (3, 2))]

    @staticmethod
    def key(call) -> tuple:
        key = call.args[1]
        return key if isinstance(key, tuple) else (key,)

    def accepts(self, call):
        parts = self.key(call)
        for p in parts:
            if isinstance(p, Value):
                return "indexes with an input-derived tensor (a data-dependent selection); nrm reads constant indices"
            if isinstance(p, slice) and p.step is not None and p.step < 0:
                return "slices with a negative step"
        first = next((p for p in parts if p is not None), slice(None))
        if not (first is Ellipsis or (isinstance(first, slice) and first == slice(None))):
            return (f"selects along the batch dimension ({call.args[1]!r}); nrm keeps every sample: index from "
                    "dimension 1 on (x[:, …])")
        if tuple(call.output.shape[:1]) != tuple(call.in_shapes[0][:1]):
            return "changes the batch dimension"
        return None

    def route_key(self, call):
        parts = []
        for p in self.key(call):
            if isinstance(p, slice):
                parts.append(("slice", p.start, p.stop, p.step))
            elif isinstance(p, torch.Tensor):
                parts.append(("tensor", tuple(p.shape), str(p.dtype), p.detach().cpu().numpy().tobytes()))
            elif p is None or p is Ellipsis or isinstance(p, (bool, int)):
                parts.append(p)
            elif isinstance(p, (list, tuple)) and all(isinstance(v, int) for v in p):
                parts.append(("list", tuple(p)))
            else:
                return None  # something else: computed for this call only
        return tuple(call.in_shapes[0][1:]), tuple(parts)

    def index(self, call):
        full = tuple(call.in_shapes[0])
        numpy_key = tuple(p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else p for p in self.key(call))
        # one sample (the batch dimension of size 1): the map is the same for every sample
        names = np.arange(math.prod(full[1:]), dtype=np.int64).reshape((1,) + full[1:])
        picked = names[numpy_key]
        return np.ascontiguousarray(picked).reshape(-1)


class Chunk(Reshape):
    """One piece of ``chunk``, ``split``, ``tensor_split`` or ``unbind`` along a per-sample
    dimension (the capture records each piece as one call, :class:`~nrm.recorded.Piece`):
    the neurons of that piece.

    Definition (piece p covers positions s_p … s_p + n_p − 1 along dimension d)::

        y[b, …, i, …] = x[b, …, s_p + i, …]        q(j | k) = [j = index[k]]
    """

    functions = (torch.chunk, torch.Tensor.chunk, torch.split, torch.Tensor.split, torch.unbind,
                 torch.Tensor.unbind, torch.tensor_split, torch.Tensor.tensor_split)

    def examples(self):
        return [(Halves().eval(), (4, 2)), (Halves(dim=-1, piece=1).eval(), (2, 3))]

    def dim(self, call) -> int:
        position = 1 if call.func.__name__ == "unbind" else 2
        return _dim(int(call.arg(position, "dim", 0)), len(call.in_shapes[0]))

    def accepts(self, call):
        if not isinstance(call.func, Piece):
            return "returns several tensors; nrm reads each piece (recorded by the capture)"
        if self.dim(call) == 0:
            return "splits the batch dimension; nrm keeps every sample together"
        return None

    def positions(self, call) -> range | int:
        """The positions of this piece along its dimension (an int for unbind: the dimension goes)."""
        n, item, name = call.in_shapes[0][self.dim(call)], call.func.item, call.func.__name__
        if name == "unbind":
            return item
        if name == "chunk":
            size = -(-n // int(call.arg(1, "chunks")))
            return range(item * size, min(n, (item + 1) * size))
        if name == "split":
            how = call.arg(1, "split_size_or_sections")
        else:  # tensor_split's overloads name it indices_or_sections, indices, sections or tensor_indices_or_sections
            names = ("indices_or_sections", "indices", "sections", "tensor_indices_or_sections")
            given = (call.kwargs[k] for k in names if k in call.kwargs)
            how = call.args[1] if len(call.args) > 1 else next(given, None)
            if how is None:
                raise ShapeError(f"{call.describe()} gives neither indices nor sections")
            if isinstance(how, torch.Tensor):  # a 1-d tensor of indices, or a number of sections
                how = [int(v) for v in how.tolist()] if how.dim() == 1 else int(how)
        if name == "split":
            sizes = [int(v) for v in how] if isinstance(how, (list, tuple)) else [int(how)] * (-(-n // int(how)))
            start = sum(sizes[:item])
            return range(start, min(n, start + sizes[item]))
        if isinstance(how, (list, tuple)):  # tensor_split at indices
            cuts = [0] + [min(max(int(v), 0), n) for v in how] + [n]
            return range(cuts[item], max(cuts[item], cuts[item + 1]))
        k = int(how)  # tensor_split into k sections: the first n % k have one more
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        return range(sum(sizes[:item]), sum(sizes[:item + 1]))

    def route_key(self, call):
        where = self.positions(call)
        return _sample_dims(call), self.dim(call), where if isinstance(where, int) else (where.start, where.stop)

    def index(self, call):
        shape = _sample_dims(call)
        names = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
        where = self.positions(call)
        axis = self.dim(call) - 1
        picked = np.take(names, where if isinstance(where, int) else np.asarray(where, dtype=np.int64), axis=axis)
        return np.ascontiguousarray(picked).reshape(-1)


class Cat(Concat):
    """``torch.cat`` of input-derived tensors along a per-sample dimension."""

    functions = (torch.cat, torch.concat, torch.concatenate)

    def examples(self):
        return [(Branches().eval(), (2, 3)), (Branches(dim=-1).eval(), (3,))]

    def dim(self, call) -> int:
        d = call.arg(1, "dim", call.kwargs.get("axis", 0))
        return d % call.output.dim()

    def accepts(self, call):

        parts = call.arg(0, "tensors")
        if not isinstance(parts, (list, tuple)) or not all(isinstance(p, Value) for p in parts):
            return "concatenates something other than tensors computed by the model (a constant)"
        if self.dim(call) == 0:
            return "concatenates along the batch dimension"
        return None


class Unflatten(nn.Module):
    """x.view(x.size(0), 2, -1) (an example of :class:`View`)."""

    def forward(self, x):
        return x.view(x.size(0), 2, -1)


class Branches(nn.Module):
    """torch.cat([x, relu(x)], dim) (an example of :class:`Cat`)."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.cat([x, F.relu(x)], self.dim)


class Tiled(nn.Module):
    """relu(x) repeated twice along its last dimension, or relu(x).repeat_interleave(2, dim=1) (an
    example of :class:`Repeat`)."""

    def __init__(self, interleave: bool = False):
        super().__init__()
        self.interleave = interleave

    def forward(self, x):
        h = F.relu(x)
        return h.repeat_interleave(2, dim=1) if self.interleave else h.repeat((1,) * (h.dim() - 1) + (2,))


class Rolled(nn.Module):
    """relu(x).roll(shifts, dims) (an example of :class:`Roll`)."""

    def __init__(self, shifts=1, dims=1):
        super().__init__()
        self.shifts, self.dims = shifts, dims

    def forward(self, x):
        return torch.roll(F.relu(x), self.shifts, self.dims)


class Transposed(nn.Module):
    """torch.transpose(x, 1, 2) then a Linear on the last dimension (an example of :class:`Permute`)."""

    def forward(self, x):
        return torch.transpose(x, 1, 2).contiguous()


class ChannelsLast(nn.Module):
    """x.permute(0, 2, 3, 1) (an example of :class:`Permute`)."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class Sliced(nn.Module):
    """x[key] (an example of :class:`Index`); by default x[:, 1:3]."""

    def __init__(self, key=(slice(None), slice(1, 3))):
        super().__init__()
        self.key = key

    def forward(self, x):
        return x[self.key]


class Halves(nn.Module):
    """One piece of x.chunk(2, dim) (an example of :class:`Chunk`)."""

    def __init__(self, dim: int = 1, piece: int = 0):
        super().__init__()
        self.dim, self.piece = dim, piece

    def forward(self, x):
        return x.chunk(2, self.dim)[self.piece]
