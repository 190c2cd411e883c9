"""Symbolic proper FFNNs: small dense and 1-D convolutional networks whose inputs,
weights and biases are sympy symbols (or numbers), with ReLU handled honestly.

ReLU is piecewise linear, so a closed form exists only once it is known which units are
active. A :class:`SymbolicNetwork` therefore carries an explicit **activation pattern**:
every hidden unit k of layer l is declared active (its pre-activation z > 0, its
activation a = z) or inactive (z < 0, a = 0); every output unit's sign is declared too
(f ≠ 0 is needed for the measure, and ε-type rules branch on s(z)). The pattern is an
assumption of every result derived from the network and is listed in
:meth:`SymbolicNetwork.assumptions`. ``activation="linear"`` networks have no ReLU; their
declared signs are plain assumptions.

Pre-activations are kept as **abbreviation symbols** ``z{l}_{k}`` with the sign of the
pattern and the defining equation z = Σ_j a_j w_jk + b_k (a *fact* for the sign decider
of :mod:`nrm_verify.symbolic.ops`). Hidden activations are then the symbols themselves
(a = z when active) or 0, so a kernel entry of LRP-0 reads a_j w_jk / z_k.
:meth:`SymbolicNetwork.expand` replaces every abbreviation by its definition in the base
symbols (inputs, weights, biases), which is what L9 (gradient × input) needs.

Naming (text / LaTeX): inputs ``x1`` / x_1, weights ``w{l}_{jk}`` / w^{(l)}_{jk} (from
neuron j of layer l−1 to neuron k of layer l), biases ``b{l}_{k}`` / b^{(l)}_k,
convolution taps ``c{l}_{t}`` / c^{(l)}_t, pre-activations ``z{l}_{k}`` / z^{(l)}_k, box
bounds ``lo{j}``, ``hi{j}`` / ℓ_j, h_j. Neurons are labelled x_j (input), h^{(l)}_k
(hidden), y_k (output) and ⊥_l (absorber).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp

from nrm.layers.linear import Conv, Dense
from nrm_verify.symbolic.ops import Fact, SignDecider, to_sympy

SIGNS = {"+": {"positive": True}, "-": {"negative": True}, "real": {"real": True},
         "nonzero": {"real": True, "nonzero": True}, "nonnegative": {"nonnegative": True}}
SAMPLE_MAGNITUDES = tuple(sp.Rational(n, d) for n, d in [(1, 2), (1, 1), (3, 2), (2, 1), (3, 1), (1, 3), (5, 2),
                                                         (2, 3), (4, 1), (5, 4)])
DYADIC_MAGNITUDES = tuple(sp.Rational(n, d) for n, d in [(1, 2), (1, 1), (3, 2), (2, 1), (3, 1), (1, 4), (5, 2),
                                                         (3, 4), (4, 1), (5, 4), (7, 8)])
"""Magnitudes with power-of-two denominators: exact in float64."""


class SymbolicNetworkError(ValueError):
    """A symbolic network that cannot be built as asked (the message says what to declare)."""


def _symbol(name: str, spec: Any):
    """A symbol with the assumptions of ``spec`` ("+", "-", "real", "nonzero",
    "nonnegative"), or a fixed number when ``spec`` is a number."""
    if isinstance(spec, str):
        if spec not in SIGNS:
            raise SymbolicNetworkError(f"unknown sign spec {spec!r} for {name}; use one of {list(SIGNS)} or a number")
        return sp.Symbol(name, **SIGNS[spec])
    return to_sympy(spec)


def _spec_text(spec: str) -> str:
    return {"+": "> 0", "-": "< 0", "real": "∈ ℝ", "nonzero": "≠ 0", "nonnegative": "≥ 0"}[spec]


@dataclass
class SymbolicLayer:
    """Layer l ≥ 1: z = W a + b, then the activation. ``weight`` is (n_out, n_in) in the
    torch layout (row k holds w_jk for every j); ``mask`` marks structural connections
    (all of them for a dense layer, the receptive field for a convolution)."""

    index: int
    name: str
    kind: str  # "dense" | "conv1d"
    weight: np.ndarray
    mask: np.ndarray
    bias: np.ndarray | None
    activation: str
    shape: tuple[int, ...]
    taps: np.ndarray | None = None  # conv1d: the shared kernel (kernel,)
    shared_bias: Any = None  # conv1d: the one bias of the output channel

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]


@dataclass
class SymbolicNetwork:
    """A proper FFNN with symbolic parameters and a declared activation pattern.

    Build one with :meth:`dense` or :meth:`conv1d`; derive its measure with
    :meth:`measure`.
    """

    inputs: np.ndarray
    input_shape: tuple[int, ...]
    layers: list[SymbolicLayer]
    signs: dict  # (l, k) -> "+" | "-" | None: declared sign of the pre-activation
    box: list = field(default_factory=list)  # [(x_j, lo_j, hi_j)] with lo < x < hi
    domains: dict = field(default_factory=dict)  # base symbol -> spec text, in creation order
    latex_names: dict = field(default_factory=dict)

    def __post_init__(self):
        self._forward()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def dense(cls, widths: Sequence[int], *, inputs: Any = "real", weights: Any = "nonzero", biases: Any = "real",
              pattern: Any = "active", output_signs: Any = "+", activation: str = "relu",
              names: Sequence[str] | None = None) -> SymbolicNetwork:
        """A dense network of the given widths (input first), e.g. ``[2, 2, 1]``.

        Args:
            inputs: "real", "positive", "box" (x_j with symbolic bounds lo_j < x_j < hi_j),
                ("box", low, high) with numeric bounds (numbers or one per input), or one
                spec per input ("+", "-", "real", "nonzero" or a number).
            weights: a spec for every weight ("nonzero", "real", "+", "-"), "alternating"
                (w_jk > 0 when j + k is even, < 0 otherwise; 1-based), "alternating-"
                (the opposite), or a callable (l, j, k) -> spec (0-based j, k).
            biases: a spec, "alternating"/"alternating-" (b_k > 0 for even k), a callable
                (l, k) -> spec, or None for a network without biases.
            pattern: "active" (every hidden unit active), a string per hidden layer such as
                ``["+-"]``, or a dict {(l, k): "+" | "-"} (0-based k).
            output_signs: "+" / "-" for every output unit, or one character per unit.
            activation: "relu" or "linear" (no activation; declared signs are assumptions).
        """
        widths = list(widths)
        if len(widths) < 2 or any(int(w) < 1 for w in widths):
            raise SymbolicNetworkError(f"widths must list at least two positive layer sizes, got {widths}")
        domains, latex = {}, {}
        xs, box = cls._make_inputs(widths[0], inputs, domains, latex)
        layers = []
        depth = len(widths) - 1
        for l in range(1, depth + 1):
            n_in, n_out = widths[l - 1], widths[l]
            W = np.empty((n_out, n_in), dtype=object)
            for k in range(n_out):
                for j in range(n_in):
                    spec = _weight_spec(weights, l, j, k)
                    W[k, j] = _register(f"w{l}_{j + 1}{k + 1}", spec, domains, latex, f"w^{{({l})}}_{{{j + 1}{k + 1}}}")
            b = None
            if biases is not None:
                b = np.empty(n_out, dtype=object)
                for k in range(n_out):
                    b[k] = _register(f"b{l}_{k + 1}", _bias_spec(biases, l, k), domains, latex,
                                     f"b^{{({l})}}_{{{k + 1}}}")
            name = _layer_name(names, l, depth)
            unrolled = Dense.unroll(W, b, (n_in,))  # the Dense kind's declared form, on symbols
            layers.append(SymbolicLayer(l, name, "dense", unrolled.weight.T.copy(), unrolled.connected.T.copy(),
                                        unrolled.bias, "linear" if l == depth else activation, (n_out,)))
        signs = _pattern(pattern, output_signs, widths, activation)
        return cls(xs, (widths[0],), layers, signs, box, domains, latex)

    @classmethod
    def conv1d(cls, length: int = 3, kernel: int = 2, outputs: int = 1, *, inputs: Any = "real",
               weights: Any = "nonzero", biases: Any = "real", pattern: Any = "active", output_signs: Any = "+",
               names: Sequence[str] | None = None) -> SymbolicNetwork:
        """A tiny convolutional network: input (1 channel, ``length``) → Conv1d(1, 1,
        ``kernel``) → ReLU → Flatten → Linear(length − kernel + 1, ``outputs``).

        The convolution's taps ``c1_t`` and its bias ``b1`` are shared by every position;
        its structural fan-in is the receptive field (``kernel`` inputs). Specs as in
        :meth:`dense`; ``weights`` callables get (l, j, k) with j the tap for l = 1.
        """
        positions = length - kernel + 1
        if positions < 1:
            raise SymbolicNetworkError(f"a kernel of {kernel} does not fit {length} inputs")
        domains, latex = {}, {}
        xs, box = cls._make_inputs(length, inputs, domains, latex)
        taps = np.array([_register(f"c1_{t + 1}", _weight_spec(weights, 1, t, 0), domains, latex,
                                   f"c^{{(1)}}_{{{t + 1}}}") for t in range(kernel)], dtype=object)
        b1 = None if biases is None else _register("b1", _bias_spec(biases, 1, 0), domains, latex, "b^{(1)}")
        # the Conv kind's declared form, on symbols: one channel in and out, stride 1, no padding
        unrolled = Conv.unroll(taps.reshape(1, 1, kernel), None if b1 is None else np.array([b1], dtype=object),
                               (1, length), (1,), (0,), (1,))
        W, mask = unrolled.weight.T.copy(), unrolled.connected.T.copy()
        W[~mask] = sp.Integer(0)
        bias = unrolled.bias
        conv = SymbolicLayer(1, _layer_name(names, 1, 2), "conv1d", W, mask, bias, "relu", (1, positions), taps, b1)
        W2 = np.empty((outputs, positions), dtype=object)
        for k in range(outputs):
            for j in range(positions):
                W2[k, j] = _register(f"w2_{j + 1}{k + 1}", _weight_spec(weights, 2, j, k), domains, latex,
                                     f"w^{{(2)}}_{{{j + 1}{k + 1}}}")
        b2 = None
        if biases is not None:
            b2 = np.array([_register(f"b2_{k + 1}", _bias_spec(biases, 2, k), domains, latex, f"b^{{(2)}}_{{{k + 1}}}")
                           for k in range(outputs)], dtype=object)
        dense = SymbolicLayer(2, _layer_name(names, 2, 2), "dense", W2, np.ones((outputs, positions), dtype=bool), b2,
                              "linear", (outputs,))
        signs = _pattern(pattern, output_signs, [length, positions, outputs], "relu")
        return cls(xs, (1, length), [conv, dense], signs, box, domains, latex)

    @staticmethod
    def _make_inputs(n: int, inputs: Any, domains: dict, latex: dict):
        box = []
        bounds = None
        if isinstance(inputs, tuple) and len(inputs) == 3 and inputs[0] == "box":
            bounds = [np.broadcast_to(np.asarray(b, dtype=object).reshape(-1), (n,)) for b in inputs[1:]]
            inputs = "box"
        if isinstance(inputs, str) and inputs == "box":
            xs = np.empty(n, dtype=object)
            for j in range(n):
                if bounds is None:
                    lo = _register(f"lo{j + 1}", "real", domains, latex, f"\\ell_{{{j + 1}}}")
                else:
                    lo = to_sympy(bounds[0][j])
                x = _register(f"x{j + 1}", "real", domains, latex, f"x_{{{j + 1}}}")
                if bounds is None:
                    hi = _register(f"hi{j + 1}", "real", domains, latex, f"h_{{{j + 1}}}")
                else:
                    hi = to_sympy(bounds[1][j])
                xs[j] = x
                box.append((x, lo, hi))
            return xs, box
        if isinstance(inputs, str):
            spec = {"positive": "+", "negative": "-"}.get(inputs, inputs)
            specs = [spec] * n
        else:
            specs = list(inputs)
            if len(specs) != n:
                raise SymbolicNetworkError(f"inputs= gives {len(specs)} specs for {n} inputs")
        xs = np.array([_register(f"x{j + 1}", s, domains, latex, f"x_{{{j + 1}}}") for j, s in enumerate(specs)],
                      dtype=object)
        return xs, box

    # -- the forward pass in abbreviations ----------------------------------------------
    def _forward(self) -> None:
        L = len(self.layers)
        self.depth = L
        self.activations: list[np.ndarray] = [self.inputs]
        self.preactivations: list[np.ndarray | None] = [None]
        self.z_nobias: list[np.ndarray | None] = [None]
        self.definitions: dict = {}  # z symbol -> Σ a w + b (one level down)
        self.expanded: dict = {}  # z symbol -> in base symbols
        self.facts: list[Fact] = []
        self.pattern_text: list[str] = []
        self.extra: list = []  # assumptions added by assume(): (expr, sign, why)
        for x, lo, hi in self.box:
            self.facts.append(Fact(sp.Dummy(f"u_{x}", positive=True), x - lo))
            self.facts.append(Fact(sp.Dummy(f"v_{x}", positive=True), hi - x))
        for layer in self.layers:
            l = layer.index
            a = self.activations[-1]
            zs = np.empty(layer.n_out, dtype=object)
            nob = np.empty(layer.n_out, dtype=object)
            acts = np.empty(layer.n_out, dtype=object)
            for k in range(layer.n_out):
                s = sum((a[j] * layer.weight[k, j] for j in range(layer.n_in) if layer.mask[k, j]), sp.Integer(0))
                b = layer.bias[k] if layer.bias is not None else sp.Integer(0)
                total = s + b
                sign = self.signs.get((l, k))
                label = self.label(l, k)
                if not total.free_symbols:
                    value = total
                    declared = {"+": value > 0, "-": value < 0}.get(sign, True)
                    if not declared:
                        raise SymbolicNetworkError(
                            f"{label}: its pre-activation is the number {value}, but the pattern declares it {sign}0"
                        )
                    z = value
                else:
                    if layer.activation == "relu" and sign is None:
                        raise SymbolicNetworkError(
                            f"{label} (layer {l}, unit {k + 1}) has a symbolic pre-activation: declare it active "
                            "('+', z > 0) or inactive ('-', z < 0) in pattern="
                        )
                    z = sp.Symbol(f"z{l}_{k + 1}", **(SIGNS[sign] if sign else {"real": True}))
                    self.latex_names[z] = f"z^{{({l})}}_{{{k + 1}}}"
                    self.definitions[z] = total
                    self.expanded[z] = sp.expand(total.xreplace(self.expanded))
                    self.facts.append(Fact(z, total))
                    if sign:
                        state = "" if layer.activation != "relu" else (" (active)" if sign == "+" else " (inactive)")
                        self.pattern_text.append(f"{z} {_spec_text(sign)}{state}")
                zs[k] = z
                nob[k] = z - b if isinstance(z, sp.Symbol) else s
                if layer.activation == "relu":
                    acts[k] = z if (sign == "+" or (sign is None and z > 0)) else sp.Integer(0)
                else:
                    acts[k] = z
            self.preactivations.append(zs)
            self.z_nobias.append(nob)
            self.activations.append(acts)
        self.decider = SignDecider(self.facts, self.definitions)
        self._reduce()

    def _reduce(self) -> None:
        """The *reduced variables*: every bias b_k that can be is eliminated through its
        unit's definition, b_k = z_k − Σ_j a_j w_jk, so that the pre-activation z_k is a
        free variable; a pre-activation without a free bias is replaced by its
        definition. In the reduced variables there is no relation left, so an identity
        holds on the (open, non-empty) region of the assumptions exactly when it holds as
        an identity of rational functions — which is what a proof checks."""
        self.reduction: dict = {}
        eliminated = set()
        for layer in self.layers:
            l = layer.index
            a = self.activations[l - 1]
            for k in range(layer.n_out):
                z = self.preactivations[l][k]
                if not isinstance(z, sp.Symbol):
                    continue
                s = sum((a[j] * layer.weight[k, j] for j in range(layer.n_in) if layer.mask[k, j]), sp.Integer(0))
                s = sp.expand(to_sympy(s).xreplace(self.reduction))
                b = layer.bias[k] if layer.bias is not None else sp.Integer(0)
                if isinstance(b, sp.Symbol) and b in self.domains and b not in eliminated:
                    self.reduction[b] = z - s
                    eliminated.add(b)
                else:
                    self.reduction[z] = sp.expand(s + to_sympy(b).xreplace(self.reduction))

    def inputs_free_symbols(self) -> list:
        """Every symbol of the reduced variables: inputs, weights, free biases,
        pre-activations that stayed free, box bounds."""
        out = [s for s in self.domains if s not in self.reduction]
        out += [z for z in self.definitions if z not in self.reduction]
        return out

    def reduce(self, expr: Any) -> sp.Expr:
        """``expr`` in the reduced variables (see :meth:`_reduce`)."""
        return to_sympy(expr).xreplace(self.reduction)

    # -- names and labels ---------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return ["input"] + [layer.name for layer in self.layers]

    def widths(self) -> list[int]:
        return [len(self.inputs)] + [layer.n_out for layer in self.layers]

    def shape(self, l: int) -> tuple[int, ...]:
        return self.input_shape if l == 0 else self.layers[l - 1].shape

    def layer_index(self, name: str) -> int:
        if name == "output":
            return self.depth
        if name in self.names:
            return self.names.index(name)
        raise KeyError(f"no layer named {name!r}; layers are {self.names} (and 'output')")

    def label(self, l: int, j: int | None, latex: bool = False) -> str:
        """The name of neuron j of layer l (None: the absorber ⊥_l)."""
        if j is None:
            return f"\\bot_{{{l}}}" if latex else f"⊥{l}"
        if l == 0:
            return f"x_{{{j + 1}}}" if latex else f"x{j + 1}"
        if l == self.depth:
            return f"y_{{{j + 1}}}" if latex else f"y{j + 1}"
        return f"h^{{({l})}}_{{{j + 1}}}" if latex else f"h{l}_{j + 1}"

    # -- assumptions ----------------------------------------------------------------------
    def assumptions(self) -> list[str]:
        """Every assumption a result derived from this network rests on, as text."""
        out = []
        groups: dict[str, list[str]] = {}
        for sym, spec in self.domains.items():
            groups.setdefault(spec, []).append(str(sym))
        for spec, syms in groups.items():
            out.append(f"{', '.join(syms)} {_spec_text(spec)}")
        for x, lo, hi in self.box:
            out.append(f"{lo} < {x} < {hi} (inside the box)")
        relu = any(layer.activation == "relu" for layer in self.layers)
        if self.pattern_text:
            head = "activation pattern and output signs" if relu else "declared pre-activation signs"
            out.append(f"{head}: " + ", ".join(self.pattern_text))
        for expr, sign, why in self.extra:
            out.append(f"{expr} {_spec_text(sign)}" + (f" ({why})" if why else ""))
        for z, d in self.definitions.items():
            out.append(f"{z} = {d}")
        return out

    def assume(self, expr: Any, sign: str, why: str = "") -> None:
        """Add an assumption ``expr`` > 0 ("+"), < 0 ("-") or ≠ 0 ("nonzero") about an
        expression of the network's symbols. It becomes a fact of the sign decider and is
        listed (with ``why``) in :meth:`assumptions`; counterexample points must satisfy it."""
        if sign not in ("+", "-", "nonzero"):
            raise SymbolicNetworkError(f"assume() takes '+', '-' or 'nonzero', got {sign!r}")
        expr = to_sympy(expr)
        if any(expr == e and sign == s for e, s, _ in self.extra):
            return
        fact = Fact(sp.Dummy("t", **SIGNS[sign]), expr)
        self.facts.append(fact)
        self.extra.append((expr, sign, why))
        self.decider.add_fact(fact)

    def base_symbols(self) -> list[sp.Symbol]:
        return [s for s in self.domains if isinstance(s, sp.Symbol)]

    # -- expressions ------------------------------------------------------------------
    def expand(self, expr: sp.Expr) -> sp.Expr:
        """Replace every pre-activation abbreviation by its definition in base symbols."""
        return to_sympy(expr).xreplace(self.expanded)

    def values_at(self, point: dict) -> dict:
        """The abbreviations' values at a point (a dict base symbol -> number)."""
        out = {}
        for z, d in self.expanded.items():
            out[z] = d.xreplace(point)
        return out

    def evaluate(self, expr: Any, point: dict) -> sp.Expr:
        """``expr`` at a point: abbreviations first, then the base symbols."""
        full = dict(point)
        full.update(self.values_at(point))
        return sp.sympify(to_sympy(expr).xreplace(full)).doit()

    def satisfies(self, point: dict) -> bool:
        """Whether a point satisfies the declared signs and the box."""
        vals = self.values_at(point)
        for (l, k), sign in self.signs.items():
            z = self.preactivations[l][k]
            v = vals.get(z, z) if isinstance(z, sp.Symbol) else z
            v = to_sympy(v).xreplace(point)
            if sign == "+" and not v > 0:
                return False
            if sign == "-" and not v < 0:
                return False
        for x, lo, hi in self.box:
            if not (sp.sympify(lo).xreplace(point) < point[x] < sp.sympify(hi).xreplace(point)):
                return False
        full = dict(point)
        full.update(vals)
        for expr, sign, _ in self.extra:
            v = sp.sympify(expr.xreplace(full))
            if (sign == "+" and not v > 0) or (sign == "-" and not v < 0) or (sign == "nonzero" and v == 0):
                return False
        return True

    def sample(self, rng: random.Random, extra: Sequence[sp.Symbol] = (), tries: int = 5000,
               magnitudes: Sequence = SAMPLE_MAGNITUDES) -> dict:
        """A rational point satisfying every assumption (rejection sampling, seeded by ``rng``).

        ``extra`` symbols (rule parameters) are drawn by their own sign assumptions;
        ``magnitudes`` are the absolute values drawn from (:data:`DYADIC_MAGNITUDES` gives
        points that float64 represents exactly, for comparisons with the engine).
        """
        symbols = self.base_symbols() + [s for s in extra if s not in self.domains]
        boxed = {x for x, _, _ in self.box} | {hi for _, _, hi in self.box if isinstance(hi, sp.Symbol)}
        for _ in range(tries):
            point = {}
            for s in symbols:
                if s in boxed:
                    continue
                point[s] = _draw(rng, s, magnitudes)
            for x, lo, hi in self.box:
                if isinstance(lo, sp.Symbol):
                    point[x] = point[lo] + rng.choice(magnitudes)
                    point[hi] = point[x] + rng.choice(magnitudes)
                else:  # numeric bounds: a point strictly inside
                    t = sp.Rational(rng.randint(1, 15), 16)
                    point[x] = lo + t * (hi - lo)
            if self.satisfies(point):
                return point
        raise SymbolicNetworkError(
            f"found no rational point satisfying the assumptions in {tries} tries; the activation pattern or "
            f"sign pattern may be infeasible: {self.assumptions()}"
        )

    def forward_from(self, l: int, values: np.ndarray, target: int) -> sp.Expr:
        """f_target as an explicit function of layer l's activations ``values``, through
        the layers above with the declared pattern (active ReLU = identity, inactive = 0)."""
        a = values
        for layer in self.layers[l:]:
            out = np.empty(layer.n_out, dtype=object)
            for k in range(layer.n_out):
                s = sum((a[j] * layer.weight[k, j] for j in range(layer.n_in) if layer.mask[k, j]), sp.Integer(0))
                z = s + (layer.bias[k] if layer.bias is not None else 0)
                if layer.activation == "relu":
                    active = self.signs.get((layer.index, k)) == "+" or (
                        self.signs.get((layer.index, k)) is None and not z.free_symbols and z > 0)
                    z = z if active else sp.Integer(0)
                out[k] = z
            a = out
        return a[target]

    # -- to torch (for cross-checks) -------------------------------------------------------
    def to_torch(self, point: dict):
        """The network at a rational point as a float64 ``nn.Sequential`` in eval mode, its
        input batch (1, *input shape) and the names of layers 0..L in that model."""
        import torch
        from torch import nn

        def num(e):
            return float(to_sympy(e).xreplace(point))

        modules, names = [], ["input"]
        for layer in self.layers:
            if layer.kind == "conv1d":
                m = nn.Conv1d(1, 1, len(layer.taps), bias=layer.bias is not None).double()
                with torch.no_grad():
                    m.weight.copy_(torch.tensor([[[num(t) for t in layer.taps]]], dtype=torch.float64))
                    if layer.bias is not None:
                        m.bias.fill_(num(layer.shared_bias))
                names.append(str(len(modules)))
                modules += [m, nn.ReLU(), nn.Flatten()]
                continue
            m = nn.Linear(layer.n_in, layer.n_out, bias=layer.bias is not None).double()
            with torch.no_grad():
                m.weight.copy_(torch.tensor([[num(v) for v in row] for row in layer.weight], dtype=torch.float64))
                if layer.bias is not None:
                    m.bias.copy_(torch.tensor([num(v) for v in layer.bias], dtype=torch.float64))
            names.append(str(len(modules)))
            modules.append(m)
            if layer.activation == "relu":
                modules.append(nn.ReLU())
        model = nn.Sequential(*modules).eval()
        x = torch.tensor([num(v) for v in self.inputs], dtype=torch.float64).reshape((1,) + self.input_shape)
        return model, x, names


# -- helpers ---------------------------------------------------------------------------------
def _register(name: str, spec: Any, domains: dict, latex: dict, latex_name: str):
    s = _symbol(name, spec)
    if isinstance(s, sp.Symbol):
        domains[s] = spec
        latex[s] = latex_name
    return s


def alternating(flip: bool, *idx) -> str:
    even = sum(i + 1 for i in idx) % 2 == 0
    return "+" if even != flip else "-"


def _weight_spec(weights: Any, l: int, j: int, k: int):
    if callable(weights):
        return weights(l, j, k)
    if weights in ("alternating", "alternating-"):
        return alternating(weights == "alternating-", j, k)
    return weights


def _bias_spec(biases: Any, l: int, k: int):
    if callable(biases):
        return biases(l, k)
    if biases in ("alternating", "alternating-"):
        return alternating(biases == "alternating-", k, 0)
    if biases == "positive":
        return "+"
    if biases == "negative":
        return "-"
    return biases


def _layer_name(names, l: int, depth: int) -> str:
    if names is not None:
        return names[l - 1]
    return "output" if l == depth else f"h{l}"


def _pattern(pattern: Any, output_signs: Any, widths: Sequence[int], activation: str) -> dict:
    depth = len(widths) - 1
    signs: dict = {}
    for l in range(1, depth):
        for k in range(widths[l]):
            if pattern == "active":
                signs[(l, k)] = "+"
            elif isinstance(pattern, dict):
                signs[(l, k)] = pattern.get((l, k))
            elif pattern is None:
                signs[(l, k)] = None
            else:
                rows = list(pattern)
                if len(rows) != depth - 1 or len(rows[l - 1]) != widths[l]:
                    raise SymbolicNetworkError(
                        f"pattern= needs one string of {widths[1:-1]} characters per hidden layer, got {pattern!r}"
                    )
                signs[(l, k)] = rows[l - 1][k]
    out = output_signs if output_signs is not None else None
    for k in range(widths[-1]):
        if out is None:
            signs[(depth, k)] = None
        elif len(out) == 1:
            signs[(depth, k)] = out
        else:
            signs[(depth, k)] = out[k]
    for key, s in signs.items():
        if s not in ("+", "-", None):
            raise SymbolicNetworkError(f"pattern entry {key} must be '+' or '-', got {s!r}")
    return signs


def _draw(rng: random.Random, s: sp.Symbol, magnitudes=SAMPLE_MAGNITUDES) -> sp.Rational:
    m = rng.choice(magnitudes)
    if s.is_positive:
        return m
    if s.is_negative:
        return -m
    if s.is_nonnegative:
        return m
    return m if rng.random() < 0.5 else -m


WeightSpec = Callable[[int, int, int], Any]
