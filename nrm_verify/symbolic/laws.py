"""The laws of NRM-SPEC §4 as symbolic claims about a :class:`Subject` (a rule on a
symbolic network case).

Each law is a function ``law(subject) -> list[Claim]``. A :class:`Claim` is a list of
steps (evaluated lazily, each an identity, a sign or an independence statement; see
:mod:`nrm_verify.symbolic.proof`) and what is expected of it: ``"holds"`` where the
spec claims the law for the rule, ``"fails"`` where the suite shows, by a rational
counterexample, that it does not extend (L9 for ε, L13 with a negative input, …), and
``"either"`` for a user's rule. A law that says nothing about a rule raises
:class:`~nrm_verify.symbolic.proof.NotApplicable` with the reason.

Two measures are compared in the steps: μ of an event by the masked backward pass over
its cylinders (:meth:`SymbolicMeasure.measure`, §5) and by enumerating the walks in the
event (:meth:`SymbolicMeasure.enumerate`, the definition of §3), so that L2, L3, L6 and L7
compare two different computations, not a formula with itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from nrm.events import OMEGA, At
from nrm.rules import BUILTIN_RULES, AlphaBeta, Epsilon, Gamma, Rule, ZBox, Zero, ZPlus
from nrm_verify.symbolic.derive import SymbolicMeasure
from nrm_verify.symbolic.network import SymbolicNetwork
from nrm_verify.symbolic.proof import (
    NotApplicable,
    ProofStep,
    check_finite,
    check_identity,
    check_independent,
    check_nonnegative,
)

StepThunk = Callable[[], ProofStep]


@dataclass
class Claim:
    """Steps that together prove (or, with one counterexample, refute) one statement."""

    expect: str
    steps: Iterable[StepThunk]
    label: str = ""
    note: str = ""


@dataclass
class Subject:
    """A rule per layer on a symbolic network under a stated case. ``rules[l]`` is the
    rule of layer l (``rules[0]`` is None: the input layer has none)."""

    network: SymbolicNetwork
    rules: list[Rule]
    params: tuple = ()
    arch: str = ""
    rule_title: str = ""
    case: str = ""
    _others: dict = field(default_factory=dict)

    def __post_init__(self):
        self.m = SymbolicMeasure(self.network, self.rules[1:], assume_nonzero_denominators=True)

    def measure_with(self, rules: list[Rule]) -> SymbolicMeasure:
        """The measure of the same network with other rules (cached)."""
        key = tuple(repr(r) for r in rules)
        if key not in self._others:
            self._others[key] = SymbolicMeasure(self.network, rules, assume_nonzero_denominators=True)
        return self._others[key]

    # -- the quantities, in the proof algebra ------------------------------------------------
    def mu(self, event):
        """μ(event) by masked backward passes over its cylinders (NRM-SPEC §5)."""
        return self.m.measure(event, raw=True)

    def by_walks(self, event):
        """μ(event) = Σ_{ω ∈ event} μ({ω}), by enumerating the walks (the definition, §3)."""
        return self.m.enumerate(event, raw=True)

    def cond(self, event, given):
        """μ(event | given)."""
        return self.m.conditional(event, given, raw=True)

    def identity(self, claim: str, lhs, rhs) -> ProofStep:
        """Prove lhs = rhs in the proof algebra of this subject's measure."""
        return check_identity(claim, lhs, rhs, self.network, self.params, convert=self.m.raw)

    def zero(self, value) -> bool:
        """Whether a value is identically 0 (then, e.g., a conditional on it is undefined)."""
        return self.m.algebra(True).is_zero(value if not isinstance(value, (sp.Basic, int)) else self.m.raw(value))

    @property
    def builtin(self) -> bool:
        return all(type(r) in BUILTIN_RULES for r in self.rules[1:])

    def expect(self, holds: bool) -> str:
        """What the law claims for built-in rules; "either" for a user's rule."""
        if not self.builtin:
            return "either"
        return "holds" if holds else "fails"

    # -- the named events the laws use -------------------------------------------------------
    def events(self) -> dict:
        net = self.network
        L, names, widths = net.depth, net.names, net.widths()
        A = At("input", index=[0])
        B = At(names[1], index=[0])
        C = At("input", index=[], absorber=True) | At(names[L - 1], index=[widths[L - 1] - 1])
        return {"A": A, "B": B, "C": C, "Aᶜ": ~A, "Bᶜ": ~B, "Cᶜ": ~C}

    def pairs(self, n: int = 3) -> list[tuple[str, str]]:
        """The first ``n`` pairs of named events on different terms whose measures are
        both non-zero (a conditional on a null event is undefined)."""
        ev = self.events()
        names = [k for k in ev if not self.zero(self.mu(ev[k]))]
        out = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if a.rstrip("ᶜ") != b.rstrip("ᶜ") and len(out) < n:
                    out.append((a, b))
        return out


def _lbl(net, l, j) -> str:
    return net.label(l, j)


def _V(net, l) -> list:
    """V̄_l as indices (None for ⊥; the output layer has no absorber)."""
    n = net.widths()[l]
    return list(range(n)) + ([None] if l < net.depth else [])


# -- L1 ------------------------------------------------------------------------------------------
def normalization(s: Subject) -> list[Claim]:
    """L1: every column of every kernel sums to 1 over V̄_{l−1}; μ(Ω) = 1; the walk
    measures sum to 1; Σ_{j∈V̄_l} m_l(j) = 1 at every layer."""
    net, m = s.network, s.m

    def steps():
        for l in range(1, net.depth + 1):
            for k in range(net.widths()[l]):
                col = _sum([m.q(l, j, k, raw=True) for j in _V(net, l - 1)])
                yield lambda col=col, l=l, k=k: s.identity(f"Σ_j q{l}(j | {_lbl(net, l, k)}) = 1", col, 1)
        yield lambda: s.identity("μ(Ω) = 1 (masked pass)", s.mu(OMEGA), 1)
        yield lambda: s.identity("Σ_ω μ({ω}) = 1 (all walks)", _sum(list(m.walks(raw=True).values())), 1)
        for l in range(net.depth):
            yield lambda l=l: s.identity(f"Σ_(j∈V̄_{l}) m{l}(j) = 1", _sum(m.full_marginal(l, raw=True)), 1)
            yield lambda l=l: s.identity(f"Σ_(j∈V_{l}) m{l}(j) = 1 − m{l}(⊥{l})", _sum(m.marginal(l, raw=True)),
                                         1 - m.absorbed(l, raw=True))

    return [Claim(s.expect(True), steps())]


# -- L2 ------------------------------------------------------------------------------------------
def additivity(s: Subject) -> list[Claim]:
    """L2: μ(A ∪ B) = μ(A) + μ(B) − μ(A ∩ B), inclusion–exclusion for three events,
    μ(Aᶜ) = 1 − μ(A), μ(X_l ∈ S) = Σ_{j∈S} m_l(j). Left sides by walk enumeration."""
    net, m = s.network, s.m
    ev = s.events()

    def steps():
        for a, b in (("A", "B"), ("A", "C"), ("B", "C")):
            A, B = ev[a], ev[b]
            yield lambda A=A, B=B, a=a, b=b: s.identity(
                f"μ({a} ∪ {b}) = μ({a}) + μ({b}) − μ({a} ∩ {b})", s.by_walks(A | B),
                s.mu(A) + s.mu(B) - s.mu(A & B))
        A, B, C = ev["A"], ev["B"], ev["C"]
        yield lambda: s.identity(
            "μ(A ∪ B ∪ C) = Σμ(single) − Σμ(pairs) + μ(A ∩ B ∩ C)", s.by_walks(A | B | C),
            s.mu(A) + s.mu(B) + s.mu(C) - s.mu(A & B) - s.mu(A & C) - s.mu(B & C) + s.mu(A & B & C))
        for a in ("A", "B", "C"):
            E = ev[a]
            yield lambda E=E, a=a: s.identity(f"μ({a}ᶜ) = 1 − μ({a})", s.by_walks(~E), 1 - s.mu(E))
        for l in range(net.depth):
            S = At(net.names[l], index=[0], absorber=True)
            yield lambda l=l, S=S: s.identity(
                f"μ(X_{l} ∈ {{{_lbl(net, l, 0)}, ⊥{l}}}) = m{l}({_lbl(net, l, 0)}) + m{l}(⊥{l})",
                s.by_walks(S), m.marginal(l, raw=True)[0] + m.absorbed(l, raw=True))

    return [Claim(s.expect(True), steps())]


# -- L3 ------------------------------------------------------------------------------------------
def marginalization(s: Subject) -> list[Claim]:
    """L3: Σ_{j∈V̄_l} μ(X_l = j, E) = μ(E) for E not constraining layer l; the row and
    column sums of a joint matrix are the two marginals."""
    net, m = s.network, s.m
    L = net.depth

    def steps():
        for l in range(L + 1):
            other = L if l != L else 0
            for E, name in ((OMEGA, "Ω"), (m.atom(other, 0), f"X_{other} = {_lbl(net, other, 0)}")):
                total = _sum([s.by_walks(m.atom(l, j) & E) for j in _V(net, l)])
                yield lambda total=total, E=E, name=name, l=l: s.identity(
                    f"Σ_(j∈V̄_{l}) μ(X_{l} = j, {name}) = μ({name})", total, s.mu(E))
        for la, lb in ((0, 1), (L - 1, L)):
            J = m.joint(la, lb, raw=True)
            ma, mb = m.full_marginal(la, raw=True), m.full_marginal(lb, raw=True)
            for i, row in enumerate(J):
                yield lambda row=row, i=i, la=la, lb=lb, ma=ma: s.identity(
                    f"row sum of the joint ({la},{lb}) at {_lbl(net, la, _V(net, la)[i])} = m{la}",
                    _sum(row), ma[i])
            for k in range(len(J[0])):
                col = [row[k] for row in J]
                yield lambda col=col, k=k, la=la, lb=lb, mb=mb: s.identity(
                    f"column sum of the joint ({la},{lb}) at {_lbl(net, lb, _V(net, lb)[k])} = m{lb}",
                    _sum(col), mb[k])

    return [Claim(s.expect(True), steps())]


# -- L4 ------------------------------------------------------------------------------------------
def chain_rule(s: Subject) -> list[Claim]:
    """L4: μ(A ∩ B) = μ(A) μ(B | A) (μ(A) ≠ 0), and for every walk whose marginals do not
    vanish, μ(n_0, …, n_L) = m_L(n_L) Π_l μ(X_{l−1} = n_{l−1} | X_l = n_l)."""
    net, m = s.network, s.m
    ev = s.events()
    skipped = []

    def steps():
        for a, b in s.pairs():
            A, B = ev[a], ev[b]
            yield lambda A=A, B=B, a=a, b=b: s.identity(
                f"μ({a} ∩ {b}) = μ({a}) μ({b} | {a})", s.mu(A & B), s.mu(A) * s.cond(B, A))
        for path, mu in m.walks(raw=True).items():
            marg = [m.full_marginal(l, raw=True)[_pos(net, l, path[l])] for l in range(1, net.depth + 1)]
            if any(s.zero(v) for v in marg):
                skipped.append(path)
                continue
            rhs = m.full_marginal(net.depth)[path[-1]]
            for l in range(1, net.depth + 1):
                pair = s.mu(m.atom(l - 1, path[l - 1]) & m.atom(l, path[l]))
                rhs = rhs * pair / m.full_marginal(l, raw=True)[_pos(net, l, path[l])]
            name = ", ".join(_lbl(net, l, n) for l, n in enumerate(path))
            yield lambda mu=mu, rhs=rhs, name=name: s.identity(
                f"μ({name}) = m_L Π μ(X_(l−1) | X_l)", mu, rhs)

    note = "walks through a neuron of identically zero marginal are skipped: their conditionals are undefined"
    return [Claim(s.expect(True), steps(), note=note)]


def _pos(net, l, j) -> int:
    return net.widths()[l] if j is None else j


def _sum(values):
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


# -- L5 ------------------------------------------------------------------------------------------
def bayes(s: Subject) -> list[Claim]:
    """L5: μ(A | B) μ(B) = μ(B | A) μ(A) when μ(A), μ(B) ≠ 0."""
    ev = s.events()

    def steps():
        for a, b in s.pairs():
            A, B = ev[a], ev[b]
            yield lambda A=A, B=B, a=a, b=b: s.identity(
                f"μ({a} | {b}) μ({b}) = μ({b} | {a}) μ({a})", s.cond(A, B) * s.mu(B),
                s.cond(B, A) * s.mu(A))

    return [Claim(s.expect(True), steps())]


# -- L6 ------------------------------------------------------------------------------------------
def total_measure(s: Subject) -> list[Claim]:
    """L6: μ(B) = Σ_i μ(B ∩ A_i) over a partition (A_i) of Ω: the neurons of one layer,
    and a partition across two layers."""
    net, m = s.network, s.m
    ev = s.events()

    def steps():
        for name in ("B", "C"):
            B = ev[name]
            for l in range(net.depth + 1):
                parts = [m.atom(l, j) for j in _V(net, l)]
                yield lambda B=B, parts=parts, l=l, name=name: s.identity(
                    f"μ({name}) = Σ_(j∈V̄_{l}) μ({name} ∩ {{X_{l} = j}})", s.by_walks(B),
                    _sum([s.mu(B & P) for P in parts]))
            x0, h0 = m.atom(0, 0), m.atom(1, 0)
            parts = [x0, ~x0 & h0, ~x0 & ~h0]
            _check_partition(m, parts)
            yield lambda B=B, parts=parts, name=name: s.identity(
                f"μ({name}) = μ({name} ∩ A1) + μ({name} ∩ A2) + μ({name} ∩ A3) with A1 = {{X_0 = x1}}, "
                "A2 = {X_0 ≠ x1, X_1 = first}, A3 = the rest", s.by_walks(B),
                _sum([s.mu(B & P) for P in parts]))

    return [Claim(s.expect(True), steps())]


def _check_partition(m: SymbolicMeasure, parts) -> None:
    for path in m.walks(raw=True):
        if sum(m.contains(P, path) for P in parts) != 1:
            raise AssertionError(f"not a partition at walk {path}")  # a bug in this module, not user input


# -- L7 ------------------------------------------------------------------------------------------
def markov(s: Subject) -> list[Claim]:
    """L7: μ(X_{l−1} ∈ A, X_l = k, E_{>l}) = Σ_{j∈A} q_l(j | k) · μ(X_l = k, E_{>l}) for any
    event E above layer l (the division-free form of the conditional statement). Both
    measures by walk enumeration."""
    net, m = s.network, s.m
    L = net.depth

    def steps():
        for l in range(1, L + 1):
            uppers = [(OMEGA, "Ω")]
            if l < L:
                uppers.append((m.atom(l + 1, 0), f"X_{l + 1} = {_lbl(net, l + 1, 0)}"))
            if l + 1 < L:
                uppers.append((m.atom(l + 1, 0) | m.atom(L, 0), f"X_{l + 1} = {_lbl(net, l + 1, 0)} or X_{L} = y1"))
            for k in range(net.widths()[l]):
                for E, ename in uppers:
                    base = s.by_walks(m.atom(l, k) & E)
                    sets = [[j] for j in _V(net, l - 1)] + [[0, None]]
                    for A in sets:
                        event = _union(m, l - 1, A)
                        q = _sum([m.q(l, j, k, raw=True) for j in A])
                        lhs = s.by_walks(event & m.atom(l, k) & E)
                        names = "{" + ", ".join(_lbl(net, l - 1, j) for j in A) + "}"
                        yield lambda lhs=lhs, q=q, base=base, names=names, k=k, l=l, ename=ename: s.identity(
                            f"μ(X_{l - 1} ∈ {names}, X_{l} = {_lbl(net, l, k)}, {ename}) = q{l}({names} | "
                            f"{_lbl(net, l, k)}) μ(X_{l} = {_lbl(net, l, k)}, {ename})", lhs, q * base)

    return [Claim(s.expect(True), steps())]


def _union(m, l, js):
    ev = m.atom(l, js[0])
    for j in js[1:]:
        ev = ev | m.atom(l, j)
    return ev


# -- L9 ------------------------------------------------------------------------------------------
def gradient_times_input(s: Subject) -> list[Claim]:
    """L9: with LRP-0 on every layer (absorbing leak), m_l(j) = a_j ∂f/∂a_j / f at every
    layer l < L, biases allowed (ReLU: σ(z) = σ'(z) z). ∂f/∂a_j by ``sympy.diff`` of the
    network above layer l, under the activation pattern."""
    net, m = s.network, s.m
    holds = all(type(r) is Zero and r.leak == "absorb" for r in s.rules[1:])
    f = m.f

    def steps():
        for l in range(net.depth):
            alphas = np.array([sp.Symbol(f"alpha{l}_{j + 1}", real=True) for j in range(net.widths()[l])],
                              dtype=object)
            F = net.forward_from(l, alphas, m.target)
            acts = net.activations[l]
            subs = dict(zip(alphas, acts))
            for j in range(net.widths()[l]):
                grad = sp.diff(F, alphas[j]).xreplace(subs)
                rhs = acts[j] * grad / f
                yield lambda j=j, l=l, rhs=rhs: s.identity(
                    f"m{l}({_lbl(net, l, j)}) = a ∂f/∂a / f at {_lbl(net, l, j)}", m.marginal(l, raw=True)[j], rhs)

    return [Claim(s.expect(holds), steps())]


# -- L10 -----------------------------------------------------------------------------------------
def epsilon_limit(s: Subject) -> list[Claim]:
    """L10: lim_{ε→0⁺} q^ε_l(j | k) = q^0_l(j | k) wherever z_k ≠ 0 (every column here:
    the pre-activations have declared signs), with error O(ε). ``sympy.limit`` of every
    kernel entry, and of (q^ε − q^0)/ε (finite)."""
    net, m = s.network, s.m
    layers = [l for l in range(1, net.depth + 1) if isinstance(getattr(s.rules[l], "epsilon", None), sp.Symbol)]
    if not layers:
        raise NotApplicable("the rule has no symbolic stabilizer ε (L10 is the ε → 0 limit)")
    eps = s.rules[layers[0]].epsilon
    zero = s.measure_with([Zero(leak=r.leak) for r in s.rules[1:]])
    holds = all(type(s.rules[l]) is Epsilon for l in layers)

    def steps():
        for l in layers:
            for k in range(net.widths()[l]):
                for j in _V(net, l - 1):
                    q, q0 = m.q(l, j, k), zero.q(l, j, k)
                    yield lambda q=q, q0=q0, l=l, j=j, k=k: s.identity(
                        f"lim_(ε→0+) q{l}({_lbl(net, l - 1, j)} | {_lbl(net, l, k)}) = LRP-0",
                        sp.limit(q, eps, 0, "+"), q0)
                    if holds:
                        yield lambda q=q, q0=q0, l=l, j=j, k=k: check_finite(
                            f"the error is O(ε): lim_(ε→0+) (q^ε − q^0)/ε is finite at q{l}({_lbl(net, l - 1, j)} | "
                            f"{_lbl(net, l, k)})", sp.limit(sp.cancel((q - q0) / eps), eps, 0, "+"))

    return [Claim(s.expect(holds), steps())]


# -- L11, L12 ------------------------------------------------------------------------------------
def _gamma_layers(s: Subject) -> list[int]:
    return [l for l in range(1, s.network.depth + 1) if isinstance(getattr(s.rules[l], "gamma", None), sp.Symbol)]


def gamma_zero(s: Subject) -> list[Claim]:
    """L11: q^γ at γ = 0 is LRP-0 exactly (γ ≥ 0 declared, so γ = 0 is inside the
    assumptions under which the kernel was derived)."""
    net, m = s.network, s.m
    layers = _gamma_layers(s)
    if not layers:
        raise NotApplicable("the rule has no symbolic parameter γ")
    gamma = s.rules[layers[0]].gamma
    zero = s.measure_with([Zero(leak=r.leak) for r in s.rules[1:]])
    holds = all(type(s.rules[l]) is Gamma for l in layers)

    def steps():
        for l in layers:
            for k in range(net.widths()[l]):
                for j in _V(net, l - 1):
                    yield lambda l=l, j=j, k=k: s.identity(
                        f"q{l}({_lbl(net, l - 1, j)} | {_lbl(net, l, k)}) at γ = 0 = LRP-0",
                        m.q(l, j, k).xreplace({gamma: 0}), zero.q(l, j, k))

    return [Claim(s.expect(holds), steps())]


def _zplus_columns(zp: SymbolicMeasure, l: int, width: int) -> tuple[list[int], list[int]]:
    """Columns of z⁺ with a decided positive denominator P_k, and those with P_k = 0."""
    live, dead = [], []
    for k in range(width):
        column = [zp.kernels[l][j, k] for j in range(zp.kernels[l].shape[0])]
        if any(sp.sympify(e).has(sp.Piecewise) for e in column):
            continue
        if column[-1] == 1 and all(e == 0 for e in column[:-1]):
            dead.append(k)
        else:
            live.append(k)
    return live, dead


def gamma_infinity(s: Subject) -> list[Claim]:
    """L12: lim_{γ→∞} q^γ_l(j | k) = q^{z⁺}_l(j | k) for every column with
    P_k = Σ_j a_j w_jk⁺ + b_k⁺ > 0 (a ≥ 0), with error O(1/γ) (γ (q^γ − q^{z⁺}) has a finite
    limit). Columns with P_k = 0 are outside the hypothesis; there the limit is shown to
    differ."""
    net, m = s.network, s.m
    layers = _gamma_layers(s)
    if not layers:
        raise NotApplicable("the rule has no symbolic parameter γ")
    gamma = s.rules[layers[0]].gamma
    zp_rules = [ZPlus(bias=getattr(r, "modify_bias", True), leak=r.leak) for r in s.rules[1:]]
    zp = s.measure_with(zp_rules)
    holds = all(type(s.rules[l]) is Gamma for l in layers)
    inside, outside = [], []
    for l in layers:
        live, dead = _zplus_columns(zp, l, net.widths()[l])
        inside += [(l, k) for k in live]
        outside += [(l, k) for k in dead]

    def steps(cols, error=False):
        for l, k in cols:
            for j in _V(net, l - 1):
                q, qz = m.q(l, j, k), zp.q(l, j, k)
                yield lambda q=q, qz=qz, l=l, j=j, k=k: s.identity(
                    f"lim_(γ→∞) q{l}({_lbl(net, l - 1, j)} | {_lbl(net, l, k)}) = z⁺", sp.limit(q, gamma, sp.oo), qz)
                if error:
                    yield lambda q=q, qz=qz, l=l, j=j, k=k: check_finite(
                        f"the error is O(1/γ): lim_(γ→∞) γ (q^γ − q^z⁺) is finite at q{l}({_lbl(net, l - 1, j)} | "
                        f"{_lbl(net, l, k)})", sp.limit(sp.cancel(gamma * (q - qz)), gamma, sp.oo))

    claims = [Claim(s.expect(holds), steps(inside, error=holds))]
    if outside:
        cols = ", ".join(f"{_lbl(net, l, k)}" for l, k in outside)
        claims.append(Claim("fails" if s.builtin else "either", steps(outside),
                            label=f"outside the hypothesis: P_k = 0 at {cols}",
                            note="z⁺ sends such a column to ⊥, the γ-rule does not"))
    return claims


# -- L13 -----------------------------------------------------------------------------------------
def alphabeta_zplus(s: Subject) -> list[Claim]:
    """L13: αβ with α = 1, β = 0 is z⁺ when a ≥ 0, on every column with P_k > 0.
    Columns fed by a negative input, or with P_k = 0 (where αβ falls back to
    (α, β) = (0, −1) but z⁺ sends the column to ⊥), are outside the hypothesis."""
    net = s.network
    ab_layers = [l for l in range(1, net.depth + 1) if isinstance(s.rules[l], AlphaBeta)]
    zp_layers = [l for l in range(1, net.depth + 1) if isinstance(s.rules[l], ZPlus)]
    if not ab_layers and not zp_layers:
        raise NotApplicable("L13 relates αβ and z⁺ only")
    ab_rules = []
    for r in s.rules[1:]:
        if isinstance(r, AlphaBeta):
            beta = r.beta
            if isinstance(beta, sp.Basic) and beta.free_symbols:
                ab_rules.append(AlphaBeta(sp.sympify(r.alpha).xreplace({b: 0 for b in beta.free_symbols}), 0,
                                          leak=r.leak))
            else:
                ab_rules.append(AlphaBeta(1, 0, leak=r.leak))
        elif isinstance(r, ZPlus):
            ab_rules.append(AlphaBeta(1, 0, leak=r.leak))
        else:
            ab_rules.append(r)
    layers = ab_layers or zp_layers
    ab = s.measure_with(ab_rules)
    zp = s.measure_with([ZPlus(leak=r.leak) if l in layers else r for l, r in enumerate(s.rules[1:], 1)])
    inside, outside_neg, outside_dead = [], [], []
    for l in layers:
        live, dead = _zplus_columns(zp, l, net.widths()[l])
        acts = net.activations[l - 1]
        negative_input = any(-1 in net.decider.signs(a) for a in acts)
        for k in range(net.widths()[l]):
            if negative_input:
                outside_neg.append((l, k))
            elif k in dead:
                outside_dead.append((l, k))
            elif k in live:
                inside.append((l, k))

    def steps(cols):
        for l, k in cols:
            for j in _V(net, l - 1):
                yield lambda l=l, j=j, k=k: s.identity(
                    f"αβ(1,0): q{l}({_lbl(net, l - 1, j)} | {_lbl(net, l, k)}) = z⁺", ab.q(l, j, k), zp.q(l, j, k))

    claims = [Claim(s.expect(True), steps(inside))]
    if outside_neg:
        cols = ", ".join(_lbl(net, l, k) for l, k in outside_neg)
        claims.append(Claim("fails", steps(outside_neg), label=f"outside the hypothesis: a negative input feeds {cols}",
                            note="(a w)⁺ = a⁺w⁺ + a⁻w⁻ differs from a w⁺ when a < 0"))
    if outside_dead:
        cols = ", ".join(_lbl(net, l, k) for l, k in outside_dead)
        claims.append(Claim("fails", steps(outside_dead), label=f"outside the hypothesis: P_k = 0 at {cols}",
                            note="αβ falls back to (α, β) = (0, −1) while z⁺ sends the column to ⊥"))
    return claims


# -- L14 -----------------------------------------------------------------------------------------
def input_independence(s: Subject) -> list[Claim]:
    """L14: rules that declare ``depends_on_input = False`` (flat, w²) have kernels free
    of the inputs and activations; z^B kernels are non-negative inside the box."""
    net, m = s.network, s.m
    free_layers = [l for l in range(1, net.depth + 1) if not s.rules[l].depends_on_input]
    box_layers = [l for l in range(1, net.depth + 1) if isinstance(s.rules[l], ZBox)]
    if not free_layers and not box_layers:
        raise NotApplicable("the rule declares depends_on_input = True and is not z^B; L14 claims nothing about it")
    input_symbols = set()
    for x in net.inputs:
        input_symbols |= sp.sympify(x).free_symbols
    input_symbols |= set(net.definitions)
    input_symbols |= {x for x, _, _ in net.box}

    def steps():
        for l in free_layers:
            for k in range(net.widths()[l]):
                for j in _V(net, l - 1):
                    q = m.q(l, j, k)
                    yield lambda q=q, l=l, j=j, k=k: check_independent(
                        f"q{l}({_lbl(net, l - 1, j)} | {_lbl(net, l, k)}) does not depend on the input",
                        q, input_symbols, net, s.params)
        for l in box_layers:
            for k in range(net.widths()[l]):
                for j in _V(net, l - 1):
                    q = m.q(l, j, k)
                    yield lambda q=q, l=l, j=j, k=k: check_nonnegative(
                        f"q{l}({_lbl(net, l - 1, j)} | {_lbl(net, l, k)}) ≥ 0 inside the box", q, net, s.params)

    holds = all(type(s.rules[l]) in BUILTIN_RULES for l in free_layers + box_layers)
    return [Claim("holds" if holds else "either", steps())]
