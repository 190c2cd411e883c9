"""Fused operations read through their definitions (issue 14): a call with no Python body to
record (``F.scaled_dot_product_attention``), or a module whose own forward moves the batch
dimension or takes a fused kernel (``nn.MultiheadAttention``), is recorded by the capture
(:mod:`nrm.capture`) as the operations that define it — matrix products, softmax, linear
maps, index maps — which the layer kinds of :mod:`nrm.layers.attention` and the others read.
What cannot be decomposed faithfully is refused with its reason (``docs/attention.md``).
"""

from __future__ import annotations

import math
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .elementwise import mixed_precision
from .gat import GATDecomposition, GATv2Decomposition
from .linear import pair
from .recurrent import (
    FINAL_STATE_REFUSAL,
    CellDecomposition,
    GRUDecomposition,
    LSTMDecomposition,
    RNNDecomposition,
    final_state,
)
from .shape import patch_index


def _sdpa_arguments(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False) -> dict:
    return dict(query=query, key=key, value=value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                scale=scale, enable_gqa=enable_gqa)


class SDPADecomposition:
    """``F.scaled_dot_product_attention`` (one fused call, with no Python body to record), read
    as the operations that define it — torch's math backend, step for step::

        f = √scale (scale = 1/√d by default);   softmax((Q f)(Kᵀ f)) V

    The capture runs this in place of the fused call (:mod:`nrm.capture`), so its pieces are
    recorded as :class:`~nrm.layers.scale.ConstantScale`, :class:`~nrm.layers.shape.Permute`,
    :class:`~nrm.layers.attention.MatMul` and :class:`~nrm.layers.attention.Softmax` layers; the
    value the model goes on with is this decomposition's, equal to the fused kernel's within
    rounding (the kernels may sum in another order; a few ulp in the tests).

    **Masks.** torch adds −∞ at masked positions (a boolean ``attn_mask`` False, or above the
    diagonal under ``is_causal=True``); nrm records only finite values, so the decomposition
    writes ``torch.where(keep, scores, finfo.min)`` (read by :class:`~nrm.layers.constants.Select`)
    and a float mask as ``scores + attn_mask.clamp(min=finfo.min)``
    (:class:`~nrm.layers.constants.AddConstant`). The softmax then gives exactly what torch's
    does — exp(finfo.min − max) and exp(−∞) are both 0 — as long as every query keeps one key;
    a query that attends to nothing (torch: NaN) is refused. Masked positions have s = 0, so
    the softmax kernel x_i (δ_ij − s_i) gives them no relevance, and their columns go to ⊥.

    **Grouped-query attention** (``enable_gqa=True``, h_q = n·h_kv heads): K and V are repeated
    as torch does (each key/value head serves n consecutive query heads), written
    ``K[:, :, None].expand(B, h_kv, n, S, d).reshape(B, h_q, S, d)`` — index maps, so a key
    head's relevance is the sum over the query heads it serves. **Multi-query attention** without
    ``enable_gqa`` (Falcon: one key/value head of size 1 in the head dimension, which torch
    broadcasts over the query heads) is written ``K.expand(B, h_q, S, d)``, the same index map.

    Refused, by name: dropout, a mask computed from the input, a mask with a batch of its own."""

    function = F.scaled_dot_product_attention

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        """Why this call cannot be decomposed faithfully, or None."""
        try:
            a = _sdpa_arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of F.scaled_dot_product_attention ({e})"
        if a["dropout_p"]:
            return "applies dropout (dropout_p > 0): random, not a function of the input"
        if any(not isinstance(t, torch.Tensor) or t.dim() < 3 for t in (a["query"], a["key"], a["value"])):
            return "takes query, key and value without a batch and a leading dimension"
        q, k = a["query"], a["key"]
        if a["enable_gqa"]:
            if q.dim() != 4 or k.dim() != 4 or q.size(1) % k.size(1):
                return ("uses grouped-query attention (enable_gqa=True) with shapes nrm does not decompose: it reads "
                        "(B, h, L, d) with the query heads a multiple of the key heads")
        elif q.dim() == 4 and any(t.dim() == 4 and t.size(1) not in (1, q.size(1)) for t in (k, a["value"])):
            return ("takes other numbers of query and key/value heads without enable_gqa=True (torch broadcasts one "
                    "key/value head only)")
        mask = a["attn_mask"]
        if mask is not None and a["is_causal"]:
            return "takes both attn_mask= and is_causal=True (torch refuses it as well)"
        if mask is not None:
            if not isinstance(mask, torch.Tensor):
                return f"takes an attn_mask of type {type(mask).__name__}"
            keep = mask if mask.dtype == torch.bool else mask > float("-inf")
            if not bool(keep.any(-1).all()):
                return ("masks every key of some query (a row of attn_mask is all False or −inf): torch's softmax "
                        "gives NaN there")
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        a = _sdpa_arguments(*args, **kwargs)
        q, k, v = a["query"], a["key"], a["value"]
        if a["enable_gqa"] and q.size(1) != k.size(1):
            n = q.size(1) // k.size(1)
            k, v = (t[:, :, None].expand(t.size(0), t.size(1), n, t.size(2), t.size(3))
                    .reshape(t.size(0), t.size(1) * n, t.size(2), t.size(3)) for t in (k, v))
        elif q.dim() == 4:  # one key/value head broadcast over the query heads (multi-query attention)
            k, v = (t.expand(t.size(0), q.size(1), t.size(2), t.size(3)) if t.dim() == 4 and t.size(1) != q.size(1)
                    else t for t in (k, v))
        scale = 1 / math.sqrt(q.size(-1)) if a["scale"] is None else a["scale"]
        factor = math.sqrt(abs(scale))
        scores = torch.matmul(q * (-factor if scale < 0 else factor), k.transpose(-2, -1) * factor)
        low = torch.finfo(scores.dtype).min
        mask = a["attn_mask"]
        if a["is_causal"]:
            L, S = q.size(-2), k.size(-2)
            mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril(diagonal=0)
        if mask is not None and mask.dtype == torch.bool:
            scores = torch.where(mask, scores, low)
        elif mask is not None:
            scores = scores + mask.clamp(min=low)
        return torch.matmul(torch.softmax(scores, dim=-1), v)


def _mha_arguments(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                   average_attn_weights=True, is_causal=False) -> dict:
    return dict(query=query, key=key, value=value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)


def forward_key(module: nn.Module) -> tuple | None:
    """What decides a module's own forward besides its arguments, for a check made once per
    signature: its class and the class's forward (patched on the class: another key) and grad
    mode; None — checked every call — when the instance's forward was replaced
    (``module.forward = …``)."""
    if "forward" in vars(module):
        return None
    return type(module), type(module).forward, torch.is_grad_enabled()


def _fmha_arguments(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
                    add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
                    need_weights=True, attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
                    k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                    is_causal=False) -> dict:
    return dict(query=query, key=key, num_heads=num_heads, out_proj_weight=out_proj_weight, need_weights=need_weights,
                average_attn_weights=average_attn_weights)


class MHADecomposition:
    """``nn.MultiheadAttention`` read as the operations that define it, with the batch kept
    first (torch's own path moves it, and in eval mode without gradients takes the fused
    ``torch._native_multi_head_attention``, which nrm cannot see into)::

        Q = x_q W_qᵀ + b_q,  K, V alike;  heads: (B, L, h, d) → (B, h, L, d)
        A = softmax((Q √(1/d)) Kᵀ);  O = (A V) → (B, L, E);  out = O W_oᵀ + b_o

    (``need_weights=False``: the scores as :class:`SDPADecomposition` forms them). The capture
    runs the module's own forward unrecorded, then this decomposition recorded, and requires
    the two outputs to agree within 10³ ulp of the largest value
    (:class:`~nrm.errors.CaptureMismatchError` otherwise); the model goes on with the
    decomposition's output. **Once per signature**, as a map's self-check (:mod:`nrm.check`):
    the decomposition is an interpretation of the module's forward, which depends on the
    module's class, the arguments of its ``F.multi_head_attention_forward`` call other than
    tensor values (tensors by shape, dtype, device; flags, head count, dropout, training) and
    grad mode — so once a signature's two outputs agreed, a later call with the same signature
    skips the module's fused call (:meth:`placeholder` stands in for its output, which the
    decomposition's replaces) instead of computing the attention twice. The masks' refusals
    (a query with every key masked) are values, and are asked every call.
    ``explain(check="full")`` compares every call; ``check=False`` none.

    **Masks** as torch merges them (:meth:`merged_mask`): a boolean ``attn_mask`` or
    ``key_padding_mask`` is −∞ where True (not allowed — the opposite of SDPA's boolean mask), a
    float one is added as given; the scores plus the mask go to the softmax
    (:class:`~nrm.layers.constants.AddConstant`, −∞ recorded as ``finfo.min``: masked keys take
    nothing), or to :class:`SDPADecomposition` with ``need_weights=False``. ``is_causal`` is
    torch's hint that ``attn_mask`` is causal: the mask is what is read. A mask that differs
    between samples (padding of different lengths) is refused by the constants' kinds; a query
    with every key masked (torch: NaN) here.

    **Sequence first** (``batch_first=False``, inputs (L, B, E)): q, k, v are transposed to
    (B, L, E), decomposed as above, and the output transposed back; the capture reads it when nrm
    explains one sample (B = 1), where the transposes are views
    (:meth:`~nrm.layers.shape.Permute.is_view`), and refuses it by name for more. Refused, by
    name: ``add_bias_kv``, ``add_zero_attn``, dropout in training mode and unbatched
    inputs."""

    module = nn.MultiheadAttention
    own_function = staticmethod(F.multi_head_attention_forward)
    """The fused call of the module's own forward that a signature checked once lets the capture skip."""

    @staticmethod
    def own_key(module: nn.Module) -> tuple | None:
        """What decides the module's own forward besides its fused call's arguments
        (:func:`forward_key`, and the layout flags); None — never skipped — when the instance's
        forward was replaced."""
        key = forward_key(module)
        return None if key is None else key + (module.batch_first, module._qkv_same_embed_dim, module.training)

    @staticmethod
    def placeholder(args: tuple, kwargs: dict) -> tuple | None:
        """Uninitialized tensors of the shapes ``F.multi_head_attention_forward`` returns for these
        arguments ((L, B, E) and the weights, or None), standing in for its output in a
        forward whose output the decomposition's replaces; None when they are not batched."""
        try:
            a = _fmha_arguments(*args, **kwargs)
        except TypeError:
            return None
        q, k = a["query"], a["key"]
        if not isinstance(q, torch.Tensor) or not isinstance(k, torch.Tensor) or q.dim() != 3 or k.dim() != 3:
            return None
        L, B, S = q.shape[0], q.shape[1], k.shape[0]
        out = q.new_empty((L, B, a["out_proj_weight"].shape[0]))
        if not a["need_weights"]:
            return out, None
        return out, q.new_empty((B, L, S) if a["average_attn_weights"] else (B, a["num_heads"], L, S))

    def refusal(self, module: nn.Module, args: tuple, kwargs: dict) -> str | None:
        try:
            a = _mha_arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of nn.MultiheadAttention.forward ({e})"
        if any(not isinstance(t, torch.Tensor) or t.dim() != 3 for t in (a["query"], a["key"], a["value"])):
            return "takes unbatched inputs; nrm reads (B, L, E), or (L, B, E) with batch_first=False"
        a = self.batch_first(module, a)
        why = self.mask_refusal(a)
        if why is not None:
            return why
        if module.bias_k is not None or module.bias_v is not None or module.add_zero_attn:
            return "appends a learned or zero key/value (add_bias_kv, add_zero_attn), which nrm does not decompose"
        if module.training and module.dropout:
            return "applies dropout in training mode; call model.eval()"
        return None

    @staticmethod
    def batch_first(module: nn.Module, a: dict) -> dict:
        """The arguments with query, key and value batch first: (L, B, E) → (B, L, E) when the
        module is sequence first (``batch_first=False``; the capture reads it for a batch of one
        sample, where the transpose is a view); the masks are batch first in both layouts."""
        if module.batch_first:
            return a
        moved: dict[int, torch.Tensor] = {}  # self-attention: one transpose read three times
        for n in ("query", "key", "value"):
            moved.setdefault(id(a[n]), a[n].transpose(0, 1))
        return {**a, **{n: moved[id(a[n])] for n in ("query", "key", "value")}}

    def mask_refusal(self, a: dict) -> str | None:
        """Why the masks cannot be read, or None."""
        for name in ("attn_mask", "key_padding_mask"):
            m = a[name]
            if m is not None and (not isinstance(m, torch.Tensor) or not (m.dtype == torch.bool or
                                                                            m.is_floating_point())):
                return f"takes a {name} that is not a boolean or floating tensor"
        try:
            mask = self.merged_mask(a)
        except RuntimeError as e:
            return f"takes masks of shapes nrm does not read ({e})"
        if mask is not None and not bool((mask > float("-inf")).any(-1).all()):
            return ("masks every key of some query (attn_mask and key_padding_mask together): torch's softmax gives "
                    "NaN there")
        return None

    @staticmethod
    def merged_mask(a: dict) -> torch.Tensor | None:
        """attn_mask and key_padding_mask as one additive mask of (1 or B, 1 or h, L, S), as torch merges
        them: a boolean mask is −inf where True (not allowed), a float mask is added as given::

            mask = attn_mask (L, S) → (1, 1, L, S), or (B·h, L, S) → (B, h, L, S)
                   + key_padding_mask (B, S) → (B, 1, 1, S)
        """
        q, k = a["query"], a["key"]
        B, L, S = q.shape[0], q.shape[1], k.shape[1]

        def additive(m):
            if m.dtype == torch.bool:
                return torch.zeros(m.shape, dtype=q.dtype, device=m.device).masked_fill(m, float("-inf"))
            return m.to(q.dtype)

        mask = None
        if a["attn_mask"] is not None:
            am = additive(a["attn_mask"])
            mask = am.reshape(1, 1, L, S) if am.dim() == 2 else am.reshape(B, -1, L, S)
        if a["key_padding_mask"] is not None:
            kpm = additive(a["key_padding_mask"]).reshape(B, 1, 1, S)
            mask = kpm if mask is None else mask + kpm
        return mask

    def projections(self, module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(W, b) of the query, key and value projections (slices of in_proj_* when packed)."""
        E = module.embed_dim
        bias = module.in_proj_bias
        if module._qkv_same_embed_dim:
            weights = [module.in_proj_weight[i * E:(i + 1) * E] for i in range(3)]
        else:
            weights = [module.q_proj_weight, module.k_proj_weight, module.v_proj_weight]
        return [(w, None if bias is None else bias[i * E:(i + 1) * E]) for i, w in enumerate(weights)]

    def __call__(self, module: nn.Module, *args, **kwargs):
        a = self.batch_first(module, _mha_arguments(*args, **kwargs))
        h, E = module.num_heads, module.embed_dim
        d = E // h

        def heads(t, wb):
            p = F.linear(t, *wb)
            return p.view(p.shape[0], p.shape[1], h, d).transpose(1, 2)

        q, k, v = (heads(a[n], wb) for n, wb in zip(("query", "key", "value"), self.projections(module)))
        mask = self.merged_mask(a)
        if a["need_weights"]:
            scores = torch.matmul(q * math.sqrt(1.0 / d), k.transpose(-2, -1))
            weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            o = torch.matmul(weights, v)
        else:
            weights, o = None, SDPADecomposition()(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(q.shape[0], q.shape[2], E)
        out = F.linear(o, module.out_proj.weight, module.out_proj.bias)
        if weights is not None and a["average_attn_weights"]:
            weights = weights.mean(dim=1)
        return (out if module.batch_first else out.transpose(0, 1)), weights


class EinsumDecomposition:
    """``torch.einsum`` of two tensors that is a batched matrix product (MaxViT's attention:
    ``"BGHID,BGHJD->BGHIJ"`` for Q·Kᵀ, ``"BGHIJ,BGHJD->BGHID"`` for A·V), read as the operations
    that define it. With the subscripts split into batch letters b (in both operands and the
    output; the first is the sample dimension of all three), free letters i of the first
    operand, free letters j of the second and contracted letters c (in both, not in the
    output)::

        A' = permute(A → b, i, c) reshaped (b, |i|, |c|);   B' = permute(B → b, c, j) reshaped (b, |c|, |j|)
        O  = permute(reshape(A' @ B' → b, i, j) → the output's order)

    so the product is a :class:`~nrm.layers.attention.MatMul` layer between index maps. The
    decomposition's value is compared with torch's own einsum (unrecorded) and must agree within
    10³ ulp of the largest value (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused,
    by name: other than two operands, ``...``, a letter repeated within an operand (a diagonal),
    a letter summed out of one operand alone, a first subscript that is not the shared sample
    dimension."""

    function = torch.einsum

    def applies(self, args: tuple, kwargs: dict, derived):
        """With one operand a constant (a weight): :class:`EinsumWeightDecomposition` for it."""
        try:
            _, ops = self._parse(args)
        except ValueError:
            return True  # refusal() names it
        if len(ops) == 2 and all(isinstance(t, torch.Tensor) for t in ops):
            flags = [derived(t) for t in ops]
            if flags.count(True) == 1:
                return EinsumWeightDecomposition(flags.index(True))
        return True

    @staticmethod
    def _parse(args: tuple) -> tuple[str, list]:
        if not args or not isinstance(args[0], str):
            raise ValueError("takes the equation first")
        ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
        return args[0].replace(" ", ""), ops

    @classmethod
    def form_refusal(cls, args: tuple, kwargs: dict) -> str | None:
        """Why the call is not an einsum of two tensors with an explicit output, each subscript
        written once per operand and one per dimension, or None (what both einsum decompositions
        need)."""
        try:
            equation, ops = cls._parse(args)
        except ValueError as e:
            return f"its arguments are not those of torch.einsum ({e})"
        if kwargs:
            return f"takes keyword arguments {sorted(kwargs)}, which nrm does not decompose"
        if len(ops) != 2 or not all(isinstance(t, torch.Tensor) for t in ops):
            return "is not a product of two tensors; nrm decomposes einsum of two tensors (a batched matrix product)"
        if "->" not in equation or "." in equation:
            return "has no explicit output ('->') or uses '...'; write every subscript"
        lhs, out = equation.split("->")
        subs = lhs.split(",")
        if len(subs) != 2 or any(len(set(x)) != len(x) for x in subs + [out]):
            return "repeats a subscript within an operand (a diagonal or trace), which is not a matrix product"
        if any(len(x) != t.dim() for x, t in zip(subs, ops)):
            return "has subscripts that do not match the operands' dimensions"
        return None

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        why = self.form_refusal(args, kwargs)
        if why is not None:
            return why
        equation, _ = self._parse(args)
        lhs, out = equation.split("->")
        a, b = lhs.split(",")
        if set(out) - set(a) - set(b) or (set(a) ^ set(b)) - set(out):
            return "sums a subscript of one operand alone (or invents one); nrm decomposes batched matrix products"
        if not (a[0] == b[0] == out[0]):
            return ("does not keep the sample dimension first in both operands and the output; nrm keeps the batch "
                    "first and never mixes samples")
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        equation, (A, B) = self._parse(args)
        lhs, out = equation.split("->")
        a, b = lhs.split(",")
        size = {**dict(zip(a, A.shape)), **dict(zip(b, B.shape))}
        batch = [x for x in a if x in b and x in out]
        free_a = [x for x in a if x not in b]
        free_b = [x for x in b if x not in a]
        contracted = [x for x in a if x in b and x not in out]

        def arrange(t, subs, order, shape):
            perm = [subs.index(x) for x in order]
            if perm != list(range(len(perm))):
                t = t.permute(perm)
            return t.reshape(shape) if tuple(t.shape) != tuple(shape) else t

        n = lambda letters: math.prod(size[x] for x in letters)  # noqa: E731
        lead = [size[x] for x in batch]
        A2 = arrange(A, a, batch + free_a + contracted, lead + [n(free_a), n(contracted)])
        B2 = arrange(B, b, batch + contracted + free_b, lead + [n(contracted), n(free_b)])
        O = torch.matmul(A2, B2)
        full = lead + [size[x] for x in free_a + free_b]
        if tuple(O.shape) != tuple(full):
            O = O.reshape(full)
        order = batch + free_a + free_b
        perm = [order.index(x) for x in out]
        if perm != list(range(len(perm))):
            O = O.permute(perm)
        with torch._C.DisableTorchFunction():
            theirs = torch.einsum(equation, A, B)
            bound = 1e3 * torch.finfo(theirs.dtype).eps * max(1.0, float(theirs.abs().max()))
            worst = float((O - theirs).abs().max()) if O.shape == theirs.shape else float("inf")
        if not worst <= bound:
            raise CaptureMismatchError(f"the decomposition of torch.einsum({equation!r}) does not reproduce it (max "
                                       f"deviation {worst:.3e}, allowed {bound:.3e}); nrm cannot read it faithfully")
        return O


class MatmulWeightDecomposition:
    """``x @ W`` with W a stack of constant matrices (…, k, m) — MViT's relative positions,
    ``r_q @ Rtᵀ`` with one table per frame — or ``W @ x`` with a constant W (…, n, k) on the left,
    which the matrix kinds do not read (:class:`~nrm.layers.linear.ConstantMatMul` reads x @ W
    with W one matrix), read as the einsum they are, with the sample letter b in x alone::

        x @ W = einsum("b…nk,…km->b…nm", x, W)        W @ x = einsum("…nk,b…km->b…nm", W, x)

    — :class:`EinsumWeightDecomposition`, a :class:`~nrm.layers.linear.Dense` layer (block
    diagonal over W's stack) between index maps. W's stacked dimensions must be x's last ones
    before the matrix, equal in size; otherwise the kinds read (or refuse) the product as it is.

    **A constant with the batch's dimension** (W of x's rank, its first size 1 or the batch's: a
    cross-attention's queries computed from the decoder's tokens, which are not the explained
    input — T5, BART-style ``scaled_dot_product_attention``; SigLIP's pooling probe repeated per
    sample) is one per-sample constant when its samples are equal: read as W[0]; samples that
    differ are refused by name (nrm reads one constant for every sample)."""

    def __init__(self, func, constant: int | None = None, batched: bool = False):
        self.func = func
        self.constant, self.batched = constant, batched  # which operand is the constant; whether it has the batch's

    @staticmethod
    def _operands(args: tuple, kwargs: dict):
        if kwargs or len(args) != 2 or not all(isinstance(t, torch.Tensor) for t in args):
            return None
        return args

    @staticmethod
    def _batched(x: torch.Tensor, w: torch.Tensor) -> bool:
        """Whether the constant w has a dimension at x's batch position (the same rank, size 1 or x's)."""
        return w.dim() == x.dim() and x.dim() >= 3 and w.shape[0] in (1, x.shape[0])

    def applies(self, args: tuple, kwargs: dict, derived):
        """This decomposition for which operand is the constant, or False (the kinds read the product)."""
        ops = self._operands(args, kwargs)
        if ops is None:
            return False
        flags = [derived(t) for t in ops]
        if flags.count(True) != 1:
            return False
        constant = flags.index(False)
        x, w = ops[1 - constant], ops[constant]
        batched = self._batched(x, w)
        if batched:
            w = w[0]
        if constant == 1 and w.dim() == 2 and not batched:
            return False  # x @ W with one matrix: ConstantMatMul
        if w.dim() < 2 or x.dim() < 3 or w.dim() > x.dim() - 1:
            return False
        stacked = w.shape[:-2]
        if tuple(stacked) != tuple(x.shape[x.dim() - 2 - len(stacked):-2]):
            return False
        return MatmulWeightDecomposition(self.func, constant, batched)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        w = args[self.constant] if self.constant is not None else None
        if self.batched and w.shape[0] > 1 and not bool((w == w[:1]).all()):
            return (f"multiplies by a constant of shape {tuple(w.shape)} whose samples differ (one matrix per sample; "
                    "a cross-attention's queries from other decoder tokens per sample?); nrm reads one constant shared "
                    "by every sample — for a cross-attention, explain the samples one by one")
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a, b = args
        if self.batched:  # the constant's samples are equal (refusal): one of them
            a, b = (a[0], b) if self.constant == 0 else (a, b[0])
        n_out = max(a.dim(), b.dim())
        letters = "abcdefghijklmnopqrstuvw"[:n_out - 2]
        first = letters[n_out - a.dim():] + "yz"
        second = letters[n_out - b.dim():] + "zx"
        out = torch.einsum(f"{first},{second}->{letters}yx", a, b)
        with torch._C.DisableTorchFunction():
            theirs = torch.matmul(*args)
            same = out.shape == theirs.shape and within_ulp(out, theirs)
        if not same:
            raise CaptureMismatchError("the einsum form of a matrix product with a stack of constant matrices does "
                                       "not reproduce torch.matmul within 10³ ulp; nrm cannot read it faithfully")
        return out


class EinsumWeightDecomposition:
    """``torch.einsum`` of one input-derived tensor x and one constant C (a weight: ``"bld,de->ble"``,
    ``"bchw,oc->bohw"``, Funnel's relative attention ``"binh,tnh->bnit"``), read as the linear
    map it is. With the subscripts of x split into the sample letter b (first in x and in the
    output, absent from C), free letters F of x (in the output, not in C), shared letters S (in
    x, C and the output: C differs between them) and contracted letters K (in x and C, not in
    the output), and C's own letters G (in the output) and H (in neither: summed out of C
    first)::

        y[b, F, S, G] = Σ_K x[b, F, S, K] · C[S, K, G],   C[S, K, G] = Σ_H C[S, K, G, H]
        x' = permute(x → b, F, S, K) reshaped (B, |F|, |S|·|K|)
        y  = permute(reshape(F.linear(x', W) → b, F, S, G) → the output's order)
        W[(s, g), (s', k)] = [s = s'] · C[s, k, g]        (block diagonal over S)

    so the einsum is a :class:`~nrm.layers.linear.Dense` layer between index maps, and every rule
    reads W (γ, z⁺, w² act on C's entries; the blocks off the diagonal are zeros). The
    decomposition's value is compared with torch's own einsum (unrecorded), within 10³ ulp of the
    largest value (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused, by name: what
    :class:`EinsumDecomposition` refuses (other than two operands, ``...``, a repeated letter), a
    sample letter that is not first in x and the output or that C has, a letter summed out of x
    alone (write it as ``x.sum(dim)``), and a W of more than
    :attr:`LARGEST` entries."""

    LARGEST = 1 << 26

    def __init__(self, derived: int):
        self.derived = derived  # which operand is input-derived (0 or 1)

    def _split(self, args: tuple):
        equation, ops = EinsumDecomposition._parse(args)
        lhs, out = equation.split("->")
        subs = lhs.split(",")
        x, c = ops[self.derived], ops[1 - self.derived]
        sx, sc = subs[self.derived], subs[1 - self.derived]
        F_ = [t for t in sx[1:] if t in out and t not in sc]
        S = [t for t in sx if t in sc and t in out]
        K = [t for t in sx if t in sc and t not in out]
        G = [t for t in sc if t in out and t not in sx]
        H = [t for t in sc if t not in out and t not in sx]
        size = {**dict(zip(sx, x.shape)), **dict(zip(sc, c.shape))}
        return equation, out, x, c, sx, sc, (F_, S, K, G, H), size

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        why = EinsumDecomposition.form_refusal(args, kwargs)
        if why is not None:
            return why
        equation, out, x, c, sx, sc, (F_, S, K, G, H), size = self._split(args)
        if set(out) - set(sx) - set(sc):
            return "has an output subscript that no operand has"
        if not (sx[0] == out[0] and sx[0] not in sc):
            return ("does not keep the sample dimension first in the input-derived operand and the output, or gives "
                    "it to the constant; nrm keeps the batch first and never mixes samples")
        if set(sx) - set(out) - set(sc):
            return ("sums a subscript of the input-derived operand alone; write that sum as x.sum(dim) before the "
                    "einsum")
        n = lambda letters: math.prod(size[t] for t in letters)  # noqa: E731
        entries = n(S) ** 2 * n(G) * n(K)
        if entries > self.LARGEST:
            return (f"would be a linear map of {entries} weights (the letters {''.join(S)} shared by x and the "
                    f"constant make it block diagonal); nrm reads einsum weights of at most {self.LARGEST}")
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        equation, out, x, c, sx, sc, (F_, S, K, G, H), size = self._split(args)
        n = lambda letters: math.prod(size[t] for t in letters)  # noqa: E731
        with torch._C.DisableTorchFunction():  # the weight is built from the constant alone
            order = S + K + G + H
            w = c.permute([sc.index(t) for t in order]).reshape(n(S), n(K), n(G), n(H)).sum(-1)
            eye = torch.eye(n(S), dtype=c.dtype, device=c.device)
            W = torch.einsum("skg,st->sgtk", w, eye).reshape(n(S) * n(G), n(S) * n(K)).contiguous()
        b = sx[0]
        perm = [sx.index(t) for t in [b] + F_ + S + K]
        xp = x.permute(perm) if perm != list(range(len(perm))) else x
        y = F.linear(xp.reshape(x.shape[0], n(F_), n(S) * n(K)), W)
        y = y.reshape([x.shape[0]] + [size[t] for t in F_ + S + G])
        have = [b] + F_ + S + G
        perm = [have.index(t) for t in out]
        if perm != list(range(len(perm))):
            y = y.permute(perm)
        with torch._C.DisableTorchFunction():
            same = within_ulp(y, torch.einsum(equation, *((x, c) if self.derived == 0 else (c, x))))
        if not same:
            raise CaptureMismatchError(f"the decomposition of torch.einsum({equation!r}) with a constant as F.linear "
                                       "does not reproduce it within 10³ ulp; nrm cannot read it faithfully")
        return y


class Conv1DDecomposition:
    """``transformers.pytorch_utils.Conv1D`` (GPT-2's projections), read as the linear map it
    computes, ``F.linear(x, Wᵀ, b)``: its own forward flattens the batch into the tokens
    (``torch.addmm(b, x.view(-1, n), W)``), which nrm does not read, so it runs unrecorded.
    Its definition is one call whose output is the module's own: :meth:`recorded_as` records
    ``F.linear`` with the module's output as its value, after checking the whole output
    against the definition through one random projection (Freivalds' check: x (Wᵀr) + b·r =
    y·r for every row, within 10³ ulp of |y|·|r|) rather than computing the product again (a
    second matrix product per projection was a sixth of an explain of GPT-2). Matched by the
    exact type (a subclass with its own forward is recorded as that forward runs). The check
    runs once per signature (:meth:`own_key`: the class, its forward, the weight's and the input's shapes), as a map's
    self-check does (:mod:`nrm.check`); every call with ``explain(check="full")``."""

    @staticmethod
    def own_key(module: nn.Module) -> tuple | None:
        """:func:`forward_key` with the weight's and bias's shapes and dtypes."""
        key = forward_key(module)
        return None if key is None else key + tuple(
            None if t is None else (tuple(t.shape), t.dtype, t.device.type) for t in (module.weight, module.bias))

    def __init__(self):
        self._cache: dict = {}  # (id, version, dtype, device) of a weight → (weakref, probe, (r, W r, |W| |r|))
        self._lock = threading.Lock()

    @staticmethod
    def call(module: nn.Module, x: torch.Tensor) -> tuple:
        """(func, args, kwargs) recorded with the module's output as its value: ``F.linear(x, Wᵀ, b)``."""
        return F.linear, (x, module.weight.t(), module.bias), {}

    def refusal(self, module: nn.Module, args: tuple, kwargs: dict) -> str | None:
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor) or args[0].dim() < 2:
            return "is called with other arguments than one batched tensor"
        return None

    def __call__(self, module: nn.Module, x):
        return F.linear(x, module.weight.t(), module.bias)

    def recorded_as(self, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> tuple:
        """((func, args, kwargs) recorded with ``output`` as its value, then the check of the
        whole output without a second matrix product (Freivalds): for a fixed random vector r,
        every row of ``output`` · r against x · (W r) + b · r (``F.linear``'s weight is Wᵀ), and
        the scale of each row that bounds their round-off, |x| · (|W| |r|) + |b| · |r| +
        |output| · |r|. W r and |W| |r| are kept per weight tensor and version (the weights of
        a model explained again are read once)."""
        b = module.bias
        r, Wr, Wr_abs = self._projected(module.weight, output)
        mine = x @ Wr + (b @ r if b is not None else 0)
        scale = x.abs() @ Wr_abs + output.abs() @ r.abs()
        if b is not None:
            scale = scale + b.abs() @ r.abs()
        return self.call(module, x), mine, output @ r, scale

    def _projected(self, weight: torch.Tensor, output: torch.Tensor) -> tuple:
        """(r, W r, |W| |r|) for this weight (module.weight, (n_in, n_out)) as it is now: kept by
        the tensor, its version and 64 of its entries (a write through ``.data`` leaves the
        version as it was; a stale entry would make the check refuse the module, loudly)."""
        key = (id(weight), weight._version, output.dtype, output.device)
        flat = weight.detach().reshape(-1)
        probe = flat[:: max(1, flat.numel() // 64)][:64].clone()
        hit = self._cache.get(key)
        if hit is not None and hit[0]() is weight and torch.equal(hit[1], probe):
            return hit[2]
        g = torch.Generator(device=output.device).manual_seed(0)
        r = torch.randn(output.shape[-1], generator=g, dtype=output.dtype, device=output.device)
        w = weight.to(output.dtype)
        value = (r, w @ r, w.abs() @ r.abs())
        with self._lock:
            self._cache[key] = (weakref.ref(weight), probe, value)
            while len(self._cache) > 1024:
                self._cache.pop(next(iter(self._cache)))
        return value


class ActivationDecomposition:
    """An activation module of another library whose forward writes a standard activation out
    in products and powers (``transformers``' ``NewGELUActivation``, GPT-2's default
    ``gelu_new``: 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))), read as that activation —
    one elementwise layer, q(j | k) = δ_jk (the identity rule of GELU, AttnLRP §3) — instead
    of a product of two functions of x, which no split of a product reads as an activation.
    The module's own forward runs unrecorded and this definition, recorded, must reproduce it
    within 10³ ulp (:meth:`nrm.capture` checks it), so a module whose formula is not the
    activation's (``FastGELUActivation``'s rounded constant) is refused, not approximated."""

    def __init__(self, function, name: str):
        self.function, self.name = function, name

    def refusal(self, module: nn.Module, args: tuple, kwargs: dict) -> str | None:
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            return "is called with other arguments than one tensor"
        return None

    def __call__(self, module: nn.Module, x):
        return self.function(x)

    def __repr__(self) -> str:
        return f"ActivationDecomposition({self.name})"


def _window_mask(pad_H: int, pad_W: int, window: list, shift: list, like: torch.Tensor) -> torch.Tensor:
    """Swin's mask of the shifted windows, (nW, N, N): 0 between positions of the same region
    of the shifted image, −100 between positions of different ones (torchvision's construction,
    on constants)."""
    mask = like.new_zeros((pad_H, pad_W))
    h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            mask[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    mask = mask.view(pad_H // window[0], window[0], pad_W // window[1], window[1])
    mask = mask.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _window_refusal(module: nn.Module, args: tuple, kwargs: dict, layout: str) -> str | None:
    """Why a shifted-window attention (2-d: ``layout`` (B, H, W, C); 3-d: (B, T, H, W, C)) cannot
    be read through its definition, or None."""
    dims = layout.count(",") + 1
    if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor) or args[0].dim() != dims:
        return f"is called with other arguments than one {layout} tensor"
    if module.training and (module.attention_dropout or module.dropout):
        return "applies dropout in training mode; call model.eval()"
    if args[0].shape[-1] % module.num_heads:
        return "has a width that is not a multiple of its number of heads"
    return None


class ShiftedWindowDecomposition:
    """torchvision's ``ShiftedWindowAttention`` and ``ShiftedWindowAttentionV2`` (``swin_t``,
    ``swin_v2_t``), read as the operations of ``swin_transformer.shifted_window_attention`` with
    the windows kept in a per-sample dimension. torchvision folds the windows into the batch,
    ``(B, H, W, C) → (B·nW, N, C)``, which nrm refuses (the batch stays first and is never
    mixed); the same computation, batch first (ws the window, N = ws₀·ws₁, nW windows, h heads,
    d = C/h)::

        x → F.pad to multiples of ws → roll by −shift → (B, H/ws₀, ws₀, W/ws₁, ws₁, C)
          → permute → (B, nW, N, C);   Q, K, V = F.linear(x, W_qkv, b_qkv) → (B, nW, h, N, d) each
        S = (Q d^(−½)) Kᵀ                                   (V1)
        S = (F.normalize(Q) F.normalize(K)ᵀ) · exp(min(τ, log 100))   (V2: cosine attention)
        S = S + bias (the relative position bias, a constant: V2's from its cpb MLP and 16·sigmoid)
              + mask (shifted windows: 0 within a region, −100 across, a constant of (1, nW, 1, N, N))
        O = softmax(S) V → (B, nW, N, C) → F.linear(·, W_proj, b_proj) → the windows put back
          → roll by +shift → crop to (B, H, W, C)

    The pieces are :class:`~nrm.layers.attention.MatMul`, :class:`~nrm.layers.attention.Softmax`,
    :class:`~nrm.layers.constants.AddConstant`, :class:`~nrm.layers.scale.ConstantScale`, index
    maps and :class:`~nrm.layers.constants.Pad`; ``F.normalize`` is read through
    :class:`NormalizeDecomposition` (‖x‖ held at its forward value). The module's own forward
    runs unrecorded and this decomposition, recorded, must reproduce it within 10³ ulp
    (:meth:`nrm.capture`): a ``shifted_window_attention`` patched to compute something else,
    or a subclass that changes the computation without its own forward, is refused with
    :class:`~nrm.errors.CaptureMismatchError`, never rewritten silently. Matched by the exact
    type (a subclass with its own forward is recorded as that forward runs). Refused, by name:
    dropout in training mode, other than one (B, H, W, C) tensor."""

    def refusal(self, module: nn.Module, args: tuple, kwargs: dict) -> str | None:
        return _window_refusal(module, args, kwargs, "(B, H, W, C)")

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        window, heads = list(module.window_size), module.num_heads
        d = C // heads
        pad_r = (window[1] - W % window[1]) % window[1]
        pad_b = (window[0] - H % window[0]) % window[0]
        if pad_r or pad_b:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        pad_H, pad_W = H + pad_b, W + pad_r
        shift = list(module.shift_size)
        if window[0] >= pad_H:
            shift[0] = 0
        if window[1] >= pad_W:
            shift[1] = 0
        shifted = sum(shift) > 0
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        nh, nw = pad_H // window[0], pad_W // window[1]
        nW, N = nh * nw, window[0] * window[1]
        x = x.view(B, nh, window[0], nw, window[1], C).permute(0, 1, 3, 2, 4, 5).reshape(B, nW, N, C)

        bias, scale = module.qkv.bias, getattr(module, "logit_scale", None)
        with torch._C.DisableTorchFunction():  # parameters only: constants
            position = module.get_relative_position_bias().reshape(1, 1, heads, N, N)
            if scale is not None and bias is not None:
                bias = bias.clone()
                bias[C:2 * C].zero_()
            if scale is not None:
                scale = torch.clamp(scale, max=math.log(100.0)).exp()
            mask = _window_mask(pad_H, pad_W, window, shift, position).reshape(1, nW, 1, N, N) if shifted else None
        qkv = F.linear(x, module.qkv.weight, bias).reshape(B, nW, N, 3, heads, d).permute(0, 3, 1, 4, 2, 5)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        if scale is not None:
            attn = torch.matmul(F.normalize(q, dim=-1), F.normalize(k, dim=-1).transpose(-2, -1)) * scale
        else:
            attn = torch.matmul(q * d ** -0.5, k.transpose(-2, -1))
        attn = attn + position
        if mask is not None:
            attn = attn + mask
        attn = torch.softmax(attn, dim=-1)
        o = torch.matmul(attn, v).permute(0, 1, 3, 2, 4).reshape(B, nW, N, C)
        o = F.linear(o, module.proj.weight, module.proj.bias)
        o = o.view(B, nh, nw, window[0], window[1], C).permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, C)
        if shifted:
            o = torch.roll(o, shifts=(shift[0], shift[1]), dims=(1, 2))
        return o[:, :H, :W, :].contiguous()


def _window_mask_3d(padded: tuple, window: list, shift: list, like: torch.Tensor) -> torch.Tensor:
    """Video Swin's mask of the shifted windows, (nW, N, N): 0 between positions of the same
    region of the shifted clip, −100 between positions of different ones (torchvision's
    ``_compute_attention_mask_3d``, on constants)."""
    mask = like.new_zeros(padded)
    slices = [((0, -window[i]), (-window[i], -shift[i]), (-shift[i], None)) for i in range(3)]
    count = 0
    for d in slices[0]:
        for h in slices[1]:
            for w in slices[2]:
                mask[d[0]:d[1], h[0]:h[1], w[0]:w[1]] = count
                count += 1
    n = [p // w for p, w in zip(padded, window)]
    mask = mask.view(n[0], window[0], n[1], window[1], n[2], window[2]).permute(0, 2, 4, 1, 3, 5)
    mask = mask.reshape(n[0] * n[1] * n[2], window[0] * window[1] * window[2])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class ShiftedWindow3dDecomposition:
    """torchvision's ``ShiftedWindowAttention3d`` (``swin3d_t``/``s``/``b``, Video Swin), read as
    ``video.swin_transformer.shifted_window_attention_3d`` with the windows kept in a per-sample
    dimension, as :class:`ShiftedWindowDecomposition` reads the 2-d one (torchvision folds the
    windows into the batch, ``(B, T, H, W, C) → (B·nW, N, C)``). With the window and shift
    adapted to the clip as torchvision does (a window no smaller than the clip along an axis
    becomes the clip's size there, unshifted), N = ws₀·ws₁·ws₂, h heads, d = C/h::

        x → F.pad to multiples of ws → roll by −shift → (B, T/ws₀, ws₀, H/ws₁, ws₁, W/ws₂, ws₂, C)
          → permute → (B, nW, N, C);   Q, K, V = F.linear(x, W_qkv, b_qkv) → (B, nW, h, N, d) each
        S = (Q d^(−½)) Kᵀ + bias (relative position, a constant) + mask (shifted: 0 / −100, a constant)
        O = softmax(S) V → (B, nW, N, C) → F.linear(·, W_proj, b_proj) → the windows put back
          → roll by +shift → crop to (B, T, H, W, C)

    The module's own forward runs unrecorded and this decomposition, recorded, must reproduce it
    within 10³ ulp. Refused, by name: dropout in training mode, other than one (B, T, H, W, C) tensor."""

    def refusal(self, module: nn.Module, args: tuple, kwargs: dict) -> str | None:
        return _window_refusal(module, args, kwargs, "(B, T, H, W, C)")

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        B, T, H, W, C = x.shape
        size = (T, H, W)
        window, shift = list(module.window_size), list(module.shift_size)
        for i in range(3):
            if size[i] <= window[i]:
                window[i], shift[i] = size[i], 0
        heads = module.num_heads
        d = C // heads
        pads = [(window[i] - size[i] % window[i]) % window[i] for i in range(3)]
        if any(pads):
            x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        padded = tuple(s + p for s, p in zip(size, pads))
        shifted = sum(shift) > 0
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1], -shift[2]), dims=(1, 2, 3))
        n = [p // w for p, w in zip(padded, window)]
        nW, N = n[0] * n[1] * n[2], window[0] * window[1] * window[2]
        x = x.view(B, n[0], window[0], n[1], window[1], n[2], window[2], C).permute(0, 1, 3, 5, 2, 4, 6, 7)
        x = x.reshape(B, nW, N, C)
        with torch._C.DisableTorchFunction():  # parameters and buffers only: constants
            position = module.get_relative_position_bias(window).reshape(1, 1, heads, N, N)
            mask = _window_mask_3d(padded, window, shift, position).reshape(1, nW, 1, N, N) if shifted else None
        qkv = F.linear(x, module.qkv.weight, module.qkv.bias).reshape(B, nW, N, 3, heads, d).permute(0, 3, 1, 4, 2, 5)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        attn = torch.matmul(q * d ** -0.5, k.transpose(-2, -1)) + position
        if mask is not None:
            attn = attn + mask
        attn = torch.softmax(attn, dim=-1)
        o = torch.matmul(attn, v).permute(0, 1, 3, 2, 4).reshape(B, nW, N, C)
        o = F.linear(o, module.proj.weight, module.proj.bias)
        o = o.view(B, n[0], n[1], n[2], window[0], window[1], window[2], C).permute(0, 1, 4, 2, 5, 3, 6, 7)
        o = o.reshape(B, padded[0], padded[1], padded[2], C)
        if shifted:
            o = torch.roll(o, shifts=(shift[0], shift[1], shift[2]), dims=(1, 2, 3))
        return o[:, :T, :H, :W, :].contiguous()


def _unit(x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """x / max(‖x‖₂, ε) along ``dim`` as nrm reads it, x · rsqrt(max(Σ_dim x², ε²)): a product
    with a held normalizer (recorded when called under the capture)."""
    return x * torch.rsqrt(torch.clamp(x.pow(2).sum(dim, keepdim=True), min=eps * eps))


class NormalizeDecomposition:
    """``F.normalize(x, p=2, dim, eps)`` = x / max(‖x‖₂, ε) along ``dim`` (swin_v2's cosine
    attention), read as RMSNorm is (:class:`~nrm.layers.constants.Rsqrt`)::

        F.normalize(x) = x · rsqrt(max(Σ_dim x², ε²))

    a product of x and a normalizer held at its forward value (the identity on 1/σ, AttnLRP
    Prop. 3.4): the held factor takes nothing under every split, so each x_j keeps its
    relevance (q(x_j | y_j) = 1 under LRP-0) and the norm's path (:class:`~nrm.layers.constants.Power`,
    :class:`~nrm.layers.linear.Reduce`, :class:`~nrm.layers.activations.Clamp`, ``Rsqrt``) receives
    none. The decomposition is compared with torch's own ``F.normalize`` (unrecorded) within 10³
    ulp of the largest value (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: a
    norm other than p = 2, ``out=``, the batch dimension."""

    function = F.normalize

    @staticmethod
    def _arguments(input, p=2.0, dim=1, eps=1e-12, out=None) -> dict:
        return dict(input=input, p=p, dim=dim, eps=eps, out=out)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of F.normalize ({e})"
        if a["out"] is not None:
            return "writes into out="
        if not isinstance(a["input"], torch.Tensor) or a["input"].dim() < 2:
            return "normalizes a tensor without a batch dimension"
        if a["p"] != 2:
            return f"normalizes with the {a['p']}-norm; nrm reads the Euclidean norm (p=2)"
        if not isinstance(a["dim"], int) or a["dim"] % a["input"].dim() == 0:
            return "normalizes along the batch dimension (or several dimensions); nrm keeps every sample apart"
        if isinstance(a["eps"], bool) or not isinstance(a["eps"], (int, float)) or not a["eps"] > 0:
            return f"takes eps={a['eps']!r}; nrm reads a number > 0"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        x, dim, eps = a["input"], a["dim"], float(a["eps"])
        y = _unit(x, dim, eps)
        with torch._C.DisableTorchFunction():
            theirs = F.normalize(x, 2.0, dim, eps)
            bound = 1e3 * torch.finfo(theirs.dtype).eps * max(1.0, float(theirs.abs().max()))
            worst = float((y - theirs).abs().max())
        if not worst <= bound:
            raise CaptureMismatchError(f"the decomposition of F.normalize does not reproduce it (max deviation "
                                       f"{worst:.3e}, allowed {bound:.3e}); nrm cannot read it faithfully")
        return y


class CosineSimilarityDecomposition:
    """``F.cosine_similarity(x1, x2, dim, eps)`` (``torch.cosine_similarity``,
    ``nn.CosineSimilarity``) along a per-sample dimension — a CLIP-style head against constant
    class embeddings, a contrastive score — read as what it is, the dot product of the two
    inputs each normalized as :class:`NormalizeDecomposition` reads ``F.normalize``::

        cos(x1, x2) = Σ_dim (x1 · rsqrt(max(Σ_dim x1², ε²))) · (x2 · rsqrt(max(Σ_dim x2², ε²)))

    each normalizer held at its forward value (it takes nothing under every split); the inputs
    broadcast to one shape first (:class:`~nrm.layers.constants.Expand`). With one input a
    constant (text embeddings, prototypes) the product is :class:`~nrm.layers.scale.ConstantScale`
    and the similarity a linear map of the normalized input (:class:`~nrm.layers.linear.Reduce`):
    each x1_j gets x1_j x2_j / (‖x1‖ ‖x2‖) under LRP-0. With both computed from the input it is a
    product of two tensors, whose split the user chooses (the default asks,
    :class:`~nrm.errors.AmbiguousProductError`). Compared with torch's own within 10³ ulp
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: the batch dimension, an
    ``eps`` that is not a number > 0, inputs of different dtypes."""

    function = torch.cosine_similarity

    @staticmethod
    def _arguments(x1, x2, dim=1, eps=1e-8) -> dict:
        return dict(x1=x1, x2=x2, dim=dim, eps=eps)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of F.cosine_similarity ({e})"
        x1, x2, dim, eps = a["x1"], a["x2"], a["dim"], a["eps"]
        if not (isinstance(x1, torch.Tensor) and isinstance(x2, torch.Tensor)) or x1.dtype != x2.dtype \
                or not x1.is_floating_point():
            return "compares tensors of different dtypes, or not floating point; nrm reads two of one floating dtype"
        try:
            shape = torch.broadcast_shapes(x1.shape, x2.shape)
        except RuntimeError as e:
            return f"compares tensors that do not broadcast ({e})"
        if len(shape) < 2 or isinstance(dim, bool) or not isinstance(dim, int) or not -len(shape) <= dim < len(shape):
            return f"compares along dim={dim!r}; nrm reads one int within the tensors, which have a batch dimension"
        if dim % len(shape) == 0:
            return "compares along the batch dimension, which mixes the samples; nrm reads a per-sample dimension"
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            return f"takes eps={eps!r}; nrm reads a number > 0"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        x1, x2, eps = a["x1"], a["x2"], float(a["eps"])
        shape = torch.broadcast_shapes(x1.shape, x2.shape)
        dim = a["dim"] % len(shape)
        units = []
        for x in (x1, x2):  # each to the common per-sample shape, keeping its own batch (a constant's is 1)
            within = (x.shape[0] if x.dim() == len(shape) else 1,) + tuple(shape[1:])
            x = x if x.shape == within else x.expand(within)
            units.append(_unit(x, dim, eps))
        out = (units[0] * units[1]).sum(dim)
        with torch._C.DisableTorchFunction():
            same = within_ulp(out, torch.cosine_similarity(x1, x2, a["dim"], a["eps"]))
        if not same:
            raise CaptureMismatchError("the decomposition of cosine_similarity as a dot product of normalized inputs "
                                       "does not reproduce it within 10³ ulp; nrm cannot read it faithfully")
        return out


class StackDecomposition:
    """``torch.stack(tensors, dim)`` read as what it is, the tensors each given a new dimension
    and concatenated along it (GPT-J's ``rotate_every_two``: ``torch.stack((-x2, x1), dim=-1)``)::

        torch.stack(ts, d) = torch.cat([t.unsqueeze(d) for t in ts], d)

    an index map (:class:`~nrm.layers.shape.View` and :class:`~nrm.layers.shape.Cat`, or
    :class:`~nrm.layers.constants.CatConstant` beside constants): each neuron keeps its
    relevance. The decomposition's value must equal torch's own ``stack`` (unrecorded) exactly
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused, by name: ``out=``, a new
    first dimension (stacking samples), an empty or non-tensor sequence."""

    function = torch.stack

    @staticmethod
    def _arguments(tensors, dim=0, *, out=None) -> dict:
        return dict(tensors=tensors, dim=dim, out=out)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of torch.stack ({e})"
        if a["out"] is not None:
            return "writes into out="
        ts = a["tensors"]
        if not isinstance(ts, (list, tuple)) or not ts or not all(isinstance(t, torch.Tensor) for t in ts):
            return "stacks something other than a non-empty sequence of tensors"
        if isinstance(a["dim"], bool) or not isinstance(a["dim"], int):
            return f"takes dim={a['dim']!r}; nrm reads an int"
        n = ts[0].dim() + 1
        if not -n <= a["dim"] < n:
            return None  # torch raises its own IndexError for the user
        if ts[0].dim() == 0 or a["dim"] % n == 0:
            return "stacks along a new first dimension (samples side by side); nrm keeps the batch first"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        ts, dim = list(a["tensors"]), a["dim"] % (a["tensors"][0].dim() + 1)
        out = torch.cat([t.unsqueeze(dim) for t in ts], dim)
        with torch._C.DisableTorchFunction():
            theirs = torch.stack(ts, dim)
            same = same_values(out, theirs)
        if not same:
            raise CaptureMismatchError("the decomposition of torch.stack does not reproduce it; nrm cannot read it "
                                       "faithfully")
        return out


def same_values(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Whether a decomposition's value is torch's own bitwise: the same shape, equal everywhere,
    NaN where torch's is NaN."""
    if ours.shape != theirs.shape:
        return False
    nan = torch.isnan(theirs)
    return bool(torch.equal(torch.isnan(ours), nan)) and bool(((ours == theirs) | nan).all())


def within_ulp(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Whether a decomposition's value is torch's own up to rounding: the same shape, non-finite
    in the same places, and elsewhere within 10³ ulp of torch's largest finite value."""
    finite = torch.isfinite(theirs)
    if ours.shape != theirs.shape or not bool(torch.equal(torch.isfinite(ours), finite)):
        return False
    if not bool(finite.any()):
        return True
    bound = 1e3 * torch.finfo(theirs.dtype).eps * max(1.0, float(theirs[finite].abs().max()))
    return float((ours - theirs)[finite].abs().max()) <= bound


class _TwoDerived:
    """A binary operation recorded through its definition only when both operands are computed
    from the input (:meth:`applies`); with a constant operand the kinds that read it directly
    (:class:`~nrm.layers.constants.AddConstant`, :class:`~nrm.layers.scale.ConstantScale`) do."""

    names = ("input", "other")

    def operands(self, args: tuple, kwargs: dict):
        a = args[0] if args else kwargs.get(self.names[0])
        b = args[1] if len(args) > 1 else kwargs.get(self.names[1])
        return a, b

    def applies(self, args: tuple, kwargs: dict, derived) -> bool:
        a, b = self.operands(args, kwargs)
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and derived(a) and derived(b)

    @staticmethod
    def _shapes(a: torch.Tensor, b: torch.Tensor) -> str | None:
        if a.dim() != b.dim() or a.dim() == 0 or a.shape[0] != b.shape[0]:
            return (f"combines tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}; nrm reads operands with the "
                    "same number of dimensions and the same batch size (broadcast over size-1 dimensions only)")
        return None

    @staticmethod
    def widened(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a and b in their promoted dtype, the narrower floating operand widened by ``.to`` (exact;
        recorded as :class:`~nrm.layers.elementwise.Same`): what torch's type promotion does
        inside a ± b, a / b, maximum(a, b) of a float32 and a float64 operand (RWKV's state, kept
        in float32 inside a float64 model)."""
        if a.dtype == b.dtype:
            return a, b
        d = torch.promote_types(a.dtype, b.dtype)
        return (a if a.dtype == d else a.to(d)), (b if b.dtype == d else b.to(d))

    @staticmethod
    def floating(a: torch.Tensor, b: torch.Tensor) -> bool:
        """Whether a and b are floating, of one dtype or of two that :meth:`widened` promotes."""
        return a.dtype == b.dtype and a.is_floating_point() or mixed_precision(a.dtype, b.dtype)

    @staticmethod
    def broadcast(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """``t`` expanded to ``shape`` (recorded as :class:`~nrm.layers.constants.Expand`), or
        ``t`` itself when it has that shape."""
        return t if t.shape == shape else t.expand(shape)


class EnlargedByConstantDecomposition:
    """``x * c``, ``x / c``, ``x + c``, ``x − c`` (either order, ``c − x`` too) of one operand x
    computed from the input and a constant c (a parameter, a buffer, a tensor not computed from
    the input) whose broadcast enlarges x — Mamba's ``A[None, :, None, :] * Δ[:, :, :, None]``, the
    step sizes Δ (B, D, L, 1) spread over the state dimension of A (D, N) — read as what it is::

        x ∘ c = expand(x) ∘ c          (∘ one of ·, /, +, −; expand to the broadcast shape)

    :class:`~nrm.layers.constants.Expand` (an index map: a neuron broadcast n times receives the
    sum of its copies' relevance), then the kind that reads a product or sum with a constant of
    x's own shape (:class:`~nrm.layers.scale.ConstantScale`,
    :class:`~nrm.layers.constants.AddConstant`). The broadcast does the same, so the value is
    torch's own, bitwise (:class:`~nrm.errors.CaptureMismatchError` otherwise). Applies only where
    x keeps its rank and its batch size (a constant that adds dimensions in front of the batch or
    enlarges it stays refused by those kinds, by name)."""

    def __init__(self, function, which: int | None = None):
        self.function, self.which = function, which  # which: the input-derived operand's position, once known

    def _parts(self, args: tuple, kwargs: dict, derived):
        if len(args) != 2 or set(kwargs) - {"alpha"} or not all(isinstance(t, torch.Tensor) for t in args):
            return None
        flags = [bool(derived(t)) for t in args]
        if flags.count(True) != 1:
            return None
        i = flags.index(True)
        x, c = args[i], args[1 - i]
        if c.dim() > x.dim() or x.dim() == 0:
            return None  # a dimension in front of the batch: refused by the constant kinds, by name
        grows = False
        for k, (n, m) in enumerate(zip(reversed(x.shape), reversed(c.shape))):
            if m != 1 and m != n:
                if n != 1 or k == x.dim() - 1:
                    return None  # not broadcastable (torch raises its own error), or the batch enlarged
                grows = True
        return (i, grows) if grows else None

    def applies(self, args: tuple, kwargs: dict, derived):
        """False, or this decomposition for the input-derived operand found (a new object: the
        table's own is shared by every capture)."""
        parts = self._parts(args, kwargs, derived)
        return False if parts is None else EnlargedByConstantDecomposition(self.function, parts[0])

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        with torch._C.DisableTorchFunction():
            theirs = self.function(*args, **kwargs)
        grown = list(args)
        grown[self.which] = args[self.which].expand(theirs.shape)
        ours = self.function(*grown, **kwargs)
        with torch._C.DisableTorchFunction():
            same = same_values(ours, theirs)
        if not same:
            raise CaptureMismatchError(f"{getattr(self.function, '__name__', 'the operation')} with a constant read as "
                                       "the input-derived operand expanded first does not reproduce it bitwise; nrm "
                                       "cannot read it faithfully")
        return ours


class _FirstThatApplies:
    """One function, several readings by what its operands are: the first decomposition whose
    :meth:`applies` holds (a decomposition of two input-derived operands, then one with a
    constant that enlarges the input-derived one). :meth:`applies` returns that decomposition,
    whose own ``refusal`` the capture then asks."""

    def __init__(self, *options):
        self.options = options

    def applies(self, args: tuple, kwargs: dict, derived):
        for option in self.options:
            got = option.applies(args, kwargs, derived)
            if isinstance(got, str):
                return got
            if got:
                return option if got is True else got
        return False


class SumDecomposition(_TwoDerived):
    """``a − b`` (``torch.sub``, ``Tensor.sub``, ``-``) and ``a + b`` of operands of different
    shapes, both computed from the input (the centring x − mean(x) of a norm written by hand),
    read as what they are::

        a − b = a + (−b)            a ± b = expand(a) ± expand(b)

    :class:`~nrm.layers.constants.Negate` (the diagonal map −1), :class:`~nrm.layers.constants.Expand`
    (an index map: a neuron broadcast n times receives the sum of its copies' relevance) and the
    sum of branches :class:`~nrm.layers.linear.Add`, whose rule splits the sum. IEEE subtraction
    is addition of the negation, so the value is torch's own, bitwise
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: ``alpha=``, ``out=``, the
    in-place forms, operands of different ranks or batch sizes."""

    def __init__(self, function, subtract: bool):
        self.function, self.subtract = function, subtract

    def applies(self, args, kwargs, derived) -> bool:
        if not super().applies(args, kwargs, derived):
            return False
        a, b = self.operands(args, kwargs)
        return self.subtract or a.shape != b.shape  # a sum of one shape is Add's

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        if "alpha" in kwargs or len(args) > 2 or "out" in kwargs:
            return "scales the second operand (alpha=) or writes into out=; nrm reads a ± b of tensors"
        a, b = self.operands(args, kwargs)
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return None
        if a.dtype != b.dtype and not mixed_precision(a.dtype, b.dtype):
            return f"combines {a.dtype} and {b.dtype}; nrm reads operands of one dtype, or two floating ones (widened)"
        return self._shapes(a, b)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a0, b0 = self.operands(args, kwargs)
        a, b = self.widened(a0, b0)
        shape = torch.broadcast_shapes(a.shape, b.shape)
        out = self.broadcast(a, shape) + self.broadcast(torch.neg(b) if self.subtract else b, shape)
        with torch._C.DisableTorchFunction():
            theirs = a0 - b0 if self.subtract else a0 + b0
            same = same_values(out, theirs)
        if not same:
            raise CaptureMismatchError(f"the decomposition of a {'−' if self.subtract else '+'} b does not reproduce "
                                       "it; nrm cannot read it faithfully")
        return out


class DivisionDecomposition(_TwoDerived):
    """``a / b`` (``torch.div``, ``Tensor.div``, ``/``) of two tensors computed from the input,
    read as what it is, a product with the reciprocal of the divisor::

        a / b = a · (1/b)

    :class:`~nrm.layers.constants.Reciprocal` and the product kind
    :class:`~nrm.layers.products.Multiply`. A divisor computed from held normalizers alone
    (√(s + ε) of a LayerNorm written by hand) is held at its forward value, its reciprocal too,
    so the numerator keeps all the relevance (the identity on 1/σ, AttnLRP Prop. 3.4); any other
    divisor is a factor like any other, and the product's ``split`` decides (under the default
    ``"signal"``, ambiguous, with the error that says how to choose). ``a · (1/b)`` rounds twice
    where ``a / b`` rounds once: the decomposition is compared with torch's division within 10³
    ulp of its largest value (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused:
    ``rounding_mode=``, ``out=``, the in-place forms, operands of different ranks or batch sizes."""

    def __init__(self, function):
        self.function = function

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        if kwargs.get("rounding_mode") is not None or len(args) > 2 or "out" in kwargs:
            return "divides with rounding_mode= or into out=; nrm reads a / b"
        a, b = self.operands(args, kwargs)
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return None
        if not self.floating(a, b):
            return f"divides {a.dtype} by {b.dtype}; nrm reads floating operands (of one dtype, or two: widened)"
        return self._shapes(a, b)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a0, b0 = self.operands(args, kwargs)
        a, b = self.widened(a0, b0)
        out = a * torch.reciprocal(b)
        with torch._C.DisableTorchFunction():
            same = within_ulp(out, a0 / b0)
        if not same:
            raise CaptureMismatchError("the decomposition of a / b as a · (1/b) does not reproduce it within 10³ ulp; "
                                       "nrm cannot read it faithfully")
        return out


class InPlaceDivisionDecomposition(DivisionDecomposition):
    """``a /= b`` (``Tensor.div_``, ``__itruediv__``) of two tensors computed from the input —
    ConViT's ``attn /= attn.sum(dim=-1).unsqueeze(-1)`` — read as the out-of-place division is,
    written into a::

        a ← a · (1/b)      (Reciprocal, then Multiply in place: Tensor.mul_)

    compared with torch's ``a / b`` within 10³ ulp of its largest value
    (:class:`~nrm.errors.CaptureMismatchError` otherwise); the model goes on with that value,
    in a. Refused as the out-of-place form (a divisor whose broadcast would enlarge a is torch's
    own error in place)."""

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a, b = self.operands(args, kwargs)
        with torch._C.DisableTorchFunction():
            theirs = a.clone().div_(b)  # in a's dtype, as torch divides in place
        a.mul_(torch.reciprocal(b))
        with torch._C.DisableTorchFunction():
            same = within_ulp(a, theirs)
        if not same:
            raise CaptureMismatchError("the decomposition of a /= b as a *= 1/b does not reproduce a / b within 10³ "
                                       "ulp; nrm cannot read it faithfully")
        return a


class VectorNormDecomposition:
    """The Euclidean norm ``torch.linalg.vector_norm(x, 2, dim, keepdim)`` / ``torch.norm(x, 2,
    dim, keepdim)`` along per-sample dimensions (ConvNeXt V2's global response normalization),
    read as what it is::

        ‖x‖₂ = √(Σ_dim x²)

    :class:`~nrm.layers.constants.Power`, :class:`~nrm.layers.linear.Reduce` and
    :class:`~nrm.layers.constants.Sqrt`, a normalizer held at its forward value: as a factor (or a
    divisor) it takes nothing, so the norm's path receives no relevance. Compared with torch's
    own norm within 10³ ulp of its largest value (:class:`~nrm.errors.CaptureMismatchError`
    otherwise). Refused: another p, no ``dim`` (the whole batch), the batch dimension, ``dtype=``
    or ``out=``."""

    def __init__(self, function):
        self.function = function

    @staticmethod
    def _arguments(x, ord=2, dim=None, keepdim=False, *, dtype=None, out=None, p=None) -> dict:  # noqa: A002
        return dict(x=x, p=ord if p is None else p, dim=dim, keepdim=keepdim, dtype=dtype, out=out)

    def _read(self, args: tuple, kwargs: dict) -> dict:
        if self.function in (torch.norm, torch.Tensor.norm):  # torch.norm(input, p='fro', dim, keepdim, out, dtype)
            names = ("input", "p", "dim", "keepdim") + (("out", "dtype") if self.function is torch.norm else ("dtype",))
            given = dict(zip(names, args), **kwargs)
            p = given.get("p", "fro")
            return dict(x=given.get("input"), p=2 if p == "fro" and given.get("dim") is not None else p,
                        dim=given.get("dim"), keepdim=given.get("keepdim", False), dtype=given.get("dtype"),
                        out=given.get("out"))
        return self._arguments(*args, **kwargs)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._read(args, kwargs)
        except TypeError as e:
            return f"its arguments are not those of a vector norm ({e})"
        x = a["x"]
        if a["out"] is not None or a["dtype"] is not None:
            return "writes into out= or casts (dtype=)"
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            return "takes the norm of a tensor without a batch dimension"
        if isinstance(a["p"], bool) or a["p"] != 2:
            return f"takes the {a['p']}-norm; nrm reads the Euclidean norm (p=2)"
        dims = a["dim"]
        if dims is None:
            return "takes the norm of the whole tensor (no dim=), which mixes the samples"
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if not dims or any(not isinstance(d, int) or d % x.dim() == 0 for d in dims):
            return "takes the norm along the batch dimension; nrm keeps every sample apart"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._read(args, kwargs)
        x, dims = a["x"], a["dim"]
        dims = [dims] if isinstance(dims, int) else list(dims)
        y = torch.sqrt(x.pow(2).sum(dims, keepdim=bool(a["keepdim"])))
        with torch._C.DisableTorchFunction():
            theirs = torch.linalg.vector_norm(x, 2, dims, bool(a["keepdim"]))
            bound = 1e3 * torch.finfo(theirs.dtype).eps * max(1.0, float(theirs.abs().max()))
            worst = float((y - theirs).abs().max()) if theirs.numel() else 0.0
        if not worst <= bound:
            raise CaptureMismatchError(f"the decomposition of the Euclidean norm does not reproduce it (max deviation "
                                       f"{worst:.3e}, allowed {bound:.3e}); nrm cannot read it faithfully")
        return y


class RunningInstanceNormDecomposition:
    """``F.instance_norm`` with running statistics (``nn.InstanceNorm*d(track_running_stats=True)``
    in eval mode), read as what it computes then, the batch norm of the same statistics::

        F.instance_norm(x, μ, σ², γ, β, use_input_stats=False, ε) = F.batch_norm(x, μ, σ², γ, β, False, 0, ε)

    a per-channel affine map: folded into the convolution before it
    (:class:`~nrm.layers.norm.BatchNormFold`) or a diagonal layer of its own
    (:class:`~nrm.layers.norm.BatchNormAffine`). The value must be torch's own, bitwise
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). With instance statistics
    (``use_input_stats=True``, the default) :class:`~nrm.layers.norm.InstanceNormCentring` reads
    the call as it is."""

    function = F.instance_norm
    names = ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps")

    def _arguments(self, args: tuple, kwargs: dict) -> dict:
        given = dict(zip(self.names, args), **kwargs)
        return {"use_input_stats": True, "momentum": 0.1, "eps": 1e-5, "weight": None, "bias": None,
                "running_mean": None, "running_var": None, **given}

    def applies(self, args: tuple, kwargs: dict, derived) -> bool:
        return not self._arguments(args, kwargs)["use_input_stats"]

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        a = self._arguments(args, kwargs)
        if a["running_mean"] is None or a["running_var"] is None:
            return "normalizes without instance statistics and without running statistics"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(args, kwargs)
        out = F.batch_norm(a["input"], a["running_mean"], a["running_var"], a["weight"], a["bias"], False, 0.0,
                           a["eps"])
        with torch._C.DisableTorchFunction():
            theirs = F.instance_norm(a["input"], a["running_mean"], a["running_var"], a["weight"], a["bias"], False,
                                     0.0, a["eps"])
            same = same_values(out, theirs)
        if not same:
            raise CaptureMismatchError("the instance norm with running statistics does not equal their batch norm; "
                                       "nrm cannot read it faithfully")
        return out


class _Patches:
    """The arguments of ``F.unfold`` and ``F.fold`` (:attr:`names`), with torch's defaults, and
    the refusal of an input that is not batched (``dims`` dimensions, ``layout``)."""

    names: tuple = ()
    verb, dims, layout = "", 0, ""

    def _arguments(self, args: tuple, kwargs: dict) -> dict:
        return {"dilation": 1, "padding": 0, "stride": 1, **dict(zip(self.names, args)), **kwargs}

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        x = self._arguments(args, kwargs).get("input")
        if not isinstance(x, torch.Tensor) or x.dim() != self.dims:
            return f"{self.verb} a tensor that is not {self.layout}"
        return None


class UnfoldDecomposition(_Patches):
    """``F.unfold`` with ``padding`` > 0, read as what it is, the zero padding and then the
    patches::

        F.unfold(x, k, d, p, s) = F.unfold(F.pad(x, (p_w, p_w, p_h, p_h)), k, d, 0, s)

    :class:`~nrm.layers.constants.Pad` (the zeros are constants: their share goes to ⊥) and the
    index map :class:`~nrm.layers.shape.Unfold`. The value must be torch's own, bitwise
    (:class:`~nrm.errors.CaptureMismatchError` otherwise)."""

    function = F.unfold
    names = ("input", "kernel_size", "dilation", "padding", "stride")
    verb, dims, layout = "unfolds", 4, "(B, C, H, W)"

    def applies(self, args: tuple, kwargs: dict, derived) -> bool:
        return any(pair(self._arguments(args, kwargs)["padding"]))

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(args, kwargs)
        p = pair(a["padding"])
        out = F.unfold(F.pad(a["input"], (int(p[1]), int(p[1]), int(p[0]), int(p[0]))), a["kernel_size"],
                       a["dilation"], 0, a["stride"])
        with torch._C.DisableTorchFunction():
            theirs = F.unfold(a["input"], a["kernel_size"], a["dilation"], a["padding"], a["stride"])
            same = same_values(out, theirs)
        if not same:
            raise CaptureMismatchError("the decomposition of F.unfold with padding does not reproduce it; nrm cannot "
                                       "read it faithfully")
        return out


class VarianceDecomposition:
    """``torch.var`` / ``torch.std`` (``Tensor.var``, ``Tensor.std``) along per-sample dimensions
    (the Annotated Transformer's LayerNorm, ``(x − mean) / (std + ε)``), read as what they are::

        var(x) = Σ_dim (x − mean_dim x)² / (n − correction),    std(x) = √var(x)

    (``correction`` 1 by default, 0 for ``unbiased=False``): :class:`~nrm.layers.linear.Reduce`,
    a − b (:class:`SumDecomposition`), :class:`~nrm.layers.constants.Power`, a
    :class:`~nrm.layers.scale.ConstantScale` and, for std, :class:`~nrm.layers.constants.Sqrt`,
    held at its forward value: as a divisor it takes nothing, so the centred numerator keeps the
    relevance. Compared with torch's own within 10³ ulp of its largest value
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: no ``dim`` or the batch
    dimension (the samples would mix), n − correction ≤ 0, ``out=``."""

    def __init__(self, function, root: bool):
        self.function, self.root = function, root

    @staticmethod
    def _read(args: tuple, kwargs: dict) -> dict:
        x = args[0] if args else kwargs.get("input")
        rest = list(args[1:])
        dim, correction, keepdim = kwargs.get("dim"), kwargs.get("correction"), kwargs.get("keepdim", False)
        unbiased = kwargs.get("unbiased")
        if rest and isinstance(rest[0], bool):  # var(x, unbiased)
            unbiased = rest.pop(0)
        elif rest:  # var(x, dim, unbiased, keepdim)
            dim = rest.pop(0)
            if rest:
                unbiased = rest.pop(0)
            if rest:
                keepdim = rest.pop(0)
        if correction is None:
            correction = 1 if unbiased is None or unbiased else 0
        return dict(x=x, dim=dim, correction=correction, keepdim=keepdim, out=kwargs.get("out"))

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        a = self._read(args, kwargs)
        x, dims = a["x"], a["dim"]
        if a["out"] is not None:
            return "writes into out="
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            return "takes the variance of a tensor without a batch dimension"
        if dims is None:
            return "takes the variance of the whole tensor (no dim=), which mixes the samples"
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if not dims or any(not isinstance(d, int) or d % x.dim() == 0 for d in dims):
            return "takes the variance along the batch dimension; nrm keeps every sample apart"
        if isinstance(a["correction"], bool) or not isinstance(a["correction"], (int, float)):
            return f"takes correction={a['correction']!r}; nrm reads a number"
        n = math.prod(x.shape[d] for d in dims)
        if n - a["correction"] <= 0:
            return f"divides by n − correction = {n - a['correction']} ≤ 0"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._read(args, kwargs)
        x, dims, keepdim = a["x"], a["dim"], bool(a["keepdim"])
        dims = [dims] if isinstance(dims, int) else list(dims)
        n = math.prod(x.shape[d] for d in dims)
        centred = x - x.mean(dims, keepdim=True)
        y = centred.pow(2).sum(dims, keepdim=keepdim) / float(n - a["correction"])
        if self.root:
            y = torch.sqrt(y)
        with torch._C.DisableTorchFunction():
            theirs = (torch.std if self.root else torch.var)(x, dims, correction=a["correction"], keepdim=keepdim)
            bound = 1e3 * torch.finfo(theirs.dtype).eps * max(1.0, float(theirs.abs().max()))
            worst = float((y - theirs).abs().max()) if theirs.numel() else 0.0
        if not worst <= bound:
            raise CaptureMismatchError(f"the decomposition of {'std' if self.root else 'var'} does not reproduce it "
                                       f"(max deviation {worst:.3e}, allowed {bound:.3e}); nrm cannot read it "
                                       "faithfully")
        return y


class MaxOverDimsDecomposition:
    """A maximum over per-sample dimensions — ``torch.amax(x, dim)``, ``torch.max(x, dim)`` (its
    values; the indices a constant), ``F.adaptive_max_pool1d/2d`` to sizes that divide the input
    (PointNet's and DGCNN's global max pooling, max-over-time pooling of text CNNs) — read as
    what it is, a max pooling over the flattened reduced dimensions::

        amax_D(x) = reshape(max_pool1d(reshape(permute(x, kept + D), (B, M, n)), n))

    :class:`~nrm.layers.shape.Permute`, :class:`~nrm.layers.shape.View` and
    :class:`~nrm.layers.pooling.MaxPool`: the first maximal element (row-major over D) takes its
    neuron's relevance. An adaptive max pool of an evenly divided input is ``F.max_poolNd(x, k, k)``,
    k = in / out. The value must be torch's own, bitwise (:class:`~nrm.errors.CaptureMismatchError`
    otherwise). Refused: no ``dim`` (the whole tensor), the batch dimension, an adaptive pool that
    does not divide its input, ``return_indices=True``. ``torch.max(a, b)`` of two tensors (the
    elementwise maximum) is not this (:class:`ElementwiseMaxDecomposition`). The minimum over
    per-sample dimensions (``torch.amin``, ``torch.min(x, dim)``) is the same pooling of −x, negated:
    amin_D(x) = −amax_D(−x), the first minimal element taking the relevance."""

    def __init__(self, function, minimum: bool = False):
        self.function, self.minimum = function, minimum  # minimum: amin_D(x) = −amax_D(−x), the first minimum wins
        self.adaptive = function in (F.adaptive_max_pool1d, F.adaptive_max_pool2d)

    @property
    def _word(self) -> str:
        return "minimum" if self.minimum else "maximum"

    def _read(self, args: tuple, kwargs: dict) -> dict:
        if self.adaptive:
            names = ("input", "output_size", "return_indices")
            return {"return_indices": False, **dict(zip(names, args)), **kwargs}
        names = ("input", "dim", "keepdim")
        a = {"keepdim": False, **dict(zip(names, args)), **kwargs}
        a.setdefault("dim", None)
        return a

    def applies(self, args: tuple, kwargs: dict, derived) -> bool:
        a = self._read(args, kwargs)
        return not isinstance(a.get("dim"), torch.Tensor) and not isinstance(kwargs.get("other"), torch.Tensor)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        a = self._read(args, kwargs)
        x = a.get("input")
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            return f"takes a {self._word} of a tensor without a batch dimension"
        if self.adaptive:
            if a["return_indices"]:
                return "returns the indices as well (return_indices=True); use return_indices=False"
            n = 1 if self.function is F.adaptive_max_pool1d else 2
            if x.dim() != n + 2:
                return f"expects (batch, channels, *{n} spatial), got {tuple(x.shape)}"
            out = pair(a["output_size"], n)
            if any(o is None or o <= 0 or i % o for i, o in zip(x.shape[2:], out)):
                return (f"pools {tuple(x.shape[2:])} to {out}, windows of unequal sizes; nrm reads an adaptive max "
                        "pool to sizes that divide the input")
            return None
        dims = a["dim"]
        if dims is None or (isinstance(dims, (tuple, list)) and not dims):
            return f"takes the {self._word} of the whole tensor (no dim=), which mixes the samples"
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if any(not isinstance(d, int) or d % x.dim() == 0 for d in dims):
            return f"takes the {self._word} along the batch dimension; nrm keeps every sample apart"
        return None

    def __call__(self, *args, **kwargs):
        from ..errors import CaptureMismatchError

        a = self._read(args, kwargs)
        x = a["input"]
        if self.adaptive:
            n = 1 if self.function is F.adaptive_max_pool1d else 2
            out = pair(a["output_size"], n)
            k = tuple(i // o for i, o in zip(x.shape[2:], out))
            y = (F.max_pool1d if n == 1 else F.max_pool2d)(x, k, k)
            with torch._C.DisableTorchFunction():
                theirs = self.function(x, a["output_size"])
        else:
            nd = x.dim()
            dims = sorted({d % nd for d in ((a["dim"],) if isinstance(a["dim"], int) else a["dim"])})
            kept = [d for d in range(1, nd) if d not in dims]
            order = [0] + kept + dims
            source = -x if self.minimum else x
            h = source.permute(order) if order != list(range(nd)) else source
            n = math.prod(x.shape[d] for d in dims)
            h = F.max_pool1d(h.reshape(x.shape[0], -1, n), n)
            shape = [x.shape[d] if d not in dims else 1 for d in range(nd)] if a["keepdim"] else \
                [x.shape[0]] + [x.shape[d] for d in kept]
            y = -h.reshape(shape) if self.minimum else h.reshape(shape)
            with torch._C.DisableTorchFunction():
                theirs = (torch.amin if self.minimum else torch.amax)(x, dims, keepdim=bool(a["keepdim"]))
        with torch._C.DisableTorchFunction():
            same = same_values(y, theirs)
        if not same:
            raise CaptureMismatchError("the maximum read as a max pooling does not reproduce it; nrm cannot read it "
                                       "faithfully")
        if self.function in (torch.max, torch.Tensor.max, torch.min, torch.Tensor.min):
            with torch._C.DisableTorchFunction():  # the indices: a constant for whatever reads them
                pick = torch.min if self.minimum else torch.max
                indices = pick(x, a["dim"], keepdim=bool(a["keepdim"])).indices
            return (torch.return_types.min if self.minimum else torch.return_types.max)((y, indices))
        return y


class GLUDecomposition:
    """``F.glu(x, dim)`` (``nn.GLU``: the gated linear unit of Dauphin et al., 2017), read as what
    it is::

        a, b = x.chunk(2, dim);    glu(x) = a ⊙ σ(b)

    :class:`~nrm.layers.shape.Chunk`, :class:`~nrm.layers.activations.Sigmoid` and the product
    kind :class:`~nrm.layers.products.Multiply`, whose default split gives the gate σ(b) nothing
    (the signal a takes all, as in a squeeze-excitation; ``split=`` chooses otherwise). Compared
    with torch's own glu within 10³ ulp of its largest value
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: the gate along the batch."""

    @staticmethod
    def _arguments(input, dim=-1) -> dict:  # noqa: A002
        return dict(input=input, dim=dim)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of F.glu ({e})"
        x, d = a["input"], a["dim"]
        if not isinstance(x, torch.Tensor) or isinstance(d, bool) or not isinstance(d, int) or x.dim() < 2:
            return "takes an unbatched input or a dim that is not an int; nrm reads F.glu(x, dim) of a batch"
        if d in (0, -x.dim()):
            return "splits the batch dimension (dim=0); nrm reads a gate along a per-sample dimension"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        signal, gate = a["input"].chunk(2, a["dim"])
        out = signal * torch.sigmoid(gate)
        with torch._C.DisableTorchFunction():
            same = within_ulp(out, F.glu(a["input"], a["dim"]))
        if not same:
            raise CaptureMismatchError("the decomposition of glu as a ⊙ σ(b) does not reproduce it within 10³ ulp; "
                                       "nrm cannot read it faithfully")
        return out


class RMSNormDecomposition:
    """``F.rms_norm(x, normalized_shape, weight, eps)`` (``nn.RMSNorm``), read as the formula
    transformers' Llama writes by hand (docs/attention.md, RMSNorm)::

        y = x · rsqrt(mean(x², over the normalized dimensions) + ε) · w      (ε: eps, else finfo.eps)

    ``Power``, ``Reduce``, ``AddConstant``, ``Rsqrt`` (held: the identity on 1/σ, AttnLRP Prop.
    3.4), ``Multiply`` and ``ConstantScale`` — the diagonal map x_k ↦ w_k x_k / σ with σ at its
    forward value. Compared with torch's own rms_norm within 10³ ulp of its largest value
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: normalizing the batch dimension."""

    @staticmethod
    def _arguments(input, normalized_shape, weight=None, eps=None) -> dict:  # noqa: A002
        return dict(input=input, normalized_shape=normalized_shape, weight=weight, eps=eps)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of F.rms_norm ({e})"
        x, shape = a["input"], a["normalized_shape"]
        n = 1 if isinstance(shape, int) else len(shape)
        if not isinstance(x, torch.Tensor) or n >= x.dim():
            return "normalizes over the batch dimension (or an unbatched input); nrm keeps every sample apart"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        x, shape = a["input"], a["normalized_shape"]
        n = 1 if isinstance(shape, int) else len(shape)
        eps = torch.finfo(x.dtype).eps if a["eps"] is None else a["eps"]
        y = x * torch.rsqrt(x.pow(2).mean(tuple(range(-n, 0)), keepdim=True) + eps)
        if a["weight"] is not None:
            y = y * a["weight"]
        with torch._C.DisableTorchFunction():
            same = within_ulp(y, F.rms_norm(x, shape, a["weight"], a["eps"]))
        if not same:
            raise CaptureMismatchError("the decomposition of rms_norm as x · rsqrt(mean(x²) + ε) · w does not "
                                       "reproduce it within 10³ ulp; nrm cannot read it faithfully")
        return y


class SoftminDecomposition:
    """``F.softmin(x, dim)`` (``nn.Softmin``), read as what it is: softmax(−x, dim) —
    :class:`~nrm.layers.constants.Negate`, then :class:`~nrm.layers.attention.Softmax` (whose
    kernel and refusals apply). Compared with torch's own softmin bitwise
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: ``dtype=``."""

    @staticmethod
    def _arguments(input, dim=None, _stacklevel=3, dtype=None) -> dict:  # noqa: A002
        return dict(input=input, dim=dim, dtype=dtype)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of F.softmin ({e})"
        if a["dtype"] is not None:
            return "changes the dtype (dtype=…); cast before the softmin"
        if isinstance(a["dim"], bool) or not isinstance(a["dim"], int):
            return ("takes the softmin without an explicit dim; nrm reads a softmin along one per-sample "
                    "dimension (dim=-1)")
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        out = torch.softmax(-a["input"], a["dim"])
        with torch._C.DisableTorchFunction():
            same = same_values(out, F.softmin(a["input"], a["dim"]))
        if not same:
            raise CaptureMismatchError("the decomposition of softmin as softmax(−x) does not reproduce it bitwise; "
                                       "nrm cannot read it faithfully")
        return out


class TriangleDecomposition:
    """``torch.tril(x, k)`` / ``torch.triu(x, k)`` (and the ``Tensor`` methods) of an
    input-derived x with at least two per-sample dimensions, read as what they compute: the
    entries outside the triangle of the last two dimensions replaced by 0,
    ``x.masked_fill(~keep, 0)`` with keep the triangle of ones —
    :class:`~nrm.layers.constants.Select`, a diagonal map whose dropped neurons have no parent.
    Compared with torch's own bitwise. Refused: ``out=``, a triangle over the batch dimension."""

    def __init__(self, func, upper: bool):
        self.func, self.upper = func, upper

    @staticmethod
    def _arguments(input, diagonal=0, *, out=None) -> dict:  # noqa: A002
        return dict(input=input, diagonal=diagonal, out=out)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of torch.tril / torch.triu ({e})"
        if a["out"] is not None:
            return "writes into out="
        if not isinstance(a["input"], torch.Tensor) or a["input"].dim() < 3:
            return ("takes the triangle of a tensor whose last two dimensions include the batch; nrm reads it over "
                    "two per-sample dimensions (B, …, n, m)")
        if isinstance(a["diagonal"], bool) or not isinstance(a["diagonal"], int):
            return "takes a diagonal that is not an int"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        x, k = a["input"], a["diagonal"]
        with torch._C.DisableTorchFunction():
            ones = torch.ones(x.shape[-2:], dtype=torch.bool, device=x.device)
            keep = torch.triu(ones, k) if self.upper else torch.tril(ones, k)
        out = x.masked_fill(~keep, 0)
        with torch._C.DisableTorchFunction():
            same = same_values(out, self.func(x, k))
        if not same:
            raise CaptureMismatchError(f"the decomposition of {'triu' if self.upper else 'tril'} as a masked fill "
                                       "with 0 does not reproduce it bitwise; nrm cannot read it faithfully")
        return out


class LPPoolDecomposition:
    """``F.lp_pool1d`` / ``2d`` / ``3d`` (``nn.LPPool1d`` / ``2d`` / ``3d``), the power-average
    pooling, read as what torch's definition computes::

        s = avg_pool(x^p, k, stride),   y = (sign(s) · relu(|s|) · |k|)^(1/p)
        y = max_pool(|x|, k, stride)            (p = +∞)
        y = −max_pool(−|x|, k, stride)          (p = −∞)

    :class:`~nrm.layers.constants.Power` (x^p: the identity rule), :class:`~nrm.layers.linear.AvgPool`
    (the rule splits the window by the powers x_i^p), the product sign(s) · relu(|s|) — a
    function of s alone, read as an activation of s (:mod:`nrm.graph`, a product's own
    signal) —, :class:`~nrm.layers.scale.ConstantScale` (the window's size |k|) and
    :class:`~nrm.layers.constants.Power` (1/p); for p = ±∞ :class:`~nrm.layers.activations.Abs`
    and a max pooling. Compared with torch's own bitwise (the same operations in the same
    order). Refused: a ``norm_type`` that is not a number or is 0."""

    def __init__(self, func, dims: int):
        self.func, self.dims = func, dims
        self.avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1]
        self.max = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]

    @staticmethod
    def _arguments(input, norm_type, kernel_size, stride=None, ceil_mode=False) -> dict:  # noqa: A002
        return dict(input=input, norm_type=norm_type, kernel_size=kernel_size, stride=stride, ceil_mode=ceil_mode)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of F.lp_pool{self.dims}d ({e})"
        p = a["norm_type"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or p == 0 or math.isnan(p):
            return f"takes norm_type={p!r}; nrm reads a number p ≠ 0 (±inf: a max pooling of |x|)"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        x, p, k, stride, ceil = a["input"], a["norm_type"], a["kernel_size"], a["stride"], a["ceil_mode"]
        if p == math.inf:
            out = self.max(x.abs(), k, stride, 0, 1, ceil)
        elif p == -math.inf:
            out = -self.max(-x.abs(), k, stride, 0, 1, ceil)
        else:
            if stride is not None:
                s = self.avg(x.pow(p), k, stride, 0, ceil)
            else:
                s = self.avg(x.pow(p), k, padding=0, ceil_mode=ceil)
            size = math.prod(k) if isinstance(k, (tuple, list)) else k ** self.dims
            out = (torch.sign(s) * F.relu(torch.abs(s))).mul(size).pow(1.0 / p)
        with torch._C.DisableTorchFunction():
            same = same_values(out, self.func(*args, **kwargs))
        if not same:
            raise CaptureMismatchError(f"the decomposition of lp_pool{self.dims}d as a power, an average pooling and "
                                       "a root does not reproduce it bitwise; nrm cannot read it faithfully")
        return out


def _dims(dim, ndim: int) -> tuple[int, ...] | None:
    """``dim`` (an int or a sequence of ints) as sorted non-negative dimensions, or None when it
    is not one or is out of range."""
    dims = (dim,) if isinstance(dim, int) and not isinstance(dim, bool) else dim
    if not isinstance(dims, (tuple, list)) or not dims or \
            not all(isinstance(d, int) and not isinstance(d, bool) and -ndim <= d < ndim for d in dims):
        return None
    return tuple(sorted({d % ndim for d in dims}))


class CumsumDecomposition:
    """``torch.cumsum(x, dim)`` (and ``Tensor.cumsum``) along a per-sample dimension, read as
    what it is, a linear map with a constant triangular matrix of ones::

        y_k = Σ_{j ≤ k} x_j = (x U)_k,      U_jk = [j ≤ k]

    :class:`~nrm.layers.linear.ConstantMatMul` on x with ``dim`` moved last (the move and its
    inverse are index maps, :class:`~nrm.layers.shape.Copies`): each y_k takes its relevance from
    the x_j before it, as a rule splits a dense layer's. Compared with torch's own within 10³ ulp
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: the batch dimension,
    ``dtype=``, ``out=``, the in-place form."""

    def __init__(self, func):
        self.func = func

    @staticmethod
    def _arguments(input, dim, *, dtype=None, out=None) -> dict:  # noqa: A002
        return dict(input=input, dim=dim, dtype=dtype, out=out)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of torch.cumsum ({e})"
        x = a["input"]
        if a["out"] is not None or a["dtype"] is not None:
            return "writes into out= or casts (dtype=); cast before the cumulative sum"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return "sums a tensor that is not floating point"
        dims = _dims(a["dim"], x.dim())
        if dims is None or len(dims) != 1:
            return f"sums along dim={a['dim']!r}; nrm reads one int within the tensor"
        if dims == (0,):
            return "sums along the batch dimension, which mixes the samples; nrm reads it along a per-sample dimension"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        x = a["input"]
        (d,) = _dims(a["dim"], x.dim())
        n = x.shape[d]
        with torch._C.DisableTorchFunction():
            upper = torch.ones((n, n), dtype=x.dtype, device=x.device).triu()
        last = d == x.dim() - 1
        moved = x if last else x.movedim(d, -1)
        out = torch.matmul(moved, upper)
        out = out if last else out.movedim(-1, d)
        with torch._C.DisableTorchFunction():
            same = within_ulp(out, self.func(*args, **kwargs))
        if not same:
            raise CaptureMismatchError("the decomposition of cumsum as a product with a triangular matrix of ones does "
                                       "not reproduce it within 10³ ulp; nrm cannot read it faithfully")
        return out


class LerpDecomposition:
    """``torch.lerp(a, b, w)`` (and ``Tensor.lerp``) with a constant weight w (a number or a
    tensor not computed from the input), read as what it is, a weighted sum::

        lerp(a, b, w) = a + w (b − a) = (1 − w) a + w b

    :class:`~nrm.layers.scale.ConstantScale` on each input-derived operand, then the sum of
    branches :class:`~nrm.layers.linear.Add` (both computed from the input) or
    :class:`~nrm.layers.constants.AddConstant` (a constant end point: its share to ⊥). Compared
    with torch's own within 10³ ulp (torch switches formula at |w| = ½;
    :class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: a weight computed from the
    input (a product of activations: write it as ``a + w * (b − a)`` and choose the product's
    split), ``out=``, the in-place form."""

    def __init__(self, func):
        self.func = func

    @staticmethod
    def _arguments(input, end, weight, *, out=None) -> dict:  # noqa: A002
        return dict(input=input, end=end, weight=weight, out=out)

    def applies(self, args: tuple, kwargs: dict, derived) -> bool | str:
        try:
            w = self._arguments(*args, **kwargs)["weight"]
        except TypeError:
            return True  # refusal() names the arguments
        if isinstance(w, torch.Tensor) and derived(w):
            return ("weighs by a tensor computed from the input, a product of activations; write it as "
                    "a + w * (b − a) and choose the product's split")
        return True

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of torch.lerp ({e})"
        if a["out"] is not None:
            return "writes into out="
        w = a["weight"]
        if isinstance(w, bool) or not isinstance(w, (int, float, torch.Tensor)):
            return f"weighs by {w!r}; nrm reads a number or a constant tensor"
        if isinstance(w, torch.Tensor) and not w.is_floating_point():
            return f"weighs by a {w.dtype} tensor; nrm reads a floating one"
        ends = [t for t in (a["input"], a["end"]) if isinstance(t, torch.Tensor)]
        if len(ends) != 2 or ends[0].dtype != ends[1].dtype or not ends[0].is_floating_point():
            return "interpolates between tensors of different dtypes or that are not floating point"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        w = a["weight"]
        with torch._C.DisableTorchFunction():
            rest = 1.0 - w
        out = a["input"] * rest + a["end"] * w
        with torch._C.DisableTorchFunction():
            same = within_ulp(out, self.func(*args, **kwargs))
        if not same:
            raise CaptureMismatchError("the decomposition of lerp as (1 − w) a + w b does not reproduce it within "
                                       "10³ ulp; nrm cannot read it faithfully")
        return out


class TileDecomposition:
    """``torch.tile(x, dims)`` (and ``Tensor.tile``), read as torch defines it: ``Tensor.repeat``
    with ``dims`` padded in front with ones to x's dimensions::

        tile(x, dims) = x.repeat((1,) * (x.dim() − len(dims)) + dims)

    (:class:`~nrm.layers.shape.Repeat`, an index map: relevance moves with the values; a tile
    that repeats the batch is refused there). The result must equal torch's own bitwise
    (:class:`~nrm.errors.CaptureMismatchError` otherwise)."""

    def __init__(self, func):
        self.func = func

    def _arguments(self, args: tuple, kwargs: dict) -> tuple:
        x, rest = args[0], args[1:]
        if "dims" in kwargs:
            dims = kwargs["dims"]
        elif len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)):
            dims = rest[0]
        else:
            dims = rest
        return x, tuple(dims)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            _, dims = self._arguments(args, kwargs)
        except (IndexError, TypeError) as e:
            return f"its arguments are not those of torch.tile ({e})"
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
            return f"tiles by {dims!r}; nrm reads whole numbers"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        x, dims = self._arguments(args, kwargs)
        out = x.repeat((1,) * (x.dim() - len(dims)) + dims)
        with torch._C.DisableTorchFunction():
            same = same_values(out, self.func(*args, **kwargs))
        if not same:
            raise CaptureMismatchError("torch.tile read as Tensor.repeat with its dims padded in front does not "
                                       "reproduce it bitwise; nrm cannot read it faithfully")
        return out


class WhereDecomposition:
    """``torch.where(m, a, b)`` and ``a.where(m, b)`` with **both** values computed from the input
    and a constant boolean condition m (Funnel's token-type attention picks, per pair of
    positions, one of two scores), read as what it computes::

        where(m, a, b) = where(m, a, 0) + where(¬m, b, 0)

    two :class:`~nrm.layers.constants.Select` layers (each keeps its own positions, the others are
    0 without a parent) summed by :class:`~nrm.layers.linear.Add`: the relevance of a position
    goes whole to the value it took. a and b broadcast to the output as torch broadcasts them
    (:class:`~nrm.layers.constants.Expand`). Exact — x + 0 = x — and compared with torch's own
    (equal everywhere, NaN where torch's is NaN; :class:`~nrm.errors.CaptureMismatchError`
    otherwise). A condition computed from the input is Select's refusal (a data-dependent
    selection); a value or condition of another batch size is refused by name."""

    def __init__(self, func):
        self.func = func

    def operands(self, args: tuple, kwargs: dict):
        """(condition, a, b) as given (None for one not given)."""
        names = ("input", "condition", "other") if self.func is torch.Tensor.where else ("condition", "input", "other")
        got = {**dict(zip(names, args)), **kwargs}
        return got.get("condition"), got.get("input"), got.get("other")

    def applies(self, args: tuple, kwargs: dict, derived) -> bool:
        cond, a, b = self.operands(args, kwargs)
        return (all(isinstance(t, torch.Tensor) for t in (cond, a, b)) and derived(a) and derived(b)
                and not derived(cond))

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        if "out" in kwargs:
            return "writes into out=; nrm reads torch.where(m, a, b)"
        cond, a, b = self.operands(args, kwargs)
        if cond.dtype != torch.bool:
            return f"selects by a condition of dtype {cond.dtype}; nrm reads a boolean condition"
        if a.dtype != b.dtype or not a.is_floating_point():
            return f"selects between {a.dtype} and {b.dtype}; nrm reads floating values of one dtype"
        try:
            shape = torch.broadcast_shapes(cond.shape, a.shape, b.shape)
        except RuntimeError as e:
            return f"has shapes that do not broadcast ({e})"
        if any(t.dim() != len(shape) or t.shape[0] != shape[0] for t in (a, b)):
            return (f"selects between values of shapes {tuple(a.shape)} and {tuple(b.shape)} into {tuple(shape)}; nrm "
                    "reads values with the output's number of dimensions and batch size")
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        cond, a, b = self.operands(args, kwargs)
        with torch._C.DisableTorchFunction():
            shape = torch.broadcast_shapes(cond.shape, a.shape, b.shape)
            other = cond.logical_not()
        a, b = _TwoDerived.broadcast(a, shape), _TwoDerived.broadcast(b, shape)
        out = torch.where(cond, a, 0.0) + torch.where(other, b, 0.0)
        with torch._C.DisableTorchFunction():
            same = same_values(out, self.func(*args, **kwargs))
        if not same:
            raise CaptureMismatchError("the decomposition of torch.where as where(m, a, 0) + where(¬m, b, 0) does not "
                                       "reproduce it; nrm cannot read it faithfully")
        return out


class DiffDecomposition:
    """``torch.diff(x, n=1, dim, prepend, append)`` (and ``Tensor.diff``) along a per-sample
    dimension, read as what it computes: the constants to prepend or append concatenated
    (``torch.cat``, a constant's neurons have no parent), then n times the difference of the
    shifted slices, x[1:] − x[:−1] along ``dim`` (:class:`~nrm.layers.shape.Index` slices and
    a subtraction, the sum of two branches with weights ±1). Compared with torch's own bitwise.
    Refused: the batch dimension, n < 0."""

    def __init__(self, func):
        self.func = func

    @staticmethod
    def _arguments(input, n=1, dim=-1, prepend=None, append=None) -> dict:  # noqa: A002
        return dict(input=input, n=n, dim=dim, prepend=prepend, append=append)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of torch.diff ({e})"
        x, n, dim = a["input"], a["n"], a["dim"]
        if not isinstance(x, torch.Tensor) or isinstance(n, bool) or not isinstance(n, int) or n < 0 \
                or isinstance(dim, bool) or not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
            return "takes arguments nrm does not read (n a whole number ≥ 0, dim an int within the tensor)"
        if dim % x.dim() == 0:
            return "takes differences along the batch dimension, which mixes the samples; nrm reads them along a " \
                   "per-sample dimension"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        x, n, dim = a["input"], a["n"], a["dim"] % a["input"].dim()
        parts = [t for t in (a["prepend"], x, a["append"]) if t is not None]
        out = torch.cat(parts, dim) if len(parts) > 1 else x
        for _ in range(n):
            size = out.shape[dim]
            out = out.narrow(dim, 1, size - 1) - out.narrow(dim, 0, size - 1)
        with torch._C.DisableTorchFunction():
            same = same_values(out, self.func(*args, **kwargs))
        if not same:
            raise CaptureMismatchError("the decomposition of diff as differences of shifted slices does not "
                                       "reproduce it bitwise; nrm cannot read it faithfully")
        return out


class AddcmulDecomposition:
    """``torch.addcmul(input, tensor1, tensor2, value=v)`` (timm's ResMLP ``Affine``, β + α ⊙ x;
    ConvNeXt V2's global response normalization), read as what it is::

        addcmul(c, t₁, t₂, v) = c + v · (t₁ · t₂)

    :class:`~nrm.layers.scale.ConstantScale` (a constant factor or v) or the product kind
    :class:`~nrm.layers.products.Multiply` (two input-derived factors), then
    :class:`~nrm.layers.constants.AddConstant` (a constant c: its share to ⊥) or the sum
    :class:`~nrm.layers.linear.Add`. torch may fuse the multiply-add and round once where this
    rounds up to three times: compared with torch's own within 10³ ulp of its largest value
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: ``out=``."""

    @staticmethod
    def _arguments(input, tensor1, tensor2, *, value=1, out=None) -> dict:  # noqa: A002
        return dict(input=input, tensor1=tensor1, tensor2=tensor2, value=value, out=out)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of torch.addcmul ({e})"
        if a["out"] is not None:
            return "writes into out="
        if isinstance(a["value"], bool) or not isinstance(a["value"], (int, float)):
            return f"scales by value={a['value']!r}; nrm reads a number"
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        product = a["tensor1"] * a["tensor2"]
        if a["value"] != 1:
            product = product * a["value"]
        out = a["input"] + product
        with torch._C.DisableTorchFunction():
            same = within_ulp(out, torch.addcmul(a["input"], a["tensor1"], a["tensor2"], value=a["value"]))
        if not same:
            raise CaptureMismatchError("the decomposition of addcmul as c + v · t₁ · t₂ does not reproduce it within "
                                       "10³ ulp; nrm cannot read it faithfully")
        return out


class BaddbmmDecomposition:
    """``torch.baddbmm(input, batch1, batch2, beta=β, alpha=α)`` (BLOOM's attention scores: its
    ALiBi bias plus the scaled Q·Kᵀ of the heads folded into the batch), read as what it is::

        baddbmm(c, A, B, β, α) = β · c + α · (A @ B)

    :class:`~nrm.layers.attention.MatMul` (two input-derived factors) or, with one factor a
    constant W the same for every sample, a linear map of the other
    (:class:`~nrm.layers.linear.Dense`: A @ W = F.linear(A, Wᵀ), W @ B = F.linear(Bᵀ, W)ᵀ), a
    :class:`~nrm.layers.scale.ConstantScale` for α ≠ 1, then
    :class:`~nrm.layers.constants.AddConstant` (a constant c: its share to ⊥; one that differs
    between the rows that fold one sample, as BLOOM's per-head bias, is read for one sample:
    :mod:`nrm.layers.one_sample`) or the sum :class:`~nrm.layers.linear.Add`. torch fuses the
    multiply-add: compared with torch's own within 10³ ulp of its largest value
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: ``out=``, β or α not a number,
    β = 0 (torch then ignores ``input``, NaN included)."""

    def __init__(self, func, constant: int | None = None):
        self.func, self.constant = func, constant  # constant: which factor (1 or 2) is a constant

    def applies(self, args: tuple, kwargs: dict, derived):
        """With one factor a constant: the decomposition that reads the product as a linear map."""
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError:
            return True  # refusal() names it
        flags = [isinstance(a[n], torch.Tensor) and derived(a[n]) for n in ("batch1", "batch2")]
        if flags.count(True) == 1:
            return BaddbmmDecomposition(self.func, constant=flags.index(False) + 1)
        return True

    @staticmethod
    def _arguments(input, batch1, batch2, *, beta=1, alpha=1, out=None) -> dict:  # noqa: A002
        return dict(input=input, batch1=batch1, batch2=batch2, beta=beta, alpha=alpha, out=out)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        try:
            a = self._arguments(*args, **kwargs)
        except TypeError as e:
            return f"its arguments are not those of torch.baddbmm ({e})"
        if a["out"] is not None:
            return "writes into out="
        for name in ("beta", "alpha"):
            if isinstance(a[name], bool) or not isinstance(a[name], (int, float)) or not math.isfinite(a[name]):
                return f"scales by {name}={a[name]!r}; nrm reads a finite number"
        if a["beta"] == 0:
            return "has beta=0, where torch ignores input (NaN included); write torch.bmm(batch1, batch2) * alpha"
        if not all(isinstance(t, torch.Tensor) for t in (a["input"], a["batch1"], a["batch2"])):
            return "takes operands that are not tensors"
        if self.constant is not None:
            w = a[f"batch{self.constant}"]
            if w.dim() != 3 or not bool((w == w[:1]).all()):
                return ("multiplies by a constant factor that differs between samples; nrm reads one constant "
                        "matrix for every sample (a linear map)")
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(*args, **kwargs)
        if self.constant == 2:  # A @ W = F.linear(A, Wᵀ)
            product = F.linear(a["batch1"], a["batch2"][0].transpose(0, 1))
        elif self.constant == 1:  # W @ B = F.linear(Bᵀ, W)ᵀ
            product = F.linear(a["batch2"].transpose(1, 2), a["batch1"][0]).transpose(1, 2)
        else:
            product = torch.bmm(a["batch1"], a["batch2"])
        if a["alpha"] != 1:
            product = product * a["alpha"]
        c = a["input"] if a["beta"] == 1 else a["input"] * a["beta"]
        out = c + product
        with torch._C.DisableTorchFunction():
            same = within_ulp(out, torch.baddbmm(a["input"], a["batch1"], a["batch2"], beta=a["beta"],
                                                  alpha=a["alpha"]))
        if not same:
            raise CaptureMismatchError("the decomposition of baddbmm as β · c + α · (A @ B) does not reproduce it "
                                       "within 10³ ulp; nrm cannot read it faithfully")
        return out


class ElementwiseMaxDecomposition(_TwoDerived):
    """The elementwise maximum or minimum of two tensors — ``torch.maximum(a, b)``,
    ``torch.max(a, b)``, ``torch.minimum``, ``torch.min(a, b)`` (LightCNN's max-feature-map,
    maxout of two branches) — with at least one computed from the input, read as what it is, a
    max pooling over the pair::

        max(a, b) = amax(stack([a, b], −1), −1)          min(a, b) = −amax(stack([−a, −b], −1), −1)

    (:class:`~nrm.layers.constants.Expand` for operands broadcast over size-1 dimensions,
    :class:`StackDecomposition`, :class:`MaxOverDimsDecomposition`, and for the minimum
    :class:`~nrm.layers.constants.Negate`): the larger operand takes its neuron's relevance, ``a``
    at a tie. A constant operand (``torch.maximum(x, floor)``) is a constant neuron of the pair:
    where it wins, the neuron's relevance goes to ⊥. The value must be torch's own, bitwise
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Refused: ``out=``, operands of
    different ranks, batch sizes or dtypes. L9 holds away from ties (torch's gradient splits a
    tie evenly; the pooling gives it to ``a``)."""

    names = ("input", "other")

    def __init__(self, function, minimum: bool):
        self.function, self.minimum = function, minimum

    def applies(self, args: tuple, kwargs: dict, derived) -> bool:
        a, b = self.operands(args, kwargs)
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and (derived(a) or derived(b))

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        if "out" in kwargs or len(args) > 2:
            return "writes into out=; nrm reads max(a, b) / min(a, b)"
        a, b = self.operands(args, kwargs)
        if not self.floating(a, b):
            return f"compares {a.dtype} with {b.dtype}; nrm reads floating operands (of one dtype, or two: widened)"
        try:  # a constant may broadcast into the other operand's shape (a floor, a per-channel bound)
            shape = torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError:
            shape = None
        if shape is not None and len(shape) >= 1 and shape in (a.shape, b.shape):
            return None
        return self._shapes(a, b)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a0, b0 = self.operands(args, kwargs)
        a, b = self.widened(a0, b0)
        shape = torch.broadcast_shapes(a.shape, b.shape)
        pair = [self.broadcast(a, shape), self.broadcast(b, shape)]
        if self.minimum:
            y = -torch.amax(torch.stack([-t for t in pair], -1), -1)
        else:
            y = torch.amax(torch.stack(pair, -1), -1)
        with torch._C.DisableTorchFunction():
            theirs = (torch.minimum if self.minimum else torch.maximum)(a0, b0)
            same = same_values(y, theirs)
        if not same:
            raise CaptureMismatchError(f"the elementwise {'minimum' if self.minimum else 'maximum'} read as a max "
                                       "pooling over the pair does not reproduce it; nrm cannot read it faithfully")
        return y


class _ByArguments:
    """One function, two readings: ``torch.max(x, dim)`` reduces, ``torch.max(a, b)`` compares
    (the second argument a tensor)."""

    def __init__(self, reduce, compare):
        self.reduce, self.compare = reduce, compare

    def pick(self, args: tuple, kwargs: dict):
        other = args[1] if len(args) > 1 else kwargs.get("other")
        return self.compare if isinstance(other, torch.Tensor) else self.reduce

    def applies(self, args: tuple, kwargs: dict, derived) -> bool:
        return getattr(self.pick(args, kwargs), "applies", lambda *_: True)(args, kwargs, derived)

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        return self.pick(args, kwargs).refusal(args, kwargs)

    def __call__(self, *args, **kwargs):
        return self.pick(args, kwargs)(*args, **kwargs)


class FoldDecomposition(_Patches):
    """``F.fold`` / ``nn.Fold`` (col2im: overlapping patches summed back into an image, the
    inverse of :class:`~nrm.layers.shape.Unfold` up to the overlaps), read as what it is, a
    scatter-sum of the patch entries into their pixels, then the padding cropped::

        y_padded[b, c, oh·s_h + i·d_h, ow·s_w + j·d_w] += x[b, c·k_h·k_w + i·k_w + j, oh·OW + ow]
        y = y_padded[:, :, p_h : p_h + H, p_w : p_w + W]

    :class:`~nrm.layers.message.Scatter` (a linear map of weights 1: a pixel's relevance splits
    over the patch entries summed into it by the rule) and :class:`~nrm.layers.shape.Index`.
    The sums run in another order than torch's col2im, so the value is compared with torch's
    within 10³ ulp of its largest value (:class:`~nrm.errors.CaptureMismatchError` otherwise)."""

    function = F.fold
    names = ("input", "output_size", "kernel_size", "dilation", "padding", "stride")
    verb, dims, layout = "folds", 3, "(B, C·k·k, L)"

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        a = self._arguments(args, kwargs)
        x = a["input"]
        (H, W), (ph, pw) = pair(a["output_size"]), pair(a["padding"])
        with torch._C.DisableTorchFunction():
            theirs = F.fold(x, a["output_size"], a["kernel_size"], a["dilation"], a["padding"], a["stride"])
        B, C = x.shape[0], theirs.shape[1]
        Hp, Wp = H + 2 * ph, W + 2 * pw
        index = torch.from_numpy(patch_index((C, Hp, Wp), pair(a["kernel_size"]), pair(a["dilation"]),
                                             pair(a["stride"])).reshape(1, -1))
        flat = x.reshape(B, -1)
        padded = flat.new_zeros((B, C * Hp * Wp)).scatter_add(1, index.to(x.device).expand(B, -1), flat)
        y = padded.reshape(B, C, Hp, Wp)
        if ph or pw:
            y = y[:, :, ph:ph + H, pw:pw + W]
        with torch._C.DisableTorchFunction():
            bound = 1e3 * torch.finfo(theirs.dtype).eps * max(1.0, float(theirs.abs().max()))
            same = y.shape == theirs.shape and float((y - theirs).abs().max()) <= bound
        if not same:
            raise CaptureMismatchError("the decomposition of F.fold does not reproduce it within 10³ ulp; nrm cannot "
                                       "read it faithfully")
        return y


class CropPadDecomposition:
    """``F.pad(x, pad)`` in mode ``"constant"`` with negative pads (a crop on that side; RWKV's
    token shift ``nn.ZeroPad2d((0, 0, 1, -1))``: one row of zeros in front, the last row cut),
    read as what it is, a slice then a padding of what is left::

        F.pad(x, (l, r, …)) = F.pad(x[…, max(−l, 0) : n − max(−r, 0)], (max(l, 0), max(r, 0), …))

    :class:`~nrm.layers.shape.Index` (a slice) and :class:`~nrm.layers.constants.Pad` (or nothing
    where every remaining pad is 0). Both copy values: the result is torch's own, bitwise
    (:class:`~nrm.errors.CaptureMismatchError` otherwise). Applies only where a pad is negative on
    a per-sample dimension; other modes and the batch dimension stay the kinds' (refused by name)."""

    @staticmethod
    def _parts(args: tuple, kwargs: dict):
        try:
            a = _pad_arguments(*args, **kwargs)
        except TypeError:
            return None
        x, pads = a["input"], a["pad"]
        if a["mode"] != "constant" or not isinstance(x, torch.Tensor):
            return None
        try:
            pads = [int(p) for p in pads]
        except (TypeError, ValueError):
            return None
        if len(pads) % 2 or not any(p < 0 for p in pads) or len(pads) // 2 >= x.dim():
            return None  # no crop, or the batch dimension touched: the kinds say why
        return x, pads, a["value"]

    def applies(self, args: tuple, kwargs: dict, derived) -> bool:
        parts = self._parts(args, kwargs)
        return parts is not None and bool(derived(parts[0]))

    def refusal(self, args: tuple, kwargs: dict) -> str | None:
        return None

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        from ..errors import CaptureMismatchError

        x, pads, value = self._parts(args, kwargs)
        with torch._C.DisableTorchFunction():
            theirs = F.pad(*args, **kwargs)
        key = [slice(None)] * x.dim()
        for i in range(len(pads) // 2):
            d, (left, right) = x.dim() - 1 - i, (pads[2 * i], pads[2 * i + 1])
            key[d] = slice(max(-left, 0), x.shape[d] - max(-right, 0))
        rest = [max(p, 0) for p in pads]
        ours = x[tuple(key)]
        if any(rest):
            ours = F.pad(ours, rest, mode="constant", value=value)
        with torch._C.DisableTorchFunction():
            same = same_values(ours, theirs)
        if not same:
            raise CaptureMismatchError("F.pad with a negative pad read as a slice then a padding does not reproduce "
                                       "it bitwise; nrm cannot read it faithfully")
        return ours


def _pad_arguments(input, pad, mode="constant", value=None) -> dict:
    return dict(input=input, pad=pad, mode=mode, value=value)


class Refused:
    """A fused function nrm cannot read, refused with its reason (the capture lists it among the
    unsupported operations)."""

    def __init__(self, reason: str):
        self.reason = reason

    def refusal(self, args: tuple, kwargs: dict) -> str:
        return self.reason


_SUBTRACT = (torch.sub, torch.subtract, torch.Tensor.sub, torch.Tensor.subtract, torch.Tensor.__sub__)
_ADD = (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__)
_DIVIDE = (torch.div, torch.divide, torch.true_divide, torch.Tensor.div, torch.Tensor.divide, torch.Tensor.true_divide,
           torch.Tensor.__truediv__)
_MULTIPLY = (torch.mul, torch.multiply, torch.Tensor.mul, torch.Tensor.multiply, torch.Tensor.__mul__,
             torch.Tensor.__rmul__)
_NORM = (torch.linalg.vector_norm, torch.norm, torch.Tensor.norm)

DECOMPOSED_FUNCTIONS = {
    **{f: _FirstThatApplies(SumDecomposition(f, subtract=True), EnlargedByConstantDecomposition(f)) for f in _SUBTRACT},
    **{f: _FirstThatApplies(SumDecomposition(f, subtract=False), EnlargedByConstantDecomposition(f)) for f in _ADD},
    **{f: _FirstThatApplies(DivisionDecomposition(f), EnlargedByConstantDecomposition(f)) for f in _DIVIDE},
    **{f: InPlaceDivisionDecomposition(f) for f in (torch.Tensor.div_, torch.Tensor.__itruediv__,
                                                    torch.Tensor.true_divide_)},
    **{f: EnlargedByConstantDecomposition(f) for f in _MULTIPLY + (torch.Tensor.__rsub__,)},
    **{f: VectorNormDecomposition(f) for f in _NORM},
    F.instance_norm: RunningInstanceNormDecomposition(),
    F.unfold: UnfoldDecomposition(),
    F.pad: CropPadDecomposition(),
    F.fold: FoldDecomposition(),
    **{f: MaxOverDimsDecomposition(f) for f in (torch.amax, torch.Tensor.amax, F.adaptive_max_pool1d,
                                                 F.adaptive_max_pool2d)},
    **{f: _ByArguments(MaxOverDimsDecomposition(f), ElementwiseMaxDecomposition(f, minimum=False))
       for f in (torch.max, torch.Tensor.max)},
    **{f: ElementwiseMaxDecomposition(f, minimum=False) for f in (torch.maximum, torch.Tensor.maximum)},
    **{f: ElementwiseMaxDecomposition(f, minimum=True) for f in (torch.minimum, torch.Tensor.minimum)},
    **{f: _ByArguments(MaxOverDimsDecomposition(f, minimum=True), ElementwiseMaxDecomposition(f, minimum=True))
       for f in (torch.min, torch.Tensor.min)},
    **{f: MaxOverDimsDecomposition(f, minimum=True) for f in (torch.amin, torch.Tensor.amin)},
    **{f: VarianceDecomposition(f, root=False) for f in (torch.var, torch.Tensor.var)},
    **{f: VarianceDecomposition(f, root=True) for f in (torch.std, torch.Tensor.std)},
    F.scaled_dot_product_attention: SDPADecomposition(),
    torch.einsum: EinsumDecomposition(),
    **{f: MatmulWeightDecomposition(f) for f in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)},
    F.normalize: NormalizeDecomposition(),
    torch.cosine_similarity: CosineSimilarityDecomposition(),
    torch.stack: StackDecomposition(),
    torch.addcmul: AddcmulDecomposition(),
    **{f: BaddbmmDecomposition(f) for f in (torch.baddbmm, torch.Tensor.baddbmm)},
    torch.Tensor.addcmul: AddcmulDecomposition(),
    F.glu: GLUDecomposition(),
    F.rms_norm: RMSNormDecomposition(),
    F.softmin: SoftminDecomposition(),
    **{f: TriangleDecomposition(f, upper=False) for f in (torch.tril, torch.Tensor.tril)},
    **{f: TriangleDecomposition(f, upper=True) for f in (torch.triu, torch.Tensor.triu)},
    **{f: DiffDecomposition(f) for f in (torch.diff, torch.Tensor.diff)},
    **{f: LPPoolDecomposition(f, d) for d, f in enumerate((F.lp_pool1d, F.lp_pool2d, F.lp_pool3d), 1)},
    **{f: CumsumDecomposition(f) for f in (torch.cumsum, torch.Tensor.cumsum)},
    **{f: LerpDecomposition(f) for f in (torch.lerp, torch.Tensor.lerp)},
    **{f: WhereDecomposition(f) for f in (torch.where, torch.Tensor.where)},
    **{f: TileDecomposition(f) for f in (torch.tile, torch.Tensor.tile)},
    **{f: Refused("draws its pooling regions at random on every call, in eval mode too, so no fixed map gives its "
                  "output; pass _random_samples= (then the regions are fixed) and a kind for it, or use MaxPool2d")
       for f in (F.fractional_max_pool2d, F.fractional_max_pool3d)},
    final_state: Refused(FINAL_STATE_REFUSAL),
    F.multi_head_attention_forward: Refused(
        "is multi-head attention with the batch in dimension 1 (torch's functional form moves it); nrm reads "
        "nn.MultiheadAttention modules through their definition, with the batch first"),
    torch._native_multi_head_attention: Refused(
        "is torch's fused multi-head attention, which nrm cannot see into; nrm reads "
        "nn.MultiheadAttention modules through their definition"),
}
"""Fused functions the capture records as the operations that define them."""

DECOMPOSED_MODULES = {nn.MultiheadAttention: MHADecomposition(), nn.LSTM: LSTMDecomposition(),
                      nn.GRU: GRUDecomposition(), nn.RNN: RNNDecomposition(),
                      nn.LSTMCell: CellDecomposition(LSTMDecomposition()),
                      nn.GRUCell: CellDecomposition(GRUDecomposition()),
                      nn.RNNCell: CellDecomposition(RNNDecomposition())}
"""Module types whose call the capture records as the operations that define it (checked
against the module's own output)."""
OWN_FUNCTIONS = frozenset(d.own_function for d in DECOMPOSED_MODULES.values() if hasattr(d, "own_function"))
"""The fused calls inside decomposed modules' own forwards that the capture may skip once their
signature was checked (:meth:`MHADecomposition.placeholder`)."""

_GELU_TANH = ActivationDecomposition(lambda x: F.gelu(x, approximate="tanh"), "F.gelu(x, approximate='tanh')")
DECOMPOSED_BY_NAME = {
    ("transformers.pytorch_utils", "Conv1D"): Conv1DDecomposition(),
    ("transformers.activations", "NewGELUActivation"): _GELU_TANH,
    ("transformers.activations", "AccurateGELUActivation"): _GELU_TANH,
    ("transformers.activations", "GELUActivation"): ActivationDecomposition(F.gelu, "F.gelu"),
    ("torchvision.models.swin_transformer", "ShiftedWindowAttention"): ShiftedWindowDecomposition(),
    ("torchvision.models.swin_transformer", "ShiftedWindowAttentionV2"): ShiftedWindowDecomposition(),
    ("torchvision.models.video.swin_transformer", "ShiftedWindowAttention3d"): ShiftedWindow3dDecomposition(),
    ("torch_geometric.nn.conv.gat_conv", "GATConv"): GATDecomposition(),
    ("torch_geometric.nn.conv.gatv2_conv", "GATv2Conv"): GATv2Decomposition(),
}
"""Module types of other libraries (matched by module and qualified name, without importing
them), recorded through their definition like :data:`DECOMPOSED_MODULES`."""


def decomposition_of(module: nn.Module):
    """The decomposition the capture records in place of ``module``'s call, or None (the exact
    type only)."""
    kind = type(module)
    found = DECOMPOSED_MODULES.get(kind)
    return found if found is not None else DECOMPOSED_BY_NAME.get((kind.__module__, kind.__qualname__))
