"""Products of activations: ``a * b`` of two input-derived tensors (squeeze-excitation gates,
``x * sigmoid(g(x))``, gated units), read by :class:`~nrm.layers.base.Product`.

A product with a constant (a parameter, a number) is a diagonal linear map, not a product of
activations: :class:`Multiply` refuses it, so that a kind for it (a layer scale) can read it.
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from ..recorded import Value
from .base import Product, seeded


class Multiply(Product):
    """``a * b``, ``torch.mul``, ``Tensor.mul``, ``a *= b`` of two input-derived tensors whose
    shapes broadcast to the output's, batch dimension included (a factor (B, C, 1, 1) against
    (B, C, H, W)). See :class:`~nrm.layers.base.Product` for the kernel and the ``split``.

    Definition::

        o_k = Π_i a⁽ⁱ⁾_{src_i(k)},   q(a⁽ⁱ⁾_{src_i(k)} | o_k) = θ_i(k),   q(⊥ | o_k) = 1 − Σ_i θ_i(k)

    with θ fixed ("signal": the gate 0, "equal": 1/n; q(⊥) = 0) or, for "proportional",
    θ_i(k) = a⁽ⁱ⁾_{src_i(k)} / (S_k + ε sign S_k), S_k = Σ_j a⁽ʲ⁾_{src_j(k)}.
    """

    functions = (torch.mul, torch.Tensor.mul, torch.Tensor.mul_, torch.Tensor.__mul__, torch.Tensor.__rmul__,
                 torch.Tensor.__imul__, operator.mul)

    def examples(self):
        out = [(Gate(2).eval(), (2, 3, 3))]
        # two branches and no gate: ambiguous under "signal"
        return out + [(Bilinear(3).eval(), (3,))] if self.split != "signal" else out

    def accepts(self, call):
        operands = [call.args[0] if call.args else call.kwargs.get("input"),
                    call.args[1] if len(call.args) > 1 else call.kwargs.get("other")]
        if not all(isinstance(o, Value) for o in operands):
            return ("multiplies an input-derived tensor by a constant (a parameter or a number): a diagonal linear "
                    "map, not a product of activations")
        out = tuple(call.output.shape)
        for shape in call.in_shapes:
            shape = tuple(shape)
            if len(shape) != len(out) or shape[0] != out[0]:
                return (f"multiplies tensors of shapes {[tuple(s) for s in call.in_shapes]}; nrm reads products whose "
                        "factors have the output's number of dimensions and its batch size (broadcast over size-1 "
                        "dimensions only)")
        promoted = call.in_dtypes[0]
        for d in call.in_dtypes[1:]:
            promoted = torch.promote_types(promoted, d)
        if call.output.dtype != promoted or not all(d.is_floating_point for d in call.in_dtypes):
            return (f"multiplies tensors of dtypes {[str(d) for d in call.in_dtypes]} into {call.output.dtype}; nrm "
                    "reads floating factors (of different floating dtypes: T5's norm, read widened)")
        return None


class Gate(nn.Module):
    """A squeeze-excitation gate, x · sigmoid(fc(mean_hw(relu(x)))) (an example of :class:`Multiply`)."""

    def __init__(self, c: int):
        super().__init__()
        self.fc = seeded(nn.Conv2d(c, c, 1), 2)

    def forward(self, x):
        h = torch.relu(x)
        return h * torch.sigmoid(self.fc(h.mean((2, 3), keepdim=True)))


class Bilinear(nn.Module):
    """relu(A x) · (B x): a product of two branches (an example of :class:`Multiply` with
    ``split="equal"`` or ``"proportional"``; under ``"signal"`` it is ambiguous)."""

    def __init__(self, n: int):
        super().__init__()
        self.a, self.b = seeded(nn.Linear(n, n), 3), seeded(nn.Linear(n, n), 4)

    def forward(self, x):
        return torch.relu(self.a(x)) * self.b(x)
