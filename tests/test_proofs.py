"""CI runs the symbolic proofs of the laws and fails when one fails or when the committed
proofs/REPORT.md is stale (it is regenerated in memory and compared)."""

from __future__ import annotations

from nrm_verify.symbolic.attention_proofs import proofs as attention_proofs
from nrm_verify.symbolic.prove import REPORT, jobs, run, stale
from nrm_verify.symbolic.report import render


def test_every_proof_is_as_expected_and_the_report_is_current(tmp_path):
    proofs = run(jobs(), workers=1)
    assert len(proofs) > 900
    attention = attention_proofs()  # the attention block's section (tests/test_symbolic_attention.py)
    bad = [f"{p.law} {p.rule} {p.arch} {p.case}: {p.status} (expected {p.expect})" for p in proofs + attention
           if not p.good]
    assert not bad, "\n".join(bad)
    text = render(proofs, attention)
    diff = stale(text, REPORT)
    assert not diff, f"proofs/REPORT.md is stale; run `python -m nrm_verify.symbolic.prove`:\n{diff}"
    # the staleness check itself catches an edited report
    edited = tmp_path / "REPORT.md"
    edited.write_text(text.replace("✓ proved", "✓ proven", 1), encoding="utf-8")
    assert stale(text, edited)
    assert not stale(text, _copy(text, tmp_path / "same.md"))


def test_the_per_law_entry_points_run(capsys):
    from nrm_verify.symbolic.prove import law_main

    assert law_main("L13", ["--arch", "2-2-1", "--rule", "alphabeta", "--show"]) == 0
    out = capsys.readouterr().out
    assert "outside the hypothesis" in out and "refuted" in out and "proved" in out


def _copy(text, path):
    path.write_text(text, encoding="utf-8")
    return path
