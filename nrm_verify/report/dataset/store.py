"""The output folder of a run, in formats that read without nrm::

    OUT/manifest.json              what was run (fingerprint), versions, status, counts, the files
    OUT/samples/part-*.parquet     one row per sample (pyarrow; pandas, polars, DuckDB read the folder);
                                   a part holds one or more consecutive batches
    OUT/arrays.zarr/               the large arrays (whole marginals, conditional heatmaps), shape
                                   (N, *layer shape), at the sample's ``row``, one chunk of one batch
                                   (a file per batch)
    OUT/reductions/part-*.json     the reductions of each batch of the part, a list (merged batch by
                                   batch into reductions.json at the end)
    OUT/reductions.json            the merged reductions (:mod:`~nrm_verify.report.dataset.reduce`)

A part is committed when its Parquet file is renamed into place — after its arrays and its
reductions are written — so a run stopped at any moment leaves only whole batches: a rerun
reads the ids of the committed parts and computes the rest (arrays of an uncommitted batch
are simply written again). A folder that holds a run of another fingerprint is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import zarr

import nrm
from nrm_verify.report.dataset.errors import OutputFolderError, RunMismatchError
from nrm_verify.report.dataset.reduce import Reductions, merge_all

FORMAT = "nrm-run/1"
MANIFEST = "manifest.json"


def model_fingerprint(model: torch.nn.Module) -> dict:
    """The model's class, a hash of its structure (``repr``) and of every parameter and buffer
    (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}",
            "structure_sha256": hashlib.sha256(repr(model).encode()).hexdigest(), "parameters_sha256": h.hexdigest()}


def versions() -> dict:
    import pyarrow

    return {"python": platform.python_version(), "torch": torch.__version__, "nrm": nrm.__version__,
            "numpy": np.__version__, "pyarrow": pyarrow.__version__, "zarr": zarr.__version__}


def schema(canonical: list[str], spec) -> pa.Schema:
    """The columns of ``samples/``; a failed sample has nulls in every result column."""
    fields = [("id", pa.string()), ("row", pa.int64()), ("status", pa.string()), ("error", pa.string()),
              ("target", pa.int64()), ("label", pa.int64()), ("predicted", pa.int64()), ("f", pa.float64())]
    fields += [(f"absorbed/{name}", pa.float64()) for name in canonical]
    if "L1" in spec.laws:
        fields.append(("l1_residual", pa.float64()))
    if "L9" in spec.laws:
        fields += [("l9_residual", pa.float64()), ("l9_note", pa.string())]
    for name in spec.layers:
        fields.append((f"channels/{name}", pa.list_(pa.float64())))
        if spec.top_k:
            fields += [(f"top_k/{name}/index", pa.list_(pa.int64())), (f"top_k/{name}/value", pa.list_(pa.float64()))]
    fields += [(f"event/{k}", pa.float64()) for k in spec.events]
    fields += [(f"peer/{k}", pa.float64()) for k in spec.explainers]
    fields += [(f"selection/{layer}/{r}/{metric}", pa.list_(pa.float64()))
               for layer in spec.selection for r in spec.rankings() for metric in ("mse", "smape")]
    fields += [("torch", pa.string()), ("nrm", pa.string()), ("rules", pa.string()), ("seed", pa.int64()),
               ("device", pa.string()), ("dtype", pa.string())]
    return pa.schema(fields)


class Store:
    """The output folder of one run (see the module's docstring)."""

    def __init__(self, folder: str | os.PathLike, fingerprint: dict):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.samples = self.folder / "samples"
        self.parts = self.folder / "reductions"
        self.manifest_path = self.folder / MANIFEST

    # -- opening ---------------------------------------------------------------------------
    def open(self, extra: dict) -> dict:
        """Create the folder or reopen a run of the same fingerprint; the manifest."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".nrm-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise OutputFolderError(f"cannot write into {self.folder}: {e.strerror or e}") from None
        if self.manifest_path.exists():
            manifest = self._check_same()
        else:
            others = [p.name for p in self.folder.iterdir() if not p.name.startswith(".")]
            if others:
                raise RunMismatchError(f"{self.folder} is not empty and holds no run "
                                       f"({', '.join(sorted(others)[:5])}); give an empty or new folder")
            manifest = {"format": FORMAT, "fingerprint": self.fingerprint, "versions": versions(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
        for folder in (self.samples, self.parts):
            folder.mkdir(exist_ok=True)
        manifest["status"] = "running"
        self.write_manifest(manifest)
        return manifest

    def _check_same(self) -> dict:
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise RunMismatchError(f"{self.manifest_path} cannot be read ({e}); give a new folder") from None
        if manifest.get("format") != FORMAT:
            raise RunMismatchError(f"{self.folder} holds a run of format {manifest.get('format')!r}, not {FORMAT!r}")
        old = manifest.get("fingerprint", {})
        for key in sorted(set(old) | set(self.fingerprint)):
            if old.get(key) != self.fingerprint.get(key):
                raise RunMismatchError(
                    f"{self.folder} holds a run of another {key} ({_short(old.get(key))} there, "
                    f"{_short(self.fingerprint.get(key))} here); results are never mixed: give a new folder")
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        _atomic_write(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    # -- resuming ----------------------------------------------------------------------------
    def committed(self) -> list[Path]:
        return sorted(self.samples.glob("part-*.parquet"))

    def done_ids(self) -> set[str]:
        """The ids of every committed sample; a sample twice is a damaged folder."""
        seen: set[str] = set()
        for part in self.committed():
            ids = pq.read_table(part, columns=["id"]).column("id").to_pylist()
            twice = seen.intersection(ids)
            if twice or len(set(ids)) != len(ids):
                raise RunMismatchError(f"{self.folder}: sample {sorted(twice)[:3]} appears in two parts; the folder "
                                       "was changed by hand — give a new folder")
            seen.update(ids)
        return seen

    # -- writing ------------------------------------------------------------------------------
    def arrays(self, shapes: dict[str, tuple[int, ...]], n: int, dtype: np.dtype, batch_size: int) -> dict:
        """The Zarr arrays (n, *shape), created once: one chunk of ``batch_size`` samples, one
        file per batch, which the batch writes whole (ImageNet's 50 000 samples make 1 563 files
        at batch 32, not 50 000). A reader of one sample decompresses its batch's chunk; chunks
        of one sample inside shards of a batch cost five times as much to write (zarr 3.1's
        sharding codec encodes each inner chunk on its own: 17 ms against 3.3 ms per batch of
        32 × 3 × 32 × 32 float64 here), and on a small model that is a fifth of the run."""
        if not shapes:
            return {}
        group = zarr.open_group(str(self.folder / "arrays.zarr"), mode="a")
        # zarr 3 names it require_array; zarr 2 (the newest on Python 3.10, no sharding) require_dataset.
        # Keys "c.<batch>.0.0" keep every chunk a file of one folder (zarr 3's default nests a folder per index)
        if hasattr(group, "require_array"):
            def require(name, shape):
                return group.require_array(name, shape=(n,) + shape, chunks=(min(batch_size, n),) + shape,
                                           dtype=dtype, fill_value=0,
                                           chunk_key_encoding={"name": "default", "separator": "."})
        else:
            def require(name, shape):
                return group.require_dataset(name, shape=(n,) + shape, chunks=(min(batch_size, n),) + shape,
                                             dtype=dtype, fill_value=0)
        return {name: require(name, tuple(shape)) for name, shape in shapes.items()}

    def commit(self, name: str, table: pa.Table, reductions: list[Reductions]) -> None:
        """Write a part's reductions (one per batch, in row order), then its rows (the rename
        of the rows commits the part)."""
        _atomic_write(self.parts / f"{name}.json", json.dumps([r.to_dict() for r in reductions]))
        tmp = self.samples / f".{name}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.samples / f"{name}.parquet")

    def reductions(self) -> Reductions | None:
        """The merge of the committed batches' reductions, batch by batch in the order of their
        first row (a part holds a list of its batches'; a part written before 2026-12-07, one)."""
        batches = []
        for p in self.committed():
            saved = json.loads((self.parts / f"{p.stem}.json").read_text())
            batches += saved if isinstance(saved, list) else [saved]
        return merge_all([Reductions.from_dict(d) for d in batches]) if batches else None

    def table(self) -> pa.Table:
        """Every committed row, sorted by row."""
        tables = [pq.read_table(p) for p in self.committed()]
        return pa.concat_tables(tables).sort_by("row")

    def statuses(self) -> list[str]:
        """The status of every committed row ("ok" or "error"), in no particular order: one
        column read, not the rows' lists."""
        return [s for p in self.committed() for s in pq.read_table(p, columns=["status"]).column("status").to_pylist()]


def is_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the folder of a dataset run (its manifest says so)."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def read_run(folder: str | os.PathLike) -> tuple[dict, Store]:
    """The manifest and the :class:`Store` of a finished or partial run; RunMismatchError if none."""
    if not is_run(folder):
        raise RunMismatchError(f"{folder} is not the folder of a run (no {MANIFEST} of format {FORMAT})")
    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    return manifest, Store(folder, manifest["fingerprint"])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 90 else text[:87] + "..."
