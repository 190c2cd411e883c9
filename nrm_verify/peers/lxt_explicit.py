"""LXT 2.1's **explicit** mode (``lxt.explicit``: autograd Functions whose backward pass carries
relevance, not gradients, attached by a ``Composite`` of module and function rules) on
torchvision's ``VisionTransformer``, the one family among GPT-2, Llama, BERT and ViT whose
explicit rules LXT 2.1's wheel ships.

Why only ViT: the wheel on PyPI (``lxt==2.1``) has no ``lxt/explicit/models`` (its RECORD lists
none; the repository's maps for GPT-2, Llama, BERT are copies of older ``transformers`` modeling
files, "outdated and only work for older versions of PyTorch and transformers" in LXT's own
examples README, and Llama's imports ``bitsandbytes``). What the wheel has for a family is
``lxt.explicit.modules.MultiheadAttention_CP`` — torch's ``nn.MultiheadAttention`` with CP-LRP
inside (Q and K computed under ``no_grad``; A · V by ``epsilon_lrp``) — which with
``LayerNormEpsilon``, ``IdentityRule`` on GELU, ``EpsilonRule`` on the in/out projections,
``add2`` on ``operator.add`` and zennit's ε rule on ``Conv2d`` and ``Linear`` is LXT's
recipe for vision transformers (its ``explicit/models/openclip.py``), here applied to torchvision's.

In nrm's terms, with every stabilizer ε = 0 (:func:`stabilizers`): the same as the efficient
``vit_torch`` map — LRP-0, σ held in LayerNorm, identity on GELU, θ = 0 in the attention
(``MatMul(theta=0)``), the position embedding's share of ``add2`` lost as nrm's ⊥.

Differences, each measured with its cause (``peer_tests/test_lxt.py``):

* **unsigned stabilizers**: ``EpsilonRule`` and ``add2`` divide by z + 1e-8, ``layer_norm`` by
  y + 1e-6, the attention's A · V by O + 1e-6 (written into ``multi_head_attention_cp``); zennit's
  ε on Conv2d and Linear is signed, z + ε s(z);
* **the tracer drops module rules**: ``Composite.register`` traces the model with ``HFTracer``
  when the composite has function rules (``add2`` must be), and that tracer traces *through* a
  ``WrapModule``: ``IdentityRule(GELU)`` becomes a call of the GELU itself, whose gradient then
  acts on the relevance. :func:`LeafTracer` keeps every ``WrapModule`` a leaf (``keep_rules=True``).
"""

from __future__ import annotations

import contextlib
import copy
import operator
from collections.abc import Iterator

import torch
from torch import nn

from nrm.errors import ArgumentError
from nrm_verify.peers.base import require
from nrm_verify.peers.explainer import Explainer

DEFAULT_EPSILONS = {"EpsilonRule": 1e-8, "add2": 1e-8, "layer_norm": 1e-6, "attention A·V": 1e-6}
"""LXT 2.1's explicit stabilizers (unsigned: z + ε) on the modules and functions of the ViT recipe."""


def _explicit():
    require("transformers", "transformers")
    names = ("core", "functional", "modules", "rules", "special")
    return {n: require(f"lxt.explicit.{n}", "lxt") for n in names}


def composite():
    """LXT's explicit CP-LRP composite for torchvision's ViT (see the module docstring)."""
    lx = _explicit()
    rules, lm = lx["rules"], lx["modules"]
    return lx["core"].Composite({
        nn.MultiheadAttention: lm.MultiheadAttention_CP,
        lm.LinearInProjection: rules.EpsilonRule,  # inside MultiheadAttention_CP: after it, as LXT orders them
        lm.LinearOutProjection: rules.EpsilonRule,
        nn.LayerNorm: lm.LayerNormEpsilon,
        nn.GELU: rules.IdentityRule,
        operator.add: lx["functional"].add2,
    })


def leaf_tracer():
    """``HFTracer`` that keeps every LXT ``WrapModule`` (``IdentityRule``, ``EpsilonRule``, …) a leaf,
    so that the rule it wraps stays in the traced model."""
    lx = _explicit()
    tracer = require("transformers.utils.fx", "transformers").HFTracer

    class LeafTracer(tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, lx["rules"].WrapModule) or super().is_leaf_module(m, qualname)

    return LeafTracer


@contextlib.contextmanager
def stabilizers(epsilon: float | None) -> Iterator[None]:
    """LXT's explicit stabilizers set to ``epsilon`` for the block (None: LXT's defaults,
    :data:`DEFAULT_EPSILONS`): the defaults of ``EpsilonRule``, ``add2`` and ``layer_norm_grad_fn``,
    and the 1e-6 that ``multi_head_attention_cp`` passes to ``epsilon_lrp``. Restored on exit."""
    lx = _explicit()
    rules, lf = lx["rules"], lx["functional"]
    saved = (rules.EpsilonRule.__init__.__defaults__, lf.add2.__defaults__,
             lf.layer_norm_grad_fn.forward.__defaults__, rules.epsilon_lrp)
    if epsilon is not None:
        original = rules.epsilon_lrp
        rules.EpsilonRule.__init__.__defaults__ = (epsilon,)
        lf.add2.__defaults__ = (False, epsilon)
        lf.layer_norm_grad_fn.forward.__defaults__ = (epsilon,)
        rules.epsilon_lrp = lambda fn, _, *inputs: original(fn, epsilon, *inputs)
    try:
        yield
    finally:
        (rules.EpsilonRule.__init__.__defaults__, lf.add2.__defaults__,
         lf.layer_norm_grad_fn.forward.__defaults__, rules.epsilon_lrp) = saved


def _blocks(graph, prefixes):
    """For each module name in ``prefixes``, the last node of the traced graph inside that module."""
    last = {}
    for node in graph.nodes:
        for name in node.meta.get("nn_module_stack", {}):
            if name in prefixes:
                last[name] = node
    missing = [name for name in prefixes if name not in last]
    if missing:
        raise ArgumentError(f"layers= names modules the traced model does not have: {missing[:5]}; give encoder "
                            "blocks such as 'encoder.layers.encoder_layer_0'")
    return {last[name].name: name for name in prefixes}


def relevance(model: nn.Module, x: torch.Tensor, target, *, epsilon: float | None = 0.0,
              linear_epsilon: float = 0.0, keep_rules: bool = True,
              layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """LXT's explicit relevance of the logit ``target`` (an int or one per sample) of torchvision's
    ViT ``model`` (a copy is patched): the backward pass is seeded with the logit itself, so the
    input's ``.grad`` is the relevance. ``epsilon``: LXT's stabilizers (:func:`stabilizers`;
    None: its defaults); ``linear_epsilon``: zennit's ε on Conv2d and Linear; ``keep_rules``:
    trace with :func:`leaf_tracer` (False: LXT's ``HFTracer``, which drops the GELU's identity
    rule). ``layers``: module names (encoder blocks) whose output relevance to return too."""
    zennit_rules = require("zennit.rules", "zennit")
    layer_map = require("zennit.composites", "zennit").LayerMapComposite
    tracer = leaf_tracer() if keep_rules else require("transformers.utils.fx", "transformers").HFTracer
    x = x.detach().clone()
    with stabilizers(epsilon):
        traced = composite().register(copy.deepcopy(model).eval(), dummy_inputs={"x": x}, tracer=tracer)
        zennit = layer_map([(nn.Conv2d, zennit_rules.Epsilon(linear_epsilon)),
                            (nn.Linear, zennit_rules.Epsilon(linear_epsilon))])
        zennit.register(traced)
        try:
            out, kept = _run(traced, x.requires_grad_(True), _blocks(traced.graph, layers or []))
            targets = torch.as_tensor(target).expand(x.shape[0])
            if bool(((targets < 0) | (targets >= out.shape[1])).any()):
                raise ArgumentError(f"target {target!r} is not a class of the model's {out.shape[1]} logits")
            f = out[torch.arange(x.shape[0]), targets]
            f.backward(f.detach())
        finally:
            zennit.remove()
    result = {"input": x.grad.detach()}
    result.update(kept)
    return result


def _run(traced, x, wanted):
    """Run the traced model, passing the values of the nodes in ``wanted`` through an identity
    Function that keeps the relevance (gradient) its backward receives. (``retain_grad`` would
    not do: LXT's rules call ``torch.autograd.grad(y, x, …)`` inside their backward, and a
    retained gradient of x also collects those inner calls.)"""
    kept = {}

    class Keep(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value, name):
            ctx.name = name
            return value.view_as(value)

        @staticmethod
        def backward(ctx, relevance):
            kept[ctx.name] = relevance.detach().clone()
            return relevance, None

    class Run(torch.fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node.name in wanted and isinstance(value, torch.Tensor):
                return Keep.apply(value, wanted[node.name])
            return value

    return Run(traced).run(x), kept


class LXTExplicitExplainer(Explainer):
    """LXT's explicit ViT recipe (:func:`relevance`) as an :class:`~nrm_verify.peers.explainer.Explainer`:
    ``model`` is torchvision's ``VisionTransformer``, ``x`` the image, ``layers`` encoder block
    names (``"encoder.layers.encoder_layer_0"``, …). ``epsilon`` and ``linear_epsilon`` as in
    :func:`relevance` (0: the conventions of nrm's LRP-0 with ``MatMul(theta=0)``). ``rules`` is
    None: LXT's recipe is not one nrm rule."""

    name = "lxt-explicit"

    def __init__(self, *, epsilon: float | None = 0.0, linear_epsilon: float = 0.0, keep_rules: bool = True,
                 spec: str | None = None):
        super().__init__(None, spec=spec)
        self.epsilon, self.linear_epsilon, self.keep_rules = epsilon, linear_epsilon, keep_rules

    def relevance(self, model, x, target, layers):
        return relevance(model, x, target, epsilon=self.epsilon, linear_epsilon=self.linear_epsilon,
                         keep_rules=self.keep_rules, layers=layers)


__all__ = ["DEFAULT_EPSILONS", "composite", "leaf_tracer", "stabilizers", "relevance", "LXTExplicitExplainer"]
