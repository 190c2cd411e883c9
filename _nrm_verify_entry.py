"""The entry points of nrm-verify (``pyproject.toml``): the ``nrm-verify`` command and the
``pytest11`` plugin.

They live outside the package because a core install (``pip install nrm-verify``: torch
and numpy only) still has them, while importing :mod:`nrm_verify` then fails for want of
its ``verify`` extra. From here that failure is one line and exit status 2 for the command,
and no plugin at all for pytest, whose start in a project of the user's would otherwise
fail on an installed plugin that cannot load (hypothesis keeps its pytest plugin outside
its package for a similar reason: ``_hypothesis_pytestplugin``).
"""

from __future__ import annotations

import sys


def _verify_missing(error: ImportError) -> bool:
    """Whether ``error`` is nrm_verify's own: its ``verify`` extra is not installed."""
    return error.name == "nrm_verify"


def main() -> int:
    """The ``nrm-verify`` command (:func:`nrm_verify.commands.main`)."""
    try:
        from nrm_verify.commands import main as command
    except ImportError as error:
        if not _verify_missing(error):
            raise
        print(f"nrm-verify: error: {error}", file=sys.stderr)
        return 2
    return command()


try:
    import nrm_verify  # noqa: F401 — cheap: it only looks for its extra
except ImportError as error:
    if not _verify_missing(error):
        raise
    pytest_plugins: list[str] = []
else:
    pytest_plugins = ["nrm_verify.pytest_plugin"]  # pytest loads it when it registers this module
