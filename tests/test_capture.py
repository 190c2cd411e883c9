"""The capture records what ``forward()`` computes, not what module types suggest.

Every model here computes something other than the plain chain of its children, or uses
ordinary model-library code (shape reads, asserts, size arithmetic, keyword arguments,
hooks, parametrized weights). For each: f_c(x) is ``model(x)[:, c]`` and LRP-0 equals
Gradient × Input of the model itself (L9, autograd on the model) at the input.
"""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import nrm
from nrm.capture import capture

pytestmark = pytest.mark.usefixtures("single_thread")

D = torch.float64


def _seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.7)
    return model.eval()


def _gradient_x_input(model, x, target, **kwargs) -> torch.Tensor:
    xx = x.clone().requires_grad_(True)
    y = model(xx, **kwargs)[:, target]
    (g,) = torch.autograd.grad(y.sum(), xx)
    return (g * x / y.detach().reshape((-1,) + (1,) * (x.dim() - 1))).detach()


def _faithful(model, x, target=0, **kwargs):
    m = nrm.explain(model, x, target=target, check="full", **kwargs)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, target], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.marginal("input"), _gradient_x_input(model, x, target), rtol=1e-9, atol=1e-12)
    return m


def _x(*shape, seed=1):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


# -- the reproductions of the issue -----------------------------------------------------------


def test_a_module_used_twice_in_a_sequential_is_recorded_twice():
    lin = nn.Linear(4, 4)
    model = _seeded(nn.Sequential(lin, nn.ReLU(), lin, nn.ReLU(), nn.Linear(4, 2)).double())
    m = _faithful(model, _x(3, 4))
    assert m.depth == 3  # three linear layers: the shared one twice
    assert m.layer_index("0") == 1 and m.layer_index("2") == 2  # its i-th call takes its i-th name


class Res(nn.Sequential):
    """A Sequential subclass with its own forward: a residual, not the chain of its children."""

    def forward(self, x):
        h = self[0](x)
        return self[2](self[1](h) + h)


def test_a_sequential_subclass_with_its_own_forward():
    model = _seeded(Res(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double())
    m = _faithful(model, _x(2, 4))
    assert "add" in m.layers  # the residual sum is a layer (the plain chain would have none)


def test_legacy_spectral_norm_reads_the_weight_the_hook_computes():
    """torch.nn.utils.spectral_norm keeps weight_orig and recomputes .weight in a pre-hook on
    every call; the stale .weight attribute is not what forward() uses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lin = torch.nn.utils.spectral_norm(nn.Linear(4, 3).double())
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(3, 2).double())
    _seeded(model)
    with torch.no_grad():
        model.train()
        for _ in range(5):  # power iterations update u, v; the stored .weight is now stale
            model(_x(2, 4))
        lin.weight_orig.mul_(1.7)
    model.eval()
    _faithful(model, _x(2, 4, seed=3))


class Scaled(nn.Module):
    def __init__(self, s: float):
        super().__init__()
        self.s = s

    def forward(self, w):
        return self.s * w


def test_parametrized_weights():
    model = _seeded(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double())
    parametrize.register_parametrization(model[0], "weight", Scaled(-2.5))
    _faithful(model.eval(), _x(2, 4))
    model2 = _seeded(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double())
    torch.nn.utils.parametrizations.spectral_norm(model2[0])
    _faithful(model2.eval(), _x(2, 4))


class ShapeCode(nn.Module):
    """Shape reads, asserts, size arithmetic and control flow on sizes, as model libraries write."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        n, c, h, w = x.shape
        assert c == 2, "two channels"
        torch._assert(x.dim() == 4, "a batch of images")
        h = F.relu(self.conv(x))
        if h.shape[-1] > 2:  # control flow on a size: resolved for this input
            h = self.pool(h)
        flat = h.reshape(n, h.size(1) * h.size(2) * (h.shape[3] // 1))
        return self.fc(flat.view(x.size(0), -1))


def test_shape_reads_asserts_size_arithmetic_and_control_flow_on_sizes():
    _faithful(_seeded(ShapeCode().double()), _x(2, 2, 4, 4))


class WithMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x, attn_mask=None, *, scale: float = 1.0):
        h = F.relu(self.a(x))
        if attn_mask is not None:
            h = h * attn_mask
        return self.b(h)


def test_a_second_argument_with_a_default():
    _faithful(_seeded(WithMask().double()), _x(2, 4))


def test_data_dependent_control_flow_is_refused_with_its_line():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 2)

        def forward(self, x):
            if (x > 0).any():
                return self.a(x)
            return self.a(-x)

    with pytest.raises(nrm.DataDependentControlFlowError) as info:
        nrm.explain(Branchy().double().eval(), _x(2, 4), target=0)
    message = str(info.value)
    assert "test_capture.py" in message and "if (x > 0).any():" in message


def test_values_read_into_python_by_item_are_refused():
    class Item(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 2)

        def forward(self, x):
            return self.a(x) * float(x.abs().max().item())

    with pytest.raises(nrm.DataDependentControlFlowError, match="item"):
        nrm.explain(Item().double().eval(), _x(2, 4), target=0)


# -- hooks, in-place operations, outputs -------------------------------------------------------


def test_a_forward_hook_that_changes_the_output_is_part_of_the_computation():
    model = _seeded(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double())
    handle = model[0].register_forward_hook(lambda mod, inp, out: out * 2.0 - 0.5 * out)
    try:  # x * 2.0 and 0.5 * x are constant scales (ConstantScale); a − b is a + (−b), a sum of branches
        m = nrm.explain(model, _x(2, 4), target=0, check="full")
        with torch.no_grad():
            assert torch.equal(m.f, model(_x(2, 4))[:, 0])
        assert {"ConstantScale", "Negate", "Add"} <= {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    finally:
        handle.remove()
    handle = model[0].register_forward_hook(lambda mod, inp, out: out * 2.0 + torch.sin(out))
    try:
        with pytest.raises(nrm.UnsupportedOperationError, match="torch.sin"):
            nrm.explain(model, _x(2, 4), target=0)  # sin has no kind: the hook's operation is refused by name
    finally:
        handle.remove()
    handle = model[2].register_forward_pre_hook(lambda mod, args: (F.relu(args[0]),))
    try:
        _faithful(model, _x(2, 4))
    finally:
        handle.remove()


def test_in_place_activations_keep_the_pre_activation():
    """ReLU(inplace=True) overwrites the conv's output; the capture keeps what the conv
    computed (copy on write), so the kernels read the true pre-activations."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)).double().eval()
    inplace = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(12, 2)).double()
    inplace.load_state_dict(plain.state_dict())
    x = _x(2, 2, 4, 4)
    rules = nrm.presets.EpsilonGammaFlat()
    a = nrm.explain(plain, x, target=1, rules=rules)
    b = nrm.explain(inplace.eval(), x, target=1, rules=rules)
    for layer in ("input", "0", "3"):
        torch.testing.assert_close(a.marginal(layer), b.marginal(layer), rtol=0, atol=0)
    torch.testing.assert_close(a.engine.pre[1], b.engine.pre[1], rtol=0, atol=0)


def test_a_model_returning_a_tuple_needs_output():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x):
            y = self.a(x)
            return y, y.sum(1)

    model = _seeded(Two().double())
    with pytest.raises(nrm.UnsupportedOperationError, match="output="):
        nrm.explain(model, _x(2, 4), target=0)
    m = nrm.explain(model, _x(2, 4), target=1, output=lambda out: out[0])
    torch.testing.assert_close(m.f, model(_x(2, 4))[0][:, 1].detach())


def test_container_names_name_their_output():
    from nrm_verify.zoo.architectures import BUILDERS

    model = BUILDERS["resnet-basic"](seed=0, dtype=D)
    x = _x(1, 3, 8, 8)
    m = nrm.explain(model, x, target=0)
    names = [n for n, _ in model.named_children()]
    block = next(n for n in names if n.startswith("layer"))
    inner = max((n for n in m.layers if n.startswith(block + ".")), key=m.layer_index)
    assert m.layer_index(block) == m.layer_index(inner)  # the block's name is the layer of its output


def test_every_unsupported_operation_is_listed_once_with_its_place():
    class Many(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.atan(self.a(x))
            h = torch.cos(h) + torch.sin(h)
            return self.b(h)

    with pytest.raises(nrm.UnsupportedOperationError) as info:
        nrm.explain(_seeded(Many().double()), _x(2, 4), target=0)
    message = str(info.value)
    for op in ("torch.atan", "torch.cos", "torch.sin"):
        assert message.count(f"- {op} in Many") == 1, op
    assert "nrm.layers.register" in message and "test_capture.py" in message


def test_capture_in_threads_records_each_thread_only():
    """The global module hooks the capture uses see every thread; each capture keeps its own."""
    models = [_seeded(nn.Sequential(nn.Linear(4, 4 + i), nn.ReLU(), nn.Linear(4 + i, 2)).double(), i)
              for i in range(4)]
    results, errors = {}, []

    def run(i):
        try:
            for _ in range(5):
                results[i] = nrm.explain(models[i], _x(2, 4, seed=i), target=0).marginal("input")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(4):
        torch.testing.assert_close(results[i], _gradient_x_input(models[i], _x(2, 4, seed=i), 0))


def test_autocast_does_not_change_the_measure():
    """The capture runs with autocast off: the measure is computed in the input's dtype."""
    model = _seeded(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    x = _x(2, 4).float()
    plain = nrm.explain(model, x, target=0).marginal("input")
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            m = nrm.explain(model, x, target=0)
            inside = m.marginal("input", within=nrm.At("0", index=[1]))  # the measure's passes too
        assert m.marginal("input").dtype == torch.float32 and inside.dtype == torch.float32
        torch.testing.assert_close(m.marginal("input"), plain, rtol=0, atol=0)
        torch.testing.assert_close(inside, nrm.explain(model, x, target=0).marginal(
            "input", within=nrm.At("0", index=[1])), rtol=0, atol=0)


# -- a measure owns what it reads --------------------------------------------------------------


def test_the_measure_owns_its_input():
    model = _seeded(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double())
    x = _x(2, 4).requires_grad_(True)
    m = nrm.explain(model, x, target=0)
    before = m.marginal("input").clone()
    assert not m.marginal("input").requires_grad and m.marginal("input").grad_fn is None
    with torch.no_grad():
        x.mul_(3.0)  # the caller reuses its buffer
    torch.testing.assert_close(m.marginal("input"), before, rtol=0, atol=0)
    assert x.grad is None
    acts = m.activations("input")
    acts.zero_()  # a copy: the measure is not changed by it
    torch.testing.assert_close(m.marginal("input"), before, rtol=0, atol=0)


def test_a_changed_parameter_makes_the_measure_refuse():
    model = _seeded(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double())
    m = nrm.explain(model, _x(2, 4), target=0)
    m.marginal("input")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(_x(2, 4)).sum().backward()
    optimizer.step()
    with pytest.raises(nrm.StaleMeasureError, match="'0.weight'|'2.weight'"):
        m.marginal("0")
    with pytest.raises(nrm.StaleMeasureError):
        m(nrm.At("input", index=[0]))


def test_a_parameter_replaced_through_data_makes_the_measure_refuse():
    model = _seeded(nn.Sequential(nn.Linear(4, 2)).double())
    m = nrm.explain(model, _x(2, 4), target=0)
    model[0].weight.data = torch.zeros(2, 4, dtype=D)
    with pytest.raises(nrm.StaleMeasureError):
        m.marginal("input")


# -- the self-check ------------------------------------------------------------------------------


class Scale(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, n, dtype=D))

    def forward(self, x):
        return x * self.scale


def test_the_self_check_fires_for_a_kind_whose_map_is_wrong_and_is_checked_once_per_signature():
    from nrm.check import forget
    from nrm.linear import DenseMap

    class Wrong(nrm.layers.Linear):
        modules = (Scale,)

        def map(self, call, a, rule=None):
            w = call.module.scale.detach()
            w = torch.diag(w) + (1e-3 if call.module.scale.shape[0] == 4 else 0.0)
            return DenseMap(w, None)

    nrm.layers.register(Wrong)
    try:
        forget()
        model = nn.Sequential(Scale(4), nn.Linear(4, 2).double()).eval()
        with pytest.raises(nrm.CaptureMismatchError, match="'0'"):
            nrm.explain(model, _x(2, 4), target=0)
        ok = nn.Sequential(Scale(3), nn.Linear(3, 2).double()).eval()
        nrm.explain(ok, _x(2, 3), target=0)  # a right map of another signature passes
        with pytest.raises(nrm.CaptureMismatchError):  # the wrong signature was never marked good
            nrm.explain(model, _x(2, 4), target=0)
    finally:
        nrm.layers.unregister(Wrong)


def test_capture_records_calls_with_names_kinds_and_places():
    model = _seeded(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(12, 2)).double())
    cap = capture(model, _x(1, 2, 4, 4))
    assert [c.name for c in cap.calls] == ["0", "1", "2", "3"]
    assert [c.kind.name for c in cap.calls] == ["Conv", "ReLU", "View", "Dense"]
    assert cap.calls[1].inplace and cap.calls[0].owned
    assert all("test_capture.py" in c.where for c in cap.calls)  # inside torch.nn: the line that called the model


def test_one_measure_read_from_several_threads():
    """A Measure is safe to read from several threads at once (each call resolves its own
    events); the answers equal the ones computed one after the other."""
    model = _seeded(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double())
    m = nrm.explain(model, _x(3, 4), target=1)
    events = [[nrm.At("0", index=[i]) | nrm.At("input", index=[j]) for j in range(4)] for i in range(6)]
    expected = [m.measure(evs) for evs in events]
    results, errors = {}, []

    def run(i):
        try:
            for _ in range(20):
                results[i] = m.measure(events[i])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(6):
        torch.testing.assert_close(results[i], expected[i], rtol=0, atol=0)


def test_a_module_recorded_whole_is_a_child_so_its_parents_other_operation_keeps_its_own_name():
    """``Sequential(Wrap(relu → Scale))`` with Scale read whole by a declared kind: the ReLU is
    not named ``1`` (the Wrap issues two operations: the ReLU and the whole Scale, and ``1``
    is the Wrap's output, the Scale's). The explicit reference then compares the
    same tensors under each name (L18)."""
    from nrm.linear import DiagonalMap
    from nrm_verify.references.explicit import reference_lrp

    class ScaleKind(nrm.layers.Linear):
        """y = s ⊙ x, read whole: a diagonal linear map."""

        modules = (Scale,)

        def map(self, call, a, rule=None):
            return DiagonalMap(call.module.scale.detach())

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = Scale(4)

        def forward(self, x):
            return self.scale(torch.relu(x))

    nrm.layers.register(ScaleKind)
    try:
        model = nn.Sequential(nn.Linear(3, 4).double(), Wrap(), nn.Linear(4, 2).double()).eval()
        x = _x(2, 3)
        named = {c.kind.name: c.name for c in capture(model, x).calls}
        assert named["ScaleKind"] == "1.scale" and named["ReLU"] not in ("1", "1.scale")
        m = nrm.explain(model, x, target=0, rules=nrm.rules.Epsilon(0.1))
        ref = reference_lrp(model, x, 0, nrm.rules.Epsilon(0.1))
        for name in ref.relevance:
            if name in m.layers:
                torch.testing.assert_close(m.marginal(name), ref.marginal(name), rtol=1e-10, atol=1e-12)
    finally:
        nrm.layers.unregister(ScaleKind)


def test_a_capture_inside_a_callers_exception_handler_records_the_same_calls():
    """The module hooks tell a forward that raised from the exception the caller is handling:
    inside an ``except`` block the capture (and a decomposed module's definition) is the same."""
    mha = nn.MultiheadAttention(4, 2, batch_first=True).double().eval()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha, self.fc = mha, nn.Linear(4, 2).double()

        def forward(self, x):
            return self.fc(self.mha(x, x, x, need_weights=False)[0].mean(1))

    model, x = _seeded(Net()), _x(2, 3, 4)
    outside = nrm.explain(model, x, target=0)
    try:
        raise KeyError("the caller's own exception")
    except KeyError:
        inside = nrm.explain(model, x, target=0)
        names = [c.name for c in capture(model, x).calls]
    assert names == [c.name for c in capture(model, x).calls]
    torch.testing.assert_close(inside.marginal("input"), outside.marginal("input"), rtol=0, atol=0)


@pytest.mark.parametrize("bad", ["fulll", 2, None])
def test_capture_check_takes_what_explain_takes(bad):
    """``nrm.capture(check=…)`` (since 2026-12-07) takes True, False or "full", as explain does; a bad
    value is a named error, before the model runs."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(nrm.errors.ArgumentError, match="check= takes True, False or 'full'"):
        nrm.capture(model, torch.randn(2, 4, dtype=torch.float64), check=bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
