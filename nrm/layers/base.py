"""Layer kinds, declared once: what an operation of a model is in the proper FFNN.

A **kind** says, for one family of operations,

* how the capture recognizes it: ``functions`` (what the model's code calls:
  ``torch.nn.functional.conv2d``, ``torch.Tensor.view``, ``torch.cat``) and/or ``modules``
  (module types recorded whole, as one operation: a user's own layer);
* its **role** in the proper FFNN (NRM-SPEC §1, §8): a ``linear`` map that a rule splits
  (q(j|k) from the rule's shares over its weights), a ``sum`` of branches, a ``winner``
  (winner-takes-all max-pooling), a ``concat``, an ``elementwise`` activation through which
  relevance passes unchanged (q(j|k) = δ_jk), a ``reshape`` or an ``alias`` (the same
  neurons under another shape or name), a ``batchnorm`` folded into the linear map before it;
* for its role: its map and transpose on tensors (:class:`~nrm.linear.LinearMap`), its
  exact form on fractions (:meth:`Linear.exact`, what the exact oracle multiplies), the rule
  types a rule mapping may key it by, and which calls it can read (:meth:`Kind.accepts`).

The engine, the graph, the exact oracle, the explicit reference, the strategies, the code
writer, ``nrm-verify check-layer`` and the symbolic layer read these declarations; none
keeps a list of its own. A user's module gets a kind with :func:`register`
(``docs/layers.md``)::

    @nrm.layers.register
    class ChannelScaleKind(nrm.layers.Linear):
        '''y_c = s_c · x_c: a diagonal linear map, any rule applies.'''
        modules = (ChannelScale,)

        def map(self, call, a, rule=None):
            return nrm.linear.DiagonalMap(call.module.scale)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import AmbiguousProductError, ArgumentError, UnsupportedModuleError
from ..recorded import Piece, dispatch_name

ROLES = ("linear", "sum", "winner", "concat", "elementwise", "reshape", "alias", "batchnorm", "product")


def base_name(func: Any) -> str:
    """fx's name for a call of ``func`` (``add`` for ``a + b`` and ``a += b``, ``relu`` for
    ``F.relu``, ``view`` for ``x.view``): layers of functional operations are named by it."""
    if isinstance(func, nn.Module):
        return type(func).__name__.lower()
    name = getattr(func, "__name__", None) or "op"
    if name == "fn":  # torch's boolean_dispatch wrappers (F.max_pool2d)
        name = dispatch_name(func, "max_pool2d")
    name = name.strip("_")
    if name.startswith(("i", "r")) and name[1:] in ("add", "sub", "mul", "truediv", "matmul"):
        name = name[1:]
    return name.rstrip("_") or "op"


class Kind:
    """A layer kind (see the module docstring). Subclass one of the role classes below."""

    functions: ClassVar[tuple] = ()
    modules: ClassVar[tuple[type, ...]] = ()
    role: ClassVar[str] = ""
    rule_types: ClassVar[tuple[type, ...]] = ()
    """Types a rule mapping may key this kind's layers by (``{nn.Conv2d: Gamma()}``)."""
    refused_rules: ClassVar[tuple[str, ...]] = ()
    """Built-in rules (by the names of ``nrm-verify check-rule``: "flat", "wsquare", …) whose
    kernel this kind cannot give and refuses with an error naming the layer; ``check-layer``
    draws the others."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def accepts(self, call) -> str | None:
        """None when this kind reads ``call``; otherwise the reason it cannot (e.g. an
        unsupported argument), which the error listing unsupported operations shows."""
        return None

    def types(self, call) -> tuple[type, ...]:
        """The rule types of this call's layer (by default :attr:`rule_types`)."""
        return self.rule_types

    def records(self, module: nn.Module) -> bool:
        """Whether a call of ``module`` (of one of :attr:`modules`) is recorded whole (default
        True). A kind that reads only some configurations of its module type returns False for
        the others, whose forward is then read operation by operation (GraphConv with
        ``aggr="max"``); a configuration it records and cannot read is refused by :meth:`accepts`."""
        return True

    def relevance_inputs(self, call) -> list:
        """The input-derived arguments relevance flows back to, in order."""
        return call.inputs

    def examples(self) -> list[tuple[nn.Module, tuple[int, ...]]]:
        """Modules (float64, eval mode) whose forward is read by this kind, each with the
        per-sample input shape it takes: ``nrm-verify check-layer`` and the strategies of
        :mod:`nrm_verify.properties.strategies` build networks around them. A kind for a module type
        (``modules = (MyLayer,)``) gets one example per type by default, built without
        arguments, when its input shape is declared as ``example_shape``."""
        shape = getattr(self, "example_shape", None)
        out = []
        for m in self.modules:
            try:
                module = m()
            except TypeError:
                continue
            if shape is not None:
                out.append((module.double().eval(), tuple(shape)))
        return out

    def code(self, module: nn.Module, writer: Any) -> str | None:
        """A Python expression that rebuilds ``module`` in a counterexample program (the code
        writer of :mod:`nrm_verify.properties.codegen` calls it for modules of this kind; ``writer.imports``
        takes the imports it needs). None: the module is written as a pickle."""
        return None

    def __repr__(self) -> str:
        return f"nrm.layers.{self.name}"


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """A float64 module in eval mode with reproducible weights (for a kind's examples)."""
    g = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module.eval()


@dataclass
class ExactMap:
    """A linear map unrolled into an explicit matrix, for the exact oracle: z_k = Σ_j a_j
    W[j, k] + b_k over flat (row-major) indices; ``connected[j, k]`` is the structural
    fan-in (zero weights included: the flat rule counts them)."""

    weight: np.ndarray  # object (n_in, n_out), exact
    connected: np.ndarray  # bool (n_in, n_out)
    bias: np.ndarray | None  # object (n_out,)
    out_shape: tuple


def to_fractions(t) -> np.ndarray:
    """A tensor (or number) → an object array of its exact values as fractions."""
    values = t.detach().to("cpu", torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, float)
    out = np.empty(values.shape, dtype=object)
    for idx in np.ndindex(values.shape):
        out[idx] = Fraction(float(values[idx]))
    return out


def zeros_object(shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out.fill(Fraction(0))
    return out


class Linear(Kind):
    """A linear map z = W a + b that the layer's rule splits (NRM-SPEC §2).

    Define :meth:`map` (the map and its transpose on tensors); :meth:`exact` defaults to
    the map applied to the unit basis in float64 (each entry is then exactly one weight).
    A kind whose weights are not representable that way (an average over 3 inputs is
    1/3 exactly) overrides it."""

    role = "linear"
    folds_batchnorm: ClassVar[bool] = False
    """Whether a batch norm right after this map (and only read there) folds into it."""
    arity: ClassVar[int] = 1
    """How many input-derived tensors the map reads: 1, or more for a product of activations
    (:class:`nrm.layers.attention.MatMul`, 2), whose factors are packed into one input
    (:func:`nrm.graph.pack_inputs`): its parents are the union of their neurons."""
    jacobian: ClassVar[bool] = True
    """Whether the map's W is the layer's Jacobian (LRP-0 through it is then Gradient ×
    Input, law L9); False for a map that holds an input-dependent factor at its forward
    value (layer norm's σ)."""

    def map(self, call, a: torch.Tensor, rule: Any = None):
        """The :class:`~nrm.linear.LinearMap` of ``call`` for its recorded input ``a``
        (batch, *in); ``rule`` is the layer's rule (for maps that depend on it, as LRN's)."""
        raise NotImplementedError(f"{self.name} must define map(call, a, rule)")  # abstract

    def exact(self, call, a: torch.Tensor, rule: Any = None) -> ExactMap:
        """The map as an explicit exact matrix at one sample ``a`` of shape (1, *in)."""
        lmap = self.map(call, a, rule)
        return exact_from_map(lmap, tuple(a.shape[1:]))


def exact_from_map(lmap, in_shape: tuple) -> ExactMap:
    """W, the structure and b of a linear map, read off its forward on the unit basis in
    float64 (each output of a unit vector is one weight: exact)."""
    n = math.prod(in_shape)
    dtype = lmap.weight.dtype
    basis = torch.eye(n, dtype=dtype, device=lmap.weight.device).reshape((n,) + tuple(in_shape))
    if hasattr(lmap, "batch") and getattr(lmap, "batch", 1) != 1:
        raise UnsupportedModuleError("an exact map is built for one sample")
    z = lmap.forward(basis, lmap.weight)
    out_shape = tuple(z.shape[1:])
    W = z.reshape(n, -1)
    ones = lmap.structured(torch.ones_like(lmap.weight))
    S = lmap.forward(basis, ones).reshape(n, -1) != 0
    bias = None
    if lmap.bias is not None:
        b = lmap.bias_for(torch.zeros((1,) + out_shape, dtype=dtype, device=W.device))
        bias = to_fractions(torch.broadcast_to(b, (1,) + out_shape).reshape(-1))
    return ExactMap(to_fractions(W), S.cpu().numpy(), bias, out_shape)


class Sum(Kind):
    """The addition of branches z = Σ_i a^(i) (NRM-SPEC §1): a linear neuron with weights 1
    over the summands, to which any rule applies."""

    role = "sum"


class Winner(Kind):
    """Winner takes all: each output is one input (q = 1 to it), chosen by the values."""

    role = "winner"

    def winners(self, call, a: torch.Tensor) -> torch.Tensor:
        """Flat input indices (batch, channels, out positions) of every output."""
        raise NotImplementedError(f"{self.name} must define winners(call, a)")  # abstract


class Concat(Kind):
    """Branches joined along a per-sample dimension: they share a layer, q = 1 to each part."""

    role = "concat"

    def dim(self, call) -> int:
        return call.arg(1, "dim", 0)


class Elementwise(Kind):
    """An elementwise function σ of one tensor that belongs to its neuron: relevance passes
    it unchanged, q(j | k) = δ_jk (ReLU, and the identity rule of AttnLRP and zennit's
    ``Pass`` for other activations; NRM-SPEC §8). Law L9 (LRP-0 = Gradient × Input)
    holds through it only when σ(z) = σ'(z)·z (``homogeneous``)."""

    role = "elementwise"
    homogeneous: ClassVar[bool] = False
    """σ(z) = σ'(z) z for every z (ReLU, leaky ReLU): LRP-0 stays Gradient × Input."""
    gate: ClassVar[bool] = False
    """Its output is a gate in (0, 1) (sigmoid, hardsigmoid): a factor of a product computed by
    it is the gate that ``split="signal"`` gives nothing (:class:`Product`)."""
    held: ClassVar[bool] = False
    """Its output is a normalizer held at its forward value (RMSNorm's 1/σ, AttnLRP Prop. 3.4):
    a factor of a product computed by it gets nothing under every split (:class:`Product`)."""

    def exact(self, call, z: np.ndarray) -> np.ndarray:
        """σ on exact values (an object array): by default σ in float64, as fractions."""
        t = torch.tensor([float(v) for v in np.asarray(z).reshape(-1)], dtype=torch.float64)
        out = self.evaluate(call, t)
        return to_fractions(out).reshape(np.asarray(z).shape)

    def evaluate(self, call, z: torch.Tensor) -> torch.Tensor:
        """σ on a tensor (by default the recorded call applied to ``z``)."""
        if call.whole:
            return call.func(z)
        args = (z,) + tuple(a for a in call.args[1:])
        return call.func(*args, **call.kwargs)


SPLITS = ("signal", "equal", "proportional")


class Product(Kind):
    """An elementwise product of n ≥ 2 input-derived factors, o = Π_i a⁽ⁱ⁾ with broadcasting
    (NRM-SPEC §8): output neuron k has one parent in each factor (its broadcast source), and
    q(a⁽ⁱ⁾_{src_i(k)} | o_k) = θ_i(k) with Σ_i θ_i(k) + q(⊥ | o_k) = 1. A factor neuron that
    several outputs broadcast to (a gate (B, C, 1, 1) against (B, C, H, W)) receives the sum
    of their shares. Nested products whose inner value has no other reader are flattened into
    one n-ary product first (law K6: the split does not depend on how ``a * b * c`` was
    associated). The split is the named parameter ``split``:

    * ``"signal"`` (default; LSTM-LRP, CP-LRP): a **gate** — a factor whose value is the output
      of a gating activation (:attr:`Elementwise.gate`: sigmoid, hardsigmoid) or of a softmax
      (SKNet's and ResNeSt's radix attention, :attr:`nrm.layers.attention.Softmax.gate`), possibly seen
      through views, reshapes or aliases — gets θ = 0, and the one other factor, the signal,
      θ = 1. A product of two factors, neither a gate, exactly one of which is the output of a
      **GLU activation** (``glu``, by default SiLU and GELU: SwiGLU's and GeGLU's
      act(gate(x)) · up(x), Shazeer 2020) is a gated linear unit: the activated factor is its
      gate and takes nothing (CP-LRP's and LXT's ``cp_gated_mlp_forward`` convention).
      A product whose factors are all computed from one tensor x neuron by neuron, one of them
      through maps that pass relevance whole (same-shape views, constant factors, elementwise
      kinds), is an **activation written by hand** (x · Φ(x) as ``0.5 * x * (1 + erf(x / √2))``,
      Mish, x · x): that factor is the signal, the others gates of its own neurons (decided
      by :mod:`nrm.graph`, which sees the factors' computation). Anything else (no gate, or
      more than one non-gate factor) is ambiguous and raises
      :class:`~nrm.errors.AmbiguousProductError`, which says how to choose;
    * ``"equal"`` (AttnLRP's uniform rule): θ_i = 1/n;
    * ``"proportional"`` (LRP-prop, Arras et al. 2019): each factor in proportion to its value,
      θ_i(k) = a⁽ⁱ⁾_{src_i(k)} / (S_k + ε s_k), S_k = Σ_j a⁽ʲ⁾_{src_j(k)}, s_k = sign(S_k)
      (+1 at 0), and q(⊥ | o_k) = ε s_k / (S_k + ε s_k): the stabilizer ε = ``stabilizer``
      (> 0) keeps the shares finite where the factors cancel, and its share goes to ⊥.

    The fixed splits give no absorber share (the kernel is exact); the proportional one is
    a kernel of the factors' values, like a rule's (:meth:`proportional`, :meth:`exact_proportional`).
    Choose with ``nrm.layers.register(nrm.layers.products.Multiply(split="equal"))``. ``gates``
    names further elementwise kinds whose outputs count as gates (``gates=("SiLU",)``: the gate
    of SwiGLU's act(gate(x)) · up(x) takes nothing under ``"signal"``, as in CP-LRP).
    """

    role = "product"

    GLU: ClassVar[tuple[str, ...]] = ("SiLU", "GELU")
    """The activations whose output is the gate of a gated linear unit by default (``glu``)."""

    def __init__(self, split: str = "signal", stabilizer: float = 1e-6, gates: tuple[str, ...] = (),
                 glu: tuple[str, ...] = GLU):
        if not isinstance(split, str) or split not in SPLITS:
            raise ArgumentError(f"Multiply(split=…) takes one of {', '.join(map(repr, SPLITS))} (the gate gets "
                                f"nothing, θ = 1/n for each factor, or θ in proportion to the factors' values), "
                                f"got {split!r}")
        if (isinstance(stabilizer, bool) or not isinstance(stabilizer, (int, float))
                or not math.isfinite(stabilizer) or stabilizer <= 0):
            raise ArgumentError(f"Multiply(stabilizer=…) is a finite number > 0 (the ε of the proportional split's "
                                f"S + ε sign(S)), got {stabilizer!r}")
        if not isinstance(gates, (tuple, list)) or not all(isinstance(g, str) for g in gates):
            raise ArgumentError(f"Multiply(gates=…) is a tuple of elementwise kind names (e.g. ('SiLU',) for SwiGLU's "
                                f"act(gate(x)) · up(x)), got {gates!r}")
        if not isinstance(glu, (tuple, list)) or not all(isinstance(g, str) for g in glu):
            raise ArgumentError(f"Multiply(glu=…) is a tuple of elementwise kind names whose output is the gate of "
                                f"a gated linear unit (default {Product.GLU!r}; () to refuse such products), got "
                                f"{glu!r}")
        self.split, self.stabilizer, self.gates, self.glu = split, float(stabilizer), tuple(gates), tuple(glu)

    def shares(self, gates: list[bool], where: str = "a product", held: list[bool] | None = None,
               glu: list[bool] | None = None) -> tuple[Fraction, ...] | None:
        """θ_i of the flattened factors, given which of them are gates; None for the
        proportional split, whose shares depend on the factors' values (:meth:`proportional`).
        A **held** factor (:attr:`Elementwise.held`, a normalizer's 1/σ) gets θ = 0 under every
        split and the others share as if it were not there (one other factor: θ = 1).
        ``glu``: which factors are outputs of a GLU activation (:attr:`glu`): with two factors,
        no gate among them and exactly one such, that one is the gate under ``"signal"``."""
        if held and any(held):
            rest = [i for i, h in enumerate(held) if not h]
            if len(rest) == 1:
                return tuple(Fraction(int(i == rest[0])) for i in range(len(held)))
            if self.split == "proportional":
                raise AmbiguousProductError(
                    f"{where}: a factor is a normalizer held at its forward value (1/σ) and {len(rest)} others are "
                    "not; split='proportional' does not say how to share among them. Choose split='equal' or "
                    "'signal'")
            inner = self.shares([gates[i] for i in rest], where)
            out = [Fraction(0)] * len(held)
            for i, t in zip(rest, inner):
                out[i] = t
            return tuple(out)
        n = len(gates)
        if self.split == "proportional":
            return None
        if self.split == "equal":
            return (Fraction(1, n),) * n
        signals = [i for i, g in enumerate(gates) if not g]
        if len(signals) == 2 == n and glu is not None and sum(map(bool, glu)) == 1:  # a gated linear unit
            signals = [i for i, g in enumerate(glu) if not g]
        if len(signals) != 1:
            what = "no factor" if not signals else f"{len(signals)} factors"
            raise AmbiguousProductError(
                f"{where}: split='signal' gives everything to the one factor that is not a gate (not the output of "
                f"a sigmoid, hardsigmoid or softmax), but {what} of the {n} "
                f"{'is' if len(signals) == 1 else 'are'} not a gate. Choose the uniform split, "
                "nrm.layers.register(nrm.layers.products.Multiply(split='equal')), or the proportional one "
                "(split='proportional')")
        return tuple(Fraction(int(i == signals[0])) for i in range(n))

    def proportional(self, factors: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The proportional split on tensors: factors (B, *shape_i) broadcasting to the output
        → ([θ_i (B, *out)], q(⊥) (B, *out)), θ_i = a⁽ⁱ⁾ / (S + ε s), q(⊥) = ε s / (S + ε s)."""
        shape = torch.broadcast_shapes(*(f.shape for f in factors))
        full = [f.expand(shape) for f in factors]
        total = torch.stack(full).sum(0)
        eps = self.stabilizer * torch.where(total >= 0, 1.0, -1.0).to(total.dtype)
        denom = total + eps
        return [f / denom for f in full], eps / denom

    def exact_proportional(self, factors: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """The proportional split on exact values (object arrays of fractions at each output
        neuron's sources, one per factor): the same formula, ε read as the fraction of its
        float64 value."""
        eps = Fraction(self.stabilizer)
        total = sum(factors[1:], factors[0])
        sign = np.array([1 if t >= 0 else -1 for t in total], dtype=object)
        denom = total + eps * sign
        return [f / denom for f in factors], (eps * sign) / denom

    def __repr__(self) -> str:
        extra = f", stabilizer={self.stabilizer!r}" if self.split == "proportional" else ""
        extra += f", gates={self.gates!r}" if self.gates else ""
        extra += f", glu={self.glu!r}" if self.glu != Product.GLU else ""
        return f"nrm.layers.{self.name}(split={self.split!r}{extra})"


_UNSET = object()
_ROUTES: dict = {}  # (kind type, route key) → index, oldest first
_ROUTES_KEPT = 256
_ROUTES_LOCK = threading.Lock()
_ROUTE_TENSORS: dict = {}  # (kind type, route key, device) → the index as a tensor, oldest first


def _kept(cache: dict, key, make):
    """``cache[key]``, made by ``make()`` the first time (None: not kept); the oldest of more than
    ``_ROUTES_KEPT`` entries is forgotten. Thread-safe; ``make`` runs outside the lock."""
    if key is None:
        return make()
    with _ROUTES_LOCK:
        found = cache.get(key, _UNSET)
    if found is not _UNSET:
        return found
    made = make()
    with _ROUTES_LOCK:
        cache[key] = made
        while len(cache) > _ROUTES_KEPT:
            cache.pop(next(iter(cache)))
    return made


class Reshape(Kind):
    """The same neurons in another per-sample shape (view, reshape, flatten), or an index map:
    each output neuron k is one input neuron j = index[k], and its relevance moves with its
    value, q(j | k) = [j = index[k]] (permute, transpose, slicing, a piece of chunk). An input
    neuron no output takes (a slice) receives nothing; one several outputs take (a repeated
    index) receives the sum of theirs.

    A kind that is not a row-major renaming defines :meth:`index`; its call is then a layer
    of its own (a pass layer), whose kernel the engine, the exact oracle and the references
    read from the index."""

    role = "reshape"

    def index(self, call) -> np.ndarray | None:
        """The flat (row-major, per-sample) input index of every output neuron, in the
        output's row-major order (an int64 array); None when the operation keeps the row-major
        order of the neurons (view, reshape, flatten)."""
        return None

    def route_key(self, call) -> Hashable | None:
        """What :meth:`index` depends on (shapes and constant arguments), for sharing one index
        between calls and between explains (the three permutes of a transformer layer's heads,
        the same model explained again); None: not shared."""
        return None

    def route(self, call) -> np.ndarray | None:
        """:meth:`index`, read-only, computed once per recorded call and, where
        :meth:`route_key` names it, once per shape and arguments in the process (the graph, the
        engine and the self-check all read it; slicing GPT-2's logits (T, 50257) builds an index
        over 6.4 M neurons)."""
        cached = call.__dict__.get("_route", _UNSET)
        if cached is not _UNSET:
            return cached
        key = self.route_key(call)

        def index():
            made = self.index(call)
            if made is not None:
                made.flags.writeable = False
            return made

        cached = _kept(_ROUTES, None if key is None else (type(self), key), index)
        call.__dict__["_route"] = cached
        return cached

    def route_tensor(self, call, device: torch.device) -> torch.Tensor | None:
        """:meth:`route` as an int64 tensor on ``device``, made once per route key and device in
        the process (the engine reads it, never writes it)."""
        route = self.route(call)
        if route is None:
            return None
        cached = call.__dict__.get("_route_tensor")
        if cached is not None and cached.device == torch.device(device):
            return cached
        key = self.route_key(call)
        tensor = _kept(_ROUTE_TENSORS, None if key is None else (type(self), key, str(device)),
                       lambda: torch.tensor(route, dtype=torch.long, device=device))  # a copy: routes are read-only
        call.__dict__["_route_tensor"] = tensor
        return tensor


class Alias(Kind):
    """The same neurons, unchanged (dropout in eval mode, contiguous, clone)."""

    role = "alias"


class BatchNorm(Kind):
    """A batch norm with running statistics, y = γ (z − μ) / √(σ² + ε) + β per channel: folded
    into the linear map before it (NRM-SPEC §1)."""

    role = "batchnorm"


class Registry:
    """The layer kinds the capture knows, by function and by module type."""

    def __init__(self):
        self.kinds: dict[str, Kind] = {}
        self._functions: dict[Any, list[Kind]] = {}
        self._modules: dict[type, Kind] = {}

    def register(self, kind: type[Kind] | Kind) -> type[Kind] | Kind:
        """Declare a kind (a :class:`Kind` subclass or instance); returns it (a decorator)."""
        instance = kind() if isinstance(kind, type) else kind
        if not isinstance(instance, Kind) or instance.role not in ROLES:
            raise TypeError(f"register() takes a subclass of one of nrm.layers' kinds (Linear, Elementwise, …), "
                            f"got {kind!r}")
        if not instance.functions and not instance.modules:
            raise TypeError(f"{instance.name} declares neither functions= nor modules=: nothing would reach it")
        for m in instance.modules:
            if not (isinstance(m, type) and issubclass(m, nn.Module)):
                raise TypeError(f"{instance.name}.modules must hold nn.Module subclasses, got {m!r}")
        self.unregister(instance.name)
        self.kinds[instance.name] = instance
        for f in instance.functions:
            self._functions.setdefault(_key(f), []).insert(0, instance)
        for m in instance.modules:
            self._modules[m] = instance
        return kind

    def unregister(self, name: str | type[Kind] | Kind) -> None:
        """Remove a kind (by name, class or instance); no error when it is not registered."""
        if not isinstance(name, str):
            name = name.__name__ if isinstance(name, type) else name.name
        instance = self.kinds.pop(name, None)
        if instance is None:
            return
        for f in instance.functions:
            self._functions[_key(f)] = [k for k in self._functions.get(_key(f), []) if k is not instance]
        for m in instance.modules:
            if self._modules.get(m) is instance:
                del self._modules[m]

    def module_kind(self, module: nn.Module) -> Kind | None:
        """The kind recording a module call whole (its type or a base class declared)."""
        if not self._modules:
            return None
        for klass in type(module).__mro__:
            kind = self._modules.get(klass)
            if kind is not None:
                return kind if kind.records(module) else None
        return None

    def function_kinds(self, func: Any) -> list[Kind]:
        return self._functions.get(_key(func), [])

    def resolve(self, call) -> tuple[Kind | None, str | None]:
        """(the kind that reads ``call``, None) or (None, why none does)."""
        if call.whole:
            kind = call.kind
            reason = kind.accepts(call)
            return (kind, None) if reason is None else (None, reason)
        candidates = self.function_kinds(call.func)
        reasons = []
        for kind in candidates:
            reason = kind.accepts(call)
            if reason is None:
                return kind, None
            reasons.append((kind.name, reason))
        if len(reasons) > 1:  # several kinds read this function: each says why not
            return None, "; ".join(f"{name}: {reason}" for name, reason in reasons)
        return None, (reasons[0][1] if reasons else None)


def _key(func: Any) -> Any:
    if isinstance(func, Piece):  # a piece of torch.chunk is read by the kind of torch.chunk
        return func.func
    owner = getattr(func, "__self__", None)
    if getattr(func, "__name__", None) == "__get__" and type(owner).__name__ == "getset_descriptor":
        return owner
    return func
