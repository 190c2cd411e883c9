"""Normalization kinds and the layer scale (issue 13, every torchvision CNN): a batch norm
that cannot fold (a diagonal affine layer of its own), layer norm and group norm with σ held
at its forward value (a linear map with centring, AttnLRP Prop. 3.4), and products by a
constant (ConvNeXt's layer scale, x * c, x / c).

For each, in a small float64 model: f_c(x) is ``model(x)[:, c]``; every layer's marginal
sums to one with its absorber (L1); the engine equals the exact rational oracle and the
explicit LRP reference (which builds its matrices from the definitions, not from the kinds'
maps) under LRP-0, ε, γ and a preset. L9 (LRP-0 = Gradient × Input) holds through the
batch norm and the scale; through layer and group norm it is not applicable against the
model's gradient (σ depends on the input), and holds against the gradient with σ detached.
A batch norm right after its conv keeps folding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nrm
from nrm.capture import capture
from nrm.layers.scale import ConstantScale
from nrm_verify import laws
from nrm_verify.laws.limits import gradient_x_input
from nrm_verify.references.explicit import reference_lrp
from nrm_verify.references.oracle import ExactNetwork
from nrm_verify.validate import HELD, NOT_APPLICABLE, PROVED
from nrm_verify.validate.layers import check_layer

pytestmark = pytest.mark.usefixtures("single_thread")

D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.presets.EpsilonGammaFlat()]


def _seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.7)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=D) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=D) + 0.5)
    return model.eval()


def _x(*shape, seed=1):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class DenseLayer(nn.Module):
    """DenseNet's layer in small: BN → ReLU → conv on the concatenation of what came before."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 2, 1)
        self.norm1, self.conv1 = nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3, padding=1)
        self.norm2, self.fc = nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x):
        h = self.stem(x)
        h = torch.cat([h, self.conv1(F.relu(self.norm1(h)))], 1)  # the stem's output fans out: BN cannot fold
        return self.fc(F.relu(self.norm2(h)).mean((2, 3)))


class InputNorm(nn.Module):
    """A batch norm on the input, then conv → BN (folds) → relu → linear."""

    def __init__(self):
        super().__init__()
        self.bn0, self.conv, self.bn1, self.fc = nn.BatchNorm2d(2), nn.Conv2d(2, 3, 2), nn.BatchNorm2d(3), \
            nn.Linear(12, 2)

    def forward(self, x):
        return self.fc(F.relu(self.bn1(self.conv(self.bn0(x)))).flatten(1))


class CNBlock(nn.Module):
    """ConvNeXt's block (torchvision's CNBlock in small): dwconv → permute → LayerNorm → Linear →
    GELU → Linear → layer scale → permute → residual add; then LayerNorm2d-style and a head."""

    def __init__(self, dim: int = 3, act=nn.GELU):
        super().__init__()
        self.stem = nn.Conv2d(2, dim, 1)
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm, self.up, self.act, self.down = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4), act(), \
            nn.Linear(4, dim)
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 0.5)
        self.head_norm, self.fc = nn.LayerNorm(dim), nn.Linear(dim, 2)

    def forward(self, x):
        h = self.stem(x)
        r = self.dw(h).permute(0, 2, 3, 1)
        r = self.down(self.act(self.up(self.norm(r)))).permute(0, 3, 1, 2)
        h = self.layer_scale * r + h
        h = F.layer_norm(h.permute(0, 2, 3, 1), (h.shape[1],), self.head_norm.weight, self.head_norm.bias,
                         1e-6).permute(0, 3, 1, 2)
        return self.fc(h.mean((2, 3)))


class Groups(nn.Module):
    """conv → GroupNorm → relu → x / c → 0.5 * x → linear, and group norm without affine."""

    def __init__(self):
        super().__init__()
        self.conv, self.gn, self.gn2, self.fc = nn.Conv2d(2, 4, 2), nn.GroupNorm(2, 4), \
            nn.GroupNorm(4, 4, affine=False), nn.Linear(16, 2)
        self.register_buffer("c", torch.tensor([2.0, -4.0, 0.5, 1.0]).reshape(4, 1, 1))

    def forward(self, x):
        h = F.relu(self.gn(self.conv(x))) / self.c
        return self.fc(self.gn2(0.5 * h).flatten(1))


class ChannelsLast(nn.Module):
    """conv → permute → LayerNorm over channels → linear → permute → layer scale → LayerNorm
    over (C, H, W) → linear: sequential, for the exact oracle."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.mix = nn.Conv2d(2, 3, 2), nn.LayerNorm(3), nn.Linear(3, 3)
        self.layer_scale = nn.Parameter(torch.ones(3, 1, 1))
        self.norm2, self.fc = nn.LayerNorm([3, 2, 2], elementwise_affine=False), nn.Linear(12, 2)

    def forward(self, x):
        h = self.mix(self.norm(self.conv(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return self.fc(self.norm2(F.relu(h * self.layer_scale)).flatten(1))


class Instances(nn.Module):
    """conv → InstanceNorm2d (affine) → relu → conv → flatten to (B, C, L) → InstanceNorm1d
    (no affine) → relu → linear, as a style-transfer or GAN block is built."""

    def __init__(self):
        super().__init__()
        self.conv, self.inorm, self.conv2 = nn.Conv2d(2, 3, 2), nn.InstanceNorm2d(3, affine=True), nn.Conv2d(3, 2, 2)
        self.inorm1, self.fc = nn.InstanceNorm1d(2), nn.Linear(2, 2)

    def forward(self, x):
        h = self.conv2(F.relu(self.inorm(self.conv(x))))
        return self.fc(F.relu(self.inorm1(h.flatten(2))).mean(2))


MODELS = {"densenet-layer": (DenseLayer, (1, 2, 3, 3)), "input-bn": (InputNorm, (1, 2, 3, 3)),
          "convnext-block": (CNBlock, (1, 2, 2, 2)), "channels-last": (ChannelsLast, (1, 2, 3, 3)),
          "group-norm": (Groups, (1, 2, 3, 3)), "instance-norm": (Instances, (1, 2, 4, 4))}
KINDS = {"densenet-layer": {"BatchNormAffine"}, "input-bn": {"BatchNormAffine"},
         "convnext-block": {"LayerNormCentring", "ConstantScale"}, "channels-last": {"LayerNormCentring",
                                                                                     "ConstantScale"},
         "group-norm": {"GroupNormCentring", "ConstantScale"}, "instance-norm": {"InstanceNormCentring"}}
SEQUENTIAL = ("input-bn", "channels-last", "group-norm", "instance-norm")  # the exact oracle reads sequential models


def _model(name: str, batch: int = 1, seed: int = 0):
    make, shape = MODELS[name]
    return _seeded(make(), seed), _x(batch, *shape[1:], seed=seed + 1)


def _target(model, x) -> int:
    with torch.no_grad():
        return int(model(x)[0].abs().argmax())


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_is_read_by_the_new_kinds_and_reproduces_the_model(name):
    model, x = _model(name, batch=2)
    with torch.no_grad():
        want = model(x.clone())
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Epsilon(0.1), check="full")
    assert torch.equal(m.f, want[:, 1])
    kinds = {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    assert KINDS[name] <= kinds, kinds
    assert laws.layer_maps(m).holds  # K2: every map gives the recorded values
    assert laws.normalization(m, tol=1e-12).holds


@pytest.mark.parametrize("name", list(MODELS))
def test_engine_equals_the_oracle_and_the_reference(name):
    """The oracle on the sequential models, the explicit reference on every one."""
    model, x = _model(name)
    target = _target(model, x)
    for rules in RULES:
        m = nrm.explain(model, x, target=target, rules=rules, check="full")
        with torch.no_grad():
            assert torch.equal(m.f, model(x.clone())[:, target])
        assert laws.normalization(m, tol=1e-12).holds, rules
        if name in SEQUENTIAL:
            exact = ExactNetwork.from_model(model, x, rules).explain(target=target)
            scale = max(1.0, float(exact.total_variation()))
            want = torch.tensor([float(v) for v in exact.marginal("input").reshape(-1)], dtype=D)
            assert float((m.marginal("input").reshape(-1) - want).abs().max()) <= 1e-9 * scale, rules
        ref = reference_lrp(model, x, target, rules)
        got = m.relevance("input")
        torch.testing.assert_close(got, ref.relevance["input"].reshape(got.shape), rtol=1e-9,
                                   atol=1e-12 * max(1.0, float(got.abs().sum())), msg=f"{rules!r}")


def test_a_batch_norm_after_its_conv_still_folds():
    model, x = _model("input-bn")
    m = nrm.explain(model, x, target=0)
    names = [b.name for b in m.network.blocks]
    assert names == ["input", "bn0", "conv", "fc"]  # bn1 folded into conv; bn0 a layer of its own
    assert [s.name for s in m.network.blocks[2].batchnorms] == ["bn1"]
    assert m.network.blocks[1].producer.layer_kind.name == "BatchNormAffine"
    assert [c.kind.name for c in capture(model, x).calls][:3] == ["BatchNormFold", "Conv", "BatchNormFold"]


def _gradient_x_input(model, x, target) -> torch.Tensor:
    xx = x.clone().requires_grad_(True)
    f = model(xx)[:, target]
    g, = torch.autograd.grad(f.sum(), xx)
    return g * x / f.detach().reshape((-1,) + (1,) * (x.dim() - 1))


@pytest.mark.parametrize("name", ["densenet-layer", "input-bn"])
def test_lrp0_is_gradient_x_input_through_a_standalone_batch_norm(name):
    """L9 through the diagonal affine layer: checked against the model's own gradient (the law's
    replay reads sequential models; the DenseNet layer concatenates)."""
    model, x = _model(name, batch=2, seed=2)
    m = nrm.explain(model, x, target=0, rules=nrm.rules.Zero())
    torch.testing.assert_close(m.marginal("input"), _gradient_x_input(model, x, 0), rtol=1e-9, atol=1e-12)
    if name == "input-bn":
        assert gradient_x_input(model, x, 0).holds is True


def test_l9_is_not_applicable_through_layer_norm_but_holds_with_sigma_detached():
    model, x = _model("convnext-block", seed=3)
    model.act = nn.ReLU().eval()
    result = gradient_x_input(model, x, 0)
    assert result.holds is None and "LayerNormCentring" in result.detail and "detached" in result.detail

    def detached(z, shape, weight, bias, eps):  # layer norm with σ held: what the map linearizes exactly
        mu = z.mean(-1, keepdim=True)
        sigma = torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + eps).detach()
        return (z - mu) / sigma * weight + bias

    m = nrm.explain(model, x, target=0, rules=nrm.rules.Zero())
    xx = x.clone().requires_grad_(True)
    original = F.layer_norm
    try:
        F.layer_norm = detached  # nn.LayerNorm and the model's own call read F.layer_norm at call time
        f = model(xx)[0, 0]
    finally:
        F.layer_norm = original
    g, = torch.autograd.grad(f, xx)
    torch.testing.assert_close(m.marginal("input"), (g * x / f.detach()).reshape(m.marginal("input").shape),
                               rtol=1e-9, atol=1e-12)


def test_a_product_of_two_activations_is_not_a_layer_scale():
    """ConstantScale refuses it (two input-derived factors); the product kind reads it, and
    without a gate among the factors the default split asks for one — unless the product is an
    activation of one tensor written by hand (relu(x) · x: x is the signal, tests/test_own_activations.py)."""
    class Product(nn.Module):
        def __init__(self, flip: bool):
            super().__init__()
            self.flip = flip

        def forward(self, x):
            return torch.relu(x) * (x.flip(-1) if self.flip else x)

    calls = capture(Product(False).double(), _x(1, 3)).calls
    assert "two input-derived tensors" in (ConstantScale().accepts(calls[-1]) or "")
    assert calls[-1].kind is not None and calls[-1].kind.role == "product"
    m = nrm.explain(nn.Sequential(Product(False), nn.Linear(3, 2).double()).eval(), _x(1, 3), target=0)
    assert [b.split for b in m.network.blocks if b.factors is not None] == [(1, 0)]  # relu(x) reaches x whole
    with pytest.raises(nrm.AmbiguousProductError, match="split='equal'"):
        nrm.explain(nn.Sequential(Product(True), nn.Linear(3, 2).double()).eval(), _x(1, 3), target=0)


def test_constant_scale_refuses_what_is_not_linear():
    class Inverse(nn.Module):
        def forward(self, x):
            return torch.div(2.0, torch.relu(x) + 1), 2.0 / (torch.relu(x) + 1)

    class Grows(nn.Module):
        def forward(self, x):
            return x * torch.ones(3, 1, 1, 2, dtype=D)  # a dimension in front of the batch

    calls = capture(Inverse(), _x(1, 2), output=lambda out: out[0]).calls
    divisions = [c for c in calls if "div" in getattr(c.func, "__name__", "")]
    assert len(divisions) == 2 and all(c.kind is None for c in divisions)  # c / x: no kind reads it
    assert "not linear" in divisions[0].refusal
    call = capture(Grows(), _x(1, 1, 2)).calls[-1]
    assert call.kind is None and "enlarges" in call.refusal


@pytest.mark.parametrize("kind", ["BatchNormAffine", "LayerNormCentring", "GroupNormCentring", "InstanceNormCentring",
                                  "ConstantScale"])
def test_check_layer_passes_the_new_kinds(kind):
    report = check_layer(nrm.layers.REGISTRY.kinds[kind], max_examples=2, only=["K2", "K3", "K5", "L1", "L9"])
    assert report.ok, str(report)
    statuses = {f"{v.law} {v.name}": v.status for v in report.verdicts}
    l9 = statuses["L9 LRP-0 = gradient × input"]
    assert l9 in ((NOT_APPLICABLE,) if "Centring" in kind else (HELD, PROVED)), l9


def test_instance_norm_is_group_norm_with_a_group_per_channel():
    """The instance-norm map equals the group-norm map with G = C on the same input, and
    nn.InstanceNorm's own rule types pick its rule (a RuleMap keyed by nn.InstanceNorm2d)."""
    from nrm.layers.norm import GroupNormCentring, InstanceNormCentring

    a = _x(2, 3, 2, 2, seed=4)
    inorm = _seeded(nn.InstanceNorm2d(3, affine=True), 5)
    gnorm = nn.GroupNorm(3, 3).double().eval()
    with torch.no_grad():
        gnorm.weight.copy_(inorm.weight)
        gnorm.bias.copy_(inorm.bias)
    ci, cg = capture(inorm, a).calls[-1], capture(gnorm, a).calls[-1]
    assert isinstance(ci.kind, InstanceNormCentring) and isinstance(cg.kind, GroupNormCentring)
    mi, mg = ci.kind.map(ci, a), cg.kind.map(cg, a)
    assert torch.equal(mi.forward(a, mi.own_weight()), mg.forward(a, mg.own_weight()))
    model = nn.Sequential(nn.Conv2d(2, 3, 2), inorm, nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)).double().eval()
    x = _x(1, 2, 3, 3, seed=6)
    rules = nrm.RuleMap(nrm.rules.Zero(), by_type={nn.InstanceNorm2d: nrm.rules.Epsilon(0.5)})
    assert not torch.equal(nrm.explain(model, x, target=0, rules=rules).marginal("input"),
                           nrm.explain(model, x, target=0, rules=nrm.rules.Zero()).marginal("input"))


def test_instance_norm_with_running_statistics_is_their_batch_norm():
    """track_running_stats=True in eval: the batch norm of the running statistics, bitwise, folded
    into the conv before it or a diagonal layer of its own; LRP-0 = Gradient × Input through it."""
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
                          nn.ReLU(), nn.InstanceNorm2d(3, track_running_stats=True), nn.Flatten(),
                          nn.Linear(12, 2))
    model = _seeded(model, 7)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for m in (model[1], model[3]):
            m.running_mean.copy_(torch.randn(3, generator=g, dtype=D) * 0.3)
            m.running_var.copy_(torch.rand(3, generator=g, dtype=D) + 0.5)
    x = _x(2, 2, 3, 3, seed=9)
    calls = [c.kind.name for c in capture(model, x).calls]
    assert calls[:4] == ["Conv", "BatchNormFold", "ReLU", "BatchNormFold"], calls
    m = nrm.explain(model, x, target=0, rules=nrm.rules.Zero(), check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 0])
    assert m.network.blocks[2].producer.layer_kind.name == "BatchNormAffine"  # after the ReLU: its own layer
    torch.testing.assert_close(m.marginal("input"), _gradient_x_input(model, x, 0), rtol=1e-9, atol=1e-12)
    ref = reference_lrp(model, x, 0, nrm.rules.Epsilon(0.1))
    got = nrm.explain(model, x, target=0, rules=nrm.rules.Epsilon(0.1)).relevance("input")
    torch.testing.assert_close(got, ref.relevance["input"].reshape(got.shape), rtol=1e-9, atol=1e-12)


def test_l9_is_not_applicable_through_instance_norm():
    model, x = _model("instance-norm", seed=3)
    result = gradient_x_input(model, x, 0)
    assert result.holds is None and "InstanceNormCentring" in result.detail
