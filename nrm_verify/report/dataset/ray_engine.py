"""The Ray engine of a dataset run, all in Ray Data: the batches still to do are a Ray
Dataset of row lists; ``map_batches`` sends each to a pool of stateful workers
(:class:`RayWorker`, ``concurrency`` of them), each of which unpickles the model, rules, spec
and dataset once, reads its batch's samples itself and explains them; ``write_datasink``
hands each explained batch to a Ray Data write task (:class:`RunDatasink`), which commits it
to the output folder exactly as the local engine does — its Zarr chunk, its reductions, then
its Parquet part renamed into place. The driver only watches the folder for the bar.

The write tasks run on the driver's node (a node-affinity scheduling strategy), so the folder
needs no file system shared with the workers; they ask for no CPU (writing a batch costs a
few milliseconds, and whole-CPU tasks beside whole-CPU workers on a small machine would wait
forever). Parquet is written by the Datasink and not by ``Dataset.write_parquet`` because a
batch's rows commit it: they must be renamed into place after its arrays and reductions are
written, under a name fixed by its rows, so that a retried write task rewrites the same files.

Since a batch is explained by the same code on the same rows and written by the same code,
the folder is the same as the local engine's (the tests compare it bitwise). A worker that
dies mid-batch is restarted by Ray and its batch done again; nothing was committed for it,
so nothing is lost or duplicated. ``address`` connects to a running cluster (``ray start
--head`` or KubeRay / SLURM); without it a local Ray is started and stopped around the run.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import threading
from contextlib import contextmanager

import numpy as np

from nrm_verify.report.dataset.engine import model_dtype, read_batch
from nrm_verify.report.dataset.parts import RunJob, Sink, explain_part, write_part
from nrm_verify.report.dataset.store import Store

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

    def __init__(self, job, shape: tuple, gpus: float, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.job: RunJob = pickle.loads(received(job))
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


def run_datasink(ray, sink: Sink):
    """A Ray Data ``Datasink`` whose write tasks commit the explained batches of their blocks
    to the folder (:func:`~nrm_verify.report.dataset.parts.write_part`); made here because
    Ray is an optional dependency."""

    class RunDatasink(ray.data.Datasink):
        def __init__(self, sink: Sink):
            self.sink = sink

        def write(self, blocks, ctx) -> int:
            written = 0
            for block in blocks:
                for row in ray.data.block.BlockAccessor.for_block(block).iter_rows(public_row_format=True):
                    written += write_part(self.sink, pickle.loads(row["part"]))
            return written

        def on_write_complete(self, result) -> None:
            self.written = sum(result.write_returns)

    return RunDatasink(sink)


RAY_DATA_ACTORS = 3  # Ray Data's own: its statistics, its autoscaling coordinator, its actor location tracker
PART = re.compile(r"part-\d{9}-(\d{6})\.parquet")


def committed_rows(store: Store) -> int:
    """The rows of the batches committed so far (each part's name holds its row count)."""
    return sum(int(m.group(1)) for p in store.samples.iterdir() if (m := PART.fullmatch(p.name)))


@contextmanager
def ray_session(address: str | None, workers: int = 0):
    """Ray, ready for Ray Data: the cluster at ``address`` ("auto", "ray://head:10001"), or, when
    Ray is not running in this process and no address is given, a local Ray started here whose
    workers import nrm and nrm_verify from where this process did, stopped at the end. Ray
    Data's own progress bars are off (the run and the comparison have theirs).

    ``workers``: the worker processes the job keeps busy at once (its actors and its write
    tasks). A local Ray keeps that many and Ray Data's own actors alive when idle: by default
    Ray kills idle worker processes beyond one per CPU after a second, so on a small machine
    each batch's write task started a fresh process (about 2.5 s of CPU importing torch and
    nrm, on the cores the workers explain on)."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        path = os.pathsep.join([here] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        cpus = max(os.cpu_count() or 1, 1)
        options = {"address": address} if address else {
            "num_cpus": cpus, "runtime_env": {"env_vars": {"PYTHONPATH": path}},
            "_system_config": {"num_workers_soft_limit": max(cpus, workers + RAY_DATA_ACTORS)}}
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **options)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        yield ray
    finally:
        if started:
            ray.shutdown()


def shipped(ray, value):
    """``value`` in Ray's object store, for a worker's constructor: a reference to it travels
    with the map operator instead of the value (a model of hundreds of MiB inside the operator
    was copied into every worker's task description: 24 s of fixed cost for VGG16's 512 MiB
    on two workers here, against a few seconds through the store)."""
    return ray.put(value)


def received(value):
    """What :func:`shipped` put into the store, in a worker (the value itself if it was not)."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def worker_threads(worker_cpus: float) -> int:
    """torch threads of a worker: its whole CPUs, at least one."""
    return max(1, int(round(worker_cpus))) if worker_cpus >= 1 else 1


def ray_loop(job: RunJob, sink: Sink, todo: list[list[int]], shape: tuple, bar, *, address: str | None,
             concurrency: int, worker_cpus: float, worker_gpus: float) -> int:
    """Explain ``todo`` on Ray workers and commit each batch in a Ray Data write task on this
    node; the rows written."""
    with ray_session(address, workers=2 * concurrency) as ray:  # the actors and as many write tasks
        items = ray.data.from_items([{"rows": json.dumps(rows)} for rows in todo], override_num_blocks=len(todo))
        here_only = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)
        # two batches in flight per worker: the next one waits while it explains, and no worker
        # holds a queue of batches while another, started a moment later, has none
        pool = ray.data.ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=2)
        parts = items.map_batches(RayWorker, batch_size=1, compute=pool,
                                  num_cpus=worker_cpus, num_gpus=worker_gpus or None,
                                  fn_constructor_kwargs={"job": shipped(ray, pickle.dumps(job)), "shape": shape,
                                                         "gpus": worker_gpus, "threads": worker_threads(worker_cpus)})
        before = committed_rows(sink.store)
        shown, done = [0], threading.Event()

        def follow() -> None:  # the bar follows the committed parts
            now = committed_rows(sink.store) - before
            bar.update(now - shown[0])
            shown[0] = now

        def watch() -> None:
            while not done.wait(0.25):
                follow()

        watcher = threading.Thread(target=watch, name="nrm-run-progress", daemon=True)
        watcher.start()
        try:  # the run is this thread's: an interrupt stops Ray Data's execution of the dataset
            parts.write_datasink(run_datasink(ray, sink), concurrency=max(concurrency, 1),
                                 ray_remote_args={"num_cpus": 0, "scheduling_strategy": here_only})
        finally:
            done.set()
            watcher.join()
        follow()
        return shown[0]
