"""``nrm-verify snapshot record|compare``: regression snapshots of explainers (:mod:`nrm_verify.report.snapshots`).

    nrm-verify snapshot record  snaps/mine --explainer path/to/explain.py:explain --cases quick
    nrm-verify snapshot compare snaps/mine                  # re-runs the recorded explainers
    nrm-verify snapshot record  tests/snapshots/nrm-core --suite nrm-core --force   # the project's own

Exit status: 0 every result within tolerance (or recorded), 1 a tolerance exceeded or a
result missing, extra or raising, 2 a usage error (one line, no traceback).
"""

from __future__ import annotations

import json
import shlex
import sys

from nrm_verify.commands.arguments import (
    nonnegative_float,
    nonnegative_int,
    one_line,
    output_file,
    output_problem,
    positive_int,
)


def _explainers(args) -> list[str] | None:
    from nrm_verify.report.snapshots import SUITES, SnapshotError

    specs = list(args.explainer or [])
    for suite in args.suite or []:
        if suite not in SUITES:
            raise SnapshotError(f"unknown suite {suite!r}; suites are {sorted(SUITES)}")
        specs += SUITES[suite]
    return specs or None


def _command_line(args) -> str:
    """The record command as a canonical line (stored in the manifest: how to record it again)."""
    words = ["nrm-verify", "snapshot", "record", args.path]
    for e in args.explainer or []:
        words += ["--explainer", e]
    for s in args.suite or []:
        words += ["--suite", s]
    words += ["--cases", args.cases]
    if args.rtol is not None:
        words += ["--rtol", repr(args.rtol)]
    if args.atol:
        words += ["--atol", repr(args.atol)]
    return " ".join(map(shlex.quote, words)) + " --force"


def _error(action: str, message: str) -> int:
    print(f"nrm-verify snapshot {action}: error: {one_line(message)}", file=sys.stderr)
    return 2


def run_record(args) -> int:
    from nrm_verify.report.snapshots import SnapshotError, record, snapshot_paths

    for path in snapshot_paths(args.path):
        problem = output_problem(path, create_folders=True)
        if problem:
            return _error("record", f"cannot write the snapshot {args.path}: {problem}")
    try:
        specs = _explainers(args)
        if not specs:
            raise SnapshotError("give at least one --explainer SPEC (or --suite NAME)")
        snap = record(args.path, specs, cases=args.cases, rtol=args.rtol, atol=args.atol, overwrite=args.force,
                      command=_command_line(args))
    except SnapshotError as e:
        return _error("record", str(e))
    n_out = sum(len(r["outputs"]) for r in snap.manifest["results"])
    m = snap.manifest
    print(f"recorded {len(m['results'])} results ({len(m['explainers'])} explainer(s) × {len(m['cases'])} case(s), "
          f"{n_out} arrays) in {args.path}")
    return 0


RUN_ONLY = ("model", "data", "state_dict", "seed", "worst", "layer", "out", "batch_size", "size", "normalize",
            "engine", "address", "concurrency", "worker_cpus", "worker_gpus")
"""compare's options that only a run folder takes (a snapshot holds its own models and inputs)."""


def compare_run_folder(args) -> int:
    """``snapshot compare RUN_FOLDER --model M --data D --explainer SPEC``: the run is the record;
    the explainer is compared with it sample by sample (:mod:`nrm_verify.report.dataset.regress`)."""
    from nrm_verify.commands.arguments import UsageError
    from nrm_verify.commands.loading import load_model
    from nrm_verify.commands.run import engine_options, load_data

    try:
        from nrm_verify.report.dataset import RunError, compare_run
        if len(args.explainer or []) != 1 or args.suite:
            raise UsageError("a run folder is compared with one --explainer SPEC (no --suite)")
        if not args.data:
            raise UsageError("a run folder is compared on its dataset: give --data (the run's DATA)")
        for name in ("cases", "case", "failures_only"):
            if getattr(args, name):
                raise UsageError(f"--{name.replace('_', '-')} is for snapshots; a run folder has samples, not cases")
        model, _ = load_model(args.model, args.state_dict, args.seed)
        result = compare_run(args.path, model, load_data(args.data), args.explainer[0], layer=args.layer,
                             worst=args.worst, batch_size=args.batch_size, rtol=args.rtol, atol=args.atol or 0.0,
                             size=args.size, normalize=args.normalize, **engine_options(args))
        page = result.write(args.out or f"{args.path.rstrip('/')}/comparison")
    except (ImportError, UsageError) as e:
        return _error("compare", str(e))
    except Exception as e:  # noqa: BLE001 — the named errors of nrm and of the run, one line each
        import nrm
        if not isinstance(e, (RunError, nrm.NRMError)):
            raise
        return _error("compare", f"{type(e).__name__}: {e}")
    print(result.summary())
    print(f"report: {page}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=2)
    return result.exit_code


def run_compare(args) -> int:
    from nrm_verify.report.snapshots import SnapshotError, compare

    given = [f"--{n.replace('_', '-')}" for n in RUN_ONLY if getattr(args, n) not in (None, DEFAULTS.get(n))]
    if _is_run(args.path):
        return compare_run_folder(args)
    if given:
        return _error("compare", f"{' '.join(given)} only go with a run folder; {args.path} is a snapshot")
    try:
        report = compare(args.path, _explainers(args), cases=args.cases, only_cases=args.case, rtol=args.rtol,
                         atol=args.atol)
    except SnapshotError as e:
        return _error("compare", str(e))
    text = str(report)
    if args.failures_only:
        text = "\n".join([text.splitlines()[0], *map(str, report.failures), text.splitlines()[-1]])
    print(text)
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(report.to_dict(), fh, indent=2)
        except OSError as e:
            return _error("compare", f"--json {args.json}: cannot write it ({e.strerror or e})")
    return report.exit_code


DEFAULTS = {"worst": 5, "layer": "input", "batch_size": 32, "size": 224, "normalize": "imagenet", "seed": 0,
            "engine": "local", "concurrency": 2, "worker_cpus": 1.0, "worker_gpus": 0.0}


def _is_run(path: str) -> bool:
    from pathlib import Path
    if not (Path(path) / "manifest.json").is_file():
        return False
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("format", "").startswith("nrm-run/")
    except (OSError, ValueError, AttributeError):
        return False


def register(commands) -> None:
    from nrm_verify.commands.run import add_engine_arguments

    snapshot = commands.add_parser(
        "snapshot", help="record an explainer's outputs on seeded cases, or compare a later run against them",
        description="Regression snapshots: 'record' runs explainers on a fixed, seeded set of cases and writes "
                    "PATH.json (manifest) and PATH.npz (arrays); 'compare' runs them again and reports, per "
                    "explainer and case, the worst deviation, where, and the tolerance. See docs/regression.md.")
    actions = snapshot.add_subparsers(dest="action", metavar="ACTION", parser_class=type(snapshot))
    actions.required = True
    spec_help = ("explainer: nrm:Preset, nrm:Rule(args), nrm-relevance:Preset, zennit:Composite(args), "
                 "captum:Method(kw=…), package.module:function or path/file.py:function; LABEL=SPEC names it; "
                 "repeatable")

    rec = actions.add_parser("record", help="run the explainers on the cases and write the snapshot")
    rec.add_argument("path", help="snapshot name: writes PATH.json and PATH.npz")
    rec.add_argument("--explainer", "-e", action="append", metavar="SPEC", help=spec_help)
    rec.add_argument("--suite", action="append", metavar="NAME", help="a named list of explainers (nrm-core)")
    rec.add_argument("--cases", default="default", help="case set: default (mlp, small_cnn, vgg16), quick "
                                                        "(mlp, small_cnn) or module:function (default: default)")
    rec.add_argument("--rtol", type=nonnegative_float, default=None,
                     help="relative tolerance stored with each result (default by dtype: float64 1e-10, float32 1e-5)")
    rec.add_argument("--atol", type=nonnegative_float, default=0.0,
                     help="absolute tolerance stored with each result (default 0)")
    rec.add_argument("--force", action="store_true", help="overwrite an existing snapshot")
    rec.set_defaults(run=run_record)

    cmp = actions.add_parser("compare", help="run the explainers again and compare with the snapshot")
    cmp.add_argument("path", help="snapshot name (PATH.json and PATH.npz)")
    cmp.add_argument("--explainer", "-e", action="append", metavar="SPEC",
                     help=spec_help + " (default: the explainers the snapshot recorded)")
    cmp.add_argument("--suite", action="append", metavar="NAME", help="a named list of explainers (nrm-core)")
    cmp.add_argument("--cases", default=None,
                     help="compare on this case set instead of the recorded cases (new or gone cases fail)")
    cmp.add_argument("--case", action="append", metavar="NAME",
                     help="compare only this case (repeatable); recorded results of other cases are not selected")
    cmp.add_argument("--rtol", type=nonnegative_float, default=None, help="override the recorded relative tolerances")
    cmp.add_argument("--atol", type=nonnegative_float, default=None, help="override the recorded absolute tolerances")
    cmp.add_argument("--failures-only", action="store_true", help="print only the failing results")
    cmp.add_argument("--json", metavar="FILE", type=output_file, help="also write the comparison as JSON")
    ds = cmp.add_argument_group("a run folder as the record (docs/regression.md, 'Dataset scale')")
    ds.add_argument("--model", metavar="FILE.pt|MODULE:CLASS", help="the run's model (as nrm-verify run takes it)")
    ds.add_argument("--state-dict", metavar="FILE", help="weights to load into --model module:Class")
    ds.add_argument("--seed", type=nonnegative_int, default=0, help="the built-in weights' seed (default 0)")
    ds.add_argument("--data", metavar="DATA", help="the run's DATA (folder, .parquet index, .pt, module:factory())")
    ds.add_argument("--layer", default=DEFAULTS["layer"], help="the recorded marginal compared (default input)")
    ds.add_argument("--worst", type=positive_int, default=DEFAULTS["worst"],
                    help="the worst samples listed and drawn (default 5)")
    ds.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"],
                    help="samples per explainer call (default 32)")
    ds.add_argument("--size", type=positive_int, default=DEFAULTS["size"], help="image files: the run's --size (224)")
    ds.add_argument("--normalize", choices=["imagenet", "none"], default=DEFAULTS["normalize"],
                    help="image files: the run's --normalize (imagenet)")
    ds.add_argument("--out", metavar="DIR", help="where the comparison goes (default RUN/comparison)")
    add_engine_arguments(ds)
    cmp.set_defaults(run=run_compare)
