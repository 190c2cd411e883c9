"""The symbolic layer: the rules of :mod:`nrm.rules` evaluated on sympy expressions,
closed forms of the NRM of small networks, and proofs of the laws (NRM-SPEC §4)."""

from .derive import NumericMeasure, SymbolicMeasure
from .network import SymbolicLayer, SymbolicNetwork, SymbolicNetworkError
from .ops import Fact, SignDecider, SympyScalars, sympy_ops, to_sympy

__all__ = ["SymbolicNetwork", "SymbolicLayer", "SymbolicNetworkError", "SymbolicMeasure", "NumericMeasure",
           "SympyScalars", "SignDecider", "Fact", "sympy_ops", "to_sympy"]
