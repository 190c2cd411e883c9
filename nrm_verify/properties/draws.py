"""How a law check's arguments are drawn from a case: events, layers, neurons, walks, a
second input. Each draw is ``draw(data, case, ctx) -> tuple | Arguments``: the positional
arguments of the law function, with the placeholders of :mod:`~nrm_verify.properties.calls`
for the case's own values (``data`` is hypothesis's ``st.data()``, ``case`` a
:class:`~nrm_verify.properties.strategies.Case`, ``ctx`` what the validator knows about the
subject: ``rule``, ``input_kind``, ``low``, ``high``). The law catalogue
(:mod:`nrm_verify.laws.catalogue`) pairs each draw with its law function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import strategies as st

from nrm.events import OMEGA
from nrm_verify.properties import strategies as S
from nrm_verify.properties.calls import MODEL, RULES, TARGET, M, Sym, X


@dataclass
class Arguments:
    """A draw's result when the call needs values defined before it (``extra``, e.g. a
    second input ``x2``) or keyword arguments."""

    args: tuple
    extra: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)


def measure_only(data, case, ctx) -> tuple:
    """``(m,)``: laws of the whole measure (L1, L8, z^B ≥ 0, K2, K3)."""
    return (M,)


def model_input_target(data, case, ctx) -> tuple:
    """``(model, x, target)``: laws relating two rules on the same case (L9 – L13)."""
    return (MODEL, X, TARGET)


def model_input_target_rules(data, case, ctx) -> tuple:
    """``(model, x, target, rules)``: laws that rebuild the case (batch invariance, K5)."""
    return (MODEL, X, TARGET, RULES)


def measure_model_input_target_rules(data, case, ctx) -> tuple:
    """``(m, model, x, target, rules)``: the measure beside an independent computation (L18)."""
    return (M, MODEL, X, TARGET, RULES)


def event(data, case, layers=None):
    """A cylinder event, or unions, intersections, complements and differences of them."""
    return data.draw(S.events(case.network, layers), label="event")


def event_or_atom(data, case):
    return data.draw(st.one_of(S.atoms(case.network), S.events(case.network)), label="event")


def two_events_or_atoms(data, case, ctx) -> tuple:
    """L2: μ(A ∪ B) + μ(A ∩ B) = μ(A) + μ(B) for two drawn events."""
    return (M, event_or_atom(data, case), event_or_atom(data, case))


def two_events(data, case, ctx) -> tuple:
    """L4, L5: two drawn events."""
    return (M, event(data, case), event(data, case))


def layer_and_event(data, case, ctx) -> tuple:
    """L3: a layer l and an event E not constraining l (Ω half the time)."""
    names = case.network.canonical()
    layer = data.draw(st.sampled_from(names), label="layer")
    table = case.network.layers()
    index = table[layer][0]
    others = [n for n, (i, _) in table.items() if i != index]
    e = event(data, case, others) if others and data.draw(st.booleans(), label="with event") else OMEGA
    return (M, layer, e)


def two_layers(data, case, ctx) -> tuple:
    """L3 (joint marginals): two distinct layers."""
    names = case.network.canonical()
    la, lb = data.draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True), label="layers")
    return (M, la, lb)


def walk(data, case, ctx) -> tuple:
    """L4 (chain rule): one walk drawn along non-zero kernel entries."""
    return (M, data.draw(S.walks(case.measure()), label="walk"))


def event_and_layer(data, case, ctx) -> tuple:
    """L6: an event B and a layer whose neurons partition Ω."""
    names = case.network.canonical()
    return (M, event(data, case), data.draw(st.sampled_from(names), label="layer"))


MARKOV_NEURONS = 16


def markov_arguments(data, case, ctx) -> tuple:
    """L7: a layer l ≥ 1, every neuron of it carrying mass (one of them when more than
    :data:`MARKOV_NEURONS` do), a set A of neurons of layer l − 1,
    and an event above l (Ω a quarter of the time)."""
    names = case.network.canonical()
    table = case.network.layers()
    l = data.draw(st.integers(1, len(names) - 1), label="layer index")
    n = math.prod(table[names[l]][1])
    below = math.prod(table[names[l - 1]][1])
    marg = case.measure().marginal(names[l])[0].reshape(-1)
    carrying = [i for i in range(n) if float(marg[i]) != 0] or list(range(n))
    if len(carrying) <= MARKOV_NEURONS:
        k = carrying  # every neuron carrying mass: a rule that reads its relevance differs at some
    else:
        k = data.draw(st.sampled_from(carrying), label="neuron")
    lower = data.draw(st.lists(st.integers(0, below - 1), min_size=1, max_size=below, unique=True), label="lower")
    above = [name for name, (i, _) in table.items() if i > l]
    e = OMEGA
    if above and data.draw(st.integers(0, 3), label="with event") > 0:
        e = data.draw(S.cylinders(case.network, above), label="event above")
    return (M, names[l], k, sorted(lower), e)


def channel_layers(data, case, ctx) -> tuple:
    """L17: a conditioning layer l ≥ 1 and a heatmap layer below it."""
    names = case.network.canonical()
    l = data.draw(st.integers(1, len(names) - 1), label="layer index")
    t = data.draw(st.integers(0, l - 1), label="heatmap layer")
    return (M, names[l], names[t])


def second_input(data, case, ctx) -> Arguments:
    """L14: a second input x2 of the same domain, and the rule under test."""
    x2 = data.draw(S.inputs(tuple(case.x.shape[1:]), ctx.input_kind, low=ctx.low, high=ctx.high,
                            batch=(case.x.shape[0], case.x.shape[0])), label="second input").x
    return Arguments((MODEL, X, Sym("x2"), TARGET, ctx.rule), {"x2": x2})


def walks(data, case, ctx) -> tuple:
    """L15: a single walk drawn along non-zero kernel entries, or a cylinder event and its
    unions, intersections, complements and differences (sets of walks)."""
    if data.draw(st.booleans(), label="single walk"):
        chosen = data.draw(S.walks(case.measure()), label="walk")
    else:
        chosen = data.draw(S.events(case.network), label="walks")
    return (MODEL, X, TARGET, chosen, RULES)


def condition(data, case, ctx) -> tuple:
    """L16: a condition {layer: channels} on a layer above the input (channels, or neurons of
    a layer without a channel dimension)."""
    table = case.network.layers()
    names = [n for n, (l, _) in table.items() if l >= 1]
    layer = data.draw(st.sampled_from(sorted(names)), label="layer")
    shape = table[layer][1]
    n = shape[0] if shape else 1
    channels = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True), label="channels")
    return (M, layer, sorted(channels))


__all__ = ["Arguments", "measure_only", "model_input_target", "model_input_target_rules",
           "measure_model_input_target_rules", "two_events_or_atoms", "two_events", "layer_and_event", "two_layers",
           "walk", "event_and_layer", "markov_arguments", "channel_layers", "second_input", "walks", "condition",
           "event", "event_or_atom"]
