"""Marker types that name operations without a module of their own, as keys of rule mappings."""

from __future__ import annotations

from torch import nn


class Sum(nn.Module):
    """The addition of branches, z = Σ_i a^(i) (NRM-SPEC §1): a linear neuron with weights 1
    over the summands, to which any rule applies (LRP-0 splits in proportion to the
    summands). Key of a rule mapping: ``{nrm.Sum: rule}``. Never called; it only names
    the operation of a captured ``+``."""

    def __init__(self, n: int = 2):
        super().__init__()
        self.n = n

    def extra_repr(self) -> str:
        return f"n={self.n}"


class Concat(nn.Module):
    """``torch.cat`` of branches along a per-sample dimension: the branches share a layer,
    and relevance goes back to each part unchanged (q = 1). Never called."""

    def __init__(self, dim: int = 1, sizes: tuple[int, ...] = ()):
        super().__init__()
        self.dim, self.sizes = dim, sizes


class Scale(nn.Module):
    """A product by a constant, z = c ⊙ a (a layer scale, ``x * c``, ``x / c``): a diagonal
    linear map, to which any rule applies. Key of a rule mapping: ``{nrm.markers.Scale: rule}``.
    Never called."""


class MatrixProduct(nn.Module):
    """A matrix product of two activations, O = A · V (attention's Q · Kᵀ and A · V), read by
    :class:`nrm.layers.attention.MatMul` as a linear map of its two factors split by θ. Key of a
    rule mapping: ``{nrm.markers.MatrixProduct: rule}``. Never called."""



class SoftMaximum(nn.Module):
    """``torch.logsumexp(x, dim)``, a smooth maximum (LSE pooling), read by
    :class:`nrm.layers.attention.LogSumExp` as its Taylor linearization at the forward value:
    weights softmax(x) over each reduced group, the entropy to ⊥. Key of a rule mapping:
    ``{nrm.markers.SoftMaximum: rule}``; LRP-0 in every preset. Never called."""


class Shift(nn.Module):
    """A constant added beside an activation: ``x + c`` (a position embedding, a relative
    position bias, an additive attention mask, a norm's ε), a constant selection
    (``torch.where(mask, x, c)``) or a constant placed beside ``x`` by ``torch.cat`` (a class
    token). Read by :mod:`nrm.layers.constants` as a diagonal (or placing) linear map whose bias
    is the constant, so the constant's share goes to the absorber ⊥ (NRM-SPEC §1, §8). Key of a
    rule mapping: ``{nrm.markers.Shift: rule}`` (also reachable as ``nrm.layers.constants.Shift``);
    the presets give it the rule of sums of branches (LRP-0). Never called."""


class Aggregate(nn.Module):
    """A neighbourhood aggregation of a graph network, z_{i,f} = Σ_e [dst_e = i] w_e a_{src_e, f}
    (a scatter-sum or scatter-mean of messages, PyG's ``propagate``): a linear map with
    weights 1 or 1/deg, to which any rule applies. Key of a rule mapping:
    ``{nrm.markers.Aggregate: rule}``. Never called."""
