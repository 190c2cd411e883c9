"""The layer vocabulary of nrm: every kind of operation the capture reads, declared once.

    import nrm.layers
    nrm.layers.REGISTRY.kinds          # name → kind
    @nrm.layers.register               # declare a kind for your own module (docs/layers.md)
    class MyKind(nrm.layers.Linear): ...

Roles (:mod:`nrm.layers.base`): :class:`Linear` (a map a rule splits), :class:`Sum`,
:class:`Winner`, :class:`Concat`, :class:`Elementwise` (relevance passes unchanged),
:class:`Reshape`, :class:`Alias`, :class:`BatchNorm`, :class:`Product` (a product of
activations). The built-in kinds are in
:mod:`~nrm.layers.linear`, :mod:`~nrm.layers.elementwise`, :mod:`~nrm.layers.activations`,
:mod:`~nrm.layers.shape`, :mod:`~nrm.layers.pooling`, :mod:`~nrm.layers.norm`,
:mod:`~nrm.layers.products`, :mod:`~nrm.layers.scale`, :mod:`~nrm.layers.attention` and
:mod:`~nrm.layers.constants` and :mod:`~nrm.layers.message` (graph networks' message passing);
fused operations the capture records through their definitions are in :mod:`~nrm.layers.fused`.
"""

from __future__ import annotations

from . import (
    activations,
    attention,
    constants,
    elementwise,
    linear,
    message,
    norm,
    pooling,
    products,
    resample,
    scale,
    shape,
)
from .base import (
    ROLES,
    Alias,
    BatchNorm,
    Concat,
    Elementwise,
    ExactMap,
    Kind,
    Linear,
    Product,
    Registry,
    Reshape,
    Sum,
    Winner,
    base_name,
    exact_from_map,
    to_fractions,
)

REGISTRY = Registry()
# a later kind is asked first: ReLU6 reads F.hardtanh(z, 0, 6) (nn.ReLU6) before Hardtanh does
"""Every kind the capture knows: the built-in ones and those registered by users."""

BUILTIN_KINDS = (
    linear.Dense, linear.ConstantMatMul, linear.Conv, linear.ConvTranspose, linear.AvgPool, linear.AdaptiveAvgPool,
    linear.Reduce, linear.Add,
    elementwise.ReLU, elementwise.LeakyReLU, elementwise.RReLU, elementwise.Dropout, elementwise.Same,
    activations.Hardtanh, activations.ReLU6, activations.PReLU, activations.Hardsigmoid, activations.Hardswish,
    activations.GELU, activations.SiLU, activations.Sigmoid, activations.Tanh, activations.Softplus,
    activations.Mish, activations.ELU, activations.SELU, activations.CELU, activations.Exp, activations.Log,
    activations.Abs, activations.Erf, activations.Sign, activations.Clamp, activations.Hardshrink,
    activations.Softshrink, activations.Softsign, activations.Tanhshrink, activations.Threshold, activations.LogSigmoid,
    shape.View, shape.Permute, shape.Roll, shape.Repeat, shape.Copies, shape.PixelShuffle, shape.Unfold, shape.Index,
    shape.Chunk, shape.Cat,
    pooling.MaxPool,
    norm.BatchNormAffine, norm.BatchNormFold, norm.LocalResponseNorm, norm.LayerNormCentring,
    norm.GroupNormCentring, norm.InstanceNormCentring, scale.ConstantScale, products.Multiply, attention.MatMul,
    attention.Softmax, attention.LogSoftmax, attention.LogSumExp,
    constants.AddConstant, constants.Select, constants.Negate, constants.Power, constants.Rsqrt,
    constants.Sqrt, constants.Reciprocal, constants.Expand,
    constants.CatConstant, constants.Pad, constants.Unpadded,
    message.IndexSelect, message.Scatter, message.SegmentSoftmax, resample.Interpolate,
)
# BatchNormAffine before BatchNormFold: the capture asks the fold first, and the graph turns a
# batch norm that cannot fold into its own diagonal layer (BatchNormFold.unfolded)
for _kind in BUILTIN_KINDS:
    REGISTRY.register(_kind)


def register(kind):
    """Declare a layer kind (a subclass of :class:`Linear`, :class:`Elementwise`, …) for
    every later capture; usable as a class decorator. A kind that lists ``modules`` makes
    calls of those module types one operation each (recorded whole)."""
    return REGISTRY.register(kind)


def unregister(kind) -> None:
    """Remove a kind registered with :func:`register` (by name, class or instance)."""
    REGISTRY.unregister(kind)


__all__ = [
    "REGISTRY", "BUILTIN_KINDS", "register", "unregister", "Kind", "Linear", "Sum", "Winner", "Concat",
    "Elementwise", "Product", "Reshape", "Alias", "BatchNorm", "ExactMap", "Registry", "ROLES", "base_name",
    "exact_from_map", "to_fractions",
]
