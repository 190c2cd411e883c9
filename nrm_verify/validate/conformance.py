"""Conformance of rules and presets to the laws of the measure (NRM-SPEC §4): the logic of
``nrm-verify check``, apart from its command line and its report.

For every row (a built-in rule of :mod:`nrm.rules`, a preset of :data:`nrm.presets.PRESETS`,
or a rule of your own given as a :class:`Row`) and every column (the laws L1 … L18 and the
invariances, :data:`COLUMNS`) a :class:`Cell` says one of

* ``proved`` — :mod:`nrm_verify.symbolic` proved the law for the rule on its symbolic
  networks, and the search below found no counterexample;
* ``held`` — a hypothesis search (:mod:`nrm_verify.properties.strategies`, the law arguments of
  :mod:`nrm_verify.laws.catalogue`) found no violation in N cases where the law applied;
* ``violated`` — with a runnable counterexample (shrunk by the validator's search);
* ``not applicable`` — the law says nothing about the row (with the reason; shown ``n/a``);
* ``not checked`` — the source was not run (shown ``·``).

The columns are the laws of the catalogue (:mod:`nrm_verify.laws.catalogue`) that the
matrix shows, in its order, and PEERS; a law registered there gets its column.

The search draws one case at a time (network, input, target, the row's rules) and checks
every applicable law on it, each with its own drawn arguments — the case construction of
``tests/test_laws.py``: the rule on every layer; z^B on the first layer with LRP-0 or ε
above; γ and z⁺ on ReLU networks with non-negative inputs. The symbolic proofs run in a
child process at the same time. Peer equivalence (zennit, captum, zennit-crp) is read from
``peer_tests/results/deviations.json`` written by the peer suite in ``.venv-peers``.

    from nrm_verify.validate.conformance import check
    result = check(only=["Epsilon"], examples=5)
    result.ok, result.cell("Epsilon", "L1").status
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

import nrm
from nrm.errors import RelevanceDependentRuleError, ZeroOutputError
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, WSquare, ZBox, Zero, ZPlus
from nrm_verify import laws
from nrm_verify.laws import catalogue
from nrm_verify.laws.catalogue import Check
from nrm_verify.laws.status import HELD, NOT_APPLICABLE, NOT_CHECKED, NOT_SETTLED, PROVED, REFUTED, SHORT, VIOLATED
from nrm_verify.properties import strategies as S
from nrm_verify.symbolic.job import ProofJob, ProofOutcome
from nrm_verify.validate.search import ERROR, Failure, Verdict, describe_failure, run_check, search_settings

STATUSES = (PROVED, HELD, VIOLATED, NOT_APPLICABLE, NOT_CHECKED)
"""The statuses a cell takes (:mod:`nrm_verify.laws.status`)."""

PEERS = "PEERS"
PEERS_TITLE = "peer equivalence"


def columns() -> tuple[str, ...]:
    """The law columns: the catalogue's laws that the matrix shows, in order (L1 … L18, INV
    and any law registered since)."""
    return tuple(catalogue.keys(column=True))


def titles() -> dict[str, str]:
    """Column key → title (the catalogue's, and PEERS)."""
    return {**catalogue.titles(), PEERS: PEERS_TITLE}


def __getattr__(name: str):
    """``COLUMNS`` and ``TITLES`` read the catalogue when used (registered laws appear)."""
    if name == "COLUMNS":
        return columns()
    if name == "TITLES":
        return titles()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ROOT = Path(__file__).resolve().parents[2]
"""The checkout: nrm_verify/validate/conformance.py → the folder holding nrm_verify/, peer_tests/, .venv-peers/."""
PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PEER_RESULTS = ROOT / "peer_tests" / "results" / "deviations.json"
"""The records of the last whole run of the peer suite (the tables of docs/peers.md and the README)."""
CONFORMANCE_PEER_TESTS = ("test_zennit.py", "test_captum.py", "test_crp.py", "test_explainers.py", "test_residual.py")
"""The peer test modules that speak for the rows of the conformance table (their explainers
reproduce nrm rules and presets); ``check`` runs these, not the whole peer suite (the
transformer, graph and torchvision zoo comparisons speak for no row and take far longer)."""


# -- rows ----------------------------------------------------------------------------------------
@dataclass
class Row:
    """One row of the table: a rule (drawn with its parameters and conventions on every
    layer) or a preset, and how its cases are drawn."""

    name: str
    kind: str  # "rule", "preset" or "custom"
    representative: Rule | None  # what the law checks' applicability is decided on (None: a preset)
    strategy_rule: Callable[[S.Network], st.SearchStrategy | object]
    input_kind: str = "arbitrary"
    activations: tuple[str, ...] = ("relu", "leaky", "identity")
    low: float = -2.0
    high: float = 2.0
    symbolic_keys: tuple[str, ...] = ()
    first_rule: Rule | None = None  # a preset's rule for the first layer
    also_nonnegative: bool = False  # draw half of the cases on ReLU networks with a ≥ 0 too
    preset: object = None  # a preset's rule map with default parameters

    @classmethod
    def of_rule(cls, rule: Rule, name: str | None = None) -> Row:
        """A row for a rule of your own (one instance on every layer; z^B-like first-layer
        rules get LRP-0 above them; a ≥ 0 and ReLU networks if the rule requires it)."""
        nonneg = bool(getattr(rule, "requires_nonnegative_input", False))
        if getattr(rule, "input_layer_only", False):
            def first(net, rule=rule):
                return {nrm.FIRST: rule, **{n: Zero() for n in net.linear_layers()[1:]}}
            return cls(name or repr(rule), "custom", rule, first, first_rule=rule,
                       input_kind="nonnegative" if nonneg else "arbitrary",
                       activations=("relu",) if nonneg else ("relu", "leaky", "identity"))
        return cls(name or repr(rule), "custom", rule, lambda net, rule=rule: rule,
                   input_kind="nonnegative" if nonneg else "arbitrary",
                   activations=("relu",) if nonneg else ("relu", "leaky", "identity"))

    # the case construction of tests/test_laws.py, with the validator's three sizes
    def networks(self, size: str = "any", activations: tuple[str, ...] | None = None):
        acts = activations or self.activations
        if size == "one layer":
            return S.networks("mlp", max_depth=1, max_width=2, activations=acts)
        if size == "small":
            return S.networks("mlp", max_depth=2, max_width=2, activations=acts)
        return S.networks(activations=acts)

    def cases(self, batch: tuple[int, int] = (1, 2), size: str = "any") -> st.SearchStrategy[S.Case]:
        """Cases for this row (the validator's ``Context.cases`` interface)."""
        main = S.cases(self.networks(size), input_kind=self.input_kind, low=self.low, high=self.high, batch=batch,
                       rules=self.strategy_rule)
        if not self.also_nonnegative:
            return main
        nonneg = S.cases(self.networks(size, ("relu",)), input_kind="nonnegative", low=self.low, high=self.high,
                         batch=batch, rules=self.strategy_rule)
        return st.one_of(main, nonneg)

    @property
    def rule(self):
        """What a counterexample program names as the rule under test."""
        return self.representative if self.representative is not None else self.preset


def _every(name: str):
    strategy = S.rules([name])
    return lambda net: strategy


def _zbox_first(low: float, high: float):
    first = S.rules(["zbox"], low=low, high=high)
    others = S.rules(["epsilon", "zero"])

    def box_first(net):
        rest = net.linear_layers()[1:]
        return st.builds(lambda f, o: {nrm.FIRST: f, **{n: o for n in rest}}, first, others)
    return box_first


def _preset_row(name: str) -> Row:
    strategy = S.presets([name], low=-2.0, high=2.0)
    made = nrm.presets.PRESETS[name](-2.0, 2.0) if name == "EpsilonGammaBox" else nrm.presets.PRESETS[name]()
    return Row(name, "preset", None, lambda net: strategy, first_rule=made.first, preset=made)


def default_rows() -> list[Row]:
    """The 8 built-in rules, then the presets."""
    rows = [
        Row("Zero", "rule", Zero(), _every("zero"), symbolic_keys=("zero", "zero_renormalize")),
        Row("Epsilon", "rule", Epsilon(1e-6), _every("epsilon"), symbolic_keys=("epsilon",)),
        Row("Gamma", "rule", Gamma(0.25), _every("gamma"), "nonnegative", ("relu",), symbolic_keys=("gamma",)),
        Row("ZPlus", "rule", ZPlus(), _every("zplus"), "nonnegative", ("relu",), symbolic_keys=("zplus",)),
        Row("AlphaBeta", "rule", AlphaBeta(2, 1), _every("alphabeta"), symbolic_keys=("alphabeta",),
            also_nonnegative=True),
        Row("WSquare", "rule", WSquare(), _every("wsquare"), symbolic_keys=("wsquare",)),
        Row("Flat", "rule", Flat(), _every("flat"), symbolic_keys=("flat",)),
        Row("ZBox", "rule", ZBox(-1.0, 1.0), _zbox_first(-1.0, 1.0), "box", low=-1.0, high=1.0,
            symbolic_keys=("zbox",), first_rule=ZBox(-1.0, 1.0)),
    ]
    return rows + [_preset_row(name) for name in nrm.presets.PRESETS]


def select_rows(only: Sequence[str] | None, rows: Sequence[Row] | None = None) -> list[Row]:
    """The rows named in ``only`` (case-insensitive, comma-separated entries allowed);
    every row when empty. Raises ValueError naming the choices on an unknown name."""
    rows = list(rows if rows is not None else default_rows())
    if not only:
        return rows
    wanted = [w.strip() for entry in only for w in entry.split(",") if w.strip()]
    by_name = {r.name.lower(): r for r in rows}
    unknown = [w for w in wanted if w.lower() not in by_name]
    if unknown:
        raise ValueError(f"unknown rule or preset {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(r.name for r in rows)}")
    return [by_name[w.lower()] for w in dict.fromkeys(wanted)]


def applies(check: Check, row: Row) -> str:
    """'' when ``check`` applies to ``row``, else the reason (the catalogue decides: its
    ``rule`` test for a rule row, its ``preset`` test for a preset row)."""
    if row.representative is not None:
        return "the law is not about rules" if check.rule is None else check.rule(row.representative)
    return "the law is not about presets" if check.preset is None else check.preset(row.preset)


# -- cells and the result -----------------------------------------------------------------------
@dataclass
class Cell:
    """The verdict of one law for one row, with its sources."""

    status: str = NOT_CHECKED
    cases: int = 0
    skipped: int = 0
    deviation: float | None = None
    tolerance: float | None = None
    detail: str = ""
    symbolic: str = ""
    counterexample: str = ""
    checks: list[str] = field(default_factory=list)

    @property
    def short(self) -> str:
        """How the table shows the cell (``held 40``, ``n/a``, ``·``, …)."""
        if self.status == HELD:
            return f"held {self.cases}"
        return SHORT.get(self.status, self.status)


@dataclass
class Conformance:
    """Every row × every column, with what was run and how long it took."""

    rows: list[str]
    kinds: dict[str, str]
    columns: tuple[str, ...] = field(default_factory=lambda: columns() + (PEERS,))
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    profile: str = "ci"
    examples: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    """Failures that belong to no cell (a peer test that names no row): they fail the check."""

    def cell(self, row: str, column: str) -> Cell:
        return self.cells.setdefault((row, column), Cell())

    @property
    def violated(self) -> list[tuple[str, str]]:
        return [(r, c) for r in self.rows for c in self.columns if self.cell(r, c).status == VIOLATED]

    @property
    def ok(self) -> bool:
        return not self.violated and not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> Counter:
        return Counter(self.cell(r, c).status for r in self.rows for c in self.columns)

    def worst_deviations(self) -> dict[str, float]:
        """Per law, the worst relative deviation the search measured over every row (where
        the law applied)."""
        out: dict[str, float] = {}
        for c in self.columns:
            devs = [self.cell(r, c).deviation for r in self.rows if self.cell(r, c).deviation is not None]
            if devs:
                out[c] = max(devs, key=lambda d: math.inf if math.isnan(d) else d)
        return out

    def to_dict(self) -> dict:
        return {
            "ok": self.ok, "exit_code": self.exit_code, "profile": self.profile, "examples": self.examples,
            "seconds": self.seconds, "notes": self.notes, "sources": self.sources,
            "rows": [{"name": r, "kind": self.kinds.get(r, "")} for r in self.rows],
            "columns": [{"key": c, "title": titles().get(c, c)} for c in self.columns],
            "cells": {r: {c: _cell_dict(self.cell(r, c)) for c in self.columns} for r in self.rows},
            "counts": dict(self.counts()), "failures": self.failures,
            "violated": [{"row": r, "column": c} for r, c in self.violated],
            "worst_deviations": self.worst_deviations(),
        }


def _cell_dict(cell: Cell) -> dict:
    d = asdict(cell)
    if d["deviation"] is not None and not math.isfinite(d["deviation"]):
        d["deviation"] = repr(d["deviation"])
    return d


# -- the search ----------------------------------------------------------------------------------
@dataclass
class _Tally:
    held: int = 0
    skipped: int = 0
    deviation: float | None = None
    tolerance: float | None = None
    reasons: Counter = field(default_factory=Counter)
    failure: tuple | None = None  # (case, call, result or None, error or None)

    def record(self, result: laws.LawResult) -> None:
        if result.holds is None:
            self.skipped += 1
            self.reasons[result.detail[:160]] += 1
            return
        d = float(result.deviation)
        # the largest deviation relative to the law's tolerance is the one reported
        if self.deviation is None or _relative(d, result.tolerance) > _relative(self.deviation, self.tolerance):
            self.deviation, self.tolerance = d, float(result.tolerance)
        if result.holds:
            self.held += 1


def _relative(d: float, tol: float | None) -> float:
    if math.isnan(d):
        return math.inf
    return d / tol if tol else d


class _RowContext:
    """What the law checks' argument draws read (the validator's ``Context``): the rule
    under test for L14, the input domain for a second input."""

    def __init__(self, row: Row, case: S.Case):
        self.rule = case.rules if isinstance(case.rules, Rule) else row.rule
        self.input_kind, self.low, self.high = row.input_kind, row.low, row.high
        if row.also_nonnegative and bool((case.x >= 0).all()):
            self.input_kind = "nonnegative"


def search_row(row: Row, checks: Sequence[Check], hyp: settings) -> dict[int, _Tally]:
    """One hypothesis search for ``row``: every case is checked against every check in
    ``checks`` (indexed by position), each with its own drawn arguments."""
    tallies = {i: _Tally() for i in range(len(checks))}

    @hyp
    @given(case=row.cases(batch=(1, 2)), data=st.data())
    def probe(case, data):
        ctx = _RowContext(row, case)
        for i, check in enumerate(checks):
            tally = tallies[i]
            if case.x.shape[0] < check.batch[0]:
                continue  # batch invariance needs two samples
            call = None
            try:
                call = check.call(data, case, ctx)
                result = call.run(case)
            except ZeroOutputError:
                return  # f_c(x) = 0: no measure; the case is dropped for every law
            except RelevanceDependentRuleError as error:
                tally.skipped += 1
                tally.reasons[str(error)[:160]] += 1
                continue
            except HypothesisException:
                raise
            except Exception as error:  # noqa: BLE001 — anything the rule raises is a failure of the row
                if tally.failure is None:
                    tally.failure = (case, call, None, error)
                continue
            tally.record(result)
            if result.holds is False and tally.failure is None:
                tally.failure = (case, call, result, None)

    try:
        probe()
    except HypothesisException:
        pass  # Unsatisfiable and the like: the tallies say how many cases applied
    return tallies


def _counterexample(row: Row, check: Check, tally: _Tally, profile: str, examples: int) -> tuple[str, str]:
    """(detail, runnable program) for a violated check: the validator's shrinking search
    for a small case first; the case the search found when that finds nothing."""
    verdict = run_check(check, row, search_settings(profile, max(8, examples)))
    if verdict.status in (VIOLATED, ERROR) and verdict.counterexample is not None:
        return verdict.detail, verdict.counterexample.script
    case, call, result, error = tally.failure
    verdict = Verdict(check.law, check.name, HELD)
    if call is None:
        return f"drawing the law's arguments raised {type(error).__name__}: {error}", ""
    describe_failure(verdict, Failure(case, call, result=result, error=error), row)
    return verdict.detail, verdict.counterexample.script if verdict.counterexample else ""


def _fill_search(result: Conformance, row: Row, checks: Sequence[Check], tallies: dict[int, _Tally],
                 profile: str, examples: int) -> None:
    for column in columns():
        mine = [(i, c) for i, c in enumerate(checks) if c.law == column]
        if not mine:
            continue
        cell = result.cell(row.name, column)
        statuses, details = [], []
        for i, check in mine:
            t = tallies[i]
            cell.checks.append(check.name)
            if t.failure is not None:
                statuses.append(VIOLATED)
                detail, script = _counterexample(row, check, t, profile, examples)
                details.append(f"{check.name}: {detail}")
                cell.counterexample = cell.counterexample or script
            elif t.held:
                statuses.append(HELD)
                details.append(f"{check.name}: held on {t.held} cases" +
                               (f" (did not apply on {t.skipped})" if t.skipped else ""))
            else:
                statuses.append(NOT_APPLICABLE)
                why = t.reasons.most_common(1)[0][0] if t.reasons else "no case could be drawn"
                details.append(f"{check.name}: did not apply on any of {t.skipped} cases ({why})")
            cell.cases = max(cell.cases, t.held)
            cell.skipped += t.skipped
            if t.deviation is not None and (cell.deviation is None or _relative(t.deviation, t.tolerance) >
                                            _relative(cell.deviation, cell.tolerance)):
                cell.deviation, cell.tolerance = t.deviation, t.tolerance
        cell.status = VIOLATED if VIOLATED in statuses else HELD if HELD in statuses else NOT_APPLICABLE
        cell.detail = "; ".join(details)


# -- symbolic proofs -----------------------------------------------------------------------------
class SymbolicProofs:
    """The symbolic proofs for the rows' catalogue rules (:class:`~nrm_verify.symbolic.job.ProofJob`),
    started at once and collected after the search."""

    def __init__(self, rows: Sequence[Row], timeout: float):
        self.rows = list(rows)
        self.keys = list(dict.fromkeys(k for r in rows for k in r.symbolic_keys))
        laws_wanted = [law.key for law in catalogue.symbolic_laws() if law.column]
        self.job = ProofJob(self.keys, laws_wanted, timeout) if self.keys else None

    def collect(self, result: Conformance) -> None:
        if self.job is None:
            result.sources["symbolic"] = "no row has a symbolic rule in the catalogue"
            return
        proofs = self.job.collect()
        if not self.job.started_child or (proofs.note and not proofs.outcomes):
            result.notes.append(f"symbolic proofs gave no result ({proofs.note or self.job.note})")
            result.sources["symbolic"] = "not finished"
            return
        if proofs.note:
            result.notes.append(proofs.note)
        result.seconds["symbolic"] = time.perf_counter() - self.job.started
        counts = Counter(o.status for o in proofs.outcomes)
        result.sources["symbolic"] = f"{len(proofs.outcomes)} proofs (" + ", ".join(
            f"{v} {k}" for k, v in sorted(counts.items())) + ")"
        for row in self.rows:
            mine = [o for o in proofs.outcomes if self.keys[o.subject] in row.symbolic_keys]
            for column in columns():
                ps = [o for o in mine if o.law == column]
                if ps:
                    merge_symbolic(result.cell(row.name, column), ps)


def merge_symbolic(cell: Cell, proofs: list[ProofOutcome]) -> None:
    """Fold the proofs of one law for one row into its cell. The law's claims (expect
    "holds") proved everywhere upgrade "held" (or an unsearched cell) to "proved"; a
    claimed case refuted makes the cell violated; a case the suite shows false on purpose
    (outside the law's hypothesis, or a law about another rule) is noted only."""
    claimed = [p for p in proofs if p.expect == "holds" and p.status != NOT_APPLICABLE]
    refuted = [p for p in claimed if p.status == REFUTED]
    unsettled = [p for p in proofs if p.status == NOT_SETTLED]
    expected_false = [p for p in proofs if p.expect == "fails" and p.status == REFUTED]
    if refuted:
        p = refuted[0]
        cell.status = VIOLATED
        cell.symbolic = f"refuted on {p.arch} case {p.case}: {p.point}"[:400]
    elif claimed and all(p.status == PROVED for p in claimed):
        cell.symbolic = f"proved on {len(claimed)} symbolic network case(s)"
        if cell.status in (HELD, NOT_CHECKED):
            cell.status = PROVED
        elif cell.status == NOT_APPLICABLE and not cell.checks:
            cell.status = PROVED
    elif expected_false and not claimed:
        cell.symbolic = f"shown false by counterexample on {len(expected_false)} case(s): the law does not " \
                        "extend to this rule"
    elif not claimed:
        notes = [p.note for p in proofs if p.note]
        cell.symbolic = f"not applicable ({notes[0]})"[:300] if notes else "not applicable"
    if unsettled:
        cell.symbolic += f"; {len(unsettled)} proof(s) not settled"
    if claimed and expected_false:
        cell.symbolic += f"; a hypothesis of the law shown necessary on {len(expected_false)} case(s)"


# -- peers ---------------------------------------------------------------------------------------
class PeerJob:
    """The peer-equivalence suite (``peer_tests``, run with ``.venv-peers/bin/python``),
    started in the background: the modules of :data:`CONFORMANCE_PEER_TESTS`. Its deviations
    are read from the file its conftest writes for this run (``$NRM_PEER_RESULTS``, a temporary
    file unless ``results`` is given; the committed :data:`PEER_RESULTS` is left alone): peer,
    row, equivalence, rule, model, layer, max_abs_dev, max_abs_relevance; its failures, each
    with the rows it speaks for, from a JUnit XML file (:func:`read_junit_failures`)."""

    def __init__(self, enabled: bool, python: Path = PEER_PYTHON, results: Path | None = None):
        import tempfile

        self.python = python
        self.results, self._own_results = results, results is None
        self.process: subprocess.Popen | None = None
        self.reason = ""
        self.started = time.perf_counter()
        if not enabled:
            self.reason = "peers not run (--no-peers)"
        elif not python.exists():
            self.reason = "peers not installed (no .venv-peers; build it with `bash scripts/setup-peers.sh`)"
        elif not (ROOT / "peer_tests").is_dir():
            self.reason = "peers not checked (no peer_tests/ suite in this checkout)"
        else:
            self.junit = Path(tempfile.mkstemp(prefix="nrm-peers-", suffix=".xml")[1])
            if self.results is None:  # a file of this run, never the suite's committed deviations.json
                self.results = Path(tempfile.mkstemp(prefix="nrm-peers-", suffix=".json")[1])
            if self.results.exists():
                self.results.unlink()
            env = {**os.environ, "OMP_NUM_THREADS": "1", "NRM_PEER_RESULTS": str(self.results)}
            tests = [str(ROOT / "peer_tests" / t) for t in CONFORMANCE_PEER_TESTS]
            self.process = subprocess.Popen([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                             f"--junitxml={self.junit}", *tests], cwd=ROOT, env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def collect(self, result: Conformance, rows: Sequence[Row], timeout: float) -> None:
        if self.process is None:
            result.sources["peers"] = self.reason
            for row in rows:
                result.cell(row.name, "PEERS").detail = self.reason
            return
        try:
            out, _ = self.process.communicate(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            result.notes.append(f"the peer suite did not finish in {timeout:.0f} s; peers not checked")
            result.sources["peers"] = "timed out"
            self.junit.unlink(missing_ok=True)
            if self._own_results:
                self.results.unlink(missing_ok=True)
            return
        result.seconds["peers"] = time.perf_counter() - self.started
        tail = (out or "").strip().splitlines()[-1:] or [""]
        result.sources["peers"] = (f"peer_tests/{{{','.join(CONFORMANCE_PEER_TESTS)}}} in .venv-peers, exit "
                                   f"{self.process.returncode}: {tail[0][:200]}")
        failures = read_junit_failures(self.junit)
        self.junit.unlink(missing_ok=True)
        try:
            records = read_peer_results(self.results)
            if self._own_results:
                self.results.unlink(missing_ok=True)
        except (OSError, ValueError) as e:
            records = []
            result.notes.append(f"could not read {self.results}: {e}")
        if self.process.returncode not in (0, 1) and not failures:
            failures = [PeerFailure("peer_tests", f"the suite exited {self.process.returncode}: " + " | ".join(
                (out or "").strip().splitlines()[-3:]))]
        merge_peers(result, rows, records, failures)


@dataclass(frozen=True)
class PeerFailure:
    """A failed or erroring test of the peer suite: its id, the failure's message, and the
    conformance rows it speaks for (its JUnit properties named ``row``, which the suite's
    ``record`` fixture sets from the explainers a test uses)."""

    test: str
    message: str
    rows: tuple[str, ...] = ()


def read_junit_failures(path: Path) -> list[PeerFailure]:
    """The failed or erroring tests of a JUnit XML file, with their ``row`` properties."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    out = []
    for case in root.iter("testcase"):
        rows = tuple(p.get("value", "") for p in case.iter("property") if p.get("name") == "row")
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            out.append(PeerFailure(f"{case.get('classname', '')}::{case.get('name', '')}",
                                   (bad.get("message") or "")[:300], rows))
    return out


def read_peer_results(path: Path) -> list[dict]:
    """The records of ``deviations.json``: a list of objects (or {"results": [...]}), each
    with ``peer`` (the explainer's name), ``row`` (the conformance row it speaks for, or
    null), ``equivalence`` (true where the test states equality, false where it measures a
    convention difference on purpose), ``rule`` (a label for people), ``model``, ``layer``,
    ``max_abs_dev`` and ``max_abs_relevance`` (the scale)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("results", data.get("records"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError("expected a list of objects (or {'results': [...]})")
    return data


UNSTRUCTURED_PEER_RESULTS = (
    "the peer results carry no 'row' field: they were written by an older peer suite, whose free-text labels are "
    "no longer read; regenerate them with `.venv-peers/bin/python -m pytest peer_tests` (or run `nrm-verify check` "
    "with the peers)")
"""The note (and the PEERS cells' detail) for a ``deviations.json`` of the older format."""


def merge_peers(result: Conformance, rows: Sequence[Row], records: list[dict],
                failures: Sequence[PeerFailure | tuple] = ()) -> None:
    """The PEERS column from the peer suite's records and failures:

    * violated — a failed test speaks for the row (its JUnit property ``row``);
    * held — records speak for the row (``row`` is its name), with the worst
      max |Δ| / max |R| over those that state an equivalence (``equivalence`` true);
    * n/a — no record speaks for the row.

    Failures that speak for no row of the table are kept in :attr:`Conformance.failures`
    (they fail the check too). Records without ``row`` (an older suite's file) leave the
    rows not checked, with a note to regenerate them."""
    failures = [f if isinstance(f, PeerFailure) else PeerFailure(*f) for f in failures]
    unstructured = any("row" not in r for r in records)
    if unstructured:
        result.notes.append(UNSTRUCTURED_PEER_RESULTS)
    attributed = set()
    for row in rows:
        cell = result.cell(row.name, "PEERS")
        bad = [f for f in failures if row.name in f.rows]
        attributed |= {f.test for f in bad}
        mine = [] if unstructured else [r for r in records if r.get("row") == row.name]
        plain = [r for r in mine if r.get("equivalence") is True]
        for r in plain:
            dev = float(r.get("max_abs_dev", 0.0))
            scale = float(r.get("max_abs_relevance", 0.0) or 0.0)
            rel = dev / scale if scale > 0 else dev
            if cell.deviation is None or rel > cell.deviation:
                cell.deviation = rel
        peers = sorted({str(r.get("peer", "?")) for r in mine})
        cell.cases = len(plain)
        if bad:
            cell.status = VIOLATED
            cell.detail = "; ".join(f"{f.test}: {f.message}" for f in bad[:3])
        elif unstructured:
            cell.status, cell.detail = NOT_CHECKED, UNSTRUCTURED_PEER_RESULTS
        elif mine:
            cell.status = HELD
            cell.detail = f"equal to {', '.join(peers)} on {len(plain)} comparison(s) (max |Δ| / max |R| " \
                          f"{cell.deviation if cell.deviation is not None else 0.0:.2g})"
        else:
            cell.status = NOT_APPLICABLE
            cell.detail = "no peer comparison for this rule or preset"
    for f in failures:
        if f.test not in attributed:
            result.failures.append(f"peer suite: {f.test}: {f.message}")


# -- the whole check -----------------------------------------------------------------------------
def checks_for(row: Row, laws_wanted: Sequence[str] | None = None) -> tuple[list[Check], dict[str, str]]:
    """The checks that apply to ``row`` and, per column, why none applies."""
    usable, reasons = [], {}
    shown = set(columns())
    for check in catalogue.checks():
        if check.law not in shown:
            continue
        if laws_wanted and check.law not in laws_wanted:
            continue
        why = applies(check, row)
        if why:
            reasons.setdefault(check.law, why)
        else:
            usable.append(check)
    for check in usable:
        reasons.pop(check.law, None)
    return usable, reasons


def check(only: Sequence[str] | None = None, *, rows: Sequence[Row] | None = None, profile: str = "ci",
          examples: int | None = None, symbolic: bool = True, peers: bool = True,
          progress: Callable[[str, int, int], None] | None = None, symbolic_timeout: float = 600.0,
          peer_timeout: float = 900.0) -> Conformance:
    """The conformance table: ``only`` names rows (rules or presets, case-insensitive);
    ``rows`` replaces the built-in rows (e.g. ``[Row.of_rule(MyRule())]``); ``examples``
    cases per row (default: the profile's); ``progress(label, done, total)`` is called
    before each row and before waiting for the symbolic proofs and the peer suite;
    ``symbolic_timeout`` bounds the symbolic proofs (seconds from the start: they run
    beside the search), ``peer_timeout`` the wait for the peer suite after the search."""
    start = time.perf_counter()
    chosen = select_rows(only, rows)
    hyp = search_settings(profile, examples)
    result = Conformance([r.name for r in chosen], {r.name: r.kind for r in chosen}, profile=profile,
                         examples=hyp.max_examples)
    sym = SymbolicProofs(chosen, symbolic_timeout) if symbolic else None
    peer_job = PeerJob(peers)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only add start-up cost
    try:
        for n, row in enumerate(chosen):
            if progress:
                progress(row.name, n, len(chosen))
            t0 = time.perf_counter()
            usable, reasons = checks_for(row)
            for column, why in reasons.items():
                cell = result.cell(row.name, column)
                cell.status, cell.detail = NOT_APPLICABLE, why
            tallies = search_row(row, usable, hyp)
            _fill_search(result, row, usable, tallies, profile, hyp.max_examples)
            result.seconds[f"search {row.name}"] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    result.seconds["search"] = sum(v for k, v in result.seconds.items() if k.startswith("search "))
    if sym is not None:
        if progress:
            progress("symbolic proofs (waiting for the child process)", len(chosen), len(chosen))
        sym.collect(result)
    else:
        result.sources["symbolic"] = "not run (--no-symbolic)"
    if progress and peer_job.process is not None:
        progress("peer suite (waiting for .venv-peers)", len(chosen), len(chosen))
    peer_job.collect(result, chosen, peer_timeout)
    result.sources["search"] = f"hypothesis, profile {profile!r}, {hyp.max_examples} cases per row"
    result.seconds["total"] = time.perf_counter() - start
    return result


__all__ = ["check", "Conformance", "Cell", "Row", "default_rows", "select_rows", "columns", "titles", "STATUSES",
           "PROVED", "HELD", "VIOLATED", "NOT_APPLICABLE", "NOT_CHECKED", "merge_symbolic",
           "read_peer_results", "read_junit_failures", "merge_peers", "PeerFailure",
           "search_row", "checks_for"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `nrm-verify check`")
