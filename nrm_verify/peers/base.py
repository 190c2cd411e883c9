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


def _normalized(self, h, eps):
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


RMS_FORMULAS = {
    "w · x / rms(x)": lambda self, h, eps: self.weight * _normalized(self, h, eps),  # Llama, Qwen2, Mistral, …
    "(1 + w) · x / rms(x)": lambda self, h, eps: (1 + self.weight) * _normalized(self, h, eps),  # Gemma, Gemma 2
}
"""The RMSNorm formulas of transformers' families, rms(x) = √(mean(x²) + ε) over the last dimension."""


def _epsilon(norm: nn.Module) -> float | None:
    """An RMSNorm's ε: ``variance_epsilon`` (Llama, Qwen2, Mistral) or ``eps`` (Gemma)."""
    return next((getattr(norm, a) for a in ("variance_epsilon", "eps") if isinstance(getattr(norm, a, None), float)),
                None)


def _rms_formula(cls: type, instance: nn.Module):
    """The formula of :data:`RMS_FORMULAS` that ``cls``'s own forward computes (checked on a
    seeded input in the weight's dtype, within 10⁻⁵ relative: the class computes in float32),
    and its ε; :class:`PeerConventionError` when none does."""
    eps = _epsilon(instance)
    weight = getattr(instance, "weight", None)
    if eps is None or not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        raise PeerConventionError(f"{cls.__name__} has no float ε (variance_epsilon, eps) or no weight of one "
                                  "dimension; rms_norms_in_input_dtype cannot rewrite it: explain the model in float32")
    h = torch.randn((2, 3, weight.shape[0]), generator=torch.Generator().manual_seed(0)).to(weight)
    with torch.no_grad():
        theirs = cls.forward(instance, h)
        bound = 1e-5 * max(1.0, float(theirs.abs().max()))
        for formula in RMS_FORMULAS.values():
            ours = formula(instance, h, eps)
            if ours.shape == theirs.shape and bool(((ours - theirs).abs() <= bound).all()):
                return formula, eps
    raise PeerConventionError(f"{cls.__name__}'s forward computes none of the RMSNorm formulas {list(RMS_FORMULAS)}; "
                              "rms_norms_in_input_dtype cannot rewrite it: explain the model in float32")


@contextlib.contextmanager
def rms_norms_in_input_dtype(model: nn.Module) -> Iterator[None]:
    """transformers' RMSNorms (Llama, Qwen2, Mistral, Gemma, …) compute in float32 whatever the
    model's dtype (nrm reads that as the model computes it, widened; a peer computing in float64
    does not, so a comparison at 1e-10 needs one formula in one dtype): while the context is open, the
    RMSNorm classes of ``model`` compute **the same formula** in the input's dtype; restored on
    exit. Which formula a class computes (:data:`RMS_FORMULAS`) is found by running its own
    forward on a seeded input first; a class that computes none of them is a
    :class:`PeerConventionError` (before, every class was given Llama's formula: Gemma's
    (1 + w) was silently replaced by w)."""
    if not isinstance(model, nn.Module):
        from nrm.errors import ArgumentError

        raise ArgumentError(f"rms_norms_in_input_dtype(model) takes a torch.nn.Module, got {type(model).__name__}")
    instances = {}
    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            instances.setdefault(type(m), m)
    chosen = {c: _rms_formula(c, m) for c, m in instances.items()}  # before any class is changed
    saved = {c: c.forward for c in chosen}

    def rewritten(formula):
        def forward(self, h):
            return formula(self, h, _epsilon(self))
        return forward

    for c, (formula, _) in chosen.items():
        c.forward = rewritten(formula)
    try:
        yield
    finally:
        for c, f in saved.items():
            c.forward = f


__all__ = ["SETUP_COMMAND", "PeerMissingError", "PeerConventionError", "require", "versions", "product_problem",
           "unruled_linear_problem", "rms_norms_in_input_dtype"]
