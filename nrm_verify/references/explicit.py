"""Slow, explicit LRP written from the equations: the reference side of L8 on any graph.

Independent of :mod:`nrm.engine` and of nrm's rule arithmetic (:meth:`nrm.rules.Rule.column`):
the model is read from what it computed (nrm's capture), every linear neuron layer
(``Linear``, ``Conv1d``/``Conv2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, a residual
addition) is turned into an explicit dense float64 matrix W (out neurons × in neurons,
obtained by applying the map to the identity basis), batch norm is folded into the
matrix before it, and the kernel of the layer's rule is written out per column from the
table of NRM-SPEC §2 (x⁺ = max(x, 0), x⁻ = min(x, 0), s(0) = +1, ρ_γ(w) = w + γ w⁺):

    LRP-0   q(j|k) = a_j w_jk / z_k                      q(⊥|k) = b_k / z_k
    ε       q(j|k) = a_j w_jk / D'_k,  D'_k = stab(z_k)  q(⊥|k) = (b_k + D'_k − z_k) / D'_k
    γ       q(j|k) = a_j ρ(w_jk) / D'_k                   q(⊥|k) = (ρ(b_k) + D'_k − D_k) / D'_k
    z⁺      q(j|k) = a_j w_jk⁺ / D'_k                     q(⊥|k) = (b_k⁺ + D'_k − D_k) / D'_k
    αβ      q(j|k) = α (a_j w_jk)⁺ / P'_k − β (a_j w_jk)⁻ / N'_k,   fallbacks (1, 0), (0, −1)
    w²      q(j|k) = w_jk² / D'_k,  D_k = Σ_j w_jk² [+ b_k²]
    flat    q(j|k) = [j ∈ in(k)] / D'_k,  D_k = |in(k)|
    z^B     q(j|k) = (a_j w_jk − l_j w_jk⁺ − h_j w_jk⁻) / D'_k   (the bias cancels)

with stab(D) = D + ε s(D) (``stabilizer_sign="signed"``) or D + ε (``"unsigned"``) and
q(⊥|k) the bias and stabilizer share. A zero denominator sends the column wholly to ⊥;
``leak="renormalize"`` rescales each column to sum 1 over real neurons (a column with no
real mass then goes to ⊥). A built-in rule object is only *read* (ε, γ, α, β, bounds, flags).

Any other rule — a user's, or a subclass of a built-in — gets the kernel derived from the
rule object itself: its ``shares()`` evaluated on the same dense matrices,
c_s(j,k) = Σ_p u_p(a_j) v_p(w_jk) on in(k), and the conventions written out as above
(:mod:`nrm_verify.references.derived`, where the equations are; hooks the rule overrides,
such as its own ``column``, are its definition and are called). So L18 applies to user
rules too; :func:`supports` says which rules have no kernel here (one that reads the
incoming relevance, or one whose ``shares()`` are unusable; :func:`unsupported_reason` why), and ``derive=True`` derives
the built-in rules' kernels as well, which agree with the table (tests/test_derived.py).

Non-linear nodes route relevance with q = 1: elementwise activations (ReLU, LeakyReLU,
``F.relu``, ``.relu()``), Dropout/Identity, reshapes (Flatten, ``view``, ``reshape``,
``torch.flatten``), ``torch.cat`` (each output neuron is one input neuron) and
``MaxPool2d`` (winner takes all: the first maximum in row-major window order). Relevance
reaching a node from several consumers adds up (fan-out, L18). Relevance is propagated in
reverse topological (fx) order, so for every node v the *cut* identity

    Σ_j R_j^(v) + pending(v) + absorbed(v) = f

holds, where pending(v) is relevance that bypasses v — already sent on edges that skip v,
or leaked to ⊥ by a node that does not read v (a parallel branch) — and absorbed(v) is what
the nodes that read v (directly or not) leaked to ⊥. Both are independent of the order of
parallel branches. On a sequential model pending = 0 and absorbed(v)/f = m_v(⊥_v) (L1, L8).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import nrm
from nrm.capture import Value
from nrm.errors import (
    RuleAssignmentError,
    TrainingModeError,
    UnknownLayerError,
    UnsupportedModuleError,
    ZeroOutputError,
)
from nrm.graph import reaching_calls, rule_types
from nrm.layers.attention import MatMul, Softmax
from nrm.layers.message import SegmentSoftmax
from nrm.lrn import LRNIdentity, LRNTaylor
from nrm.presets import RuleMap
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus
from nrm_verify.references.derived import UnsupportedRuleError, derived_kernel, why_not_derivable

DTYPE = torch.float64

LINEAR_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
PASS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.modules.dropout._DropoutNd)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
CAT_FUNCTIONS = (torch.cat, torch.concat)
PASS_FUNCTIONS = (F.relu, torch.relu, F.leaky_relu)
RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape)
PASS_METHODS = ("relu", "contiguous")
RESHAPE_METHODS = ("view", "reshape", "flatten")
CONSTANT_METHODS = ("size", "dim")
GATES = ("sigmoid", "hardsigmoid", "expit", "segment_softmax")  # a graph attention's weights gate its messages
HELD = ("rsqrt",)
"""Functions whose output, as a factor of a product, is a normalizer held at its forward value
(RMSNorm's 1/σ): it gets nothing under every split, the other factors share the rest."""


# -- the traced graph -----------------------------------------------------------------------


@dataclass
class RefNode:
    """One tensor of the traced model: a neuron layer.

    ``kind`` is "input", "linear" (dense W, b, structure M; a kernel per sample) or
    "route" (each output neuron is one input neuron: ``route`` (B, n_out) indexes the
    concatenation of the input slots). ``inputs`` lists the producer names per slot."""

    name: str
    kind: str
    value: torch.Tensor  # (B, *shape), after the node's own (elementwise) op
    inputs: list[str] = field(default_factory=list)
    call: object = None  # the recorded operation (nrm.capture.Call)
    is_sum: bool = False
    lrn: bool = False  # a local response normalization: W and b at its input, by its rule's expansion
    reader: object = None  # the layer kind nrm reads the call with, when not the capture's (an unfolded batch norm)
    weight: torch.Tensor | None = None  # (n_out, n_in_total)
    bias: torch.Tensor | None = None  # (n_out,)
    structure: torch.Tensor | None = None  # (n_out, n_in_total) bool: in(k)
    route: torch.Tensor | None = None  # (B, n_out) int64
    aliases: list[str] = field(default_factory=list)  # pass-through names after it (rule lookup)
    factors: list = field(default_factory=list)  # a product's factors (captured values), flattened
    rule: object = None
    Q: torch.Tensor | None = None  # (B, n_in_total, n_out)
    qbot: torch.Tensor | None = None  # (B, n_out)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape[1:])


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _basis(shape) -> torch.Tensor:
    n = _numel(shape)
    return torch.eye(n, dtype=DTYPE).reshape((n,) + tuple(shape))


def _dense(fn, in_shape) -> torch.Tensor:
    """W (n_out, n_in) of a linear map without bias: column j is fn(e_j)."""
    out = fn(_basis(in_shape))
    return out.reshape(out.shape[0], -1).T.contiguous()


def _substitute(call, replacement):
    """The recorded call's arguments with every input-derived value replaced by
    ``replacement(value)`` (constants — weights, numbers — as recorded)."""

    def sub(v):
        return replacement(v) if isinstance(v, Value) else v

    def walk(o):
        if isinstance(o, (list, tuple)) and not hasattr(o, "_fields"):
            return type(o)(walk(i) for i in o)
        if isinstance(o, dict):
            return {k: walk(i) for k, i in o.items()}
        return sub(o)

    return walk(call.args), walk(call.kwargs)


def apply_recorded(call, replacement):
    """Run the recorded operation (the model's own function or module) on other inputs."""
    args, kwargs = _substitute(call, replacement)
    if call.whole:
        return call.module.forward(*args, **kwargs)
    if call.func in _SCATTERS:
        args = _scatter_rows(args)
    return call.func(*args, **kwargs)


_SCATTERS = {torch.Tensor.scatter_add_, torch.Tensor.scatter_add, torch.scatter_add, torch.Tensor.scatter_reduce_,
             torch.Tensor.scatter_reduce, torch.scatter_reduce, torch.Tensor.index_add_, torch.Tensor.index_add,
             torch.index_add}


def _reduce(call) -> str:
    """The reduction of a recorded scatter: 'sum' for scatter_add and index_add."""
    if call.func in (torch.Tensor.scatter_reduce_, torch.Tensor.scatter_reduce, torch.scatter_reduce):
        return call.args[4] if len(call.args) > 4 else call.kwargs["reduce"]
    return "sum"


def _scatter_max_matrices(call, a: torch.Tensor) -> tuple:
    """A scatter-max (``base.scatter_reduce_(dim, index, src, "amax", include_self=…)``) at its
    input a (B, *src), from the definition by explicit loops: output k takes the first message p
    in row-major order whose value is the largest of those landing on k (W[b, k, p] = 1, the
    structure the winner alone); where none lands, or with include_self where the constant is
    at least every message, the output is the constant (the bias)."""
    base, dim, index = call.args[0], call.args[1], call.args[2]
    include_self = bool(call.kwargs.get("include_self", True))
    B, src = a.shape[0], tuple(a.shape[1:])
    d = dim % a.dim() - 1
    out = tuple(base.shape[1:])
    K, N = _numel(out), _numel(src)
    idx = index[0].reshape(src)
    const = base[0].reshape(-1).to(DTYPE)
    W = torch.zeros((B, K, N), dtype=DTYPE)
    b = const.expand(B, K).clone()
    for s in range(B):
        best: dict[int, tuple[float, int]] = {}
        for p, pos in enumerate(itertools.product(*(range(n) for n in src))):
            target = list(pos)
            target[d] = int(idx[pos])
            k = 0
            for size, i in zip(out, target):
                k = k * size + i
            v = float(a[s][pos])
            if k not in best or v > best[k][0]:
                best[k] = (v, p)
        for k, (v, p) in best.items():
            if include_self and float(const[k]) >= v:
                continue
            W[s, k, p] = 1.0
            b[s, k] = 0.0
    bias = None if not bool(b.abs().max() > 0) else (b[0] if bool((b == b[:1]).all()) else b)
    return W, bias, W != 0


def _scatter_rows(args: tuple) -> tuple:
    """A scatter (message passing's aggregation, ``base.scatter_add_(dim, index, src)``) replayed
    on ``src`` of R rows: the constant it writes into is copied (the recorded one stays as it
    was) with its batch dimension repeated to R rows, and an index of the messages' shape
    likewise (``index_add``'s 1-D index is per sample already)."""
    base, dim, index, src = args[:4]
    rows = src.shape[0]
    base = base[:1].expand((rows,) + tuple(base.shape[1:])).clone()
    if index.dim() == src.dim():
        index = index[:1].expand((rows,) + tuple(index.shape[1:]))
    return (base, dim, index, src) + tuple(args[4:])


def _affine(call, in_shape) -> tuple:
    """(W (n_out, n_in), b (n_out,) or None, M (n_out, n_in)) of a linear operation on one
    sample of shape ``in_shape``: the recorded call applied to the unit basis (column j is
    call(e_j) − call(0), b = call(0)). M, the structural fan-in, is the same with every
    parameter the call reads set to one (zero weights are connections: the flat rule counts
    them); for an operation without parameter arguments (average pooling, a module recorded
    whole) M = W ≠ 0."""
    basis = _basis(in_shape)
    zero = torch.zeros((1,) + tuple(in_shape), dtype=DTYPE)
    b = apply_recorded(_rows(call, 1), lambda v: zero).reshape(-1)
    out = apply_recorded(_rows(call, basis.shape[0]), lambda v: basis)
    W = (out.reshape(out.shape[0], -1) - b).T.contiguous()
    params = structural_parameters(call)
    if params:
        ones = {id(t): torch.ones_like(t) for t in params}
        flat = apply_recorded(_rows(with_constants(call, ones), basis.shape[0]), lambda v: basis)
        flat0 = apply_recorded(_rows(with_constants(call, ones), 1), lambda v: zero).reshape(-1)
        M = (flat.reshape(flat.shape[0], -1) - flat0).T != 0
    else:
        M = W != 0
    return W, (b if bool(b.abs().max() > 0) else None), M


def _masks(call, a: torch.Tensor, W: torch.Tensor, b, M: torch.Tensor) -> tuple:
    """Masked neurons of an affine operation (``docs/attention.md``, Masks): where the recorded
    operation gives −∞ — a constant −∞ (b_k = −∞, so column j's call(e_j) − b is NaN there) or a
    sum that overflows in the call's dtype — the output is −∞ whatever the input: the row of W
    and of M is 0, and b_k the mask value m = finfo(dtype).min that the capture records."""
    if b is None:
        return W, b, M
    dtype = call.output.dtype
    z = (a.reshape(a.shape[0], -1).to(dtype) @ torch.nan_to_num(W, nan=0.0).T.to(dtype)) + b.to(dtype)
    rows = torch.isneginf(b) | torch.isneginf(z).any(0).to(b.device)
    if not bool(rows.any()):
        return W, b, M
    W = torch.where(rows[:, None], torch.zeros_like(W), W)
    M = M & ~rows[:, None]
    return W, torch.where(rows, torch.full_like(b, torch.finfo(dtype).min), b), M


def _rows(call, rows: int):
    """``call`` with the constant parts of a concatenation as ``rows`` rows: a constant beside
    an activation carries the recorded batch (a class token expanded over it), the unit basis
    and the zero input have other row counts. Its first row is taken; that it is every row's
    is what the dense check of the recorded output verifies."""
    if call.func not in (torch.cat, torch.concat, torch.concatenate):
        return call
    parts = call.arg(0, "tensors")
    replace = {id(p): p[:1].expand((rows,) + tuple(p.shape[1:])) for p in parts
               if isinstance(p, torch.Tensor) and p.dim() > 0 and p.shape[0] != rows}
    return with_constants(call, replace) if replace else call


def _centring_matrices(call, a: torch.Tensor) -> tuple:
    """Layer norm or group norm at its input a (B, *in) with σ held (AttnLRP Prop. 3.4), per
    sample, from the definition by explicit loops over the groups: W[b, k, j] =
    γ_k / σ_{b,g} (δ_jk − 1/n) for j, k in group g, b_k = β_k. Structure: the groups."""
    B, shape = a.shape[0], tuple(a.shape[1:])
    N = _numel(shape)
    gamma, beta, eps = call.arg(2, "weight", None), call.arg(3, "bias", None), float(call.arg(4, "eps", 1e-5))
    if call.func is F.layer_norm:
        n = math.prod(call.arg(1, "normalized_shape"))
        g = gamma.detach().reshape(-1).repeat(N // n) if gamma is not None else torch.ones(N, dtype=DTYPE)
        bias = beta.detach().reshape(-1).repeat(N // n) if beta is not None else None
    else:
        G, per = call.arg(1, "num_groups"), math.prod(shape[1:])
        n = N // G
        g = gamma.detach().repeat_interleave(per) if gamma is not None else torch.ones(N, dtype=DTYPE)
        bias = beta.detach().repeat_interleave(per) if beta is not None else None
    W = torch.zeros((B, N, N), dtype=DTYPE)
    M = torch.zeros((N, N), dtype=torch.bool)
    flat = a.reshape(B, N)
    for start in range(0, N, n):
        group = slice(start, start + n)
        for b in range(B):
            x = flat[b, group]
            sigma = torch.sqrt(((x - x.sum() / n) ** 2).sum() / n + eps)
            for k in range(start, start + n):
                for j in range(start, start + n):
                    W[b, k, j] = g[k] / sigma * ((1.0 if j == k else 0.0) - 1.0 / n)
        M[group, group] = True
    return W, bias, M


def _softmax_matrices(call, a: torch.Tensor) -> tuple:
    """A softmax at its input a (B, *in), linearized at a (AttnLRP Prop. 3.1), per sample, by
    explicit loops over the groups along its dimension: s = exp(x − max) / Σ exp(x − max),
    W[b, k, j] = ∂s_k/∂x_j = s_k (δ_jk − s_j), b = s − W a (the Taylor remainder). Structure: the groups."""
    B, shape = a.shape[0], tuple(a.shape[1:])
    N, d = _numel(shape), call.kind.dim(call)
    index = torch.arange(N).reshape(shape).movedim(d, -1).reshape(-1, shape[d])
    flat = a.reshape(B, N)
    W = torch.zeros((B, N, N), dtype=DTYPE)
    M = torch.zeros((N, N), dtype=torch.bool)
    for group in index.tolist():
        for b in range(B):
            x = flat[b, group]
            e = torch.exp(x - x.max())
            s = e / e.sum()
            for kk, k in enumerate(group):
                for jj, j in enumerate(group):
                    W[b, k, j] = s[kk] * ((1.0 if jj == kk else 0.0) - s[jj])
        M[torch.tensor(group).reshape(-1, 1), torch.tensor(group).reshape(1, -1)] = True
    s_all = torch.zeros((B, N), dtype=DTYPE)
    for group in index.tolist():
        x = flat[:, group]
        e = torch.exp(x - x.max(1, keepdim=True).values)
        s_all[:, group] = e / e.sum(1, keepdim=True)
    bias = s_all - torch.einsum("bkn,bn->bk", W, flat)
    return W, bias, M


def _segment_softmax_matrices(call, a: torch.Tensor) -> tuple:
    """A segment softmax (``nrm.layers.message.segment_softmax``) at its input a (B, E, *rest),
    linearized at a per sample, by explicit loops: for every segment k and trailing position r,
    the group of edges e with index[e] = k; s = exp(x − max) / Σ exp(x − max) over the group,
    W[b, k, j] = s_k (δ_jk − s_j), b = s − W a. Structure: the groups."""
    B, shape = a.shape[0], tuple(a.shape[1:])
    index = call.arg(1, "index").tolist()
    rest = _numel(shape[1:])
    flat = a.reshape(B, -1)
    N = flat.shape[1]
    W = torch.zeros((B, N, N), dtype=DTYPE)
    M = torch.zeros((N, N), dtype=torch.bool)
    s_all = torch.zeros((B, N), dtype=DTYPE)
    for k in sorted(set(index)):
        for r in range(rest):
            group = [e * rest + r for e, seg in enumerate(index) if seg == k]
            for b in range(B):
                x = flat[b, group]
                e = torch.exp(x - x.max())
                s = e / e.sum()
                s_all[b, group] = s
                for kk, out in enumerate(group):
                    for jj, j in enumerate(group):
                        W[b, out, j] = s[kk] * ((1.0 if jj == kk else 0.0) - s[jj])
                        M[out, j] = True
    bias = s_all - torch.einsum("bkn,bn->bk", W, flat)
    return W, bias, M


def _matmul_matrices(A: torch.Tensor, V: torch.Tensor, theta: float) -> tuple:
    """O = A · V, A (B, *lead_A, n, m), V (B, *lead_V, m, d), the leading dimensions equal or of size 1
    on one side (broadcast): W (B, |O|, |A| + |V|) by loops over the indices, W[b, (g,j,p), (g_A,j,i)] =
    θ V_ip and W[b, (g,j,p), |A| + (g_V,i,p)] = (1 − θ) A_ji, g_A and g_V the blocks output block g reads;
    M the connections (A's edges when θ ≠ 0, V's when θ ≠ 1)."""
    B, (n, m), d = A.shape[0], A.shape[-2:], V.shape[-1]
    lead = torch.broadcast_shapes(A.shape[1:-2], V.shape[1:-2])  # a leading dimension of size 1 is shared
    L, La, Lv = _numel(lead), _numel(A.shape[1:-2]), _numel(V.shape[1:-2])
    ga = torch.arange(La).reshape(A.shape[1:-2]).expand(lead).reshape(-1).tolist()
    gv = torch.arange(Lv).reshape(V.shape[1:-2]).expand(lead).reshape(-1).tolist()
    a, v = A.reshape(B, La, n, m), V.reshape(B, Lv, m, d)
    na = La * n * m
    W = torch.zeros((B, L * n * d, na + Lv * m * d), dtype=DTYPE)
    M = torch.zeros((L * n * d, na + Lv * m * d), dtype=torch.bool)
    for g in range(L):
        for j in range(n):
            for p in range(d):
                k = (g * n + j) * d + p
                for i in range(m):
                    ia, iv = (ga[g] * n + j) * m + i, na + (gv[g] * m + i) * d + p
                    W[:, k, ia], W[:, k, iv] = theta * v[:, gv[g], i, p], (1 - theta) * a[:, ga[g], j, i]
                    M[k, ia], M[k, iv] = theta != 0, theta != 1
    return W, M


def call_tensors(call) -> list:
    """Every tensor among a recorded call's arguments (nested in lists, tuples and dicts)."""
    found = []

    def walk(o):
        if isinstance(o, torch.Tensor):
            found.append(o)
        elif isinstance(o, (list, tuple)):
            for i in o:
                walk(i)
        elif isinstance(o, dict):
            for i in o.values():
                walk(i)

    walk((call.args, call.kwargs))
    return found


def structural_parameters(call) -> list:
    """The call's parameter arguments (``nn.Parameter`` or at least 2-d, floating point): set
    to one, they give the structural fan-in that the flat rule counts. Integer tensors are
    indices (a scatter's ``edge_index``), never weights."""
    return [t for t in call_tensors(call) if (isinstance(t, nn.Parameter) or t.dim() >= 2) and t.is_floating_point()]


def with_constants(call, replace: dict):
    """A copy of ``call`` whose constant tensors with an id in ``replace`` are replaced."""
    def walk(o):
        if isinstance(o, torch.Tensor) and id(o) in replace:
            return replace[id(o)]
        if isinstance(o, (list, tuple)) and not hasattr(o, "_fields"):
            return type(o)(walk(i) for i in o)
        if isinstance(o, dict):
            return {k: walk(i) for k, i in o.items()}
        return o

    return dataclasses.replace(call, args=walk(call.args), kwargs=walk(call.kwargs))


def _lrn_matrices(call, a: torch.Tensor, rule) -> tuple:
    """A local response normalization at its input a (B, C, *sp), per sample, from the
    equations of Binder et al. (ICANN 2016) with autograd for the Jacobian:
    ``gradient`` W = J(a) = ∂b/∂a, ``root`` the same with W_kk = (κ + α/n a_k²)^(−β)
    (the output with the neighbours of k removed, divided by a_k), ``identity`` W = I;
    the bias is what the expansion leaves, r = b − W a. Structure: the channel window."""
    size = call.arg(1, "size")
    alpha, beta, k = call.arg(2, "alpha", 1e-4), call.arg(3, "beta", 0.75), call.arg(4, "k", 1.0)
    expansion = getattr(rule, "lrn_expansion", None) or "gradient"
    B = a.shape[0]
    n = _numel(a.shape[1:])
    out = F.local_response_norm(a, size, alpha, beta, k).reshape(B, n)
    if expansion == "identity":
        W = torch.eye(n, dtype=DTYPE).expand(B, n, n).clone()
    else:
        W = torch.stack([torch.autograd.functional.jacobian(
            lambda t: F.local_response_norm(t.reshape((1,) + tuple(a.shape[1:])), size, alpha, beta, k).reshape(n),
            a[i].reshape(n)) for i in range(B)])  # (B, n_out, n_in)
        if expansion == "root":
            flat = a.reshape(B, n)
            diagonal = (k + (alpha / size) * flat * flat).pow(-beta)
            W = W.clone()
            W[:, torch.arange(n), torch.arange(n)] = diagonal
    bias = out - torch.einsum("bkn,bn->bk", W, a.reshape(B, n))
    C = a.shape[1]
    per = n // C
    channel = torch.arange(n) // per
    position = torch.arange(n) % per
    d = channel.reshape(-1, 1) - channel.reshape(1, -1)  # k's channel − j's channel
    M = (position.reshape(-1, 1) == position.reshape(1, -1)) & (d <= size // 2) & (-d <= (size - 1) // 2)
    if expansion == "identity":
        M = torch.eye(n, dtype=torch.bool)
    return W, bias, M


def _winners(name: str, params, a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Flat input index (per sample) of the first maximum of every window, by explicit loops
    (a 1-D pool is read as a 2-D one of width 1: the same windows, the same flat indices)."""
    if a.dim() == 3:
        params = tuple(tuple(v) + (w,) for v, w in zip(params[:4], (1, 1, 0, 1))) + tuple(params[4:])
        return _winners(name, params, a.unsqueeze(-1), out.unsqueeze(-1))
    B, C, H, W = a.shape
    oh, ow = out.shape[-2:]
    k, s, p, d = (_pair(v) for v in params[:4])
    route = torch.zeros((B, C, oh, ow), dtype=torch.int64)
    for i in range(oh):
        for j in range(ow):
            best = torch.full((B, C), -torch.inf, dtype=DTYPE)
            idx = None
            for r in range(k[0]):
                h = i * s[0] - p[0] + r * d[0]
                if not 0 <= h < H:
                    continue
                for c in range(k[1]):
                    w = j * s[1] - p[1] + c * d[1]
                    if not 0 <= w < W:
                        continue
                    val = a[:, :, h, w]
                    flat = torch.arange(C).reshape(1, C) * H * W + h * W + w
                    if idx is None:
                        idx = flat.expand(B, C).clone()
                    better = val > best
                    best = torch.where(better, val, best)
                    idx = torch.where(better, flat, idx)
            route[:, :, i, j] = idx
    got = a.reshape(B, -1).gather(1, route.reshape(B, -1))
    if not torch.equal(got, out.reshape(B, -1)):
        raise RuntimeError(f"max-pooling at '{name}': the explicit winners do not reproduce the model's output")
    return route.reshape(B, -1)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class _Tracer:
    """Reads what ``model(x)`` computes — a float64 copy of the model, recorded by nrm's
    capture (:func:`nrm.capture.capture`) — and makes one :class:`RefNode` per recorded
    operation that leads to the output, from the operation itself: linear ones become
    dense matrices by applying them to the unit basis, routing ones (reshapes,
    concatenations, activations, max-pooling winners) integer routes. What it reads of
    :mod:`nrm.layers` is each kind's *role* and arguments, never its maps."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        training = [n or "<model>" for n, m in model.named_modules() if m.training]
        if training:
            raise TrainingModeError(f"the model is in training mode ({', '.join(training[:5])}); call model.eval() "
                                    "before the LRP reference")
        self.model = copy.deepcopy(model).to(DTYPE)
        x = x.detach().to(DTYPE)
        self.captured = nrm.capture(self.model, x)
        self.calls = {c.index: c for c in self.captured.calls}
        reaching = reaching_calls(self.captured)
        self.readers = {}
        for c in reaching:
            for v in set(c.inputs):
                self.readers[v] = self.readers.get(v, 0) + 1
        self.readers[self.captured.output] = self.readers.get(self.captured.output, 0) + 1
        products = {c.index for c in reaching if c.kind is not None and c.kind.role == "product"}
        self.inner = {v for c in reaching if c.index in products for v in c.inputs
                      if v.node in products and v.item is None and self.readers[v] == 1}
        self.B = x.shape[0]
        self.of: dict = {Value(-1): "input"}  # captured value → RefNode name
        self.nodes: dict[str, RefNode] = {}
        self._add(Value(-1), RefNode("input", "input", self.captured.input))
        with torch.no_grad():
            for call in reaching:
                self._visit(call)
        self.output = self.of[self.captured.output]

    # -- bookkeeping ------------------------------------------------------------------------
    def _add(self, value, ref: RefNode) -> None:
        if ref.name in self.nodes:
            raise UnsupportedModuleError(f"two layers would be named {ref.name!r}; rename the module")
        if ref.value.dim() < 1 or ref.value.shape[0] != self.B:
            raise UnsupportedModuleError(f"'{ref.name}' does not keep the batch dimension first")
        self.nodes[ref.name] = ref
        self.of[value] = ref.name

    def _input(self, call, i: int = 0) -> RefNode:
        return self.nodes[self.of[call.kind.relevance_inputs(call)[i]]]

    def _route(self, call) -> tuple[torch.Tensor, list[str]]:
        """Apply the operation to integer tensors that name the input neurons: out neuron k ← slot index."""
        slots = call.kind.relevance_inputs(call)
        sizes = [_numel(self.nodes[self.of[v]].shape) for v in slots]
        total, offsets = sum(sizes), [0]
        for size in sizes[:-1]:
            offsets.append(offsets[-1] + size)
        where = {v: i for i, v in enumerate(slots)}

        def index(v):
            i = where[v]
            base = torch.arange(self.B).reshape(self.B, 1) * total + offsets[i]
            return (base + torch.arange(sizes[i])).reshape((self.B,) + self.nodes[self.of[v]].shape).to(DTYPE)

        out = apply_recorded(call, index).reshape(self.B, -1).round().long()
        sample = torch.arange(self.B).reshape(self.B, 1)
        if not torch.equal(out // total, sample.expand_as(out)):
            raise UnsupportedModuleError(f"'{call.name}' mixes samples of the batch")
        return out % total, [self.of[v] for v in slots]

    # -- one recorded operation -------------------------------------------------------------
    def _visit(self, call) -> None:
        if call.kind is None:
            raise UnsupportedModuleError(f"{call.describe()}: {call.refusal or 'has no layer kind'}; the LRP "
                                         "reference reads what nrm reads")
        role, value = call.kind.role, Value(call.index)
        if role == "linear" and isinstance(call.kind, MatMul):
            self._matmul(call)
        elif role == "linear":
            a = self._input(call)
            if isinstance(call.kind, (Softmax, SegmentSoftmax)):
                matrices = _softmax_matrices if isinstance(call.kind, Softmax) else _segment_softmax_matrices
                W, b, M = matrices(call, a.value)
                self._check_dense(call.name, a.value, W, b, call.output)
                self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, weight=W, bias=b,
                                         structure=M))
                return
            if call.func is F.local_response_norm:  # its matrices depend on the rule: built once it is known
                self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, lrn=True))
                return
            if call.func in (F.layer_norm, F.group_norm):
                W, b, M = _centring_matrices(call, a.value)
                self._check_dense(call.name, a.value, W, b, call.output)
                self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, weight=W, bias=b,
                                         structure=M))
                return
            if call.func in _SCATTERS and _reduce(call) == "amax":  # winner takes all: built at the input
                W, b, M = _scatter_max_matrices(call, a.value)
                self._check_dense(call.name, a.value, W, b, call.output)
                self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, weight=W, bias=b,
                                         structure=M))
                return
            W, b, M = _masks(call, a.value, *_affine(call, a.shape))
            self._check_dense(call.name, a.value, W, b, call.output)
            self._add(value, RefNode(call.name, "linear", call.output, [a.name], call, weight=W, bias=b,
                                     structure=M))
        elif role == "sum":
            self._sum(call)
        elif role == "product":
            self._product(call)
        elif role == "winner":
            a = self._input(call)
            route = _winners(call.name, call.kind.params(call), a.value, call.output)
            self._add(value, RefNode(call.name, "route", call.output, [a.name], call, route=route))
        elif role == "batchnorm":
            self._batchnorm(call)
        elif role in ("elementwise", "alias"):
            a = self._input(call)
            n = _numel(a.shape)
            self._add(value, RefNode(call.name, "route", call.output, [a.name], call,
                                     route=torch.arange(n).expand(self.B, n)))
        else:  # reshape, concat: the operation routes neurons
            route, inputs = self._route(call)
            self._add(value, RefNode(call.name, "route", call.output, inputs, call, route=route))

    def _sum(self, call) -> None:
        """z = a^(1) + a^(2): a linear neuron with weights 1 and no bias."""
        a, b = (self._input(call, i) for i in range(2))
        eye = torch.eye(_numel(a.shape), dtype=DTYPE)
        W = torch.cat([eye, eye], dim=1)
        self._check_dense(call.name, torch.cat([a.value.reshape(self.B, -1), b.value.reshape(self.B, -1)], 1), W,
                          None, call.output)
        self._add(Value(call.index), RefNode(call.name, "linear", call.output, [a.name, b.name], call, is_sum=True,
                                             weight=W, structure=W != 0))

    def _matmul(self, call) -> None:
        """O = A · V of two activations: a linear node over [A, V] (A's neurons first), per sample
        W[b, (j,p), A_ji] = θ V_ip and W[b, (j,p), V_ip] = (1 − θ) A_ji, θ the kind's split."""
        A, V = (self._input(call, i) for i in range(2))
        W, M = _matmul_matrices(A.value, V.value, float(call.kind.theta))
        self._check_dense(call.name, torch.cat([A.value.reshape(self.B, -1), V.value.reshape(self.B, -1)], 1), W,
                          None, call.output)
        self._add(Value(call.index), RefNode(call.name, "linear", call.output, [A.name, V.name], call, weight=W,
                                             structure=M))

    def _factors(self, call) -> list:
        """The factors (captured values) of a product, nested products read only here expanded."""
        out = []
        for v in call.kind.relevance_inputs(call):
            inner = self.nodes.get(self.of.get(v, ""))
            if inner is not None and inner.kind == "product" and self.readers[v] == 1:
                out += inner.factors
                del self.nodes[inner.name]
            else:
                out.append(v)
        return out

    def _is_gate(self, v, names=GATES) -> bool:
        """A factor computed by a sigmoid or hardsigmoid, seen through reshapes and aliases."""
        while v.node >= 0:
            call = self.calls[v.node]
            if call.kind.role in ("alias", "reshape"):
                v = call.kind.relevance_inputs(call)[0]
                continue
            return nrm.layers.base_name(call.module if call.whole else call.func) in names
        return False

    def _product(self, call) -> None:
        """o = Π_i a⁽ⁱ⁾ (broadcast): Q[src_i(k), k] = θ_i, θ from the kind's ``split`` —
        "equal": 1/n; "signal": 1 to the one factor that is not a gate, 0 to the gates; "proportional":
        θ_i(k) = a⁽ⁱ⁾_{src_i(k)} / (S_k + ε sign S_k), S_k = Σ_j a⁽ʲ⁾_{src_j(k)}, the rest ε sign S_k / (…) to ⊥."""
        factors = self._factors(call)
        n = len(factors)
        if Value(call.index) in self.inner:  # flattened into the product that reads it: no kernel of its own
            self._add(Value(call.index), RefNode(call.name, "product", call.output, [], call, factors=factors))
            return
        nodes = [self.nodes[self.of[v]] for v in factors]
        out_shape = tuple(call.output.shape[1:])
        qbot = torch.zeros((self.B,) + out_shape, dtype=DTYPE)
        held = [self._is_gate(v, HELD) for v in factors]
        if any(held):  # a held normalizer takes nothing; the other factors share as without it
            rest = [i for i, h in enumerate(held) if not h]
            if len(rest) != 1 and call.kind.split != "equal":
                raise UnsupportedModuleError(f"{call.describe()}: a held normalizer beside {len(rest)} other factors "
                                             f"under split={call.kind.split!r}")
            theta = [0.0 if h else 1.0 / len(rest) for h in held]
        elif call.kind.split == "proportional":  # LRP-prop: θ_i(k) = a⁽ⁱ⁾_{src_i(k)} / (S_k + ε sign S_k)
            full = [a.value.expand((self.B,) + out_shape) for a in nodes]
            S = sum(full[1:], full[0])
            eps = call.kind.stabilizer * torch.where(S >= 0, 1.0, -1.0).to(DTYPE)
            theta = [a / (S + eps) for a in full]
            qbot = eps / (S + eps)
        elif call.kind.split == "equal":
            theta = [1.0 / n] * n
        else:
            names = GATES + tuple(g.lower() for g in getattr(call.kind, "gates", ()))
            gates = [self._is_gate(v, names) for v in factors]
            glu = [self._is_gate(v, tuple(g.lower() for g in getattr(call.kind, "glu", ()))) for v in factors]
            if n == 2 and not any(gates) and glu.count(True) == 1:  # a gated linear unit: its activated factor gates
                gates = glu
            if gates.count(False) != 1:
                raise UnsupportedModuleError(f"{call.describe()}: split='signal' needs exactly one factor that is not "
                                             "a gate")
            theta = [0.0 if g else 1.0 for g in gates]
        K = _numel(out_shape)
        sizes = [_numel(a.shape) for a in nodes]
        Q = torch.zeros((self.B, sum(sizes), K), dtype=DTYPE)
        offset, value = 0, torch.ones((self.B,) + out_shape, dtype=DTYPE)
        for a, size, t in zip(nodes, sizes, theta):
            src = torch.arange(size).reshape(a.shape).expand(out_shape).reshape(-1)
            t = t.reshape(self.B, K) if isinstance(t, torch.Tensor) else t
            Q[:, offset + src, torch.arange(K)] += t
            offset += size
            value = value * a.value
        err = float((value - call.output).abs().max())
        if err > 1e-9 * max(1.0, float(call.output.abs().max())):
            raise RuntimeError(f"the product at '{call.name}' does not reproduce its forward (error {err:.2e})")
        self._add(Value(call.index), RefNode(call.name, "product", call.output, [a.name for a in nodes], call,
                                             factors=factors, Q=Q, qbot=qbot.reshape(self.B, K)))

    def _batchnorm(self, call) -> None:
        """Fold y = s (z − μ) + β, s = γ / √(σ² + eps), into the Linear/Conv before it."""
        p = self._input(call)
        mean, var = call.arg(1, "running_mean"), call.arg(2, "running_var")
        gamma, beta, eps = call.arg(3, "weight", None), call.arg(4, "bias", None), float(call.arg(7, "eps", 1e-5))
        scale = (gamma.detach() if gamma is not None else 1.0) / torch.sqrt(var.detach() + eps)
        shift = beta.detach() if beta is not None else torch.zeros_like(scale)
        channel = torch.arange(p.shape[0]).reshape((-1,) + (1,) * (len(p.shape) - 1)).expand(p.shape).reshape(-1)
        s, mu, t = scale[channel], mean.detach()[channel], shift[channel]
        if (p.kind != "linear" or p.is_sum or p.call is None or not p.call.kind.folds_batchnorm
                or self.readers.get(Value(p.call.index), 0) != 1):
            # a diagonal affine layer of its own: z = s a + (β − s μ)
            W, b = torch.diag(s), t - s * mu
            self._check_dense(call.name, p.value, W, b, call.output)
            self._add(Value(call.index), RefNode(call.name, "linear", call.output, [p.name], call, weight=W, bias=b,
                                                 structure=torch.eye(len(s), dtype=torch.bool),
                                                 reader=nrm.layers.REGISTRY.kinds.get("BatchNormAffine")))
            return
        bias = torch.zeros(len(channel), dtype=DTYPE) if p.bias is None else p.bias
        p.weight, p.bias = p.weight * s.reshape(-1, 1), (bias - mu) * s + t
        self._check_dense(p.name, self.nodes[p.inputs[0]].value, p.weight, p.bias, call.output)
        p.value = call.output
        n = _numel(p.shape)
        self._add(Value(call.index), RefNode(call.name, "route", call.output, [p.name], call,
                                             route=torch.arange(n).expand(self.B, n)))

    def _check_dense(self, name, a, W, b, value) -> None:
        if W.dim() == 3:  # per sample (B, K, N)
            z = torch.einsum("bkn,bn->bk", W, a.reshape(a.shape[0], -1)) + (0 if b is None else b)
        else:
            z = a.reshape(a.shape[0], -1) @ W.T + (0 if b is None else b)
        err = float((z - value.reshape(z.shape)).abs().max()) if z.numel() else 0.0
        if err > 1e-9 * max(1.0, float(value.abs().max())):
            raise RuntimeError(f"the dense matrix of '{name}' does not reproduce its forward (error {err:.2e})")


def _stabilize(rule, d: torch.Tensor) -> torch.Tensor:
    eps = getattr(rule, "stabilizer", 0.0)
    if eps == 0:
        return d
    if rule.stabilizer_sign == "signed":
        return d + eps * torch.where(d < 0, -1.0, 1.0).to(DTYPE)
    return d + eps


def _divide(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """c / d per column (d (B, K) against c (B, N, K)); 0 where d = 0."""
    safe = torch.where(d == 0, torch.ones_like(d), d)
    return torch.where((d == 0).unsqueeze(1), torch.zeros_like(c), c / safe.unsqueeze(1))


def _fraction(rule, c: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q(j|k) = c_jk / D'_k, q(⊥|k) = (β_k + D'_k − D_k) / D'_k, D_k = Σ_j c_jk + β_k; D' = 0 → ⊥."""
    D = c.sum(1) + beta
    Ds = _stabilize(rule, D)
    dead = Ds == 0
    qbot = torch.where(dead, torch.ones_like(D), (beta + Ds - D) / torch.where(dead, torch.ones_like(Ds), Ds))
    return _divide(c, Ds), qbot


TABLE = (Zero, Epsilon, LRNTaylor, Gamma, ZPlus, WSquare, Flat, LRNIdentity, ZBox, AlphaBeta)
"""The rules whose kernel is written here by hand (the table of the module docstring); any other
rule's is derived from the rule object (:func:`nrm_verify.references.derived.derived_kernel`)."""


def unsupported_reason(rule) -> str:
    """'' when :func:`reference_lrp` can compute ``rule`` (see :func:`supports`), else why not."""
    if type(rule) in TABLE:
        return ""
    return why_not_derivable(rule)


def supports(rule) -> bool:
    """Whether this reference computes ``rule``'s kernel: the built-in rules of :data:`TABLE` by
    the hand-written formulas, any other rule (a user's, a subclass of a built-in) by deriving it
    from the rule object (:mod:`nrm_verify.references.derived`). Not supported: a rule that reads
    the incoming relevance (``reads_relevance = True``: no fixed kernel q(j|k)) and a rule whose
    ``shares()`` raise, are not Shares of Parts, or do not match its ``share_coefficients()``;
    :func:`unsupported_reason` says which. Law L18 is not applicable to those."""
    return not unsupported_reason(rule)


def rule_kernel(rule, a: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, M: torch.Tensor,
                in_shape: tuple[int, ...], *, derive: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel of ``rule`` at one linear layer: Q (B, N, K) with Q[b, j, k] = q(j|k) for sample b,
    and q(⊥|k) (B, K). ``a`` (B, N) are the inputs, ``W`` (K, N), ``b`` (K,) or None, ``M`` the
    structural fan-in in(k) as (K, N) booleans. A rule of :data:`TABLE` (its exact class) gets the
    hand-written formula; any other rule, or every rule with ``derive=True``, the kernel derived
    from its shares() and conventions (:mod:`nrm_verify.references.derived`; the two agree on the
    built-in rules, tests/test_derived.py)."""
    why = unsupported_reason(rule)
    if why:
        raise UnsupportedRuleError(f"the LRP reference cannot write the kernel of {rule!r}: {why}")
    if derive or type(rule) not in TABLE:
        return derived_kernel(rule, a, W, b, M, in_shape)
    B, (K, N) = a.shape[0], W.shape[-2:]
    A = a.unsqueeze(2)  # (B, N, 1)
    Wt = W.transpose(-1, -2) if W.dim() == 3 else W.T.unsqueeze(0)  # (B or 1, N, K)
    bias = torch.zeros(K, dtype=DTYPE) if b is None else b
    bias = bias.expand(B, K)
    structure = (M.transpose(-1, -2) if M.dim() == 3 else M.T.unsqueeze(0)).to(DTYPE)  # per sample: a max's winners
    pos, neg = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    kind = type(rule)
    if kind in (Zero, Epsilon, LRNTaylor):  # LRNTaylor: q = T_jk / (b_k + ε s(b_k)), T = a W on its expansion
        Q, qbot = _fraction(rule, A * Wt, bias)
    elif kind is Gamma:
        rho = lambda t: t + rule.gamma * pos(t)  # noqa: E731
        Q, qbot = _fraction(rule, A * rho(Wt), rho(bias) if rule.modify_bias else bias)
    elif kind is ZPlus:
        Q, qbot = _fraction(rule, A * pos(Wt), pos(bias) if rule.bias else torch.zeros_like(bias))
    elif kind is WSquare:
        Q, qbot = _fraction(rule, (structure * Wt ** 2).expand(B, N, K), bias ** 2 if rule.bias else 0 * bias)
    elif kind in (Flat, LRNIdentity):  # LRNIdentity: flat over the identity expansion's diagonal, q = δ
        Q, qbot = _fraction(rule, structure.expand(B, N, K), 0 * bias)
    elif kind is ZBox:
        low = torch.broadcast_to(torch.as_tensor(rule.low, dtype=DTYPE), in_shape).reshape(1, N, 1)
        high = torch.broadcast_to(torch.as_tensor(rule.high, dtype=DTYPE), in_shape).reshape(1, N, 1)
        Q, qbot = _fraction(rule, A * Wt - low * pos(Wt) - high * neg(Wt), 0 * bias)
    else:  # AlphaBeta
        Q, qbot = _alpha_beta(rule, A, Wt, bias)
    if rule.leak == "renormalize":
        real = Q.sum(1)
        empty = real == 0
        Q = _divide(Q, real)
        qbot = empty.to(DTYPE)
    return Q, qbot


def _alpha_beta(rule, A, Wt, bias):
    """α (a w)⁺ / P' − β (a w)⁻ / N'; N' = 0 → (α, β) = (1, 0); P' = 0 → (0, −1); both → ⊥."""
    pos, neg = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    cp = pos(A) * pos(Wt) + neg(A) * neg(Wt)
    cn = pos(A) * neg(Wt) + neg(A) * pos(Wt)
    P, Nn = cp.sum(1) + pos(bias), cn.sum(1) + neg(bias)
    Ps, Ns = _stabilize(rule, P), _stabilize(rule, Nn)
    one, zero = torch.ones_like(P), torch.zeros_like(P)
    alpha = torch.where(Ns == 0, one, torch.where(Ps == 0, zero, rule.alpha * one))
    beta = torch.where(Ns == 0, zero, torch.where(Ps == 0, -one, rule.beta * one))
    Q = alpha.unsqueeze(1) * _divide(cp, Ps) - beta.unsqueeze(1) * _divide(cn, Ns)
    bot_p = torch.where(Ps == 0, 0 * P, (pos(bias) + Ps - P) / torch.where(Ps == 0, one, Ps))
    bot_n = torch.where(Ns == 0, 0 * Nn, (neg(bias) + Ns - Nn) / torch.where(Ns == 0, one, Ns))
    qbot = torch.where((Ps == 0) & (Ns == 0), one, alpha * bot_p - beta * bot_n)
    return Q, qbot


# -- rule assignment -------------------------------------------------------------------------


def _assign(nodes: dict[str, RefNode], order: list[str], rules, aliases: dict | None = None) -> None:
    """Rules as nrm.explain assigns them: by name (a linear layer's own name or that of a
    pass-through right after it), nrm.FIRST (a linear node with no linear node between it
    and the input), module type, default. Residual sums: by name, then the key type
    ``nrm.Sum`` (presets map it to LRP-0), then the default. ``aliases``: names of module
    outputs (a block's name → the node of its value), which a rule mapping may also use."""
    rmap = RuleMap.of(rules)
    consumers: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for i in nodes[n].inputs:
            consumers[i].append(n)
    linear_above: dict[str, bool] = {}
    for n in order:
        node = nodes[n]
        linear_above[n] = any(linear_above[i] or nodes[i].kind == "linear" for i in node.inputs)
        if node.kind != "linear":
            continue
        cur = n
        while len(consumers[cur]) == 1:
            nxt = nodes[consumers[cur][0]]
            if nxt.kind != "route" or len(nxt.inputs) != 1 or nxt.call.kind.role == "winner":
                break
            node.aliases.append(nxt.name)
            cur = nxt.name
    for name, n in (aliases or {}).items():
        if nodes[n].kind == "linear" and name not in nodes[n].aliases:
            nodes[n].aliases.append(name)
    names = {n for n in order if nodes[n].kind == "linear"} | {a for n in order for a in nodes[n].aliases}
    unknown = sorted(set(rmap.by_name) - names)
    if unknown:
        raise RuleAssignmentError(f"the rule mapping names layers the model does not have: {unknown}")
    for n in order:
        node = nodes[n]
        if node.kind != "linear":
            continue
        named = [rmap.by_name[k] for k in [n] + node.aliases if k in rmap.by_name]
        if named:
            node.rule = named[0]
        elif node.is_sum:  # as nrm assigns it: key type nrm.Sum, then the default; LRP-0 before nrm had Sum
            node.rule = rmap.rule_for(n, nrm.Sum(len(node.inputs)), False) if hasattr(nrm, "Sum") else Zero()
        else:
            node.rule = rmap.rule_for(n, rule_types(node.call, node.reader), not linear_above[n])
        if node.rule is None:
            raise RuleAssignmentError(f"no rule for '{n}' ({node.call.describe()})")


# -- the passes -------------------------------------------------------------------------------


@dataclass
class Reference:
    """LRP of one batch by the reference: per layer name (module path, fx node name,
    "input", "output") the relevance R (B, *shape), and per name the cut quantities (B,):
    ``absorbed`` (relevance leaked to ⊥ by linear nodes after it, = f·m(⊥) on a sequential
    model), ``pending`` (relevance on edges that bypass it) and ``leaked`` (what the node's
    own kernel sends to ⊥). ``f`` is f_c(x) (B,); ``values`` the activations of every node
    (a linear node's after a folded batch norm)."""

    relevance: dict[str, torch.Tensor]
    absorbed: dict[str, torch.Tensor]
    pending: dict[str, torch.Tensor]
    leaked: dict[str, torch.Tensor]
    f: torch.Tensor
    order: list[str]
    rules: dict[str, object]
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    def marginal(self, layer: str) -> torch.Tensor:
        """R / f: the NRM marginal m_l by L8."""
        r = self.relevance[layer]
        return r / self.f.reshape((-1,) + (1,) * (r.dim() - 1))


class _Graph:
    def __init__(self, model, x, rules, derive: bool = False):
        tracer = _Tracer(model, x)
        self.nodes, self.B, self.output = tracer.nodes, tracer.B, tracer.output
        # a module whose call returned a value (a block, a container) names that value's node, as in nrm
        self.aliases = {name: tracer.of[v] for name, v in tracer.captured.module_outputs.items()
                        if v in tracer.of and name not in self.nodes}
        self.order = list(self.nodes)
        _assign(self.nodes, self.order, rules, self.aliases)
        for node in self.nodes.values():
            if node.lrn:
                a = self.nodes[node.inputs[0]].value
                node.weight, node.bias, node.structure = _lrn_matrices(node.call, a, node.rule)
                tracer._check_dense(node.name, a, node.weight, node.bias, node.value)
            if node.kind == "linear":
                a = torch.cat([self.nodes[i].value.reshape(self.B, -1) for i in node.inputs], 1)
                in_shape = self.nodes[node.inputs[0]].shape if len(node.inputs) == 1 else (a.shape[1],)
                node.Q, node.qbot = rule_kernel(node.rule, a, node.weight, node.bias, node.structure, in_shape,
                                                derive=derive)

    def result(self, R, absorbed, pending, leaked, f) -> Reference:
        def aliased(d):
            return {**d, **{a: d[n] for a, n in self.aliases.items() if n in d}, "output": d[self.output]}

        values = {n: self.nodes[n].value for n in self.order}
        rules = {n: self.nodes[n].rule for n in self.order if self.nodes[n].kind == "linear"}
        return Reference(aliased(R), aliased(absorbed), aliased(pending), leaked, f, self.names(), rules,
                         aliased(values))

    def names(self) -> list[str]:
        return self.order + ["output"]

    def resolve(self, layer: str) -> str:
        if layer == "output":
            return self.output
        if layer in self.aliases:
            return self.aliases[layer]
        if layer not in self.nodes:
            raise UnknownLayerError(f"no layer {layer!r}; layers are {self.names()}")
        return layer

    def down(self, node: RefNode, r: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """R over the node's outputs → R over each input slot, and the relevance sent to ⊥."""
        B = self.B
        r = r.reshape(B, -1)
        if node.Q is not None:
            r_in = torch.einsum("bnk,bk->bn", node.Q, r)
            leak = (node.qbot * r).sum(1)
        else:
            total = sum(_numel(self.nodes[i].shape) for i in node.inputs)
            r_in = torch.zeros(B, total, dtype=DTYPE).scatter_add_(1, node.route, r)
            leak = torch.zeros(B, dtype=DTYPE)
        return list(torch.split(r_in, [_numel(self.nodes[i].shape) for i in node.inputs], 1)), leak

    def ancestors(self, n: str) -> set:
        """Every node that ``n`` reads, directly or not."""
        if not hasattr(self, "_ancestors"):
            self._ancestors = {}
        if n not in self._ancestors:
            seen, todo = set(), list(self.nodes[n].inputs)
            while todo:
                u = todo.pop()
                if u not in seen:
                    seen.add(u)
                    todo += list(self.nodes[u].inputs)
            self._ancestors[n] = seen
        return self._ancestors[n]

    def up(self, node: RefNode, v_in: list[torch.Tensor]) -> torch.Tensor:
        """v over the input slots → Σ_j q(j|k) v(j) over the outputs (⊥ not in the event)."""
        v = torch.cat([t.reshape(self.B, -1) for t in v_in], 1)
        if node.Q is not None:
            return torch.einsum("bnk,bn->bk", node.Q, v)
        return v.gather(1, node.route)

    def propagate(self, start: torch.Tensor, mask_at: str | None = None, mask: torch.Tensor | None = None,
                  parallel: bool = False):
        """Relevance down the graph in reverse topological order; optionally masked at one node."""
        incoming = {n: torch.zeros((self.B,) + self.nodes[n].shape, dtype=DTYPE) for n in self.order}
        incoming[self.output] = incoming[self.output] + start
        R, absorbed, pending, leaked = {}, {}, {}, {}
        spent: dict[str, torch.Tensor] = {}  # relevance leaked to ⊥, per leaking node
        masked = False
        zero = torch.zeros(self.B, dtype=DTYPE)
        for n in reversed(self.order):
            node = self.nodes[n]
            r = incoming.pop(n)
            if n == mask_at:
                r = r * mask.to(DTYPE)
                masked = True
                if not parallel:  # only walks through the masked node go on
                    incoming = {k: torch.zeros_like(v) for k, v in incoming.items()}
                # ⊥ is not in the event; what a parallel branch leaked bypasses the node
                spent = {v: (t if parallel and n not in self.ancestors(v) else torch.zeros_like(t))
                         for v, t in spent.items()}
            R[n] = r
            # ⊥_n holds what the nodes reading n leaked; what other nodes leaked bypasses n
            absorbed[n] = sum((t for v, t in spent.items() if n in self.ancestors(v)), zero)
            pending[n] = sum((v.reshape(self.B, -1).sum(1) for v in incoming.values()), zero) + sum(
                (t for v, t in spent.items() if n not in self.ancestors(v)), zero)
            if node.kind == "input":
                continue
            parts, leak = self.down(node, r)
            leaked[n] = leak
            spent[n] = leak
            for i, part in zip(node.inputs, parts):
                incoming[i] = incoming[i] + part.reshape(incoming[i].shape)
        return R, absorbed, pending, leaked, masked


def _start(graph: _Graph, target) -> tuple[torch.Tensor, torch.Tensor]:
    out = graph.nodes[graph.output].value.reshape(graph.B, -1)
    c = torch.as_tensor(target).reshape(-1)
    c = c.expand(graph.B) if c.numel() == 1 else c
    if c.numel() != graph.B or c.dtype.is_floating_point:
        raise ValueError(f"target= takes one index or one per sample ({graph.B}), got {target!r}")
    f = out.gather(1, c.reshape(-1, 1).long()).reshape(-1)
    if bool((f == 0).any()):
        raise ZeroOutputError(f"f_c(x) = 0 for samples {(f == 0).nonzero().flatten().tolist()}")
    R = torch.zeros_like(out)
    R[torch.arange(graph.B), c.long()] = f
    return R.reshape(graph.nodes[graph.output].value.shape), f


def reference_lrp(model: nn.Module, x: torch.Tensor, target, rules=None, *, derive: bool = False) -> Reference:
    """Standard LRP of ``model`` at ``x`` for output ``target`` (an index, or one per sample),
    in float64, by explicit dense kernels; ``rules`` as :func:`nrm.explain` takes them, built-in
    or a user's (:func:`supports` says which cannot be computed, :func:`unsupported_reason` why). ``derive=True``
    derives the built-in rules' kernels from their shares() too, instead of the table.

    By L8 its marginals R/f equal nrm's m_l at every layer; by L9, with LRP-0 everywhere,
    R = a ⊙ ∂f/∂a at every node of a ReLU network, residual ones included."""
    graph = _Graph(model, x, rules, derive)
    start, f = _start(graph, target)
    R, absorbed, pending, leaked, _ = graph.propagate(start)
    return graph.result(R, absorbed, pending, leaked, f)


def reference_masked(model: nn.Module, x: torch.Tensor, target, rules, layer: str, mask: torch.Tensor,
                     parallel: bool = False) -> Reference:
    """f · μ(X_v = j, E) at every layer v for the event E = {X_layer ∈ mask} (CRP's conditional
    relevance; ``mask`` is a boolean tensor of one sample's shape of ``layer``, ⊥ excluded).

    ``parallel=False`` (zennit-crp's exclude_parallel=True): only walks through the masked
    neurons of ``layer``'s node. ``parallel=True`` (exclude_parallel=False): walks that
    bypass that node on a skip path are admitted unmasked. Layers at or below ``layer`` (in
    topological order) get the masked backward pass; layers above get R_k · v(k), where
    v(k) = Σ_j q(j|k) v(j) is the fraction of k's relevance that satisfies E (an upward pass;
    v = mask at ``layer``, 1 or 0 on nodes before it for parallel=True/False). ``absorbed``
    is then f · μ(X_v = ⊥, E)."""
    graph = _Graph(model, x, rules)
    node_name = graph.resolve(layer)
    shape = graph.nodes[node_name].shape
    mask = torch.as_tensor(mask).to(torch.bool)
    if tuple(mask.shape) != shape:
        raise ValueError(f"the mask has shape {tuple(mask.shape)} but layer {layer!r} has shape {shape}")
    start, f = _start(graph, target)
    R_full = graph.propagate(start)[0]
    R, absorbed, pending, leaked, _ = graph.propagate(start, node_name, mask, parallel)
    position = graph.order.index(node_name)
    v: dict[str, torch.Tensor] = {}
    for i, n in enumerate(graph.order):
        node = graph.nodes[n]
        if i < position:
            v[n] = torch.full((graph.B, _numel(node.shape)), 1.0 if parallel else 0.0, dtype=DTYPE)
        elif i == position:
            v[n] = mask.reshape(1, -1).to(DTYPE).expand(graph.B, -1)
        else:
            v[n] = graph.up(node, [v[k] for k in node.inputs])
            if parallel and node.kind == "linear" and node_name not in graph.ancestors(n):
                # walks absorbed here never meet the masked node: they bypass it, in the event
                v[n] = v[n] + (1.0 - node.Q.sum(1))
            R[n] = R_full[n] * v[n].reshape(R_full[n].shape)
            absorbed[n] = torch.zeros(graph.B, dtype=DTYPE)
            pending[n] = torch.full((graph.B,), torch.nan, dtype=DTYPE)  # not defined above the mask
    return graph.result(R, absorbed, pending, leaked, f)


def atom_neurons(atom, shape: tuple) -> torch.Tensor:
    """The real neurons an event atom selects in one sample's layer of ``shape``, as a flat
    boolean mask (its ⊥ and its complement are the caller's to read)."""
    n = _numel(shape)
    if atom.selector == "all":
        return torch.ones(n, dtype=torch.bool)
    if atom.selector == "mask":
        return atom.mask.reshape(-1).clone()
    mask = torch.zeros(n, dtype=torch.bool)
    if atom.selector == "index":
        mask[list(atom.values)] = True
    elif atom.selector == "channels":
        mask = mask.reshape(shape[0], -1)
        mask[list(atom.values)] = True
        mask = mask.reshape(-1)
    return mask


def _atom_mask(graph: _Graph, atom) -> tuple[str, torch.Tensor]:
    """(node, mask over one sample's neurons) of an event atom; ⊥ kept, a complement and
    ``parallel=True`` are refused (the branched reference masks a node's own real neurons)."""
    node = graph.resolve(atom.layer)
    mask = atom_neurons(atom, graph.nodes[node].shape)
    if atom.negated or atom.parallel:
        raise ValueError(f"the event has {'a complement' if atom.negated else 'parallel=True'} at {atom.layer!r}: it "
                         "admits the walks that bypass the layer's node, which nested masking on a branched graph "
                         "does not separate; write the event over the node's own neurons")
    bot = atom.absorber
    if bot:
        raise ValueError(f"the event keeps ⊥ at {atom.layer!r}: nested masking on a branched graph reads events "
                         "over real neurons only (walks that end in ⊥ at a layer are not masked here)")
    return node, mask


def nested_masking(model: nn.Module, x: torch.Tensor, target, rules, event) -> tuple[torch.Tensor, torch.Tensor]:
    """GNN-LRP's relevance of ``event`` (an :class:`nrm.Event` over real neurons) by
    higher-order LRP with nested masking on the traced graph, branched or not (a GIN, SAGE or
    GraphConv layer: a self branch and a neighbour branch summed): per cylinder ∩_v {X_v ∈ S_v},
    relevance goes down the graph in reverse topological order with the dense kernels of
    this module, and at every named node v

        R^(v) ← M_v ⊙ R^(v),     R^(u) ← 0 for every node u still waiting for relevance,

    the second because a walk of the event passes v: relevance waiting on a node that v does
    not read bypassed v. The cylinder's relevance is Σ R^(v_min) at the lowest named node;
    an event's is Σ over its cylinders of coefficient × that (linearity). Returns (relevance
    (B,), size (B,)): ``size`` is the largest Σ_{j,k} |q(j | k) R_k| of a step, the scale of
    float rounding in the result (as in :mod:`nrm_verify.references.gnnlrp`)."""
    graph = _Graph(model, x, rules)
    start, _ = _start(graph, target)
    total = torch.zeros(graph.B, dtype=DTYPE)
    size = torch.zeros(graph.B, dtype=DTYPE)
    for cylinder, coeff in event.cylinders():
        masks: dict[str, torch.Tensor] = {}
        for atom in cylinder:
            node, mask = _atom_mask(graph, atom)
            masks[node] = masks[node] & mask if node in masks else mask
        lowest = min((graph.order.index(n) for n in masks), default=None)
        if lowest is None:
            raise ValueError("the event names no layer: its relevance is f itself")
        incoming = {n: torch.zeros((graph.B,) + graph.nodes[n].shape, dtype=DTYPE) for n in graph.order}
        incoming[graph.output] = incoming[graph.output] + start
        steps = torch.zeros(graph.B, dtype=DTYPE)
        for n in reversed(graph.order[lowest:]):
            node, r = graph.nodes[n], incoming.pop(n)
            if n in masks:
                r = r * masks[n].reshape(r.shape[1:]).to(DTYPE)
                incoming = {k: torch.zeros_like(v) for k, v in incoming.items()}
            if graph.order.index(n) == lowest:
                total = total + coeff * r.reshape(graph.B, -1).sum(1)
                break
            if node.kind == "input":
                continue
            parts, leak = graph.down(node, r)
            flat = r.reshape(graph.B, -1).abs()
            term = torch.einsum("bnk,bk->b", node.Q.abs(), flat) if node.Q is not None else flat.sum(1)
            steps = torch.maximum(steps, term + leak.abs())
            for i, part in zip(node.inputs, parts):
                incoming[i] = incoming[i] + part.reshape(incoming[i].shape)
        size = size + abs(coeff) * steps
    return total, size
