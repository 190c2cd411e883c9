"""Assigning rules to layers, and the field's usual combinations (presets).

``rules=`` of :func:`nrm.explain` accepts

* one :class:`~nrm.rules.Rule` — used on every linear layer;
* a mapping whose keys are layer names (``"features.0"``), module types
  (``torch.nn.Conv2d``) or :data:`FIRST` (the layer that reads the input);
* a :class:`RuleMap` (what presets return).

Resolution order for a layer: its name, then :data:`FIRST`, then its module type (most
specific class first), then the default. A layer left without a rule is an error that
names it.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .errors import RuleAssignmentError, RuleParameterError
from .lrn import LRNTaylor
from .markers import Aggregate, MatrixProduct, Scale, Shift, SoftMaximum, Sum
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Part, Rule, Share, ZBox, Zero, ZPlus


class _First:
    def __repr__(self) -> str:
        return "nrm.FIRST"


FIRST = _First()
"""Key of a rule mapping that selects the first linear layer (the one reading the input)."""

DENSE = (nn.Linear,)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
        nn.Upsample, Sum, Shift, Aggregate)
"""Average pooling, sums of branches, additive constants (a position embedding, a mask, a class
token: :mod:`nrm.layers.constants`) and graph aggregations (:mod:`nrm.layers.message`): LRP-0 by
default."""
NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
        nn.InstanceNorm2d, nn.InstanceNorm3d, Scale, nn.Softmax, nn.LogSoftmax, SoftMaximum)
"""Normalizations that are layers of their own (a batch norm that cannot fold, layer, group and
instance norm with σ held), products by a constant (a layer scale) and the softmax,
log-softmax and logsumexp (their Taylor linearizations, AttnLRP Prop. 3.1): LRP-0 in every preset."""


class RuleMap:
    """Rules by layer name, by module type, for the first layer, and a default."""

    def __init__(self, default: Rule | None = None, *, by_name: Mapping[str, Rule] | None = None,
                 by_type: Mapping[type, Rule] | None = None, first: Rule | None = None, name: str | None = None):
        self.default = default
        self.by_name = dict(by_name or {})
        self.by_type = dict(by_type or {})
        self.first = first
        self.name = name
        for r in [default, first, *self.by_name.values(), *self.by_type.values()]:
            if r is not None and not isinstance(r, Rule):
                raise RuleAssignmentError(f"rule mappings take nrm.rules.Rule objects, got {r!r}")

    @classmethod
    def of(cls, rules) -> RuleMap:
        """Normalize what ``rules=`` accepts."""
        if isinstance(rules, RuleMap):
            return rules
        if rules is None:
            return cls(Zero(), name="Zero everywhere")
        if isinstance(rules, Rule):
            return cls(rules)
        if isinstance(rules, Mapping):
            by_name, by_type, first = {}, {}, None
            for key, rule in rules.items():
                if key is FIRST:
                    first = rule
                elif isinstance(key, str):
                    by_name[key] = rule
                elif isinstance(key, type) and issubclass(key, nn.Module):
                    by_type[key] = rule
                else:
                    raise RuleAssignmentError(
                        f"rule mapping key {key!r} is neither a layer name, a module type nor nrm.FIRST"
                    )
            return cls(by_name=by_name, by_type=by_type, first=first)
        raise RuleAssignmentError(
            f"rules= takes a Rule, a mapping {{layer name | module type | nrm.FIRST: Rule}} or a RuleMap, "
            f"got {type(rules).__name__}"
        )

    def rule_for(self, name: str, types: nn.Module | tuple[type, ...], is_first: bool) -> Rule | None:
        """The rule of a layer: by its name, then FIRST, then by type (``types`` are the
        layer's rule types, most specific first, or a module whose classes they are), then
        the default."""
        if name in self.by_name:
            return self.by_name[name]
        if is_first and self.first is not None:
            return self.first
        for klass in (type(types).__mro__ if isinstance(types, nn.Module) else types):
            if klass in self.by_type:
                return self.by_type[klass]
        return self.default

    def __repr__(self) -> str:
        if self.name:
            return f"RuleMap({self.name})"
        parts = []
        if self.default is not None:
            parts.append(repr(self.default))
        if self.first is not None:
            parts.append(f"first={self.first!r}")
        parts += [f"{k.__name__}: {v!r}" for k, v in self.by_type.items()]
        parts += [f"{k!r}: {v!r}" for k, v in self.by_name.items()]
        return f"RuleMap({', '.join(parts)})"


def assign(network, rules) -> None:
    """Give every linear block of a :class:`~nrm.graph.ProperFFNN` its rule."""
    rmap = RuleMap.of(rules)
    blocks = network.linear_blocks()
    names = set(network.aliases)
    unknown = sorted(set(rmap.by_name) - names)
    if unknown:
        raise RuleAssignmentError(
            f"the rule mapping names layers the model does not have: {unknown}; linear layers are "
            f"{[b.name for b in blocks]}"
        )
    alias_of = {name: network.blocks[l].name for name, (l, _) in network.aliases.items() if l > 0}
    by_name = {alias_of.get(k, k): v for k, v in rmap.by_name.items()}
    missing = []
    first = _reads_input(network)
    for block in blocks:
        step = block.producer
        types = step.rule_types
        is_first = first[block.index] and step.role != "sum"
        rule = by_name.get(block.name) or rmap.rule_for(block.name, types, is_first)
        what = type(step.module).__name__ if step.module is not None else step.layer_kind.name
        if rule is None:
            missing.append(f"'{block.name}' ({what})")
        elif getattr(rule, "lrn_only", False) and nn.LocalResponseNorm not in types:
            raise RuleAssignmentError(
                f"{rule!r} is a rule for LocalResponseNorm layers, but it was given to '{block.name}' "
                f"({what}); key it by nn.LocalResponseNorm or by the LRN layer's name"
            )
        if rule is not None:
            _usable(rule, block.name)
            if isinstance(rule, ZBox):
                _box_fits(rule, block, network)
        block.rule = rule
    if missing:
        raise RuleAssignmentError(
            f"no rule for {', '.join(missing)}; add them to the mapping by name or type, or give a default"
        )


def _usable(rule: Rule, layer: str) -> None:
    """A rule's ``shares()`` must give a non-empty tuple of :class:`~nrm.rules.Share` with parts."""
    try:
        shares = rule.shares()
    except Exception as error:  # a user's rule: anything it raises is reported with the layer
        raise RuleParameterError(
            f"{type(rule).__name__}.shares() raised {type(error).__name__}: {error} (rule of layer '{layer}'); a rule "
            "defines shares() returning a tuple of nrm.rules.Share (docs/rules.md)") from error
    if (not isinstance(shares, (tuple, list)) or not shares
            or not all(isinstance(s, Share) and s.parts and all(isinstance(p, Part) for p in s.parts) for s in shares)):
        raise RuleParameterError(
            f"{type(rule).__name__}.shares() must return a non-empty tuple of nrm.rules.Share, each with a tuple of "
            f"nrm.rules.Part; got {shares!r:.80} (rule of layer '{layer}'; docs/rules.md)")


def _box_fits(rule: ZBox, block, network) -> None:
    """z^B's bounds must broadcast to one sample of the input of the layer they bound."""
    import torch

    shape = tuple(network.value(network.blocks[block.inputs[0]].tip).shape[1:]) if block.inputs else ()
    for name, bound in (("low", rule.low), ("high", rule.high)):
        bshape = tuple(getattr(bound, "shape", ()))
        try:
            fits = torch.broadcast_shapes(bshape, shape) == shape
        except RuntimeError:
            fits = False
        if not fits:
            raise RuleParameterError(
                f"{rule!r} on layer '{block.name}': its {name} bound has shape {bshape}, which does not broadcast to "
                f"one sample of the layer's input, {shape}; give a number or a tensor of that shape")


def _reads_input(network) -> list[bool]:
    """Per layer: no linear layer between the input and it, on any path (FIRST applies). One
    pass in the blocks' order (a block's inputs come before it), not a walk over each linear
    block's ancestors (quadratic in the depth)."""
    clear: list[bool] = []
    for block in network.blocks:
        clear.append(all(clear[u] and network.blocks[u].kind != "linear" for u in block.inputs))
    return clear


def _preset(name, dense, conv, first=None, pool=None) -> RuleMap:

    # a product of activations (attention's Q·Kᵀ, A·V) takes the dense rule (AttnLRP: ε on the uniform split)
    by_type = ({t: dense for t in DENSE + (MatrixProduct,)} | {t: conv for t in CONV}
               | {t: pool or Zero() for t in POOL} | {t: Zero() for t in NORM} | {nn.LocalResponseNorm: LRNTaylor()})
    return RuleMap(by_type=by_type, first=first, name=name)


def EpsilonPlus(epsilon: float = 1e-6) -> RuleMap:
    """ε on dense layers, z⁺ on convolutions, LRP-0 on average pooling and sums of branches."""
    return _preset(f"EpsilonPlus(epsilon={epsilon})", Epsilon(epsilon), ZPlus())


def EpsilonPlusFlat(epsilon: float = 1e-6) -> RuleMap:
    """ε on dense layers, z⁺ on convolutions, flat on the first layer."""
    return _preset(f"EpsilonPlusFlat(epsilon={epsilon})", Epsilon(epsilon), ZPlus(), first=Flat())


def EpsilonGammaFlat(epsilon: float = 1e-6, gamma: float = 0.25) -> RuleMap:
    """ε on dense layers, γ on convolutions, flat on the first layer (the usual preset)."""
    return _preset(f"EpsilonGammaFlat(epsilon={epsilon}, gamma={gamma})", Epsilon(epsilon), Gamma(gamma), first=Flat())


def EpsilonGammaBox(low, high, epsilon: float = 1e-6, gamma: float = 0.25) -> RuleMap:
    """ε on dense layers, γ on convolutions, z^B with the box [low, high] on the first layer."""
    return _preset(f"EpsilonGammaBox(low, high, epsilon={epsilon}, gamma={gamma})", Epsilon(epsilon), Gamma(gamma),
                   first=ZBox(low, high))


def EpsilonAlpha2Beta1(epsilon: float = 1e-6) -> RuleMap:
    """ε on dense layers, αβ with α = 2, β = 1 on convolutions."""
    return _preset(f"EpsilonAlpha2Beta1(epsilon={epsilon})", Epsilon(epsilon), AlphaBeta(2, 1))


def EpsilonAlpha2Beta1Flat(epsilon: float = 1e-6) -> RuleMap:
    """ε on dense layers, αβ (2, 1) on convolutions, flat on the first layer."""
    return _preset(f"EpsilonAlpha2Beta1Flat(epsilon={epsilon})", Epsilon(epsilon), AlphaBeta(2, 1), first=Flat())


PRESETS = {
    "EpsilonPlus": EpsilonPlus,
    "EpsilonPlusFlat": EpsilonPlusFlat,
    "EpsilonGammaFlat": EpsilonGammaFlat,
    "EpsilonGammaBox": EpsilonGammaBox,
    "EpsilonAlpha2Beta1": EpsilonAlpha2Beta1,
    "EpsilonAlpha2Beta1Flat": EpsilonAlpha2Beta1Flat,
}
