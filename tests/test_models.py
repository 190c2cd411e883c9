"""The seeded builders of :mod:`nrm_verify.zoo.models`: layout, determinism, sane outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nrm
from nrm_verify.zoo.models import VGG16_CONFIG, mlp, seeded_image, small_cnn, vgg16


@pytest.fixture(scope="module")
def vgg():
    return vgg16()


def test_vgg16_layout_matches_torchvision_names(vgg):
    names = dict(vgg.named_modules())
    assert [name for name, _ in vgg.named_children()] == ["features", "avgpool", "flatten", "classifier"]
    assert len(vgg.features) == 31
    convs = [i for i, m in enumerate(vgg.features) if isinstance(m, nn.Conv2d)]
    pools = [i for i, m in enumerate(vgg.features) if isinstance(m, nn.MaxPool2d)]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert pools == [4, 9, 16, 23, 30]
    assert all(isinstance(vgg.features[i + 1], nn.ReLU) for i in convs)
    assert [vgg.features[i].out_channels for i in convs] == [v for v in VGG16_CONFIG if v != "M"]
    last = names["features.28"]
    assert (last.in_channels, last.out_channels, last.kernel_size, last.padding) == (512, 512, (3, 3), (1, 1))
    assert isinstance(names["features.30"], nn.MaxPool2d)
    assert isinstance(vgg.avgpool, nn.AdaptiveAvgPool2d) and vgg.avgpool.output_size == (7, 7)
    kinds = [type(m) for m in vgg.classifier]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    shapes = [(m.in_features, m.out_features) for m in vgg.classifier if isinstance(m, nn.Linear)]
    assert shapes == [(25088, 4096), (4096, 4096), (4096, 1000)]
    assert sum(p.numel() for p in vgg.parameters()) == 138_357_544  # torchvision's vgg16
    assert not any(m.training for m in vgg.modules())
    assert all(p.dtype == torch.float32 for p in vgg.parameters())


def test_vgg16_batch_norm_layout():
    model = vgg16(num_classes=10, batch_norm=True, seed=1)
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    assert len(model.features) == 44 and convs[-1] == 40  # torchvision's vgg16_bn
    assert all(isinstance(model.features[i + 1], nn.BatchNorm2d) for i in convs)
    bn = model.features[1]
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))  # statistics are seeded
    assert not any(m.training for m in model.modules())
    out = model(seeded_image(32))
    assert torch.isfinite(out).all() and out.abs().max() > 1e-2


def test_vgg16_is_deterministic_by_seed_and_leaves_global_rng_alone(vgg):
    state = torch.random.get_rng_state()
    again = vgg16()
    other = vgg16(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state), "building a model must not use the global RNG"
    for (name, a), (_, b), (_, c) in zip(vgg.state_dict().items(), again.state_dict().items(),
                                         other.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs between two builds with seed 0"
        assert not torch.equal(a, c), f"{name} is the same for seeds 0 and 1"


@pytest.mark.parametrize("size", [32, 64])
def test_vgg16_logits_are_finite_and_of_order_one(vgg, size):
    """Kaiming-style scaling: neither vanishing (logits ≈ 0) nor exploding over 16 layers."""
    x = seeded_image(size)
    with torch.no_grad():
        logits = vgg(x)
        hidden = vgg.features(x)
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()
    assert 0.1 < logits.abs().max().item() < 100.0
    assert logits.std().item() > 0.05
    assert (hidden > 0).float().mean().item() > 0.05, "most of features.29 is dead"


def test_vgg16_dtype_float64():
    model = vgg16(num_classes=10, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    out = model(seeded_image(32, dtype=torch.float64))
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


def test_seeded_image_is_deterministic_smooth_and_bounded():
    a = seeded_image(64)
    assert a.shape == (1, 3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, seeded_image(64))
    assert not torch.equal(a, seeded_image(64, seed=1))
    assert a.min() >= -2.0 and a.max() <= 2.0
    assert a.std() > 0.2
    step = (a[..., 1:] - a[..., :-1]).abs().max().item()
    assert step < 0.5, "neighbouring pixels should differ by little (a smooth image)"
    assert seeded_image((16, 24), batch=2, channels=1, dtype=torch.float64).shape == (2, 1, 16, 24)
    assert seeded_image(224).shape == (1, 3, 224, 224)


def test_mlp_layout_and_determinism():
    model = mlp([4, 8, 6, 3], seed=7)
    assert [n for n, _ in model.named_children()] == ["fc1", "relu1", "fc2", "relu2", "fc3"]
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [(4, 8), (8, 6), (6, 3)]
    assert all(m.bias is not None and m.bias.abs().sum() > 0 for m in model if isinstance(m, nn.Linear))
    assert torch.equal(model.fc2.weight, mlp([4, 8, 6, 3], seed=7).fc2.weight)
    assert not torch.equal(model.fc2.weight, mlp([4, 8, 6, 3], seed=8).fc2.weight)
    assert not model.training
    no_bias = mlp([4, 8, 3], bias=False)
    assert all(m.bias is None for m in no_bias if isinstance(m, nn.Linear))
    leaky = mlp([4, 8, 3], negative_slope=0.1)
    assert isinstance(leaky.relu1, nn.LeakyReLU) and leaky.relu1.negative_slope == 0.1
    out = model(torch.linspace(-1, 1, 8).reshape(2, 4))
    assert out.shape == (2, 3) and torch.isfinite(out).all() and out.abs().max() > 1e-3
    with pytest.raises(ValueError, match="at least two positive widths"):
        mlp([4])


def test_small_cnn_layout_and_output():
    model = small_cnn(seed=0)
    names = dict(model.named_modules())
    assert isinstance(names["features.0"], nn.Conv2d) and isinstance(names["features.5"], nn.MaxPool2d)
    assert isinstance(names["classifier.2"], nn.Linear) and names["classifier.2"].out_features == 10
    out = model(seeded_image(16))
    assert out.shape == (1, 10) and torch.isfinite(out).all() and out.abs().max() > 1e-2
    assert torch.equal(out, small_cnn(seed=0)(seeded_image(16)))
    assert not torch.equal(out, small_cnn(seed=1)(seeded_image(16)))


@pytest.mark.parametrize("build, x, layers", [
    (lambda: mlp([6, 10, 4], seed=2), lambda: torch.linspace(-1, 1, 12).reshape(2, 6), ["input", "fc1", "fc2"]),
    (lambda: small_cnn(seed=2), lambda: seeded_image(16, batch=2), ["input", "features.0", "features.3"]),
], ids=["mlp", "small_cnn"])
def test_builders_are_accepted_by_nrm(build, x, layers):
    """Every builder gives a model that nrm explains, with mass 1 at every layer (L1)."""
    m = nrm.explain(build(), x(), target=1, rules=nrm.presets.EpsilonGammaFlat())
    for layer in layers:
        total = m.marginal(layer).flatten(1).sum(1) + m.absorbed(layer)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-5)
