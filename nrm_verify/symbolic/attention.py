"""Attention's kernels derived in closed form on a 2-token × 2-dimension single-head block
(issue 14, item 2; ``docs/attention.md``, *Derivation*).

The block, on X (2 tokens × 2 dimensions), is what nrm captures from
:func:`nrm_verify.symbolic.crosscheck.torch_block` (``q``, ``k``, ``v``, ``matmul``, ``mul``, ``softmax``, ``matmul_1``,
``ln``, ``out``)::

    Q = X W_q,  K = X W_k,  V = X W_v            (dense, no bias)
    S = Q Kᵀ                                      (bilinear: MatMul, θ)
    L = τ S                                       (the scale, a diagonal map)
    A = softmax(L) per row                        (Softmax)
    O = A V                                       (bilinear: MatMul, θ)
    Y_jp = γ_p (O_jp − mean_j(O)) / σ_j + β_p     (LayerNorm, σ_j held)
    f = Σ_jp r_jp Y_jp + c                        (readout)

Every kernel is **derived**, not written down: the layer kind's linear map at the forward
value (the bilinear map's weights θ V_ip and (1 − θ) A_ji; the softmax's Jacobian
s_j (δ_ij − s_i) with the Taylor remainder as bias; the layer norm's (γ_p/σ)(δ_ip − 1/2) with
bias β_p) is handed to the very rule object of :mod:`nrm.rules` evaluated on sympy
(:func:`derive_column`, as :mod:`nrm_verify.symbolic.derive` does for dense layers).

Forward values are abbreviated by symbols carrying a declared sign (``Q11``, ``S12``, ``A21``
> 0, ``O22``, ``Y11``, ``f``), so that the rules' case distinctions s(z) are decided, never
picked; :data:`definitions` of the block state each abbreviation in terms of the layer
below. A case's signs are read off a rational witness point (:func:`signs_at`), so every case
is feasible. σ_j (held, > 0) and the softmax outputs are symbols of their own: an identity
proved with them free holds a fortiori at their true values.

Proper form (NRM-SPEC §1): V reaches O through identity padding neurons V′, V″, V‴ at layers
2–4, so the kernels are layered: X(0) → Q,K,V(1) → S,V′(2) → L,V″(3) → A,V‴(4) → O(5) → Y(6)
→ f(7).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import sympy as sp

from nrm.rules import Epsilon, Rule, Zero, identity
from nrm_verify.symbolic.catalog import EPS
from nrm_verify.symbolic.ops import SignDecider, sympy_ops, to_sympy

THETA = sp.Symbol("theta", nonnegative=True)
TAU = sp.Symbol("tau", positive=True)
LN_EPS = Fraction(1, 1024)
"""The layer norm's own ε inside σ = √(Var + ε) (dyadic, so float64 holds it exactly)."""
KINDS = ("q", "k", "v", "scores", "scale", "softmax", "values", "ln", "out")
TORCH_NAMES = {"q": "q", "k": "k", "v": "v", "scores": "matmul", "scale": "mul", "softmax": "softmax",
               "values": "matmul_1", "ln": "ln", "out": "out"}
"""Each kernel's layer name in nrm's capture of :func:`nrm_verify.symbolic.crosscheck.torch_block`."""
PAIRS = [(1, 1), (1, 2), (2, 1), (2, 2)]
_REAL = ["x", "wq", "wk", "wv", "r"]


def default_rules() -> dict[str, Rule]:
    """LRP-ε (symbolic ε > 0) on every map, LRP-0 on the softmax (AttnLRP Prop. 3.1) and the scale."""
    return {**{k: Epsilon(EPS) for k in KINDS}, "softmax": Zero(), "scale": Zero()}


def base_symbols() -> dict[str, sp.Symbol]:
    """Inputs x_ti, weights (w{q,k,v})_ip, γ_p (g), β_p (be), readout r_jp and c, the scale τ,
    the held σ_j, ε and θ."""
    out = {f"{h}{a}{b}": sp.Symbol(f"{h}{a}{b}", real=True) for h in _REAL for a, b in PAIRS}
    for p in (1, 2):
        out[f"g{p}"] = sp.Symbol(f"g{p}", nonzero=True)
        out[f"be{p}"] = sp.Symbol(f"be{p}", real=True)
        out[f"sigma{p}"] = sp.Symbol(f"sigma{p}", positive=True)
    out.update(c=sp.Symbol("c", real=True), tau=TAU, eps=EPS, theta=THETA)
    return out


ABBREVIATIONS = [f"{h}{a}{b}" for h in "QKVSLAOY" for a, b in PAIRS] + ["f"]


def forward(point: dict) -> dict[str, sp.Expr]:
    """Every forward value, exactly (exp and √ kept exact), at a point {name or symbol: value};
    σ_j = √(Var_j(O) + LN_EPS) is the layer norm's (population variance over the 2 dimensions)."""
    v = {str(k): _exact(val) for k, val in point.items()}
    for h in "qkv":
        for t, p in PAIRS:
            v[f"{h.upper()}{t}{p}"] = sum(v[f"x{t}{i}"] * v[f"w{h}{i}{p}"] for i in (1, 2))
    for j, k in PAIRS:
        v[f"S{j}{k}"] = sum(v[f"Q{j}{p}"] * v[f"K{k}{p}"] for p in (1, 2))
        v[f"L{j}{k}"] = v["tau"] * v[f"S{j}{k}"]
    for j, k in PAIRS:
        v[f"A{j}{k}"] = sp.exp(v[f"L{j}{k}"]) / sum(sp.exp(v[f"L{j}{i}"]) for i in (1, 2))
    for j, p in PAIRS:
        v[f"O{j}{p}"] = sum(v[f"A{j}{k}"] * v[f"V{k}{p}"] for k in (1, 2))
    for j in (1, 2):
        half = (v[f"O{j}1"] - v[f"O{j}2"]) / 2
        v[f"sigma{j}"] = sp.sqrt(half ** 2 + sp.Rational(LN_EPS.numerator, LN_EPS.denominator))
    for j, p in PAIRS:
        mean = (v[f"O{j}1"] + v[f"O{j}2"]) / 2
        v[f"Y{j}{p}"] = v[f"g{p}"] * (v[f"O{j}{p}"] - mean) / v[f"sigma{j}"] + v[f"be{p}"]
    v["f"] = sum(v[f"r{j}{p}"] * v[f"Y{j}{p}"] for j, p in PAIRS) + v["c"]
    return v


def _exact(value) -> sp.Expr:
    if isinstance(value, Fraction):
        return sp.Rational(value.numerator, value.denominator)
    return value if isinstance(value, sp.Basic) else sp.nsimplify(value)


def signs_at(point: dict) -> dict[str, int]:
    """The sign of every abbreviated forward value at a point (decided at 50 digits; a value
    within 1e-30 of 0 is refused: such a point is no witness of a strict sign pattern)."""
    values = forward(point)
    out = {}
    for name in ABBREVIATIONS:
        x = sp.N(values[name], 50)
        if abs(x) < sp.Float("1e-30"):
            raise ValueError(f"{name} = {x} at the point: choose a point where every forward value is non-zero")
        out[name] = 1 if x > 0 else -1
    return out


@dataclass(frozen=True)
class Neuron:
    """A neuron of the proper network: its label and the forward value it carries."""

    label: str
    value: str


@dataclass
class Column:
    """One output neuron's kernel column: its kind, its parents (indices into the layer
    below), the map's weights and bias there (None: no bias) and its forward value z."""

    kind: str
    parents: list[int]
    weights: list
    bias: object
    z: sp.Expr


def derive_column(rule: Rule, ops, a: list, w: list, bias, z) -> tuple[list, sp.Expr]:
    """q(parent_j | k) for every parent and q(⊥ | k), from the rule's shares over the map's
    column (NRM-SPEC §2, as :func:`nrm_verify.references.oracle.rule_kernel` does in fractions):
    c_s(j) = Σ_parts u(a_j) v(w_j); Z_s = Σ_j c_s(j) — for a plain share (u = v = identity) the
    abbreviation z − b, so that s(z) is decided by z's declared sign —, β_s = share.bias(b);
    ``rule.column`` turns them into the column."""
    a_arr, w_arr = np.array(a, dtype=object), np.array(w, dtype=object)
    zs, bs, cs = [], [], []
    for share in rule.shares():
        plain = len(share.parts) == 1 and share.parts[0].input is identity and share.parts[0].weight is identity
        c = np.array([sp.Integer(0)] * len(a), dtype=object)
        for part in share.parts:
            u = np.asarray(part.input(ops, a_arr), dtype=object).reshape(-1)
            v = np.asarray(part.weight(ops, w_arr), dtype=object).reshape(-1)
            c = c + np.array([to_sympy(x) * to_sympy(y) for x, y in zip(u, v)], dtype=object)
        beta = sp.Integer(0)
        if share.bias is not None and bias is not None:
            beta = to_sympy(np.asarray(share.bias(ops, np.array([bias], dtype=object))).reshape(-1)[0])
        total = (z - (bias if bias is not None else 0)) if plain else sum(c, sp.Integer(0))
        zs.append(np.array([total], dtype=object))
        bs.append(np.array([beta], dtype=object))
        cs.append(c)
    scales, qbot = rule.column(ops, tuple(zs), tuple(bs))
    scales = [to_sympy(np.asarray(s, dtype=object).reshape(-1)[0]) for s in scales]
    q = [sum((s * c[j] for s, c in zip(scales, cs)), sp.Integer(0)) for j in range(len(a))]
    return q, to_sympy(np.asarray(qbot, dtype=object).reshape(-1)[0])


class AttentionBlock:
    """The block in closed form under ``rules`` ({kind: Rule}, :data:`KINDS`; missing kinds
    take :func:`default_rules`) and a sign pattern ``signs`` ({abbreviation: ±1}, e.g. from
    :func:`signs_at`). ``theta`` is the bilinear split (a symbol by default).

    ``layers[l]`` lists the neurons of layer l; ``kernels[l]`` is Q̄_l, an object array of
    shape (|V_{l−1}| + 1, |V_l|) whose last row is q(⊥ | k) (column sums are 1: law L1);
    ``columns[l]`` the map each column was derived from; ``definitions`` every
    abbreviation in terms of the layer below."""

    def __init__(self, signs: dict[str, int], rules: dict[str, Rule] | None = None, theta=THETA):
        self.rules = {**default_rules(), **(rules or {})}
        self.theta = sp.sympify(theta)
        self.signs = dict(signs)
        self.symbols = base_symbols()
        for name in ABBREVIATIONS:
            positive = name.startswith("A") or signs[name] > 0
            self.symbols[name] = sp.Symbol(name, positive=True) if positive else sp.Symbol(name, negative=True)
        self.layers = _layers()
        self.columns = [None] + [self._columns(l) for l in range(1, len(self.layers))]
        self.definitions = {c.z: self._definition(l, c) for l in range(1, len(self.layers)) for c in self.columns[l]
                            if c.kind != "pad"}
        self.ops = sympy_ops(SignDecider())
        self.kernels = [None] + [self._kernel(l) for l in range(1, len(self.layers))]

    def s(self, name: str) -> sp.Symbol:
        return self.symbols[name]

    def _columns(self, l: int) -> list[Column]:
        below = {n.label: i for i, n in enumerate(self.layers[l - 1])}
        return [self._column(n, below) for n in self.layers[l]]

    def _column(self, n: Neuron, below: dict[str, int]) -> Column:
        """The map of one neuron from the kinds' definitions (docs/attention.md)."""
        s, h, (a, b) = self.s, n.label[0], (n.label[1:3] if len(n.label) >= 3 else "00")
        a, b = (int(a), int(b)) if n.label != "f" else (0, 0)
        if n.label != n.value:  # an identity padding neuron V′ … (NRM-SPEC §1): its parent carries the same value
            marks = "′″‴"
            previous = n.label[:-1] + ("" if n.label[-1] == marks[0] else marks[marks.index(n.label[-1]) - 1])
            return Column("pad", [below[previous]], [1], None, s(n.value))
        if h in "QKV":
            w = [s(f"w{h.lower()}{i}{b}") for i in (1, 2)]
            return Column(h.lower(), [below[f"x{a}{i}"] for i in (1, 2)], w, None, s(n.value))
        if h == "S":
            t = self.theta
            return Column("scores", [below[f"Q{a}{p}"] for p in (1, 2)] + [below[f"K{b}{p}"] for p in (1, 2)],
                          [t * s(f"K{b}{p}") for p in (1, 2)] + [(1 - t) * s(f"Q{a}{p}") for p in (1, 2)], None,
                          s(n.value))
        if h == "L":
            return Column("scale", [below[f"S{a}{b}"]], [TAU], None, s(n.value))
        if h == "A":
            w = [s(f"A{a}{b}") * (int(i == b) - s(f"A{a}{i}")) for i in (1, 2)]
            bias = s(f"A{a}{b}") - sum(s(f"L{a}{i}") * wi for i, wi in zip((1, 2), w))
            return Column("softmax", [below[f"L{a}{i}"] for i in (1, 2)], w, bias, s(n.value))
        if h == "O":
            t, v3 = self.theta, "V{}{}‴"
            return Column("values", [below[f"A{a}{k}"] for k in (1, 2)] + [below[v3.format(k, b)] for k in (1, 2)],
                          [t * s(f"V{k}{b}") for k in (1, 2)] + [(1 - t) * s(f"A{a}{k}") for k in (1, 2)], None,
                          s(n.value))
        if h == "Y":
            w = [s(f"g{b}") * (sp.Integer(int(i == b)) - sp.Rational(1, 2)) / s(f"sigma{a}") for i in (1, 2)]
            return Column("ln", [below[f"O{a}{i}"] for i in (1, 2)], w, s(f"be{b}"), s(n.value))
        return Column("out", [below[f"Y{j}{p}"] for j, p in PAIRS], [s(f"r{j}{p}") for j, p in PAIRS], s("c"),
                      s("f"))

    def _definition(self, l: int, col: Column) -> sp.Expr:
        """z = Σ_j a_j w_j + b over the column's map: the forward value in terms of the layer below
        (for a product Σ_i θ A_ji V_ip + Σ_i (1 − θ) A_ji V_ip = Σ_i A_ji V_ip; for the softmax
        J x + b = s by the remainder's definition)."""
        a = [self.s(self.layers[l - 1][j].value) for j in col.parents]
        return sum((x * w for x, w in zip(a, col.weights)), sp.Integer(0)) + (col.bias if col.bias is not None else 0)

    def _kernel(self, l: int) -> np.ndarray:
        below = len(self.layers[l - 1])
        Q = np.full((below + 1, len(self.layers[l])), sp.Integer(0), dtype=object)
        for k, col in enumerate(self.columns[l]):
            if col.kind == "pad":
                Q[col.parents[0], k] = sp.Integer(1)
                continue
            a = [self.s(self.layers[l - 1][j].value) for j in col.parents]
            q, qbot = derive_column(self.rules[col.kind], self.ops, a, col.weights, col.bias, col.z)
            for j, v in zip(col.parents, q):
                Q[j, k] = v
            Q[below, k] = qbot
        return Q

    @property
    def depth(self) -> int:
        return len(self.layers) - 1

    def undecided(self) -> list:
        """The rules' case distinctions the declared signs left open (none for the built-in signs)."""
        return list(self.ops.scalars.undecided)

    def substitution(self, values: dict) -> dict:
        """{symbol: value} for every base symbol and abbreviation named in ``values``."""
        return {sym: values[name] for name, sym in self.symbols.items() if name in values}

    def kernel_at(self, l: int, values: dict) -> np.ndarray:
        """Q̄_l with every symbol replaced by ``values`` ({name: value})."""
        sub = self.substitution(values)
        return np.vectorize(lambda e: sp.sympify(e).xreplace(sub), otypes=[object])(self.kernels[l])

    def marginals_at(self, values: dict) -> list[list]:
        """m_l over V̄_l (⊥ last: the absorber chain's mass) at every layer, by the backward pass
        m_{l−1} = Q̄_l m_l from π = δ_f, with the kernels at ``values`` (exact for rational values)."""
        m = [sp.Integer(1), sp.Integer(0)]
        out = [m]
        for l in range(self.depth, 0, -1):
            Q = self.kernel_at(l, values)
            n = Q.shape[0] - 1
            m = [sum((Q[j, k] * m[k] for k in range(len(m) - 1)), sp.Integer(0)) + (m[-1] if j == n else 0)
                 for j in range(n + 1)]
            out.append(m)
        return out[::-1]


def _layers() -> list[list[Neuron]]:
    """V_0 … V_7 of the proper network (V′, V″, V‴ the identity padding of V)."""
    def same(prefix):
        return [Neuron(f"{prefix}{a}{b}", f"{prefix}{a}{b}") for a, b in PAIRS]

    def pad(mark):
        return [Neuron(f"V{a}{b}{mark}", f"V{a}{b}") for a, b in PAIRS]

    return [same("x"), same("Q") + same("K") + same("V"), same("S") + pad("′"), same("L") + pad("″"),
            same("A") + pad("‴"), same("O"), same("Y"), [Neuron("f", "f")]]


def dyadic_point(rng, extra: dict | None = None) -> dict[str, Fraction]:
    """A random point of the base symbols with dyadic values (exact in float64): inputs and
    weights in ±{1/4 … 2}, γ, β, r, c likewise, τ ∈ {1/2, 1}, ε = 1/64, θ = 1/2."""
    mags = [Fraction(1, 4), Fraction(1, 2), Fraction(3, 4), Fraction(1), Fraction(3, 2), Fraction(2)]
    out = {}
    for name in base_symbols():
        if name.startswith("sigma"):
            continue
        out[name] = rng.choice(mags) * rng.choice((1, -1))
    out.update(tau=rng.choice((Fraction(1, 2), Fraction(1))), eps=Fraction(1, 64), theta=Fraction(1, 2))
    out.update(extra or {})
    return out


__all__ = ["AttentionBlock", "Column", "Neuron", "derive_column", "forward", "signs_at", "base_symbols",
           "default_rules", "dyadic_point", "THETA", "TAU", "LN_EPS", "KINDS", "TORCH_NAMES", "ABBREVIATIONS"]
