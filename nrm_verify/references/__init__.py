"""Independent computations the engine is checked against:

* :mod:`~nrm_verify.references.oracle` — the exact rational oracle: every walk enumerated,
  and explicit transition matrices, in fractions (sequential models);
* :mod:`~nrm_verify.references.explicit` — explicit dense LRP written from the rule equations,
  on the recorded operations themselves (any graph), their dense matrices written by
  :mod:`~nrm_verify.references.call_matrices`;
* :mod:`~nrm_verify.references.autograd` — standard LRP through autograd (the L8 reference);
* :mod:`~nrm_verify.references.gnnlrp` — GNN-LRP's walk relevance by nested masking (L15);
  on a branched graph by :mod:`~nrm_verify.references.nested_masking`.
"""
