"""What every peer adapter shares: the command that builds the peer environment, the two
errors a peer raises (:class:`PeerMissingError`, :class:`PeerConventionError`), and
:func:`require`, which imports a peer or says how to install it. Re-exported by
:mod:`nrm_verify.peers`; the adapter modules import them from here (no import cycle
through the package)."""

from __future__ import annotations

import importlib
from types import ModuleType

SETUP_COMMAND = "bash scripts/setup-peers.sh"
"""Builds ``.venv-peers``: torch 2.14.1, torchvision, zennit, zennit-crp, captum, transformers 4.55.4, lxt 2.1."""


class PeerMissingError(ImportError):
    """A peer library (zennit, zennit-crp, captum) is not importable here."""


class PeerConventionError(ValueError):
    """An nrm rule or setting that the peer cannot express (its message says which and why)."""


def require(module: str, package: str) -> ModuleType:
    """Import ``module`` of the peer ``package``, or raise :class:`PeerMissingError` that
    names the environment to build."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise PeerMissingError(
            f"the peer '{package}' is not importable in this environment ({error}); build the peer environment "
            f"with `{SETUP_COMMAND}` and run under it: .venv-peers/bin/python -m pytest peer_tests"
        ) from error


def versions() -> dict[str, str]:
    """Installed versions of torch and the peers (``None`` for a missing one)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "torchvision", "zennit", "zennit-crp", "captum", "transformers", "lxt"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


__all__ = ["SETUP_COMMAND", "PeerMissingError", "PeerConventionError", "require", "versions"]
