"""Adapters that run other LRP implementations on the same case as nrm, behind one interface.

Every implementation — nrm's own and each peer's — is an :class:`Explainer`
(:mod:`nrm_verify.peers.explainer`): ``explainer(model, x, target, layers=[…])`` returns LRP's
relevance R per layer (``"input"`` for the input), and ``explainer.name`` (the peer),
``explainer.rules`` (the nrm rule or preset it reproduces) and ``explainer.row`` (the row of
the conformance table it speaks for) say what it is:

* :class:`NRMExplainer` — nrm's measure;
* :class:`ZennitExplainer` — zennit, for nrm rules or a composite of zennit's own;
* :class:`CaptumExplainer` — captum's ``LRP`` for nrm rules, or one of captum's methods;
* :class:`CRPExplainer` — zennit-crp's conditional heatmaps under a condition {layer: channels}.

Each adapter module maps nrm rules and presets to a peer's rules and composites, with every
convention matched (stabilizer sign and value, bias handling, pooling, batch norm), and
computes the peer's relevance for ``(model, x, target)``:

* :mod:`nrm_verify.peers.zennit` — zennit's rules, composites and canonizers;
* :mod:`nrm_verify.peers.captum` — captum's ``LRP`` with its propagation rules;
* :mod:`nrm_verify.peers.crp` — zennit-crp's conditional heatmaps and concept relevances.

Relevance is reported as LRP's R (the target output starts with R_c = f_c(x)), so it is
compared with nrm's ``m.relevance(layer)`` = f · m_l, or ``f * m.marginal(layer, within=…)``.

The peers are not dependencies of nrm: they live in the separate environment
``.venv-peers`` (``bash scripts/setup-peers.sh``), because zennit needs torchvision, whose
wheels do not import beside the CPU torch of ``.venv``. Importing this package never
imports a peer; each adapter imports its peer when first used and raises
:class:`PeerMissingError` with the command to run when it is absent. The conventions and
how each difference is bridged are described in ``docs/peers.md``.
"""

from __future__ import annotations

from nrm_verify.peers.base import SETUP_COMMAND, PeerConventionError, PeerMissingError, require, versions
from nrm_verify.peers.captum import CaptumExplainer
from nrm_verify.peers.crp import CRPExplainer
from nrm_verify.peers.explainer import Explainer, NRMExplainer, row_of
from nrm_verify.peers.zennit import ZennitExplainer

__all__ = ["SETUP_COMMAND", "PeerMissingError", "PeerConventionError", "require", "versions", "Explainer",
           "NRMExplainer", "ZennitExplainer", "CaptumExplainer", "CRPExplainer", "row_of"]
