"""Why LRP-γ's top walks miss the house on BA-2motifs' GCN (the README's ground-truth table:
node AUROC 0.54 for the top 25 walks by |R| under γ = 0.25, 0.92 for γ's node marginals).

Trains the table's BA-2motifs GCN (``gnn_groundtruth.train_graph``, seeded), explains the first
``--graphs`` house graphs for class 1 under LRP-0 and LRP-γ, lists every walk with its relevance
(``nrm.gnn.graph_walks``) and scores node rankings against the house (node AUROC, the
Mann–Whitney statistic with ties counted one half, so that no torchmetrics is needed):

* the node marginal |m| and m;
* the table's walk mask: the top 25 walks by |R|, each node on a walk scored the walk's |R|;
* the top 25 walks by R (positive relevance only);
* every walk, signed: each node scored Σ R over the walks through it;
* the top 25 walks by |R| crediting only the node each walk starts at, and every walk signed
  credited to its start node (the input marginal m, by L15);

and describes the top 25 walks: the share of negative ones, Σ R / f over them, and the mean
degree of their nodes against the house's.

    .venv-peers/bin/python benchmarks/gnn_gamma_walks.py --graphs 12
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gnn_groundtruth as G  # noqa: E402 — the table's data and model

import nrm  # noqa: E402


def auroc(score: torch.Tensor, truth: torch.Tensor) -> float:
    pos, neg = score[truth].double(), score[~truth].double()
    return float(((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--graphs", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(1)
    train, test = G.ba_motifs(0, 200)
    model, acc = G.train_graph("gcn", train, test, 0)
    print(f"BA-2motifs GCN: train {acc['train']:.2f}, test {acc['test']:.2f}")
    model = copy.deepcopy(model).double().eval()
    houses = [g for g in test + train if int(g.y) == 1][: args.graphs]
    rows = defaultdict(list)
    for g in houses:
        batch = torch.zeros(g.num_nodes, dtype=torch.int64)
        truth = g.node_mask.bool()
        degree = torch.bincount(g.edge_index[1], minlength=g.num_nodes).double()
        for label, rule in (("LRP-0", nrm.rules.Zero()), ("LRP-γ 0.25", nrm.rules.Gamma(0.25))):
            m = nrm.gnn.explain(model, g.x.double(), g.edge_index, target=1, node=0, rules=rule, batch=batch)
            marginal = m.marginal("input")[0].sum(-1)
            walks, rel = G.all_walks(m, g.edge_index, None)
            top = torch.argsort(rel.abs(), descending=True, stable=True)[:G.TOP_WALKS]
            signed = torch.zeros(g.num_nodes, dtype=rel.dtype)
            for w, r in zip(walks.tolist(), rel.tolist()):
                for v in set(w):
                    signed[v] += r
            on_top = torch.tensor(sorted({v for w in walks[top].tolist() for v in w}))
            rows[label, "node marginal |m|"].append(auroc(marginal.abs(), truth))
            rows[label, "node marginal m"].append(auroc(marginal, truth))
            rows[label, "top 25 walks by |R| (the table's)"].append(
                auroc(G.walk_masks(walks, rel, g.edge_index, g.num_nodes)[0], truth))
            rows[label, "top 25 walks by R > 0"].append(
                auroc(G.walk_masks(walks, rel.clamp_min(0), g.edge_index, g.num_nodes)[0], truth))
            rows[label, "every walk, signed Σ R per node"].append(auroc(signed, truth))
            start = torch.zeros(g.num_nodes, dtype=rel.dtype).index_add_(0, walks[top, 0], rel[top].abs())
            rows[label, "top 25 by |R|, start node only"].append(auroc(start, truth))
            first = torch.zeros(g.num_nodes, dtype=rel.dtype).index_add_(0, walks[:, 0], rel)
            rows[label, "every walk, signed, start node (= m)"].append(auroc(first, truth))
            rows[label, "walks (all)"].append(float(len(rel)))
            rows[label, "share of graphs with f = logit_1 < 0"].append(float(m.f[0] < 0))
            rows[label, "negative share of the top 25"].append(float((rel[top] < 0).double().mean()))
            rows[label, "Σ R over the top 25 / f"].append(float(rel[top].sum() / m.f[0]))
            rows[label, "mean degree on the top 25 walks"].append(float(degree[on_top].mean()))
            rows[label, "mean degree of the house"].append(float(degree[truth].mean()))
    print(f"{len(houses)} house graphs; means over them:")
    for (label, what), values in rows.items():
        print(f"  {label:11s} {what:36s} {sum(values) / len(values):8.3f}")


if __name__ == "__main__":
    main()
