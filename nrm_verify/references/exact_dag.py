"""The exact oracle on models with branches: marginals of the NRM in fractions on a DAG
(residual sums, concatenations, products of activations), by one exact backward pass.

:mod:`nrm_verify.references.oracle` enumerates walks of sequential models. A branched model's
walks pass duplication and padding neurons (NRM-SPEC §1); its marginals need none of them:
the kernel of every layer is an exact matrix over the concatenation of the layers it reads
(plus ⊥), and relevance that reaches a layer from several readers adds up there (L18). So

    m_u = Σ_{v reads u} Q_v[slot u] m_v,          μ(⊥ absorbed at v) = Σ_k q_v(⊥ | k) m_v(k),

visited from the output down in topological order, and m_u(⊥_u) = Σ of what the layers
reading u (directly or not) absorbed. What it shares with :mod:`nrm`: the captured structure
(:class:`nrm.graph.ProperFFNN`, the rules of :func:`nrm.presets.assign`, a product's split
θ as the graph recorded it), each kind's exact form and the rule objects evaluated on
fractions (:func:`nrm_verify.references.oracle.rule_kernel`). A product's kernel is written
here: q(a⁽ⁱ⁾_{src_i(k)} | o_k) = θ_i, src_i(k) the broadcast source of k in factor i.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from nrm.errors import ShapeError, UnknownLayerError, ZeroOutputError
from nrm.graph import ProperFFNN, check_eval_mode, pack_inputs
from nrm.layers import ExactMap
from nrm.presets import assign
from nrm_verify.references.oracle import fractions, maxpool_winners, rule_kernel

ZERO, ONE = Fraction(0), Fraction(1)


def _zeros(shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out.fill(ZERO)
    return out


def _per_sample_shape(t: torch.Tensor) -> tuple:
    """The shape of the one sample's value: after the batch, or (G, *rows) where its first
    dimension holds G rows of the sample (a fold: OPT's x.reshape(-1, E), Swin's windows)."""
    return tuple(t.shape[1:]) if t.shape[0] == 1 else tuple(t.shape)


def _block_diagonal(maps: list) -> ExactMap:
    """The map of a folded layer over the sample: its rows' maps side by side, row g's inputs
    to row g's outputs only (each built from that row's values)."""
    n_in, n_out = sum(m.weight.shape[0] for m in maps), sum(m.weight.shape[1] for m in maps)
    W, S = _zeros((n_in, n_out)), np.zeros((n_in, n_out), dtype=bool)
    i = k = 0
    for m in maps:
        r, c = m.weight.shape
        W[i:i + r, k:k + c], S[i:i + r, k:k + c] = m.weight, m.connected
        i, k = i + r, k + c
    bias = None if all(m.bias is None for m in maps) else np.concatenate(
        [m.bias if m.bias is not None else _zeros(m.weight.shape[1]) for m in maps])
    return ExactMap(W, S, bias, (len(maps),) + tuple(maps[0].out_shape))


def _by_layer(dmap: ExactMap, sizes: list, rows: int) -> ExactMap:
    """A folded map of several inputs, packed row by row as the engine packs them (row g: each
    input's g-th row in turn), with its in-neurons put in the order the oracle concatenates
    them: each input whole, one after the other."""
    total = sum(sizes)
    order = [g * total + sum(sizes[:i]) + j for i, size in enumerate(sizes) for g in range(rows) for j in range(size)]
    return ExactMap(dmap.weight[order], dmap.connected[order], dmap.bias, dmap.out_shape)


class ExactGraph:
    """A tiny (possibly branched) model at one input: every layer's exact values and kernel
    q_l(j | k) over the concatenation of the layers it reads, q_l(⊥ | k) beside it."""

    def __init__(self, model: nn.Module, x: torch.Tensor, rules=None):
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] != 1:
            raise ShapeError(f"the oracle explains one sample: x of shape (1, ...), got {getattr(x, 'shape', x)}")
        check_eval_mode(model)
        self.network = net = ProperFFNN(model, x)
        assign(net, rules)
        self.values: list[np.ndarray] = []  # flat values as the layer's readers see them
        self.shapes: list[tuple] = []  # those values' shapes
        self.kernels: list = [None]  # (q (Σ|inputs|, |V_l|), q(⊥|k)) per layer
        for block in net.blocks:
            if block.producer is None:
                values, q = fractions(x[0]).reshape(-1), None
            else:
                values, q = self._layer(block)
                self.kernels.append(q)
            for step in block.trailing:
                if step.role == "elementwise":
                    values = step.layer_kind.exact(step.call, values)
            self.values.append(values)
            self.shapes.append(_per_sample_shape(net.value(block.tip)))
        self.output = self.values[-1]

    def _layer(self, block):
        step, ins = block.producer, block.inputs
        a = np.concatenate([self.values[u] for u in ins])
        if block.kind == "product":
            return self._product(block)
        rows = self._rows(ins[0]) if ins else 1  # G rows of the sample where its values fold (else 1)
        if block.kind == "maxpool":
            params = step.layer_kind.params(step.call)
            shape = self.shapes[ins[0]][1:] if rows > 1 else self.shapes[ins[0]]
            per = len(a) // rows
            winners = np.concatenate([g * per + np.asarray(maxpool_winners(params, a[g * per:(g + 1) * per], shape)[0])
                                      for g in range(rows)])
            q = _zeros((len(a), len(winners)))
            q[winners, np.arange(len(winners))] = ONE
            return a[winners], (q, _zeros(len(winners)))
        if block.kind == "linear":
            if step.role == "sum":
                n = len(self.values[ins[0]])
                eye = np.eye(n, dtype=int).astype(object) * ONE
                dmap = ExactMap(np.vstack([eye] * len(ins)), np.vstack([np.eye(n, dtype=bool)] * len(ins)), None,
                                self.shapes[ins[0]])
                in_shape = (len(a),)
            else:  # a map of several inputs (a matrix product) reads them packed, as the engine does
                tips = [self.network.value(self.network.blocks[u].tip) for u in ins]
                maps = []
                for g in range(tips[0].shape[0]):  # one map per row: G rows where the value folds G per sample
                    dmap = step.layer_kind.exact(step.call, pack_inputs(step, [t[g:g + 1] for t in tips]), block.rule)
                    for bn in block.batchnorms:
                        dmap = bn.layer_kind.fold_exact(bn.call, dmap)
                    maps.append(dmap)
                dmap = maps[0] if len(maps) == 1 else _block_diagonal(maps)
                if len(maps) > 1 and len(ins) > 1:  # packed per row: the rows' in-neurons in the layers' order
                    dmap = _by_layer(dmap, [len(self.values[u]) // len(maps) for u in ins], len(maps))
                in_shape = self.shapes[ins[0]] if len(ins) == 1 else (len(a),)
            z = a @ dmap.weight + (0 if dmap.bias is None else dmap.bias)
            q, qbot, _ = rule_kernel(block.rule, a.reshape(in_shape), dmap)
            return np.asarray(z, dtype=object), (q, qbot)
        if block.kind == "concat":  # along a per-row dimension (the sample's axis d, or d − 1 unfolded)
            dim = step.layer_kind.dim(step.call) % step.call.output.dim() - (0 if rows > 1 else 1)
            offsets = np.cumsum([0] + [len(self.values[u]) for u in ins])
            source = np.concatenate([o + np.arange(len(self.values[u])).reshape(self.shapes[u])
                                     for o, u in zip(offsets, ins)], axis=dim).reshape(-1)
        else:  # a pass layer: q = δ, or an index map
            route = block.route()  # per row: the same index map on each of a folded value's rows
            source = np.arange(len(a)) if route is None else np.asarray(route, dtype=int)
            if route is not None and rows > 1:
                source = (np.arange(rows)[:, None] * (len(a) // rows) + source[None, :]).reshape(-1)
        q = _zeros((len(a), len(source)))
        q[source, np.arange(len(source))] = ONE
        values = a[source]
        if step.role == "elementwise":
            values = step.layer_kind.exact(step.call, values)
        return values, (q, _zeros(len(source)))

    def _rows(self, u: int) -> int:
        """How many rows layer u's value holds of the sample (1 unless it folds)."""
        return int(self.network.value(self.network.blocks[u].tip).shape[0])

    def _product(self, block):
        out_shape = _per_sample_shape(self.network.value(block.producer.value))
        K = math.prod(out_shape)
        sizes = [len(self.values[u]) for u in block.inputs]
        q = _zeros((sum(sizes), K))
        values = np.full(K, ONE, dtype=object)
        sources = [np.broadcast_to(np.arange(size).reshape(self.shapes[u]), out_shape).reshape(-1)
                   for u, size in zip(block.inputs, sizes)]
        at_k = [self.values[u][src] for u, src in zip(block.inputs, sources)]  # a⁽ⁱ⁾_{src_i(k)}
        if block.split is None:  # proportional: θ_i(k) = a⁽ⁱ⁾ / (S + ε s), q(⊥|k) = ε s / (S + ε s)
            thetas, bot = block.producer.layer_kind.exact_proportional(at_k)
        else:
            thetas, bot = [np.full(K, theta, dtype=object) for theta in block.split], _zeros(K)
        offset = 0
        for u, src, theta, a in zip(block.inputs, sources, thetas, at_k):
            for k in range(K):
                q[offset + src[k], k] += theta[k]
            values = values * a
            offset += len(self.values[u])
        return values, (q, bot)

    def layer(self, name) -> int:
        if isinstance(name, int):
            return name
        names = dict(self.network.aliases, input=(0, None), output=(len(self.values) - 1, None))
        if name not in names:
            raise UnknownLayerError(f"no layer named {name!r}")
        return names[name][0]

    def marginals(self, target: int) -> tuple[list[np.ndarray], list[Fraction]]:
        """(m_l over the real neurons of every layer, m_l(⊥_l) of every layer) for π = δ_target."""
        f = self.output[target]
        if f == 0:
            raise ZeroOutputError("f_c(x) = 0: π = δ_c / f_c is undefined")
        blocks = self.network.blocks
        incoming = [_zeros(len(v)) for v in self.values]
        incoming[-1][target] = ONE
        absorbed: dict[int, Fraction] = {}
        for l in range(len(blocks) - 1, 0, -1):
            q, qbot = self.kernels[l]
            r = incoming[l]
            down = q.dot(r) if len(r) else _zeros(q.shape[0])
            absorbed[l] = sum((b * x for b, x in zip(qbot, r)), ZERO)
            offset = 0
            for u in blocks[l].inputs:
                n = len(self.values[u])
                incoming[u] = incoming[u] + down[offset:offset + n]
                offset += n
        bottom = [sum((t for v, t in absorbed.items() if u in self.network.ancestors(v)), ZERO)
                  for u in range(len(blocks))]
        return incoming, bottom
