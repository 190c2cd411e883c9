"""Local renormalization layers (``torch.nn.LocalResponseNorm``) as kernels of the measure.

A local response normalization divides every activation by a power of the energy in a
window of neighbouring channels at the same position (Krizhevsky et al., NIPS 2012)::

    b_k = a_k · S_k^(−β),     S_k = κ + (α/n) Σ_{j ∈ W(k)} a_j²,
    W(k) = {k − ⌊n/2⌋, …, k + ⌊(n−1)/2⌋} ∩ {0, …, C−1}

(torch's ``F.local_response_norm``: n = ``size``, κ = ``k``; the window is zero-padded,
so the divisor stays n at the borders). The layer is not linear, so it has no weights for
a rule to split by. Binder, Montavon, Bach (now Lapuschkin), Müller and Samek,
*Layer-wise relevance propagation for neural networks with local renormalization
layers*, ICANN 2016 (arXiv:1604.00825), compare two ways through it, both kernels here:

(a) **identity**: relevance passes the normalizer unchanged, q(j | k) = δ_jk, q(⊥ | k) = 0
    (:class:`LRNIdentity`; the baseline the paper compares against);
(b) **Taylor**: b_k is written as a sum of terms, one per input of its window, by a
    first-order Taylor expansion, and relevance is split in proportion to the terms
    (:class:`LRNTaylor`). What the expansion leaves unexplained, the residual, goes to
    the absorber ⊥ (or, with ``leak="renormalize"``, is spread over the terms so that
    the column sums to one over the real inputs, weights v with Σ_i v_ik = 1).

Both are rules on an :class:`LRNMap`: a :class:`~nrm.linear.LinearMap` built per batch
from the input a, whose ``weight`` holds the terms' coefficients and whose ``bias`` holds
the residual, so that forward(a, W) + bias = LRN(a). Every rule of :mod:`nrm.rules` then
runs on it unchanged, with the weight's meaning chosen by the map's *expansion*:

``"gradient"`` — the Jacobian, W_jk = J_kj(a) = ∂b_k/∂a_j (the local linearization)::

        J_kj = δ_jk S_k^(−β) − (2αβ/n) a_k a_j S_k^(−β−1)          (j ∈ W(k), else 0)
        r_k  = b_k − Σ_j a_j J_kj = 2β b_k (S_k − κ) / S_k

    LRP-0 on this map is Gradient × Input for the layer (law L9 carries over).
    Generic rules (:class:`~nrm.rules.Zero`, ``Epsilon``, ``ZPlus``, …) on an LRN layer
    use this expansion.

``"root"`` — the paper's Taylor rule, as in the authors' reference implementation
    (lrp_toolbox, Caffe ``LRNLayer::Backward_Relevance_cpu``, ``lrn_backward_type = 1``,
    the toolbox's default). For each output k, the root point z⁽ᵏ⁾ keeps a_k and removes
    the neighbours (z_j = 0, j ≠ k); b_k(a) − b_k(z⁽ᵏ⁾) is expanded to first order with
    the gradient at a::

        b_k(a) ≈ b_k(z⁽ᵏ⁾) + Σ_{j ≠ k} a_j ∂b_k/∂a_j(a)
        W_kk = (κ + (α/n) a_k²)^(−β)        (so a_k W_kk = b_k(z⁽ᵏ⁾), the zero-order term)
        W_jk = J_kj(a) = −(2αβ/n) a_k a_j S_k^(−β−1)                 (j ∈ W(k), j ≠ k)
        r_k  = b_k − Σ_j a_j W_jk

    The neighbours receive their (inhibitory, for a ≥ 0) first-order effect; the
    neuron itself receives what it would produce alone. Exact (r_k = 0) when the
    neighbours of k are silent. Not Gradient × Input: the diagonal differs.

``"identity"`` — W = I (structure: the diagonal only), r = b − a. With
    :class:`LRNIdentity` (a flat split over that one-entry structure) q = δ.

Which rules are meaningful on an LRN layer (the weights depend on the input here, and
for a ≥ 0 every off-diagonal J_kj ≤ 0, since the neighbours only inhibit):

* ``Zero``, ``Epsilon`` — the Taylor rule of the linearization; ``LRNTaylor`` — the paper's.
* ``ZPlus`` (and ``AlphaBeta`` with β = 0) on a ≥ 0 — keep only the positive diagonal
  J_kk⁺: each neuron keeps its own relevance, the rest goes to ⊥; close to the identity.
* ``Gamma``, ``AlphaBeta`` — defined (column-stochastic), favour the self-term.
* ``WSquare`` — defined, but W depends on a, so L14 (input independence) fails on LRN.
* ``Flat`` — uniform over the window: ignores the normalization; input independent.
* ``ZBox`` — meant for the input layer; not meaningful on a normalizer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import RuleParameterError, ShapeError, UnsupportedModuleError
from .linear import LinearMap
from .rules import Part, Rule, Share, identity, ones

EXPANSIONS = ("gradient", "root", "identity")
DEFAULT_EXPANSION = "gradient"
"""The expansion of an LRN layer under a rule that does not name one (Zero, Epsilon, …)."""


class LRNParams(NamedTuple):
    """The constants of ``nn.LocalResponseNorm``: n (``size``), α, β, κ (``k``)."""

    size: int
    alpha: float
    beta: float
    k: float

    @classmethod
    def of(cls, module: nn.Module | LRNParams) -> LRNParams:
        if isinstance(module, LRNParams):
            return module
        if not isinstance(module, nn.LocalResponseNorm):
            raise UnsupportedModuleError(
                f"expected torch.nn.LocalResponseNorm, got {type(module).__name__}; lrn_map builds the map of an "
                "LRN layer only"
            )
        return cls(int(module.size), float(module.alpha), float(module.beta), float(module.k))

    @property
    def lo(self) -> int:
        """⌊n/2⌋: channels of the window before k."""
        return self.size // 2

    @property
    def hi(self) -> int:
        """⌊(n−1)/2⌋: channels of the window after k."""
        return (self.size - 1) // 2


# -- the banded channel mixing ------------------------------------------------------
def _offsets(size: int, channels: int):
    """(t, d, k0, k1): window slot t reads input channel j = k + d for outputs k0 ≤ k < k1."""
    lo = size // 2
    for t in range(size):
        d = t - lo
        k0, k1 = max(0, -d), min(channels, channels - d)
        if k0 < k1:
            yield t, d, k0, k1


def _band_forward(x: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    """z_k = Σ_t x_{k+d(t)} · w[k, t] for x of shape (R, B, C, *sp), w (B, C, n, *sp)."""
    lo = size // 2
    z = x * weight[:, :, lo]  # d = 0 covers every channel; a fresh tensor to accumulate into
    for t, d, k0, k1 in _offsets(size, x.shape[2]):
        if d:
            z[:, :, k0:k1] += x[:, :, k0 + d:k1 + d] * weight[:, k0:k1, t]
    return z


def _band_transpose(g: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    """g_in_j = Σ_t w[j−d(t), t] · g_{j−d(t)} for g of shape (R, B, C, *sp): the adjoint."""
    lo = size // 2
    out = g * weight[:, :, lo]
    for t, d, k0, k1 in _offsets(size, g.shape[2]):
        if d:
            out[:, :, k0 + d:k1 + d] += g[:, :, k0:k1] * weight[:, k0:k1, t]
    return out


class LRNMap(LinearMap):
    """The layer k ← W(k) of a local response normalization for one batch, as a linear map
    with per-sample weights::

        z_k = Σ_{j ∈ W(k)} a_j W_jk,     b_k = z_k + r_k

    ``weight`` has shape (B, C, n, *spatial): ``weight[b, k, t]`` is W_jk of sample b for
    input channel j = k + t − ⌊n/2⌋ at the same position (the band of the Jacobian, stored
    by output channel and window slot). ``bias`` (B, C, *spatial) is the residual r.
    ``mask`` (1, C, n, 1, …) marks the structural connections (window slots inside the
    channel range; only the diagonal for the identity expansion).

    :meth:`forward` and :meth:`transpose` accept any number of stacked rows R·B in the
    leading dimension (the engine stacks K events × B samples); row i uses sample i mod B.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor, params: LRNParams,
                 expansion: str):
        self.weight, self.bias, self.mask = weight, bias, mask
        self.params = params
        self.expansion = expansion
        self.batch = weight.shape[0]
        self.output: torch.Tensor | None = None  # LRN(a), set by lrn_map

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n % self.batch:
            raise ShapeError(
                f"the LRN map was built for a batch of {self.batch} samples but got {n} rows; stack whole batches "
                "(rows = events × samples)"
            )
        return x.reshape((n // self.batch, self.batch) + tuple(x.shape[1:]))

    def forward(self, x, weight):
        """Σ_j x_j W_jk for every output k (no bias)."""
        z = _band_forward(self._rows(x), weight, self.params.size)
        return z.reshape(x.shape)

    def transpose(self, g, weight, in_shape):
        """Σ_k W_jk g_k for every input j: the VJP of :meth:`forward` (its adjoint)."""
        out = _band_transpose(self._rows(g), weight, self.params.size)
        return out.reshape((g.shape[0],) + tuple(in_shape))

    def structured(self, weight):
        """Zero the window slots that fall outside the channels (and, for the identity
        expansion, everything off the diagonal): Flat then counts |W(k)| inputs."""
        return weight * self.mask

    def bias_for(self, z):
        """The residual r (B, C, *spatial); it matches z of the batch."""
        return self.bias

    def dense(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """W as a dense (B, N_in, N_out) matrix over flattened (C, *spatial): for tests and
        small examples only (N² memory)."""
        weight = self.weight if weight is None else weight
        B, C = weight.shape[:2]
        shape = (C,) + tuple(weight.shape[3:])
        n = int(torch.tensor(shape).prod())
        eye = torch.eye(n, dtype=weight.dtype, device=weight.device).reshape((n,) + shape)
        rows = eye.unsqueeze(1).expand((n, B) + shape).reshape((n * B,) + shape)
        out = self.forward(rows, weight).reshape(n, B, n)  # [j, b, k]
        return out.permute(1, 0, 2)


# -- building the map ---------------------------------------------------------------
def _check_input(a: torch.Tensor) -> None:
    if not isinstance(a, torch.Tensor) or not a.is_floating_point():
        raise ShapeError(f"an LRN layer needs a floating tensor input, got {type(a).__name__}"
                         + (f" of dtype {a.dtype}" if isinstance(a, torch.Tensor) else ""))
    if a.dim() < 3:
        raise ShapeError(
            f"LocalResponseNorm normalizes over channels of an input (batch, channels, *spatial) with at least one "
            f"spatial dimension; got shape {tuple(a.shape)}. Add a spatial dimension (x.unsqueeze(-1))"
        )


def _window_sum(sq: torch.Tensor, size: int) -> torch.Tensor:
    """Σ_{j ∈ W(k)} sq_j for sq of shape (B, C, *sp)."""
    ones = torch.ones((1, sq.shape[1], size) + (1,) * (sq.dim() - 2), dtype=sq.dtype, device=sq.device)
    return _band_forward(sq.unsqueeze(0), ones, size)[0]


def _mask(params: LRNParams, channels: int, spatial_dims: int, expansion: str, dtype, device) -> torch.Tensor:
    mask = torch.zeros((1, channels, params.size) + (1,) * spatial_dims, dtype=dtype, device=device)
    if expansion == "identity":
        mask[:, :, params.lo] = 1
        return mask
    for t, _, k0, k1 in _offsets(params.size, channels):
        mask[:, k0:k1, t] = 1
    return mask


def lrn_output(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """LRN(a) through ``F.local_response_norm`` (never through the module's hooks)."""
    p = LRNParams.of(module)
    return F.local_response_norm(a, p.size, p.alpha, p.beta, p.k)


def lrn_map(module: nn.Module | LRNParams, a: torch.Tensor, expansion: str = DEFAULT_EXPANSION) -> LRNMap:
    """The :class:`LRNMap` of ``module`` (or its :class:`LRNParams`) at input ``a`` (B, C, *spatial).

    ``expansion`` is ``"gradient"`` (W = Jacobian), ``"root"`` (Binder et al.'s Taylor
    terms) or ``"identity"``; see the module docstring for the equations. In every case
    ``forward(a, W) + bias`` equals ``F.local_response_norm(a)`` up to rounding (the
    bias is defined as the difference). Reads the module's constants only: no hook runs.
    """
    if expansion not in EXPANSIONS:
        raise RuleParameterError(f"LRN expansion must be one of {EXPANSIONS}, got {expansion!r}")
    p = LRNParams.of(module)
    _check_input(a)
    a = a.detach()
    B, C = a.shape[:2]
    mask = _mask(p, C, a.dim() - 2, expansion, a.dtype, a.device)
    b = F.local_response_norm(a, p.size, p.alpha, p.beta, p.k)
    if expansion == "identity":
        weight = mask.expand((B,) + tuple(mask.shape[1:3]) + tuple(a.shape[2:])).clone()
    else:
        S = p.k + (p.alpha / p.size) * _window_sum(a * a, p.size)
        coupling = (-2.0 * p.alpha * p.beta / p.size) * a * S.pow(-p.beta - 1.0)  # −(2αβ/n) a_k S_k^(−β−1)
        weight = torch.zeros((B, C, p.size) + tuple(a.shape[2:]), dtype=a.dtype, device=a.device)
        for t, d, k0, k1 in _offsets(p.size, C):
            weight[:, k0:k1, t] = coupling[:, k0:k1] * a[:, k0 + d:k1 + d]
        if expansion == "gradient":
            weight[:, :, p.lo] += S.pow(-p.beta)
        else:  # root: a_k W_kk = b_k(z⁽ᵏ⁾), the output with the neighbours removed
            weight[:, :, p.lo] = (p.k + (p.alpha / p.size) * a * a).pow(-p.beta)
    lmap = LRNMap(weight, b, mask, p, expansion)
    lmap.bias = b - lmap.forward(a, weight)
    lmap.output = b
    return lmap


class LRNForward(NamedTuple):
    """What :func:`lrn_forward` returns: the map and the layer's output LRN(a)."""

    map: LRNMap
    output: torch.Tensor


def expansion_of(rule: Any) -> str:
    """The expansion an LRN layer is built with under ``rule``: the rule's
    ``lrn_expansion`` (:class:`LRNTaylor`, :class:`LRNIdentity`), else the Jacobian."""
    return getattr(rule, "lrn_expansion", None) or DEFAULT_EXPANSION


def lrn_forward(module: nn.Module, a: torch.Tensor, rule: Any = None) -> LRNForward:
    """For the engine's forward pass: (map, output) of an LRN layer with input ``a``.

    The map's expansion follows the layer's rule (:func:`expansion_of`); ``output`` is
    ``F.local_response_norm(a)`` (no hook of the module runs), and the map satisfies
    forward(a, map.weight) + map.bias = output up to rounding.
    """
    lmap = lrn_map(module, a, expansion_of(rule))
    return LRNForward(lmap, lmap.output)


# -- the two rules of the paper -----------------------------------------------------
def _number(x) -> bool:
    return isinstance(x, (int, float))


class LRNTaylor(Rule):
    """Taylor-based redistribution through a local renormalization layer.

    Definition (on the :class:`LRNMap` with ``expansion``; T_jk = a_j W_jk the terms)::

        q(j | k) = T_jk / (b_k + ε s(b_k)),     q(⊥ | k) = (r_k + ε s(b_k)) / (b_k + ε s(b_k))
        b_k = Σ_j T_jk + r_k                    (r_k: what the expansion does not explain)

    ``expansion="root"`` (default) is the paper's: T_kk = b_k(z⁽ᵏ⁾) with the neighbours of
    k removed, T_jk = a_j ∂b_k/∂a_j(a) for j ≠ k. ``expansion="gradient"`` uses the
    Jacobian everywhere, T_jk = a_j ∂b_k/∂a_j(a): then LRP-0 on the layer is exactly
    Gradient × Input (L9). ``leak="renormalize"`` gives q(j|k) = T_jk / Σ_i T_ik and
    q(⊥|k) = 0: relevance is conserved, weights v with Σ_i v_ik = 1. ε and ``stabilizer_sign`` as in
    :class:`~nrm.rules.Epsilon`. Markov (L7): q reads forward quantities only.

    Reference: Binder, Montavon, Bach, Müller, Samek, *Layer-wise relevance
    propagation for neural networks with local renormalization layers*, ICANN 2016,
    arXiv:1604.00825.
    """

    def __init__(self, epsilon: Any = 0.0, *, expansion: str = "root", stabilizer_sign: str = "signed",
                 leak: str = "absorb"):
        if _number(epsilon) and epsilon < 0:
            raise RuleParameterError(f"LRNTaylor: epsilon must be >= 0, got {epsilon!r}")
        if expansion not in ("root", "gradient"):
            raise RuleParameterError(
                f"LRNTaylor: expansion must be 'root' (the paper's) or 'gradient' (Gradient × Input), got "
                f"{expansion!r}; for the identity rule use LRNIdentity()"
            )
        super().__init__(stabilizer=epsilon, stabilizer_sign=stabilizer_sign, leak=leak)
        self.epsilon = epsilon
        self.expansion = expansion

    @property
    def lrn_expansion(self) -> str:
        return self.expansion

    def parameters(self):
        return {"epsilon": self.epsilon}

    def conventions(self):
        out = {"expansion": self.expansion} if self.expansion != "root" else {}
        out.update((k, v) for k, v in super().conventions().items() if k != "stabilizer")
        return out

    def __repr__(self) -> str:
        return super().__repr__().replace("nrm.rules.", "nrm.lrn.", 1)

    def shares(self):
        return (Share((Part(identity, identity),), identity),)


class LRNIdentity(Rule):
    """The identity rule through a local renormalization layer.

    Definition::

        q(j | k) = δ_jk,     q(⊥ | k) = 0

    Relevance passes the normalizer unchanged (each output to its own input). Written as
    a flat split over the identity expansion's structure (the diagonal only), so it must
    only be assigned to ``LocalResponseNorm`` layers (``lrn_only``). It ignores the
    activations (L14 holds) and conserves relevance, but breaks L9: Gradient × Input
    would need q(k|k) = a_k J_kk / b_k and the off-diagonal terms.

    Reference: Binder et al., ICANN 2016, arXiv:1604.00825 (the baseline it compares to).
    """

    depends_on_input = False
    lrn_only = True
    lrn_expansion = "identity"

    def __init__(self):
        super().__init__()

    def __repr__(self) -> str:
        return "nrm.lrn.LRNIdentity()"

    def shares(self):
        return (Share((Part(ones, ones),), None),)


LRN_RULES = (LRNTaylor, LRNIdentity)
