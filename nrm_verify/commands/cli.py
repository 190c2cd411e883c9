"""The ``nrm-verify`` command: a dispatcher over :mod:`nrm_verify.commands`.

    nrm-verify check-rule package.module:RuleClass        # or module:factory(), file.py:RuleClass(0.5)
    nrm-verify check-rule examples/rules/leaky.py:BiasDroppingZero --profile thorough --json report.json

Run ``nrm-verify --help`` for every sub-command. Exit status: 0 when everything held,
1 on a violation or a failed check, 2 on a usage error (a one-line message, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("check", "check_rule", "check_layer", "prove", "explain", "run", "report", "bench", "snapshot")
"""Module names in the order ``--help`` lists them; a module that is absent is skipped."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit status 2, as argparse does, without the usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, or of ``only`` (a command name such as
    ``check-rule``): then only that command's module is imported, so that a usage error
    of a light command is reported without importing torch."""
    parser = _Parser(prog="nrm-verify", description="Checks for the Normalized Relevance Measure (NRM).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for name in COMMANDS:
        if only is not None and name.replace("_", "-") != only:
            continue
        try:
            module = importlib.import_module(f"nrm_verify.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"nrm_verify.commands.{name}":
                raise
            continue
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argv[0] if argv else None
    known = {name.replace("_", "-") for name in COMMANDS}
    parser = build_parser(only=first if first in known else None)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
