"""Every law of NRM-SPEC §4 for every built-in rule and preset, on generated networks,
through :mod:`nrm_verify.laws` (hypothesis, the ``ci`` profile in CI).

One test per rule or preset draws a case (network, input, target, events) and checks the
laws of the measure on it — L1 (normalization and column-stochastic kernels), L2, L3
(marginalization and joint marginals), L4 (chain rule and multiplicative law), L5, L6, L7,
L8 (against standard LRP computed with autograd), L15 (a walk against GNN-LRP's nested
masking, :mod:`nrm_verify.references.gnnlrp`), L16 (a CRP condition against masked LRP), L17 and
batch invariance — each law's own arguments drawn from the case. CPU/CUDA invariance is
in ``tests/test_device_invariance.py``; walk sets and general events for L15 in
``tests/test_gnnlrp.py``. The relations between rules (L9–L14) get one test each
for the rules they concern. Laws report "not applicable" (holds is None) where their
preconditions fail; a test asserts that no law is violated, and that the laws did apply
on a share of the cases (so that a test cannot pass by never checking anything).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

import nrm
from nrm_verify import laws
from nrm_verify.properties import strategies as S

RULES = ("zero", "epsilon", "gamma", "zplus", "alphabeta", "wsquare", "flat", "zbox")
PRESETS = tuple(nrm.presets.PRESETS)
NONNEGATIVE = ("gamma", "zplus")  # rules whose assumptions need a ≥ 0: ReLU networks, non-negative inputs


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add start-up cost


def _examples(fraction: float = 0.5) -> settings:
    """A share of the profile's examples (the profile in force sets the scale)."""
    current = settings.default
    return settings(current, max_examples=max(4, int(current.max_examples * fraction)))


def _case_strategy(config: str, batch=(1, 2)):
    if config in PRESETS:
        rules = S.presets([config], low=-2.0, high=2.0)
        return S.cases(S.networks(), batch=batch, rules=lambda net: rules), config
    if config == "zbox":
        low, high = -1.0, 1.0
        first = S.rules(["zbox"], low=low, high=high)
        others = S.rules(["epsilon", "zero"])

        def box_first(net):
            rest = net.linear_layers()[1:]
            return st.builds(lambda f, o: {nrm.FIRST: f, **{n: o for n in rest}}, first, others)

        return S.cases(S.networks(), input_kind="box", low=low, high=high, batch=batch, rules=box_first), config
    rule = S.rules([config])
    if config in NONNEGATIVE:
        return S.cases(S.networks(activations=("relu",)), input_kind="nonnegative", batch=batch,
                       rules=lambda net: rule), config
    return S.cases(S.networks(), batch=batch, rules=lambda net: rule), config


def _general_laws(data, case: S.Case) -> list[laws.LawResult]:
    """L1–L8, L17 and batch invariance on one case, with drawn arguments."""
    m = case.measure()
    net = case.network
    names = net.canonical()
    table = net.layers()
    ev = lambda: data.draw(S.events(net), label="event")  # noqa: E731
    a, b = ev(), data.draw(st.one_of(S.atoms(net), S.events(net)), label="event")
    out = [laws.normalization(m), laws.column_sums(m), laws.additivity(m, a, b), laws.multiplicative(m, a, b),
           laws.bayes(m, a, b), laws.lrp_equivalence(m)]
    layer = data.draw(st.sampled_from(names), label="layer")
    l = table[layer][0]
    others = [n for n, (i, _) in table.items() if i != l]
    out.append(laws.marginalization(m, layer, data.draw(S.events(net, others), label="E") if others else nrm.OMEGA))
    out.append(laws.total_measure(m, ev(), layer))
    la, lb = data.draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True), label="joint")
    out.append(laws.joint_marginals(m, la, lb))
    out.append(laws.chain_rule(m, data.draw(S.walks(m), label="walk")))
    upper = data.draw(st.integers(1, len(names) - 1), label="markov layer")
    marg = m.marginal(names[upper])[0].reshape(-1)
    carrying = [i for i in range(marg.numel()) if float(marg[i]) != 0] or [0]
    k = data.draw(st.sampled_from(carrying), label="neuron")
    below = math.prod(table[names[upper - 1]][1])
    lower = data.draw(st.lists(st.integers(0, below - 1), min_size=1, max_size=below, unique=True), label="A")
    above = [n for n, (i, _) in table.items() if i > upper]
    given_above = data.draw(S.cylinders(net, above), label="E above") if above else nrm.OMEGA
    out.append(laws.markov(m, names[upper], k, sorted(lower), given_above))
    out.append(laws.channel_sum(m, names[upper], names[data.draw(st.integers(0, upper - 1), label="heatmap")]))
    # L15: a single walk along non-zero kernel entries, against GNN-LRP's nested masking
    out.append(laws.walk_relevance(case.model, case.x, case.target, data.draw(S.walks(m), label="walk"), case.rules))
    # L16: a CRP condition {layer: channels} on any named layer above the input
    crp_layer = data.draw(st.sampled_from(sorted(n for n, (i, _) in table.items() if i >= 1)), label="CRP layer")
    shape = table[crp_layer][1]
    width = shape[0] if shape else 1
    channels = data.draw(st.lists(st.integers(0, width - 1), min_size=1, max_size=width, unique=True), label="CRP")
    out.append(laws.crp_conditional(m, crp_layer, channels))
    if case.x.shape[0] > 1:
        out.append(laws.batch_invariance(case.model, case.x, case.target, case.rules))
    return out


def _check(results: list[laws.LawResult]) -> None:
    for r in results:
        note(str(r))
    bad = [str(r) for r in results if r.holds is False]
    assert not bad, "\n".join(bad)


class _Applied:
    """Counts, per law, the cases on which it applied (and held)."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def add(self, results):
        for r in results:
            self.counts[f"{r.law} {r.name}"] = self.counts.get(f"{r.law} {r.name}", 0) + bool(r.holds)


@pytest.mark.parametrize("config", RULES + PRESETS)
def test_laws_of_the_measure(config):
    strategy, _ = _case_strategy(config)
    applied = _Applied()

    @_examples(0.5)
    @given(case=strategy, data=st.data())
    def run(case, data):
        results = _general_laws(data, case)
        applied.add(results)
        _check(results)

    run()
    # every law was really checked on some case (not "not applicable" every time)
    for law in ("L1 normalization", "L1 column-stochastic kernels", "L2 additivity", "L3 marginalization",
                "L3 joint marginals", "L4 chain rule", "L6 total measure", "L7 Markov", "L8 LRP equivalence",
                "L17 channel-conditional heatmaps add up", "L15 GNN-LRP walk relevance", "L16 CRP conditional heatmap"):
        assert applied.counts.get(law, 0) > 0, f"{law} never applied for {config}: {applied.counts}"
    assert applied.counts.get("L4 multiplicative law", 0) + applied.counts.get("L5 Bayes", 0) > 0, applied.counts


# -- the relations between rules -----------------------------------------------------------------
def _model_cases(activations=("relu", "leaky", "identity"), input_kind="arbitrary"):
    return S.cases(S.networks(activations=activations), input_kind=input_kind, rules=lambda net: nrm.rules.Zero())


def _run_model_law(law, strategy, fraction=0.3, **kwargs):
    outcomes = []

    @_examples(fraction)
    @given(case=strategy)
    def run(case):
        r = law(case.model, case.x, case.target, **kwargs)
        note(str(r))
        outcomes.append(r.holds)
        assert r.holds is not False, str(r)

    run()
    assert any(h is True for h in outcomes), f"{law.__name__} never applied: {outcomes}"


def test_l9_lrp0_is_gradient_times_input():
    _run_model_law(laws.gradient_x_input, _model_cases())


def test_l10_epsilon_to_zero_gives_lrp0():
    _run_model_law(laws.epsilon_limit, _model_cases())


def test_l11_gamma_zero_is_lrp0():
    _run_model_law(laws.gamma_zero, _model_cases())


def test_l12_gamma_to_infinity_gives_zplus():
    _run_model_law(laws.gamma_limit, _model_cases(("relu",), "nonnegative"))


def test_l13_alpha1_beta0_is_zplus():
    _run_model_law(laws.alpha1_beta0, _model_cases(("relu",), "nonnegative"))


@pytest.mark.parametrize("rule", [nrm.rules.Flat(), nrm.rules.WSquare(), nrm.rules.WSquare(bias=True)], ids=repr)
def test_l14_flat_and_wsquare_do_not_read_the_input(rule):
    outcomes = []

    @_examples(0.3)
    @given(case=_model_cases(), data=st.data())
    def run(case, data):
        x2 = data.draw(S.inputs(tuple(case.x.shape[1:]), batch=(case.x.shape[0], case.x.shape[0])), label="x2").x
        r = laws.input_independence(case.model, case.x, x2, case.target, rule)
        note(str(r))
        outcomes.append(r.holds)
        assert r.holds is not False, str(r)

    run()
    assert any(outcomes)


def test_l14_zbox_kernels_are_nonnegative_in_the_box():
    strategy, _ = _case_strategy("zbox")
    outcomes = []

    @_examples(0.3)
    @given(case=strategy)
    def run(case):
        r = laws.zbox_nonnegative(case.measure())
        note(str(r))
        outcomes.append(r.holds)
        assert r.holds is not False, str(r)

    run()
    assert any(outcomes)


def test_l14_input_dependent_rules_are_not_applicable():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1)).double().eval()
    x = torch.ones(1, 2, dtype=torch.float64)
    r = laws.input_independence(model, x, 2 * x, 0, nrm.rules.Gamma(0.5))
    assert r.holds is None and "reads the activations" in r.detail
