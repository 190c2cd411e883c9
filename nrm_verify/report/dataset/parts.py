"""One batch, from read samples to a committed part: :func:`explain_part` (where the model
is: this process, or a Ray worker) and :func:`write_part` (where the output folder is: this
process's writer thread, or a Ray Data write task on this machine), and the local engine's
loop that joins them."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from torch import nn

from nrm_verify.report.dataset.compute import Explained, Plan, Spec, explain_batch
from nrm_verify.report.dataset.engine import Batch, Targets, empty_reductions, reduce_batch, table_of
from nrm_verify.report.dataset.errors import RunError
from nrm_verify.report.dataset.sources import Source
from nrm_verify.report.dataset.store import Store


@dataclass
class RunJob:
    """What explaining a batch needs (pickled once to each Ray worker)."""

    model: nn.Module
    rules: object
    spec: Spec
    plan: Plan
    source: Source
    targets: Targets


@dataclass
class Sink:
    """What writing a batch needs — the folder, the rows' schema and constant columns, the Zarr
    arrays, the resolved spec and the samples' ids — and nothing of the model or the data (a
    Ray Data write task receives it pickled)."""

    store: Store
    schema: object
    constants: dict
    arrays: dict
    plan: Plan
    spec: Spec
    ids: list[str]


@dataclass
class ExplainedBatch:
    """One explained batch: the batch as read (without its samples), the results, the reasons."""

    batch: Batch
    done: Explained
    errors: dict


def explain_part(job: RunJob, batch: Batch) -> ExplainedBatch:
    """The results of one batch and the reason for each row without one."""
    errors = dict(batch.errors)
    targets: list = []
    keep: list[int] = []
    for p, r in enumerate(batch.loaded):
        try:
            targets.append(job.targets.of(r, batch.labels[r], job.plan.outputs))
            keep.append(p)
        except RunError as e:
            errors[r] = f"{type(e).__name__}: {e}"
    if batch.x is None or not keep:
        read = Batch(batch.rows, batch.loaded, None, batch.labels, batch.errors)
        return ExplainedBatch(read, Explained([], {}, {}, {}), errors)
    done = explain_batch(job.model, job.rules, job.spec, job.plan, batch.x[keep], targets)
    loaded = [batch.loaded[p] for p in keep]
    errors.update({loaded[p]: reason for p, reason in done.errors.items()})
    return ExplainedBatch(Batch(batch.rows, loaded, None, batch.labels, batch.errors), done, errors)


def write_part(sink: Sink, part: ExplainedBatch) -> int:
    """Write one batch's arrays, reductions and rows (the rows commit it); the number of rows."""
    batch, done = part.batch, part.done
    rows = np.asarray([batch.loaded[p] for p in done.positions], dtype=np.int64)
    for name, values in done.arrays.items():
        # the batch's whole span in one write (a row without a result holds the fill value 0): its chunk
        # in one piece. Zarr's local store replaces a chunk file atomically (a temporary file renamed),
        # so a run killed here leaves the old chunk or the new one, and the rerun of the batch rewrites it
        span = np.asarray(batch.rows, dtype=np.int64)
        block = np.zeros((len(span),) + values.shape[1:], dtype=values.dtype)
        block[np.searchsorted(span, rows)] = values
        for start, stop, first in consecutive(span):
            sink.arrays[name][start:stop] = block[first:first + stop - start]
    red = reduce_batch(sink.plan, sink.spec, done, rows) if len(rows) else empty_reductions(sink.plan, sink.spec)
    table = table_of(batch, done, part.errors, sink.ids, sink.schema, sink.constants)
    sink.store.commit(f"part-{batch.rows[0]:09d}-{len(batch.rows):06d}", table, red)
    return len(batch.rows)


def consecutive(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(first row, end row, position in ``rows``) of each run of consecutive rows."""
    out = []
    for i, r in enumerate(rows.tolist()):
        if out and out[-1][1] == r:
            out[-1] = (out[-1][0], r + 1, out[-1][2])
        else:
            out.append((r, r + 1, i))
    return out


def local_loop(job: RunJob, sink: Sink, batches, bar) -> int:
    """Explain the batches here while a thread writes the previous one (arrays, reductions,
    then the rows that commit it, in order); the rows written. On an interruption the
    batches already explained are still committed (the pool's exit waits for them)."""
    written = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nrm-run-write") as writer:
        pending: deque = deque()
        for batch in batches:
            pending.append(writer.submit(write_part, sink, explain_part(job, batch)))
            while len(pending) > 1 or (pending and pending[0].done()):
                n = pending.popleft().result()
                written += n
                bar.update(n)
        while pending:
            n = pending.popleft().result()
            written += n
            bar.update(n)
    return written
