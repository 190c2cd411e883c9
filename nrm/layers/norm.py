"""Normalizations: batch norm folded into the map before it; local response normalization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..linear import ConvMap, DenseMap, LinearMap
from ..lrn import LRNParams, expansion_of, lrn_map
from .base import BatchNorm, ExactMap, Linear, exact_from_map, seeded, to_fractions, zeros_object


class BatchNormFold(BatchNorm):
    """``F.batch_norm`` with running statistics (``nn.BatchNorm1d/2d`` in eval mode), folded
    into the ``Linear``/``Conv`` right before it:

    Definition::

        BN(z) = γ (z − μ) / √(σ² + ε) + β  ⇒  W' = s W,  b' = s (b − μ) + β,  s = γ / √(σ² + ε)
    """

    functions = (F.batch_norm,)

    def examples(self):

        conv, bn = seeded(nn.Conv2d(2, 2, 1)), nn.BatchNorm2d(2).double()
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([1.5, -0.5]))
            bn.bias.copy_(torch.tensor([0.2, -0.1]))
            bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
            bn.running_var.copy_(torch.tensor([0.8, 1.3]))
        return [(nn.Sequential(conv, bn).eval(), (2, 3, 3))]

    def params(self, call):
        return (call.arg(1, "running_mean"), call.arg(2, "running_var"), call.arg(3, "weight", None),
                call.arg(4, "bias", None), float(call.arg(7, "eps", 1e-5)))

    def accepts(self, call):
        mean, var = call.arg(1, "running_mean"), call.arg(2, "running_var")
        if mean is None or var is None:
            return "has no running statistics (track_running_stats=False), so it depends on the batch"
        if call.arg(5, "training", False):
            return "normalizes with the batch's statistics (training mode); call model.eval()"
        return None

    def scale_shift(self, call) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t) with BN(z) = s z + t per channel."""
        mean, var, gamma, beta, eps = self.params(call)
        std = torch.sqrt(var.detach() + eps)
        scale = (gamma.detach() if gamma is not None else torch.ones_like(std)) / std
        shift = (beta.detach() if beta is not None else torch.zeros_like(std)) - mean.detach() * scale
        return scale, shift

    def fold(self, call, lmap: LinearMap) -> LinearMap:
        """The map followed by this batch norm, as one map (channels are dim 0 of the weight)."""
        mean, var, gamma, beta, eps = self.params(call)
        std = torch.sqrt(var.detach() + eps)
        scale = (gamma.detach() if gamma is not None else torch.ones_like(std)) / std
        shift = beta.detach() if beta is not None else torch.zeros_like(std)
        weight = lmap.weight * scale.view((-1,) + (1,) * (lmap.weight.dim() - 1))
        bias = lmap.bias if lmap.bias is not None else torch.zeros_like(std)
        bias = (bias - mean.detach()) * scale + shift
        if isinstance(lmap, DenseMap):
            return DenseMap(weight, bias)
        return ConvMap(weight, bias, lmap.stride, lmap.padding, lmap.dilation, lmap.groups)

    def fold_exact(self, call, emap: ExactMap) -> ExactMap:
        """The same fold on an exact map: W' = W s, b' = (b − μ) s + β per channel (dim 0 of
        the layer). s is irrational in general; it is taken as the float64 value."""
        import math

        import numpy as np

        mean, var, gamma, beta, eps = self.params(call)
        s = to_fractions(gamma.detach().double() / torch.sqrt(var.detach().double() + eps) if gamma is not None
                         else 1 / torch.sqrt(var.detach().double() + eps))
        mu = to_fractions(mean)
        b = to_fractions(beta) if beta is not None else zeros_object(len(s))
        per = math.prod(emap.out_shape) // emap.out_shape[0]
        channel = np.arange(math.prod(emap.out_shape)) // per
        bias = emap.bias if emap.bias is not None else zeros_object(len(channel))
        return ExactMap(emap.weight * s[channel][None, :], emap.connected, (bias - mu[channel]) * s[channel]
                        + b[channel], emap.out_shape)


class LocalResponseNorm(Linear):
    """``F.local_response_norm`` (``nn.LocalResponseNorm``): a linear map built at the input
    it reads, b = a · (κ + α/n Σ_window a²)^(−β), with the expansions and rules of
    :mod:`nrm.lrn` (Binder et al., ICANN 2016)."""

    functions = (F.local_response_norm,)
    rule_types = (nn.LocalResponseNorm,)

    def examples(self):
        return [(nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0).eval(), (4, 2, 2))]

    def params(self, call):

        return LRNParams(int(call.arg(1, "size")), float(call.arg(2, "alpha", 1e-4)), float(call.arg(3, "beta", 0.75)),
                         float(call.arg(4, "k", 1.0)))

    def map(self, call, a, rule=None):

        return lrn_map(self.params(call), a, expansion_of(rule))

    def exact(self, call, a, rule=None) -> ExactMap:
        return exact_from_map(self.map(call, a.double(), rule), tuple(a.shape[1:]))
