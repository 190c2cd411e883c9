"""``nrm-verify check-rule``: the validator of :mod:`nrm_verify.validate` for one rule."""

from __future__ import annotations

import json


def run(args) -> int:
    from ..validate import check_rule

    report = check_rule(args.rule, profile=args.profile, max_examples=args.max_examples, only=args.law or None,
                        symbolic=not args.no_symbolic, symbolic_timeout=args.symbolic_timeout)
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2, default=repr)
    return report.exit_code


def register(commands) -> None:
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
    check.set_defaults(run=run)
