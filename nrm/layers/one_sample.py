"""With one sample, dimension 0 belongs to the sample.

nrm keeps the batch in dimension 0 and refuses an operation along it, which would mix samples.
With a batch of one sample (B = 1) nothing can be mixed: every value belongs to sample 0, and
dimension 0 of a value is either the batch (size 1) or the sample's own rows (a fold, a
sequence-first (L, 1, E) value of ``nn.MultiheadAttention(batch_first=False)``, ``nn.LSTM``'s
final state). The capture then reads an operation along dimension 0 as the same operation
along dimension 1 of the value with a leading dimension of size 1, reshaped to the operation's
own output::

    op(x, dim=0) = reshape(op(x.unsqueeze(0), dim=1), shape of op(x, dim=0))

``unsqueeze(0)`` and the final ``reshape`` are views of the same row-major values
(:class:`~nrm.layers.shape.View`), and the middle operation keeps dimension 0 first, so the
kinds that already read it per sample read it (:class:`~nrm.layers.shape.Index`,
:class:`~nrm.layers.linear.Reduce`, :class:`~nrm.layers.shape.Cat`, the pieces of
:class:`~nrm.layers.shape.Chunk`, :class:`~nrm.layers.shape.Permute`). The rewritten value must
equal torch's own, bitwise (within 10³ ulp for a matrix product, read as an einsum;
:class:`~nrm.errors.CaptureMismatchError` otherwise).

Read this way, for B = 1: ``x[t]``, ``x[-1]``, ``x[1:]`` and every other key that selects
along dimension 0; ``sum`` and ``mean`` over dimensions that include 0 (keeping at least one);
``torch.cat`` along 0; ``torch.stack`` along 0 (and the final state (h_n, c_n) of
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``, which stacks each layer's last state); ``unbind``,
``chunk`` and ``split`` along 0 (``for x_t in x``); ``repeat_interleave`` and ``repeat`` along 0
(GCViT's global query, repeated for each window of the sample); a ``permute`` / ``transpose`` that moves
dimension 0; a sum, difference, product or quotient with a constant that holds one value per
row of dimension 0 (the sequence-first positional encoding ``x + pe[:L]``); a matrix product with
one constant matrix per row (MViT's relative positions), or of two matrices computed from the
input (``q @ k.T`` of (1, N) and (N, 1)); an ``einsum`` whose sample letter is not
first (XLNet's sequence-first attention). With more samples these stay refused by name, as mixing
the samples.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .recurrent import final_state
from .shape import permute_order


def _dim(d, ndim: int) -> int | None:
    if isinstance(d, bool) or not isinstance(d, int) or not -ndim <= d < ndim:
        return None
    return d % ndim


class _Getitem:
    """``x[key]`` whose key selects along dimension 0 = ``x.unsqueeze(0)[:, key]``."""

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if kwargs or len(args) != 2 or not isinstance(args[0], torch.Tensor) or args[0].dim() == 0:
            return None
        key = args[1] if isinstance(args[1], tuple) else (args[1],)
        first = next((p for p in key if p is not None), slice(None))
        if first is Ellipsis or (isinstance(first, slice) and first == slice(None)):
            return None  # dimension 0 kept whole: Index reads it as it is
        if any(isinstance(p, slice) and p.step is not None and p.step < 0 for p in key):
            return None  # refused by Index, by name
        x = args[0]
        return lambda: x.unsqueeze(0)[(slice(None),) + key]


class _Reduction:
    """``x.sum(dim)`` / ``x.mean(dim)`` over dimensions that include 0 = the same over those
    dimensions + 1 of ``x.unsqueeze(0)`` (at least one dimension stays)."""

    def __init__(self, name: str):
        self.name = name

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if not args or not isinstance(args[0], torch.Tensor) or set(kwargs) - {"dim", "keepdim"}:
            return None
        x, rest = args[0], args[1:]
        if len(rest) > 2:
            return None
        dim = rest[0] if rest else kwargs.get("dim")
        keepdim = rest[1] if len(rest) > 1 else kwargs.get("keepdim", False)
        if dim is None or isinstance(keepdim, torch.Tensor):
            return None
        dims = list(dim) if isinstance(dim, (tuple, list, torch.Size)) else [dim]
        dims = [_dim(d, x.dim()) for d in dims]
        if not dims or None in dims or 0 not in dims:
            return None
        if not keepdim and len(set(dims)) == x.dim():
            return None  # nothing would stay: refused by name (a reduction over every dimension)
        shifted = tuple(d + 1 for d in dims)
        return lambda: getattr(x.unsqueeze(0), self.name)(dim=shifted, keepdim=bool(keepdim))


class _Cat:
    """``torch.cat(ts, 0)`` = ``torch.cat([t.unsqueeze(0) for t in ts], 1)``."""

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if set(kwargs) - {"dim", "axis"} or len(args) > 2 or not args:
            return None
        ts = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0))
        if not isinstance(ts, (list, tuple)) or not ts or not all(isinstance(t, torch.Tensor) for t in ts):
            return None
        if any(t.dim() == 0 for t in ts) or _dim(dim, ts[0].dim()) != 0:
            return None
        return lambda: torch.cat([t.unsqueeze(0) for t in ts], 1)


class _Stack:
    """``torch.stack(ts, 0)`` (and ``nrm.layers.recurrent.final_state``) =
    ``torch.cat([t.unsqueeze(0).unsqueeze(0) for t in ts], 1)``."""

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if set(kwargs) - {"dim"} or len(args) > 2 or not args:
            return None
        ts = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not isinstance(ts, (list, tuple)) or not ts or not all(isinstance(t, torch.Tensor) for t in ts):
            return None
        if _dim(dim, ts[0].dim() + 1) != 0:
            return None
        return lambda: torch.cat([t.unsqueeze(0).unsqueeze(0) for t in ts], 1)


class _Pieces:
    """``x.unbind(0)``, ``x.chunk(n, 0)``, ``x.split(s, 0)`` = the pieces of ``x.unsqueeze(0)``
    along dimension 1."""

    def __init__(self, name: str):
        self.name = name

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if not args or not isinstance(args[0], torch.Tensor) or set(kwargs) - {"dim"} or args[0].dim() == 0:
            return None
        x = args[0]
        if self.name == "unbind":
            if len(args) > 2:
                return None
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if _dim(dim, x.dim()) != 0:
                return None
            return lambda: x.unsqueeze(0).unbind(1)
        if len(args) not in (2, 3):
            return None
        how = args[1]
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        if isinstance(how, torch.Tensor) or _dim(dim, x.dim()) != 0:
            return None
        return lambda: getattr(x.unsqueeze(0), self.name)(how, 1)


class _Repeat:
    """``x.repeat_interleave(r, dim=0)`` (an int r) = ``x.unsqueeze(0).repeat_interleave(r, dim=1)``
    — GCViT's global query, made once per sample and repeated for each of its windows — and
    ``x.repeat(r₀, r₁, …)`` with r₀ ≠ 1 = ``x.unsqueeze(0).repeat(1, r₀, r₁, …)``: copies of the
    sample's own neurons (:class:`~nrm.layers.shape.Repeat`)."""

    def __init__(self, name: str):
        self.name = name

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() == 0:
            return None
        x = args[0]
        if self.name == "repeat_interleave":
            if set(kwargs) - {"repeats", "dim", "output_size"} or len(args) > 3:
                return None  # the flattened form stays Repeat's, refused by name
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
            dim = args[2] if len(args) > 2 else kwargs.get("dim")
            if isinstance(repeats, bool) or not isinstance(repeats, int) or _dim(dim, x.dim()) != 0:
                return None
            if kwargs.get("output_size") not in (None, x.shape[0] * repeats):
                return None  # torch raises its own error
            return lambda: x.unsqueeze(0).repeat_interleave(repeats, dim=1)
        sizes = args[1:]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
            sizes = tuple(sizes[0])
        if kwargs or len(sizes) != x.dim() or not all(isinstance(r, int) and not isinstance(r, bool) for r in sizes):
            return None
        if sizes[0] == 1:
            return None  # dimension 0 kept once: Repeat reads it as it is
        return lambda: x.unsqueeze(0).repeat((1,) + tuple(sizes))


class _Permute:
    """A ``permute`` / ``transpose`` that moves dimension 0 (and is not a view,
    :meth:`~nrm.layers.shape.Permute.is_view`) = the same of ``x.unsqueeze(0)`` with dimension 0
    kept first."""

    def __init__(self, name: str):
        self.name = name

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        x = args[0]
        try:
            order = permute_order(self.name, args[1:], kwargs, x.dim())
        except (TypeError, ValueError, IndexError):
            return None
        if sorted(order) != list(range(x.dim())) or order[0] == 0:
            return None  # not a permutation of x's dimensions (torch raises its own error) or dimension 0 kept
        kept = [d for d in order if x.shape[d] != 1]
        if kept == sorted(kept):
            return None  # a view: Permute reads it as one (is_view)
        return lambda: x.unsqueeze(0).permute((0,) + tuple(d + 1 for d in order))


class _RowConstant:
    """``x + c``, ``x - c``, ``x * c``, ``x / c`` (either order) where x holds the sample's rows in
    dimension 0 and the constant c one value per row — the sequence-first positional encoding
    ``x + pe[:L]`` with pe (max_len, 1, E) — = the same of ``x.unsqueeze(0)`` and
    ``c.unsqueeze(0)``: c is then one per-sample constant (a constant that differs between the rows
    of a fold is refused for more samples, where rows are read as samples)."""

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if len(args) != 2 or set(kwargs) - {"alpha"} or not all(isinstance(t, torch.Tensor) for t in args):
            return None
        a, b = args
        flags = [bool(derived(a)), bool(derived(b))]
        if flags.count(True) != 1:
            return None
        x, c = (a, b) if flags[0] else (b, a)
        if c.dim() != x.dim() or x.dim() == 0 or c.shape[0] <= 1 or c.shape[0] != x.shape[0]:
            return None  # one value per row only: a constant that broadcasts is read (or refused) as it is
        if bool((c == c[:1]).all()):
            return None  # the same for every row: read as it is
        return lambda: self.func(a.unsqueeze(0), b.unsqueeze(0), **kwargs)

    def __init__(self, func):
        self.func = func


class _RowMatmul:
    """``x @ W`` (or ``W @ x``) where x holds the sample's rows in dimension 0 and W one constant
    matrix per row (MViT's ``r_q @ Rtᵀ``, one table per frame) = ``x.unsqueeze(0) @ W``: W is
    then a stack of constant matrices the same for the sample
    (:class:`~nrm.layers.fused.MatmulWeightDecomposition`), which sums in another order: compared
    within 10³ ulp of the largest value. Two matrices computed from the input, ``a @ b`` of shapes
    (n, m) and (m, d) (CSATv2's ``q @ kᵀ`` of (B, N) and (N, B)) = ``a.unsqueeze(0) @
    b.unsqueeze(0)``: a batch of one product (:class:`~nrm.layers.attention.MatMul`)."""

    rounds = True

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if kwargs or len(args) != 2 or not all(isinstance(t, torch.Tensor) for t in args):
            return None
        flags = [bool(derived(t)) for t in args]
        a, b = args
        if all(flags) and a.dim() == 2 and b.dim() == 2:  # two matrices of the one sample: a batch of one product
            return lambda: a.unsqueeze(0) @ b.unsqueeze(0)
        if flags.count(True) != 1:
            return None
        x, w = (args[0], args[1]) if flags[0] else (args[1], args[0])
        if x.dim() < 3 or w.dim() != x.dim() or x.shape[0] <= 1 or w.shape[0] != x.shape[0]:
            return None
        return (lambda: a.unsqueeze(0) @ b) if flags[0] else (lambda: a @ b.unsqueeze(0))


class _Einsum:
    """``torch.einsum`` whose sample letter is not first in the input-derived operands and the
    output (XLNet's sequence-first ``"ibnd,jbnd->bnij"``) = the same einsum with a new letter of
    size 1 in front of each input-derived operand (``unsqueeze(0)``) and of the output, which the
    einsum decompositions read (:class:`~nrm.layers.fused.EinsumDecomposition`)."""

    rounds = True  # the decompositions sum in another order than torch's einsum

    def rewrite(self, args: tuple, kwargs: dict, derived: Callable) -> Callable | None:
        if kwargs or not args or not isinstance(args[0], str):
            return None
        ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        equation = args[0].replace(" ", "")
        if "->" not in equation or "." in equation or not all(isinstance(t, torch.Tensor) for t in ops):
            return None
        lhs, out = equation.split("->")
        subs = lhs.split(",")
        if len(subs) != len(ops) or not out:
            return None
        flags = [bool(derived(t)) for t in ops]
        kept = all(sub[:1] == out[0] for sub, f in zip(subs, flags) if f) and not any(
            out[0] in sub for sub, f in zip(subs, flags) if not f)
        if kept:
            return None  # the sample letter already first: the decompositions read it as it is
        free = next((c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBA" if c not in equation), None)
        if free is None:
            return None
        new_subs = [free + sub if f else sub for sub, f in zip(subs, flags)]
        new_equation = ",".join(new_subs) + "->" + free + out
        return lambda: torch.einsum(new_equation, *[t.unsqueeze(0) if f else t for t, f in zip(ops, flags)])


ONE_SAMPLE = {
    torch.Tensor.__getitem__: _Getitem(),
    **{f: _Reduction(f.__name__) for f in (torch.Tensor.sum, torch.sum, torch.Tensor.mean, torch.mean)},
    **{f: _Cat() for f in (torch.cat, torch.concat, torch.concatenate)},
    torch.stack: _Stack(),
    final_state: _Stack(),
    **{f: _Pieces(name) for name, fs in (("unbind", (torch.unbind, torch.Tensor.unbind)),
                                         ("chunk", (torch.chunk, torch.Tensor.chunk)),
                                         ("split", (torch.split, torch.Tensor.split))) for f in fs},
    **{f: _Repeat(f.__name__) for f in (torch.Tensor.repeat, torch.repeat_interleave, torch.Tensor.repeat_interleave)},
    **{f: _Permute(name) for name, fs in (("permute", (torch.permute, torch.Tensor.permute)),
                                          ("transpose", (torch.transpose, torch.Tensor.transpose, torch.swapaxes,
                                                         torch.Tensor.swapaxes, torch.swapdims,
                                                         torch.Tensor.swapdims)),
                                          ("t", (torch.t, torch.Tensor.t))) for f in fs},
    **{f: _RowConstant(f) for f in (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__,
                                    torch.sub, torch.subtract, torch.Tensor.sub, torch.Tensor.__sub__,
                                    torch.Tensor.__rsub__, torch.mul, torch.multiply, torch.Tensor.mul,
                                    torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.div, torch.true_divide,
                                    torch.Tensor.div, torch.Tensor.__truediv__, torch.Tensor.__rtruediv__)},
    **{f: _RowMatmul() for f in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)},
    torch.einsum: _Einsum(),
}
"""Operations along dimension 0 that the capture reads, with a batch of one sample, as the same
operation along dimension 1 of the value unsqueezed in front (see the module docstring)."""
