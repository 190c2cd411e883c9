"""A dataset run under bad input (issue 16, items 5 and 8): arguments that cannot work are
named errors raised before anything is written, the model untouched; bad samples (NaN or
Inf, f_c(x) = 0, a wrong shape, an item that is not a tensor, a label out of range) are
rows with their reason — no NaN is written and the run goes on."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import zarr

import nrm
from nrm_verify.report.dataset import (
    DatasetError,
    OutputFolderError,
    RunMismatchError,
    SpecError,
    TargetError,
    run,
)
from nrm_verify.zoo.models import mlp, small_cnn

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def model():
    return small_cnn(seed=4)


@pytest.fixture
def x():
    return torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def quiet(model, data, out, **kw):
    return run(model, data, out, progress=False, **kw)


def untouched(model, before: dict) -> bool:
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training


class Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class NoLength(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield torch.zeros(3, 16, 16)


BAD_DATA = [
    ("a list of strings", ["a.png", "b.png"], "got list"),
    ("a number", 7, "got int"),
    ("an iterable dataset without len", NoLength(), "has no len()"),
    ("an integer tensor", torch.zeros(4, 3, 16, 16, dtype=torch.int64), "of floats"),
    ("an empty tensor", torch.zeros(0, 3, 16, 16), "no samples"),
    ("a missing path", "/nonexistent/folder", "no such folder"),
    ("labels of another length", (torch.zeros(4, 3, 16, 16), torch.zeros(3, dtype=torch.int64)), "(N,) = (4,)"),
    ("samples that do not fit the model", torch.zeros(4, 5, 16, 16), "does not fit the model"),
]


@pytest.mark.parametrize("data, words", [c[1:] for c in BAD_DATA], ids=[c[0] for c in BAD_DATA])
def test_a_bad_dataset_is_a_dataset_error_before_anything_is_written(model, data, words, tmp_path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DatasetError, match=words.replace("(", r"\(").replace(")", r"\)")):
        quiet(model, data, tmp_path / "out")
    assert not (tmp_path / "out").exists() and untouched(model, before)


def test_an_empty_folder_and_a_parquet_index_without_paths(model, tmp_path):
    import pyarrow as pa

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        quiet(model, tmp_path / "empty", tmp_path / "out")
    pq.write_table(pa.table({"file": ["a.png"]}), tmp_path / "index.parquet")
    with pytest.raises(DatasetError, match="no 'path' column"):
        quiet(model, tmp_path / "index.parquet", tmp_path / "out")
    assert not (tmp_path / "out").exists()


BAD_TARGETS = [
    ("out of range", [0, 1, 2, 3, 4, 99], "out of range for a model with 10 outputs"),
    ("negative", -1, "out of range"),
    ("float tensor", torch.zeros(6), "integer tensor"),
    ("bool tensor", torch.zeros(6, dtype=torch.bool), "integer tensor"),
    ("2-d tensor", torch.zeros(6, 1, dtype=torch.int64), "integer tensor"),
    ("too few", [1, 2], "2 entries for 6 samples"),
    ("floats in a list", [1.0] * 6, "takes ints"),
    ("a float numpy array", np.zeros(6), "takes integers"),
    ("a numpy array out of range", np.arange(6) * 5, "out of range"),
    ("a word", "largest", "takes None, 'argmax', 'label'"),
    ("labels that the data does not have", "label", "has no label"),
]


@pytest.mark.parametrize("targets, words", [c[1:] for c in BAD_TARGETS], ids=[c[0] for c in BAD_TARGETS])
def test_bad_targets_are_a_target_error(model, x, targets, words, tmp_path):
    if isinstance(targets, str) and targets == "label":  # a per-row problem: each row records it, none is explained
        result = quiet(model, x, tmp_path / "out", targets=targets)
        errors = pq.read_table(tmp_path / "out" / "samples").column("error").to_pylist()
        assert result.errors == 6 and all(words in e and e.startswith("TargetError") for e in errors)
        return
    with pytest.raises(TargetError, match=words):
        quiet(model, x, tmp_path / "out", targets=targets)
    assert not (tmp_path / "out").exists()


def test_a_label_out_of_range_is_that_rows_error(model, x, tmp_path):
    labels = torch.tensor([1, 2, 30, 3, 4, 5])
    result = quiet(model, (x, labels), tmp_path / "out", targets="label")
    rows = pq.read_table(tmp_path / "out" / "samples").sort_by("row").to_pylist()
    assert result.errors == 1 and rows[2]["status"] == "error" and "label 30 is out of range" in rows[2]["error"]
    assert [r["target"] for r in rows if r["status"] == "ok"] == [1, 2, 3, 4, 5]


def no_nan_anywhere(folder) -> bool:
    table = pq.read_table(folder / "samples")
    for name in table.column_names:
        for v in table.column(name).to_pylist():
            values = v if isinstance(v, list) else [v]
            if any(isinstance(u, float) and not math.isfinite(u) for u in values):
                return False
    arrays = zarr.open_group(str(folder / "arrays.zarr"), mode="r") if (folder / "arrays.zarr").exists() else {}
    return all(np.isfinite(arrays[k][:]).all() for k in getattr(arrays, "array_keys", lambda: [])())


def test_bad_samples_are_rows_with_their_reason_and_no_nan_is_written(model, x, tmp_path):
    items = [x[0], x[1].clone().fill_(float("nan")), torch.zeros(3, 8, 8), "not a tensor",
             x[4].clone().index_fill_(0, torch.tensor([1]), float("inf")), (x[5], 2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = quiet(model, Items(items), tmp_path / "out", full=["input"], laws=["L1", "L9"], batch_size=4)
    rows = pq.read_table(tmp_path / "out" / "samples").sort_by("row").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "error", "error", "error", "error", "ok"] and result.errors == 4
    assert rows[1]["error"].startswith("NonFiniteError") and rows[4]["error"].startswith("NonFiniteError")
    assert rows[2]["error"].startswith("ShapeError") and "(3, 8, 8)" in rows[2]["error"]
    assert "not a tensor" in rows[3]["error"] and rows[5]["label"] == 2
    assert all(r["f"] is None and r["l1_residual"] is None for r in rows if r["status"] == "error")
    assert no_nan_anywhere(tmp_path / "out") and untouched(model, before)
    heat = zarr.open_group(str(tmp_path / "out" / "arrays.zarr"), mode="r")["marginal/input"]
    assert not heat[1].any() and heat[0].any()


def test_a_sample_with_a_zero_output_is_a_row_with_zero_output_error(tmp_path):
    net = mlp([4, 6, 3], seed=0, bias=False)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    x[2] = 0.0  # no bias: f_c(0) = 0, the measure is undefined there
    result = quiet(net, x, tmp_path / "out", targets=0, layers=["fc1"])
    rows = pq.read_table(tmp_path / "out" / "samples").sort_by("row").to_pylist()
    assert result.errors == 1 and rows[2]["error"].startswith("ZeroOutputError")
    assert all(r["status"] == "ok" for i, r in enumerate(rows) if i != 2)
    assert result.reductions["f"].count == 4


@pytest.mark.parametrize("what, kwargs, error, words", [
    ("unknown layer", {"layers": ["features.99"]}, nrm.UnknownLayerError, "no layer named 'features.99'"),
    ("unknown full layer", {"full": ["nope"]}, nrm.UnknownLayerError, "no layer named 'nope'"),
    ("unknown conditional layer", {"conditional": {"h": ("nope", nrm.At("features.0", channels=[0]))}},
     nrm.UnknownLayerError, "nope"),
    ("event out of range", {"events": {"e": nrm.At("features.0", channels=[99])}}, nrm.EventIndexError, "99"),
    ("a layer string", {"layers": "input"}, SpecError, "list of names"),
    ("an event that is not one", {"events": {"e": "features.0"}}, SpecError, "nrm events"),
    ("unknown law", {"laws": ["L99"]}, SpecError, "unknown law 'L99'"),
    ("negative top-k", {"top_k": -1}, SpecError, "top_k"),
    ("zero batch", {"batch_size": 0}, SpecError, "batch_size"),
    ("unknown engine", {"engine": "spark"}, SpecError, "engine"),
    ("negative commit seconds", {"commit_seconds": -0.5}, SpecError, "commit_seconds"),
    ("NaN commit seconds", {"commit_seconds": float("nan")}, SpecError, "commit_seconds"),
    ("infinite commit seconds", {"commit_seconds": float("inf")}, SpecError, "commit_seconds"),
    ("commit seconds as text", {"commit_seconds": "1"}, SpecError, "commit_seconds"),
    ("commit seconds as a bool", {"commit_seconds": True}, SpecError, "commit_seconds"),
    ("not an explainer", {"explainers": {"z": object()}}, SpecError, "Explainer"),
])
def test_a_bad_spec_is_named_before_anything_is_written(model, x, tmp_path, what, kwargs, error, words):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=words.replace("(", r"\(")):
        quiet(model, x, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() and untouched(model, before)


def test_a_model_in_training_mode_is_refused_and_stays_so(x, tmp_path):
    net = small_cnn(seed=4).train()
    with pytest.raises(nrm.TrainingModeError):
        quiet(net, x, tmp_path / "out")
    assert net.training and not (tmp_path / "out").exists()


def test_an_unwritable_output_folder(model, x, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("a file")
    for out in (plain, plain / "sub"):
        with pytest.raises(OutputFolderError, match="cannot write into"):
            quiet(model, x, out)


def test_a_folder_of_another_run_is_refused_and_left_as_it_was(model, x, tmp_path):
    quiet(model, x, tmp_path / "out")
    parts = sorted(p.read_bytes() for p in (tmp_path / "out" / "samples").iterdir())
    others = [("model", dict(model=small_cnn(seed=5))), ("rules", dict(rules=nrm.rules.Epsilon(0.1))),
              ("spec", dict(layers=["features.0"])), ("targets", dict(targets=3)),
              ("dataset", dict(data=x[:5]))]
    for key, change in others:
        args = {"model": model, "data": x, **change}
        with pytest.raises(RunMismatchError, match=f"another {key}"):
            quiet(args.pop("model"), args.pop("data"), tmp_path / "out", **args)
    assert sorted(p.read_bytes() for p in (tmp_path / "out" / "samples").iterdir()) == parts
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunMismatchError, match="not empty and holds no run"):
        quiet(model, x, tmp_path / "other")
