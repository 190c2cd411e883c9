"""The head-conditional heatmaps of issue 14 at every depth: GPT-2 small's shape, the 12
head-conditional input heatmaps of one layer in one nrm call against one LXT run per head, for
several layers.

Run from ``.venv-peers`` (LXT and transformers live there):

    PYTHONPATH=. .venv-peers/bin/python benchmarks/bench_heads.py --head-layers 0 2 5 8 11 --repeats 3

The cases are :mod:`bench_transformers`' (the same model, input, target, LXT map and agreement
check), timed in interleaved rounds in one process for each layer: ``gradient``,
``nrm_attnlrp`` (the input marginal: ``explain`` and one pass — what every heatmap call pays
once), ``heads_nrm`` (``explain`` and the 12 head events in one ``marginal`` call) and
``heads_lxt`` (12 LXT runs, one per head). The heatmaps are relevance at the input, so each
head's event is carried down through every layer below its own: nrm's cost grows with the
layer (12 masked passes through the layers below it), LXT's does not (12 full forward and
backward passes). The FLOPs of both sides bound the ratio whatever the overheads: at most
12 G / (E + 12 P_l), with G one gradient, E nrm's marginal and P_l the masked pass below layer
l, about (l + 1)/12 of the transposes of the 48 projections, a quarter of G. Figures are
recorded, never asserted; ``benchmarks/results/heads.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_transformers as T  # noqa: E402 — the model, the cases and their interleaved timing

CASES = ("gradient", "nrm_attnlrp", "heads_nrm", "heads_lxt")
RESULTS = Path(__file__).resolve().parent / "results" / "heads.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--head-layers", type=int, nargs="+", default=[0, 2, 5, 8, 11],
                   help="GPT-2 layers of the head heatmaps (default 0 2 5 8 11)")
    p.add_argument("--small", action="store_true", help="a tiny configuration: a check of the script in seconds")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per layer (default 3)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    layers = 2 if args.small else 12
    bad = [n for n in args.head_layers if not 0 <= n < layers]
    if bad:
        p.error(f"--head-layers must be in 0 … {layers - 1}, got {bad}")
    for flag in ("tokens", "threads", "repeats"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    torch.set_num_threads(args.threads)
    start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    model, x, target = T.build_gpt2(args.small, tokens=args.tokens, layers=layers)
    rows = {}
    for layer in args.head_layers:
        runs = {c: r for c, r in T.cases_for("gpt2", model, x, target, layer, needed={"heads_nrm"}).items()
                if c in CASES}
        out = {c: run().detach() for c, run in runs.items()}  # the warm-up, and the agreement of the heatmaps
        agree = float((out["heads_nrm"] - out["heads_lxt"]).abs().max() / out["heads_lxt"].abs().max())
        times = T.interleaved(runs, 0, args.repeats)
        med = {c: t["median_s"] for c, t in times.items()}
        rows[layer] = {"times": times, "heads_nrm_vs_lxt": agree,
                       "speedup_over_lxt_per_head": med["heads_lxt"] / med["heads_nrm"],
                       "heads_nrm_to_gradient": med["heads_nrm"] / med["gradient"],
                       "masked_passes_s": med["heads_nrm"] - med["nrm_attnlrp"],
                       "lxt_per_head_to_gradient": med["heads_lxt"] / med["gradient"] / model.config.n_head}
        r = rows[layer]
        ms = {c: f"{v * 1e3:.1f} ms" for c, v in med.items()}
        print(f"layer {layer:2d}: gradient {ms['gradient']}, nrm marginal {ms['nrm_attnlrp']}, nrm "
              f"{model.config.n_head} heads {ms['heads_nrm']} (masked passes {r['masked_passes_s'] * 1e3:.1f} ms), "
              f"LXT per head {ms['heads_lxt']}: {r['speedup_over_lxt_per_head']:.2f}× (heatmaps agree to {agree:.2g})",
              flush=True)
        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg(),
                "uptime_at_start": start, "uptime": subprocess.run(["uptime"], capture_output=True,
                                                                   text=True).stdout.strip(),
                "torch": torch.__version__, "threads": args.threads, "repeats": args.repeats, "tokens": args.tokens,
                "small": args.small, "target": T.TARGETS["heads_speedup"]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "layers": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
