"""Batch invariance (NRM-SPEC §4, "Invariances"): explaining a batch gives, for each sample,
what explaining that sample alone gives — marginals, absorbers, events, marginals within
events, joints, conditionals, walks — with one target per sample or a start vector."""

from __future__ import annotations

import random

import nets
import pytest
import torch

import nrm

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest

CONFIGS = ["zero", "epsilon", "gamma", "alphabeta21", "zbox-first", "EpsilonGammaFlat", "mixed"]
SEEDS = range(5)


def rules_for(config, case, seed):
    if config == "mixed":
        return nets.mixed_rules(case, seed)
    return {**nets.RULES, **nets.PRESETS}[config]()


def batch_case(seed: int, batch: int = 3):
    """A network with a batch whose samples have different targets, |f_c| ≥ 0.05 each."""
    for attempt in range(50):
        s = seed + 100_003 * attempt
        case = nets.BUILDERS[seed % len(nets.BUILDERS)](s, batch=batch)
        with torch.no_grad():
            out = case.model(case.x)
        targets = [(i + seed) % out.shape[1] for i in range(batch)]
        if all(abs(float(out[i, c])) >= 0.05 for i, c in enumerate(targets)):
            return case, targets
    raise RuntimeError(f"no batch case for seed {seed}")


def same(batched: torch.Tensor, single: torch.Tensor, what: str):
    scale = max(1.0, float(single.abs().max()) if single.numel() else 1.0)
    assert batched.shape == single.shape, what
    assert torch.allclose(batched, single, rtol=0, atol=1e-10 * scale), f"{what}\n{batched}\n{single}"


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", SEEDS)
def test_batch_equals_single_samples(config, seed):
    case, targets = batch_case(seed)
    rules = rules_for(config, case, seed)
    mb = nrm.explain(case.model, case.x, target=targets, rules=rules)
    singles = [nrm.explain(case.model, case.x[i:i + 1], target=c, rules=rules) for i, c in enumerate(targets)]
    rng = random.Random(seed)
    names = {n: (mb.layer_index(n), mb.layer_shape(n)) for n in mb.layers}
    events = [nets.random_cylinder(rng, names) for _ in range(4)]
    events += [events[0] | events[1], ~events[2], events[3] - events[0]]
    within = [nets.random_cylinder(rng, names, max_layers=2) for _ in range(3)]
    la, lb = rng.sample(sorted({l for l, _ in names.values()}), 2)
    name_a = next(n for n in names if names[n][0] == la)
    name_b = next(n for n in names if names[n][0] == lb)
    batched = {
        "f": mb.f,
        "measure": mb.measure(events).T,  # (B, K)
        "joint-channel": mb.joint(name_a, name_b),
        "joint-neuron": mb.joint(name_a, name_b, by="neuron"),
        "walk": mb.walk([0] * (mb.depth + 1)),
    }
    for name in names:
        batched[f"marginal {name}"] = mb.marginal(name)
        batched[f"absorbed {name}"] = mb.absorbed(name)
        batched[f"activations {name}"] = mb.activations(name)
        batched[f"within {name}"] = mb.marginal(name, within=within).transpose(0, 1)  # (B, K, *shape)
    for i, m in enumerate(singles):
        single = {
            "f": m.f,
            "measure": m.measure(events).T,
            "joint-channel": m.joint(name_a, name_b),
            "joint-neuron": m.joint(name_a, name_b, by="neuron"),
            "walk": m.walk([0] * (m.depth + 1)),
        }
        for name in names:
            single[f"marginal {name}"] = m.marginal(name)
            single[f"absorbed {name}"] = m.absorbed(name)
            single[f"activations {name}"] = m.activations(name)
            single[f"within {name}"] = m.marginal(name, within=within).transpose(0, 1)
        for key, value in single.items():
            same(batched[key][i:i + 1], value, f"{case} {config} sample {i}: {key}")

    # conditionals: the batch raises NullEventError exactly when some sample's event is null
    for given in [nrm.At("input"), events[0], nrm.At("output", index=[targets[0]])]:
        nulls = []
        for m in singles:
            try:
                nulls.append(m.conditional(events[1], given=given))
            except nrm.NullEventError:
                nulls.append(None)
        if any(v is None for v in nulls):
            with pytest.raises(nrm.NullEventError):
                mb.conditional(events[1], given=given)
        else:
            same(mb.conditional(events[1], given=given), torch.cat(nulls), f"{case} conditional given {given!r}")


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_with_start_vectors(seed):
    case, _ = batch_case(seed)
    with torch.no_grad():
        out = case.model(case.x)
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(out.shape, generator=g, dtype=torch.float64) + 0.1  # Σ R > 0 per sample
    rules = nrm.presets.EpsilonGammaFlat(0.01)
    mb = nrm.explain(case.model, case.x, start=start, rules=rules)
    for i in range(case.x.shape[0]):
        m = nrm.explain(case.model, case.x[i:i + 1], start=start[i:i + 1], rules=rules)
        same(mb.f[i:i + 1], m.f, "f = Σ R")
        for name in mb.layers:
            same(mb.marginal(name)[i:i + 1], m.marginal(name), f"{case} start vector: marginal {name}")
            same(mb.absorbed(name)[i:i + 1], m.absorbed(name), f"{case} start vector: absorbed {name}")


def test_a_sample_does_not_depend_on_its_batch_neighbours():
    """The same sample explained next to different neighbours gives the same numbers."""
    case, targets = batch_case(1, batch=4)
    a = nrm.explain(case.model, case.x[:2], target=targets[:2])
    b = nrm.explain(case.model, torch.cat([case.x[:1], case.x[2:]]), target=[targets[0]] + targets[2:])
    for name in a.layers:
        same(a.marginal(name)[:1], b.marginal(name)[:1], f"neighbours: {name}")
