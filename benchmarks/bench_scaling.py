"""How the cost of nrm grows with the number of events, the batch and the depth.

    python benchmarks/bench_scaling.py               # 64×64 VGG16-shaped input, 2 threads
    python benchmarks/bench_scaling.py --quick       # small sizes, one run per point

Three curves, each point the median of ``--repeats`` runs, each against the plain input
gradient of the same network and batch (the unit of :mod:`bench_core`):

* **events** — K channel events at features.28 in one call,
  ``m.marginal("input", within=[At("features.28", channels=[c]) for c < K])``, after one
  ``nrm.explain`` (EpsilonGammaFlat); K = 1, 4, 16, 64;
* **batch** — ``nrm.explain`` + ``m.marginal("input")`` on a batch of B images, B = 1 … 8;
* **depth** — the first D convolutions of VGG16's features, then global average pooling
  and a seeded linear head, D = 2 … 13.

Saves ``benchmarks/results/scaling.json`` and ``scaling.png`` (three panels, seconds on
log axes, nrm and the gradient).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_core  # noqa: E402

import nrm  # noqa: E402
from nrm_verify.zoo.models import seeded_image, vgg16  # noqa: E402

EVENT_LAYER = bench_core.EVENT_LAYER


def _median(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _gradient(model, x, target):
    def run():
        xx = x.detach().clone().requires_grad_(True)
        out = model(xx)[:, target].sum()
        torch.autograd.grad(out, xx)
    return run


def truncated_vgg(depth: int, seed: int = 0) -> nn.Sequential:
    """VGG16's features up to (and with the ReLU and pools after) its ``depth``-th
    convolution, then AdaptiveAvgPool2d(1), Flatten and a seeded Linear(C, 10)."""
    if not 1 <= depth <= 13:
        raise ValueError(f"VGG16 has 13 convolutions; depth must be 1 … 13, got {depth}")
    features = list(vgg16(seed=seed).features.children())
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    end = convs[depth] if depth < len(convs) else len(features)
    kept = features[:end]
    channels = [m for m in kept if isinstance(m, nn.Conv2d)][-1].out_channels
    head = nn.Linear(channels, 10)
    g = torch.Generator().manual_seed(seed + depth)
    with torch.no_grad():
        head.weight.normal_(0.0, 1.0 / math.sqrt(channels), generator=g)
        head.bias.zero_()
    model = nn.Sequential(OrderedDict(features=nn.Sequential(*kept), avgpool=nn.AdaptiveAvgPool2d(1),
                                      flatten=nn.Flatten(), fc=head)).eval()
    return model.requires_grad_(False)


def events_curve(size: int, ks, repeats: int) -> list[dict]:
    model, x, target = bench_core.build(size)
    grad = _median(_gradient(model, x, target), repeats)
    m = nrm.explain(model, x, target=target, rules=nrm.presets.EpsilonGammaFlat())
    out = []
    for k in ks:
        within = [nrm.At(EVENT_LAYER, channels=[c]) for c in range(k)]
        t = _median(lambda within=within: m.marginal("input", within=within), repeats)
        out.append({"x": k, "nrm_s": t, "gradient_s": grad, "ratio": t / grad})
    return out


def batch_curve(size: int, bs, repeats: int) -> list[dict]:
    model, _, target = bench_core.build(size)
    rules = nrm.presets.EpsilonGammaFlat()
    out = []
    for b in bs:
        x = seeded_image(size, seed=0, batch=b)
        grad = _median(_gradient(model, x, target), repeats)
        t = _median(lambda x=x: nrm.explain(model, x, target=target, rules=rules).marginal("input"), repeats)
        out.append({"x": b, "nrm_s": t, "gradient_s": grad, "ratio": t / grad})
    return out


def depth_curve(size: int, ds, repeats: int) -> list[dict]:
    x = seeded_image(size, seed=0)
    rules = nrm.presets.EpsilonGammaFlat()
    out = []
    for d in ds:
        model = truncated_vgg(d)
        with torch.no_grad():
            target = int(model(x)[0].argmax())
        grad = _median(_gradient(model, x, target), repeats)
        run = lambda model=model, target=target: nrm.explain(model, x, target=target, rules=rules).marginal("input")  # noqa: E731
        t = _median(run, repeats)
        out.append({"x": d, "nrm_s": t, "gradient_s": grad, "ratio": t / grad})
    return out


def plot(result: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("events", f"channel events at {EVENT_LAYER}"), ("batch", "batch size"), ("depth", "convolutions")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110)
    for ax, (key, label) in zip(axes, panels):
        points = result["curves"].get(key, [])
        if not points:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            continue
        xs = [p["x"] for p in points]
        ax.plot(xs, [p["nrm_s"] for p in points], "o-", label="nrm (EpsilonGammaFlat)")
        ax.plot(xs, [p["gradient_s"] for p in points], "s--", label="plain gradient")
        for p in points:
            ax.annotate(f"{p['ratio']:.1f}×", (p["x"], p["nrm_s"]), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=7)
        ax.set_xscale("log" if key != "depth" else "linear")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"cost against {key}", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(f"nrm cost, VGG16-shaped, {result['size']}×{result['size']}, {result['threads']} threads "
                 "(labels: ratio to the gradient)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=None, help="input height and width (default 64; 32 with --quick)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="timed runs per point (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer, smaller points")
    p.add_argument("--output", default=None, help="JSON file (default benchmarks/results/scaling.json, "
                                                  "scaling-quick.json with --quick); the PNG is saved beside it")


def run_scaling(args, progress=None) -> dict:
    size = args.size if args.size is not None else (32 if args.quick else 64)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if size < 32 or repeats < 1:
        raise ValueError(f"--size must be at least 32 and --repeats at least 1, got {size} and {repeats}")
    torch.set_num_threads(args.threads)
    ks = (1, 4, 16) if args.quick else (1, 4, 16, 64)
    bs = (1, 2, 4) if args.quick else (1, 2, 4, 8)
    ds = (2, 7, 13) if args.quick else (2, 4, 7, 10, 13)
    result = {"benchmark": "bench_scaling", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "size": size,
              "threads": torch.get_num_threads(), "repeats": repeats, "machine": bench_core.machine(), "curves": {}}
    for key, fn, xs in (("events", events_curve, ks), ("batch", batch_curve, bs), ("depth", depth_curve, ds)):
        if progress:
            progress(f"scaling: {key} {list(xs)}")
        result["curves"][key] = fn(size, xs, repeats)
    out = Path(args.output or HERE / "results" / ("scaling-quick.json" if args.quick else "scaling.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    result["plot"] = str(plot(result, out.with_suffix(".png")))
    out.write_text(json.dumps(result, indent=2) + "\n")
    result["json"] = str(out)
    return result


def table(result: dict) -> str:
    lines = [f"cost curves ({result['size']}×{result['size']}, {result['threads']} threads, median of "
             f"{result['repeats']}):"]
    for key, points in result["curves"].items():
        lines.append(f"  {key:<7} " + "  ".join(f"{p['x']}: {p['nrm_s']:.3f} s ({p['ratio']:.1f}×)" for p in points))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        result = run_scaling(args, progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    except ValueError as e:
        print(f"bench_scaling: error: {e}", file=sys.stderr)
        return 2
    print(table(result))
    print(f"saved {result['json']} and {result['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
