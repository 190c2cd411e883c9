"""LXT 2.1 (LRP eXplains Transformers; Achtibat et al., *AttnLRP: Attention-Aware Layer-Wise
Relevance Propagation for Transformers*, ICML 2024) on the same case as nrm: its **efficient**
mode, which patches a model family (``lxt.efficient.monkey_patch`` with the family's map) so that
Gradient × Input of the patched model is AttnLRP (or CP-LRP). Families (:data:`FAMILIES`):
``transformers``' GPT-2 and Llama (both variants), BERT (AttnLRP only; LXT's map swaps in its
own copy of ``modeling_bert``: :func:`lxt_model`) and torchvision's ViT (CP-LRP only). LXT's
explicit mode: :mod:`nrm_verify.peers.lxt_explicit`.

What LXT's efficient mode computes, in nrm's terms (``docs/attention.md``, "LXT"):

* every linear map (``nn.Linear``, GPT-2's ``Conv1D``, additions, the constants added to the
  embeddings, rotary embeddings' x cos + rotate_half(x) sin): the plain gradient, i.e. LRP-0;
  the biases and added constants go to ⊥;
* the softmax: its plain gradient, i.e. AttnLRP's kernel x_i (δ_ij − s_i) under LRP-0;
* the attention products: ``divide_gradient`` of Q and K by 4 and of V by 2 — the uniform
  split θ = ½ of both Q Kᵀ and A V (``MatMul()``); CP-LRP: Q and K detached (``MatMul(theta=0)``);
* LayerNorm and RMSNorm: σ detached — nrm's centring map and :class:`~nrm.layers.constants.Rsqrt`
  held;
* GELU and SiLU: the identity rule, but as ``σ(z) / (z + 1e-10)`` times the gradient
  (:data:`IDENTITY_EPSILON`): a relative deviation of 1e-10 / z from nrm's exact identity;
* SwiGLU's act(gate(x)) · up(x): ``divide_gradient(·, 2)`` — ``Multiply(split="equal")``;
  CP-LRP: gate_proj detached — ``Multiply(gates=("SiLU",))``, the gate takes nothing.

:func:`patched` applies a family's map for the duration of a block and restores every class
method and module attribute it replaced (LXT's ``monkey_patch`` has no undo).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

import torch
from torch import nn

import nrm
from nrm.layers.attention import MatMul
from nrm.layers.products import Multiply
from nrm_verify.peers.base import PeerConventionError, require
from nrm_verify.peers.explainer import Explainer

IDENTITY_EPSILON = 1e-10
"""LXT's ``identity_rule_implicit_fn.forward(ctx, fn, input, epsilon=1e-10)``: the identity
rule's ratio is σ(z) / (z + 1e-10), unsigned."""

VARIANTS = ("attnlrp", "cp")
"""LXT's two maps per family: ``attnLRP`` and ``cp_LRP``."""

FAMILIES = {"gpt2": VARIANTS, "llama": VARIANTS, "bert": ("attnlrp",), "vit": ("cp",)}
"""The families compared and the variants LXT 2.1's efficient maps have for each: its BERT map has
no ``cp_LRP``; its ViT map (``lxt.efficient.models.vit_torch``, torchvision's ``VisionTransformer``)
is only ``cp_LRP`` — AttnLRP outside the attention (GELU, LayerNorm), CP-LRP inside."""

_MODULES = {"vit": ("torchvision.models.vision_transformer", "torchvision", "lxt.efficient.models.vit_torch")}


def _lxt():
    require("transformers", "transformers")
    return require("lxt.efficient", "lxt"), require("lxt.efficient.rules", "lxt")


def _names(name: str) -> tuple[str, str, str]:
    """(the module LXT patches, its package, LXT's map) of the family ``name``."""
    if name not in FAMILIES:
        raise PeerConventionError(f"LXT's efficient maps compared here are those of {tuple(FAMILIES)}, not {name!r}")
    return _MODULES.get(name, (f"transformers.models.{name}.modeling_{name}", "transformers",
                               f"lxt.efficient.models.{name}"))


def family(name: str) -> ModuleType:
    """The module LXT patches for ``name``: ``transformers``' modeling module ("gpt2", "llama", "bert")
    or torchvision's ``vision_transformer`` ("vit")."""
    _lxt()
    module, package, _ = _names(name)
    return require(module, package)


def _check_variant(name: str, variant: str) -> None:
    if variant not in VARIANTS:
        raise PeerConventionError(f"LXT variant {variant!r}: one of {VARIANTS}")
    if variant not in FAMILIES.get(name, VARIANTS):
        raise PeerConventionError(f"LXT 2.1 has no {variant!r} map for {name!r} (lxt.efficient.models.{name} defines "
                                  f"only {FAMILIES[name]}); compare that variant on another family")


def lxt_model(model: nn.Module) -> nn.Module:
    """The model LXT's map explains (call inside :func:`patched`). GPT-2 and Llama: ``model`` itself (LXT
    patches transformers' classes in place). BERT: LXT's map replaces every attribute of ``modeling_bert``
    by those of its own copy of the file (``lxt.efficient.models.bert``, with ``divide_gradient`` and the
    identity rule written in), so only a model built after the patch is LXT's; this builds that copy's
    class of the same name from ``model.config`` and loads ``model``'s parameters (same names, same
    values: the forward is the same function, tested)."""
    if not type(model).__module__.startswith("transformers.models.bert."):
        return model
    cls = getattr(family("bert"), type(model).__name__)
    if cls is type(model):
        raise PeerConventionError("lxt_model(BERT) builds LXT's copy of the class: call it inside peer.patched('bert')")
    copy = cls(model.config).to(next(model.parameters()).dtype)
    copy.load_state_dict(model.state_dict())
    return copy.train(model.training)


def _float64_rms_norm(stop_gradient):
    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * stop_gradient(torch.rsqrt(variance + self.variance_epsilon)))
    return forward


@contextlib.contextmanager
def patched(name: str, variant: str = "attnlrp", identity_epsilon: float | None = None,
            rms_in_input_dtype: bool = True) -> Iterator[None]:
    """LXT's ``monkey_patch`` of the family ``name`` with its ``attnLRP`` or ``cp_LRP`` map, undone
    on exit. ``identity_epsilon`` replaces LXT's 1e-10 in the identity rule (0: the exact
    identity). ``rms_in_input_dtype``: LXT's ``rms_norm_forward`` (like transformers' RMSNorm)
    computes in float32 whatever the model's dtype; True replaces it by the same formula in the
    input's dtype (1/σ still detached), as the float64 comparison needs."""
    _check_variant(name, variant)
    efficient, rules = _lxt()
    module = family(name)
    maps = require(_names(name)[2], "lxt")
    patch_map = maps.attnLRP if variant == "attnlrp" else maps.cp_LRP
    # the classes' own attributes: forward, and original_forward where a patch keeps the original
    saved_classes = {cls: dict(vars(cls)) for cls in patch_map if isinstance(cls, type)}
    saved_attrs = dict(vars(module))  # BERT's map replaces every attribute of the module
    shared = getattr(module, "ALL_ATTENTION_FUNCTIONS", {})
    saved_functions = dict(shared.items())
    defaults = rules.identity_rule_implicit_fn.forward.__defaults__
    try:
        efficient.monkey_patch(module, patch_map)
        if identity_epsilon is not None:
            rules.identity_rule_implicit_fn.forward.__defaults__ = (identity_epsilon,)
        if rms_in_input_dtype and name == "llama":
            module.LlamaRMSNorm.forward = _float64_rms_norm(rules.stop_gradient)
        yield
    finally:
        rules.identity_rule_implicit_fn.forward.__defaults__ = defaults
        for cls, attrs in saved_classes.items():
            for a in [a for a in vars(cls) if a not in attrs]:
                delattr(cls, a)
            for a in [a for a, value in attrs.items() if vars(cls).get(a) is not value]:
                setattr(cls, a, attrs[a])
        for a in [a for a in vars(module) if a not in saved_attrs]:
            delattr(module, a)
        for a, value in saved_attrs.items():
            setattr(module, a, value)
        for key, value in saved_functions.items():  # cp_LRP writes into the shared mapping
            shared[key] = value


@contextlib.contextmanager
def kept_outputs(model: nn.Module, names) -> Iterator[dict[str, torch.Tensor]]:
    """{name: the output of the submodule ``name``} (its first element when it returns a tuple),
    each retaining its gradient, filled while the context is open; the hooks go on exit."""
    kept: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            h.retain_grad()
            kept[name] = h
        return hook

    handles = [model.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    try:
        yield kept
    finally:
        for h in handles:
            h.remove()


def logits(model: nn.Module, x: torch.Tensor, causal_lm: bool | None = True) -> torch.Tensor:
    """The logits explained: at the last position of a causal LM (``causal_lm=True``), of a
    ``transformers`` classifier (False), both given ``inputs_embeds=x``; of an image model (None,
    torchvision's ViT: ``model(x)``)."""
    if causal_lm is None:
        return model(x)
    if causal_lm:
        return model(inputs_embeds=x, use_cache=False).logits[:, -1]
    return model(inputs_embeds=x).logits


def relevance(model: nn.Module, inputs_embeds: torch.Tensor, target: int, *,
              causal_lm: bool | None = True) -> torch.Tensor:
    """LXT's relevance at the input (embeddings, or the image for ``causal_lm=None``), x · ∂f/∂x of
    the patched model (call inside :func:`patched`); f is the logit ``target`` (:func:`logits`)."""
    x = inputs_embeds.detach().clone().requires_grad_(True)
    logits(model, x, causal_lm)[:, target].sum().backward()
    return (x * x.grad).detach()


@contextlib.contextmanager
def conventions(variant: str = "attnlrp") -> Iterator[None]:
    """nrm's kinds set to LXT's conventions (the rules stay LRP-0, nrm's default): θ = ½ and
    SwiGLU's uniform split for AttnLRP; θ = 0 and SwiGLU's gate taking nothing for CP-LRP.
    Restores the built-in kinds on exit."""
    if variant not in VARIANTS:
        raise PeerConventionError(f"LXT variant {variant!r}: one of {VARIANTS}")
    if variant == "attnlrp":
        nrm.layers.register(MatMul())
        nrm.layers.register(Multiply(split="equal"))
    else:
        nrm.layers.register(MatMul(theta=0))
        nrm.layers.register(Multiply(gates=("SiLU",)))
    try:
        yield
    finally:
        nrm.layers.register(MatMul())
        nrm.layers.register(Multiply())


class LXTExplainer(Explainer):
    """LXT's efficient AttnLRP or CP-LRP on a model of the family ``family``, as an
    :class:`~nrm_verify.peers.explainer.Explainer`: ``x`` is ``inputs_embeds`` (for "vit" the image);
    the target is the logit at the last position (``causal_lm=True``) or the class logit; ``layers`` are module names
    (R = h · ∂f/∂h at the module's output, its first element when it returns a tuple).
    ``rules`` is None: LXT's conventions are not one nrm rule (compare with nrm under
    :func:`conventions`)."""

    name = "lxt"

    def __init__(self, family_name: str, variant: str = "attnlrp", *, identity_epsilon: float | None = None,
                 causal_lm: bool = True, spec: str | None = None):
        super().__init__(None, spec=spec)
        family(family_name)
        _check_variant(family_name, variant)
        self.family, self.variant, self.identity_epsilon, self.causal_lm = (family_name, variant, identity_epsilon,
                                                                            causal_lm)

    def relevance(self, model, x, target, layers):
        x = x.detach().clone().requires_grad_(True)
        targets = torch.as_tensor(target).expand(x.shape[0])
        with patched(self.family, self.variant, self.identity_epsilon):
            model = lxt_model(model)
            with kept_outputs(model, layers or []) as kept:
                out = logits(model, x, None if self.family == "vit" else self.causal_lm)
                out[torch.arange(x.shape[0]), targets].sum().backward()
        result = {"input": (x * x.grad).detach()}
        result.update({n: (h * h.grad).detach() for n, h in kept.items()})
        return result


__all__ = ["IDENTITY_EPSILON", "VARIANTS", "FAMILIES", "family", "lxt_model", "patched", "kept_outputs", "logits",
           "relevance", "conventions", "LXTExplainer"]
