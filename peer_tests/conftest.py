"""Peer-equivalence suite: nrm against zennit, captum and zennit-crp (``docs/peers.md``).

Runs only in ``.venv-peers`` (``bash scripts/setup-peers.sh``; then
``.venv-peers/bin/python -m pytest peer_tests -q``). Every comparison is in float64 and
records its largest absolute deviation; at the end of the session the records are written
to ``peer_tests/results/deviations.json`` (peer × rule/composite × model → max_abs_dev),
the table of ``docs/peers.md``.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # `import cases` from every test module

RESULTS = pathlib.Path(__file__).parent / "results" / "deviations.json"
_RECORDS: list[dict] = []


def pytest_configure(config):
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster for these sizes


class Recorder:
    """Compare an nrm tensor with a peer's and keep the largest absolute deviation."""

    def __call__(self, peer: str, rule: str, model: str, ours: torch.Tensor, theirs: torch.Tensor,
                 what: str = "input") -> float:
        ours = ours.detach().reshape(-1).double()
        theirs = theirs.detach().reshape(-1).double()
        assert ours.shape == theirs.shape, f"{what}: nrm has {ours.numel()} values, {peer} {theirs.numel()}"
        assert bool(torch.isfinite(theirs).all()), f"{peer} gave non-finite relevance at {what}"
        dev = float((ours - theirs).abs().max())
        scale = float(ours.abs().max())
        _RECORDS.append({"peer": peer, "rule": rule, "model": model, "layer": what,
                         "max_abs_dev": dev, "max_abs_relevance": scale})
        return dev


@pytest.fixture
def record() -> Recorder:
    return Recorder()


def pytest_sessionfinish(session, exitstatus):
    if not _RECORDS:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(_RECORDS, key=lambda r: (r["peer"], r["rule"], r["model"], r["layer"]))
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
