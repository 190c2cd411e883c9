"""The law catalogue (issue 11): every law once — key, title, statement, checks, symbolic
form, proof file — and everything that names a law reads it from there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nrm
from nrm_verify import laws
from nrm_verify.laws import catalogue
from nrm_verify.laws.status import STATUSES
from nrm_verify.properties import draws
from nrm_verify.properties.calls import M
from nrm_verify.validate import check_rule, layer_checks
from nrm_verify.validate import conformance as C

ROOT = Path(__file__).resolve().parents[1]


def test_keys_titles_and_checks():
    keys = catalogue.keys()
    assert keys[:19] == [f"L{i}" for i in range(1, 19)] + ["INV"] and {"K2", "K3", "K5"} <= set(keys)
    assert len(set(keys)) == len(keys)
    for law in catalogue.laws():
        assert law.title and law.statement and law.checks, law.key
        for check in law.checks:
            assert check.law == law.key and check.name
            # a built-in law's function is one of nrm_verify.laws, under its own name
            assert getattr(laws, check.function.__name__) is check.function, check.function


def test_every_symbolic_law_has_its_proof_file_and_every_proof_file_its_law():
    named = {law.proof: law.key for law in catalogue.laws() if law.proof}
    assert set(named) == {law.proof for law in catalogue.symbolic_laws()}
    files = {p.name for p in (ROOT / "proofs").glob("L*.py")}
    assert files == set(named), files ^ set(named)
    for file, key in named.items():
        assert f'law_main("{key}"' in (ROOT / "proofs" / file).read_text(encoding="utf-8"), file
    for law in catalogue.symbolic_laws():
        assert callable(law.symbolic_function()) and law.symbolic_function().__doc__


def test_the_reports_use_the_catalogue_titles():
    report = (ROOT / "proofs" / "REPORT.md").read_text(encoding="utf-8")
    for law in catalogue.symbolic_laws():
        assert f"### {law.key} — {law.title}" in report, law.key
    assert C.columns() == tuple(k for k in catalogue.keys() if catalogue.law(k).column)
    assert C.titles()["L13"] == catalogue.law("L13").title == "α1β0 = z⁺"


def test_one_status_vocabulary():
    from nrm_verify.symbolic import proof
    from nrm_verify.validate import search

    assert set(C.STATUSES) <= set(STATUSES)
    for module in (proof, search, C):
        text = Path(module.__file__).read_text(encoding="utf-8")
        assert not re.search(r'^[A-Z_]+ = "(n/a|failed|held|proved|violated)"', text, re.M), module.__name__


def _always_holds(m, *, tol=1e-9):
    return laws.LawResult("L90", "a law that holds", True, 0.0, tol)


def test_a_registered_law_is_checked_everywhere_and_unregistered_cleanly():
    law = catalogue.Law("L90", "a law that holds", r"1=1",
                        checks=(catalogue.Check("a law that holds", _always_holds, draws.measure_only,
                                                kind=catalogue.always),))
    catalogue.register(law)
    try:
        assert "L90" in catalogue.keys() and "L90" in C.columns()
        assert any(c.law == "L90" for c in layer_checks())
        report = check_rule(nrm.rules.Zero(), only=["l90"], max_examples=3, symbolic=False)
        assert [v.law for v in report.verdicts] == ["L90"] and report.verdicts[0].status == "held", report
        with pytest.raises(ValueError, match="already has L90"):
            catalogue.register(law)
    finally:
        catalogue.unregister("L90")
    assert "L90" not in catalogue.keys() and "L90" not in C.columns()
    with pytest.raises(KeyError, match="no law 'L90'"):
        catalogue.unregister("L90")


@pytest.mark.parametrize("bad, error, match", [
    ("not a law", TypeError, "expected a catalogue.Law"),
    (catalogue.Law("l 1", "x"), ValueError, "upper case"),
    (catalogue.Law("L91", "x", checks=(catalogue.Check("x", 3, draws.measure_only),)), TypeError, "callable"),
])
def test_registering_a_bad_law_is_refused(bad, error, match):
    with pytest.raises(error, match=match):
        catalogue.register(bad)
    assert "L91" not in catalogue.keys()


def test_a_law_of_ones_own_writes_its_own_import_in_a_counterexample():
    from nrm_verify.properties.calls import LawCall
    from nrm_verify.properties.codegen import Writer

    w = Writer()
    lines = LawCall(_always_holds, (M,)).code(w)
    assert lines == ["result = _always_holds(m)"]
    assert f"from {_always_holds.__module__} import _always_holds" in w.imports
    w = Writer()
    assert LawCall(laws.normalization, (M,)).code(w) == ["result = laws.normalization(m)"]
    assert "from nrm_verify import laws" in w.imports
