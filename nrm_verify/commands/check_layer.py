"""``nrm-verify check-layer``: the validator of :mod:`nrm_verify.validate.layers` for one layer kind.

Exit status: 0 nothing violated, 1 a check violated or the kind raising, 2 a usage error (a
bad option, an unknown check, an argument that is not a layer kind) as one line on stderr.
"""

from __future__ import annotations

import json
import sys

from nrm_verify.commands.arguments import one_line, output_file, positive_float, positive_int

PROG = "nrm-verify check-layer"


def run(args) -> int:
    from nrm_verify.validate.layers import check_layer

    report = check_layer(args.kind, profile=args.profile, max_examples=args.max_examples, only=args.law or None,
                         search_timeout=args.search_timeout)
    if report.invalid:
        print(f"{PROG}: error: {one_line(report.invalid)}", file=sys.stderr)
        return 2
    print(report)
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(report.to_dict(), fh, indent=2, default=repr)
        except OSError as e:
            print(f"{PROG}: error: --json {args.json}: cannot write it ({e.strerror or e})", file=sys.stderr)
            return 2
    return report.exit_code


def register(commands) -> None:
    check = commands.add_parser(
        "check-layer", help="check a layer kind: its map, transpose, kernels and the laws on networks around it",
        description="Build networks around the kind's examples and search for a violation of: the map reproduces "
                    "the module (K2), the transpose is its adjoint (K3), columns sum to one with ⊥ (L1), the engine "
                    "equals the exact oracle (K5) and the explicit reference (L18), L2–L9 and batch invariance. "
                    "Exit 1 on a violation, 2 if KIND is not a layer kind or an option is wrong (one line on stderr).")
    check.add_argument("kind", help="package.module:KindClass or path/to/file.py:KindClass (a subclass of "
                                    "nrm.layers.Linear, Elementwise, …)")
    check.add_argument("--profile", default=None, help="hypothesis profile: ci (default) or thorough")
    check.add_argument("--max-examples", type=positive_int, default=None,
                       help="cases per check (overrides the profile)")
    check.add_argument("--law", action="append", help="check only this one (K2, K3, K5, L1, …; any case); repeatable")
    check.add_argument("--search-timeout", type=positive_float, default=None,
                       help="seconds the search may take in all (default 300 with the ci profile, 3600 with "
                            "thorough); checks it does not reach are 'not settled'")
    check.add_argument("--json", metavar="FILE", type=output_file, help="also write the report as JSON")
    check.set_defaults(run=run)
