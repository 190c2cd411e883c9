"""The float64 engine equals both exact oracles (walk enumeration and masked transition
matrices, NRM-SPEC §5) on seeded random tiny MLPs, CNNs and 1-d CNNs, for every rule, its
conventions, mixed per-layer assignments and the presets.

Scale: errors are measured against max(1, Σ_ω |μ(ω)|), the total variation of the signed
measure, which bounds |μ(E)| for every event E and is the size float rounding is relative
to. Cases within 1e-6 (relative) of a float discontinuity — a near-zero denominator or
pre-activation, a near-tie in a max-pool window — or with |f| < 0.05 are redrawn
deterministically (ExactCase.redraws counts them; ``test_redraws_are_rare`` bounds them).
"""

from __future__ import annotations

import functools
import random

import pytest
import torch
from nets import PRESETS, RULES, assert_matches, exact_case, mixed_rules

import nrm
from nrm_verify.references.oracle import METHODS

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest

CONFIGS = {name: (lambda make: lambda case, seed: make())(f) for name, f in {**RULES, **PRESETS}.items()}
CONFIGS["mixed"] = mixed_rules


def zbox_with_tensor_bounds(case, seed):
    """z^B with a box given per input neuron (tensors of one sample's input shape)."""
    g = torch.Generator().manual_seed(seed)
    width = torch.rand(case.x.shape[1:], generator=g, dtype=torch.float64)
    return nrm.RuleMap(nrm.rules.Epsilon(0.1), first=nrm.rules.ZBox(-1.0 - width, 1.0 + width.flip(-1)))


CONFIGS["zbox-tensor-first"] = zbox_with_tensor_bounds
SEEDS = range(12)
CASES = [(config, seed) for config in CONFIGS for seed in SEEDS]


@functools.cache
def case_for(config: str, seed: int):
    # every fourth case starts from a random start vector π = R / ΣR instead of a target
    # the kind of network follows the seed (seed % 5: MLP, CNN, MLP, CNN, 1-d CNN)
    return exact_case(1000 * list(CONFIGS).index(config) + seed, CONFIGS[config], use_start=seed % 4 == 3)


def layer_names(ec):
    return ec.network.names


@pytest.mark.parametrize("config,seed", CASES)
def test_marginals_every_layer(config, seed):
    ec = case_for(config, seed)
    m, mu = ec.measure, ec.exact
    # the engine and the oracle name the same layers with the same shapes
    assert {n: (m.layer_index(n), m.layer_shape(n)) for n in m.layers} == ec.network.names, ec
    assert_matches(m.f, mu.f, abs(float(mu.f)), f"{ec}: f")
    for name in ec.network.names:
        assert_matches(m.activations(name)[0], ec.network.values(name), 1.0, f"{ec}: activations {name}")
        for method in METHODS:
            assert_matches(m.marginal(name)[0], mu.marginal(name, method=method), ec.scale,
                           f"{ec}: marginal {name} ({method})")
            assert_matches(m.absorbed(name)[0], mu.absorbed(name, method=method), ec.scale,
                           f"{ec}: absorbed {name} ({method})")


def random_events(ec, seed):
    """Random cylinders A, B, C, D (1–3 constrained layers each) and their combinations,
    each with the set it stands for as a predicate on walks (checked independently of the
    event algebra)."""
    from nets import random_cylinder

    rng = random.Random(seed)
    names = layer_names(ec)
    A, B, C, D = (random_cylinder(rng, names) for _ in range(4))
    net = ec.network

    def inside(ev):
        return lambda w: net.contains(ev, w) == 1

    a, b, c, d = (inside(e) for e in (A, B, C, D))
    return [
        (A, a), (B, b), (C, c), (D, d),
        (A | B, lambda w: a(w) or b(w)),
        (A & B, lambda w: a(w) and b(w)),
        (~A, lambda w: not a(w)),
        (A - B, lambda w: a(w) and not b(w)),
        ((A | B) & ~C, lambda w: (a(w) or b(w)) and not c(w)),
        (A | B | C | D, lambda w: a(w) or b(w) or c(w) or d(w)),
        (~(C & D) - A, lambda w: not (c(w) and d(w)) and not a(w)),
        (nrm.OMEGA, lambda w: True),
    ]


@pytest.mark.parametrize("config,seed", CASES)
def test_events(config, seed):
    ec = case_for(config, seed)
    m, mu = ec.measure, ec.exact
    events = random_events(ec, seed)
    batched = m.measure([ev for ev, _ in events])  # (K, B), one pass
    for k, (ev, predicate) in enumerate(events):
        exact = mu.measure(ev, method="walks")
        assert exact == mu.measure(ev, method="matrix"), f"{ec}: the two oracles disagree on {ev!r}"
        assert exact == mu.measure_where(predicate), f"{ec}: the event algebra is not the set it names: {ev!r}"
        assert_matches(batched[k, 0], exact, ec.scale, f"{ec}: μ({ev!r}) (batched)")
    for ev, _ in events[:2] + events[4:6]:
        assert_matches(m(ev)[0], mu(ev), ec.scale, f"{ec}: μ({ev!r}) (single)")


@pytest.mark.parametrize("config,seed", CASES)
def test_marginal_within_events(config, seed):
    """μ(X_l = j, E) for E constraining layers above l, below l, at l and on both sides."""
    from nets import random_atom

    ec = case_for(config, seed)
    m, mu, names = ec.measure, ec.exact, layer_names(ec)
    rng = random.Random(seed + 1)
    by_layer: dict[int, list[str]] = {}
    for name, (l, _) in names.items():
        by_layer.setdefault(l, []).append(name)
    depth = ec.network.depth
    for l in sorted({1, depth - 1, rng.randint(0, depth)}):
        name = rng.choice(by_layer[l])

        def atom_at(layers):
            ln = rng.choice(layers)
            n = rng.choice(by_layer[ln])
            return random_atom(rng, n, names[n][1])

        above = [k for k in by_layer if k > l]
        below = [k for k in by_layer if k < l]
        events = []
        if above:
            events.append(atom_at(above))
        if below:
            events.append(atom_at(below))
        if above and below:
            events.append(atom_at(above) & atom_at(below))
            events.append(atom_at(above) | ~atom_at(below))
        events.append(atom_at([l]) & (atom_at(above) if above else nrm.OMEGA))
        stacked = m.marginal(name, within=events)  # (K, B, *shape)
        stacked_bot = m.absorbed(name, within=events)  # (K, B)
        for k, ev in enumerate(events):
            exact = mu.marginal(name, within=ev, method="walks")
            assert (exact == mu.marginal(name, within=ev, method="matrix")).all(), f"{ec}: oracles differ {ev!r}"
            assert_matches(stacked[k, 0], exact, ec.scale, f"{ec}: marginal({name!r}, within={ev!r})")
            assert_matches(stacked_bot[k, 0], mu.absorbed(name, within=ev), ec.scale,
                           f"{ec}: absorbed({name!r}, within={ev!r})")
        ev = events[0]
        assert_matches(m.marginal(name, within=ev)[0], mu.marginal(name, within=ev), ec.scale,
                       f"{ec}: marginal({name!r}, within={ev!r}) (single)")


@pytest.mark.parametrize("config,seed", CASES)
def test_joints_and_walks(config, seed):
    ec = case_for(config, seed)
    m, mu, names = ec.measure, ec.exact, layer_names(ec)
    rng = random.Random(seed + 2)
    pairs = [(a, b) for a in names for b in names if names[a][0] != names[b][0]]
    for a, b in rng.sample(pairs, min(3, len(pairs))):
        for by in ("channel", "neuron"):
            exact = mu.joint(a, b, by=by, method="walks")
            assert (exact == mu.joint(a, b, by=by, method="matrix")).all(), f"{ec}: oracles differ on a joint"
            assert_matches(m.joint(a, b, by=by)[0], exact, ec.scale, f"{ec}: joint({a!r}, {b!r}, by={by!r})")
    walks = mu.walks()
    for path, value in rng.sample(walks, min(4, len(walks))):
        assert value == mu.walk(path) == mu.walk(path, method="matrix")
        assert_matches(m.walk(list(path))[0], value, ec.scale, f"{ec}: walk {path}")
    # a walk of measure zero: through a real input neuron below an absorber
    path = [0] + [None] * ec.network.depth
    assert mu.walk(path) == 0
    assert float(m.walk(path)[0]) == 0.0


ALIAS_CASES = [(config, seed) for config in ("zero", "epsilon", "mixed") for seed in range(4, 60, 5)]


@pytest.mark.parametrize("config,seed", ALIAS_CASES)
def test_same_selector_on_every_name_of_a_layer(config, seed):
    """The same selector through different names of one layer (a Flatten alias sees
    (C·H·W,), the conv (C, H, W): channels=[0] means one neuron there, a channel here),
    all in one batched call, each against the oracle."""
    ec = case_for(config, seed)
    m, mu, names = ec.measure, ec.exact, layer_names(ec)
    events = []
    for name in names:
        events += [nrm.At(name, channels=[0]), nrm.At(name, index=[0], absorber=True),
                   nrm.At("output", index=[ec.target or 0]) & nrm.At(name, channels=[0])]
    got = m.measure(events)
    for k, ev in enumerate(events):
        assert_matches(got[k, 0], mu(ev), ec.scale, f"{ec}: μ({ev!r}) batched with the other names")
    within = m.marginal("input", within=events)
    for k, ev in enumerate(events):
        assert_matches(within[k, 0], mu.marginal("input", within=ev), ec.scale, f"{ec}: marginal within {ev!r}")


def test_redraws_are_rare():
    """Almost every drawn network is used as drawn: redraws (|f| < 0.05 or a float
    near-discontinuity) stay under 10% of the cases."""
    redraws = sum(case_for(config, seed).redraws > 0 for config, seed in CASES)
    assert redraws <= 0.1 * len(CASES), f"{redraws} of {len(CASES)} cases needed a redraw"


def test_every_rule_and_convention_is_covered():
    """The configurations reach every rule class, both leak and both stabilizer-sign
    conventions, and z^B on the layer that reads the input (read from the engine's assignment)."""
    used, first = [], []
    for config, seed in CASES:
        if seed > 1:
            continue
        blocks = case_for(config, seed).measure.network.linear_blocks()
        used += [b.rule for b in blocks]
        first.append(blocks[0].rule)
    assert {type(r).__name__ for r in used} == {"Zero", "Epsilon", "Gamma", "ZPlus", "AlphaBeta", "WSquare", "Flat",
                                                "ZBox"}
    assert {r.leak for r in used} == {"absorb", "renormalize"}
    assert {r.stabilizer_sign for r in used} == {"signed", "unsigned"}
    assert any(isinstance(r, nrm.rules.ZBox) for r in first)
    assert not any(isinstance(r, nrm.rules.ZBox) for r in used if r not in first)
