"""The peer suite's deviation records (``peer_tests/results/deviations.json``, written by every run
of ``peer_tests``: :func:`nrm_verify.validate.conformance.read_peer_results` reads them) as a
Markdown table, so that the tables of the README and ``docs/peers.md`` are printed from what the
suite measured, not written by hand::

    python -m nrm_verify.report.deviations --peer lxt --peer lxt-explicit

One row per (peer, rule, model): the number of compared layers, the largest max |R_nrm − R_peer|
over them, the largest max |R_nrm| (the scale) and their ratio, the relative deviation the
tests bound; whether the test states an equivalence or measures a convention difference on
purpose (``equivalence``: false).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nrm_verify.validate.conformance import PEER_RESULTS, read_peer_results


def table(records: Sequence[dict], peers: Sequence[str] | None = None) -> str:
    """The Markdown table of ``records`` (those of ``peers`` only, when given)."""
    groups: dict[tuple, dict] = {}
    for r in records:
        if peers and r.get("peer") not in peers:
            continue
        key = (str(r.get("peer")), str(r.get("rule")), str(r.get("model")), bool(r.get("equivalence")))
        g = groups.setdefault(key, {"layers": 0, "dev": 0.0, "scale": 0.0, "worst": 0.0})
        dev, scale = float(r.get("max_abs_dev", 0.0)), float(r.get("max_abs_relevance", 0.0) or 0.0)
        g["layers"] += 1
        g["dev"], g["scale"] = max(g["dev"], dev), max(g["scale"], scale)
        g["worst"] = max(g["worst"], dev / scale if scale > 0 else dev)
    lines = ["| peer | rule | model | compared | layers | max abs deviation | max abs R | worst relative |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for (peer, rule, model, equal), g in sorted(groups.items()):
        what = "equal" if equal else "a measured difference"
        lines.append(f"| {peer} | {rule} | {model} | {what} | {g['layers']} | {g['dev']:.1e} | {g['scale']:.1e} | "
                     f"{g['worst']:.1e} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nrm_verify.report.deviations",
                                     description="The peer suite's deviation records as a Markdown table.")
    parser.add_argument("results", nargs="?", type=Path, default=PEER_RESULTS,
                        help=f"the records (default {PEER_RESULTS})")
    parser.add_argument("--peer", action="append", help="only this peer (repeat for several); default all")
    args = parser.parse_args(argv)
    try:
        records = read_peer_results(args.results)
    except (OSError, ValueError) as e:
        print(f"nrm_verify.report.deviations: cannot read {args.results}: {e}; run the peer suite "
              "(.venv-peers/bin/python -m pytest peer_tests) to write it", file=sys.stderr)
        return 2
    print(table(records, args.peer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
