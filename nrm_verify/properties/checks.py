"""Where a rule under test goes and every law on one given case.

* :class:`Context` — where a rule under test is placed and which cases are drawn for it;
* :data:`CHECKS` — the law checks of a rule, read from the law catalogue
  (:mod:`nrm_verify.laws.catalogue`: the law function, how its arguments are drawn, to
  which rules it applies);
* :func:`laws_on_case` — every applicable law on one given case with deterministic
  arguments (:func:`default_events`): what the pytest plugin's ``assert_laws`` runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

import nrm
from nrm.errors import RelevanceDependentRuleError
from nrm.events import OMEGA
from nrm.rules import AlphaBeta, Epsilon, Gamma, Rule, ZBox, Zero, ZPlus
from nrm_verify import laws
from nrm_verify.laws.catalogue import CHECKS, Check
from nrm_verify.properties import strategies as S
from nrm_verify.properties.calls import MODEL, RULES, TARGET, LawCall, M, Sym, X
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
LawCheck = Check
"""A law check of the catalogue (:class:`nrm_verify.laws.catalogue.Check`)."""


# -- every law on one given case (what the pytest plugin's assert_laws runs) --------------------
def default_events(m: nrm.Measure) -> list:
    """Events for a given case, chosen deterministically: per layer the atom of its
    largest-|marginal| neuron and the atom of the first half of its neurons with the
    absorber; their unions, intersections and differences across adjacent layers."""
    names = m.canonical_names()
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
    evs = list(events) if events is not None else default_events(m)
    calls = _measure_calls(m, evs) + [LawCall(laws.chain_rule, (M, _heaviest_walk(m)))]
    if x.shape[0] >= 2:
        calls.append(LawCall(laws.batch_invariance, (MODEL, X, TARGET, RULES)))
    calls += _rule_calls([b.rule for b in m.network.linear_blocks()], x2)
    case = S.Case(model, x, target, rules, measure=m)
    out = []
    for call in calls:
        if tol is not None:
            call.kwargs["tol"] = tol
        try:
            result = call.run(case)
        except RelevanceDependentRuleError as e:
            result = laws.LawResult(call.name, call.name, None, detail=str(e))
        out.append(("\n".join(call.code(Writer())), result))
    return out


def _measure_calls(m: nrm.Measure, evs: list) -> list[LawCall]:
    """L1 – L8 and L17 with deterministic arguments: the events pairwise, every layer, the
    heaviest neuron of each layer and half of the layer below it."""
    names = m.canonical_names()
    calls = [LawCall(laws.normalization, (M,)), LawCall(laws.column_sums, (M,)), LawCall(laws.lrp_equivalence, (M,))]
    for a, b in zip(evs, evs[1:]):
        calls += [LawCall(f, (M, a, b)) for f in (laws.additivity, laws.multiplicative, laws.bayes)]
    for l, name in enumerate(names):
        others = [e for e in evs if all(m.layer_index(n) != l for n in e.layers())]
        calls.append(LawCall(laws.marginalization, (M, name, others[0] if others else OMEGA)))
        calls.append(LawCall(laws.total_measure, (M, evs[0], name)))
        if l < 1:
            continue
        calls.append(LawCall(laws.joint_marginals, (M, names[l - 1], name)))
        calls.append(LawCall(laws.channel_sum, (M, name, "input")))
        k = int(m.marginal(name)[0].reshape(-1).abs().argmax())
        lower = list(range(max(1, math.prod(m.layer_shape(names[l - 1])) // 2)))
        calls.append(LawCall(laws.markov, (M, name, k, lower, OMEGA)))
        if l + 1 < len(names):
            up = m.marginal(names[l + 1])[0].reshape(-1)
            above = nrm.At(names[l + 1], index=[int(up.abs().argmax())])
            calls.append(LawCall(laws.markov, (M, name, k, lower, above)))
    return calls


def _heaviest_walk(m: nrm.Measure) -> list[int]:
    """The heaviest walk of the first sample, chosen from the top down."""
    names = m.canonical_names()
    walk = [int(m.start[0].reshape(-1).abs().argmax())]
    for l in range(len(names) - 1, 0, -1):
        within = m.marginal(names[l - 1], within=nrm.Walk({names[i]: walk[i - l] for i in range(l, len(names))}))
        walk.insert(0, int(within[0].reshape(-1).abs().argmax()))
    return walk


def _rule_calls(used: list[Rule], x2: torch.Tensor | None) -> list[LawCall]:
    """L9 – L14 where the rules in use are what the law is about."""
    calls = []
    if all(type(r) is Zero and r.leak == "absorb" for r in used):
        calls.append(LawCall(laws.gradient_x_input, (MODEL, X, TARGET)))
    if any(isinstance(r, Epsilon) for r in used):
        calls.append(LawCall(laws.epsilon_limit, (MODEL, X, TARGET)))
    if any(isinstance(r, Gamma) for r in used):
        calls += [LawCall(laws.gamma_zero, (MODEL, X, TARGET)), LawCall(laws.gamma_limit, (MODEL, X, TARGET))]
    if any(isinstance(r, (AlphaBeta, ZPlus)) for r in used):
        calls.append(LawCall(laws.alpha1_beta0, (MODEL, X, TARGET)))
    if isinstance(used[0], ZBox):
        calls.append(LawCall(laws.zbox_nonnegative, (M,)))
    if x2 is not None:
        for r in {repr(r): r for r in used if not r.depends_on_input}.values():
            calls.append(LawCall(laws.input_independence, (MODEL, X, Sym("x2"), TARGET, r), {"x2": x2}))
    return calls


__all__ = ["Context", "LawCall", "LawCheck", "CHECKS", "Sym", "M", "MODEL", "X", "TARGET", "RULES",
           "laws_on_case", "default_events", "SOUND_OTHERS"]
