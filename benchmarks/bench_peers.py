"""nrm beside the peers (zennit, captum, zennit-crp) on a VGG16-shaped network, in one process.

    python benchmarks/bench_peers.py                 # 224×224, 2 threads, median of 3
    python benchmarks/bench_peers.py --quick         # a small size, one run (what the tests use)
    .venv-peers/bin/python benchmarks/bench_peers.py # with the peers (they live in .venv-peers)

Cases (batch 1, CPU, float32, seeded weights of :func:`nrm_verify.zoo.models.vgg16`):

  gradient      forward + backward of the target logit w.r.t. the input: the unit;
  epsilon       nrm, Epsilon(1e-6) everywhere, marginal at the input      (target ≤ 1.15×);
  preset        nrm, EpsilonGammaFlat, marginal at the input              (target ≤ 1.6×);
  preset_epf    nrm, EpsilonPlusFlat, marginal at the input (zennit's composite below);
  events64      nrm, EpsilonGammaFlat, 64 channel-conditional heatmaps at features.28 in one call;
  zennit_epf    zennit's EpsilonPlusFlat composite: the input gradient with the composite;
  captum_eps    captum's LRP with EpsilonRule(1e-6) on every layer;
  crp64         zennit-crp ``CondAttribution.generate``: 64 channel conditions at features.28,
                EpsilonGammaFlat as a zennit composite, at CRP's best setting (below);
                target: events64 ≥ 10× faster and ≤ 1/4 of crp64's peak memory.
  joint         ``m.joint("features.26", "features.28")``: the full 512×512 channel joint
                (one run, in its own process, time and peak memory; ``--skip-joint``).

Each peer runs at its best setting: first every setting of :data:`SWEEPS` that changes a
peer's speed is timed once (after ``--warmup`` untimed runs), then the fastest one is the
peer's case below (the JSON's ``sweep`` and the table list all of them). The settings:

  crp64         ``generate(batch_size=…)`` for each of ``--crp-batches`` (1, 4, 8, 16; 1, 4 with
                ``--quick``), with CRP's default ``no_param_grad=True`` (no weight gradients;
                the model's ``requires_grad`` is restored after every run);
  zennit_epf    the composite registered for every call (a context per heatmap) or once,
                outside the timed calls (a context held over many heatmaps);
  captum_eps    none: ``LRP(model).attribute`` has no option that changes its speed here.

The first three nrm cases are :mod:`bench_core`'s own (imported, not copied). Each figure is
the median of ``--repeats`` timed runs after ``--warmup``, the cases in interleaved rounds.
Peak memory (``--memory``, on by default for events64, crp64 and the joint) is measured in a
fresh process per case: how far the peak resident memory rises above the model and input.
Results are printed as a table and saved as JSON (``benchmarks/results/peers.json``).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_core  # noqa: E402 — the benchmark's model, input, nrm cases and memory probe

import nrm  # noqa: E402
from nrm_verify.commands.bench import add_arguments  # noqa: E402 — the options, shared with `nrm-verify bench`

NRM_CASES = ("gradient", "epsilon", "preset", "preset_epf", "events64")
PEER_CASES = ("zennit_epf", "captum_eps", "crp64")
CASES = NRM_CASES + PEER_CASES
TARGETS = {"epsilon": 1.15, "preset": 1.6}
"""Issue 6: ratio to the plain gradient at most this."""
CRP_SPEEDUP, CRP_MEMORY = 10.0, 0.25
"""Issue 6: events64 at least 10× faster than crp64, with at most 1/4 of its peak memory."""
EVENT_LAYER = bench_core.EVENT_LAYER
JOINT_LAYERS = ("features.26", "features.28")
MEMORY_CASES = ("events64", "crp64")

LABELS = {
    "gradient": "plain input gradient (fwd + bwd)",
    "epsilon": "nrm, Epsilon everywhere, marginal at input",
    "preset": "nrm, EpsilonGammaFlat, marginal at input",
    "preset_epf": "nrm, EpsilonPlusFlat, marginal at input",
    "events64": "nrm, EpsilonGammaFlat, {n} channel heatmaps at " + EVENT_LAYER,
    "zennit_epf": "zennit, EpsilonPlusFlat composite, input gradient",
    "captum_eps": "captum LRP, EpsilonRule everywhere",
    "crp64": "zennit-crp generate, {n} channel conditions at " + EVENT_LAYER,
    "joint": "nrm, joint(features.26, features.28) 512×512",
}


def peers_available() -> dict[str, str]:
    """{peer: '' if importable, else why not}."""
    out = {}
    for name, module in (("zennit", "zennit"), ("captum", "captum.attr"), ("zennit-crp", "crp.attribution")):
        try:
            __import__(module)
            out[name] = ""
        except Exception as e:  # noqa: BLE001 — any import failure means the peer is not usable here
            out[name] = f"{type(e).__name__}: {e}"[:120]
    return out


def needs(case: str) -> str:
    return {"zennit_epf": "zennit", "captum_eps": "captum", "crp64": "zennit-crp"}.get(case, "")


CRP_BATCHES = (1, 4, 8, 16)
"""CRP's batch sizes in the sweep (``--crp-batches``); the README's first table used 16 alone."""
QUICK_CRP_BATCHES = (1, 4)


def sweeps(args) -> dict[str, list[dict]]:
    """Per peer case, the settings that change its speed (one setting: nothing to sweep)."""
    return {"crp64": [{"batch": b, "no_param_grad": True} for b in args.crp_batches],
            "zennit_epf": [{"context": "per call"}, {"context": "held"}],
            "captum_eps": [{}]}


def setting_text(setting: dict) -> str:
    if "batch" in setting:
        return f"batch {setting['batch']}" + ("" if setting.get("no_param_grad", True) else ", with weight gradients")
    if "context" in setting:
        return f"composite context {setting['context']}"
    return "default"


def make_case(name: str, model, x, target: int, events: int, crp_batch: int = 16, setting: dict | None = None):
    """A function running ``name`` once (at ``setting``, for a peer case of :func:`sweeps`)
    and returning {"total": seconds, …phases}."""
    setting = setting or {}
    if name in bench_core.CASES:
        return bench_core.make_case(name, model, x, target, events)
    if name == "preset_epf":
        rules = nrm.presets.EpsilonPlusFlat()

        def run():
            t0 = time.perf_counter()
            m = nrm.explain(model, x, target=target, rules=rules)
            t1 = time.perf_counter()
            m.marginal("input")
            t2 = time.perf_counter()
            return {"total": t2 - t0, "explain": t1 - t0, "marginal": t2 - t1}
        return run
    if name == "zennit_epf":
        from nrm_verify.peers import zennit as zpeer
        composite = zpeer.builtin_composite("epsilon_plus_flat")
        if setting.get("context") == "held":
            return _zennit_held(model, x, target, composite)

        def run():
            t0 = time.perf_counter()
            zpeer.relevance(model, x, target, composite)
            return {"total": time.perf_counter() - t0}
        return run
    if name == "captum_eps":
        from nrm_verify.peers import captum as cpeer
        rules = nrm.rules.Epsilon(1e-6)

        def run():
            t0 = time.perf_counter()
            cpeer.relevance(model, x, target, rules)
            return {"total": time.perf_counter() - t0}
        return run
    if name == "crp64":
        from crp.attribution import CondAttribution

        from nrm_verify.peers import zennit as zpeer
        composite = zpeer.composite(model, nrm.presets.EpsilonGammaFlat(), x=x)
        conditions = [{"y": [target], EVENT_LAYER: [c]} for c in range(events)]
        batch = setting.get("batch", crp_batch)
        no_param_grad = setting.get("no_param_grad", True)

        def run():
            grads = [p.requires_grad for p in model.parameters()]
            t0 = time.perf_counter()
            attribution = CondAttribution(model, no_param_grad=no_param_grad)
            data = x.detach().clone().requires_grad_(True)
            # generate() yields one result per batch of conditions; draining it does the work
            collections.deque(attribution.generate(data, conditions, composite, batch_size=batch,
                                                   verbose=False), maxlen=0)
            seconds = time.perf_counter() - t0
            for p, g in zip(model.parameters(), grads):  # no_param_grad switched them off: the other cases' model
                p.requires_grad_(g)
            return {"total": seconds}
        return run
    if name == "joint":
        rules = nrm.presets.EpsilonGammaFlat()

        def run():
            t0 = time.perf_counter()
            m = nrm.explain(model, x, target=target, rules=rules)
            J = m.joint(*JOINT_LAYERS)
            t1 = time.perf_counter()
            return {"total": t1 - t0, "shape": list(J.shape)}
        return run
    raise ValueError(f"unknown case {name!r}; choose from {list(CASES) + ['joint']}")


def _zennit_held(model, x, target, composite):
    """zennit with its composite registered once, outside the timed calls (as a user
    computing many heatmaps inside one ``with Gradient(model, composite)`` would): the
    timed part is a forward and a gradient through the hooked model. The hooks stay on
    ``model`` only while a run is timed (registered before, removed after, untimed)."""
    from nrm_verify.peers import zennit as zpeer

    def run():
        data = x.detach().clone().requires_grad_(True)
        with composite.context(model) as modified:
            t0 = time.perf_counter()
            y = modified(data)
            torch.autograd.grad(y, [data], grad_outputs=zpeer.start_vector(y, target))
            seconds = time.perf_counter() - t0
        return {"total": seconds}
    return run


def sweep(cases, settings: dict[str, list[dict]], model, x, target, events, warmup: int, progress=None,
          timer=None) -> dict[str, dict]:
    """Time every setting of each swept case once (after ``warmup`` untimed runs of it) and
    pick the fastest: {case: {"runs": [{"setting", "seconds"}], "best": setting}}. Cases
    with one setting are not timed here (their setting is the best)."""
    timer = timer or (lambda case, setting: make_case(case, model, x, target, events, setting=setting))
    out = {}
    for case in cases:
        options = settings.get(case, [{}])
        if len(options) < 2:
            out[case] = {"runs": [], "best": options[0]}
            continue
        runs = []
        for setting in options:
            run = timer(case, setting)
            for _ in range(warmup):
                run()
            if progress:
                progress(f"sweep {case}: {setting_text(setting)}")
            gc.collect()
            runs.append({"setting": setting, "seconds": run()["total"]})
        best = min(runs, key=lambda r: r["seconds"])
        out[case] = {"runs": runs, "best": best["setting"]}
    return out


def time_cases(cases, model, x, target, events, warmup, repeats, crp_batch, progress=None, best=None):
    best = best or {}
    runs = {c: make_case(c, model, x, target, events, crp_batch, setting=best.get(c)) for c in cases}
    for _ in range(warmup):
        for c in cases:
            runs[c]()
    samples = {c: [] for c in cases}
    for r in range(repeats):
        for c in cases:
            gc.collect()
            if progress:
                progress(f"round {r + 1}/{repeats}: {c}")
            samples[c].append(runs[c]())
    return {c: {"median_s": statistics.median(s["total"] for s in samples[c]),
                "min_s": min(s["total"] for s in samples[c]),
                "runs_s": [round(s["total"], 4) for s in samples[c]]} for c in cases}


def child(case: str, size: int, threads: int, events: int, crp_batch: int, setting: dict | None = None) -> dict:
    """In a fresh process: seconds and peak resident memory of one run of ``case`` (at
    ``setting``) above the resident model and input (VmHWM reset just before the run)."""
    torch.set_num_threads(threads)
    model, x, target = bench_core.build(size)
    run = make_case(case, model, x, target, events, crp_batch, setting=setting)
    gc.collect()
    resident = bench_core._status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # no /proc/self/clear_refs (not Linux): the peak then counts from process start
        pass
    phases = run()
    peak = bench_core._status_kib("VmHWM")
    out = {"seconds": phases["total"]}
    if peak is not None and resident is not None:
        out.update(resident_mib=resident / 1024, peak_mib=peak / 1024, growth_mib=(peak - resident) / 1024)
    if "shape" in phases:
        out["shape"] = phases["shape"]
    return out


def in_child(case: str, args, timeout: float, setting: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--size", str(args.size), "--threads", str(args.threads),
           "--events", str(args.events), "--crp-batch", str(args.crp_batch), "--setting", json.dumps(setting or {})]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    if run.returncode != 0:
        return {"error": (run.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def table(result: dict) -> str:
    """The comparison table: median seconds, ratio to the gradient and to the targets."""
    cases, events = result["cases"], result["events"]
    base = cases["gradient"]["median_s"]
    header = f"{'case':<11} {'what':<58} {'median s':>9} {'× grad':>8} {'target':>8} {'peak +MiB':>10}"
    lines = [header, "-" * len(header)]
    for c, f in cases.items():
        what = LABELS[c].format(n=events)
        if "error" in f:
            lines.append(f"{c:<11} {what:<58} {'—':>9} {'':>8} {'':>8} {'':>10}  ({f['error']})")
            continue
        target = f"≤ {TARGETS[c]:.2f}×" if c in TARGETS else ""
        mem = result.get("memory", {}).get(c, {}).get("growth_mib")
        mark = "" if c not in TARGETS else ("  ok" if f["median_s"] / base <= TARGETS[c] else "  MISSED")
        lines.append(f"{c:<11} {what:<58} {f['median_s']:9.3f} {f['median_s'] / base:7.2f}× {target:>8} "
                     f"{'' if mem is None else f'{mem:10.0f}'}{mark}")
    for c, why in result.get("not_run", {}).items():
        lines.append(f"{c:<11} {LABELS[c].format(n=events):<58} {'—':>9}  not run: {why}")
    j = result.get("joint")
    if j:
        if "error" in j:
            lines.append(f"{'joint':<11} {LABELS['joint']:<58} {'—':>9}  ({j['error']})")
        else:
            lines.append(f"{'joint':<11} {LABELS['joint']:<58} {j['seconds']:9.3f} {j['seconds'] / base:7.2f}× "
                         f"{'':>8} {j.get('growth_mib', float('nan')):10.0f}  (one run, own process)")
    for c, sw in result.get("sweep", {}).items():
        if sw["runs"]:
            runs = ", ".join(f"{setting_text(r['setting'])} {r['seconds']:.3f} s" for r in sw["runs"])
            lines.append(f"{c} settings (one run each): {runs} → fastest: {setting_text(sw['best'])}, timed above")
    cmp = result.get("crp_comparison")
    if cmp:
        lines.append(f"events64 against crp64 at its fastest setting: {cmp['speedup']:.1f}× faster "
                     f"(target ≥ {CRP_SPEEDUP:.0f}×: "
                     f"{'ok' if cmp['meets_speed'] else 'MISSED'})"
                     + ("" if cmp.get("memory_ratio") is None else
                        f", peak memory {cmp['memory_ratio']:.2f} of crp64's (target ≤ {CRP_MEMORY:.2f}: "
                        f"{'ok' if cmp['meets_memory'] else 'MISSED'})"))
    return "\n".join(lines)


def run_benchmark(args, progress=None) -> dict:
    torch.set_num_threads(args.threads)
    available = peers_available()
    cases, not_run = list(NRM_CASES), {}
    for c in PEER_CASES:
        why = available[needs(c)] if not args.no_peers else "--no-peers"
        if why:
            not_run[c] = "--no-peers" if args.no_peers else f"{needs(c)} not installed (run from .venv-peers)"
        else:
            cases.append(c)
    model, x, target = bench_core.build(args.size)
    load_before = os.getloadavg()
    swept = sweep([c for c in cases if c in PEER_CASES], sweeps(args), model, x, target, args.events, args.warmup,
                  progress)
    best = {c: sw["best"] for c, sw in swept.items()}
    figures = time_cases(cases, model, x, target, args.events, args.warmup, args.repeats, args.crp_batch, progress,
                         best=best)
    for c, setting in best.items():
        figures[c]["setting"] = setting
    base = figures["gradient"]["median_s"]
    for c, f in figures.items():
        f["ratio_to_gradient"] = f["median_s"] / base
        if c in TARGETS:
            f["target_ratio"], f["meets_target"] = TARGETS[c], f["ratio_to_gradient"] <= TARGETS[c]
    result = {"benchmark": "bench_peers", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": bench_core.machine(), "threads": torch.get_num_threads(),
              "input": [1, 3, args.size, args.size],
              "dtype": "float32", "repeats": args.repeats, "warmup": args.warmup, "events": args.events,
              "crp_batches": list(args.crp_batches), "sweep": swept, "peers": available, "cases": figures,
              "not_run": not_run, "memory": {}}
    if args.memory:
        for c in MEMORY_CASES:
            if c in figures:
                if progress:
                    progress(f"peak memory of {c} (own process)")
                result["memory"][c] = in_child(c, args, args.child_timeout, best.get(c))
    if not args.skip_joint:
        if progress:
            progress("joint features.26 × features.28 (own process)")
        result["joint"] = in_child("joint", args, args.child_timeout)
    if "crp64" in figures:
        speed = figures["crp64"]["median_s"] / figures["events64"]["median_s"]
        cmp = {"speedup": speed, "meets_speed": speed >= CRP_SPEEDUP}
        mem = result["memory"]
        if "growth_mib" in mem.get("events64", {}) and "growth_mib" in mem.get("crp64", {}):
            ratio = mem["events64"]["growth_mib"] / max(mem["crp64"]["growth_mib"], 1e-9)
            cmp.update(memory_ratio=ratio, meets_memory=ratio <= CRP_MEMORY)
        result["crp_comparison"] = cmp
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--setting", default="{}", help=argparse.SUPPRESS)
    return p


def settle(args) -> None:
    """Fill the defaults that depend on --quick."""
    args.size = args.size if args.size is not None else (32 if args.quick else 224)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    args.output = args.output or str(HERE / "results" / ("peers-quick.json" if args.quick else "peers.json"))
    for name in ("size", "repeats", "events", "threads", "crp_batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.crp_batches is None:
        args.crp_batches = QUICK_CRP_BATCHES if args.quick else CRP_BATCHES
    elif isinstance(args.crp_batches, str):
        try:
            args.crp_batches = tuple(int(b) for b in args.crp_batches.split(",") if b.strip())
        except ValueError:
            raise ValueError(f"--crp-batches takes whole numbers separated by commas, got {args.crp_batches!r}") \
                from None
    if not args.crp_batches or min(args.crp_batches) < 1:
        raise ValueError(f"--crp-batches must list batch sizes >= 1, got {args.crp_batches!r}")
    if args.size < 32:
        raise ValueError(f"--size must be at least 32 (VGG16 halves the input five times), got {args.size}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.size or 224, args.threads, args.events, args.crp_batch,
                               json.loads(args.setting))))
        return 0
    try:
        settle(args)
    except ValueError as e:
        print(f"bench_peers: error: {e}", file=sys.stderr)
        return 2
    result = run_benchmark(args, progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    print(f"VGG16-shaped network, input 1×3×{args.size}×{args.size} float32, CPU, {result['threads']} threads, "
          f"torch {torch.__version__}; median of {args.repeats} after {args.warmup} warm-up")
    print(table(result))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
