"""Resampling: ``F.interpolate`` as the linear map it is.

Every mode of ``F.interpolate`` (``nn.Upsample``, ``nn.UpsamplingBilinear2d``,
``nn.UpsamplingNearest2d``; the segmentation heads of torchvision's FCN, DeepLabV3 and
LR-ASPP) computes each output position as a fixed weighted sum of input positions of the same
sample and channel, the weights set by the sizes, the mode and its flags, never by the values.
So it is a linear layer with a per-channel matrix P (out positions × in positions)::

    z_{c,p} = Σ_i P_{p,i} a_{c,i}          (no bias; zeros of P are not connections)

which the layer's rule splits as it splits an average pool (keyed ``nn.Upsample``). Under
LRP-0, q(i | p) = P_{p,i} a_{c,i} / z_{c,p}: nearest modes copy one input per output (P
one-hot: every rule passes that output's relevance whole to it), (bi/tri)linear and area
weights are non-negative and sum to one along each output, bicubic's can be negative.

P is torch's own: the interpolation applied to the unit basis of one channel's positions
with the call's arguments, so each entry is exactly the weight torch uses (written out from
the definition for nearest and (bi)linear interpolation in ``tests/test_resample.py``), and it
is kept per arguments, shapes, dtype and device. The map applies it as one 1-D matrix per spatial
dimension (P = P₁ ⊗ P₂ ⊗ …, :class:`~nrm.linear.ResampleMap`), so a segmentation head's upsampling
to 512 × 512 costs a few small matrix products; the dense P is formed only for a rule that
modifies the weights (or a law that reads them), and one of more than :data:`MAX_ENTRIES` entries
is refused then, by name.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedOperationError
from ..linear import PoolMatrixMap, ResampleMap
from ..recorded import Value
from ..rules import identity
from .base import Linear, seeded

MAX_ENTRIES = 1 << 26
"""The largest P read (64 Mi entries: 512 MiB in float64)."""

_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 32
_LOCK = threading.Lock()


def _arguments(input, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None,
               antialias=False) -> dict:
    return dict(input=input, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                recompute_scale_factor=recompute_scale_factor, antialias=antialias)


def _frozen(v):
    return tuple(_frozen(x) for x in v) if isinstance(v, (list, tuple)) else v


def matrix(args: dict, spatial: tuple[int, ...], dtype, device) -> torch.Tensor:
    """P (out positions, in positions) of ``F.interpolate`` with ``args`` (all but the input) on
    one channel of spatial shape ``spatial``: torch's interpolation of the unit basis, read-only."""
    key = (tuple((k, _frozen(v)) for k, v in sorted(args.items())), spatial, dtype, str(device))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    n = math.prod(spatial)
    basis = torch.eye(n, dtype=dtype, device=device).reshape((n, 1) + spatial)
    with torch._C.DisableTorchFunction():
        out = F.interpolate(basis, **args)
    P = out.reshape(n, -1).T.contiguous()
    P.requires_grad_(False)
    with _LOCK:
        _CACHE[key] = P
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return P


def factors(args: dict, spatial: tuple[int, ...], dtype, device) -> tuple[torch.Tensor, ...]:
    """P_d (out_d, in_d) for each spatial dimension d of ``F.interpolate`` with ``args`` (not
    ``antialias``): torch's interpolation of the unit basis along d, every other dimension of
    size 1 kept at size 1 (size 1, or scale 1: the identity, exactly), so that P = P₁ ⊗ P₂ ⊗ …
    (``tests/test_resample.py`` compares the product with :func:`matrix` in every mode: equal,
    bitwise but for bicubic's and trilinear's rounding, within 2 ulp)."""
    out = []
    for d, n in enumerate(spatial):
        one = tuple(n if k == d else 1 for k in range(len(spatial)))
        sized = dict(args)
        if sized.get("size") is not None:
            size = sized["size"]
            size = list(size) if isinstance(size, (list, tuple)) else [size] * len(spatial)
            sized["size"] = [size[k] if k == d else 1 for k in range(len(spatial))]
        else:
            scale = sized["scale_factor"]
            scale = list(scale) if isinstance(scale, (list, tuple)) else [scale] * len(spatial)
            sized["scale_factor"] = [scale[k] if k == d else 1.0 for k in range(len(spatial))]
        out.append(matrix(sized, one, dtype, device))
    return tuple(out)


class Interpolate(Linear):
    """``F.interpolate(x, size | scale_factor, mode, align_corners, recompute_scale_factor,
    antialias)`` on (batch, channels, *1–3 spatial), every mode: a linear map with one matrix
    P of torch's weights for every channel (:mod:`nrm.layers.resample`).

    Definition (c a channel, p an output position, i an input position)::

        z_{c,p} = Σ_i P_{p,i} a_{c,i},   P_{p,i} = F.interpolate(e_i)_p

    Refused, by name: an input without channels and 1–3 spatial dimensions, a size or scale
    factor computed from the input; the dense P of more than 2²⁶ entries where a rule modifies
    it (the map itself applies P one dimension at a time)."""

    functions = (F.interpolate,)
    rule_types = (nn.Upsample,)

    def examples(self):
        return [(Upsampled(2, 2, 2, "bilinear"), (2, 2, 3)), (Upsampled(1, 2, (3, 2), "nearest"), (1, 2, 2)),
                (Upsampled(2, 1, 1.5, "linear", align_corners=True), (2, 3))]

    def arguments(self, call) -> dict:
        """The call's arguments other than the input."""
        a = _arguments(*call.args, **call.kwargs)
        del a["input"]
        return a

    def accepts(self, call):
        try:
            a = _arguments(*call.args, **call.kwargs)
        except TypeError as e:
            return f"its arguments are not those of F.interpolate ({e})"
        if any(isinstance(v, Value) or isinstance(v, torch.Tensor) for k, v in a.items() if k != "input") or \
                any(isinstance(x, (Value, torch.Tensor)) for k in ("size", "scale_factor")
                    if isinstance(a[k], (list, tuple)) for x in a[k]):
            return "takes a size or scale factor that is a tensor; nrm reads numbers (sizes fixed for the call)"
        dims = len(call.in_shapes[0])
        if dims not in (3, 4, 5):
            return (f"interpolates an input of shape {tuple(call.in_shapes[0])}; nrm reads (batch, channels, "
                    "*1–3 spatial)")
        n_in, n_out = math.prod(call.in_shapes[0][2:]), math.prod(call.output.shape[2:])
        if a["antialias"] and n_in * n_out > MAX_ENTRIES:
            return (f"would need a matrix of {n_in} × {n_out} positions (more than 2**26 entries; antialias=True is "
                    "read as one matrix); explain at a smaller resolution")
        return None

    def keeps_gates(self, call) -> bool:
        """Whether every output is a convex combination of inputs (weights ≥ 0 summing to 1:
        every mode but bicubic), so that a resampled gate (GhostNetV2's
        ``x · F.interpolate(sigmoid(g), mode="nearest")``) is a gate of the product it enters."""
        return self.arguments(call)["mode"] != "bicubic"

    def map(self, call, a, rule=None):
        spatial, out_spatial = tuple(a.shape[2:]), tuple(call.output.shape[2:])
        args = self.arguments(call)
        if args["antialias"]:  # its 1-D weights depend on the other dimensions' sizes: one dense matrix
            return PoolMatrixMap(matrix(args, spatial, a.dtype, a.device), out_spatial)
        separate = factors(args, spatial, a.dtype, a.device)

        def dense() -> torch.Tensor:
            n_in, n_out = math.prod(spatial), math.prod(out_spatial)
            if n_in * n_out > MAX_ENTRIES:
                raise UnsupportedOperationError(
                    f"F.interpolate from {spatial} to {out_spatial}: its rule modifies the weights (or a law reads "
                    f"them), which needs the dense matrix of {n_in} × {n_out} positions (more than 2**26 entries); "
                    "give nn.Upsample a rule that keeps the weights (LRP-0, ε) or explain at a smaller resolution")
            P = separate[0]
            for f in separate[1:]:
                P = torch.kron(P, f)
            return P

        lmap = ResampleMap(separate, out_spatial, dense)
        if rule is not None and any(part.weight is not identity for share in rule.shares() for part in share.parts):
            lmap.weight  # noqa: B018 — the rule modifies the weights: formed (or refused) now, at explain
        return lmap


class Upsampled(nn.Module):
    """A 1×1 convolution, relu, ``F.interpolate``, a 1×1 convolution, on ``channels`` channels
    and ``dims`` spatial dimensions (an example of :class:`Interpolate`); ``scale`` a tuple is
    a size, a number a scale factor."""

    def __init__(self, channels: int, dims: int, scale, mode: str, align_corners: bool | None = None):
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.first, self.last = conv(channels, 2, 1), conv(2, 2, 1)
        self.scale, self.mode, self.align_corners = scale, mode, align_corners
        seeded(self, 31)

    def forward(self, x):
        h = torch.relu(self.first(x))
        if isinstance(self.scale, tuple):
            h = F.interpolate(h, size=self.scale, mode=self.mode, align_corners=self.align_corners)
        else:
            h = F.interpolate(h, scale_factor=self.scale, mode=self.mode, align_corners=self.align_corners)
        return self.last(h)
