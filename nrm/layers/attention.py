"""Attention's operations as kernels (NRM-SPEC §8; issue 14): the matrix product of two
activations (Q · Kᵀ, A · V) and the softmax, each a linear map at the forward value that a
rule splits, so ⊥, the walk measure and the laws carry over unchanged (``docs/attention.md``).

* :class:`MatMul` — O = A · V with both factors computed from the input: the parents of O_jp
  are {A_ji}_i ∪ {V_ip}_i ∪ {⊥}, and the product A_ji V_ip is split by θ between its two
  factors (θ = ½: AttnLRP's uniform rule, Achtibat et al., ICML 2024, Prop. 3.3; θ = 0:
  CP-LRP, Ali et al., ICML 2022, the attention held constant).
* :class:`Softmax` — s = softmax(x) along one dimension, as its first-order Taylor expansion
  at x with the remainder as bias (AttnLRP Prop. 3.1): under LRP-0,
  q(x_i | s_j) = x_i (δ_ij − s_i), q(⊥ | s_j) = 1 − x_j + Σ_i s_i x_i.

torch's fused attention (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``) reaches
these kinds through its definition: :mod:`nrm.layers.fused`.
"""

from __future__ import annotations

import math
import operator
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArgumentError
from ..linear import LogSoftmaxMap, LogSumExpMap, MatMulMap, SoftmaxMap
from ..markers import MatrixProduct, SoftMaximum
from ..recorded import Value
from .base import ExactMap, Linear, seeded, to_fractions, zeros_object
from .elementwise import mixed_precision

THETAS = {"equal": Fraction(1, 2), "values": Fraction(0)}
"""Named splits of :class:`MatMul`: ``"equal"`` θ = ½ (AttnLRP), ``"values"`` θ = 0 (CP-LRP:
everything to the second factor, the values of A · V)."""


def _theta(theta) -> Fraction:
    """θ as an exact fraction in [0, 1] (a name of :data:`THETAS`, a Fraction, an int or a
    float — a float by its exact binary value); anything else is an :class:`ArgumentError`."""
    if isinstance(theta, str) and theta in THETAS:
        return THETAS[theta]
    if isinstance(theta, (Fraction, int, float)) and not isinstance(theta, bool):
        if isinstance(theta, float) and not math.isfinite(theta):
            value = None
        else:
            value = Fraction(theta)
        if value is not None and 0 <= value <= 1:
            return value
    raise ArgumentError(f"MatMul(theta=…) takes a number in [0, 1] (the first factor's share of each product "
                        f"A_ji V_ip; the second factor gets 1 − θ) or one of {', '.join(map(repr, THETAS))} "
                        f"(θ = ½, AttnLRP; θ = 0, CP-LRP), got {theta!r}")


class MatMul(Linear):
    """``A @ V``, ``torch.matmul``, ``Tensor.matmul``, ``torch.bmm`` of two input-derived
    tensors of shapes (B, *lead, n, m) and (B, *lead, m, d) with the same leading dimensions:
    attention's scores Q · Kᵀ and its output A · V. The factors are the layer's parents
    (their neurons packed, A's first); each product A_ji V_ip is split by the named
    parameter θ (``theta``), the first factor's share.

    Definition (the rule's kernel on the map; LRP-ε shown, s(z) the sign with s(0) = +1)::

        O_jp = Σ_i A_ji V_ip,   as the linear map  z = Σ_i A_ji (θ V_ip) + Σ_i ((1 − θ) A_ji) V_ip
        q(A_ji | O_jp) = θ A_ji V_ip / (O_jp + ε s(O_jp))
        q(V_ip | O_jp) = (1 − θ) A_ji V_ip / (O_jp + ε s(O_jp))
        q(⊥ | O_jp)    = ε s(O_jp) / (O_jp + ε s(O_jp))

    θ = ½ (default, ``"equal"``) is AttnLRP's uniform rule (Achtibat et al., ICML 2024,
    Prop. 3.3); θ = 0 (``"values"``) is CP-LRP (Ali et al., ICML 2022): A takes nothing, as if it
    were a constant, and is then no parent (its edges are not connections, also for the
    flat rule). Choose with ``nrm.layers.register(nrm.layers.attention.MatMul(theta=0))``.
    Any rule applies (key it by :class:`nrm.markers.MatrixProduct`). Law L9 holds only in its
    general form (the gradient of O = θ A V̄ + (1 − θ) Ā V, bars detached). Exact form: the
    weights θ V_ip and (1 − θ) A_ji in fractions, θ exact.
    """

    functions = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
                 operator.matmul, torch.bmm, torch.Tensor.bmm)
    rule_types = (MatrixProduct,)
    arity = 2
    jacobian = False

    def __init__(self, theta=Fraction(1, 2)):
        self.theta = _theta(theta)

    def operands(self, call) -> tuple:
        """(A, V) as given (a :class:`~nrm.recorded.Value` or a constant): ``b.__rmatmul__(a)`` is a @ b."""
        first = call.args[0] if call.args else call.kwargs.get("input")
        second = call.args[1] if len(call.args) > 1 else call.kwargs.get("other", call.kwargs.get("mat2"))
        return (second, first) if call.func is torch.Tensor.__rmatmul__ else (first, second)

    def relevance_inputs(self, call):
        return list(self.operands(call))

    def accepts(self, call):
        a, v = self.operands(call)
        if not (isinstance(a, Value) and isinstance(v, Value)):
            return ("multiplies an input-derived tensor by a constant matrix: a linear map, not a product of "
                    "activations; write it with F.linear / nn.Linear")
        if call.kwargs.get("out") is not None:
            return "writes into out="
        shapes = [tuple(s) for s in call.in_shapes]
        if call.func is torch.Tensor.__rmatmul__:
            shapes = shapes[::-1]
        (sa, sv), out = shapes, tuple(call.output.shape)
        if len(sa) < 3 or len(sv) != len(sa) or sa[0] != sv[0] or sa[-1] != sv[-2] \
                or any(p != q and 1 not in (p, q) for p, q in zip(sa[1:-2], sv[1:-2])) \
                or out != tuple(torch.broadcast_shapes(sa[:-2], sv[:-2])) + (sa[-2], sv[-1]):
            return (f"multiplies tensors of shapes {sa} and {sv}; nrm reads (B, *lead, n, m) @ (B, *lead, m, d) "
                    "with the batch first and leading dimensions equal or of size 1 on one side (no vectors, no "
                    "broadcasting over the batch or over a missing dimension)")
        if len(set(call.in_dtypes + [call.output.dtype])) != 1:
            return "multiplies tensors of different dtypes"
        return None

    def shapes(self, call) -> tuple[tuple, tuple]:
        """The per-sample shapes of A and V."""
        shapes = [tuple(s[1:]) for s in call.in_shapes]
        return (shapes[1], shapes[0]) if call.func is torch.Tensor.__rmatmul__ else (shapes[0], shapes[1])

    def split(self, call, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A and V (B, *shape) from the packed input (B, |A| + |V|)."""
        sa, sv = self.shapes(call)
        flat = a.reshape(a.shape[0], -1)
        na = math.prod(sa)
        return flat[:, :na].reshape((a.shape[0],) + sa), flat[:, na:].reshape((a.shape[0],) + sv)

    def map(self, call, a, rule=None):
        sa, sv = self.shapes(call)
        return MatMulMap(a.reshape(a.shape[0], -1), sa, sv, float(self.theta))

    def exact(self, call, a, rule=None) -> ExactMap:
        """W[(A, lead, j, i), (lead, j, p)] = θ V_ip and W[(V, lead, i, p), (lead, j, p)] = (1 − θ) A_ji, in
        fractions from the definition (loops over the indices)."""
        A, V = (to_fractions(t[0]) for t in self.split(call, a))
        lead = tuple(np.broadcast_shapes(A.shape[:-2], V.shape[:-2]))
        (n, m), d = A.shape[-2:], V.shape[-1]
        na, L = A.size, math.prod(lead)
        # the A and V blocks each output block g reads (a dimension of size 1 is broadcast)
        ga = np.broadcast_to(np.arange(math.prod(A.shape[:-2])).reshape(A.shape[:-2]), lead).reshape(-1)
        gv = np.broadcast_to(np.arange(math.prod(V.shape[:-2])).reshape(V.shape[:-2]), lead).reshape(-1)
        A, V = A.reshape(-1, n, m), V.reshape(-1, m, d)
        W, S = zeros_object((na + V.size, L * n * d)), np.zeros((na + V.size, L * n * d), bool)
        t = self.theta
        for g in range(L):
            for j in range(n):
                for p in range(d):
                    k = (g * n + j) * d + p
                    for i in range(m):
                        ia, iv = (ga[g] * n + j) * m + i, na + (gv[g] * m + i) * d + p
                        W[ia, k], W[iv, k] = t * V[gv[g], i, p], (1 - t) * A[ga[g], j, i]
                        S[ia, k], S[iv, k] = t != 0, t != 1
        return ExactMap(W, S, None, lead + (n, d))

    def examples(self):
        return [(Scores(3).eval(), (2, 3)), (SingleHead(3).eval(), (3, 3))]

    def __repr__(self) -> str:
        return f"nrm.layers.{self.name}(theta={self.theta})"



def softmax_exact(x: np.ndarray, s: np.ndarray, groups, y: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The softmax's linearization in fractions (AttnLRP Prop. 3.1), over flat inputs ``x`` and
    outputs ``s`` whose normalization groups are ``groups`` (index arrays): W, structure, bias::

        W[i, j] = s_j (δ_ij − s_i)  (i, j in one group),   b_j = s_j − Σ_i x_i W[i, j]

    With ``y`` (the log-softmax's outputs), the log-softmax's::

        W[i, j] = δ_ij − s_i,                               b_j = y_j − Σ_i x_i W[i, j]
    """
    N = x.size
    W, S, bias = zeros_object((N, N)), np.zeros((N, N), bool), zeros_object(N)
    for group in groups:
        for j in group:
            for i in group:
                delta = (1 if i == j else 0) - s[i]
                W[i, j] = delta if y is not None else s[j] * delta
                S[i, j] = True
            bias[j] = (s[j] if y is None else y[j]) - sum((x[i] * W[i, j] for i in group), Fraction(0))
    return W, S, bias

class Softmax(Linear):
    """``F.softmax``, ``torch.softmax``, ``Tensor.softmax`` (``nn.Softmax``) along one per-sample
    dimension, linearized at the forward value (AttnLRP, Achtibat et al., ICML 2024, Prop. 3.1):
    the linear map z = J x + b with J its Jacobian at x and the Taylor remainder b = s − J x as
    the bias, so that z = s (:class:`nrm.linear.SoftmaxMap`). Over one group (the n neurons
    along the softmax dimension at one position of the others):

    Definition (under LRP-0; any rule applies, key it by ``nn.Softmax``)::

        W_ij = ∂s_j/∂x_i = s_j (δ_ij − s_i),    b_j = s_j − Σ_i x_i W_ij
        q(x_i | s_j) = x_i W_ij / s_j = x_i (δ_ij − s_i)
        q(⊥ | s_j)   = b_j / s_j = 1 − x_j + Σ_i s_i x_i

    Columns sum to one: Σ_i x_i (δ_ij − s_i) = x_j − Σ_i s_i x_i. As relevance,
    R_i = x_i (R_i − s_i Σ_j R_j) (AttnLRP eq. 9). W is the Jacobian, so LRP-0 through the
    softmax keeps Gradient × Input (law L9) wherever it holds above it. The kernel is not
    invariant to a constant shift of x (softmax is): the real parents' shares move by
    c (δ_ij − s_i), ⊥'s share does not. A masked input (x = −∞) is recorded as the finite
    mask value ``finfo.min``: s_i = 0 exactly, so q(x_i | s_j) = 0 and its column goes to ⊥; a
    row masked everywhere (−∞: torch gives NaN; ``finfo.min``: uniform, but shares of size
    finfo.min) is refused (:meth:`mask_refusal`; ``docs/attention.md``, Masks). Exact form: s
    and x as their float64 values in fractions, W and b computed from them exactly (so z = s in
    the oracle).
    """

    functions = (F.softmax, torch.softmax, torch.Tensor.softmax)
    rule_types = (nn.Softmax,)
    reads_masks = True  # a masked input (−inf, recorded as finfo.min) gives s = 0 either way (nrm.capture)
    gate = True
    """Weights that multiply another tensor elementwise are a gate (as a sigmoid's are): the
    radix attention of SKNet and ResNeSt, ``x * softmax(a, 1)``, gives the gate nothing under
    the product's default split ``"signal"`` (the attention held constant, CP-LRP). Attention's
    A · V is a matrix product, :class:`MatMul`, with its own θ."""

    def dim(self, call) -> int | None:
        """The softmax dimension of one sample (0-based, the batch excluded), or None."""
        d = call.arg(1, "dim", None)
        if not isinstance(d, int) or isinstance(d, bool):
            return None
        n = len(call.in_shapes[0])
        d = d + n if d < 0 else d
        return d - 1 if 1 <= d < n else None

    def accepts(self, call):
        if self.dim(call) is None:
            return ("takes the softmax over the batch dimension or without an explicit dim; nrm reads a softmax "
                    "along one per-sample dimension (dim=-1)")
        if call.output.dtype != call.in_dtypes[0] and not mixed_precision(call.in_dtypes[0], call.output.dtype):
            return "changes the dtype (dtype=…); cast before the softmax"
        if bool(torch.isnan(call.output).any()):
            return ("gives NaN: a row whose every entry is masked (−inf; torch's softmax is then 0/0) or a NaN score. "
                    "nrm does not define it: let every query keep at least one key (or mask with finfo.min, whose "
                    "softmax is uniform, as transformers does)")
        return None

    def mask_refusal(self, call, x: torch.Tensor) -> str | None:
        """Why a softmax with a row masked everywhere at ``finfo.min`` (x its recorded input) is
        refused: torch gives a uniform row, but the expansion at x ≈ −3.4e38 has real shares
        x_i (δ_ij − s_i) of that size, which overflow (NaN) in float32; a row of −inf is NaN in
        torch itself (:meth:`accepts`). A query must keep a key, however it is masked."""
        d = self.dim(call)
        if d is None or not x.is_floating_point():
            return None
        if bool((x <= torch.finfo(x.dtype).min).all(d + 1).any()):
            return ("masks every entry of a row (finfo.min or −inf everywhere: a query that attends to no key); nrm "
                    "does not define its relevance: let every query keep at least one key")
        return None

    map_type = SoftmaxMap

    @staticmethod
    def value(a: torch.Tensor, dim: int, s: torch.Tensor) -> torch.Tensor:
        """What the call computes at a along ``dim`` (the point of the linearization), given
        s = softmax(a) (the softmax's own value: not computed twice)."""
        return s

    def map(self, call, a, rule=None):
        """The map at the input a (B, *shape): s = softmax(a) per group, b = value(a) − J a."""
        d = self.dim(call)
        s = torch.softmax(a, d + 1)
        grouped = s.movedim(d + 1, -1).reshape(a.shape[0], -1, a.shape[d + 1])
        lmap = self.map_type(grouped, None, tuple(a.shape[1:]), d)
        lmap.bias = self.value(a, d + 1, s) - lmap.forward(a, lmap.own_weight())
        return lmap

    def exact(self, call, a, rule=None) -> ExactMap:
        """W and b from the definition, in fractions of the float64 s and x (loops over the groups)."""
        d = self.dim(call)
        shape = tuple(a.shape[1:])
        x, s = to_fractions(a[0]), to_fractions(torch.softmax(a.double(), d + 1)[0])
        N = x.size
        index = np.arange(N).reshape(shape)
        groups = np.moveaxis(index, d, -1).reshape(-1, shape[d])
        return ExactMap(*softmax_exact(x.reshape(-1), s.reshape(-1), groups), shape)

    def examples(self):
        return [(nn.Softmax(dim=-1).eval(), (2, 3)), (nn.Softmax(dim=1).eval(), (3, 2))]


class LogSoftmax(Softmax):
    """``F.log_softmax``, ``torch.log_softmax``, ``Tensor.log_softmax`` (``nn.LogSoftmax``: the
    output of classifiers trained with ``nll_loss``) along one per-sample dimension, linearized at
    the forward value as the softmax is (:class:`Softmax`, AttnLRP Prop. 3.1's construction
    applied to log s): the linear map z = J x + b with J the Jacobian at x and the Taylor
    remainder b = y − J x as the bias, so z = y (:class:`nrm.linear.LogSoftmaxMap`). With
    s = softmax(x), over one group:

    Definition (under LRP-0; any rule applies, key it by ``nn.LogSoftmax``)::

        W_ij = ∂y_j/∂x_i = δ_ij − s_i,    b_j = y_j − Σ_i x_i W_ij = Σ_i s_i x_i − log Σ_i e^{x_i}
        q(x_i | y_j) = x_i (δ_ij − s_i) / y_j
        q(⊥ | y_j)   = b_j / y_j = −H(s) / y_j       (H(s) = −Σ_i s_i log s_i, the entropy)

    Columns sum to one: Σ_i x_i (δ_ij − s_i) + b_j = y_j. As relevance of the explained
    log-probability R_j = y_j, the logits get R_j = x_j (1 − s_j), R_i = −x_i s_i (i ≠ j) —
    gradient × input of log s_j — and ⊥ the rest, −H(s) (the part of log s_j that no logit
    carries: it does not move when every logit moves by the same amount). W is the Jacobian,
    so LRP-0 keeps Gradient × Input (law L9). y_j < 0 unless s_j = 1 exactly; a row whose
    output is 0 (one logit taking all the probability, in the dtype's rounding) has q(·|y_j)
    undefined and is refused by the output measure (f_c(x) = 0) or sent to ⊥ by a stabilizer.
    A masked input (−inf: y = −inf) is refused. Exact form: x, s and y as their float64 values
    in fractions, W and b computed from them exactly (so z = y in the oracle).
    """

    functions = (F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax)
    rule_types = (nn.LogSoftmax,)
    gate = False  # log-probabilities (≤ 0) weigh nothing: a product with them is not gated
    reads_masks = False

    def accepts(self, call):
        if self.dim(call) is None:
            return ("takes the log-softmax over the batch dimension or without an explicit dim; nrm reads a "
                    "log-softmax along one per-sample dimension (dim=-1)")
        if call.output.dtype != call.in_dtypes[0] and not mixed_precision(call.in_dtypes[0], call.output.dtype):
            return "changes the dtype (dtype=…); cast before the log-softmax"
        if not bool(torch.isfinite(call.output).all()):
            return ("gives −inf or NaN (a masked entry, −inf, has log-probability −inf; or a NaN input). nrm reads "
                    "a log-softmax of finite inputs: mask with a large finite negative number, or explain the "
                    "logits before it")
        return None

    def mask_refusal(self, call, x: torch.Tensor) -> str | None:
        return None

    map_type = LogSoftmaxMap

    @staticmethod
    def value(a: torch.Tensor, dim: int, s: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(a, dim)  # torch's own, not log s (which loses digits where s is tiny)

    def exact(self, call, a, rule=None) -> ExactMap:
        """W and b from the definition, in fractions of the float64 x, s and y (loops over the groups)."""
        d = self.dim(call)
        shape = tuple(a.shape[1:])
        x = to_fractions(a[0])
        s = to_fractions(torch.softmax(a.double(), d + 1)[0])
        y = to_fractions(torch.log_softmax(a.double(), d + 1)[0])
        index = np.arange(x.size).reshape(shape)
        groups = np.moveaxis(index, d, -1).reshape(-1, shape[d])
        return ExactMap(*softmax_exact(x.reshape(-1), s.reshape(-1), groups, y=y.reshape(-1)), shape)

    def examples(self):
        return [(nn.LogSoftmax(dim=-1).eval(), (2, 3)), (nn.LogSoftmax(dim=1).eval(), (3, 2))]


class LogSumExp(Linear):
    """``torch.logsumexp(x, dim, keepdim)``, ``Tensor.logsumexp`` over per-sample dimensions —
    LSE pooling, a smooth maximum, the log-partition of a softmax — linearized at the forward
    value as the softmax and the log-softmax are (AttnLRP Prop. 3.1's construction): the linear
    map z = J x + b with J the Jacobian at x and the Taylor remainder b = y − J x as the bias, so
    z = y (:class:`nrm.linear.LogSumExpMap`). With s = softmax(x) over the group G_k that output
    k reduces:

    Definition (under LRP-0; any rule applies, key it by ``nrm.markers.SoftMaximum``; LRP-0 in
    every preset)::

        W_jk = ∂y_k/∂x_j = s_j [j ∈ G_k],     b_k = y_k − Σ_{j ∈ G_k} s_j x_j = H(s)   (the entropy)
        q(x_j | y_k) = s_j x_j / y_k
        q(⊥ | y_k)   = H(s) / y_k

    Each output sends its relevance to its group's entries in proportion to s_j x_j — the max
    pooling's winner-takes-all made smooth — and ⊥ the part no entry carries (H ≥ 0: y does
    not move when every x_j moves by the same amount, the shares do). W is the Jacobian, so
    LRP-0 keeps Gradient × Input (law L9). A masked entry (−∞, recorded as ``finfo.min``) has
    s_j = 0 and takes nothing (``reads_masks``). Exact form: x, s and y as their float64 values
    in fractions, W and b computed from them exactly (so z = y in the oracle). Refused: the
    batch dimension, no ``dim``, a non-finite output (a group masked everywhere: −∞), ``out=``."""

    functions = (torch.logsumexp, torch.Tensor.logsumexp)
    rule_types = (SoftMaximum,)
    reads_masks = True  # exp(−∞) = exp(finfo.min − y) = 0: a masked entry weighs nothing either way

    def dims(self, call) -> tuple[int, ...] | None:
        """The reduced dimensions of the batched tensor (sorted, ≥ 1), or None."""
        dim = call.arg(1, "dim", None)
        n = len(call.in_shapes[0])
        dims = (dim,) if isinstance(dim, int) and not isinstance(dim, bool) else dim
        if not isinstance(dims, (tuple, list, torch.Size)) or not dims or \
                not all(isinstance(d, int) and not isinstance(d, bool) and -n <= d < n for d in dims):
            return None
        return tuple(sorted({d % n for d in dims}))

    def keepdim(self, call) -> bool:
        return bool(call.arg(2, "keepdim", False))

    def accepts(self, call):
        if call.kwargs.get("out") is not None:
            return "writes into out="
        dims = self.dims(call)
        if dims is None or 0 in dims:
            return ("reduces over the batch dimension or without a valid dim; nrm reads a logsumexp over per-sample "
                    "dimensions (dim=-1, or a tuple of them)")
        if not isinstance(call.arg(2, "keepdim", False), bool):
            return f"takes keepdim={call.arg(2, 'keepdim', False)!r}; nrm reads True or False"
        if call.output.dtype != call.in_dtypes[0]:
            return "changes the dtype; cast before the logsumexp"
        if not bool(torch.isfinite(call.output).all()):
            return ("gives −inf, inf or NaN (a group masked everywhere, an infinite or NaN entry); nrm reads a "
                    "logsumexp with a finite value: let every group keep an entry")
        return None

    def _parts(self, call, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s (B, *in) and y (B, *out) at a, in a's dtype (y: torch's own)."""
        dims = self.dims(call)
        y = torch.logsumexp(a, dims, keepdim=True)
        s = torch.exp(a - y)
        return s, y if self.keepdim(call) else y.squeeze(dims)

    def map(self, call, a, rule=None):
        """The map at the input a (B, *shape): s = softmax(a) per group, b = y − W a."""
        s, y = self._parts(call, a)
        lmap = LogSumExpMap(s, None, self.dims(call), self.keepdim(call))
        lmap.bias = y - lmap.forward(a, s)
        return lmap

    def exact(self, call, a, rule=None) -> ExactMap:
        """W and b from the definition, in fractions of the float64 x, s and y (loops over the groups)."""
        dims, keep = self.dims(call), self.keepdim(call)
        in_shape = tuple(a.shape[1:])
        s64, y64 = self._parts(call, a.double())
        x, s, y = to_fractions(a[0]), to_fractions(s64[0]), to_fractions(y64[0]).reshape(-1)
        kept = tuple(1 if d + 1 in dims else n for d, n in enumerate(in_shape))
        out_shape = kept if keep else tuple(n for d, n in enumerate(in_shape) if d + 1 not in dims)
        n_in, n_out = math.prod(in_shape), math.prod(out_shape)
        W, S, b = zeros_object((n_in, n_out)), np.zeros((n_in, n_out), bool), zeros_object(n_out)
        carried = [Fraction(0)] * n_out
        for j, pos in enumerate(np.ndindex(*in_shape)):
            k = int(np.ravel_multi_index(tuple(0 if d + 1 in dims else p for d, p in enumerate(pos)), kept))
            W[j, k], S[j, k] = s[pos], True
            carried[k] += s[pos] * x[pos]
        for k in range(n_out):
            b[k] = y[k] - carried[k]
        return ExactMap(W, S, b, out_shape)

    def examples(self):
        return [(LSEPooled((-1,)), (2, 3)), (LSEPooled((1, 2), keepdim=True), (2, 2, 3))]


class LSEPooled(nn.Module):
    """``torch.logsumexp(3 x, dims, keepdim)`` (an example of :class:`LogSumExp`)."""

    def __init__(self, dims: tuple, keepdim: bool = False):
        super().__init__()
        self.dims, self.keepdim = dims, keepdim

    def forward(self, x):
        return torch.logsumexp(x * 3.0, self.dims, keepdim=self.keepdim)


class Scores(nn.Module):
    """Attention scores of one head, (x W_q)(x W_k)ᵀ / √d on x (T, d) (an example of :class:`MatMul`)."""

    def __init__(self, d: int):
        super().__init__()
        self.q, self.k = seeded(nn.Linear(d, d), 11), seeded(nn.Linear(d, d), 12)
        self.scale = 1 / math.sqrt(d)

    def forward(self, x):
        return self.q(x) @ self.k(x).transpose(-1, -2) * self.scale


class SingleHead(nn.Module):
    """One self-attention head, softmax((x W_q)(x W_k)ᵀ / √d)(x W_v) on x (T, d) (an example of
    :class:`MatMul` and :class:`Softmax` together)."""

    def __init__(self, d: int):
        super().__init__()
        self.scores = Scores(d)
        self.v = seeded(nn.Linear(d, d), 13)

    def forward(self, x):
        return torch.matmul(F.softmax(self.scores(x), dim=-1), self.v(x))

