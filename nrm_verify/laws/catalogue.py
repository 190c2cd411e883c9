"""The law catalogue: every law of the measure (NRM-SPEC §4) and of the layer kinds, once.

A :class:`Law` is a key (``L1`` … ``L18``, ``INV``, ``K2`` …), a title, its statement, its
numeric :class:`Check` s (the law function, how its arguments are drawn from a case, and to
which subjects — rules, presets, layer kinds — it applies), its symbolic form and its proof
file. Everything that names, runs or reports a law reads it from here: the validators
(``check-rule``, ``check-layer``), the conformance matrix (``nrm-verify check``), the symbolic
layer (:mod:`nrm_verify.symbolic`), ``proofs/`` and the reports.

Adding a law is one entry and its function::

    from nrm_verify.laws import LawResult, catalogue
    from nrm_verify.properties import draws

    def mass_below_one(m, *, tol=None) -> LawResult:          # the law: any function returning a LawResult
        worst = float(m.absorbed("input").abs().max())
        return LawResult("L19", "absorbed mass is at most 1", worst <= 1 + 1e-9, worst, 1.0)

    catalogue.register(catalogue.Law(
        "L19", "absorbed mass is at most 1", r"m_0(\\bot_0) \\le 1",
        checks=(catalogue.Check("absorbed mass is at most 1", mass_below_one, draws.measure_only),)))

after which ``check_rule``, ``nrm-verify check`` and their reports have an ``L19`` column
(``docs/extending.md``). :func:`unregister` takes it out again.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from nrm.rules import AlphaBeta, Epsilon, Gamma, ZBox, Zero, ZPlus
from nrm_verify.laws import graph, invariance, kinds, limits, measure, walks
from nrm_verify.properties import draws
from nrm_verify.properties.calls import LawCall
from nrm_verify.references import explicit

Applies = Callable[[Any], str]
"""``applies(subject) -> ''`` when a check applies to the subject, else the reason."""


def always(subject) -> str:
    """Applies to every subject."""
    return ""


@dataclass(frozen=True)
class Check:
    """One numeric check of a law: ``function(*draw(data, case, ctx))`` returns a
    :class:`~nrm_verify.laws.LawResult`.

    ``rule``, ``preset`` and ``kind`` say to which subjects it applies: a function of the
    subject returning '' or the reason it does not apply (``None``: the check is not about
    that kind of subject — ``kind`` is None for the laws ``check-layer`` does not run).
    ``batch`` is the (min, max) number of samples of its cases."""

    name: str
    function: Callable[..., Any]
    draw: Callable[..., Any]
    rule: Applies | None = always
    preset: Applies | None = always
    kind: Applies | None = None
    batch: tuple[int, int] = (1, 2)
    law: str = ""
    """The key of the :class:`Law` that holds it (set by :class:`Law`)."""

    def call(self, data, case, ctx) -> LawCall:
        """Draw the arguments and return the call (run it with ``.run(case)``)."""
        drawn = self.draw(data, case, ctx)
        if isinstance(drawn, draws.Arguments):
            return LawCall(self.function, drawn.args, dict(drawn.extra), dict(drawn.kwargs))
        return LawCall(self.function, tuple(drawn))

    def applies(self, subject) -> str:
        """'' when the check applies to a rule (the validators' and the matrix's rows)."""
        return "" if self.rule is None else self.rule(subject)


@dataclass(frozen=True)
class Law:
    """One law: ``key`` (``L1``), ``title``, ``statement`` (LaTeX), its numeric ``checks``,
    ``symbolic`` (the law as claims about a symbolic subject: a function or
    ``"module:function"``, read when proving), ``proof`` (its file in ``proofs/``) and
    ``column`` (whether ``nrm-verify check`` shows it: the layer-kind laws K2 … are
    ``check-layer``'s only)."""

    key: str
    title: str
    statement: str = ""
    checks: tuple[Check, ...] = ()
    symbolic: Callable | str | None = None
    proof: str | None = None
    column: bool = True

    def __post_init__(self):
        object.__setattr__(self, "checks", tuple(replace(c, law=self.key) for c in self.checks))

    def symbolic_function(self) -> Callable | None:
        """The symbolic form as a function ``(subject) -> [Claim]`` (imported when a string)."""
        if self.symbolic is None or callable(self.symbolic):
            return self.symbolic
        module, _, name = self.symbolic.partition(":")
        return getattr(importlib.import_module(module), name)


# -- when a check applies ---------------------------------------------------------------------------
def _only(*types) -> Applies:
    names = " or ".join(t.__name__ for t in types)

    def applies(rule):
        return "" if isinstance(rule, types) else f"the law concerns {names} only"
    return applies


def _lrp0(rule) -> str:
    if type(rule) is Zero and rule.leak == "absorb":
        return ""
    return "L9 concerns LRP-0 (Zero, leak='absorb') on every layer"


def _input_independent(rule) -> str:
    return "" if not rule.depends_on_input else "the rule declares depends_on_input = True (L14 is about flat and w²)"


def _fixed_kernel(rule) -> str:
    return "the rule reads the incoming relevance (no fixed kernel)" if getattr(rule, "reads_relevance", False) \
        else ""


def _explicit_reference(rule) -> str:
    """L18 compares with the explicit LRP reference (:mod:`nrm_verify.references.explicit`): the
    built-in rules by its hand-written table, any other rule derived from the rule object;
    :func:`~nrm_verify.references.explicit.supports` says which it cannot compute."""
    if explicit.supports(rule):
        return ""
    return _fixed_kernel(rule) or f"the explicit LRP reference cannot compute it: {explicit.unsupported_reason(rule)}"


def _single_rule(preset) -> str:
    return "the law relates single rules (see the rule rows); a preset mixes rules by layer"


def _box_first(preset) -> str:
    return "" if isinstance(getattr(preset, "first", None), ZBox) else "the preset does not use z^B on the first layer"


def _gradient_kind(kind) -> str:
    if kind.role == "product":
        return (f"{kind.name} multiplies activations: its kernel splits relevance by fixed shares θ_i, while the "
                "gradient gives every factor the whole product, so LRP-0 is not Gradient × Input through it")
    if kind.role == "elementwise" and not getattr(kind, "homogeneous", False):
        return (f"{kind.name} is an elementwise function that is not positively homogeneous (σ(z) ≠ σ'(z) z), "
                "so LRP-0 through it is not Gradient × Input")
    if kind.role == "linear" and getattr(kind, "linearized", False):
        return f"{kind.name}'s map is a linearization at the input, not the operation"
    if kind.role == "linear" and getattr(kind, "arity", 1) > 1:
        return (f"{kind.name} multiplies activations: its map holds each factor at its forward value and splits the "
                "product by θ, while the gradient gives every factor the whole product, so LRP-0 is Gradient × Input "
                "only with the held factor detached")
    if kind.role == "linear" and not getattr(kind, "jacobian", True):
        return (f"{kind.name}'s map holds σ at its forward value (σ depends on the input), so LRP-0 through it is "
                "Gradient × Input only with σ detached, not with the model's gradient")
    return ""


def _detached_gradient_kind(kind) -> str:
    """L9's general form detaches what the conventions hold (ratios, gates, σ): only a map
    that linearizes the operation at the input is outside it."""
    if kind.role == "linear" and getattr(kind, "linearized", False):
        return f"{kind.name}'s map is a linearization at the input, not the operation"
    return ""


def _chain_kind(kind) -> str:
    if kind.role == "product" or getattr(kind, "arity", 1) > 1:
        return (f"{kind.name} joins branches; the autograd LRP reference of L8 reads sequential models (L18 compares "
                "the graph with the explicit LRP reference, K5 with the exact oracle)")
    return ""


def _linear_kind(kind) -> str:
    return "" if kind.role == "linear" else f"{kind.name} is not a linear map ({kind.role}): it has no transpose " \
                                            "of its own"


# -- the registry -------------------------------------------------------------------------------------
_LOCK = threading.Lock()
_LAWS: dict[str, Law] = {}


def register(law: Law, *, replace_existing: bool = False) -> Law:
    """Add ``law`` to the catalogue (after the others); a key already taken raises
    ValueError unless ``replace_existing``."""
    if not isinstance(law, Law):
        raise TypeError(f"expected a catalogue.Law, got {type(law).__name__}")
    if not isinstance(law.key, str) or not law.key.strip() or law.key != law.key.strip().upper():
        raise ValueError(f"a law key is upper case without spaces, such as 'L19'; got {law.key!r}")
    for c in law.checks:
        if not callable(c.function) or not callable(c.draw):
            raise TypeError(f"{law.key} {c.name}: a check's function and draw must be callable")
    with _LOCK:
        if law.key in _LAWS and not replace_existing:
            raise ValueError(f"the catalogue already has {law.key} ({_LAWS[law.key].title}); choose another key "
                             "or pass replace_existing=True")
        _LAWS[law.key] = law
    return law


def unregister(key: str) -> Law:
    """Remove the law ``key`` (KeyError naming the keys when there is none)."""
    with _LOCK:
        if key not in _LAWS:
            raise KeyError(f"no law {key!r} in the catalogue; the laws are {', '.join(_LAWS)}")
        return _LAWS.pop(key)


def laws() -> tuple[Law, ...]:
    """Every law, in order."""
    with _LOCK:
        return tuple(_LAWS.values())


def law(key: str) -> Law:
    """The law ``key`` (case does not matter)."""
    with _LOCK:
        found = _LAWS.get(str(key).strip().upper())
    if found is None:
        raise KeyError(f"no law {key!r}; the laws are {', '.join(keys())}")
    return found


def keys(*, column: bool | None = None) -> list[str]:
    """The law keys in order (``column=True``: those ``nrm-verify check`` shows)."""
    return [lw.key for lw in laws() if column is None or lw.column == column]


def titles() -> dict[str, str]:
    return {lw.key: lw.title for lw in laws()}


def checks(subject: str | None = None) -> list[Check]:
    """Every check, in order; ``subject`` = "rule", "preset" or "kind" keeps those about it."""
    out = [c for lw in laws() for c in lw.checks]
    if subject is None:
        return out
    if subject not in ("rule", "preset", "kind"):
        raise ValueError(f"subject must be 'rule', 'preset' or 'kind', got {subject!r}")
    return [c for c in out if getattr(c, subject) is not None]


def symbolic_laws() -> list[Law]:
    """The laws with a symbolic form, in order."""
    return [lw for lw in laws() if lw.symbolic is not None]


class _Checks(tuple):
    """A live view of the rule checks (``CHECKS``): it reads the catalogue at each use, so
    that registered laws appear."""

    def __new__(cls):
        return super().__new__(cls)

    def __iter__(self) -> Iterator[Check]:
        return iter(checks("rule"))

    def __len__(self) -> int:
        return len(checks("rule"))

    def __getitem__(self, i):
        return checks("rule")[i]

    def __repr__(self) -> str:
        return f"CHECKS({', '.join(f'{c.law} {c.name}' for c in self)})"


CHECKS = _Checks()
"""Every check of a rule, read from the catalogue at each use."""


# -- the built-in laws ---------------------------------------------------------------------------------
def _symbolic(name: str) -> str:
    return f"nrm_verify.symbolic.laws:{name}"


BUILTIN: tuple[Law, ...] = (
    Law("L1", "normalization",
        r"\mu(\Omega)=1,\ \sum_{j\in\bar V_l} m_l(j)=1,\ \sum_{j\in\bar V_{l-1}} q_l(j\mid k)=1",
        (Check("normalization", measure.normalization, draws.measure_only, kind=always),
         Check("column-stochastic kernels", measure.column_sums, draws.measure_only, kind=always)),
        _symbolic("normalization"), "L01_normalization.py"),
    Law("L2", "additivity", r"\mu(A\cup B)=\mu(A)+\mu(B)-\mu(A\cap B),\ \mu(A^c)=1-\mu(A)",
        (Check("additivity", measure.additivity, draws.two_events_or_atoms, kind=always),),
        _symbolic("additivity"), "L02_additivity.py"),
    Law("L3", "marginalization", r"\sum_{j\in\bar V_l}\mu(X_l=j,E)=\mu(E)",
        (Check("marginalization", measure.marginalization, draws.layer_and_event, kind=always),
         Check("joint marginals", measure.joint_marginals, draws.two_layers, kind=always)),
        _symbolic("marginalization"), "L03_marginalization.py"),
    Law("L4", "chain rule",
        r"\mu(A\cap B)=\mu(A)\,\mu(B\mid A),\ \mu(\omega)=m_L(n_L)\prod_l\mu(X_{l-1}=n_{l-1}\mid X_l=n_l)",
        (Check("chain rule", measure.chain_rule, draws.walk, kind=always),
         Check("multiplicative law", measure.multiplicative, draws.two_events, kind=always)),
        _symbolic("chain_rule"), "L04_chain_rule.py"),
    Law("L5", "Bayes", r"\mu(A\mid B)\,\mu(B)=\mu(B\mid A)\,\mu(A)",
        (Check("Bayes", measure.bayes, draws.two_events, kind=always),),
        _symbolic("bayes"), "L05_bayes.py"),
    Law("L6", "total measure", r"\mu(B)=\sum_i\mu(B\cap A_i)",
        (Check("total measure", measure.total_measure, draws.event_and_layer, kind=always),),
        _symbolic("total_measure"), "L06_total_measure.py"),
    Law("L7", "Markov", r"\mu(X_{l-1}\in A\mid X_l=k,E_{>l})=\sum_{j\in A}q_l(j\mid k)",
        (Check("Markov", measure.markov, draws.markov_arguments, kind=always),),
        _symbolic("markov"), "L07_markov.py"),
    Law("L8", "LRP equivalence", r"m_l(j)=R^{(l)}_j/f_c(x),\ m_l(\bot_l)=1-\sum_j R^{(l)}_j/f_c(x)",
        (Check("LRP equivalence", measure.lrp_equivalence, draws.measure_only, kind=_chain_kind),)),
    Law("L9", "LRP-0 = gradient × input", r"m_l(j)=a_j\,\partial f/\partial a_j\,/\,f",
        (Check("LRP-0 = gradient × input", limits.gradient_x_input, draws.model_input_target, _lrp0, _single_rule,
               _gradient_kind),
         Check("LRP-0 = gradient × input, σ, gates and ratios detached", limits.gradient_x_input_detached,
               draws.model_input_target, _lrp0, _single_rule, _detached_gradient_kind)),
        _symbolic("gradient_times_input"), "L09_gradient_times_input.py"),
    Law("L10", "ε → 0 gives LRP-0", r"\lim_{\varepsilon\to0^+}q^{\varepsilon}=q^{0}",
        (Check("ε → 0 gives LRP-0", limits.epsilon_limit, draws.model_input_target, _only(Epsilon), _single_rule),),
        _symbolic("epsilon_limit"), "L10_epsilon_limit.py"),
    Law("L11", "γ = 0 gives LRP-0", r"q^{\gamma}\big|_{\gamma=0}=q^{0}",
        (Check("γ = 0 gives LRP-0", limits.gamma_zero, draws.model_input_target, _only(Gamma), _single_rule),),
        _symbolic("gamma_zero"), "L11_gamma_zero.py"),
    Law("L12", "γ → ∞ gives z⁺", r"\lim_{\gamma\to\infty}q^{\gamma}=q^{z^+}",
        (Check("γ → ∞ gives z⁺", limits.gamma_limit, draws.model_input_target, _only(Gamma), _single_rule),),
        _symbolic("gamma_infinity"), "L12_gamma_infinity.py"),
    Law("L13", "α1β0 = z⁺", r"q^{\alpha\beta}\big|_{\alpha=1,\beta=0}=q^{z^+}",
        (Check("α1β0 = z⁺", limits.alpha1_beta0, draws.model_input_target, _only(AlphaBeta, ZPlus),
               _single_rule),),
        _symbolic("alphabeta_zplus"), "L13_alphabeta_zplus.py"),
    Law("L14", "input independence / z^B ≥ 0", r"\partial q^{\flat,w^2}/\partial x=0,\ q^{z^B}\ge0",
        (Check("input independence", limits.input_independence, draws.second_input, _input_independent,
               _single_rule),
         Check("z^B non-negative", limits.zbox_nonnegative, draws.measure_only, _only(ZBox), _box_first)),
        _symbolic("input_independence"), "L14_input_independence.py"),
    Law("L15", "GNN-LRP walk relevance", r"R(W)=f_c(x)\,\mu(W)\ \text{for a walk or set of walks }W",
        (Check("GNN-LRP walk relevance", walks.walk_relevance, draws.walks, _fixed_kernel),)),
    Law("L16", "CRP conditional heatmaps",
        r"R^{\mathrm{CRP}}_i(X_l\in C)=f_c(x)\,\mu(X_0=i,X_l\in C),\ R_l(C)=f_c(x)\,m_l(C)",
        (Check("CRP conditional heatmap", walks.crp_conditional, draws.condition, _fixed_kernel),)),
    Law("L17", "channel heatmaps add up", r"\sum_c\mu(X_0=i,X_l\in c)+\mu(X_0=i,X_l=\bot_l)=m_0(i)",
        (Check("channel-conditional heatmaps add up", measure.channel_sum, draws.channel_layers),)),
    Law("L18", "modularity",
        r"\sum_{c\to u}Q_{c\to u}\,m_c=m_u,\ m_l=R^{\mathrm{explicit}}_l/f_c(x)\ \text{on the original graph}",
        (Check("modularity", graph.modularity, draws.measure_model_input_target_rules, _explicit_reference,
               kind=always),)),
    Law("INV", "batch invariance", r"\mu_{x_{1..B}}=(\mu_{x_1},\dots,\mu_{x_B})",
        (Check("batch invariance", invariance.batch_invariance, draws.model_input_target_rules, kind=always,
               batch=(2, 3)),)),
    Law("K2", "layer maps reproduce the module", r"W a+b=z^{\mathrm{recorded}},\ \sigma(z)=a^{\mathrm{recorded}}",
        (Check("layer maps reproduce the module", kinds.layer_maps, draws.measure_only, None, None, always),),
        column=False),
    Law("K3", "transposes are adjoints", r"\langle g, W v\rangle=\langle W^\top g, v\rangle",
        (Check("transposes are adjoints", kinds.layer_transposes, draws.measure_only, None, None, _linear_kind),),
        column=False),
    Law("K5", "exact oracle", r"m_l=m_l^{\mathrm{exact}}\ \text{(rational walk enumeration)}",
        (Check("exact oracle", kinds.exact_oracle, draws.model_input_target_rules, None, None, always),),
        column=False),
)
"""The laws of NRM-SPEC §4 (L1 … L18), batch invariance, and the layer kinds' laws."""

for _law in BUILTIN:
    register(_law)

__all__ = ["Law", "Check", "register", "unregister", "laws", "law", "keys", "titles", "checks", "symbolic_laws",
           "CHECKS", "BUILTIN", "always"]
