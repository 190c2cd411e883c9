"""Exact oracles for the NRM of a tiny network (NRM-SPEC §5, "Exact oracles for tests").

Two independent computations of the same measure, in exact rational arithmetic
(:class:`fractions.Fraction`; ``Fraction(float)`` is the float's exact value):

(a) ``method="walks"`` enumerates every walk ω = (n_0, …, n_L) of non-zero measure,

        μ({ω}) = π(n_L) Π_{l=1..L} q_l(n_{l−1} | n_l),

    and sums μ({ω}) over the walks of an event (walks of measure 0 add nothing);

(b) ``method="matrix"`` builds every transition matrix Q_l — (|V_{l−1}|+1) × (|V_l|+1),
    the last row and column being the absorber, Q_l[⊥, ⊥] = 1 — and multiplies masked
    products, μ(E) = 1ᵀ M_0 Q_1 M_1 ⋯ Q_L M_L π for a cylinder E with diagonal masks M_l.

Neither computation assumes that a column sums to one, so both can check L1.

What the oracle shares with :mod:`nrm`, and nothing more: the captured *structure* (which
call produces which layer, and which rule it gets — :class:`nrm.graph.ProperFFNN` and
:func:`nrm.presets.assign`), the *layer kinds' exact forms* (each linear kind declares its
map as an explicit matrix of fractions, written from the operation's definition — an
unrolled convolution, 1/|window| for average pooling — not from the fast maps:
:meth:`nrm.layers.Linear.exact`; an activation its exact values) and the *rule objects
themselves*, evaluated on object arrays of fractions through :data:`nrm.ops.FRACTIONS` (a
rule is written once; its float parameters are read as the exact rationals they are,
:func:`exact_rule`). The forward pass, max-pool winners, kernels, walks and masked products
are computed here, without :mod:`nrm.engine`, :mod:`nrm.linear` or :mod:`nrm.measure`.

    net = ExactNetwork.from_model(model, x[:1], rules)
    mu = net.explain(target=c)
    mu.marginal("input", method="walks") == mu.marginal("input", method="matrix")
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from nrm.errors import (
    EventIndexError,
    NullEventError,
    RelevanceDependentRuleError,
    ShapeError,
    UnknownLayerError,
    UnsupportedModuleError,
    ZeroOutputError,
)
from nrm.events import Event
from nrm.graph import ProperFFNN, check_eval_mode
from nrm.layers import ExactMap
from nrm.layers.linear import pool_out, windows
from nrm.ops import FRACTIONS
from nrm.presets import assign

ZERO, ONE = Fraction(0), Fraction(1)
METHODS = ("walks", "matrix")


def fractions(t) -> np.ndarray:
    """A tensor (or number) → an object array of its exact values as fractions."""
    values = t.detach().to("cpu", torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, float)
    out = np.empty(values.shape, dtype=object)
    for idx in np.ndindex(values.shape):
        out[idx] = Fraction(float(values[idx]))
    return out


def exact_rule(rule):
    """The same rule object's code with every float parameter read as its exact rational
    (``Fraction(0.1)`` is the float 0.1 exactly, so the oracle and a float64 engine compute
    the same mathematical kernel). A float in ``+ - * /`` with fractions would give floats."""
    clone = copy.copy(rule)
    for name, value in vars(rule).items():
        if isinstance(value, float):
            setattr(clone, name, Fraction(value))
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(clone, name, fractions(value))
    return clone


def _zeros(shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out.fill(ZERO)
    return out


def _quad(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def maxpool_winners(params, values: np.ndarray, in_shape):
    """For every output, the flat input index of the FIRST maximal element of its window in
    row-major order (torch's CPU tie-breaking); padding positions are never winners.
    Also the smallest relative gap between a window's maximum and its runner-up value.
    ``params`` are (kernel, stride, padding, dilation, ceil_mode)."""
    k, s, p, d = (_quad(v) for v in params[:4])
    ceil = params[4]
    C, spatial = in_shape[0], in_shape[1:]
    out_spatial = tuple(pool_out(n, kk, ss, pp, dd, ceil) for n, kk, ss, pp, dd in zip(spatial, k, s, p, d))
    out_shape = (C,) + out_spatial
    winners, gap = np.zeros(math.prod(out_shape), int), math.inf
    for opos, taps in windows(spatial, out_spatial, k, s, p, d):
        for c in range(C):
            cands = [np.ravel_multi_index((c,) + ipos, in_shape) for _, ipos in taps if ipos is not None]
            best = cands[0]
            for j in cands[1:]:
                if values[j] > values[best]:
                    best = j
            winners[np.ravel_multi_index((c,) + opos, out_shape)] = best
            lower = [values[j] for j in cands if values[j] != values[best]]
            scale = max(abs(values[j]) for j in cands)
            if lower and scale:
                gap = min(gap, float((values[best] - max(lower)) / scale))
    return winners, out_shape, gap


# -- one layer ----------------------------------------------------------------------------


@dataclass
class ExactLayer:
    """Layer l: its neurons' exact values and, for l ≥ 1, its kernel q_l(j | k)."""

    index: int
    name: str
    shape: tuple  # canonical shape (the producer's output)
    values: np.ndarray  # flat activations after the layer's elementwise steps
    kernel: np.ndarray | None = None  # object (|V_{l-1}|, |V_l|): q(j | k) for real j
    absorbed: np.ndarray | None = None  # object (|V_l|,): q(⊥_{l-1} | k)
    margin: float = math.inf  # smallest relative denominator / pre-activation / max-pool gap
    preactivation: np.ndarray | None = None  # z with bias (linear layers)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def rule_kernel(rule, a_in: np.ndarray, dmap: ExactMap):
    """q(j | k) and q(⊥ | k) of one linear layer from the rule's shares (NRM-SPEC §2):
    c_s(j,k) = Σ_p u_p(a_j) v_p(w_jk) on structural connections, Z_s = Σ_j c_s,
    β_s = share.bias(b); ``rule.column`` turns them into the column's scales and q(⊥|k)."""
    if getattr(rule, "reads_relevance", False):
        raise RelevanceDependentRuleError(
            f"{rule!r} reads the incoming relevance: it has no fixed kernel q(j|k), so there is no walk measure "
            "for the exact oracle to enumerate"
        )
    ops, rule = FRACTIONS, exact_rule(rule)
    n_out = dmap.weight.shape[1]
    contributions, biases, terms, margin = [], [], [], math.inf
    for share in rule.shares():
        c = _zeros(dmap.weight.shape)
        for part in share.parts:
            u = np.asarray(part.input(ops, a_in), dtype=object).reshape(-1)
            v = np.asarray(part.weight(ops, dmap.weight), dtype=object)
            c = c + u[:, None] * v
        c = np.where(dmap.connected, c, ZERO)
        beta = _zeros(n_out)
        if share.bias is not None and dmap.bias is not None:
            beta = np.asarray(share.bias(ops, dmap.bias), dtype=object)
        Z = c.sum(axis=0) if c.shape[0] else _zeros(n_out)
        for k in range(n_out):
            scale = sum(abs(t) for t in c[:, k]) + abs(beta[k])
            if scale:
                margin = min(margin, float(abs(Z[k] + beta[k]) / scale))
        contributions.append(Z)
        biases.append(beta)
        terms.append(c)
    scales, qbot = rule.column(ops, tuple(contributions), tuple(biases))
    q = _zeros(dmap.weight.shape)
    for s, c in zip(scales, terms):
        q = q + np.broadcast_to(np.asarray(s, dtype=object), (n_out,))[None, :] * c
    return q, np.broadcast_to(np.asarray(qbot, dtype=object), (n_out,)).copy(), margin


def _maxpool_layer(block, a: np.ndarray, in_shape) -> ExactLayer:
    """Winner-takes-all: q(winner_k | k) = 1, nothing to the absorber."""
    step = block.producer
    winners, shape, gap = maxpool_winners(step.layer_kind.params(step.call), a, in_shape)
    kernel = _zeros((len(a), len(winners)))
    kernel[winners, np.arange(len(winners))] = ONE
    return ExactLayer(block.index, block.name, shape, a[winners], kernel, _zeros(len(winners)), gap)


def _linear_layer(network, block, a: np.ndarray, in_shape) -> ExactLayer:
    """z = a W + b exactly (batch norm folded), and the rule's kernel at a. The explicit
    matrix W is the layer kind's exact form (:meth:`nrm.layers.Linear.exact`)."""
    step = block.producer
    recorded = network.value(network.blocks[block.inputs[0]].tip if block.inputs else None)[:1]
    dmap = step.layer_kind.exact(step.call, recorded, block.rule)
    for bn in block.batchnorms:
        dmap = bn.layer_kind.fold_exact(bn.call, dmap)
    z = a @ dmap.weight if len(a) else _zeros(dmap.weight.shape[1])
    if dmap.bias is not None:
        z = z + dmap.bias
    q, qbot, margin = rule_kernel(block.rule, a.reshape(in_shape), dmap)
    for k in range(len(z)):  # how close each pre-activation is to a sign change
        scale = sum(abs(a[j] * dmap.weight[j, k]) for j in range(len(a)))
        scale += abs(dmap.bias[k]) if dmap.bias is not None else 0
        if scale:
            margin = min(margin, float(abs(z[k]) / scale))
    return ExactLayer(block.index, block.name, dmap.out_shape, z, q, qbot, margin, z)


def _elementwise(step, values: np.ndarray) -> np.ndarray:
    """An elementwise step on exact values: its kind's exact form (aliases and reshapes keep them)."""
    if step.role == "elementwise":
        return step.layer_kind.exact(step.call, values)
    return values


# -- the network ------------------------------------------------------------------------------


class ExactNetwork:
    """A tiny model at one input, with every layer's values and kernel in fractions."""

    def __init__(self, layers: list[ExactLayer], names: dict[str, tuple[int, tuple]], output: np.ndarray):
        self.layers = layers
        self.names = names  # layer name → (index, the shape that name sees)
        self.output = output  # flat model output, exact
        self._transitions: dict[int, np.ndarray] = {}
        self._entries: dict[int, list] = {}
        self._cylinders: dict[frozenset, dict] = {}

    @classmethod
    def from_model(cls, model: nn.Module, x: torch.Tensor, rules=None) -> ExactNetwork:
        """Read ``model`` (only read: never modified) at ``x`` of shape (1, ...) with
        ``rules`` (anything :func:`nrm.explain` accepts)."""
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] != 1:
            raise ShapeError(f"the oracle explains one sample: x of shape (1, ...), got {getattr(x, 'shape', x)}")
        check_eval_mode(model)
        network = ProperFFNN(model, x)
        if not network.sequential:
            raise UnsupportedModuleError(
                "the exact oracle reads sequential models (every layer reads the one before); this model has "
                "branches — use nrm_verify.references.explicit for it")
        assign(network, rules)
        layers, names = [], {}
        a, shape = fractions(x[0]).reshape(-1), tuple(x.shape[1:])
        for block in network.blocks:
            if block.producer is None:
                layer = ExactLayer(0, "input", shape, a)
            elif block.kind == "maxpool":
                layer = _maxpool_layer(block, a, shape)
            elif block.kind == "linear":
                layer = _linear_layer(network, block, a, shape)
            else:  # a pass layer: q = δ, or q(j|k) = [j = index[k]] for an index map
                route = block.route()
                n = len(a)
                source = np.arange(n) if route is None else np.asarray(route, dtype=int)
                kernel = _zeros((n, len(source)))
                kernel[source, np.arange(len(source))] = ONE
                out_shape = tuple(network.value(block.producer.value).shape[1:])
                layer = ExactLayer(block.index, block.name, out_shape, _elementwise(block.producer, a[source]),
                                   kernel, _zeros(len(source)))
            if block.producer is not None:
                names[block.producer.name] = (block.index, layer.shape)
            current = layer.shape  # the elementwise steps act on the layer; a reshape renames it
            for step in block.trailing:
                layer.values = _elementwise(step, layer.values)
                current = tuple(network.value(step.value).shape[1:])
                names[step.name] = (block.index, current)
            layers.append(layer)
            a, shape = layer.values, current
        for name, (l, value) in network.aliases.items():
            names.setdefault(name, (l, tuple(network.value(value).shape[1:])))
        names["input"] = (0, layers[0].shape)
        names["output"] = (len(layers) - 1, layers[-1].shape)
        return cls(layers, names, a)

    # -- structure ----------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.layers) - 1

    def layer(self, name: str) -> tuple[int, tuple]:
        """(index, shape as that name sees it) — "input", "output", a module name, or the
        layer index l itself (with the layer's canonical shape)."""
        if isinstance(name, int) and not isinstance(name, bool) and 0 <= name <= self.depth:
            return name, self.layers[name].shape
        try:
            return self.names[name]
        except (KeyError, TypeError):
            raise UnknownLayerError(f"no layer named {name!r}; valid names are {list(self.names)}") from None

    def values(self, name: str) -> np.ndarray:
        l, shape = self.layer(name)
        return self.layers[l].values.reshape(shape)

    def kernel(self, l: int) -> tuple[np.ndarray, np.ndarray]:
        """(q_l(j | k) for real j, q_l(⊥ | k)) of layer l ≥ 1, as fractions."""
        return self.layers[l].kernel, self.layers[l].absorbed

    def transition(self, l: int) -> np.ndarray:
        """Q_l, (|V_{l-1}|+1) × (|V_l|+1): Q[j, k] = q_l(j | k), last row q(⊥ | k), Q[⊥, ⊥] = 1."""
        if l not in self._transitions:
            q, qbot = self.kernel(l)
            n_in, n_out = q.shape
            Q = _zeros((n_in + 1, n_out + 1))
            Q[:n_in, :n_out], Q[n_in, :n_out], Q[n_in, n_out] = q, qbot, ONE
            self._transitions[l] = Q
        return self._transitions[l]

    def entries(self, l: int) -> list[tuple[int, int, Fraction]]:
        """The non-zero entries (j, k, Q_l[j, k]) of the transition matrix Q_l."""
        if l not in self._entries:
            Q = self.transition(l)
            self._entries[l] = [(int(j), int(k), Q[j, k]) for j, k in zip(*np.nonzero(Q != 0))]
        return self._entries[l]

    def margin(self) -> float:
        """How far this case is from a discontinuity of a float computation: the smallest
        |denominator| / Σ|terms| of any share, |pre-activation| / Σ|terms| of any neuron and
        relative gap between a max-pool window's maximum and runner-up. A float64 engine can
        only be held to ~1e-9 where this is not tiny."""
        return min(layer.margin for layer in self.layers)

    def selection(self, atom) -> tuple[int, np.ndarray]:
        """An atom {X_layer ∈ S} → (l, boolean mask over V̄_l, the absorber last)."""
        l, shape = self.layer(atom.layer)
        n = self.layers[l].size
        sel = np.zeros(n + 1, bool)
        if atom.selector == "all":
            sel[:n] = True
        elif atom.selector == "index":
            if not all(0 <= i < n for i in atom.values):
                raise EventIndexError(f"{atom!r}: indices out of range for {n} neurons")
            sel[list(atom.values)] = True
        elif atom.selector == "channels":
            per = n // shape[0]
            if not all(0 <= c < shape[0] for c in atom.values):
                raise EventIndexError(f"{atom!r}: channels out of range for {shape[0]} channels")
            for c in atom.values:
                sel[c * per:(c + 1) * per] = True
        elif atom.selector == "mask":
            if atom.mask.numel() != n:
                raise EventIndexError(f"{atom!r}: mask of {atom.mask.numel()} entries for {n} neurons")
            sel[:n] = atom.mask.reshape(-1).numpy()
        sel[n] = atom.absorber
        return l, (~sel if atom.negated else sel)

    def cylinder(self, atoms: frozenset) -> dict[int, np.ndarray]:
        """A cylinder (set of atoms) → one mask per constrained layer (intersected)."""
        if atoms not in self._cylinders:
            masks: dict[int, np.ndarray] = {}
            for atom in atoms:
                l, sel = self.selection(atom)
                masks[l] = masks[l] & sel if l in masks else sel
            self._cylinders[atoms] = masks
        return self._cylinders[atoms]

    def contains(self, event, walk) -> int:
        """Σ_cylinders coefficient · 1[ω ∈ cylinder] for a walk ω (tuple, None = absorber):
        the event's indicator at ω (0 or 1 for events built with & | ~ −)."""
        w = [self.layers[l].size if n is None else n for l, n in enumerate(walk)]
        total = 0
        for cyl, coef in event.terms.items():
            if all(mask[w[l]] for l, mask in self.cylinder(cyl).items()):
                total += coef
        return total

    # -- measures -----------------------------------------------------------------------
    def explain(self, target: int | None = None, start=None) -> ExactMeasure:
        """The measure for output ``target`` (π = δ_c, f_c ≠ 0) or a start vector R (π = R/ΣR)."""
        n = len(self.output)
        if (target is None) == (start is None):
            raise ShapeError("give exactly one of target= or start=")
        if start is not None:
            R = fractions(start).reshape(-1)
            if len(R) != n:
                raise ShapeError(f"start= needs {n} values, got {len(R)}")
            f = sum(R, ZERO)
            what = "Σ R"
        else:
            if not 0 <= int(target) < n:
                raise ShapeError(f"target {target} out of range for {n} outputs")
            R = _zeros(n)
            f = self.output[int(target)]
            R[int(target)] = f
            what = "f_c(x)"
        if f == 0:
            raise ZeroOutputError(f"{what} = 0: π = R / {what} is undefined")
        pi = _zeros(n + 1)
        pi[:n] = R / f
        return ExactMeasure(self, pi, f)

    def walks(self, target: int | None = None, start=None) -> list[tuple[tuple, Fraction]]:
        return self.explain(target, start).walks()


def _product(net: ExactNetwork, l: int, v: np.ndarray, transpose: bool = False) -> np.ndarray:
    """Q_l v (or Q_lᵀ v) over the non-zero entries of Q_l (exact zeros add nothing; a dense
    object ``dot`` would spend most of its time multiplying them)."""
    shape, entries = net.transition(l).shape, net.entries(l)
    out = _zeros(shape[1] if transpose else shape[0])
    for j, k, q in entries:
        src, dst = (j, k) if transpose else (k, j)
        if v[src]:
            out[dst] += q * v[src]
    return out


@dataclass
class ExactMeasure:
    """μ on the walks of an :class:`ExactNetwork` for one start vector π (over V̄_L, π(⊥_L) = 0)."""

    network: ExactNetwork
    pi: np.ndarray
    f: Fraction
    _walks: tuple | None = field(default=None, repr=False)
    _walk_list: list | None = field(default=None, repr=False)

    # -- (a) walk enumeration -----------------------------------------------------------
    def _walk_table(self):
        """(walks as an int array (n, L+1) with ⊥_l = |V_l|, their measures, the measures'
        numerators over their common denominator D, D). Sums over walks add the integer
        numerators (exact, and much faster than adding fractions one gcd at a time)."""
        if self._walks is None:
            net = self.network
            paths = [((k,), p) for k, p in enumerate(self.pi) if p != 0]
            for l in range(net.depth, 0, -1):
                Q = net.transition(l)
                support = [np.flatnonzero(Q[:, k] != 0) for k in range(Q.shape[1])]
                paths = [((j,) + w, mu * Q[j, w[0]]) for w, mu in paths for j in support[w[0]]]
            idx = np.array([w for w, _ in paths], dtype=int).reshape(len(paths), net.depth + 1)
            mus = np.empty(len(paths), dtype=object)
            mus[:] = [mu for _, mu in paths]
            D = math.lcm(*(mu.denominator for mu in mus)) if len(mus) else 1
            nums = np.empty(len(paths), dtype=object)
            nums[:] = [mu.numerator * (D // mu.denominator) for mu in mus]
            self._walks = (idx, mus, nums, D)
        return self._walks

    def walks(self) -> list[tuple[tuple, Fraction]]:
        """Every walk of non-zero measure as ((n_0, …, n_L), μ({ω})); None is the absorber."""
        if self._walk_list is None:
            idx, mus = self._walk_table()[:2]
            sizes = [layer.size for layer in self.network.layers]
            self._walk_list = [(tuple(None if n == sizes[l] else int(n) for l, n in enumerate(w)), mu)
                               for w, mu in zip(idx, mus)]
        return list(self._walk_list)

    def measure_where(self, predicate) -> Fraction:
        """Σ μ({ω}) over the walks ω (tuples, None = absorber) with ``predicate(ω)`` true."""
        _, _, nums, D = self._walk_table()
        return Fraction(sum(n for (w, _), n in zip(self.walks(), nums) if predicate(w)), D)

    def total_variation(self) -> Fraction:
        """Σ_ω |μ({ω})|: the scale against which float errors of any event are measured."""
        _, _, nums, D = self._walk_table()
        return Fraction(sum(abs(n) for n in nums), D)

    # -- one cylinder, one layer: μ(X_l = j, E) for every j ∈ V̄_l ----------------------------
    def _cylinder_marginal(self, l: int, masks: dict[int, np.ndarray], method: str) -> np.ndarray:
        net = self.network
        if method == "walks":
            idx, _, nums, D = self._walk_table()
            inside = np.ones(len(nums), bool)
            for layer, mask in masks.items():
                inside &= mask[idx[:, layer]]
            total = [0] * (net.layers[l].size + 1)
            for j, n in zip(idx[inside, l], nums[inside]):
                total[j] += n
            return np.array([Fraction(t, D) for t in total], dtype=object)
        if method != "matrix":
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")

        def masked(layer, v):
            return np.where(masks[layer], v, ZERO) if layer in masks else v

        down = masked(net.depth, self.pi)  # A_L = M_L π, A_{m-1} = M_{m-1} Q_m A_m
        for m in range(net.depth, l, -1):
            down = masked(m - 1, _product(net, m, down))
        up = np.full(net.layers[0].size + 1, ONE, dtype=object)  # B_0 = 1, B_m = Q_mᵀ M_{m-1} B_{m-1}
        for m in range(1, l + 1):
            up = _product(net, m, masked(m - 1, up), transpose=True)
        return down * up

    def _terms(self, event):
        if not isinstance(event, Event):
            raise TypeError(f"expected an nrm event, got {type(event).__name__}")
        return [(coef, self.network.cylinder(cyl)) for cyl, coef in event.terms.items()]

    def _event_marginal(self, l: int, event, method: str) -> np.ndarray:
        out = _zeros(self.network.layers[l].size + 1)
        for coef, masks in self._terms(event):
            out = out + coef * self._cylinder_marginal(l, masks, method)
        return out

    # -- the public questions ------------------------------------------------------------
    def measure(self, event, method: str = "walks") -> Fraction:
        """μ(E) = Σ_cylinders coefficient · μ(cylinder)."""
        return sum(self._event_marginal(0, event, method), ZERO)

    __call__ = measure

    def marginal(self, layer: str, within=None, method: str = "walks") -> np.ndarray:
        """μ(X_l = j [, E]) for the real neurons, in the shape the name sees."""
        l, shape = self.network.layer(layer)
        if within is None:
            out = self._cylinder_marginal(l, {}, method)
        else:
            out = self._event_marginal(l, within, method)
        return out[:-1].reshape(shape)

    def absorbed(self, layer: str, within=None, method: str = "walks") -> Fraction:
        """μ(X_l = ⊥_l [, E])."""
        l, _ = self.network.layer(layer)
        out = self._cylinder_marginal(l, {}, method) if within is None else self._event_marginal(l, within, method)
        return out[-1]

    def conditional(self, event, given, method: str = "walks") -> Fraction:
        """μ(A | B) = μ(A ∩ B) / μ(B); NullEventError when μ(B) = 0 exactly."""
        base = self.measure(given, method)
        if base == 0:
            raise NullEventError(f"cannot condition on {given!r}: its exact measure is 0")
        return self.measure(event & given, method) / base

    def walk(self, path, method: str = "walks") -> Fraction:
        """μ({ω}) for ω = (n_0, …, n_L), flat indices, None for the absorber."""
        net = self.network
        if len(path) != net.depth + 1:
            raise ShapeError(f"a walk names {net.depth + 1} neurons, got {len(path)}")
        masks = {}
        for l, n in enumerate(path):
            mask = np.zeros(net.layers[l].size + 1, bool)
            mask[net.layers[l].size if n is None else n] = True
            masks[l] = mask
        return sum(self._cylinder_marginal(0, masks, method), ZERO)

    def _groups(self, layer: str, by: str) -> list[np.ndarray]:
        l, shape = self.network.layer(layer)
        n = self.network.layers[l].size
        if by == "neuron":
            return [np.arange(n) == i for i in range(n)]
        per = n // shape[0]
        return [(np.arange(n) // per) == c for c in range(shape[0])]

    def joint(self, layer_a: str, layer_b: str, by: str = "channel", method: str = "walks") -> np.ndarray:
        """J[i, k] = μ(X_a ∈ group i, X_b ∈ group k) (groups: channels or single neurons)."""
        la, lb = self.network.layer(layer_a)[0], self.network.layer(layer_b)[0]
        if la == lb:
            raise ValueError(f"joint() needs two different layers, got {layer_a!r} and {layer_b!r}")
        groups_a, groups_b = self._groups(layer_a, by), self._groups(layer_b, by)
        out = _zeros((len(groups_a), len(groups_b)))
        for k, gb in enumerate(groups_b):
            vec = self._cylinder_marginal(la, {lb: np.append(gb, False)}, method)[:-1]
            for i, ga in enumerate(groups_a):
                out[i, k] = sum(vec[ga], ZERO)
        return out
