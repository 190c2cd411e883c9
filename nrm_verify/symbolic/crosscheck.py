"""Closed forms evaluated at a point, next to the torch engine and the exact oracle.

:func:`crosscheck` evaluates a :class:`~nrm_verify.symbolic.derive.SymbolicMeasure` at a
rational point, builds the same network as a float64 ``nn.Sequential`` with
:meth:`SymbolicNetwork.to_torch`, and computes the same quantities with
:func:`nrm.explain` and with the exact oracle :class:`nrm_verify.references.oracle.ExactNetwork`.
The rules given to the engine and the oracle are the symbolic rule objects with every
sympy-valued attribute replaced by its value (:func:`numeric_rule`); a rule without
symbolic parameters is passed *as is* — the very same object.

Use dyadic points (:data:`~nrm_verify.symbolic.network.DYADIC_MAGNITUDES`) so that the
float64 model holds the point exactly; then the oracle must agree exactly and the engine
to rounding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch

import nrm
from nrm.events import At, Event
from nrm.rules import Rule
from nrm_verify.references.oracle import ExactNetwork
from nrm_verify.symbolic.derive import SymbolicMeasure


def numeric_rule(rule: Rule, point: dict, input_shape: tuple[int, ...]) -> Rule:
    """``rule`` with its symbolic parameters evaluated at ``point`` (the same object when
    it has none). Scalars become floats; object arrays (z^B bounds) float64 tensors of
    one sample's input shape."""
    changed = {}
    for name, value in vars(rule).items():
        if isinstance(value, sp.Basic):
            changed[name] = float(value.xreplace(point))
        elif isinstance(value, np.ndarray) and value.dtype == object:
            flat = [float(sp.sympify(v).xreplace(point)) for v in value.reshape(-1)]
            t = torch.tensor(flat, dtype=torch.float64)
            changed[name] = t.reshape(input_shape) if t.numel() == int(np.prod(input_shape)) else t
    if not changed:
        return rule
    out = copy.copy(rule)
    for name, value in changed.items():
        setattr(out, name, value)
    return out


@dataclass
class Crosscheck:
    """One quantity three ways: the closed form at the point, the engine, the oracle."""

    name: str
    symbolic: sp.Expr
    engine: float
    oracle: object  # a Fraction (None when the oracle is not used)

    def engine_error(self) -> float:
        return abs(float(self.symbolic) - self.engine)

    @property
    def oracle_agrees(self) -> bool:
        return self.oracle is None or sp.Rational(self.oracle.numerator, self.oracle.denominator) == self.symbolic


def crosscheck(m: SymbolicMeasure, point: dict, events: list[tuple[str, Event]] | None = None,
               oracle: bool = True) -> list[Crosscheck]:
    """Marginals and absorbers of every layer, and the measures of ``events`` (named by
    the symbolic layer names), three ways."""

    net = m.network
    model, x, names = net.to_torch(point)
    rules = {names[l]: numeric_rule(m.rules[l], point, net.input_shape) for l in range(1, net.depth + 1)}
    engine = nrm.explain(model, x, target=m.target, rules=rules)
    exact = None
    if oracle:

        exact = ExactNetwork.from_model(model, x, rules).explain(target=m.target)
    numeric = m.at(point)
    out = []
    for l in range(net.depth + 1):
        name = names[l] if l < net.depth else "output"
        sym = numeric.marginal(l)
        eng = engine.marginal(name).reshape(-1).tolist()
        orc = exact.marginal(name).reshape(-1).tolist() if exact is not None else [None] * len(sym)
        for j, (a, b, c) in enumerate(zip(sym, eng, orc)):
            out.append(Crosscheck(f"m{l}({net.label(l, j)})", a, b, c))
        if l < net.depth:
            out.append(Crosscheck(f"m{l}(⊥{l})", numeric.absorbed(l), float(engine.absorbed(name)[0]),
                                  exact.absorbed(name) if exact is not None else None))
    for label, event in events or []:
        renamed = _rename(event, {net.names[l]: names[l] for l in range(net.depth)} | {net.names[-1]: "output"})
        out.append(Crosscheck(label, numeric.measure(event), float(engine(renamed)[0]),
                              exact.measure(renamed) if exact is not None else None))
    return out


def _rename(event: Event, names: dict) -> Event:
    """The same event with layer names of the torch model."""
    terms = {}
    for cyl, c in event.terms.items():
        atoms = []
        for atom in cyl:
            sel = {"index": {"index": list(atom.values)}, "none": {"index": []}, "all": {},
                   "channels": {"channels": list(atom.values)}}[atom.selector]
            renamed = At(names.get(atom.layer, atom.layer), absorber=atom.absorber, **sel)
            atoms.append(~renamed if atom.negated else renamed)
        cylinder = frozenset()
        for a in atoms:
            cylinder = cylinder | next(iter(a.terms))
        terms[cylinder] = terms.get(cylinder, 0) + c
    return Event(terms)


# -- the attention block (nrm_verify.symbolic.attention) ---------------------------------------------
class AttentionHead(torch.nn.Module):
    """The block of :mod:`nrm_verify.symbolic.attention` as torch writes it: layers ``q``, ``k``,
    ``v`` (no bias), ``matmul`` (Q Kᵀ), ``mul`` (× τ), ``softmax``, ``matmul_1`` (A V), ``ln``
    (σ held by nrm), ``out`` on the flattened (token, dimension) values."""

    def __init__(self, tau: float, ln_eps: float):
        super().__init__()
        lin = torch.nn.Linear
        self.q, self.k, self.v = lin(2, 2, bias=False), lin(2, 2, bias=False), lin(2, 2, bias=False)
        self.ln, self.out, self.tau = torch.nn.LayerNorm(2, eps=ln_eps), lin(4, 1), tau

    def forward(self, x):
        a = torch.softmax((self.q(x) @ self.k(x).transpose(-1, -2)) * self.tau, dim=-1)
        return self.out(self.ln(a @ self.v(x)).flatten(1))


def torch_block(point: dict) -> tuple[torch.nn.Module, torch.Tensor]:
    """The float64 model and input (1, 2, 2) at a point of the block's base symbols (dyadic
    values are held exactly): nn.Linear's weight is Wᵀ (row p holds w_·p)."""
    from nrm_verify.symbolic.attention import LN_EPS, PAIRS

    v = {str(k): float(val) for k, val in point.items()}
    model = AttentionHead(v["tau"], float(LN_EPS)).double().eval()
    with torch.no_grad():
        for h in "qkv":
            getattr(model, h).weight.copy_(torch.tensor([[v[f"w{h}{i}{p}"] for i in (1, 2)] for p in (1, 2)]))
        model.ln.weight.copy_(torch.tensor([v["g1"], v["g2"]]))
        model.ln.bias.copy_(torch.tensor([v["be1"], v["be2"]]))
        model.out.weight.copy_(torch.tensor([[v[f"r{j}{p}"] for j, p in PAIRS]]))
        model.out.bias.copy_(torch.tensor([v["c"]]))
    x = torch.tensor([[[v[f"x{t}{i}"] for i in (1, 2)] for t in (1, 2)]], dtype=torch.float64)
    return model, x


_OFFSETS = {"scores": {"Q": 0, "K": 4}, "values": {"A": 0, "V": 4}}


def _oracle_row(kind: str, label: str) -> int:
    """The row of a parent in the oracle's kernel: the block's inputs packed in order (Q then Kᵀ
    for the scores, A then V for the values), each flattened (row, column)."""
    h, a, b = label[0], int(label[1]), int(label[2])
    if kind == "scores" and h == "K":  # the second factor is Kᵀ: its entry (p, k) is K_kp
        a, b = b, a
    return _OFFSETS.get(kind, {}).get(h, 0) + (a - 1) * 2 + (b - 1)


def attention_oracle(block, point: dict, theta=None):
    """(the exact DAG oracle, the engine's measure, {name: value}) on :func:`torch_block` at
    ``point``, the block's rules given to nrm by layer name with their symbolic parameters
    evaluated, the product's θ registered for the capture (then θ = ½ again). The values are
    the oracle's forward values in fractions and nrm's held σ_j."""
    from fractions import Fraction

    import nrm.layers
    from nrm.layers.attention import MatMul
    from nrm_verify.references.exact_dag import ExactGraph
    from nrm_verify.symbolic.attention import PAIRS, TORCH_NAMES

    model, x = torch_block(point)
    sym = {block.symbols[k]: v for k, v in point.items() if k in block.symbols}
    rules = {TORCH_NAMES[k]: numeric_rule(r, sym, (2, 2)) for k, r in block.rules.items()}
    nrm.layers.register(MatMul(theta=Fraction(point["theta"]) if theta is None else theta))
    try:
        graph = ExactGraph(model, x, rules)
        engine = nrm.explain(model, x, target=0, rules=rules)
    finally:
        nrm.layers.register(MatMul())
    values = dict(point)
    for h, name in (("Q", "q"), ("K", "k"), ("V", "v"), ("S", "matmul"), ("L", "mul"), ("A", "softmax"),
                    ("O", "matmul_1"), ("Y", "ln")):
        flat = graph.values[graph.layer(name)]
        values.update({f"{h}{a}{b}": flat[(a - 1) * 2 + (b - 1)] for a, b in PAIRS})
    values["f"] = graph.output[0]
    ln = graph.network.blocks[graph.layer("ln")]
    o = graph.network.value(graph.network.blocks[ln.inputs[0]].tip)
    sigma = ln.producer.layer_kind.sigma(ln.producer.call, o.double())[0]
    values.update({f"sigma{j + 1}": Fraction(float(sigma[j])) for j in range(2)})
    return graph, engine, values


def attention_kernel_differences(block, graph, values) -> list[str]:
    """Every kernel entry of the symbolic block at the oracle's values against the oracle's
    kernel, exactly: the entries that differ (empty when the derivation is nrm's kernel)."""
    from nrm_verify.symbolic.attention import TORCH_NAMES

    out = []
    for l in range(1, block.depth + 1):
        Q = block.kernel_at(l, {k: sp.Rational(v.numerator, v.denominator) for k, v in values.items()})
        for k, col in enumerate(block.columns[l]):
            if col.kind == "pad":
                continue
            label = block.layers[l][k].label
            q, qbot = graph.kernels[graph.layer(TORCH_NAMES[col.kind])]
            column = 0 if label == "f" else (int(label[1]) - 1) * 2 + int(label[2]) - 1
            expected = {_oracle_row(col.kind, block.layers[l - 1][j].label): Q[j, k] for j in col.parents}
            for row in range(q.shape[0]):
                want = expected.get(row, 0)
                if sp.Rational(q[row, column].numerator, q[row, column].denominator) != want:
                    out.append(f"{col.kind} q(row {row} | {label}): symbolic {want}, oracle {q[row, column]}")
            if sp.Rational(qbot[column].numerator, qbot[column].denominator) != Q[-1, k]:
                out.append(f"{col.kind} q(⊥ | {label}): symbolic {Q[-1, k]}, oracle {qbot[column]}")
    return out
