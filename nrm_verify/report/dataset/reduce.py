"""Reductions over a dataset that merge: each is computed per batch in the same pass as the
per-sample results, saved with its batch, and merged across batches, shards and runs.

* :class:`Moments` — count, mean and the sum of squared deviations M2 of a vector per sample
  (absorbed mass per layer, relevance per channel), merged by Chan, Golub and LeVeque's
  pairwise formula (*Updating formulae and a pairwise algorithm for computing sample
  variances*, 1979)::

      n = n_a + n_b,   mean = (n_a·mean_a + n_b·mean_b) / n,
      M2 = M2_a + M2_b + δ² · n_a·n_b / n,   δ = mean_b − mean_a.

  Written symmetrically, the merge is commutative bitwise; it is associative to round-off
  only (a few ulps of the mean's and M2's magnitude; the tests state 1e-12 relative).
* :class:`Histogram` — counts in fixed bins (plus below, above and NaN): integer sums, so
  merging is exact in any order.
* :class:`TopK` — per channel the k samples with the largest value, ties broken by the
  smaller row: a selection under a total order, so merging is exact in any order
  (CRP's relevance maximization: the reference samples where each channel is most relevant).
* :class:`Extreme` — the largest value and its row (a law's worst residual): exact.

:class:`Reductions` holds named reducers; ``merge`` combines two of the same layout; the JSON
form (``to_dict``) keeps every float exactly (Python writes floats by ``repr``, which reads
back to the same double).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _floats(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


class Moments:
    """Count, mean and M2 = Σ (x − mean)² of a value of shape ``shape`` per sample;
    ``variance`` is M2 / n (population), ``sample_variance`` M2 / (n − 1)."""

    kind = "moments"

    def __init__(self, shape: tuple[int, ...] = ()):
        self.shape = tuple(shape)
        self.count = 0
        self.mean = np.zeros(self.shape)
        self.m2 = np.zeros(self.shape)

    def add(self, values, rows=None) -> None:
        """Fold in a batch ``values`` (B, *shape) of finite numbers."""
        values = _floats(values).reshape((-1,) + self.shape)
        if not values.shape[0]:
            return
        if not np.isfinite(values).all():
            raise ValueError("Moments take finite values only (a sample with NaN or Inf is an error row)")
        batch = Moments(self.shape)
        batch.count = values.shape[0]
        batch.mean = values.mean(0)
        batch.m2 = ((values - batch.mean) ** 2).sum(0)
        merged = self.merge(batch)
        self.count, self.mean, self.m2 = merged.count, merged.mean, merged.m2

    def merge(self, other: Moments) -> Moments:
        _same(self, other, self.shape == other.shape)
        out = Moments(self.shape)
        n = self.count + other.count
        out.count = n
        if n == 0:
            return out
        if self.count == 0 or other.count == 0:
            src = other if self.count == 0 else self
            out.mean, out.m2 = src.mean.copy(), src.m2.copy()
            return out
        delta = other.mean - self.mean
        out.mean = (self.count * self.mean + other.count * other.mean) / n
        out.m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / n)
        return out

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.count if self.count else np.full(self.shape, np.nan)

    @property
    def sample_variance(self) -> np.ndarray:
        return self.m2 / (self.count - 1) if self.count > 1 else np.full(self.shape, np.nan)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "count": self.count,
                "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> Moments:
        out = cls(tuple(d["shape"]))
        out.count = int(d["count"])
        out.mean = _floats(d["mean"]).reshape(out.shape)
        out.m2 = _floats(d["m2"]).reshape(out.shape)
        return out


class Histogram:
    """Counts of a value of shape ``shape`` per sample in the bins [e_i, e_{i+1}) of
    ``edges`` (the last bin closed), and per element the counts below, above and NaN."""

    kind = "histogram"

    def __init__(self, edges, shape: tuple[int, ...] = ()):
        self.edges = _floats(edges)
        if self.edges.ndim != 1 or self.edges.size < 2 or not (np.diff(self.edges) > 0).all():
            raise ValueError(f"histogram edges must be at least two increasing numbers, got {edges!r:.80}")
        self.shape = tuple(shape)
        bins = self.edges.size - 1
        self.counts = np.zeros(self.shape + (bins,), dtype=np.int64)
        self.below = np.zeros(self.shape, dtype=np.int64)
        self.above = np.zeros(self.shape, dtype=np.int64)
        self.nan = np.zeros(self.shape, dtype=np.int64)

    def add(self, values, rows=None) -> None:
        values = _floats(values).reshape((-1,) + self.shape)
        bins = self.edges.size - 1
        self.nan += np.isnan(values).sum(0)
        self.below += (values < self.edges[0]).sum(0)
        self.above += (values > self.edges[-1]).sum(0)
        inside = (values >= self.edges[0]) & (values <= self.edges[-1])
        index = np.clip(np.searchsorted(self.edges, values, side="right") - 1, 0, bins - 1)
        onehot = (index[..., None] == np.arange(bins)) & inside[..., None]
        self.counts += onehot.sum(0)

    def merge(self, other: Histogram) -> Histogram:
        _same(self, other, self.shape == other.shape and np.array_equal(self.edges, other.edges))
        out = Histogram(self.edges, self.shape)
        for name in ("counts", "below", "above", "nan"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "edges": self.edges.tolist(),
                "counts": self.counts.tolist(), "below": self.below.tolist(), "above": self.above.tolist(),
                "nan": self.nan.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> Histogram:
        out = cls(d["edges"], tuple(d["shape"]))
        out.counts = np.asarray(d["counts"], dtype=np.int64).reshape(out.counts.shape)
        for name in ("below", "above", "nan"):
            setattr(out, name, np.asarray(d[name], dtype=np.int64).reshape(out.shape))
        return out


class TopK:
    """Per channel the ``k`` rows with the largest value (ties: the smaller row first);
    ``values`` and ``rows`` are (channels, k), padded with −inf and −1 while fewer than k
    samples were seen."""

    kind = "topk"

    def __init__(self, channels: int, k: int):
        if k < 1 or channels < 1:
            raise ValueError(f"TopK needs channels >= 1 and k >= 1, got {channels}, {k}")
        self.channels, self.k = channels, k
        self.values = np.full((channels, k), -np.inf)
        self.rows = np.full((channels, k), -1, dtype=np.int64)

    def add(self, values, rows) -> None:
        values = _floats(values).reshape(-1, self.channels)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not np.isfinite(values).all():
            raise ValueError("TopK takes finite values only (a sample with NaN or Inf is an error row)")
        batch = TopK(self.channels, self.k)
        batch.values = values.T
        batch.rows = np.broadcast_to(rows, batch.values.shape).copy()
        merged = self.merge(batch)
        self.values, self.rows = merged.values, merged.rows

    def merge(self, other: TopK) -> TopK:
        _same(self, other, self.channels == other.channels and self.k == other.k)
        values = np.concatenate([self.values, other.values], 1)
        rows = np.concatenate([self.rows, other.rows], 1)
        # a total order: larger value first, then smaller row; padding (−inf, −1) sorts last
        key_rows = np.where(rows < 0, np.iinfo(np.int64).max, rows)
        order = np.lexsort((key_rows, -values), axis=1)[:, : self.k]
        out = TopK(self.channels, self.k)
        width = order.shape[1]
        out.values[:, :width] = np.take_along_axis(values, order, 1)
        out.rows[:, :width] = np.take_along_axis(rows, order, 1)
        return out

    def to_dict(self) -> dict:
        kept = self.rows >= 0
        return {"kind": self.kind, "channels": self.channels, "k": self.k,
                "rows": [r[m].tolist() for r, m in zip(self.rows, kept)],
                "values": [v[m].tolist() for v, m in zip(self.values, kept)]}

    @classmethod
    def from_dict(cls, d: Mapping) -> TopK:
        out = cls(int(d["channels"]), int(d["k"]))
        for c, (rows, values) in enumerate(zip(d["rows"], d["values"])):
            out.rows[c, : len(rows)] = rows
            out.values[c, : len(values)] = values
        return out


class Extreme:
    """The largest value seen (NaN counts as largest: a law's residual that is not a
    number is its worst case) and its row (ties: the smaller row)."""

    kind = "extreme"

    def __init__(self):
        self.value, self.row = -np.inf, -1

    def add(self, values, rows) -> None:
        values = _floats(values).reshape(-1)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not len(values):
            return
        # the batch's best under merge's order (NaN first, then the largest, then the smaller row), merged once
        nan = np.isnan(values)
        best = np.flatnonzero(nan) if nan.any() else np.flatnonzero(values == values.max())
        other = Extreme()
        at = best[np.argmin(rows[best])]
        other.value, other.row = float(values[at]), int(rows[at])
        merged = self.merge(other)
        self.value, self.row = merged.value, merged.row

    def merge(self, other: Extreme) -> Extreme:
        _same(self, other, True)
        out = Extreme()

        def key(e):
            big = np.inf if np.isnan(e.value) else e.value
            return (np.isnan(e.value), big, -e.row if e.row >= 0 else -np.inf)

        best = max((self, other), key=key)
        out.value, out.row = best.value, best.row
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": None if self.row < 0 else _json_float(self.value), "row": self.row}

    @classmethod
    def from_dict(cls, d: Mapping) -> Extreme:
        out = cls()
        if d["row"] >= 0:
            out.value, out.row = (float("nan") if d["value"] == "nan" else float(d["value"])), int(d["row"])
        return out


def _json_float(v: float):
    return "nan" if np.isnan(v) else v


REDUCERS = {cls.kind: cls for cls in (Moments, Histogram, TopK, Extreme)}


def _same(a, b, fits: bool) -> None:
    if type(a) is not type(b) or not fits:
        raise ValueError(f"cannot merge {type(a).__name__} with {type(b).__name__} of another layout")


class Reductions:
    """Named reducers (``reductions["absorbed"]``), merged name by name."""

    def __init__(self, reducers: Mapping[str, object] | None = None):
        self.reducers = dict(reducers or {})

    def __getitem__(self, name: str):
        return self.reducers[name]

    def __contains__(self, name: str) -> bool:
        return name in self.reducers

    def names(self) -> list[str]:
        return sorted(self.reducers)

    def merge(self, other: Reductions) -> Reductions:
        if self.names() != other.names():
            raise ValueError(f"cannot merge reductions of different layouts: {self.names()} and {other.names()}")
        return Reductions({n: self.reducers[n].merge(other.reducers[n]) for n in self.names()})

    def to_dict(self) -> dict:
        return {n: self.reducers[n].to_dict() for n in self.names()}

    @classmethod
    def from_dict(cls, d: Mapping) -> Reductions:
        return cls({n: REDUCERS[v["kind"]].from_dict(v) for n, v in d.items()})


def merge_all(parts: list[Reductions]) -> Reductions:
    """The merge of ``parts`` from left to right (at least one)."""
    if not parts:
        raise ValueError("merge_all needs at least one Reductions")
    out = parts[0]
    for p in parts[1:]:
        out = out.merge(p)
    return out
