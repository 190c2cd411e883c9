"""EfficientNet-B0 and ConvNeXt-Tiny at 224×224: nrm beside a plain input gradient.

Run from ``.venv-peers`` (torchvision does not import beside ``.venv``'s torch):

    .venv-peers/bin/python benchmarks/bench_architectures.py --repeats 7

Each model is torchvision's, with random weights (seed 0), float32, eval mode, batch 1, CPU,
2 torch threads (``--threads``), frozen parameters (only the input requires grad); target =
the arg-max logit. The cases are :mod:`bench_core`'s, timed in interleaved rounds in one
process (round r runs every case once, in order): ``gradient`` (d f / d x by autograd),
``epsilon`` (Epsilon(1e-6) everywhere: ``explain`` + the input heatmap) and ``preset``
(EpsilonGammaFlat, the VGG16 rows' preset). Prints medians and the ratios to the gradient
with the targets of issue 13 (ε ≤ 1.3×, preset ≤ 1.8×); writes
``benchmarks/results/architectures.json``. Figures are recorded, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core  # noqa: E402 — the cases and their interleaved timing
from zoo_torchvision import CONVOLUTIONAL  # noqa: E402 — torchvision's convolutional models, named once

MODELS = ("efficientnet_b0", "convnext_tiny")
CASES = ("gradient", "epsilon", "preset")
TARGETS = {"epsilon": 1.3, "preset": 1.8}
RESULTS = Path(__file__).resolve().parent / "results" / "architectures.json"


def build(name: str, size: int):
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    model.requires_grad_(False)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = int(model(x)[0].argmax())
    return model, x, target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=list(MODELS), help=f"torchvision models (default {' '.join(MODELS)})")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in CONVOLUTIONAL]
    if unknown:
        p.error(f"not a convolutional model of torchvision: {', '.join(unknown)} (the names of "
                "benchmarks/zoo_torchvision.py's CONVOLUTIONAL)")
    for name in ("size", "threads", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be 0 or more, got {args.warmup}")
    torch.set_num_threads(args.threads)
    rows = {}
    for name in args.models:
        model, x, target = build(name, args.size)
        figures = bench_core.time_cases(list(CASES), model, x, target, 0, args.warmup, args.repeats)
        grad = figures["gradient"]["median_s"]
        for case in CASES:
            figures[case]["ratio_to_gradient"] = figures[case]["median_s"] / grad
        rows[name] = figures
        print(f"{name} ({args.size}×{args.size}, batch 1, {args.threads} threads, median of {args.repeats}):")
        for case in CASES:
            f = figures[case]
            goal = f" (target ≤ {TARGETS[case]}×)" if case in TARGETS else ""
            print(f"  {case:9s} {f['median_s'] * 1e3:8.1f} ms  {f['ratio_to_gradient']:.2f}× gradient{goal}")
    meta = {**bench_core.machine(), "size": args.size, "repeats": args.repeats, "warmup": args.warmup,
            "load": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "models": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
