"""The Ray engine of a dataset run: the batches still to do are a Ray Dataset of row lists;
``map_batches`` sends each to a pool of stateful workers (:class:`RayWorker`, ``concurrency``
of them), each of which unpickles the model, rules, spec and dataset once, reads its
batch's samples itself and explains them; the results stream back to this process, which
commits them to the output folder exactly as the local engine does.

Since a batch is explained by the same code on the same rows, the folder is the same as
the local engine's (the tests compare it bitwise). A worker that dies mid-batch is
restarted by Ray and its batch done again; nothing was committed for it, so nothing is
lost or duplicated. ``address`` connects to a running cluster (``ray start --head`` or
KubeRay / SLURM); without it a local Ray is started and stopped around the run.
"""

from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np

from nrm_verify.report.dataset.engine import model_dtype, read_batch
from nrm_verify.report.dataset.parts import RunJob, Sink, explain_part, write_part

EXTRA = "ray"


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError:
        raise ImportError("engine='ray' needs Ray Data: pip install 'nrm-verify[ray]'", name="ray") from None
    return ray


class RayWorker:
    """One worker of the pool: the job (model, rules, spec, dataset) unpickled once; each
    call reads and explains one batch of rows and returns the pickled :class:`ExplainedBatch`."""

    def __init__(self, job: bytes, shape: tuple, gpus: float, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.job: RunJob = pickle.loads(job)
        self.device = torch.device("cuda") if gpus > 0 else torch.device("cpu")
        if gpus > 0:
            self.job.model = self.job.model.to(self.device)  # this worker's copy; the user's model stays
        self.shape = tuple(shape)
        self.dtype = model_dtype(self.job.model)

    def __call__(self, items: dict) -> dict:
        out = []
        for rows in items["rows"]:
            batch = read_batch(self.job.source, json.loads(rows), self.shape, self.dtype, self.device)
            out.append(pickle.dumps(explain_part(self.job, batch)))
        return {"part": np.array(out, dtype=object)}


def ray_loop(job: RunJob, sink: Sink, todo: list[list[int]], shape: tuple, bar, *, address: str | None,
             concurrency: int, worker_cpus: float, worker_gpus: float) -> int:
    """Explain ``todo`` on Ray workers and commit each batch here as it arrives; the rows written."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        # a local Ray's workers import nrm and nrm_verify from where this process did
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        path = os.pathsep.join([here] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        options = {"address": address} if address else {
            "num_cpus": max(os.cpu_count() or 1, 1), "runtime_env": {"env_vars": {"PYTHONPATH": path}}}
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **options)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the run has its own bar
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        threads = max(1, int(round(worker_cpus))) if worker_cpus >= 1 else 1
        items = ray.data.from_items([{"rows": json.dumps(rows)} for rows in todo], override_num_blocks=len(todo))
        parts = items.map_batches(RayWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=concurrency),
                                  num_cpus=worker_cpus, num_gpus=worker_gpus or None,
                                  fn_constructor_kwargs={"job": pickle.dumps(job), "shape": shape,
                                                         "gpus": worker_gpus, "threads": threads})
        written = 0
        for row in parts.iter_rows():
            n = write_part(job, sink, pickle.loads(row["part"]))
            written += n
            bar.update(n)
        return written
    finally:
        if started:
            ray.shutdown()
