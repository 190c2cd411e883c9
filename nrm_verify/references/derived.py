"""A rule's kernel derived from the rule object, as dense matrices: the explicit references'
formula for any rule that has no hand-written one (a user's rule, a subclass of a built-in).

A rule of :mod:`nrm.rules` is data: ``shares()`` — fractions whose parts are elementwise
functions u_p of the activations and v_p of the weights, and a bias function β_s — plus
named conventions (``stabilizer`` ε, ``stabilizer_sign``, ``leak``). This module writes
the kernel out from that data on the dense matrices the references build (W (K, N) from
the recorded operation, its structural fan-in in(k), the bias b), from the definition
(NRM-SPEC §2, docs/rules.md) and not through :mod:`nrm.engine`.

Definition::

    c_s(j, k) = Σ_p u_p(a_j) v_p(w_jk)   for j ∈ in(k),  0 otherwise
    Z_s(k)    = Σ_j c_s(j, k),     D_s(k) = Z_s(k) + β_s(b_k)     (β_s = 0: no bias, or bias=None)
    D'_s(k)   = D_s + ε s(D_s), s(0) = +1   ("signed")     or     D_s + ε   ("unsigned")
    κ_s       = share_coefficients()                         (1 per share by default)
    dead(k)   = [D'_s(k) = 0 for some s]   (several shares; one share with D' = 0 has κ/D' = 0)
    live_s(k) = [D'_s(k) ≠ 0 and not dead(k)]
    q(j | k)  = Σ_s live_s κ_s c_s(j, k) / D'_s(k)
    q(⊥ | k)  = 1 − Σ_s live_s κ_s + Σ_s live_s κ_s (β_s + D'_s − D_s) / D'_s   (= 1 − Σ_j q(j | k))
    leak = "renormalize":   q̃(j | k) = q(j | k) / Σ_i q(i | k),   q̃(⊥ | k) = [Σ_i q(i | k) = 0]

so q(⊥ | k) holds each share's bias and stabilizer part, and a column whose every share
is dead goes wholly to ⊥ (q(⊥ | k) = 1; never NaN, never Inf).

**Hooks.** A rule may override ``share_coefficients``, ``coefficients(ops, D')`` (κ_s(k)
per column and a dead flag: αβ's fallbacks), ``stabilize(ops, D)`` or ``column(ops, Z, β)``
(docs/rules.md: "override it only for something the shares cannot say"). An override is
the rule's own definition, so it is called here; an inherited hook is not called — its
documented convention is the formula above, so the reference does not run nrm's rule
arithmetic (:meth:`nrm.rules.Rule.column`) or the engine's modified linear maps. A
``column`` override gives the column's scales and q(⊥ | k) itself (its leak is its own):
q(j | k) = Σ_s scales_s(k) c_s(j, k). The rule's element functions receive
:data:`nrm.ops.TORCH`, the activations in one sample's input shape (B, *in) and the weights
as the matrix W (K, N) (out, in), as ``nn.Linear`` holds them. A function that is not
elementwise (one that reads the tensor's layout or a statistic of it) can therefore give
another kernel here than in the engine, which holds a convolution's weight as its kernel:
law L18 then fails, which is what it should do for such a rule.

Refused (:func:`why_not_derivable` says why): a rule that reads the incoming relevance (no
fixed kernel exists) and a rule whose ``shares()`` raise or do not return Shares of Parts.
:func:`nrm_verify.references.explicit.supports` answers for the explicit reference as a whole
(the built-in rules of its table, and every rule derived here).

References: Bach et al., PLoS ONE 10(7), 2015 (LRP); Montavon et al., *Layer-wise relevance
propagation: an overview*, LNCS 11700, 2019 (the rules as fractions of modified
contributions).
"""

from __future__ import annotations

from typing import Any

import torch

from nrm.errors import RuleParameterError
from nrm.ops import TORCH
from nrm.rules import Part, Rule, Share

HOOKS = ("share_coefficients", "coefficients", "stabilize", "column")


class UnsupportedRuleError(RuleParameterError):
    """The reference cannot write this rule's kernel (see :func:`why_not_derivable`)."""


def why_not_derivable(rule: Any) -> str:
    """'' when the references can derive ``rule``'s kernel from the rule object,
    else the reason: the rule reads the incoming relevance (``reads_relevance``: no fixed
    kernel q(j | k), so there is no layer-by-layer LRP with fixed matrices to compare with),
    or its ``shares()`` raise or do not give a non-empty tuple of :class:`nrm.rules.Share`
    with :class:`nrm.rules.Part` s, or its ``share_coefficients()`` do not match them."""
    name = type(rule).__name__
    if getattr(rule, "reads_relevance", False):
        return (f"{name} reads the incoming relevance (reads_relevance = True): it has no fixed kernel q(j|k), so "
                "there is no layer-by-layer LRP with fixed matrices to compare with")
    if not callable(getattr(rule, "shares", None)):
        return f"{name} has no shares(); a rule subclasses nrm.rules.Rule and defines shares() (docs/rules.md)"
    try:
        shares = rule.shares()
    except Exception as error:  # a user's rule: whatever it raises is the reason
        return f"{name}.shares() raised {type(error).__name__}: {error}"
    if not isinstance(shares, (tuple, list)) or not shares:
        return f"{name}.shares() must return a non-empty tuple of nrm.rules.Share; got {shares!r:.80}"
    for share in shares:
        if not isinstance(share, Share) or not share.parts or not all(isinstance(p, Part) for p in share.parts):
            return f"{name}.shares() holds {share!r:.80}, not an nrm.rules.Share with a tuple of nrm.rules.Part"
        functions = [f for p in share.parts for f in (p.input, p.weight)] + [share.bias] * (share.bias is not None)
        if not all(callable(f) for f in functions):
            return f"{name}.shares() holds a Part or bias that is not a function (ops, x) -> x"
    if _overrides(rule, "share_coefficients"):
        try:
            kappa = tuple(rule.share_coefficients())
        except Exception as error:
            return f"{name}.share_coefficients() raised {type(error).__name__}: {error}"
        if len(kappa) != len(shares):
            return f"{name}.share_coefficients() gives {len(kappa)} coefficients for {len(shares)} shares"
    return ""


def _overrides(rule: Any, hook: str) -> bool:
    """Whether the rule's class defines ``hook`` itself (or a class between it and Rule does)."""
    return getattr(type(rule), hook, None) is not getattr(Rule, hook)


def _like(value: Any, shape: tuple[int, ...], ref: torch.Tensor) -> torch.Tensor:
    """A function's result as a tensor of ``shape`` (a number broadcast)."""
    return torch.broadcast_to(torch.as_tensor(value, dtype=ref.dtype, device=ref.device), shape)


def _sign(d: torch.Tensor) -> torch.Tensor:
    """s(d) with s(0) = +1."""
    return torch.where(d < 0, -torch.ones_like(d), torch.ones_like(d))


def _stabilized(rule: Any, d: torch.Tensor) -> torch.Tensor:
    """D' = D + ε s(D) ("signed") or D + ε ("unsigned"); the rule's own ``stabilize`` if it has one."""
    if _overrides(rule, "stabilize"):
        return _like(rule.stabilize(TORCH, d), d.shape, d)
    eps = rule.stabilizer
    if isinstance(eps, (int, float)) and eps == 0:
        return d
    return d + eps * _sign(d) if rule.stabilizer_sign == "signed" else d + eps


def _divide(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """c (B, N, K) / d (B, K) per column; 0 where d = 0."""
    safe = torch.where(d == 0, torch.ones_like(d), d)
    return torch.where((d == 0).unsqueeze(1), torch.zeros_like(c), c / safe.unsqueeze(1))


def _coefficients(rule: Any, stabilized: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """κ_s(k) (B, K) per share and dead(k) (B, K): the rule's own ``coefficients`` if it has one,
    else its share coefficients and dead(k) = [some D'_s(k) = 0] for several shares."""
    like = stabilized[0]
    if _overrides(rule, "coefficients"):
        kappa, dead = rule.coefficients(TORCH, tuple(stabilized))
    else:
        kappa = rule.share_coefficients() if _overrides(rule, "share_coefficients") else (1,) * len(stabilized)
        dead = None
        if len(stabilized) > 1:
            dead = torch.zeros_like(like, dtype=torch.bool)
            for d in stabilized:
                dead = dead | (d == 0)
    dead = torch.zeros_like(like, dtype=torch.bool) if dead is None else _like(dead, like.shape, like).bool()
    return [_like(k, like.shape, like) for k in kappa], dead


def contributions(rule: Any, a: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, M: torch.Tensor,
                  in_shape: tuple[int, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor], list]:
    """Per share: c_s (B, N, K) with c_s[b, j, k] = Σ_p u_p(a_j) v_p(w_jk) on the structural
    connections (0 elsewhere), Z_s = Σ_j c_s (B, K) and β_s(b) (B, K), or None when the share
    leaves the bias out or the layer has none. ``a`` (B, N), ``W`` (K, N) or per sample
    (B, K, N), ``b`` (K,) or (B, K) or None, ``M`` (K, N) booleans: in(k)."""
    B, (K, N) = a.shape[0], W.shape[-2:]
    shaped = a.reshape((B,) + tuple(in_shape))
    structure = M.T.unsqueeze(0)  # (1, N, K)
    cs, zs, betas = [], [], []
    for share in rule.shares():
        c = None
        for part in share.parts:
            u = _like(part.input(TORCH, shaped), shaped.shape, a).reshape(B, N, 1)
            v = _like(part.weight(TORCH, W), W.shape, W).transpose(-1, -2)
            term = u * torch.where(structure, v, torch.zeros_like(v))
            c = term if c is None else c + term
        cs.append(c)
        zs.append(c.sum(1))
        betas.append(None if share.bias is None or b is None else _like(share.bias(TORCH, b), b.shape, b).expand(B, K))
    return cs, zs, betas


def derived_kernel(rule: Any, a: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, M: torch.Tensor,
                   in_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel of ``rule`` at one linear layer, derived from the rule object (the module's
    definition): Q (B, N, K) with Q[b, j, k] = q(j | k) for sample b, and q(⊥ | k) (B, K).
    Arguments as :func:`contributions`; ``in_shape`` is one sample's input shape (N entries)
    in which the rule's input functions see the activations. Raises
    :class:`UnsupportedRuleError` where :func:`why_not_derivable` gives a reason."""
    why = why_not_derivable(rule)
    if why:
        raise UnsupportedRuleError(f"the explicit reference cannot write the kernel of {rule!r}: {why}")
    cs, zs, betas = contributions(rule, a, W, b, M, in_shape)
    if _overrides(rule, "column"):  # the rule's own column: its scales and q(⊥ | k), leak included
        scales, qbot = rule.column(TORCH, tuple(zs), tuple(betas))
        Q = sum(_like(s, zs[0].shape, zs[0]).unsqueeze(1) * c for s, c in zip(scales, cs))
        return Q, _like(qbot, zs[0].shape, zs[0]).clone()
    denominators = [z if beta is None else z + beta for z, beta in zip(zs, betas)]
    stabilized = [_stabilized(rule, d) for d in denominators]
    kappa, dead = _coefficients(rule, stabilized)
    Q, total, absorbed = None, None, None
    one = torch.ones_like(zs[0])
    for c, beta, d, ds, k in zip(cs, betas, denominators, stabilized, kappa):
        live = (ds != 0) & ~dead
        weight = torch.where(live, k, torch.zeros_like(k))  # κ_s where the share is live
        term = weight.unsqueeze(1) * _divide(c, ds)
        leaked = weight * ((ds - d if beta is None else beta + ds - d) / torch.where(live, ds, one))
        Q, total, absorbed = (term, weight, leaked) if Q is None else (Q + term, total + weight, absorbed + leaked)
    qbot = (1 - total) + absorbed
    if rule.leak == "renormalize":
        real = Q.sum(1)
        empty = real == 0
        return _divide(Q, real), empty.to(Q.dtype)
    return Q, torch.where(dead, one, qbot)


__all__ = ["why_not_derivable", "derived_kernel", "contributions", "UnsupportedRuleError"]
