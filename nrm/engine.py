"""The engine (NRM-SPEC §5): one forward pass, then masked passes through the kernels.

* The forward is computed **once** per input (no autograd graph). It keeps, per layer,
  the activations a entering the layer's linear map, the pre-activations without bias,
  and the winners of max-pooling.
* A layer's kernel is prepared lazily on first use: for every share of its rule, the
  denominators (one pass through the modified weights; the ordinary forward is reused
  when the share is plain LRP-0/ε) and the per-column factors of
  :meth:`nrm.rules.Rule.column`.
* Relevance goes **down** through a layer as r ↦ Q r: for each share s and part p,
  u_p(a) ⊙ Wᵀ_p (κ_s r / D_s) — the VJP of that layer alone with modified weights —
  applied to a stack of K × B relevance tensors at once; the absorber collects
  Σ_k q(⊥|k) r_k. It goes **up** (for events constraining layers below the one asked
  for) as v ↦ Qᵀ v, the modified forward.
* A value that folds each sample into G rows (B·G in dimension 0: ``x.reshape(-1, E)``) has
  the per-sample shape (G, *rows) (:meth:`Engine.canonical`); maps read its rows, kernels
  and relevance are kept per sample, the same memory.
* :meth:`Engine.down` runs many cylinders together: cylinders that agree on every
  constraint above a layer share that part of the pass (one row of the stack), they
  split where their constraints differ, and each stops at its own layer. Where the
  stack would outgrow :data:`STACK_BYTES` further down, its rows go on in slices.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .check import check_map, check_route, check_winners
from .errors import RelevanceDependentRuleError, ShapeError
from .graph import Block, ProperFFNN, all_finite, pack_inputs
from .ops import TORCH
from .rules import Rule, identity, ones

STACK_BYTES = 32 << 20
"""Default bound on the relevance stack of :meth:`Engine.down` at its widest step (rows
× (input + output) of a layer): many events go down the wide layers in slices of rows
that fit it. Below about a row per slice the time does not change (VGG16 at 224 px: 64
channel events take the same time with 1 or 10 rows per slice, at 350 vs 800 MiB)."""


@dataclass(frozen=True)
class Constraint:
    """{X_l ∈ S} resolved: ``mask`` is a boolean tensor of layer l's canonical shape
    (None: every real neuron); ``absorber`` says whether ⊥_l is in S."""

    layer: int
    mask: torch.Tensor | None
    absorber: bool
    key: tuple
    parallel: bool = False  # also the copies at the layer (walks that bypass its node)


class PreparedKernel:
    """Layer l's kernel for the batch: q(j|k) = Σ_s scale_s(k) Σ_p u_p(a_j) v_p(w_jk).

    ``shares`` is [(scale (B, *out), [(u (B, *in) or None for ones, modified weight)])]
    and ``qbot`` is q(⊥|k) (B, *out). A one-share rule of the base class keeps instead the
    stabilized denominator D = stabilize(Z + β) (``divisors``, with D = ∞ for a dead
    column, so that r / D = 0 there): relevance goes down as r / D in one division, and
    scale = 1/D and q(⊥|k) = 1 − Z/D are formed only when something asks for them.
    ``sums`` holds, for a rule that reads the incoming relevance (not Markov), the
    per-share sums, so that its columns are formed anew for every relevance that arrives.
    """

    def __init__(self, shares: list, qbot: torch.Tensor | None = None, sums: tuple | None = None,
                 divisors: list | None = None, contributions=None):
        self._shares, self._qbot, self.sums = shares, qbot, sums
        self.divisors, self._contributions = divisors, contributions

    @property
    def shares(self) -> list:
        if self._shares is None:
            self._shares = [(torch.reciprocal(d), p) for d, p in self.divisors if p]
        return self._shares

    @property
    def qbot(self) -> torch.Tensor | None:
        if self._qbot is None and self.divisors is not None:
            real = None
            for (d, _), z in zip(self.divisors, self._contributions()):
                real = z / d if real is None else real.add_(z / d)
            self._qbot = 1 - real
        return self._qbot


class Engine:
    """Forward record and kernel passes of one explained batch.

    The forward record is the model's own computation (:mod:`nrm.capture`): every layer's
    input, pre-activation and activation are the values ``model(x)`` computed. The maps that
    the kernels use are built by each layer's kind (:mod:`nrm.layers`) and checked against
    those values (:mod:`nrm.check`)."""

    def __init__(self, network: ProperFFNN, check: bool | str = True):
        self.net = network
        x = network.captured.input
        self.dtype, self.device = x.dtype, x.device
        self.batch = x.shape[0]
        self.inputs: dict[int, torch.Tensor] = {}
        self.pre: dict[int, torch.Tensor] = {}  # pre-activations W a + b of the linear layers
        self.winners: dict[int, torch.Tensor] = {}
        self.routes: dict[int, torch.Tensor] = {}  # index maps of pass layers (slicing, …): input of each output
        self.permutes: dict[int, tuple] = {}  # pass layers that permute the per-sample dimensions: σ
        self.maps: dict = {}
        self.z_nobias = _NoBias(self.pre, self.maps, self.inputs)  # W a, formed from them when asked for
        self.in_shape: dict[int, tuple] = {}
        self.shape: dict[int, tuple] = {}  # canonical per-sample shape of each layer
        # a value whose first dimension folds G rows per sample (B·G: OPT's x.reshape(-1, E), Swin's windows) has the
        # canonical shape (G, *rows); its maps and kernels read it as the call did, rows first
        self.rows: dict[int, tuple] = {}  # each layer's value per row, as its call holds it
        self.in_rows: dict[int, tuple] = {}  # what each layer's map reads, per row
        self.folded: dict[int, int] = {}  # 1 where a layer's rows fold several per sample (its value and its input)
        self.values: dict[int, torch.Tensor] = {}  # activations of each layer (canonical shape)
        self.aliases: dict[str, tuple[int, tuple]] = {}
        self._kernels: dict[int, PreparedKernel] = {}
        self.stack_bytes = STACK_BYTES  # bound on a stack of relevance rows going down (see _descend)
        self._row_bytes: list | None = None
        self._anc: dict[int, set] = {}  # ancestors of each layer (branched models)
        self.check = check
        with torch.no_grad():
            self.output = self._record()

    # -- the forward record ----------------------------------------------------------
    def _record(self) -> torch.Tensor:
        """Fill the per-layer record from the captured values."""
        net = self.net
        post: dict[int, torch.Tensor] = {}  # each layer's value as its readers see it (after trailing steps)
        self.post_shape: dict[int, tuple] = {}
        self.post_rows: dict[int, tuple] = {}  # each layer's value as its readers' calls hold it, per row
        self.concat: dict[int, tuple] = {}  # concatenation layers: (dim, sizes)
        self.splits: dict[int, list] = {}  # product layers: (θ_i, factor shape) per input
        self.product_bot: dict[int, torch.Tensor] = {}  # q(⊥|k) (B, *shape) of a proportional product
        self.packed: dict[int, list] = {}  # linear maps of several inputs: neurons per input (pack_inputs)
        a = net.captured.input
        for block in net.blocks:
            l = block.index
            if block.producer is not None:
                a = self._produce(block, [post[u] for u in block.inputs])
                if not all_finite(a):
                    net.raise_nonfinite(block.producer.name)
            self.shape[l], self.rows[l] = self.canonical(a), tuple(a.shape[1:])
            self.folded.setdefault(l, int(a.shape[0] != self.batch))
            for step in block.trailing:
                a = net.value(step.value)
            post[l] = a
            self.post_shape[l], self.post_rows[l] = self.canonical(a), tuple(a.shape[1:])
            self.values[l] = a.reshape((self.batch,) + self.shape[l])
        self.aliases["input"] = (0, self.shape[0])  # first: the canonical name of layer 0
        for name, (l, value) in net.aliases.items():
            self.aliases[name] = (l, self.canonical(net.value(value)))
        self.aliases["output"] = (net.depth, self.shape[net.depth])
        return a

    def canonical(self, t: torch.Tensor) -> tuple:
        """The per-sample shape of a recorded value: its shape after the batch, or (G, *rows)
        when its first dimension holds G rows of each sample (B·G, each sample's rows one block)."""
        n = t.shape[0]
        if n == self.batch:
            return tuple(t.shape[1:])
        if n % self.batch:  # the kinds keep dimension 0 or fold it by whole samples (View): never here
            raise ShapeError(f"a recorded value of shape {tuple(t.shape)} does not hold the batch of {self.batch} "
                             "samples in its first dimension, whole or folded into rows")
        return (n // self.batch,) + tuple(t.shape[1:])

    def _n(self, l: int) -> int:
        """The rows of layer l's value in its call: B, or B·G where each sample folds G rows."""
        return self.batch * (self.shape[l][0] if self.folded.get(l) else 1)

    def _produce(self, block: Block, ins: list[torch.Tensor]) -> torch.Tensor:
        l, kind, step = block.index, block.kind, block.producer
        out = self.net.value(step.value)
        self.folded[l] = int(out.shape[0] != self.batch)
        if kind == "product":  # the kernel is the split θ: fixed, or (proportional) the factors' values
            self.in_shape[l] = self.canonical(out)
            if block.split is None:
                thetas, bot = step.layer_kind.proportional([x.detach() for x in ins])
                if self.folded[l]:
                    thetas = [_as_samples(t, self.batch, self.in_shape[l]) for t in thetas]
                    bot = _as_samples(bot, self.batch, self.in_shape[l])
                self.product_bot[l] = bot
            else:
                thetas = [float(t) for t in block.split]
            self.splits[l] = [(t, self.canonical(x)) for t, x in zip(thetas, ins)]
            return out
        if kind == "concat":
            dim = step.layer_kind.dim(step.call)
            self.concat[l] = (dim + self.folded[l], tuple(t.shape[dim] for t in ins))
            self.in_shape[l] = self.canonical(out)
            return out
        a = pack_inputs(step, ins)
        if len(ins) > 1 and step.role != "sum":
            self.packed[l] = [t[0].numel() for t in ins]  # per row
        self.inputs[l] = a
        self.in_shape[l], self.in_rows[l] = self.canonical(a), tuple(a.shape[1:])
        if kind == "pass":
            permutation = getattr(step.layer_kind, "permutation", None) if step.role == "reshape" else None
            sigma = permutation(step.call) if permutation is not None else None
            if sigma is not None:  # relevance moves by the inverse permutation, no gather
                if self.check:
                    check_route(block, a, None, out, permutation=sigma, full=self.check == "full")
                f = self.folded[l]  # the rows of a folded value stay where they are
                self.permutes[l] = tuple(range(f)) + tuple(f + i for i in sigma)
                return out
            route = block.route()
            if route is not None:
                self.routes[l] = step.layer_kind.route_tensor(step.call, self.device)
                if self.check:
                    check_route(block, a, self.routes[l], out, full=self.check == "full")
            return out
        if kind == "maxpool":
            idx, pooled = step.layer_kind.winners(step.call, a)
            if self.check:
                check_winners(step, pooled, out)
            self.winners[l] = idx
            return out
        lmap = self.net.linear_map(block, a)
        self.maps[l] = lmap
        pre = self.net.value(block.batchnorms[-1].value) if block.batchnorms else out
        # pre is what this returns: _record checks that it is finite (check_map leaves a value
        # that is not to that report)
        if self.check:
            check_map(block, lmap, a, pre, full=self.check == "full")
        self.pre[l] = pre if step.call.computed_in is None else self._widened_pre(lmap, a)
        return pre

    @staticmethod
    def _widened_pre(lmap, a: torch.Tensor) -> torch.Tensor:
        """z = W a + b in the record's dtype at the widened input of a layer the model computed in a
        narrower dtype (``nrm.capture.upcast``: a bfloat16 model explained in float32, a float64
        model's float32 RMSNorm): the denominators of the layer's kernel, so that its columns sum
        to one in the record's dtype (the model's own z is that rounded to the narrower dtype,
        which would leave the rounding to no one)."""
        z = lmap.forward(a, lmap.own_weight())
        bias = lmap.bias_for(z) if lmap.bias is not None else None
        return z if bias is None else z + bias

    # -- kernels ---------------------------------------------------------------------
    def kernel(self, l: int) -> PreparedKernel:
        if l not in self._kernels:
            self._kernels[l] = self._prepare(l)
        return self._kernels[l]

    def _prepare(self, l: int) -> PreparedKernel:
        block = self.net.blocks[l]
        rule, lmap = block.rule, self.maps[l]
        weights: dict = {}
        shares = rule.shares()
        if _divides(rule) and len(shares) == 1:
            return self._prepare_divisor(l, rule, shares[0], weights)
        B, shape, in_shape = (self.batch if self.folded[l] else 0), self.shape[l], self.in_shape[l]
        contributions, biases, parts_of = [], [], []
        for share in shares:
            z, parts = None, []
            for part, u, w in self._parts(l, share, weights):
                term = self.z_nobias[l] if part.input is identity and part.weight is identity else lmap.forward(u, w)
                z = term if z is None else z + term
                parts.append((None if part.input is ones else _as_samples(u, B, in_shape), w))
            if z is None:
                z = torch.zeros((self._n(l),) + self.rows[l], dtype=self.dtype, device=self.device)
            bias = lmap.bias_for(z)
            b = None if share.bias is None or bias is None else share.bias(TORCH, bias)
            contributions.append(z)
            biases.append(b)
            parts_of.append(parts)
        if getattr(rule, "reads_relevance", False):
            return PreparedKernel([(None, p) for p in parts_of], None,
                                  (tuple(_as_samples(z, B, shape) for z in contributions),
                                   tuple(_as_samples(b, B, shape) for b in biases)))
        scales, qbot = rule.column(TORCH, tuple(contributions), tuple(biases))
        shares = [(_as_samples(s, B, shape), p) for s, p in zip(scales, parts_of) if p]
        return PreparedKernel(shares, _as_samples(qbot, B, shape))

    def _parts(self, l: int, share, weights: dict) -> list:
        """[(part, u(a), v(w))] for the parts of a share that contribute; modified weights
        are formed once per layer (``weights``)."""
        lmap, a = self.maps[l], self.inputs[l]
        out = []
        for part in share.parts:
            if part.input is identity and part.weight is identity:
                out.append((part, a, lmap.own_weight()))
                continue
            u = part.input(TORCH, a)
            if part.input is not identity and not torch.any(u != 0):
                continue  # e.g. a⁻ for non-negative a: the part contributes nothing
            if part.weight not in weights:
                weights[part.weight] = lmap.structured(part.weight(TORCH, lmap.weight))
            out.append((part, u, weights[part.weight]))
        return out

    def _prepare_divisor(self, l: int, rule, share, weights: dict) -> PreparedKernel:
        """The kernel of a one-share rule of the base class (:func:`_divides`), kept as
        its denominator D = stabilize(Z + β) (:meth:`nrm.rules.Rule.column`) with D = ∞
        where D = 0, so that r / D sends that column wholly to ⊥.

        Z + β comes in one pass: for LRP-0/ε it is the forward's pre-activation, for one
        modified part (γ, z⁺) the modified forward with β as its bias. Z itself is only
        needed for q(⊥|k) = 1 − Z/D, and formed when that is asked for."""
        lmap = self.maps[l]
        items = self._parts(l, share, weights)
        B, shape = (self.batch if self.folded[l] else 0), self.shape[l]
        parts = [(None if part.input is ones else _as_samples(u, B, self.in_shape[l]), w) for part, u, w in items]
        # β(b), shaped like the bias a map takes in its forward, else like bias_for()'s view
        beta = None if share.bias is None or lmap.bias is None else share.bias(
            TORCH, lmap.bias if lmap.fuses_bias else lmap.bias_for(self.pre[l]))
        plain = len(items) == 1 and items[0][0].input is identity and items[0][0].weight is identity
        own = False
        nobias = self.z_nobias  # the closures below hold it, never the engine (no reference cycle)
        if plain and (beta is None or share.bias is identity):
            d = self.pre[l] if beta is not None else nobias[l]

            def contributions():
                return [nobias[l]]
        elif len(items) == 1:
            _, u, w = items[0]
            d, own = _affine(lmap, u, w, beta), True

            def contributions():
                return [lmap.forward(u, w)]
        else:
            z = None
            for part, u, w in items:
                term = nobias[l] if part.input is identity and part.weight is identity else lmap.forward(u, w)
                z = term if z is None else z + term
            if z is None:
                z = torch.zeros((self._n(l),) + self.rows[l], dtype=self.dtype, device=self.device)
            d, own = (z, False) if beta is None else (z + share.bias(TORCH, lmap.bias_for(z)), True)

            def contributions():
                return [z]
        eps = rule.stabilizer
        if eps != 0:
            if rule.stabilizer_sign == "signed":  # D + ε s(D), s from the sign bit (s(−0.0) = −1 only
                # on a column whose contributions are all zero, where no value depends on it)
                s = torch.copysign(_scalar(eps, d.dtype, d.device), d)
                d = d.add_(s) if own else d + s
            else:
                d = d.add_(eps) if own else d + eps
            own = True
        if not rule.denominators_nonzero(d) and _has_zero(d):
            zero = d == 0
            d = d.masked_fill_(zero, float("inf")) if own else d.masked_fill(zero, float("inf"))
        if B:  # a folded layer's rows, per sample
            d, per_row = _as_samples(d, B, shape), contributions

            def contributions():
                return [_as_samples(z, B, shape) for z in per_row()]
        return PreparedKernel(None, divisors=[(d, parts)], contributions=contributions)

    def columns(self, l: int, r: torch.Tensor) -> tuple[list, torch.Tensor]:
        """(scale, parts) per share and q(⊥|k) for the relevance r arriving at layer l: the
        columns of the kernel q_l(j | k) = Σ_s scale_s(k) Σ_p u_p(a_j) v_p(w_jk)."""
        kern = self.kernel(l)
        if kern.sums is None:
            return kern.shares, kern.qbot
        contributions, biases = kern.sums
        scales, qbot = self.net.blocks[l].rule.column(TORCH, contributions, biases, relevance=r)
        return [(s, p) for s, (_, p) in zip(scales, kern.shares) if p], qbot

    # -- one layer down / up ---------------------------------------------------------
    def step_down(self, l: int, r: torch.Tensor, rbot: torch.Tensor | None):
        """Relevance over V̄_l (stack (K, B, *shape_l), (K, B)) → over what layer l reads.

        For a layer with one input the result has that layer's shape; for a sum or a
        concatenation it is the stack (K, B, n, *shape) or the concatenation of the parts
        (:meth:`step_down_parts` splits it). ``rbot=None`` skips the absorber (a marginal
        over real neurons never needs it: the absorber chain only feeds itself)."""
        if l in self.splits:
            parts, rbot = self.step_down_parts(l, r, rbot)
            return torch.cat([t.reshape(t.shape[:2] + (-1,)) for _, t in parts], 2), rbot
        total, rbot = self._down(l, r, rbot)
        inputs = self.net.blocks[l].inputs
        if len(inputs) == 1 and self.net.blocks[l].kind != "concat":
            total = total.reshape(total.shape[:2] + self.shape[inputs[0]])
        return total, rbot

    def step_down_parts(self, l: int, r: torch.Tensor, rbot: torch.Tensor | None):
        """As :meth:`step_down`, split per input: ([(input layer, relevance)], r⊥)."""
        if l in self.splits:  # a product: θ_i r, summed over the positions factor i is broadcast to
            K, B = r.shape[:2]
            if rbot is not None and l in self.product_bot:
                rbot = rbot + self._absorbed(r, self.product_bot[l])
            return [(u, _unbroadcast(theta * r, (K, B) + shape).reshape((K, B) + self.shape[u]))
                    for u, (theta, shape) in zip(self.net.blocks[l].inputs, self.splits[l])], rbot
        total, rbot = self._down(l, r, rbot)
        block = self.net.blocks[l]
        K, B = total.shape[:2]
        if block.kind == "concat":
            dim, sizes = self.concat[l]
            parts = torch.split(total, list(sizes), dim=dim + 1)
        elif l in self.packed:  # per row
            parts = torch.split(total.reshape(K, self._n(l), -1), self.packed[l], dim=2)
        elif len(block.inputs) > 1:
            parts = total.unbind(2 + self.folded[l])
        else:
            parts = (total,)
        return [(u, t.reshape((K, B) + self.shape[u])) for u, t in zip(block.inputs, parts)], rbot

    def _down(self, l: int, r: torch.Tensor, rbot: torch.Tensor | None):
        K, B = r.shape[:2]
        block = self.net.blocks[l]
        in_shape = self.in_shape[l]
        if l in self.permutes:  # the same index map, moved by σ⁻¹
            sigma = self.permutes[l]
            inverse = sorted(range(len(sigma)), key=sigma.__getitem__)
            out = r.reshape((K, B) + self.shape[l]).permute((0, 1) + tuple(2 + i for i in inverse))
            return out.clone(memory_format=torch.contiguous_format).reshape((K, B) + in_shape), rbot  # fresh
        if l in self.routes:  # q(j|k) = [j = index[k]]: relevance moves with the values (per row)
            n = self._n(l)
            out = torch.zeros((K, n, _prod(self.in_rows[l])), dtype=r.dtype, device=r.device)
            out.index_add_(2, self.routes[l], r.reshape(K, n, -1))
            return out.reshape((K, B) + in_shape), rbot
        if block.kind in ("pass", "concat"):  # q(j|k) = δ_jk: relevance passes unchanged
            return r.reshape((K, B) + in_shape), rbot
        if block.kind == "maxpool":
            idx = self.winners[l]
            flat = r.reshape(K, idx.shape[0], idx.shape[1], -1)
            out = torch.zeros((K, idx.shape[0], idx.shape[1], _prod(self.in_rows[l][1:])), dtype=r.dtype,
                              device=r.device)
            out.scatter_add_(3, idx.unsqueeze(0).expand(K, -1, -1, -1), flat)
            return out.reshape((K, B) + in_shape), rbot
        kern = self.kernel(l)
        divide = kern.divisors is not None
        shares, qbot = (kern.divisors, None) if divide else self.columns(l, r)
        lmap = self.maps[l]
        total = None
        for factor, parts in shares:
            if not parts:
                continue
            g = (r / factor if divide else r * factor).reshape((-1,) + self.rows[l])
            for u, w in parts:
                t = lmap.transpose(g, w, self.in_rows[l]).reshape((K, B) + in_shape)
                if u is not None:
                    t.mul_(u)  # t is fresh: in place saves a temporary of the layer's size
                total = t if total is None else total.add_(t)
        if total is None:
            total = torch.zeros((K, B) + in_shape, dtype=r.dtype, device=r.device)
        if rbot is not None:
            rbot = rbot + self._absorbed(r, kern.qbot if divide else qbot)
        return total, rbot

    @staticmethod
    def _absorbed(r: torch.Tensor, qbot: torch.Tensor) -> torch.Tensor:
        """Σ_k q(⊥|k) r_k per stacked row: a batched dot product (no temporary of the
        layer's size), or a plain product when a relevance-dependent rule gave one column
        set per row."""
        K, B = r.shape[:2]
        if qbot.dim() == r.dim():
            return (r * qbot).reshape(K, B, -1).sum(-1)
        return torch.einsum("kbn,bn->kb", r.reshape(K, B, -1), qbot.reshape(B, -1))

    def step_up(self, l: int, v, vbot: torch.Tensor):
        """A function over what layer l reads (stack) → over V̄_l: v ↦ Qᵀ v, i.e.
        Σ_j q(j|k) v(j) + q(⊥|k) v(⊥). ``v`` is one tensor, or a list with one per input."""
        block = self.net.blocks[l]
        vs = v if isinstance(v, (list, tuple)) else [v]
        K, B = vs[0].shape[:2]
        in_shape = self.in_shape[l]
        if l in self.splits:  # Σ_i θ_i v(src_i(k)) (+ q(⊥|k) v(⊥) for the proportional split)
            out = None
            for t, (theta, shape) in zip(vs, self.splits[l]):
                term = theta * t.reshape((K, B) + shape)
                out = term if out is None else out + term
            out = out.expand((K, B) + self.shape[l])
            if l in self.product_bot:
                return out + self.product_bot[l] * vbot.reshape((K, B) + (1,) * len(self.shape[l])), vbot
            return out.clone(), vbot
        if block.kind == "concat":
            dim = self.concat[l][0]
            v_in = torch.cat([t.reshape((K, B) + self.post_shape[u]) for u, t in zip(block.inputs, vs)], dim + 1)
        elif l in self.packed:  # per row
            v_in = torch.cat([t.reshape(K, self._n(l), -1) for t in vs], 2).reshape((K, B) + in_shape)
        elif len(vs) > 1:
            v_in = torch.stack([t.reshape((K, B) + self.post_shape[u]) for u, t in zip(block.inputs, vs)],
                               2 + self.folded[l])
        else:
            v_in = vs[0].reshape((K, B) + in_shape)
        if l in self.permutes:
            moved = v_in.reshape((K, B) + in_shape).permute((0, 1) + tuple(2 + d for d in self.permutes[l]))
            return moved.clone(memory_format=torch.contiguous_format).reshape((K, B) + self.shape[l]), vbot
        if l in self.routes:
            return v_in.reshape(K, self._n(l), -1).index_select(2, self.routes[l]).reshape((K, B) + self.shape[l]), vbot
        if block.kind in ("pass", "concat"):
            return v_in.reshape((K, B) + self.shape[l]), vbot
        if block.kind == "maxpool":
            idx = self.winners[l]
            flat = v_in.reshape(K, idx.shape[0], idx.shape[1], -1)
            out = torch.gather(flat, 3, idx.unsqueeze(0).expand(K, -1, -1, -1))
            return out.reshape((K, B) + self.shape[l]), vbot
        kern, lmap = self.kernel(l), self.maps[l]
        if kern.sums is not None:
            raise RelevanceDependentRuleError(
                f"the rule of layer '{block.name}' ({block.rule!r}) reads the incoming relevance, so it has no fixed "
                "kernel to run upwards: marginals above an event's lowest constrained layer are undefined for it"
            )
        out = kern.qbot * vbot.reshape((K, B) + (1,) * len(self.shape[l]))
        divide = kern.divisors is not None
        for factor, parts in kern.divisors if divide else kern.shares:
            acc = None
            for u, w in parts:
                src = v_in if u is None else v_in * u
                t = lmap.forward(src.reshape((-1,) + self.in_rows[l]), w).reshape((K, B) + self.shape[l])
                acc = t if acc is None else acc + t
            if acc is not None:
                out = out + (acc / factor if divide else factor * acc)
        return out, vbot

    # -- many cylinders ----------------------------------------------------------------
    def down(self, start: torch.Tensor, jobs: list[tuple[dict[int, Constraint], int]], absorber: bool = True):
        """Masked backward for many cylinders at once.

        ``start`` is π (B, *shape_L). Each job is (constraints by layer, stop layer);
        returns, per job, the relevance stack at its stop layer: (r (B, *shape), r⊥ (B,)),
        where r(j) = μ(X_stop = j, constraints at layers ≥ stop). With ``absorber=False``
        the absorber is not tracked and r⊥ is None.

        Layers are visited from the output down in topological order. Relevance that has
        reached a layer from some but not all of its readers waits in ``pending``: that
        is the mass on the copies of the proper FFNN (§1) at the layer being visited, which
        a constraint with ``parallel=False`` removes and ``parallel=True`` keeps.

        The absorber of layer l, ⊥_l, holds the walks absorbed by the layers that read l
        (directly or not). On a branched model the walks absorbed by a parallel branch are
        not among them — at layer l they are on the copies that bypass it, whatever the
        trace's order of the branches — so the absorbed mass is kept per absorbing layer
        (a dict {layer: (K, B)}) and assigned to ⊥_l or to the copies at each layer.
        """
        L = self.net.depth
        if not absorber:
            rbot = None
        elif self.net.sequential:
            rbot = torch.zeros((1, self.batch), dtype=self.dtype, device=self.device)
        else:
            rbot = {}
        results: list = [None] * len(jobs)
        self._descend(L, {L: start.unsqueeze(0)}, rbot, 1, jobs, list(range(len(jobs))), [0] * len(jobs), results)
        return results

    def _descend(self, top: int, pending: dict, rbot, K: int, jobs, active: list, group: list, results: list,
                 resumed: bool = False) -> None:
        """:meth:`down` from layer ``top`` on, for the ``active`` jobs, whose rows of the
        stack are ``group[j]`` (K rows). Where the stack would outgrow ``stack_bytes`` below
        a layer, its rows (independent from there on) go down in slices, each resuming at
        that layer (``resumed``: its constraints are applied already)."""
        for l in range(top, -1, -1):
            if resumed and l == top:
                r = pending.pop(l)
            else:
                keys: dict = {}
                parents, constraints = [], []
                for j in active:
                    c = jobs[j][0].get(l)
                    key = (group[j], None if c is None else c.key)
                    if key not in keys:
                        keys[key] = len(parents)
                        parents.append(group[j])
                        constraints.append(c)
                    group[j] = keys[key]
                if parents != list(range(K)):
                    index = torch.tensor(parents, device=self.device)
                    pending = {u: t.index_select(0, index) for u, t in pending.items()}
                    rbot, K = _select(rbot, index), len(parents)
                r = pending.pop(l, None)
                if r is None:  # nothing reaches this layer (it does not lead to the output)
                    r = torch.zeros((K, self.batch) + self.shape[l], dtype=self.dtype, device=self.device)
                if any(c is not None for c in constraints):
                    r, rbot = self._apply(l, r, rbot, constraints)
                    pending = self._apply_copies(pending, constraints)
                still = []
                for j in active:
                    if jobs[j][1] == l:
                        results[j] = (r[group[j]], None if rbot is None else self._bot_at(rbot, l, K)[group[j]])
                    else:
                        still.append(j)
                active = still
                if not active:
                    return
                used = sorted({group[j] for j in active})
                if len(used) < K:
                    remap = {g: i for i, g in enumerate(used)}
                    index = torch.tensor(used, device=self.device)
                    r, rbot = r.index_select(0, index), _select(rbot, index)
                    pending = {u: t.index_select(0, index) for u, t in pending.items()}
                    group = [remap.get(g, -1) for g in group]
                    K = len(used)
                rows = self._rows(l)
                if rows < K:
                    pending[l] = r
                    del r
                    for i in range(0, K, rows):
                        n = min(rows, K - i)
                        part = [j for j in active if i <= group[j] < i + n]
                        sub = list(group)
                        for j in part:
                            sub[j] = group[j] - i
                        self._descend(l, {u: t[i:i + n] for u, t in pending.items()},
                                      _slice(rbot, i, n), n, jobs, part, sub, results, True)
                    return
            if isinstance(rbot, dict):
                zero = torch.zeros(r.shape[:2], dtype=self.dtype, device=self.device)
                parts, absorbed = self.step_down_parts(l, r, zero)
                rbot = {**rbot, l: absorbed}
            else:
                parts, rbot = self.step_down_parts(l, r, rbot)
            for u, t in parts:
                pending[u] = t if u not in pending else pending[u] + t

    def _ancestors(self, v: int) -> set:
        if v not in self._anc:
            self._anc[v] = self.net.ancestors(v)
        return self._anc[v]

    def _bot_at(self, rbot, l: int, K: int) -> torch.Tensor:
        """⊥_l: the mass absorbed by the layers that read l (a tensor as it is, on a chain)."""
        if not isinstance(rbot, dict):
            return rbot
        total = torch.zeros((K, self.batch), dtype=self.dtype, device=self.device)
        for v, t in rbot.items():
            if l in self._ancestors(v):
                total = total + t
        return total

    def _rows(self, l: int) -> int:
        """How many stacked rows may go down from layer l on within ``stack_bytes``: a row
        costs, at the widest step below, its relevance before and after the step."""
        if self._row_bytes is None:
            size = torch.empty((), dtype=self.dtype).element_size() * self.batch
            widest, self._row_bytes = 0, []
            for u in range(self.net.depth + 1):
                step = _prod(self.shape[u]) + (_prod(self.in_shape[u]) if u in self.in_shape else 0)
                widest = max(widest, step * size)
                self._row_bytes.append(widest)
        return max(1, self.stack_bytes // self._row_bytes[l])

    def up(self, jobs: list[tuple[dict[int, Constraint], int]]):
        """Qᵀ passes for the constraints *below* a layer.

        Each job is (constraints at layers < target, target); returns per job
        (v (B, *shape_target), v⊥ (B,)) with v(j) = μ(lower constraints | X_target = j),
        so that μ(X_t = j, upper, lower) = r(j) · v(j) (the Markov property, L7).
        ``live`` holds v on the layer being visited and on the copies of the values that
        a later layer still reads (skip paths), which a constraint with
        ``parallel=False`` sets to 0.
        """
        unique: dict = {}
        for cons, t in jobs:
            unique.setdefault((tuple(sorted((l, c.key) for l, c in cons.items())), t), (cons, t))
        keys = list(unique)
        K = len(keys)
        start = min(min(cons) for cons, _ in unique.values())
        consumers = self.net.consumers
        live = {u: torch.ones((K, self.batch) + self.shape[u], dtype=self.dtype, device=self.device)
                for u in range(start + 1) if u == start or max(consumers[u], default=-1) > start}
        vbot = torch.ones((K, self.batch), dtype=self.dtype, device=self.device)
        out: dict = {}
        top = max(t for _, t in unique.values())
        for l in range(start, top + 1):
            if l > start:
                if not self.net.sequential:  # μ(lower | absorbed at l): each constraint's ⊥ or bypass flag
                    vbot = self._absorbed_given(l, [unique[k][0] for k in keys])
                v, vbot = self.step_up(l, [live[u] for u in self.net.blocks[l].inputs], vbot)
                live[l] = v
                live = {u: t for u, t in live.items() if u == l or max(consumers[u], default=-1) > l}
            for i, k in enumerate(keys):
                if unique[k][1] == l:
                    out[k] = (live[l][i], vbot[i])
            if l == top:
                break
            constraints = [unique[k][0].get(l) for k in keys]
            if any(c is not None for c in constraints):
                live[l], vbot = self._apply(l, live[l], vbot, constraints)
                copies = self._apply_copies({u: t for u, t in live.items() if u != l}, constraints)
                live.update(copies)
        return [out[(tuple(sorted((l, c.key) for l, c in cons.items())), t)] for cons, t in jobs]

    def _absorbed_given(self, l: int, rows: list) -> torch.Tensor:
        """Per row, μ(the constraints below l | a walk absorbed at layer l): at a constrained
        layer s < l such a walk is at ⊥_s if l reads s, else on the copies that bypass s."""
        flags = []
        for cons in rows:
            f = 1.0
            for s, c in cons.items():
                if s < l:
                    f *= float(c.absorber if s in self._ancestors(l) else c.parallel)
            flags.append(f)
        t = torch.tensor(flags, dtype=self.dtype, device=self.device)
        return t.unsqueeze(1).expand(-1, self.batch)

    def _apply(self, l, r, rbot, constraints):
        masks, flags = [], []
        full = torch.ones(self.shape[l], dtype=torch.bool, device=self.device)
        for c in constraints:
            masks.append(full if c is None or c.mask is None else c.mask)
            flags.append(True if c is None else c.absorber)
        m = torch.stack(masks).unsqueeze(1)
        keep = torch.tensor(flags, dtype=r.dtype, device=self.device).unsqueeze(1)
        r = torch.where(m, r, torch.zeros((), dtype=r.dtype, device=r.device))
        if isinstance(rbot, dict):  # absorbed above l: ⊥_l if the absorbing layer reads l, else a copy
            bypass = torch.tensor([c is None or c.parallel for c in constraints], dtype=r.dtype,
                                  device=self.device).unsqueeze(1)
            return r, {v: t * (keep if l in self._ancestors(v) else bypass) for v, t in rbot.items()}
        return r, None if rbot is None else rbot * keep

    def _apply_copies(self, copies: dict, constraints) -> dict:
        """Keep the copies at a constrained layer only where the constraint admits the
        walks that bypass it (``parallel=True``)."""
        flags = [c is None or c.parallel for c in constraints]
        if not copies or all(flags):
            return copies
        keep = torch.tensor(flags, dtype=self.dtype, device=self.device)
        return {u: t * keep.view((-1,) + (1,) * (t.dim() - 1)) for u, t in copies.items()}


class _NoBias(Mapping):
    """z_l = W a without the bias, per linear layer, formed on first use (the forward adds
    the bias inside the linear map). Not (W a + b) − b: that cancels where |b| ≫ |W a|.

    It holds the engine's dictionaries, not the engine: no reference cycle, so an engine and
    its tensors (a large model's folded and rule-modified weights) are freed as soon as the
    last measure using it is, without waiting for Python's cycle collector."""

    def __init__(self, pre: dict, maps: dict, inputs: dict):
        self._pre, self._maps, self._inputs, self._cache = pre, maps, inputs, {}

    def __getitem__(self, l: int) -> torch.Tensor:
        if l not in self._cache:
            pre, lmap = self._pre[l], self._maps[l]
            self._cache[l] = pre if lmap.bias is None else lmap.forward(self._inputs[l], lmap.own_weight())
        return self._cache[l]

    def __iter__(self):
        return iter(self._pre)

    def __len__(self) -> int:
        return len(self._pre)


def _affine(lmap, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """W x + b, inside the linear map where it takes the bias (one pass fewer)."""
    if bias is None:
        return lmap.forward(x, weight)
    if lmap.fuses_bias:
        return lmap.forward(x, weight, bias)
    z = lmap.forward(x, weight)
    return z + bias if bias is not lmap.bias else z + lmap.bias_for(z)


def _as_samples(t, batch: int, shape: tuple):
    """A kernel tensor of a folded layer, held per row as its call computed it (B·G, *rows), as
    (B, *shape) — the same values in the same order; anything else (a number, a tensor per
    sample already or broadcast over rows) as it is. ``batch`` 0: a layer that does not fold,
    whose tensors are per sample already."""
    if batch and isinstance(t, torch.Tensor) and t.dim() and t.shape[0] != batch and \
            t.numel() == batch * _prod(shape):
        return t.reshape((batch,) + shape)
    return t


def _unbroadcast(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    """t summed over the dimensions where ``shape`` (same rank) has size 1 and t does not."""
    dims = [d for d, (n, m) in enumerate(zip(shape, t.shape)) if n == 1 and m != 1]
    return t.sum(dims, keepdim=True) if dims else t


@functools.lru_cache(maxsize=64)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-dim tensor of ``value``, made once per dtype and device (read, never written)."""
    return torch.tensor(value, dtype=dtype, device=device)


def _has_zero(t: torch.Tensor) -> bool:
    return int(torch.count_nonzero(t)) < t.numel()  # one read, no boolean temporary


def _divides(rule) -> bool:
    """Whether ``rule`` forms its columns with the base class's one-share arithmetic
    (κ = 1, a numeric stabilizer, leak="absorb"): the engine then divides by D itself."""
    cls = type(rule)
    same = all(getattr(cls, name, None) is getattr(Rule, name)
               for name in ("column", "coefficients", "stabilize", "share_coefficients", "denominators_nonzero"))
    return (same and not rule.reads_relevance and rule.leak == "absorb" and type(rule.stabilizer) in (int, float)
            and rule.stabilizer_sign in ("signed", "unsigned"))


def _select(t, index: torch.Tensor):
    """Rows of a stack, of None, or of every entry of a dict of stacks."""
    if isinstance(t, dict):
        return {k: v.index_select(0, index) for k, v in t.items()}
    return None if t is None else t.index_select(0, index)


def _slice(t, i: int, n: int):
    if isinstance(t, dict):
        return {k: v[i:i + n] for k, v in t.items()}
    return None if t is None else t[i:i + n]


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
