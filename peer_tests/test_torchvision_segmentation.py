"""torchvision's semantic segmentation models (random weights, no download, float64, eval
mode), explained at one pixel's class logit: their heads upsample with
``F.interpolate(mode="bilinear")`` (:class:`nrm.layers.resample.Interpolate`), which nrm
refused before 2026-12-06. f is the model's logit, every map reproduces the model
(``check="full"``), L1 holds at every layer, and LRP-0 is gradient × input (FCN: ReLU, batch
norm, bilinear upsampling) or its general form with the gates detached (the MobileNetV3
backbones' squeeze-excitation and LR-ASPP's sigmoid attention)."""

from __future__ import annotations

import time

import pytest
import torch

import nrm
from nrm_verify import laws
from nrm_verify.laws.limits import gradient_x_input

segmentation = pytest.importorskip("torchvision.models.segmentation",
                                   reason="torchvision is installed by scripts/setup-peers.sh")

D = torch.float64
PIXEL = (20, 41)
MODELS = {
    "fcn_resnet50": (lambda: segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=False), False),
    "deeplabv3_mobilenet_v3_large": (lambda: segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, aux_loss=False), True),
    "lraspp_mobilenet_v3_large": (lambda: segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None), True),
}


class AtPixel(torch.nn.Module):
    """The class logits of a segmentation model at one pixel of its output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"][:, :, PIXEL[0], PIXEL[1]]


@pytest.mark.parametrize("name", list(MODELS))
def test_a_segmentation_model_is_explained_at_a_pixel(name):
    make, gated = MODELS[name]
    torch.manual_seed(0)
    model = AtPixel(make()).to(D).eval()
    x = torch.randn(1, 3, 64, 64, dtype=D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    target = int(logits[0].argmax())
    start = time.perf_counter()
    m = nrm.explain(model, x, target=target, check="full")
    seconds = time.perf_counter() - start
    assert float(m.f[0]) == pytest.approx(float(logits[0, target]), rel=1e-12, abs=1e-12)
    kinds = [b.producer.layer_kind.name for b in m.network.blocks[1:] if b.producer is not None]
    assert "Interpolate" in kinds, kinds
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert bool(torch.isfinite(m.marginal("input")).all())
    l9 = gradient_x_input(model, x, target, detached=gated, tol=1e-9)
    assert l9.holds is True, str(l9)
    print(f"{name}: {len(m.layers)} layers, explain {seconds:.1f} s")


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large"])
def test_a_segmentation_model_is_explained_at_its_own_resolution(name):
    """512 × 512 (the resolution torchvision's segmentation weights are used at), float32: the
    head's upsampling from 64 × 64 would be a dense matrix of 2**30 entries, refused before
    2026-12-07; it is applied one spatial dimension at a time (nrm.linear.ResampleMap). f is the
    model's, the input marginal with what was absorbed is 1."""
    make, _ = MODELS[name]
    torch.manual_seed(0)
    model = AtPixel(make()).eval()
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    target = int(logits[0].argmax())
    m = nrm.explain(model, x, target=target)
    assert float(m.f[0]) == pytest.approx(float(logits[0, target]), rel=1e-6, abs=1e-6)
    total = m.marginal("input").sum() + m.absorbed("input").sum() + m.bypassing("input").sum()
    assert abs(float(total) - 1) <= 1e-5
