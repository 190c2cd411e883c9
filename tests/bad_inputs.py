"""A catalogue of bad inputs to nrm, each with the error it must raise.

Used by ``test_errors.py`` (the right exception, with a helpful message) and by
``test_untouched.py`` (the user's model is exactly as before after every one of them).
Every case builds a fresh model and input, so a case may break them on purpose (NaN
weights, training mode, parameters on another device).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import nrm
from nrm.errors import (
    AmbiguousProductError,
    ArgumentError,
    CaptureMismatchError,
    DataDependentControlFlowError,
    DeviceMismatchError,
    DtypeMismatchError,
    EventIndexError,
    EventTooLargeError,
    GraphError,
    InPlaceViewError,
    NonFiniteError,
    NullEventError,
    RelevanceDependentRuleError,
    RuleAssignmentError,
    RuleParameterError,
    ShapeError,
    StaleMeasureError,
    TrainingModeError,
    UnknownLayerError,
    UnsupportedOperationError,
    ZeroOutputError,
)
from nrm.rules import AlphaBeta, Epsilon, Gamma, ZBox, Zero
from nrm_verify.zoo.models import mlp, small_cnn


@dataclass(frozen=True)
class BadInput:
    """``act(model, x)`` must raise ``error`` with every keyword in its message
    (case-insensitive)."""

    id: str
    error: type
    keywords: tuple[str, ...]
    build: Callable[[], tuple[nn.Module, torch.Tensor]]
    act: Callable[[nn.Module, torch.Tensor], object]
    changes_model: bool = False  # the act itself changes the model (the user's mistake being caught)


# -- models --------------------------------------------------------------------------------


def dense() -> tuple[nn.Module, torch.Tensor]:
    """fc1 (4 → 5), relu1, fc2 (5 → 3); a batch of two inputs."""
    return mlp([4, 5, 3], seed=1), torch.linspace(-1.0, 1.0, 8).reshape(2, 4)


def conv() -> tuple[nn.Module, torch.Tensor]:
    """small_cnn on one 3×16×16 image (features.0 has 8 channels, 16×16)."""
    return small_cnn(seed=2), torch.linspace(-1.0, 1.0, 3 * 16 * 16).reshape(1, 3, 16, 16).sin()


def worked_example() -> tuple[nn.Module, torch.Tensor]:
    """NRM-SPEC §6: h = ReLU((x1 + x2, 3 x1 − x2)), y = h1 − h2 at x = (1, 2); layers input, '0', '2'."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0], [3.0, -1.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
    return model, torch.tensor([[1.0, 2.0]], dtype=torch.float64)


def with_module(*modules: nn.Module, x_shape=(2, 4)) -> Callable[[], tuple[nn.Module, torch.Tensor]]:
    def build():
        torch.manual_seed(0)
        model = nn.Sequential(*modules).eval()
        return model, torch.linspace(-1.0, 1.0, int(torch.tensor(x_shape).prod())).reshape(x_shape)
    return build


class Arctangent(nn.Module):
    """torch.atan of the features (an operation no built-in kind reads)."""

    def forward(self, x):
        return torch.atan(x)


class Gated(nn.Module):
    """A product of two factors, neither a gate: split="signal" cannot tell which is the signal."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        return x * self.inner(x)


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.inner(x)
        return x


class PlusInfinity(nn.Module):
    """Adds the constant +∞ (a constant is a bias, nrm.layers.constants.AddConstant; nrm reads finite
    constants and −∞ as a mask, never +∞)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 2)

    def forward(self, x):
        return self.inner(x) + float("inf")


class ViewWrite(nn.Module):
    """Writes into a slice of an activation (through a view) and then reads the whole."""

    def __init__(self):
        super().__init__()
        self.inner, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.inner(x)
        h[:, :2].mul_(2.0)
        return self.out(h)


class Scale(nn.Module):
    """y = s · x per feature: a user's layer."""

    def __init__(self, n: int = 4):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, n))

    def forward(self, x):
        return x * self.scale


class WrongScaleKind(nrm.layers.Linear):
    """A declared kind whose map is twice the module's forward: the self-check catches it."""

    modules = (Scale,)

    def map(self, call, a, rule=None):
        from nrm.linear import DenseMap

        return DenseMap(torch.diag(2 * call.module.scale.detach()), None)


def _intersection_of_unions(n: int):
    event = nrm.OMEGA
    for i in range(n):
        event = event & (nrm.At("input", index=[i]) | nrm.At("fc1", index=[i]))
    return event


def with_wrong_kind(model, x):
    nrm.layers.register(WrongScaleKind)
    try:
        return nrm.explain(model, x, target=0)
    finally:
        nrm.layers.unregister(WrongScaleKind)


def stale(model, x):
    """Explain, then change a weight in place (as optimizer.step() would), then ask."""
    m = nrm.explain(model, x, target=0)
    with torch.no_grad():
        model.fc1.weight.add_(0.1)
    return m.marginal("input")


def nested_arctangent():
    model = nn.Sequential(OrderedDict(
        head=nn.Linear(4, 4), body=nn.Sequential(nn.Linear(4, 4), nn.Unflatten(1, (1, 4)), Arctangent(),
                                                 nn.Flatten()), out=nn.Linear(4, 2),
    )).eval()
    return model, torch.linspace(-1.0, 1.0, 8).reshape(2, 4)


def custom_container(cls):
    def build():
        model = nn.Sequential(OrderedDict(block=cls(), out=nn.Linear(4 if cls is not PlusInfinity else 2, 2))).eval()
        return model, torch.linspace(-1.0, 1.0, 8).reshape(2, 4)
    return build


def zero_output():
    model = nn.Sequential(nn.Linear(2, 1, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
    return model, torch.tensor([[1.0, 1.0]])


def broken(kind: str):
    """The dense model with one tensor made non-finite."""
    def build():
        model, x = dense()
        with torch.no_grad():
            if kind == "nan-weight":
                model.fc1.weight[2, 1] = float("nan")
            elif kind == "inf-bias":
                model.fc2.bias[0] = float("inf")
        return model, x
    return build


def nan_running_var():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 2)).eval()
    with torch.no_grad():
        model[1].running_var[1] = float("nan")
    return model, torch.linspace(-1.0, 1.0, 48).reshape(1, 3, 4, 4)


def nonfinite_input(value: float):
    def build():
        model, x = dense()
        x = x.clone()
        x[1, 3] = value
        return model, x
    return build


def training(whole: bool):
    def build():
        model, x = conv()
        if whole:
            model.train()
        else:
            model.classifier[1].train()
        return model, x
    return build


class RelevanceSplit(Epsilon):
    """An ε rule flagged as reading the incoming relevance (its split ignores it here):
    it has no fixed kernel, so nrm refuses to run it upwards."""

    reads_relevance = True

    def column(self, ops, contributions, biases, relevance=None):
        return super().column(ops, contributions, biases)


class PlainGraphConv(nn.Module):
    """A graph network in plain torch (message passing as PyG writes it): gather along the
    edges, sum onto the targets, a linear head."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x, edge_index):
        messages = x.index_select(-2, edge_index[0])
        return self.lin(torch.zeros_like(x).index_add(-2, edge_index[1], messages))


def graph_model():
    return PlainGraphConv().eval(), torch.linspace(-1.0, 1.0, 12).reshape(3, 4)


def on_graph(edge_index: torch.Tensor) -> Callable:
    """``nrm.gnn.explain`` on a graph given by ``edge_index`` (x: the nodes' features, (N, F))."""
    return lambda model, x: nrm.gnn.explain(model, x, edge_index, target=0, node=0)


def on_meta():
    model, x = dense()
    return model.to("meta"), x


# -- actions -------------------------------------------------------------------------------


def explain(**kwargs) -> Callable:
    kwargs.setdefault("target", 0)
    return lambda model, x: nrm.explain(model, x, **kwargs)


def query(fn: Callable, **kwargs) -> Callable:
    """Explain successfully, then ask the measure something bad."""
    kwargs.setdefault("target", 0)
    return lambda model, x: fn(nrm.explain(model, x, **kwargs))


def with_input(make_x: Callable, **kwargs) -> Callable:
    kwargs.setdefault("target", 0)
    return lambda model, x: nrm.explain(model, make_x(x), **kwargs)


def construct(make_rule: Callable) -> Callable:
    """The rule is built inside the action, as a user would write ``rules=Rule(…)``."""
    return lambda model, x: nrm.explain(model, x, target=0, rules=make_rule())


NULL_UNION = nrm.At("input", index=[0]) | nrm.At("0", index=[0])  # μ = 1/2 + 1 − 3/2 = 0 (NRM-SPEC §6)

CASES: list[BadInput] = [
    BadInput("graph-edge-index-float", GraphError, ("edge_index", "int64", "edge_index.long()"), graph_model,
             on_graph(torch.tensor([[0.0, 1.0], [1.0, 2.0]]))),
    BadInput("graph-node-out-of-range", GraphError, ("outside 0 … 2", "[[1, 7]]"), graph_model,
             on_graph(torch.tensor([[0, 1], [1, 7]]))),
    # unsupported operations: the message names the operation, its module, its path, the line of the
    # model's code, and how to declare a layer kind
    BadInput("unsupported-atan", UnsupportedOperationError,
             ("torch.atan", "in Arctangent", "at '1'", "no layer kind", "nrm.layers.register"),
             with_module(nn.Linear(4, 3), Arctangent(), nn.Linear(3, 2)), explain()),
    BadInput("unsupported-atan-nested", UnsupportedOperationError, ("torch.atan", "Arctangent", "'body.2'"),
             nested_arctangent, explain()),
    BadInput("unsupported-product-gate", AmbiguousProductError,
             ("Tensor.mul", "Gated", "'block'", "bad_inputs.py", "return x * self.inner(x)", "split='equal'"),
             custom_container(Gated), explain()),
    BadInput("unsupported-control-flow", DataDependentControlFlowError,
             ("control flow", "bad_inputs.py", "if x.sum() > 0", "Tensor.__bool__"),
             lambda: (Branchy().eval(), torch.ones(2, 4)), explain()),
    BadInput("unsupported-constant-addition", UnsupportedOperationError, ("Tensor.add", "+inf", "PlusInfinity"),
             custom_container(PlusInfinity), explain()),
    BadInput("in-place-write-through-a-view", InPlaceViewError,
             ("changed in place through a view", "bad_inputs.py", "return self.out(h)"),
             lambda: (ViewWrite().eval(), torch.linspace(-1.0, 1.0, 8).reshape(2, 4)), explain()),
    BadInput("capture-mismatch-wrong-kind", CaptureMismatchError,
             ("'0'", "WrongScaleKind", "does not reproduce", "check-layer"),
             with_module(Scale(), nn.Linear(4, 2)), with_wrong_kind),
    BadInput("stale-measure-weight-changed", StaleMeasureError, ("'fc1.weight'", "changed after explain",
                                                                  "explain again"), dense, stale,
             changes_model=True),
    BadInput("unsupported-batchnorm-batch-statistics", UnsupportedOperationError,
             ("F.batch_norm", "BatchNorm1d", "'2'", "running statistics"),
             with_module(nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3, track_running_stats=False), nn.Linear(3, 2)),
             explain()),
    BadInput("unsupported-batchnorm-without-statistics", UnsupportedOperationError,
             ("BatchNorm1d", "'1'", "track_running_stats"),
             with_module(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False), nn.Linear(3, 2)), explain()),
    BadInput("unsupported-maxpool1d", UnsupportedOperationError, ("max_pool1d", "MaxPool1d", "'1'"),
             with_module(nn.Linear(4, 4), nn.MaxPool1d(2), nn.Linear(2, 2)), explain()),
    BadInput("unsupported-fractional-max-pool", UnsupportedOperationError,
             ("F.fractional_max_pool2d", "FractionalMaxPool2d", "'1'", "at random"),
             with_module(nn.Conv2d(3, 2, 3, padding=1), nn.FractionalMaxPool2d(2, output_size=2), nn.Flatten(),
                         nn.Linear(8, 2), x_shape=(1, 3, 4, 4)), explain()),
    # f_c(x) = 0
    BadInput("zero-output", ZeroOutputError, ("f_c(x) = 0", "samples [0]", "another target"),
             zero_output, explain()),
    BadInput("zero-start-vector", ZeroOutputError, ("= 0", "start vector"),
             dense, explain(target=None, start=torch.zeros(2, 3))),
    # conditioning on a null event names the event
    BadInput("null-event-union", NullEventError,
             ("cannot condition", "At('input', index=[0])", "At('0', index=[0])", "measure is 0"),
             worked_example, query(lambda m: m.conditional(nrm.At("input", index=[1]), given=NULL_UNION))),
    BadInput("null-event-empty", NullEventError, ("cannot condition", "At('fc1', index=[])"),
             dense, query(lambda m: m.conditional(nrm.At("fc1", index=[0]), given=nrm.At("fc1", index=[])))),
    # unknown layers list the valid names
    BadInput("unknown-layer-marginal", UnknownLayerError,
             ("'fc9'", "valid names", "'fc1'", "'relu1'", "'input'", "'output'"),
             dense, query(lambda m: m.marginal("fc9"))),
    BadInput("unknown-layer-event", UnknownLayerError, ("'features.99'", "valid names", "'features.0'"),
             conv, query(lambda m: m(nrm.At("features.99", channels=[0])))),
    BadInput("unknown-layer-joint", UnknownLayerError, ("'fc7'", "valid names"),
             dense, query(lambda m: m.joint("input", "fc7"))),
    BadInput("unknown-layer-not-a-string", UnknownLayerError, ("strings", "3"),
             dense, query(lambda m: m.absorbed(3))),
    # event indices, channels and masks that do not fit their layer
    BadInput("event-index-out-of-range", EventIndexError, ("[7]", "out of range", "'fc1'", "5 neurons"),
             dense, query(lambda m: m(nrm.At("fc1", index=[1, 7])))),
    BadInput("event-negative-index", EventIndexError, ("[-1]", "out of range"),
             dense, query(lambda m: m(nrm.At("fc1", index=[-1])))),
    BadInput("event-channel-out-of-range", EventIndexError, ("channels [8]", "'features.0'", "8 channels"),
             conv, query(lambda m: m.marginal("input", within=nrm.At("features.0", channels=[8])))),
    BadInput("event-mask-wrong-shape", EventIndexError, ("mask", "(8, 16)", "(8, 16, 16)", "'features.0'"),
             conv, query(lambda m: m(nrm.At("features.0", mask=torch.ones(8, 16, dtype=torch.bool))))),
    BadInput("event-mask-not-boolean", EventIndexError, ("mask", "boolean"),
             conv, lambda model, x: nrm.At("features.0", mask=torch.ones(8, 16, 16))),
    BadInput("event-two-selectors", EventIndexError, ("one of index=, channels=, mask=",),
             dense, lambda model, x: nrm.At("fc1", index=[0], channels=[0])),
    BadInput("event-walk-index-out-of-range", EventIndexError, ("out of range",),
             dense, query(lambda m: m.walk([0, 9, 0]))),
    # NaN and Inf
    BadInput("nonfinite-input-nan", NonFiniteError, ("input", "NaN or Inf", "samples [1]"),
             nonfinite_input(float("nan")), explain()),
    BadInput("nonfinite-input-inf", NonFiniteError, ("input", "NaN or Inf"),
             nonfinite_input(float("-inf")), explain()),
    BadInput("nonfinite-weight-nan", NonFiniteError, ("'fc1.weight'", "NaN or Inf"),
             broken("nan-weight"), explain()),
    BadInput("nonfinite-bias-inf", NonFiniteError, ("'fc2.bias'", "NaN or Inf"),
             broken("inf-bias"), explain()),
    BadInput("nonfinite-batchnorm-buffer", NonFiniteError, ("'1.running_var'", "NaN or Inf"),
             nan_running_var, explain()),
    # dtypes
    BadInput("dtype-float64-input-float32-model", DtypeMismatchError, ("float32", "float64", "'fc1.weight'"),
             dense, with_input(lambda x: x.double())),
    BadInput("dtype-integer-input", DtypeMismatchError, ("floating point", "int64", "token ids?", "inputs_embeds",
                                                          "x.float()"),
             dense, with_input(lambda x: x.long())),
    BadInput("dtype-bool-input", DtypeMismatchError, ("floating point", "torch.bool"),
             dense, with_input(lambda x: x > 0)),
    BadInput("dtype-not-a-tensor", DtypeMismatchError, ("torch.Tensor", "list"),
             dense, with_input(lambda x: x.tolist())),
    # devices (parameters on the meta device stand in for a second device)
    BadInput("device-model-on-meta", DeviceMismatchError, ("'fc1.weight'", "meta", "cpu", "move both to one device"),
             on_meta, explain()),
    # training mode: refused, never switched
    BadInput("training-mode-model", TrainingModeError, ("training mode", "model.eval()", "never changes"),
             training(True), explain()),
    BadInput("training-mode-submodule", TrainingModeError, ("training mode", "classifier.1"),
             training(False), explain()),
    # shapes of the input, target and start vector
    BadInput("shape-target-out-of-range", ShapeError, ("target", "out of range", "3 values"),
             dense, explain(target=3)),
    BadInput("shape-target-negative", ShapeError, ("out of range",), dense, explain(target=-1)),
    BadInput("shape-target-count", ShapeError, ("one int per sample", "(2)"), dense, explain(target=[0, 1, 2])),
    BadInput("shape-target-float", ShapeError, ("one int",), dense, explain(target=1.5)),
    BadInput("shape-target-and-start", ShapeError, ("exactly one of target=",),
             dense, explain(start=torch.ones(2, 3))),
    BadInput("shape-neither-target-nor-start", ShapeError, ("exactly one of target=",),
             dense, explain(target=None)),
    BadInput("shape-start-vector", ShapeError, ("start=", "(2, 3)", "(2, 4)"),
             dense, explain(target=None, start=torch.ones(2, 4))),
    BadInput("shape-input-without-batch", ShapeError, ("batch dimension", "(4,)"),
             dense, with_input(lambda x: x[0])),
    BadInput("shape-input-width", ShapeError, ("(2, 5)", "'fc1'", "Linear"),
             dense, with_input(lambda x: torch.cat([x, x[:, :1]], 1))),
    BadInput("shape-input-channels", ShapeError, ("(1, 2, 16, 16)", "'features.0'", "Conv2d"),
             conv, with_input(lambda x: x[:, :2])),
    BadInput("shape-walk-length", ShapeError, ("one neuron per layer", "3 entries", "got 2"),
             dense, query(lambda m: m.walk([0, 1]))),
    # invalid rule parameters
    BadInput("rule-alphabeta-2-2", RuleParameterError, ("alpha - beta = 1", "alpha=2", "beta=2"),
             dense, construct(lambda: AlphaBeta(2, 2))),
    BadInput("rule-alphabeta-negative-beta", RuleParameterError, ("beta must be >= 0",),
             dense, construct(lambda: AlphaBeta(0, -1))),
    BadInput("rule-epsilon-negative", RuleParameterError, ("Epsilon", "epsilon must be >= 0", "-1"),
             dense, construct(lambda: Epsilon(-1))),
    BadInput("rule-gamma-negative", RuleParameterError, ("Gamma", "gamma must be >= 0"),
             dense, construct(lambda: Gamma(-0.5))),
    BadInput("rule-negative-stabilizer", RuleParameterError, ("stabilizer must be >= 0",),
             dense, construct(lambda: Gamma(0.25, stabilizer=-1e-6))),
    BadInput("rule-zbox-empty", RuleParameterError, ("ZBox", "low must be <= high"),
             dense, construct(lambda: ZBox(1.0, -1.0))),
    BadInput("rule-unknown-stabilizer-sign", RuleParameterError, ("stabilizer_sign", "'signed'", "'both'"),
             dense, construct(lambda: Epsilon(1e-6, stabilizer_sign="both"))),
    BadInput("rule-unknown-leak", RuleParameterError, ("leak", "'absorb'", "'renormalize'"),
             dense, construct(lambda: Zero(leak="drop"))),
    BadInput("rule-reads-relevance-upwards", RelevanceDependentRuleError,
             ("'fc1'", "reads the incoming relevance", "upwards"),
             dense, query(lambda m: m.marginal("fc2", within=nrm.At("input", index=[0])), rules=RelevanceSplit())),
    # rule mappings
    BadInput("rules-unknown-layer", RuleAssignmentError, ("'fc9'", "does not have", "'fc1'", "'fc2'"),
             dense, explain(rules={"fc1": Epsilon(), "fc9": Epsilon()})),
    BadInput("rules-layer-without-rule", RuleAssignmentError, ("no rule for", "'fc1' (Linear)", "'fc2' (Linear)"),
             dense, explain(rules={nn.Conv2d: Gamma()})),
    BadInput("rules-some-layer-without-rule", RuleAssignmentError, ("no rule for", "'classifier.0' (Linear)"),
             conv, explain(rules={nn.Conv2d: Gamma(), nn.AdaptiveAvgPool2d: Zero(), "classifier.2": Epsilon()})),
    BadInput("rules-not-a-rule", RuleAssignmentError, ("Rule objects", "'epsilon'"),
             dense, explain(rules={"fc1": "epsilon"})),
    BadInput("rules-bad-key", RuleAssignmentError, ("key 3", "layer name", "module type", "nrm.FIRST"),
             dense, explain(rules={3: Epsilon()})),
    BadInput("rules-bad-type", RuleAssignmentError, ("rules= takes", "int"), dense, explain(rules=42)),
    BadInput("rules-without-shares", RuleParameterError, ("shares()", "'fc1'", "docs/rules.md"),
             dense, explain(rules=nrm.rules.Rule())),
    BadInput("rules-zbox-wrong-shape", RuleParameterError, ("low", "(2,)", "(4,)"),
             dense, explain(rules=ZBox(torch.zeros(2), torch.ones(2)))),
    # arguments of explain, of the measure's methods and of events (issue 12: every entry point × bad values)
    BadInput("argument-chunk-zero", ArgumentError, ("chunk=", "0"), dense, explain(chunk=0)),
    BadInput("argument-chunk-float", ArgumentError, ("chunk=", "2.5"), dense, explain(chunk=2.5)),
    BadInput("argument-check", ArgumentError, ("check=", "'yes'"), dense, explain(check="yes")),
    BadInput("argument-output-not-callable", ArgumentError, ("output=", "int"), dense, explain(output=3)),
    BadInput("argument-start-list", ArgumentError, ("start=", "list"), dense,
             explain(target=None, start=[[1.0, 2.0, 3.0]] * 2)),
    BadInput("nonfinite-start", NonFiniteError, ("start=", "NaN or Inf"), dense,
             explain(target=None, start=torch.full((2, 3), float("nan")))),
    BadInput("shape-target-bool", ShapeError, ("target=",), dense, explain(target=True)),
    BadInput("shape-target-string", ShapeError, ("target=",), dense, explain(target="1")),
    BadInput("shape-target-none-in-list", ShapeError, ("target=",), dense, explain(target=[0, None])),
    BadInput("shape-target-huge", ShapeError, ("out of range",), dense, explain(target=2 ** 70)),
    BadInput("shape-empty-batch", ShapeError, ("empty batch",), dense, with_input(lambda x: x[:0])),
    BadInput("device-input-on-meta", DeviceMismatchError, ("meta",), dense, with_input(lambda x: x.to("meta"))),
    BadInput("argument-at-layer-not-a-string", ArgumentError, ("layer name", "0"), dense,
             lambda model, x: nrm.At(0)),
    BadInput("argument-event-and-number", ArgumentError, ("events combine with events", "int"), dense,
             lambda model, x: nrm.At("fc1") & 3),
    BadInput("argument-within-string", ArgumentError, ("event", "str"), dense,
             query(lambda m: m.marginal("input", within="fc1"))),
    BadInput("argument-given-string", ArgumentError, ("event", "str"), dense,
             query(lambda m: m.conditional(nrm.At("fc1"), given="x"))),
    BadInput("argument-joint-same-layer", ArgumentError, ("two different layers", "'fc1'", "'relu1'"), dense,
             query(lambda m: m.joint("fc1", "relu1"))),
    BadInput("argument-joint-by", ArgumentError, ("by=", "'pixel'"), dense,
             query(lambda m: m.joint("input", "fc1", by="pixel"))),
    BadInput("argument-walk-not-a-list", ArgumentError, ("walk()", "str"), dense, query(lambda m: m.walk("012"))),
    BadInput("event-index-bool", EventIndexError, ("index=", "True", "mask="), dense,
             lambda model, x: nrm.At("fc1", index=[True])),
    BadInput("event-too-large", EventTooLargeError, ("cylinders", "At(layer, index=[…])"), dense,
             lambda model, x: _intersection_of_unions(13)),
]
