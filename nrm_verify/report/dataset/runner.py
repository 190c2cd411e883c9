"""``run``: every analysis of :class:`~nrm_verify.report.dataset.compute.Spec` over a dataset,
streamed in batches through :func:`nrm.explain`, written to a folder, resumable."""

from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import nrm
from nrm.graph import check_eval_mode
from nrm_verify.report.dataset.compute import Explained, Spec, explain_batch
from nrm_verify.report.dataset.engine import (
    Batch,
    Targets,
    empty_reductions,
    model_device,
    model_dtype,
    prefetched,
    probe,
    progress_bar,
    reduce_batch,
    table_of,
)
from nrm_verify.report.dataset.errors import DatasetError, RunError, SpecError
from nrm_verify.report.dataset.reduce import Reductions
from nrm_verify.report.dataset.sources import as_source
from nrm_verify.report.dataset.store import Store, model_fingerprint, schema

ENGINES = ("local",)


@dataclass
class RunResult:
    """What a run left in ``folder``: the counts of samples (all, written by this call,
    already there, errors among all) and the merged reductions."""

    folder: Path
    samples: int
    written: int
    skipped: int
    errors: int
    reductions: Reductions | None
    manifest: dict = field(repr=False, default_factory=dict)


def run(model: nn.Module, data, out: str | os.PathLike, *, rules=None, targets=None, layers=("input",),
        full=(), top_k: int = 5, channel_top_k: int = 8, events=None, conditional=None, laws=("L1",),
        explainers=None, batch_size: int = 32, engine: str = "local", prefetch: int = 2, seed: int = 0,
        size: int | None = None, normalize: str = "none", progress: bool | None = None) -> RunResult:
    """Explain every sample of ``data`` with ``nrm.explain(model, x, target, rules=rules)`` and
    write one row per sample (Parquet), the large arrays (Zarr), the reductions and a
    manifest into ``out``. A rerun into the same folder skips the samples already written.

    Args:
        model: a module in eval mode (only read: parameters, buffers, hooks, mode stay).
        data: a tensor (N, …), a pair (x, labels), a map-style torch Dataset, a folder of
            images or ``.npy`` arrays, or a ``.parquet`` index (:mod:`.sources`).
        out: the output folder (created; a folder with a run of another model, rules,
            dataset or spec is refused with :class:`RunMismatchError`).
        rules: a rule, mapping or preset, as for :func:`nrm.explain`.
        targets: None / "argmax", "label" (the dataset's), an int, or one int per sample.
        layers, full, top_k, channel_top_k, events, conditional, laws, explainers: what to
            compute (:class:`~nrm_verify.report.dataset.compute.Spec`).
        batch_size: samples per ``explain`` call and per committed part.
        engine: "local" (in-process; the batches are read ``prefetch`` ahead on a thread).
        seed: seeds torch's global generator before the run (recorded in every row).
        size, normalize: for image files: resize to size × size, "imagenet" or "none".
        progress: a tqdm bar on stderr (None: when stderr is a terminal).

    Raises (before anything is written): DatasetError, TargetError, SpecError,
    OutputFolderError, RunMismatchError, nrm.UnknownLayerError, nrm.EventIndexError,
    nrm.TrainingModeError.
    """
    spec = Spec(layers, full, top_k, channel_top_k, events or {}, conditional or {}, laws, explainers or {})
    _check_options(model, batch_size, engine, prefetch, seed)
    source = as_source(data, size=size, normalize=normalize)
    if not len(source):
        raise DatasetError("the dataset has no samples")
    wanted = Targets(targets, len(source))
    check_eval_mode(model)
    torch.manual_seed(seed)
    plan, shape, _ = probe(model, rules, spec, source)
    wanted.check_range(plan.outputs)
    dtype, device = model_dtype(model), model_device(model)
    fingerprint = {"model": model_fingerprint(model), "rules": repr(nrm.presets.RuleMap.of(rules)),
                   "spec": spec.describe(), "dataset": source.describe(), "targets": wanted.describe(),
                   "dtype": str(dtype), "sample_shape": list(shape)}
    store = Store(out, fingerprint)
    manifest = store.open({"layers": plan.canonical, "channels": plan.channels, "seed": seed, "device": str(device),
                           "arrays": {k: list(v) for k, v in plan.arrays.items()}, "batch_size": batch_size})
    context = _Context(model, rules, spec, plan, source, wanted, store, schema(plan.canonical, spec),
                       {"torch": torch.__version__, "nrm": nrm.__version__, "rules": fingerprint["rules"],
                        "seed": seed, "device": str(device), "dtype": str(dtype)},
                       store.arrays(plan.arrays, len(source), np.dtype(str(dtype).replace("torch.", ""))))
    done = store.done_ids()
    todo = [[r for r in range(b, min(b + batch_size, len(source))) if source.ids[r] not in done]
            for b in range(0, len(source), batch_size)]
    todo = [rows for rows in todo if rows]
    started = time.perf_counter()
    with progress_bar(len(source), len(done), progress) as bar:
        try:
            written = _loop(context, prefetched(source, todo, shape, dtype, device, max(prefetch, 1)), bar)
        except BaseException:
            manifest["status"] = "interrupted"
            store.write_manifest(manifest)
            raise
    return _finish(store, manifest, len(source), written, len(done), time.perf_counter() - started)


def _loop(ctx: _Context, batches, bar) -> int:
    """Explain the batches here while a thread writes the previous one (arrays, reductions,
    then the rows that commit it, in order); the rows written. On an interruption the
    batches already explained are still committed (the pool's exit waits for them)."""
    written = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nrm-run-write") as writer:
        pending: deque = deque()
        for batch in batches:
            pending.append(writer.submit(_write, ctx, *_explain(ctx, batch)))
            while len(pending) > 1 or (pending and pending[0].done()):
                n = pending.popleft().result()
                written += n
                bar.update(n)
        while pending:
            n = pending.popleft().result()
            written += n
            bar.update(n)
    return written


@dataclass
class _Context:
    model: nn.Module
    rules: object
    spec: Spec
    plan: object
    source: object
    targets: Targets
    store: Store
    schema: object
    constants: dict
    arrays: dict


def _explain(ctx: _Context, batch: Batch) -> tuple[Batch, Explained, dict]:
    """The results of one batch and the reason for each row without one."""
    errors = dict(batch.errors)
    targets: list = []
    keep: list[int] = []
    for p, r in enumerate(batch.loaded):
        try:
            targets.append(ctx.targets.of(r, batch.labels[r], ctx.plan.outputs))
            keep.append(p)
        except RunError as e:
            errors[r] = f"{type(e).__name__}: {e}"
    if batch.x is None or not keep:
        return batch, Explained([], {}, {}, {}), errors
    x = batch.x[keep]
    done = explain_batch(ctx.model, ctx.rules, ctx.spec, ctx.plan, x, targets)
    loaded = [batch.loaded[p] for p in keep]
    errors.update({loaded[p]: reason for p, reason in done.errors.items()})
    return Batch(batch.rows, loaded, x, batch.labels, batch.errors), done, errors


def _write(ctx: _Context, batch: Batch, done: Explained, errors: dict) -> int:
    """Write one batch's arrays, reductions and rows (the rows commit it); the number of rows."""
    rows = np.asarray([batch.loaded[p] for p in done.positions], dtype=np.int64)
    for name, values in done.arrays.items():
        for start, stop, first in _runs(rows):  # one write per run of consecutive rows (a chunk each, written at once)
            ctx.arrays[name][start:stop] = values[first:first + stop - start]
    red = reduce_batch(ctx.plan, ctx.spec, done, rows) if len(rows) else empty_reductions(ctx.plan, ctx.spec)
    table = table_of(batch, done, errors, ctx.source.ids, ctx.schema, ctx.constants)
    ctx.store.commit(f"part-{batch.rows[0]:09d}-{len(batch.rows):06d}", table, red)
    return len(batch.rows)


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(first row, end row, position in ``rows``) of each run of consecutive rows."""
    out = []
    for i, r in enumerate(rows.tolist()):
        if out and out[-1][1] == r:
            out[-1] = (out[-1][0], r + 1, out[-1][2])
        else:
            out.append((r, r + 1, i))
    return out


def _finish(store: Store, manifest: dict, n: int, written: int, skipped: int, seconds: float) -> RunResult:
    reductions = store.reductions()
    table = store.table()
    errors = int(sum(1 for s in table.column("status").to_pylist() if s != "ok"))
    if reductions is not None:
        (store.folder / "reductions.json").write_text(json.dumps(reductions.to_dict()) + "\n")
    files = {"samples": "samples/", "arrays": "arrays.zarr" if manifest["arrays"] else None,
             "reductions": "reductions.json", "reduction_parts": "reductions/"}
    manifest.update(status="complete" if table.num_rows == n else "incomplete", samples=n, rows=table.num_rows,
                    errors=errors, files=files)
    manifest.setdefault("seconds", []).append(round(seconds, 3))
    store.write_manifest(manifest)
    return RunResult(store.folder, n, written, skipped, errors, reductions, manifest)


def _check_options(model, batch_size, engine, prefetch, seed) -> None:
    if not isinstance(model, nn.Module):
        raise SpecError(f"model takes a torch.nn.Module, got {type(model).__name__}")
    for name, value, low in (("batch_size", batch_size, 1), ("prefetch", prefetch, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SpecError(f"{name}= takes a whole number >= {low}, got {value!r}")
    if engine not in ENGINES:
        raise SpecError(f"engine= takes one of {ENGINES}, got {engine!r}")
