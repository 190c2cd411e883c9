"""``nrm-verify check-rule``: the validator of :mod:`nrm_verify.validate.rules` for one rule.

Exit status: 0 no law violated, 1 a law violated or the rule raising, 2 a usage error (a
bad option, an unknown law, an argument that is not a rule) as one line on stderr.
"""

from __future__ import annotations

import json
import sys

from nrm_verify.commands.arguments import one_line, output_file, positive_float, positive_int

PROG = "nrm-verify check-rule"


def run(args) -> int:
    from nrm_verify.validate.rules import UnknownLaw, check_rule, normalize_laws

    try:
        laws = normalize_laws(args.law) if args.law else None
    except UnknownLaw as e:
        return _usage(f"--law: {e}")
    report = check_rule(args.rule, profile=args.profile, max_examples=args.max_examples, only=laws,
                        symbolic=not args.no_symbolic, symbolic_timeout=args.symbolic_timeout,
                        search_timeout=args.search_timeout)
    if report.invalid:
        return _usage(report.invalid)
    print(report)
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(report.to_dict(), fh, indent=2, default=repr)
        except OSError as e:
            return _usage(f"--json {args.json}: cannot write it ({e.strerror or e})")
    return report.exit_code


def _usage(message: str) -> int:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    return 2


def register(commands) -> None:
    check = commands.add_parser(
        "check-rule", help="check a propagation rule against every law of the measure",
        description="Run the symbolic proofs and a hypothesis search for every applicable law; print the verdicts "
                    "law by law with runnable counterexamples. Exit 1 on a violation, 2 if RULE is not a rule or an "
                    "option is wrong (one line on stderr).")
    check.add_argument("rule", help="package.module:RuleClass, package.module:factory(), "
                                    "package.module:RuleClass(literal args) or path/to/file.py:RuleClass")
    check.add_argument("--profile", default=None, help="hypothesis profile: ci (default) or thorough")
    check.add_argument("--max-examples", type=positive_int, default=None, help="cases per law (overrides the profile)")
    check.add_argument("--law", action="append",
                       help="check only this law (L1, L7, INV …; case does not matter); repeatable")
    check.add_argument("--no-symbolic", action="store_true",
                       help="skip the symbolic proofs (the search alone decides; often most of the time)")
    check.add_argument("--symbolic-timeout", type=positive_float, default=40.0,
                       help="seconds the symbolic proofs may take, in parallel with the search (default 40)")
    check.add_argument("--search-timeout", type=positive_float, default=None,
                       help="seconds the property search may take in all, shared among the laws (default 300 with "
                            "the ci profile, 3600 with thorough); laws it does not reach are 'not settled'")
    check.add_argument("--json", metavar="FILE", type=output_file, help="also write the report as JSON")
    check.set_defaults(run=run)
