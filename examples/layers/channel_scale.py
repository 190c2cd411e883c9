"""A user's layer and its kind: a learned per-channel scale, y_c = s_c · x_c.

    nrm-verify check-layer examples/layers/channel_scale.py:ChannelScaleKind

It is a diagonal linear map, so every rule applies to it (γ favours the channels with
s_c > 0, z⁺ keeps only them). Registering the kind makes nrm record each call of
``ChannelScale`` as one operation and build its map from ``map()``.
"""

from __future__ import annotations

import torch
from torch import nn

import nrm
from nrm.linear import DiagonalMap


class ChannelScale(nn.Module):
    """y[:, c, ...] = scale[c] · x[:, c, ...] (ConvNeXt's layer scale, a learned gain)."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(-1.5, 2.0, channels))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape)


class ChannelScaleKind(nrm.layers.Linear):
    """Definition::

        z_{c,p} = s_c · a_{c,p}          (a diagonal linear map; no bias)
    """

    modules = (ChannelScale,)
    rule_types = (ChannelScale,)

    def map(self, call, a, rule=None):
        return DiagonalMap(call.module.scale.detach())

    def examples(self):
        return [(ChannelScale(3).double().eval(), (3, 2, 2)), (ChannelScale(4).double().eval(), (4,))]
