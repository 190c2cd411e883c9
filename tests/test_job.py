"""The main job, ``examples/vgg16_job.py``, on a small image (32×32: the same network,
every layer down to 1×1 after the last max-pool)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).resolve().parents[1] / "examples" / "vgg16_job.py"
LAYERS = ["input", "features.0", "features.4", "features.28", "features.30", "avgpool", "classifier.0",
          "classifier.6"]


def _load_job():
    spec = importlib.util.spec_from_file_location("vgg16_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_job_runs_as_a_script_and_reports_ok():
    run = subprocess.run([sys.executable, str(JOB), "--size", "32", "--threads", "2"],
                         capture_output=True, text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 0, f"exit {run.returncode}\n{out}\n{run.stderr}"
    assert "Σ_j m_l(j)" in out and "m_l(⊥)" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0] in LAYERS}
    assert set(rows) == set(LAYERS), f"missing rows: {set(LAYERS) - set(rows)}"
    for name, row in rows.items():
        real, absorbed, total = map(float, row[-3:])
        assert total == pytest.approx(1.0, abs=1e-4), name
        assert real + absorbed == pytest.approx(total, abs=1e-7), name
    assert re.search(r"Joint μ\(X_features\.21 ∈ channel i, X_features\.28 ∈ channel k\)", out)
    assert "shape (512, 512)" in out
    assert len(re.findall(r"^\s+\d\. i = +\d+, k = +\d+: ", out, flags=re.M)) == 5
    centre = float(re.search(r"μ\(input ∈ centre 16×16 \| features\.28 channel \d+\) = (\S+)", out).group(1))
    rest = float(re.search(r"μ\(complement +\| features\.28 channel \d+\) = (\S+)", out).group(1))
    assert centre + rest == pytest.approx(1.0, abs=1e-5)
    assert re.search(r"wall time: build [\d.]+ s, explain [\d.]+ s", out)
    assert out.rstrip().splitlines()[-1].startswith("OK: every layer's mass sums to 1")


def test_job_with_another_preset(capsys):
    job = _load_job()
    assert job.main(["--size", "32", "--rules", "EpsilonAlpha2Beta1", "--target", "7"]) == 0
    out = capsys.readouterr().out
    assert "RuleMap(EpsilonAlpha2Beta1(" in out and "target class 7:" in out
    deviation = float(re.search(r"max \|Σ_j m_l\(j\) \+ m_l\(⊥\) − 1\| / max\(1, max_l Σ_j \|m_l\(j\)\| \+ "
                                r"\|m_l\(⊥\)\|\) over 23 layers = (\S+)", out).group(1))
    assert deviation < 1e-4
    assert out.rstrip().splitlines()[-1].startswith("OK")


def test_job_fails_when_normalization_is_off(capsys, monkeypatch):
    """The exit status follows the check: with an impossible tolerance the job says FAILED."""
    job = _load_job()
    import torch

    monkeypatch.setitem(job.TOLERANCE, torch.float32, -1.0)
    assert job.main(["--size", "32"]) == 1
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("FAILED: normalization deviates")


def test_job_rejects_a_too_small_image(capsys):
    job = _load_job()
    assert job.main(["--size", "16"]) == 2
    assert "at least 32" in capsys.readouterr().err
