"""3-d convolutions and pooling (video and volumetric models: torchvision's r3d_18, mc3_18,
r2plus1d_18): ``F.conv3d`` (``Conv``), ``F.max_pool3d`` (``MaxPool``), ``F.avg_pool3d``
(``AvgPool``), ``F.adaptive_avg_pool3d`` (``AdaptiveAvgPool``) and ``nn.BatchNorm3d``, folded
into the convolution before it or a diagonal layer of its own. Checked as every kind is:
engine = exact oracle = explicit reference at every layer under several rules, L1, L9, batch
invariance, the rule keys (``nn.Conv3d``, ``nn.BatchNorm3d``); check-layer runs on the kinds'
3-d examples in ``tests/test_layers.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from agreement import agree
from torch import nn

import nrm
from nrm_verify.laws.limits import gradient_x_input

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = {"LRP-0": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "gamma": nrm.rules.Gamma(0.25),
         "EpsilonPlusFlat": nrm.presets.EpsilonPlusFlat(), "EpsilonAlpha2Beta1": nrm.presets.EpsilonAlpha2Beta1()}


class Clip(nn.Module):
    """A small video classifier on (B, 2, T, H, W): conv3d → BN3d (folded) → relu → max_pool3d →
    BN3d → relu (a standalone norm) → conv3d (strided in time) → avg_pool3d → adaptive pool → head."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv3d(2, 3, (2, 2, 2), padding=1), nn.BatchNorm3d(3)
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.bn2 = nn.BatchNorm3d(3)
        self.conv2 = nn.Conv3d(3, 2, (1, 1, 1), stride=(2, 1, 1))
        self.gap = nn.AdaptiveAvgPool3d((1, 2, 1))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.pool(torch.relu(self.bn1(self.conv1(x))))
        h = self.conv2(torch.relu(self.bn2(h)))
        h = F.avg_pool3d(torch.relu(h), (1, 1, 2))
        return self.head(self.gap(h).flatten(1))


def _clip(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = Clip().to(D)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
        for bn in (model.bn1, model.bn2):
            bn.running_mean.copy_(torch.randn(3, generator=g, dtype=D) * 0.1)
            bn.running_var.copy_(torch.rand(3, generator=g, dtype=D) + 0.5)
    return model.eval()


def _video(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 2, 3, 4, 5, dtype=D, generator=torch.Generator().manual_seed(5))


def _kinds(m) -> list[str]:
    return [b.producer.layer_kind.name for b in m.network.blocks[1:] if b.producer is not None]


@pytest.mark.parametrize("rules", list(RULES))
def test_a_video_model_agrees_with_the_exact_oracle_and_the_explicit_reference_at_every_layer(rules):
    m = agree(_clip(), _video(), target=1, rules=RULES[rules])
    assert {"Conv", "MaxPool", "AvgPool", "AdaptiveAvgPool"} <= set(_kinds(m)), _kinds(m)
    for layer in m.layers:  # L1 at every layer
        total = m.marginal(layer).flatten(1).sum(1) + m.absorbed(layer)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


def test_lrp0_is_gradient_x_input_and_each_clip_its_own_measure():
    model, x = _clip(), _video(batch=3)
    assert gradient_x_input(model, x, 2).holds is True
    m = nrm.explain(model, x, target=2, check="full")
    for b in range(3):
        one = nrm.explain(model, x[b:b + 1], target=2)
        torch.testing.assert_close(m.marginal("input")[b:b + 1], one.marginal("input"), rtol=1e-12, atol=1e-14)


def test_the_rules_are_keyed_by_the_3d_module_types():
    """nn.Conv3d keys the convolutions; the standalone nn.BatchNorm3d is a diagonal layer keyed by its type."""
    rules = nrm.RuleMap(nrm.rules.Zero(), by_type={nn.Conv3d: nrm.rules.Gamma(0.5), nn.BatchNorm3d: nrm.rules.Flat()})
    m = nrm.explain(_clip(), _video(), target=0, rules=rules, check="full")
    by_kind = {}
    for b in m.network.blocks[1:]:
        if b.producer is not None:
            by_kind.setdefault(b.producer.layer_kind.name, []).append(type(b.rule).__name__)
    assert by_kind["Conv"] == ["Gamma", "Gamma"], by_kind
    assert "Flat" in sum(by_kind.values(), []), by_kind
