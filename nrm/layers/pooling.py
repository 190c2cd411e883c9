"""Winner-takes-all pooling: each output is the maximal input of its window, q = 1 to it."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Winner


class MaxPool(Winner):
    """``F.max_pool2d`` (``nn.MaxPool2d``): q(winner_k | k) = 1, where the winner is the
    first maximal element of the window in row-major order (torch's index)."""

    functions = (F.max_pool2d,)

    def examples(self):
        from torch import nn

        return [(nn.MaxPool2d(2).eval(), (2, 4, 4)), (nn.MaxPool2d(3, stride=2, padding=1).eval(), (1, 5, 5))]

    def params(self, call):
        k = call.arg(1, "kernel_size")
        s = call.arg(2, "stride", None)
        return (k, s if s not in (None, [], ()) else k, call.arg(3, "padding", 0), call.arg(4, "dilation", 1),
                call.arg(5, "ceil_mode", False))

    def accepts(self, call):
        if call.arg(6, "return_indices", False):
            return "returns the indices as well (return_indices=True); use return_indices=False"
        if call.output.dim() != 4:
            return f"expects (batch, channels, H, W), got output shape {tuple(call.output.shape)}"
        return None

    def winners(self, call, a):
        k, s, p, d, ceil = self.params(call)
        out, idx = F.max_pool2d(a, k, s, p, d, ceil, return_indices=True)
        return idx.flatten(2), out
