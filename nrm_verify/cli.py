"""The ``nrm-verify`` command.

    nrm-verify check-rule package.module:RuleClass        # or module:factory(), file.py:RuleClass(0.5)
    nrm-verify check-rule examples/rules/leaky.py:BiasDroppingZero --profile thorough --json report.json

Exit status: 0 when no law is violated, 1 on a violation or an error raised by the rule,
2 when the argument is not a rule (or a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _check_rule(args) -> int:
    from .validate import check_rule

    report = check_rule(args.rule, profile=args.profile, max_examples=args.max_examples, only=args.law or None,
                        symbolic=not args.no_symbolic, symbolic_timeout=args.symbolic_timeout)
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2, default=repr)
    return report.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nrm-verify", description="Checks for the Normalized Relevance Measure.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    check = commands.add_parser(
        "check-rule", help="check a propagation rule against every law of the measure",
        description="Run the symbolic proofs and a hypothesis search for every applicable law; print the verdicts "
                    "law by law with runnable counterexamples. Exit 1 on a violation, 2 if RULE is not a rule.")
    check.add_argument("rule", help="package.module:RuleClass, package.module:factory(), "
                                    "package.module:RuleClass(literal args) or path/to/file.py:RuleClass")
    check.add_argument("--profile", default=None, help="hypothesis profile: ci (default) or thorough")
    check.add_argument("--max-examples", type=int, default=None, help="cases per law (overrides the profile)")
    check.add_argument("--law", action="append", help="check only this law (L1, L7, INV …); repeatable")
    check.add_argument("--no-symbolic", action="store_true", help="skip the symbolic proofs")
    check.add_argument("--symbolic-timeout", type=float, default=40.0,
                       help="seconds the symbolic proofs may take, in parallel with the search (default 40)")
    check.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    check.set_defaults(run=_check_rule)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
