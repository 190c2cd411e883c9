"""The elementwise activations beyond ReLU (nrm/layers/activations.py): each is read in every
spelling (module, in place, functional, torch.*, Tensor method), relevance passes it
unchanged, and the engine agrees with the exact oracle and the explicit LRP reference.
L9 (LRP-0 = Gradient × Input) holds through PReLU and is not applicable through the others."""

from __future__ import annotations

from fractions import Fraction

import nets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nrm
from nrm.capture import capture
from nrm_verify import laws
from nrm_verify.laws.limits import gradient_x_input
from nrm_verify.references.explicit import reference_lrp
from nrm_verify.references.oracle import ExactNetwork
from nrm_verify.validate import HELD, NOT_APPLICABLE, PROVED
from nrm_verify.validate.layers import check_layer

D = torch.float64


def Fn(name: str, fn) -> nn.Module:  # noqa: N802 — reads as the module it builds
    """A functional spelling of an activation, as a model's forward writes it."""
    return nets.Fn(fn, name)


def _prelu(width: int) -> nn.Module:
    module = nn.PReLU(width).double()
    with torch.no_grad():
        module.weight.copy_(torch.linspace(-0.75, 0.5, width, dtype=D))
    return module


# (id, activation, the kind that reads it, homogeneous)
CASES = [
    ("ReLU6", lambda: nn.ReLU6(), "ReLU6", False),
    ("ReLU6-inplace", lambda: nn.ReLU6(inplace=True), "ReLU6", False),
    ("F.relu6", lambda: Fn("F.relu6", F.relu6), "ReLU6", False),
    ("Hardtanh", lambda: nn.Hardtanh(-0.5, 1.5), "Hardtanh", False),
    ("Hardtanh-inplace", lambda: nn.Hardtanh(-1.0, 0.75, inplace=True), "Hardtanh", False),
    ("F.hardtanh_", lambda: Fn("F.hardtanh_", lambda x: F.hardtanh_(x, -2.0, 0.5)), "Hardtanh", False),
    ("PReLU", lambda: _prelu(5), "PReLU", True),
    ("PReLU-one", lambda: nn.PReLU(init=0.2).double(), "PReLU", True),
    ("F.prelu", lambda: Fn("F.prelu", lambda x: F.prelu(x, torch.tensor([-0.3], dtype=D))), "PReLU", True),
    ("GELU", lambda: nn.GELU(), "GELU", False),
    ("GELU-tanh", lambda: nn.GELU(approximate="tanh"), "GELU", False),
    ("SiLU", lambda: nn.SiLU(), "SiLU", False),
    ("SiLU-inplace", lambda: nn.SiLU(inplace=True), "SiLU", False),
    ("Sigmoid", lambda: nn.Sigmoid(), "Sigmoid", False),
    ("torch.sigmoid", lambda: Fn("torch.sigmoid", torch.sigmoid), "Sigmoid", False),
    ("Tensor.sigmoid_", lambda: Fn("Tensor.sigmoid_", lambda x: x.sigmoid_()), "Sigmoid", False),
    ("Tanh", lambda: nn.Tanh(), "Tanh", False),
    ("Tensor.tanh", lambda: Fn("Tensor.tanh", lambda x: x.tanh()), "Tanh", False),
    ("torch.tanh_", lambda: Fn("torch.tanh_", torch.tanh_), "Tanh", False),
    ("Softplus", lambda: nn.Softplus(beta=2.0, threshold=1.0), "Softplus", False),
    ("Hardswish", lambda: nn.Hardswish(), "Hardswish", False),
    ("Hardswish-inplace", lambda: nn.Hardswish(inplace=True), "Hardswish", False),
    ("Hardsigmoid", lambda: nn.Hardsigmoid(), "Hardsigmoid", False),
    ("Mish", lambda: nn.Mish(), "Mish", False),
    ("ELU", lambda: nn.ELU(alpha=0.7), "ELU", False),
    ("F.elu_", lambda: Fn("F.elu_", lambda x: F.elu_(x, 1.5)), "ELU", False),
    ("SELU", lambda: nn.SELU(), "SELU", False),
    ("SELU-inplace", lambda: nn.SELU(inplace=True), "SELU", False),
    ("torch.selu", lambda: Fn("torch.selu", torch.selu), "SELU", False),
    ("CELU", lambda: nn.CELU(alpha=0.6), "CELU", False),
    ("F.celu_", lambda: Fn("F.celu_", lambda x: F.celu_(x, 1.5)), "CELU", False),
    ("torch.exp", lambda: Fn("torch.exp", torch.exp), "Exp", False),
    ("Tensor.exp_", lambda: Fn("Tensor.exp_", lambda x: x.exp_()), "Exp", False),
    ("torch.abs", lambda: Fn("torch.abs", torch.abs), "Abs", True),
    ("Tensor.abs_", lambda: Fn("Tensor.abs_", lambda x: x.abs_()), "Abs", True),
    ("torch.erf", lambda: Fn("torch.erf", torch.erf), "Erf", False),
    ("torch.special.erf", lambda: Fn("torch.special.erf", torch.special.erf), "Erf", False),
    ("Tensor.erf_", lambda: Fn("Tensor.erf_", lambda x: x.erf_()), "Erf", False),
    ("torch.sign", lambda: Fn("torch.sign", torch.sign), "Sign", False),
    ("Tensor.sgn", lambda: Fn("Tensor.sgn", lambda x: x.sgn()), "Sign", False),
    ("Tensor.sign_", lambda: Fn("Tensor.sign_", lambda x: x.sign_()), "Sign", False),
    ("Hardshrink", lambda: nn.Hardshrink(lambd=0.75), "Hardshrink", True),
    ("Tensor.hardshrink", lambda: Fn("Tensor.hardshrink", lambda x: x.hardshrink()), "Hardshrink", True),
    ("Softshrink", lambda: nn.Softshrink(lambd=0.75), "Softshrink", False),
    ("Softsign", lambda: nn.Softsign(), "Softsign", False),
    ("Tanhshrink", lambda: nn.Tanhshrink(), "Tanhshrink", False),
    ("Threshold", lambda: nn.Threshold(0.5, -0.25), "Threshold", False),
    ("Threshold-inplace", lambda: nn.Threshold(-1.0, 2.0, inplace=True), "Threshold", False),
    ("LogSigmoid", lambda: nn.LogSigmoid(), "LogSigmoid", False),
    ("RReLU", lambda: nn.RReLU(0.1, 0.4), "RReLU", True),
    ("RReLU-inplace", lambda: nn.RReLU(inplace=True), "RReLU", True),
    ("torch.rrelu", lambda: Fn("torch.rrelu", lambda x: torch.rrelu(x, 0.2, 0.3)), "RReLU", True),
]
IDS = [c[0] for c in CASES]
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.presets.EpsilonPlusFlat()]


def _model(activation: nn.Module, seed: int = 0, batch: int = 1) -> tuple[nn.Module, torch.Tensor]:
    """Linear(4, 5) → activation → Linear(5, 3), with pre-activations from near 0 to past ±6
    (past the clamps of ReLU6 and Hardtanh, on both sides of the breakpoints of Hardswish
    and Hardsigmoid, small ones on their rational middle part)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), activation, nn.Linear(5, 3)).double()
    with torch.no_grad():
        spread = torch.tensor([0.2, 0.6, 1.5, 3.0, -5.0], dtype=D).reshape(5, 1)  # small and large z
        model[0].weight.copy_(spread * torch.randn((5, 4), generator=g, dtype=D))
        model[0].bias.copy_(torch.randn(5, generator=g, dtype=D))
        model[2].weight.copy_(torch.randn((3, 5), generator=g, dtype=D))
        model[2].bias.copy_(0.1 * torch.randn(3, generator=g, dtype=D))
    return model.eval(), torch.randn((batch, 4), generator=g, dtype=D)


def _conv_prelu() -> tuple[nn.Module, torch.Tensor]:
    """Conv1d → PReLU(3) per channel → Flatten → Linear: the slope depends on the channel."""
    g = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Conv1d(2, 3, 2), _prelu(3), nn.Flatten(), nn.Linear(9, 2)).double()
    with torch.no_grad():
        for p in list(model[0].parameters()) + list(model[3].parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    return model.eval(), torch.randn((1, 2, 4), generator=g, dtype=D)


def _target(model, x) -> int:
    with torch.no_grad():
        return int(model(x)[0].abs().argmax())


@pytest.mark.parametrize(("case", "make", "kind", "homogeneous"), CASES, ids=IDS)
def test_every_spelling_is_read_by_its_kind_and_reproduces_the_model(case, make, kind, homogeneous):
    model, x = _model(make(), batch=2)
    with torch.no_grad():
        want = model(x.clone())
    captured = capture(model, x)
    assert [c.kind.name for c in captured.calls] == ["Dense", kind, "Dense"]
    assert torch.equal(captured.result, want)  # the capture's output is model(x)
    assert nrm.layers.REGISTRY.kinds[kind].homogeneous is homogeneous
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Epsilon(0.1), check="full")
    assert torch.equal(m.f, want[:, 1])
    assert laws.layer_maps(m).holds  # K2: the kind's σ gives the recorded activation


def _close_to_oracle(m, exact, names) -> None:
    scale = max(1.0, float(exact.total_variation()))
    for name in names:
        want = torch.tensor([float(v) for v in exact.marginal(name).reshape(-1)], dtype=D)
        assert float((m.marginal(name).reshape(-1) - want).abs().max()) <= 1e-9 * scale, name


@pytest.mark.parametrize(("case", "make", "kind", "homogeneous"), CASES, ids=IDS)
def test_engine_equals_the_oracle_and_the_reference_and_is_normalized(case, make, kind, homogeneous):
    model, x = _model(make())
    target = _target(model, x)
    for rules in RULES:
        m = nrm.explain(model, x, target=target, rules=rules, check="full")
        with torch.no_grad():
            assert torch.equal(m.f, model(x.clone())[:, target])
        assert laws.normalization(m, tol=1e-12).holds, rules
        _close_to_oracle(m, ExactNetwork.from_model(model, x, rules).explain(target=target), ("input", "0", "1"))
        ref = reference_lrp(model, x, target, rules)
        for name in ("input", "0", "1"):
            torch.testing.assert_close(m.relevance(name), ref.relevance[name].reshape(m.relevance(name).shape),
                                       rtol=1e-9, atol=1e-12, msg=f"{rules!r} at {name}")


@pytest.mark.parametrize(("case", "make", "kind", "homogeneous"), CASES, ids=IDS)
def test_l9_holds_through_homogeneous_activations_only(case, make, kind, homogeneous):
    model, x = _model(make(), seed=1, batch=2)
    result = gradient_x_input(model, x, 0)
    if homogeneous:
        assert result.holds is True, str(result)
    else:
        assert result.holds is None and kind in result.detail and "homogeneous" in result.detail, str(result)


def test_prelu_per_channel_against_the_oracle_the_reference_and_l9():
    model, x = _conv_prelu()
    target = _target(model, x)
    for rules in RULES[:3]:
        m = nrm.explain(model, x, target=target, rules=rules, check="full")
        assert laws.normalization(m, tol=1e-12).holds
        _close_to_oracle(m, ExactNetwork.from_model(model, x, rules).explain(target=target), ("input", "0", "1"))
        ref = reference_lrp(model, x, target, rules)
        torch.testing.assert_close(m.relevance("input"), ref.relevance["input"].reshape(x.shape), rtol=1e-9,
                                   atol=1e-12)
    assert gradient_x_input(model, x, target).holds is True


def _call(kind: str, module: nn.Module, shape=(1, 9)):
    x = torch.linspace(-7.0, 7.0, int(np.prod(shape)), dtype=D).reshape(shape)
    call = capture(nn.Sequential(nn.Identity(), module), x).calls[0]
    assert call.kind.name == kind
    return call, x


@pytest.mark.parametrize(("kind", "module"), [
    ("ReLU6", nn.ReLU6()), ("Hardtanh", nn.Hardtanh(-0.5, 1.5)), ("PReLU", nn.PReLU(init=0.3).double()),
    ("Hardsigmoid", nn.Hardsigmoid()), ("Hardswish", nn.Hardswish()),
    ("Hardshrink", nn.Hardshrink(lambd=3.0)), ("Softshrink", nn.Softshrink(lambd=3.0)), ("Softsign", nn.Softsign()),
    ("Threshold", nn.Threshold(3.0, -0.5)), ("RReLU", nn.RReLU(0.125, 0.375).eval()),
    ("Sign", Fn("torch.sign", torch.sign)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_exact_forms_are_rational_and_agree_with_torch(kind, module):
    """Piecewise-linear and -rational kinds evaluate on fractions, breakpoints included."""
    call, x = _call(kind, module)
    values = [Fraction(v) for v in (-7, -6, -3, Fraction(-1, 2), 0, Fraction(1, 3), 3, 6, 7)]
    z = np.array(values, dtype=object)
    exact = call.kind.exact(call, z)
    assert all(isinstance(v, Fraction) for v in exact)
    floats = call.kind.evaluate(call, torch.tensor([float(v) for v in values], dtype=D).reshape(1, -1))
    assert max(abs(float(e) - float(f)) for e, f in zip(exact, floats.reshape(-1))) <= 1e-15
    if kind == "Hardswish":
        assert exact[values.index(Fraction(1, 3))] == Fraction(1, 3) * (Fraction(1, 18) + Fraction(1, 2))
    if kind in ("Hardshrink", "Softshrink"):  # the breakpoint λ = 3 itself maps to 0 (|z| > λ is strict)
        assert exact[values.index(Fraction(3))] == 0 and exact[values.index(Fraction(-3))] == 0
    if kind == "Threshold":  # z > t is strict: t = 3 itself takes the value −1/2
        assert exact[values.index(Fraction(3))] == Fraction(-1, 2) and exact[values.index(Fraction(6))] == 6
    if kind == "Softsign":
        assert exact[values.index(Fraction(1, 3))] == Fraction(1, 4)
    if kind == "Sign":  # sign(0) = 0, exactly
        assert list(exact) == [-1, -1, -1, -1, 0, 1, 1, 1, 1]
    if kind == "RReLU":  # the mean slope (1/8 + 3/8) / 2 = 1/4
        assert exact[values.index(Fraction(-6))] == Fraction(-3, 2) and exact[values.index(Fraction(3))] == 3


def test_rrelu_in_training_mode_is_refused_by_name():
    """torch.rrelu(training=True) draws a slope per neuron: no map; refused where it is."""
    model = nn.Sequential(nn.Linear(4, 5), Fn("rrelu-train", lambda x: torch.rrelu(x, 0.1, 0.3, True)),
                          nn.Linear(5, 3)).double().eval()
    with pytest.raises(nrm.UnsupportedOperationError, match="training mode.*model.eval"):
        nrm.explain(model, torch.randn(1, 4, dtype=D), target=0)


@pytest.mark.parametrize("kind", ["PReLU", "Sigmoid"])
def test_check_layer_passes_a_new_kind(kind):
    """A short check-layer run (every kind gets one in tests/test_layers.py; the full
    run's output is recorded in docs/layers.md)."""
    report = check_layer(nrm.layers.REGISTRY.kinds[kind], max_examples=3, only=["K2", "K5", "L1", "L18", "L9"])
    assert report.ok, str(report)
    statuses = {f"{v.law} {v.name}": v.status for v in report.verdicts}
    l9 = statuses["L9 LRP-0 = gradient × input"]
    assert l9 in ((HELD, PROVED) if kind == "PReLU" else (NOT_APPLICABLE,)), l9


def test_check_layer_takes_a_built_in_kind_by_its_class():
    """``nrm-verify check-layer nrm.layers.activations:Tanh`` checks the registered kind
    (a fresh instance of the class would read no call: the registry's does)."""
    report = check_layer("nrm.layers.activations:Tanh", max_examples=2, only=["K2"])
    assert report.ok and not report.invalid, str(report)
    assert "Tanh" in nrm.layers.REGISTRY.kinds  # still registered afterwards


def test_log_of_a_positive_activation_and_of_a_non_positive_one():
    """log(softplus(W x)) is read (Log after Softplus) and agrees with the oracle and the reference;
    log of a value ≤ 0 is −∞ or NaN, refused by name."""
    model, x = _model(Fn("log∘softplus", lambda h: torch.log(F.softplus(h))))
    assert [c.kind.name for c in capture(model, x).calls] == ["Dense", "Softplus", "Log", "Dense"]
    for rules in RULES[:2]:
        m = nrm.explain(model, x, target=0, rules=rules, check="full")
        ref = reference_lrp(model, x, 0, rules)
        torch.testing.assert_close(m.relevance("input"), ref.relevance["input"].reshape(x.shape), rtol=1e-9,
                                   atol=1e-12)
        exact = ExactNetwork.from_model(model, x, rules).explain(target=0)
        want = torch.tensor([float(v) for v in exact.marginal("input").reshape(-1)], dtype=D)
        assert float((m.marginal("input").reshape(-1) - want).abs().max()) <= 1e-9 * max(
            1.0, float(exact.total_variation()))
    bad, x = _model(Fn("log", torch.log))
    with pytest.raises(nrm.NonFiniteError):
        nrm.explain(bad, x - 10.0, target=0)
