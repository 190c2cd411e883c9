"""Laws L1, L2, L7 proved on the symbolic attention block, and what does not hold refuted
with a rational counterexample (issue 14, item 2; ``docs/attention.md``, *Derivation*).

On :class:`~nrm_verify.symbolic.attention.AttentionBlock` (θ and ε symbolic, LRP-ε on the
maps, LRP-0 on the softmax and the scale), in two cases — **A**: every forward value
positive; **B**: the signs of a seeded dyadic point (mixed, f < 0) — each with a rational
witness point:

* **kernels** — each derived kernel (the rule object on the kind's map) equals the closed form
  of NRM-SPEC §8 / the issue: bilinear θ A V/(O + ε s), (1 − θ) A V/(O + ε s), ε s/(O + ε s);
  softmax x_i (δ_ij − s_i), 1 − x_j + Σ_i s_i x_i; layer norm O_i γ_p (δ_ip − ½)/(σ (Y + ε s)),
  (β_p + ε s)/(Y + ε s); and every entry depends on forward quantities only;
* **L1** — every column sums to 1 over its parents and ⊥, an identity of rational functions
  once the column's forward value is replaced by its definition; then Σ_{V̄_l} m_l = 1 at
  every layer and μ(Ω) = Σ_walks μ = 1, as identities of polynomials in the kernel entries
  with q(⊥ | k) = 1 − Σ_j q(j | k) (the column identity just proved);
* **L2, L7** — identities of polynomials in the kernel entries, the real entries taken as
  indeterminates and q(⊥ | k) = 1 − Σ_j q(j | k) (the measures by walk enumeration on one
  side and backward passes or a kernel entry times a measure on the other): they hold for
  any column-stochastic kernels with this sparsity, in particular for the derived ones,
  whose columns sum to one (L1) and whose entries depend on forward quantities only (L7's
  hypothesis; checked under *kernels*);
* **refuted** — the kernels are no probability kernels (an entry < 0, per kind); L9 on the
  product (LRP-0 gives each factor θ, resp. 1 − θ, of Gradient × Input, which its general
  form states and which is proved); the softmax kernel's real shares under a constant shift
  of the logits (⊥'s share is invariant, proved with Σ_i s_i = 1).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache

import sympy as sp
from sympy.polys.rings import ring

from nrm.rules import Zero
from nrm_verify.laws.status import PROVED, REFUTED
from nrm_verify.symbolic.attention import (
    ABBREVIATIONS,
    PAIRS,
    THETA,
    AttentionBlock,
    base_symbols,
    derive_column,
    dyadic_point,
    forward,
    signs_at,
)
from nrm_verify.symbolic.ops import SignDecider, sympy_ops
from nrm_verify.symbolic.proof import Proof, ProofStep, point_text

ARCH = "attention 2×2"
RULE = "θ split, LRP-ε (ε > 0) on the maps, LRP-0 on softmax and scale"
SEED_B = 1


def witness(case: str) -> dict[str, Fraction]:
    """The case's rational witness point: A — every forward value positive; B — a seeded
    dyadic point (mixed signs, f < 0)."""
    if case == "B":
        return dyadic_point(random.Random(SEED_B))
    point = {name: Fraction(1, 2) for name in base_symbols() if not name.startswith("sigma")}
    point.update({"x11": Fraction(1), "wq12": Fraction(3, 4), "wk21": Fraction(1, 4), "wv22": Fraction(3, 2),
                  "g1": Fraction(1, 4), "g2": Fraction(-1, 4), "be1": Fraction(2), "be2": Fraction(2),
                  "eps": Fraction(1, 64)})
    return point


@lru_cache(maxsize=4)
def block(case: str) -> AttentionBlock:
    """The symbolic block with the signs of the case's witness point."""
    return AttentionBlock(signs_at(witness(case)))


def _vanishes(e) -> bool:
    e = sp.sympify(e)
    if e == 0:
        return True
    if e.has(sp.Piecewise):
        folded = sp.piecewise_fold(e)
        if isinstance(folded, sp.Piecewise):
            return all(_vanishes(x) for x, _ in folded.args)
        e = folded
    num, _ = sp.fraction(sp.together(e))
    return sp.expand(num) == 0


def identity_step(claim: str, lhs, rhs) -> ProofStep:
    """lhs = rhs as rational functions (Piecewise branches each); not settled otherwise."""
    step = ProofStep(claim, "identity")
    if _vanishes(sp.sympify(lhs) - sp.sympify(rhs)):
        step.status = PROVED
    else:
        step.residual = str(sp.together(sp.sympify(lhs) - sp.sympify(rhs)))[:400]
    return step


def _proof(law: str, case: str, expect: str, steps: list[ProofStep], note: str, b: AttentionBlock) -> Proof:
    p = Proof(law=law, rule=RULE, arch=ARCH, case=case, expect=expect, steps=steps, note=note)
    p.assumptions = [f"{n} {'>' if b.signs[n] > 0 or n.startswith('A') else '<'} 0" for n in ABBREVIATIONS]
    return p.settle()


# -- the kernels ---------------------------------------------------------------------------------
def _first(b: AttentionBlock, kind: str) -> tuple[int, int]:
    for l in range(1, b.depth + 1):
        for k, col in enumerate(b.columns[l]):
            if col.kind == kind:
                return l, k
    raise KeyError(kind)


def closed_forms(b: AttentionBlock) -> list[tuple[str, sp.Expr, sp.Expr]]:
    """(claim, derived, closed form of NRM-SPEC §8) for one column of each attention kind:
    O11 (values), A11 (softmax), Y11 (layer norm), S11 (scores)."""
    s, eps, t = b.s, b.symbols["eps"], THETA
    out = []
    for kind, z, first, second in (("values", "O11", ("A11", "A12"), ("V11", "V21")),
                                   ("scores", "S11", ("Q11", "Q12"), ("K11", "K12"))):
        l, k = _first(b, kind)
        col, Q = b.columns[l][k], b.kernels[l]
        d = s(z) + eps * b.signs[z]
        for i, (f1, f2) in enumerate(zip(first, second)):
            out.append((f"{kind}: q({f1} | {z}) = θ {f1} {f2} / ({z} + ε s({z}))", Q[col.parents[i], k],
                        t * s(f1) * s(f2) / d))
            out.append((f"{kind}: q({f2} | {z}) = (1 − θ) {f1} {f2} / ({z} + ε s({z}))", Q[col.parents[2 + i], k],
                        (1 - t) * s(f1) * s(f2) / d))
        out.append((f"{kind}: q(⊥ | {z}) = ε s({z}) / ({z} + ε s({z}))", Q[-1, k], eps * b.signs[z] / d))
    l, k = _first(b, "softmax")
    Q, col = b.kernels[l], b.columns[l][k]
    A, L = [s("A11"), s("A12")], [s("L11"), s("L12")]
    for i in range(2):
        out.append((f"softmax: q(L1{i + 1} | A11) = L1{i + 1} (δ_{i + 1},1 − A1{i + 1})", Q[col.parents[i], k],
                    L[i] * (int(i == 0) - A[i])))
    out.append(("softmax: q(⊥ | A11) = 1 − L11 + Σ_i A1i L1i", Q[-1, k], 1 - L[0] + A[0] * L[0] + A[1] * L[1]))
    l, k = _first(b, "ln")
    Q, col = b.kernels[l], b.columns[l][k]
    d = s("Y11") + eps * b.signs["Y11"]
    for i in range(2):
        out.append((f"ln: q(O1{i + 1} | Y11) = O1{i + 1} γ1 (δ_{i + 1},1 − ½) / (σ1 (Y11 + ε s(Y11)))",
                    Q[col.parents[i], k], s(f"O1{i + 1}") * s("g1") * (int(i == 0) - sp.Rational(1, 2))
                    / (s("sigma1") * d)))
    out.append(("ln: q(⊥ | Y11) = (β1 + ε s(Y11)) / (Y11 + ε s(Y11))", Q[-1, k], (s("be1") + eps * b.signs["Y11"]) / d))
    return out


def kernel_steps(b: AttentionBlock) -> list[ProofStep]:
    """The derived kernels are the closed forms, and depend on forward quantities only."""
    steps = [identity_step(claim, derived, closed) for claim, derived, closed in closed_forms(b)]
    forward_symbols = set(b.symbols.values())
    entries = [e for Q in b.kernels[1:] for e in Q.flat]
    free = set().union(*(sp.sympify(e).free_symbols for e in entries))
    step = ProofStep("every kernel entry is a function of forward quantities only (inputs, weights, parameters, "
                     "forward values; no relevance)", "independent")
    step.status = PROVED if free <= forward_symbols else "not settled"
    step.residual = "" if free <= forward_symbols else ", ".join(map(str, free - forward_symbols))
    return steps + [step]


# -- L1: columns ---------------------------------------------------------------------------------
def column_steps(b: AttentionBlock) -> list[ProofStep]:
    """Σ_j q(j | k) + q(⊥ | k) = 1 for every column, with z_k replaced by its definition."""
    steps = []
    for l in range(1, b.depth + 1):
        Q = b.kernels[l]
        for k, col in enumerate(b.columns[l]):
            total = sum(Q[:, k], sp.Integer(0))
            total = total.xreplace({col.z: b.definitions[col.z]}) if col.kind != "pad" else total
            label = b.layers[l][k].label
            steps.append(identity_step(f"layer {l} ({col.kind}): Σ_j q(j | {label}) + q(⊥ | {label}) = 1", total, 1))
    return steps


# -- the walk measure with the kernel entries as indeterminates ---------------------------------
class EntryMeasure:
    """The walk measure of the block's layered kernels, each non-constant entry an
    indeterminate ``q{l}_{j}_{k}`` of a polynomial ring over QQ (constants — the padding's 1,
    structural zeros — kept). ``normalized=True`` writes q(⊥ | k) = 1 − Σ_j q(j | k) (L1's
    column identity) instead of an indeterminate of its own."""

    def __init__(self, b: AttentionBlock, normalized: bool = False):
        self.b, self.sizes = b, [len(layer) for layer in b.layers]
        names = [f"q{l}_{j}_{k}" for l in range(1, b.depth + 1) for j in range(self.sizes[l - 1] + 1)
                 for k in range(self.sizes[l])
                 if _free(b.kernels[l][j, k]) and not (normalized and j == self.sizes[l - 1])]
        self.ring, *generators = ring(names, sp.QQ)
        gens = dict(zip(names, generators))
        self.Q: list = [None]
        for l in range(1, b.depth + 1):
            n, K = self.sizes[l - 1], b.kernels[l]
            Q = [[gens.get(f"q{l}_{j}_{k}", None) for k in range(self.sizes[l])] for j in range(n + 1)]
            for j in range(n + 1):
                for k in range(self.sizes[l]):
                    if Q[j][k] is None and not (normalized and j == n):
                        Q[j][k] = self.ring(sp.Rational(K[j, k]))
            if normalized:
                for k in range(self.sizes[l]):
                    Q[n][k] = self.ring.one - sum((Q[j][k] for j in range(n)), self.ring.zero)
            self.Q.append(Q)
        self._walks = None
        self._marginals = None

    def transition(self, l: int, j: int, k: int):
        """q_l(j | k) with j = |V_{l−1}| for ⊥ and k = |V_l| for ⊥ (the absorber chain: q(⊥|⊥) = 1)."""
        n, m = self.sizes[l - 1], self.sizes[l]
        if k == m:
            return self.ring.one if j == n else self.ring.zero
        return self.Q[l][j][k]

    def walks(self) -> list[tuple[tuple, object]]:
        """Every walk (n_0, …, n_L) with a non-zero measure, as (walk, μ(walk))."""
        if self._walks is None:
            L, out = self.b.depth, []

            def down(l, path, mu):
                if l == 0:
                    out.append((tuple(reversed(path)), mu))
                    return
                for j in range(self.sizes[l - 1] + 1):
                    q = self.transition(l, j, path[-1])
                    if q:
                        down(l - 1, path + [j], mu * q)

            down(L, [0], self.ring.one)
            self._walks = out
        return self._walks

    def enumerate(self, predicate: Callable[[tuple], bool]):
        """μ of an event given as a predicate on walks: the sum over its walks."""
        return sum((mu for w, mu in self.walks() if predicate(w)), self.ring.zero)

    def cylinder(self, masks: dict[int, set]):
        """μ(∩_l {X_l ∈ masks[l]}) by a masked backward pass (NRM-SPEC §5): no walk enumerated."""
        L = self.b.depth
        m = [self.ring.one if k in masks.get(L, {0}) else self.ring.zero for k in range(self.sizes[L] + 1)]
        m[-1] = self.ring.zero
        for l in range(L, 0, -1):
            n = self.sizes[l - 1]
            m = [sum((self.transition(l, j, k) * m[k] for k in range(len(m))), self.ring.zero) for j in range(n + 1)]
            if l - 1 in masks:
                m = [v if j in masks[l - 1] else self.ring.zero for j, v in enumerate(m)]
        return sum(m, self.ring.zero)

    def marginal(self, l: int) -> list:
        """m_l over V̄_l (⊥ last, the absorber chain's mass): one backward pass for every layer."""
        if self._marginals is None:
            L = self.b.depth
            m = [self.ring.one] + [self.ring.zero] * self.sizes[L]
            out = {L: m}
            for layer in range(L, 0, -1):
                m = [sum((self.transition(layer, j, k) * m[k] for k in range(len(m)) if m[k]), self.ring.zero)
                     for j in range(self.sizes[layer - 1] + 1)]
                out[layer - 1] = m
            self._marginals = out
        return self._marginals[l]


def _free(e) -> bool:
    return bool(sp.sympify(e).free_symbols)


def _poly_step(claim: str, lhs, rhs) -> ProofStep:
    """An identity of polynomials in the kernel entries (exact: both sides expanded)."""
    step = ProofStep(claim, "identity")
    diff = lhs - rhs
    step.status = PROVED if not diff else "not settled"
    step.residual = "" if not diff else str(diff.as_expr())[:400]
    return step


def layer_sum_steps(b: AttentionBlock) -> list[ProofStep]:
    """Σ_{j ∈ V̄_l} m_l(j) = 1 at every layer and μ(Ω) = Σ_walks μ = 1, with q(⊥ | k) = 1 − Σ_j q(j | k)."""
    em = EntryMeasure(b, normalized=True)
    steps = [_poly_step(f"Σ over V̄_{l} of m_{l} = 1", sum(em.marginal(l), em.ring.zero), em.ring.one)
             for l in range(b.depth + 1)]
    steps.append(_poly_step(f"μ(Ω) = Σ over the {len(em.walks())} walks = 1", em.enumerate(lambda w: True),
                            em.ring.one))
    return steps


# -- L2 and L7 ----------------------------------------------------------------------------------
def _index(b: AttentionBlock, l: int, label: str) -> int:
    return len(b.layers[l]) if label == "⊥" else [n.label for n in b.layers[l]].index(label)


def additivity_steps(b: AttentionBlock) -> list[ProofStep]:
    """L2: μ(X_l ∈ S) by walks = Σ_{j∈S} m_l(j) by backward passes at every layer; μ(A ∪ B) by
    walks = μ(A) + μ(B) − μ(A ∩ B) by masked passes; μ(Aᶜ) by walks = 1 − μ(A). With
    q(⊥ | k) = 1 − Σ_j q(j | k) (L1's column identity): the backward pass's m_l is the walk
    measure's marginal only because every column below sums to one."""
    em, steps = EntryMeasure(b, normalized=True), []
    for l in range(b.depth + 1):
        first, last = 0, len(b.layers[l]) - 1
        m = em.marginal(l)
        for S in ({first}, {last, len(b.layers[l])}):
            names = ", ".join(b.layers[l][j].label if j < len(b.layers[l]) else "⊥" for j in sorted(S))
            steps.append(_poly_step(f"μ(X_{l} ∈ {{{names}}}) = Σ of m_{l} over it",
                                    em.enumerate(lambda w, l=l, S=S: w[l] in S), sum((m[j] for j in S), em.ring.zero)))
    A = {1: {_index(b, 1, "Q11"), _index(b, 1, "V22")}}
    B = {5: {_index(b, 5, "O11"), _index(b, 5, "⊥")}}
    steps.append(_poly_step("μ(A ∪ B) = μ(A) + μ(B) − μ(A ∩ B), A = {X_1 ∈ {Q11, V22}}, B = {X_5 ∈ {O11, ⊥}}",
                            em.enumerate(lambda w: w[1] in A[1] or w[5] in B[5]),
                            em.cylinder(A) + em.cylinder(B) - em.cylinder({**A, **B})))
    steps.append(_poly_step("μ(Aᶜ) = 1 − μ(A), A = {X_1 ∈ {Q11, V22}}",
                            em.enumerate(lambda w: w[1] not in A[1]), em.ring.one - em.cylinder(A)))
    return steps


def markov_steps(b: AttentionBlock) -> list[ProofStep]:
    """L7 (with q(⊥ | k) = 1 − Σ_j q(j | k), as L2), division-free:
    μ(X_{l−1} ∈ A, X_l = k, E) = q_l(A | k) μ(X_l = k, E) for every layer, the first and last
    neuron k, A = {first parent} and {first parent, ⊥}, and E among Ω, {X_{l+1} = first} and
    {X_{l+1} ∈ {first, ⊥}} (both sides by walks)."""
    em, steps, L = EntryMeasure(b, normalized=True), [], b.depth
    for l in range(1, L + 1):
        bot = len(b.layers[l - 1])
        for k in sorted({0, len(b.layers[l]) - 1}):
            j = b.columns[l][k].parents[0]
            events = [("Ω", lambda w: True)]
            if l < L:
                events += [(f"X_{l + 1} = {b.layers[l + 1][0].label}", lambda w, l=l: w[l + 1] == 0),
                           (f"X_{l + 1} ∈ {{{b.layers[l + 1][0].label}, ⊥}}",
                            lambda w, l=l: w[l + 1] in (0, len(b.layers[l + 1])))]
            for A in ({j}, {j, bot}):
                q = sum((em.transition(l, i, k) for i in A), em.ring.zero)
                names = ", ".join(b.layers[l - 1][i].label if i < bot else "⊥" for i in sorted(A))
                for label, E in events:
                    lhs = em.enumerate(lambda w, l=l, k=k, A=A, E=E: w[l - 1] in A and w[l] == k and E(w))
                    rhs = q * em.enumerate(lambda w, l=l, k=k, E=E: w[l] == k and E(w))
                    steps.append(_poly_step(f"μ(X_{l - 1} ∈ {{{names}}}, X_{l} = {b.layers[l][k].label}, {label}) = "
                                            f"q_{l}({{{names}}} | {b.layers[l][k].label}) μ(X_{l} = "
                                            f"{b.layers[l][k].label}, {label})", lhs, rhs))
    return steps


# -- what does not hold --------------------------------------------------------------------------
def negative_entry_steps(b: AttentionBlock, case: str) -> list[ProofStep]:
    """"q(j | k) ≥ 0" per kind: refuted by the first entry that is negative at the case's
    witness point (exact value; the sign decided at 50 digits)."""
    point, values = witness(case), forward(witness(case))
    steps = []
    for kind in ("q", "scores", "softmax", "values", "ln"):
        step = ProofStep(f"{kind}: every kernel entry q(j | k) ≥ 0 (a probability kernel)", "nonnegative")
        for l in range(1, b.depth + 1):
            for k, col in enumerate(b.columns[l]):
                if col.kind != kind or step.status == REFUTED:
                    continue
                for j in col.parents + [len(b.layers[l - 1])]:
                    entry = b.kernels[l][j, k]
                    value = sp.sympify(entry).xreplace(b.substitution({**values, **point}))
                    if sp.N(value, 50) < 0:
                        parent = b.layers[l - 1][j].label if j < len(b.layers[l - 1]) else "⊥"
                        step.claim += f"; q({parent} | {b.layers[l][k].label}) = {entry}"
                        step.status, step.point = REFUTED, point
                        step.lhs_value, step.rhs_value = value, sp.Integer(0)
                        break
        steps.append(step)
    return steps


def product_l9_steps() -> list[ProofStep]:
    """L9 on the product alone: A and V the inputs, O = A V, f = Σ_jp r_jp O_jp + c, LRP-0 on
    both maps. The general form m(A_ji) = θ A_ji ∂f/∂A_ji / f, m(V_ip) = (1 − θ) V_ip ∂f/∂V_ip / f
    is proved; L9 itself (the marginal = Gradient × Input / f) is refuted at θ = ½, rationally."""
    sym = {f"{h}{a}{b}": sp.Symbol(f"{h}{a}{b}", real=True) for h in "AVr" for a, b in PAIRS}
    assumed: list = []
    c, ops = sp.Symbol("c", real=True), sympy_ops(SignDecider(), assumed.append)
    O = {(j, p): sum(sym[f"A{j}{k}"] * sym[f"V{k}{p}"] for k in (1, 2)) for j, p in PAIRS}
    f = sum(sym[f"r{j}{p}"] * O[j, p] for j, p in PAIRS) + c
    marginal = {}
    for j, p in PAIRS:  # m(O_jp) = r_jp O_jp / f (LRP-0 readout), then the product's kernel column
        parents = [f"A{j}{k}" for k in (1, 2)] + [f"V{k}{p}" for k in (1, 2)]
        w = [THETA * sym[f"V{k}{p}"] for k in (1, 2)] + [(1 - THETA) * sym[f"A{j}{k}"] for k in (1, 2)]
        q, _ = derive_column(Zero(), ops, [sym[n] for n in parents], w, None, O[j, p])
        for name, qj in zip(parents, q):
            marginal[name] = marginal.get(name, 0) + qj * sym[f"r{j}{p}"] * O[j, p] / f
    steps = []
    for name, share in (("A11", THETA), ("V21", 1 - THETA)):
        gxi = sym[name] * sp.diff(f, sym[name]) / f
        steps.append(identity_step(f"general form: m({name}) = {share} · {name} ∂f/∂{name} / f", marginal[name],
                                   share * gxi))
    gxi = sym["A11"] * sp.diff(f, sym["A11"]) / f
    step = ProofStep("L9: m(A11) = A11 ∂f/∂A11 / f (θ = ½)", "identity")
    rng = random.Random(0)
    for _ in range(20):
        point = {s: sp.Rational(rng.choice((1, 2, 3)), rng.choice((1, 2, 4))) * rng.choice((1, -1))
                 for s in list(sym.values()) + [c]}
        point.update({sym[f"A{j}{k}"]: sp.Rational(2 * k - 1, 4) for j, k in PAIRS})  # a softmax row: 1/4, 3/4
        point[THETA] = sp.Rational(1, 2)
        fv = f.xreplace(point)
        if fv == 0 or any(v.xreplace(point) == 0 for v in O.values()):
            continue
        left, right = sp.nsimplify(marginal["A11"].xreplace(point)), sp.nsimplify(gxi.xreplace(point))
        if left != right:
            step.status, step.point, step.lhs_value, step.rhs_value = REFUTED, point, left, right
            break
    return steps + [step]


def shift_steps() -> list[ProofStep]:
    """The softmax kernel under a constant shift c of the logits (softmax itself is invariant):
    ⊥'s share 1 − x_j + Σ_i s_i x_i is invariant (with Σ_i s_i = 1, proved); the real shares
    x_i (δ_ij − s_i) move by c (δ_ij − s_i) (refuted at rational logits, values exact)."""
    x1, x2, c = sp.symbols("x1 x2 c", real=True)
    s1 = sp.Symbol("s1", positive=True)
    s = [s1, 1 - s1]

    def bot(y):
        return 1 - y[0] + s[0] * y[0] + s[1] * y[1]

    steps = [identity_step("q(⊥ | s_1) at x + c = q(⊥ | s_1) at x (Σ_i s_i = 1)", bot([x1 + c, x2 + c]), bot([x1, x2]))]
    step = ProofStep("q(x_1 | s_1) at x + c = q(x_1 | s_1) at x", "identity")
    point = {x1: sp.Integer(0), x2: sp.Integer(1), c: sp.Integer(1)}
    s_exact = sp.exp(point[x1]) / (sp.exp(point[x1]) + sp.exp(point[x2]))
    left = sp.simplify((point[x1] + point[c]) * (1 - s_exact))
    right = sp.simplify(point[x1] * (1 - s_exact))
    if left != right:
        step.status, step.point, step.lhs_value, step.rhs_value = REFUTED, point, left, right
    return steps + [step]


# -- the proofs, as the report shows them ---------------------------------------------------------
@lru_cache(maxsize=1)
def _proofs() -> tuple[Proof, ...]:
    out = []
    for case in ("A", "B"):
        b = block(case)
        title = "every forward value > 0" if case == "A" else f"the signs of a dyadic point (seed {SEED_B})"
        out.append(_proof("kernels", f"{case} ({title})", "holds", kernel_steps(b),
                          "the rule objects on the kinds' maps give NRM-SPEC §8's closed forms", b))
        out.append(_proof("L1", f"{case} ({title})", "holds", column_steps(b) + layer_sum_steps(b), "", b))
        out.append(_proof("L2", f"{case} ({title})", "holds", additivity_steps(b), "", b))
        out.append(_proof("L7", f"{case} ({title})", "holds", markov_steps(b), "", b))
    b = block("B")
    out.append(_proof("q ≥ 0", "B", "fails", negative_entry_steps(b, "B"),
                      "signed kernels: NRM-SPEC §2 asks column sums of 1, not non-negative entries", b))
    l9 = product_l9_steps()
    out.append(_proof("L9 (general form)", "product O = A V", "holds", l9[:2],
                      "LRP-0 gives the factors θ and 1 − θ of Gradient × Input (where O_jp ≠ 0, LRP-0's "
                      "validity condition)", b))
    out.append(_proof("L9", "product O = A V", "fails", l9[2:],
                      "O is homogeneous of degree 2: the gradient gives each factor the whole product", b))
    shift = shift_steps()
    out.append(_proof("softmax shift, ⊥", "softmax", "holds", shift[:1], "", b))
    out.append(_proof("softmax shift, real shares", "softmax", "fails", shift[1:],
                      "the kernel is a Taylor expansion at x: it moves by c (δ_ij − s_i)", b))
    return tuple(out)


def proofs() -> list[Proof]:
    """Every proof and refutation on the attention block (cached: the report and the check share it)."""
    return list(_proofs())


def main(argv=None) -> int:
    """Print every proof on the block (``--show``: every step); exit 1 when one is not as expected."""
    show = "--show" in (argv or [])
    bad = 0
    for p in proofs():
        print(f"{p.law} | {p.case} | {p.status} (expected: {p.expect}) | {len(p.steps)} steps"
              + (f" | {p.note}" if p.note else "") + ("" if p.good else "   <-- NOT AS EXPECTED"))
        bad += not p.good
        for s in p.steps if show else [st for st in p.steps if st.status != PROVED]:
            print(f"    {s.status}: {s.claim}")
            if s.point is not None:
                print(f"        at {point_text(s.point)}: left {_value_text(s.lhs_value)}, "
                      f"right {_value_text(s.rhs_value)}")
            if s.residual:
                print(f"        residual: {s.residual}")
    return 1 if bad else 0


__all__ = ["main", "proofs", "block", "witness", "closed_forms", "kernel_steps", "column_steps", "layer_sum_steps",
           "additivity_steps", "markov_steps", "negative_entry_steps", "product_l9_steps", "shift_steps",
           "EntryMeasure", "identity_step", "render_section", "ARCH", "RULE"]


# -- the report's section -------------------------------------------------------------------------
def _value_text(v) -> str:
    v = sp.sympify(v)
    if v.is_Rational or len(str(v)) <= 60:
        return str(v)
    return f"≈ {sp.N(v, 12)}"


def _latex_kernels(b: AttentionBlock) -> list[str]:
    lines = []
    for kind, label in (("q", "Q11"), ("scores", "S11"), ("scale", "L11"), ("softmax", "A11"), ("values", "O11"),
                        ("ln", "Y11"), ("out", "f")):
        l = next(i for i in range(1, b.depth + 1) if label in [n.label for n in b.layers[i]])
        k = [n.label for n in b.layers[l]].index(label)
        col, Q = b.columns[l][k], b.kernels[l]
        terms = [f"q({sp.latex(b.s(b.layers[l - 1][j].value))} \\mid {sp.latex(b.s(label))}) = "
                 f"{sp.latex(sp.factor(Q[j, k]))}" for j in col.parents]
        terms.append(f"q(\\bot \\mid {sp.latex(b.s(label))}) = {sp.latex(sp.factor(Q[-1, k]))}")
        lines.append(f"- **{kind}** (`{type(b.rules[kind]).__name__}`): $" + ",\\quad ".join(terms) + "$")
    return lines


def render_section(attention: list[Proof]) -> list[str]:
    """The section of ``proofs/REPORT.md`` on the attention block."""
    w = (lines := []).append
    w("## Attention: a 2-token × 2-dimension single head (issue 14)")
    w("")
    w("`nrm_verify/symbolic/attention.py` builds X (2 × 2) → Q = X W_q, K = X W_k, V = X W_v → S = Q Kᵀ →")
    w("L = τ S → A = softmax(L) per row → O = A V → Y = LayerNorm(O) (γ, β; σ held) → f = Σ r Y + c, and derives")
    w("every kernel by handing the layer kind's map at the forward value to the rule object (θ symbolic;")
    w(f"{RULE}). Forward values are symbols with the signs of the case's rational witness point")
    w("(`attention_proofs.witness`); σ and the softmax outputs are free symbols (an identity with them")
    w("free holds at their true values). The kernels equal nrm's exact DAG oracle's entry by entry at the")
    w("witness points, and the marginals the oracle's exactly (`tests/test_symbolic_attention.py`).")
    w("")
    w("| claim | case | verdict | steps | note |")
    w("|---|---|---|---|---|")
    for p in attention:
        mark = {PROVED: "✓ proved", REFUTED: "✗ refuted"}.get(p.status, f"⚠ {p.status}")
        w(f"| {p.law} | {p.case} | {mark}{'' if p.good else ' (NOT AS EXPECTED)'} | {len(p.steps)} | {p.note} |")
    w("")
    w("L1: every column sums to 1 with its forward value replaced by its definition (a rational-function")
    w("identity), then Σ over V̄_l of m_l = 1 at each layer and μ(Ω) = 1 over the walks. L2 and L7: identities")
    w("of polynomials in the kernel entries (walk enumeration against masked backward passes), with")
    w("q(⊥ | k) = 1 − Σ_j q(j | k); the entries depend on forward quantities only (*kernels*).")
    w("")
    w("**Derived kernels** (case A, one column of each kind):")
    w("")
    lines += _latex_kernels(block("A"))
    w("")
    w("**Counterexamples** (every point rational; values exact — decimals where exp or √ enter):")
    w("")
    for p in attention:
        for s in p.steps:
            if s.status == REFUTED:
                w(f"- **{p.law}**: `{s.claim}` fails at {point_text(s.point)}: left {_value_text(s.lhs_value)}, "
                  f"right {_value_text(s.rhs_value)}. {p.note}.")
    w("")
    return lines
