"""timm's architectures as a new user meets them (random weights, eval, float64, small
configurations): explained with L1 ≤ 1e-12 at every layer (at the input for the models that
fold the batch) and f the model's, or refused by name where nrm does not read them yet (README,
*timm, as a new user meets it*;
``benchmarks/timm_survey.py`` runs the 50 models of the survey at their own sizes).

What made most of them readable: timm's q, k, v split (a permute that moves the batch, taken
apart along its first dimension), ``torch.addcmul``, ``ceil_mode`` average pooling
(``tests/test_timm_idioms.py`` checks each against the explicit reference).
"""

from __future__ import annotations

import pytest
import torch

import nrm

timm = pytest.importorskip("timm", reason="timm is installed by scripts/setup-peers.sh")

D = torch.float64
EXPLAINED = {  # name → (create_model keywords, image size)
    "vit_tiny_patch16_224": (dict(img_size=32, depth=2), 32),
    "cait_xxs24_224": (dict(img_size=32, depth=2, depth_token_only=1), 32),
    "xcit_nano_12_p16_224": (dict(img_size=32, depth=2, cls_attn_layers=1), 32),
    "eva02_tiny_patch14_224": (dict(img_size=28, depth=2), 28),
    "twins_pcpvt_small": (dict(img_size=32, depths=(1, 1, 1, 1)), 32),
    "beit_base_patch16_224": (dict(img_size=32, depth=1), 32),
    "resmlp_12_224": (dict(img_size=32), 32),
    "mixer_s16_224": (dict(img_size=32), 32),
    "edgenext_xx_small": (dict(depths=(1, 1, 1, 1)), 64),
    "convnextv2_atto": (dict(depths=(1, 1, 1, 1)), 64),
    "resnet50d": (dict(layers=[1, 1, 1, 1]), 64),
    "poolformer_s12": ({}, 64),
    # radix attention, x · softmax(a) over the radix: the softmax gates (nrm.layers.attention.Softmax.gate)
    "skresnet18": (dict(layers=[1, 1, 1, 1]), 32),
    "resnest14d": (dict(layers=[1, 1, 1, 1]), 32),
}


def _model(name: str, kwargs: dict, size: int, dtype: torch.dtype = D):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval().to(dtype)
    x = torch.randn(1, 3, size, size, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        if not bool(y.any()):  # a zero-initialized classifier (MLP-Mixer, ResMLP): redraw the zero parameters
            g = torch.Generator().manual_seed(2)
            for p in model.parameters():
                if not bool(p.any()):
                    p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.02)
            y = model(x)
    return model, x, y


@pytest.mark.parametrize("name", list(EXPLAINED))
def test_explained_with_l1_at_every_layer(name):
    kwargs, size = EXPLAINED[name]
    model, x, y = _model(name, kwargs, size)
    target = int(y[0].argmax())
    m = nrm.explain(model, x, target=target, rules=nrm.rules.Epsilon(1e-6))
    torch.testing.assert_close(m.f, y[:, target], rtol=1e-12, atol=1e-12)
    worst = 0.0
    for layer in m.canonical_names():
        total = m.marginal(layer).reshape(1, -1).sum(1) + m.absorbed(layer) + m.bypassing(layer)
        worst = max(worst, float((total - 1).abs().max()))
    assert worst <= 1e-12, worst


@pytest.mark.parametrize("name, kwargs, size, dtype, error, words", [
    # linear attention, a ratio of two activations: the default split asks the user to choose
    ("efficientvit_b0", {}, 64, torch.float32, nrm.AmbiguousProductError, "split="),
    # in float64 too (its attention computes in float32 inside: read, widened; the ratio stays ambiguous)
    ("efficientvit_b0", {}, 64, D, nrm.AmbiguousProductError, "split="),
], ids=["efficientvit-float32", "efficientvit-float64"])
def test_what_is_not_read_is_refused_by_name(name, kwargs, size, dtype, error, words):
    model, x, y = _model(name, kwargs, size, dtype)
    with pytest.raises(error, match=words):
        nrm.explain(model, x, target=int(y[0].argmax()), rules=nrm.rules.Epsilon(1e-6))


FOLDED = {  # models that fold each sample into several rows (refused by name before 2026-12-07)
    "swin_tiny_patch4_window7_224": (dict(img_size=56, depths=(1, 1, 1, 1), window_size=7), 56),  # windows
    "levit_128s": (dict(img_size=64), 64),  # flatten(0, 1) before each BatchNorm1d
    "mobilevit_xxs": ({}, 64),  # the patches unfolded into the batch
    "gcvit_xxtiny": (dict(img_size=64), 64),  # windows; the global query repeated per window (one sample)
}


@pytest.mark.parametrize("name", list(FOLDED))
def test_models_that_fold_the_batch_are_read(name):
    """Swin's window partition, LeViT's flatten(0, 1), MobileViT's unfolding, GCViT's windows with
    its global query repeated for each (``repeat_interleave`` along dimension 0, read for one
    sample, :mod:`nrm.layers.one_sample`): each sample's rows
    stay one block (nrm.engine.Engine.canonical), so the kinds read them as samples. f is the
    model's, and the input marginal with what was absorbed is 1 (L1 at the input; every layer in
    the survey's float64 run, README)."""
    kwargs, size = FOLDED[name]
    model, x, y = _model(name, kwargs, size)
    target = int(y[0].argmax())
    m = nrm.explain(model, x, target=target, rules=nrm.rules.Epsilon(1e-6))
    torch.testing.assert_close(m.f, y[:, target], rtol=1e-12, atol=1e-12)
    total = m.marginal("input").reshape(1, -1).sum(1) + m.absorbed("input") + m.bypassing("input")
    assert float((total - 1).abs().max()) <= 1e-12
