"""Norms and arithmetic written by hand in ``forward()`` (arbitrary architectures as their
authors write them): a − b and broadcast a ± b of two input-derived tensors (a sum of branches
after a negation and an expansion), a / b (a product with the reciprocal of the divisor), √x,
1/x, the Euclidean norm, and the variance and standard deviation.

ConvNeXt's channels-first LayerNorm as its authors wrote it, (x − u) / √(s + ε), and ConvNeXt
V2's global response normalization, Gx / mean(Gx) with Gx = ‖x‖₂, are read as what they
compute: the divisor (and everything computed from held normalizers alone) is held at its
forward value — the identity on 1/σ, AttnLRP Prop. 3.4 — so the numerator keeps the relevance.

For each model (float64): f_c(x) is the model's; L1 at every layer (with the walks bypassing
it on a branched model); the engine equals the explicit LRP reference (which decides what is
held from the recorded functions' names, not from the kinds) under four rule sets; under LRP-0
the hand-written LayerNorm gives the marginals of ``F.layer_norm`` (the kind
:class:`~nrm.layers.norm.LayerNormCentring`), since the centring through mean, negation and
sum splits exactly as the centring matrix does. L9 holds through a − b and is not applicable
through the held divisor. Bad arguments are refused by name.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from agreement import seeded
from torch import nn

import nrm
from nrm.capture import capture
from nrm_verify.laws.limits import gradient_x_input
from nrm_verify.references.explicit import reference_lrp
from nrm_verify.validate.layers import check_layer

pytestmark = pytest.mark.usefixtures("single_thread")

D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.presets.EpsilonGammaFlat()]


def _x(*shape, seed=1):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


def _seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    return seeded(model, seed)


class LayerNorm2d(nn.Module):
    """ConvNeXt's channels-first LayerNorm, as written in its repository and in transformers."""

    def __init__(self, c: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ByLayerNorm(nn.Module):
    """The same normalization through ``F.layer_norm`` over the channels (channels last)."""

    def __init__(self, norm: LayerNorm2d):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.norm.weight, self.norm.bias,
                            self.norm.eps).permute(0, 3, 1, 2)


class GRN(nn.Module):
    """ConvNeXt V2's global response normalization (channels last), with ``torch.norm`` or
    ``torch.linalg.vector_norm``."""

    def __init__(self, c: int, linalg: bool = False):
        super().__init__()
        self.gamma, self.beta = nn.Parameter(torch.zeros(1, 1, 1, c)), nn.Parameter(torch.zeros(1, 1, 1, c))
        self.linalg = linalg

    def forward(self, x):
        if self.linalg:
            gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        else:
            gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    """conv → hand-written LayerNorm2d → GELU → channels last → GRN → linear → back → head."""

    def __init__(self, linalg: bool = False):
        super().__init__()
        self.conv, self.norm, self.grn = nn.Conv2d(2, 3, 2), LayerNorm2d(3), GRN(3, linalg)
        self.mix, self.fc = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        h = F.gelu(self.norm(self.conv(x))).permute(0, 2, 3, 1)
        h = self.mix(self.grn(h)).permute(0, 3, 1, 2)
        return self.fc(h.mean((2, 3)))


class Norm(nn.Module):
    """conv → (hand-written or F.layer_norm) channels-first LayerNorm → relu → linear."""

    def __init__(self, by_kind: bool = False):
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(2, 3, 2), LayerNorm2d(3), nn.Linear(12, 2)
        self.by_kind = by_kind

    def forward(self, x):
        h = ByLayerNorm(self.norm)(self.conv(x)) if self.by_kind else self.norm(self.conv(x))
        return self.fc(F.relu(h).flatten(1))


class Differences(nn.Module):
    """relu(A x) − B x (a column (B, 1) broadcast against (B, 4)), then B x − C x + that."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.fc = nn.Linear(3, 4), nn.Linear(3, 1), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = F.relu(F.relu(self.a(x)) - self.b(x))
        h = torch.sub(self.b(x), self.c(x)) + h  # −(C x), not −relu(·): a negated zero would stop L9's check
        return self.fc(F.relu(h))


class AnnotatedLayerNorm(nn.Module):
    """The Annotated Transformer's LayerNorm: a · (x − mean) / (std + ε) + b, std unbiased."""

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.a_2, self.b_2, self.eps = nn.Parameter(torch.ones(features)), nn.Parameter(torch.zeros(features)), eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class Annotated(nn.Module):
    """linear → the Annotated Transformer's LayerNorm → relu → x / √(var(x, unbiased=False) + ε) → linear."""

    def __init__(self):
        super().__init__()
        self.a, self.norm, self.fc = nn.Linear(3, 5), AnnotatedLayerNorm(5), nn.Linear(5, 2)

    def forward(self, x):
        h = F.relu(self.norm(self.a(x)))
        return self.fc(h / torch.sqrt(torch.var(h, dim=-1, unbiased=False, keepdim=True) + 1e-3))


MODELS = {"convnext-layernorm": (Norm, (2, 2, 3, 3)), "convnext-v2-block": (Block, (2, 2, 4, 4)),
          "annotated-transformer-layernorm": (Annotated, (3, 3)),
          "convnext-v2-block-linalg": (lambda: Block(linalg=True), (2, 2, 4, 4)),
          "differences": (Differences, (2, 3))}


def _model(name: str, seed: int = 0):
    make, shape = MODELS[name]
    model = _seeded(make(), seed)
    with torch.no_grad():  # GRN's γ, β start at zero in the papers; give them values so that its path counts
        for m in model.modules():
            if isinstance(m, GRN):
                m.gamma.copy_(torch.tensor([0.8, -0.5, 1.2], dtype=D).reshape(1, 1, 1, 3))
                m.beta.copy_(torch.tensor([0.1, 0.0, -0.2], dtype=D).reshape(1, 1, 1, 3))
    return model, _x(*shape, seed=seed + 1)


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_is_read_faithfully_and_normalized(name):
    model, x = _model(name)
    with torch.no_grad():
        want = model(x.clone())
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Epsilon(0.1), check="full")
    torch.testing.assert_close(m.f, want[:, 1], rtol=1e-12, atol=1e-12)  # a / b rounds twice as a · (1/b)
    for layer in m.canonical_names():
        total = m.marginal(layer).reshape(x.shape[0], -1).sum(1) + m.absorbed(layer)
        if not m.network.sequential:
            total = total + m.bypassing(layer)
        assert float((total - 1).abs().max()) <= 1e-12, (name, layer)
    kinds = {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    assert {"Negate", "Expand", "Add"} <= kinds or name.startswith("convnext-v2"), kinds


@pytest.mark.parametrize("rules", RULES, ids=repr)
@pytest.mark.parametrize("name", list(MODELS))
def test_engine_equals_the_explicit_reference(name, rules):
    model, x = _model(name, seed=2)
    m = nrm.explain(model, x, target=0, rules=rules)
    ref = reference_lrp(model, x, 0, rules)
    got = m.relevance("input")
    torch.testing.assert_close(got, ref.relevance["input"].reshape(got.shape), rtol=1e-9,
                               atol=1e-12 * max(1.0, float(got.abs().sum())))


def test_a_hand_written_layer_norm_under_lrp0_is_the_layer_norm_kind():
    """Centring through mean, −1 and + splits under LRP-0 exactly as the centring matrix
    (δ_jk − 1/n) does, and the held √(s + ε) is the kind's held σ: the marginals agree at
    every shared layer."""
    hand, x = _model("convnext-layernorm", seed=3)
    kind = Norm(by_kind=True).double().eval()
    kind.load_state_dict(hand.state_dict())
    with torch.no_grad():
        hand.norm.weight.copy_(torch.tensor([1.3, 0.6, -0.9], dtype=D))
        hand.norm.bias.copy_(torch.tensor([0.2, -0.1, 0.3], dtype=D))
        kind.norm.weight.copy_(hand.norm.weight)
        kind.norm.bias.copy_(hand.norm.bias)
        torch.testing.assert_close(hand(x), kind(x), rtol=1e-12, atol=1e-12)
    a = nrm.explain(hand, x, target=1, rules=nrm.rules.Zero())
    b = nrm.explain(kind, x, target=1, rules=nrm.rules.Zero())
    assert "LayerNormCentring" in {blk.producer.layer_kind.name for blk in b.network.blocks[1:]}
    for layer in ("input", "conv", "fc"):
        torch.testing.assert_close(a.marginal(layer), b.marginal(layer), rtol=1e-9, atol=1e-12)


def test_the_held_divisor_takes_nothing():
    """Relevance never reaches the norm's path: the √ and 1/x layers carry none."""
    model, x = _model("convnext-layernorm", seed=4)
    calls = capture(model, x).calls
    assert [c.kind.name for c in calls if c.kind is not None and c.kind.name in ("Sqrt", "Reciprocal")] == \
        ["Sqrt", "Reciprocal"]
    m = nrm.explain(model, x, target=0, rules=nrm.rules.Epsilon(0.1))
    for block in m.network.blocks[1:]:
        if block.producer.layer_kind.name in ("Sqrt", "Reciprocal", "Power"):
            assert float(m.marginal(block.name).abs().max()) == 0.0, block.name


def test_l9_holds_through_differences_and_is_not_applicable_through_a_held_divisor():
    model, x = _model("differences", seed=5)
    assert gradient_x_input(model, x, 0).holds is True
    m = nrm.explain(model, x, target=0, rules=nrm.rules.Zero())
    xx = x.clone().requires_grad_(True)
    f = model(xx)[:, 0]
    g, = torch.autograd.grad(f.sum(), xx)
    torch.testing.assert_close(m.marginal("input"), g * x / f.detach()[:, None], rtol=1e-9, atol=1e-12)
    norm, x = _model("convnext-layernorm")
    result = gradient_x_input(norm, x, 0)
    assert result.holds is None and "product" in result.detail


def test_a_division_by_a_divisor_that_is_not_a_normalizer_is_a_product_to_choose_a_split_for():
    """x / (relu(W x) + 1): two factors, neither a gate nor held — under the default split the
    product is ambiguous and the error says how to choose; with split="equal" it is read."""
    class Ratio(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.a(x) / (F.relu(self.b(x)) + 1.0))

    model, x = _seeded(Ratio()), _x(2, 3)
    with pytest.raises(nrm.AmbiguousProductError, match="split="):
        nrm.explain(model, x, target=0)
    from nrm.layers.products import Multiply

    nrm.layers.register(Multiply(split="equal"))
    try:
        m = nrm.explain(model, x, target=0, rules=nrm.rules.Epsilon(0.1), check="full")
        with torch.no_grad():
            torch.testing.assert_close(m.f, model(x)[:, 0], rtol=1e-12, atol=1e-12)
        ref = reference_lrp(model, x, 0, nrm.rules.Epsilon(0.1))
        torch.testing.assert_close(m.relevance("input"), ref.relevance["input"].reshape(x.shape), rtol=1e-9,
                                   atol=1e-12)
    finally:
        nrm.layers.register(Multiply())


class Op(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.a, self.b, self.op = nn.Linear(3, 4), nn.Linear(3, 4), op

    def forward(self, x):
        return self.op(self.a(x), F.relu(self.b(x))).reshape(x.shape[0], -1).sum(1, keepdim=True)


@pytest.mark.parametrize("op, words", [
    (lambda a, b: torch.sub(a, b, alpha=2.0), "alpha="),
    (lambda a, b: torch.add(a, b[:, :1], alpha=2.0), "alpha="),
    (lambda a, b: torch.div(a, b + 1.0, rounding_mode="floor"), "rounding_mode="),
    (lambda a, b: a.unsqueeze(1) - b, "same number of dimensions"),
    (lambda a, b: a.unsqueeze(1) / (b + 1.0), "same number of dimensions"),
    (lambda a, b: a * torch.linalg.vector_norm(b, ord=1, dim=1, keepdim=True), "1-norm"),
    (lambda a, b: a * torch.linalg.vector_norm(b, dim=0, keepdim=True), "batch dimension"),
    (lambda a, b: a * torch.norm(b), "whole tensor"),
    (lambda a, b: a / torch.std(b), "whole tensor"),
    (lambda a, b: a / (b.var(0, keepdim=True) + 1.0), "batch dimension"),
    (lambda a, b: a / (b[:, :1].var(1, keepdim=True) + 1.0), "n − correction"),
    (lambda a, b: a.sub_(b), "in place"),
    (lambda a, b: a.div_(b + 1.0), "in place"),
], ids=["sub-alpha", "add-alpha", "div-floor", "sub-ranks", "div-ranks", "norm-1", "norm-batch", "norm-all", "std-all",
        "var-batch", "var-one", "sub-in-place", "div-in-place"])
@pytest.mark.filterwarnings("ignore:var\\(\\). degrees of freedom")  # torch's own, from the refused call
def test_what_the_decompositions_do_not_read_is_refused_by_name(op, words):
    model = _seeded(Op(op))
    with pytest.raises(nrm.UnsupportedOperationError, match=words):
        nrm.explain(model, _x(2, 3), target=0)


def test_a_constant_operand_stays_with_the_kinds_that_read_it():
    """x − c, c − x, x / c are read as before (AddConstant, ConstantScale): the decompositions
    apply only when both operands are computed from the input."""
    class Constants(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.register_buffer("c", torch.tensor([0.5, -1.0, 2.0], dtype=D))

        def forward(self, x):
            h = self.a(x)
            return (torch.sub(h, self.c) - 1.0) / 4.0 + (2.0 - h) / self.c

    model = _seeded(Constants())
    names = [c.kind.name for c in capture(model, _x(2, 3)).calls if c.kind is not None]
    assert "Negate" not in names and "Reciprocal" not in names and {"AddConstant", "ConstantScale"} <= set(names)


@pytest.mark.parametrize("kind", ["Sqrt", "Reciprocal"])
def test_check_layer_passes_the_new_kinds(kind):
    report = check_layer(nrm.layers.REGISTRY.kinds[kind], max_examples=2, only=["K2", "K5", "L1"])
    assert report.ok, str(report)
