"""What ``nrm-verify explain`` measures, as plain data (the pictures are in
:mod:`nrm_verify.report.figures`). Every number is a value of one measure μ (NRM-SPEC §3)
of one sample:

* :func:`layer_masses` — per layer Σ_j m_l(j), m_l(⊥_l) (their sum is 1, law L1), and the
  positive and negative parts Σ_j m_l(j)⁺, Σ_j m_l(j)⁻;
* :func:`channel_marginals` — Σ_{j ∈ c} m_l(j) per channel c;
* :func:`flow` — the top channels of several layers and the joint relevance
  μ(X_a ∈ c, X_b ∈ d) of every pair of them between consecutive layers a < b;
* :func:`critical_paths` — the channel sequences (c_1, …, c_n) through the chosen layers
  with the largest |μ(X_{l_1} ∈ c_1, …, X_{l_n} ∈ c_n)|, by beam search;
* :func:`concept_heatmaps` — μ(X_input = i, X_l ∈ c), CRP's conditional heatmaps (L16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

import nrm
from nrm import At


def _quiet(done: int, total: int) -> None:
    """The progress callback that reports nothing (the default)."""
    return None


# -- layers --------------------------------------------------------------------------------
def layer_names(measure: nrm.Measure) -> list[str]:
    """One name per layer V_0 … V_L, in order: "input", then the module that produces
    each layer (the first of its aliases)."""
    first: dict[int, str] = {}
    for name in measure.layers:
        l = measure.layer_index(name)
        if l not in first or first[l] in ("input", "output"):
            first[l] = name
    return [first[l] for l in sorted(first)]


def channel_marginals(measure: nrm.Measure, layer: str, within: nrm.Event | None = None) -> torch.Tensor:
    """Σ_{j ∈ c} μ(X_l = j [, E]) per channel c of sample 0, tensor (C,) (a dense layer's
    neurons are its channels)."""
    m = measure.marginal(layer, within=within)[0]
    return m.reshape(1) if m.dim() == 0 else m.reshape(m.shape[0], -1).sum(1)


def layer_masses(measure: nrm.Measure, tick=_quiet) -> list[dict]:
    """Per layer: ``real`` Σ_j m_l(j), ``absorbed`` m_l(⊥_l), ``total`` (= 1 by L1),
    ``positive`` Σ_j m_l(j)⁺ and ``negative`` Σ_j m_l(j)⁻, for sample 0."""
    rows = []
    names = layer_names(measure)
    every = measure.marginals(absorber=True)  # one backward pass for all layers
    for i, name in enumerate(names):
        if name in every:
            marg, bot = every[name]
            m, absorbed = marg[0].double(), float(bot[0])
        else:
            m, absorbed = measure.marginal(name)[0].double(), float(measure.absorbed(name)[0])
        real = float(m.sum())
        rows.append({"layer": name, "index": measure.layer_index(name), "shape": list(measure.layer_shape(name)),
                     "real": real, "absorbed": absorbed, "total": real + absorbed,
                     "positive": float(m.clamp(min=0).sum()), "negative": float(m.clamp(max=0).sum())})
        tick(i + 1, len(names))
    return rows


def top_channels(scores: torch.Tensor, k: int) -> list[int]:
    """The k channels of largest |score| (ties by index), most relevant first."""
    order = sorted(range(scores.numel()), key=lambda c: (-abs(float(scores[c])), c))
    return order[:k]


# -- the joint of two layers ------------------------------------------------------------------
def joint_summary(matrix: torch.Tensor, layer_a: str, layer_b: str, top: int = 10) -> dict:
    """The channel-by-channel joint J[i, k] = μ(X_a ∈ i, X_b ∈ k): total, row and column sums
    checked against nothing here (law L3 is tested elsewhere), and the ``top`` pairs by |J|."""
    flat = matrix.reshape(-1)
    order = flat.abs().argsort(descending=True)[:top].tolist()
    n_b = matrix.shape[1]
    return {"layers": [layer_a, layer_b], "shape": list(matrix.shape), "total": float(matrix.sum()),
            "top_pairs": [{layer_a: i // n_b, layer_b: i % n_b, "mu": float(flat[i])} for i in order]}


# -- information flow ---------------------------------------------------------------------------
ZERO = 1e-14
"""|μ| at or below this is zero for the flow figure (μ is normalized: its total mass is 1);
events on parallel branches have measure exactly 0."""


@dataclass
class Flow:
    """Nodes (top channels per layer), edges (joint measures of consecutive layers' nodes)
    and critical paths through the chosen layers, lowest layer first; ``notes`` say what
    the figure leaves out (zero edges, zero paths) and why."""

    layers: list[str]
    nodes: dict[str, list[int]]
    marginals: dict[str, dict[int, float]]
    edges: list[dict] = field(default_factory=list)
    paths: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"layers": self.layers,
                "nodes": {l: [{"channel": c, "mu": self.marginals[l][c]} for c in self.nodes[l]] for l in self.layers},
                "edges": self.edges, "paths": self.paths, "notes": self.notes}


def ancestors(measure: nrm.Measure, layer: str) -> set[int]:
    """The indices of the layers that ``layer`` reads, directly or not (on a chain: every
    layer below it)."""
    index = measure.layer_index(layer)
    network = getattr(measure, "network", None)
    if network is None or not hasattr(network, "ancestors"):
        return set(range(index))
    return set(network.ancestors(index))


def on_one_path(measure: nrm.Measure, candidates: Sequence[str], k: int) -> list[str]:
    """Up to ``k`` of the ``candidates`` on one path from the input to the output, lowest
    first: the deepest candidate (the one reading the most layers), then again and again
    the deepest candidate that the last one chosen reads. Each chosen layer is an ancestor
    of the next, so walks through all of them exist (on parallel branches their joint
    measure would be 0)."""
    depth = {name: ancestors(measure, name) for name in candidates}
    chosen: list[str] = []
    pool = list(candidates)
    while pool and len(chosen) < k:
        best = max(pool, key=lambda n: (len(depth[n]), measure.layer_index(n)))
        chosen.append(best)
        pool = [n for n in pool if measure.layer_index(n) in depth[best]]
    return chosen[::-1]


def parallel_pairs(measure: nrm.Measure, layers: Sequence[str]) -> list[tuple[str, str]]:
    """Consecutive (a, b) of the sorted ``layers`` where b does not read a: every walk
    through both has measure 0."""
    layers = sort_layers(measure, layers)
    return [(a, b) for a, b in zip(layers[:-1], layers[1:]) if measure.layer_index(a) not in ancestors(measure, b)]


def sort_layers(measure: nrm.Measure, layers: Sequence[str]) -> list[str]:
    """The layers from the input side to the output side (one name per layer index)."""
    seen: dict[int, str] = {}
    for name in layers:
        seen.setdefault(measure.layer_index(name), name)
    if len(seen) != len(layers):
        raise ValueError(f"the layers {list(layers)} name the same layer more than once")
    return [seen[l] for l in sorted(seen)]


def flow(measure: nrm.Measure, layers: Sequence[str], top: int = 6, paths: int = 5, beam: int = 16,
         tick=_quiet) -> Flow:
    """The information flow through ``layers``: per layer the ``top`` channels by
    |Σ_{j∈c} m_l(j)|, and per consecutive pair (a, b), a below b, the joint
    μ(X_a ∈ c, X_b ∈ d) of every node c of a and d of b, computed as the channel sums of
    ``marginal(a, within=[At(b, channels=[d]) …])``. Then :func:`critical_paths`, whose
    channels are added to the nodes so that each path can be drawn."""
    layers = sort_layers(measure, layers)
    if len(layers) < 2:
        raise ValueError("the flow needs at least two layers")
    marg = {l: channel_marginals(measure, l) for l in layers}
    found = critical_paths(measure, layers, k=paths, beam=beam, tick=tick) if paths > 0 else []
    nodes = {}
    for i, l in enumerate(layers):
        chosen = top_channels(marg[l], top)
        chosen += [p["channels"][i] for p in found if p["channels"][i] not in chosen]
        nodes[l] = sorted(chosen, key=lambda c: -float(marg[l][c]))
    result = Flow(layers=layers, nodes=nodes,
                  marginals={l: {c: float(marg[l][c]) for c in nodes[l]} for l in layers}, paths=found)
    for lo, hi in zip(layers[:-1], layers[1:]):
        cond = measure.marginal(lo, within=[At(hi, channels=[d]) for d in nodes[hi]])[:, 0]  # (K, *shape_lo)
        sums = cond.reshape(cond.shape[0], cond.shape[1] if cond.dim() > 1 else 1, -1).sum(-1)  # (K, C_lo)
        for row, d in enumerate(nodes[hi]):
            for c in nodes[lo]:
                result.edges.append({"from": [lo, c], "to": [hi, d], "mu": float(sums[row, c])})
    for a, b in parallel_pairs(measure, layers):
        result.notes.append(f"{b} does not read {a} (they are on parallel branches): every walk through both has "
                            "measure 0; choose flow layers along one path")
    zero = sum(abs(e["mu"]) <= ZERO for e in result.edges)
    if result.edges and zero == len(result.edges):
        result.notes.append("every joint μ between consecutive flow layers is 0: nothing flows between them")
    elif zero:
        result.notes.append(f"{zero} of {len(result.edges)} edges have μ = 0 and are not drawn")
    if found and all(abs(p["mu"]) <= ZERO for p in found):
        result.notes.append("every critical path found has μ = 0; none is listed")
    result.paths = [p for p in found if abs(p["mu"]) > ZERO]
    return result


def critical_paths(measure: nrm.Measure, layers: Sequence[str], k: int = 5, beam: int = 16,
                   tick=_quiet) -> list[dict]:
    """The channel paths (c_1, …, c_n), one channel per layer of ``layers`` (lowest first),
    with the largest |μ(X_{l_1} ∈ c_1, …, X_{l_n} ∈ c_n)|.

    Beam search from the top layer down: the ``beam`` channels of l_n with the largest
    |m_{l_n}(c)|, then, for each kept partial path P, μ(P, X_{l_i} ∈ c) for every channel c
    of the next lower layer at once (the channel sums of ``marginal(l_i, within=P)``),
    keeping the ``beam`` largest |μ|. Every reported value is exact; only the search is
    a heuristic (a signed measure has no monotone bound, so the global top k can be missed).
    """
    layers = sort_layers(measure, layers)
    top = channel_marginals(measure, layers[-1])
    partial = [((c,), float(top[c])) for c in top_channels(top, beam)]
    for step, layer in enumerate(reversed(layers[:-1])):
        upper = layers[len(layers) - 1 - step:]
        events = []
        for chans, _ in partial:
            ev = nrm.OMEGA
            for name, c in zip(upper, chans):
                ev = ev & At(name, channels=[c])
            events.append(ev)
        cond = measure.marginal(layer, within=events)[:, 0]
        sums = cond.reshape(cond.shape[0], cond.shape[1] if cond.dim() > 1 else 1, -1).sum(-1)  # (beam, C)
        candidates = []
        for row, (chans, _) in enumerate(partial):
            for c in range(sums.shape[1]):
                candidates.append(((c,) + chans, float(sums[row, c])))
        candidates.sort(key=lambda t: (-abs(t[1]), t[0]))
        partial = candidates[:beam]
        tick(step + 1, len(layers) - 1)
    return [{"layers": list(layers), "channels": list(chans), "mu": value} for chans, value in partial[:k]]


# -- conditional heatmaps ------------------------------------------------------------------------
def concept_heatmaps(measure: nrm.Measure, layer: str, channels: Sequence[int], tick=_quiet,
                     chunk: int = 8) -> torch.Tensor:
    """μ(X_input = i, X_layer ∈ c) for each channel c, summed over the input's channels
    when it has a channel and spatial dimensions: tensor (K, H, W) (or (K, n) for a flat
    input). By L17 their sum over all channels of the layer is the plain heatmap."""
    maps = []
    for i in range(0, len(channels), chunk):
        group = channels[i:i + chunk]
        h = measure.marginal("input", within=[At(layer, channels=[c]) for c in group])[:, 0]
        maps.append(input_map(h))
        tick(min(i + chunk, len(channels)), len(channels))
    return torch.cat(maps)


def input_map(h: torch.Tensor) -> torch.Tensor:
    """(K, C, H, W) → (K, H, W) by summing channels; (K, n) and (K, H, W) stay as they are."""
    return h.sum(1) if h.dim() == 4 else h
