"""A user project's tests, written with the nrm-verify pytest plugin (installed with
nrm-verify; no import or conftest needed for the fixtures and the marker)."""

from __future__ import annotations

import pytest
import torch
from my_rules import AdaptiveEpsilon
from torch import nn

import nrm


def small_model() -> nn.Sequential:
    g = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2, stride=1), nn.Flatten(),
                          nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.double().eval()


def test_my_rule_keeps_every_law_on_my_model(assert_laws):
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert_laws(small_model(), x, 0, {nn.Linear: AdaptiveEpsilon(0.05), nn.Conv2d: nrm.rules.Gamma(0.25)})


def test_the_usual_preset_keeps_every_law_on_my_model(assert_laws):
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_laws(small_model(), x, 1, nrm.presets.EpsilonGammaFlat())


def test_my_rule_is_sound(assert_rule_sound):
    assert_rule_sound(AdaptiveEpsilon(0.05), only=["L1", "L7"])


@pytest.mark.nrm_slow
def test_my_rule_is_sound_thoroughly(assert_rule_sound, nrm_profile):
    assert nrm_profile == "thorough"
    assert_rule_sound(AdaptiveEpsilon(0.05), only=["L1"], max_examples=40)
