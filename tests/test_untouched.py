"""nrm only reads the user's model: after a successful explanation (and every use of the
measure) and after every error path, the model is exactly as it was.

Checked per model: every parameter and buffer bitwise (also NaN bits), with the same
storage (data_ptr) and the same version counter (no in-place write, not even of equal
values); the same forward / backward hooks; the train/eval mode of every submodule; the
``requires_grad`` flags; no ``.grad`` accumulated. The input tensor and torch's global state
(grad mode, global hooks) are unchanged too.

nrm runs ``model(x)`` once, under ``torch.no_grad()`` (that is how it records what
``forward()`` computes): the forward hooks fire as in one inference call, never more often,
and backward hooks never.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

import pytest
import torch
from bad_inputs import CASES, BadInput, conv, dense, worked_example
from torch import nn
from torch.nn.modules import module as module_globals

import nrm
from nrm_verify.zoo.models import vgg16

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_state_dict_hooks", "_load_state_dict_pre_hooks")
GLOBAL_HOOK_DICTS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                     "_global_backward_pre_hooks")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so that NaN == NaN and -0.0 != 0.0 (bitwise equality)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


class Snapshot:
    """Everything about a model (and its input) that nrm must leave as it found it."""

    def __init__(self, model: nn.Module, x):
        self.tensors = {}
        for name, t in model.state_dict(keep_vars=True).items():
            meta = t.device.type == "meta"
            self.tensors[name] = (
                t, None if meta else _bits(t).clone(), t.data_ptr() if not meta else None, t._version,
                t.dtype, t.shape, t.device, t.requires_grad, t.grad,
            )
        self.modes = {name: m.training for name, m in model.named_modules()}
        self.hooks = {name: {d: dict(getattr(m, d)) for d in HOOK_DICTS} for name, m in model.named_modules()}
        self.global_hooks = {d: dict(getattr(module_globals, d)) for d in GLOBAL_HOOK_DICTS}
        self.grad_enabled = torch.is_grad_enabled()
        self.x = x
        if isinstance(x, torch.Tensor):
            self.x_state = (_bits(x).clone(), x._version, x.requires_grad, x.grad)

    def assert_unchanged(self, model: nn.Module) -> None:
        now = model.state_dict(keep_vars=True)
        assert list(now) == list(self.tensors), "the set of parameters and buffers changed"
        for name, (t, bits, ptr, version, dtype, shape, device, requires_grad, grad) in self.tensors.items():
            cur = now[name]
            assert cur is t, f"{name} was replaced by another tensor"
            assert (cur.dtype, cur.shape, cur.device) == (dtype, shape, device), f"{name} changed dtype/shape/device"
            assert cur._version == version, f"{name} was written in place (version {version} → {cur._version})"
            if bits is not None:
                assert cur.data_ptr() == ptr, f"{name} moved to other storage"
                assert torch.equal(_bits(cur), bits), f"{name} changed value"
            assert cur.requires_grad == requires_grad, f"{name}.requires_grad changed"
            assert cur.grad is grad, f"{name}.grad changed (gradient accumulated?)"
        modes = {name: m.training for name, m in model.named_modules()}
        assert modes == self.modes, "a submodule's train/eval mode changed"
        for name, m in model.named_modules():
            for d in HOOK_DICTS:
                before, after = self.hooks[name][d], dict(getattr(m, d))
                assert list(after) == list(before) and all(after[k] is before[k] for k in before), \
                    f"{d} of {name or '<model>'} changed"
        for d in GLOBAL_HOOK_DICTS:
            assert dict(getattr(module_globals, d)) == self.global_hooks[d], f"torch's {d} changed"
        assert torch.is_grad_enabled() == self.grad_enabled, "torch's grad mode changed"
        if isinstance(self.x, torch.Tensor):
            bits, version, requires_grad, grad = self.x_state
            assert torch.equal(_bits(self.x), bits) and self.x._version == version, "the input was modified"
            assert self.x.requires_grad == requires_grad and self.x.grad is grad, "the input's grad state changed"


class HookSpy:
    """Hooks of every kind on every module; records each call. ``reference``: the calls of
    one ordinary inference ``with torch.no_grad(): model(x)`` (up to where it raises)."""

    def __init__(self, model: nn.Module, x):
        self.calls: list[tuple[str, str]] = []
        for name, m in model.named_modules():
            m.register_forward_pre_hook(self._record("forward_pre", name))
            m.register_forward_hook(self._record("forward", name))
            m.register_full_backward_hook(self._record("backward", name))
        self.reference: list[tuple[str, str]] = []
        if not any(m.training for m in model.modules()):  # a forward in training mode would change the model
            try:
                with torch.no_grad():
                    model(x.clone() if isinstance(x, torch.Tensor) else x)
            except Exception:
                pass  # the hooks called up to the error are the reference
            self.reference, self.calls = self.calls, []

    def _record(self, kind, name):
        def hook(*args, **kwargs):
            self.calls.append((kind, name))
        return hook


def _prepare(model: nn.Module, x) -> tuple[HookSpy | None, Snapshot]:
    spy = None
    if not any(p.device.type == "meta" for p in model.parameters()):
        spy = HookSpy(model, x)
    return spy, Snapshot(model, x)


def _check(model: nn.Module, spy: HookSpy | None, snap: Snapshot, one_inference: bool = False) -> None:
    """The model is as it was; its hooks fired at most as in one inference (exactly so with
    ``one_inference``), backward hooks never."""
    snap.assert_unchanged(model)
    if spy is not None:
        assert not [c for c in spy.calls if c[0] == "backward"], "nrm ran a backward pass through the model"
        counts, once = Counter(spy.calls), Counter(spy.reference)
        more = [c for c in counts if counts[c] > once[c]]
        assert not more, f"nrm called these hooks more often than one inference does: {more[:5]}"
        if one_inference:
            assert spy.calls == spy.reference, "nrm's one call of the model differs from an ordinary inference"


# -- every error path -----------------------------------------------------------------------


UNTOUCHED = [c for c in CASES if not c.changes_model]  # not the cases whose act changes the model on purpose


@pytest.mark.parametrize("case", UNTOUCHED, ids=[c.id for c in UNTOUCHED])
def test_model_untouched_after_error(case: BadInput):
    model, x = case.build()
    spy, snap = _prepare(model, x)
    with pytest.raises(case.error):
        case.act(model, x)
    _check(model, spy, snap)


# -- successful use ---------------------------------------------------------------------


def batchnorm_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1), bn=nn.BatchNorm2d(4), relu=nn.ReLU(), pool=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc=nn.Linear(4 * 4 * 4, 3),
    ))
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model


def _use_everything(m: nrm.Measure, layers: list[str]) -> None:
    """Every public operation of the measure once."""
    for layer in layers:
        m.marginal(layer)
        m.absorbed(layer)
        m.activations(layer)
    event = nrm.At(layers[1], index=[0]) | nrm.At(layers[0], index=[1])
    m(event)
    m.measure([event, ~event, event - nrm.At(layers[0], index=[1])])
    m.conditional(nrm.At(layers[0], index=[0]), given=nrm.At(layers[1]))
    m.joint(layers[0], layers[1])
    m.marginal(layers[0], within=[nrm.At(layers[1], index=[0]), nrm.At(layers[1], index=[1])])
    m.walk([0] * (m.depth + 1))
    m.relevance(layers[0])


@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.01), nrm.presets.EpsilonGammaFlat(),
                                   nrm.presets.EpsilonAlpha2Beta1(), nrm.presets.EpsilonGammaBox(-1.0, 1.0)],
                         ids=["zero", "epsilon", "EpsilonGammaFlat", "EpsilonAlpha2Beta1", "EpsilonGammaBox"])
def test_model_untouched_after_success(rules):
    model, x = conv()
    spy, snap = _prepare(model, x)
    m = nrm.explain(model, x, target=3, rules=rules)
    _use_everything(m, ["input", "features.0", "features.3", "classifier.0", "output"])
    _check(model, spy, snap, one_inference=True)
    # the spy works: an ordinary forward and backward call the hooks
    model(x.clone().requires_grad_(True)).sum().backward()
    kinds = {kind for kind, _ in spy.calls}
    assert kinds == {"forward_pre", "forward", "backward"}


def test_dense_and_worked_example_untouched():
    for build in (dense, worked_example):
        model, x = build()
        spy, snap = _prepare(model, x)
        m = nrm.explain(model, x, target=0)
        _use_everything(m, ["input", "0" if build is worked_example else "fc1", "output"])
        _check(model, spy, snap, one_inference=True)


def test_untouched_with_batchnorm_requires_grad_and_existing_grads():
    """Folding batch norm must not write its buffers; frozen parameters stay frozen,
    existing gradients are neither replaced nor accumulated into, an input that requires
    grad gets no .grad, and a model in inference mode stays in eval mode."""
    model = batchnorm_model().eval()
    model.conv.weight.requires_grad_(False)
    x = torch.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8).requires_grad_(True)
    model(x).sum().backward()  # gradients now exist on fc and bn
    assert model.fc.weight.grad is not None
    x.grad = None
    spy, snap = _prepare(model, x)
    m = nrm.explain(model, x, target=[0, 2], rules=nrm.presets.EpsilonGammaFlat())
    _use_everything(m, ["input", "conv", "fc"])
    _check(model, spy, snap, one_inference=True)


def test_vgg16_untouched():
    """The main job's model (small input): parameters, buffers, modes, hooks."""
    model = vgg16(num_classes=10)
    x = torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32).sin()
    spy, snap = _prepare(model, x)
    m = nrm.explain(model, x, target=1, rules=nrm.presets.EpsilonGammaFlat())
    m.marginal("input", within=[nrm.At("features.28", channels=[c]) for c in range(4)])
    m.joint("features.26", "features.28")
    _check(model, spy, snap, one_inference=True)


def test_model_in_training_mode_is_not_switched():
    """Refused, never switched: every submodule is still in training mode, and the batch
    norm statistics (which a forward in training mode would update) are as before."""
    model = batchnorm_model().train()
    x = torch.ones(2, 3, 8, 8)
    spy, snap = _prepare(model, x)
    with pytest.raises(nrm.TrainingModeError):
        nrm.explain(model, x, target=0)
    _check(model, spy, snap)
    assert all(m.training for m in model.modules())
