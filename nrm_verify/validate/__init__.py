"""The validators: a new rule (:func:`check_rule`), a new layer kind (:func:`check_layer`),
and the conformance matrix of every rule and preset (:func:`~nrm_verify.validate.conformance.check`,
``nrm-verify check``).

    from nrm_verify.validate import check_rule, check_layer
    print(check_rule("mypkg.rules:MyRule"))
    print(check_layer("mypkg.layers:MyKind"))

Which laws they check, and how, is the law catalogue's (:mod:`nrm_verify.laws.catalogue`);
:mod:`~nrm_verify.validate.search` holds what they share: the hypothesis search of one law
check with its time budget, the verdicts and the counterexample programs.
"""

from nrm_verify.laws.catalogue import CHECKS
from nrm_verify.laws.status import ERROR, HELD, NOT_APPLICABLE, NOT_SETTLED, PROVED, VIOLATED
from nrm_verify.properties.checks import default_events, laws_on_case
from nrm_verify.validate.layers import InvalidKind, LayerReport, check_layer, layer_checks, load_kind
from nrm_verify.validate.rules import (
    SEARCH_TIMEOUT,
    InvalidRule,
    RuleReport,
    UnknownLaw,
    check_rule,
    law_keys,
    load_rule,
    normalize_laws,
    rule_problem,
)
from nrm_verify.validate.search import Counterexample, Verdict, run_check, search_settings

__all__ = ["check_rule", "check_layer", "load_rule", "load_kind", "rule_problem", "RuleReport", "LayerReport",
           "Verdict", "Counterexample", "InvalidRule", "InvalidKind", "UnknownLaw", "CHECKS", "law_keys",
           "normalize_laws", "layer_checks", "laws_on_case", "default_events", "run_check", "search_settings",
           "SEARCH_TIMEOUT", "PROVED", "HELD", "VIOLATED", "NOT_APPLICABLE", "ERROR", "NOT_SETTLED"]
