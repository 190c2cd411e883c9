"""Throughput of a dataset run (``nrm_verify.report.dataset.run``, local engine) against a
hand-written loop over ``nrm.explain`` that computes the same per-sample numbers on the same
batches (arg-max, f, absorbed mass and L1 residual, channel sums and top-5 of ``layers``, the
input heatmap) and keeps them in memory (issue 16: the engine should cost at most ~10 % more).

    .venv/bin/python benchmarks/bench_run.py                       # small_cnn at 32×32, 256 samples
    .venv/bin/python benchmarks/bench_run.py --model vgg16 --size 32 --samples 64 --batch 16
    .venv/bin/python benchmarks/bench_run.py --engines --model small_cnn --size 96 --samples 256 --batch 16

``--engines`` times the engines instead: the local engine (one worker, one torch thread)
against the Ray engine with two workers of one CPU and one thread each, on a local Ray started
once before the rounds (``results/engines_<model>.json``; the issue's target is ≥ 1.6×). Besides
the end-to-end time (which carries Ray's fixed cost: starting the worker processes, each
importing torch and unpickling the job, and stopping them) it records the steady rate: the
samples committed between the first and the last batch's commit over that time, read from the
committed parts' modification times.

Both cases run in interleaved rounds (one of each per round) so that a change of machine
load hits both alike; the median of each and their ratio are printed and saved to
``results/run_<model>.json``. Measured, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
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
    """What a user would write to get the numbers a run writes (its defaults: L1, top-5, the
    input heatmaps): arg-max, explain, every layer's absorbed mass and L1 residual, the chosen
    layers' channel sums and top-5 neurons, the input marginal — kept in memory as numpy."""
    kept = []
    sequential = None
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        with torch.no_grad():
            target = model(xb).argmax(1).tolist()
        m = nrm.explain(model, xb, target=target, rules=RULES)
        sequential = m.network.sequential if sequential is None else sequential
        masses, residual = {}, torch.zeros(xb.shape[0], dtype=m.f.dtype)
        for name, (mm, bottom) in m.marginals(absorber=True).items():
            masses[name] = bottom.numpy()
            total = mm.reshape(mm.shape[0], -1).sum(1) + bottom + (0 if sequential else m.bypassing(name))
            residual = torch.maximum(residual, (total - 1).abs())
        per_layer = {}
        for name in layers:
            mm = m.marginal(name)
            flat = mm.reshape(mm.shape[0], -1)
            top = flat.abs().topk(min(5, flat.shape[1]), dim=1).indices
            per_layer[name] = (mm.reshape(mm.shape[0], mm.shape[1], -1).sum(2).numpy(), top.numpy(),
                               flat.gather(1, top).numpy())
        kept.append((m.f.numpy(), masses, residual.numpy(), per_layer, m.marginal("input").numpy()))
    return kept


def engine(model, x: torch.Tensor, batch: int, layers: list[str], folder: Path) -> None:
    run(model, x, folder, rules=RULES, layers=layers, full=["input"], batch_size=batch, progress=False)


def ray_engine(model, x: torch.Tensor, batch: int, layers: list[str], folder: Path) -> None:
    run(model, x, folder, rules=RULES, layers=layers, full=["input"], batch_size=batch, progress=False,
        engine="ray", concurrency=2, worker_cpus=1.0)


def steady_rate(folder: Path, batch: int) -> float:
    """Samples per second between the first and the last committed part (their files' mtimes):
    the rows of every part after the first over that time; NaN with fewer than two parts (the
    local engine commits the batches of a second together, so a short run has one or two)."""
    parts = sorted((p.stat().st_mtime, int(p.stem.split("-")[2])) for p in (folder / "samples").glob("part-*.parquet"))
    if len(parts) < 2 or parts[-1][0] <= parts[0][0]:
        return float("nan")
    return sum(n for _, n in parts[1:]) / (parts[-1][0] - parts[0][0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["small_cnn", "vgg16"], default="small_cnn")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--engines", action="store_true", help="the local engine against Ray with 2 workers")
    p.add_argument("--output", help="where the JSON goes (default results/run_<model>.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = getattr(models, args.model)(seed=0, **({"num_classes": 10} if args.model == "vgg16" else {}))
    x = models.seeded_image(args.size, batch=args.samples, seed=1)
    layers = ["input", "features.3"]
    stack = contextlib.ExitStack()
    if args.engines:
        from nrm_verify.report.dataset.ray_engine import ray_session

        stack.enter_context(ray_session(None, workers=4))  # the engine's own local Ray, started once before the rounds
        cases = {"run (local)": lambda d: engine(model, x, args.batch, layers, d),
                 "run (ray, 2 workers)": lambda d: ray_engine(model, x, args.batch, layers, d)}
        base, other = "run (local)", "run (ray, 2 workers)"
    else:
        cases = {"hand loop": lambda d: hand_loop(model, x, args.batch, layers),
                 "run (local)": lambda d: engine(model, x, args.batch, layers, d)}
        base, other = "hand loop", "run (local)"
    times: dict[str, list[float]] = {name: [] for name in cases}
    rates: dict[str, list[float]] = {name: [] for name in cases if name.startswith("run")}
    with stack, tempfile.TemporaryDirectory() as tmp:
        hand_loop(model, x[: args.batch], args.batch, layers)  # warm-up: the self-check runs once per signature
        for _ in range(args.repeats):
            for name, job in cases.items():
                shutil.rmtree(Path(tmp) / "r", ignore_errors=True)  # outside the timing
                start = time.perf_counter()
                job(Path(tmp) / "r")
                times[name].append(time.perf_counter() - start)
                if name in rates:
                    rates[name].append(steady_rate(Path(tmp) / "r", args.batch))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med[other] / med[base] if not args.engines else med[base] / med[other]
    steady = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:12s} {v:7.3f} s   {args.samples / v:7.1f} samples/s"
              + (f"   steady {steady[k]:7.1f} samples/s" if k in steady else ""))
    if args.engines:
        print(f"steady-rate speed-up of Ray over local: {steady[other] / steady[base]:.2f}×")
    print(f"speed-up of Ray over local: {ratio:.2f}×" if args.engines else f"ratio run / hand loop: {ratio:.3f}")
    result = {"model": args.model, "size": args.size, "samples": args.samples, "batch": args.batch,
              "threads": args.threads, "torch": torch.__version__, "seconds": times, "median": med, "ratio": ratio,
              "steady samples/s": rates, "steady median": steady}
    kind = "engines" if args.engines else "run"
    output = args.output or Path(__file__).parent / "results" / f"{kind}_{args.model}.json"
    Path(output).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
