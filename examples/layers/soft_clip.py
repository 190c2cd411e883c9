"""A user's activation and its kind: σ(z) = z / (1 + |z|), relevance passing unchanged.

    nrm-verify check-layer examples/layers/soft_clip.py:SoftClipKind

An elementwise activation belongs to its neuron (NRM-SPEC §1): q(j | k) = δ_jk, the
identity rule. σ is not positively homogeneous, so LRP-0 through it is not Gradient × Input
(L9 does not apply); every other law holds.
"""

from __future__ import annotations

from torch import nn

import nrm


class SoftClip(nn.Module):
    def forward(self, x):
        return x / (1 + x.abs())


class SoftClipKind(nrm.layers.Elementwise):
    """σ(z) = z / (1 + |z|), q(j | k) = δ_jk."""

    modules = (SoftClip,)

    def evaluate(self, call, z):
        return z / (1 + z.abs())

    def examples(self):
        return [(SoftClip().eval(), (3,)), (SoftClip().eval(), (2, 2, 2))]
