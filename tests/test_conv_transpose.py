"""``F.conv_transpose1d/2d/3d`` (:class:`nrm.layers.linear.ConvTranspose`): U-Net and
segmentation decoders, generators. Checked as every kind is: engine = exact oracle = explicit
reference at every layer under several rules (a small U-Net with a skip connection, a batch
norm after the transposed convolution, groups and output padding, 1-d and 3-d), L1, L9 (LRP-0
= gradient × input), the rule keys; check-layer runs on the kind's examples in
``tests/test_layers.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from agreement import agree, seeded
from torch import nn

import nrm
from nrm_verify.laws.limits import gradient_x_input

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = {"LRP-0": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "gamma": nrm.rules.Gamma(0.25),
         "EpsilonPlusFlat": nrm.presets.EpsilonPlusFlat(), "EpsilonAlpha2Beta1": nrm.presets.EpsilonAlpha2Beta1()}


class TinyUNet(nn.Module):
    """conv → relu → max-pool → conv → relu → transposed conv (stride 2) → batch norm → relu →
    concatenated with the skip → conv → the logits at one pixel."""

    def __init__(self, groups: int = 1, output_padding: int = 0):
        super().__init__()
        self.down1, self.down2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 3 if output_padding else 2, stride=2, padding=1 if output_padding else 0,
                                     output_padding=output_padding, groups=groups)
        self.bn = nn.BatchNorm2d(4)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        skip = torch.relu(self.down1(x))
        h = torch.relu(self.down2(F.max_pool2d(skip, 2)))
        h = torch.relu(self.bn(self.up(h)))
        return self.out(torch.cat([skip, h], 1))[:, :, 1, 2]


class Decoder(nn.Module):
    """linear → relu → view → transposed conv (1-d or 3-d) → relu → flatten → head."""

    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims
        self.fc = nn.Linear(3, 2 * 3 ** dims)
        conv = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose3d
        self.up = conv(2, 2, 2, stride=2, dilation=1, bias=dims == 1)
        self.head = nn.Linear(2 * 6 ** dims, 2)

    def forward(self, x):
        h = torch.relu(self.fc(x)).view((x.shape[0], 2) + (3,) * self.dims)
        return self.head(torch.relu(self.up(h)).flatten(1))


MODELS = {
    "U-Net": (lambda: TinyUNet(), (2, 4, 4)),
    "U-Net, groups, output padding": (lambda: TinyUNet(groups=2, output_padding=1), (2, 4, 4)),
    "1-d decoder": (lambda: Decoder(1), (3,)),
    "3-d decoder": (lambda: Decoder(3), (3,)),
}


def _case(name: str, batch: int = 1):
    make, shape = MODELS[name]
    x = torch.randn((batch,) + shape, dtype=D, generator=torch.Generator().manual_seed(4))
    return seeded(make(), 0, statistics=True), x


@pytest.mark.parametrize("rules", list(RULES))
@pytest.mark.parametrize("name", list(MODELS))
def test_a_transposed_convolution_agrees_with_the_oracle_and_the_reference_at_every_layer(name, rules):
    model, x = _case(name)
    m = agree(model, x, target=1, rules=RULES[rules])
    assert "ConvTranspose" in [b.producer.layer_kind.name for b in m.network.blocks[1:] if b.producer is not None]
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 1], rtol=1e-12, atol=1e-12)
    for layer in m.canonical_names():  # L1 at every layer, with the walks bypassing it
        total = m.marginal(layer).sum() + m.absorbed(layer).sum() + m.bypassing(layer).sum()
        assert abs(float(total) - 1) <= 1e-12, (layer, float(total))


@pytest.mark.parametrize("name", list(MODELS))
def test_lrp0_is_gradient_x_input_through_a_transposed_convolution(name):
    model, x = _case(name, batch=3)
    assert gradient_x_input(model, x, 0, tol=1e-10).holds is True


def test_the_rule_is_keyed_by_nn_conv_transpose2d():
    model, x = _case("U-Net")
    rules = nrm.RuleMap(nrm.rules.Zero(), by_type={nn.ConvTranspose2d: nrm.rules.Gamma(0.5)})
    m = nrm.explain(model, x, target=0, rules=rules, check="full")
    by_kind = {b.producer.layer_kind.name: type(b.rule).__name__
               for b in m.network.blocks[1:] if b.producer is not None}
    assert by_kind["ConvTranspose"] == "Gamma" and by_kind["Conv"] == "Zero", by_kind
