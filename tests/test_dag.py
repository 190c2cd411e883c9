"""Models with branches (NRM-SPEC §1): residual sums, concatenations and fan-outs traced
with torch.fx, on the ResNet-, Inception- and DenseNet-style models of
:mod:`nrm_verify.zoo.architectures`.

Checked here on the engine alone: L1 at every layer of a branched model (the node's
neurons, the copies on the paths that bypass it, and the absorber sum to one); LRP-0 =
Gradient × Input at every layer (L9); the two semantics of an event on a branch layer
(``parallel=``); marginals with events below and above a layer (the up and down passes
agree with direct cylinder measures); names, rule assignment, errors that name the
operation, and the model left untouched (hooks never run, also not while tracing).
The independent explicit-LRP reference is compared in tests/test_reference.py.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

import nrm
from nrm import At
from nrm.rules import Epsilon, Gamma, Zero
from nrm_verify.zoo import architectures as A

MODELS = tuple(A.BUILDERS)
RULES = {
    "zero": lambda: Zero(),
    "epsilon": lambda: Epsilon(0.01),
    "EpsilonGammaFlat": lambda: nrm.presets.EpsilonGammaFlat(),
    "EpsilonPlusFlat": lambda: nrm.presets.EpsilonPlusFlat(),
    "EpsilonAlpha2Beta1": lambda: nrm.presets.EpsilonAlpha2Beta1(),
}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add start-up cost


def _case(name, seed=0, batch=2, size=8):
    model = A.BUILDERS[name](seed=seed, dtype=torch.float64)
    x = torch.randn(batch, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return model, x


def _inner_layers(m):
    return [n for n in m.layers if n not in ("output",)]


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("name", MODELS)
def test_normalization_at_every_layer(name, rules):
    """L1 on a branched model: Σ_j m_l(j) + bypassing(l) + m_l(⊥) = 1 at every layer."""
    model, x = _case(name)
    m = nrm.explain(model, x, target=1, rules=RULES[rules]())
    bypassed = 0.0
    for layer in _inner_layers(m):
        total = m.marginal(layer).reshape(x.shape[0], -1).sum(1) + m.bypassing(layer) + m.absorbed(layer)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-10, msg=layer)
        bypassed = max(bypassed, float(m.bypassing(layer).abs().max()))
    assert bypassed > 1e-3, "some layer must be bypassed by a skip or parallel path in these models"


def _grad_x_input_at_tips(model, x, target):
    """a ⊙ ∂f/∂a / f at the value of every module that ends a layer, by autograd on a copy."""
    twin = copy.deepcopy(model)
    seen: dict[str, tuple] = {}

    def keep(name):
        def hook(module, inputs, output):
            if name not in seen:  # a module called twice (a shared ReLU) names its first call
                output.retain_grad()
                # the value now: a later in-place `out += identity` changes the tensor, not its gradient
                seen[name] = (output, output.detach().clone())
        return hook

    for name, module in twin.named_modules():
        if name and not list(module.children()):
            module.register_forward_hook(keep(name))
    xx = x.clone().requires_grad_(True)
    y = twin(xx)[:, target]
    y.sum().backward()
    f = y.detach()
    out = {"input": xx.grad * x / f.reshape((-1,) + (1,) * (x.dim() - 1))}
    for name, (a, value) in seen.items():
        if a.grad is not None:
            out[name] = a.grad * value / f.reshape((-1,) + (1,) * (a.dim() - 1))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_lrp0_is_gradient_times_input_at_every_layer(name):
    """L9 on residual, Inception and DenseNet models with biases and folded batch norm."""
    model, x = _case(name, seed=3)
    m = nrm.explain(model, x, target=2)
    reference = _grad_x_input_at_tips(model, x, 2)
    checked = 0
    for layer, expected in reference.items():
        if layer not in m.layers:
            continue
        block = m.network.blocks[m.layer_index(layer)]
        tip = (block.trailing[-1] if block.trailing else block.producer or block).name
        if layer != "input" and layer != tip:
            continue  # a name inside a layer (a conv before its folded batch norm) is not the layer's value
        got = m.marginal(layer)
        torch.testing.assert_close(got, expected.reshape(got.shape), rtol=1e-9, atol=1e-11, msg=layer)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("name", MODELS)
def test_parallel_semantics(name):
    """At(l, S, parallel=True) = At(l, S) ∪ {bypasses l}; a bypassing walk never meets l's neurons."""
    model, x = _case(name, seed=4)
    m = nrm.explain(model, x, target=0, rules=nrm.presets.EpsilonGammaFlat())
    found = False
    for layer in _inner_layers(m)[1:]:
        skip = m.bypassing(layer)
        if float(skip.abs().max()) < 1e-6:
            continue
        found = True
        through = m(At(layer, channels=[0]))
        both = m(At(layer, channels=[0], parallel=True))
        torch.testing.assert_close(both, through + skip, rtol=0, atol=1e-12)
        torch.testing.assert_close(m(At(layer, channels=[0]) & At(layer, index=[], parallel=True)),
                                   torch.zeros_like(skip), rtol=0, atol=1e-15)
        # a heatmap of the walks through channel 0, and of those plus every bypassing walk
        h_through = m.marginal("input", within=At(layer, channels=[0]))
        h_both = m.marginal("input", within=At(layer, channels=[0], parallel=True))
        h_skip = m.marginal("input", within=At(layer, index=[], parallel=True))
        torch.testing.assert_close(h_both, h_through + h_skip, rtol=0, atol=1e-12)
    assert found


@pytest.mark.parametrize("name", MODELS)
def test_events_below_and_above_a_layer(name):
    """marginal(l, within=E) agrees with measures of cylinders, for E above and below l (up and down passes)."""
    model, x = _case(name, seed=5)
    m = nrm.explain(model, x, target=1, rules=nrm.presets.EpsilonPlusFlat())
    names = [n for n in _inner_layers(m) if n != "input"]
    picks = names[:: max(1, len(names) // 5)]
    for la, lb in itertools.combinations(picks, 2):
        lo, hi = sorted((la, lb), key=m.layer_index)
        if m.layer_index(lo) == m.layer_index(hi):
            continue
        for parallel in (False, True):
            below = At(lo, index=[0, 1], parallel=parallel)
            marg = m.marginal(hi, within=below).reshape(x.shape[0], -1)
            direct = m.measure([At(hi, index=[k]) & below for k in range(3)])
            torch.testing.assert_close(marg[:, :3].T, direct, rtol=0, atol=1e-12)
            above = At(hi, index=[0], parallel=parallel)
            marg = m.marginal(lo, within=above).reshape(x.shape[0], -1)
            direct = m.measure([At(lo, index=[k]) & above for k in range(3)])
            torch.testing.assert_close(marg[:, :3].T, direct, rtol=0, atol=1e-12)


def test_joint_marginals_on_a_residual_model():
    """L3 on a branched model: the row sums of a joint between two layers are the lower
    marginal restricted to walks through the upper node (walks that bypass it are not in
    the joint), and the column sums are the upper marginal restricted likewise."""
    model, x = _case("resnet-basic", seed=6)
    m = nrm.explain(model, x, target=0)
    lo, hi = "layer1.0.conv1", "layer2.0.conv2"
    J = m.joint(lo, hi)
    outside = m.marginal(hi, within=At(lo, index=[], absorber=True, parallel=True)).sum((2, 3))
    torch.testing.assert_close(J.sum(1), m.marginal(hi).sum((2, 3)) - outside, rtol=0, atol=1e-10)
    lo_through = m.marginal(lo, within=At(hi)).sum((2, 3))
    torch.testing.assert_close(J.sum(2), lo_through, rtol=0, atol=1e-10)


def test_names_of_a_traced_model():
    model, x = _case("resnet-basic")
    m = nrm.explain(model, x, target=0)
    for name in ("input", "conv1", "bn1", "relu", "maxpool", "layer1.0.conv1", "layer1.0.bn2", "add",
                 "layer2.0.downsample.0", "layer2.0.downsample.1", "add_1", "avgpool", "flatten", "fc", "output"):
        assert name in m.layers, (name, m.layers)
    # the shared ReLU module of a block: its second call is named by the fx node
    assert "layer1_0_relu_1" in m.layers
    assert m.layer_index("layer1.0.conv1") < m.layer_index("add") < m.layer_index("fc")
    assert isinstance(m.rule("add"), Zero)


def test_rules_for_sums_and_first_layers():
    model, x = _case("inception")
    rules = {nrm.Sum: Epsilon(0.5), nn.Conv2d: Gamma(0.25), nn.Linear: Epsilon(1e-6), nrm.FIRST: nrm.rules.Flat(),
             nn.AdaptiveAvgPool2d: Zero()}
    m = nrm.explain(model, x, target=0, rules=rules)
    assert isinstance(m.rule("stem.0"), nrm.rules.Flat)  # the only layer reading the input
    assert isinstance(m.rule("block.branch1.0"), Gamma)
    r = nrm.explain(*_case("resnet-basic"), target=0, rules=nrm.RuleMap(Zero(), by_type={nrm.Sum: Epsilon(0.5)}))
    assert isinstance(r.rule("add"), Epsilon) and isinstance(r.rule("add_1"), Epsilon)
    assert isinstance(r.rule("fc"), Zero)
    p = nrm.explain(*_case("resnet-basic"), target=0, rules=nrm.presets.EpsilonPlusFlat())
    assert isinstance(p.rule("add"), Zero) and isinstance(p.rule("conv1"), nrm.rules.Flat)


def test_rule_on_the_sum_changes_only_what_passes_it():
    """ε on the residual sums moves mass to their absorbers; the marginals above the first
    sum are unchanged."""
    model, x = _case("resnet-basic", seed=7)
    plain = nrm.explain(model, x, target=0)
    eps = nrm.explain(model, x, target=0, rules=nrm.RuleMap(Zero(), by_type={nrm.Sum: Epsilon(10.0)}))
    torch.testing.assert_close(eps.marginal("fc"), plain.marginal("fc"))
    assert float((eps.absorbed("layer1.0.conv2") - plain.absorbed("layer1.0.conv2")).abs().max()) > 1e-4


class _Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):  # a gated product is read (tests/test_products.py); atan and cos are not
        return self.b(torch.atan(self.a(x)) + torch.cos(x))


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, 8).reshape(2, 4))

    def forward(self, x):
        return torch.nn.functional.linear(x, self.w)


def test_functional_use_of_a_parameter_is_read():
    """F.linear(x, self.w) outside an nn.Linear is the same linear layer: recorded as called,
    named by the module that issues it, LRP-0 = Gradient × Input."""
    model = _Functional().double().eval()
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)
    m = nrm.explain(model, x, target=0)
    assert m.layer_index("linear") == 1  # the function's name, as torch.fx writes it
    torch.testing.assert_close(m.f, model(x)[:, 0].detach())
    expected = x * model.w[0].detach() / m.f
    torch.testing.assert_close(m.marginal("input"), expected)


class _CatBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 2)

    def forward(self, x):
        return torch.cat([self.a(x), self.a(x)], 0)


class _Tanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.t, self.b = nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.atan(self.t(self.a(x)))) + self.b(x)


@pytest.mark.parametrize("model, words", [
    (_Gate(), ["2 operation(s)", "torch.atan", "torch.cos", "test_dag.py"]),
    (_CatBatch(), ["torch.cat", "batch dimension"]),
    (_Tanh(), ["torch.atan", "in _Tanh", "test_dag.py"]),
])
def test_unsupported_operations_are_named(model, words):
    """Every unsupported operation of the model is listed in one message, each with its
    module, its path and the line of the model's code."""
    with pytest.raises(nrm.UnsupportedOperationError) as info:  # two samples: cat along 0 mixes them
        nrm.explain(model.eval(), torch.ones(2, 4), target=0)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_branched_model_untouched():
    """nrm calls the model once, as an ordinary inference: every module's forward hooks fire
    exactly as they do then (also the containers'), backward hooks never; the state and
    modes stay bitwise as they were."""
    model, x = _case("resnet-bottleneck", seed=8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    for name, module in model.named_modules():
        module.register_forward_pre_hook(lambda mod, inp, name=name: calls.append(("pre", name)))
        module.register_forward_hook(lambda mod, inp, out, name=name: calls.append(("fwd", name)))
        module.register_full_backward_hook(lambda mod, gi, go, name=name: calls.append(("bwd", name)))
    with torch.no_grad():
        model(x)
    inference, calls[:] = list(calls), []
    m = nrm.explain(model, x, target=0, rules=nrm.presets.EpsilonGammaFlat())
    m.marginal("input", within=[At("layer1.0.conv2", channels=[c]) for c in range(2)])
    assert calls == inference
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(mod.training for mod in model.modules())


def test_batch_invariance_on_a_dag():
    model, x = _case("densenet", seed=9, batch=3)
    both = nrm.explain(model, x, target=[0, 1, 2], rules=nrm.presets.EpsilonGammaFlat()).marginal("block.layers.1.0")
    for i in range(3):
        one = nrm.explain(model, x[i:i + 1], target=i,
                          rules=nrm.presets.EpsilonGammaFlat()).marginal("block.layers.1.0")
        torch.testing.assert_close(both[i:i + 1], one, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_stack_slicing_changes_nothing(name):
    """Below a layer where the stacked events would outgrow ``stack_bytes`` the engine sends
    them down in slices; with one row per slice the results equal the unsliced ones."""
    import random

    model, x = _case(name, seed=10)
    rng = random.Random(0)
    m = nrm.explain(model, x, target=0, rules=nrm.presets.EpsilonGammaFlat())
    layers = _inner_layers(m)[1:]
    events = []
    for k in range(9):
        a, b = rng.sample(layers, 2)
        n = max(1, int(torch.tensor(m.layer_shape(a)).prod()))
        ea = At(a, index=[rng.randrange(n)], parallel=rng.random() < 0.5)
        eb = At(b, index=list(range(rng.randrange(1, 4))))
        events.append(ea | eb if k % 3 == 0 else ea & eb if k % 3 == 1 else ea - eb)
    sliced = nrm.explain(model, x, target=0, rules=nrm.presets.EpsilonGammaFlat())
    sliced.engine.stack_bytes = 1
    for layer in ("input", layers[len(layers) // 2]):
        torch.testing.assert_close(sliced.marginal(layer, within=events), m.marginal(layer, within=events),
                                   rtol=0, atol=1e-13)
        torch.testing.assert_close(sliced.absorbed(layer, within=events), m.absorbed(layer, within=events),
                                   rtol=0, atol=1e-13)
    torch.testing.assert_close(sliced.measure(events), m.measure(events), rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", ["resnet-basic", "inception"])
def test_order_of_parallel_branches_does_not_matter(name):
    """The same function traced in two orders of its parallel branches gives the same
    bypassing and absorbed mass at every layer (⊥_l holds what the layers reading l absorb)."""
    model, x = _case(name, seed=11)
    m = nrm.explain(model, x, target=0, rules=nrm.presets.EpsilonGammaFlat())
    twin = copy.deepcopy(model)
    if name == "resnet-basic":
        for block in (twin.layer1[0], twin.layer2[0]):
            block.forward = _shortcut_last.__get__(block)
    else:
        twin.block.forward = _branches_reversed.__get__(twin.block)
    t = nrm.explain(twin, x, target=0, rules=nrm.presets.EpsilonGammaFlat())
    assert [n for n in t.layers if n in m.layers] != [n for n in m.layers if n in t.layers]  # another order
    for layer in m.layers:
        if layer not in t.layers or layer in ("output",) or layer.startswith(("add", "cat", "layer")) and "_" in layer:
            continue
        torch.testing.assert_close(t.bypassing(layer), m.bypassing(layer), rtol=0, atol=1e-12, msg=layer)
        torch.testing.assert_close(t.absorbed(layer), m.absorbed(layer), rtol=0, atol=1e-12, msg=layer)


def _shortcut_last(self, x):  # torchvision's order (the architecture computes the shortcut first)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    out += identity
    return self.relu(out)


def _branches_reversed(self, x):
    parts = [self.branch_pool(x), self.branch5(x), self.branch3(x), self.branch1(x)]
    return torch.cat(parts[::-1], 1)
