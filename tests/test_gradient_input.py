"""L9: with LRP-0 everywhere, m_l(j) = a_j ∂f_c/∂a_j / f_c at every layer, biases allowed,
for activations with σ(z) = σ'(z) z (ReLU, leaky ReLU, winner-takes-all max-pool, linear
average pooling).

The gradients come from torch.autograd on a deep copy of the model, with forward hooks on
the copy capturing every module's output (the user's model gets no hook). A module's output
is compared with the marginal under that module's name; the output of a Linear/Conv
followed by a batch norm is skipped (it is not the layer's value: the folded map is).
"""

from __future__ import annotations

import copy
import functools

import nets
import pytest
import torch
from torch import nn

import nrm

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest

BUILDERS = {
    "mlp-relu": functools.partial(nets.mlp, leaky=False, bias="dead"),
    "mlp-leaky": functools.partial(nets.mlp, leaky=True, bias="plain"),
    "cnn-max": functools.partial(nets.cnn, pool="max", bias="dead"),
    "cnn-max-leaky": functools.partial(nets.cnn, pool="max", leaky=True, bias="plain"),
    "cnn-avg": functools.partial(nets.cnn, pool="avg", bias="dead"),
    "cnn-adaptive": functools.partial(nets.cnn, pool="adaptive", bias="plain"),
    "cnn1d": functools.partial(nets.cnn1d, bias="dead"),
}


def gradient_times_input(model: nn.Module, x: torch.Tensor, target: int):
    """{module name: a ⊙ ∂f/∂a / f} for every leaf module's output, plus "input"."""
    twin = copy.deepcopy(model)
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in twin.named_modules():
        if not list(module.children()):
            def hook(_module, _inputs, out, name=name):
                out.retain_grad()
                outputs[name] = out
            handles.append(module.register_forward_hook(hook))
    x = x.clone().requires_grad_(True)
    f = twin(x)[0, target]
    f.backward()
    for h in handles:
        h.remove()
    result = {name: (out * out.grad / f).detach() for name, out in outputs.items()}
    result["input"] = (x * x.grad / f).detach()
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    for (name, _), (_, after) in zip(leaves, leaves[1:]):
        if isinstance(after, (nn.BatchNorm1d, nn.BatchNorm2d)):
            del result[name]
    return result


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("seed", range(6))
def test_lrp0_marginals_are_gradient_times_input(kind, seed):
    ec = nets.exact_case(seed, lambda case, s: nrm.rules.Zero(), builder=BUILDERS[kind])
    model, x = ec.case.model, ec.case.x[:1]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected = gradient_times_input(model, x, ec.target)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())
    m = ec.measure
    biased = any(getattr(mod, "bias", None) is not None for mod in model.modules())
    assert biased, "L9 is to be checked with biases"
    assert set(expected) - {"output"} <= set(m.layers)
    for name, gi in expected.items():
        got = m.marginal(name)
        assert got.shape == gi.shape, name
        assert torch.allclose(got, gi, rtol=0, atol=1e-9 * ec.scale), f"{ec}: L9 at {name!r}\n{got}\n{gi}"
    # the absorbers hold what the biases took: 1 − Σ_j GI_j / f at every layer
    for name, gi in expected.items():
        assert abs(float(m.absorbed(name)[0]) - (1 - float(gi.sum()))) <= 1e-9 * ec.scale, name
