"""Closed forms of the NRM of a symbolic network: kernels, walks, marginals, events,
joints and conditionals (NRM-SPEC §2–§3), printable as text and LaTeX.

The kernels come from the very rule objects of :mod:`nrm.rules`: for every share s of a
rule, the contributions c_s(j, k) = Σ_p u_p(a_j) v_p(w_jk) are formed with the rule's own
element functions on :func:`~nrm_verify.symbolic.ops.sympy_ops`, and
:meth:`nrm.rules.Rule.column` turns the per-share sums into the kernel column — exactly
the code path of the torch engine, on sympy scalars. As in the engine, a share made of
the single plain part a·w reuses the forward pass: its sum Σ_j a_j w_jk is z_k − b_k.

    μ({ω}) = π(n_L) Π_{l=1..L} q_l(n_{l−1} | n_l),   m_{l−1} = Q̄_l m_l,
    μ(E) for a cylinder E = ∩ {X_l ∈ S_l}: r ← π ⊙ M_L, r ← (Q̄_l r) ⊙ M_{l−1}, μ = Σ r.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp

from nrm.errors import EventIndexError, NullEventError, RuleAssignmentError, ZeroOutputError
from nrm.events import At, Event
from nrm.rules import Rule, identity
from nrm_verify.symbolic.algebra import FactoredField
from nrm_verify.symbolic.network import SymbolicNetwork
from nrm_verify.symbolic.ops import ZERO, sympy_ops, to_sympy


class SymbolicMeasure:
    """The normalized relevance measure of a :class:`SymbolicNetwork`, in closed form.

    ``rules`` is one :class:`nrm.rules.Rule` for every layer, a sequence with one rule
    per layer 1..L, or a mapping {layer name: rule} (missing layers use the rule under
    the key ``None``). The output measure is π = δ_target (f_target ≠ 0 is needed), or
    π = R / Σ R for a ``start`` vector R.
    """

    def __init__(self, network: SymbolicNetwork, rules, target: int = 0, start: Sequence | None = None,
                 assume_nonzero_denominators: bool = False):
        self.network = network
        self.rules = _rules_per_layer(network, rules)
        self._layer = 0
        callback = None
        if assume_nonzero_denominators:
            def callback(x):
                network.assume(x, "nonzero", f"a denominator of the layer-{self._layer} rule (its validity condition)")
        self.ops = sympy_ops(network.decider, callback)
        self.undecided: list[tuple[int, str, sp.Expr]] = []
        self.target = target
        self._conditions: list[str] = []
        L = network.depth
        out = network.preactivations[L]
        if start is None:
            if not 0 <= target < len(out):
                raise ValueError(f"target {target} is out of range for {len(out)} outputs")
            f = to_sympy(out[target])
            self.pi = [sp.Integer(1) if k == target else sp.Integer(0) for k in range(len(out))]
        else:
            R = [to_sympy(v) for v in start]
            if len(R) != len(out):
                raise ValueError(f"start= needs {len(out)} values, got {len(R)}")
            f = sum(R, sp.Integer(0))
            self.pi = [r / f for r in R]
        if f == 0:
            raise ZeroOutputError("f = 0: the output measure π = R / f is undefined; choose another target or point")
        if 0 in network.decider.signs(f):
            self._conditions.append(f"{f} ≠ 0 (the output)")
        self.f = f
        self.kernels: list[np.ndarray | None] = [None]
        self.contributions: list[list | None] = [None]
        for l in range(1, L + 1):
            self.kernels.append(self._kernel(l))
        self._display_algebra = _Algebra(self, proof=False)
        self._proof_algebra: _Algebra | None = None

    # -- kernels ---------------------------------------------------------------------------
    def _kernel(self, l: int) -> np.ndarray:
        """Q̄_l without the absorber column: (n_{l−1} + 1, n_l), last row q(⊥_{l−1} | k)."""
        net, rule, ops = self.network, self.rules[l], self.ops
        self._layer = l
        layer = net.layers[l - 1]
        a = net.activations[l - 1]
        W, mask = layer.weight, layer.mask
        n_out, n_in = W.shape
        before = len(ops.scalars.undecided)
        contributions, biases, cs = [], [], []
        for share in rule.shares():
            c = np.full((n_out, n_in), sp.Integer(0), dtype=object)
            Z = None
            plain = len(share.parts) == 1 and share.parts[0].input is identity and share.parts[0].weight is identity
            for part in share.parts:
                U = part.input(ops, a)
                V = part.weight(ops, W)
                for k in range(n_out):
                    for j in range(n_in):
                        if mask[k, j]:
                            c[k, j] = c[k, j] + to_sympy(U[j]) * to_sympy(V[k, j])
            if plain:
                Z = np.array(net.z_nobias[l], dtype=object)
            else:
                Z = np.array([sum(c[k, :], sp.Integer(0)) for k in range(n_out)], dtype=object)
            if share.bias is None or layer.bias is None:
                beta = np.full(n_out, sp.Integer(0), dtype=object)
            else:
                beta = np.array([to_sympy(v) for v in share.bias(ops, layer.bias)], dtype=object)
            contributions.append(Z)
            biases.append(beta)
            cs.append(c)
        scales, qbot = rule.column(ops, tuple(contributions), tuple(biases))
        Q = np.empty((n_in + 1, n_out), dtype=object)
        for k in range(n_out):
            for j in range(n_in):
                Q[j, k] = _tidy(sum((to_sympy(s[k]) * c[k, j] for s, c in zip(scales, cs)), sp.Integer(0)))
            Q[n_in, k] = _tidy(to_sympy(qbot[k]))
        self.contributions.append(cs)
        for op, x in ops.scalars.undecided[before:]:
            self.undecided.append((l, op, x))
        return Q

    def kernel(self, layer: str | int) -> sp.Matrix:
        """Q_l as a sympy Matrix: rows j ∈ V_{l−1} then ⊥_{l−1}, columns k ∈ V_l.
        Column sums are 1 (L1); the absorber's own column (q(⊥|⊥) = 1) is implicit."""
        l = self._index(layer)
        if l < 1:
            raise ValueError("the input layer has no kernel; kernels belong to layers 1..L")
        return sp.Matrix(self.kernels[l])

    def q(self, l: int, j: int | None, k: int | None, raw: bool = False):
        """q_l(j | k) with None for the absorbers (q(⊥|⊥) = 1, q(j|⊥) = 0).

        ``raw=True`` (here and in every method below) returns the value in the proof
        algebra: a rational function of the reduced variables
        (:meth:`SymbolicNetwork.reduce`), on which equality is exact and cheap."""
        return self.algebra(raw).q(l, j, k)

    def algebra(self, raw: bool) -> _Algebra:
        """The measure's arithmetic: exact rational functions of the reduced variables for
        proofs (``raw=True``), readable sympy expressions otherwise."""
        if raw:
            if self._proof_algebra is None:
                self._proof_algebra = _Algebra(self, proof=True)
            return self._proof_algebra
        return self._display_algebra

    def value(self, element) -> sp.Expr:
        """A raw value as a sympy expression (in the reduced variables)."""
        return self._proof_algebra.to_expr(element) if self._proof_algebra else to_sympy(element)

    def raw(self, expr) -> Any:
        """A sympy expression of this network's symbols in the proof algebra."""
        return self.algebra(True).convert(expr)

    # -- marginals ---------------------------------------------------------------------------
    def _index(self, layer: str | int) -> int:
        if isinstance(layer, int):
            if not 0 <= layer <= self.network.depth:
                raise KeyError(f"layer index {layer} out of range 0..{self.network.depth}")
            return layer
        return self.network.layer_index(layer)

    def full_marginal(self, layer: str | int, raw: bool = False) -> list:
        """m_l over V̄_l: the real neurons, then ⊥_l (no absorber at the output layer)."""
        return self.algebra(raw).marginal(self._index(layer))

    def marginal(self, layer: str | int, raw: bool = False) -> list:
        """m_l(j) = μ(X_l = j) for the real neurons of the layer."""
        l = self._index(layer)
        return self.full_marginal(l, raw)[: self.network.widths()[l]]

    def absorbed(self, layer: str | int, raw: bool = False):
        """m_l(⊥_l), the absorber's mass (0 at the output layer, which has none)."""
        l = self._index(layer)
        alg = self.algebra(raw)
        if l == self.network.depth:
            return alg.zero
        return self.full_marginal(l, raw)[-1]

    # -- walks -------------------------------------------------------------------------------
    def walk(self, path: Sequence[int | None], raw: bool = False):
        """μ({ω}) for ω = (n_0, …, n_L) (0-based indices, None for an absorber)."""
        L = self.network.depth
        if len(path) != L + 1:
            raise ValueError(f"a walk names one neuron per layer: {L + 1} entries, got {len(path)}")
        return self.algebra(raw).walk(tuple(path))

    def walks(self, raw: bool = False) -> dict:
        """Every walk of Ω with its measure (absorbers as None), in lexicographic order."""
        return self.algebra(raw).walks()

    # -- events ------------------------------------------------------------------------------
    def _resolve(self, cylinder) -> dict[int, tuple[list[bool], bool]]:
        out: dict[int, tuple[list[bool], bool]] = {}
        for atom in sorted(cylinder, key=repr):
            l = self._index(atom.layer)
            n = self.network.widths()[l]
            shape = self.network.shape(l)
            if atom.selector == "all":
                mask = [True] * n
            elif atom.selector == "none":
                mask = [False] * n
            elif atom.selector == "index":
                bad = [i for i in atom.values if not 0 <= i < n]
                if bad:
                    raise EventIndexError(
                        f"{atom!r}: indices {bad} out of range for layer {atom.layer!r} with {n} neurons")
                mask = [i in atom.values for i in range(n)]
            elif atom.selector == "channels":
                per = n // shape[0]
                bad = [c for c in atom.values if not 0 <= c < shape[0]]
                if bad:
                    raise EventIndexError(f"{atom!r}: channels {bad} out of range for layer {atom.layer!r}")
                mask = [(i // per) in atom.values for i in range(n)]
            else:  # a boolean torch mask
                flat = atom.mask.reshape(-1).tolist()
                if len(flat) != n:
                    raise EventIndexError(f"{atom!r}: the mask has {len(flat)} entries, layer {atom.layer!r} has {n}")
                mask = [bool(v) for v in flat]
            absorber = atom.absorber
            if atom.negated:  # {X_l ∉ S}: the other neurons, and ⊥ unless S holds it
                mask, absorber = [not v for v in mask], not absorber
            if l in out:
                prev, pb = out[l]
                mask = [p and q for p, q in zip(prev, mask)]
                absorber = pb and absorber
            out[l] = (mask, absorber)
        return out

    def measure(self, event: Event, raw: bool = False):
        """μ(event) by linearity over its cylinders, each by a masked backward pass (§5)."""
        if not isinstance(event, Event):
            raise TypeError(f"expected an nrm event (nrm.At(...) and combinations), got {type(event).__name__}")
        alg = self.algebra(raw)
        total = alg.zero
        for cyl, c in sorted(event.terms.items(), key=lambda kv: sorted(map(repr, kv[0]))):
            total = total + c * alg.cylinder(cyl)
        return total

    __call__ = measure

    def contains(self, event: Event, path: Sequence[int | None]) -> int:
        """1 if the walk lies in the event, else 0 (the indicator, by inclusion–exclusion)."""
        total = 0
        for cyl, c in event.terms.items():
            cons = self._resolve(cyl)
            inside = all((path[l] is None and absorber) or (path[l] is not None and mask[path[l]])
                         for l, (mask, absorber) in cons.items())
            total += c * int(inside)
        if total not in (0, 1):
            raise ValueError(f"the event's indicator is {total} on a walk; an event is a set of walks")
        return total

    def enumerate(self, event: Event, raw: bool = False):
        """μ(event) = Σ_{ω ∈ event} μ({ω}) by enumerating every walk (the definition, §3)."""
        alg = self.algebra(raw)
        total = alg.zero
        for path, mu in alg.walks().items():
            if self.contains(event, path):
                total = total + mu
        return total

    def conditional(self, event: Event, given: Event, raw: bool = False):
        """μ(event | given) = μ(event ∩ given) / μ(given).

        Raises :class:`nrm.errors.NullEventError` when μ(given) is identically 0; when its
        sign is not decided by the assumptions, μ(given) ≠ 0 becomes a stated condition
        (:attr:`conditions`).
        """
        proof = self.algebra(True)
        base_raw = self.measure(given, raw=True)
        if proof.is_zero(base_raw):
            raise NullEventError(f"cannot condition on {given!r}: its measure is 0; the conditional is undefined")
        base = self.measure(given, raw=raw)
        if not _is_nonzero_constant(base_raw):
            text = f"μ({given!r}) ≠ 0"
            if text not in self._conditions:
                self._conditions.append(text)
        return self.measure(event & given, raw=raw) / base

    def joint(self, layer_a: str | int, layer_b: str | int, raw: bool = False):
        """μ(X_a = i, X_b = k) over V̄_a × V̄_b (absorbers last; none at the output); a
        sympy Matrix, or a list of rows with ``raw=True``."""
        la, lb = self._index(layer_a), self._index(layer_b)
        if la == lb:
            raise ValueError("joint() needs two different layers")
        rows = [[self.measure(self.atom(la, i) & self.atom(lb, k), raw=raw) for k in range(self._size(lb))]
                for i in range(self._size(la))]
        return rows if raw else sp.Matrix(rows)

    def _size(self, l: int) -> int:
        return self.network.widths()[l] + (0 if l == self.network.depth else 1)

    def atom(self, l: int, j: int | None) -> Event:
        """{X_l = j} (j None or j = width: the absorber ⊥_l)."""

        name = self.network.names[l]
        if j is None or j == self.network.widths()[l]:
            return At(name, index=[], absorber=True)
        return At(name, index=[j])

    # -- presentation ---------------------------------------------------------------------------
    @property
    def conditions(self) -> list[str]:
        """Conditions a result rests on beyond the network's assumptions (e.g. μ(A) ≠ 0)."""
        return list(self._conditions)

    def assumptions(self) -> list[str]:
        """The network's assumptions, the rules' parameter domains, and the undecided cases."""
        out = list(self.network.assumptions())
        params = sorted(self.parameters(), key=str)
        for p in params:
            out.append(f"{p} {_domain(p)}")
        out += self.conditions
        for l, op, x in self.undecided:
            out.append(f"layer {l}: {op}({x}) is not decided by the assumptions; kept as a Piecewise")
        return out

    def parameters(self) -> set:
        """Symbols of the rules (ε, γ, β, …) that are not network symbols."""
        net_syms = set(self.network.domains) | set(self.network.definitions)
        for _, lo, hi in self.network.box:
            net_syms |= {lo, hi}
        found = set()
        for Q in self.kernels[1:]:
            for e in Q.flat:
                found |= to_sympy(e).free_symbols
        return {s for s in found if s not in net_syms and not isinstance(s, sp.Dummy)}

    def names(self, latex: bool = False) -> dict:
        """LaTeX names of every symbol, for ``sympy.latex(..., symbol_names=...)``."""
        out = dict(self.network.latex_names)
        for p in self.parameters():
            out.setdefault(p, _PARAM_LATEX.get(p.name, sp.latex(p)))
        return out

    def latex(self, expr) -> str:
        return sp.latex(to_sympy(expr), symbol_names=self.names())

    def equations(self, latex: bool = False, walks: bool = True, marginals: bool = True,
                  simplify: bool = True) -> list[tuple[str, str]]:
        """(left side, right side) of every kernel entry, walk measure and marginal, as
        plain text or LaTeX. ``simplify`` applies ``factor(together(·))`` for display."""
        net = self.network
        out = []

        def show(e):
            e = to_sympy(e)
            if simplify and not e.has(sp.Piecewise):
                e = sp.factor(sp.together(e))
            return self.latex(e) if latex else str(e)

        lab = lambda l, j: net.label(l, j, latex)  # noqa: E731
        bar = " \\mid " if latex else " | "
        for l in range(1, net.depth + 1):
            widths = net.widths()
            for k in range(widths[l]):
                for j in list(range(widths[l - 1])) + [None]:
                    name = f"q_{{{l}}}" if latex else f"q{l}"
                    left = f"{name}({lab(l - 1, j)}{bar}{lab(l, k)})"
                    out.append((left, show(self.q(l, j, k))))
        if walks:
            for path, mu in self.walks().items():
                if mu == 0:
                    continue
                names = ", ".join(lab(l, n) for l, n in enumerate(path))
                out.append((f"\\mu({names})" if latex else f"μ({names})", show(mu)))
        if marginals:
            for l in range(net.depth - 1, -1, -1):
                for j, v in enumerate(self.full_marginal(l)):
                    jj = None if j == net.widths()[l] else j
                    left = f"m_{{{l}}}({lab(l, jj)})" if latex else f"m{l}({lab(l, jj)})"
                    out.append((left, show(v)))
        return out

    def text(self, **kw) -> str:
        """Every equation as plain text, one per line, after the assumptions."""
        lines = ["assumptions:"] + [f"  {a}" for a in self.assumptions()]
        lines += [f"{a} = {b}" for a, b in self.equations(latex=False, **kw)]
        return "\n".join(lines)

    # -- numbers --------------------------------------------------------------------------
    def at(self, point: Mapping) -> NumericMeasure:
        """The measure at a point (base symbols and rule parameters → numbers)."""
        return NumericMeasure(self, dict(point))

    def expand(self, expr) -> sp.Expr:
        return self.network.expand(expr)


def _is_nonzero_constant(value) -> bool:
    if isinstance(value, sp.Basic):
        return value.is_number and value != 0
    return value.is_constant and bool(value.num)


def _tidy(e: sp.Expr) -> sp.Expr:
    """A kernel entry as one reduced fraction (cheap at this size; Piecewise left alone).
    Floats (a rule parameter such as ``Gamma(0.25)``) become the exact rationals they are,
    as in the exact oracle."""
    floats = e.atoms(sp.Float)
    if floats:
        e = e.xreplace({f: sp.Rational(float(f)) for f in floats})
    return e if e.has(sp.Piecewise) or not e.free_symbols else sp.cancel(e)


class _Algebra:
    """Where a measure computes: sympy expressions for display, or — for proofs — the
    rational functions over QQ in the reduced variables with factored denominators
    (:mod:`~nrm_verify.symbolic.algebra`: exact, and zero exactly when the numerator is).
    A kernel with an undecided case
    (a Piecewise) cannot live in the field; the proof algebra then stays with reduced
    sympy expressions."""

    def __init__(self, measure: SymbolicMeasure, proof: bool):
        self.m = measure
        self.proof = proof
        self.field = None
        net = measure.network
        if proof:
            exprs = [net.reduce(e) for Q in measure.kernels[1:] for e in Q.flat] + [net.reduce(p) for p in measure.pi]
            if not any(e.has(sp.Piecewise) for e in exprs):
                symbols = set()
                for e in exprs:
                    symbols |= e.free_symbols
                symbols |= {s for s in net.reduction.values() for s in sp.sympify(s).free_symbols}
                symbols |= set(net.inputs_free_symbols())
                self.field = FactoredField(sorted(symbols, key=str))
        self.zero = self.convert(0)
        self.one = self.convert(1)
        self._q: dict = {}
        self._marginals: dict = {}
        self._cylinders: dict = {}
        self._walks: dict | None = None
        self.pi = [self.convert(p) for p in measure.pi]

    def convert(self, expr):
        expr = to_sympy(expr)
        if not self.proof:
            return expr
        expr = self.m.network.reduce(expr)
        if self.field is not None and not expr.has(sp.Piecewise):
            try:
                return self.field.from_expr(expr)
            except ValueError:  # a symbol outside the field: stay with expressions
                pass
        return expr

    def to_expr(self, element) -> sp.Expr:
        return element.as_expr() if hasattr(element, "as_expr") and not isinstance(element, sp.Basic) else element

    def is_zero(self, element) -> bool:
        if isinstance(element, sp.Basic):
            return element == 0 or _rational_zero(element)
        return element == 0

    def q(self, l, j, k):
        if k is None:
            return self.one if j is None else self.zero
        key = (l, j, k)
        if key not in self._q:
            n_in = self.m.network.widths()[l - 1]
            self._q[key] = self.convert(self.m.kernels[l][n_in if j is None else j, k])
        return self._q[key]

    def marginal(self, l: int) -> list:
        if l in self._marginals:
            return self._marginals[l]
        net = self.m.network
        L = net.depth
        if l == L:
            out = list(self.pi)
        else:
            upper = self.marginal(l + 1)
            n_up, n = net.widths()[l + 1], net.widths()[l]
            out = []
            for j in list(range(n)) + [None]:
                total = self.zero
                for k in range(n_up):
                    total = total + self.q(l + 1, j, k) * upper[k]
                if j is None and l + 1 < L:
                    total = total + upper[n_up]
                out.append(total)
        self._marginals[l] = out
        return out

    def walk(self, path):
        if path[-1] is None:
            return self.zero
        value = self.pi[path[-1]]
        for l in range(self.m.network.depth, 0, -1):
            value = value * self.q(l, path[l - 1], path[l])
        return value

    def walks(self) -> dict:
        if self._walks is None:
            widths = self.m.network.widths()
            axes = [list(range(n)) + [None] for n in widths[:-1]] + [list(range(widths[-1]))]
            self._walks = {path: self.walk(path) for path in itertools.product(*axes)}
        return self._walks

    def cylinder(self, cylinder):
        """μ of a cylinder by the masked backward pass (NRM-SPEC §5)."""
        if cylinder in self._cylinders:
            return self._cylinders[cylinder]
        cons = self.m._resolve(cylinder)
        net = self.m.network
        L, widths = net.depth, net.widths()
        lowest = min(cons) if cons else L
        mask, _ = cons.get(L, ([True] * widths[L], True))
        r = [p if keep else self.zero for p, keep in zip(self.pi, mask)]
        rbot = self.zero
        for l in range(L, lowest, -1):
            n = widths[l - 1]
            new = []
            for j in range(n):
                total = self.zero
                for k in range(widths[l]):
                    total = total + self.q(l, j, k) * r[k]
                new.append(total)
            newbot = rbot
            for k in range(widths[l]):
                newbot = newbot + self.q(l, None, k) * r[k]
            mask, absorber = cons.get(l - 1, ([True] * n, True))
            r = [v if keep else self.zero for v, keep in zip(new, mask)]
            rbot = newbot if absorber else self.zero
        value = rbot
        for v in r:
            value = value + v
        self._cylinders[cylinder] = value
        return value


def _rational_zero(e: sp.Expr) -> bool:
    if e == 0:
        return True
    num, _ = sp.fraction(sp.together(e))
    return sp.expand(num) == 0


class NumericMeasure:
    """A :class:`SymbolicMeasure` evaluated at a point: the same methods, exact numbers."""

    def __init__(self, symbolic: SymbolicMeasure, point: dict):
        self.symbolic = symbolic
        self.point = {to_sympy(k) if not isinstance(k, sp.Basic) else k: to_sympy(v) for k, v in point.items()}
        self.network = symbolic.network

    def value(self, expr) -> sp.Expr:
        return self.network.evaluate(expr, self.point)

    def q(self, l, j, k):
        return self.value(self.symbolic.q(l, j, k))

    def walk(self, path):
        return self.value(self.symbolic.walk(path))

    def marginal(self, layer):
        return [self.value(v) for v in self.symbolic.marginal(layer)]

    def absorbed(self, layer):
        return self.value(self.symbolic.absorbed(layer))

    def measure(self, event):
        return self.value(self.symbolic.measure(event))

    __call__ = measure

    def conditional(self, event, given):
        base = self.measure(given)
        if base == 0:
            raise NullEventError(f"cannot condition on {given!r}: its measure is 0 at this point; the conditional is "
                                 "undefined. Condition on an event of non-zero measure")
        return self.measure(event & given) / base


_PARAM_LATEX = {"eps": "\\varepsilon", "epsilon": "\\varepsilon", "gamma": "\\gamma", "beta": "\\beta",
                "alpha": "\\alpha"}


def _domain(p: sp.Symbol) -> str:
    if p.is_positive:
        return "> 0"
    if p.is_nonnegative:
        return "≥ 0"
    if p.is_negative:
        return "< 0"
    return "∈ ℝ"


def _rules_per_layer(network: SymbolicNetwork, rules) -> list:
    L = network.depth
    if isinstance(rules, Rule):
        out = [rules] * L
    elif isinstance(rules, Mapping):
        out = []
        for l in range(1, L + 1):
            name = network.names[l]
            rule = rules.get(name, rules.get("output") if l == L else None)
            rule = rule if rule is not None else rules.get(None)
            if rule is None:
                raise RuleAssignmentError(f"no rule for layer {name!r}; give it by name or under the key None")
            out.append(rule)
    elif isinstance(rules, Sequence):
        out = list(rules)
        if len(out) != L:
            raise RuleAssignmentError(f"give one rule per layer 1..{L}, got {len(out)}")
    else:
        raise RuleAssignmentError(f"rules= takes a Rule, a list of rules or a mapping, got {type(rules).__name__}")
    for r in out:
        if not isinstance(r, Rule):
            raise RuleAssignmentError(f"rules must be nrm.rules.Rule objects, got {r!r}")
    return [None] + out


__all__ = ["SymbolicMeasure", "NumericMeasure", "ZERO"]
