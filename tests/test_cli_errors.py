"""The command line's promise, sub-command by sub-command: a bad argument (a wrong type, a
negative number, a missing file, a folder where a file belongs, an unknown name) is exit
status 2 and exactly one line on stderr, never a traceback (issue 12, items 10 and 11).

Every case runs the real ``nrm-verify`` in a subprocess, as a user's shell would. Paths are
made unwritable by putting them under a *file* (the tests may run as root, for whom a
read-only folder is writable)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = "nrm_verify.zoo.models:small_cnn()"
EXPLAIN = ["explain", "--model", SMALL, "--size", "16", "--quiet"]

CASES = [
    # (id, argv with {tmp}, {file} = an existing plain file, {snap} = a recorded snapshot; words in stderr)
    # -- explain
    ("explain-rule-with-a-string", EXPLAIN + ["--rules", "Epsilon('a')", "--out", "{tmp}/o"],
     ("--rules", "epsilon must be a real number", "str")),
    ("explain-box-that-does-not-fit", EXPLAIN + ["--rules", "ZBox([0,1],[2])", "--out", "{tmp}/o"],
     ("--rules", "ZBox", "first layer")),
    ("explain-preset-box-of-the-wrong-shape", EXPLAIN + ["--rules", "EpsilonGammaBox([0,1],[2])", "--out", "{tmp}/o"],
     ("--rules", "does not fit one input sample", "(3, 16, 16)")),
    ("explain-infinite-epsilon", EXPLAIN + ["--rules", "Epsilon(1e999)", "--out", "{tmp}/o"], ("finite", "inf")),
    ("explain-empty-box", EXPLAIN + ["--rules", "EpsilonGammaBox(2, -2)", "--out", "{tmp}/o"],
     ("low must be <= high",)),
    ("explain-unknown-rule", EXPLAIN + ["--rules", "Nope", "--out", "{tmp}/o"], ("unknown name 'Nope'",)),
    ("explain-negative-threads", EXPLAIN + ["--threads", "-3", "--out", "{tmp}/o"], ("--threads", "at least 1")),
    ("explain-threads-not-a-number", EXPLAIN + ["--threads", "two"], ("--threads", "whole number", "'two'")),
    ("explain-size-zero", EXPLAIN + ["--size", "0"], ("--size", "at least 1")),
    ("explain-negative-top", EXPLAIN + ["--top", "-1"], ("--top",)),
    ("explain-negative-target", EXPLAIN + ["--target", "-1"], ("--target", "0 or more")),
    ("explain-out-is-a-file", EXPLAIN + ["--out", "{file}"], ("--out", "cannot create the folder")),
    ("explain-out-under-a-file", EXPLAIN + ["--out", "{file}/sub"], ("--out", "cannot create the folder")),
    ("explain-missing-input", EXPLAIN + ["--input", "{tmp}/nope.png", "--out", "{tmp}/o"], ("no such file",)),
    ("explain-input-is-a-folder", EXPLAIN + ["--input", "{tmp}", "--out", "{tmp}/o"], ("no such file",)),
    ("explain-missing-model-file", ["explain", "--model", "{tmp}/nope.py:Net", "--out", "{tmp}/o"],
     ("--model", "no such file")),
    ("explain-unknown-model-object", ["explain", "--model", "nrm_verify.zoo.models:nope", "--out", "{tmp}/o"],
     ("cannot load",)),
    ("explain-unknown-layer", EXPLAIN + ["--joint", "features.0", "nope", "--out", "{tmp}/o"], ("unknown layer",)),
    # -- check-rule
    ("check-rule-negative-examples", ["check-rule", "nrm.rules:Epsilon", "--max-examples", "-5"],
     ("--max-examples", "at least 1")),
    ("check-rule-examples-not-a-number", ["check-rule", "nrm.rules:Epsilon", "--max-examples", "many"],
     ("--max-examples", "whole number")),
    ("check-rule-json-in-a-missing-folder", ["check-rule", "nrm.rules:Epsilon", "--json", "{tmp}/no/r.json"],
     ("--json", "does not exist")),
    ("check-rule-json-is-a-folder", ["check-rule", "nrm.rules:Epsilon", "--json", "{tmp}"], ("--json", "folder")),
    ("check-rule-json-under-a-file", ["check-rule", "nrm.rules:Epsilon", "--json", "{file}/r.json"], ("--json",)),
    ("check-rule-unknown-law", ["check-rule", "nrm.rules:Epsilon", "--law", "L99"], ("unknown law 'L99'", "L1", "INV")),
    ("check-rule-lowercase-typo", ["check-rule", "nrm.rules:Epsilon", "--law", "l1", "--law", "l7x"],
     ("unknown law 'l7x'",)),
    ("check-rule-negative-symbolic-timeout", ["check-rule", "nrm.rules:Epsilon", "--symbolic-timeout", "-1"],
     ("--symbolic-timeout", "> 0")),
    ("check-rule-zero-search-timeout", ["check-rule", "nrm.rules:Epsilon", "--search-timeout", "0"],
     ("--search-timeout",)),
    ("check-rule-nan-timeout", ["check-rule", "nrm.rules:Epsilon", "--search-timeout", "nan"], ("--search-timeout",)),
    ("check-rule-no-rule", ["check-rule"], ("required", "rule")),
    ("check-rule-not-a-spec", ["check-rule", "notamodule"], ("'notamodule'", "package.module:RuleClass")),
    ("check-rule-missing-module", ["check-rule", "no_such_module_xyz:Rule"], ("cannot load",)),
    ("check-rule-missing-file", ["check-rule", "{tmp}/nope.py:Rule"], ("no such file",)),
    ("check-rule-not-a-rule", ["check-rule", "nrm.rules:Part"], ("not an nrm.rules.Rule",)),
    ("check-rule-bad-parameter", ["check-rule", "nrm.rules:Epsilon('0.1')"], ("Epsilon", "real number")),
    ("check-rule-unknown-profile", ["check-rule", "nrm.rules:Epsilon", "--profile", "fast"],
     ("unknown hypothesis profile 'fast'",)),
    # -- check
    ("check-negative-examples", ["check", "--examples", "-1", "--no-peers", "--out", "{tmp}/r"], ("--examples",)),
    ("check-unknown-row", ["check", "--only", "Nope", "--no-peers", "--out", "{tmp}/r"], ("unknown rule or preset",)),
    ("check-out-is-a-file", ["check", "--only", "Zero", "--no-peers", "--out", "{file}"], ("--out", "not a folder")),
    ("check-bad-rule-spec", ["check", "--rule", "not-a-spec", "--no-peers", "--out", "{tmp}/r"], ("--rule",)),
    ("check-unknown-profile", ["check", "--profile", "fast"], ("invalid choice: 'fast'",)),
    # -- check-layer
    ("check-layer-not-a-kind", ["check-layer", "nrm.rules:Epsilon"], ("subclass of nrm.layers.Kind", "Epsilon")),
    ("check-layer-missing-module", ["check-layer", "no.such.module:Kind"], ("cannot load",)),
    ("check-layer-missing-file", ["check-layer", "{tmp}/nope.py:Kind"], ("cannot load",)),
    ("check-layer-unknown-check", ["check-layer", "nrm.layers.linear:Dense", "--law", "K9"], ("unknown check 'K9'",)),
    ("check-layer-negative-examples", ["check-layer", "nrm.layers.linear:Dense", "--max-examples", "-5"],
     ("--max-examples", "at least 1")),
    ("check-layer-json-in-a-missing-folder", ["check-layer", "nrm.layers.linear:Dense", "--json", "{tmp}/no/r.json"],
     ("--json", "does not exist")),
    ("check-layer-zero-timeout", ["check-layer", "nrm.layers.linear:Dense", "--search-timeout", "0"],
     ("--search-timeout",)),
    # -- prove
    ("prove-unknown-law", ["prove", "--law", "L99"], ("unknown law 'L99'", "L14")),
    ("prove-law-without-a-proof", ["prove", "--law", "L8"], ("unknown law 'L8'",)),
    ("prove-unknown-rule", ["prove", "--rule", "nope"], ("unknown rule 'nope'", "epsilon")),
    ("prove-unknown-architecture", ["prove", "--arch", "9-9"], ("unknown architecture '9-9'", "2-2-1")),
    ("prove-zero-workers", ["prove", "--workers", "0"], ("--workers", "at least 1")),
    ("prove-output-is-a-folder", ["prove", "--output", "{tmp}"], ("--output", "folder")),
    # -- bench
    ("bench-negative-threads", ["bench", "--quick", "--threads", "-3"], ("--threads must be at least 1",)),
    ("bench-size-too-small", ["bench", "--quick", "--size", "8"], ("--size must be at least 32",)),
    ("bench-output-is-a-folder", ["bench", "--quick", "--output", "{tmp}"], ("--output", "folder")),
    ("bench-output-under-a-file", ["bench", "--quick", "--output", "{file}/x.json"], ("--output", "not a folder")),
    ("bench-negative-child-timeout", ["bench", "--quick", "--child-timeout", "-1"], ("--child-timeout",)),
    # -- snapshot record / compare
    ("snapshot-record-under-a-file", ["snapshot", "record", "{file}/snap", "-e", "nrm:Zero()", "--cases", "quick"],
     ("cannot write the snapshot", "not a folder")),
    ("snapshot-record-negative-rtol", ["snapshot", "record", "{tmp}/s", "-e", "nrm:Zero()", "--rtol", "-1"],
     ("--rtol", ">= 0")),
    ("snapshot-record-missing-explainer-file", ["snapshot", "record", "{tmp}/s", "-e", "{tmp}/nope.py:f"],
     ("no such file",)),
    ("snapshot-record-missing-cases-module", ["snapshot", "record", "{tmp}/s", "-e", "nrm:Zero()", "--cases",
                                              "no_such_module_xyz:make"], ("cannot load the cases",)),
    ("snapshot-record-no-explainer", ["snapshot", "record", "{tmp}/s"], ("give at least one --explainer",)),
    ("snapshot-record-bad-rule", ["snapshot", "record", "{tmp}/s", "-e", "nrm:Gamma(float('nan'))"],
     ("only literal arguments",)),
    ("snapshot-record-infinite-rule", ["snapshot", "record", "{tmp}/s", "-e", "nrm:Gamma(1e999)"], ("finite",)),
    ("snapshot-compare-missing", ["snapshot", "compare", "{tmp}/nope"], ("no snapshot file",)),
    ("snapshot-compare-json-in-a-missing-folder", ["snapshot", "compare", "{snap}", "--json", "{tmp}/no/c.json"],
     ("--json", "does not exist")),
    ("snapshot-compare-nan-atol", ["snapshot", "compare", "{snap}", "--atol", "nan"], ("--atol",)),
    ("snapshot-compare-unknown-case", ["snapshot", "compare", "{snap}", "--case", "resnet"], ("no case named",)),
    ("snapshot-no-action", ["snapshot"], ("required",)),
    # -- the dispatcher
    ("unknown-command", ["explode"], ("invalid choice: 'explode'",)),
    ("no-command", [], ("required",)),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("cli")
    plain = base / "plain.txt"
    plain.write_text("a file, not a folder\n")
    snap = ROOT / "tests" / "snapshots" / "nrm-core"
    return {"file": str(plain), "snap": str(snap)}


def run_cli(*argv: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nrm_verify.commands", *argv], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_argument_is_one_line_and_exit_2(argv, words, tmp_path, places):
    subs = {"{tmp}": str(tmp_path), **{f"{{{k}}}": v for k, v in places.items()}}
    args = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        args.append(a)
    start = time.perf_counter()
    run = run_cli(*args)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith("nrm-verify"), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert time.perf_counter() - start < 60, "a usage error must be found before the work starts"


def test_check_rule_json_into_a_missing_folder_fails_before_the_run(tmp_path):
    run = run_cli("check-rule", "nrm.rules:Epsilon", "--no-symbolic", "--json", str(tmp_path / "no" / "r.json"))
    assert run.returncode == 2 and run.stdout == ""  # the report (printed after the search) never came


def test_law_keys_ignore_case(tmp_path):
    out = tmp_path / "r.json"
    run = run_cli("check-rule", "nrm.rules:Epsilon", "--law", "l1", "--law", "inv", "--no-symbolic",
                  "--max-examples", "2", "--json", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "L1 normalization" in run.stdout and "INV batch invariance" in run.stdout
    assert "L7" not in run.stdout and "held on" in run.stdout
