"""Slow, explicit LRP written from the equations: the reference side of L8 on any graph.

Independent of :mod:`nrm.engine` and of nrm's rule arithmetic (:meth:`nrm.rules.Rule.column`):
the model is read from what it computed (nrm's capture), every linear neuron layer
(``Linear``, ``Conv1d``/``Conv2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, a residual
addition) is turned into an explicit dense float64 matrix W (out neurons × in neurons,
obtained by applying the map to the identity basis; :mod:`nrm_verify.references.call_matrices`
writes each operation's), batch norm is folded into the
matrix before it, and the kernel of the layer's rule is written out per column from the
table of NRM-SPEC §2 (x⁺ = max(x, 0), x⁻ = min(x, 0), s(0) = +1, ρ_γ(w) = w + γ w⁺):

    LRP-0   q(j|k) = a_j w_jk / z_k                      q(⊥|k) = b_k / z_k
    ε       q(j|k) = a_j w_jk / D'_k,  D'_k = stab(z_k)  q(⊥|k) = (b_k + D'_k − z_k) / D'_k
    γ       q(j|k) = a_j ρ(w_jk) / D'_k                   q(⊥|k) = (ρ(b_k) + D'_k − D_k) / D'_k
    z⁺      q(j|k) = a_j w_jk⁺ / D'_k                     q(⊥|k) = (b_k⁺ + D'_k − D_k) / D'_k
    αβ      q(j|k) = α (a_j w_jk)⁺ / P'_k − β (a_j w_jk)⁻ / N'_k,   fallbacks (1, 0), (0, −1)
    w²      q(j|k) = w_jk² / D'_k,  D_k = Σ_j w_jk² [+ b_k²]
    flat    q(j|k) = [j ∈ in(k)] / D'_k,  D_k = |in(k)|
    z^B     q(j|k) = (a_j w_jk − l_j w_jk⁺ − h_j w_jk⁻) / D'_k   (the bias cancels)

with stab(D) = D + ε s(D) (``stabilizer_sign="signed"``) or D + ε (``"unsigned"``) and
q(⊥|k) the bias and stabilizer share. A zero denominator sends the column wholly to ⊥;
``leak="renormalize"`` rescales each column to sum 1 over real neurons (a column with no
real mass then goes to ⊥). A built-in rule object is only *read* (ε, γ, α, β, bounds, flags).

Any other rule — a user's, or a subclass of a built-in — gets the kernel derived from the
rule object itself: its ``shares()`` evaluated on the same dense matrices,
c_s(j,k) = Σ_p u_p(a_j) v_p(w_jk) on in(k), and the conventions written out as above
(:mod:`nrm_verify.references.derived`, where the equations are; hooks the rule overrides,
such as its own ``column``, are its definition and are called). So L18 applies to user
rules too; :func:`supports` says which rules have no kernel here (one that reads the
incoming relevance, or one whose ``shares()`` are unusable; :func:`unsupported_reason` why), and ``derive=True`` derives
the built-in rules' kernels as well, which agree with the table (tests/test_derived.py).

Non-linear nodes route relevance with q = 1: elementwise activations (ReLU, LeakyReLU,
``F.relu``, ``.relu()``), Dropout/Identity, reshapes (Flatten, ``view``, ``reshape``,
``torch.flatten``), ``torch.cat`` (each output neuron is one input neuron) and
``MaxPool2d`` (winner takes all: the first maximum in row-major window order). Relevance
reaching a node from several consumers adds up (fan-out, L18). Relevance is propagated in
reverse topological (fx) order, so for every node v the *cut* identity

    Σ_j R_j^(v) + pending(v) + absorbed(v) = f

holds, where pending(v) is relevance that bypasses v — already sent on edges that skip v,
or leaked to ⊥ by a node that does not read v (a parallel branch) — and absorbed(v) is what
the nodes that read v (directly or not) leaked to ⊥. Both are independent of the order of
parallel branches. On a sequential model pending = 0 and absorbed(v)/f = m_v(⊥_v) (L1, L8).
GNN-LRP's nested masking on the same graph is :mod:`nrm_verify.references.nested_masking`.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import nrm
from nrm.capture import Value, upcast
from nrm.errors import (
    RuleAssignmentError,
    TrainingModeError,
    UnknownLayerError,
    UnsupportedModuleError,
    ZeroOutputError,
)
from nrm.graph import reaching_calls, rule_types
from nrm.layers.attention import LogSoftmax, LogSumExp, MatMul, Softmax
from nrm.layers.message import SegmentSoftmax
from nrm.lrn import LRNIdentity, LRNTaylor
from nrm.presets import RuleMap
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus
from nrm_verify.references.call_matrices import (
    DTYPE,
    SCATTERS,
    affine,
    apply_masks,
    apply_recorded,
    centring_matrices,
    log_softmax_matrices,
    logsumexp_matrices,
    lrn_matrices,
    matmul_matrices,
    numel,
    reduction,
    scatter_max_matrices,
    segment_softmax_matrices,
    softmax_matrices,
    winners,
)
from nrm_verify.references.derived import UnsupportedRuleError, derived_kernel, why_not_derivable

LINEAR_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
PASS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.modules.dropout._DropoutNd)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
CAT_FUNCTIONS = (torch.cat, torch.concat)
PASS_FUNCTIONS = (F.relu, torch.relu, F.leaky_relu)
RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape)
PASS_METHODS = ("relu", "contiguous")
RESHAPE_METHODS = ("view", "reshape", "flatten")
CONSTANT_METHODS = ("size", "dim")
GATES = ("sigmoid", "hardsigmoid", "expit", "softmax", "segment_softmax")
"""Functions whose output, as a factor of a product, is a gate: a sigmoid's, a softmax's (SKNet's and
ResNeSt's radix attention), a graph attention's weights (they gate its messages)."""
HELD = ("rsqrt", "sqrt")
SCALINGS = ("mul", "div", "true_divide", "neg", "negative")
"""With one input-derived operand: a constant factor (c · x, x / c, −x)."""
ARITHMETIC = ("add", "sub", "mul", "div", "true_divide", "neg", "negative")
VIEWS = ("view", "reshape", "view_as", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze")
"""Views: the identity when they keep the shape (row-major order)."""
"""Functions whose output, as a factor of a product, is a normalizer held at its forward value
(RMSNorm's 1/σ, a hand-written LayerNorm's σ): it gets nothing under every split, the other
factors share the rest; so does a value computed from such outputs alone (1/σ, σ + ε)."""


# -- the traced graph -----------------------------------------------------------------------



def _tolerance(call) -> float:
    """Relative tolerance of the reference's self-checks: 1e-9, or 64 ulp of the dtype a call
    computed in when narrower than float64 (``call.computed_in``: a float32 step of a float64
    model, widened by nrm.capture.upcast)."""
    computed_in = getattr(call, "computed_in", None)
    return 1e-9 if computed_in is None else max(1e-9, 64 * torch.finfo(computed_in).eps)

@dataclass
class RefNode:
    """One tensor of the traced model: a neuron layer.

    ``kind`` is "input", "linear" (dense W, b, structure M; a kernel per sample) or
    "route" (each output neuron is one input neuron: ``route`` (B, n_out) indexes the
    concatenation of the input slots). ``inputs`` lists the producer names per slot."""

    name: str
    kind: str
    value: torch.Tensor  # (B, *shape), after the node's own (elementwise) op
    inputs: list[str] = field(default_factory=list)
    call: object = None  # the recorded operation (nrm.capture.Call)
    is_sum: bool = False
    lrn: bool = False  # a local response normalization: W and b at its input, by its rule's expansion
    reader: object = None  # the layer kind nrm reads the call with, when not the capture's (an unfolded batch norm)
    weight: torch.Tensor | None = None  # (n_out, n_in_total)
    bias: torch.Tensor | None = None  # (n_out,)
    structure: torch.Tensor | None = None  # (n_out, n_in_total) bool: in(k)
    route: torch.Tensor | None = None  # (B, n_out) int64
    aliases: list[str] = field(default_factory=list)  # pass-through names after it (rule lookup)
    factors: list = field(default_factory=list)  # a product's factors (captured values), flattened
    rule: object = None
    Q: torch.Tensor | None = None  # (B, n_in_total, n_out)
    qbot: torch.Tensor | None = None  # (B, n_out)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape[1:])


class _Tracer:
    """Reads what ``model(x)`` computes — a float64 copy of the model, recorded by nrm's
    capture (:func:`nrm.capture.capture`) — and makes one :class:`RefNode` per recorded
    operation that leads to the output, from the operation itself: linear ones become
    dense matrices by applying them to the unit basis, routing ones (reshapes,
    concatenations, activations, max-pooling winners) integer routes. What it reads of
    :mod:`nrm.layers` is each kind's *role* and arguments, never its maps."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        training = [n or "<model>" for n, m in model.named_modules() if m.training]
        if training:
            raise TrainingModeError(f"the model is in training mode ({', '.join(training[:5])}); call model.eval() "
                                    "before the LRP reference")
        self.model = copy.deepcopy(model).to(DTYPE)
        x = x.detach().to(DTYPE)
        self.captured = upcast(nrm.capture(self.model, x))  # steps the model computes in float32: widened
        self.calls = {c.index: c for c in self.captured.calls}
        reaching = reaching_calls(self.captured)
        self.readers = {}
        for c in reaching:
            for v in set(c.inputs):
                self.readers[v] = self.readers.get(v, 0) + 1
        self.readers[self.captured.output] = self.readers.get(self.captured.output, 0) + 1
        products = {c.index for c in reaching if c.kind is not None and c.kind.role == "product"}
        self.inner = {v for c in reaching if c.index in products for v in c.inputs
                      if v.node in products and v.item is None and self.readers[v] == 1}
        self.B = x.shape[0]
        self.of: dict = {Value(-1): "input"}  # captured value → RefNode name
        self.nodes: dict[str, RefNode] = {}
        self._add(Value(-1), RefNode("input", "input", self.captured.input))
        with torch.no_grad():
            for call in reaching:
                self._visit(call)
        self.output = self.of[self.captured.output]

    # -- bookkeeping ------------------------------------------------------------------------
    def _add(self, value, ref: RefNode) -> None:
        if ref.name in self.nodes:
            raise UnsupportedModuleError(f"two layers would be named {ref.name!r}; rename the module")
        if ref.value.dim() < 1 or ref.value.shape[0] != self.B:
            raise UnsupportedModuleError(
                f"'{ref.name}' does not keep the batch dimension first (it folds each sample into several rows: "
                f"{tuple(ref.value.shape)} for a batch of {self.B}); the explicit reference reads one row per sample, "
                "the exact oracle (nrm_verify.references.exact_dag) reads folds")
        self.nodes[ref.name] = ref
        self.of[value] = ref.name

    def _input(self, call, i: int = 0) -> RefNode:
        return self.nodes[self.of[call.kind.relevance_inputs(call)[i]]]

    def _route(self, call) -> tuple[torch.Tensor, list[str]]:
        """Apply the operation to integer tensors that name the input neurons: out neuron k ← slot index."""
        slots = call.kind.relevance_inputs(call)
        sizes = [numel(self.nodes[self.of[v]].shape) for v in slots]
        total, offsets = sum(sizes), [0]
        for size in sizes[:-1]:
            offsets.append(offsets[-1] + size)
        where = {v: i for i, v in enumerate(slots)}

        def index(v):
            i = where[v]
            base = torch.arange(self.B).reshape(self.B, 1) * total + offsets[i]
            return (base + torch.arange(sizes[i])).reshape((self.B,) + self.nodes[self.of[v]].shape).to(DTYPE)

        out = apply_recorded(call, index).reshape(self.B, -1).round().long()
        sample = torch.arange(self.B).reshape(self.B, 1)
        if not torch.equal(out // total, sample.expand_as(out)):
            raise UnsupportedModuleError(f"'{call.name}' mixes samples of the batch")
        return out % total, [self.of[v] for v in slots]

    # -- one recorded operation -------------------------------------------------------------
    def _visit(self, call) -> None:
        if call.kind is None:
            raise UnsupportedModuleError(f"{call.describe()}: {call.refusal or 'has no layer kind'}; the LRP "
                                         "reference reads what nrm reads")
        role, value = call.kind.role, Value(call.index)
        if role == "linear" and isinstance(call.kind, MatMul):
            self._matmul(call)
        elif role == "linear":
            a = self._input(call)
            if isinstance(call.kind, (Softmax, SegmentSoftmax, LogSumExp)):
                matrices = (logsumexp_matrices if isinstance(call.kind, LogSumExp) else
                            log_softmax_matrices if isinstance(call.kind, LogSoftmax) else
                            softmax_matrices if isinstance(call.kind, Softmax) else segment_softmax_matrices)
                W, b, M = matrices(call, a.value)
                self._check_dense(call.name, a.value, W, b, call.output, call)
                self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, weight=W, bias=b,
                                         structure=M))
                return
            if call.func is F.local_response_norm:  # its matrices depend on the rule: built once it is known
                self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, lrn=True))
                return
            if call.func in (F.layer_norm, F.group_norm, F.instance_norm):
                W, b, M = centring_matrices(call, a.value)
                self._check_dense(call.name, a.value, W, b, call.output, call)
                self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, weight=W, bias=b,
                                         structure=M))
                return
            if call.func in SCATTERS and reduction(call) == "amax":  # winner takes all: built at the input
                W, b, M = scatter_max_matrices(call, a.value)
                self._check_dense(call.name, a.value, W, b, call.output, call)
                self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, weight=W, bias=b,
                                         structure=M))
                return
            W, b, M = apply_masks(call, a.value, *affine(call, a.shape))
            self._check_dense(call.name, a.value, W, b, call.output, call)
            self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, weight=W, bias=b,
                                     structure=M))
        elif role == "sum":
            self._sum(call)
        elif role == "product":
            self._product(call)
        elif role == "winner":
            a = self._input(call)
            route = winners(call.name, call.kind.params(call), a.value, call.output)
            self._add(value, RefNode(call.name, "route", call.output, [a.name], call, route=route))
        elif role == "batchnorm":
            self._batchnorm(call)
        elif role in ("elementwise", "alias"):
            a = self._input(call)
            n = numel(a.shape)
            self._add(value, RefNode(call.name, "route", call.output, [a.name], call,
                                     route=torch.arange(n).expand(self.B, n)))
        else:  # reshape, concat: the operation routes neurons
            route, inputs = self._route(call)
            self._add(value, RefNode(call.name, "route", call.output, inputs, call, route=route))

    def _sum(self, call) -> None:
        """z = a^(1) + a^(2): a linear neuron with weights 1 and no bias."""
        a, b = (self._input(call, i) for i in range(2))
        eye = torch.eye(numel(a.shape), dtype=DTYPE)
        W = torch.cat([eye, eye], dim=1)
        self._check_dense(call.name, torch.cat([a.value.reshape(self.B, -1), b.value.reshape(self.B, -1)], 1), W,
                          None, call.output, call)
        self._add(Value(call.index), RefNode(call.name, "linear", call.output, [a.name, b.name], call, is_sum=True,
                                             weight=W, structure=W != 0))

    def _matmul(self, call) -> None:
        """O = A · V of two activations: a linear node over [A, V] (A's neurons first), per sample
        W[b, (j,p), A_ji] = θ V_ip and W[b, (j,p), V_ip] = (1 − θ) A_ji, θ the kind's split."""
        A, V = (self._input(call, i) for i in range(2))
        W, M = matmul_matrices(A.value, V.value, float(call.kind.theta))
        self._check_dense(call.name, torch.cat([A.value.reshape(self.B, -1), V.value.reshape(self.B, -1)], 1), W,
                          None, call.output, call)
        self._add(Value(call.index), RefNode(call.name, "linear", call.output, [A.name, V.name], call, weight=W,
                                             structure=M))

    def _factors(self, call) -> list:
        """The factors (captured values) of a product, nested products read only here expanded."""
        out = []
        for v in call.kind.relevance_inputs(call):
            inner = self.nodes.get(self.of.get(v, ""))
            if inner is not None and inner.kind == "product" and self.readers[v] == 1:
                out += inner.factors
                del self.nodes[inner.name]
            else:
                out.append(v)
        return out

    def _is_gate(self, v, names=GATES) -> bool:
        """A factor computed by a gate function (:data:`GATES`), seen through reshapes and aliases
        and through ``F.interpolate`` in a mode whose weights are ≥ 0 and sum to 1 (all but
        bicubic): a resampled gate's values are convex combinations of the gate's."""
        while v.node >= 0:
            call = self.calls[v.node]
            if call.kind.role in ("alias", "reshape"):
                v = call.kind.relevance_inputs(call)[0]
                continue
            if not call.whole and call.func is F.interpolate:
                mode = call.kwargs.get("mode", call.args[3] if len(call.args) > 3 else "nearest")
                if mode != "bicubic":
                    v = call.kind.relevance_inputs(call)[0]
                    continue
            return nrm.layers.base_name(call.module if call.whole else call.func) in names
        return False

    def _own_signal(self, call, factors) -> int | None:
        """An activation written by hand, x · g(x): the first factor computed from x through
        one-input maps that pass relevance whole (same-shape views, constant factors
        (:data:`SCALINGS`), elementwise functions), when every other factor is
        computed from x alone neuron by neuron (elementwise functions, :data:`ARITHMETIC` on
        values of the output's shape); None otherwise."""
        shape = tuple(call.output.shape)
        for i, v in enumerate(factors):
            x = v
            while x.node >= 0:
                c = self.calls[x.node]
                ins = c.kind.relevance_inputs(c) if c.kind is not None else c.inputs
                name = nrm.layers.base_name(c.module if c.whole else c.func)
                if len(ins) != 1 or tuple(c.output.shape) != shape or self._shape(ins[0]) != shape or (
                        c.kind.role not in ("alias", "elementwise") and name not in SCALINGS and name not in VIEWS):
                    break
                x = ins[0]
            others = [u for j, u in enumerate(factors) if j != i]
            if self._shape(x) == shape and all(self._computed_from(u, x, shape) for u in others):
                return i
        return None

    def _computed_from(self, v, x, shape) -> bool:
        stack, seen = [v], set()
        while stack:
            u = stack.pop()
            if u == x or u in seen:
                continue
            seen.add(u)
            if u.node < 0:
                return False
            c = self.calls[u.node]
            ins = c.kind.relevance_inputs(c) if c.kind is not None else c.inputs
            name = nrm.layers.base_name(c.module if c.whole else c.func)
            if c.kind is None or tuple(c.output.shape) != shape or not ins:
                return False
            if c.kind.role not in ("elementwise", "alias") and name not in ARITHMETIC and name not in VIEWS:
                return False
            if any(self._shape(w) != shape for w in ins):
                return False
            stack.extend(ins)
        return True

    def _shape(self, v) -> tuple:
        return tuple(self.captured.value(v).shape)

    def _is_held(self, v) -> bool:
        """A factor computed by rsqrt or sqrt (:data:`HELD`), or from such values alone through any
        operations (1/σ, σ + ε): one pass over the recorded calls in the order they ran, each
        call held when its function is in HELD or every input-derived input it reads is held."""
        if "_held" not in self.__dict__:
            held: dict[int, bool] = {}
            for index in sorted(self.calls):
                call = self.calls[index]
                inputs = call.kind.relevance_inputs(call) if call.kind is not None else call.inputs
                held[index] = nrm.layers.base_name(call.module if call.whole else call.func) in HELD or (
                    bool(inputs) and all(u.node >= 0 and held.get(u.node, False) for u in inputs))
            self._held = held
        return v.node >= 0 and self._held.get(v.node, False)

    def _product(self, call) -> None:
        """o = Π_i a⁽ⁱ⁾ (broadcast): Q[src_i(k), k] = θ_i, θ from the kind's ``split`` —
        "equal": 1/n; "signal": 1 to the one factor that is not a gate, 0 to the gates; "proportional":
        θ_i(k) = a⁽ⁱ⁾_{src_i(k)} / (S_k + ε sign S_k), S_k = Σ_j a⁽ʲ⁾_{src_j(k)}, the rest ε sign S_k / (…) to ⊥."""
        factors = self._factors(call)
        n = len(factors)
        if Value(call.index) in self.inner:  # flattened into the product that reads it: no kernel of its own
            self._add(Value(call.index), RefNode(call.name, "product", call.output, [], call, factors=factors))
            return
        nodes = [self.nodes[self.of[v]] for v in factors]
        out_shape = tuple(call.output.shape[1:])
        qbot = torch.zeros((self.B,) + out_shape, dtype=DTYPE)
        held = [self._is_held(v) for v in factors]
        if any(held):  # a held normalizer takes nothing; the other factors share as without it
            rest = [i for i, h in enumerate(held) if not h]
            if len(rest) != 1 and call.kind.split != "equal":
                raise UnsupportedModuleError(f"{call.describe()}: a held normalizer beside {len(rest)} other factors "
                                             f"under split={call.kind.split!r}")
            theta = [0.0 if h else 1.0 / len(rest) for h in held]
        elif call.kind.split == "proportional":  # LRP-prop: θ_i(k) = a⁽ⁱ⁾_{src_i(k)} / (S_k + ε sign S_k)
            full = [a.value.expand((self.B,) + out_shape) for a in nodes]
            S = sum(full[1:], full[0])
            eps = call.kind.stabilizer * torch.where(S >= 0, 1.0, -1.0).to(DTYPE)
            theta = [a / (S + eps) for a in full]
            qbot = eps / (S + eps)
        elif call.kind.split == "equal":
            theta = [1.0 / n] * n
        else:
            names = GATES + tuple(g.lower() for g in getattr(call.kind, "gates", ()))
            gates = [self._is_gate(v, names) for v in factors]
            glu = [self._is_gate(v, tuple(g.lower() for g in getattr(call.kind, "glu", ()))) for v in factors]
            if n == 2 and not any(gates) and glu.count(True) == 1:  # a gated linear unit: its activated factor gates
                gates = glu
            if gates.count(False) != 1 and (own := self._own_signal(call, factors)) is not None:
                gates = [i != own for i in range(n)]  # an activation written by hand: x · g(x)
            if gates.count(False) != 1:
                raise UnsupportedModuleError(f"{call.describe()}: split='signal' needs exactly one factor that is not "
                                             "a gate")
            theta = [0.0 if g else 1.0 for g in gates]
        K = numel(out_shape)
        sizes = [numel(a.shape) for a in nodes]
        Q = torch.zeros((self.B, sum(sizes), K), dtype=DTYPE)
        offset, value = 0, torch.ones((self.B,) + out_shape, dtype=DTYPE)
        for a, size, t in zip(nodes, sizes, theta):
            src = torch.arange(size).reshape(a.shape).expand(out_shape).reshape(-1)
            t = t.reshape(self.B, K) if isinstance(t, torch.Tensor) else t
            Q[:, offset + src, torch.arange(K)] += t
            offset += size
            value = value * a.value
        err = float((value - call.output).abs().max())
        if err > _tolerance(call) * max(1.0, float(call.output.abs().max())):
            raise RuntimeError(f"the product at '{call.name}' does not reproduce its forward (error {err:.2e})")
        self._add(Value(call.index), RefNode(call.name, "product", call.output, [a.name for a in nodes], call,
                                             factors=factors, Q=Q, qbot=qbot.reshape(self.B, K)))

    def _batchnorm(self, call) -> None:
        """Fold y = s (z − μ) + β, s = γ / √(σ² + eps), into the Linear/Conv before it."""
        p = self._input(call)
        mean, var = call.arg(1, "running_mean"), call.arg(2, "running_var")
        gamma, beta, eps = call.arg(3, "weight", None), call.arg(4, "bias", None), float(call.arg(7, "eps", 1e-5))
        scale = (gamma.detach() if gamma is not None else 1.0) / torch.sqrt(var.detach() + eps)
        shift = beta.detach() if beta is not None else torch.zeros_like(scale)
        channel = torch.arange(p.shape[0]).reshape((-1,) + (1,) * (len(p.shape) - 1)).expand(p.shape).reshape(-1)
        s, mu, t = scale[channel], mean.detach()[channel], shift[channel]
        if (p.kind != "linear" or p.is_sum or p.call is None or not p.call.kind.folds_batchnorm
                or self.readers.get(Value(p.call.index), 0) != 1):
            # a diagonal affine layer of its own: z = s a + (β − s μ)
            W, b = torch.diag(s), t - s * mu
            self._check_dense(call.name, p.value, W, b, call.output, call)
            self._add(Value(call.index), RefNode(call.name, "linear", call.output, [p.name], call, weight=W, bias=b,
                                                 structure=torch.eye(len(s), dtype=torch.bool),
                                                 reader=nrm.layers.REGISTRY.kinds.get("BatchNormAffine")))
            return
        bias = torch.zeros(len(channel), dtype=DTYPE) if p.bias is None else p.bias
        p.weight, p.bias = p.weight * s.reshape(-1, 1), (bias - mu) * s + t
        self._check_dense(p.name, self.nodes[p.inputs[0]].value, p.weight, p.bias, call.output, call)
        p.value = call.output
        n = numel(p.shape)
        self._add(Value(call.index), RefNode(call.name, "route", call.output, [p.name], call,
                                             route=torch.arange(n).expand(self.B, n)))

    def _check_dense(self, name, a, W, b, value, call=None) -> None:
        """The dense matrix reproduces the recorded value, to 1e-9 relative — or to the tolerance of
        the dtype ``call`` computed in, when the model computed it in float32 (:func:`_tolerance`)."""
        if W.dim() == 3:  # per sample (B, K, N)
            z = torch.einsum("bkn,bn->bk", W, a.reshape(a.shape[0], -1)) + (0 if b is None else b)
        else:
            z = a.reshape(a.shape[0], -1) @ W.T + (0 if b is None else b)
        err = float((z - value.reshape(z.shape)).abs().max()) if z.numel() else 0.0
        if err > _tolerance(call) * max(1.0, float(value.abs().max())):
            raise RuntimeError(f"the dense matrix of '{name}' does not reproduce its forward (error {err:.2e})")


def _stabilize(rule, d: torch.Tensor) -> torch.Tensor:
    eps = getattr(rule, "stabilizer", 0.0)
    if eps == 0:
        return d
    if rule.stabilizer_sign == "signed":
        return d + eps * torch.where(d < 0, -1.0, 1.0).to(DTYPE)
    return d + eps


def _divide(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """c / d per column (d (B, K) against c (B, N, K)); 0 where d = 0."""
    safe = torch.where(d == 0, torch.ones_like(d), d)
    return torch.where((d == 0).unsqueeze(1), torch.zeros_like(c), c / safe.unsqueeze(1))


def _fraction(rule, c: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q(j|k) = c_jk / D'_k, q(⊥|k) = (β_k + D'_k − D_k) / D'_k, D_k = Σ_j c_jk + β_k; D' = 0 → ⊥."""
    D = c.sum(1) + beta
    Ds = _stabilize(rule, D)
    dead = Ds == 0
    qbot = torch.where(dead, torch.ones_like(D), (beta + Ds - D) / torch.where(dead, torch.ones_like(Ds), Ds))
    return _divide(c, Ds), qbot


TABLE = (Zero, Epsilon, LRNTaylor, Gamma, ZPlus, WSquare, Flat, LRNIdentity, ZBox, AlphaBeta)
"""The rules whose kernel is written here by hand (the table of the module docstring); any other
rule's is derived from the rule object (:func:`nrm_verify.references.derived.derived_kernel`)."""


def unsupported_reason(rule) -> str:
    """'' when :func:`reference_lrp` can compute ``rule`` (see :func:`supports`), else why not."""
    if type(rule) in TABLE:
        return ""
    return why_not_derivable(rule)


def supports(rule) -> bool:
    """Whether this reference computes ``rule``'s kernel: the built-in rules of :data:`TABLE` by
    the hand-written formulas, any other rule (a user's, a subclass of a built-in) by deriving it
    from the rule object (:mod:`nrm_verify.references.derived`). Not supported: a rule that reads
    the incoming relevance (``reads_relevance = True``: no fixed kernel q(j|k)) and a rule whose
    ``shares()`` raise, are not Shares of Parts, or do not match its ``share_coefficients()``;
    :func:`unsupported_reason` says which. Law L18 is not applicable to those."""
    return not unsupported_reason(rule)


def rule_kernel(rule, a: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, M: torch.Tensor,
                in_shape: tuple[int, ...], *, derive: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel of ``rule`` at one linear layer: Q (B, N, K) with Q[b, j, k] = q(j|k) for sample b,
    and q(⊥|k) (B, K). ``a`` (B, N) are the inputs, ``W`` (K, N), ``b`` (K,) or None, ``M`` the
    structural fan-in in(k) as (K, N) booleans. A rule of :data:`TABLE` (its exact class) gets the
    hand-written formula; any other rule, or every rule with ``derive=True``, the kernel derived
    from its shares() and conventions (:mod:`nrm_verify.references.derived`; the two agree on the
    built-in rules, tests/test_derived.py)."""
    why = unsupported_reason(rule)
    if why:
        raise UnsupportedRuleError(f"the LRP reference cannot write the kernel of {rule!r}: {why}")
    if derive or type(rule) not in TABLE:
        return derived_kernel(rule, a, W, b, M, in_shape)
    B, (K, N) = a.shape[0], W.shape[-2:]
    A = a.unsqueeze(2)  # (B, N, 1)
    Wt = W.transpose(-1, -2) if W.dim() == 3 else W.T.unsqueeze(0)  # (B or 1, N, K)
    bias = torch.zeros(K, dtype=DTYPE) if b is None else b
    bias = bias.expand(B, K)
    structure = (M.transpose(-1, -2) if M.dim() == 3 else M.T.unsqueeze(0)).to(DTYPE)  # per sample: a max's winners
    pos, neg = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    kind = type(rule)
    if kind in (Zero, Epsilon, LRNTaylor):  # LRNTaylor: q = T_jk / (b_k + ε s(b_k)), T = a W on its expansion
        Q, qbot = _fraction(rule, A * Wt, bias)
    elif kind is Gamma:
        rho = lambda t: t + rule.gamma * pos(t)  # noqa: E731
        Q, qbot = _fraction(rule, A * rho(Wt), rho(bias) if rule.modify_bias else bias)
    elif kind is ZPlus:
        Q, qbot = _fraction(rule, A * pos(Wt), pos(bias) if rule.bias else torch.zeros_like(bias))
    elif kind is WSquare:
        Q, qbot = _fraction(rule, (structure * Wt ** 2).expand(B, N, K), bias ** 2 if rule.bias else 0 * bias)
    elif kind in (Flat, LRNIdentity):  # LRNIdentity: flat over the identity expansion's diagonal, q = δ
        Q, qbot = _fraction(rule, structure.expand(B, N, K), 0 * bias)
    elif kind is ZBox:
        low = torch.broadcast_to(torch.as_tensor(rule.low, dtype=DTYPE), in_shape).reshape(1, N, 1)
        high = torch.broadcast_to(torch.as_tensor(rule.high, dtype=DTYPE), in_shape).reshape(1, N, 1)
        Q, qbot = _fraction(rule, A * Wt - low * pos(Wt) - high * neg(Wt), 0 * bias)
    else:  # AlphaBeta
        Q, qbot = _alpha_beta(rule, A, Wt, bias)
    if rule.leak == "renormalize":
        real = Q.sum(1)
        empty = real == 0
        Q = _divide(Q, real)
        qbot = empty.to(DTYPE)
    return Q, qbot


def _alpha_beta(rule, A, Wt, bias):
    """α (a w)⁺ / P' − β (a w)⁻ / N'; N' = 0 → (α, β) = (1, 0); P' = 0 → (0, −1); both → ⊥."""
    pos, neg = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    cp = pos(A) * pos(Wt) + neg(A) * neg(Wt)
    cn = pos(A) * neg(Wt) + neg(A) * pos(Wt)
    P, Nn = cp.sum(1) + pos(bias), cn.sum(1) + neg(bias)
    Ps, Ns = _stabilize(rule, P), _stabilize(rule, Nn)
    one, zero = torch.ones_like(P), torch.zeros_like(P)
    alpha = torch.where(Ns == 0, one, torch.where(Ps == 0, zero, rule.alpha * one))
    beta = torch.where(Ns == 0, zero, torch.where(Ps == 0, -one, rule.beta * one))
    Q = alpha.unsqueeze(1) * _divide(cp, Ps) - beta.unsqueeze(1) * _divide(cn, Ns)
    bot_p = torch.where(Ps == 0, 0 * P, (pos(bias) + Ps - P) / torch.where(Ps == 0, one, Ps))
    bot_n = torch.where(Ns == 0, 0 * Nn, (neg(bias) + Ns - Nn) / torch.where(Ns == 0, one, Ns))
    qbot = torch.where((Ps == 0) & (Ns == 0), one, alpha * bot_p - beta * bot_n)
    return Q, qbot


# -- rule assignment -------------------------------------------------------------------------


def _assign(nodes: dict[str, RefNode], order: list[str], rules, aliases: dict | None = None) -> None:
    """Rules as nrm.explain assigns them: by name (a linear layer's own name or that of a
    pass-through right after it), nrm.FIRST (a linear node with no linear node between it
    and the input), module type, default. Residual sums: by name, then the key type
    ``nrm.Sum`` (presets map it to LRP-0), then the default. ``aliases``: names of module
    outputs (a block's name → the node of its value), which a rule mapping may also use."""
    rmap = RuleMap.of(rules)
    consumers: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for i in nodes[n].inputs:
            consumers[i].append(n)
    linear_above: dict[str, bool] = {}
    for n in order:
        node = nodes[n]
        linear_above[n] = any(linear_above[i] or nodes[i].kind == "linear" for i in node.inputs)
        if node.kind != "linear":
            continue
        cur = n
        while len(consumers[cur]) == 1:
            nxt = nodes[consumers[cur][0]]
            if nxt.kind != "route" or len(nxt.inputs) != 1 or nxt.call.kind.role == "winner":
                break
            node.aliases.append(nxt.name)
            cur = nxt.name
    for name, n in (aliases or {}).items():
        if nodes[n].kind == "linear" and name not in nodes[n].aliases:
            nodes[n].aliases.append(name)
    names = {n for n in order if nodes[n].kind == "linear"} | {a for n in order for a in nodes[n].aliases}
    unknown = sorted(set(rmap.by_name) - names)
    if unknown:
        raise RuleAssignmentError(f"the rule mapping names layers the model does not have: {unknown}")
    for n in order:
        node = nodes[n]
        if node.kind != "linear":
            continue
        named = [rmap.by_name[k] for k in [n] + node.aliases if k in rmap.by_name]
        if named:
            node.rule = named[0]
        elif node.is_sum:  # as nrm assigns it: key type nrm.Sum, then the default; LRP-0 before nrm had Sum
            node.rule = rmap.rule_for(n, nrm.Sum(len(node.inputs)), False) if hasattr(nrm, "Sum") else Zero()
        else:
            node.rule = rmap.rule_for(n, rule_types(node.call, node.reader), not linear_above[n])
        if node.rule is None:
            raise RuleAssignmentError(f"no rule for '{n}' ({node.call.describe()})")


# -- the passes -------------------------------------------------------------------------------


@dataclass
class Reference:
    """LRP of one batch by the reference: per layer name (module path, fx node name,
    "input", "output") the relevance R (B, *shape), and per name the cut quantities (B,):
    ``absorbed`` (relevance leaked to ⊥ by linear nodes after it, = f·m(⊥) on a sequential
    model), ``pending`` (relevance on edges that bypass it) and ``leaked`` (what the node's
    own kernel sends to ⊥). ``f`` is f_c(x) (B,); ``values`` the activations of every node
    (a linear node's after a folded batch norm)."""

    relevance: dict[str, torch.Tensor]
    absorbed: dict[str, torch.Tensor]
    pending: dict[str, torch.Tensor]
    leaked: dict[str, torch.Tensor]
    f: torch.Tensor
    order: list[str]
    rules: dict[str, object]
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    def marginal(self, layer: str) -> torch.Tensor:
        """R / f: the NRM marginal m_l by L8."""
        r = self.relevance[layer]
        return r / self.f.reshape((-1,) + (1,) * (r.dim() - 1))


class RefGraph:
    """The traced model (:class:`_Tracer`) as nodes (:class:`RefNode`) in topological order, with the
    rules assigned as nrm assigns them and every linear node's kernel Q, q(⊥) written out; the
    passes over it (``down``, ``up``, ``propagate``) are what the references run."""

    def __init__(self, model, x, rules, derive: bool = False):
        tracer = _Tracer(model, x)
        self.nodes, self.B, self.output = tracer.nodes, tracer.B, tracer.output
        # a module whose call returned a value (a block, a container) names that value's node, as in nrm
        self.aliases = {name: tracer.of[v] for name, v in tracer.captured.module_outputs.items()
                        if v in tracer.of and name not in self.nodes}
        self.order = list(self.nodes)
        _assign(self.nodes, self.order, rules, self.aliases)
        for node in self.nodes.values():
            if node.lrn:
                a = self.nodes[node.inputs[0]].value
                node.weight, node.bias, node.structure = lrn_matrices(node.call, a, node.rule)
                tracer._check_dense(node.name, a, node.weight, node.bias, node.value)
            if node.kind == "linear":
                a = torch.cat([self.nodes[i].value.reshape(self.B, -1) for i in node.inputs], 1)
                in_shape = self.nodes[node.inputs[0]].shape if len(node.inputs) == 1 else (a.shape[1],)
                node.Q, node.qbot = rule_kernel(node.rule, a, node.weight, node.bias, node.structure, in_shape,
                                                derive=derive)

    def result(self, R, absorbed, pending, leaked, f) -> Reference:
        def aliased(d):
            return {**d, **{a: d[n] for a, n in self.aliases.items() if n in d}, "output": d[self.output]}

        values = {n: self.nodes[n].value for n in self.order}
        rules = {n: self.nodes[n].rule for n in self.order if self.nodes[n].kind == "linear"}
        return Reference(aliased(R), aliased(absorbed), aliased(pending), leaked, f, self.names(), rules,
                         aliased(values))

    def names(self) -> list[str]:
        return self.order + ["output"]

    def resolve(self, layer: str) -> str:
        if layer == "output":
            return self.output
        if layer in self.aliases:
            return self.aliases[layer]
        if layer not in self.nodes:
            raise UnknownLayerError(f"no layer {layer!r}; layers are {self.names()}")
        return layer

    def down(self, node: RefNode, r: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """R over the node's outputs → R over each input slot, and the relevance sent to ⊥."""
        B = self.B
        r = r.reshape(B, -1)
        if node.Q is not None:
            r_in = torch.einsum("bnk,bk->bn", node.Q, r)
            leak = (node.qbot * r).sum(1)
        else:
            total = sum(numel(self.nodes[i].shape) for i in node.inputs)
            r_in = torch.zeros(B, total, dtype=DTYPE).scatter_add_(1, node.route, r)
            leak = torch.zeros(B, dtype=DTYPE)
        return list(torch.split(r_in, [numel(self.nodes[i].shape) for i in node.inputs], 1)), leak

    def ancestors(self, n: str) -> set:
        """Every node that ``n`` reads, directly or not."""
        if not hasattr(self, "_ancestors"):
            self._ancestors = {}
        if n not in self._ancestors:
            seen, todo = set(), list(self.nodes[n].inputs)
            while todo:
                u = todo.pop()
                if u not in seen:
                    seen.add(u)
                    todo += list(self.nodes[u].inputs)
            self._ancestors[n] = seen
        return self._ancestors[n]

    def up(self, node: RefNode, v_in: list[torch.Tensor]) -> torch.Tensor:
        """v over the input slots → Σ_j q(j|k) v(j) over the outputs (⊥ not in the event)."""
        v = torch.cat([t.reshape(self.B, -1) for t in v_in], 1)
        if node.Q is not None:
            return torch.einsum("bnk,bn->bk", node.Q, v)
        return v.gather(1, node.route)

    def propagate(self, start: torch.Tensor, mask_at: str | None = None, mask: torch.Tensor | None = None,
                  parallel: bool = False):
        """Relevance down the graph in reverse topological order; optionally masked at one node."""
        incoming = {n: torch.zeros((self.B,) + self.nodes[n].shape, dtype=DTYPE) for n in self.order}
        incoming[self.output] = incoming[self.output] + start
        R, absorbed, pending, leaked = {}, {}, {}, {}
        spent: dict[str, torch.Tensor] = {}  # relevance leaked to ⊥, per leaking node
        masked = False
        zero = torch.zeros(self.B, dtype=DTYPE)
        for n in reversed(self.order):
            node = self.nodes[n]
            r = incoming.pop(n)
            if n == mask_at:
                r = r * mask.to(DTYPE)
                masked = True
                if not parallel:  # only walks through the masked node go on
                    incoming = {k: torch.zeros_like(v) for k, v in incoming.items()}
                # ⊥ is not in the event; what a parallel branch leaked bypasses the node
                spent = {v: (t if parallel and n not in self.ancestors(v) else torch.zeros_like(t))
                         for v, t in spent.items()}
            R[n] = r
            # ⊥_n holds what the nodes reading n leaked; what other nodes leaked bypasses n
            absorbed[n] = sum((t for v, t in spent.items() if n in self.ancestors(v)), zero)
            pending[n] = sum((v.reshape(self.B, -1).sum(1) for v in incoming.values()), zero) + sum(
                (t for v, t in spent.items() if n not in self.ancestors(v)), zero)
            if node.kind == "input":
                continue
            parts, leak = self.down(node, r)
            leaked[n] = leak
            spent[n] = leak
            for i, part in zip(node.inputs, parts):
                incoming[i] = incoming[i] + part.reshape(incoming[i].shape)
        return R, absorbed, pending, leaked, masked


def start_relevance(graph: RefGraph, target) -> tuple[torch.Tensor, torch.Tensor]:
    """The relevance put on the output, R = f_c δ_c per sample (the output's shape), and f_c (B,);
    a zero f_c is a :class:`~nrm.errors.ZeroOutputError`."""
    out = graph.nodes[graph.output].value.reshape(graph.B, -1)
    c = torch.as_tensor(target).reshape(-1)
    c = c.expand(graph.B) if c.numel() == 1 else c
    if c.numel() != graph.B or c.dtype.is_floating_point:
        raise ValueError(f"target= takes one index or one per sample ({graph.B}), got {target!r}")
    f = out.gather(1, c.reshape(-1, 1).long()).reshape(-1)
    if bool((f == 0).any()):
        raise ZeroOutputError(f"f_c(x) = 0 for samples {(f == 0).nonzero().flatten().tolist()}")
    R = torch.zeros_like(out)
    R[torch.arange(graph.B), c.long()] = f
    return R.reshape(graph.nodes[graph.output].value.shape), f


def reference_lrp(model: nn.Module, x: torch.Tensor, target, rules=None, *, derive: bool = False) -> Reference:
    """Standard LRP of ``model`` at ``x`` for output ``target`` (an index, or one per sample),
    in float64, by explicit dense kernels; ``rules`` as :func:`nrm.explain` takes them, built-in
    or a user's (:func:`supports` says which cannot be computed, :func:`unsupported_reason` why). ``derive=True``
    derives the built-in rules' kernels from their shares() too, instead of the table.

    By L8 its marginals R/f equal nrm's m_l at every layer; by L9, with LRP-0 everywhere,
    R = a ⊙ ∂f/∂a at every node of a ReLU network, residual ones included."""
    graph = RefGraph(model, x, rules, derive)
    start, f = start_relevance(graph, target)
    R, absorbed, pending, leaked, _ = graph.propagate(start)
    return graph.result(R, absorbed, pending, leaked, f)


def reference_masked(model: nn.Module, x: torch.Tensor, target, rules, layer: str, mask: torch.Tensor,
                     parallel: bool = False) -> Reference:
    """f · μ(X_v = j, E) at every layer v for the event E = {X_layer ∈ mask} (CRP's conditional
    relevance; ``mask`` is a boolean tensor of one sample's shape of ``layer``, ⊥ excluded).

    ``parallel=False`` (zennit-crp's exclude_parallel=True): only walks through the masked
    neurons of ``layer``'s node. ``parallel=True`` (exclude_parallel=False): walks that
    bypass that node on a skip path are admitted unmasked. Layers at or below ``layer`` (in
    topological order) get the masked backward pass; layers above get R_k · v(k), where
    v(k) = Σ_j q(j|k) v(j) is the fraction of k's relevance that satisfies E (an upward pass;
    v = mask at ``layer``, 1 or 0 on nodes before it for parallel=True/False). ``absorbed``
    is then f · μ(X_v = ⊥, E)."""
    graph = RefGraph(model, x, rules)
    node_name = graph.resolve(layer)
    shape = graph.nodes[node_name].shape
    mask = torch.as_tensor(mask).to(torch.bool)
    if tuple(mask.shape) != shape:
        raise ValueError(f"the mask has shape {tuple(mask.shape)} but layer {layer!r} has shape {shape}")
    start, f = start_relevance(graph, target)
    R_full = graph.propagate(start)[0]
    R, absorbed, pending, leaked, _ = graph.propagate(start, node_name, mask, parallel)
    position = graph.order.index(node_name)
    v: dict[str, torch.Tensor] = {}
    for i, n in enumerate(graph.order):
        node = graph.nodes[n]
        if i < position:
            v[n] = torch.full((graph.B, numel(node.shape)), 1.0 if parallel else 0.0, dtype=DTYPE)
        elif i == position:
            v[n] = mask.reshape(1, -1).to(DTYPE).expand(graph.B, -1)
        else:
            v[n] = graph.up(node, [v[k] for k in node.inputs])
            if parallel and node.kind == "linear" and node_name not in graph.ancestors(n):
                # walks absorbed here never meet the masked node: they bypass it, in the event
                v[n] = v[n] + (1.0 - node.Q.sum(1))
            R[n] = R_full[n] * v[n].reshape(R_full[n].shape)
            absorbed[n] = torch.zeros(graph.B, dtype=DTYPE)
            pending[n] = torch.full((graph.B,), torch.nan, dtype=DTYPE)  # not defined above the mask
    return graph.result(R, absorbed, pending, leaked, f)
