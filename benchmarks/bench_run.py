"""Throughput of a dataset run (``nrm_verify.report.dataset.run``, local engine) against a
hand-written loop over ``nrm.explain`` that computes the same per-sample numbers on the same
batches and keeps them in memory (issue 16: the engine should cost at most ~10 % more).

    .venv/bin/python benchmarks/bench_run.py                       # small_cnn at 32×32, 256 samples
    .venv/bin/python benchmarks/bench_run.py --model vgg16 --size 32 --samples 64 --batch 16

Both cases run in interleaved rounds (one of each per round) so that a change of machine
load hits both alike; the median of each and their ratio are printed and saved to
``results/run_<model>.json``. Measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import nrm
from nrm_verify.report.dataset import run
from nrm_verify.zoo import models

RULES = nrm.presets.EpsilonGammaFlat()


def hand_loop(model, x: torch.Tensor, batch: int, layers: list[str]) -> list:
    """What a user would write: arg-max, explain, every layer's absorbed mass, the chosen layers' marginals."""
    kept = []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        with torch.no_grad():
            target = model(xb).argmax(1).tolist()
        m = nrm.explain(model, xb, target=target, rules=RULES)
        masses = {name: bottom for name, (_, bottom) in m.marginals(absorber=True).items()}
        kept.append((m.f, masses, {name: m.marginal(name) for name in layers}))
    return kept


def engine(model, x: torch.Tensor, batch: int, layers: list[str], folder: Path) -> None:
    run(model, x, folder, rules=RULES, layers=layers, full=["input"], batch_size=batch, progress=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["small_cnn", "vgg16"], default="small_cnn")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", help="where the JSON goes (default results/run_<model>.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = getattr(models, args.model)(seed=0, **({"num_classes": 10} if args.model == "vgg16" else {}))
    x = models.seeded_image(args.size, batch=args.samples, seed=1)
    layers = ["input", "features.3"]
    times: dict[str, list[float]] = {"hand loop": [], "run (local)": []}
    with tempfile.TemporaryDirectory() as tmp:
        hand_loop(model, x[: args.batch], args.batch, layers)  # warm-up: the self-check runs once per signature
        for _ in range(args.repeats):
            for name, job in (("hand loop", lambda: hand_loop(model, x, args.batch, layers)),
                              ("run (local)", lambda: engine(model, x, args.batch, layers, Path(tmp) / "r"))):
                shutil.rmtree(Path(tmp) / "r", ignore_errors=True)  # outside the timing
                start = time.perf_counter()
                job()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["run (local)"] / med["hand loop"]
    for k, v in med.items():
        print(f"{k:12s} {v:7.3f} s   {args.samples / v:7.1f} samples/s")
    print(f"ratio run / hand loop: {ratio:.3f}")
    result = {"model": args.model, "size": args.size, "samples": args.samples, "batch": args.batch,
              "threads": args.threads, "torch": torch.__version__, "seconds": times, "median": med, "ratio": ratio}
    output = args.output or Path(__file__).parent / "results" / f"run_{args.model}.json"
    Path(output).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
