"""The subjects of the proofs: a rule of the catalogue on a symbolic network of the
catalogue under one of its sign cases, split where the rule branches on a sign that the
case leaves open (:func:`subjects`), and the boundary case C of L12 and L13."""

from __future__ import annotations

import random

from nrm_verify.symbolic.catalog import Architecture, RuleSpec, SignCase
from nrm_verify.symbolic.laws import Subject
from nrm_verify.symbolic.network import SymbolicNetworkError

CASE_C = SignCase("C", "P_k = 0 at the output: every weight into y and its bias negative, f < 0", False, "-", False,
              weights=lambda l, j, k: "-" if l == 2 else ("+" if (j + k) % 2 == 0 else "-"),
              biases=lambda l, k: "-" if l == 2 else "+")
"""A boundary case for L12 and L13 (2-2-1 only): z⁺ sends the output column to ⊥."""


def subject(arch: Architecture, spec: RuleSpec, case: SignCase, split: tuple = ()) -> Subject:
    """The rule on the architecture under the case (and the sign assumptions ``split``,
    ((expression, "+" or "-"), …)); a witness point proves the assumptions satisfiable
    (otherwise every claim would hold vacuously)."""
    net = arch.build(spec, case)
    label = case.key
    for expr, sign in split:
        net.assume(expr, sign, "case split: the rule branches on its sign")
        label += sign
    net.sample(random.Random(0), extra=spec.params)
    return Subject(net, [None] + spec.rules(net), spec.params, arch.key, spec.title, label)


MAX_SPLITS = 3
"""How many undecided signs a case is split on at most."""


def subjects(arch: Architecture, spec: RuleSpec, case: SignCase, split: tuple = ()) -> list[Subject]:
    """The case, split on every sign its rule branches on that the assumptions leave
    open (x⁺, x⁻, s(x) of an expression such as a denominator): one sub-case with the
    expression > 0 and one with it < 0, each kept only when feasible. Together they cover
    everything but the expression = 0, which a rule's validity condition excludes."""
    try:
        s = subject(arch, spec, case, split)
    except SymbolicNetworkError:
        if split:
            return []  # an infeasible sub-case
        raise
    open_signs = [x for _, op, x in s.m.undecided if op in ("sign", "pos", "neg", "abs")]
    if not open_signs or len(split) >= MAX_SPLITS:
        return [s]
    return [t for sign in "+-" for t in subjects(arch, spec, case, split + ((open_signs[0], sign),))]


__all__ = ["subject", "subjects", "CASE_C", "MAX_SPLITS"]
