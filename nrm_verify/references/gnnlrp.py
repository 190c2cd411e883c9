"""Relevance of walks by explicit nested masking — GNN-LRP, the reference side of L15.

Schnake et al., *Higher-order explanations of graph neural networks via relevant walks*,
IEEE TPAMI 44(11), 2022 (arXiv:2006.03589) define the relevance of a walk
(j_0, j_1, …, j_L) by *higher-order* LRP: start at the output with R^(L) = f_c δ_c, and
at every layer keep only the walk's neuron before propagating further down with the
rule's LRP step,

    R^(l−1) = M_{l−1} ⊙ (Q_l R^(l)),     R_walk = Σ R^(l_min),

where M_l masks the layer to the walk's neuron (or to a set of neurons: the walks
through chosen neurons at chosen layers; a layer left free keeps every neuron). NRM-SPEC
L15 says that this equals f_c · μ(walks) under the same rules. The absorber ⊥_l of the
measure is the relevance LRP loses on the way (bias, stabilizer):
R_⊥^(l−1) = R_⊥^(l) + Σ_k q(⊥ | k) R_k^(l), masked like a neuron when an event names it.

This module is written **independently of the nrm engine**: it reads what the model
computed (nrm's capture, :func:`nrm.capture.capture`: the recorded operations and their
values, the activations being the model's own), writes every linear layer as a dense
matrix W (n_out, n_in) and bias b obtained by applying the *recorded operation itself*
(the model's own function, with a batch norm after it) to basis vectors — never the
layer kind's map — reads its structural fan-in S (the same operation with all-one
parameters), and writes the kernel of the
built-in rules straight from the NRM-SPEC §2 table — q(j | k) as a dense matrix
(n_in, n_out) per sample, with the conventions ``stabilizer_sign``, ``leak``,
``modify_bias`` (γ), ``bias`` (z⁺, w²) and the zero-denominator and αβ fallbacks.
Max-pooling sends each output's relevance to its argmax (``max_pool2d``'s index).

A rule that is not one of the built-in classes (a user's rule, or a subclass of one) gets
the kernel derived from the rule object on the same dense matrices — its ``shares()`` and
conventions, the hooks it overrides called — by the derivation the explicit LRP reference
uses (:func:`nrm_verify.references.derived.derived_kernel`), so L15 can check it too; a
rule that reads the incoming relevance has no fixed kernel and is refused
(:class:`UnsupportedRuleError`).
Rules are assigned to layers as ``nrm.explain`` assigns them (:class:`nrm.presets.RuleMap`).

Cost: dense matrices per layer and sample — meant for the small networks of the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nrm.events import OMEGA, At, Event
from nrm.graph import ProperFFNN, rule_types
from nrm.presets import RuleMap
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, WSquare, ZBox, Zero, ZPlus
from nrm_verify.references.call_matrices import apply_recorded, structural_parameters, with_constants
from nrm_verify.references.derived import UnsupportedRuleError, derived_kernel
from nrm_verify.references.nested_masking import atom_neurons, nested_masking


class UnsupportedModelError(ValueError):
    """The chain reference reads sequential models (every layer reads the one before it);
    :func:`walk_relevance` reads an Event over a branched model by nested masking on the traced
    graph instead."""


# -- the model, as the model computes it -------------------------------------------------------------
@dataclass
class Layer:
    """Layer ``index`` of the proper FFNN: produced by ``steps[0]`` (an affine map, a
    max-pool or an operation through which relevance passes; none for the input),
    followed by batch norms, activations and reshapes (recorded operations of the model,
    :class:`nrm.graph.Step`)."""

    index: int
    name: str
    steps: list = field(default_factory=list)
    kind: str = "input"  # "input", "affine", "maxpool" (also an index map: fixed winners), "pass"
    rule: Rule | None = None


@dataclass
class Model:
    """What ``model(x)`` computed (nrm's capture, :class:`nrm.graph.ProperFFNN`) read as
    layers; the batch norms after an affine map are folded into it here."""

    layers: list[Layer]
    network: Any  # nrm.graph.ProperFFNN


def read_layers(model: nn.Module, x: torch.Tensor) -> Model:
    """The layers of ``model`` at the input ``x``: a new one at every affine map or
    max-pool (and at an activation whose input fans out)."""
    network = ProperFFNN(model, x)
    if not network.sequential:
        raise UnsupportedModelError("the GNN-LRP reference reads sequential models (every layer reads the one "
                                    "before it)")
    kinds = {"linear": "affine", "maxpool": "maxpool"}
    layers = [Layer(0, "input", list(network.blocks[0].trailing))]
    for block in network.blocks[1:]:
        if block.producer.role not in ("linear", "winner", "elementwise", "reshape", "alias"):
            raise UnsupportedModelError(f"{block.producer.call.describe()}: the GNN-LRP reference reads affine "
                                        "maps, max-pooling and operations through which relevance passes")
        kind = "maxpool" if block.route() is not None else kinds.get(block.kind, "pass")  # an index map: fixed winners
        layers.append(Layer(block.index, block.name, [block.producer] + list(block.trailing), kind))
    return Model(layers, network)


def _assign(model: Model, rules) -> None:
    """The rule of every affine layer, resolved as :func:`nrm.explain` resolves ``rules=``:
    by layer name (or the name of an operation that only acts on the layer), nrm.FIRST,
    type, default."""
    rmap = RuleMap.of(rules)
    first = True
    for layer in model.layers[1:]:
        if layer.kind != "affine":
            continue
        named = [rmap.by_name[step.name] for step in layer.steps if step.name in rmap.by_name]
        layer.rule = named[0] if named else rmap.rule_for(layer.name, rule_types(layer.steps[0].call), first)
        first = False
        if layer.rule is None:
            raise ValueError(f"no rule for layer {layer.name!r}; give a default rule")


@dataclass
class Forward:
    """One sample's forward pass through the layers: flat activations per layer, the
    dense affine maps, the shapes each name sees."""

    acts: list[torch.Tensor]  # a_l, flat (n_l,)
    shapes: list[tuple[int, ...]]  # canonical shape of layer l (the producer's output)
    maps: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # l -> (W, b, S)
    winners: dict[int, torch.Tensor]  # l -> flat input index of each max-pool output
    names: dict[str, tuple[int, tuple[int, ...]]]  # layer name -> (layer, shape it sees)
    terms: dict[int, tuple[torch.Tensor, torch.Tensor]]  # l -> (Σ_j |a_j w_jk| + |b_k|, z_k)
    in_shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)  # l -> one sample's input shape


def _run(calls, t: torch.Tensor) -> torch.Tensor:
    """The recorded operations, in order, on another input (the model's own functions)."""
    for call in calls:
        t = apply_recorded(call, lambda v, t=t: t)
    return t


def _dense(calls, in_shape: tuple[int, ...], dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) with f(a) = W a + b for the affine chain of recorded operations ``calls`` (a
    linear map and the batch norms folded into it) on one sample of ``in_shape``: f applied
    to the unit basis (NRM-SPEC §1: W' = s W, b' = s (b − μ) + β for a folded batch norm)."""
    n = math.prod(in_shape)
    with torch.no_grad():
        zero = torch.zeros((1,) + in_shape, dtype=dtype, device=device)
        b = _run(calls, zero).reshape(-1)
        basis = torch.eye(n, dtype=dtype, device=device).reshape((n,) + in_shape)
        W = (_run(calls, basis).reshape(n, -1) - b).T.contiguous()
    return W, b


def _structure(call, in_shape, dtype, device) -> torch.Tensor:
    """S[k, j]: whether input j is in the structural fan-in of output k (a convolution's
    receptive field without padding positions, a pooling window, all of a dense layer):
    the operation with its parameters set to one (zero weights are connections: the flat
    rule counts them), or its non-zero entries when it has none."""
    W, _ = _dense([call], in_shape, dtype, device)
    params = structural_parameters(call)
    if not params:
        return W != 0
    ones = with_constants(call, {id(t): torch.ones_like(t) for t in params})
    flat, _ = _dense([ones], in_shape, dtype, device)
    return flat != 0


def forward(model: Model, i: int) -> Forward:
    """Sample ``i`` of the captured batch, layer by layer: the values are the model's own
    (its rounding decides which ReLU is active, as in nrm); the affine maps are dense
    matrices of the recorded operations."""
    net = model.network
    x = net.captured.input[i:i + 1]
    dtype, device = x.dtype, x.device
    names = {"input": (0, tuple(x.shape[1:]))}
    a = _value(net, model.layers[0].steps, x, i)
    for step in model.layers[0].steps:
        names[step.name] = (0, tuple(net.value(step.value).shape[1:]))
    acts, shapes, maps, winners, terms, in_shapes = [a.reshape(-1)], [tuple(x.shape[1:])], {}, {}, {}, {}
    with torch.no_grad():
        for layer in model.layers[1:]:
            l = layer.index
            in_shape = tuple(a.shape[1:])
            producer = layer.steps[0]
            out = net.value(producer.value)[i:i + 1]
            if layer.kind == "affine":
                folded = [producer] + [s for s in layer.steps[1:] if s.role == "batchnorm"]
                W, b = _dense([s.call for s in folded], in_shape, dtype, device)
                S = _structure(producer.call, in_shape, dtype, device)
                maps[l] = (W, b, S)
                in_shapes[l] = in_shape
                z = net.value(folded[-1].value)[i:i + 1]
                terms[l] = (W.abs() @ a.reshape(-1).abs() + b.abs(), z.reshape(-1))
                if not bool(((W @ a.reshape(-1) + b - z.reshape(-1)).abs() <= 1e-9 * (1 + terms[l][0])).all()):
                    raise UnsupportedModelError(  # a softmax, a layer norm: linear only at the forward value
                        f"{producer.call.describe()}: not an affine operation (nrm reads it as a map built at the "
                        "forward value); the GNN-LRP reference reads affine maps")
                out_shape = tuple(out.shape[1:])
            elif layer.kind == "maxpool" and producer.role == "reshape":  # an index map: each output's one input
                winners[l] = torch.as_tensor(producer.layer_kind.index(producer.call), device=device)
                out_shape = tuple(out.shape[1:])
            elif layer.kind == "maxpool":
                k, st, p, d, ceil = producer.layer_kind.params(producer.call)
                pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[a.dim() - 3]
                z, idx = pool(a, k, st, p, d, ceil, return_indices=True)
                C, spatial = in_shape[0], in_shape[1:]
                offsets = (torch.arange(C, device=device) * math.prod(spatial)).view((C,) + (1,) * len(spatial))
                winners[l] = (idx[0] + offsets).reshape(-1)
                out_shape = tuple(z.shape[1:])
            else:  # relevance passes: the same neurons
                out_shape = tuple(out.shape[1:])
            shapes.append(out_shape)
            names[layer.name] = (l, out_shape)
            for step in layer.steps[1:]:
                names[step.name] = (l, tuple(net.value(step.value).shape[1:]))
            a = _value(net, layer.steps, out, i)
            acts.append(a.reshape(-1))
    names["output"] = (len(model.layers) - 1, shapes[-1])
    for alias, (l, value) in net.aliases.items():
        names.setdefault(alias, (l, tuple(net.value(value).shape[1:])))
    return Forward(acts, shapes, maps, winners, names, terms, in_shapes)


def _value(net, steps, default: torch.Tensor, i: int) -> torch.Tensor:
    """The layer's value as its readers see it: the recorded output of its last step."""
    return net.value(steps[-1].value)[i:i + 1] if steps else default


# -- kernels: NRM-SPEC §2 ------------------------------------------------------------------------------
def _sign(d: torch.Tensor) -> torch.Tensor:
    """s(d) with s(0) = +1."""
    return torch.where(d < 0, -torch.ones_like(d), torch.ones_like(d))


def _stabilize(rule: Rule, d: torch.Tensor) -> torch.Tensor:
    eps = rule.stabilizer
    if eps == 0:
        return d
    return d + eps * _sign(d) if rule.stabilizer_sign == "signed" else d + eps


def _over(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """c[k, j] / d[k], 0 where d[k] = 0 (the column goes to ⊥)."""
    d = d.unsqueeze(1)
    return torch.where(d == 0, torch.zeros_like(c), c / torch.where(d == 0, torch.ones_like(d), d))


def _box(value, a: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=a.dtype, device=a.device)
    return t.expand(a.shape) if t.numel() == 1 else t.reshape(-1)


def table_kernel(rule: Rule, a: torch.Tensor, W: torch.Tensor, b: torch.Tensor, S: torch.Tensor):
    """q[k, j] = q(j | k) for real j (n_out, n_in), written from the NRM-SPEC §2 table
    for the built-in rules; None for any other rule. ``a`` (n_in,) are the layer's input
    activations, W (n_out, n_in) and b (n_out,) its affine map, S its structural fan-in."""
    kind = type(rule)
    aw = a.unsqueeze(0) * W  # a_j w_jk
    pos, neg = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    if kind in (Zero, Epsilon):  # a_j w_jk / (z_k [+ ε s(z_k)])
        return _over(aw, _stabilize(rule, aw.sum(1) + b))
    if kind is Gamma:  # a_j ρ(w_jk) / (Σ_j a_j ρ(w_jk) + ρ(b_k)),  ρ(w) = w + γ w⁺
        rho = lambda t: t + rule.gamma * pos(t)  # noqa: E731
        c = a.unsqueeze(0) * rho(W)
        return _over(c, _stabilize(rule, c.sum(1) + (rho(b) if rule.modify_bias else b)))
    if kind is ZPlus:  # a_j w⁺ / (Σ_j a_j w⁺ + b⁺)
        c = a.unsqueeze(0) * pos(W)
        return _over(c, _stabilize(rule, c.sum(1) + (pos(b) if rule.bias else 0)))
    if kind is AlphaBeta:  # α (a w)⁺ / P − β (a w)⁻ / N, fallbacks (1, 0) for N = 0, (0, −1) for P = 0
        cp, cn = pos(aw), neg(aw)
        P = _stabilize(rule, cp.sum(1) + pos(b))
        N = _stabilize(rule, cn.sum(1) + neg(b))
        one = torch.ones_like(P)
        alpha = torch.where(N == 0, one, torch.where(P == 0, 0 * one, rule.alpha * one))
        beta = torch.where(N == 0, 0 * one, torch.where(P == 0, -one, rule.beta * one))
        return alpha.unsqueeze(1) * _over(cp, P) - beta.unsqueeze(1) * _over(cn, N)
    if kind is WSquare:  # w² / (Σ_j w² [+ b²])
        c = W * W * S
        return _over(c, _stabilize(rule, c.sum(1) + (b * b if rule.bias else 0)))
    if kind is Flat:  # 1 / |in(k)|
        c = S.to(a.dtype)
        return _over(c, _stabilize(rule, c.sum(1)))
    if kind is ZBox:  # (a_j w − l_j w⁺ − h_j w⁻) / Σ_j (…); the bias cancels
        low, high = _box(rule.low, a), _box(rule.high, a)
        c = aw - low.unsqueeze(0) * pos(W) - high.unsqueeze(0) * neg(W)
        return _over(c, _stabilize(rule, c.sum(1)))
    return None


def kernel(rule: Rule, a, W, b, S, in_shape: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q (n_in, n_out) with Q[j, k] = q(j | k), q(⊥ | k) (n_out,)) with the rule's leak
    convention: "absorb" gives q(⊥ | k) = 1 − Σ_j q(j | k); "renormalize" divides each
    column by Σ_j q(j | k) (a column with no real mass goes to ⊥). A rule without a table
    formula: derived from the rule object (its own column, if it has one, keeps its own
    q(⊥ | k): a leaking rule keeps its leak); ``in_shape`` is the shape in which its input
    functions see ``a`` (default: flat)."""
    q = table_kernel(rule, a, W, b, S)
    if q is None:
        Q, qbot = derived_kernel(rule, a.reshape(1, -1), W, b, S, in_shape or (a.numel(),))
        return Q[0], qbot[0]
    if rule.leak == "renormalize":
        real = q.sum(1)
        empty = real == 0
        q = torch.where(empty.unsqueeze(1), torch.zeros_like(q), q / torch.where(empty, 1.0, real).unsqueeze(1))
        return q.T, empty.to(q.dtype)
    return q.T, 1 - q.sum(1)


# -- nested masking -----------------------------------------------------------------------------------
def _masks(fw: Forward, walks, depth: int) -> list[dict[int, tuple[torch.Tensor, bool]]]:
    """Walk specifications → [(coefficient, {layer: (mask over real neurons, ⊥ kept)})]."""
    sizes = [math.prod(s) for s in fw.shapes]
    canonical = [None] * (depth + 1)
    for name, (l, shape) in fw.names.items():
        if canonical[l] is None and shape == fw.shapes[l]:
            canonical[l] = name

    def resolve(layer) -> int:
        if isinstance(layer, int):
            return layer
        if layer not in fw.names:
            raise KeyError(f"no layer named {layer!r}; names are {sorted(fw.names)}")
        return fw.names[layer][0]

    def neurons(l, chosen) -> tuple[torch.Tensor, bool]:
        mask = torch.zeros(sizes[l], dtype=torch.bool)
        bot = False
        items = [chosen] if chosen is None or isinstance(chosen, int) else list(chosen)
        for n in items:
            if n is None:
                bot = True
            else:
                mask[int(n)] = True
        return mask, bot

    if isinstance(walks, Event):
        return [(coeff, _cylinder_masks(fw, cyl)) for cyl, coeff in walks.cylinders()]
    if isinstance(walks, Mapping):
        out: dict[int, tuple[torch.Tensor, bool]] = {}
        for layer, chosen in walks.items():
            l = resolve(layer)
            mask, bot = neurons(l, chosen)
            if l in out:
                mask, bot = mask & out[l][0], bot and out[l][1]
            out[l] = (mask, bot)
        return [(1, out)]
    walk = list(walks)
    if len(walk) != depth + 1:
        raise ValueError(f"a walk names one neuron per layer ({depth + 1}: {canonical}), got {len(walk)}")
    return [(1, {l: neurons(l, n) for l, n in enumerate(walk)})]


def _cylinder_masks(fw: Forward, cylinder) -> dict[int, tuple[torch.Tensor, bool]]:
    out: dict[int, tuple[torch.Tensor, bool]] = {}
    for atom in cylinder:
        l, shape = fw.names[atom.layer]
        mask = atom_neurons(atom, shape)
        bot = atom.absorber
        if atom.negated:  # {X_l ∉ S}: the other neurons, ⊥ unless S holds it
            mask, bot = ~mask, not bot
        if l in out:
            mask, bot = mask & out[l][0], bot and out[l][1]
        out[l] = (mask, bot)
    return out


def _targets(target, batch: int) -> list[int]:
    t = torch.as_tensor(target).reshape(-1)
    if t.numel() == 1:
        return [int(t)] * batch
    if t.numel() != batch:
        raise ValueError(f"target has {t.numel()} entries for a batch of {batch}")
    return [int(v) for v in t]


def _conditioned(fw: Forward, l: int, R: torch.Tensor) -> torch.Tensor:
    """Σ_k |R_k| max(1, (Σ_j |a_j w_jk| + |b_k|) / |z_k|): the relevance of layer l weighted
    by how ill-conditioned its pre-activations are (z_k is a sum; a near-zero z_k is known
    only to the rounding of its terms, and every relevance that depends on it inherits
    that error). z_k = 0 counts as 1."""
    if l not in fw.terms:
        return R.abs().sum()
    size, z = fw.terms[l]
    ratio = torch.where(z == 0, torch.ones_like(z), size / z.abs().clamp(min=torch.finfo(z.dtype).tiny))
    return (R.abs() * ratio.clamp(min=1)).sum()


def masked_relevance(model: nn.Module, x: torch.Tensor, target, masks: Mapping[int, tuple[torch.Tensor, bool]],
                     rules=None, *, layers: list[Layer] | None = None, down_to: int | None = None,
                     forwards: list[Forward] | None = None):
    """Higher-order LRP with the relevance masked at every layer of ``masks``
    ({layer index: (mask over the real neurons, keep ⊥)}), from R^(L) = f_c δ_c down to
    layer ``down_to`` (default: the lowest masked layer). Returns (per sample the list
    [(R^(l) (n_l,), R_⊥^(l))] for l = down_to … L, sizes (B,)): ``sizes`` is, per sample,
    the largest Σ_{j,k} |q(j | k) R_k| + |R_⊥| over the steps and the relevance of every
    layer weighted by the conditioning of its pre-activations (:func:`_conditioned`) —
    the size of the terms that were added, against which float rounding in the result is
    to be measured (a near-zero f_c or pre-activation makes it large against the
    result)."""
    if layers is None:
        layers = read_layers(model, x)
        _assign(layers, rules)
    L = len(layers.layers) - 1
    low = min(masks, default=L) if down_to is None else down_to
    out, sizes = [], []
    for i, c in enumerate(_targets(target, x.shape[0])):
        fw = forwards[i] if forwards is not None else forward(layers, i)
        R = torch.zeros_like(fw.acts[L])
        R[c] = fw.acts[L][c]
        bot = torch.zeros((), dtype=x.dtype, device=x.device)
        if L in masks:
            R = R * masks[L][0].to(R.device)
        per_layer = [(R, bot)]
        size = _conditioned(fw, L, R)
        for l in range(L, low, -1):
            a = fw.acts[l - 1]
            if layers.layers[l].kind == "maxpool":
                Rl = torch.zeros_like(a).index_add_(0, fw.winners[l], R)
                qbot_mass = torch.zeros((), dtype=x.dtype, device=x.device)
                size = torch.maximum(size, R.abs().sum() + bot.abs())
            elif layers.layers[l].kind == "pass":  # q(j | k) = δ_jk
                Rl = R.clone()
                qbot_mass = torch.zeros((), dtype=x.dtype, device=x.device)
                size = torch.maximum(size, R.abs().sum() + bot.abs())
            else:
                W, b, S = fw.maps[l]
                Q, qbot = kernel(layers.layers[l].rule, a, W, b, S, fw.in_shapes.get(l))
                Rl = Q @ R
                qbot_mass = (qbot * R).sum()
                size = torch.maximum(size, (Q.abs() @ R.abs()).sum() + (qbot * R).abs().sum() + bot.abs())
            bot = bot + qbot_mass
            if l - 1 in masks:
                mask, keep = masks[l - 1]
                Rl = Rl * mask.to(Rl.device)
                bot = bot if keep else torch.zeros_like(bot)
            R = Rl
            per_layer.insert(0, (R, bot))
            size = torch.maximum(size, _conditioned(fw, l - 1, R) + bot.abs())
        out.append(per_layer)
        sizes.append(size)
    return out, torch.stack(sizes)


def walk_relevance(model: nn.Module, x: torch.Tensor, target, walks, rules=None, *, with_size: bool = False):
    """GNN-LRP relevance of a walk or a set of walks, per sample (B,); with ``with_size``
    also the size of the terms added on the way (B,) (see :func:`masked_relevance`).

    ``walks`` is one of

    * a sequence of one neuron per layer, input first (flat index, ``None`` for ⊥):
      a single walk (j_0, …, j_L);
    * a mapping {layer name or index: neuron | iterable of neurons (``None`` = ⊥)}: the
      walks through the chosen neurons at the chosen layers;
    * an :class:`nrm.Event` (cylinders and their unions, intersections, complements,
      differences): by linearity, Σ over its cylinders of coefficient × relevance.

    A neuron that the model's forward pass names differently (a ReLU after a Linear) is
    the same layer; indices are flat within one sample's layer.

    A branched model (a layer that reads two others: GIN's, SAGE's and GraphConv's self branch
    and neighbour branch summed, a residual block) is not a chain of layers: an event over it
    is computed by the same nested masking on the traced graph
    (:func:`nrm_verify.references.nested_masking.nested_masking`: the dense kernels of the explicit
    reference, relevance down the graph in reverse topological order, masked at every named
    node, relevance that bypasses a named node dropped). A walk given as one neuron per layer
    or a mapping names the layers of a chain: on a branched model, pass an Event.
    """
    try:
        layers = read_layers(model, x)
    except UnsupportedModelError as err:
        if not isinstance(walks, Event) or "sequential" not in str(err):
            raise
        layers = None
    if layers is None:  # the fallback, run outside the handler
        try:
            total, size = nested_masking(model, x, target, rules, walks)
        except ValueError as why:  # an event the branched reference does not read (⊥ kept)
            raise UnsupportedModelError(str(why)) from why
        return (total, size) if with_size else total
    _assign(layers, rules)
    forwards = [forward(layers, i) for i in range(x.shape[0])]  # once, shared by every cylinder
    L = len(layers.layers) - 1
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    size = torch.zeros_like(total)
    for coeff, masks in _masks(forwards[0], walks, L):
        per_sample, sizes = masked_relevance(model, x, target, masks, rules, layers=layers, forwards=forwards)
        total = total + coeff * torch.stack([R.sum() + bot for R, bot in (p[0] for p in per_sample)])
        size = size + abs(coeff) * sizes
    return (total, size) if with_size else total


def as_event(model: nn.Module, x: torch.Tensor, walks) -> Event:
    """The nrm event of a walk specification (as :func:`walk_relevance` takes it), for
    measuring it with :meth:`nrm.Measure.measure`."""
    if isinstance(walks, Event):
        return walks
    layers = read_layers(model, x[:1])
    fw = forward(layers, 0)
    L = len(layers.layers) - 1
    canonical = {}
    for name, (l, shape) in fw.names.items():
        if l not in canonical and shape == fw.shapes[l]:
            canonical[l] = name
    event = OMEGA
    for _, masks in _masks(fw, walks, L):
        for l, (mask, bot) in sorted(masks.items()):
            idx = mask.nonzero().flatten().tolist()
            event = event & At(canonical[l], index=idx, absorber=bot)
    return event


__all__ = ["walk_relevance", "masked_relevance", "as_event", "read_layers", "forward", "kernel", "table_kernel",
           "UnsupportedRuleError", "UnsupportedModelError", "Layer", "Forward"]
