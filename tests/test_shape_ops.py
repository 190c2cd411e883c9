"""Shape operations, functional pooling and reductions (issue 13): each in a small float64
model's ``forward()``, explained with a couple of rules.

For each: f_c(x) is ``model(x)[:, c]``; every layer's marginal sums to one with its absorber
(and, on a branched model, the walks bypassing it) (L1); the engine equals the exact rational
oracle (sequential models) and the explicit LRP reference (which reads the recorded
operation itself, not the kind's index map); LRP-0 equals Gradient × Input (L9: every model
here is ReLU, linear, max-pooling). A reduction or an index over the batch dimension is
refused, naming why: it mixes the samples.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nrm
from nrm.capture import capture
from nrm.recorded import Piece
from nrm_verify.references.explicit import reference_lrp
from nrm_verify.references.oracle import ExactNetwork

pytestmark = pytest.mark.usefixtures("single_thread")

D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1)]


def _seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.7)
    return model.eval()


def _x(*shape, seed=1):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class Head(nn.Module):
    """conv → relu → op(h) → flatten → linear: the operation between two learned layers."""

    def __init__(self, op, features: int, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(2, channels, 2)
        self.op = op
        self.fc = nn.Linear(features, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.op(F.relu(self.conv(x))), 1))


class Last(nn.Module):
    """conv → relu → permute to channels last → linear on the channels (convnext's block)."""

    def __init__(self, functional: bool):
        super().__init__()
        self.conv, self.mix, self.fc = nn.Conv2d(2, 4, 2), nn.Linear(4, 3), nn.Linear(3 * 3 * 3, 2)
        self.functional = functional

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = torch.permute(h, (0, 2, 3, 1)) if self.functional else h.permute(0, 2, 3, 1)
        h = F.relu(self.mix(h))  # (B, H, W, 3)
        return self.fc(h.permute(0, 3, 1, 2).reshape(h.size(0), -1))


class Unflattened(nn.Module):
    """x (B, 4, 2, 3) → flatten(1) → Tensor.unflatten(1, (2, 12)) → torch.unflatten(·, 2, (3, 4))."""

    def forward(self, x):
        return torch.unflatten(x.flatten(1).unflatten(1, (2, 12)), 2, (3, 4))


class TokenMajor(nn.Module):
    """conv1d → relu → x.transpose(1, 2) → linear over channels (a token-major layout)."""

    def __init__(self):
        super().__init__()
        self.conv, self.mix, self.fc = nn.Conv1d(2, 3, 2), nn.Linear(3, 2), nn.Linear(2 * 4, 2)

    def forward(self, x):
        h = F.relu(self.conv(x)).transpose(1, 2)
        return self.fc(F.relu(self.mix(h)).flatten(1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's shufflenetv2.channel_shuffle, as written there."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    x = x.view(batchsize, -1, height, width)
    return x


class ShuffleBlock(nn.Module):
    """torchvision's shufflenetv2.InvertedResidual (in spirit, small): stride 1 splits the
    channels in two (chunk), transforms one half and shuffles them back together; stride 2
    has two branches on the whole input."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        self.stride = stride
        half = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                                         nn.BatchNorm2d(inp), nn.Conv2d(inp, half, 1, bias=False),
                                         nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False),
                                     nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                                     nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
                                     nn.BatchNorm2d(half), nn.Conv2d(half, half, 1, bias=False),
                                     nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class TinyShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.stage = nn.Sequential(ShuffleBlock(4, 8, 2), ShuffleBlock(8, 8, 1))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.stage(self.conv1(x))
        return self.fc(x.mean([2, 3]))  # globalpool, as torchvision writes it


def _randomize_batchnorms(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=D) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=D) + 0.5)
    return model


class SoftSplit(nn.Module):
    """conv → relu → overlapping patches (F.unfold) → a linear map on each patch vector → relu →
    F.fold back (the overlaps summed) → linear: T2T-ViT's soft split and its inverse."""

    def __init__(self, padding: int):
        super().__init__()
        self.conv, self.mix, self.fc = nn.Conv2d(2, 3, 1), nn.Linear(27, 27), nn.Linear(3 * 5 * 5, 3)
        self.padding, self.stride = padding, 2

    def forward(self, x):
        patches = F.unfold(F.relu(self.conv(x)), 3, padding=self.padding, stride=self.stride)
        patches = F.relu(self.mix(patches.transpose(1, 2)).transpose(1, 2))
        return self.fc(F.fold(patches, (5, 5), 3, padding=self.padding, stride=self.stride).flatten(1))


# name → (model, input shape): every one of the operations in forward()
CASES = {
    "Tensor.permute": (lambda: Last(False), (1, 2, 4, 4)),
    "torch.permute": (lambda: Last(True), (1, 2, 4, 4)),
    "Tensor.transpose": (lambda: TokenMajor(), (1, 2, 5)),
    "torch.transpose/view/contiguous (channel shuffle)": (
        lambda: Head(lambda h: channel_shuffle(h, 2), 4 * 2 * 3), (1, 2, 3, 4)),
    "torch.flatten/Tensor.reshape": (lambda: Head(lambda h: torch.flatten(h, 1).reshape(h.size(0), 2, -1), 24),
                                     (1, 2, 3, 4)),
    "Tensor.unflatten/torch.unflatten/nn.Unflatten": (
        lambda: Head(nn.Sequential(nn.Flatten(2), nn.Unflatten(2, (2, 3)), Unflattened()), 24), (1, 2, 3, 4)),
    "getitem x[:, a:b]": (lambda: Head(lambda h: h[:, 1:3], 2 * 2 * 3), (1, 2, 3, 4)),
    "getitem x[:, :, 0] and x[..., ::2]": (lambda: Head(lambda h: h[:, :, 0][..., ::2], 4 * 2), (1, 2, 3, 4)),
    "getitem x[:, [0, 2, 2]] (a repeated index)": (lambda: Head(lambda h: h[:, [0, 2, 2]], 3 * 2 * 3),
                                                   (1, 2, 3, 4)),
    "getitem x[:, None]": (lambda: Head(lambda h: h[:, None], 4 * 2 * 3), (1, 2, 3, 4)),
    "chunk (one piece read)": (lambda: Head(lambda h: h.chunk(2, dim=1)[1], 2 * 2 * 3), (1, 2, 3, 4)),
    "chunk (both pieces, swapped)": (lambda: Head(lambda h: torch.cat(torch.chunk(h, 2, 1)[::-1], 1), 24),
                                     (1, 2, 3, 4)),
    "split (sections)": (lambda: Head(lambda h: torch.cat([p for p in h.split([1, 3], dim=1)][::-1], 1), 24),
                         (1, 2, 3, 4)),
    "split (size, last dim) and unbind": (lambda: Head(lambda h: h.split(2, -1)[1].unbind(2)[0], 4 * 1),
                                          (1, 2, 3, 4)),
    "tensor_split (sections; indices=, MViT's class token)": (
        lambda: Head(lambda h: torch.cat([torch.tensor_split(h, 3, 1)[2].flatten(1),
                                          torch.tensor_split(h, indices=(1,), dim=3)[1].flatten(1)], 1), 6 + 16),
        (1, 2, 3, 4)),
    "tensor_split (sections=, a tensor of indices)": (
        lambda: Head(lambda h: torch.cat([h.tensor_split(sections=2, dim=2)[0].flatten(1),
                                          h.tensor_split(torch.tensor([1, 3]), 3)[1].flatten(1)], 1), 16 + 12),
        (1, 2, 3, 4)),
    "Tensor.repeat (a map tiled over a grid)": (lambda: Head(lambda h: h.repeat(1, 1, 2, 1), 48), (1, 2, 3, 4)),
    "repeat_interleave along channels and Tensor.repeat_interleave": (
        lambda: Head(lambda h: torch.repeat_interleave(h, 2, dim=1).repeat_interleave(3, -1), 4 * 2 * 2 * 3 * 3),
        (1, 2, 3, 4)),
    "torch.roll and Tensor.roll (swin's cyclic shift)": (
        lambda: Head(lambda h: torch.roll(h, (-1, 2), (2, 3)).roll(1, 1), 24), (1, 2, 3, 4)),
    "nn.PixelShuffle (sub-pixel upsampling)": (lambda: Head(nn.PixelShuffle(2), 24), (1, 2, 3, 4)),
    "F.pixel_unshuffle then F.pixel_shuffle": (
        lambda: Head(lambda h: F.pixel_shuffle(F.relu(F.pixel_unshuffle(h, 2)), 2)[..., 1:, :], 4 * 3 * 4),
        (1, 2, 5, 5)),
    "nn.PixelUnshuffle with a leading per-sample dimension": (
        lambda: Head(lambda h: nn.PixelUnshuffle(2)(h.reshape(h.shape[0], 2, 2, 4, 4)), 64), (1, 2, 5, 5)),
    "F.unfold (im2col)": (lambda: Head(lambda h: F.unfold(h, 2), 4 * 4 * 2), (1, 2, 3, 4)),
    "nn.Unfold with padding, dilation and stride": (
        lambda: Head(nn.Unfold((2, 3), dilation=(1, 2), padding=(1, 2), stride=(2, 1)), 4 * 6 * 2 * 3), (1, 2, 3, 4)),
    "F.unfold then F.fold (overlapping patches)": (lambda: SoftSplit(0), (1, 2, 5, 5)),
    "F.unfold then F.fold with padding": (lambda: SoftSplit(1), (1, 2, 5, 5)),
    "torch.stack (GPT-J's rotate_every_two)": (  # read as unsqueeze and cat
        lambda: Head(lambda h: torch.stack((-h[:, 1::2], h[:, ::2]), dim=-1), 24), (1, 2, 3, 4)),
    "torch.stack(dim=1) of three": (lambda: Head(lambda h: torch.stack([h, F.relu(-h), h], 1), 72), (1, 2, 3, 4)),
    "F.avg_pool2d": (lambda: Head(lambda h: F.avg_pool2d(h, kernel_size=3, stride=1, padding=1), 24),
                     (1, 2, 3, 4)),
    "F.avg_pool2d count_include_pad=False (PoolFormer's token mixer, pool(x) − x)": (
        lambda: Head(lambda h: F.avg_pool2d(h, 3, 1, 1, count_include_pad=False) - h, 24), (1, 2, 3, 4)),
    "nn.AvgPool2d count_include_pad=False, stride 2": (
        lambda: Head(nn.AvgPool2d(3, 2, 1, count_include_pad=False), 4 * 1 * 2), (1, 2, 3, 4)),
    "nn.AvgPool2d ceil_mode, count_include_pad=False (timm's ResNet-D shortcut)": (
        lambda: Head(nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), 4 * 2 * 2), (1, 2, 4, 4)),
    "F.avg_pool2d ceil_mode with padding (windows past the padding)": (
        lambda: Head(lambda h: F.avg_pool2d(h, 3, 2, 1, ceil_mode=True), 4 * 2 * 2), (1, 2, 4, 4)),
    "F.adaptive_avg_pool2d": (lambda: Head(lambda h: F.adaptive_avg_pool2d(h, 1), 4), (1, 2, 3, 4)),
    "F.max_pool2d": (lambda: Head(lambda h: F.max_pool2d(h, 2), 4), (1, 2, 3, 4)),
    "Tensor.mean(dims)": (lambda: Head(lambda h: h.mean([2, 3]), 4), (1, 2, 3, 4)),
    "torch.mean(dim, keepdim)": (lambda: Head(lambda h: torch.mean(h, dim=(-1, -2), keepdim=True), 4),
                                 (1, 2, 3, 4)),
    "Tensor.sum(dim) and torch.sum(dim)": (lambda: Head(lambda h: torch.sum(h.sum(-1), 1), 2), (1, 2, 3, 4)),
    "channel shuffle block (shufflenet)": (lambda: _randomize_batchnorms(TinyShuffleNet()), (1, 2, 4, 4)),
}


def _case(name):
    make, shape = CASES[name]
    return _seeded(make()), _x(*shape)


def _grad_x_input(model, x, target):
    xx = x.clone().requires_grad_(True)
    y = model(xx)[:, target]
    (g,) = torch.autograd.grad(y.sum(), xx)
    return (g * x / y.detach().reshape((-1,) + (1,) * (x.dim() - 1))).detach()


def _exact(t):
    return torch.tensor([float(v) for v in t.reshape(-1)], dtype=D)


@pytest.mark.parametrize("rules", RULES, ids=repr)
@pytest.mark.parametrize("name", list(CASES))
def test_an_operation_against_the_model_the_oracle_and_the_reference(name, rules):
    model, x = _case(name)
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 1], rtol=1e-12, atol=1e-12)
    sequential = m.network.sequential
    for layer in m.canonical_names():  # L1 at every layer (with the copies on a branched model)
        total = m.marginal(layer).sum() + m.absorbed(layer).sum()
        if not sequential:
            total = total + m.bypassing(layer).sum()
        assert abs(float(total) - 1) <= 1e-12, (name, layer, float(total))
    ref = reference_lrp(model, x, 1, rules)
    torch.testing.assert_close(m.relevance("input"), ref.relevance["input"].reshape(x.shape), rtol=1e-10,
                               atol=1e-12)
    if sequential:
        exact = ExactNetwork.from_model(model, x, rules).explain(target=1)
        scale = max(1.0, float(exact.total_variation()))
        for layer in m.canonical_names():
            got = m.marginal(layer).reshape(-1)
            assert float((got - _exact(exact.marginal(layer))).abs().max()) <= 1e-9 * scale, (name, layer)
    if isinstance(rules, nrm.rules.Zero):  # L9
        torch.testing.assert_close(m.marginal("input"), _grad_x_input(model, x, 1), rtol=1e-9, atol=1e-12)


def test_the_shuffle_block_in_a_batch_and_the_kinds_that_read_it():
    model = _seeded(_randomize_batchnorms(TinyShuffleNet()))
    x = _x(3, 2, 4, 4, seed=4)
    m = nrm.explain(model, x, target=2, check="full")
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.marginal("input"), _grad_x_input(model, x, 2), rtol=1e-9, atol=1e-12)
    kinds = {c.kind.name for c in capture(model, x).calls if c.kind is not None}
    assert {"Chunk", "Permute", "View", "Same", "Cat", "Reduce"} <= kinds


def test_each_piece_of_chunk_is_one_recorded_call():
    class Pieces(nn.Module):
        def forward(self, x):
            a, b, c = x.chunk(3, dim=1)
            return torch.cat([c, a], 1)

    calls = capture(Pieces().eval(), _x(2, 6)).calls
    pieces = [c for c in calls if isinstance(c.func, Piece)]
    assert [c.func.item for c in pieces] == [0, 1, 2] and [c.name for c in pieces] == ["chunk", "chunk_1", "chunk_2"]
    assert all(c.kind.name == "Chunk" and len(c.outputs) == 1 for c in pieces)
    assert [tuple(c.kind.index(c)) for c in pieces] == [(0, 1), (2, 3), (4, 5)]


def test_stack_is_recorded_as_unsqueeze_and_cat():
    """torch.stack is read through its definition: each tensor unsqueezed, then concatenated."""
    class Stacked(nn.Module):
        def forward(self, x):
            return torch.stack((x, -x), dim=-1)

    kinds = [c.kind.name for c in capture(Stacked().eval(), _x(2, 3)).calls if c.kind is not None]
    assert kinds.count("View") == 2 and "Cat" in kinds and not any("stack" in k.lower() for k in kinds), kinds


class Mixer(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.fc, self.op = nn.Linear(3, 3), op

    def forward(self, x):
        return self.op(F.relu(self.fc(x)))


@pytest.mark.parametrize("op, why", [
    (lambda h: h.repeat(2, 1), "repeats the batch"),
    (lambda h: h.repeat(1, 1, 2)[0], "more would add dimensions"),
    (lambda h: h.repeat_interleave(2, dim=0), "batch dimension"),
    (lambda h: h.repeat_interleave(torch.tensor([1, 2, 1]), dim=1), "tensor of counts"),
    (lambda h: h - h.mean(0, keepdim=True) * 0 + h.mean(0, keepdim=True), "reduces over the batch dimension"),
    (lambda h: h + h.sum(), "reduces over every dimension"),
    (lambda h: torch.sum(h, dim=(0, 1)).expand(2, 1), "reduces over the batch dimension"),
    (lambda h: h.t(), "moves the batch dimension"),
    (lambda h: h.transpose(0, 1).transpose(0, 1), "moves the batch dimension"),
    (lambda h: h[0:1], "selects along the batch dimension"),
    (lambda h: torch.roll(h, 1, 0), "rolls along the batch dimension"),
    (lambda h: torch.roll(h, 1), "rolls the flattened tensor"),
    (lambda h: torch.cat(h.chunk(2, 0)[::-1], 0), "splits the batch dimension"),
    (lambda h: torch.stack([h, h]).sum(0), "stacks along a new first dimension"),
    (lambda h: torch.stack([h, h], dim=-3).sum(0), "stacks along a new first dimension"),
], ids=["repeat-batch", "repeat-new-dims", "interleave-batch", "interleave-counts", "mean(0)", "sum()", "sum((0, 1))",
        "t()", "transpose(0, 1)", "x[0:1]", "roll(1, 0)", "roll(1)", "chunk(2, 0)", "stack(0)", "stack(-3)"])
def test_an_operation_that_mixes_samples_is_refused_with_its_reason(op, why):
    model = _seeded(Mixer(op))
    with pytest.raises(nrm.UnsupportedOperationError, match=why):
        nrm.explain(model, _x(2, 3), target=0)


@pytest.mark.parametrize("name", ["Tensor.permute", "torch.permute", "Tensor.transpose"])
def test_a_permute_moves_relevance_as_its_index_map_does(name):
    """The engine moves a permute's relevance by σ⁻¹ (down) and σ (up) instead of gathering
    through its index: the same numbers as the gather, marginals and an event below the permute."""
    class Gathered(nrm.layers.shape.Permute):  # the index map, read through the general route
        def permutation(self, call):
            return None

    model, x = _case(name)
    layers = nrm.explain(model, x, target=1).canonical_names()
    events = [nrm.At(layers[1], index=[0, 2]), nrm.At(layers[-2], index=[1])]

    def numbers():
        m = nrm.explain(model, x, target=1, rules=nrm.rules.Epsilon(0.1), check="full")
        paths.append((bool(m.engine.permutes), bool(m.engine.routes)))
        return [m.marginal(layer) for layer in layers] + [m.marginal("input", within=events),
                                                          m.marginal(layers[-2], within=events[:1])]

    paths: list = []
    fast = numbers()
    nrm.layers.register(Gathered)
    try:
        gathered = numbers()
    finally:
        nrm.layers.unregister(Gathered)
    assert paths == [(True, False), (False, True)]  # σ⁻¹ first, then the gather
    for a, b in zip(fast, gathered):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_the_self_check_catches_a_wrong_index_map():
    class ReversedPermute(nrm.layers.shape.Permute):  # a broken kind: the neurons in reverse order
        def index(self, call):
            return super().index(call)[::-1].copy()

    model, x = _case("Tensor.transpose")
    nrm.layers.register(ReversedPermute)
    try:
        with pytest.raises(nrm.CaptureMismatchError, match="index map of layer"):
            nrm.explain(model, x, target=0)
    finally:
        nrm.layers.unregister(ReversedPermute)
    nrm.explain(model, x, target=0)  # the built-in kind again


class ConvByHand(nn.Module):
    """A convolution written as im2col and a matrix product (F.unfold, then the weight on the
    channels), beside the same convolution as nn.Conv2d."""

    def __init__(self, by_hand: bool, padding: int):
        super().__init__()
        self.conv, self.fc, self.by_hand, self.padding = nn.Conv2d(2, 4, 3, padding=padding, bias=False), \
            nn.Linear(4 * (9 if padding else 1), 2), by_hand, padding

    def forward(self, x):
        if not self.by_hand:
            return self.fc(F.relu(self.conv(F.relu(x))).flatten(1))
        patches = F.unfold(F.relu(x), 3, padding=self.padding)                    # (B, 2·3·3, L)
        y = (patches.transpose(1, 2) @ self.conv.weight.reshape(4, -1).T).transpose(1, 2)
        return self.fc(F.relu(y).flatten(1))


@pytest.mark.parametrize("padding", [0, 1])
def test_a_convolution_written_with_unfold_is_the_convolution(padding):
    """Under LRP-0 the hand-written convolution's marginals are nn.Conv2d's; without padding under
    ε too. With padding the zeros are a Pad layer of their own (constants, their share to ⊥),
    whose rule then acts too: under ε the two differ, under LRP-0 they do not."""
    by_hand = _seeded(ConvByHand(True, padding))
    conv = ConvByHand(False, padding).double().eval()
    conv.load_state_dict(by_hand.state_dict())
    x = _x(2, 2, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(by_hand(x), conv(x), rtol=1e-12, atol=1e-12)
    names = [c.kind.name for c in capture(by_hand, x).calls]
    assert "Unfold" in names and ("Pad" in names) == bool(padding)
    for rules in [nrm.rules.Zero()] + ([nrm.rules.Epsilon(0.1)] if not padding else []):
        a = nrm.explain(by_hand, x, target=0, rules=rules).marginal("input")
        b = nrm.explain(conv, x, target=0, rules=rules).marginal("input")
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_fold_of_an_unbatched_input_is_refused_by_name():
    class Unbatched(nn.Module):
        def forward(self, x):
            return F.fold(F.relu(x)[0], (3, 3), 2).reshape(1, -1)

    with pytest.raises(nrm.UnsupportedOperationError, match="not \\(B, C·k·k, L\\)"):
        nrm.explain(Unbatched().double().eval(), _x(1, 8, 4), target=0)
