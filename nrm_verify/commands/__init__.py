"""The ``nrm-verify`` command: the dispatcher (:mod:`~nrm_verify.commands.cli`) and one module
per sub-command, each with ``register(subparsers)`` that adds its parser and sets ``run`` (a
function of the parsed arguments returning the exit status).

    nrm-verify check-rule package.module:RuleClass
    python -m nrm_verify.commands check-layer examples/layers/channel_scale.py:ChannelScaleKind

Exit statuses are shared: 0 everything held, 1 a law was violated (or a check failed),
2 a usage error (bad argument, missing file), printed as one line without a traceback.
"""

from nrm_verify.commands.cli import COMMANDS, build_parser, main

__all__ = ["main", "build_parser", "COMMANDS"]
