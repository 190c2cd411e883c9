"""The local engine of a dataset run: batches of fixed boundaries (rows [b·B, (b+1)·B)),
read one or more ahead on a thread while the current one is explained, each committed to
the output folder as it finishes (:mod:`~nrm_verify.report.dataset.store`).

The boundaries do not depend on what is already done, so a run that is interrupted and
resumed computes each missing batch exactly as the uninterrupted run would: the same
rows in the same batches, the same per-batch reductions, merged in the same order —
the final folder is the same, bitwise.
"""

from __future__ import annotations

import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

import nrm
from nrm_verify.report.dataset.compute import Explained, Plan, Spec, plan_for
from nrm_verify.report.dataset.errors import DatasetError, TargetError
from nrm_verify.report.dataset.reduce import Extreme, Histogram, Moments, Reductions, TopK
from nrm_verify.report.dataset.sources import Source

ABSORBED_EDGES = np.linspace(-1.0, 2.0, 61)
"""Bins of the absorbed mass m_l(⊥_l) per layer (0.05 wide; outside counts as below/above)."""
RESIDUAL_EDGES = np.concatenate([[0.0], 10.0 ** np.arange(-17, 1)])
"""Bins of a law's residual: [0, 1e-17), [1e-17, 1e-16), …, [0.1, 1]."""


class Targets:
    """``targets=``: None or "argmax" (the model's arg-max), "label" (the dataset's labels), one
    int, or one int per sample (a list or an integer tensor of length N)."""

    def __init__(self, targets, n: int):
        self.values: list[int] | None = None
        if targets is None or (isinstance(targets, str) and targets == "argmax"):
            self.mode = "argmax"
        elif isinstance(targets, str) and targets == "label":
            self.mode = "label"
        elif isinstance(targets, Integral) and not isinstance(targets, bool):
            self.mode, self.values = "given", [int(targets)] * n
        else:
            self.mode, self.values = "given", _per_sample(targets, n)

    def describe(self):
        if self.mode != "given":
            return self.mode
        import hashlib
        return {"given_sha256": hashlib.sha256(np.asarray(self.values, dtype=np.int64).tobytes()).hexdigest()}

    def check_range(self, outputs: int) -> None:
        bad = [(i, t) for i, t in enumerate(self.values or []) if not 0 <= t < outputs]
        if bad:
            raise TargetError(f"targets {[t for _, t in bad[:5]]} (samples {[i for i, _ in bad[:5]]}) are out of "
                              f"range for a model with {outputs} outputs")

    def of(self, row: int, label: int | None, outputs: int) -> int | None:
        """The target of a row (None: the arg-max); TargetError for a label that does not fit."""
        if self.mode == "argmax":
            return None
        if self.mode == "given":
            return self.values[row]
        if label is None:
            raise TargetError("targets='label' but the sample has no label")
        if not 0 <= label < outputs:
            raise TargetError(f"label {label} is out of range for a model with {outputs} outputs")
        return label


def _per_sample(targets, n: int) -> list[int]:
    if isinstance(targets, torch.Tensor):
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool or targets.dim() != 1:
            raise TargetError(f"targets= takes an integer tensor (N,) = ({n},), got {targets.dtype} of shape "
                              f"{tuple(targets.shape)}")
        targets = targets.tolist()
    if isinstance(targets, np.ndarray):
        if targets.dtype.kind not in "iu" or targets.ndim != 1:
            raise TargetError(f"targets= takes integers (N,) = ({n},), got {targets.dtype} of shape {targets.shape}")
        targets = targets.tolist()
    if isinstance(targets, (str, bytes)) or not hasattr(targets, "__len__"):
        raise TargetError(f"targets= takes None, 'argmax', 'label', an int or one int per sample; got {targets!r:.60}")
    values = list(targets)
    if not all(isinstance(t, Integral) and not isinstance(t, bool) for t in values):
        raise TargetError(f"targets= takes ints, got {[type(t).__name__ for t in values[:3]]}...")
    if len(values) != n:
        raise TargetError(f"targets= has {len(values)} entries for {n} samples; give one per sample")
    return [int(t) for t in values]


def probe(model, rules, spec: Spec, source: Source, tries: int = 16) -> tuple[Plan, tuple, list[str]]:
    """The first sample that loads and explains alone fixes the shape of a sample and
    resolves the spec (unknown layers and events raise here, before anything is written)."""
    reasons = []
    for i in range(min(tries, len(source))):
        try:
            x, _ = source.load(i)
        except Exception as e:  # noqa: BLE001 — a user's dataset may raise anything; recorded, then reported
            reasons.append(f"{source.ids[i]}: {type(e).__name__}: {e}")
            continue
        xb = x.unsqueeze(0).to(dtype=model_dtype(model), device=model_device(model))
        try:
            with torch.no_grad():
                target = int(model(xb).reshape(1, -1).argmax())
            m = nrm.explain(model, xb, target=target, rules=rules)
        except (nrm.ZeroOutputError, nrm.NonFiniteError) as e:
            reasons.append(f"{source.ids[i]}: {type(e).__name__}")
            continue
        except (RuntimeError, nrm.ShapeError) as e:
            raise DatasetError(f"sample {source.ids[i]!r} of shape {tuple(x.shape)} does not fit the model: "
                               f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
        return plan_for(m, spec, model), tuple(x.shape), reasons
    raise DatasetError(f"none of the first {min(tries, len(source))} samples can be explained: {'; '.join(reasons)}")


def model_dtype(model) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def model_device(model) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def empty_reductions(plan: Plan, spec: Spec) -> Reductions:
    """The reductions a run keeps, empty: f, the absorbed mass per layer (moments and a
    histogram), the laws' worst residuals and histograms, per channel of each of ``layers``
    the moments of its relevance and its top samples, each peer's worst deviation, and the
    moments of each selection curve (its mean over the dataset, with a band of one standard
    deviation)."""
    n = len(plan.canonical)
    out = {"f": Moments(), "absorbed": Moments((n,)), "absorbed_histogram": Histogram(ABSORBED_EDGES, (n,))}
    for law in spec.laws:
        out[f"{law.lower()}_residual"] = Extreme()
        out[f"{law.lower()}_histogram"] = Histogram(RESIDUAL_EDGES)
    for name in spec.layers:
        out[f"channels/{name}"] = Moments((plan.channels[name],))
        out[f"channel_top/{name}"] = TopK(plan.channels[name], spec.channel_top_k)
    for key in spec.explainers:
        out[f"peer/{key}"] = Extreme()
    for layer, ks in plan.selection.items():
        for r in spec.rankings():
            for metric in ("mse", "smape"):
                out[f"selection/{layer}/{r}/{metric}"] = Moments((len(ks),))
    return Reductions(out)


def reduce_batch(plan: Plan, spec: Spec, done: Explained, rows: np.ndarray) -> Reductions:
    """The reductions of one batch's explained samples (``rows``: their dataset rows)."""
    red = empty_reductions(plan, spec)
    if not len(rows):
        return red
    c = done.columns
    red["f"].add(c["f"])
    absorbed = np.stack([c[f"absorbed/{name}"] for name in plan.canonical], 1)
    red["absorbed"].add(absorbed)
    red["absorbed_histogram"].add(absorbed)
    for law in spec.laws:
        values = np.asarray([np.nan if v is None else v for v in c[f"{law.lower()}_residual"]], dtype=np.float64)
        keep = ~np.isnan(values) | np.asarray([v is not None for v in c[f"{law.lower()}_residual"]])
        red[f"{law.lower()}_residual"].add(values[keep], rows[keep])
        red[f"{law.lower()}_histogram"].add(values[keep])
    for name in spec.layers:
        red[f"channels/{name}"].add(c[f"channels/{name}"])
        red[f"channel_top/{name}"].add(c[f"channels/{name}"], rows)
    for key in spec.explainers:
        red[f"peer/{key}"].add(c[f"peer/{key}"], rows)
    for layer in plan.selection:
        for r in spec.rankings():
            for metric in ("mse", "smape"):
                red[f"selection/{layer}/{r}/{metric}"].add(c[f"selection/{layer}/{r}/{metric}"])
    return red


@dataclass
class Batch:
    """One batch as read: its rows, the samples that loaded (stacked), their labels, and
    the reason for each row that did not load or has the wrong shape."""

    rows: list[int]
    loaded: list[int]
    x: torch.Tensor | None
    labels: dict[int, int | None]
    errors: dict[int, str]


def read_batch(source: Source, rows: list[int], shape: tuple, dtype, device) -> Batch:
    xs, loaded, labels, errors = [], [], {}, {}
    for r in rows:
        try:
            x, label = source.load(r)
        except Exception as e:  # noqa: BLE001 — a corrupt file, a user's dataset raising: the row's error
            errors[r] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            continue
        if tuple(x.shape) != shape:
            errors[r] = f"ShapeError: the sample has shape {tuple(x.shape)}, the run's samples have {shape}"
            continue
        if not x.is_floating_point():
            errors[r] = f"DtypeMismatchError: the sample is {x.dtype}, not floating point"
            continue
        xs.append(x)
        loaded.append(r)
        labels[r] = label
    x = torch.stack(xs).to(dtype=dtype, device=device) if xs else None
    return Batch(rows, loaded, x, labels, errors)


def prefetched(source: Source, batches: list[list[int]], shape, dtype, device, ahead: int):
    """The batches read on a thread, ``ahead`` of the one being explained."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nrm-run-read") as pool:
        pending: deque = deque()
        it = iter(batches)
        try:
            for rows in it:
                pending.append(pool.submit(read_batch, source, rows, shape, dtype, device))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def progress_bar(total: int, done: int, enabled: bool | None):
    """A tqdm bar over samples on stderr (rate and ETA); by default only on a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, initial=done, unit="sample", desc="nrm run", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def table_of(batch: Batch, done: Explained, errors: dict[int, str], ids: list[str], schema: pa.Schema,
             constants: dict) -> pa.Table:
    """One row per row of the batch: results for the explained, nulls and the reason for the
    others. Built column by column from the result arrays (no Python loop over values)."""
    at = {batch.loaded[p]: j for j, p in enumerate(done.positions)}
    pick = np.asarray([at.get(r, -1) for r in batch.rows], dtype=np.int64)
    ok = pick >= 0
    per_row = {"id": [ids[r] for r in batch.rows], "row": np.asarray(batch.rows, dtype=np.int64),
               "status": ["ok" if o else "error" for o in ok.tolist()],
               "error": [None if o else errors[r] for r, o in zip(batch.rows, ok.tolist())],
               "label": [batch.labels.get(r) for r in batch.rows]}
    columns = []
    for field in schema:
        name = field.name
        if name in per_row:
            columns.append(pa.array(per_row[name], type=field.type))
        elif name in constants:
            columns.append(pa.array([constants[name]] * len(pick), type=field.type))
        elif name not in done.columns:
            columns.append(pa.nulls(len(pick), type=field.type))
        else:
            columns.append(_column(done.columns[name], pick, ok, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _column(value, pick: np.ndarray, ok: np.ndarray, kind: pa.DataType) -> pa.Array:
    """The column of one result: row i holds ``value[pick[i]]``, null where ``ok[i]`` is False."""
    if not isinstance(value, np.ndarray):
        return pa.array([value[j] if o else None for j, o in zip(pick.tolist(), ok.tolist())], type=kind)
    taken = value[pick[ok]]
    if value.ndim == 1:
        full = np.zeros(len(pick), dtype=value.dtype)
        full[ok] = taken
        return pa.array(full, mask=~ok).cast(kind)
    width = int(np.prod(value.shape[1:]))
    offsets = np.concatenate([[0], np.cumsum(np.where(ok, width, 0))]).astype(np.int32)
    items = pa.array(taken.reshape(-1)).cast(kind.value_type)
    return pa.ListArray.from_arrays(pa.array(offsets), items, type=kind, mask=pa.array(~ok))
