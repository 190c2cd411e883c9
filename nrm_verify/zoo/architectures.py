"""Models with branches, defined in the project with seeded weights (no downloads).

Each is an ordinary ``nn.Module`` whose ``forward`` has skip connections, parallel
branches or concatenations; :func:`nrm.explain` traces it with ``torch.fx`` into the
proper FFNN (NRM-SPEC §1). Module names follow torchvision where a torchvision model has
the same part (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0``, ``fc``).

* :class:`BasicBlock`, :class:`Bottleneck` and :func:`resnet` — ResNet-style residual
  blocks with batch norm (He et al., CVPR 2016), identity and 1×1 projection shortcuts;
  :func:`resnet` ``(block="basic" | "bottleneck")``.
* :class:`InceptionBlock` and :func:`inception` — parallel 1×1, 3×3, 5×5 and pooling
  branches of unequal depth joined by ``torch.cat`` (Szegedy et al., CVPR 2015).
* :class:`DenseBlock` and :func:`densenet` — every layer reads the concatenation of all
  earlier ones (Huang et al., CVPR 2017), conv → BN → ReLU order so that batch norm folds.

Weights are drawn from a ``torch.Generator`` seeded with ``seed`` as in
:mod:`nrm_verify.zoo.models`; models are returned in eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nrm_verify.zoo.models import fill, fill_batchnorm, materialize


class BasicBlock(nn.Module):
    """out = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)), shortcut = x or BN(conv1×1(x))."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 → 1×1 expand (each conv + BN), plus the shortcut, then ReLU."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """stem (conv, BN, ReLU, max-pool) → residual stages → global average pool → fc."""

    def __init__(self, block: str = "basic", widths=(8, 16), blocks_per_stage: int = 1, in_channels: int = 3,
                 num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        cin = widths[0]
        for s, width in enumerate(widths):
            stage = []
            for b in range(blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                if block == "basic":
                    stage.append(BasicBlock(cin, width, stride))
                    cin = width
                else:
                    stage.append(Bottleneck(cin, width, stride))
                    cin = width * Bottleneck.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*stage))
        self.stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in range(self.stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InceptionBlock(nn.Module):
    """Four branches of unequal depth, concatenated along channels:
    1×1 | 1×1 → 3×3 | 1×1 → 5×5 | 3×3 max-pool → 1×1."""

    def __init__(self, cin: int, c1: int = 4, c3: tuple = (4, 6), c5: tuple = (2, 3), cp: int = 3):
        super().__init__()
        self.branch1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU())
        self.branch3 = nn.Sequential(nn.Conv2d(cin, c3[0], 1), nn.ReLU(), nn.Conv2d(c3[0], c3[1], 3, padding=1),
                                     nn.ReLU())
        self.branch5 = nn.Sequential(nn.Conv2d(cin, c5[0], 1), nn.ReLU(), nn.Conv2d(c5[0], c5[1], 5, padding=2),
                                     nn.ReLU())
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, cp, 1), nn.ReLU())
        self.out_channels = c1 + c3[1] + c5[1] + cp

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


class Inception(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = InceptionBlock(8)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(self.block.out_channels * 4, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.block(self.stem(x)))))


class DenseBlock(nn.Module):
    """Layer i reads cat(x, y_1, …, y_{i−1}) and adds ``growth`` channels (conv → BN → ReLU)."""

    def __init__(self, cin: int, growth: int = 4, layers: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin + i * growth, growth, 3, padding=1, bias=False), nn.BatchNorm2d(growth),
                          nn.ReLU())
            for i in range(layers)
        )
        self.out_channels = cin + layers * growth

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.block = DenseBlock(6)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(self.block.out_channels * 4, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


def _seed(model: nn.Module, seed: int, dtype) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fill(module, generator, gain=1.0 if module is last else math.sqrt(2.0), bias_std=0.05)
        elif isinstance(module, nn.BatchNorm2d):
            fill_batchnorm(module, generator)
    return model.to(dtype).eval()


def resnet(block: str = "basic", seed: int = 0, widths=(8, 16), blocks_per_stage: int = 1, in_channels: int = 3,
           num_classes: int = 10, dtype: torch.dtype = torch.float32) -> ResNet:
    """A small ResNet (inputs of 8×8 or more) with basic or bottleneck blocks, seeded."""
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"block is 'basic' or 'bottleneck', got {block!r}")
    with torch.device("meta"):
        model = ResNet(block, widths, blocks_per_stage, in_channels, num_classes)
    return _seed(materialize(model), seed, dtype)


def inception(seed: int = 0, in_channels: int = 3, num_classes: int = 10, dtype=torch.float32) -> Inception:
    """A stem and one Inception-style block, seeded (inputs of 4×4 or more)."""
    with torch.device("meta"):
        model = Inception(in_channels, num_classes)
    return _seed(materialize(model), seed, dtype)


def densenet(seed: int = 0, in_channels: int = 3, num_classes: int = 10, dtype=torch.float32) -> DenseNet:
    """A stem and one DenseNet-style block of three layers, seeded (inputs of 2×2 or more)."""
    with torch.device("meta"):
        model = DenseNet(in_channels, num_classes)
    return _seed(materialize(model), seed, dtype)


BUILDERS = {
    "resnet-basic": lambda **kw: resnet("basic", **kw),
    "resnet-bottleneck": lambda **kw: resnet("bottleneck", **kw),
    "inception": inception,
    "densenet": densenet,
}
"""Every model of this module by name: ``BUILDERS[name](seed=…, dtype=…)``."""
