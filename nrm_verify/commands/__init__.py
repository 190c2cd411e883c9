"""Sub-commands of ``nrm-verify``: one module each, with ``register(subparsers)`` that adds
its parser and sets ``run`` (a function of the parsed arguments returning the exit status).

Exit statuses are shared: 0 everything held, 1 a law was violated (or a check failed),
2 a usage error (bad argument, missing file), printed as one line without a traceback.
"""

COMMANDS = ("check", "check_rule", "check_layer", "prove", "explain", "bench", "snapshot")
"""Module names in the order ``--help`` lists them; a module that is absent is skipped."""
