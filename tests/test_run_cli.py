"""``nrm-verify run`` as a user's shell runs it (issue 16, items 1, 5 and 8): a folder of images
in, results out; a bad argument is one line on stderr and exit 2; Ctrl-C (SIGINT) keeps the
finished batches and the same command resumes to the uninterrupted result; without the
``run`` extra the command and the package say what to install."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMALL = "nrm_verify.zoo.models:small_cnn()"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nrm_verify.commands", "run", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=ENV)


def in_process(capsys, *argv: str) -> tuple[int, str, str]:
    """The command's ``main`` in this process (argparse's errors exit by SystemExit): status, stdout, stderr."""
    from nrm_verify.commands.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["run", *argv])
    except SystemExit as e:
        code = e.code
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    from PIL import Image

    base = tmp_path_factory.mktemp("runcli")
    rng = np.random.default_rng(1)
    for k in range(5):
        Image.fromarray(rng.integers(0, 255, (18, 18, 3), dtype=np.uint8)).save(base / f"img{k}.png")
    (base / "plain.txt").write_text("a file")
    torch.save(torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(2)), base / "data.pt")
    torch.save({"weights": 1}, base / "notdata.pt")
    return {"images": str(base), "file": str(base / "plain.txt"), "data": str(base / "data.pt"),
            "notdata": str(base / "notdata.pt")}


def test_a_folder_of_images_in_results_out(places, tmp_path):
    done = cli(places["images"], "--model", SMALL, "--size", "16", "--layers", "input", "features.3",
               "--out", str(tmp_path / "o"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "5 samples" in done.stdout and "5 explained now" in done.stdout and "worst L1 residual" in done.stdout
    rows = pq.read_table(tmp_path / "o" / "samples").sort_by("row").to_pylist()
    assert [r["id"] for r in rows] == [f"img{k}.png" for k in range(5)] and all(r["status"] == "ok" for r in rows)
    again = cli(places["images"], "--model", SMALL, "--size", "16", "--layers", "input", "features.3",
                "--out", str(tmp_path / "o"), "--quiet")
    assert again.returncode == 0 and "0 explained now, 5 already there" in again.stdout


CASES = [
    ("missing data", ["{tmp}/nope", "--out", "{tmp}/o"], ("no such folder or file",)),
    ("data that is not a tensor", ["{notdata}", "--out", "{tmp}/o"], ("holds a dict",)),
    ("negative target", ["{data}", "--target", "-1", "--out", "{tmp}/o"], ("--target", "0 or more")),
    ("target that is a word", ["{data}", "--target", "best", "--out", "{tmp}/o"], ("--target", "'argmax'")),
    ("target out of range", ["{data}", "--target", "99", "--out", "{tmp}/o"], ("TargetError", "10 outputs")),
    ("unknown layer", ["{data}", "--layers", "nope", "--out", "{tmp}/o"], ("UnknownLayerError", "'nope'")),
    ("unknown law", ["{data}", "--laws", "L7", "--out", "{tmp}/o"], ("--laws", "invalid choice")),
    ("zero batch size", ["{data}", "--batch-size", "0", "--out", "{tmp}/o"], ("--batch-size", "at least 1")),
    ("unknown rule", ["{data}", "--rules", "Nope", "--out", "{tmp}/o"], ("--rules", "unknown name 'Nope'")),
    ("missing model", ["{data}", "--model", "no_such_module_xyz:f()", "--out", "{tmp}/o"], ("cannot load",)),
    ("out under a file", ["{data}", "--out", "{file}/sub"], ("OutputFolderError", "cannot write into")),
    ("no out", ["{data}"], ("--out", "required")),
    ("selection at the output", ["{data}", "--selection", "output", "--out", "{tmp}/o"], ("SpecError", "output")),
    ("selection of an unknown layer", ["{data}", "--selection", "nope", "--out", "{tmp}/o"],
     ("UnknownLayerError", "'nope'")),
    ("negative selection draws", ["{data}", "--selection-draws", "-1", "--out", "{tmp}/o"],
     ("--selection-draws", "0 or more")),
    ("negative commit seconds", ["{data}", "--commit-seconds", "-1", "--out", "{tmp}/o"],
     ("--commit-seconds", ">= 0")),
    ("commit seconds not a number", ["{data}", "--commit-seconds", "nan", "--out", "{tmp}/o"],
     ("--commit-seconds", "finite")),
    ("commit seconds a word", ["{data}", "--commit-seconds", "often", "--out", "{tmp}/o"],
     ("--commit-seconds",)),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_argument_is_one_line_and_exit_2(places, tmp_path, capsys, argv, words):
    subs = {"{tmp}": str(tmp_path), **{f"{{{k}}}": v for k, v in places.items()}}
    args = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        args.append(a)
    if "--model" not in args:
        args += ["--model", SMALL]
    code, out, err = in_process(capsys, *args, "--quiet")
    lines = err.strip().splitlines()
    assert code == 2, (code, out[-800:], err[-2000:])
    assert len(lines) == 1 and "Traceback" not in err and lines[0].startswith("nrm-verify run"), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not (tmp_path / "o").exists()


def test_a_second_run_of_other_rules_into_the_same_folder_is_refused(places, tmp_path, capsys):
    code, _, err = in_process(capsys, places["data"], "--model", SMALL, "--out", str(tmp_path / "o"), "--quiet",
                              "--full")
    assert code == 0, err
    before = sorted(p.read_bytes() for p in (tmp_path / "o" / "samples").iterdir())
    code, _, err = in_process(capsys, places["data"], "--model", SMALL, "--rules", "Zero", "--out",
                              str(tmp_path / "o"), "--quiet", "--full")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "RunMismatchError" in err and "another rules" in err
    assert sorted(p.read_bytes() for p in (tmp_path / "o" / "samples").iterdir()) == before


def test_sigint_keeps_the_finished_batches_and_the_same_command_resumes(tmp_path):
    """SIGINT once three batches are committed: whole batches kept, exit 130, and the same command
    resumes to the uninterrupted result. Every batch is its own part (``--commit-seconds 0``), so
    that "three parts" is three batches. 256 samples (128 batches, ≈ 6 s of work after the third)
    so the signal lands while the run is going: with 64 the toy model finished the 29 batches
    left (≈ 1.5 s) before a loaded test process saw the third part, and the run exited 0."""
    n = 256
    data = tmp_path / "data.pt"
    torch.save(torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(2)), data)
    argv = [str(data), "--model", SMALL, "--laws", "L1", "L9", "--batch-size", "2", "--quiet", "--commit-seconds", "0"]
    whole = cli(*argv, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "nrm_verify.commands", "run", *argv, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "samples").glob("part-*.parquet"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "rerun the same command to resume" in err and "Traceback" not in err
    kept = pq.read_table(out / "samples").num_rows
    assert 6 <= kept < n and kept % 2 == 0  # whole batches only
    resumed = cli(*argv, "--out", str(out))
    assert resumed.returncode == 0 and f"{kept} already there" in resumed.stdout, resumed.stderr
    a = pq.read_table(tmp_path / "whole" / "samples").sort_by("row").to_pylist()
    b = pq.read_table(out / "samples").sort_by("row").to_pylist()
    assert len(b) == n and [r["id"] for r in b] == [str(i) for i in range(n)]
    assert a == b
    assert (out / "reductions.json").read_bytes() == (tmp_path / "whole" / "reductions.json").read_bytes()


BLOCKED = """
import os, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in os.environ["NRM_TEST_BLOCKED"].split(","):
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
sys.meta_path.insert(0, Blocker())
import nrm_verify, nrm_verify.report, nrm_verify.laws
try:
    import nrm_verify.report.dataset
except ImportError as e:
    print("IMPORT:", e)
from nrm_verify.commands.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_run_extra_the_package_and_the_command_say_what_to_install(places, tmp_path):
    done = subprocess.run([sys.executable, "-c", BLOCKED, "run", places["data"], "--model", SMALL, "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**ENV, "NRM_TEST_BLOCKED": "pyarrow,zarr"})
    assert done.returncode == 2, done.stderr
    assert "IMPORT: dataset runs need pyarrow, zarr" in done.stdout and "pip install 'nrm-verify[run]'" in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'nrm-verify[run]'" in lines[0] and lines[0].startswith("nrm-verify run")


def test_the_run_extra_is_what_the_package_checks_for_and_ci_installs_it():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    import nrm_verify.report.dataset as dataset

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert [spec.split(">")[0].strip() for spec in extras[dataset.EXTRA]] == list(dataset.REQUIRES)
    assert f"nrm-verify[{dataset.EXTRA}]" in extras["test"]  # scripts/setup.sh and CI install .[test]


def test_engine_ray_without_ray_says_what_to_install(places, tmp_path):
    done = subprocess.run([sys.executable, "-c", BLOCKED, "run", places["data"], "--model", SMALL, "--engine", "ray",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**ENV, "NRM_TEST_BLOCKED": "ray"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "pip install 'nrm-verify[ray]'" in lines[0] and not (tmp_path / "o").exists()
