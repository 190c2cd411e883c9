"""Where the samples of a run come from: :func:`as_source` turns what the user gives into a
:class:`Source` — a fixed, ordered list of sample ids, and ``load(i)`` → (one sample without
its batch dimension, its label or None).

* a tensor (N, …), or a pair (x, labels) of tensors;
* a map-style ``torch.utils.data.Dataset`` (``len`` and ``ds[i]``) whose items are a tensor
  or a tuple (tensor, label, …);
* a folder of images (``.png``, ``.jpg``, …; read with Pillow) or ``.npy`` arrays, found
  recursively in sorted order; when every file sits in a sub-folder, the sub-folders are
  the classes (sorted, as torchvision's ``ImageFolder`` numbers them) and give the labels;
* a Parquet index: a ``.parquet`` file with a ``path`` column (relative to the index's
  folder or absolute) and optional ``id`` and ``label`` columns.

The ids are what a rerun skips by: the index ``"0"``, ``"1"``, … for tensors and datasets,
the path relative to the folder for files, the ``id`` column of an index. Reading one
sample may fail (a corrupt file, an item of the wrong type): that sample's row records the
error; a dataset that cannot be read at all is a :class:`DatasetError`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from nrm_verify.report.dataset.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Source(ABC):
    """An ordered, indexable set of samples with stable string ids."""

    kind = "source"

    def __init__(self, ids: list[str], where: str = ""):
        if len(set(ids)) != len(ids):
            raise DatasetError(f"the {self.kind} has repeated sample ids; every sample needs its own id")
        self.ids = ids
        self.where = where

    def __len__(self) -> int:
        return len(self.ids)

    @abstractmethod
    def load(self, i: int) -> tuple[torch.Tensor, int | None]:
        """Sample ``i`` without its batch dimension, and its label (None: the source has none)."""

    def describe(self) -> dict:
        digest = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()
        return {"kind": self.kind, "where": self.where, "samples": len(self.ids), "ids_sha256": digest}


def _label(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        return int(value.item())
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    raise DatasetError(f"{where}: a label must be an int, got {type(value).__name__} {value!r:.40}")


class TensorSource(Source):
    kind = "tensor"

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        if x.dim() < 2 or not x.is_floating_point():
            raise DatasetError(f"a tensor dataset is (N, ...) of floats, got {x.dtype} of shape {tuple(x.shape)}")
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.shape != (x.shape[0],) or labels.is_floating_point() \
                    or labels.dtype == torch.bool:
                raise DatasetError(f"the labels of a tensor dataset are an integer tensor (N,) = ({x.shape[0]},), "
                                   f"got {getattr(labels, 'dtype', type(labels).__name__)} of shape "
                                   f"{tuple(getattr(labels, 'shape', ()))}")
        super().__init__([str(i) for i in range(x.shape[0])], f"tensor {tuple(x.shape)}")
        self.x, self.labels = x, labels

    def load(self, i):
        return self.x[i], None if self.labels is None else int(self.labels[i])


class DatasetSource(Source):
    kind = "torch-dataset"

    def __init__(self, dataset):
        try:
            n = len(dataset)
        except TypeError:
            raise DatasetError(f"a {type(dataset).__name__} has no len(): a run needs a map-style dataset "
                               "(len and ds[i]) so that every sample has a fixed id to resume by") from None
        super().__init__([str(i) for i in range(n)], type(dataset).__name__)
        self.dataset = dataset

    def load(self, i):
        item = self.dataset[i]
        label = None
        if isinstance(item, (tuple, list)) and item:
            item, label = item[0], (item[1] if len(item) > 1 else None)
        if not isinstance(item, torch.Tensor):
            raise DatasetError(f"item {i} is a {type(item).__name__}, not a tensor (or a tuple (tensor, label))")
        return item, _label(label, f"item {i}")


class FileSource(Source):
    """Files (images or .npy arrays), preprocessed alike: resized to ``size`` × ``size``
    (images only; None keeps their size), scaled to [0, 1] and, with
    ``normalize="imagenet"``, standardized with ImageNet's mean and std."""

    kind = "files"

    def __init__(self, paths: list[Path], ids: list[str], labels: list[int | None], where: str, *,
                 size: int | None, normalize: str, channels: int):
        super().__init__(ids, where)
        self.paths, self.labels = paths, labels
        self.size, self.normalize, self.channels = size, normalize, channels

    def load(self, i):
        path = self.paths[i]
        if path.suffix.lower() in ARRAY_SUFFIXES:
            x = torch.from_numpy(np.load(path, allow_pickle=False))
            if not x.is_floating_point():
                raise DatasetError(f"{path.name}: holds {x.dtype}, not floats")
            return x, self.labels[i]
        x = read_image(path, self.channels)
        if self.size is not None:
            x = torch.nn.functional.interpolate(x.unsqueeze(0), size=(self.size, self.size), mode="bilinear",
                                                antialias=True, align_corners=False)[0]
        if self.normalize == "imagenet" and x.shape[0] == 3:
            x = (x - torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)) / torch.tensor(IMAGENET_STD).reshape(3, 1, 1)
        return x, self.labels[i]


def read_image(path: Path, channels: int = 3) -> torch.Tensor:
    """An image file as (C, H, W) floats in [0, 1] (C = 1 grey, else RGB), read with Pillow."""
    try:
        from PIL import Image
    except ModuleNotFoundError:
        raise DatasetError(f"{path.name}: reading images needs Pillow (pip install pillow); or give .npy arrays "
                           "or tensors") from None
    with Image.open(path) as im:
        a = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def folder_source(folder: Path, *, size: int | None, normalize: str, channels: int) -> FileSource:
    suffixes = IMAGE_SUFFIXES + ARRAY_SUFFIXES
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise DatasetError(f"the folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) or .npy arrays")
    rel = [p.relative_to(folder) for p in files]
    labels: list[int | None] = [None] * len(files)
    if all(len(r.parts) == 2 for r in rel):
        classes = sorted({r.parts[0] for r in rel})
        labels = [classes.index(r.parts[0]) for r in rel]
    return FileSource(files, [r.as_posix() for r in rel], labels, str(folder), size=size, normalize=normalize,
                      channels=channels)


def parquet_source(index: Path, *, size: int | None, normalize: str, channels: int) -> FileSource:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(index)
    except Exception as e:  # noqa: BLE001 — pyarrow's many error types for a file that is not Parquet
        raise DatasetError(f"{index}: cannot read it as a Parquet index ({type(e).__name__}: {e})") from None
    if "path" not in table.column_names:
        raise DatasetError(f"the Parquet index {index} has no 'path' column (it has {table.column_names})")
    if not table.num_rows:
        raise DatasetError(f"the Parquet index {index} has no rows")
    paths = [Path(p) if Path(p).is_absolute() else index.parent / p for p in table.column("path").to_pylist()]
    ids = [str(i) for i in table.column("id").to_pylist()] if "id" in table.column_names else \
        [str(p) for p in table.column("path").to_pylist()]
    labels = [_label(v, f"{index} row {i}") for i, v in enumerate(table.column("label").to_pylist())] \
        if "label" in table.column_names else [None] * len(paths)
    return FileSource(paths, ids, labels, str(index), size=size, normalize=normalize, channels=channels)


def as_source(data, *, size: int | None = None, normalize: str = "none", channels: int = 3) -> Source:
    """What a run reads: a :class:`Source` from a tensor, a pair (x, labels), a map-style
    dataset, a folder or a ``.parquet`` index; :class:`DatasetError` for anything else."""
    if normalize not in ("imagenet", "none"):
        raise DatasetError(f"normalize= takes 'imagenet' or 'none', got {normalize!r}")
    if isinstance(data, Source):
        return data
    if isinstance(data, torch.Tensor):
        return TensorSource(data)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return TensorSource(*data)
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            return folder_source(path, size=size, normalize=normalize, channels=channels)
        if path.is_file() and path.suffix == ".parquet":
            return parquet_source(path, size=size, normalize=normalize, channels=channels)
        raise DatasetError(f"{data}: no such folder or .parquet index")
    if hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, list, tuple, dict)):
        return DatasetSource(data)
    raise DatasetError(f"a run reads a tensor (N, ...), a pair (x, labels), a map-style torch Dataset, a folder of "
                       f"images or a .parquet index; got {type(data).__name__}")
