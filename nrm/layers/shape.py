"""Shape kinds: the same neurons under another per-sample shape, and concatenations.

A reshape renames neurons (q = 1 to the one neuron it is); a concatenation joins branches
into one layer whose parts are the branches' neurons (q = 1 to each part). The batch
dimension stays first and is never mixed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..recorded import Value
from .base import Concat, Reshape


class View(Reshape):
    """``view``, ``reshape``, ``flatten``, ``squeeze``, ``unsqueeze`` that keep the batch
    dimension first: each sample's neurons in row-major order under another shape."""

    functions = (torch.Tensor.view, torch.Tensor.reshape, torch.Tensor.flatten, torch.flatten, torch.reshape,
                 torch.Tensor.view_as, torch.Tensor.reshape_as, torch.Tensor.squeeze, torch.squeeze,
                 torch.Tensor.unsqueeze, torch.unsqueeze)

    def examples(self):
        return [(nn.Flatten().eval(), (2, 2, 2)), (Unflatten().eval(), (6,))]

    def accepts(self, call):
        before, after = tuple(call.in_shapes[0]), tuple(call.output.shape)
        if not after or after[0] != before[0]:
            return (f"changes the batch dimension ({before} → {after}); nrm keeps it first "
                    "(x.flatten(1), x.view(x.size(0), -1))")
        return None


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
