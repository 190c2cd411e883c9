"""Products by a constant: a layer scale (ConvNeXt's ``x * self.layer_scale``), ``x * c``,
``c * x``, ``x / c`` for a parameter, buffer, tensor or number that does not depend on the
input. A diagonal linear map: each neuron has one input, weight the constant."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..linear import DiagonalMap
from ..markers import Scale
from ..recorded import Value
from .base import ExactMap, Linear, to_fractions, zeros_object

_DIVISIONS = ("div", "div_", "true_divide", "__truediv__", "__itruediv__")


class ConstantScale(Linear):
    """``x * c``, ``c * x``, ``torch.mul``, ``x *= c``, ``x / c``, ``torch.div`` with exactly one
    input-derived operand x and a constant c (a parameter, a buffer, a tensor not computed
    from the input, a number) that broadcasts to x's shape without enlarging it: a layer
    scale (ConvNeXt's γ of shape (C, 1, 1)), a fixed gain. A diagonal linear map, to which
    any rule applies (rule key :class:`nrm.markers.Scale`); q(j | k) = δ_jk under LRP-0.

    Definition (w = c, or 1/c for a division, broadcast to one sample's shape)::

        z_k = w_k a_k          (no bias)

    Exact form: c as its float64 value read as a fraction (1/c exactly for a division).
    A product of two input-derived tensors is not this kind (it is not linear in either):
    it is refused with that reason unless another kind reads it.
    """

    functions = (torch.Tensor.mul, torch.mul, torch.Tensor.mul_, torch.Tensor.__mul__, torch.Tensor.__rmul__,
                 torch.Tensor.__imul__, torch.Tensor.div, torch.div, torch.Tensor.div_, torch.true_divide,
                 torch.Tensor.true_divide, torch.Tensor.__truediv__, torch.Tensor.__itruediv__)
    rule_types = (Scale,)

    def examples(self):
        return [(LayerScale(2), (2, 2, 2)), (LayerScale(3, how="div"), (3,)), (LayerScale(0, how="number"), (2, 2))]

    def operands(self, call) -> tuple:
        other = call.args[1] if len(call.args) > 1 else call.kwargs.get("other")
        return call.args[0], other

    def divides(self, call) -> bool:
        return getattr(call.func, "__name__", "") in _DIVISIONS

    def accepts(self, call):
        a, b = self.operands(call)
        if isinstance(a, Value) and isinstance(b, Value):
            if self.divides(call):
                return ("divides two input-derived tensors in place or with rounding_mode= (nrm reads a = a / b, a "
                        "product with the reciprocal of b)")
            return ("multiplies two input-derived tensors: a product of activations is not a linear map of either "
                    "(the product kind, nrm.layers.products.Multiply, reads it)")
        if call.kwargs.get("rounding_mode") is not None:
            return "divides with rounding_mode=; nrm reads a true division by a constant"
        constant = b if isinstance(a, Value) else a
        if self.divides(call) and not isinstance(a, Value):
            return "divides a constant by an input-derived tensor (c / x), which is not linear in x"
        if isinstance(constant, bool) or not isinstance(constant, (int, float, torch.Tensor)):
            return f"multiplies by {type(constant).__name__}; nrm reads products by a constant tensor or number"
        if isinstance(constant, torch.Tensor) and (constant.is_complex() or not constant.is_floating_point()
                                                  and constant.dtype != torch.int64):
            return f"multiplies by a tensor of dtype {constant.dtype}"
        shape, out = tuple(call.in_shapes[0]), tuple(call.output.shape)
        if shape != out:
            return (f"broadcasts an input of shape {shape} to {out}: the constant enlarges it; nrm reads products that "
                    "keep the input's shape")
        if isinstance(constant, torch.Tensor) and constant.dim() == len(out) and constant.shape[0] != 1:
            return "multiplies by a constant with a batch dimension (a gain per sample); give one per-sample shape"
        if self.divides(call) and bool((torch.as_tensor(constant) == 0).any()):
            return "divides by zero"
        return None

    def constant(self, call, like: torch.Tensor) -> torch.Tensor:
        """c broadcast to one sample's shape (the input's per-sample shape), as ``like``'s dtype."""
        a, b = self.operands(call)
        c = b if isinstance(a, Value) else a
        # a Python number as like's dtype directly: torch.as_tensor would round it to float32 first
        c = (c.detach() if isinstance(c, torch.Tensor) else torch.tensor(c, dtype=like.dtype)).to(like.dtype)
        c = c.to(like.device)
        per = tuple(like.shape[1:])
        if c.dim() == len(per) + 1:
            c = c[0]
        return torch.broadcast_to(c, per)

    def map(self, call, a, rule=None):
        c = self.constant(call, a)
        return DiagonalMap((1 / c if self.divides(call) else c).contiguous())

    def exact(self, call, a, rule=None) -> ExactMap:
        in_shape = tuple(a.shape[1:])
        c = to_fractions(self.constant(call, a.double()).reshape(-1))
        n = math.prod(in_shape)
        W = zeros_object((n, n))
        W[np.arange(n), np.arange(n)] = [1 / v if self.divides(call) else v for v in c] if n else []
        return ExactMap(W, np.eye(n, dtype=bool), None, in_shape)


class LayerScale(nn.Module):
    """relu(x) · γ with γ of shape (C, 1, …) (ConvNeXt's layer scale), relu(x) / γ, or relu(x) · 0.5
    (``how="number"``): an example of :class:`ConstantScale`."""

    def __init__(self, channels: int, how: str = "mul", dims: int = 2):
        super().__init__()
        self.how = how
        if how != "number":
            g = torch.Generator().manual_seed(3)
            shape = (channels,) + (1,) * (dims if how == "mul" else 0)
            self.gamma = nn.Parameter(torch.rand(shape, generator=g, dtype=torch.float64) + 0.5)

    def forward(self, x):
        h = torch.relu(x)
        if self.how == "number":
            return 0.5 * h
        return self.gamma * h if self.how == "mul" else h / self.gamma
