"""``nrm-verify bench``: nrm beside the plain gradient and, where they are installed, the
peers (zennit, captum, zennit-crp), in one process; the 512×512 channel joint; and the cost
curves as events, batch and depth grow. The work is done by ``benchmarks/bench_peers.py``
and ``benchmarks/bench_scaling.py`` of the source checkout (which this command needs).

Exit status: 0 when the benchmark ran (missed speed targets are reported, not failed),
2 on a usage error or when the benchmark scripts are not found.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from nrm_verify.commands.arguments import output_problem, positive_float

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    path = BENCHMARKS / f"{name}.py"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: `nrm-verify bench` runs the benchmarks of a source checkout "
                                "(git clone the project and install it with `pip install -e .`)")
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run(args) -> int:
    try:
        peers = _load("bench_peers")
        scaling = _load("bench_scaling") if not args.skip_scaling else None
    except FileNotFoundError as e:
        print(f"nrm-verify bench: error: {e}", file=sys.stderr)
        return 2
    try:
        peers.settle(args)
    except ValueError as e:
        print(f"nrm-verify bench: error: {e}", file=sys.stderr)
        return 2
    problem = output_problem(args.output, create_folders=True)
    if problem:
        print(f"nrm-verify bench: error: --output: {problem}", file=sys.stderr)
        return 2
    say = (lambda s: None) if args.no_progress else (lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    result = peers.run_benchmark(args, progress=say)
    print(f"VGG16-shaped network, input 1×3×{args.size}×{args.size} float32, CPU, {result['threads']} threads; "
          f"median of {args.repeats} after {args.warmup} warm-up; load average "
          f"{result['load_average_before'][0]:.1f} → {result['load_average_after'][0]:.1f}")
    print(peers.table(result))
    missing = [p for p, why in result["peers"].items() if why]
    if missing and not args.no_peers:
        print(f"peers not installed here: {', '.join(missing)} (build .venv-peers with `bash scripts/setup-peers.sh` "
              "and run `.venv-peers/bin/nrm-verify bench`)")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")
    if scaling is not None:
        scale_args = argparse.Namespace(size=None, threads=args.threads, repeats=None, quick=args.quick,
                                        output=str(out.parent / ("scaling-quick.json" if args.quick
                                                                 else "scaling.json")))
        curves = scaling.run_scaling(scale_args, progress=say)
        print(scaling.table(curves))
        print(f"saved {curves['json']} and {curves['plot']}")
    return 0


def register(commands) -> None:
    p = commands.add_parser(
        "bench", help="time nrm against the gradient and the peers (zennit, captum, zennit-crp)",
        description="Benchmark on a VGG16-shaped network (seeded weights, CPU, 224×224, 2 threads): the plain "
                    "gradient, nrm with Epsilon, with presets, 64 channel-conditional heatmaps, the peers where "
                    "installed (run from .venv-peers), the 512×512 channel joint, and cost curves. Prints the "
                    "table with ratios to the gradient and to the targets; saves JSON in benchmarks/results/.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--skip-scaling", action="store_true", help="skip the cost curves (bench_scaling.py)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(run=run)


def add_arguments(p) -> None:
    p.add_argument("--size", type=int, default=None, help="input height and width (default 224; 32 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 3; 1 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per case first (default 1; 0 with --quick)")
    p.add_argument("--events", type=int, default=64, help="channel events / CRP conditions (default 64)")
    p.add_argument("--crp-batch", type=int, default=16,
                   help="CRP's batch size where no sweep chooses one (the memory and joint children; default 16)")
    p.add_argument("--crp-batches", default=None, metavar="B,B,…",
                   help="CRP batch sizes to sweep; the fastest is compared (default 1,4,8,16; 1,4 with --quick)")
    p.add_argument("--quick", action="store_true", help="a small size and one run (for tests)")
    p.add_argument("--no-peers", action="store_true", help="nrm cases only")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the peak-memory runs of events64 and crp64")
    p.add_argument("--skip-joint", action="store_true", help="skip the 512×512 joint between features.26 and .28")
    p.add_argument("--child-timeout", type=positive_float, default=900.0, help="seconds a memory or joint run may take")
    p.add_argument("--output", default=None, help="JSON file (default benchmarks/results/peers.json; "
                                                  "peers-quick.json with --quick)")


