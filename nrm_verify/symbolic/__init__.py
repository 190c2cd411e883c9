"""The symbolic layer: the rules of :mod:`nrm.rules` evaluated on sympy expressions,
closed forms of the NRM of small networks, and proofs of the laws (NRM-SPEC §4).

    from nrm_verify.symbolic import SymbolicMeasure, SymbolicNetwork
    net = SymbolicNetwork.dense([2, 2, 1], inputs="positive", pattern="active")
    m = SymbolicMeasure(net, nrm.rules.Epsilon(sympy.Symbol("eps", positive=True)))
    print(m.text())                       # assumptions, kernels, walks, marginals
    m.conditional(At("input", index=[0]), given=At("h1", index=[1]))

    from nrm_verify.symbolic import prove_rule
    proofs = prove_rule(MyRule(...))      # every law: proved, refuted (with a point), or n/a

Modules: :mod:`.ops` (the sympy backend and the sign decisions), :mod:`.network`
(symbolic networks), :mod:`.derive` (the measure in closed form), :mod:`.algebra` (exact
rational functions for proofs), :mod:`.proof` (identities, counterexamples), :mod:`.laws`
(the laws), :mod:`.catalog` (architectures, rules, cases of the suite), :mod:`.prove`
(the runner and ``python -m nrm_verify.symbolic.prove``), :mod:`.report` (REPORT.md),
:mod:`.crosscheck` (closed forms vs the engine and the oracle), :mod:`.worked_example`,
:mod:`.attention` (a 2-token × 2-dimension attention head's kernels derived in closed form) and
:mod:`.attention_proofs` (L1, L2, L7 on it; what does not hold refuted).
"""

from nrm_verify.symbolic.derive import NumericMeasure, SymbolicMeasure
from nrm_verify.symbolic.network import SymbolicLayer, SymbolicNetwork, SymbolicNetworkError
from nrm_verify.symbolic.ops import Fact, SignDecider, SympyScalars, sympy_ops, to_sympy


def prove_rule(*args, **kwargs):
    """Every law for a rule of your own; see :func:`nrm_verify.symbolic.prove.prove_rule`."""
    from nrm_verify.symbolic.prove import prove_rule as _prove_rule

    return _prove_rule(*args, **kwargs)


__all__ = ["SymbolicNetwork", "SymbolicLayer", "SymbolicNetworkError", "SymbolicMeasure", "NumericMeasure",
           "SympyScalars", "SignDecider", "Fact", "sympy_ops", "to_sympy", "prove_rule"]
