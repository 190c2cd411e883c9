"""Slow, explicit LRP written from the equations: the reference side of L8 on any graph.

Independent of :mod:`nrm.engine`, :mod:`nrm.graph` and of the rules' ``shares()`` /
``column()``: the model is traced here with ``torch.fx``, every linear neuron layer
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
real mass then goes to ⊥). A rule object is only *read* (ε, γ, α, β, bounds, flags).

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
import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import nrm
from nrm.errors import (
    RuleAssignmentError,
    RuleParameterError,
    TrainingModeError,
    UnknownLayerError,
    UnsupportedModuleError,
    ZeroOutputError,
)
from nrm.presets import RuleMap
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus

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
    module: nn.Module | None = None
    is_sum: bool = False
    weight: torch.Tensor | None = None  # (n_out, n_in_total)
    bias: torch.Tensor | None = None  # (n_out,)
    structure: torch.Tensor | None = None  # (n_out, n_in_total) bool: in(k)
    route: torch.Tensor | None = None  # (B, n_out) int64
    aliases: list[str] = field(default_factory=list)  # pass-through names after it (rule lookup)
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


def _linear_matrices(name: str, m: nn.Module, in_shape) -> tuple:
    """(W, b, M) of a linear module acting on one sample of shape ``in_shape``."""
    if isinstance(m, nn.Linear):
        w = m.weight.detach()
        W = _dense(lambda e: F.linear(e, w), in_shape)
        M = _dense(lambda e: F.linear(e, torch.ones_like(w)), in_shape) != 0
        bias = None if m.bias is None else m.bias.detach().expand(W.shape[0] // w.shape[0], -1).reshape(-1)
        return W, bias, M
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if m.padding_mode != "zeros":
            raise UnsupportedModuleError(f"{type(m).__name__} at '{name}': padding_mode={m.padding_mode!r}; "
                                         "the reference supports zero padding only")
        conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        w = m.weight.detach()

        def apply(e, weight):
            return conv(e, weight, None, m.stride, m.padding, m.dilation, m.groups)

        W = _dense(lambda e: apply(e, w), in_shape)
        M = _dense(lambda e: apply(e, torch.ones_like(w)), in_shape) != 0
        out_shape = apply(_basis(in_shape)[:1], w).shape[1:]
        bias = None if m.bias is None else m.bias.detach().reshape((-1,) + (1,) * (len(out_shape) - 1)).expand(
            out_shape).reshape(-1)
        return W, bias, M
    W = _dense(m, in_shape)  # AvgPool2d / AdaptiveAvgPool2d: positive window weights
    return W, None, W != 0


def _winners(name: str, m: nn.MaxPool2d, a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Flat input index (per sample) of the first maximum of every window, by explicit loops."""
    B, C, H, W = a.shape
    oh, ow = out.shape[-2:]
    k, s, p, d = (_pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding), _pair(m.dilation))
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
        raise RuntimeError(f"MaxPool2d at '{name}': the explicit winners do not reproduce the module's output")
    return route.reshape(B, -1)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class _Tracer:
    """Evaluates the fx graph of a float64 copy of the model node by node, recording one
    :class:`RefNode` per tensor."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        training = [n or "<model>" for n, m in model.named_modules() if m.training]
        if training:
            raise TrainingModeError(f"the model is in training mode ({', '.join(training[:5])}); call model.eval() "
                                    "before the LRP reference")
        self.model = copy.deepcopy(model).to(DTYPE)
        self.gm = torch.fx.symbolic_trace(self.model)
        self.B = x.shape[0]
        self.env: dict = {}  # fx node -> value (tensor of a RefNode, or a constant)
        self.of: dict = {}  # fx node -> RefNode name
        self.nodes: dict[str, RefNode] = {}
        self.called: set[str] = set()
        self.output: str | None = None
        with torch.no_grad():
            for node in self.gm.graph.nodes:
                self._visit(node, x)

    # -- naming and bookkeeping ---------------------------------------------------------
    def _add(self, fx_node, ref: RefNode) -> None:
        if ref.name in self.nodes:
            raise UnsupportedModuleError(f"two layers would be named {ref.name!r}; rename the module")
        if ref.value.dim() < 1 or ref.value.shape[0] != self.B:
            raise UnsupportedModuleError(f"'{ref.name}' does not keep the batch dimension first")
        self.nodes[ref.name] = ref
        self.of[fx_node] = ref.name
        self.env[fx_node] = ref.value

    def _slots(self, fx_node) -> list:
        found = []
        torch.fx.node.map_arg((fx_node.args, fx_node.kwargs), lambda n: found.append(n) if n in self.of else None)
        return found

    def _eval(self, fx_node, fn, substitute=None):
        sub = substitute or (lambda n: self.env[n].clone() if isinstance(self.env[n], torch.Tensor) else self.env[n])
        args = torch.fx.node.map_arg(fx_node.args, sub)
        kwargs = torch.fx.node.map_arg(fx_node.kwargs, sub)
        return fn(*args, **kwargs)

    def _route(self, fx_node, fn) -> tuple[torch.Tensor, list[str]]:
        """Apply the op to integer tensors that name the input neurons: out neuron k ← slot index."""
        slots = self._slots(fx_node)
        sizes = [_numel(self.nodes[self.of[n]].shape) for n in slots]
        total, offsets, index, counter = sum(sizes), [0], {}, iter(range(len(slots)))
        for s in sizes[:-1]:
            offsets.append(offsets[-1] + s)

        def sub(n):
            if n not in self.of:
                return self.env[n]
            i = next(counter)
            shape = self.nodes[self.of[n]].shape
            base = torch.arange(self.B).reshape(self.B, 1) * total + offsets[i]
            index[i] = (base + torch.arange(sizes[i])).reshape((self.B,) + shape)
            return index[i]

        out = self._eval(fx_node, fn, sub).reshape(self.B, -1)
        sample = torch.arange(self.B).reshape(self.B, 1)
        if not torch.equal(out // total, sample.expand_as(out)):
            raise UnsupportedModuleError(f"'{fx_node.name}' mixes samples of the batch")
        return out % total, [self.of[n] for n in slots]

    def _name(self, fx_node) -> str:
        if fx_node.op == "call_module" and fx_node.target not in self.called:
            self.called.add(fx_node.target)
            return fx_node.target
        return fx_node.name

    # -- one fx node ------------------------------------------------------------------------
    def _visit(self, node, x) -> None:
        op, target = node.op, node.target
        if op == "placeholder":
            if self.nodes:
                raise UnsupportedModuleError(f"the model takes more than one input ('{node.name}')")
            self._add(node, RefNode("input", "input", x.detach().to(DTYPE)))
        elif op == "output":
            arg = node.args[0]
            if not isinstance(arg, torch.fx.Node) or arg not in self.of:
                raise UnsupportedModuleError("the model must return one tensor")
            self.output = self.of[arg]
        elif op == "get_attr":
            raise UnsupportedModuleError(f"get_attr '{target}': tensors used outside modules have no rule")
        elif op == "call_module":
            self._module(node, self.gm.get_submodule(target))
        elif op == "call_function":
            self._function(node, target)
        elif op == "call_method":
            self._method(node, target)

    def _module(self, node, m: nn.Module) -> None:
        if isinstance(m, LINEAR_MODULES):
            (src,) = self._slots(node)
            a = self.nodes[self.of[src]]
            W, b, M = _linear_matrices(node.target, m, a.shape)
            value = self._eval(node, m)
            self._check_dense(node.target, a.value, W, b, value)
            self._add(node, RefNode(self._name(node), "linear", value, [a.name], m, weight=W, bias=b, structure=M))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            self._batchnorm(node, m)
        elif isinstance(m, PASS_MODULES):
            self._pass(node, m, m)
        elif isinstance(m, nn.Flatten):
            route, inputs = self._route(node, m)
            self._add(node, RefNode(self._name(node), "route", self._eval(node, m), inputs, m, route=route))
        elif isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                raise UnsupportedModuleError(f"MaxPool2d at '{node.target}' returns indices; use return_indices=False")
            (src,) = self._slots(node)
            a = self.nodes[self.of[src]]
            value = self._eval(node, m)
            route = _winners(node.target, m, a.value, value)
            self._add(node, RefNode(self._name(node), "route", value, [a.name], m, route=route))
        else:
            raise UnsupportedModuleError(
                f"{type(m).__name__} at '{node.target}' has no rule in the LRP reference (supported: Linear, Conv1d, "
                "Conv2d, BatchNorm1d/2d after Linear/Conv, ReLU, LeakyReLU, MaxPool2d, AvgPool2d, "
                "AdaptiveAvgPool2d, Flatten, Dropout, Identity)")

    def _function(self, node, fn) -> None:
        if fn in ADD_FUNCTIONS:
            self._sum(node, fn)
        elif fn in CAT_FUNCTIONS or fn in RESHAPE_FUNCTIONS:
            route, inputs = self._route(node, fn)
            self._add(node, RefNode(node.name, "route", self._eval(node, fn), inputs, route=route))
        elif fn in PASS_FUNCTIONS:
            self._pass(node, fn)
        elif fn is operator.getitem and not self._slots(node):
            self.env[node] = self._eval(node, fn)
        else:
            name = getattr(fn, "__name__", repr(fn))
            raise UnsupportedModuleError(f"function {name!r} at '{node.name}' has no rule in the LRP reference "
                                         "(supported: +, torch.add, torch.cat, relu, leaky_relu, flatten, reshape)")

    def _method(self, node, name: str) -> None:
        if name in CONSTANT_METHODS:
            self.env[node] = self._eval(node, lambda t, *a, **k: getattr(t, name)(*a, **k))
        elif name in PASS_METHODS:
            self._pass(node, lambda t, *a, **k: getattr(t, name)(*a, **k))
        elif name in RESHAPE_METHODS:
            fn = lambda t, *a, **k: getattr(t, name)(*a, **k)  # noqa: E731
            route, inputs = self._route(node, fn)
            self._add(node, RefNode(node.name, "route", self._eval(node, fn), inputs, route=route))
        else:
            raise UnsupportedModuleError(f"method '.{name}()' at '{node.name}' has no rule in the LRP reference")

    def _pass(self, node, fn, module: nn.Module | None = None) -> None:
        """An elementwise op that belongs to its neuron: relevance passes unchanged."""
        (src,) = self._slots(node)
        a = self.nodes[self.of[src]]
        n = _numel(a.shape)
        self._add(node, RefNode(self._name(node), "route", self._eval(node, fn), [a.name], module,
                                route=torch.arange(n).expand(self.B, n)))

    def _sum(self, node, fn) -> None:
        """z = a^(1) + a^(2): a linear neuron with weights 1 and no bias."""
        slots = self._slots(node)
        if len(slots) != 2 or len(node.args) != 2 or node.kwargs:
            raise UnsupportedModuleError(f"'{node.name}' adds a constant or uses alpha=; only the sum of two "
                                         "tensors is a linear neuron with a rule")
        a, b = (self.nodes[self.of[n]] for n in slots)
        if a.shape != b.shape:
            raise UnsupportedModuleError(f"'{node.name}' broadcasts {a.shape} against {b.shape}; only sums of equal "
                                         "shapes are supported")
        eye = torch.eye(_numel(a.shape), dtype=DTYPE)
        W = torch.cat([eye, eye], dim=1)
        value = self._eval(node, fn)
        self._check_dense(node.name, torch.cat([a.value.reshape(self.B, -1), b.value.reshape(self.B, -1)], 1), W,
                          None, value)
        self._add(node, RefNode(node.name, "linear", value, [a.name, b.name], is_sum=True, weight=W,
                                structure=W != 0))

    def _batchnorm(self, node, bn) -> None:
        """Fold y = s (z − μ) + β, s = γ / √(σ² + eps), into the Linear/Conv before it."""
        (src,) = self._slots(node)
        p = self.nodes[self.of[src]]
        consumers = [u for u in src.users if u.op != "output" and u is not node]
        if p.kind != "linear" or not isinstance(p.module, FOLDABLE) or consumers:
            raise UnsupportedModuleError(f"{type(bn).__name__} at '{node.target}' does not directly and solely follow "
                                         "a Linear or Conv layer, so it cannot be folded into one")
        if bn.running_mean is None:
            raise UnsupportedModuleError(f"{type(bn).__name__} at '{node.target}' has no running statistics")
        scale = (bn.weight.detach() if bn.weight is not None else 1.0) / torch.sqrt(bn.running_var.detach() + bn.eps)
        shift = bn.bias.detach() if bn.bias is not None else torch.zeros_like(scale)
        channel = torch.arange(p.shape[0]).reshape((-1,) + (1,) * (len(p.shape) - 1)).expand(p.shape).reshape(-1)
        s, mean, t = scale[channel], bn.running_mean.detach()[channel], shift[channel]
        bias = torch.zeros(len(channel), dtype=DTYPE) if p.bias is None else p.bias
        p.weight, p.bias = p.weight * s.reshape(-1, 1), (bias - mean) * s + t
        value = self._eval(node, bn)
        self._check_dense(p.name, self.nodes[p.inputs[0]].value, p.weight, p.bias, value)
        p.value = value
        self.env[src] = value
        n = _numel(p.shape)
        self._add(node, RefNode(self._name(node), "route", value, [p.name], bn,
                                route=torch.arange(n).expand(self.B, n)))

    def _check_dense(self, name, a, W, b, value) -> None:
        z = a.reshape(a.shape[0], -1) @ W.T + (0 if b is None else b)
        err = float((z - value.reshape(z.shape)).abs().max()) if z.numel() else 0.0
        if err > 1e-9 * max(1.0, float(value.abs().max())):
            raise RuntimeError(f"the dense matrix of '{name}' does not reproduce its forward (error {err:.2e})")


# -- rules: kernels written from the table ----------------------------------------------------


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


def rule_kernel(rule, a: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, M: torch.Tensor,
                in_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel of ``rule`` at one linear layer: Q (B, N, K) with Q[b, j, k] = q(j|k) for sample b,
    and q(⊥|k) (B, K). ``a`` (B, N) are the inputs, ``W`` (K, N), ``b`` (K,) or None, ``M`` the
    structural fan-in in(k) as (K, N) booleans."""
    if getattr(rule, "reads_relevance", False):
        raise RuleParameterError(f"{rule!r} reads the incoming relevance; the reference has fixed kernels only")
    B, (K, N) = a.shape[0], W.shape
    A = a.unsqueeze(2)  # (B, N, 1)
    Wt = W.T.unsqueeze(0)  # (1, N, K)
    bias = torch.zeros(K, dtype=DTYPE) if b is None else b
    bias = bias.expand(B, K)
    structure = M.T.unsqueeze(0).to(DTYPE)
    pos, neg = (lambda t: t.clamp(min=0)), (lambda t: t.clamp(max=0))
    kind = type(rule)
    if kind in (Zero, Epsilon):
        Q, qbot = _fraction(rule, A * Wt, bias)
    elif kind is Gamma:
        rho = lambda t: t + rule.gamma * pos(t)  # noqa: E731
        Q, qbot = _fraction(rule, A * rho(Wt), rho(bias) if rule.modify_bias else bias)
    elif kind is ZPlus:
        Q, qbot = _fraction(rule, A * pos(Wt), pos(bias) if rule.bias else torch.zeros_like(bias))
    elif kind is WSquare:
        Q, qbot = _fraction(rule, (structure * Wt ** 2).expand(B, N, K), bias ** 2 if rule.bias else 0 * bias)
    elif kind is Flat:
        Q, qbot = _fraction(rule, structure.expand(B, N, K), 0 * bias)
    elif kind is ZBox:
        low = torch.broadcast_to(torch.as_tensor(rule.low, dtype=DTYPE), in_shape).reshape(1, N, 1)
        high = torch.broadcast_to(torch.as_tensor(rule.high, dtype=DTYPE), in_shape).reshape(1, N, 1)
        Q, qbot = _fraction(rule, A * Wt - low * pos(Wt) - high * neg(Wt), 0 * bias)
    elif kind is AlphaBeta:
        Q, qbot = _alpha_beta(rule, A, Wt, bias)
    else:
        raise RuleParameterError(f"the LRP reference knows the built-in rules only, not {kind.__name__}")
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


def _assign(nodes: dict[str, RefNode], order: list[str], rules) -> None:
    """Rules as nrm.explain assigns them: by name (a linear layer's own name or that of a
    pass-through right after it), nrm.FIRST (a linear node with no linear node between it
    and the input), module type, default. Residual sums: by name, then the key type
    ``nrm.Sum`` (presets map it to LRP-0), then the default."""
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
            if nxt.kind != "route" or len(nxt.inputs) != 1 or isinstance(nxt.module, nn.MaxPool2d):
                break
            node.aliases.append(nxt.name)
            cur = nxt.name
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
            node.rule = rmap.rule_for(n, node.module, not linear_above[n])
        if node.rule is None:
            raise RuleAssignmentError(f"no rule for '{n}' ({type(node.module).__name__})")


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
    def __init__(self, model, x, rules):
        tracer = _Tracer(model, x)
        self.nodes, self.B, self.output = tracer.nodes, tracer.B, tracer.output
        self.order = list(self.nodes)
        _assign(self.nodes, self.order, rules)
        for node in self.nodes.values():
            if node.kind == "linear":
                a = torch.cat([self.nodes[i].value.reshape(self.B, -1) for i in node.inputs], 1)
                in_shape = self.nodes[node.inputs[0]].shape if len(node.inputs) == 1 else (a.shape[1],)
                node.Q, node.qbot = rule_kernel(node.rule, a, node.weight, node.bias, node.structure, in_shape)

    def result(self, R, absorbed, pending, leaked, f) -> Reference:
        def aliased(d):
            return {**d, "output": d[self.output]}

        values = {n: self.nodes[n].value for n in self.order}
        rules = {n: self.nodes[n].rule for n in self.order if self.nodes[n].kind == "linear"}
        return Reference(aliased(R), aliased(absorbed), aliased(pending), leaked, f, self.names(), rules,
                         aliased(values))

    def names(self) -> list[str]:
        return self.order + ["output"]

    def resolve(self, layer: str) -> str:
        if layer == "output":
            return self.output
        if layer not in self.nodes:
            raise UnknownLayerError(f"no layer {layer!r}; layers are {self.names()}")
        return layer

    def down(self, node: RefNode, r: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """R over the node's outputs → R over each input slot, and the relevance sent to ⊥."""
        B = self.B
        r = r.reshape(B, -1)
        if node.kind == "linear":
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
        if node.kind == "linear":
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


def reference_lrp(model: nn.Module, x: torch.Tensor, target, rules=None) -> Reference:
    """Standard LRP of ``model`` at ``x`` for output ``target`` (an index, or one per sample),
    in float64, by explicit dense kernels; ``rules`` as :func:`nrm.explain` takes them.

    By L8 its marginals R/f equal nrm's m_l at every layer; by L9, with LRP-0 everywhere,
    R = a ⊙ ∂f/∂a at every node of a ReLU network, residual ones included."""
    graph = _Graph(model, x, rules)
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
