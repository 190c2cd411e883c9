"""``nrm-verify prove``: the symbolic proofs of the laws (``python -m nrm_verify.symbolic.prove``
under the project's command). Writes ``proofs/REPORT.md``, or with ``--check`` exits 1 when
a proof fails or the committed report is stale; a selection (``--law``, ``--rule``,
``--arch``) prints its proofs and writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nrm_verify.commands.arguments import positive_int


def run(args) -> int:
    from nrm_verify.symbolic import prove

    try:
        args.law, args.rule, args.arch = prove.select(args.law, args.rule, args.arch)
    except ValueError as e:
        print(f"nrm-verify prove: error: {e}", file=sys.stderr)
        return 2
    if args.output is not None and not args.check and (args.output.is_dir() or not args.output.parent.is_dir()):
        print(f"nrm-verify prove: error: --output {args.output}: "
              + ("is a folder; give a file name" if args.output.is_dir() else
                 f"the folder {args.output.parent} does not exist"), file=sys.stderr)
        return 2
    argv = ["--workers", str(args.workers)]
    if args.check:
        argv.append("--check")
    if args.output is not None:
        argv += ["--output", str(args.output)]
    for flag, values in (("--law", args.law), ("--rule", args.rule), ("--arch", args.arch)):
        for v in values or []:
            argv += [flag, v]
    if args.quiet:
        argv.append("--quiet")
    return prove.main(argv)


def register(commands) -> None:
    p = commands.add_parser(
        "prove", help="run the symbolic proofs of the laws (writes or checks proofs/REPORT.md)",
        description="Prove the laws L1-L14 for every built-in rule on symbolic networks (sympy), and L1, L2, L7 "
                    "on a 2-token attention block (left out of a selection), as "
                    "`python -m nrm_verify.symbolic.prove` does. Exit 1 when a proof is not as expected (or, with "
                    "--check, when proofs/REPORT.md is stale).")
    p.add_argument("--check", action="store_true", help="exit 1 if a proof fails or the report is stale")
    p.add_argument("--output", type=Path, default=None, help="the report to write or check (default proofs/REPORT.md)")
    p.add_argument("--workers", type=positive_int, default=2, help="processes (default 2)")
    p.add_argument("--law", action="append",
                   help="run only these laws (e.g. L9; case does not matter); prints, writes nothing")
    p.add_argument("--rule", action="append", help="only these rule keys (zero, epsilon, gamma, …)")
    p.add_argument("--arch", action="append", help="only these architectures (2-2-1, 2-2-2-1, 3-2-2, conv)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)
