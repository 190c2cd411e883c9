"""What every peer adapter shares: the command that builds the peer environment, the two
errors a peer raises (:class:`PeerMissingError`, :class:`PeerConventionError`), and
:func:`require`, which imports a peer or says how to install it. Re-exported by
:mod:`nrm_verify.peers`; the adapter modules import them from here (no import cycle
through the package)."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType

import torch
from torch import nn

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


def product_problem(network, peer: str) -> list[str]:
    """The refusal every LRP peer without a product rule shares: the first product of
    activations, named (the peer's gradient gives every factor the whole product, where nrm
    splits it by the shares θ); [] when the network multiplies no activations."""
    products = [b.name for b in network.blocks[1:] if b.kind == "product"]
    if not products:
        return []
    return [f"'{products[0]}' multiplies activations ({len(products)} such products): {peer} has no rule for a "
            "product, and the gradient it falls back to gives every factor the whole product, where nrm splits it "
            "by the shares θ"]


def unruled_linear_problem(network, ruled: tuple, peer: str, what_it_does: str) -> list[str]:
    """The first linear layer whose producer is not one of the ``ruled`` module types (a
    function call, or a module the peer gives no rule), named with ``what_it_does`` (what the
    peer does there instead of nrm's rule); [] when every linear layer is ruled."""
    for block in network.linear_blocks():
        module = block.producer.module
        if not isinstance(module, ruled):
            kind = type(module).__name__ if isinstance(module, nn.Module) else "a function call"
            return [f"the linear layer '{block.name}' ({block.producer.layer_kind.name}, {kind}) is not a module "
                    f"{peer} {what_it_does}, where nrm applies the layer's rule"]
    return []


@contextlib.contextmanager
def rms_norms_in_input_dtype(model: nn.Module) -> Iterator[None]:
    """transformers' RMSNorms (Llama, Qwen2, Mistral, …) compute in float32 whatever the model's
    dtype, a dtype change nrm refuses in a float64 model: while the context is open, the RMSNorm
    classes of ``model`` compute the same formula in the input's dtype; restored on exit."""
    classes = {type(m) for m in model.modules() if type(m).__name__.endswith("RMSNorm")}
    saved = {c: c.forward for c in classes}

    def forward(self, h):
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    for c in classes:
        c.forward = forward
    try:
        yield
    finally:
        for c, f in saved.items():
            c.forward = f


__all__ = ["SETUP_COMMAND", "PeerMissingError", "PeerConventionError", "require", "versions", "product_problem",
           "unruled_linear_problem", "rms_norms_in_input_dtype"]
