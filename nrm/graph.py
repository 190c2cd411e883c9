"""A captured computation → its proper-FFNN view (NRM-SPEC §1).

Layers V_0 (the input), …, V_L, built from the calls that :func:`nrm.capture.capture`
recorded (only those that lead to the output), read through their layer kinds
(:mod:`nrm.layers`). Each call becomes:

* a **producer** — a new layer: a linear map (a rule splits it), a sum of branches, a
  winner-takes-all max-pool, or a concatenation (branches sharing a layer);
* a **trailing step** of the layer it reads — an elementwise activation, a reshape, an
  alias, or a batch norm folded into the ``Linear`` / ``Conv`` before it — when that
  layer's value has no other reader (a batch norm that cannot fold is a producer: the
  diagonal map of its kind's ``unfolded`` kind, :class:`nrm.layers.norm.BatchNormAffine`);
* a **pass layer** (q(j|k) = δ_jk) — the same activation or reshape when the value it reads
  also goes elsewhere; and every index map (permute, transpose, slicing, a piece of chunk:
  q(j|k) = [j = index[k]], :meth:`Block.route`).

Fan-out needs nothing more: relevance that reaches a value from several readers adds up
there (the duplication neurons of §1), and a skip path's relevance waits in the copies of
the proper layers it passes. Layers are numbered in the order the model computed them
(a topological order). Names: a module's name for the one operation of its call
(``"features.0"``), the function's name as torch.fx writes it for the others (``"add"``,
``"add_1"``, ``"relu"``); a module whose call holds several operations (a block, a
container) names its output.

The user's model is only read: its weights are the tensors the recorded calls received.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from .capture import Call, Captured, Value, capture, upcast
from .errors import (
    AmbiguousProductError,
    DeviceMismatchError,
    DtypeMismatchError,
    NonFiniteError,
    ShapeError,
    TrainingModeError,
    UnsupportedOperationError,
)
from .layers import REGISTRY
from .linear import LinearMap, SumMap
from .markers import Concat, Sum

_SCALINGS = frozenset({"ConstantScale", "Negate"})
"""Kinds that multiply their one input-derived operand by a constant, neuron by neuron."""
_SAME = frozenset({"View"})
"""Kinds that are the identity when they keep the shape (a view keeps row-major order)."""
_PER_NEURON = _SCALINGS | _SAME | {"AddConstant", "Add", "Multiply"}
"""Kinds besides the elementwise and alias roles that read their inputs at the output's neuron
when every shape is the output's (a constant added; a sum or product of same-shape values)."""

ROLE_KINDS = {"linear": "linear", "sum": "linear", "winner": "maxpool", "concat": "concat",
              "elementwise": "activation", "reshape": "reshape", "alias": "alias", "batchnorm": "alias",
              "product": "product"}
"""The engine's name for each role of :mod:`nrm.layers`."""


@dataclass(eq=False)
class Step:
    """One recorded call in its place in the proper FFNN."""

    name: str
    call: Call
    unfolded: Any = None
    """The kind that reads the call in place of the capture's (a batch norm that cannot fold)."""

    @property
    def kind(self) -> str:
        """linear, maxpool, concat, activation, reshape or alias (the engine's names)."""
        return ROLE_KINDS[self.layer_kind.role]

    @property
    def role(self) -> str:
        return self.layer_kind.role

    @property
    def layer_kind(self):
        """The :class:`nrm.layers.Kind` that reads this call."""
        return self.unfolded or self.call.kind

    @property
    def value(self) -> Value:
        return Value(self.call.index)

    @property
    def module(self) -> nn.Module | None:
        """The module whose one operation this is (``nn.Conv2d`` for its ``F.conv2d``), the
        marker :class:`~nrm.Sum` / :class:`~nrm.Concat` for a sum or a concatenation, else None."""
        role = self.layer_kind.role
        if role == "sum":
            return Sum(len(self.call.inputs))
        if role == "concat":
            return Concat(self.call.kind.dim(self.call))
        return self.call.module if self.call.owned else None

    @property
    def rule_types(self) -> tuple[type, ...]:
        return rule_types(self.call, self.layer_kind)


def rule_types(call: Call, kind=None) -> tuple[type, ...]:
    """Types a rule mapping may key a call's layer by: its module's classes when it is that
    module's one operation (most specific first), then its kind's (``nn.Conv2d`` for
    ``F.conv2d``, :class:`~nrm.Sum` for a sum)."""
    own = tuple(type(call.module).__mro__) if call.owned and call.module is not None else ()
    return own + tuple((kind or call.kind).types(call))


@dataclass
class Block:
    """Layer ``index``: its producer (None for the input) and the steps that only act on its
    neurons (activations, reshapes, aliases) or fold into it (batch norm).

    ``inputs`` are the layers the producer reads (one, or several for a sum or a
    concatenation). Layers are numbered in a topological order, so every input has a
    smaller index."""

    index: int
    producer: Step | None
    trailing: list[Step] = field(default_factory=list)
    batchnorms: list[Step] = field(default_factory=list)
    rule: Any = None
    inputs: list[int] | None = None
    factors: list[Value] | None = None
    """For a product: the values of its (flattened) factors, one per input."""
    split: tuple | None = None
    """For a product: θ_i = q(factor i | output) per input (fractions summing to 1)."""

    def __post_init__(self):
        if self.inputs is None:
            self.inputs = [] if self.producer is None else [self.index - 1]

    @property
    def name(self) -> str:
        return "input" if self.producer is None else self.producer.name

    @property
    def kind(self) -> str:
        """input, linear (a linear map or a sum), maxpool, concat, product, or pass (an activation
        or reshape that is a layer of its own because its input fans out: q(j|k) = δ_jk)."""
        if self.producer is None:
            return "input"
        k = self.producer.kind
        return k if k in ("linear", "maxpool", "concat", "product") else "pass"

    def route(self):
        """For a pass layer that is an index map (:meth:`nrm.layers.Reshape.index`): the flat
        input index of every output neuron (an int64 numpy array); otherwise None (q = δ)."""
        if self.producer is None or self.producer.role != "reshape":
            return None
        return self.producer.layer_kind.route(self.producer.call)

    @property
    def tip(self) -> Value:
        """The value the layer's readers see (after its trailing steps)."""
        if self.trailing:
            return self.trailing[-1].value
        return Value(-1) if self.producer is None else self.producer.value


def check_eval_mode(model: nn.Module) -> None:
    """nrm refuses models in training mode (dropout and batch norm would then be random or
    batch-dependent); it never switches the mode itself."""
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:5]) + (", …" if len(training) > 5 else "")
        raise TrainingModeError(
            f"the model is in training mode ({shown}); call model.eval() before nrm.explain "
            "(nrm never changes the mode of your model)"
        )


def check_input(x: Any) -> None:
    """The input is a floating tensor of finite values with a batch dimension."""
    if not isinstance(x, torch.Tensor):
        raise DtypeMismatchError(f"the input must be a torch.Tensor of shape (batch, ...), got {type(x).__name__}")
    if not x.is_floating_point():
        hint = ""
        if not x.is_complex() and x.dtype != torch.bool:
            hint = ("; token ids? nrm explains a model as a function of a floating input: embed the ids outside "
                    "the explanation (e = embedding(ids)) and explain a module that starts from e, e.g. "
                    "model(inputs_embeds=e) (docs/attention.md, 'Embeddings: the explained input'); integer "
                    "images: x.float()")
        raise DtypeMismatchError(f"the input must be floating point (float32 or float64), got {x.dtype}{hint}")
    if x.dim() < 2:
        raise ShapeError(f"x must have a batch dimension: shape (batch, ...), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ShapeError(f"x is an empty batch (shape {tuple(x.shape)}); give at least one sample")
    if x.numel() == 0:
        raise ShapeError(f"x has no values (shape {tuple(x.shape)}); each sample needs at least one")
    if x.device.type == "meta":
        raise DeviceMismatchError("the input is on the meta device, which holds no values; explain a real input "
                                  "(x.to('cpu') or a CUDA device)")
    if not all_finite(x):
        bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero().flatten().tolist()
        raise NonFiniteError(f"the input contains NaN or Inf (samples {bad}); clean the input first")


def diagnose_model_error(model: nn.Module, x: torch.Tensor) -> None:
    """After ``model(x)`` raised: a parameter or buffer on another device or of another
    floating dtype than the input is the likely cause; name it."""
    for path, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t is None or not t.is_floating_point():
            continue
        if t.device != x.device:
            raise DeviceMismatchError(
                f"'{path}' is on {t.device} but the input is on {x.device}; move both to one device "
                f"(model.to({str(x.device)!r}) or x.to({str(t.device)!r}))")
        if t.dtype != x.dtype:
            raise DtypeMismatchError(
                f"'{path}' is {t.dtype} but the input is {x.dtype}; convert one of them "
                "(model.double() with x.double(), or model.float() with x.float())")


class ProperFFNN:
    """The proper-FFNN view of ``model`` at the input ``x``: what ``model(x)`` computed
    (:func:`nrm.capture.capture`), as layers with fan-outs, sums and concatenations.

    ``output`` picks the tensor to explain when the model returns something else."""

    def __init__(self, model: nn.Module, x: torch.Tensor, *, output=None, check: bool | str = True):
        self.model = model
        check_input(x)
        try:
            self.captured: Captured = capture(model, x, output=output, check=check)
        except ShapeError:
            diagnose_model_error(model, x)
            raise
        self.dtype = x.dtype  # the model's; a bfloat16 / float16 record is explained in float32
        upcast(self.captured)
        self.blocks, self.aliases = _Builder(self.captured).build()
        self.consumers = _consumers(self.blocks)

    # -- what the rest of nrm asks ------------------------------------------------------
    @property
    def depth(self) -> int:
        """L: the index of the output layer."""
        return len(self.blocks) - 1

    def linear_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.kind == "linear"]

    @property
    def sequential(self) -> bool:
        """Whether every layer reads only the layer before it (no branches)."""
        return all(b.inputs == [b.index - 1] for b in self.blocks[1:])

    def cut_below(self, l: int) -> int:
        """The highest layer ≤ l that no skip or parallel path passes (no copies): all the
        relevance of the walks is on its own neurons and its absorber. A sequential
        model's every layer is one."""
        if not hasattr(self, "_cuts"):  # the highest layer each edge spans, then the cut at or below every layer
            reach, cuts = 0, []
            for u in range(len(self.blocks)):
                cuts.append(u if reach <= u else cuts[-1])
                reach = max(reach, max(self.consumers[u], default=u))
            self._cuts = cuts
        return self._cuts[l]

    def ancestors(self, l: int) -> set[int]:
        """Every layer that layer ``l`` reads, directly or not."""
        seen, todo = set(), list(self.blocks[l].inputs)
        while todo:
            u = todo.pop()
            if u not in seen:
                seen.add(u)
                todo += self.blocks[u].inputs
        return seen

    def tensors(self):
        """(name, tensor) of every constant tensor the recorded calls read (parameters,
        buffers, tensors the model computed without the input)."""
        for name, t, _ in self.captured.constants:
            if t.is_floating_point():
                yield name, t

    def raise_nonfinite(self, layer_name: str) -> None:
        """Called when a layer's output is not finite: name the culprit tensor, or the overflow."""
        for path, t in self.tensors():
            if not all_finite(t):
                raise NonFiniteError(f"'{path}' contains NaN or Inf; the model's weights must be finite")
        first = next((c for c in self.captured.calls if not all(all_finite(t) for t in c.outputs
                                                                  if t.is_floating_point())), None)
        where = f", first at {first.describe()}" if first is not None else ""
        raise NonFiniteError(
            f"the activations overflow to Inf/NaN at layer '{layer_name}' although input and weights are finite"
            f"{where} (an overflow, or an operation outside its domain: the log or square root of a negative value, "
            "a division by zero); use float64 or rescale the input, or keep that operation in its domain"
        )

    def value(self, v: Value) -> torch.Tensor:
        return self.captured.value(v)

    def linear_map(self, block: Block, a: torch.Tensor) -> LinearMap:
        """The map of a linear block at its recorded input ``a``, batch norms folded (built by
        the producer's kind, :meth:`nrm.layers.Linear.map`)."""
        step = block.producer
        if step.role == "sum":

            return SumMap(len(block.inputs), a.dtype, a.device)
        lmap = step.layer_kind.map(step.call, a, block.rule)
        for bn in block.batchnorms:
            if block.producer.layer_kind.name == "Dense" and a.dim() != 2:
                raise UnsupportedOperationError(
                    f"{bn.call.describe()} follows the Linear at '{step.name}', which acts on an input of shape "
                    f"{tuple(a.shape[1:])}: the batch norm then normalizes dim 1, not the Linear's output features, "
                    "so it cannot be folded into it. Flatten before the Linear, or remove the batch norm")
            lmap = bn.layer_kind.fold(bn.call, lmap, step.call.constants)
        return lmap


class _Builder:
    """Calls → blocks (see the module docstring)."""

    def __init__(self, captured: Captured):
        self.captured = captured
        self.blocks: list[Block] = [Block(0, None, inputs=[])]
        self.where: dict[Value, int] = {Value(-1): 0}  # value → the layer holding it
        self.problems: list[str] = []

    def build(self) -> tuple[list[Block], dict[str, tuple[int, Value]]]:
        calls = reaching_calls(self.captured)
        self.readers = Counter(v for c in calls for v in set(_relevance_inputs(c)))
        self.readers[self.captured.output] += 1
        self.calls = {c.index: c for c in self.captured.calls}
        for call in calls:
            self._add(call)
        if not self.problems:
            self._flatten_products()
        if self.problems:
            raise UnsupportedOperationError(_unsupported_message(self.problems))
        out = self.captured.output
        if out not in self.where:
            raise UnsupportedOperationError("the model returns its input unchanged; there is nothing to explain")
        last = self.blocks[-1]
        if self.where[out] != last.index or last.tip != out:
            raise UnsupportedOperationError(
                "the model's output is not the last operation on the input it computed; nrm explains the output of "
                "the computation")
        return self.blocks, self._aliases()

    def _add(self, call: Call) -> None:
        if call.kind is None:
            why = call.refusal or "has no layer kind in nrm"
            self.problems.append(f"{call.describe()}: {why}")
            return
        ins = _relevance_inputs(call)
        if not ins or any(v not in self.where for v in ins):
            return  # reads the output of a refused call (listed already) or only constants
        step = Step(call.name, call)
        role = call.kind.role
        if role == "winner":
            self._producer(call, step, [self.where[ins[0]]])
        elif role in ("linear", "sum", "concat"):  # a linear map of several inputs reads them packed (pack_inputs)
            self._producer(call, step, [self.where[v] for v in ins])
        elif role == "product":
            self._producer(call, step, [self.where[v] for v in ins])
            self.blocks[-1].factors = list(ins)
        elif role == "batchnorm":
            self._batchnorm(call, step, ins[0])
        else:
            self._elementwise(call, step, ins[0])

    def _producer(self, call: Call, step: Step, inputs: list[int]) -> None:
        block = Block(len(self.blocks), step, inputs=inputs)
        self.blocks.append(block)
        self.where[step.value] = block.index

    def _flatten_products(self) -> None:
        """Merge a product into the product that is its only reader (law K6: one n-ary product,
        whatever the association), renumber the layers, and give every product its split."""
        merged: set[int] = set()
        for block in self.blocks:
            if block.factors is None:
                continue
            inputs, factors = [], []
            for u, v in zip(block.inputs, block.factors):
                inner = self.blocks[u]
                if inner.factors is not None and inner.tip == v and self.readers[v] == 1:
                    merged.add(u)
                    inputs += inner.inputs
                    factors += inner.factors
                else:
                    inputs.append(u)
                    factors.append(v)
            block.inputs, block.factors = inputs, factors
        if merged:
            new = {}
            for block in self.blocks:
                if block.index not in merged:
                    new[block.index] = len(new)
            self.blocks = [b for b in self.blocks if b.index not in merged]
            for b in self.blocks:
                b.index, b.inputs = new[b.index], [new[u] for u in b.inputs]
            self.where = {v: new[l] for v, l in self.where.items() if l in new}
        for block in self.blocks:
            if block.factors is not None:
                kind = block.producer.layer_kind
                gates = [self._is_gate(v, "gate", getattr(kind, "gates", ())) for v in block.factors]
                held = [self._is_gate(v, "held") for v in block.factors]
                glu = [self._is_gate(v, None, getattr(kind, "glu", ())) for v in block.factors]
                try:
                    block.split = kind.shares(gates, block.producer.call.describe(), held, glu)
                except AmbiguousProductError:
                    signal = self._own_signal(block) if kind.split == "signal" else None
                    if signal is None:
                        raise
                    block.split = tuple(Fraction(int(i == signal)) for i in range(len(block.factors)))

    def _own_signal(self, block: Block) -> int | None:
        """The signal of a product that is an **activation written by hand** — every factor a
        per-neuron function of one tensor x of the output's shape, one of them x itself through
        maps that pass relevance whole (same-shape views, constant factors, elementwise kinds):
        x · Φ(x) spelled ``0.5 * x * (1 + torch.erf(x / √2))``, GPT-2's tanh GELU, Mish as
        ``x * tanh(softplus(x))``, x · x, sign(x) · x, ``F.lp_pool2d``'s sign(s) · relu(|s|).
        That factor's index (the first such), else None. The other factors are functions of the
        signal's own neurons, read as its gates (θ = 0): relevance passes to x_k whole, as
        through the activation's module (``nn.GELU``, ``nn.Mish``: the identity rule)."""
        shape = tuple(block.producer.call.output.shape)
        for i, v in enumerate(block.factors):
            x = self._unary_source(v, shape)
            if x is not None and all(j == i or self._per_neuron_of(u, x, shape) for j, u in enumerate(block.factors)):
                return i
        return None

    def _unary_source(self, v: Value, shape: tuple) -> Value | None:
        """The tensor x that ``v`` is computed from through one-input maps that keep ``shape``
        and pass relevance whole (aliases, same-shape views, constant factors c · x and −x,
        elementwise kinds), when ``v`` has ``shape``; else None."""
        while v.node >= 0:
            call = self.calls[v.node]
            ins = _relevance_inputs(call)
            if tuple(call.output.shape) != shape or len(ins) != 1 or call.kind is None \
                    or self._shape_of(ins[0]) != shape:
                break
            if call.kind.role not in ("alias", "elementwise") and call.kind.name not in _SCALINGS | _SAME:
                break
            v = ins[0]
        return v if self._shape_of(v) == shape else None

    def _per_neuron_of(self, v: Value, x: Value, shape: tuple) -> bool:
        """Whether ``v`` is computed from x alone, neuron by neuron: every operation between
        them keeps ``shape`` and reads its inputs at the same neuron (an elementwise kind, a
        same-shape view, a constant added or multiplied, a sum or product of such values)."""
        stack, seen = [v], set()
        while stack:
            u = stack.pop()
            if u == x or u in seen:
                continue
            seen.add(u)
            if u.node < 0:
                return False
            call = self.calls[u.node]
            kind = call.kind
            if kind is None or tuple(call.output.shape) != shape:
                return False
            if kind.role not in ("elementwise", "alias") and kind.name not in _PER_NEURON:
                return False
            ins = _relevance_inputs(call)
            if not ins or any(self._shape_of(w) != shape for w in ins):
                return False
            stack.extend(ins)
        return True

    def _shape_of(self, v: Value) -> tuple:
        return tuple(self.captured.value(v).shape)

    def _is_gate(self, v: Value, what: str | None = "gate", names: tuple = ()) -> bool:
        """Whether a factor is the output of a gating activation (``what="held"``: a normalizer
        held at its forward value, :meth:`_held`; ``None``: of one of the kinds ``names`` only),
        seen through views and aliases, and through a linear kind that says each output is a
        convex combination of its inputs (``keeps_gates``: an upsampled gate, GhostNetV2's)."""
        if what == "held":
            return self._held(v)
        while v.node >= 0:
            call = self.calls[v.node]
            role = call.kind.role if call.kind is not None else None
            if role in ("alias", "reshape") and _relevance_inputs(call):
                v = _relevance_inputs(call)[0]
                continue
            keeps = getattr(call.kind, "keeps_gates", None) if role == "linear" else None
            if keeps is not None and keeps(call) and _relevance_inputs(call):  # a gate resampled: still a gate
                v = _relevance_inputs(call)[0]
                continue
            if role == "linear":  # an attention's normalization (SegmentSoftmax.gate): its weights gate a product
                return what == "gate" and bool(getattr(call.kind, "gate", False))
            flagged = what is not None and bool(getattr(call.kind, what, False))
            return role == "elementwise" and (flagged or call.kind.name in names)
        return False

    def _held(self, v: Value) -> bool:
        """Whether ``v`` is a normalizer held at its forward value (AttnLRP Prop. 3.4, the
        identity on 1/σ): the output of a held elementwise kind (:attr:`Elementwise.held`: rsqrt,
        sqrt), or a value computed from held values alone (1/σ, σ + ε, the mean of the norms of
        ConvNeXt V2's GRN), through any operation. Evaluated without recursion (a factor may sit
        thousands of layers above the input), each value once per graph."""
        memo = self.__dict__.setdefault("_held_memo", {})
        stack = [v]
        while stack:
            u = stack[-1]
            if u in memo:
                stack.pop()
                continue
            call = self.calls[u.node] if u.node >= 0 else None
            if call is None or call.kind is None:
                held = False
            elif call.kind.role == "elementwise" and getattr(call.kind, "held", False):
                held = True
            else:
                inputs = _relevance_inputs(call)
                known = [memo.get(w) for w in inputs]
                if None in known and False not in known:  # decide an input first
                    stack.append(inputs[known.index(None)])
                    continue
                held = bool(inputs) and False not in known
            memo[u] = held
            stack.pop()
        return memo[v]

    def _batchnorm(self, call: Call, step: Step, src: Value) -> None:
        l = self.where[src]
        block = self.blocks[l]
        producer = block.producer
        clean = all(s.role == "alias" for s in block.trailing)
        if (producer is None or producer.role != "linear" or not producer.layer_kind.folds_batchnorm
                or block.tip != src or self.readers[src] != 1 or not clean):
            unfolded = REGISTRY.kinds.get(getattr(call.kind, "unfolded", None) or "")
            if unfolded is not None and unfolded.accepts(call) is None:  # a diagonal affine layer of its own
                self._producer(call, Step(call.name, call, unfolded), [l])
                return
            self.problems.append(
                f"{call.describe()}: this batch norm does not directly follow a Linear or Conv layer whose output "
                "goes nowhere else, so it cannot be folded into it; place it right after its Linear/Conv layer")
            return
        block.batchnorms.append(step)
        block.trailing.append(step)
        self.where[step.value] = l

    def _elementwise(self, call: Call, step: Step, src: Value) -> None:
        l = self.where[src]
        if call.kind.role == "reshape" and call.kind.route(call) is not None:  # an index map: a pass layer
            self._producer(call, step, [l])
        elif self.blocks[l].tip == src and self.readers[src] == 1:
            self.blocks[l].trailing.append(step)
            self.where[step.value] = l
        else:  # the value fans out (or the layer's value is read before this step): a layer of its own, q = δ
            self._producer(call, step, [l])

    def _aliases(self) -> dict[str, tuple[int, Value]]:
        """Every name of a layer: the steps' names, and the names of modules (containers
        included) whose call returned a value of the layer."""
        out: dict[str, tuple[int, Value]] = {}
        for block in self.blocks[1:]:
            for step in [block.producer] + block.trailing:
                out[step.name] = (block.index, step.value)
        for name, value in self.captured.module_outputs.items():
            if name not in out and value in self.where:
                out[name] = (self.where[value], value)
        return out


def pack_inputs(step: Step, ins: list[torch.Tensor]) -> torch.Tensor:
    """The input of a linear layer's map: the one tensor it reads; the stack of the summands of a
    sum (B, n, *shape); for a map of several input-derived tensors (a matrix product of two
    activations, :class:`nrm.layers.attention.MatMul`) their per-sample neurons concatenated in
    row-major order, (B, Σ_i |a⁽ⁱ⁾|) — the layer's in-neurons are the union of its parents."""
    if step.role == "sum":
        return torch.stack(ins, 1)
    if len(ins) == 1:
        return ins[0]
    return torch.cat([t.reshape(t.shape[0], -1) for t in ins], 1)


def _relevance_inputs(call: Call) -> list[Value]:
    if call.kind is None:
        return call.inputs
    return call.kind.relevance_inputs(call)


def reaching_calls(captured: Captured) -> list[Call]:
    """The calls whose results lead to the output, in the order they ran."""
    needed = {captured.output.node}
    keep = []
    for call in reversed(captured.calls):
        if call.index in needed:
            keep.append(call)
            needed.update(v.node for v in call.inputs if v.node >= 0)
    return keep[::-1]


def _unsupported_message(problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return (f"nrm cannot read {len(problems)} operation(s) of this model:\n{lines}\n"
            "Declare a layer kind for a module that contains them (nrm.layers.register; see docs/layers.md), "
            "or rewrite that part of forward() with supported operations")


def _consumers(blocks: list[Block]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {b.index: [] for b in blocks}
    for b in blocks:
        for u in b.inputs:
            out[u].append(b.index)
    return out


def all_finite(t: torch.Tensor) -> bool:
    """Whether every element is finite; a finite sum proves it at the cost of one reduction."""
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())
