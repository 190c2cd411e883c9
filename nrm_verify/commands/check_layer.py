"""``nrm-verify check-layer``: the validator of :mod:`nrm_verify.validate_layer` for one layer kind."""

from __future__ import annotations

import json
import sys


def run(args) -> int:
    from ..validate_layer import check_layer

    if args.max_examples is not None and args.max_examples < 1:
        print(f"nrm-verify check-layer: error: --max-examples must be at least 1, got {args.max_examples}",
              file=sys.stderr)
        return 2
    report = check_layer(args.kind, profile=args.profile, max_examples=args.max_examples, only=args.law or None)
    if report.invalid:
        print(f"nrm-verify check-layer: error: {report.invalid}", file=sys.stderr)
        return 2
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2, default=repr)
    return report.exit_code


def register(commands) -> None:
    check = commands.add_parser(
        "check-layer", help="check a layer kind: its map, transpose, kernels and the laws on networks around it",
        description="Build networks around the kind's examples and search for a violation of: the map reproduces "
                    "the module (K2), the transpose is its adjoint (K3), columns sum to one with ⊥ (L1), the engine "
                    "equals the exact oracle (K5) and the explicit reference (L18), L2–L9 and batch invariance. "
                    "Exit 1 on a violation, 2 if KIND is not a layer kind.")
    check.add_argument("kind", help="package.module:KindClass or path/to/file.py:KindClass (a subclass of "
                                    "nrm.layers.Linear, Elementwise, …)")
    check.add_argument("--profile", default=None, help="hypothesis profile: ci (default) or thorough")
    check.add_argument("--max-examples", type=int, default=None, help="cases per check (overrides the profile)")
    check.add_argument("--law", action="append", help="check only this law (K2, K3, K5, L1, …); repeatable")
    check.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    check.set_defaults(run=run)
