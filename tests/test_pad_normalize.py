"""``F.pad`` with a constant (:class:`nrm.layers.constants.Pad`, every pad 0:
:class:`~nrm.layers.constants.Unpadded`), ``torch.clamp`` with constant bounds
(:class:`nrm.layers.activations.Clamp`) and ``F.normalize`` read through its definition,
x · rsqrt(max(Σ x², ε²)) with the norm held (:class:`nrm.layers.fused.NormalizeDecomposition`):
what Swin's window padding and swin_v2's cosine attention need (issue 14). Checked as every
kind is: engine = exact oracle = explicit reference at every layer, L1, L9 (or its general
form), check-layer on the kinds, and the refusals named."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from agreement import agree, seeded
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError
from nrm_verify import laws
from nrm_verify.laws.limits import gradient_x_input
from nrm_verify.validate.layers import check_layer

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = {"LRP-0": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "gamma": nrm.rules.Gamma(0.25),
         "EpsilonPlus": nrm.presets.EpsilonPlus(), "EpsilonGammaFlat": nrm.presets.EpsilonGammaFlat()}


class PadNet(nn.Module):
    """conv → relu → F.pad(pad, value) → conv → relu → head, on (B, 2, 3, 3) images."""

    def __init__(self, pad: tuple, value: float | None = None, how: str = "functional"):
        super().__init__()
        self.pad, self.value, self.how = tuple(pad), value, how
        self.conv1, self.conv2 = nn.Conv2d(2, 3, 2, padding=1), nn.Conv2d(3, 2, 2)
        h = 4 + pad[2] + pad[3] if len(pad) > 2 else 4
        w = 4 + pad[0] + pad[1]
        self.head = nn.Linear(2 * (h - 1) * (w - 1), 3)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        if self.how == "module":
            h = nn.ConstantPad2d(self.pad, 0.0 if self.value is None else self.value)(h)
        elif self.value is None:
            h = F.pad(h, self.pad)
        else:
            h = F.pad(h, self.pad, mode="constant", value=self.value)
        return self.head(torch.relu(self.conv2(h)).flatten(1))


PADS = {
    "right and below": lambda: PadNet((0, 1, 0, 2)),
    "every side": lambda: PadNet((1, 2, 2, 1)),
    "last dimension only": lambda: PadNet((1, 1)),
    "a constant value": lambda: PadNet((1, 0, 0, 1), value=0.5),
    "nn.ConstantPad2d": lambda: PadNet((0, 2, 1, 0), value=-0.25, how="module"),
    "nothing (Unpadded)": lambda: PadNet((0, 0, 0, 0)),
    # (0, 0) pairs reaching the channels and the batch dimension pad nothing there (MobileBERT's
    # F.pad(x, [0, 0, 0, 1, 0, 0]) on (B, T, E))
    "(0, 0) up to the batch dimension": lambda: PadNet((0, 1, 0, 2, 0, 0, 0, 0)),
    "(0, 0) through the channels": lambda: PadNet((1, 1, 0, 0, 0, 0)),
    # negative pads crop that side (CropPadDecomposition: a slice, then the padding left)
    "a crop on one side": lambda: PadNet((0, -1, 1, 0)),
    "RWKV's token shift (0, 0, 1, -1)": lambda: PadNet((0, 0, 1, -1), how="module"),
    "a crop and a constant value": lambda: PadNet((-1, 2, -1, -1), value=0.5),
}


def _image(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 2, 3, 3, dtype=D, generator=torch.Generator().manual_seed(5))


class CosineAttention(nn.Module):
    """swin_v2's cosine attention on (B, T, 4) tokens, one head:
    softmax((F.normalize(Q) F.normalize(K)ᵀ) · τ) V, then a head; ``clamp`` bounds the values
    with torch.clamp (the Clamp kind in a model of its own)."""

    def __init__(self, clamp: bool = False):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)
        self.head = nn.Linear(9, 2)
        self.clamp = clamp

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.clamp:
            v = torch.clamp(v, -0.5, 0.8).clamp_min(-0.25)
        attn = torch.softmax(torch.matmul(F.normalize(q, dim=-1), F.normalize(k, dim=-1).transpose(-2, -1)) * 4.0, -1)
        return self.head(torch.matmul(attn, v).flatten(1))


class Normalized(nn.Module):
    """relu(W x) normalized along its last dimension, then a head (F.normalize alone)."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.lin, self.head, self.dim = nn.Linear(4, 4), nn.Linear(12, 2), dim

    def forward(self, x):
        return self.head(F.normalize(torch.relu(self.lin(x)), dim=self.dim).flatten(1))


def _tokens(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 4, dtype=D, generator=torch.Generator().manual_seed(6))


def _kinds(m) -> list[str]:
    return [b.producer.layer_kind.name for b in m.network.blocks[1:] if b.producer is not None]


# -- F.pad ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rules", list(RULES))
@pytest.mark.parametrize("pad", list(PADS))
def test_a_padding_agrees_with_the_exact_oracle_and_the_explicit_reference_at_every_layer(pad, rules):
    model = seeded(PADS[pad]())
    m = agree(model, _image(batch=1), target=1, rules=RULES[rules])
    assert ("Pad" in _kinds(m)) == (pad != "nothing (Unpadded)"), _kinds(m)
    for name in m.layers:  # L1 at every layer
        total = m.marginal(name).flatten(1).sum(1) + m.absorbed(name)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pad", ["right and below", "every side", "nothing (Unpadded)"])
def test_lrp0_is_gradient_x_input_through_a_zero_padding(pad):
    assert gradient_x_input(seeded(PADS[pad]()), _image(), 2).holds is True


def test_a_zero_padding_neuron_takes_no_relevance_under_lrp0():
    """It has the value 0: the convolution after it takes nothing from it."""
    model = seeded(PADS["every side"]())
    m = nrm.explain(model, _image(), 0, rules=nrm.rules.Zero())
    layer = next(b.name for b in m.network.blocks[1:] if b.producer is not None and b.producer.layer_kind.name == "Pad")
    r = m.marginal(layer)  # (B, 3, 4 + 3, 4 + 3): x at rows 2..5, columns 1..4
    inside = torch.zeros_like(r, dtype=torch.bool)
    inside[:, :, 2:6, 1:5] = True
    assert float(r[~inside].abs().max()) == 0.0


# -- F.normalize and torch.clamp -----------------------------------------------------------------


@pytest.mark.parametrize("rules", list(RULES))
@pytest.mark.parametrize("model", ["normalize", "normalize dim 1", "cosine attention", "cosine attention, clamp"])
def test_normalize_and_clamp_agree_with_the_exact_oracle_and_the_explicit_reference(model, rules):
    net = {"normalize": lambda: Normalized(), "normalize dim 1": lambda: Normalized(dim=1),
           "cosine attention": lambda: CosineAttention(),
           "cosine attention, clamp": lambda: CosineAttention(clamp=True)}[model]()
    net = seeded(net)
    x = _tokens(batch=1)
    with torch.no_grad():
        want = net(x)
    m = agree(net, x, target=1, rules=RULES[rules])
    torch.testing.assert_close(m.f, want[:, 1], rtol=1e-13, atol=0)  # the decomposition is F.normalize
    assert "Multiply" in _kinds(m) and "Reduce" in _kinds(m), _kinds(m)
    l1 = laws.normalization(m, tol=1e-12)  # the norm's path is a branch: L1 over the layers' cuts
    assert l1.holds is True and l1.deviation <= 1e-12, str(l1)


def test_the_norm_is_held_each_entry_keeps_its_relevance():
    """x / max(‖x‖, ε) with ‖x‖ held: the norm's path (x², its sum) takes nothing under any
    rule, and under LRP-0 the layer before F.normalize carries what the layer after it does."""
    net = seeded(Normalized())
    x = _tokens()
    for rules in RULES.values():
        m = nrm.explain(net, x, 0, rules=rules)
        sums = [b.name for b in m.network.blocks[1:]
                if b.producer is not None and b.producer.layer_kind.name == "Reduce"]
        assert sums, _kinds(m)
        for layer in sums:
            assert float(m.marginal(layer).abs().max()) == 0.0, layer


def test_l9_through_normalize_holds_in_its_general_form():
    net = seeded(Normalized())
    l9 = gradient_x_input(net, _tokens(), 1)
    assert l9.holds is None, str(l9)
    general = gradient_x_input(net, _tokens(), 1, detached=True, tol=1e-12)
    assert general.holds is True, str(general)


@pytest.mark.parametrize("name", ["Pad", "Unpadded", "Clamp"])
def test_check_layer_passes_the_new_kinds(name):
    report = check_layer(nrm.layers.REGISTRY.kinds[name], max_examples=3, only=["K2", "K3", "K5", "L1", "L18"])
    assert report.ok, str(report)


# -- refusals ------------------------------------------------------------------------------------


class _Refused(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how, self.lin, self.head = how, nn.Linear(4, 4), nn.LazyLinear(2)

    def forward(self, x):
        h = torch.relu(self.lin(x))
        if self.how == "crop the batch":
            h = F.pad(h, (0, 0, 0, 0, 0, -1))
        elif self.how == "batch":
            h = F.pad(h, (0, 0, 0, 0, 1, 0))
        elif self.how == "batch after a (0, 0)":
            h = F.pad(h, (0, 1, 0, 0, 0, 1))
        elif self.how == "tensor bound":
            h = torch.clamp(h, min=torch.full((4,), 0.1, dtype=h.dtype))
        elif self.how == "p=1":
            h = F.normalize(h, p=1.0, dim=-1)
        elif self.how == "batch norm":
            h = F.normalize(h, dim=0)
        return self.head(h.flatten(1))


@pytest.mark.parametrize("how, says", [
    ("crop the batch", "pads (or crops) the batch dimension"),
    ("batch", "pads (or crops) the batch dimension"),
    ("batch after a (0, 0)", "pads (or crops) the batch dimension"),
    ("tensor bound", "nrm reads constant finite numbers as bounds"),
    ("p=1", "the 1.0-norm"),
    ("batch norm", "along the batch dimension"),
])
def test_what_it_does_not_read_is_refused_by_name(how, says):
    model, x = _Refused(how).to(D), _tokens()
    model(x)  # the lazy head takes its shape
    model = seeded(model)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError) as info:
        nrm.explain(model, x, 0)
    assert says in str(info.value), str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class SharedView(nn.Module):
    """relu(W x) read by a view and by a sum: the view opens a pass layer of its own (a row-major
    renaming, no index map), as swin_v2's window attention views the residual stream."""

    def __init__(self):
        super().__init__()
        self.lin, self.a, self.b = nn.Linear(4, 4), nn.Linear(12, 2), nn.Linear(3, 2)

    def forward(self, x):
        h = torch.relu(self.lin(x))
        return self.a(torch.relu(h.view(h.shape[0], 12))) + self.b(h.sum(-1))


def test_l9_replays_a_view_that_opens_its_layer():
    model = seeded(SharedView())
    m = nrm.explain(model, _tokens(), 1)
    assert any(b.kind == "pass" and b.producer.layer_kind.name == "View" for b in m.network.blocks[1:]), _kinds(m)
    assert gradient_x_input(model, _tokens(), 1, tol=1e-12).holds is True
    assert gradient_x_input(model, _tokens(), 1, detached=True, tol=1e-12).holds is True
