"""Small seeded residual and concatenation models (not nn.Sequential) for the LRP reference.

Every model is built on the meta device and then filled from its own ``torch.Generator``
(float64): building one neither reads nor advances torch's global random state. Weights
~ N(0, 2/fan_in), biases ~ U(−0.3, 0.3), batch norms with non-trivial statistics. All are
fx-traceable and returned in eval mode.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

DTYPE = torch.float64


def _fill(model: nn.Module, seed: int, bias: bool = True) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = model.to_empty(device="cpu").to(DTYPE)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=DTYPE) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_((torch.rand(m.bias.shape, generator=g, dtype=DTYPE) - 0.5) * (0.6 if bias else 0.0))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g, dtype=DTYPE))
                m.bias.copy_(0.2 * torch.randn(n, generator=g, dtype=DTYPE))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g, dtype=DTYPE))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g, dtype=DTYPE))
                m.num_batches_tracked.fill_(1)
    return model.eval()


class ResidualMLP(nn.Module):
    """fc_in → act → [fc1 → act → fc2] + skip → act → fc_out (the skip is a fan-out)."""

    def __init__(self, width: int = 5, n_in: int = 4, n_out: int = 3, leaky: bool = False):
        super().__init__()
        self.fc_in = nn.Linear(n_in, width)
        self.act0 = nn.LeakyReLU(0.1) if leaky else nn.ReLU()
        self.fc1 = nn.Linear(width, width)
        self.act1 = nn.LeakyReLU(0.1) if leaky else nn.ReLU()
        self.fc2 = nn.Linear(width, width)
        self.act2 = nn.LeakyReLU(0.1) if leaky else nn.ReLU()
        self.fc_out = nn.Linear(width, n_out)

    def forward(self, x):
        h = self.act0(self.fc_in(x))
        y = self.fc2(self.act1(self.fc1(h)))
        return self.fc_out(self.act2(h + y))


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-bn-relu-conv-bn, ``out += shortcut``, relu; the shortcut is
    the identity or a 1×1 convolution."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu(out)


class ResidualCNN(nn.Module):
    """stem (conv-bn-relu) → identity block → max-pool → projection block → adaptive
    average pool → ``view`` → fc. Functional ops: ``+=``, ``F.relu``, ``x.view(x.size(0), -1)``."""

    def __init__(self, c_in: int = 2, n_out: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(c_in, 3, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(3)
        self.stem_relu = nn.ReLU()
        self.block1 = BasicBlock(3, 3)
        self.pool = nn.MaxPool2d(2)
        self.block2 = BasicBlock(3, 4)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, n_out)

    def forward(self, x):
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        x = self.pool(self.block1(x))
        x = self.gap(self.block2(x))
        return self.fc(x.view(x.size(0), -1))


class ConcatNet(nn.Module):
    """conv → relu, then two branches of the same tensor (fan-out) concatenated along the
    channels (``torch.cat``), ``.relu()``, a dense-style concatenation of that with its own
    1×1 convolution, average pool, ``torch.flatten``, fc."""

    def __init__(self, c_in: int = 2, n_out: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(c_in, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.branch_a = nn.Conv2d(3, 2, 1)
        self.branch_b = nn.Conv2d(3, 2, 3, padding=1)
        self.grow = nn.Conv2d(4, 2, 1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(6 * 2 * 2, n_out)

    def forward(self, x):
        h = self.relu(self.conv(x))
        h = torch.cat([self.branch_a(h), self.branch_b(h)], dim=1).relu()
        h = torch.cat((h, F.relu(self.grow(h))), 1)
        return self.fc(torch.flatten(self.pool(h), 1))


class SplitLinear(nn.Module):
    """An MLP whose hidden Linear is written as two Linears on the same input whose outputs
    are concatenated: the same function (and, per column, the same kernels) as
    :func:`merged` gives as an ``nn.Sequential``."""

    def __init__(self, n_in: int = 4, halves: tuple[int, int] = (3, 2), n_out: int = 3):
        super().__init__()
        self.top = nn.Linear(n_in, halves[0])
        self.bottom = nn.Linear(n_in, halves[1])
        self.act = nn.ReLU()
        self.fc = nn.Linear(sum(halves), n_out)

    def forward(self, x):
        return self.fc(self.act(torch.cat([self.top(x), self.bottom(x)], dim=-1)))

    def merged(self) -> nn.Sequential:
        with torch.device("meta"):
            hidden = nn.Linear(self.top.in_features, self.top.out_features + self.bottom.out_features)
            fc = nn.Linear(self.fc.in_features, self.fc.out_features)
        model = nn.Sequential(OrderedDict(hidden=hidden, act=nn.ReLU(), fc=fc)).to_empty(device="cpu").to(DTYPE)
        with torch.no_grad():
            hidden.weight.copy_(torch.cat([self.top.weight, self.bottom.weight]))
            hidden.bias.copy_(torch.cat([self.top.bias, self.bottom.bias]))
            fc.weight.copy_(self.fc.weight)
            fc.bias.copy_(self.fc.bias)
        return model.eval()


def residual_mlp(seed: int, *, leaky: bool = False, bias: bool = True, batch: int = 2):
    with torch.device("meta"):
        model = ResidualMLP(leaky=leaky)
    model = _fill(model, seed, bias)
    x = torch.rand((batch, 4), generator=torch.Generator().manual_seed(seed + 1), dtype=DTYPE) * 2 - 1
    return model, x


def residual_cnn(seed: int, *, bias: bool = True, batch: int = 2):
    with torch.device("meta"):
        model = ResidualCNN()
    model = _fill(model, seed, bias)
    x = torch.rand((batch, 2, 6, 6), generator=torch.Generator().manual_seed(seed + 1), dtype=DTYPE) * 2 - 1
    return model, x


def concat_net(seed: int, *, bias: bool = True, batch: int = 2):
    with torch.device("meta"):
        model = ConcatNet()
    model = _fill(model, seed, bias)
    x = torch.rand((batch, 2, 4, 4), generator=torch.Generator().manual_seed(seed + 1), dtype=DTYPE) * 2 - 1
    return model, x


def split_linear(seed: int, *, batch: int = 2):
    with torch.device("meta"):
        model = SplitLinear()
    model = _fill(model, seed)
    x = torch.rand((batch, 4), generator=torch.Generator().manual_seed(seed + 1), dtype=DTYPE) * 2 - 1
    return model, x


BUILDERS = {"residual_mlp": residual_mlp, "residual_mlp_leaky": lambda s, **k: residual_mlp(s, leaky=True, **k),
            "residual_cnn": residual_cnn, "concat_net": concat_net}
