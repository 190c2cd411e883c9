"""What nrm keeps from one explain to the next, and why it can never be stale.

Three things outlive an explain to make the next one cheaper (EfficientNet-B0's record
went from about 45 to 27 ms): a convolution's map with its batch norm folded in
(:func:`nrm.layers.norm._folded`), kept per the *tensors* it was made of — the parameter
objects, at their in-place version — behind weak references; the self-check's signatures
(:mod:`nrm.check`), which hold torch's functions but never a model or a closure; and
average pooling's constant weight. Each test changes what the kept thing was made of and
asserts the next explain equals one on a fresh copy of the model, or that nothing keeps the
model alive.
"""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from torch import nn

import nrm
from nrm.check import _function, _part
from nrm.layers import norm


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


X = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _marginal(model) -> torch.Tensor:
    """R at the input, f_c(x) · m_input: the normalized marginal alone does not see a change
    that scales the output (the last batch norm's variance)."""
    m = nrm.explain(model, X, target=1, rules=nrm.rules.Epsilon(1e-9))
    return m.marginal("input") * m.f.reshape(-1, 1, 1, 1)


def _fresh(model) -> torch.Tensor:
    """The same explain on a deep copy: new parameter objects, nothing kept applies."""
    return _marginal(copy.deepcopy(model))


@pytest.mark.parametrize("change", ["conv weight", "conv bias", "running mean", "running var", "bn weight", "bn bias",
                                    "linear weight", "bn1d var"])
def test_an_in_place_change_of_any_folded_tensor_is_seen_by_the_next_explain(change):
    model = _model()
    before = _marginal(model)
    assert torch.equal(_marginal(model), before)  # kept: the same numbers
    tensor = {"conv weight": model[0].weight, "conv bias": model[0].bias, "running mean": model[1].running_mean,
              "running var": model[4].running_var, "bn weight": model[1].weight, "bn bias": model[4].bias,
              "linear weight": model[8].weight, "bn1d var": model[9].running_var}[change]
    with torch.no_grad():
        tensor.mul_(1.7).add_(0.05)
    after = _marginal(model)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _fresh(model), rtol=0, atol=0)


def test_a_parameter_replaced_by_a_new_tensor_is_seen():
    model = _model()
    before = _marginal(model)
    model[0].weight = nn.Parameter(model[0].weight.detach() * -1.3)
    after = _marginal(model)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _fresh(model), rtol=0, atol=0)


def test_load_state_dict_is_seen():
    model, other = _model(0), _model(5)
    _marginal(model)
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(_marginal(model), _marginal(other), rtol=0, atol=0)


def test_nothing_kept_holds_the_model_alive():
    model = _model()
    _marginal(model)
    _marginal(model)
    assert norm._FOLDS, "the folds were kept"
    ref = weakref.ref(model)
    params = [weakref.ref(p) for p in model.parameters()]
    del model
    gc.collect()
    assert ref() is None and all(p() is None for p in params)


def test_the_folds_of_a_freed_model_are_dropped():
    """A fold whose parameters are gone can never be asked for again: it is dropped (a
    half-precision model's widened copies are new on every explain; their folds must not pile
    up)."""
    model = _model(3)
    _marginal(model)
    del model
    gc.collect()
    other = _model(4)
    _marginal(other)  # the next fold drops what was freed
    dead = [k for k, (refs, _) in norm._FOLDS.items() if any(r is not None and r() is None for r in refs)]
    assert dead == []


def test_a_fold_whose_source_is_gone_misses_even_at_a_reused_address():
    """A kept fold is looked up by the source's id and version, then confirmed by identity
    through its weak reference: a new tensor that happens to reuse a freed one's id (and
    version 0) is not the same tensor, and gets its own fold."""
    for seed in range(4):
        model = _model(seed)
        torch.testing.assert_close(_marginal(model), _fresh(model), rtol=0, atol=0)
        del model
        gc.collect()


def test_a_fold_of_tensors_that_record_gradients_is_not_kept():
    """Under autograd a fold of a parameter that requires grad is part of a graph: made anew."""
    from nrm.linear import ConvMap

    class _Call:
        args, kwargs = (None, torch.zeros(2), torch.ones(2), None, None, False, 0.1, 1e-5), {}

        def arg(self, i, name, default=None):
            return self.args[i] if i < len(self.args) else default

    weight = torch.ones(2, 1, 1, 1, requires_grad=True)
    n = len(norm._FOLDS)
    with torch.enable_grad():
        folded = norm.BatchNormFold().fold(_Call(), ConvMap(weight, None, (1, 1), (0, 0), (1, 1), 1), (weight,))
    assert len(norm._FOLDS) == n and folded.weight.requires_grad


def test_the_signature_of_a_call_holds_no_module_and_no_closure():
    module = nn.Linear(2, 2)
    assert isinstance(_function(module), str)
    captured = torch.ones(1)
    assert isinstance(_function(lambda t: t + captured), str)  # a closure: by its repr
    assert _function(torch.conv2d) is torch.conv2d
    assert _function(torch.Tensor.add) is torch.Tensor.add
    assert isinstance(_function(torch.ones(2).add), str)  # a method bound to a tensor


@pytest.mark.parametrize("a, b", [(1, True), (1, 1.0), (0.0, -0.0), ((1, 2), [1, 2]), (None, "None")])
def test_arguments_that_differ_have_different_signatures(a, b):
    assert _part(a) != _part(b)


def test_equal_arguments_have_equal_signatures():
    t = torch.zeros(2, 3)
    assert _part((t, 1, 2.5, "same", None, [1, 2], {"k": 3})) == _part((torch.ones(2, 3), 1, 2.5, "same", None, [1, 2],
                                                                       {"k": 3}))
    assert _part(torch.zeros(2, 3)) != _part(torch.zeros(3, 2))
    assert _part(torch.zeros(2, dtype=torch.float64)) != _part(torch.zeros(2))


def test_the_pooling_weight_kept_is_never_written():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 2))
    model = model.double().eval()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    presets = [None, nrm.presets.EpsilonGammaFlat(), nrm.presets.EpsilonAlpha2Beta1(), nrm.presets.EpsilonPlusFlat()]
    first = [nrm.explain(model, x, target=0, rules=p).marginal("input") for p in presets]
    again = [nrm.explain(model, x, target=0, rules=p).marginal("input") for p in presets]
    for a, b in zip(first, again):
        assert torch.equal(a, b)
