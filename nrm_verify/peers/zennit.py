"""zennit (Anders et al., *Software for dataset-wide XAI: from local explanations to global
insights with Zennit, CoRelAy, and ViRelAy*, arXiv:2106.13200, 2021) on the same case as nrm.

Three things:

* :func:`zennit_rule` maps one nrm rule to the zennit rule that computes the same kernel,
  and :func:`composite` a whole ``rules=`` specification (rule, mapping or preset) for a
  model to a zennit composite (``Pass`` on activations and batch norms, the batch norms
  merged by ``SequentialMergeBatchNorm`` as nrm folds them — with the batch norm's eps set to
  0 while merged, see :func:`merge_batchnorm`).
* :func:`mirror` goes the other way for zennit's built-in composites (``EpsilonPlus``,
  ``EpsilonPlusFlat``, ``EpsilonGammaBox``, ``EpsilonAlpha2Beta1``,
  ``EpsilonAlpha2Beta1Flat``): the nrm rule mapping that equals the composite, every
  convention included; :func:`builtin_composite` builds zennit's own composite.
* :func:`relevance` runs zennit and returns LRP's R at the input and at named layers;
  :class:`ZennitExplainer` is it behind the :class:`~nrm_verify.peers.Explainer` interface,
  for nrm rules (through :func:`composite`) or a composite of zennit's own.

Conventions (all matched here; ``docs/peers.md`` has the table):

* Stabilizer: zennit adds ε·s(D) with s(0) = +1 — nrm's ``stabilizer_sign="signed"``.
  zennit's rules other than ε stabilize with 1e-6 by default, nrm's with 0: the nrm rule
  must carry ``stabilizer=1e-6`` to match zennit's defaults. An nrm stabilizer of 0 maps to
  a callable stabilizer that divides by ∞ where D = 0 (:func:`safe_denominator`), which
  is nrm's "a zero denominator sends the column to ⊥". ``"unsigned"`` maps to D + ε.
* ε on pooling: zennit's composites put ``Norm`` (= ε with the stabilizer, no bias) on
  average pooling; nrm's presets put LRP-0 there. :func:`mirror` puts ``Epsilon(stabilizer)``.
* γ: zennit's Gamma is the *generalized* γ rule (Andéol et al. 2021): for negative inputs it
  uses w + γ w⁻, and for columns with z_k < 0 the roles of w⁺ and w⁻ swap. It equals
  ``nrm.rules.Gamma`` where the inputs are ≥ 0 and z_k > 0 (every column that carries
  relevance in a ReLU network); :class:`GeneralizedGamma` is the exact nrm rule.
* z⁺: zennit's ZPlus is α1β0 (a⁺w⁺ + a⁻w⁻ over the same plus bias b⁺): ``nrm.rules.ZPlus``
  where a ≥ 0, ``AlphaBeta(1, 0, stabilizer=ε)`` on any input.
* w²: zennit keeps b² in the denominator — ``WSquare(bias=True)``.
* Flat: zennit's denominator is the receptive field without padding plus ε —
  ``Flat(stabilizer=ε)``. Box: the bias cancels in both.
* αβ with ε > 0: the denominators never vanish, so nrm's fallbacks for N_k = 0 or P_k = 0
  never apply and the two agree; with ε = 0 zennit has no fallback (not matched).
* ``leak="renormalize"`` and γ with ``modify_bias=False`` have no zennit counterpart
  (:class:`~nrm_verify.peers.PeerConventionError`).

Residual models (torchvision's ``BasicBlock`` / ``Bottleneck``): zennit's ``ResNetCanonizer``
rewrites each block's ``out + identity`` as ``Sum()(torch.stack([identity, out], -1))`` in
a module ``<block>.canonizer_sum``, and the composites put ``Norm`` on ``Sum`` —
ε(stabilizer) without bias over the two summands; the nrm side is ``Epsilon(stabilizer)``
on the sum layer (nrm's fx node ``add``, ``add_1``, …; nrm's default on sums is LRP-0).
:func:`resnet_canonizers` is zennit's ``ResNetCanonizer`` with the exact batch-norm merge;
:func:`sum_modules` maps nrm's sum layers to the canonizer's modules. In a residual block
the convolution before the sum (``conv2`` / ``conv3``, ``downsample.0``) has no ReLU after
it, so its columns with z_k < 0 carry relevance: there zennit's γ is the generalized one,
and :func:`mirror` puts :class:`GeneralizedGamma` on every convolution not followed by a
ReLU.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from nrm.errors import ArgumentError, UnknownLayerError
from nrm.presets import RuleMap, assign
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, Part, Rule, Share, WSquare, ZBox, Zero, ZPlus
from nrm.rules import identity as _identity
from nrm.rules import negative as _negative
from nrm.rules import positive as _positive
from nrm_verify.peers.base import PeerConventionError, product_problem, require, unruled_linear_problem
from nrm_verify.peers.explainer import Explainer

POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BUILTIN = ("epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1",
           "epsilon_alpha2_beta1_flat")
"""Names of zennit's built-in LRP composites that :func:`mirror` reproduces."""


def _zennit():
    require("torchvision", "torchvision")
    return require("zennit", "zennit")


def safe_denominator(d: torch.Tensor) -> torch.Tensor:
    """A zennit stabilizer for nrm's ε = 0: D where D ≠ 0, +∞ where D = 0, so that R_k / D_k
    is 0 there — the whole column goes to the absorber, as nrm does."""
    return torch.where(d == 0, torch.full_like(d, math.inf), d)


def _stabilizer(rule: Rule):
    """nrm's (stabilizer, stabilizer_sign) as zennit's ``stabilizer=`` argument."""
    eps = rule.stabilizer
    if not isinstance(eps, (int, float)):
        raise PeerConventionError(f"{rule!r}: zennit needs a numeric stabilizer, got {eps!r}")
    if rule.stabilizer_sign == "signed":
        return float(eps) if eps > 0 else safe_denominator
    return lambda d: safe_denominator(d + eps)


class GeneralizedGamma(Rule):
    """zennit's γ rule: the generalized γ of Andéol et al., which also reads negative inputs.

    Definition::

        ρ⁺(w) = w + γ w⁺,   ρ⁻(w) = w + γ w⁻,   z_k = Σ_j a_j w_jk + b_k
        z_k > 0:  c(j, k) = a_j⁺ ρ⁺(w_jk) + a_j⁻ ρ⁻(w_jk),   β(b_k) = ρ⁺(b_k)
        z_k < 0:  c(j, k) = a_j⁺ ρ⁻(w_jk) + a_j⁻ ρ⁺(w_jk),   β(b_k) = ρ⁻(b_k)
        q(j | k) = c(j, k) / D_k,   D_k = Σ_j c(j, k) + β(b_k)   (stabilized),   q(⊥ | k) = β / D_k

    A column with z_k = 0 goes wholly to ⊥ when ε = 0 (zennit gives it no relevance); with
    ε > 0 its sign is read from the stabilized z_k, i.e. it counts as positive. For a ≥ 0
    and z_k > 0 this is ``nrm.rules.Gamma(gamma)``.

    The sign of z_k selects the share: the third share is the plain z_k, read only for its
    sign (coefficient 0).

    Reference: Andéol et al., *Learning domain invariant representations by joint
    Wasserstein distance minimization*, arXiv:2106.04923, 2021; zennit ``rules.Gamma``.
    """

    def __init__(self, gamma=0.25, *, stabilizer=1e-6, stabilizer_sign: str = "signed", leak: str = "absorb"):
        if isinstance(gamma, (int, float)) and gamma < 0:
            raise PeerConventionError(f"GeneralizedGamma: gamma must be >= 0, got {gamma!r}")
        super().__init__(stabilizer=stabilizer, stabilizer_sign=stabilizer_sign, leak=leak)
        self.gamma = gamma

    def parameters(self):
        return {"gamma": self.gamma}

    def rho_plus(self, ops, w):
        """ρ⁺(w) = w + γ w⁺."""
        return w + self.gamma * ops.pos(w)

    def rho_minus(self, ops, w):
        """ρ⁻(w) = w + γ w⁻."""
        return w + self.gamma * ops.neg(w)

    def shares(self):
        return (
            Share((Part(_positive, self.rho_plus), Part(_negative, self.rho_minus)), self.rho_plus),
            Share((Part(_positive, self.rho_minus), Part(_negative, self.rho_plus)), self.rho_minus),
            Share((Part(_identity, _identity),), _identity),
        )

    def coefficients(self, ops, denominators):
        z = denominators[2]
        one, nil = ops.ones_like(z), ops.zeros_like(z)
        dead = ops.is_zero(z)
        s = ops.sign(z)
        up = ops.where(dead, nil, (one + s) * 0.5)
        down = ops.where(dead, nil, (one - s) * 0.5)
        return (up, down, nil), None


def _signed_hook(rule: Rule):
    """nrm's γ or z⁺ on a layer whose inputs may be negative, as a zennit ``BasicHook``
    built from zennit's parts: the raw input times ρ(w) (ρ_γ or w⁺, on the bias too)."""
    z = _zennit()
    stabilize = z.core.Stabilizer.ensure(_stabilizer(rule))
    if type(rule) is Gamma:
        mod = z.rules.GammaMod(float(rule.gamma), min=0.0)
    else:
        mod = z.rules.ClampMod(min=0.0, zero_params=None if rule.bias else ["bias"])
    return z.core.BasicHook(
        input_modifiers=[lambda a: a], param_modifiers=[mod], output_modifiers=[lambda out: out],
        gradient_mapper=lambda grad, outputs: [grad / stabilize(outputs[0])],
        reducer=lambda inputs, gradients: inputs[0] * gradients[0],
    )


def zennit_rule(rule: Rule, signed_input: bool = False):
    """The zennit rule (a ``BasicHook``) with the kernel of the nrm ``rule``.

    Exact for every nrm rule with ``leak="absorb"``; ``AlphaBeta`` with a stabilizer > 0.
    zennit's own ``Gamma`` and ``ZPlus`` equal nrm's where the layer's inputs are ≥ 0;
    ``signed_input=True`` (a layer whose inputs have negative entries: the first one, one after a
    convolution without a ReLU, :func:`signed_inputs`) builds nrm's ``Gamma`` / ``ZPlus``
    from zennit's parts instead, which equals nrm's on any input.
    """
    z = _zennit()
    zr = z.rules
    if signed_input and type(rule) in (Gamma, ZPlus) and rule.leak == "absorb":
        if type(rule) is Gamma and not rule.modify_bias:
            raise PeerConventionError(f"{rule!r}: zennit's GammaMod modifies the bias; use modify_bias=True")
        return _signed_hook(rule)
    if rule.leak != "absorb":
        raise PeerConventionError(
            f"{rule!r}: zennit has no leak='renormalize' (its rules leave the bias share unpropagated, nrm's "
            "leak='absorb'); compare with leak='absorb'"
        )
    kind = type(rule)
    if kind is Zero:
        return zr.Epsilon(epsilon=safe_denominator)
    if kind is Epsilon:
        return zr.Epsilon(epsilon=_stabilizer(rule))
    if kind in (Gamma, GeneralizedGamma):
        if kind is Gamma and not rule.modify_bias:
            raise PeerConventionError(
                f"{rule!r}: zennit's Gamma always puts ρ_γ(b) in the denominator; use Gamma(..., modify_bias=True)"
            )
        return zr.Gamma(gamma=float(rule.gamma), stabilizer=_stabilizer(rule))
    if kind is ZPlus:
        return zr.ZPlus(stabilizer=_stabilizer(rule), zero_params=None if rule.bias else ["bias"])
    if kind is AlphaBeta:
        return zr.AlphaBeta(alpha=float(rule.alpha), beta=float(rule.beta), stabilizer=_stabilizer(rule))
    if kind is WSquare:
        return zr.WSquare(stabilizer=_stabilizer(rule), zero_params=None if rule.bias else ["bias"])
    if kind is Flat:
        return zr.Flat(stabilizer=_stabilizer(rule))
    if kind is ZBox:
        return zr.ZBox(low=_batched(rule.low), high=_batched(rule.high), stabilizer=_stabilizer(rule))
    raise PeerConventionError(f"no zennit counterpart for {rule!r}; add a mapping in nrm_verify/peers/zennit.py")


def _batched(bound):
    """nrm's per-sample bound (number or tensor of one sample's shape) → zennit's (batch first)."""
    return bound.unsqueeze(0) if isinstance(bound, torch.Tensor) and bound.dim() > 0 else bound


def _pool_rule(rule: Rule, name: str, what: str = "pooling layer"):
    """zennit's ``Norm`` on average pooling and on residual sums is ε without bias: nrm's
    Epsilon or Zero there."""
    z = _zennit()
    if type(rule) is Epsilon:
        return z.rules.Norm(stabilizer=_stabilizer(rule))
    if type(rule) is Zero:
        return z.rules.Norm(stabilizer=safe_denominator)
    raise PeerConventionError(
        f"{what} '{name}' has {rule!r}; zennit propagates average pooling and sums with Norm (ε without bias): "
        "give it Epsilon(stabilizer) or Zero()"
    )


def composite(model: nn.Module, rules, *, x: torch.Tensor):
    """A zennit composite that propagates ``model`` with the nrm ``rules`` (a rule, a
    mapping or a preset), resolved per layer exactly as :func:`nrm.explain` resolves them.

    Linear layers get :func:`zennit_rule` by module name (those whose inputs have negative
    entries, :func:`signed_inputs`, or whose columns do — no ReLU after — with
    ``signed_input=True``); activations and batch norms get
    ``Pass``; batch norms after a linear layer are merged into it (:func:`merge_batchnorm`),
    as nrm folds them; max-pooling, flatten and dropout keep their gradient (winner takes all,
    renaming, identity).
    """
    from nrm.graph import ProperFFNN, Sum

    z = _zennit()
    network = ProperFFNN(model, x[:1])
    reproducible(network, model, x)
    assign(network, rules)
    sums = sum_modules(model, x=x) if any(isinstance(b.producer.module, Sum) for b in network.linear_blocks()) else {}
    negative = signed_inputs(model, x)
    name_map = []
    for block in network.linear_blocks():
        module = block.producer.module
        if isinstance(module, Sum):
            name_map.append(((sums[block.name],), _pool_rule(block.rule, block.name, what="sum")))
            continue
        if isinstance(module, POOLS):
            hook = _pool_rule(block.rule, block.name)
        else:
            # nrm's γ / z⁺ built from zennit's parts where zennit's own would read negative
            # inputs (the first layer; a layer after a convolution with no ReLU, as MobileNet's and
            # ShuffleNet's pointwise convolution after the depthwise one) or negative columns
            # (no ReLU after: before a residual sum)
            signed = block.name in negative or not _relu_after(block)
            hook = zennit_rule(block.rule, signed_input=signed)
        name_map.append(((block.name,), hook))
    passing = z.composites.LayerMapComposite([((z.types.Activation, z.types.BatchNorm), z.rules.Pass())])
    return z.composites.MixedComposite(
        [z.composites.NameMapComposite(name_map), passing],
        canonizers=resnet_canonizers() if sums else [merge_batchnorm()],
    )


def reproducible(network, model: nn.Module | None = None, x: torch.Tensor | None = None) -> None:
    """Raise :class:`~nrm_verify.peers.PeerConventionError` where zennit cannot run nrm's
    rules on the network, naming every cause found (the first layer of each): a product of
    activations (zennit has no rule for one; the gradient it falls back to gives every
    factor the whole product, where nrm splits it by θ); a linear layer that is not a module
    zennit hooks (a linear or convolutional module, an average pooling, a residual sum its
    canonizer rewrites) — a batch norm of its own (zennit passes it, nrm applies the rule to
    it), a layer norm or layer scale, a functional mean: zennit would pass it, or its plain
    gradient, not the rule; with ``model`` and ``x``, a sum outside torchvision's ResNet
    blocks (:func:`sum_modules`)."""
    from nrm.graph import Sum

    hooked = (Sum, nn.Linear) + POOLS + CONVS
    problems = product_problem(network, "zennit") + unruled_linear_problem(
        network, hooked, "zennit", "applies a rule to (linear, convolution, average pooling, a canonized residual "
        "sum): zennit would pass it as it is or by its gradient")
    if model is not None and any(isinstance(b.producer.module, Sum) for b in network.linear_blocks()):
        try:
            sum_modules(model, x=x)
        except PeerConventionError as e:
            problems.append(str(e))
    if problems:
        raise PeerConventionError("zennit cannot run these rules on this model: " + "; ".join(problems))


def signed_inputs(model: nn.Module, x: torch.Tensor) -> set[str]:
    """Names of the linear and convolution modules of ``model`` whose input has a negative
    entry at ``x`` (one forward pass with hooks). There zennit's ``ZPlus`` is α1β0 (it adds
    a⁻w⁻) and its ``Gamma`` the generalized γ (w + γ w⁻ on negative inputs), where nrm's read
    the raw input: :func:`composite` builds nrm's rule from zennit's parts there and
    :func:`mirror` puts the rule that equals zennit's."""
    found: set[str] = set()
    handles = [m.register_forward_pre_hook(lambda m, args, n=n: found.add(n) if bool((args[0] < 0).any()) else None)
               for n, m in model.named_modules() if isinstance(m, (nn.Linear,) + CONVS)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def _relu_after(block) -> bool:
    """Whether a ReLU follows the layer's producer directly (then columns with z_k < 0
    carry no relevance)."""
    return any(isinstance(step.module, nn.ReLU) for step in block.trailing)


def resnet_canonizers(exact: bool = True) -> list:
    """zennit's ``ResNetCanonizer`` (batch norms merged; each torchvision ``BasicBlock`` /
    ``Bottleneck`` sums through a module ``<block>.canonizer_sum``), with the exact batch-norm
    merge of :func:`merge_batchnorm` (``exact=False``: zennit's own)."""
    z = _zennit()
    require("zennit.torchvision", "zennit")
    tv = z.torchvision
    return [merge_batchnorm(exact), tv.ResNetBottleneckCanonizer(), tv.ResNetBasicBlockCanonizer()]


def sum_modules(model: nn.Module, *, x: torch.Tensor) -> dict[str, str]:
    """nrm's sum layers (fx node names ``add``, ``add_1``, …) → the module
    ``<block>.canonizer_sum`` that zennit's ResNet canonizer adds to the block computing it.

    Only the residual sums of torchvision's ``BasicBlock`` and ``Bottleneck`` have a zennit
    counterpart; any other sum raises :class:`~nrm_verify.peers.PeerConventionError`.
    """
    require("torchvision", "torchvision")
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from nrm.graph import ProperFFNN, Sum

    out = {}
    for block in ProperFFNN(model, x[:1]).linear_blocks():
        if not isinstance(block.producer.module, Sum):
            continue
        call = block.producer.call  # the module whose forward() computed the sum
        path, kind = call.path, type(call.module) if call.module is not None else None
        if kind not in (BasicBlock, Bottleneck):
            raise PeerConventionError(
                f"the sum '{block.name}' is not the residual sum of a torchvision BasicBlock or Bottleneck (it is in "
                f"{path or 'the model itself'}); zennit's ResNet canonizer rewrites only those, so zennit has no "
                "module to hook for it"
            )
        out[block.name] = f"{path}.canonizer_sum"
    return out


def merge_batchnorm(exact: bool = True):
    """zennit's ``SequentialMergeBatchNorm``; with ``exact=True`` (the default here) also
    the batch norm's ``eps`` is set to 0 while merged (and restored on removal).

    zennit's canonizer folds BN into the linear layer before it with s = γ / √(σ² + eps) and
    then sets the batch norm to mean 0, variance 1, γ = 1, β = 0 — but keeps its eps, so the
    "identity" it leaves computes x / √(1 + eps): the canonized model's activations are
    off by a factor 1 − eps/2 ≈ 1 − 5·10⁻⁶ after every batch norm, and so is its relevance.
    nrm folds exactly; with eps = 0 in the merged state the two agree.
    """
    z = _zennit()
    base = z.canonizers.SequentialMergeBatchNorm
    if not exact:
        return base()

    class ExactSequentialMergeBatchNorm(base):
        def register(self, linears, batch_norm):
            super().register(linears, batch_norm)
            self.batch_norm_eps = batch_norm.eps
            batch_norm.eps = 0.0

        def remove(self):
            super().remove()
            self.batch_norm.eps = self.batch_norm_eps

    return ExactSequentialMergeBatchNorm()


def _first(model: nn.Module, types: tuple) -> str | None:
    """The first module (in ``named_modules`` order, as zennit visits them) of the given types."""
    return next((name for name, m in model.named_modules() if isinstance(m, types)), None)


def mirror(name: str, model: nn.Module, *, x: torch.Tensor, epsilon=1e-6, gamma=0.25, stabilizer=1e-6, low=None,
           high=None) -> RuleMap:
    """The nrm rule mapping equal to zennit's built-in composite ``name`` on ``model``.

    ``name`` is one of :data:`BUILTIN`; the keyword arguments are the composite's own
    (``low``/``high`` for ``epsilon_gamma_box``). Per layer: ``torch.nn.Linear`` → ε;
    convolutions → γ (:class:`GeneralizedGamma` on a convolution whose input has negative
    entries — the one that reads the input, one after a convolution without a ReLU,
    :func:`signed_inputs` — ``Gamma`` where a ReLU makes the inputs ≥ 0), z⁺ (``AlphaBeta(1, 0)``
    on signed inputs, ``ZPlus`` elsewhere) or αβ(2, 1), all with ``stabilizer``; average pooling →
    ``Epsilon(stabilizer)`` (zennit's ``Norm``); and zennit's first-layer rule on the first
    module that zennit's ``first_map`` matches: any linear layer for the flat composites,
    only a *convolution* for ``epsilon_gamma_box`` (on a dense-only model zennit applies no
    box rule).

    A callable ``stabilizer`` (e.g. :func:`safe_denominator`) reads as nrm's stabilizer 0.
    """
    if name not in BUILTIN:
        raise PeerConventionError(f"unknown zennit composite {name!r}; known: {BUILTIN}")
    from nrm.graph import ProperFFNN, Sum

    eps = 0.0 if callable(stabilizer) else stabilizer
    modules = dict(model.named_modules())
    reads_input = _first(model, (nn.Linear,) + CONVS)
    negative = signed_inputs(model, x)
    blocks = {b.name: b for b in ProperFFNN(model, x[:1]).linear_blocks()}
    by_name: dict[str, Rule] = {}
    for bname, block in blocks.items():
        if isinstance(block.producer.module, Sum):  # zennit's Norm on the canonizer's Sum
            by_name[bname] = Epsilon(eps)
    for mname, module in modules.items():
        if isinstance(module, nn.Linear):
            by_name[mname] = Epsilon(epsilon)
        elif isinstance(module, POOLS):
            by_name[mname] = Epsilon(eps)
        elif isinstance(module, CONVS):
            signed = mname == reads_input or mname in negative
            if name == "epsilon_gamma_box":
                # zennit's γ is generalized: it differs from nrm's Gamma on signed inputs and
                # on columns with z_k < 0, which carry relevance where no ReLU follows
                general = signed or (mname in blocks and not _relu_after(blocks[mname]))
                rule = GeneralizedGamma(gamma, stabilizer=eps) if general else Gamma(gamma, stabilizer=eps)
            elif name.startswith("epsilon_plus"):
                rule = AlphaBeta(1, 0, stabilizer=eps) if signed else ZPlus(stabilizer=eps)
            else:
                rule = AlphaBeta(2, 1, stabilizer=eps)
            by_name[mname] = rule
    if name.endswith("_flat"):
        first = _first(model, (nn.Linear,) + CONVS)
        if first is not None:
            by_name[first] = Flat(stabilizer=eps)
    if name == "epsilon_gamma_box":
        if low is None or high is None:
            raise PeerConventionError("epsilon_gamma_box needs low= and high=")
        first = _first(model, CONVS)
        if first is not None:
            by_name[first] = ZBox(low, high, stabilizer=eps)
    return RuleMap(by_name={k: v for k, v in by_name.items() if k in blocks}, name=f"zennit {name} mirror")


def builtin_composite(name: str, *, epsilon=1e-6, gamma=0.25, stabilizer=1e-6, low=None, high=None,
                      exact_batchnorm: bool = True, resnet: bool = False):
    """zennit's own composite ``name``, with the batch-norm canonizer :func:`merge_batchnorm`
    (``exact_batchnorm=False``: zennit's plain ``SequentialMergeBatchNorm``); ``resnet=True``
    adds zennit's ResNet block canonizers (:func:`resnet_canonizers`, for torchvision ResNets)."""
    z = _zennit()
    zc = z.composites
    canonizers = resnet_canonizers(exact_batchnorm) if resnet else [merge_batchnorm(exact_batchnorm)]
    kinds = {
        "epsilon_plus": zc.EpsilonPlus, "epsilon_plus_flat": zc.EpsilonPlusFlat,
        "epsilon_alpha2_beta1": zc.EpsilonAlpha2Beta1, "epsilon_alpha2_beta1_flat": zc.EpsilonAlpha2Beta1Flat,
    }
    if name == "epsilon_gamma_box":
        return zc.EpsilonGammaBox(low=_batched(low), high=_batched(high), epsilon=epsilon, gamma=gamma,
                                  stabilizer=stabilizer, canonizers=canonizers)
    if name not in kinds:
        raise PeerConventionError(f"unknown zennit composite {name!r}; known: {BUILTIN}")
    return kinds[name](epsilon=epsilon, stabilizer=stabilizer, canonizers=canonizers)


STARTS = ("f", "one-hot")
"""R at the output: ``"f"`` is LRP's R_c = f_c(x); ``"one-hot"`` is R_c = 1 (zennit's
``Gradient`` attributor given the one-hot of the target), which gives R / f_c."""


def start_vector(output: torch.Tensor, target, start: str = "f") -> torch.Tensor:
    """R at the output: f_c(x) at the target (``start="one-hot"``: 1), 0 elsewhere (one
    target, or one per sample)."""
    c = torch.as_tensor(target, device=output.device).reshape(-1)
    if c.numel() == 1:
        c = c.expand(output.shape[0])
    onehot = torch.zeros_like(output)
    onehot[torch.arange(output.shape[0]), c] = 1.0
    return onehot if start == "one-hot" else onehot * output.detach()


def relevance(model: nn.Module, x: torch.Tensor, target, composite_, layers: Sequence[str] = (),
              start: str = "f") -> dict:
    """zennit's relevance R for ``model`` at ``x`` and output ``target`` under ``composite_``.

    Returns ``{"input": R_0, layer: R_layer, …, "output": f(x)}``: R_layer is the relevance
    arriving at the named module's output (for a linear module: its neurons' relevance,
    LRP's R^(l) of nrm's layer of that name). ``start="one-hot"`` starts from R_c = 1
    instead of f_c(x) (:data:`STARTS`). The model is left as it was (zennit's context
    removes hooks and undoes canonizers).
    """
    if start not in STARTS:
        raise PeerConventionError(f"start= takes one of {STARTS}, got {start!r}")
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        raise UnknownLayerError(f"the model has no modules {unknown}; zennit records relevance at a module's output, "
                                "so name modules (model.named_modules())")
    outs: dict[str, torch.Tensor] = {}
    x = x.detach().clone().requires_grad_(True)
    with composite_.context(model) as modified:
        handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o)) for n in layers]
        try:
            y = modified(x)
        finally:
            for h in handles:
                h.remove()
        grads = torch.autograd.grad(y, [x] + [outs[n] for n in layers], grad_outputs=start_vector(y, target, start))
    result = {"input": grads[0].detach()}
    result.update({n: g.detach() for n, g in zip(layers, grads[1:])})
    result["output"] = y.detach()
    return result


class ZennitExplainer(Explainer):
    """zennit's relevance (:func:`relevance`) as an :class:`~nrm_verify.peers.Explainer`.

    One of:

    * ``rules`` — nrm rules (a rule, a mapping or a preset), mapped to a zennit composite
      for each model by :func:`composite`; the row is the rule's or preset's;
    * ``composite`` — zennit's own composite, run as zennit defines it: a composite object,
      or a function of no arguments that builds one (a composite class,
      ``functools.partial(EpsilonGammaBox, low=-2.0, high=2.0)``, :func:`builtin_composite`
      wrapped in a lambda); :meth:`named` finds one in ``zennit.composites`` by name.
      ``row=`` names the conformance row it reproduces, if it reproduces one.

    ``start``: R at the output (:data:`STARTS`): ``"f"`` (LRP's R, the default) or
    ``"one-hot"``. ``layers`` are module names (R at the module's output); ``"input"`` is
    always returned.
    """

    name = "zennit"

    def __init__(self, rules=None, *, composite=None, start: str = "f", row: str | None = None,
                 spec: str | None = None):
        if (rules is None) == (composite is None):
            raise ArgumentError("ZennitExplainer takes one of rules= (nrm rules, mapped to a zennit composite) or "
                                "composite= (a zennit composite or a function that builds one, run as it is)")
        if composite is not None and not (callable(composite) or hasattr(composite, "context")):
            raise ArgumentError(f"composite= takes a zennit composite or a function of no arguments that builds one, "
                                f"got {type(composite).__name__}")
        if start not in STARTS:
            raise ArgumentError(f"start= takes one of {STARTS}, got {start!r}")
        super().__init__(rules, row=row, spec=spec)
        self.composite, self.start = composite, start

    @classmethod
    def named(cls, name: str, args: Sequence = (), kwargs: dict | None = None, **options) -> ZennitExplainer:
        """zennit's composite ``zennit.composites.<name>(*args, **kwargs)``, built for each
        call; ``options`` go to the explainer (``start=``, ``row=``, ``spec=``). Raises
        :class:`~nrm_verify.peers.PeerMissingError` without zennit and
        :class:`~nrm.errors.ArgumentError` for a name that is no composite."""
        composites = require("zennit.composites", "zennit")
        klass = getattr(composites, name, None) if isinstance(name, str) else None
        if not isinstance(klass, type):
            raise ArgumentError(f"zennit.composites has no composite {name!r}")
        return cls(composite=functools.partial(klass, *args, **(kwargs or {})), **options)

    def composite_for(self, model: nn.Module, x: torch.Tensor):
        """The zennit composite this explainer runs on ``model`` (a fresh one where it is built)."""
        if self.rules is not None:
            return composite(model, self.rules, x=x)
        built = isinstance(self.composite, type) or not hasattr(self.composite, "context")  # a class or a function
        return self.composite() if built else self.composite

    def relevance(self, model, x, target, layers):
        out = relevance(model, x, target, self.composite_for(model, x), [n for n in layers or [] if n != "input"],
                        start=self.start)
        del out["output"]
        return out


__all__ = ["GeneralizedGamma", "zennit_rule", "composite", "merge_batchnorm", "resnet_canonizers", "sum_modules",
           "signed_inputs", "mirror", "builtin_composite", "relevance", "start_vector", "safe_denominator", "BUILTIN",
           "STARTS", "ZennitExplainer"]
