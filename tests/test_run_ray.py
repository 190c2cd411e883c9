"""The Ray engine (issue 16, items 4 and 5): on a local two-worker Ray started and stopped by
the test, a run gives the local engine's folder bitwise (rows, arrays, reductions), written
by Ray Data's write tasks; a worker
process that dies mid-batch is replaced, its batch done again, and nothing is lost or
duplicated; a run interrupted on the local engine resumes on Ray to the same folder.

Ray is the ``ray`` extra (``pip install 'nrm-verify[ray]'``, in the ``test`` extra); outside
CI the tests skip where it is not installed, in CI they fail."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import nrm
from nrm_verify.report.dataset import run
from nrm_verify.report.dataset.sources import TensorSource

try:
    import ray
except ModuleNotFoundError:
    ray = None
    if os.environ.get("CI"):
        raise
    pytest.skip("Ray is not installed (pip install 'nrm-verify[ray]'); CI installs it and runs these",
                allow_module_level=True)

from test_run_local import Interrupting, folder_state  # noqa: E402

from nrm_verify.zoo.models import small_cnn  # noqa: E402

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
KW = dict(rules=nrm.presets.EpsilonGammaFlat(), layers=["input", "features.3"], full=["input"],
          conditional={"h2": ("input", nrm.At("features.3", channels=[2]))}, laws=["L1"], batch_size=4,
          progress=False)


@pytest.fixture(scope="module")
def local_ray():
    """Two CPUs, workers of half a CPU each (so that two workers and Ray Data's read task fit)."""
    path = os.pathsep.join([str(ROOT), str(TESTS)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data():
    return torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(3))


class DyingOnce(TensorSource):
    """A tensor's samples; the first Ray worker to read row ``row`` dies there (os._exit), as
    a killed worker process would; the marker file says it happened."""

    def __init__(self, x, marker: str, row: int):
        super().__init__(x)
        self.marker, self.row = marker, row

    def load(self, i):
        if i == self.row and os.getpid() != self.driver and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().load(i)


def test_ray_gives_the_local_folder_bitwise(local_ray, data, tmp_path):
    model = small_cnn(seed=1)
    local = run(model, Interrupting(data), tmp_path / "local", **KW)
    on_ray = run(model, Interrupting(data), tmp_path / "ray", engine="ray", concurrency=2, worker_cpus=0.5, **KW)
    assert (on_ray.written, on_ray.errors) == (12, 0)
    assert folder_state(tmp_path / "ray") == folder_state(tmp_path / "local")
    assert on_ray.reductions.to_dict() == local.reductions.to_dict()


def test_ray_data_write_tasks_commit_the_batches_not_the_driver(local_ray, data, tmp_path, monkeypatch):
    """Every commit runs in a process other than the driver's: the Datasink's ``write_part``
    (pickled with it to the write tasks) asserts so before committing."""
    from nrm_verify.report.dataset import ray_engine

    driver, real = os.getpid(), ray_engine.write_part

    def elsewhere(sink, part):
        assert os.getpid() != driver, "the driver committed a batch"
        return real(sink, part)

    monkeypatch.setattr(ray_engine, "write_part", elsewhere)
    model = small_cnn(seed=1)
    run(model, Interrupting(data), tmp_path / "local", **KW)
    on_ray = run(model, Interrupting(data), tmp_path / "ray", engine="ray", concurrency=2, worker_cpus=0.5, **KW)
    assert on_ray.written == 12 and len(list((tmp_path / "ray" / "samples").glob("part-*.parquet"))) == 3
    assert folder_state(tmp_path / "ray") == folder_state(tmp_path / "local")


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(local_ray, data, tmp_path):
    model = small_cnn(seed=1)
    run(model, Interrupting(data), tmp_path / "local", **KW)
    source = DyingOnce(data, str(tmp_path / "died"), row=5)
    source.driver = os.getpid()
    result = run(model, source, tmp_path / "ray", engine="ray", concurrency=2, worker_cpus=0.5, **KW)
    assert (tmp_path / "died").exists()  # a worker did die
    ids = pq.read_table(tmp_path / "ray" / "samples").column("id").to_pylist()
    assert sorted(ids, key=int) == [str(i) for i in range(12)] and result.errors == 0
    assert folder_state(tmp_path / "ray") == folder_state(tmp_path / "local")


class Slow(TensorSource):
    """A tensor's samples, each read in 20 ms (a run long enough to interrupt)."""

    def load(self, i):
        import time

        time.sleep(0.02)
        return super().load(i)


def test_ctrl_c_stops_a_ray_run_and_the_rerun_completes_it(local_ray, tmp_path):
    """SIGINT to the driver once two batches are committed: KeyboardInterrupt, status
    "interrupted", Ray Data's execution stopped (at most the write tasks already running
    commit after it, then nothing); the rerun skips what was committed and gives the folder of
    an uninterrupted run."""
    import json
    import signal
    import threading
    import time

    x = torch.randn(160, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    model, cut = small_cnn(seed=1), tmp_path / "cut"
    run(model, x, tmp_path / "whole", **KW)

    def parts():
        return len(list((cut / "samples").glob("part-*.parquet"))) if (cut / "samples").exists() else 0

    def interrupt():
        while parts() < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run(model, Slow(x), cut, engine="ray", concurrency=2, worker_cpus=0.5, **KW)
    assert json.loads((cut / "manifest.json").read_text())["status"] == "interrupted"
    at_interrupt = parts()
    time.sleep(3)
    assert at_interrupt <= parts() <= at_interrupt + 2 < 40  # two write tasks may finish; nothing starts after
    committed = parts()
    resumed = run(model, x, cut, engine="ray", concurrency=2, worker_cpus=0.5, **KW)
    assert (resumed.skipped, resumed.written) == (4 * committed, 160 - 4 * committed)
    assert folder_state(cut) == folder_state(tmp_path / "whole")


def test_a_local_run_interrupted_resumes_on_ray(local_ray, data, tmp_path):
    model = small_cnn(seed=1)
    run(model, Interrupting(data), tmp_path / "whole", **KW)
    with pytest.raises(KeyboardInterrupt):
        run(model, Interrupting(data, stop=6), tmp_path / "cut", **KW)
    resumed = run(model, Interrupting(data), tmp_path / "cut", engine="ray", concurrency=2, worker_cpus=0.5, **KW)
    assert (resumed.skipped, resumed.written) == (4, 8)
    assert folder_state(tmp_path / "cut") == folder_state(tmp_path / "whole")


def test_the_command_on_ray_writes_what_the_local_command_writes(data, tmp_path):
    """``nrm-verify run --engine ray`` starts and stops its own local Ray (no ``--address``)."""
    import subprocess
    import sys

    torch.save(data, tmp_path / "data.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "nrm_verify.commands", "run", str(tmp_path / "data.pt"), "--model",
            "nrm_verify.zoo.models:small_cnn()", "--batch-size", "4", "--quiet"]
    run(small_cnn(), data, tmp_path / "local", rules=nrm.presets.EpsilonGammaFlat(), full=["input"], batch_size=4,
        progress=False)  # what the command does by default, in this process
    on_ray = subprocess.run(argv + ["--out", str(tmp_path / "ray"), "--engine", "ray", "--concurrency", "2",
                                    "--worker-cpus", "0.5"], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert on_ray.returncode == 0, on_ray.stderr[-2000:]
    assert "12 explained now" in on_ray.stdout
    rows = [pq.read_table(tmp_path / f / "samples").sort_by("row").to_pylist() for f in ("local", "ray")]
    assert rows[0] == rows[1]


# -- compare_run on Ray (issue 16, items 4 and 6: the run's Parquet rows read by Ray Data) ------------------------

@pytest.fixture(scope="module")
def perturbed_record(tmp_path_factory):
    """A run of small_cnn over 14 inputs (row 2 NaN: an error row) with the input heatmaps, sample 3's
    heatmap then scaled by 1.5 (deviation 1/3) and one entry of sample 9's moved by 1 % of its largest."""
    import numpy as np
    import zarr

    folder = tmp_path_factory.mktemp("compare")
    x = torch.randn(14, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    x[2] = float("nan")
    torch.save(x, folder / "x.pt")
    run(small_cnn(seed=0), x, folder / "run", rules=nrm.presets.EpsilonGammaFlat(), layers=["input"],
        full=["input"], laws=["L1"], batch_size=4, progress=False)
    heat = zarr.open_group(str(folder / "run" / "arrays.zarr"), mode="a")["marginal/input"]
    heat[3] = np.asarray(heat[3]) * 1.5
    nine = np.asarray(heat[9])
    nine[0, 4, 4] += 0.01 * np.abs(nine).max()
    heat[9] = nine
    return folder, x


def same_comparison(a, b) -> None:
    """Two comparisons of one record: the same samples, verdicts, worst list and skipped rows;
    the deviations to round-off (the engines batch differently)."""
    assert [(s.id, s.row, s.ok) for s in a.samples] == [(s.id, s.row, s.ok) for s in b.samples]
    assert [s.id for s in a.worst[:2]] == [s.id for s in b.worst[:2]] == ["3", "9"]
    assert (a.skipped, a.quantity, len(a.arrays)) == (b.skipped, b.quantity, len(b.arrays))
    for s, t in zip(a.samples, b.samples):
        assert t.deviation == pytest.approx(s.deviation, rel=1e-6, abs=1e-6)


def test_compare_on_ray_reads_the_rows_with_ray_data_and_equals_the_local_comparison(local_ray, perturbed_record,
                                                                                    monkeypatch):
    """The run's Parquet parts are read by ``ray.data.read_parquet``; the explainer runs in the
    Ray workers, never in the driver; the comparison is the local engine's."""
    from nrm_verify.report.dataset import compare_run

    folder, x = perturbed_record
    local = compare_run(folder / "run", small_cnn(seed=0), x, "nrm:EpsilonGammaFlat", worst=3, batch_size=4)
    reads, real = [], ray.data.read_parquet

    def spy(paths, **kw):
        reads.append(paths)
        return real(paths, **kw)

    monkeypatch.setattr(ray.data, "read_parquet", spy)
    pids = folder / "pids"
    pids.mkdir(exist_ok=True)

    def where(model, x, target):  # a closure: shipped to the workers with cloudpickle
        (pids / str(os.getpid())).write_text("")
        return nrm.explain(model, x, target, rules=nrm.presets.EpsilonGammaFlat()).marginal("input")

    on_ray = compare_run(folder / "run", small_cnn(seed=0), x, where, worst=3, batch_size=3, engine="ray",
                         concurrency=2, worker_cpus=0.5)
    assert reads == [str(folder / "run" / "samples")]
    assert {int(p.name) for p in pids.iterdir()} and os.getpid() not in {int(p.name) for p in pids.iterdir()}
    same_comparison(local, on_ray)
    assert on_ray.skipped == ["2"] and len(on_ray.samples) == 13 and on_ray.exit_code == 1
    spec = compare_run(folder / "run", small_cnn(seed=0), x, "nrm:EpsilonGammaFlat", worst=3, engine="ray",
                       concurrency=1, worker_cpus=0.5)
    same_comparison(local, spec)


def test_compare_on_ray_of_a_relevance_explainer(local_ray, perturbed_record):
    from nrm_verify.peers import NRMExplainer
    from nrm_verify.report.dataset import compare_run

    folder, x = perturbed_record
    explainer = NRMExplainer(nrm.presets.EpsilonGammaFlat())
    local = compare_run(folder / "run", small_cnn(seed=0), x, explainer, worst=2, batch_size=5)
    on_ray = compare_run(folder / "run", small_cnn(seed=0), x, explainer, worst=2, batch_size=5, engine="ray",
                         concurrency=2, worker_cpus=0.5)
    assert on_ray.quantity == local.quantity == "relevance"
    same_comparison(local, on_ray)


@pytest.mark.parametrize("options, words", [
    (dict(engine="spark"), "engine= takes one of"),
    (dict(engine=["ray"]), "engine= takes one of"),
    (dict(engine="ray", concurrency=0), "concurrency="),
    (dict(engine="ray", worker_cpus=float("nan")), "worker_cpus="),
    (dict(engine="ray", worker_gpus=-1), "worker_gpus="),
    (dict(engine="ray", address=7), "address="),
    (dict(batch_size=True), "batch_size="),
])
def test_compare_refuses_bad_engine_options_before_starting_anything(perturbed_record, options, words):
    from nrm_verify.report.dataset import SpecError, compare_run

    folder, x = perturbed_record
    started = ray.is_initialized()
    with pytest.raises(SpecError, match=words):
        compare_run(folder / "run", small_cnn(seed=0), x, "nrm:EpsilonGammaFlat", **options)
    assert ray.is_initialized() == started


def test_snapshot_compare_of_a_run_folder_on_ray(perturbed_record, tmp_path):
    """``nrm-verify snapshot compare RUN --engine ray`` starts and stops its own local Ray and
    reports what the local engine reports."""
    import json
    import subprocess
    import sys

    folder, _ = perturbed_record
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "nrm_verify.commands", "snapshot", "compare", str(folder / "run"), "--model",
            "nrm_verify.zoo.models:small_cnn()", "--data", str(folder / "x.pt"), "--explainer",
            "nrm:EpsilonGammaFlat", "--worst", "2"]
    out = {}
    for engine in ("local", "ray"):
        done = subprocess.run(argv + ["--out", str(tmp_path / engine), "--json", str(tmp_path / f"{engine}.json"),
                                      "--engine", engine, "--concurrency", "2", "--worker-cpus", "0.5"],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert done.returncode == 1, done.stderr[-2000:]  # samples 3 and 9 beyond tolerance
        out[engine] = json.loads((tmp_path / f"{engine}.json").read_text())
    assert [w["id"] for w in out["ray"]["worst"]] == [w["id"] for w in out["local"]["worst"]] == ["3", "9"]
    assert (out["ray"]["failures"], out["ray"]["samples"], out["ray"]["skipped"]) == (2, 13, ["2"])
