"""Additive constants beside an activation (issue 14: vision transformers): a position
embedding added to the tokens, a relative position bias or an attention mask added to the
logits, a class token concatenated before the patch tokens.

A constant depends on no input neuron, so it is what NRM-SPEC §1 calls a bias: the absorber
⊥ of the layer takes its share. Both kinds are linear maps with weights 1 (or −1 for
``c − x``) whose bias is the constant, to which the layer's rule applies (rule key
:class:`nrm.markers.Constant`; the presets give it LRP-0, the rule of sums of branches):

* ``x + c`` under LRP-0: q(x_k | z_k) = x_k / z_k and q(⊥ | z_k) = c_k / z_k — the
  proportional split of a sum of two summands, one of which is a constant;
* ``torch.cat([c, x])``: each copy of x_j has one parent, q(x_j | z_k) = 1 under LRP-0
  (x_j / x_j), and each constant neuron has none, q(⊥ | z_c) = 1.

A mask added to the logits (Swin's −100 between shifted windows) is such a constant: its
share goes to ⊥ like any other bias; the logits it lowers take almost nothing after the
softmax (s ≈ e^−100), so no special case is needed. A mask of −∞ is not this kind (it is
not a finite bias; ``docs/attention.md``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..linear import DiagonalMap, PlaceMap
from ..markers import Constant
from ..recorded import Value
from .base import ExactMap, Linear, seeded, to_fractions, zeros_object

_SUBTRACTIONS = ("sub", "sub_", "subtract", "__sub__", "__isub__", "__rsub__", "rsub")


def _constant_problem(c, like_dtype) -> str | None:
    if isinstance(c, bool) or not isinstance(c, (int, float, torch.Tensor)):
        return f"adds a {type(c).__name__}; nrm reads constants that are tensors or numbers"
    if isinstance(c, torch.Tensor):
        if c.is_complex() or not (c.is_floating_point() or c.dtype == torch.int64):
            return f"adds a constant of dtype {c.dtype}"
        if not bool(torch.isfinite(c).all()):
            return ("adds a constant that is not finite (an attention mask of −∞): nrm reads finite constants as "
                    "biases; masks of −∞ are not read yet (docs/attention.md)")
    elif not math.isfinite(c):
        return "adds a number that is not finite"
    return None


def _per_sample(c, like: torch.Tensor, batch_shaped: bool) -> torch.Tensor:
    """The constant broadcast to one sample's shape of ``like`` (B, *per), as its dtype."""
    c = (c.detach() if isinstance(c, torch.Tensor) else torch.tensor(c, dtype=like.dtype)).to(like.dtype)
    c = c.to(like.device)
    per = tuple(like.shape[1:])
    if batch_shaped and c.dim() == len(per) + 1:
        c = c[0]
    return torch.broadcast_to(c, per).contiguous()


class AddConstant(Linear):
    """``x + c``, ``c + x``, ``x - c``, ``c - x``, ``torch.add`` / ``torch.sub`` and the in-place
    forms, with exactly one input-derived operand x and a constant c (a parameter, a buffer, a
    tensor computed from no input, a finite number) that broadcasts to x's shape without
    enlarging it and is the same for every sample: a position embedding, a relative position
    bias, an additive attention mask.

    Definition (s = −1 for ``c − x``, else 1; c' = −c for ``x − c``, else c)::

        z_k = s x_k + c'_k          q(x_k | z_k) = s x_k / z_k,  q(⊥ | z_k) = c'_k / z_k  (LRP-0)

    a diagonal linear map with the constant as its bias (rule key :class:`nrm.markers.Constant`);
    any rule applies. Exact form: c as its float64 value read as a fraction. Refused: ``alpha=``,
    a constant with a batch dimension whose rows differ (a constant per sample), one that
    enlarges x, a non-finite constant.
    """

    functions = (torch.Tensor.add, torch.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__radd__,
                 torch.Tensor.__iadd__, torch.Tensor.sub, torch.sub, torch.subtract, torch.Tensor.sub_,
                 torch.Tensor.subtract, torch.Tensor.__sub__, torch.Tensor.__isub__, torch.Tensor.__rsub__,
                 torch.rsub)
    rule_types = (Constant,)

    def examples(self):
        return [(PositionEmbedding((3, 2)), (3, 2)), (PositionEmbedding((2,), how="rsub"), (2,)),
                (PositionEmbedding((2, 2), how="number"), (2, 2))]

    def operands(self, call) -> tuple:
        other = call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        return call.args[0], other

    def signs(self, call) -> tuple[int, int]:
        """(s, sign of c): x's weight and the sign the constant enters with."""
        a, _ = self.operands(call)
        name = getattr(call.func, "__name__", "")
        if name not in _SUBTRACTIONS:
            return 1, 1
        reverse = name in ("__rsub__", "rsub") or not isinstance(a, Value)
        return (-1, 1) if reverse else (1, -1)

    def accepts(self, call):
        a, b = self.operands(call)
        if isinstance(a, Value) and isinstance(b, Value):
            if self.signs(call) != (1, 1):
                return ("subtracts one input-derived tensor from another, which has no kind yet; write it as a sum "
                        "of branches, a + (-1) * b")
            return "adds two input-derived tensors (a sum of branches, read by the Add kind)"
        if "alpha" in call.kwargs or len(call.args) > 2:
            return "adds a scaled term (alpha=); write the scale as a product by a constant"
        c = b if isinstance(a, Value) else a
        why = _constant_problem(c, call.output.dtype)
        if why is not None:
            return why
        shape, out = tuple(call.in_shapes[0]), tuple(call.output.shape)
        if shape != out:
            return (f"broadcasts an input of shape {shape} to {out}: the constant enlarges it; nrm reads additions "
                    "that keep the input's shape")
        if isinstance(c, torch.Tensor) and c.dim() == len(out) and c.shape[0] != 1:
            if not bool((c == c[:1]).all()):
                return "adds a constant that differs between the samples of the batch (a bias per sample)"
        return None

    def constant(self, call, like: torch.Tensor) -> torch.Tensor:
        """c' broadcast to one sample's shape, as ``like``'s dtype."""
        a, b = self.operands(call)
        c = _per_sample(b if isinstance(a, Value) else a, like, batch_shaped=True)
        return c * self.signs(call)[1]

    def map(self, call, a, rule=None):
        s = self.signs(call)[0]
        c = self.constant(call, a)
        return DiagonalMap(torch.full_like(c, float(s)), c)

    def exact(self, call, a, rule=None) -> ExactMap:
        in_shape = tuple(a.shape[1:])
        n = math.prod(in_shape)
        W = zeros_object((n, n))
        if n:
            W[np.arange(n), np.arange(n)] = self.signs(call)[0]
        c = to_fractions(self.constant(call, a.double()).reshape(-1))
        return ExactMap(W, np.eye(n, dtype=bool), c, in_shape)


class CatConstant(Linear):
    """``torch.cat`` of one input-derived tensor x with constants along a per-sample dimension
    (ViT's class token before the patch tokens; the constants the same for every sample).

    Definition (k the copy of x_j, c a constant neuron)::

        z_k = x_j,  z_c = c         q(x_j | z_k) = 1,  q(⊥ | z_c) = 1   (LRP-0)

    a linear map with weights 1 at the copies and the constants as its bias
    (:class:`nrm.linear.PlaceMap`, rule key :class:`nrm.markers.Constant`). Under a rule with a
    stabilizer (ε) a copy keeps x_j / (x_j + ε s) and ⊥ the rest, as for any linear map. Exact
    form: the constants' float64 values as fractions. Refused: several input-derived parts (a
    concatenation of branches with constants among them), the batch dimension, a constant that
    differs between samples.
    """

    functions = (torch.cat, torch.concat, torch.concatenate)
    rule_types = (Constant,)

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
        if self.dim(call) == 0:
            return "concatenates along the batch dimension"
        batch = call.output.shape[0]
        for p in parts:
            if isinstance(p, Value):
                continue
            why = _constant_problem(p, call.output.dtype)
            if why is not None:
                return why.replace("adds", "concatenates")
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
        d = self.dim(call)
        pieces = []
        for p in self.parts(call):
            if isinstance(p, Value):
                shape = (1,) + tuple(like.shape[1:])
                pieces.append(torch.zeros(shape, dtype=like.dtype, device=like.device))
            else:
                pieces.append(p[:1].detach().to(like.dtype).to(like.device))
        return torch.cat(pieces, d)[0].contiguous()

    def map(self, call, a, rule=None):
        d, offset = self.layout(call)
        bias = self.constants(call, a)
        return PlaceMap(torch.ones(tuple(a.shape[1:]), dtype=a.dtype, device=a.device), bias, tuple(bias.shape),
                        d, offset)

    def exact(self, call, a, rule=None) -> ExactMap:
        d, offset = self.layout(call)
        in_shape = tuple(a.shape[1:])
        bias = self.constants(call, a.double())
        out_shape = tuple(bias.shape)
        n, m = math.prod(in_shape), math.prod(out_shape)
        W, S = zeros_object((n, m)), np.zeros((n, m), bool)
        for j, pos in enumerate(np.ndindex(*in_shape)):
            target = list(pos)
            target[d] += offset
            k = int(np.ravel_multi_index(tuple(target), out_shape))
            W[j, k], S[j, k] = 1, True
        return ExactMap(W, S, to_fractions(bias.reshape(-1)), out_shape)


class PositionEmbedding(nn.Module):
    """relu(x) + p with a learned p of one sample's shape (``how="add"``), p − relu(x)
    (``"rsub"``) or relu(x) − 0.5 (``"number"``): an example of :class:`AddConstant`."""

    def __init__(self, shape: tuple, how: str = "add"):
        super().__init__()
        self.how = how
        self.p = nn.Parameter(torch.zeros((1,) + tuple(shape), dtype=torch.float64))
        seeded(self, 4)

    def forward(self, x):
        h = torch.relu(x)
        if self.how == "number":
            return h - 0.5
        return self.p - h if self.how == "rsub" else h + self.p


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
