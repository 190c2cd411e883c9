"""A maximum over per-sample dimensions — PointNet's and DGCNN's global max pooling
(``torch.max(x, 2)[0]``), max-over-time pooling of text CNNs (``x.max(dim=-1).values``),
``torch.amax``, ``F.adaptive_max_pool1d/2d`` to sizes that divide the input — read as a max
pooling over the flattened reduced dimensions (``nrm.layers.fused.MaxOverDimsDecomposition``):
the first maximal element takes its neuron's relevance; the minimum (``torch.amin``,
``torch.min(x, dim)``) is the pooling of −x, negated, its first minimal element taking it.

For each (float64): f is the model's, bitwise; L1 at every layer; the engine equals the exact
oracle (sequential models) and the explicit reference under four rule sets; LRP-0 = Gradient ×
Input (L9: ReLU and max only). What it does not read is refused by name.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from agreement import seeded
from torch import nn

import nrm
from nrm.capture import capture
from nrm_verify.references.explicit import reference_lrp
from nrm_verify.references.oracle import ExactNetwork

pytestmark = pytest.mark.usefixtures("single_thread")

D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.presets.EpsilonGammaFlat()]


def _x(*shape, seed=1):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class PointNet(nn.Module):
    """Shared per-point MLP (Conv1d 1×1) → global max over the points → classifier."""

    def __init__(self, reduce):
        super().__init__()
        self.mlp1, self.mlp2, self.head = nn.Conv1d(3, 6, 1), nn.Conv1d(6, 8, 1), nn.Linear(8, 3)
        self.reduce = reduce

    def forward(self, x):  # x: (B, 3, points)
        h = F.relu(self.mlp2(F.relu(self.mlp1(x))))
        return self.head(self.reduce(h))


class TextCNN(nn.Module):
    """Kim (2014): convolutions over the tokens, max over time, a linear head."""

    def __init__(self):
        super().__init__()
        self.conv3, self.conv2, self.head = nn.Conv1d(4, 5, 3), nn.Conv1d(4, 5, 2), nn.Linear(10, 2)

    def forward(self, x):  # x: (B, embedding 4, tokens)
        a = F.relu(self.conv3(x)).max(dim=-1).values
        b = torch.amax(F.relu(self.conv2(x)), dim=2)
        return self.head(torch.cat([a, b], 1))


class Spatial(nn.Module):
    """conv → amax over (H, W) keeping dims, and an adaptive max pool to a divisor size."""

    def __init__(self, adaptive: bool):
        super().__init__()
        self.conv, self.adaptive = nn.Conv2d(2, 3, 2), adaptive
        self.head = nn.Linear(3 * (4 if adaptive else 1), 2)

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = F.adaptive_max_pool2d(h, 2) if self.adaptive else h.amax((2, 3), keepdim=True)
        return self.head(h.flatten(1))


MODELS = {
    "pointnet torch.max(x, 2)[0]": (lambda: PointNet(lambda h: torch.max(h, 2)[0]), (2, 3, 7)),
    "pointnet Tensor.max(dim, keepdim)": (lambda: PointNet(lambda h: h.max(2, keepdim=True)[0].squeeze(-1)),
                                          (2, 3, 7)),
    "pointnet adaptive_max_pool1d(1)": (lambda: PointNet(lambda h: F.adaptive_max_pool1d(h, 1).flatten(1)),
                                        (2, 3, 7)),
    "text cnn max over time": (TextCNN, (2, 4, 6)),
    "amax over (H, W)": (lambda: Spatial(False), (2, 2, 5, 5)),
    "adaptive_max_pool2d to a divisor": (lambda: Spatial(True), (2, 2, 5, 5)),
    "pointnet torch.min(x, 2)[0] (the minimum)": (lambda: PointNet(lambda h: torch.min(h, 2)[0]), (2, 3, 7)),
    "pointnet Tensor.min(dim).values": (lambda: PointNet(lambda h: h.min(dim=-1).values), (2, 3, 7)),
    "torch.amin over (H, W) of a conv": (
        lambda: PointNet(lambda h: torch.amin(h.reshape(h.shape[0], h.shape[1], 7, 1), (2, 3))), (2, 3, 7)),
}


def _model(name: str, seed: int = 0):
    make, shape = MODELS[name]
    return seeded(make(), seed), _x(*shape, seed=seed + 1)


@pytest.mark.parametrize("name", list(MODELS))
def test_read_as_max_pooling_faithful_normalized_and_gradient_x_input(name):
    model, x = _model(name)
    assert "MaxPool" in {c.kind.name for c in capture(model, x).calls if c.kind is not None}
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero(), check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    for layer in m.canonical_names():
        total = m.marginal(layer).reshape(x.shape[0], -1).sum(1) + m.absorbed(layer)
        if not m.network.sequential:
            total = total + m.bypassing(layer)
        assert float((total - 1).abs().max()) <= 1e-12, layer
    xx = x.clone().requires_grad_(True)
    f = model(xx)[:, 1]
    g, = torch.autograd.grad(f.sum(), xx)
    torch.testing.assert_close(m.marginal("input"), g * x / f.detach().reshape(-1, *[1] * (x.dim() - 1)),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rules", RULES, ids=repr)
@pytest.mark.parametrize("name", list(MODELS))
def test_engine_equals_the_reference_and_the_oracle(name, rules):
    model, x = _model(name, seed=2)
    m = nrm.explain(model, x, target=0, rules=rules)
    ref = reference_lrp(model, x, 0, rules)
    torch.testing.assert_close(m.relevance("input"), ref.relevance["input"].reshape(x.shape), rtol=1e-9,
                               atol=1e-12)
    if m.network.sequential:  # the oracle explains one sample
        exact = ExactNetwork.from_model(model, x[:1], rules).explain(target=0)
        want = torch.tensor([float(v) for v in exact.marginal("input").reshape(-1)], dtype=D)
        scale = max(1.0, float(exact.total_variation()))
        assert float((m.marginal("input")[:1].reshape(-1) - want).abs().max()) <= 1e-9 * scale


class Op(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.conv, self.op = nn.Conv1d(2, 3, 1), op

    def forward(self, x):
        return self.op(F.relu(self.conv(x))).reshape(x.shape[0], -1).sum(1, keepdim=True)


@pytest.mark.parametrize("op, words", [
    (lambda h: torch.amax(h, 0, keepdim=True), "batch dimension"),
    (lambda h: torch.max(h, 0, keepdim=True)[0], "batch dimension"),
    (lambda h: torch.amax(h, ()).expand(h.shape[0], 1), "whole tensor"),
    (lambda h: F.adaptive_max_pool1d(h, 4), "unequal sizes"),
    (lambda h: F.adaptive_max_pool1d(h, 1, return_indices=True)[0], "return_indices"),
    (lambda h: torch.amin(h, 0, keepdim=True), "minimum along the batch"),
], ids=["amax-batch", "max-batch", "amax-all", "adaptive-uneven", "adaptive-indices", "amin-batch"])
def test_what_is_not_a_max_over_per_sample_dims_is_refused_by_name(op, words):
    model = Op(op).double().eval()
    with pytest.raises(nrm.UnsupportedOperationError, match=words):
        nrm.explain(model, _x(2, 2, 6), target=0)
