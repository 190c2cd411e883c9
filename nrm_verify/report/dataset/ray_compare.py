"""The Ray engine of a dataset-scale comparison (:func:`~nrm_verify.report.dataset.regress.compare_run`
with ``engine="ray"``): Ray Data reads the run's rows — its committed Parquet parts, with
``ray.data.read_parquet``, the rows whose status is "ok" — and ``map_batches`` sends them to a
pool of ``concurrency`` stateful workers (:class:`RayComparer`), each of which receives the
model, the dataset and the explainer once, loads its batch's samples itself and explains them
with the targets the run recorded. The explanations stream back to the driver, which alone
reads the recorded arrays and compares (a comparison costs microseconds per sample; the
explanation is the work).

On a cluster the run's ``samples/`` folder and the dataset must be readable where the read
tasks and the workers run (shared storage, as for the run's own Ray engine's dataset); the
recorded arrays are read on the driver only. Ray Data forms the batches (``batch_size`` rows,
fewer at the end of a block), so the explanations agree with the local engine's to round-off.
"""

from __future__ import annotations

import numpy as np

from nrm_verify.report.dataset.current import explained
from nrm_verify.report.dataset.engine import model_dtype
from nrm_verify.report.dataset.ray_engine import ray_session, received, shipped, worker_threads
from nrm_verify.report.dataset.store import Store

COLUMNS = ["row", "status", "target"]


class RayComparer:
    """One worker of the pool: the model, the dataset and the explainer, received once; each
    call explains one batch of the run's rows and returns them with the explanations."""

    def __init__(self, job: tuple, layer: str, gpus: float, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.model, self.source, self.fn = received(job)
        self.device = torch.device("cuda") if gpus > 0 else torch.device("cpu")
        if gpus > 0:
            self.model = self.model.to(self.device)  # this worker's copy; the user's model stays
        self.layer, self.dtype = layer, model_dtype(self.model)

    def __call__(self, batch: dict) -> dict:
        import torch

        rows = batch["row"].tolist()
        if not rows:  # a block of a part whose rows are all errors
            return {"row": batch["row"], "current": np.zeros((0,)), "quantity": np.asarray([], dtype=str)}
        x = torch.stack([self.source.load(r)[0] for r in rows]).to(dtype=self.dtype, device=self.device)
        current, quantity = explained(self.fn, self.model, x, batch["target"].tolist(), self.layer)
        return {"row": batch["row"], "current": current, "quantity": np.asarray([quantity] * len(rows))}


def ray_explained(store: Store, model, source, fn, layer: str, batch_size: int, *, address: str | None,
                  concurrency: int, worker_cpus: float, worker_gpus: float):
    """The run's ok rows explained on Ray workers: (rows, current, quantity) per batch, in the
    order they finish."""
    with ray_session(address, workers=concurrency + 2) as ray:  # the actors and the parts' read tasks
        from ray.data.expressions import col

        rows = ray.data.read_parquet(str(store.samples), file_extensions=["parquet"])
        # Ray Data reads small parts into one block; blocks of a batch let every worker take one
        rows = rows.select_columns(COLUMNS).filter(expr=col("status") == "ok") \
            .repartition(target_num_rows_per_block=batch_size)
        out = rows.map_batches(RayComparer, batch_size=batch_size, batch_format="numpy",
                               compute=ray.data.ActorPoolStrategy(size=concurrency),
                               num_cpus=worker_cpus, num_gpus=worker_gpus or None,
                               fn_constructor_kwargs={"job": shipped(ray, (model, source, fn)), "layer": layer,
                                                      "gpus": worker_gpus, "threads": worker_threads(worker_cpus)})
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            if len(batch["row"]):
                yield batch["row"].tolist(), np.asarray(batch["current"], dtype=np.float64), str(batch["quantity"][0])
