"""The one vocabulary of verdicts, used by every report of this package: the validators
(``check-rule``, ``check-layer``), the conformance matrix (``check``), the symbolic proofs
(``proofs/``) and the law functions' :class:`~nrm_verify.laws.LawResult`.

=================  ==============================================================================
``proved``         a symbolic proof: an identity of rational functions under the stated assumptions
``held``           a search (or one given case) found no violation on the cases where the law applied
``violated``       a counterexample: a case (or, for a claimed law, a rational point) where it fails
``refuted``        a proof's rational counterexample point (a violation where the law is claimed;
                   where the suite shows a law does *not* extend to a rule, the expected outcome)
``not applicable`` the law says nothing about the subject (the reason goes with it)
``not settled``    the time budget ran out, or a proof step did not simplify and found no point
``error``          the subject raised (or returned something unusable) on a case
``not checked``    no source ran (the search or the proofs were switched off, or not reached)
=================  ==============================================================================

:data:`SHORT` gives the short forms a table cell shows (``n/a``, ``·``, …): a display form
only; every status value a program reads or writes (JSON, ``Verdict.status``,
``Proof.status``, ``Cell.status``) is one of :data:`STATUSES`.
"""

from __future__ import annotations

PROVED = "proved"
HELD = "held"
VIOLATED = "violated"
REFUTED = "refuted"
NOT_APPLICABLE = "not applicable"
NOT_SETTLED = "not settled"
ERROR = "error"
NOT_CHECKED = "not checked"

STATUSES = (PROVED, HELD, VIOLATED, REFUTED, NOT_APPLICABLE, NOT_SETTLED, ERROR, NOT_CHECKED)

SHORT = {PROVED: "proved", HELD: "held", VIOLATED: "VIOLATED", REFUTED: "refuted", NOT_APPLICABLE: "n/a",
         NOT_SETTLED: "not settled", ERROR: "ERROR", NOT_CHECKED: "·"}
"""How a table cell shows each status."""

FAILING = (VIOLATED, ERROR)
"""The statuses that fail a check (exit status 1)."""

__all__ = ["PROVED", "HELD", "VIOLATED", "REFUTED", "NOT_APPLICABLE", "NOT_SETTLED", "ERROR", "NOT_CHECKED",
           "STATUSES", "SHORT", "FAILING"]
