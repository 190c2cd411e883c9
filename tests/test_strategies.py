"""The hypothesis strategies of :mod:`nrm_verify.properties.strategies`: what they draw is valid, its
repr is Python that rebuilds it exactly, and the special structures (dead units, tied
weights, near-zero pre-activations, every supported module) are really drawn."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from torch import nn

import nrm
from nrm import At
from nrm.engine import Engine
from nrm.graph import ProperFFNN
from nrm_verify.properties import codegen
from nrm_verify.properties import strategies as S
from nrm_verify.properties.strategies import Case, Input  # noqa: F401 — names the reprs use

NAMESPACE = {"torch": torch, "nn": nn, "nrm": nrm, "At": At, "Case": Case,
             **{n: getattr(codegen, n) for n in ("linear", "conv1d", "conv2d", "batchnorm1d", "batchnorm2d",
                                                 "combine")}}
from collections import OrderedDict  # noqa: E402

NAMESPACE["OrderedDict"] = OrderedDict


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add start-up cost


def _few(n: int = 10) -> settings:
    return settings(settings.default, max_examples=min(settings.default.max_examples, n))


FIRST_FOUND = settings(database=None, max_examples=3000, phases=[Phase.generate], derandomize=True)
"""find() without shrinking: the first drawn example that has the feature."""


def _same_module(a: nn.Module, b: nn.Module) -> None:
    assert [(n, type(m)) for n, m in a.named_modules()] == [(n, type(m)) for n, m in b.named_modules()]
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k  # bit for bit
    assert not b.training


@_few(15)
@given(net=S.networks())
def test_a_network_repr_rebuilds_it_bit_for_bit(net):
    rebuilt = eval(repr(net), NAMESPACE)  # noqa: S307
    _same_module(net.model, rebuilt)
    x = torch.linspace(-1, 1, math.prod(net.input_shape), dtype=torch.float64).reshape((1,) + net.input_shape)
    assert torch.equal(net.model(x), rebuilt(x))
    # the core accepts every drawn architecture
    ProperFFNN(net.model, torch.zeros((1,) + net.input_shape, dtype=torch.float64))


@_few()
@given(data=st.data(), kind=st.sampled_from(S.INPUT_KINDS))
def test_inputs_are_rebuilt_exactly_and_respect_their_kind(data, kind):
    drawn = data.draw(S.inputs((2, 3), kind, low=-0.5, high=0.75))
    x = drawn.x
    assert x.dtype == torch.float64 and x.shape[1:] == (2, 3) and 1 <= x.shape[0] <= 2
    assert torch.equal(eval(repr(drawn), NAMESPACE), x)  # noqa: S307
    if kind == "nonnegative":
        assert bool((x >= 0).all())
    if kind == "box":
        assert bool(((x >= -0.5) & (x <= 0.75)).all())


@_few()
@given(data=st.data())
def test_an_event_repr_is_the_expression_that_builds_it(data):
    net = data.draw(S.networks())
    ev = data.draw(S.events(net))
    rebuilt = eval(repr(ev), NAMESPACE)  # noqa: S307
    assert isinstance(rebuilt, nrm.Event) and rebuilt == ev
    names = set(net.layers())
    assert ev.layers() <= names  # only the model's layer names


@_few()
@given(rule=S.rules())
def test_rules_have_valid_parameters_and_code_reprs(rule):
    assert isinstance(rule, nrm.rules.Rule)
    assert eval(repr(rule), NAMESPACE) == rule  # noqa: S307
    w = codegen.Writer()
    assert eval(w.expr(rule), NAMESPACE) == rule  # noqa: S307


@_few()
@given(data=st.data())
def test_presets_and_assignments_rebuild_to_the_same_rule_per_layer(data):
    net = data.draw(S.networks())
    rules = data.draw(S.rule_assignments(net))
    rebuilt = eval(codegen.Writer().expr(rules), NAMESPACE)  # noqa: S307

    def per_layer(r):
        view = ProperFFNN(net.model, torch.zeros((1,) + net.input_shape, dtype=torch.float64))
        nrm.presets.assign(view, r)
        return [repr(b.rule) for b in view.linear_blocks()]

    assert per_layer(rules) == per_layer(rebuilt)


@_few()
@given(case=S.cases(n_events=2))
def test_a_case_repr_and_script_rebuild_the_same_measure(case):
    m = case.measure()
    assert bool((m.f != 0).all())  # the drawn target never has f_c(x) = 0
    again = eval(repr(case), NAMESPACE)  # noqa: S307
    _same_module(case.model, again.model)
    assert torch.equal(case.x, again.x) and again.target == case.target and again.events == case.events
    ns: dict = {}
    exec(case.script("value = m.measure(events)"), ns)  # noqa: S102
    assert torch.equal(ns["value"], m.measure(list(case.events)))


def test_mlps_shrink_to_one_linear_neuron():
    net = find(S.networks("mlp"), lambda n: True, settings=settings(database=None))
    (only,) = list(net.model.children())
    assert isinstance(only, nn.Linear) and tuple(only.weight.shape) == (1, 1)


def _linear_weights(net):
    return [m.weight for m in net.model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


@pytest.mark.parametrize("feature, predicate", [
    ("dead unit", lambda net: any(bool((w.reshape(w.shape[0], -1) == 0).all(1).any()) and w.shape[0] > 1
                                  for w in _linear_weights(net))),
    ("tied weights", lambda net: any(w.shape[0] > 1 and any(torch.equal(w[i], w[j]) and bool(w[i].any())
                                                           for i in range(w.shape[0]) for j in range(i))
                                     for w in _linear_weights(net))),
    ("no bias", lambda net: any(m.bias is None for m in net.model.modules() if isinstance(m, nn.Linear))),
    ("batch norm", lambda net: any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in net.model.modules())),
    ("leaky relu", lambda net: any(isinstance(m, nn.LeakyReLU) for m in net.model.modules())),
    ("conv2d and max-pool", lambda net: any(isinstance(m, nn.MaxPool2d) for m in net.model.modules())),
    ("avg-pool", lambda net: any(isinstance(m, nn.AvgPool2d) for m in net.model.modules())),
    ("adaptive avg-pool", lambda net: any(isinstance(m, nn.AdaptiveAvgPool2d) for m in net.model.modules())),
    ("conv1d", lambda net: any(isinstance(m, nn.Conv1d) for m in net.model.modules())),
    ("nested names", lambda net: any("." in name for name, _ in net.model.named_modules())),
    ("a non-quarter float weight", lambda net: any(bool(((w * 4) != (w * 4).round()).any())
                                                  for w in _linear_weights(net))),
])
def test_networks_contain_every_special_structure(feature, predicate):
    found = find(S.networks(), predicate, settings=FIRST_FOUND)
    assert predicate(found), feature


def _preactivations(case):
    engine = Engine(ProperFFNN(case.model, case.x[:1]))
    out = []
    for l, z in engine.z_nobias.items():
        bias = engine.maps[l].bias_for(z)
        out.append((z if bias is None else z + bias).reshape(-1))
    return torch.cat(out)


def test_cases_draw_near_zero_preactivations():
    found = find(S.cases(rules=lambda net: nrm.rules.Zero()),
                 lambda c: bool(((_preactivations(c).abs() < 1e-8) & (_preactivations(c) != 0)).any()),
                 settings=FIRST_FOUND)
    assert bool((_preactivations(found).abs() < 1e-8).any())


def test_cases_draw_units_dead_at_the_input():
    def dead(c):
        engine = Engine(ProperFFNN(c.model, c.x[:1]))
        hidden = [engine.values[l] for l in range(1, engine.net.depth)]
        return any(bool((h == 0).any()) and bool((h != 0).any()) for h in hidden)

    assert dead(find(S.cases(rules=lambda net: nrm.rules.Zero()), dead,
                     settings=FIRST_FOUND))


@_few()
@given(data=st.data(), case=S.cases(rules=lambda net: nrm.rules.Epsilon(0.01)))
def test_walks_follow_the_support_of_the_kernels(data, case):
    m = case.measure()
    walk = data.draw(S.walks(m))
    assert len(walk) == m.depth + 1
    assert float(m.walk(walk)[0]) != 0  # drawn from the top along non-zero kernel entries


def test_a_falsifying_example_prints_as_code():
    @settings(database=None, max_examples=50, derandomize=True)
    @given(case=S.cases(network=S.networks("mlp"), rules=lambda net: nrm.rules.Zero()))
    def fails(case):
        assert case.x.shape[1] < 2

    with pytest.raises(AssertionError) as info:
        fails()
    text = "\n".join(getattr(info.value, "__notes__", []))
    assert "Falsifying example" in text or "Failing test case" in text, text
    code = text[text.index("case=") + len("case="):].strip().rstrip(",").rstrip(")")
    case = eval(code[: code.rindex(")") + 1], NAMESPACE)  # noqa: S307
    assert isinstance(case, Case) and case.x.shape[1] == 2  # the shrunk case, rebuilt from its printout


@pytest.mark.parametrize("call, message", [
    (lambda: S.networks("transformer"), "kind is"),
    (lambda: S.networks(activations=("tanh",)), "activations are"),
    (lambda: S.inputs((2,), "sphere"), "kind is one of"),
    (lambda: S.inputs((2,), "box", low=1.0, high=0.0), "low <= high"),
    (lambda: S.numbers(1.0, -1.0), "low <= high"),
])
def test_bad_strategy_arguments_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
