"""The validators: a new rule (:func:`check_rule`), a new layer kind (:func:`check_layer`),
and the conformance matrix of every rule and preset (:func:`~nrm_verify.validate.conformance.check`,
``nrm-verify check``).

    from nrm_verify.validate import check_rule, check_layer
    print(check_rule("mypkg.rules:MyRule"))
    print(check_layer("mypkg.layers:MyKind"))

:mod:`~nrm_verify.validate.search` holds what they share: the hypothesis search of one
law check with its time budget, the verdicts and the reports.
"""

from nrm_verify.validate.layers import InvalidKind, LayerReport, check_layer, load_kind
from nrm_verify.validate.rules import (
    CHECKS,
    ERROR,
    HELD,
    NOT_APPLICABLE,
    NOT_SETTLED,
    PROVED,
    SEARCH_TIMEOUT,
    VIOLATED,
    Counterexample,
    InvalidRule,
    RuleReport,
    UnknownLaw,
    Verdict,
    check_rule,
    default_events,
    law_keys,
    laws_on_case,
    load_rule,
    normalize_laws,
    run_check,
    search_settings,
)

__all__ = ["check_rule", "check_layer", "load_rule", "load_kind", "RuleReport", "LayerReport", "Verdict",
           "Counterexample", "InvalidRule", "InvalidKind", "UnknownLaw", "CHECKS", "law_keys", "normalize_laws",
           "laws_on_case", "default_events", "run_check", "search_settings", "SEARCH_TIMEOUT",
           "PROVED", "HELD", "VIOLATED", "NOT_APPLICABLE", "ERROR", "NOT_SETTLED"]
