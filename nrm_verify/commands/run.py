"""``nrm-verify run``: explain every sample of a dataset and write the results
(:mod:`nrm_verify.report.dataset`; ``docs/run.md``).

    nrm-verify run images/ --model net.pt --size 224 --layers input features.28 --out runs/net
    nrm-verify run data.pt --model "nrm_verify.zoo.models:small_cnn()" --laws L1 L9 --out runs/cnn

Rerunning the same command resumes: the samples already written are skipped. Exit status
0 when every sample has its row (failed samples are rows with their reason), 2 on a bad
argument (one line on stderr), 130 when interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nrm_verify.commands.arguments import (
    UsageError,
    nonnegative_float,
    nonnegative_int,
    one_line,
    positive_float,
    positive_int,
)

PROG = "nrm-verify run"


def load_data(spec: str):
    """DATA: a folder, a ``.parquet`` index, a ``.pt`` file (a tensor (N, …) or a dict with
    ``x`` and optional ``labels``), or ``module:factory()`` giving a dataset or a tensor."""
    import torch

    path = Path(spec)
    if path.is_dir() or (path.is_file() and path.suffix == ".parquet"):
        return str(path)
    if path.is_file() and path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 — torch.load's many errors for a file that is not a tensor
            raise UsageError(f"DATA {spec}: cannot read it with torch.load ({type(e).__name__})") from None
        if isinstance(obj, dict) and isinstance(obj.get("x"), torch.Tensor):
            labels = obj.get("labels", obj.get("label"))
            return (obj["x"], labels) if isinstance(labels, torch.Tensor) else obj["x"]
        if not isinstance(obj, torch.Tensor):
            raise UsageError(f"DATA {spec} holds a {type(obj).__name__}; give a tensor (N, ...) or a dict with 'x'")
        return obj
    if ":" in spec and not path.exists():
        from nrm_verify.properties.loader import load_object
        try:
            return load_object(spec)
        except Exception as e:  # noqa: BLE001 — the user's module raised while importing or building
            raise UsageError(f"cannot load DATA {spec!r}: {type(e).__name__}: {e}") from None
    raise UsageError(f"DATA {spec}: no such folder or file (give a folder of images, a .parquet index, a .pt "
                     "tensor or module:factory())")


def parse_target(text: str):
    if text in ("argmax", "label"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'argmax', 'label' or an output index, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"an output index is 0 or more, got {value}")
    return value


def run(args) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the finished batches are kept in {args.out}: rerun the same command to resume",
              file=sys.stderr)
        return 130
    except ImportError as e:  # the run extra (pyarrow, zarr) is missing
        message = str(e)
    except UsageError as e:
        message = str(e)
    except Exception as e:  # noqa: BLE001 — the named errors of nrm and of the run, one line each
        import nrm
        from nrm_verify.report.dataset import RunError
        if not isinstance(e, (RunError, nrm.NRMError)):
            raise
        message = f"{type(e).__name__}: {e}"
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    return 2


def _run(args) -> int:
    import torch

    from nrm_verify.commands.explain import parse_rules
    from nrm_verify.commands.loading import load_model
    from nrm_verify.report.dataset import run as run_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.state_dict and args.model and ":" not in args.model:
        raise UsageError("--state-dict goes with --model module:Class (a TorchScript file has its own weights)")
    data = load_data(args.data)
    model, what = load_model(args.model, args.state_dict, args.seed)
    rules = parse_rules(args.rules, None)
    result = run_dataset(model, data, args.out, rules=rules, targets=args.target, layers=args.layers,
                         full=args.full, top_k=args.top_k, channel_top_k=args.channel_top_k, laws=args.laws,
                         batch_size=args.batch_size, prefetch=args.prefetch, commit_seconds=args.commit_seconds,
                         seed=args.seed, size=args.size,
                         normalize=args.normalize, progress=False if args.quiet else None,
                         selection=args.selection, selection_draws=args.selection_draws, **engine_options(args))
    worst = result.reductions["l1_residual"].value if result.reductions and "L1" in args.laws else None
    print(f"{result.samples} samples of {args.data} through {what}: {result.written} explained now, "
          f"{result.skipped} already there, {result.errors} failed (their rows say why)"
          + (f"; worst L1 residual {worst:.3g}" if worst is not None and result.errors < result.samples else "")
          + f"; results in {result.folder}/")
    if args.report:
        from nrm_verify.report.dataset.report import build_report
        print(f"report: {build_report(result.folder)}")
    return 0


ENGINE_DEFAULTS = {"engine": "local", "address": None, "concurrency": 2, "worker_cpus": 1.0, "worker_gpus": 0.0}


def add_engine_arguments(group) -> None:
    """--engine, --address, --concurrency, --worker-cpus, --worker-gpus (run, and snapshot
    compare of a run folder)."""
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="where the batches run: local (default, in this process) or ray (Ray Data workers)")
    group.add_argument("--address", metavar="ADDR", help="with --engine ray: the Ray cluster ('auto', "
                                                         "'ray://head:10001'); default: a local Ray started for it")
    group.add_argument("--concurrency", type=positive_int, default=2, help="with --engine ray: workers (default 2)")
    group.add_argument("--worker-cpus", type=positive_float, default=1.0,
                       help="with --engine ray: CPUs per worker (fractions share a CPU; default 1)")
    group.add_argument("--worker-gpus", type=nonnegative_float, default=0.0,
                       help="with --engine ray: GPUs per worker (e.g. 1 on a GPU cluster; default 0)")


def engine_options(args) -> dict:
    """The engine's keyword arguments of ``run`` and ``compare_run`` from the parsed options."""
    return {name: getattr(args, name) for name in ENGINE_DEFAULTS}


def register(commands) -> None:
    p = commands.add_parser(
        "run", help="explain every sample of a dataset: Parquet rows, Zarr arrays, reductions (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Explain every sample of DATA with nrm.explain and write into --out:\n"
                    "  samples/*.parquet  one row per sample: target, f, absorbed mass per layer, top-k neurons,\n"
                    "                     channel sums, law residuals (pyarrow, pandas, polars read the folder)\n"
                    "  arrays.zarr        the whole marginals of --full layers, one chunk per sample\n"
                    "  reductions.json    moments, histograms, the top samples per channel\n"
                    "  manifest.json      what was run, versions, status\n"
                    "  report/index.html  with --report: box plots, residual histograms, top samples, curves\n"
                    "Rerun the same command to resume (the samples already written are skipped).\n\n"
                    "Examples:\n"
                    "  nrm-verify run images/ --model net.pt --layers input features.28 --out runs/net\n"
                    "  nrm-verify run data.pt --model 'nrm_verify.zoo.models:small_cnn()' --laws L1 L9 --out runs/cnn\n"
                    "  nrm-verify run images/ --model net.pt --engine ray --address auto --worker-gpus 1 --out r/\n\n"
                    "Exit status 0 when every sample has its row, 2 on a bad argument, 130 when interrupted.")
    p.add_argument("data", metavar="DATA", help="a folder of images (sub-folders = classes) or .npy arrays, a "
                                                ".parquet index (column path, optional id and label), a .pt tensor "
                                                "(N, ...) or dict {'x', 'labels'}, or module:factory()")
    g = p.add_argument_group("the model")
    g.add_argument("--model", metavar="FILE.pt|MODULE:CLASS",
                   help="a TorchScript nn.Sequential, or module:Class / file.py:Class / module:factory() "
                        "(default: the built-in VGG16 layout, seeded weights)")
    g.add_argument("--state-dict", metavar="FILE", help="weights to load into --model module:Class")
    g.add_argument("--rules", default="EpsilonGammaFlat", help="a preset or one rule with literal arguments "
                                                               "(default EpsilonGammaFlat)")
    g.add_argument("--target", type=parse_target, default="argmax",
                   help="'argmax' (default), 'label' (the dataset's labels) or one output index for every sample")
    g.add_argument("--seed", type=nonnegative_int, default=0,
                   help="torch's seed, and the built-in weights' (default 0)")
    w = p.add_argument_group("what to compute")
    w.add_argument("--layers", nargs="+", default=["input"], metavar="LAYER",
                   help="layers whose top-k neurons and channel sums go in each row (default input)")
    w.add_argument("--full", nargs="*", default=["input"], metavar="LAYER",
                   help="layers whose whole marginal is stored in arrays.zarr (default input; --full alone: none)")
    w.add_argument("--top-k", type=nonnegative_int, default=5, help="neurons by |m| per layer and row (default 5)")
    w.add_argument("--channel-top-k", type=positive_int, default=8,
                   help="samples kept per channel in the reductions (relevance maximization, default 8)")
    w.add_argument("--laws", nargs="*", default=["L1"], choices=["L1", "L9"],
                   help="laws checked per sample (default L1; L9 costs one more pass per sample)")
    w.add_argument("--selection", nargs="*", default=[], metavar="LAYER",
                   help="layers whose neuron-selection curves (top-k channels kept, by relevance, gradient×input "
                        "and random) are computed per sample and averaged over the dataset")
    w.add_argument("--selection-draws", type=nonnegative_int, default=3,
                   help="random rankings averaged in the 'random' selection curve (default 3; 0: none)")
    w.add_argument("--report", action="store_true",
                   help="write the report (OUT/report/index.html) when the run ends, as `nrm-verify report OUT` does")
    i = p.add_argument_group("reading and running")
    i.add_argument("--out", required=True, metavar="DIR", help="the output folder (a rerun resumes in it)")
    i.add_argument("--size", type=positive_int, default=224, help="image files are resized to SIZE×SIZE (default 224)")
    i.add_argument("--normalize", choices=["imagenet", "none"], default="imagenet",
                   help="how image pixels in [0, 1] are normalized (default imagenet)")
    i.add_argument("--batch-size", type=positive_int, default=32, help="samples per explain call (default 32)")
    i.add_argument("--prefetch", type=nonnegative_int, default=2, help="batches read ahead (default 2)")
    i.add_argument("--commit-seconds", type=nonnegative_float, default=1.0, metavar="S",
                   help="the local engine commits the batches explained within S seconds as one part "
                        "(default 1; 0: every batch alone); a killed run loses at most that much work")
    add_engine_arguments(i)
    i.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads")
    i.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=run)
