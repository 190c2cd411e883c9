"""Elementwise kinds: activations that belong to their neuron, and aliases.

Relevance passes an elementwise function unchanged, q(j | k) = δ_jk (NRM-SPEC §1: "elementwise
activations belong to their neuron"). An alias is the same neurons, unchanged.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Alias, Elementwise


class ReLU(Elementwise):
    """σ(z) = max(z, 0). Positively homogeneous: σ(z) = σ'(z) z, so LRP-0 through it is
    Gradient × Input (L9)."""

    functions = (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)
    homogeneous = True

    def examples(self):
        return [(nn.ReLU().eval(), (3,)), (nn.ReLU(inplace=True).eval(), (2, 2, 2))]

    def exact(self, call, z):
        return np.array([v if v > 0 else Fraction(0) for v in np.asarray(z).reshape(-1)],
                        dtype=object).reshape(np.shape(z))

    def evaluate(self, call, z):
        return F.relu(z)


class LeakyReLU(Elementwise):
    """σ(z) = z for z ≥ 0, s·z otherwise (slope s). Positively homogeneous (L9 holds)."""

    functions = (F.leaky_relu, torch._C._nn.leaky_relu, torch._C._nn.leaky_relu_)
    homogeneous = True

    def examples(self):
        return [(nn.LeakyReLU(0.1).eval(), (3,))]

    def slope(self, call) -> float:
        return float(call.arg(1, "negative_slope", 0.01))

    def exact(self, call, z):
        s = Fraction(self.slope(call))
        return np.array([v if v >= 0 else s * v for v in np.asarray(z).reshape(-1)], dtype=object).reshape(np.shape(z))

    def evaluate(self, call, z):
        return F.leaky_relu(z, self.slope(call))


class RReLU(LeakyReLU):
    """``F.rrelu``, ``torch.rrelu`` (``nn.RReLU``) in evaluation mode (``training=False``): the
    leaky ReLU whose slope is the mean of the random range, as torch computes it::

        σ(z) = z for z ≥ 0, s·z otherwise,    s = (lower + upper) / 2

    Positively homogeneous (L9 holds). In training mode the slope of each neuron is random:
    refused."""

    functions = (F.rrelu, F.rrelu_, torch.rrelu, torch.rrelu_)

    def examples(self):
        return [(nn.RReLU(0.1, 0.3).eval(), (3,)), (nn.RReLU(inplace=True).eval(), (2, 2))]

    def slope(self, call) -> float:
        return (float(call.arg(1, "lower", 1.0 / 8)) + float(call.arg(2, "upper", 1.0 / 3))) / 2

    def accepts(self, call):
        if call.arg(3, "training", False):
            return "runs in training mode (a random slope per neuron); call model.eval()"
        return None


class Dropout(Alias):
    """``F.dropout`` and its kin in evaluation mode (``training=False``): the identity."""

    functions = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)

    def examples(self):
        return [(nn.Dropout(0.5).eval(), (3,))]

    def accepts(self, call):
        if call.arg(2, "training", True):
            return "runs in training mode (random); call model.eval()"
        return None


class Same(Alias):
    """Operations that return the same values: ``contiguous``, ``clone``, ``detach``, and a
    conversion to the dtype and device the tensor already has — or between two floating dtypes
    (:func:`mixed_precision`: transformers' RMSNorm computing in float32 inside a bfloat16 or a
    float64 model; the record is then explained in its widest floating dtype, where the
    conversion is the identity on the recorded values). A mask passes through as a mask: a −inf
    entry of the output — copied from a masked input, or a float64 mask value (finfo.min) below
    float32's range narrowed to −inf — is recorded as finfo.min, and only a softmax or a further
    mask may read it (``docs/attention.md``, Masks)."""

    functions = (torch.Tensor.contiguous, torch.Tensor.clone, torch.clone, torch.Tensor.detach, torch.detach,
                 torch.Tensor.to, torch.Tensor.float, torch.Tensor.double, torch.Tensor.type_as, torch.Tensor.type,
                 torch.Tensor.__pos__, torch.positive)
    masks = True  # −inf in its output is a mask, recorded as finfo.min (nrm.capture): a masked value copied, or a
    # float64 mask (finfo(float64).min) narrowed to float32 before a softmax (T5's softmax(scores.float()))
    reads_masks = True  # the identity on the values: a mask stays a mask, which only a softmax or a mask may read

    def examples(self):
        return [(Contiguous().eval(), (2, 3))]

    def accepts(self, call):
        if call.in_shapes and tuple(call.output.shape) != tuple(call.in_shapes[0]):
            return "changes the shape"
        if call.in_dtypes and call.output.dtype != call.in_dtypes[0] and not mixed_precision(call.in_dtypes[0],
                                                                                             call.output.dtype):
            return (f"converts {call.in_dtypes[0]} to {call.output.dtype}; nrm reads conversions between floating "
                    "dtypes only: keep the values floating")
        return None


HALF = (torch.bfloat16, torch.float16)
FLOATING = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
"""The floating dtypes a record may hold; it is explained in the widest of them it holds, at
least float32 (:func:`nrm.capture.upcast`)."""


def mixed_precision(a: torch.dtype, b: torch.dtype) -> bool:
    """A conversion between two floating dtypes (transformers' RMSNorm and eager softmax compute in
    float32 inside a bfloat16 or a float64 model): nrm explains such a record in its widest
    floating dtype (``nrm.capture.upcast``), where widening is exact and a narrowing's rounding is
    the model's recorded value."""
    return a != b and a in FLOATING and b in FLOATING


class Contiguous(nn.Module):
    """``x.transpose(1, 2).contiguous().transpose(1, 2)``'s last step alone: ``x.clone()``
    (an example of :class:`Same`)."""

    def forward(self, x):
        return x.clone()
