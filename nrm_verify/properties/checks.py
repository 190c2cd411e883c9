"""Which arguments each law gets: the law checks of the validator and the battery of laws
for one given case.

* :class:`Context` — where a rule under test is placed and which cases are drawn for it;
* :data:`CHECKS` — one :class:`LawCheck` per law function of :mod:`nrm_verify.laws`: how
  its arguments (events, layers, neurons, walks, a second input) are drawn from a case,
  and for which rules it applies;
* :class:`Call` — one law call with placeholders (``m``, ``model``, ``x``, ``target``,
  ``rules``) that runs on a case and writes itself as code for a counterexample program;
* :func:`laws_on_case` — every applicable law on one given case with deterministic
  arguments (:func:`default_events`): what the pytest plugin's ``assert_laws`` runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st

import nrm
from nrm.errors import RelevanceDependentRuleError
from nrm.events import OMEGA
from nrm.rules import AlphaBeta, Epsilon, Gamma, Rule, ZBox, Zero, ZPlus
from nrm_verify import laws
from nrm_verify.properties import strategies as S
from nrm_verify.properties.codegen import Writer

# -- where the rule goes -----------------------------------------------------------------------
SOUND_OTHERS = ("zero", "epsilon", "gamma", "zplus", "alphabeta", "wsquare", "flat")


@dataclass
class Context:
    """How cases are drawn for one rule."""

    rule: Rule
    input_kind: str
    activations: tuple[str, ...]
    low: float = -2.0
    high: float = 2.0

    @classmethod
    def of(cls, rule: Rule) -> Context:
        nonneg = bool(getattr(rule, "requires_nonnegative_input", False))
        if isinstance(rule, ZBox) and _is_scalar(rule.low) and _is_scalar(rule.high):
            return cls(rule, "box", ("relu", "leaky", "identity"), float(rule.low), float(rule.high))
        return cls(rule, "nonnegative" if nonneg else "arbitrary",
                   ("relu",) if nonneg else ("relu", "leaky", "identity"))

    def placements(self, net: S.Network) -> st.SearchStrategy:
        others = S.rules(SOUND_OTHERS, low=self.low, high=self.high)
        if getattr(self.rule, "input_layer_only", False):
            rest = net.linear_layers()[1:]
            return st.builds(lambda other: {nrm.FIRST: self.rule, **{name: other for name in rest}}, others)
        return S.rule_assignments(net, others, required=self.rule, allow_presets=False)

    def cases(self, batch=(1, 2), size: str = "any") -> st.SearchStrategy[S.Case]:
        """Cases on networks of one linear layer ("one layer"), MLPs of at most two layers
        of width two ("small") or any architecture ("any")."""
        if size == "one layer":
            net = S.networks("mlp", max_depth=1, max_width=2, activations=self.activations)
        elif size == "small":
            net = S.networks("mlp", max_depth=2, max_width=2, activations=self.activations)
        else:
            net = S.networks(activations=self.activations)
        return S.cases(net, input_kind=self.input_kind, low=self.low, high=self.high, batch=batch,
                       rules=self.placements)


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)


# -- the law checks -------------------------------------------------------------------------------
class Sym:
    """A name in the counterexample program (``m``, ``model``, ``x``, ``target``, ``rules``)."""

    def __init__(self, name: str):
        self.name = name


M, MODEL, X, TARGET, RULES = Sym("m"), Sym("model"), Sym("x"), Sym("target"), Sym("rules")


@dataclass
class Call:
    """``laws.<function>(*args)`` with :class:`Sym` placeholders for the case's values."""

    function: str
    args: tuple
    extra: dict = field(default_factory=dict)  # names defined before the call (e.g. x2)
    kwargs: dict = field(default_factory=dict)

    def run(self, case: S.Case) -> laws.LawResult:
        env = {"m": case.measure() if any(a is M for a in self.args) else None, "model": case.model, "x": case.x,
               "target": case.target, "rules": case.rules, **self.extra}
        args = [env[a.name] if isinstance(a, Sym) else a for a in self.args]
        return getattr(laws, self.function)(*args, **self.kwargs)

    def code(self, w: Writer) -> list[str]:
        lines = [f"{k} = {w.expr(v)}" for k, v in self.extra.items()]
        args = [a.name if isinstance(a, Sym) else w.expr(a) for a in self.args]
        args += [f"{k}={w.expr(v)}" for k, v in self.kwargs.items()]
        return lines + [f"result = laws.{self.function}({', '.join(args)})"]


@dataclass
class LawCheck:
    law: str
    name: str
    draw: Callable[[Any, S.Case, Context], Call]
    applies: Callable[[Rule], str] = lambda rule: ""  # '' or the reason it does not apply
    batch: tuple[int, int] = (1, 2)


def _canonical(case: S.Case) -> list[str]:
    return case.network.canonical()


def _event(data, case, layers=None):
    return data.draw(S.events(case.network, layers), label="event")


def _event_or_atom(data, case):
    return data.draw(st.one_of(S.atoms(case.network), S.events(case.network)), label="event")


def _draw_marginalization(data, case, ctx):
    names = _canonical(case)
    layer = data.draw(st.sampled_from(names), label="layer")
    table = case.network.layers()
    l = table[layer][0]
    others = [n for n, (i, _) in table.items() if i != l]
    event = _event(data, case, others) if others and data.draw(st.booleans(), label="with event") else OMEGA
    return Call("marginalization", (M, layer, event))


def _draw_joint(data, case, ctx):
    names = _canonical(case)
    la, lb = data.draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True), label="layers")
    return Call("joint_marginals", (M, la, lb))


def _draw_chain(data, case, ctx):
    return Call("chain_rule", (M, data.draw(S.walks(case.measure()), label="walk")))


def _draw_markov(data, case, ctx):
    names = _canonical(case)
    table = case.network.layers()
    l = data.draw(st.integers(1, len(names) - 1), label="layer index")
    n = math.prod(table[names[l]][1])
    below = math.prod(table[names[l - 1]][1])
    marg = case.measure().marginal(names[l])[0].reshape(-1)
    carrying = [i for i in range(n) if float(marg[i]) != 0] or list(range(n))
    k = data.draw(st.sampled_from(carrying), label="neuron")
    lower = data.draw(st.lists(st.integers(0, below - 1), min_size=1, max_size=below, unique=True), label="lower")
    above = [name for name, (i, _) in table.items() if i > l]
    event = OMEGA
    if above and data.draw(st.integers(0, 3), label="with event") > 0:
        event = data.draw(S.cylinders(case.network, above), label="event above")
    return Call("markov", (M, names[l], k, sorted(lower), event))


def _draw_total(data, case, ctx):
    names = _canonical(case)
    return Call("total_measure", (M, _event(data, case), data.draw(st.sampled_from(names), label="layer")))


def _draw_channel(data, case, ctx):
    names = _canonical(case)
    l = data.draw(st.integers(1, len(names) - 1), label="layer index")
    t = data.draw(st.integers(0, l - 1), label="heatmap layer")
    return Call("channel_sum", (M, names[l], names[t]))


def _draw_input_independence(data, case, ctx):
    x2 = data.draw(S.inputs(tuple(case.x.shape[1:]), ctx.input_kind, low=ctx.low, high=ctx.high,
                            batch=(case.x.shape[0], case.x.shape[0])), label="second input").x
    return Call("input_independence", (MODEL, X, Sym("x2"), TARGET, ctx.rule), {"x2": x2})


def _is(*types) -> Callable[[Rule], str]:
    names = " or ".join(t.__name__ for t in types)

    def applies(rule):
        return "" if isinstance(rule, types) else f"the law concerns {names} only"
    return applies


def _l9(rule) -> str:
    if type(rule) is Zero and rule.leak == "absorb":
        return ""
    return "L9 concerns LRP-0 (Zero, leak='absorb') on every layer"


def _l14(rule) -> str:
    return "" if not rule.depends_on_input else "the rule declares depends_on_input = True (L14 is about flat and w²)"



# -- L15, L16, L18 ----------------------------------------------------------------------------------
def _draw_walks(data, case, ctx) -> Call:
    """L15: a single walk drawn along non-zero kernel entries, or a cylinder event and its
    unions, intersections, complements and differences (sets of walks)."""
    if data.draw(st.booleans(), label="single walk"):
        walks = data.draw(S.walks(case.measure()), label="walk")
    else:
        walks = data.draw(S.events(case.network), label="walks")
    return Call("walk_relevance", (MODEL, X, TARGET, walks, RULES))


def _draw_crp(data, case, ctx) -> Call:
    """L16: a condition {layer: channels} on a layer above the input (channels, or neurons of
    a layer without a channel dimension)."""
    table = case.network.layers()
    names = [n for n, (l, _) in table.items() if l >= 1]
    layer = data.draw(st.sampled_from(sorted(names)), label="layer")
    shape = table[layer][1]
    n = shape[0] if shape else 1
    channels = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True), label="channels")
    return Call("crp_conditional", (M, layer, sorted(channels)))


def _fixed_kernel(rule) -> str:
    return "the rule reads the incoming relevance (no fixed kernel)" if getattr(rule, "reads_relevance", False) \
        else ""


def _modularity_rule(rule) -> str:
    """L18 compares with nrm_verify.references.explicit, which knows the built-in rules only."""
    from nrm import rules as R

    why = _fixed_kernel(rule)
    if why:
        return why
    builtin = (R.Zero, R.Epsilon, R.Gamma, R.ZPlus, R.AlphaBeta, R.WSquare, R.Flat, R.ZBox)
    return "" if type(rule) in builtin else "the explicit LRP reference knows the built-in rules only"


CHECKS: tuple[LawCheck, ...] = (
    LawCheck("L1", "normalization", lambda d, c, x: Call("normalization", (M,))),
    LawCheck("L1", "column-stochastic kernels", lambda d, c, x: Call("column_sums", (M,))),
    LawCheck("L2", "additivity", lambda d, c, x: Call("additivity", (M, _event_or_atom(d, c), _event_or_atom(d, c)))),
    LawCheck("L3", "marginalization", _draw_marginalization),
    LawCheck("L3", "joint marginals", _draw_joint),
    LawCheck("L4", "chain rule", _draw_chain),
    LawCheck("L4", "multiplicative law", lambda d, c, x: Call("multiplicative", (M, _event(d, c), _event(d, c)))),
    LawCheck("L5", "Bayes", lambda d, c, x: Call("bayes", (M, _event(d, c), _event(d, c)))),
    LawCheck("L6", "total measure", _draw_total),
    LawCheck("L7", "Markov", _draw_markov),
    LawCheck("L8", "LRP equivalence", lambda d, c, x: Call("lrp_equivalence", (M,))),
    LawCheck("L9", "LRP-0 = gradient × input", lambda d, c, x: Call("gradient_x_input", (MODEL, X, TARGET)), _l9),
    LawCheck("L10", "ε → 0 gives LRP-0", lambda d, c, x: Call("epsilon_limit", (MODEL, X, TARGET)), _is(Epsilon)),
    LawCheck("L11", "γ = 0 gives LRP-0", lambda d, c, x: Call("gamma_zero", (MODEL, X, TARGET)), _is(Gamma)),
    LawCheck("L12", "γ → ∞ gives z⁺", lambda d, c, x: Call("gamma_limit", (MODEL, X, TARGET)), _is(Gamma)),
    LawCheck("L13", "α1β0 = z⁺", lambda d, c, x: Call("alpha1_beta0", (MODEL, X, TARGET)), _is(AlphaBeta, ZPlus)),
    LawCheck("L14", "input independence", _draw_input_independence, _l14),
    LawCheck("L14", "z^B non-negative", lambda d, c, x: Call("zbox_nonnegative", (M,)), _is(ZBox)),
    LawCheck("L17", "channel-conditional heatmaps add up", _draw_channel),
    LawCheck("L15", "GNN-LRP walk relevance", _draw_walks, _fixed_kernel),
    LawCheck("L16", "CRP conditional heatmap", _draw_crp, _fixed_kernel),
    LawCheck("L18", "modularity", lambda d, c, x: Call("modularity", (M, MODEL, X, TARGET, RULES)), _modularity_rule),
    LawCheck("INV", "batch invariance", lambda d, c, x: Call("batch_invariance", (MODEL, X, TARGET, RULES)),
             batch=(2, 3)),
)

LATER: tuple = ()
"""Laws without a check (none left: L15, L16 and L18 are in :data:`CHECKS`; branched models are
covered by tests/test_laws_dag.py and tests/test_dag.py)."""


# -- every law on one given case (what the pytest plugin's assert_laws runs) --------------------
def _rules_used(m: nrm.Measure) -> list[Rule]:
    return [b.rule for b in m.network.linear_blocks()]


def default_events(m: nrm.Measure) -> list:
    """Events for a given case, chosen deterministically: per layer the atom of its
    largest-|marginal| neuron and the atom of the first half of its neurons with the
    absorber; their unions, intersections and differences across adjacent layers."""
    names = m._canonical_names()
    atoms = []
    for name in names:
        marg = m.marginal(name)[0].reshape(-1)
        top = int(marg.abs().argmax())
        atoms.append(nrm.At(name, index=[top]))
        half = list(range(max(1, marg.numel() // 2)))
        atoms.append(nrm.At(name, index=half, absorber=True))
    combos = []
    for i in range(0, len(atoms) - 2, 2):
        a, b = atoms[i], atoms[i + 2]
        combos += [S.CodedEvent(a | b, f"{a!r} | {b!r}"), S.CodedEvent(a & b, f"{a!r} & {b!r}"),
                   S.CodedEvent(a - b, f"{a!r} - {b!r}")]
    return atoms + combos


def laws_on_case(model, x: torch.Tensor, target, rules=None, *, events: Sequence | None = None,
                 tol: float | None = None, x2: torch.Tensor | None = None) -> list[tuple[str, laws.LawResult]]:
    """Every law that applies to one given case, with its call as code:
    [(call, LawResult)]. Events default to :func:`default_events`; ``x2`` (a second input)
    adds L14 input independence for input-independent rules."""
    m = nrm.explain(model, x, target, rules=rules)
    names = m._canonical_names()
    evs = list(events) if events is not None else default_events(m)
    calls: list[Call] = [Call("normalization", (M,)), Call("column_sums", (M,)), Call("lrp_equivalence", (M,))]
    for a, b in zip(evs, evs[1:]):
        calls += [Call("additivity", (M, a, b)), Call("multiplicative", (M, a, b)), Call("bayes", (M, a, b))]
    for l, name in enumerate(names):
        others = [e for e in evs if all(m.layer_index(n) != l for n in e.layers())]
        calls.append(Call("marginalization", (M, name, others[0] if others else OMEGA)))
        calls.append(Call("total_measure", (M, evs[0], name)))
        if l >= 1:
            calls.append(Call("joint_marginals", (M, names[l - 1], name)))
            calls.append(Call("channel_sum", (M, name, "input")))
            marg = m.marginal(name)[0].reshape(-1)
            k = int(marg.abs().argmax())
            below = math.prod(m.layer_shape(names[l - 1]))
            lower = list(range(max(1, below // 2)))
            calls.append(Call("markov", (M, name, k, lower, OMEGA)))
            if l + 1 < len(names):
                up = m.marginal(names[l + 1])[0].reshape(-1)
                calls.append(Call("markov", (M, name, k, lower, nrm.At(names[l + 1], index=[int(up.abs().argmax())]))))
    walk = [int(m.start[0].reshape(-1).abs().argmax())]
    for l in range(len(names) - 1, 0, -1):  # the heaviest walk of the first sample, from the top
        within = m.marginal(names[l - 1], within=nrm.Walk({names[i]: walk[i - l] for i in range(l, len(names))}))
        walk.insert(0, int(within[0].reshape(-1).abs().argmax()))
    calls.append(Call("chain_rule", (M, walk)))
    if x.shape[0] >= 2:
        calls.append(Call("batch_invariance", (MODEL, X, TARGET, RULES)))
    used = _rules_used(m)
    if all(type(r) is Zero and r.leak == "absorb" for r in used):
        calls.append(Call("gradient_x_input", (MODEL, X, TARGET)))
    if any(isinstance(r, Epsilon) for r in used):
        calls.append(Call("epsilon_limit", (MODEL, X, TARGET)))
    if any(isinstance(r, Gamma) for r in used):
        calls += [Call("gamma_zero", (MODEL, X, TARGET)), Call("gamma_limit", (MODEL, X, TARGET))]
    if any(isinstance(r, (AlphaBeta, ZPlus)) for r in used):
        calls.append(Call("alpha1_beta0", (MODEL, X, TARGET)))
    if isinstance(used[0], ZBox):
        calls.append(Call("zbox_nonnegative", (M,)))
    if x2 is not None:
        for r in {repr(r): r for r in used if not r.depends_on_input}.values():
            calls.append(Call("input_independence", (MODEL, X, Sym("x2"), TARGET, r), {"x2": x2}))
    case = S.Case(model, x, target, rules)
    case._measure = m
    out = []
    for call in calls:
        if tol is not None:
            call.kwargs["tol"] = tol
        try:
            result = call.run(case)
        except RelevanceDependentRuleError as e:
            result = laws.LawResult(call.function, call.function, None, detail=str(e))
        out.append(("\n".join(call.code(Writer())), result))
    return out


__all__ = ["Context", "Call", "LawCheck", "CHECKS", "LATER", "Sym", "M", "MODEL", "X", "TARGET", "RULES",
           "laws_on_case", "default_events", "SOUND_OTHERS"]
