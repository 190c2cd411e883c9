"""captum's ``LRP`` (Kokhlikyan et al., *Captum: A unified and generic model
interpretability library for PyTorch*, arXiv:2009.07896, 2020) on the same case as nrm.

:func:`captum_rule` maps an nrm rule to captum's propagation rule, :func:`relevance` runs
captum with the rules of an nrm ``rules=`` specification and returns LRP's R at the input
and at named layers; :class:`CaptumExplainer` is it (or one of captum's own attribution
methods) behind the :class:`~nrm_verify.peers.Explainer` interface.

Captum's conventions, and how each is matched:

* Every rule divides by z + ε·s(z) with s(0) = +1 (``STABILITY_FACTOR``; 1e-9 unless
  ``EpsilonRule(epsilon)`` sets it): nrm's signed stabilizer. Here the nrm rule's
  stabilizer is written into the captum rule, so ``Gamma(0.25, stabilizer=1e-9)`` matches
  captum's default ``GammaRule()``.
* ``GammaRule`` and ``Alpha1_Beta0_Rule`` change the weights only: the **raw bias** b stays
  in the denominator. For γ that is nrm's ``Gamma(modify_bias=False)``; for z⁺ it is
  :class:`RawBiasZPlus` (defined here: a w⁺ over Σ a w⁺ + b). With ``set_bias_to_zero=True``
  the bias leaves the denominator: ``ZPlus(bias=False)`` and :class:`BiaslessGamma`.
  Captum's rules multiply by the raw input a (negative inputs included): nrm's Gamma and
  ZPlus do the same (a·ρ(w), a·w⁺), so no sign convention differs.
* Max-pooling, flatten and average pooling are layers with a rule in captum (``EpsilonRule``
  by default: relevance · a / (a + 1e-9) on the way down). nrm routes max-pooling winner
  takes all and renames through flatten; here captum gets ``EpsilonRule(PASS_EPSILON)``
  with ε = 1e-300 on them, which is exact in float64 (a/(a + 1e-300) = 1 for every a that
  carries relevance). Average pooling gets the captum counterpart of the nrm rule given to
  it (``Epsilon`` or ``Zero``).
* Residual sums: captum propagates relevance only through modules with a rule, and a plain
  ``a + b`` is none — autograd hands the sum's whole relevance to *each* summand, so a skip
  connection doubles it. captum's ``Addition_Module`` (``EpsilonRule`` by default) is
  the sum with a rule: ε over the two summands, nrm's ``Epsilon(ε)`` on the sum layer
  (``nrm.Sum``). :func:`with_addition_modules` rewrites torchvision's ``BasicBlock`` and
  ``Bottleneck`` with one (and with one ReLU module per use, not in place: captum refuses
  a module used twice and its backward hooks need out-of-place activations).
* Batch norm: captum has no canonizer. Its default rule treats batch norm as a layer of its
  own (ε rule); ``IdentityRule`` passes its relevance through unchanged. nrm folds batch norm
  into the convolution before it. The two differ (``docs/peers.md``); :func:`bn_as_conv`
  rewrites batch norm as an equal depthwise 1×1 convolution, on which nrm's ``Flat`` rule is
  q(k|k) = 1 — exactly captum's ``IdentityRule``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from nrm.errors import ArgumentError
from nrm.presets import assign
from nrm.rules import Epsilon, Gamma, Part, Rule, Share, Zero, ZPlus
from nrm.rules import identity as _identity
from nrm.rules import positive as _positive
from nrm_verify.peers.base import PeerConventionError, product_problem, require, unruled_linear_problem
from nrm_verify.peers.explainer import Explainer

PASS_EPSILON = 1e-300
"""ε of captum's EpsilonRule on max-pooling and flatten: a / (a + ε) = 1 in float64."""

POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _captum():
    return require("captum.attr", "captum")


def _rules_module():
    return require("captum.attr._utils.lrp_rules", "captum")


class RawBiasZPlus(Rule):
    """captum's ``Alpha1_Beta0_Rule()``: z⁺ weights with the raw bias in the denominator.

    Definition::

        q(j | k) = a_j w_jk⁺ / D_k,   D_k = Σ_j a_j w_jk⁺ + b_k   (stabilized),   q(⊥ | k) = b_k / D_k

    Unlike ``nrm.rules.ZPlus`` (b⁺ or nothing), a negative bias makes q(⊥ | k) < 0.
    Reference: captum ``attr._utils.lrp_rules.Alpha1_Beta0_Rule``.
    """

    requires_nonnegative_input = True

    def shares(self):
        return (Share((Part(_identity, _positive),), _identity),)


class BiaslessGamma(Gamma):
    """captum's ``GammaRule(set_bias_to_zero=True)``: ρ_γ(w) = w + γ w⁺, no bias in D.

    Definition::

        q(j | k) = a_j ρ_γ(w_jk) / Σ_j a_j ρ_γ(w_jk),   q(⊥ | k) = 0
    """

    def shares(self):
        return (Share((Part(_identity, self.rho),), None),)


def _check(rule: Rule) -> float:
    if rule.leak != "absorb":
        raise PeerConventionError(f"{rule!r}: captum has no leak='renormalize'; compare with leak='absorb'")
    if rule.stabilizer_sign != "signed":
        raise PeerConventionError(f"{rule!r}: captum stabilizes with z + ε·s(z) (signed) only")
    eps = rule.stabilizer
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise PeerConventionError(
            f"{rule!r}: captum always divides by z + ε·s(z) with ε > 0 (1e-9 by default); give the nrm rule "
            "stabilizer=1e-9 (or Epsilon(eps) for captum's EpsilonRule(eps))"
        )
    return float(eps)


def captum_rule(rule: Rule):
    """captum's propagation rule with the kernel of the nrm ``rule``."""
    lr = _rules_module()
    kind = type(rule)
    if kind is Zero:  # exact except at z_k = 0 exactly, where captum divides by 1e-300 (nrm: column to ⊥)
        return lr.EpsilonRule(epsilon=PASS_EPSILON)
    if kind is Epsilon:
        return lr.EpsilonRule(epsilon=_check(rule))
    if kind is BiaslessGamma:
        out = lr.GammaRule(gamma=float(rule.gamma), set_bias_to_zero=True)
    elif kind is Gamma:
        if rule.modify_bias:
            raise PeerConventionError(
                f"{rule!r}: captum's GammaRule keeps the raw bias in the denominator; use "
                "Gamma(gamma, modify_bias=False, stabilizer=1e-9)"
            )
        out = lr.GammaRule(gamma=float(rule.gamma))
    elif kind is ZPlus:
        if rule.bias:
            raise PeerConventionError(
                f"{rule!r}: captum's Alpha1_Beta0_Rule keeps the raw bias b (not b⁺); use "
                "RawBiasZPlus(stabilizer=1e-9) or ZPlus(bias=False, stabilizer=1e-9) for set_bias_to_zero=True"
            )
        out = lr.Alpha1_Beta0_Rule(set_bias_to_zero=True)
    elif kind is RawBiasZPlus:
        out = lr.Alpha1_Beta0_Rule()
    else:
        raise PeerConventionError(f"no captum counterpart for {rule!r}; captum has ε, γ and α1β0 (and identity)")
    out.STABILITY_FACTOR = _check(rule)
    return out


def _leaves(model: nn.Module):
    for name, module in model.named_modules():
        if not list(module.children()):
            yield name, module


def addition_modules(model: nn.Module, *, x: torch.Tensor) -> dict[str, str]:
    """nrm's sum layers (fx node names ``add``, ``add_1``, …) → the captum ``Addition_Module``
    that computes each. A sum computed by a plain ``+`` has no module to carry a rule in
    captum: :class:`~nrm_verify.peers.PeerConventionError`."""
    from nrm.graph import ProperFFNN, Sum

    addition = require("captum.attr._utils.custom_modules", "captum").Addition_Module
    out = {}
    for block in ProperFFNN(model, x[:1]).linear_blocks():
        if isinstance(block.producer.module, Sum):
            call = block.producer.call  # the module whose forward() computed the sum
            if not isinstance(call.module, addition):
                raise PeerConventionError(
                    f"the sum '{block.name}' is a plain '+', which captum's LRP propagates as a gradient: each summand "
                    "receives the sum's whole relevance. Compute it with captum's Addition_Module "
                    "(cp.with_addition_modules rewrites torchvision ResNet blocks)"
                )
            out[block.name] = call.path
    return out


def reproducible(network, model: nn.Module, attached: dict) -> None:
    """Raise :class:`~nrm_verify.peers.PeerConventionError` where captum's LRP cannot run
    nrm's rules on the network, naming every cause found (the first layer of each): a
    product of activations (captum has no rule for one; the gradient it falls back to gives
    every factor the whole product, where nrm splits it by θ); a linear layer computed by a
    function call, not a module captum gives a rule (captum passes it by its gradient — LRP-0
    — where nrm applies the layer's rule: DenseNet's ``F.adaptive_avg_pool2d``, MNASNet's
    ``x.mean``); a leaf module captum has neither a rule nor a pass for (an activation other
    than ReLU and Tanh, a layer norm, an empty ``nn.Sequential``: captum stops with a
    TypeError); a batch norm that nrm folds into the layer before it and ``module_rules``
    gives no rule (captum applies its default EpsilonRule to it as a layer of its own: a
    deviation of about 1e-4 of the largest relevance on torchvision's googlenet, not a
    rounding error)."""
    from nrm.graph import Sum

    lrp = require("captum.attr._core.lrp", "captum")
    addition = require("captum.attr._utils.custom_modules", "captum").Addition_Module
    ruled = tuple(lrp.SUPPORTED_LAYERS_WITH_RULES) + (Sum, addition)
    problems = product_problem(network, "captum") + unruled_linear_problem(
        network, ruled, "captum", "gives a rule: captum passes it by its gradient (LRP-0)")
    passed = tuple(lrp.SUPPORTED_NON_LINEAR_LAYERS)
    for name, module in _leaves(model):
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and name not in attached:
            problems.append(f"the batch norm '{name}' ({type(module).__name__}) is folded by nrm into the layer before "
                            "it, but captum has no batch-norm canonizer and applies its EpsilonRule to it as a layer "
                            "of its own: explain cp.bn_as_conv(model) with Flat on it (nrm) and "
                            f"module_rules={{'{name}': IdentityRule()}} (captum)")
            break
    for name, module in _leaves(model):
        if name not in attached and not isinstance(module, ruled + passed):
            problems.append(f"the module '{name}' ({type(module).__name__}) has no captum rule and is not one captum "
                            "passes (ReLU, Tanh, Dropout): captum stops with a TypeError")
            break
    if problems:
        raise PeerConventionError("captum cannot run these rules on this model: " + "; ".join(problems))


def relevance(model: nn.Module, x: torch.Tensor, target: int, rules, layers: Sequence[str] = (),
              module_rules: dict | None = None, plain_sums: bool = False) -> dict:
    """captum's LRP relevance R for ``model`` at ``x`` and output ``target``, with the nrm
    ``rules`` (rule, mapping or preset) resolved per layer as :func:`nrm.explain` does.

    ``module_rules`` gives captum rules by module name directly (e.g. ``IdentityRule`` on a
    batch norm). Returns ``{"input": R_0, layer: R_layer, …, "output": f(x)}``; R_layer is
    the relevance at the named module's output (captum's ``relevance_output`` × f). captum
    runs on a copy of the model: its LRP writes the weights in place (and restores them by
    copying the saved values back), which would leave the user's parameters with new version
    counters — and a measure explained on them refusing to answer (StaleMeasureError).

    Sums of branches must be captum ``Addition_Module`` s (:func:`addition_modules`), with
    an ``Epsilon`` or ``Zero`` rule; ``plain_sums=True`` lets a plain ``+`` through (captum
    then hands each summand the sum's whole relevance — only to show that difference).
    """
    from nrm.graph import ProperFFNN, Sum

    captum = _captum()
    lr = _rules_module()
    model = copy.deepcopy(model)
    network = ProperFFNN(model, x[:1])
    assign(network, rules)
    by_name = {b.name: b.rule for b in network.linear_blocks() if not isinstance(b.producer.module, Sum)}
    sums = [b for b in network.linear_blocks() if isinstance(b.producer.module, Sum)]
    if sums and not plain_sums:
        modules_of = addition_modules(model, x=x)
        for block in sums:
            if type(block.rule) not in (Epsilon, Zero):
                raise PeerConventionError(
                    f"the sum '{block.name}' has {block.rule!r}; captum's Addition_Module takes EpsilonRule: give the "
                    "sum Epsilon(eps) or Zero()"
                )
            by_name[modules_of[block.name]] = block.rule
    attached: dict[str, object] = {}
    for name, module in _leaves(model):
        if module_rules and name in module_rules:
            attached[name] = module_rules[name]
        elif name in by_name:
            rule = by_name[name]
            if isinstance(module, POOLS) and type(rule) not in (Epsilon, Zero):
                raise PeerConventionError(f"pooling layer '{name}' has {rule!r}; captum pools with EpsilonRule")
            attached[name] = captum_rule(rule)
        elif isinstance(module, (nn.MaxPool2d, nn.Flatten)):
            attached[name] = lr.EpsilonRule(epsilon=PASS_EPSILON)
    reproducible(network, model, attached)
    modules = dict(model.named_modules())
    for name, rule in attached.items():
        modules[name].rule = rule
    x = x.detach().clone().requires_grad_(True)
    try:
        out = captum.LRP(model).attribute(x, target=target)
        with torch.no_grad():
            y = model(x)
    finally:
        for name in attached:
            for attr in ("rule", "activations"):
                if attr in modules[name].__dict__:
                    delattr(modules[name], attr)
    f = y[torch.arange(y.shape[0]), target]
    result = {"input": out.detach(), "output": y}
    for name in layers:
        rule = attached.get(name)
        if rule is None or not rule.relevance_output:
            raise KeyError(f"captum recorded no relevance for '{name}' (a layer with a rule is needed)")
        rel = next(iter(rule.relevance_output.values()))
        result[name] = rel * f.reshape((-1,) + (1,) * (rel.dim() - 1))
    return result


class CaptumExplainer(Explainer):
    """captum as an :class:`~nrm_verify.peers.Explainer`. One of:

    * ``rules`` — nrm rules (a rule, a mapping or a preset) run as captum's ``LRP`` with
      the matching captum rule on each layer (:func:`relevance`; ``module_rules`` and
      ``plain_sums`` are its own); the row is the rule's or preset's;
    * ``method`` — one of captum's own attribution methods, ``captum.attr.<Method>`` (the
      class or its name): ``Method(model).attribute(x, target=target, **attribute)``, returned
      as ``{"input": …}`` (the method's own output: R for ``LRP``, a gradient for
      ``Saliency``). ``row=`` names the conformance row it reproduces, if it reproduces one.

    ``layers`` (with ``rules`` only) are module names: R at the module's output.
    """

    name = "captum"

    def __init__(self, rules=None, *, method=None, attribute: dict | None = None, module_rules: dict | None = None,
                 plain_sums: bool = False, row: str | None = None, spec: str | None = None):
        if (rules is None) == (method is None):
            raise ArgumentError("CaptumExplainer takes one of rules= (nrm rules, run as captum's LRP with the matching "
                                "rules) or method= (a captum.attr attribution method, run as it is)")
        if method is not None and (module_rules or plain_sums):
            raise ArgumentError("module_rules= and plain_sums= belong to rules=; a captum method runs as it is")
        if attribute is not None and (rules is not None or not isinstance(attribute, dict)):
            raise ArgumentError("attribute= takes a dict of keyword arguments of a method's attribute() (with method=)")
        if module_rules is not None and not isinstance(module_rules, dict):
            raise ArgumentError(f"module_rules= takes {{module name: captum rule}}, got {type(module_rules).__name__}")
        if isinstance(method, str):
            attr = _captum()
            found = getattr(attr, method, None)
            if not isinstance(found, type):
                raise ArgumentError(f"captum.attr has no attribution method {method!r}")
            method = found
        elif method is not None and not isinstance(method, type):
            raise ArgumentError(f"method= takes a captum.attr class or its name, got {type(method).__name__}")
        super().__init__(rules, row=row, spec=spec)
        self.method, self.attribute = method, dict(attribute or {})
        self.module_rules, self.plain_sums = module_rules, plain_sums

    def relevance(self, model, x, target, layers):
        layers = [n for n in layers or [] if n != "input"]
        if self.method is not None:
            if layers:
                raise ArgumentError(f"captum.attr.{self.method.__name__} attributes the input only; layers= needs "
                                    "rules= (captum's LRP records each layer's relevance)")
            return {"input": self.method(model).attribute(x, target=target, **self.attribute)}
        out = relevance(model, x, target, self.rules, layers=layers, module_rules=self.module_rules,
                        plain_sums=self.plain_sums)
        del out["output"]
        return out


class _ResidualBlock(nn.Module):
    """A torchvision ``BasicBlock`` / ``Bottleneck`` for captum: the same convolutions,
    batch norms and shortcut, one ReLU module per use (not in place), and the residual sum
    in captum's ``Addition_Module`` (``addition``).

    Definition::

        out = stages(x)   (conv → bn → ReLU, …, last conv → bn),   identity = downsample(x) or x
        y = ReLU(addition(identity, out))
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        addition = require("captum.attr._utils.custom_modules", "captum").Addition_Module
        self.stages = 3 if hasattr(block, "conv3") else 2
        for i in range(1, self.stages + 1):
            setattr(self, f"conv{i}", getattr(block, f"conv{i}"))
            setattr(self, f"bn{i}", getattr(block, f"bn{i}"))
            setattr(self, f"relu{i}", nn.ReLU())
        self.downsample = block.downsample
        self.addition = addition()
        self.relu = nn.ReLU()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = x
        for i in range(1, self.stages + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.stages:
                out = getattr(self, f"relu{i}")(out)
        return self.relu(self.addition(identity, out))


def with_addition_modules(model: nn.Module) -> nn.Module:
    """A copy of a torchvision ResNet whose ``BasicBlock`` s and ``Bottleneck`` s compute their
    residual sum in captum's ``Addition_Module`` (:class:`_ResidualBlock`; module names of
    the convolutions, batch norms and shortcuts unchanged), and whose top-level ReLU is not
    in place. The copy computes the same function."""
    require("torchvision", "torchvision")
    from torchvision.models.resnet import BasicBlock, Bottleneck

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for cname, child in list(parent.named_children()):
            if isinstance(child, (BasicBlock, Bottleneck)):
                setattr(parent, cname, _ResidualBlock(child))
            elif isinstance(child, nn.ReLU) and child.inplace:
                setattr(parent, cname, nn.ReLU())
    return model.eval()


def bn_as_conv(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``BatchNorm2d`` replaced by the depthwise 1×1
    convolution that computes the same affine map (weight γ/√(σ²+ε), bias β − μ·γ/√(σ²+ε)).

    nrm then sees the batch norm as a layer of its own (not folded), and ``Flat`` on it is
    q(k | k) = 1: captum's ``IdentityRule``.
    """
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for cname, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                scale = child.weight / torch.sqrt(child.running_var + child.eps)
                conv = nn.Conv2d(child.num_features, child.num_features, 1, groups=child.num_features,
                                 dtype=child.weight.dtype)
                with torch.no_grad():
                    conv.weight.copy_(scale.reshape(-1, 1, 1, 1))
                    conv.bias.copy_(child.bias - child.running_mean * scale)
                setattr(parent, cname, conv.eval())
    return model


__all__ = ["RawBiasZPlus", "BiaslessGamma", "captum_rule", "relevance", "CaptumExplainer", "addition_modules",
           "with_addition_modules", "bn_as_conv", "PASS_EPSILON"]
