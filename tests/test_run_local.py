"""Dataset runs on the local engine (issue 16, items 1, 2, 3 and 5): every row equals what
``nrm.explain`` gives the sample alone, the files read without nrm, the reductions equal
those rebuilt from the rows, and an interrupted run resumes to the uninterrupted result,
bitwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import zarr

import nrm
from nrm_verify.peers.explainer import NRMExplainer
from nrm_verify.report.dataset import run
from nrm_verify.zoo.models import small_cnn

RULES = nrm.presets.EpsilonGammaFlat()
EVENT = nrm.At("features.3", channels=[2])


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(10, 3, 16, 16, generator=g)


def full_run(model, data, out, **kw):
    options = dict(rules=RULES, layers=["input", "features.3"], full=["input"], events={"c2": EVENT},
                   conditional={"h2": ("input", EVENT)}, laws=["L1", "L9"], batch_size=4, progress=False)
    options.update(kw)
    return run(model, data, out, **options)


def rows_of(folder: Path) -> list[dict]:
    return pq.read_table(folder / "samples").sort_by("row").to_pylist()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    model = small_cnn(seed=1)
    out = tmp_path_factory.mktemp("run") / "a"
    result = full_run(model, data, out)
    return model, out, result


def test_every_row_is_the_sample_explained_alone(finished, data):
    model, out, result = finished
    assert (result.samples, result.written, result.skipped, result.errors) == (10, 10, 0, 0)
    rows = rows_of(out)
    arrays = zarr.open_group(str(out / "arrays.zarr"), mode="r")
    for row in rows:
        i = row["row"]
        x = data[i:i + 1]
        target = int(model(x).argmax())
        m = nrm.explain(model, x, target=target, rules=RULES)
        assert row["id"] == str(i) and row["status"] == "ok" and row["target"] == row["predicted"] == target
        assert row["f"] == pytest.approx(float(m.f[0]), rel=1e-6)
        assert row["absorbed/features.3"] == pytest.approx(float(m.absorbed("features.3")[0]), abs=1e-6)
        channels = m.marginal("features.3")[0].reshape(16, -1).sum(1)
        np.testing.assert_allclose(row["channels/features.3"], channels.numpy(), atol=1e-6)
        top = m.marginal("features.3")[0].reshape(-1).abs().topk(5).indices.tolist()
        assert row["top_k/features.3/index"] == top
        assert row["event/c2"] == pytest.approx(float(m(EVENT)[0]), abs=1e-6)
        np.testing.assert_allclose(arrays["marginal/input"][i], m.marginal("input")[0].numpy(), atol=1e-7)
        np.testing.assert_allclose(arrays["conditional/h2"][i], m.marginal("input", within=EVENT)[0].numpy(),
                                   atol=1e-7)
        assert row["l1_residual"] < 1e-5 and row["l9_residual"] < 1e-5 and row["l9_note"] == ""
        assert row["torch"] == torch.__version__ and row["nrm"] == nrm.__version__ and row["seed"] == 0
        assert row["rules"] == repr(RULES) and row["device"] == "cpu"


def test_the_reductions_equal_those_rebuilt_from_the_rows(finished):
    _, out, result = finished
    rows = rows_of(out)
    channels = np.array([r["channels/features.3"] for r in rows])
    red = json.loads((out / "reductions.json").read_text())
    moments = red["channels/features.3"]
    assert moments["count"] == 10
    np.testing.assert_allclose(moments["mean"], channels.mean(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.array(moments["m2"]) / 10, channels.var(0), rtol=1e-10, atol=1e-15)
    top = red["channel_top/features.3"]
    for c in range(16):  # relevance maximization: the samples where channel c is most relevant
        order = sorted(range(10), key=lambda i: (-channels[i, c], i))[:8]
        assert top["rows"][c] == order
    absorbed = np.array([[r[f"absorbed/{n}"] for n in result.manifest["layers"]] for r in rows])
    np.testing.assert_allclose(red["absorbed"]["mean"], absorbed.mean(0), rtol=1e-12, atol=1e-15)
    assert np.asarray(red["absorbed_histogram"]["counts"]).sum() + np.sum(red["absorbed_histogram"]["below"]) + \
        np.sum(red["absorbed_histogram"]["above"]) == 10 * len(result.manifest["layers"])
    worst = max(rows, key=lambda r: (r["l1_residual"], -r["row"]))
    assert (red["l1_residual"]["value"], red["l1_residual"]["row"]) == (worst["l1_residual"], worst["row"])


READER = """
import sys, json
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "nrm", "nrm_verify"):
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
sys.meta_path.insert(0, Blocker())
import pyarrow.parquet as pq, zarr
folder = sys.argv[1]
table = pq.read_table(folder + "/samples")
heat = zarr.open_group(folder + "/arrays.zarr", mode="r")["marginal/input"]
manifest = json.load(open(folder + "/manifest.json"))
red = json.load(open(folder + "/reductions.json"))
print(json.dumps({"rows": table.num_rows, "columns": table.column_names, "heat": list(heat.shape),
                  "chunks": list(heat.chunks), "status": manifest["status"],
                  "top": red["channel_top/input"]["rows"][0]}))
"""


def test_the_results_read_with_pyarrow_and_zarr_alone(finished):
    _, out, _ = finished
    done = subprocess.run([sys.executable, "-c", READER, str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["rows"] == 10 and got["heat"] == [10, 3, 16, 16] and got["chunks"] == [4, 3, 16, 16]
    assert got["status"] == "complete" and len(got["top"]) == 8
    assert {"id", "target", "f", "l1_residual", "top_k/input/index", "torch", "seed", "device"} <= set(got["columns"])


class Interrupting(torch.utils.data.Dataset):
    """The samples of a tensor; reading sample ``stop`` raises KeyboardInterrupt once (a Ctrl-C mid-run)."""

    def __init__(self, x, stop=None):
        self.x, self.stop = x, stop

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        if i == self.stop:
            self.stop = None
            raise KeyboardInterrupt
        return self.x[i]


def folder_state(folder: Path) -> tuple:
    table = pq.read_table(folder / "samples").sort_by("row")
    arrays = zarr.open_group(str(folder / "arrays.zarr"), mode="r")
    return table.to_pylist(), (folder / "reductions.json").read_bytes(), \
        {k: arrays[k][:].tobytes() for k in ("marginal/input", "conditional/h2")}


def test_an_interrupted_run_resumes_to_the_uninterrupted_result_bitwise(tmp_path, data):
    model = small_cnn(seed=1)
    whole = full_run(model, Interrupting(data), tmp_path / "whole", laws=["L1"])
    with pytest.raises(KeyboardInterrupt):
        full_run(model, Interrupting(data, stop=6), tmp_path / "cut", laws=["L1"])
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert len(pq.read_table(tmp_path / "cut" / "samples")) == 4  # the first batch (rows 0-3) was committed
    resumed = full_run(model, Interrupting(data), tmp_path / "cut", laws=["L1"])
    assert (resumed.written, resumed.skipped) == (6, 4)
    assert folder_state(tmp_path / "cut") == folder_state(tmp_path / "whole")
    assert whole.reductions.to_dict() == resumed.reductions.to_dict()
    again = full_run(model, Interrupting(data), tmp_path / "cut", laws=["L1"])
    assert again.written == 0 and again.skipped == 10 and len(pq.read_table(tmp_path / "cut" / "samples")) == 10


def test_a_resume_with_another_batch_size_agrees_to_round_off(tmp_path, data):
    model = small_cnn(seed=1)
    whole = full_run(model, Interrupting(data), tmp_path / "whole", laws=["L1"], batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        full_run(model, Interrupting(data, stop=5), tmp_path / "cut", laws=["L1"], batch_size=3)
    resumed = full_run(model, Interrupting(data), tmp_path / "cut", laws=["L1"], batch_size=4)
    assert (resumed.skipped, resumed.written) == (3, 7)
    a, b = rows_of(tmp_path / "whole"), rows_of(tmp_path / "cut")
    assert [r["id"] for r in a] == [r["id"] for r in b] == [str(i) for i in range(10)]
    for ra, rb in zip(a, b):
        assert ra["f"] == pytest.approx(rb["f"], rel=1e-5)
        np.testing.assert_allclose(ra["channels/features.3"], rb["channels/features.3"], atol=1e-6)
    ma, mb = whole.reductions["channels/features.3"], resumed.reductions["channels/features.3"]
    assert ma.count == mb.count == 10
    np.testing.assert_allclose(ma.mean, mb.mean, atol=1e-6)


def test_image_folder_with_class_folders_and_label_targets(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for k in range(3):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "img" / cls / f"{k}.png")
    model = small_cnn(seed=2)
    result = run(model, tmp_path / "img", tmp_path / "out", rules=RULES, targets="label", size=16,
                 normalize="imagenet", batch_size=4, progress=False)
    rows = rows_of(tmp_path / "out")
    assert result.errors == 0
    assert [r["id"] for r in rows] == [f"{c}/{k}.png" for c in ("cat", "dog") for k in range(3)]
    assert [r["target"] for r in rows] == [0, 0, 0, 1, 1, 1] == [r["label"] for r in rows]
    import pyarrow as pa
    index = pa.table({"path": [f"img/{r['id']}" for r in rows][::-1], "id": [f"s{i}" for i in range(6)],
                      "label": [1, 1, 1, 0, 0, 0]})
    pq.write_table(index, tmp_path / "index.parquet")
    by_index = run(model, tmp_path / "index.parquet", tmp_path / "out2", rules=RULES, targets="label", size=16,
                   normalize="imagenet", progress=False)
    rows2 = rows_of(tmp_path / "out2")
    assert by_index.errors == 0 and [r["id"] for r in rows2] == [f"s{i}" for i in range(6)]
    # the same images, explained alike (in other batches: to float32 round-off)
    assert [r["f"] for r in rows2] == pytest.approx([r["f"] for r in rows][::-1], rel=1e-5)


def test_peer_deviations_through_the_explainer_interface(tmp_path, data):
    model = small_cnn(seed=1)
    result = run(model, data[:4], tmp_path / "p", rules=RULES, explainers={
        "same": NRMExplainer(RULES), "lrp0": NRMExplainer(nrm.rules.Zero())}, progress=False)
    rows = rows_of(tmp_path / "p")
    assert all(r["peer/same"] == 0.0 for r in rows)
    assert all(r["peer/lrp0"] > 1e-3 for r in rows)
    assert result.reductions["peer/lrp0"].value == max(r["peer/lrp0"] for r in rows)


def test_the_model_is_left_as_it_was(tmp_path, data):
    model = small_cnn(seed=1)
    calls = []
    handle = model.features[0].register_forward_hook(lambda *a: calls.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full_run(model, data[:4], tmp_path / "u")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert len(model.features[0]._forward_hooks) == 1
    handle.remove()


def test_the_progress_bar_is_tqdms_with_rate_and_count(tmp_path, data, capsys):
    run(small_cnn(seed=1), data, tmp_path / "bar", rules=RULES, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "nrm run" in err and "10/10" in err and "sample/s" in err


def test_the_least_a_run_can_compute(tmp_path, data):
    """No layers, no top-k, no laws: still f, target and the absorbed mass per layer per row."""
    result = run(small_cnn(seed=1), data[:3], tmp_path / "least", layers=[], top_k=0, laws=[], progress=False)
    rows = rows_of(tmp_path / "least")
    assert result.errors == 0 and "l1_residual" not in rows[0] and not any(k.startswith("top_k") for k in rows[0])
    assert all(isinstance(r["f"], float) and r["absorbed/input"] is not None for r in rows)
    assert result.reductions.names() == ["absorbed", "absorbed_histogram", "f"]


def test_each_array_is_one_file_per_batch_and_one_chunk_per_batch(finished, data):
    """Chunks of one batch (10 samples at batch 4: 3 files per array), not sharded."""
    _, out, _ = finished
    arrays = zarr.open_group(str(out / "arrays.zarr"), mode="r")
    for name in ("marginal/input", "conditional/h2"):
        files = sorted(p.name for p in (out / "arrays.zarr" / name).iterdir() if p.name.startswith("c."))
        assert files == ["c.0.0.0.0", "c.1.0.0.0", "c.2.0.0.0"]
        assert arrays[name].chunks == (4, 3, 16, 16) and arrays[name].shards is None



def parts_of(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "samples").glob("part-*.parquet"))


def test_batches_committed_together_give_the_folder_of_batches_committed_alone(tmp_path, data):
    """One part for the whole run (``commit_seconds`` far above its length) or one per batch (0):
    the same rows, arrays and ``reductions.json``, bitwise — each batch's reductions are kept apart
    in its part and merged batch by batch. A NaN sample in the middle is an error row in both."""
    model = small_cnn(seed=1)
    x = data.clone()
    x[5, 0, 0, 0] = float("nan")
    alone = full_run(model, x, tmp_path / "alone", commit_seconds=0)
    together = full_run(model, x, tmp_path / "together", commit_seconds=3600)
    assert parts_of(tmp_path / "alone") == ["part-000000000-000004.parquet", "part-000000004-000004.parquet",
                                            "part-000000008-000002.parquet"]
    assert parts_of(tmp_path / "together") == ["part-000000000-000010.parquet"]
    assert folder_state(tmp_path / "alone") == folder_state(tmp_path / "together")
    assert alone.reductions.to_dict() == together.reductions.to_dict()
    assert (alone.errors, together.errors) == (1, 1)
    saved = json.loads((tmp_path / "together" / "reductions" / "part-000000000-000010.json").read_text())
    assert isinstance(saved, list) and len(saved) == 3  # the part's three batches, each its own


def test_a_part_is_committed_once_its_arrays_pass_the_byte_bound(tmp_path, data, monkeypatch):
    from nrm_verify.report.dataset import parts

    model = small_cnn(seed=1)
    monkeypatch.setattr(parts, "COMMIT_BYTES", 1)  # every batch's heatmaps pass it
    full_run(model, data, tmp_path / "bytes", commit_seconds=3600)
    assert len(parts_of(tmp_path / "bytes")) == 3


def test_an_interrupted_run_commits_the_batches_it_gathered_and_resumes_bitwise(tmp_path, data):
    """With every batch gathered into one part, an interruption after the first batch still
    commits it (the loop's exit writes what was explained), and the rerun completes the folder."""
    model = small_cnn(seed=1)
    full_run(model, Interrupting(data), tmp_path / "whole", laws=["L1"], commit_seconds=0)
    with pytest.raises(KeyboardInterrupt):
        full_run(model, Interrupting(data, stop=6), tmp_path / "cut", laws=["L1"], commit_seconds=3600)
    assert parts_of(tmp_path / "cut") == ["part-000000000-000004.parquet"]
    resumed = full_run(model, Interrupting(data), tmp_path / "cut", laws=["L1"], commit_seconds=3600)
    assert (resumed.written, resumed.skipped) == (6, 4)
    assert parts_of(tmp_path / "cut") == ["part-000000000-000004.parquet", "part-000000004-000006.parquet"]
    assert folder_state(tmp_path / "cut") == folder_state(tmp_path / "whole")


def test_a_folder_whose_parts_hold_one_reduction_each_still_merges(tmp_path, data):
    """Parts written before 2026-12-07 hold one batch's reductions as an object, not a list."""
    from nrm_verify.report.dataset.store import read_run

    model = small_cnn(seed=1)
    result = full_run(model, data, tmp_path / "old", commit_seconds=0)
    for part in (tmp_path / "old" / "reductions").glob("part-*.json"):
        [one] = json.loads(part.read_text())
        part.write_text(json.dumps(one))
    _, store = read_run(tmp_path / "old")
    assert store.reductions().to_dict() == result.reductions.to_dict()
