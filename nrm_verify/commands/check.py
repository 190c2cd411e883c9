"""``nrm-verify check``: every built-in rule and preset against every law, as a table on
the terminal and a report folder (report.md, report.html, report.json, matrix.png,
deviations.png). The logic is :mod:`nrm_verify.validate.conformance`; the report is
:mod:`nrm_verify.report.conformance`.

Exit status: 0 when nothing was violated, 1 when a cell is violated, 2 on a usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nrm_verify.commands.arguments import output_problem
from nrm_verify.commands.progress import Progress

DEFAULT_OUT = "nrm-report"
QUICK_EXAMPLES = 5


def run(args) -> int:
    from nrm_verify.validate.conformance import Row, check, select_rows

    examples = args.examples if args.examples is not None else (QUICK_EXAMPLES if args.quick else None)
    if examples is not None and examples < 1:
        return _usage(f"--examples must be at least 1, got {examples}")
    problem = output_problem(Path(args.out) / "report.json", create_folders=True)
    if problem:
        return _usage(f"--out {args.out}: cannot write the report there: {problem}")
    try:
        rows = select_rows(args.only) if (args.only or not args.rule) else []
    except ValueError as e:
        return _usage(str(e))
    for spec in args.rule or []:
        from nrm_verify.validate.rules import InvalidRule, load_rule, rule_problem
        try:
            rule = load_rule(spec)
        except InvalidRule as e:
            return _usage(f"--rule {spec}: {e}")
        problem = rule_problem(rule)
        if problem:
            return _usage(f"--rule {spec}: {problem}")
        rows.append(Row.of_rule(rule, name=spec.rpartition(":")[2]))
    try:
        from nrm_verify.report import conformance as report
    except ImportError as e:
        return _usage(f"the report needs matplotlib ({e}); install nrm-verify with its dependencies")

    bar = Progress(len(rows) + 1 + (not args.no_peers), enabled=not args.no_progress)
    print(f"nrm-verify check: {len(rows)} rows, profile {args.profile!r}"
          + (f", {examples} cases per row" if examples else "")
          + ("" if not args.no_symbolic else ", no symbolic proofs") + ("" if not args.no_peers else ", no peers"),
          file=sys.stderr, flush=True)
    result = check(rows=rows, profile=args.profile, examples=examples, symbolic=not args.no_symbolic,
                   peers=not args.no_peers, progress=lambda label, done, total: bar.step(label))
    bar.finish()
    try:
        paths = report.write(result, args.out)
    except OSError as e:
        print(report.terminal_table(result))
        return _usage(f"cannot write the report to {args.out!r}: {e}")
    print(report.terminal_table(result))
    print()
    print(report.summary(result))
    for r, c in result.violated:
        cell = result.cell(r, c)
        print(f"  VIOLATED {r} {c}: {(cell.detail or cell.symbolic)[:300]}")
    for failure in result.failures:
        print(f"  FAILED {failure[:300]}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"report: {paths['md']} · {paths['html']} · {paths['json']} · figures {paths['matrix'].name}, "
          f"{paths['deviations'].name}")
    print("OK" if result.ok else "VIOLATED")
    return result.exit_code


def _usage(message: str) -> int:
    print(f"nrm-verify check: error: {message}", file=sys.stderr)
    return 2


def register(commands) -> None:
    from nrm_verify.properties.profiles import PROFILES

    p = commands.add_parser(
        "check", help="every built-in rule and preset against every law (table + report folder)",
        description="Check the conformance of every built-in rule (Zero, Epsilon, Gamma, ZPlus, AlphaBeta, WSquare, "
                    "Flat, ZBox) and preset against the laws L1-L18 and batch invariance: symbolic proofs, a "
                    "hypothesis search through nrm_verify.laws, and peer equivalence when .venv-peers exists. "
                    "Prints the table and writes report.md, report.html, report.json and PNG figures. Exit 0 when "
                    "nothing was violated, 1 otherwise, 2 on a usage error.")
    p.add_argument("--profile", choices=PROFILES, default="ci",
                   help="hypothesis profile: ci (20 cases per row, reproducible; default) or thorough (400)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_EXAMPLES} cases per row")
    p.add_argument("--examples", type=int, default=None, help="cases per row (overrides the profile and --quick)")
    p.add_argument("--only", action="append", metavar="RULE",
                   help="only this rule or preset (e.g. Epsilon, EpsilonPlusFlat); repeatable or comma-separated")
    p.add_argument("--rule", action="append", metavar="SPEC",
                   help="also check a rule of your own, as check-rule takes it (package.module:Rule or "
                        "file.py:Rule(args)); with --rule and no --only only the given rules are checked")
    p.add_argument("--no-symbolic", action="store_true", help="skip the symbolic proofs")
    p.add_argument("--no-peers", action="store_true", help="skip the peer-equivalence suite")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT}/)")
    p.set_defaults(run=run)
