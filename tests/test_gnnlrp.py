"""The GNN-LRP reference (nrm_verify.references.gnnlrp) on its own, and L15 through nrm_verify.laws.

The reference is checked against the exact numbers of NRM-SPEC §6 (independently of the
engine), then against the engine on generated networks for every built-in rule and
preset, for single walks, walk sets through chosen neurons and general events; a broken
kernel in the reference must make L15 fail, and relevance-reading rules and unreadable
models are "not applicable" with the reason.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

import nrm
from nrm_verify import laws
from nrm_verify.properties import strategies as S
from nrm_verify.references import gnnlrp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "rules"))
from leaky import BiasDroppingZero  # noqa: E402
from relevance_dependent import RelevanceGatedZPlus  # noqa: E402
from sign_aware import SignAwareGammaEpsilon  # noqa: E402

RULES = ("zero", "epsilon", "gamma", "zplus", "alphabeta", "wsquare", "flat", "zbox")
PRESETS = tuple(nrm.presets.PRESETS)
NONNEGATIVE = ("gamma", "zplus")


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add start-up cost


def worked_example(bias=(0.0, 0.0)):
    """NRM-SPEC §6: x = (1, 2), h = ReLU(W1 x + b1), y = h1 − h2."""
    first = torch.nn.Linear(2, 2)
    second = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 1.0], [3.0, -1.0]]))
        first.bias.copy_(torch.tensor(bias))
        second.weight.copy_(torch.tensor([[1.0, -1.0]]))
    model = torch.nn.Sequential(first, torch.nn.ReLU(), second).double().eval()
    return model, torch.tensor([[1.0, 2.0]], dtype=torch.float64)


def test_walk_relevance_of_the_worked_example_is_f_times_the_walk_measure():
    model, x = worked_example()
    f = 2.0  # y = h1 − h2 = 3 − 1
    expected = {(0, 0): 0.5, (1, 0): 1.0, (0, 1): -1.5, (1, 1): 1.0}  # μ of the walks (x_i, h_k, y)
    for (i, k), mu in expected.items():
        got = gnnlrp.walk_relevance(model, x, 0, [i, k, 0], nrm.rules.Zero())
        assert float(got) == pytest.approx(f * mu, abs=1e-12), (i, k)
    # walk sets: through h2 (any input) and through x1 (any hidden unit); marginals (−1, 2) at the input
    assert float(gnnlrp.walk_relevance(model, x, 0, {"0": [1]}, nrm.rules.Zero())) == pytest.approx(f * -0.5)
    assert float(gnnlrp.walk_relevance(model, x, 0, {"input": [0]}, nrm.rules.Zero())) == pytest.approx(f * -1.0)
    assert float(gnnlrp.walk_relevance(model, x, 0, {"input": [1]}, nrm.rules.Zero())) == pytest.approx(f * 2.0)


def test_the_absorber_of_the_worked_example_with_bias_and_epsilon():
    """With b1 = (1, 0): layer 0 (x1, x2, ⊥) = (−2/3, 4/3, 1/3), f = 3; without bias and with
    ε = 1/10 at the output only: (−20/21, 40/21, 1/21), f = 2."""
    model, x = worked_example(bias=(1.0, 0.0))
    f = 3.0
    for neuron, mu in ((0, -2 / 3), (1, 4 / 3), (None, 1 / 3)):
        got = gnnlrp.walk_relevance(model, x, 0, {"input": [neuron]}, nrm.rules.Zero())
        assert float(got) == pytest.approx(f * mu, abs=1e-12)
    model, x = worked_example()
    f = 2.0
    rules = {"0": nrm.rules.Zero(), "2": nrm.rules.Epsilon(0.1)}
    for neuron, mu in ((0, -20 / 21), (1, 40 / 21), (None, 1 / 21)):
        got = gnnlrp.walk_relevance(model, x, 0, {"input": [neuron]}, rules)
        assert float(got) == pytest.approx(f * mu, abs=1e-12)


def test_gamma_and_zplus_kernels_of_the_worked_example():
    """γ = 1 on both layers: layer 0 (1/10, 9/10); z⁺: layer 1 (1, 0), layer 0 (1/3, 2/3)."""
    model, x = worked_example()
    f = 2.0
    for rule, layer, values in ((nrm.rules.Gamma(1.0), "input", (0.1, 0.9)), (nrm.rules.ZPlus(), "0", (1.0, 0.0)),
                                (nrm.rules.ZPlus(), "input", (1 / 3, 2 / 3))):
        got = [float(gnnlrp.walk_relevance(model, x, 0, {layer: [j]}, rule)) for j in range(2)]
        assert got == pytest.approx([f * v for v in values], abs=1e-12), (rule, layer)


def _case_strategy(config: str):
    if config in PRESETS:
        rules = S.presets([config], low=-2.0, high=2.0)
        return S.cases(S.networks(), rules=lambda net: rules)
    if config == "zbox":
        first, others = S.rules(["zbox"], low=-1.0, high=1.0), S.rules(["epsilon", "zero"])

        def box_first(net):
            rest = net.linear_layers()[1:]
            return st.builds(lambda f, o: {nrm.FIRST: f, **{n: o for n in rest}}, first, others)

        return S.cases(S.networks(), input_kind="box", low=-1.0, high=1.0, rules=box_first)
    rule = S.rules([config])
    if config in NONNEGATIVE:
        return S.cases(S.networks(activations=("relu",)), input_kind="nonnegative", rules=lambda net: rule)
    return S.cases(S.networks(), rules=lambda net: rule)


def _walk_sets(data, case):
    """{layer: neurons (None = ⊥)} on one to three layers, aliases included."""
    table = case.network.layers()
    names = data.draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=3, unique=True), label="layers")
    out = {}
    for name in names:
        l, shape = table[name]
        n = 1
        for s in shape:
            n *= s
        choices = list(range(n)) + ([None] if l < len(case.network.canonical()) - 1 else [])
        out[name] = data.draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3, unique=True), label=name)
    return out


@pytest.mark.parametrize("config", RULES + PRESETS)
def test_l15_walk_relevance_for_every_rule_and_preset(config):
    held = []

    @settings(settings.default, max_examples=max(4, settings.default.max_examples // 2))
    @given(case=_case_strategy(config), data=st.data())
    def run(case, data):
        m = case.measure()
        walk = data.draw(S.walks(m), label="walk")
        checks = [walk, _walk_sets(data, case), data.draw(S.events(case.network), label="event")]
        for walks in checks:
            r = laws.walk_relevance(case.model, case.x, case.target, walks, case.rules)
            note(str(r))
            assert r.holds is True, str(r)
            held.append(r.measured)

    run()
    assert any(v != 0 for v in held), f"every walk relevance was 0 for {config}: the test checked nothing"


def test_l15_holds_for_a_user_rule_through_its_own_kernel():
    model, x = worked_example(bias=(1.0, -0.5))
    r = laws.walk_relevance(model, x, 0, [1, 0, 0], SignAwareGammaEpsilon(0.5, 1e-3))
    assert r.holds is True and r.measured != 0, str(r)


def test_l15_holds_for_a_user_rule_derived_from_its_shares():
    """A user rule with no column of its own: the reference derives its kernel from shares() and
    the conventions (nrm_verify.references.derived, shared with the explicit LRP reference):
    LRP-ε by parts, c = a w⁺ + a w⁻, on the worked example = Epsilon(0.1)'s walk relevance."""
    class EpsilonByParts(nrm.rules.Rule):
        def shares(self):
            parts = (nrm.rules.Part(nrm.rules.identity, nrm.rules.positive),
                     nrm.rules.Part(nrm.rules.identity, nrm.rules.negative))
            return (nrm.rules.Share(parts, nrm.rules.identity),)

    model, x = worked_example(bias=(1.0, -0.5))
    rule = EpsilonByParts(stabilizer=0.1)
    r = laws.walk_relevance(model, x, 0, [1, 0, 0], rule)
    assert r.holds is True and r.measured != 0, str(r)
    by_parts = gnnlrp.walk_relevance(model, x, 0, {"input": [0, 1]}, rule)
    assert float(by_parts) == pytest.approx(float(gnnlrp.walk_relevance(model, x, 0, {"input": [0, 1]},
                                                                        nrm.rules.Epsilon(0.1))), rel=1e-13)


def test_the_reference_keeps_a_leaking_rule_leaking():
    """BiasDroppingZero forgets its bias share; the reference uses the rule's own q(⊥ | k) = 0,
    so the input's neurons and ⊥ carry 2 of f = 3: the bias share 1/4 of h1's 4/3 is lost
    (x1: 4/3 · 1/4 − 1/3 · 3 = −2/3, x2: 4/3 · 1/2 + 1/3 · 2 = 4/3, ⊥: 0)."""
    model, x = worked_example(bias=(1.0, 0.0))
    rule = BiasDroppingZero()
    got = [float(gnnlrp.walk_relevance(model, x, 0, {"input": [j]}, rule)) for j in (0, 1, None)]
    assert got == pytest.approx([3 * -2 / 3, 3 * 4 / 3, 0.0], abs=1e-12)


def test_l15_fails_when_the_reference_kernel_is_broken(monkeypatch):
    """The law can fail: a reference that forgets the bias in LRP-0's denominator disagrees."""
    original = gnnlrp.table_kernel

    def broken(rule, a, W, b, S):
        return original(rule, a, W, torch.zeros_like(b), S)

    monkeypatch.setattr(gnnlrp, "table_kernel", broken)
    model, x = worked_example(bias=(1.0, 0.0))
    r = laws.walk_relevance(model, x, 0, {"input": [0]}, nrm.rules.Zero())
    assert r.holds is False and r.deviation > 1e-3, str(r)


def test_l15_is_not_applicable_to_a_relevance_reading_rule():
    model, x = worked_example()
    r = laws.walk_relevance(model, x, 0, [0, 0, 0], RelevanceGatedZPlus())
    assert r.holds is None and "reads the incoming relevance" in r.detail
    with pytest.raises(gnnlrp.UnsupportedRuleError, match="reads the incoming relevance"):
        gnnlrp.walk_relevance(model, x, 0, [0, 0, 0], RelevanceGatedZPlus())


def test_the_reference_refuses_a_model_it_cannot_read():
    from nrm_verify.zoo.architectures import resnet

    model = resnet("basic", seed=0, dtype=torch.float64)
    with pytest.raises(gnnlrp.UnsupportedModelError, match="sequential"):
        gnnlrp.read_layers(model, torch.zeros(1, 3, 8, 8, dtype=torch.float64))


def test_a_walk_of_the_wrong_length_is_a_clear_error():
    model, x = worked_example()
    with pytest.raises(ValueError, match="one neuron per layer"):
        gnnlrp.walk_relevance(model, x, 0, [0, 0], nrm.rules.Zero())
