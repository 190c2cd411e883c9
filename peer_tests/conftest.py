"""Peer-equivalence suite: nrm against zennit, captum and zennit-crp (``docs/peers.md``).

Runs only in ``.venv-peers`` (``bash scripts/setup-peers.sh``; then
``.venv-peers/bin/python -m pytest peer_tests -q``). Every peer result is computed by an
:class:`~nrm_verify.peers.Explainer`; every comparison is in float64 and records its largest
absolute deviation with the explainer's ``peer`` and ``row`` and whether the test states an
equivalence. At the end of the session the records are written to
``peer_tests/results/deviations.json``, the table of ``docs/peers.md`` and the PEERS column
of ``nrm-verify check``. The rows a test speaks for are also its JUnit properties ``row``,
so that ``check`` attributes a failed test to its rows.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest
import torch

from nrm_verify.peers import Explainer
from nrm_verify.peers.explainer import check_row

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # `import cases` from every test module

RESULTS = pathlib.Path(os.environ.get("NRM_PEER_RESULTS")
                       or pathlib.Path(__file__).parent / "results" / "deviations.json")
"""Where the records go: the committed file, or ``$NRM_PEER_RESULTS`` (``nrm-verify check`` runs part of
the suite and reads its records from a file of its own)."""
_RECORDS: list[dict] = []


def pytest_configure(config):
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster for these sizes


class Recorder:
    """Compare an nrm tensor with a peer explainer's and keep the largest absolute deviation.

    ``record(explainer, label, model, ours, theirs, what="input")`` records a comparison
    that the test states to be an equivalence; ``record.difference(…)`` one that measures a
    convention difference on purpose. Each record carries ``peer`` = ``explainer.name`` and
    ``row`` = ``explainer.row`` (``row=`` overrides it where the nrm side is not the row's
    rules). ``record.uses(explainer)`` returns the explainer and marks the test as speaking
    for its row (a JUnit property), so that a test failing before it records is attributed.
    """

    def __init__(self, node):
        self.node = node

    def uses(self, explainer: Explainer) -> Explainer:
        self._speaks_for(explainer.row)
        return explainer

    def _speaks_for(self, row: str | None) -> None:
        if row is not None and ("row", row) not in self.node.user_properties:
            self.node.user_properties.append(("row", row))

    def __call__(self, explainer: Explainer, label: str, model: str, ours: torch.Tensor, theirs: torch.Tensor,
                 what: str = "input", row=...) -> float:
        return self._record(explainer, label, model, ours, theirs, what, row, equivalence=True)

    def difference(self, explainer: Explainer, label: str, model: str, ours: torch.Tensor, theirs: torch.Tensor,
                   what: str = "input", row=...) -> float:
        return self._record(explainer, label, model, ours, theirs, what, row, equivalence=False)

    def _record(self, explainer, label, model, ours, theirs, what, row, equivalence: bool) -> float:
        assert isinstance(explainer, Explainer), f"record() takes the peer's Explainer, got {explainer!r}"
        peer = explainer.name
        row = explainer.row if row is ... else check_row(row)  # a row of the table, or None
        self._speaks_for(row)
        ours = ours.detach().reshape(-1).double()
        theirs = theirs.detach().reshape(-1).double()
        assert ours.shape == theirs.shape, f"{what}: nrm has {ours.numel()} values, {peer} {theirs.numel()}"
        assert bool(torch.isfinite(theirs).all()), f"{peer} gave non-finite relevance at {what}"
        dev = float((ours - theirs).abs().max())
        scale = float(ours.abs().max())
        _RECORDS.append({"peer": peer, "row": row, "equivalence": equivalence, "rule": label, "model": model,
                         "layer": what, "max_abs_dev": dev, "max_abs_relevance": scale})
        return dev


@pytest.fixture
def record(request) -> Recorder:
    return Recorder(request.node)


def pytest_sessionfinish(session, exitstatus):
    if not _RECORDS:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(_RECORDS, key=lambda r: (r["peer"], r["rule"], r["model"], r["layer"]))
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
