"""The fast paths of :class:`nrm.linear.ConvMap` against torch's convolution and its VJP
(``aten.convolution_backward``), which they replace where they apply: depthwise maps whose
windows tile the input (average pooling, a squeeze-excitation's global pooling: reshapes in
place of a grouped convolution) and 1×1 convolutions (one matrix product). float64; the
tiled maps multiply one weight per term, so they agree to the last bits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nrm
from nrm.linear import ConvMap, _tuple

pytestmark = pytest.mark.usefixtures("single_thread")


def vjp(m: ConvMap, g: torch.Tensor, w: torch.Tensor, in_shape: tuple) -> torch.Tensor:
    n = m.dim
    return torch.ops.aten.convolution_backward(
        g, g.new_empty((g.shape[0],) + tuple(in_shape)), w, None, _tuple(m.stride, n), _tuple(m.padding, n),
        _tuple(m.dilation, n), False, (0,) * n, m.groups, (True, False, False))[0]


def conv(dim: int):
    return F.conv1d if dim == 1 else F.conv2d


TILED = [(dim, size, k, c) for dim in (1, 2) for size, k, c in
         [(7, 7, 5), (14, 2, 3), (15, 2, 4), (9, 3, 2), (8, 8, 1), (11, 4, 3)]]


@pytest.mark.parametrize("dim, size, k, channels", TILED, ids=[f"{d}d-{s}-k{k}-c{c}" for d, s, k, c in TILED])
def test_tiled_depthwise_maps_equal_the_convolution_and_its_transpose(dim, size, k, channels):
    g = torch.Generator().manual_seed(size * k + channels)
    w = torch.randn((channels, 1) + (k,) * dim, dtype=torch.float64, generator=g)
    m = ConvMap(w, None, k, 0, 1, channels)
    assert m._tiled(w, channels)
    in_shape = (channels,) + (size,) * dim
    x = torch.randn((3,) + in_shape, dtype=torch.float64, generator=g)
    z = conv(dim)(x, w, None, k, 0, 1, channels)
    torch.testing.assert_close(m.forward(x, w), z, rtol=1e-14, atol=1e-14)
    out = torch.randn(z.shape, dtype=torch.float64, generator=g)
    torch.testing.assert_close(m.transpose(out, w, in_shape), vjp(m, out, w, in_shape), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dim", [1, 2])
def test_pointwise_maps_transpose_as_the_convolution_does(dim):
    g = torch.Generator().manual_seed(dim)
    w = torch.randn((6, 4) + (1,) * dim, dtype=torch.float64, generator=g)
    m = ConvMap(w, None, 1, 0, 1, 1)
    assert m._pointwise(w)
    in_shape = (4,) + (5,) * dim
    out = torch.randn((3, 6) + (5,) * dim, dtype=torch.float64, generator=g)
    torch.testing.assert_close(m.transpose(out, w, in_shape), vjp(m, out, w, in_shape), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("what, make", [
    ("overlapping windows", lambda w: ConvMap(w, None, 1, 0, 1, 3)),
    ("padding", lambda w: ConvMap(w, None, 2, 1, 1, 3)),
    ("padding 'same'", lambda w: ConvMap(w, None, 1, "same", 1, 3)),
    ("dilation", lambda w: ConvMap(w, None, 2, 0, 2, 3)),
])
def test_the_fast_paths_stay_out_of_what_they_do_not_compute(what, make):
    w = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    m = make(w)
    assert not m._tiled(w, 3) and not m._pointwise(w)
    assert not ConvMap(torch.randn(3, 3, 1, 1), None, 2, 0, 1, 1)._pointwise(torch.randn(3, 3, 1, 1))  # strided


def test_a_squeeze_excitation_block_keeps_normalization():
    """Global pooling as a tiled map inside a gate, explained end to end: L1 at every layer."""
    from torch import nn

    from nrm_verify import laws

    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)
            self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            h = h * torch.sigmoid(self.fc(self.pool(h)))
            return self.head(self.pool(h).flatten(1))

    torch.manual_seed(0)
    model = SE().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    m = nrm.explain(model, x, target=[0, 1], rules=nrm.rules.Epsilon(1e-9))
    assert laws.normalization(m).holds is True


LIVE_ROWS = [("dense", range(20)), ("one row", [19]), ("half", range(0, 20, 2)),
             ("live past column 8 only", [3, 7]), ("none", [])]


@pytest.mark.parametrize("name, live", LIVE_ROWS, ids=[n for n, _ in LIVE_ROWS])
def test_dense_transpose_skipping_zero_rows_equals_the_matrix_product(name, live):
    """:class:`nrm.linear.DenseMap` transposes only the rows of g that are not all zero when they
    are at most half (a language model explained at one position); a row whose first 8 entries
    are zero but not the rest is live. Every case equals g Wᵀ's VJP, g @ W, with exact zeros
    in the skipped rows."""
    from nrm.linear import DenseMap

    gen = torch.Generator().manual_seed(len(name))
    w = torch.randn(12, 5, dtype=torch.float64, generator=gen)
    g = torch.zeros(2, 10, 12, dtype=torch.float64)
    flat = g.view(20, 12)
    for i in live:
        flat[i] = torch.randn(12, dtype=torch.float64, generator=gen)
        if name == "live past column 8 only":
            flat[i, :8] = 0
    out = DenseMap(w, None).transpose(g, w, (5,))
    assert out.shape == (2, 10, 5)
    torch.testing.assert_close(out, g @ w, rtol=1e-15, atol=0)
    dead = [i for i in range(20) if i not in set(live)]
    assert bool((out.reshape(20, 5)[dead] == 0).all())


SCATTERS = [("broadcast index (PyG)", True), ("index that differs along the features", False)]


@pytest.mark.parametrize("name, broadcast", SCATTERS, ids=[n for n, _ in SCATTERS])
def test_scatter_map_moving_whole_slices_equals_the_elementwise_scatter_and_gather(name, broadcast):
    """:class:`nrm.layers.message.ScatterMap` with an index that is one node index broadcast over
    the features (PyG's ``index.view(-1, 1).expand_as(src)``) moves whole slices: index_add and
    index_select, equal to scatter_add and gather; an index that differs along the features keeps
    the element-wise path. Forward and transpose, several stacked rows, against torch directly."""
    from nrm.layers.message import ScatterMap

    gen = torch.Generator().manual_seed(3)
    nodes, edges, feats, rows = 5, 9, 3, 4
    line = torch.randint(0, nodes, (edges,), generator=gen)
    index = line.view(-1, 1).expand(edges, feats).clone()
    if not broadcast:
        index[2, 1] = (index[2, 1] + 1) % nodes
    weight = torch.rand(edges, feats, generator=gen, dtype=torch.float64)
    m = ScatterMap(index, 1, (nodes, feats), weight, None)
    assert (m.line is not None) == broadcast
    x = torch.randn(rows, edges, feats, generator=gen, dtype=torch.float64)
    want = torch.zeros(rows, nodes, feats, dtype=torch.float64).scatter_add_(
        1, index.expand(rows, -1, -1), x * weight)
    torch.testing.assert_close(m.forward(x, weight), want, rtol=1e-15, atol=1e-15)
    g = torch.randn(rows, nodes, feats, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(m.transpose(g, weight, (edges, feats)),
                               torch.gather(g, 1, index.expand(rows, -1, -1)) * weight, rtol=0, atol=0)
