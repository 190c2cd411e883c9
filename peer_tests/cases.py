"""The models, inputs and rule cases shared by the peer tests (all float64, seeded)."""

from __future__ import annotations

import functools
from collections import OrderedDict

import torch
from torch import nn

import nrm
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus
from nrm_verify.peers.zennit import GeneralizedGamma, merge_batchnorm
from nrm_verify.zoo import models

TOL = 1e-9
"""Largest deviation accepted, relative to the largest |R| (float64 leaves ~1e-13)."""

ZENNIT_EPS = 1e-6
"""zennit's default stabilizer of every rule other than ε (and of Norm on pooling)."""

MODELS = ("mlp", "cnn", "cnn_bn", "vgg16", "vgg16_bn")
LAYERS = {
    "mlp": ["fc1", "fc2"],
    "cnn": ["features.0", "features.3", "classifier.0"],
    "cnn_bn": ["features.0", "features.4", "classifier.0"],
    "vgg16": ["features.0", "features.14", "features.28", "classifier.0"],
    "vgg16_bn": ["features.0", "features.20", "features.40", "classifier.0"],
}
"""Linear layers whose relevance is compared besides the input's."""

BOX = {"mlp": (-3.0, 3.0)}
"""Input box of z^B per model (the seeded images lie in [-2, 2])."""


def box(name: str) -> tuple[float, float]:
    return BOX.get(name, (-2.0, 2.0))


def close(dev: float, scale: float) -> bool:
    """Whether the largest deviation ``dev`` is within :data:`TOL` of the largest |R| ``scale``.
    Relative, not floored at 1: a model whose relevance is about 1e-9 (torchvision's googlenet at
    random weights) would otherwise pass any difference."""
    return dev <= TOL * scale


def _small_cnn_bn(seed: int) -> nn.Sequential:
    """models.small_cnn with a seeded BatchNorm2d after each convolution."""
    base = models.small_cnn(seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed + 100)
    f = base.features

    def bn(n):
        m = nn.BatchNorm2d(n).double()
        with torch.no_grad():
            m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=g, dtype=torch.float64))
            m.bias.copy_(0.05 * torch.randn(n, generator=g, dtype=torch.float64))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g, dtype=torch.float64))
            m.running_var.copy_(1.0 + 0.3 * torch.rand(n, generator=g, dtype=torch.float64))
        return m

    features = nn.Sequential(f[0], bn(8), f[1], f[2], f[3], bn(16), f[4], f[5])
    return nn.Sequential(OrderedDict(features=features, avgpool=base.avgpool, flatten=base.flatten,
                                     classifier=base.classifier)).eval()


RESNETS = ("resnet18", "resnet_bottleneck")
"""torchvision's ``resnet18`` and a one-block-per-stage bottleneck ResNet (``ResNet(Bottleneck,
[1, 1, 1, 1])``, width 16 per group), 10 classes, seeded weights, 32×32 input."""


def _seeded_resnet(name: str, seed: int) -> nn.Module:
    """A torchvision ResNet built on the meta device (torch's default init is skipped, so
    the global RNG is untouched) and filled from a ``torch.Generator``: convolutions and the
    classifier N(0, 2 / fan_in), biases N(0, 0.05²), batch norms with γ ≈ 0.5 (so that the
    residual sums do not grow block by block) and non-trivial β and running statistics."""
    from torchvision.models import resnet18
    from torchvision.models.resnet import Bottleneck, ResNet

    with torch.device("meta"):
        if name == "resnet18":
            model = resnet18(weights=None, num_classes=10)
        else:
            model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10, width_per_group=16)
    model = model.to_empty(device="cpu").double()
    g = torch.Generator().manual_seed(seed)

    def draw(shape, std=1.0, mean=0.0):
        return mean + std * torch.randn(shape, generator=g, dtype=torch.float64)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(draw(m.weight.shape, (2.0 / m.weight[0].numel()) ** 0.5))
                if m.bias is not None:
                    m.bias.copy_(draw(m.bias.shape, 0.05))
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(draw(n, 0.2, 0.5))
                m.bias.copy_(draw(n, 0.05))
                m.running_mean.copy_(draw(n, 0.1))
                m.running_var.copy_(1.0 + 0.3 * torch.rand(n, generator=g, dtype=torch.float64))
                m.num_batches_tracked.fill_(1)
    return model.eval()


@functools.cache
def case(name: str) -> tuple[nn.Module, torch.Tensor, int]:
    """(model, x, target) with target = the largest output (f_c(x) > 0)."""
    if name == "mlp":
        model = models.mlp([12, 16, 16, 5], seed=1, dtype=torch.float64)
        g = torch.Generator().manual_seed(2)
        x = torch.randn(1, 12, generator=g, dtype=torch.float64).clamp(-3, 3)
    elif name == "cnn":
        model = models.small_cnn(seed=1, dtype=torch.float64)
        x = models.seeded_image(16, seed=3, dtype=torch.float64)
    elif name == "cnn_bn":
        model = _small_cnn_bn(seed=1)
        x = models.seeded_image(16, seed=3, dtype=torch.float64)
    elif name in ("vgg16", "vgg16_bn"):
        model = models.vgg16(num_classes=10, seed=0, batch_norm=name == "vgg16_bn", dtype=torch.float64)
        x = models.seeded_image(32, seed=0, dtype=torch.float64)
    elif name in RESNETS:
        model = _seeded_resnet(name, seed=0)
        x = models.seeded_image(32, seed=0, dtype=torch.float64)
    else:
        raise KeyError(name)
    with torch.no_grad():
        y = model(x)
    target = int(y.argmax())
    assert float(y[0, target]) > 0, f"{name}: the largest output is not positive"
    return model, x, target


def is_vgg(name: str) -> bool:
    return name.startswith("vgg")


# name → (conformance row, zennit rule, nrm rule, zennit first-layer rule, nrm first-layer rule);
# the rules are functions of (zennit module, model name) / (model name). zennit's defaults
# throughout (stabilizer 1e-6).
RULES = {
    "Epsilon(0.05)": ("Epsilon", lambda z, m: z.rules.Epsilon(0.05), lambda m: Epsilon(0.05), None, None),
    "Zero": ("Zero", lambda z, m: z.rules.Epsilon(0.0), lambda m: Zero(), None, None),
    "ZPlus": ("ZPlus", lambda z, m: z.rules.ZPlus(), lambda m: ZPlus(stabilizer=ZENNIT_EPS),
              None, lambda m: AlphaBeta(1, 0, stabilizer=ZENNIT_EPS)),
    "Gamma(0.25)": ("Gamma", lambda z, m: z.rules.Gamma(0.25), lambda m: Gamma(0.25, stabilizer=ZENNIT_EPS),
                    None, lambda m: GeneralizedGamma(0.25, stabilizer=ZENNIT_EPS)),
    "AlphaBeta(2,1)": ("AlphaBeta", lambda z, m: z.rules.AlphaBeta(2.0, 1.0),
                       lambda m: AlphaBeta(2, 1, stabilizer=ZENNIT_EPS), None, None),
    "AlphaBeta(1,0)": ("AlphaBeta", lambda z, m: z.rules.AlphaBeta(1.0, 0.0),
                       lambda m: AlphaBeta(1, 0, stabilizer=ZENNIT_EPS), None, None),
    "WSquare": ("WSquare", lambda z, m: z.rules.WSquare(), lambda m: WSquare(bias=True, stabilizer=ZENNIT_EPS),
                None, None),
    "Flat": ("Flat", lambda z, m: z.rules.Flat(), lambda m: Flat(stabilizer=ZENNIT_EPS), None, None),
    "ZBox": ("ZBox", lambda z, m: z.rules.Epsilon(ZENNIT_EPS), lambda m: Epsilon(ZENNIT_EPS),
             lambda z, m: z.rules.ZBox(*box(m)), lambda m: ZBox(*box(m), stabilizer=ZENNIT_EPS)),
}


def rule_row(rule: str) -> str:
    """The conformance row a single-rule case speaks for (ZBox: the rule of the first layer)."""
    return RULES[rule][0]


def single_rule(rule: str, model_name: str):
    """(nrm rules, zennit composite) for one rule on every convolution (and every dense
    layer, except on VGG, where the 25088×4096 classifier keeps ε to bound memory), zennit's
    Norm on pooling, Pass on activations and batch norms, batch norms merged exactly
    (``merge_batchnorm``: zennit's canonizer with the batch norm's eps 0 while merged)."""
    import zennit

    z = zennit
    _, zr, nr, zf, nf = RULES[rule]
    zf = zf or zr
    nf = nf or nr
    dense_z = (lambda: z.rules.Epsilon(ZENNIT_EPS)) if is_vgg(model_name) else (lambda: zr(z, model_name))
    dense_n = Epsilon(ZENNIT_EPS) if is_vgg(model_name) else nr(model_name)
    layer_map = [
        ((z.types.Activation, z.types.BatchNorm), z.rules.Pass()),
        (z.types.AvgPool, z.rules.Norm(ZENNIT_EPS)),
        (z.types.Convolution, zr(z, model_name)),
        (torch.nn.Linear, dense_z()),
    ]
    first_map = [(z.types.Linear, zf(z, model_name))]
    composite = z.composites.SpecialFirstLayerMapComposite(
        layer_map, first_map, canonizers=[merge_batchnorm()])
    rules = nrm.RuleMap(by_type={nn.Conv2d: nr(model_name), nn.Linear: dense_n,
                                 nn.AdaptiveAvgPool2d: Epsilon(ZENNIT_EPS)}, first=nf(model_name))
    return rules, composite


def seeded_instance(build) -> tuple[nn.Module, torch.Tensor]:
    """``build()`` → (model, image size), with every weight random of scale 1/√fan-in (biases
    0.1; ViT's zero-initialized head included), batch norms' running statistics random, in
    float64, and a seeded batch of two images: the torchvision law tests' instances."""
    torch.manual_seed(0)
    model, size = build()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (p.shape[1:].numel() ** -0.5 if p.dim() > 1 else 0.1))
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5, generator=gen)
            elif name.endswith("running_mean"):
                buf.normal_(0.0, 0.1, generator=gen)
    model = model.double().eval()
    return model, torch.randn(2, 3, size, size, dtype=torch.float64, generator=gen)
