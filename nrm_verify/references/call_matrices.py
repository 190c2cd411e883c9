"""The dense matrices of one recorded operation, written from its definition: how the explicit
references read a call.

Each recorded call (nrm's capture, :class:`nrm.capture.Call`) is read at its input a (B, *in)
as an explicit float64 map, never through the layer kind's map. An affine operation is
applied to the unit basis (the recorded call itself, the model's own function or module):

    W[:, j] = call(e_j) − call(0),     b = call(0),     M = (W with every parameter set to 1) ≠ 0

M being the structural fan-in in(k) (zero weights are connections: the flat rule counts them).
The others are written per sample by explicit loops from their definitions:

    layer/group norm, σ held    W[b, k, j] = γ_k / σ_{b,g} (δ_jk − 1/n),  b_k = β_k   (j, k in group g)
    softmax, segment softmax    W[b, k, j] = s_k (δ_jk − s_j),  b = s − W a           (linearized at a)
    log-softmax                 W[b, k, j] = δ_jk − s_j,        b = y − W a           (linearized at a)
    O = A · V                   W[b, (j,p), A_ji] = θ V_ip,  W[b, (j,p), V_ip] = (1 − θ) A_ji
    local response norm         W = ∂LRN(a)/∂a (or its root or identity expansion),  b = LRN(a) − W a
    scatter-max                 W[b, k, p] = 1 for the first largest message p landing on k
    max-pooling                 route: the flat index of each window's first maximum

(softmax and norms: Achtibat et al., *AttnLRP*, ICML 2024, Prop. 3.1 and 3.4; LRN: Binder et
al., ICANN 2016). A masked output (a constant or overflowing −∞) keeps the mask value as its
bias (``docs/attention.md``, Masks). Each matrix is checked against the recorded output by its
reader. Read by :mod:`nrm_verify.references.explicit`; :func:`apply_recorded`,
:func:`structural_parameters` and :func:`with_constants` by :mod:`nrm_verify.references.gnnlrp`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from nrm.capture import Value

DTYPE = torch.float64


def numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _basis(shape) -> torch.Tensor:
    n = numel(shape)
    return torch.eye(n, dtype=DTYPE).reshape((n,) + tuple(shape))


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
    if call.inplace and args and isinstance(args[0], torch.Tensor):  # x += c on a copy: the replacement stays as given
        args = (args[0].clone(),) + tuple(args[1:])
    if call.whole:
        return call.module.forward(*args, **kwargs)
    if call.func in SCATTERS:
        args = _scatter_rows(args)
    return call.func(*args, **kwargs)


SCATTERS = {torch.Tensor.scatter_add_, torch.Tensor.scatter_add, torch.scatter_add, torch.Tensor.scatter_reduce_,
             torch.Tensor.scatter_reduce, torch.scatter_reduce, torch.Tensor.index_add_, torch.Tensor.index_add,
             torch.index_add}


def reduction(call) -> str:
    """The reduction of a recorded scatter: 'sum' for scatter_add and index_add."""
    if call.func in (torch.Tensor.scatter_reduce_, torch.Tensor.scatter_reduce, torch.scatter_reduce):
        return call.args[4] if len(call.args) > 4 else call.kwargs["reduce"]
    return "sum"


def scatter_max_matrices(call, a: torch.Tensor) -> tuple:
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
    K, N = numel(out), numel(src)
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


def affine(call, in_shape) -> tuple:
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


def apply_masks(call, a: torch.Tensor, W: torch.Tensor, b, M: torch.Tensor) -> tuple:
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


def centring_matrices(call, a: torch.Tensor) -> tuple:
    """Layer norm, group norm or instance norm at its input a (B, *in) with σ held (AttnLRP
    Prop. 3.4), per sample, from the definition by explicit loops over the groups (instance
    norm: a group per channel): W[b, k, j] = γ_k / σ_{b,g} (δ_jk − 1/n) for j, k in group g,
    b_k = β_k. Structure: the groups."""
    B, shape = a.shape[0], tuple(a.shape[1:])
    N = numel(shape)
    at = (3, 4, 7) if call.func is F.instance_norm else (2, 3, 4)  # where γ, β, ε sit in the call
    gamma, beta = call.arg(at[0], "weight", None), call.arg(at[1], "bias", None)
    eps = float(call.arg(at[2], "eps", 1e-5))
    if call.func is F.instance_norm:
        n, per = math.prod(shape[1:]), math.prod(shape[1:])
        g = gamma.detach().repeat_interleave(per) if gamma is not None else torch.ones(N, dtype=DTYPE)
        bias = beta.detach().repeat_interleave(per) if beta is not None else None
    elif call.func is F.layer_norm:
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


def _groups_of(call, a: torch.Tensor) -> tuple:
    """(B, N, the index groups along the call's dimension, a flat (B, N), zero W (B, N, N), zero structure)."""
    B, shape = a.shape[0], tuple(a.shape[1:])
    N, d = numel(shape), call.kind.dim(call)
    index = torch.arange(N).reshape(shape).movedim(d, -1).reshape(-1, shape[d])
    return (B, N, index.tolist(), a.reshape(B, N), torch.zeros((B, N, N), dtype=DTYPE),
            torch.zeros((N, N), dtype=torch.bool))


def softmax_matrices(call, a: torch.Tensor, log: bool = False) -> tuple:
    """A softmax (``log``: a log-softmax) at its input a (B, *in), linearized at a (AttnLRP
    Prop. 3.1), per sample, by explicit loops over the groups along its dimension:
    s = exp(x − max) / Σ exp(x − max), y = s or x − max − log Σ exp(x − max),
    W[b, k, j] = ∂y_k/∂x_j = s_k (δ_jk − s_j) or δ_jk − s_j, b = y − W a (the Taylor
    remainder). Structure: the groups."""
    B, N, groups, flat, W, M = _groups_of(call, a)
    y = torch.zeros((B, N), dtype=DTYPE)
    for group in groups:
        for b in range(B):
            x = flat[b, group]
            shifted = x - x.max()
            e = torch.exp(shifted)
            s = e / e.sum()
            y[b, group] = shifted - torch.log(e.sum()) if log else s
            for kk, k in enumerate(group):
                for jj, j in enumerate(group):
                    delta = 1.0 if jj == kk else 0.0
                    W[b, k, j] = delta - s[jj] if log else s[kk] * (delta - s[jj])
        M[torch.tensor(group).reshape(-1, 1), torch.tensor(group).reshape(1, -1)] = True
    bias = y - torch.einsum("bkn,bn->bk", W, flat)
    return W, bias, M


def logsumexp_matrices(call, a: torch.Tensor) -> tuple:
    """``torch.logsumexp(x, dim, keepdim)`` at its input a (B, *in), linearized at a per sample
    by explicit loops over the output positions: the group G_k of input positions that output
    k reduces (those that agree with k outside ``dim``), s = exp(x − max) / Σ exp(x − max) and
    y = max + log Σ exp(x − max) over it, W[b, k, j] = ∂y_k/∂x_j = s_j (j ∈ G_k), b = y − W a
    (the Taylor remainder, the entropy). Structure: the groups."""
    B, shape = a.shape[0], tuple(a.shape[1:])
    dim = call.arg(1, "dim")
    dims = {(d % (len(shape) + 1)) - 1 for d in ((dim,) if isinstance(dim, int) else dim)}
    kept = [n for d, n in enumerate(shape) if d not in dims]
    N, K = numel(shape), numel(tuple(kept))
    flat = a.reshape(B, N)
    W, M = torch.zeros((B, K, N), dtype=DTYPE), torch.zeros((K, N), dtype=torch.bool)
    y = torch.zeros((B, K), dtype=DTYPE)
    positions = list(itertools.product(*(range(n) for n in shape)))
    for k, out in enumerate(itertools.product(*(range(n) for n in kept))):
        group = [j for j, pos in enumerate(positions) if [p for d, p in enumerate(pos) if d not in dims] == list(out)]
        for b in range(B):
            x = flat[b, group]
            e = torch.exp(x - x.max())
            s = e / e.sum()
            y[b, k] = x.max() + torch.log(e.sum())
            for jj, j in enumerate(group):
                W[b, k, j] = s[jj]
        M[k, group] = True
    bias = y - torch.einsum("bkn,bn->bk", W, flat)
    return W, bias, M


def log_softmax_matrices(call, a: torch.Tensor) -> tuple:
    """A log-softmax at its input a: :func:`softmax_matrices` with ``log=True``."""
    return softmax_matrices(call, a, log=True)


def segment_softmax_matrices(call, a: torch.Tensor) -> tuple:
    """A segment softmax (``nrm.layers.message.segment_softmax``) at its input a (B, E, *rest),
    linearized at a per sample, by explicit loops: for every segment k and trailing position r,
    the group of edges e with index[e] = k; s = exp(x − max) / Σ exp(x − max) over the group,
    W[b, k, j] = s_k (δ_jk − s_j), b = s − W a. Structure: the groups."""
    B, shape = a.shape[0], tuple(a.shape[1:])
    index = call.arg(1, "index").tolist()
    rest = numel(shape[1:])
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


def matmul_matrices(A: torch.Tensor, V: torch.Tensor, theta: float) -> tuple:
    """O = A · V, A (B, *lead_A, n, m), V (B, *lead_V, m, d), the leading dimensions equal or of size 1
    on one side (broadcast): W (B, |O|, |A| + |V|) by loops over the indices, W[b, (g,j,p), (g_A,j,i)] =
    θ V_ip and W[b, (g,j,p), |A| + (g_V,i,p)] = (1 − θ) A_ji, g_A and g_V the blocks output block g reads;
    M the connections (A's edges when θ ≠ 0, V's when θ ≠ 1)."""
    B, (n, m), d = A.shape[0], A.shape[-2:], V.shape[-1]
    lead = torch.broadcast_shapes(A.shape[1:-2], V.shape[1:-2])  # a leading dimension of size 1 is shared
    L, La, Lv = numel(lead), numel(A.shape[1:-2]), numel(V.shape[1:-2])
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


def lrn_matrices(call, a: torch.Tensor, rule) -> tuple:
    """A local response normalization at its input a (B, C, *sp), per sample, from the
    equations of Binder et al. (ICANN 2016) with autograd for the Jacobian:
    ``gradient`` W = J(a) = ∂b/∂a, ``root`` the same with W_kk = (κ + α/n a_k²)^(−β)
    (the output with the neighbours of k removed, divided by a_k), ``identity`` W = I;
    the bias is what the expansion leaves, r = b − W a. Structure: the channel window."""
    size = call.arg(1, "size")
    alpha, beta, k = call.arg(2, "alpha", 1e-4), call.arg(3, "beta", 0.75), call.arg(4, "k", 1.0)
    expansion = getattr(rule, "lrn_expansion", None) or "gradient"
    B = a.shape[0]
    n = numel(a.shape[1:])
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


def winners(name: str, params, a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Flat input index (per sample) of the first maximum of every window, by explicit loops
    over the output positions and the window's offsets in row-major order, for 1, 2 or 3
    spatial dimensions (params: kernel, stride, padding, dilation, one entry per axis or one
    for all)."""
    B, C = a.shape[:2]
    spatial, out_spatial = tuple(a.shape[2:]), tuple(out.shape[2:])
    n = len(spatial)
    k, s, p, d = (tuple(v) if isinstance(v, (tuple, list)) else (v,) * n for v in params[:4])
    steps = [math.prod(spatial[i + 1:]) for i in range(n)]
    channel = torch.arange(C).reshape(1, C) * math.prod(spatial)
    route = torch.zeros((B, C) + out_spatial, dtype=torch.int64)
    for opos in itertools.product(*map(range, out_spatial)):
        best = torch.full((B, C), -torch.inf, dtype=DTYPE)
        idx = None
        for kpos in itertools.product(*map(range, k)):
            ipos = tuple(o * st - pp + kk * dd for o, st, pp, kk, dd in zip(opos, s, p, kpos, d))
            if not all(0 <= i < m for i, m in zip(ipos, spatial)):
                continue
            val = a[(slice(None), slice(None)) + ipos]
            flat = channel + sum(i * st for i, st in zip(ipos, steps))
            if idx is None:
                idx = flat.expand(B, C).clone()
            better = val > best
            best = torch.where(better, val, best)
            idx = torch.where(better, flat, idx)
        route[(slice(None), slice(None)) + opos] = idx
    got = a.reshape(B, -1).gather(1, route.reshape(B, -1))
    if not torch.equal(got, out.reshape(B, -1)):
        raise RuntimeError(f"max-pooling at '{name}': the explicit winners do not reproduce the model's output")
    return route.reshape(B, -1)
