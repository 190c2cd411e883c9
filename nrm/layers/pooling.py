"""Winner-takes-all pooling: each output is the maximal input of its window, q = 1 to it."""

from __future__ import annotations

import torch.nn.functional as F

from ..recorded import dispatch_name
from .base import Winner


class MaxPool(Winner):
    """``F.max_pool1d`` / ``2d`` / ``3d`` (``nn.MaxPool1d`` / ``2d`` / ``3d``):
    q(winner_k | k) = 1, where the winner is the first maximal element of the window in
    row-major order (torch's index).

    Definition::

        z_{c,p} = max_{i ∈ window(p)} a_{c,i},   q(a_{c,i*} | z_{c,p}) = 1,  i* = first argmax
    """

    functions = (F.max_pool1d, F.max_pool2d, F.max_pool3d)

    def examples(self):
        from torch import nn

        return [(nn.MaxPool2d(2).eval(), (2, 4, 4)), (nn.MaxPool2d(3, stride=2, padding=1).eval(), (1, 5, 5)),
                (nn.MaxPool1d(3, stride=2, padding=1, dilation=2).eval(), (2, 9)),
                (nn.MaxPool3d((1, 2, 2), stride=(1, 2, 1)).eval(), (2, 2, 4, 3))]

    def spatial(self, call) -> int:
        return {"max_pool1d": 1, "max_pool3d": 3}.get(dispatch_name(call.func, ""), 2)

    def params(self, call):
        """(kernel, stride, padding, dilation, ceil_mode), each a tuple of one entry per spatial axis."""
        n = self.spatial(call)
        k = _ntuple(call.arg(1, "kernel_size"), n)
        s = call.arg(2, "stride", None)
        return (k, _ntuple(s, n) if s not in (None, [], ()) else k, _ntuple(call.arg(3, "padding", 0), n),
                _ntuple(call.arg(4, "dilation", 1), n), call.arg(5, "ceil_mode", False))

    def accepts(self, call):
        if call.arg(6, "return_indices", False):
            return "returns the indices as well (return_indices=True); use return_indices=False"
        n = self.spatial(call)
        if call.output.dim() != n + 2:
            return f"expects (batch, channels, *{n} spatial), got output shape {tuple(call.output.shape)}"
        return None

    def winners(self, call, a):
        k, s, p, d, ceil = self.params(call)
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[self.spatial(call) - 1]
        out, idx = pool(a, k, s, p, d, ceil, return_indices=True)
        return idx.flatten(2), out


def _ntuple(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n
