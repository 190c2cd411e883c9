"""The local Ray that a Ray run starts for itself keeps its write tasks' worker processes
(issue 16, speed): Ray kills idle worker processes beyond one per CPU after a second, so on a
2-CPU machine, where the two explaining actors already hold two processes, every batch's
write task started a fresh process (about 2.5 s of CPU importing torch and nrm on the cores the
actors explain on). ``ray_session(None, workers=…)`` raises that limit for the job's actors
and write tasks.

Own module: the Ray started here is the engine's own (``ray_session``), not the test fixture's
of ``test_run_ray.py``. Skips where Ray is not installed, fails in CI."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

import nrm
from nrm_verify.report.dataset import run

try:
    import ray  # noqa: F401
except ModuleNotFoundError:
    if os.environ.get("CI"):
        raise
    pytest.skip("Ray is not installed (pip install 'nrm-verify[ray]'); CI installs it and runs these",
                allow_module_level=True)

from nrm_verify.report.dataset import ray_engine  # noqa: E402
from nrm_verify.zoo.models import small_cnn  # noqa: E402

TESTS = Path(__file__).resolve().parent


class Slow(torch.utils.data.Dataset):
    """A tensor's samples, each read taking ``pause`` seconds: batches that finish more than a
    second apart, so that a write task's process is idle longer than Ray's default allows."""

    def __init__(self, x, pause: float):
        self.x, self.pause = x, pause

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        time.sleep(self.pause)
        return self.x[i]


def test_a_ray_run_on_its_own_local_ray_reuses_its_write_processes(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    pids.mkdir()
    real = ray_engine.write_part

    def noted(sink, part):  # pickled with the Datasink to the write tasks: each notes its process
        (pids / str(os.getpid())).write_text("")
        return real(sink, part)

    monkeypatch.setattr(ray_engine, "write_part", noted)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS)] + ([os.environ["PYTHONPATH"]]
                                                                      if os.environ.get("PYTHONPATH") else [])))
    x = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    # two workers of one CPU each (no CPU left idle), batches of two samples read in 1.5 s each: each worker's
    # batch written about every 3 s, six writes in all (without the raised limit, four processes ran them)
    done = run(small_cnn(seed=1), Slow(x, 1.5), tmp_path / "ray", rules=nrm.presets.EpsilonGammaFlat(),
               layers=["input"], batch_size=2, progress=False, engine="ray", concurrency=2, worker_cpus=1.0)
    assert (done.written, done.errors) == (12, 0)
    assert len(list((tmp_path / "ray" / "samples").glob("part-*.parquet"))) == 6
    writers = {int(p.name) for p in pids.iterdir()}
    assert writers and os.getpid() not in writers
    assert len(writers) <= 2, f"six write tasks ran in {len(writers)} fresh processes: Ray killed the idle ones"
