"""``F.interpolate`` as a linear layer (:class:`nrm.layers.resample.Interpolate`): what
torchvision's segmentation heads (FCN, DeepLabV3, LR-ASPP) need. Checked as every kind is:
engine = exact oracle = explicit reference at every layer under several rules, L1, L9 (LRP-0
= gradient × input: the map is the layer's Jacobian), check-layer; its matrix P equals the
interpolation written out from torch's definition (nearest, linear with and without
``align_corners``); what it does not read is refused by name."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from agreement import agree, seeded
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError
from nrm.layers.resample import Interpolate, factors, matrix
from nrm_verify.laws.limits import gradient_x_input
from nrm_verify.validate.layers import check_layer

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = {"LRP-0": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "gamma": nrm.rules.Gamma(0.25),
         "EpsilonPlusFlat": nrm.presets.EpsilonPlusFlat(), "EpsilonAlpha2Beta1": nrm.presets.EpsilonAlpha2Beta1()}


class Segmenter(nn.Module):
    """conv → relu → F.interpolate(**how) → conv → the class logits at one output position
    (a segmentation head read at a pixel), on (B, 2, *spatial) inputs of ``dims`` spatial
    dimensions (3: a linear layer viewed as (B, 2, 2, 2, 3), no 3-d convolution)."""

    def __init__(self, dims: int = 2, **how):
        super().__init__()
        self.dims, self.how = dims, how
        if dims == 3:
            self.first = nn.Linear(5, 24)
        else:
            self.first = (nn.Conv1d if dims == 1 else nn.Conv2d)(2, 3, 1)
        self.last = nn.Linear(2 if dims == 3 else 3, 4)

    def forward(self, x):
        h = torch.relu(self.first(x))
        if self.dims == 3:
            h = h.view(h.shape[0], 2, 2, 2, 3)
        h = F.interpolate(h, **self.how)
        at = (slice(None), slice(None)) + (1,) * self.dims
        return self.last(h[at])


CASES = {
    "bilinear, scale 2": (2, dict(scale_factor=2, mode="bilinear")),
    "bilinear, size, align_corners": (2, dict(size=(5, 4), mode="bilinear", align_corners=True)),
    "nearest, size": (2, dict(size=(5, 2), mode="nearest")),
    "nearest-exact, scale 1.5": (2, dict(scale_factor=1.5, mode="nearest-exact")),
    "bicubic (negative weights)": (2, dict(size=(4, 5), mode="bicubic")),
    "area (downsampling)": (2, dict(size=(2, 2), mode="area")),
    "bilinear, antialias, down": (2, dict(size=(2, 2), mode="bilinear", antialias=True)),
    "linear, 1-d, scale 2.5": (1, dict(scale_factor=2.5, mode="linear")),
    "trilinear, 3-d": (3, dict(scale_factor=2, mode="trilinear")),
}


def _case(name: str, batch: int = 1):
    dims, how = CASES[name]
    shape = {1: (2, 4), 2: (2, 3, 3), 3: (5,)}[dims]
    x = torch.randn((batch,) + shape, dtype=D, generator=torch.Generator().manual_seed(7))
    return seeded(Segmenter(dims, **how)), x


def _kinds(m) -> list[str]:
    return [b.producer.layer_kind.name for b in m.network.blocks[1:] if b.producer is not None]


@pytest.mark.parametrize("rules", list(RULES))
@pytest.mark.parametrize("name", list(CASES))
def test_interpolation_agrees_with_the_exact_oracle_and_the_explicit_reference_at_every_layer(name, rules):
    model, x = _case(name)
    m = agree(model, x, target=1, rules=RULES[rules])
    assert "Interpolate" in _kinds(m), _kinds(m)
    for layer in m.layers:  # L1 at every layer
        total = m.marginal(layer).flatten(1).sum(1) + m.absorbed(layer)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_lrp0_is_gradient_x_input_through_an_interpolation(name):
    model, x = _case(name, batch=3)
    assert gradient_x_input(model, x, 2).holds is True


def _linear_weights(n_in: int, n_out: int, align_corners: bool, scale: float | None = None) -> torch.Tensor:
    """A (n_out, n_in) of 1-d linear interpolation as torch defines it
    (``area_pixel_compute_source_index``): src = s·(k + ½) − ½ clamped at 0 with s = n_in/n_out
    (1/scale_factor where one is given), or s·k with s = (n_in − 1)/(n_out − 1) under
    align_corners; weights 1 − λ and λ on ⌊src⌋ and the next index (the last one alone)."""
    A = torch.zeros(n_out, n_in, dtype=D)
    for k in range(n_out):
        if align_corners:
            src = (n_in - 1) / (n_out - 1) * k if n_out > 1 else 0.0
        else:
            s = 1 / scale if scale is not None else n_in / n_out
            src = max(s * (k + 0.5) - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = i0 + (1 if i0 < n_in - 1 else 0)
        lam = min(max(src - i0, 0.0), 1.0)
        A[k, i0] += 1 - lam
        A[k, i1] += lam
    return A


@pytest.mark.parametrize("spatial, args", [
    ((3, 4), dict(size=(5, 7), mode="bilinear", align_corners=False)),
    ((3, 4), dict(size=(5, 7), mode="bilinear", align_corners=True)),
    ((4, 2), dict(scale_factor=2, mode="bilinear", align_corners=False)),
    ((8, 8), dict(size=(64, 64), mode="bilinear", align_corners=False)),  # FCN's head at 64 × 64
])
def test_the_matrix_is_the_written_out_bilinear_interpolation(spatial, args):
    """P = A_h ⊗ A_w, each axis's weights written from torch's definition (to 1e-15)."""
    P = matrix({k: v for k, v in args.items()}, spatial, D, torch.device("cpu"))
    size = args.get("size") or tuple(n * args["scale_factor"] for n in spatial)
    scale = args.get("scale_factor")
    A = [_linear_weights(n, int(m), args["align_corners"], scale) for n, m in zip(spatial, size)]
    torch.testing.assert_close(P, torch.kron(A[0], A[1]), rtol=0, atol=1e-15)
    torch.testing.assert_close(P.sum(1), torch.ones(P.shape[0], dtype=D), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n_in, n_out", [(3, 5), (4, 8), (5, 3), (2, 7)])
def test_the_matrix_of_nearest_copies_input_floor_k_times_n_in_over_n_out(n_in, n_out):
    """Nearest: output k copies input min(⌊k · n_in / n_out⌋, n_in − 1) (torch's ``nearest_idx``)."""
    P = matrix(dict(size=(n_out,), mode="nearest"), (n_in,), D, torch.device("cpu"))
    want = torch.zeros(n_out, n_in, dtype=D)
    for k in range(n_out):
        want[k, min(int(math.floor(k * (n_in / n_out))), n_in - 1)] = 1.0
    assert torch.equal(P, want)


class ResampledGate(nn.Module):
    """GhostNetV2's decoupled attention: h · F.interpolate(sigmoid(conv(avgpool(h))), size of h, mode)."""

    def __init__(self, mode: str):
        super().__init__()
        self.first, self.gate, self.mode = nn.Conv2d(2, 3, 1), nn.Conv2d(3, 3, 1), mode
        self.last = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):  # (B, 2, 4, 4)
        h = torch.relu(self.first(x))
        g = torch.sigmoid(self.gate(F.avg_pool2d(h, 2)))
        return self.last((h * F.interpolate(g, size=(4, 4), mode=self.mode)).flatten(1))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("rules", ["LRP-0", "epsilon"])
def test_a_resampled_gate_is_a_gate_under_the_default_split(mode, rules):
    """An upsampled sigmoid is still a gate (each output a convex combination of gate values): it
    takes nothing, the signal h takes the product's relevance whole; engine = oracle = reference."""
    model = seeded(ResampledGate(mode))
    x = torch.randn(1, 2, 4, 4, dtype=D, generator=torch.Generator().manual_seed(5))
    m = agree(model, x, 1, RULES[rules])
    (product,) = [b for b in m.network.blocks if b.kind == "product"]
    assert [float(t) for t in product.split] == [1.0, 0.0]


def test_a_bicubic_resampled_gate_is_not_a_gate():
    """Bicubic weights can be negative: the resampled values may leave [0, 1]; the default split
    cannot choose and says how."""
    model = seeded(ResampledGate("bicubic"))
    with pytest.raises(nrm.AmbiguousProductError, match="split='equal'"):
        nrm.explain(model, torch.randn(1, 2, 4, 4, dtype=D), target=1)


def test_check_layer_passes_the_kind():
    report = check_layer(nrm.layers.REGISTRY.kinds["Interpolate"], max_examples=3, only=["K2", "K3", "K5", "L1", "L18"])
    assert report.ok, str(report)
    assert isinstance(nrm.layers.REGISTRY.kinds["Interpolate"], Interpolate)


def test_nn_upsample_is_read_and_keyed_by_its_type():
    """nn.Upsample calls F.interpolate: one Interpolate layer, whose rule a RuleMap keys by nn.Upsample."""
    model = seeded(nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear"),
                                  nn.Flatten(), nn.Linear(3 * 6 * 6, 4)))
    x = torch.randn(2, 2, 3, 3, dtype=D, generator=torch.Generator().manual_seed(3))
    rules = nrm.RuleMap(nrm.rules.Zero(), by_type={nn.Upsample: nrm.rules.Flat()})
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    layer = next(b for b in m.network.blocks[1:]
                 if b.producer is not None and b.producer.layer_kind.name == "Interpolate")
    assert isinstance(layer.rule, nrm.rules.Flat)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 1], rtol=1e-12, atol=1e-12)


def _kron(fs):
    P = fs[0]
    for f in fs[1:]:
        P = torch.kron(P, f)
    return P


SEPARABLE = [(mode, dims, ac, how) for mode, dims in [("nearest", 1), ("nearest", 2), ("nearest", 3),
                                                       ("nearest-exact", 2), ("linear", 1), ("bilinear", 2),
                                                       ("bicubic", 2), ("trilinear", 3), ("area", 1), ("area", 2)]
             for ac in ([None] if mode in ("nearest", "nearest-exact", "area") else [False, True])
             for how in [("size", (5, 3, 4)[:dims]), ("size", (2, 3, 2)[:dims]), ("scale_factor", 1.7),
                         ("scale_factor", 0.6), ("scale_factor", [2.0, 0.5, 1.5][:dims])]]


@pytest.mark.parametrize("mode, dims, align_corners, how", SEPARABLE)
def test_the_matrix_is_the_product_of_one_matrix_per_dimension(mode, dims, align_corners, how):
    """P = P₁ ⊗ P₂ ⊗ … (what the map applies, one dimension at a time): bitwise torch's matrix,
    but for bicubic's and trilinear's own rounding (within 4 ulp)."""
    spatial = (4, 5, 3)[:dims]
    args = dict(size=None, scale_factor=None, mode=mode, align_corners=align_corners, recompute_scale_factor=None,
                antialias=False)
    args[how[0]] = list(how[1]) if isinstance(how[1], tuple) else how[1]
    P = matrix(args, spatial, D, torch.device("cpu"))
    K = _kron(factors(args, spatial, D, torch.device("cpu")))
    assert K.shape == P.shape
    if mode in ("bicubic", "trilinear"):
        assert float((K - P).abs().max()) <= 4 * torch.finfo(D).eps
    else:
        assert torch.equal(K, P)


def test_an_upsampling_to_a_large_image_is_applied_one_dimension_at_a_time():
    """64 × 64 → 512 × 512: a dense P would have 2**34 entries; the map applies two 1-D matrices,
    f is the model's and LRP-0 = gradient × input (L9) through it."""
    model = seeded(Segmenter(2, size=(512, 512), mode="bilinear"))
    x = torch.randn(1, 2, 64, 64, dtype=D, generator=torch.Generator().manual_seed(4))
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero(), check="full")
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 1], rtol=1e-12, atol=1e-12)
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx)[0, 1], xx)
    torch.testing.assert_close(m.marginal("input") * m.f.reshape(-1, 1, 1, 1), g * x, rtol=1e-10, atol=1e-12)
    assert gradient_x_input(model, x, 1).holds is True  # the law at every layer, applying the map as itself


@pytest.mark.parametrize("how, rules", [
    (dict(size=(136, 136), mode="bilinear"),
     nrm.RuleMap(nrm.rules.Zero(), by_type={nn.Upsample: nrm.rules.Gamma(0.25)})),
    (dict(size=(136, 136), mode="bilinear", antialias=True), None),
], ids=["a rule that modifies the weights", "antialias (one dense matrix)"])
def test_a_dense_matrix_too_large_is_refused_by_name_and_the_model_is_untouched(how, rules):
    """64 × 64 → 136 × 136: the dense P would have 4096 × 18496 > 2**26 entries — formed only for a
    rule that modifies it (refused when it is asked for), or for antialias=True (refused at capture)."""
    model = seeded(Segmenter(2, **how))
    x = torch.randn(1, 2, 64, 64, dtype=D)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError, match="smaller resolution"):
        nrm.explain(model, x, target=0, rules=rules)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_matrix_is_kept_read_only_per_arguments_and_shape():
    a = matrix(dict(size=(5,), mode="linear"), (3,), D, torch.device("cpu"))
    assert a is matrix(dict(size=(5,), mode="linear"), (3,), D, torch.device("cpu"))
    assert a is not matrix(dict(size=(5,), mode="linear", align_corners=True), (3,), D, torch.device("cpu"))
    assert not a.requires_grad
