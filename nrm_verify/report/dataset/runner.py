"""``run``: every analysis of :class:`~nrm_verify.report.dataset.compute.Spec` over a dataset,
streamed in batches through :func:`nrm.explain`, written to a folder, resumable."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import nrm
from nrm.graph import check_eval_mode
from nrm_verify.report.dataset.compute import Spec
from nrm_verify.report.dataset.engine import Targets, model_device, model_dtype, prefetched, probe, progress_bar
from nrm_verify.report.dataset.errors import DatasetError, SpecError
from nrm_verify.report.dataset.parts import COMMIT_SECONDS, RunJob, Sink, local_loop
from nrm_verify.report.dataset.reduce import Reductions
from nrm_verify.report.dataset.sources import as_source
from nrm_verify.report.dataset.store import Store, model_fingerprint, schema

ENGINES = ("local", "ray")


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
        explainers=None, selection=(), selection_draws: int = 3, batch_size: int = 32, engine: str = "local",
        prefetch: int = 2, commit_seconds: float = COMMIT_SECONDS, seed: int = 0,
        size: int | None = None, normalize: str = "none", progress: bool | None = None, address: str | None = None,
        concurrency: int = 2, worker_cpus: float = 1.0, worker_gpus: float = 0.0) -> RunResult:
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
        layers, full, top_k, channel_top_k, events, conditional, laws, explainers, selection,
            selection_draws: what to compute (:class:`~nrm_verify.report.dataset.compute.Spec`);
            ``selection`` names layers whose neuron-selection curves are computed per sample
            and averaged over the dataset.
        batch_size: samples per ``explain`` call (and per Zarr chunk).
        commit_seconds: the local engine commits the batches explained within this many
            seconds together, as one part (1 s by default; 0: every batch alone). What a
            killed run loses is at most that much work; the results do not depend on it.
        engine: "local" (in-process; the batches are read ``prefetch`` ahead on a thread) or
            "ray" (``concurrency`` Ray Data workers of ``worker_cpus`` CPUs and ``worker_gpus``
            GPUs each; on a cluster at ``address``, else on a local Ray started for the run).
        seed: seeds torch's global generator before the run (recorded in every row).
        size, normalize: for image files: resize to size × size, "imagenet" or "none".
        progress: a tqdm bar on stderr (None: when stderr is a terminal).

    Raises (before anything is written): DatasetError, TargetError, SpecError,
    OutputFolderError, RunMismatchError, nrm.UnknownLayerError, nrm.EventIndexError,
    nrm.TrainingModeError.
    """
    spec = Spec(layers, full, top_k, channel_top_k, events or {}, conditional or {}, laws, explainers or {},
                selection, selection_draws)
    _check_options(model, batch_size, prefetch, seed, commit_seconds)
    check_engine_options(engine, address, concurrency, worker_cpus, worker_gpus)
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
                           "arrays": {k: list(v) for k, v in plan.arrays.items()}, "batch_size": batch_size,
                           "selection": plan.selection})
    job = RunJob(model, rules, spec, plan, source, wanted)
    on_gpu = engine == "ray" and worker_gpus > 0
    sink = Sink(store, schema(plan.canonical, spec),
                {"torch": torch.__version__, "nrm": nrm.__version__, "rules": fingerprint["rules"], "seed": seed,
                 "device": "cuda" if on_gpu else str(device), "dtype": str(dtype)},
                store.arrays(plan.arrays, len(source), np.dtype(str(dtype).replace("torch.", "")), batch_size),
                plan, spec, source.ids)
    engine_options = {"engine": engine, "prefetch": prefetch, "commit_seconds": float(commit_seconds),
                      "address": address, "concurrency": concurrency,
                      "worker_cpus": worker_cpus, "worker_gpus": worker_gpus}
    return _execute(job, sink, manifest, batch_size, shape, progress, engine_options)


def _execute(job: RunJob, sink: Sink, manifest: dict, batch_size: int, shape: tuple, progress,
             options: dict) -> RunResult:
    """The batches not yet in the folder, through the engine; the finished folder's summary."""
    store, source = sink.store, job.source
    dtype, device = model_dtype(job.model), model_device(job.model)
    done = store.done_ids()
    todo = [[r for r in range(b, min(b + batch_size, len(source))) if source.ids[r] not in done]
            for b in range(0, len(source), batch_size)]
    todo = [rows for rows in todo if rows]
    started = time.perf_counter()
    with progress_bar(len(source), len(done), progress) as bar:
        try:
            if options["engine"] == "ray" and todo:
                from nrm_verify.report.dataset.ray_engine import ray_loop
                written = ray_loop(job, sink, todo, shape, bar, address=options["address"],
                                   concurrency=options["concurrency"], worker_cpus=options["worker_cpus"],
                                   worker_gpus=options["worker_gpus"])
            else:
                batches = prefetched(source, todo, shape, dtype, device, max(options["prefetch"], 1))
                written = local_loop(job, sink, batches, bar, options["commit_seconds"])
        except BaseException:
            manifest["status"] = "interrupted"
            store.write_manifest(manifest)
            raise
    return _finish(store, manifest, len(source), written, len(done), time.perf_counter() - started)


def _finish(store: Store, manifest: dict, n: int, written: int, skipped: int, seconds: float) -> RunResult:
    reductions = store.reductions()
    statuses = store.statuses()
    errors = sum(1 for s in statuses if s != "ok")
    if reductions is not None:
        (store.folder / "reductions.json").write_text(json.dumps(reductions.to_dict()) + "\n")
    files = {"samples": "samples/", "arrays": "arrays.zarr" if manifest["arrays"] else None,
             "reductions": "reductions.json", "reduction_parts": "reductions/"}
    manifest.update(status="complete" if len(statuses) == n else "incomplete", samples=n, rows=len(statuses),
                    errors=errors, files=files)
    manifest.setdefault("seconds", []).append(round(seconds, 3))
    store.write_manifest(manifest)
    return RunResult(store.folder, n, written, skipped, errors, reductions, manifest)


def _check_options(model, batch_size, prefetch, seed, commit_seconds) -> None:
    if not isinstance(model, nn.Module):
        raise SpecError(f"model takes a torch.nn.Module, got {type(model).__name__}")
    for name, value, low in (("batch_size", batch_size, 1), ("prefetch", prefetch, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SpecError(f"{name}= takes a whole number >= {low}, got {value!r}")
    if (isinstance(commit_seconds, bool) or not isinstance(commit_seconds, (int, float))
            or not math.isfinite(commit_seconds) or commit_seconds < 0):
        raise SpecError(f"commit_seconds= takes a finite number of seconds >= 0 (0: commit every batch alone), "
                        f"got {commit_seconds!r}")


def check_engine_options(engine, address, concurrency, worker_cpus, worker_gpus) -> None:
    """SpecError for an engine that is not one of :data:`ENGINES` or Ray options out of range;
    ImportError for ``engine="ray"`` without Ray Data."""
    if not isinstance(engine, str) or engine not in ENGINES:
        raise SpecError(f"engine= takes one of {ENGINES}, got {engine!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise SpecError(f"concurrency= takes a whole number >= 1 (Ray workers), got {concurrency!r}")
    for name, value in (("worker_cpus", worker_cpus), ("worker_gpus", worker_gpus)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise SpecError(f"{name}= takes a finite number >= 0, got {value!r}")
    if worker_cpus == 0:
        raise SpecError("worker_cpus= must be > 0 (fractions such as 0.5 let several workers share a CPU)")
    if address is not None and not isinstance(address, str):
        raise SpecError(f"address= takes a Ray address such as 'ray://head:10001' or 'auto', got {address!r}")
    if engine == "ray":
        from nrm_verify.report.dataset.ray_engine import require_ray
        require_ray()
