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
