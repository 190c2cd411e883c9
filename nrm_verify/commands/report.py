"""``nrm-verify report RUN``: the report of a dataset run — an HTML page with box plots of the
absorbed mass per layer, the law residual histograms and the top samples per channel
(:mod:`nrm_verify.report.dataset.report`; ``docs/run.md``).

    nrm-verify run images/ --model net.pt --out runs/net
    nrm-verify report runs/net --open

Exit status 0 when the report is written, 2 on a bad argument (one line on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path

from nrm_verify.commands.arguments import UsageError, one_line, positive_int

PROG = "nrm-verify report"


def run(args) -> int:
    try:
        return _report(args)
    except (ImportError, UsageError) as e:  # the run or report extra is missing; a bad argument
        message = str(e)
    except Exception as e:  # noqa: BLE001 — the named errors of a run, one line each
        from nrm_verify.report.dataset import RunError
        if not isinstance(e, RunError):
            raise
        message = f"{type(e).__name__}: {e}"
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    return 2


def _report(args) -> int:
    from nrm_verify.report.dataset import build_report
    from nrm_verify.report.dataset.store import is_run

    if not is_run(args.folder):
        raise UsageError(f"{args.folder} is not the folder of a run (no manifest.json of nrm-verify run)")
    if not (Path(args.folder) / "reductions.json").is_file():
        raise UsageError(f"{args.folder}: the run has no committed sample yet (no reductions.json); rerun it to finish")
    data = None
    if args.data:
        from nrm_verify.commands.run import load_data
        data = load_data(args.data)
    page = build_report(args.folder, args.out, data=data, channels=args.channels)
    print(f"report of {args.folder}: {page}")
    if args.open:
        import webbrowser
        webbrowser.open(page.resolve().as_uri())
    return 0


def register(commands) -> None:
    p = commands.add_parser(
        "report", help="the report of a run: absorbed mass per layer, law residuals, top samples per channel (HTML)",
        description="Write RUN/report/index.html and its PNG figures: box plots of the absorbed mass per layer, "
                    "histograms of the L1 and L9 residuals, and per layer the top samples of each channel. "
                    "See docs/run.md.")
    p.add_argument("folder", metavar="RUN", help="the folder nrm-verify run wrote (--out)")
    p.add_argument("--data", metavar="DATA", help="the run's DATA, to draw the top samples' images when the run "
                                                  "read a tensor or module:factory() (a folder or index is reread)")
    p.add_argument("--out", metavar="DIR", help="where the report goes (default RUN/report)")
    p.add_argument("--channels", type=positive_int, default=16, help="channels drawn per layer (default 16)")
    p.add_argument("--open", action="store_true", help="open the page in the web browser")
    p.set_defaults(run=run)
