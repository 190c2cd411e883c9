"""Speed of GNN-LRP in nrm (issue 15): a 3-layer GCN on the 700-node BA-Shapes graph, CPU,
one process, one thread, interleaved rounds.

* **All walk relevances ending at one node.** nrm: ``nrm.gnn.explain`` and every walk of
  non-zero relevance at once (``gnn_groundtruth.all_walks``: the walks' upper parts
  (i_1, …, i_L) as cylinder events, one batched masked marginal at the input resolving i_0).
  Against DIG's approach, one forward and one backward pass per walk
  (``nrm_verify.references.dig_gnnlrp``, DIG's algorithm; DIG itself does not import beside
  PyG 2.8.1). Both under DIG's γ (nrm: Gamma on what DIG modifies). Where the walks are
  more than ``--dig-walks``, the per-walk loop is timed on a seeded sample of that many walks
  and scaled to all of them (said in the output). (``nrm.gnn.walk_relevance`` enumerates all
  N^L walks, 700³ here: not usable at this size, so not timed.)
* **Node marginals for all nodes** (``marginal("input")``, explain included) against a plain
  gradient (forward and ``torch.autograd.grad`` of the same output).

Speed is a ratio measured in one run, never asserted. Run:
``python benchmarks/bench_gnn.py [--rounds 3] [--out benchmarks/results/gnn_speed.json]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import gnn_groundtruth as G
import torch

import nrm
from nrm_verify.references import dig_gnnlrp as dig


def setup(seed: int = 0, end: int | None = None, quantile: float = 0.5):
    torch.set_num_threads(1)
    data = G.ba_shapes(seed)
    model, acc = G.train_node("gcn", data, seed, epochs=100)
    model = model.double().eval()
    x = data.x.double()
    if end is None:  # the node at this quantile of walk counts, Σ_{i2 ∈ N̄(end)} Σ_{i1 ∈ N̄(i2)} |N̄(i1)|
        nb = G._neighbours(data.edge_index, data.num_nodes)
        count = [sum(len(nb[i1]) for i2 in nb[v] for i1 in nb[i2]) for v in range(data.num_nodes)]
        rank = min(int(quantile * data.num_nodes), data.num_nodes - 1)
        end = sorted(range(data.num_nodes), key=lambda v: (count[v], v))[rank]
    with torch.no_grad():
        target = int(model(x, data.edge_index)[end].argmax())
    rules = nrm.RuleMap(nrm.rules.Zero(), by_name={
        **{f"model.convs.{i}.lin": nrm.rules.Gamma(g, modify_bias=False) for i, g in enumerate(dig.DIG_GAMMAS)},
        "model.head": nrm.rules.Gamma(dig.DIG_HEAD_GAMMA, modify_bias=False)})
    return model, x, data.edge_index, end, target, rules, acc


def nrm_explain(model, x, ei, end, target, rules):
    return nrm.gnn.explain(model, x, ei, target=target, node=end, rules=rules)


def gradient(model, x, ei, end, target):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x, ei)[end, target], x)
    return g


def timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - start, out


def run(rounds: int = 3, dig_walks: int = 300, seed: int = 0, quantile: float = 0.5) -> dict:
    model, x, ei, end, target, rules, acc = setup(seed, quantile=quantile)
    walks, rel = G.all_walks(nrm_explain(model, x, ei, end, target, rules), ei, end)
    chosen = torch.randperm(len(walks), generator=torch.Generator().manual_seed(seed))[:dig_walks]
    sub = walks[chosen].tolist()
    scale = len(walks) / len(sub)
    rows = {"nrm explain (capture, engine)": [], "nrm walks (after explain)": [], "DIG per walk (scaled)": [],
            "nrm marginals (after explain)": [], "plain gradient": []}
    check = None
    for _ in range(rounds):
        t, m = timed(nrm_explain, model, x, ei, end, target, rules)
        rows["nrm explain (capture, engine)"].append(t)
        t, (walks, rel) = timed(G.all_walks, m, ei, end)
        rows["nrm walks (after explain)"].append(t)
        t, theirs = timed(dig.walk_relevances, model, x, ei, sub, target, end)
        rows["DIG per walk (scaled)"].append(t * scale)
        check = float((theirs - rel[chosen]).abs().max())
        m = nrm_explain(model, x, ei, end, target, rules)  # a fresh measure: no cached pass
        rows["nrm marginals (after explain)"].append(timed(m.marginal, "input")[0])
        rows["plain gradient"].append(timed(gradient, model, x, ei, end, target)[0])
    best = {k: min(v) for k, v in rows.items()}
    explain, walks_t = best["nrm explain (capture, engine)"], best["nrm walks (after explain)"]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "graph": {"nodes": int(x.shape[0]), "edges": int(ei.shape[1]), "end": end, "target": target},
        "end_quantile": quantile, "model_accuracy": acc, "walks": len(walks), "dig_walks_timed": len(sub),
        "rounds": rows, "best": best,
        "speedup_walks": best["DIG per walk (scaled)"] / (explain + walks_t),
        "speedup_walks_after_explain": best["DIG per walk (scaled)"] / walks_t,
        "marginals_over_gradient": (explain + best["nrm marginals (after explain)"]) / best["plain gradient"],
        "marginals_after_explain_over_gradient": best["nrm marginals (after explain)"] / best["plain gradient"],
        "dig_vs_nrm_walk_max_abs_difference": check, "f": float(m.f[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dig-walks", type=int, default=300)
    parser.add_argument("--quantile", type=float, default=0.5, help="the end node: this quantile of walk counts")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gnn_speed.json"))
    args = parser.parse_args()
    r = run(args.rounds, args.dig_walks, quantile=args.quantile)
    Path(args.out).write_text(json.dumps(r, indent=1))
    print(f"{r['date']}  {r['uptime']}")
    print(f"graph {r['graph']}, {r['walks']} walks end at node {r['graph']['end']} "
          f"(DIG's loop timed on {r['dig_walks_timed']}, scaled)")
    for k, v in r["best"].items():
        print(f"  {k:24s} {v * 1e3:10.1f} ms (best of {args.rounds})")
    print(f"walks: nrm {r['speedup_walks']:.1f}× faster than one backward pass per walk "
          f"({r['speedup_walks_after_explain']:.1f}× after explain); marginals: "
          f"{r['marginals_over_gradient']:.1f}× a plain gradient ({r['marginals_after_explain_over_gradient']:.2f}× "
          "after explain)")
    print(f"DIG's γ vs nrm's Gamma on lin, max |ΔR| per walk {r['dig_vs_nrm_walk_max_abs_difference']:.3g} "
          f"(f = {r['f']:.3g}; they differ by construction: docs/gnn.md, peer_tests/test_dig.py)")


if __name__ == "__main__":
    main()
