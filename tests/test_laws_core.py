"""Laws L1–L5 of NRM-SPEC §4 on the float64 engine, on seeded random tiny networks.

Each law is a small plain function below (a law library comes later). Tolerance: 1e-9
relative to the case's scale max(1, Σ_ω |μ(ω)|) (from the exact oracle, which also redraws
cases near a float discontinuity). Conditionals are only formed on events whose measure is
at least 1e-3 of that scale; an event of exactly zero measure (by the oracle) must make the
engine raise NullEventError instead.
"""

from __future__ import annotations

import random

import pytest
import torch
from nets import PRESETS, RULES, exact_case, mixed_rules, random_atom, random_cylinder

import nrm

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest

CONFIGS = ["zero", "epsilon", "epsilon-renormalize", "gamma", "alphabeta21", "wsquare-bias", "flat", "zbox-first",
           "EpsilonGammaFlat", "mixed"]
SEEDS = range(8)


def rules_for(config):
    if config == "mixed":
        return mixed_rules
    factory = {**RULES, **PRESETS}[config]
    return lambda case, seed: factory()


def scalar(t) -> float:
    return float(t.reshape(-1)[0])


# -- the laws -------------------------------------------------------------------------------


def law_normalization(m, names, tol):
    """L1: μ(Ω) = 1; Σ_{j∈V̄_l} m_l(j) = 1 at every layer; Σ_{j∈V_l} m_l(j) = 1 − m_l(⊥_l)."""
    assert abs(scalar(m(nrm.OMEGA)) - 1) <= tol
    for name in names:
        real, bot = m.marginal(name)[0].sum(), m.absorbed(name)[0]
        assert abs(float(real + bot) - 1) <= tol, f"L1 at {name!r}: {float(real + bot)}"
        assert abs(float(real) - (1 - float(bot))) <= tol
        assert abs(scalar(m(nrm.At(name, absorber=True))) - 1) <= tol


def law_additivity(m, A, B, tol):
    """L2: μ(A ∪ B) = μ(A) + μ(B) − μ(A ∩ B), μ(Aᶜ) = 1 − μ(A), μ(A − B) = μ(A) − μ(A ∩ B)."""
    a, b, ab, union, comp, diff = (scalar(v) for v in m.measure([A, B, A & B, A | B, ~A, A - B]))
    assert abs(union - (a + b - ab)) <= tol, "L2 inclusion–exclusion"
    assert abs(comp - (1 - a)) <= tol, "L2 complement"
    assert abs(diff - (a - ab)) <= tol, "L2 difference"


def law_set_is_sum_of_marginal(m, name, mask, absorber, tol):
    """L2: μ(X_l ∈ S) = Σ_{j∈S} m_l(j) (+ m_l(⊥) when ⊥ ∈ S)."""
    expected = float(m.marginal(name)[0][mask].sum())
    if absorber:
        expected += float(m.absorbed(name)[0])
    assert abs(scalar(m(nrm.At(name, mask=mask, absorber=absorber))) - expected) <= tol, "L2 μ(X_l ∈ S) = Σ_S m_l"


def law_marginalization(m, name, E, tol):
    """L3: Σ_{j∈V̄_l} μ(X_l = j, E) = μ(E) for E not constraining l."""
    total = float(m.marginal(name, within=E)[0].sum() + m.absorbed(name, within=E)[0])
    assert abs(total - scalar(m(E))) <= tol, f"L3 at {name!r} within {E!r}"


def law_joint_sums(m, lower, upper, by, tol):
    """L3: row sums of a joint give the lower layer's marginal (⊥ above implies ⊥ below);
    column sums give the upper layer's marginal less what its groups send to ⊥ below."""
    J = m.joint(lower, upper, by=by)[0]
    n_low = J.shape[0]
    low = m.marginal(lower)[0].reshape(n_low, -1).sum(1)
    assert torch.allclose(J.sum(1), low, rtol=0, atol=tol), "L3 joint row sums"
    n_up = J.shape[1]
    up = m.marginal(upper)[0].reshape(n_up, -1).sum(1)
    key = "channels" if by == "channel" else "index"
    leaked = m.absorbed(lower, within=[nrm.At(upper, **{key: [k]}) for k in range(n_up)])[:, 0]
    assert torch.allclose(J.sum(0) + leaked, up, rtol=0, atol=tol), "L3 joint column sums"


def law_chain_rule(m, A, B, tol):
    """L4: μ(A ∩ B) = μ(A) μ(B | A)."""
    assert abs(scalar(m(A & B)) - scalar(m(A)) * scalar(m.conditional(B, given=A))) <= tol, "L4"


def law_walk_chain_rule(m, path, names, tol):
    """L4: μ(n_0, …, n_L) = m_L(n_L) Π_l μ(X_{l−1} = n_{l−1} | X_l = n_l)."""
    def at(l):
        n = path[l]
        return nrm.At(names[l], index=[], absorber=True) if n is None else nrm.At(names[l], index=[n])

    value = scalar(m(at(len(path) - 1)))
    for l in range(len(path) - 1, 0, -1):
        value *= scalar(m.conditional(at(l - 1), given=at(l)))
    assert abs(scalar(m.walk(list(path))) - value) <= tol, f"L4 walk {path}"


def law_bayes(m, A, B, tol):
    """L5: μ(A | B) μ(B) = μ(B | A) μ(A)."""
    left = scalar(m.conditional(A, given=B)) * scalar(m(B))
    right = scalar(m.conditional(B, given=A)) * scalar(m(A))
    assert abs(left - right) <= tol, "L5"


# -- the cases ------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", SEEDS)
def test_laws(config, seed):
    ec = exact_case(5000 + 1000 * CONFIGS.index(config) + seed, rules_for(config))
    m, mu, tol = ec.measure, ec.exact, 1e-9 * ec.scale
    names = ec.network.names
    rng = random.Random(seed)
    law_normalization(m, names, tol)

    cylinders = [random_cylinder(rng, names) for _ in range(6)]
    for A, B in zip(cylinders[::2], cylinders[1::2]):
        law_additivity(m, A, B, tol)
    for name in rng.sample(sorted(names), min(3, len(names))):
        mask = torch.tensor([rng.random() < 0.5 for _ in range(m.marginal(name)[0].numel())])
        law_set_is_sum_of_marginal(m, name, mask.reshape(names[name][1]), rng.random() < 0.5, tol)

    by_layer: dict[int, list[str]] = {}
    for name, (l, _) in names.items():
        by_layer.setdefault(l, []).append(name)
    for name in rng.sample(sorted(names), min(3, len(names))):
        l = names[name][0]
        others = [n for n in names if names[n][0] != l]
        E = nrm.OMEGA
        for other in rng.sample(others, min(2, len(others))):
            E = E & random_atom(rng, other, names[other][1])
        law_marginalization(m, name, E, tol)
    layers = sorted(by_layer)
    lower, upper = sorted(rng.sample(layers, 2))
    for by in ("channel", "neuron"):
        law_joint_sums(m, rng.choice(by_layer[lower]), rng.choice(by_layer[upper]), by, tol)

    # conditionals: only on events of sizeable measure; exactly null ones must raise
    sizeable = [ev for ev in cylinders if abs(mu(ev)) >= 1e-3 * ec.scale]
    for ev in cylinders:
        if mu(ev) == 0:
            with pytest.raises(nrm.NullEventError):
                m.conditional(nrm.OMEGA, given=ev)
    for A, B in zip(sizeable, sizeable[1:]):
        law_chain_rule(m, A, B, tol)
        law_bayes(m, A, B, tol)
    canonical = [by_layer[l][0] for l in layers]
    checked = 0
    for path, _ in sorted(mu.walks(), key=lambda w: -abs(w[1]))[:8]:
        steps = [mu.marginal(canonical[l]).reshape(-1)[n] if n is not None else mu.absorbed(canonical[l])
                 for l, n in enumerate(path)]
        if all(abs(s) >= 1e-3 * ec.scale for s in steps[1:]):
            law_walk_chain_rule(m, path, canonical, tol)
            checked += 1
    assert checked + len(sizeable) > 0, f"{ec}: no conditional could be formed"
