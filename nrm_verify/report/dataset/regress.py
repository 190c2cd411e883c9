"""Regression testing at dataset scale: a run's folder is the record, :func:`compare_run`
explains the same samples again with an explainer and compares them sample by sample.

The record is a run whose ``full=`` holds the compared layer (``arrays.zarr/marginal/<layer>``,
m_l per sample). The explainer — an ``nrm-verify snapshot`` spec (``nrm:EpsilonGammaFlat``,
``zennit:…``, ``path/file.py:function``), a :class:`~nrm_verify.peers.Explainer`, or any
``explainer(model, x, target)`` — runs on the run's samples in batches, with the targets the
run recorded. What it returns is compared with what the run recorded:

* ``marginal/<layer>`` or a bare tensor: with m_l;
* ``<layer>`` (the :class:`~nrm_verify.peers.Explainer` convention) or ``relevance/<layer>``:
  with R_l = f · m_l, f the run's recorded f_c(x) — except for an explainer whose ``start`` is
  ``"one-hot"`` (the ``zennit:…`` specs: R_c = 1 at the output, so R / f_c = m_l): with m_l.

Per sample, as the snapshots do: deviation = max |current − recorded| / scale, scale =
max |recorded|; it passes when max |current − recorded| ≤ atol + rtol · scale. The
comparison keeps every sample's deviation and the ``worst`` ones (largest first, ties: the
smaller row), and :meth:`RunComparison.write` writes them with the worst samples' heatmaps
side by side (recorded, current, difference).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nrm_verify.report.dataset.current import MARGINAL, RELEVANCE, local_explained
from nrm_verify.report.dataset.errors import RunMismatchError, SpecError
from nrm_verify.report.dataset.sources import as_source
from nrm_verify.report.dataset.store import model_fingerprint, read_run


@dataclass
class SampleDeviation:
    """One sample's comparison: its id and row, deviation (relative to the recorded scale), the
    largest absolute difference, the tolerance it had, and whether it passed."""

    id: str
    row: int
    deviation: float
    difference: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.difference <= self.tolerance)


@dataclass
class RunComparison:
    """Every compared sample (row order), the worst ones, and the arrays of the worst."""

    run: Path
    layer: str
    explainer: str
    quantity: str
    samples: list[SampleDeviation]
    worst: list[SampleDeviation]
    skipped: list[str] = field(default_factory=list)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def failures(self) -> list[SampleDeviation]:
        return [s for s in self.samples if not s.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        head = (f"{len(self.samples)} samples of {self.run} compared on {self.layer} ({self.quantity}) with "
                f"{self.explainer}: {len(self.failures)} beyond tolerance"
                + (f", {len(self.skipped)} error rows skipped" if self.skipped else ""))
        lines = [head, "worst:"] + [f"  {s.id} (row {s.row}): deviation {s.deviation:.3g}"
                                    f"{'' if s.ok else '  FAIL'}" for s in self.worst]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def one(s: SampleDeviation) -> dict:
            return {"id": s.id, "row": s.row, "deviation": s.deviation, "difference": s.difference,
                    "tolerance": s.tolerance, "ok": s.ok}

        return {"run": str(self.run), "layer": self.layer, "explainer": self.explainer, "quantity": self.quantity,
                "ok": self.ok, "samples": len(self.samples), "failures": len(self.failures),
                "skipped": self.skipped, "worst": [one(s) for s in self.worst]}

    def write(self, out: str | os.PathLike) -> Path:
        """``out/comparison.json`` (summary and worst), ``out/deviations.parquet`` (every
        sample), ``out/worst.png`` (the worst samples' heatmaps side by side) and
        ``out/comparison.html``; returns the HTML's path."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from nrm_verify.report.dataset.report import html_page, worst_figure

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        columns = {"id": [s.id for s in self.samples], "row": [s.row for s in self.samples],
                   "deviation": [s.deviation for s in self.samples],
                   "difference": [s.difference for s in self.samples], "ok": [s.ok for s in self.samples]}
        pq.write_table(pa.table(columns), out / "deviations.parquet")
        figure = worst_figure(self)
        if figure is not None:
            figure.savefig(out / "worst.png", dpi=90, bbox_inches="tight", facecolor="white")
        rows = "".join(f"<tr><td>{html.escape(s.id)}</td><td>{s.row}</td><td>{s.deviation:.3g}</td>"
                       f"<td>{'ok' if s.ok else 'FAIL'}</td></tr>" for s in self.worst)
        head = html.escape(self.summary().splitlines()[0])
        body = (f"<p>{head}</p><table><tr><th>id</th><th>row</th><th>deviation</th>"
                f"<th></th></tr>{rows}</table>" + ('<img src="worst.png">' if figure is not None else ""))
        (out / "comparison.html").write_text(html_page(f"comparison of {self.run.name}", body))
        return out / "comparison.html"


def _explainer(explainer) -> tuple[Callable, str]:
    if isinstance(explainer, str):
        from nrm_verify.report.snapshots import SnapshotError, load_explainer
        try:
            return load_explainer(explainer), explainer
        except SnapshotError as e:
            raise SpecError(str(e)) from None
    if not callable(explainer):
        raise SpecError(f"explainer= takes a spec or a function (model, x, target), got {type(explainer).__name__}")
    return explainer, getattr(explainer, "spec", None) or repr(explainer)


def compare_run(folder: str | os.PathLike, model: torch.nn.Module, data, explainer, *, layer: str = "input",
                worst: int = 5, batch_size: int = 32, rtol: float | None = None, atol: float = 0.0,
                size: int | None = None, normalize: str = "none", engine: str = "local", address: str | None = None,
                concurrency: int = 2, worker_cpus: float = 1.0, worker_gpus: float = 0.0) -> RunComparison:
    """Explain the samples of the run in ``folder`` (``data``, the same dataset; ``model``, the
    same model: RunMismatchError otherwise) with ``explainer`` and compare with the run's
    recorded ``arrays.zarr/marginal/<layer>``, sample by sample (see the module's docstring).
    ``rtol`` defaults by the recorded dtype (float64 1e-10, float32 1e-5). Error rows of the
    run are skipped and listed.

    ``engine="ray"`` explains on Ray Data workers (:mod:`~nrm_verify.report.dataset.ray_compare`:
    the run's Parquet rows read by ``ray.data.read_parquet``, ``concurrency`` workers of
    ``worker_cpus`` CPUs and ``worker_gpus`` GPUs, on the cluster at ``address`` or a local Ray);
    Ray Data forms the batches, so the explanations agree with the local engine's to round-off
    (another batch composition), and so do the deviations."""
    import zarr

    from nrm_verify.report.dataset.runner import check_engine_options
    from nrm_verify.report.snapshots import DEFAULT_RTOL

    manifest, store = read_run(folder)
    fn, label = _explainer(explainer)
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 1 or isinstance(batch_size, bool) \
            or not isinstance(batch_size, int) or batch_size < 1:
        raise SpecError(f"worst= and batch_size= take whole numbers >= 1, got {worst!r}, {batch_size!r}")
    check_engine_options(engine, address, concurrency, worker_cpus, worker_gpus)
    if model_fingerprint(model) != manifest["fingerprint"]["model"]:
        raise RunMismatchError(f"{folder} was run with another model (its parameters or structure differ)")
    source = as_source(data, size=size, normalize=normalize)
    recorded_ids = manifest["fingerprint"]["dataset"]["ids_sha256"]
    if source.describe()["ids_sha256"] != recorded_ids:
        raise RunMismatchError(f"{folder} was run on another dataset (its sample ids differ)")
    if f"marginal/{layer}" not in manifest.get("arrays", {}):
        raise SpecError(f"{folder} recorded no marginal of {layer!r} (its run's full= was "
                        f"{sorted(manifest.get('arrays', {}))}); rerun it with full=[{layer!r}]")
    recorded = zarr.open_group(str(Path(folder) / "arrays.zarr"), mode="r")[f"marginal/{layer}"]
    rtol = DEFAULT_RTOL.get(str(recorded.dtype), 1e-5) if rtol is None else rtol
    table = store.table().to_pylist()
    ok_rows = {r["row"]: r for r in table if r["status"] == "ok"}
    if engine == "ray" and ok_rows:
        from nrm_verify.report.dataset.ray_compare import ray_explained
        pieces = ray_explained(store, model, source, fn, layer, batch_size, address=address,
                               concurrency=concurrency, worker_cpus=worker_cpus, worker_gpus=worker_gpus)
    else:
        pieces = local_explained(list(ok_rows.values()), model, source, fn, layer, batch_size)
    samples, kept, quantity = [], {}, MARGINAL
    with closing(pieces):  # a Ray started for the comparison stops when it ends, however it ends
        for rows, current, quantity in pieces:
            for i, row in enumerate(rows):
                r = ok_rows[row]
                old = np.asarray(recorded[row], dtype=np.float64)
                if quantity == RELEVANCE:
                    old = old * r["f"]
                new = current[i].reshape(old.shape)
                diff = float(np.abs(new - old).max())
                scale = float(np.abs(old).max())
                samples.append(SampleDeviation(r["id"], row, diff / scale if scale > 0 else diff, diff,
                                               atol + rtol * scale))
                kept[r["id"]] = (old, new)
            best = {s.id for s in sorted(samples, key=_badness)[:worst]}
            kept = {k: v for k, v in kept.items() if k in best}          # only the worst samples' arrays are held
    samples.sort(key=lambda s: s.row)
    if len(samples) != len(ok_rows):
        raise RunMismatchError(f"{len(ok_rows)} rows of {folder} are ok but {len(samples)} were compared; its "
                               "samples/ folder changed during the comparison")
    top = sorted(samples, key=_badness)[:worst]
    return RunComparison(Path(folder), layer, label, quantity, samples, top,
                         [r["id"] for r in table if r["status"] != "ok"], {s.id: kept[s.id] for s in top})


def _badness(s: SampleDeviation) -> tuple[float, int]:
    """The worst first (NaN the worst of all), ties: the smaller row."""
    return (-s.deviation if not np.isnan(s.deviation) else -np.inf, s.row)
