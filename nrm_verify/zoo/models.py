"""Deterministic models and inputs for tests, examples and benchmarks (no downloads).

Every builder draws its weights from its own ``torch.Generator`` seeded with ``seed``:
the same seed gives bitwise the same model on every run, and building a model neither
reads nor advances torch's global random state. Models are returned in eval mode.

* :func:`vgg16` — torchvision's VGG16 layout (configuration "D"), module names included
  (``features.0`` … ``features.30``, ``avgpool``, ``flatten``, ``classifier.0`` …
  ``classifier.6``), with seeded Kaiming-style weights instead of trained ones.
* :func:`mlp` and :func:`small_cnn` — small networks for fast tests.
* :func:`alexnet_lrn` — AlexNet's layout with ``LocalResponseNorm`` after the first two
  conv + ReLU blocks (``width=`` shrinks it for tests).
* :func:`seeded_image` — a smooth, deterministic input image.

Initialization: a ReLU layer with weights w ~ N(0, 2 / fan_in) keeps the mean square
activation roughly constant from layer to layer (He et al., *Delving deep into
rectifiers*, ICCV 2015), so over VGG16's 16 layers the activations neither vanish nor
explode and the logits of :func:`seeded_image` are of order 1–100. Biases are small but
non-zero so that the absorbers ⊥_l receive mass.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

VGG16_CONFIG: tuple = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
"""torchvision's configuration "D": channel counts of the convolutions, "M" for a 2×2 max-pool."""

BIAS_STD = 0.01
"""Standard deviation of the seeded biases (small, non-zero: the absorbers get some mass)."""


def fill(module: nn.Module, generator: torch.Generator, gain: float, bias_std: float) -> None:
    """Weights ~ N(0, gain² / fan_in), biases ~ N(0, bias_std²), drawn from ``generator``."""
    weight = module.weight
    fan_in = weight[0].numel()
    with torch.no_grad():
        weight.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)
        if module.bias is not None:
            module.bias.normal_(0.0, bias_std, generator=generator)


def fill_batchnorm(bn: nn.BatchNorm2d, generator: torch.Generator) -> None:
    """Non-trivial affine parameters and running statistics, so that folding is exercised."""
    n = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=generator))
        bn.bias.copy_(0.01 * torch.randn(n, generator=generator))
        bn.running_mean.copy_(0.01 * torch.randn(n, generator=generator))
        bn.running_var.copy_(1.0 + 0.1 * torch.rand(n, generator=generator))
        bn.num_batches_tracked.fill_(1)


def materialize(model: nn.Module) -> nn.Module:
    """Allocate a model built on the meta device (skipping torch's default init, which
    would use and advance the global random state)."""
    return model.to_empty(device="cpu")


def vgg16(num_classes: int = 1000, seed: int = 0, batch_norm: bool = False,
          dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A VGG16-shaped network with seeded random weights, in eval mode.

    The layout is torchvision's ``vgg16`` (``vgg16_bn`` with ``batch_norm=True``) as one
    ``nn.Sequential``::

        features   = Sequential(conv 3×3 + ReLU blocks and 2×2 max-pools, configuration "D")
        avgpool    = AdaptiveAvgPool2d((7, 7))
        flatten    = Flatten()
        classifier = Sequential(Linear(25088, 4096), ReLU, Dropout,
                                Linear(4096, 4096), ReLU, Dropout, Linear(4096, num_classes))

    Without batch norm ``features.28`` is the last convolution and ``features.30`` the
    last max-pool. Any input of at least 32×32 works (the adaptive pool makes 7×7).

    Args:
        num_classes: outputs of the last linear layer.
        seed: seeds the model's own generator; equal seeds give equal models.
        batch_norm: insert BatchNorm2d after every convolution (seeded running statistics).
        dtype: floating dtype of the parameters.
    """
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    with torch.device("meta"):
        for v in VGG16_CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=False))
            channels = v
        features = nn.Sequential(*layers)
        classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, num_classes),
        )
        model = nn.Sequential(OrderedDict(
            features=features, avgpool=nn.AdaptiveAvgPool2d((7, 7)), flatten=nn.Flatten(), classifier=classifier,
        ))
    materialize(model)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            last = module is classifier[6]
            # He init for layers followed by ReLU; the logits get gain 1 (no ReLU after them)
            fill(module, generator, gain=1.0 if last else math.sqrt(2.0), bias_std=BIAS_STD)
        elif isinstance(module, nn.BatchNorm2d):
            fill_batchnorm(module, generator)
    return model.to(dtype).eval()


def mlp(widths: Sequence[int], seed: int = 0, bias: bool = True, dtype: torch.dtype = torch.float32,
        negative_slope: float | None = None) -> nn.Sequential:
    """A dense ReLU network ``widths[0] → widths[1] → … → widths[-1]``, in eval mode.

    Modules are named ``fc1, relu1, fc2, relu2, …, fcN`` (no activation after the last
    linear layer). ``negative_slope`` uses LeakyReLU instead of ReLU.
    """
    widths = list(widths)
    if len(widths) < 2 or any(int(w) < 1 for w in widths):
        raise ValueError(f"mlp needs at least two positive widths (input and output), got {widths}")
    generator = torch.Generator().manual_seed(seed)
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    n = len(widths) - 1
    with torch.device("meta"):
        for i in range(n):
            modules[f"fc{i + 1}"] = nn.Linear(widths[i], widths[i + 1], bias=bias)
            if i < n - 1:
                modules[f"relu{i + 1}"] = nn.ReLU() if negative_slope is None else nn.LeakyReLU(negative_slope)
        model = nn.Sequential(modules)
    materialize(model)
    for i in range(n):
        gain = 1.0 if i == n - 1 else math.sqrt(2.0)
        fill(modules[f"fc{i + 1}"], generator, gain=gain, bias_std=0.1)
    return model.to(dtype).eval()


def small_cnn(seed: int = 0, num_classes: int = 10, in_channels: int = 3,
              dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A small VGG-like network for 16×16 inputs (any size ≥ 4 works), in eval mode::

        features.0 Conv2d(in, 8, 3, padding=1)   features.1 ReLU   features.2 MaxPool2d(2)
        features.3 Conv2d(8, 16, 3, padding=1)   features.4 ReLU   features.5 MaxPool2d(2)
        avgpool    AdaptiveAvgPool2d((2, 2))     flatten   Flatten
        classifier.0 Linear(64, 32)   classifier.1 ReLU   classifier.2 Linear(32, num_classes)
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = nn.Sequential(OrderedDict(
            features=nn.Sequential(
                nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            ),
            avgpool=nn.AdaptiveAvgPool2d((2, 2)),
            flatten=nn.Flatten(),
            classifier=nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes)),
        ))
    materialize(model)
    last = model.classifier[2]
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fill(module, generator, gain=1.0 if module is last else math.sqrt(2.0), bias_std=0.05)
    return model.to(dtype).eval()


def seeded_image(size: int | tuple[int, int] = 224, seed: int = 0, batch: int = 1, channels: int = 3,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A smooth deterministic image (batch, channels, H, W) with values in about [−2, 2]
    (the range of an ImageNet-normalized photograph).

    Each channel is a sum of a few seeded plane waves and one seeded Gaussian blob, so
    the image has structure at several scales (a centre region, edges) rather than noise.
    """
    h, w = (size, size) if isinstance(size, int) else size
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(-1.0, 1.0, h, dtype=torch.float64).reshape(h, 1)
    xs = torch.linspace(-1.0, 1.0, w, dtype=torch.float64).reshape(1, w)
    out = torch.empty(batch, channels, h, w, dtype=torch.float64)
    for b in range(batch):
        for c in range(channels):
            img = torch.zeros(h, w, dtype=torch.float64)
            for _ in range(3):
                fy, fx = (torch.rand(2, generator=generator, dtype=torch.float64) * 6 - 3).tolist()
                phase = float(torch.rand(1, generator=generator, dtype=torch.float64)) * 2 * math.pi
                img += 0.4 * torch.cos(math.pi * (fy * ys + fx * xs) + phase)
            cy, cx = (torch.rand(2, generator=generator, dtype=torch.float64) * 1.0 - 0.5).tolist()
            width = 0.2 + 0.3 * float(torch.rand(1, generator=generator, dtype=torch.float64))
            img += 1.2 * torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * width ** 2))
            out[b, c] = img - 0.3
    return out.clamp(-2.0, 2.0).to(dtype)


ALEXNET_CHANNELS: tuple = (64, 192, 384, 256, 256)
"""Channels of AlexNet's five convolutions (torchvision's single-GPU layout)."""


def alexnet_lrn(seed: int = 0, num_classes: int = 1000, size: int = 5, *, width: float = 1.0,
                alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """An AlexNet-shaped network with local response normalization, seeded, in eval mode.

    Krizhevsky et al. (NIPS 2012) normalize after the first two conv + ReLU blocks, before
    their max-pools; the layout is torchvision's ``alexnet`` with those two
    ``LocalResponseNorm`` layers inserted (and a ``Flatten``), as one ``nn.Sequential``::

        features.0  Conv2d(3, 64, 11, stride 4, padding 2)   features.1  ReLU
        features.2  LocalResponseNorm(size, alpha, beta, k)  features.3  MaxPool2d(3, 2)
        features.4  Conv2d(64, 192, 5, padding 2)            features.5  ReLU
        features.6  LocalResponseNorm(size, alpha, beta, k)  features.7  MaxPool2d(3, 2)
        features.8  Conv2d(192, 384, 3, padding 1)           features.9  ReLU
        features.10 Conv2d(384, 256, 3, padding 1)           features.11 ReLU
        features.12 Conv2d(256, 256, 3, padding 1)           features.13 ReLU
        features.14 MaxPool2d(3, 2)
        avgpool     AdaptiveAvgPool2d((6, 6))                flatten     Flatten
        classifier  Dropout, Linear(9216, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU,
                    Linear(4096, num_classes)                (classifier.0 … classifier.6)

    Any input of at least 63×63 works (224×224 is AlexNet's). The LRN constants default
    to the paper's (n = 5, α = 1e-4, β = 0.75, κ = 2); with inputs of order 1 that
    normalization is nearly a constant factor κ^(−β), so pass a larger ``alpha`` (e.g.
    1.0) to make it matter.

    Args:
        seed: seeds the model's own generator; equal seeds give equal models.
        num_classes: outputs of the last linear layer.
        size: the LRN window n (channels, ``LocalResponseNorm(size)``).
        width: multiplies every channel count and the 4096 hidden units (rounded, at
            least 1), e.g. 0.125 for a fast test model.
        alpha, beta, k: the LRN constants.
        dtype: floating dtype of the parameters.
    """
    if int(size) < 1 or width <= 0:
        raise ValueError(f"alexnet_lrn needs size >= 1 and width > 0, got size={size}, width={width}")

    def w(c: int) -> int:
        return max(1, round(c * width))

    c1, c2, c3, c4, c5 = (w(c) for c in ALEXNET_CHANNELS)
    hidden = w(4096)
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        features = nn.Sequential(
            nn.Conv2d(3, c1, 11, stride=4, padding=2), nn.ReLU(),
            nn.LocalResponseNorm(int(size), alpha=alpha, beta=beta, k=k), nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(),
            nn.LocalResponseNorm(int(size), alpha=alpha, beta=beta, k=k), nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, 2),
        )
        classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(c5 * 6 * 6, hidden), nn.ReLU(),
            nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        model = nn.Sequential(OrderedDict(
            features=features, avgpool=nn.AdaptiveAvgPool2d((6, 6)), flatten=nn.Flatten(), classifier=classifier,
        ))
    materialize(model)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            last = module is classifier[6]
            fill(module, generator, gain=1.0 if last else math.sqrt(2.0), bias_std=BIAS_STD)
    return model.to(dtype).eval()
