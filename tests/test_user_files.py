"""A user's own files load as they would run, without ``PYTHONPATH=.`` (issue 12, item 12),
and snapshot case builders get the ``torch.dtype`` the docs describe, with a failing
builder named as the culprit (item 13). Every case runs the real command in a subprocess
from a folder of the user's, with PYTHONPATH cleared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nrm_verify.report import snapshots as R

HELPERS = '''
def weight(ops, w):
    return w
'''

RULE = '''
from helpers import weight          # a sibling of this file
from nrm.rules import Part, Rule, Share, identity


class SiblingEpsilon(Rule):
    def __init__(self):
        super().__init__(stabilizer=1e-6)

    def __repr__(self):
        return "SiblingEpsilon()"

    def shares(self):
        return (Share((Part(identity, weight),), identity),)
'''

CASES = '''
import torch

from nrm_verify.zoo.models import mlp
from nrm_verify.report.snapshots import SnapshotCase


def tiny(width, dtype):
    assert isinstance(dtype, torch.dtype), f"expected a torch.dtype, got {dtype!r}"
    return mlp([4, width, 2], seed=0, dtype=dtype)  # seeded: the same weights in every process


def broken(width, dtype):
    raise RuntimeError("this builder is broken")


def make():
    return [SnapshotCase("tiny", "mycases:tiny", {"width": 3}, "seeded_normal", {"shape": [1, 4], "seed": 0})]


def make_broken():
    return [SnapshotCase("bad", "mycases:broken", {"width": 3}, "seeded_normal", {"shape": [1, 4], "seed": 0})]
'''

EXPLAINER = '''
import torch
from grad import gradient          # a sibling of this file


def gxi(model, x, target):
    return x * gradient(model, x, target)
'''

GRAD = '''
import torch


def gradient(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    model(x)[:, target].sum().backward()
    return x.grad
'''


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    (root / "rules").mkdir(parents=True)
    (root / "rules" / "helpers.py").write_text(textwrap.dedent(HELPERS))
    (root / "rules" / "my_rule.py").write_text(textwrap.dedent(RULE))
    (root / "mycases.py").write_text(textwrap.dedent(CASES))
    (root / "explain.py").write_text(textwrap.dedent(EXPLAINER))
    (root / "grad.py").write_text(textwrap.dedent(GRAD))
    return root


COMMAND = Path(sys.executable).parent / "nrm-verify"


def nrm_verify(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed console script, as a user types it (``python -m`` would put the current
    directory on sys.path by itself and hide the problem)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([str(COMMAND), *argv], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


def test_a_rule_file_imports_its_sibling(project):
    run = nrm_verify("check-rule", "rules/my_rule.py:SiblingEpsilon", "--law", "L1", "--max-examples", "2",
                     "--no-symbolic", cwd=project)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "held on" in run.stdout


def test_cases_and_builders_from_the_current_directory(project):
    run = nrm_verify("snapshot", "record", "snaps/mine", "-e", "nrm:Zero()", "--cases", "mycases:make", cwd=project)
    assert run.returncode == 0, run.stdout + run.stderr
    manifest = json.loads((project / "snaps" / "mine.json").read_text())
    assert manifest["cases"][0]["model"] == "mycases:tiny" and manifest["cases"][0]["dtype"] == "float64"
    run = nrm_verify("snapshot", "compare", "snaps/mine", cwd=project)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_snapshots_explainer_file_is_found_from_anywhere(project, tmp_path):
    run = nrm_verify("snapshot", "record", "snaps/gxi", "-e", "gxi=explain.py:gxi", "--cases", "quick", cwd=project)
    assert run.returncode == 0, run.stdout + run.stderr
    manifest = json.loads((project / "snaps" / "gxi.json").read_text())
    assert manifest["explainers"] == [{"label": "gxi", "spec": "../explain.py:gxi"}]  # relative to the snapshot
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = nrm_verify("snapshot", "compare", str(project / "snaps" / "gxi"), cwd=elsewhere)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASS  gxi @ mlp" in run.stdout


def test_an_explain_model_file_imports_its_sibling(project):
    (project / "blocks.py").write_text("import torch\n\ndef block():\n    return torch.nn.Linear(4, 3)\n")
    (project / "net.py").write_text("import torch\nfrom blocks import block\n\n"
                                    "def make():\n    return torch.nn.Sequential(block(), torch.nn.ReLU(), "
                                    "torch.nn.Linear(3, 2))\n")
    code = "from nrm_verify.properties.loader import load_object; print(type(load_object('net.py:make()')).__name__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, cwd=project, env=env,
                         timeout=120)  # -P: the current directory is not put on sys.path
    assert run.returncode == 0 and run.stdout.strip() == "Sequential", run.stderr


def test_a_failing_builder_is_named_not_the_explainer(project):
    run = nrm_verify("snapshot", "record", "snaps/bad", "-e", "nrm:Zero()", "--cases", "mycases:make_broken",
                     cwd=project)
    assert run.returncode == 2, run.stdout + run.stderr
    err = run.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "the model builder 'mycases:broken' of case 'bad' raised RuntimeError: this builder is broken" in err
    assert "dtype=torch.float64" in err and "explainer" not in err


def test_builders_receive_a_torch_dtype_as_documented(tmp_path):
    seen = []

    def builder(dtype):
        seen.append(dtype)
        return torch.nn.Sequential(torch.nn.Linear(2, 1)).to(dtype)

    R.MODELS["_test_builder"] = builder
    try:
        model, x = R.SnapshotCase("c", "_test_builder", {}, "seeded_normal", {"shape": [1, 2]}, dtype="float32").build()
    finally:
        del R.MODELS["_test_builder"]
    assert seen == [torch.float32] and x.dtype == torch.float32 and model[0].weight.dtype == torch.float32
    doc = (Path(__file__).resolve().parents[1] / "docs" / "regression.md").read_text(encoding="utf-8")
    assert "builder(**model_kwargs, dtype=torch.float64)" in doc


def test_a_case_that_cannot_be_built_fails_its_comparison_as_the_case(tmp_path):
    snap = tmp_path / "s"
    R.record(snap, {"zero": R.load_explainer("nrm:Zero()")}, cases="quick")
    manifest = json.loads(snap.with_suffix(".json").read_text())
    manifest["cases"][0]["model_kwargs"]["no_such_argument"] = 1
    snap.with_suffix(".json").write_text(json.dumps(manifest))
    report = R.compare(snap, {"zero": R.load_explainer("nrm:Zero()")})
    (bad,) = [r for r in report.results if r.case == "mlp"]
    assert not bad.ok and bad.problems[0].startswith("the case could not be built: the model builder 'mlp'")
    assert "explainer raised" not in bad.problems[0]
