"""The pytest plugin, as a user meets it: ``tests/user_project`` is a user's project (a
rule of their own and a test file that uses the plugin's fixtures and marker). It is run
here with pytest in a subprocess, from a copy in a temporary folder — the plugin comes in
through its ``pytest11`` entry point, as it would for the user — once as it is (it
passes), once with its rule broken (it fails, naming the law), and with the options that
choose profiles and slow tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USER_PROJECT = Path(__file__).resolve().parent / "user_project"
MARKED_LINE = "        return (scale,), qbot  # nrm-verify's test_plugin breaks this line"


@pytest.fixture
def project(tmp_path) -> Path:
    dest = tmp_path / "user_project"
    shutil.copytree(USER_PROJECT, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return dest


def _pytest(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("HYPOTHESIS_PROFILE", "NRM_SLOW")}
    environment.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfs", *args],
                          cwd=project, capture_output=True, text=True, timeout=600, env=environment)


def test_the_user_project_passes(project):
    run = _pytest(project)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed, 1 skipped" in run.stdout
    assert "nrm_slow: a thorough search; run with --nrm-slow" in run.stdout  # the marker's skip reason
    assert "nrm-verify: hypothesis profile 'default'" in run.stdout  # no option, no variable, no ini


def test_the_user_project_fails_when_its_rule_is_broken(project):
    rules = project / "my_rules.py"
    text = rules.read_text(encoding="utf-8")
    assert MARKED_LINE in text
    rules.write_text(text.replace("return (scale,), qbot", "return (scale,), 0 * qbot  # broken: leaks"),
                     encoding="utf-8")
    run = _pytest(project)
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout
    assert "2 failed, 1 passed, 1 skipped" in out, out
    assert "FAILED test_my_explanations.py::test_my_rule_keeps_every_law_on_my_model" in out
    assert "FAILED test_my_explanations.py::test_my_rule_is_sound" in out
    assert "L1 normalization: VIOLATED" in out  # assert_laws names the law
    assert "counterexample for L1" in out  # the validator's report, with its program


def test_slow_tests_run_with_the_option_and_the_thorough_profile(project):
    run = _pytest(project, "--nrm-slow", "-k", "thoroughly", HYPOTHESIS_PROFILE="thorough")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout and "nrm_slow tests enabled" in run.stdout
    assert "nrm-verify: hypothesis profile 'thorough'" in run.stdout  # chosen by the environment


def test_the_option_chooses_the_profile(project):
    run = _pytest(project, "--collect-only", "--hypothesis-profile", "ci", HYPOTHESIS_PROFILE="thorough")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "nrm-verify: hypothesis profile 'ci'" in run.stdout  # the option wins over the variable


def test_an_unknown_profile_is_a_usage_error(project):
    run = _pytest(project, "--collect-only", HYPOTHESIS_PROFILE="no-such-profile")
    assert run.returncode != 0 and "unknown hypothesis profile 'no-such-profile'" in run.stderr + run.stdout
