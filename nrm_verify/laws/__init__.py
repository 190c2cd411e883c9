"""Every law of the measure (NRM-SPEC §4) as a function returning a checked
:class:`LawResult` (holds / violated / not applicable, the worst deviation, the tolerance,
the assumptions), used by the test suite, the validators, ``nrm-verify check`` and users.

    from nrm_verify import laws
    laws.normalization(m)                 # L1 at every layer
    laws.markov(m, "features.28", k, lower)

The laws are grouped by what they are about: :mod:`~nrm_verify.laws.measure` (L1–L8, L17),
:mod:`~nrm_verify.laws.limits` (L9–L14), :mod:`~nrm_verify.laws.walks` (L15, L16),
:mod:`~nrm_verify.laws.graph` (L1 with copies, L18), :mod:`~nrm_verify.laws.invariance`
(batch, device) and :mod:`~nrm_verify.laws.kinds` (K2, K3, K5: the layer kinds);
:mod:`~nrm_verify.laws.catalogue` lists them all, once (key, title, function, how its
arguments are drawn, its symbolic form, its proof file).
"""

from __future__ import annotations

from nrm_verify.laws.base import DEFAULT_TOL, LawResult, canonical_layers, magnitude
from nrm_verify.laws.graph import association, modularity, normalization_with_copies
from nrm_verify.laws.invariance import available_devices, batch_invariance, device_invariance
from nrm_verify.laws.kinds import exact_oracle, layer_maps, layer_transposes
from nrm_verify.laws.limits import (
    alpha1_beta0,
    epsilon_limit,
    gamma_limit,
    gamma_zero,
    gradient_x_input,
    gradient_x_input_detached,
    input_independence,
    zbox_nonnegative,
)
from nrm_verify.laws.measure import (
    additivity,
    bayes,
    chain_rule,
    channel_sum,
    column_sums,
    complement_atom,
    joint_marginals,
    lrp_equivalence,
    marginalization,
    markov,
    multiplicative,
    normalization,
    total_measure,
)
from nrm_verify.laws.walks import crp_conditional, gnn_lrp, walk_relevance

__all__ = [
    "LawResult", "DEFAULT_TOL", "magnitude", "canonical_layers",
    "normalization", "column_sums", "additivity", "marginalization", "joint_marginals", "chain_rule", "multiplicative",
    "bayes", "total_measure", "markov", "lrp_equivalence", "channel_sum", "complement_atom",
    "gradient_x_input", "gradient_x_input_detached", "epsilon_limit", "gamma_zero", "gamma_limit", "alpha1_beta0",
    "input_independence",
    "zbox_nonnegative", "walk_relevance", "gnn_lrp", "crp_conditional", "modularity", "normalization_with_copies",
    "association",
    "batch_invariance", "device_invariance", "available_devices", "layer_maps", "layer_transposes", "exact_oracle",
]
