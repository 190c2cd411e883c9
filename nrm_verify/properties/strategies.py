"""Hypothesis strategies for property tests of the NRM: networks, inputs, events, rules.

Every value these strategies draw prints as Python that rebuilds it, so a shrunk
counterexample can be pasted into a test:

* :func:`networks` draws a :class:`Network` — an ``nn.Sequential`` (float64, eval) whose
  repr is ``nn.Sequential(linear([[…]], […]), nn.ReLU(), …)`` with every weight written
  exactly (``repr`` of a float64 round-trips bit for bit; see :mod:`nrm_verify.properties.codegen`);
* :func:`inputs` draws an :class:`Input` whose repr is ``torch.tensor([[…]], dtype=torch.float64)``;
* :func:`events` draws events whose repr is ``At('2', index=[0]) | ~At('input', index=[1])``;
* :func:`rules` draws built-in rules (their repr is ``nrm.rules.Gamma(0.25)``) and
  :func:`rule_assignments` per-layer mappings or presets (``nrm.presets.EpsilonGammaFlat(…)``);
* :func:`cases` puts them together in a :class:`Case` whose repr rebuilds all of it and
  whose :meth:`Case.script` is a runnable program.

What the networks contain (each feature is a drawn flag, so shrinking removes it):
MLPs and small CNNs (``Conv1d``, ``Conv2d``, ``ReLU``, ``LeakyReLU``, identity,
``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``Flatten``, ``BatchNorm1d/2d``
folded, ``Dropout``/``Identity`` aliases, nested ``Sequential`` names), with and without
biases, zero weights (weights are drawn from k/4 first, 0 included), dead units (a unit
whose incoming weights are all zero, or whose pre-activation is pushed below zero at the
drawn input), tied weights (two units with the same incoming weights, so equal
pre-activations and max-pool ties) and near-zero pre-activations (a bias chosen so that
a pre-activation is 0, ±1e-12 or 1e-9 at the drawn input).

How the laws treat near-zero pre-activations: an exact zero is not an approximation —
the rule's zero-denominator convention sends the column to ⊥ and every law is held to
its full tolerance. A tiny non-zero pre-activation gives huge kernel entries; the laws
measure deviations relative to the sum of the absolute terms that were added
(:mod:`nrm_verify.laws`; for kernel columns, the parts u_p(a_j)·v_p(w_jk) themselves), so
the linear laws (L1–L3, L6, L8, L17, batch invariance) still hold to ~1e-9, while
conditionals (L4, L5, L7) skip samples whose conditioning event is null and the limit
laws (L10, L12) report "not applicable" where the pre-activation (or the z⁺ denominator)
is too small for the limit to show at the ε (γ) they use, and otherwise widen their
bound by the asymptotic error term.

Hypothesis profiles (registered on import, :mod:`nrm_verify.properties.profiles`): ``ci`` —
derandomized, 20 examples, no deadline, no example database; ``thorough`` — 400 examples,
no deadline. Load one with ``HYPOTHESIS_PROFILE=ci`` (read by the nrm-verify pytest
plugin) or ``--hypothesis-profile``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import assume
from hypothesis import strategies as st
from torch import nn

import nrm
from nrm.engine import Engine
from nrm.events import OMEGA, At, Event
from nrm.graph import ProperFFNN
from nrm.presets import FIRST, RuleMap
from nrm.rules import RULES, AlphaBeta, Epsilon, Flat, Gamma, Rule, WSquare, ZBox, Zero, ZPlus
from nrm_verify.properties.codegen import Writer, batchnorm1d, batchnorm2d, conv1d, conv2d, linear
from nrm_verify.properties.profiles import PROFILES  # registers the "ci" and "thorough" hypothesis profiles

DTYPE = torch.float64


# -- numbers ----------------------------------------------------------------------------------
class Numbers:
    """Weights and inputs in [low, high]. A tensor is filled either with multiples of 1/4
    (exact sums, readable, 0 included; shrinking goes there) or, one time in five, with
    arbitrary floats in range (|v| ≥ 1e-3 or 0, so that no product underflows)."""

    def __init__(self, low: float = -2.0, high: float = 2.0):
        if not low <= high:
            raise ValueError(f"numbers() needs low <= high, got [{low}, {high}]")
        self.low, self.high = low, high
        self.quarters = st.integers(math.ceil(low * 4), math.floor(high * 4)).map(lambda k: k / 4)
        self.floats = st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False).map(
            lambda v: v if abs(v) >= 1e-3 else 0.0)

    def __repr__(self) -> str:
        return f"numbers({self.low!r}, {self.high!r})"

    def tensor(self, draw, shape: Sequence[int]) -> torch.Tensor:
        n = math.prod(shape)
        values = self.floats if draw(st.integers(0, 4)) == 4 else self.quarters
        return torch.tensor(draw(st.lists(values, min_size=n, max_size=n)), dtype=DTYPE).reshape(tuple(shape))


def numbers(low: float = -2.0, high: float = 2.0) -> Numbers:
    """How weights and input values are drawn (see :class:`Numbers`)."""
    return Numbers(low, high)


def _matrix(draw, shape: Sequence[int], values: Numbers) -> torch.Tensor:
    return values.tensor(draw, shape)


# -- networks ---------------------------------------------------------------------------------
class Network:
    """A drawn model (``nn.Sequential``, float64, eval) and the shape of one input sample.
    Its repr is the code that rebuilds the model."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        self.model = model
        self.input_shape = tuple(input_shape)
        self._engine: Engine | None = None

    def _forward(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(ProperFFNN(self.model, torch.zeros((1,) + self.input_shape, dtype=DTYPE)))
        return self._engine

    def layers(self) -> dict[str, tuple[int, tuple[int, ...]]]:
        """Every layer name → (layer index, the shape that name sees), as nrm names them."""
        return dict(self._forward().aliases)

    def canonical(self) -> list[str]:
        """One name per layer 0..L: the first name under which the layer has its own
        shape (the names :mod:`nrm_verify.laws` uses)."""
        engine = self._forward()
        return canonical_names(engine.aliases, engine.shape)

    def linear_layers(self) -> list[str]:
        """The names of the layers produced by a linear map (the ones that get a rule)."""
        return [b.name for b in self._forward().net.linear_blocks()]

    def __repr__(self) -> str:
        return Writer().expr(self.model)


def canonical_names(aliases: dict[str, tuple[int, tuple]], shapes: dict[int, tuple]) -> list[str]:
    """Layer index → its canonical name, as :meth:`nrm.Measure.walk` resolves it."""
    names = [""] * len(shapes)
    for name, (l, shape) in aliases.items():
        if not names[l] and shape == shapes[l]:
            names[l] = name
    return names


@dataclass
class _Features:
    """Which special structures a network may contain."""

    bias: bool | None = None  # None: drawn per layer
    activations: tuple[str, ...] = ("relu", "leaky", "identity")
    batchnorm: bool = True
    aliases: bool = True  # Dropout / Identity modules and nested Sequential names
    dead_units: bool = True
    tied_weights: bool = True
    weights: Numbers = field(default_factory=numbers)

    def __repr__(self) -> str:
        default = _Features()
        changed = [f"{k}={v!r}" for k, v in vars(self).items() if k != "weights" and v != getattr(default, k)]
        return f"features({', '.join(changed)})"


def _activation(draw, f: _Features) -> nn.Module | None:
    kind = draw(st.sampled_from(f.activations))
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky":
        return nn.LeakyReLU(draw(st.sampled_from([0.1, 0.01, 0.5])))
    return None


def _has_bias(draw, f: _Features) -> bool:
    return draw(st.booleans()) if f.bias is None else f.bias


def _special_rows(draw, w: torch.Tensor, b: torch.Tensor | None, f: _Features) -> None:
    """Dead units (incoming weights all 0, bias ≤ 0) and tied units (equal incoming weights)."""
    rows = w.shape[0]
    if f.dead_units and draw(st.booleans()):
        k = draw(st.integers(0, rows - 1))
        w[k] = 0
        if b is not None:
            b[k] = -abs(float(b[k]))
    if f.tied_weights and rows >= 2 and draw(st.booleans()):
        i, j = draw(st.lists(st.integers(0, rows - 1), min_size=2, max_size=2, unique=True))
        w[j] = w[i]
        if b is not None:
            b[j] = b[i]


def _batchnorm(draw, n: int, two_d: bool) -> nn.Module:
    mean = draw(st.lists(st.sampled_from([0.0, 0.25, -0.5, 1.0]), min_size=n, max_size=n))
    var = draw(st.lists(st.sampled_from([1.0, 0.25, 4.0, 0.5]), min_size=n, max_size=n))
    weight = draw(st.lists(st.sampled_from([1.0, 0.5, 2.0, -1.0]), min_size=n, max_size=n))
    bias = draw(st.lists(st.sampled_from([0.0, 0.25, -0.25]), min_size=n, max_size=n))
    return (batchnorm2d if two_d else batchnorm1d)(mean, var, weight, bias)


def _hidden_tail(draw, mods: list, n: int, f: _Features, two_d: bool, last: bool) -> None:
    """What follows a hidden linear map: batch norm, activation, an alias module."""
    if last:
        return
    if f.batchnorm and draw(st.booleans()):
        mods.append(_batchnorm(draw, n, two_d))
    act = _activation(draw, f)
    if act is not None:
        mods.append(act)
    if f.aliases and draw(st.integers(0, 4)) == 4:
        mods.append(draw(st.sampled_from([nn.Identity(), nn.Dropout(0.5)])))


def _linear_layer(draw, n_in: int, n_out: int, f: _Features) -> nn.Linear:
    w = _matrix(draw, (n_out, n_in), f.weights)
    b = _matrix(draw, (n_out,), f.weights) if _has_bias(draw, f) else None
    _special_rows(draw, w, b, f)
    return linear(w.tolist(), None if b is None else b.tolist())


@st.composite
def mlps(draw, *, max_depth: int = 3, max_width: int = 4, features: _Features | None = None) -> Network:
    """Linear layers (with activations, batch norm and aliases between them)."""
    f = features or _Features()
    n_in = draw(st.integers(1, max_width))
    depth = draw(st.integers(1, max_depth))
    widths = [n_in] + [draw(st.integers(1, max_width)) for _ in range(depth)]
    mods: list[nn.Module] = []
    for i in range(depth):
        mods.append(_linear_layer(draw, widths[i], widths[i + 1], f))
        _hidden_tail(draw, mods, widths[i + 1], f, False, i == depth - 1)
    return Network(_nest(draw, mods, f), (n_in,))


def _nest(draw, mods: list[nn.Module], f: _Features) -> nn.Module:
    """Sometimes wrap the first modules in an inner Sequential (names like "body.0")."""
    if f.aliases and len(mods) >= 3 and draw(st.integers(0, 3)) == 3:
        split = draw(st.integers(1, len(mods) - 1))
        return nn.Sequential(OrderedDict([("body", nn.Sequential(*mods[:split]))] +
                                         [(str(i + 1), m) for i, m in enumerate(mods[split:])])).eval()
    return nn.Sequential(*mods).eval()


def _out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


@st.composite
def cnns(draw, *, max_channels: int = 2, max_size: int = 3, max_blocks: int = 2, pools: Sequence[str] = (
        "max", "avg", "adaptive", "none"), max_outputs: int = 3, features: _Features | None = None) -> Network:
    """Conv2d blocks (batch norm, activation, pooling) then Flatten and a Linear layer."""
    f = features or _Features()
    c_in = draw(st.integers(1, max_channels))
    size = draw(st.integers(2, max_size))
    shape = (c_in, size, size)
    mods: list[nn.Module] = []
    for _ in range(draw(st.integers(1, max_blocks))):
        c, hw = shape[0], shape[1]
        k = draw(st.integers(1, min(3, hw + 2)))
        p = draw(st.integers(0, 1)) if k > 1 else 0
        s = draw(st.integers(1, 2))
        if _out(hw, k, s, p) < 1:
            k, p, s = 1, 0, 1
        c_out = draw(st.integers(1, max_channels))
        w = _matrix(draw, (c_out, c, k, k), f.weights)
        b = _matrix(draw, (c_out,), f.weights) if _has_bias(draw, f) else None
        _special_rows(draw, w, b, f)
        mods.append(conv2d(w.tolist(), None if b is None else b.tolist(), stride=s, padding=p))
        hw = _out(hw, k, s, p)
        _hidden_tail(draw, mods, c_out, f, True, False)
        pool = draw(st.sampled_from(list(pools)))
        if pool == "max" and hw >= 2:
            ps = draw(st.integers(1, 2))
            mods.append(nn.MaxPool2d(2, stride=ps))
            hw = _out(hw, 2, ps, 0)
        elif pool == "avg" and hw >= 2:
            ps = draw(st.integers(1, 2))
            mods.append(nn.AvgPool2d(2, stride=ps))
            hw = _out(hw, 2, ps, 0)
        elif pool == "adaptive":
            o = draw(st.integers(1, min(2, hw)))
            mods.append(nn.AdaptiveAvgPool2d(o))
            hw = o
        shape = (c_out, hw, hw)
    mods.append(nn.Flatten())
    n_out = draw(st.integers(1, max_outputs))
    mods.append(_linear_layer(draw, math.prod(shape), n_out, f))  # at most 2·4·4 inputs
    return Network(_nest(draw, mods, f), (c_in, size, size))


@st.composite
def cnn1ds(draw, *, max_channels: int = 2, max_length: int = 5, max_outputs: int = 3,
           features: _Features | None = None) -> Network:
    """One Conv1d block (batch norm, activation), Flatten and a Linear layer."""
    f = features or _Features()
    c_in, length = draw(st.integers(1, max_channels)), draw(st.integers(2, max_length))
    k = draw(st.integers(1, min(3, length)))
    s = draw(st.integers(1, 2))
    c_out = draw(st.integers(1, max_channels))
    w = _matrix(draw, (c_out, c_in, k), f.weights)
    b = _matrix(draw, (c_out,), f.weights) if _has_bias(draw, f) else None
    _special_rows(draw, w, b, f)
    mods: list[nn.Module] = [conv1d(w.tolist(), None if b is None else b.tolist(), stride=s)]
    _hidden_tail(draw, mods, c_out, f, False, False)
    mods.append(nn.Flatten())
    mods.append(_linear_layer(draw, c_out * _out(length, k, s, 0), draw(st.integers(1, max_outputs)), f))
    return Network(_nest(draw, mods, f), (c_in, length))


def networks(kind: str = "any", *, max_depth: int = 3, max_width: int = 4, bias: bool | None = None,
             activations: Sequence[str] = ("relu", "leaky", "identity"), batchnorm: bool = True,
             aliases: bool = True, dead_units: bool = True, tied_weights: bool = True,
             pools: Sequence[str] = ("max", "avg", "adaptive", "none"),
             weights: Numbers | None = None) -> st.SearchStrategy[Network]:
    """Networks of bounded size: ``kind`` is "mlp", "cnn" (Conv2d), "cnn1d" or "any".

    ``activations`` chooses among "relu", "leaky" and "identity" (use ``("relu",)`` to keep
    every activation non-negative); ``bias=None`` draws biases per layer. MLPs shrink
    towards one Linear(1, 1)."""
    unknown = set(activations) - {"relu", "leaky", "identity"}
    if unknown or not activations:
        raise ValueError(f"activations are 'relu', 'leaky', 'identity'; got {list(activations)}")
    f = _Features(bias, tuple(activations), batchnorm, aliases, dead_units, tied_weights, weights or numbers())
    kinds = {
        "mlp": mlps(max_depth=max_depth, max_width=max_width, features=f),
        "cnn": cnns(pools=pools, features=f),
        "cnn1d": cnn1ds(features=f),
    }
    if kind == "any":
        return st.one_of(kinds["mlp"], kinds["mlp"], kinds["cnn"], kinds["cnn1d"])
    if kind not in kinds:
        raise ValueError(f"kind is 'mlp', 'cnn', 'cnn1d' or 'any'; got {kind!r}")
    return kinds[kind]


# -- inputs -----------------------------------------------------------------------------------
class Input:
    """A drawn input batch; its repr rebuilds the tensor exactly."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __repr__(self) -> str:
        return Writer().expr(self.x)


INPUT_KINDS = ("arbitrary", "nonnegative", "box")


def inputs(shape: Sequence[int], kind: str = "arbitrary", *, low: float = -2.0, high: float = 2.0,
           batch: tuple[int, int] = (1, 2)) -> st.SearchStrategy[Input]:
    """Input batches of one sample's ``shape``: "arbitrary" values in [−2, 2],
    "nonnegative" in [0, 2], or inside the "box" [low, high]."""
    if kind not in INPUT_KINDS:
        raise ValueError(f"kind is one of {INPUT_KINDS}, got {kind!r}")
    if kind == "box" and not low <= high:
        raise ValueError(f"the box needs low <= high, got [{low}, {high}]")
    lo, hi = {"arbitrary": (-2.0, 2.0), "nonnegative": (0.0, 2.0), "box": (low, high)}[kind]
    values = Numbers(lo, hi)

    @st.composite
    def draw_input(draw):
        b = draw(st.integers(*batch))
        return Input(_matrix(draw, (b,) + tuple(shape), values))

    return draw_input()


# -- events -----------------------------------------------------------------------------------
class CodedEvent(Event):
    """An event that remembers the expression that built it (its repr)."""

    __slots__ = ("code",)

    def __init__(self, event: Event, code: str):
        super().__init__(event.terms)
        self.code = code

    def __repr__(self) -> str:
        return self.code


def _code(e: Event) -> str:
    return getattr(e, "code", None) or repr(e)


def _operand(e: Event) -> str:
    text = _code(e)
    return f"({text})" if any(op in text for op in (" & ", " | ", " - ")) else text


@st.composite
def atoms(draw, network: Network, layers: Sequence[str] | None = None, *, absorber: bool = True) -> At:
    """{X_layer ∈ S}: S by flat indices, by channels or all neurons, sometimes with ⊥."""
    table = network.layers()
    names = list(layers) if layers is not None else list(table)
    name = draw(st.sampled_from(names))
    shape = table[name][1]
    n = math.prod(shape)
    with_bot = absorber and draw(st.integers(0, 3)) == 3
    selector = draw(st.sampled_from(["index", "channels", "all"] if len(shape) > 1 else ["index", "all"]))
    if selector == "index":
        idx = draw(st.lists(st.integers(0, n - 1), min_size=0 if with_bot else 1, max_size=min(n, 4), unique=True))
        return At(name, index=sorted(idx), absorber=with_bot)
    if selector == "channels":
        ch = draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=shape[0], unique=True))
        return At(name, channels=sorted(ch), absorber=with_bot)
    return At(name, absorber=with_bot)


@st.composite
def cylinders(draw, network: Network, layers: Sequence[str] | None = None, *, max_layers: int = 3) -> Event:
    """An intersection of atoms on 1..max_layers layers."""
    ev = draw(atoms(network, layers))
    code = _code(ev)
    for _ in range(draw(st.integers(0, max_layers - 1))):
        more = draw(atoms(network, layers))
        ev, code = ev & more, f"{code} & {_code(more)}"
    return ev if " & " not in code else CodedEvent(ev, code)


@st.composite
def events(draw, network: Network, layers: Sequence[str] | None = None, *, max_leaves: int = 3) -> Event:
    """Cylinders and their unions, intersections, complements and differences."""
    ev = draw(cylinders(network, layers))
    if draw(st.integers(0, 4)) == 4:
        ev = CodedEvent(~ev, f"~{_operand(ev)}")
    for _ in range(draw(st.integers(0, max_leaves - 1))):
        other = draw(cylinders(network, layers))
        op = draw(st.sampled_from(["|", "&", "-", "|~"]))
        if op == "|":
            ev = CodedEvent(ev | other, f"{_operand(ev)} | {_operand(other)}")
        elif op == "&":
            ev = CodedEvent(ev & other, f"{_operand(ev)} & {_operand(other)}")
        elif op == "-":
            ev = CodedEvent(ev - other, f"{_operand(ev)} - {_operand(other)}")
        else:
            ev = CodedEvent(ev | ~other, f"{_operand(ev)} | ~{_operand(other)}")
    return ev


# -- rules ------------------------------------------------------------------------------------
RULE_NAMES = tuple(name.lower() for name in RULES)
"""The built-in rules (:data:`nrm.rules.RULES`) as :func:`rules` names them."""

epsilons = st.one_of(st.sampled_from([1e-6, 1e-3, 0.01, 0.1, 0.25, 1.0]),
                     st.floats(1e-6, 1.0, allow_nan=False, allow_subnormal=False))
gammas = st.one_of(st.sampled_from([0.25, 0.0, 0.1, 1.0, 2.0]), st.floats(0.0, 4.0, allow_nan=False))
stabilizers = st.sampled_from([0.0, 1e-6, 0.01])
signs = st.sampled_from(["signed", "unsigned"])
leaks = st.sampled_from(["absorb", "renormalize"])


@st.composite
def rules(draw, names: Sequence[str] = RULE_NAMES, *, conventions: bool = True, low: float = -2.0,
          high: float = 2.0) -> Rule:
    """A built-in rule with valid parameters (and, with ``conventions``, stabilizer sign,
    leak and bias conventions). ``low``/``high`` bound the z^B box."""
    name = draw(st.sampled_from(list(names)))
    conv = {}
    if conventions and name not in ("flat",):
        if draw(st.integers(0, 3)) == 3:
            conv["leak"] = draw(leaks)
    if name == "zero":
        return Zero(**conv)
    if name == "epsilon":
        if conventions:
            conv["stabilizer_sign"] = draw(signs)
        return Epsilon(draw(epsilons), **conv)
    if name == "gamma":
        if conventions:
            conv["stabilizer"] = draw(stabilizers)
            conv["modify_bias"] = draw(st.booleans())
        return Gamma(draw(gammas), **conv)
    if name == "zplus":
        if conventions:
            conv["bias"] = draw(st.booleans())
        return ZPlus(**conv)
    if name == "alphabeta":
        alpha = draw(st.sampled_from([2, 1, 3]))
        return AlphaBeta(alpha, alpha - 1, **conv)
    if name == "wsquare":
        if conventions:
            conv["bias"] = draw(st.booleans())
        return WSquare(**conv)
    if name == "flat":
        return Flat()
    if name == "zbox":
        return ZBox(low, high, **conv)
    raise ValueError(f"unknown rule name {name!r}; use one of {RULE_NAMES}")


class CodedRuleMap(RuleMap):
    """A preset (a :class:`~nrm.presets.RuleMap`) whose repr is the call that made it."""

    def __init__(self, rmap: RuleMap, code: str):
        super().__init__(rmap.default, by_name=rmap.by_name, by_type=rmap.by_type, first=rmap.first, name=rmap.name)
        self.code = code

    def __repr__(self) -> str:
        return self.code


def preset(name: str, *args, **kwargs) -> CodedRuleMap:
    """``nrm.presets.<name>(*args, **kwargs)`` with a repr that rebuilds it."""
    w = Writer()
    text = ", ".join([w.expr(a) for a in args] + [f"{k}={w.expr(v)}" for k, v in kwargs.items()])
    return CodedRuleMap(nrm.presets.PRESETS[name](*args, **kwargs), f"nrm.presets.{name}({text})")


@st.composite
def presets(draw, names: Sequence[str] | None = None, *, low: float = -2.0, high: float = 2.0) -> CodedRuleMap:
    """One of the presets of :mod:`nrm.presets` with drawn parameters."""
    name = draw(st.sampled_from(list(names or nrm.presets.PRESETS)))
    kwargs = {"epsilon": draw(epsilons)}
    if name in ("EpsilonGammaFlat", "EpsilonGammaBox"):
        kwargs["gamma"] = draw(gammas)
    if name == "EpsilonGammaBox":
        return preset(name, low, high, **kwargs)
    return preset(name, **kwargs)


@st.composite
def rule_assignments(draw, network: Network, rule_strategy: st.SearchStrategy[Rule] | None = None, *,
                     required: Rule | None = None, allow_presets: bool = True, low: float = -2.0,
                     high: float = 2.0) -> Any:
    """What ``rules=`` of :func:`nrm.explain` takes: one rule for every layer, a mapping
    {layer name (or an alias of it) | nrm.FIRST: rule} that mixes rules per layer, or a
    preset. ``required`` (a rule) must then be used on at least one layer."""
    rule_strategy = rules(low=low, high=high) if rule_strategy is None else rule_strategy
    linear = network.linear_layers()
    form = draw(st.sampled_from(["single", "mixed", "preset"] if allow_presets and required is None
                                else ["single", "mixed"]))
    if form == "single":
        return required if required is not None else draw(rule_strategy)
    if form == "preset":
        return draw(presets(low=low, high=high))
    table = network.layers()
    aliases = {name: [n for n, (l, _) in table.items() if l == table[name][0] and n not in ("output",)]
               for name in linear}
    chosen: dict = {}
    use_required = [False] * len(linear)
    if required is not None:
        picks = draw(st.lists(st.booleans(), min_size=len(linear), max_size=len(linear)))
        use_required = picks if any(picks) else [True] + [False] * (len(linear) - 1)
    for i, name in enumerate(linear):
        key = draw(st.sampled_from(aliases[name])) if draw(st.integers(0, 3)) == 3 else name
        chosen[key] = required if use_required[i] else draw(rule_strategy)
    return chosen


# -- cases ------------------------------------------------------------------------------------
class Case:
    """A model, an input batch, a target, rules and events: everything one law needs.

    ``repr(case)`` is an expression that rebuilds the case; :meth:`script` a program."""

    def __init__(self, model: nn.Module, x: torch.Tensor, target: int = 0, rules: Any = None,
                 events: Sequence[Event] = (), *, measure: nrm.Measure | None = None):
        self.model = model
        self.x = x
        self.target = target
        self.rules = rules
        self.events = tuple(events)
        self.kinds: tuple = ()  # layer kinds the case needs registered (nrm.layers.register)
        self._measure = measure  # nrm.explain(model, x, target, rules=rules) when already computed

    def measure(self) -> nrm.Measure:
        """``nrm.explain(model, x, target, rules=rules)`` (computed once)."""
        if self._measure is None:
            self._measure = nrm.explain(self.model, self.x, self.target, rules=self.rules)
        return self._measure

    @property
    def network(self) -> Network:
        return Network(self.model, tuple(self.x.shape[1:]))

    def __repr__(self) -> str:
        w = Writer()
        parts = [f"model={w.expr(self.model, 1)}", f"x={w.expr(self.x)}", f"target={self.target!r}",
                 f"rules={w.expr(self.rules)}"]
        if self.events:
            parts.append(f"events={w.expr(self.events)}")
        return "Case(\n    " + ",\n    ".join(parts) + ",\n)"

    def script(self, *lines: str, comment: str = "", writer: Writer | None = None) -> str:
        """A runnable program: imports, ``model``, ``x``, ``target``, ``rules``, ``events``,
        ``m = nrm.explain(...)``, then ``lines`` (for instance ``result = laws.…(m, …)``);
        ``writer`` is the :class:`~nrm_verify.properties.codegen.Writer` that wrote ``lines`` (its
        imports are added)."""
        w = writer or Writer()
        w.imports |= {"import torch", "from torch import nn", "import nrm"}
        body = []
        for i, kind in enumerate(self.kinds):
            body += [f"kind{i or ''} = {w.expr(kind)}", f"nrm.layers.register(kind{i or ''})"]
        body.append(f"model = {w.expr(self.model)}")
        body.append(f"x = {w.expr(self.x)}")
        body.append(f"target = {self.target!r}")
        body.append(f"rules = {w.expr(self.rules)}")
        if self.events:
            body.append(f"events = {w.expr(list(self.events))}")
        body.append("m = nrm.explain(model, x, target, rules=rules)")
        body += list(lines)
        for line in lines:
            if "laws." in line:
                w.imports.add("from nrm_verify import laws")
        head = "".join(f"# {c}\n" for c in comment.splitlines()) if comment else ""
        return head + w.header() + "\n\n" + "\n".join(body) + "\n"


def _set_preactivation(model: nn.Module, x: torch.Tensor, block_index: int, flat: int, value: float) -> bool:
    """Shift one linear layer's bias so that unit ``flat`` has pre-activation ≈ ``value`` at
    x[0] (a channel bias for convolutions). False when the layer has no bias."""
    net = ProperFFNN(model, x[:1])
    engine = Engine(net)
    block = net.blocks[block_index]
    module = block.producer.module
    if getattr(module, "bias", None) is None:
        return False
    z = engine.z_nobias[block_index]
    bias = engine.maps[block_index].bias_for(z)
    pre = (z + bias).reshape(-1)[flat]
    channel = flat // (z[0].numel() // z.shape[1]) if z.dim() > 2 else flat
    scale = 1.0
    for bn in block.batchnorms:
        s, _ = bn.layer_kind.scale_shift(bn.call)
        scale = float(s[channel])
    if scale == 0:
        return False
    with torch.no_grad():
        module.bias[channel] -= (float(pre) - value) / scale
    return True


# -- networks around a layer kind's examples ----------------------------------------------------
def _weights(gen: torch.Generator, shape) -> list:
    fan_in = math.prod(shape[1:]) or 1
    return (torch.randn(shape, generator=gen, dtype=DTYPE) * math.sqrt(2.0 / fan_in)).tolist()


def network_around(module: nn.Module, shape: tuple[int, ...], seed: int, prefix: bool = True,
                   outputs: int = 2) -> nn.Sequential:
    """``prefix → module → flatten → dense head`` (float64, eval): the prefix is a learned
    layer with a leaky ReLU where the input shape allows one (dense for (n,), a 1×1
    convolution for (C, L) and (C, H, W); leaky, so that no neuron the module reads is
    dead: LRP-0 = Gradient × Input needs z_k ≠ 0), the head a dense layer to ``outputs``
    logits."""
    gen = torch.Generator().manual_seed(seed)
    parts: list[nn.Module] = []
    if prefix and len(shape) in (1, 2, 3):
        n = shape[0]
        bias = (torch.rand(n, generator=gen, dtype=DTYPE) - 0.5).tolist()
        if len(shape) == 1:
            parts.append(linear(_weights(gen, (n, n)), bias))
        elif len(shape) == 2:
            parts.append(conv1d(_weights(gen, (n, n, 1)), bias))
        else:
            parts.append(conv2d(_weights(gen, (n, n, 1, 1)), bias))
        parts.append(nn.LeakyReLU(0.1))
    parts.append(module)
    with torch.no_grad():
        out = module(torch.zeros((1,) + tuple(shape), dtype=DTYPE))
    parts.append(nn.Flatten())
    head_bias = (torch.rand(outputs, generator=gen, dtype=DTYPE) - 0.5).tolist()
    parts.append(linear(_weights(gen, (outputs, out[0].numel())), head_bias))
    return nn.Sequential(*parts).eval()


@st.composite
def kind_cases(draw, kind, examples=None, *, batch: tuple[int, int] = (1, 2), prefix: bool = True,
               rules: st.SearchStrategy | None = None) -> Case:
    """A :class:`Case` on a network built around one of a layer kind's examples
    (:meth:`nrm.layers.Kind.examples`, :func:`network_around`), with rules drawn from
    ``rules`` on every linear layer; its program registers the kind first."""
    examples = list(kind.examples()) if examples is None else examples
    module, shape = draw(st.sampled_from(examples), label="example")
    seed = draw(st.integers(0, 2 ** 16), label="seed")
    model = network_around(module, shape, seed, prefix=prefix)
    x = draw(inputs(shape, "arbitrary", batch=batch), label="input").x
    with torch.no_grad():
        out = model(x).reshape(x.shape[0], -1)
    target = draw(st.integers(0, out.shape[1] - 1), label="target")
    assume(bool((out[:, target] != 0).all()) and bool(torch.isfinite(out).all()))
    net = Network(model, shape)
    chosen = draw(rule_assignments(net, rules, allow_presets=False), label="rules")
    case = Case(model, x, target, chosen)
    case.kinds = (kind,)
    return case


NEAR_ZERO = (0.0, 1e-12, -1e-12, 1e-9)


@st.composite
def cases(draw, network: st.SearchStrategy[Network] | None = None, *, input_kind: str = "arbitrary",
          low: float = -2.0, high: float = 2.0, batch: tuple[int, int] = (1, 2),
          rules: Callable[[Network], Any] | Any = None, n_events: int = 0,
          near_zero: bool = True, dead_at_input: bool = True) -> Case:
    """A :class:`Case`: a network, an input (``input_kind`` as in :func:`inputs`), a target
    with f_c(x) ≠ 0 for every sample, rules (a fixed value, or a function network → a
    strategy or a value; by default :func:`rule_assignments`) and ``n_events`` events.

    ``near_zero`` may set one pre-activation to 0, ±1e-12 or 1e-9 at the first sample;
    ``dead_at_input`` may push one hidden unit's pre-activation to −1 (a dead ReLU)."""
    net = draw(network if network is not None else networks())
    x = draw(inputs(net.input_shape, input_kind, low=low, high=high, batch=batch)).x
    model = net.model
    blocks = ProperFFNN(model, x[:1]).linear_blocks()
    if near_zero and draw(st.integers(0, 3)) == 3:
        block = draw(st.sampled_from(blocks))
        size = math.prod(net.layers()[block.name][1])
        _set_preactivation(model, x, block.index, draw(st.integers(0, size - 1)), draw(st.sampled_from(NEAR_ZERO)))
    hidden = blocks[:-1]
    if dead_at_input and hidden and draw(st.integers(0, 3)) == 3:
        block = draw(st.sampled_from(hidden))
        size = math.prod(net.layers()[block.name][1])
        _set_preactivation(model, x, block.index, draw(st.integers(0, size - 1)), -1.0)
    out = Engine(ProperFFNN(model, x)).output.reshape(x.shape[0], -1)
    target = draw(st.integers(0, out.shape[1] - 1))
    assume(bool((out[:, target] != 0).all()) and bool(torch.isfinite(out).all()))
    if rules is None:
        chosen = draw(rule_assignments(net, low=low, high=high))
    elif callable(rules) and not isinstance(rules, (Rule, RuleMap)):
        chosen = rules(net)
        if isinstance(chosen, st.SearchStrategy):
            chosen = draw(chosen)
    else:
        chosen = rules
    evs = tuple(draw(events(net)) for _ in range(n_events))
    return Case(model, x, target, chosen, evs)


@st.composite
def walks(draw, m: nrm.Measure, sample: int = 0) -> list[int | None]:
    """A walk (n_0, …, n_L) of sample ``sample`` drawn from the top, each n_{l−1} in the
    support of the kernel column of n_l (so most drawn walks have non-zero measure)."""
    eng = m.engine
    start = m.start[sample].reshape(-1)
    top = [i for i in range(start.numel()) if start[i] != 0] or list(range(start.numel()))
    path: list[int | None] = [draw(st.sampled_from(top))]
    for l in range(m.depth, 0, -1):
        k = path[0]
        if k is None:
            path.insert(0, None)
            continue
        unit = torch.zeros((1, eng.batch) + eng.shape[l], dtype=eng.dtype, device=eng.device)
        unit.reshape(1, eng.batch, -1)[:, :, k] = 1
        col, bot = eng.step_down(l, unit, torch.zeros((1, eng.batch), dtype=eng.dtype, device=eng.device))
        col = col[0, sample].reshape(-1)
        support: list[int | None] = [j for j in range(col.numel()) if col[j] != 0]
        if float(bot[0, sample]) != 0:
            support.append(None)
        path.insert(0, draw(st.sampled_from(support or list(range(col.numel())))))
    return path


__all__ = ["Network", "Input", "Case", "CodedEvent", "CodedRuleMap", "networks", "mlps", "cnns", "cnn1ds",
           "inputs", "atoms", "cylinders", "events", "rules", "presets", "preset", "rule_assignments", "cases",
           "walks", "numbers", "canonical_names", "PROFILES", "RULE_NAMES", "OMEGA", "FIRST"]
