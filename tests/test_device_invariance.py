"""CPU/CUDA invariance (NRM-SPEC §4, "invariances users rely on") through nrm_verify.laws.

On every device present the marginals at every layer must agree with the CPU's for every
built-in rule and preset on generated networks. With only the CPU the comparison is
skipped — after checking that the law then says "not applicable" with the reason.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note, settings

import nrm
from nrm_verify import laws
from nrm_verify.laws import invariance
from nrm_verify.properties import strategies as S

DEVICES = laws.available_devices()
RULES = ("zero", "epsilon", "gamma", "zplus", "alphabeta", "wsquare", "flat")
PRESETS = tuple(nrm.presets.PRESETS)


def _model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(12, 3)).double().eval()
    return model, torch.rand(2, 2, 4, 4, dtype=torch.float64)


def test_available_devices_lists_the_cpu_and_cuda_when_present():
    assert DEVICES[0] == "cpu"
    assert ("cuda" in DEVICES) == torch.cuda.is_available()


def test_one_device_is_reported_not_applicable_with_the_reason():
    model, x = _model()
    r = laws.device_invariance(model, x, 1, nrm.rules.Zero(), devices=["cpu"])
    assert r.holds is None and not r.applicable
    assert "only one device" in r.detail and "cuda" in r.detail.lower()
    if len(DEVICES) == 1:  # and the default on a CPU-only machine says the same
        default = laws.device_invariance(model, x, 1, nrm.rules.Zero())
        assert default.holds is None and "torch.cuda.is_available() is False" in default.detail


def test_the_comparison_can_fail(monkeypatch):
    """The same device twice agrees exactly; a second 'device' that got other rules does not."""
    model, x = _model()
    same = laws.device_invariance(model, x, 1, nrm.rules.Epsilon(0.01), devices=["cpu", "cpu"])
    assert same.holds is True and same.deviation == 0.0
    moved = []

    def other_rules_on_the_second_device(rules, device):
        moved.append(device)
        return rules if len(moved) == 1 else nrm.rules.Epsilon(0.02)

    monkeypatch.setattr(invariance, "_rules_on", other_rules_on_the_second_device)
    r = laws.device_invariance(model, x, 1, nrm.rules.Epsilon(0.01), devices=["cpu", "cpu"])
    assert r.holds is False and r.deviation > 1e-6, str(r)


def test_the_users_model_stays_where_it_is():
    model, x = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    laws.device_invariance(model, x, 1, nrm.rules.Zero(), devices=DEVICES + ["cpu"])
    assert all(torch.equal(before[k], v) and v.device.type == "cpu" for k, v in model.state_dict().items())


@pytest.mark.skipif(len(DEVICES) < 2, reason="only the CPU is present (torch.cuda.is_available() is False): "
                                             "nothing to compare; the not-applicable report is tested above")
@pytest.mark.parametrize("config", RULES + PRESETS)
def test_cpu_and_cuda_agree_on_generated_networks(config):
    if config in PRESETS:
        rules = S.presets([config], low=-2.0, high=2.0)
        strategy = S.cases(S.networks(), rules=lambda net: rules)
    elif config in ("gamma", "zplus"):
        rule = S.rules([config])
        strategy = S.cases(S.networks(activations=("relu",)), input_kind="nonnegative", rules=lambda net: rule)
    else:
        rule = S.rules([config])
        strategy = S.cases(S.networks(), rules=lambda net: rule)
    held = []

    @settings(settings.default, max_examples=max(4, settings.default.max_examples // 2))
    @given(case=strategy)
    def run(case):
        r = laws.device_invariance(case.model, case.x, case.target, case.rules)
        note(str(r))
        assert r.holds is True, str(r)
        held.append(r.holds)

    run()
    assert held
