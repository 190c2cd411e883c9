"""One batch, from read samples to a committed part: :func:`explain_part` (where the model
is: this process, or a Ray worker) and :func:`write_part` (where the output folder is: this
process's writer thread, or a Ray Data write task on this machine), and the local engine's
loop that joins them."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from torch import nn

from nrm_verify.report.dataset.compute import Explained, Plan, Spec, concat_columns, explain_batch
from nrm_verify.report.dataset.engine import Batch, Targets, empty_reductions, reduce_batch, table_of
from nrm_verify.report.dataset.errors import RunError
from nrm_verify.report.dataset.sources import Source
from nrm_verify.report.dataset.store import Store

COMMIT_SECONDS = 1.0
"""How long the local engine gathers explained batches into one part (``run(commit_seconds=…)``)."""
COMMIT_BYTES = 256 * 2**20
"""A part is committed once its arrays (heatmaps, conditional maps) hold this many bytes."""


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
    """Write one batch as its own committed part (a Ray Data write task); the number of rows."""
    return write_parts(sink, [part])


def write_parts(sink: Sink, parts: list[ExplainedBatch]) -> int:
    """Write consecutive explained batches as one committed part: their arrays (one Zarr write
    over the rows of all of them), each batch's reductions (kept apart, so that the run's merge
    goes batch by batch in row order whatever the parts are: ``reductions.json`` does not depend
    on how the batches were grouped), then their rows, whose rename commits the part; the
    number of rows."""
    spans = [np.asarray(p.batch.rows, dtype=np.int64) for p in parts]
    span = np.concatenate(spans)
    done_rows = [np.asarray([p.batch.loaded[i] for i in p.done.positions], dtype=np.int64) for p in parts]
    for name in sink.arrays:
        values = [(rows, p.done.arrays[name]) for rows, p in zip(done_rows, parts) if name in p.done.arrays]
        if not values:
            continue
        # the parts' whole span in one write (a row without a result holds the fill value 0): each batch's
        # chunk in one piece. Zarr's local store replaces a chunk file atomically (a temporary file renamed),
        # so a run killed here leaves the old chunk or the new one, and the rerun of the batch rewrites it
        block = np.zeros((len(span),) + values[0][1].shape[1:], dtype=values[0][1].dtype)
        for rows, v in values:
            block[np.searchsorted(span, rows)] = v
        for start, stop, first in consecutive(span):
            sink.arrays[name][start:stop] = block[first:first + stop - start]
    reductions = [reduce_batch(sink.plan, sink.spec, p.done, rows) if len(rows)
                  else empty_reductions(sink.plan, sink.spec) for p, rows in zip(parts, done_rows)]
    whole = parts[0] if len(parts) == 1 else joined(parts)
    table = table_of(whole.batch, whole.done, whole.errors, sink.ids, sink.schema, sink.constants)
    sink.store.commit(f"part-{parts[0].batch.rows[0]:09d}-{len(span):06d}", table, reductions)
    return len(span)


def joined(parts: list[ExplainedBatch]) -> ExplainedBatch:
    """Consecutive explained batches as one (their rows' table is built in one piece)."""
    rows, loaded, labels, read_errors, errors, positions = [], [], {}, {}, {}, []
    for p in parts:
        positions += [len(loaded) + i for i in p.done.positions]
        rows += p.batch.rows
        loaded += p.batch.loaded
        labels.update(p.batch.labels)
        read_errors.update(p.batch.errors)
        errors.update(p.errors)
    with_results = [p.done for p in parts if p.done.positions]
    columns = {k: concat_columns([d.columns[k] for d in with_results]) for k in with_results[0].columns} \
        if with_results else {}
    done = Explained(positions, columns, {}, {})
    return ExplainedBatch(Batch(rows, loaded, None, labels, read_errors), done, errors)


def consecutive(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(first row, end row, position in ``rows``) of each run of consecutive rows."""
    out = []
    for i, r in enumerate(rows.tolist()):
        if out and out[-1][1] == r:
            out[-1] = (out[-1][0], r + 1, out[-1][2])
        else:
            out.append((r, r + 1, i))
    return out


def local_loop(job: RunJob, sink: Sink, batches, bar, commit_seconds: float = COMMIT_SECONDS) -> int:
    """Explain the batches here while a thread writes the previous ones; the rows written.

    Consecutive batches are committed together, as one part, until ``commit_seconds`` have
    passed since the first of them was explained (or their arrays pass :data:`COMMIT_BYTES`):
    on a small model a batch takes milliseconds, and writing each alone (a Zarr write, a
    Parquet file, a JSON file) would cost a third of the run. ``commit_seconds=0`` commits
    every batch alone. On an interruption the batches already explained are still committed
    (the pool's exit waits for them)."""
    written = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nrm-run-write") as writer:
        pending: deque = deque()
        group: list[ExplainedBatch] = []
        opened, size = 0.0, 0

        def drain(wait: bool) -> None:
            nonlocal written
            while pending and (wait or len(pending) > 1 or pending[0].done()):
                n = pending.popleft().result()
                written += n
                bar.update(n)

        try:
            for batch in batches:
                if not group:
                    opened = time.monotonic()
                part = explain_part(job, batch)
                group.append(part)
                size += sum(v.nbytes for v in part.done.arrays.values())
                if time.monotonic() - opened >= commit_seconds or size >= COMMIT_BYTES:
                    pending.append(writer.submit(write_parts, sink, group))
                    group, size = [], 0
                drain(wait=False)
        finally:  # what was explained is committed, also when the loop is interrupted
            if group:
                pending.append(writer.submit(write_parts, sink, group))
        drain(wait=True)
    return written
