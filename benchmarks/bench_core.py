"""Time nrm against a plain input gradient on a VGG16-shaped network, in one process.

    python benchmarks/bench_core.py                      # 224×224, 2 threads, median of 5
    python benchmarks/bench_core.py --repeats 9 --memory --profile

Cases (batch 1, CPU, float32, seeded weights of :func:`nrm_verify.zoo.models.vgg16`):

  gradient   forward + backward of the target logit w.r.t. the input (requires_grad
             only on the input): the cost every propagation method is measured against;
  epsilon    ``nrm.explain(..., rules=Epsilon(1e-6))`` + ``m.marginal("input")``;
  preset     the same with the usual preset ``EpsilonGammaFlat``;
  events64   the preset, then 64 single-channel events at features.28 as input heatmaps
             in one call: ``m.marginal("input", within=[At("features.28", channels=[c]) …])``.

Each figure is the median of ``--repeats`` timed runs after ``--warmup`` runs; the cases
run in rounds (one run of each per round), so a change of machine load hits them alike.
The ratio to the gradient is the figure to read; targets: epsilon ≤ 1.15×, preset ≤ 1.6×
(the preset needs one more pass through modified weights than the gradient: about 1.5×).
The ratio of CPU time (all threads of the process) is printed beside it: on a shared
machine it moves less with other processes' load than wall time does.
``--memory`` runs each case in a fresh subprocess and reports how far its peak resident
memory (VmHWM, reset before the run) rises above the resident model and input. ``--profile`` prints
where the time of the nrm cases goes (torch.profiler, self CPU time per operator).

Results are printed as a table and saved as JSON (machine, torch, threads, figures).
Never asserted in tests: speed is measured here, not tested.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import nrm
from nrm_verify.zoo.models import seeded_image, vgg16

ROOT = Path(__file__).resolve().parents[1]
CASES = ("gradient", "epsilon", "preset", "events64")
TARGETS = {"epsilon": 1.15, "preset": 1.6}
EVENT_LAYER = "features.28"


def build(size: int):
    """The benchmark's own model (frozen: only the input requires grad) and input."""
    model = vgg16(seed=0)
    model.requires_grad_(False)
    x = seeded_image(size, seed=0)
    with torch.no_grad():
        target = int(model(x)[0].argmax())
    return model, x, target


def make_case(name: str, model, x, target: int, events: int):
    """A function running the case once and returning its phases {name: seconds}."""
    if name == "gradient":
        def run():
            t0, c0 = time.perf_counter(), time.process_time()
            xx = x.detach().clone().requires_grad_(True)
            out = model(xx)[0, target]
            (grad,) = torch.autograd.grad(out, xx)
            return {"total": time.perf_counter() - t0, "cpu": time.process_time() - c0}
        return run

    rules = nrm.rules.Epsilon(1e-6) if name == "epsilon" else nrm.presets.EpsilonGammaFlat()
    within = [nrm.At(EVENT_LAYER, channels=[c]) for c in range(events)] if name == "events64" else None

    def run():
        t0, c0 = time.perf_counter(), time.process_time()
        m = nrm.explain(model, x, target=target, rules=rules)
        t1 = time.perf_counter()
        heat = m.marginal("input", within=within)
        t2 = time.perf_counter()
        assert heat.shape[-3:] == x.shape[-3:]
        return {"total": t2 - t0, "explain": t1 - t0, "marginal": t2 - t1, "cpu": time.process_time() - c0}
    return run


def time_cases(cases, model, x, target, events, warmup: int, repeats: int):
    runs = {c: make_case(c, model, x, target, events) for c in cases}
    for _ in range(warmup):
        for c in cases:
            runs[c]()
    samples: dict[str, list[dict]] = {c: [] for c in cases}
    for _ in range(repeats):
        for c in cases:
            gc.collect()
            samples[c].append(runs[c]())
    figures = {}
    for c in cases:
        phases = samples[c][0].keys()
        figures[c] = {
            "median_s": statistics.median(s["total"] for s in samples[c]),
            "min_s": min(s["total"] for s in samples[c]),
            "max_s": max(s["total"] for s in samples[c]),
            "runs_s": [round(s["total"], 4) for s in samples[c]],
            # CPU time of the process (all threads): less sensitive to other load than wall time
            "cpu_median_s": statistics.median(s["cpu"] for s in samples[c]),
            "phases_median_s": {p: statistics.median(s[p] for s in samples[c]) for p in phases
                                if p not in ("total", "cpu")},
        }
    return figures


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def child_memory(case: str, size: int, threads: int, events: int) -> dict:
    """In a fresh process: peak resident memory of the first run of ``case`` above the
    resident memory of the model and input. (Memory freed by a warm-up run would stay
    resident in the allocator and hide the peak, so the run measured is the first.)"""
    torch.set_num_threads(threads)
    model, x, target = build(size)
    run = make_case(case, model, x, target, events)
    gc.collect()
    resident = _status_kib("VmRSS")
    try:  # reset the peak (VmHWM) to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss"
    run()
    peak = _status_kib("VmHWM") if method.startswith("VmHWM") else None
    if peak is None or resident is None:
        method = "ru_maxrss"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        resident = resident or 0
    return {"resident_mib": resident / 1024, "peak_mib": peak / 1024, "growth_mib": (peak - resident) / 1024,
            "method": method}


def measure_memory(cases, size, threads, events) -> dict:
    out = {}
    for case in cases:
        cmd = [sys.executable, __file__, "--child-memory", case, "--size", str(size), "--threads", str(threads),
               "--events", str(events)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[case] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def profile_cases(cases, model, x, target, events, rows: int = 15) -> dict:
    """Self CPU time per operator of one run of each nrm case (after warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    report = {}
    for case in cases:
        if case == "gradient":
            continue
        run = make_case(case, model, x, target, events)
        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        averages = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in averages) / 1e6
        top = [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in averages[:rows]]
        report[case] = {"profiled_total_s": total, "top": top}
        print(f"\nprofile of '{case}' (self CPU time, {total:.3f} s in all):")
        for e in top:
            print(f"  {e['op']:<36} {e['self_s']:8.3f} s  {100 * e['self_s'] / total:5.1f} %  {e['calls']:5d} calls")
    return report


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "nrm"],
                               capture_output=True, text=True)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            info["nrm_core_modified"] = bool(dirty.stdout.strip())
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case first")
    parser.add_argument("--events", type=int, default=64, help="channel events of the events case (default 64)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--memory", action="store_true", help="peak RSS growth per case, each in a fresh process")
    parser.add_argument("--profile", action="store_true", help="torch.profiler breakdown of the nrm cases")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "core.json"))
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_memory:
        print(json.dumps(child_memory(args.child_memory, args.size, args.threads, args.events)))
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    if "gradient" not in cases:
        cases.insert(0, "gradient")  # every ratio is to the gradient
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    model, x, target = build(args.size)
    print(f"VGG16-shaped network, input 1×3×{args.size}×{args.size} float32, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; target {target}; median of {args.repeats} after {args.warmup} warm-up")
    figures = time_cases(cases, model, x, target, args.events, args.warmup, args.repeats)
    load_after = os.getloadavg()
    memory = measure_memory(cases, args.size, args.threads, args.events) if args.memory else {}

    base = figures["gradient"]["median_s"]
    labels = {
        "gradient": "plain input gradient (fwd + bwd)",
        "epsilon": "nrm, Epsilon everywhere, marginal at input",
        "preset": "nrm, EpsilonGammaFlat, marginal at input",
        "events64": f"nrm, EpsilonGammaFlat, {args.events} channel events at {EVENT_LAYER}",
    }
    header = f"{'case':<10} {'what':<52} {'median s':>9} {'× grad':>7} {'target':>7} {'cpu × grad':>10}"
    if memory:
        header += f" {'peak +MiB':>10}"
    print(header)
    print("-" * len(header))
    for c in cases:
        f = figures[c]
        f["ratio_to_gradient"] = f["median_s"] / base
        f["cpu_ratio_to_gradient"] = f["cpu_median_s"] / figures["gradient"]["cpu_median_s"]
        target_text = f"≤ {TARGETS[c]:.2f}×" if c in TARGETS else ""
        if c in TARGETS:
            f["target_ratio"] = TARGETS[c]
            f["meets_target"] = f["ratio_to_gradient"] <= TARGETS[c]
        line = (f"{c:<10} {labels[c]:<52} {f['median_s']:9.3f} {f['ratio_to_gradient']:6.2f}× {target_text:>7} "
                f"{f['cpu_ratio_to_gradient']:9.2f}×")
        if memory:
            f["peak_rss_growth_mib"] = memory[c]["growth_mib"]
            line += f" {memory[c]['growth_mib']:10.0f}"
        print(line)
    for c in cases:
        phases = figures[c]["phases_median_s"]
        if phases:
            print(f"  {c}: " + ", ".join(f"{p} {v:.3f} s" for p, v in phases.items()))
    if "events64" in figures:
        per_event = (figures["events64"]["median_s"] - figures.get("preset", {}).get("median_s", 0.0)) / args.events
        print(f"  events64: {per_event * 1e3:.1f} ms per event beyond the plain preset marginal "
              f"({per_event / base:.3f} × grad per event)")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(other processes on this machine distort the figures)")

    profile = profile_cases(cases, model, x, target, args.events) if args.profile else None
    result = {
        "benchmark": "bench_core",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/bench_core.py"] + (argv or sys.argv[1:])),
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "input": [1, 3, args.size, args.size],
        "dtype": "float32",
        "repeats": args.repeats,
        "warmup": args.warmup,
        "events": args.events,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cases": figures,
        "memory": memory or None,
        "profile": profile,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
