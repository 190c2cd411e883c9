"""Regression snapshots (nrm_verify.report.snapshots, ``nrm-verify snapshot``).

The project's own snapshot ``tests/snapshots/nrm-core`` holds nrm's marginals for every
preset, a few rules on every layer and LRP relevances, on mlp, small_cnn and small_vgg16
in float64; the current engine must reproduce it within 1e-10 (relative to each output's
largest magnitude). Re-record it after an intended change with

    nrm-verify snapshot record tests/snapshots/nrm-core --suite nrm-core --cases default --force
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import nrm
from nrm_verify.commands import main
from nrm_verify.report import snapshots as R

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "tests" / "snapshots" / "nrm-core"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["snapshot", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def write_explainer(path: Path, epsilon: float) -> Path:
    """A user's explainer file: nrm's input marginal under Epsilon(epsilon) on every layer."""
    path.write_text(textwrap.dedent(f"""
        import nrm

        def explain(model, x, target):
            m = nrm.explain(model, x, target=target, rules=nrm.rules.Epsilon({epsilon!r}))
            return {{"marginal/input": m.marginal("input"), "absorbed/input": m.absorbed("input")}}
    """))
    return path


# -- the project's own snapshot ------------------------------------------------------------------
def test_current_engine_reproduces_the_committed_nrm_core_snapshot():
    report = R.compare(CORE)
    assert report.ok, str(report)
    assert len(report.results) == len(R.NRM_CORE) * len(R.CASES["default"]) == 36
    for r in report.results:
        assert r.rtol == 1e-10 and r.atol == 0.0, r
        assert r.max_rel <= 1e-10, r


def test_committed_snapshot_is_what_the_documented_command_records():
    manifest = json.loads(CORE.with_suffix(".json").read_text())
    assert [e["spec"] for e in manifest["explainers"]] == R.NRM_CORE
    assert manifest["cases"] == [c.to_dict() for c in R.CASES["default"]]
    assert manifest["record_command"] == ("nrm-verify snapshot record tests/snapshots/nrm-core --suite nrm-core "
                                          "--cases default --force")
    dtypes = {o["dtype"] for r in manifest["results"] for o in r["outputs"].values()}
    assert dtypes == {"float64"}
    size = CORE.with_suffix(".json").stat().st_size + CORE.with_suffix(".npz").stat().st_size
    assert size < 1_000_000, f"the snapshot is {size} bytes; keep it under 1 MB"


def test_self_snapshot_marginals_obey_L1():
    """The recorded numbers are measures: marginal + absorbed sums to 1 at every recorded layer."""
    snap = R.load(CORE)
    checked = 0
    for (label, _case), outs in snap.arrays.items():
        if not label.startswith("nrm:"):
            continue
        for key, m in outs.items():
            if key.startswith("marginal/"):
                absorbed = outs["absorbed/" + key.split("/", 1)[1]]
                total = m.reshape(m.shape[0], -1).sum(1) + absorbed
                np.testing.assert_allclose(total, 1.0, atol=1e-9)
                checked += 1
    assert checked > 50


def test_changed_gamma_in_a_preset_is_caught(capsys, monkeypatch):
    monkeypatch.setitem(nrm.presets.PRESETS, "EpsilonGammaFlat",
                        functools.partial(nrm.presets.EpsilonGammaFlat, gamma=0.3))
    rc, out, err = run_cli(capsys, "compare", CORE, "--explainer", "nrm:EpsilonGammaFlat",
                           "--case", "mlp", "--case", "small_cnn")
    assert rc == 1, out + err
    lines = out.splitlines()
    # γ acts on convolutions only: the MLP is untouched, the CNN's marginals moved
    assert any(line.startswith("PASS  nrm:EpsilonGammaFlat @ mlp:") for line in lines), out
    fail = [line for line in lines if line.startswith("FAIL  nrm:EpsilonGammaFlat @ small_cnn")]
    assert fail and "max |Δ|" in fail[0] and "rtol 1e-10" in fail[0], out
    assert "34 recorded results not selected" in lines[0]
    assert lines[-1] == "FAILED: 1 of 2"


def test_changed_epsilon_in_a_user_explainer_file_is_caught(tmp_path, capsys):
    spec = f"{write_explainer(tmp_path / 'mine.py', 1e-6)}:explain"
    snap = tmp_path / "snaps" / "mine"
    rc, out, err = run_cli(capsys, "record", snap, "--explainer", f"mine={spec}", "--cases", "quick")
    assert rc == 0 and "recorded 2 results" in out, out + err
    assert run_cli(capsys, "compare", snap)[0] == 0

    write_explainer(tmp_path / "mine2.py", 1e-2)  # Epsilon(1e-6) → Epsilon(1e-2)
    rc, out, err = run_cli(capsys, "compare", snap, "--explainer", f"mine={tmp_path / 'mine2.py'}:explain")
    assert rc == 1, out + err
    assert "FAIL  mine @ mlp" in out and "FAIL  mine @ small_cnn" in out
    assert "exceeded: absorbed/input: max |Δ|" in out  # ε moved mass into the absorbers
    report = R.compare(snap, {"mine": f"{tmp_path / 'mine2.py'}:explain"})
    worst = report["mine @ mlp"]
    assert worst.max_abs > 1e-6 and worst.abs_at.split("[")[0] in ("marginal/input", "absorbed/input")
    # a loose enough tolerance accepts the change: the verdict follows the tolerance
    rc, out, _ = run_cli(capsys, "compare", snap, "--explainer", f"mine={tmp_path / 'mine2.py'}:explain",
                         "--atol", "1.0")
    assert rc == 0, out


def test_labelled_builtin_specs_detect_a_changed_rule_parameter(tmp_path, capsys):
    snap = tmp_path / "eps"
    assert run_cli(capsys, "record", snap, "-e", "eps=nrm:Epsilon(1e-6)", "--cases", "quick")[0] == 0
    assert run_cli(capsys, "compare", snap, "-e", "eps=nrm:Epsilon(1e-6)")[0] == 0
    rc, out, _ = run_cli(capsys, "compare", snap, "-e", "eps=nrm:Epsilon(1e-2)", "--failures-only")
    assert rc == 1 and "FAIL  eps @ mlp" in out and "PASS" not in out


# -- missing, extra, changed outputs -------------------------------------------------------------
def test_missing_and_extra_results_fail_with_a_message(tmp_path):
    snap = tmp_path / "s"
    R.record(snap, ["nrm:Zero()"], cases="quick")
    missing = R.compare(snap, cases=[R.CASES["quick"][0]])  # small_cnn gone from the case set
    assert not missing.ok and missing.exit_code == 1
    assert "missing: recorded in the snapshot but not produced" in str(missing["nrm:Zero() @ small_cnn"])
    assert missing["nrm:Zero() @ mlp"].ok
    extra = R.compare(snap, cases="default")  # small_vgg16 is new
    assert "extra: this run produces it" in str(extra["nrm:Zero() @ small_vgg16"])
    assert [r.ok for r in extra.results] == [True, True, False]
    new_label = R.compare(snap, ["nrm:Zero()", "nrm:ZPlus()"])
    assert not new_label["nrm:ZPlus() @ mlp"].ok and new_label["nrm:Zero() @ mlp"].ok


def test_changed_names_shapes_dtypes_and_raising_explainers_fail(tmp_path):
    def base(model, x, target):
        return {"a": model(x).detach(), "b": x}

    snap = tmp_path / "s"
    R.record(snap, {"f": base}, cases="quick")
    cases = ["mlp"]

    def renamed(model, x, target):
        return {"a": model(x).detach(), "c": x}

    r = R.compare(snap, {"f": renamed}, only_cases=cases)["f @ mlp"]
    assert r.problems == ["output 'b' is missing from this run", "output 'c' is new (not in the snapshot)"]

    r = R.compare(snap, {"f": lambda m, x, t: {"a": m(x).detach()[:, :2], "b": x}}, only_cases=cases)["f @ mlp"]
    assert r.problems == ["output 'a' has shape [2, 2], recorded [2, 3]"]

    r = R.compare(snap, {"f": lambda m, x, t: {"a": m(x).detach(), "b": x.float()}}, only_cases=cases)["f @ mlp"]
    assert "output 'b' has dtype float32, recorded float64" in r.problems

    def broken(model, x, target):
        raise RuntimeError("boom")

    r = R.compare(snap, {"f": broken}, only_cases=cases)["f @ mlp"]
    assert not r.ok and r.problems == ["the explainer raised RuntimeError: boom"]

    with pytest.raises(R.SnapshotError, match="recorded from Python callables"):
        R.compare(snap)  # the specs were not recorded: the callables must be passed again


def test_deviation_is_relative_to_the_output_scale_and_located(tmp_path):
    values = {"v": torch.tensor([[1.0, 2.0, 1e-20, float("nan")]], dtype=torch.float64)}
    explainer = lambda model, x, target: {"out": values["v"].clone()}  # noqa: E731
    snap = tmp_path / "s"
    R.record(snap, {"e": explainer}, cases=[R.CASES["quick"][0]])
    values["v"] = torch.tensor([[1.0, 2.0, 3e-20, float("nan")]], dtype=torch.float64)
    r = R.compare(snap, {"e": explainer})["e @ mlp"]
    assert r.ok and r.max_abs == pytest.approx(2e-20) and r.max_rel == pytest.approx(1e-20)  # scale = 2, NaN = NaN
    values["v"] = torch.tensor([[1.0, 2.001, 1e-20, float("nan")]], dtype=torch.float64)
    r = R.compare(snap, {"e": explainer})["e @ mlp"]
    assert not r.ok and r.abs_at == "out[0, 1]" and r.max_rel == pytest.approx(0.0005)
    values["v"] = torch.tensor([[1.0, 2.0, 1e-20, 0.0]], dtype=torch.float64)
    r = R.compare(snap, {"e": explainer})["e @ mlp"]
    assert not r.ok and r.max_abs == np.inf and r.abs_at == "out[0, 3]"


def test_float32_outputs_get_a_float32_tolerance(tmp_path):
    snap = tmp_path / "s"
    R.record(snap, {"g": lambda m, x, t: {"y": m.float()(x.float()).detach()}}, cases=[R.CASES["quick"][0]])
    assert json.loads(snap.with_suffix(".json").read_text())["results"][0]["rtol"] == 1e-5


# -- files -------------------------------------------------------------------------------------------
def test_recording_is_byte_for_byte_reproducible_and_pickle_free(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for p in (a, b):
        R.record(p, ["nrm:EpsilonGammaFlat", "nrm-relevance:Zero()"], cases="quick")
    assert a.with_suffix(".npz").read_bytes() == b.with_suffix(".npz").read_bytes()
    manifest = json.loads(a.with_suffix(".json").read_text())
    assert manifest == json.loads(b.with_suffix(".json").read_text().replace(str(b), str(a)))
    with np.load(a.with_suffix(".npz"), allow_pickle=False) as npz:
        assert len(npz.files) == sum(len(r["outputs"]) for r in manifest["results"])
    assert set(manifest["versions"]) >= {"python", "torch", "numpy", "nrm"}
    assert manifest["cases"][0]["model_kwargs"] == {"widths": [8, 6, 5, 3], "seed": 0}


def test_seeded_cases_do_not_touch_the_global_random_state():
    before = torch.random.get_rng_state()
    model, x = R.CASES["default"][2].build()
    model2, x2 = R.CASES["default"][2].build()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(x, x2) and all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))
    assert dict(model.named_children()).keys() == {"features", "avgpool", "flatten", "classifier"}
    assert len(model.features) == 31 and isinstance(model.features[30], torch.nn.MaxPool2d)


def test_random_explainers_are_reproducible(tmp_path):
    noisy = lambda model, x, target: {"x": x + 0.1 * torch.randn_like(x)}  # noqa: E731  (SmoothGrad-like)
    snap = tmp_path / "s"
    R.record(snap, {"noisy": noisy}, cases="quick")
    assert R.compare(snap, {"noisy": noisy}).ok


# -- usage errors: exit 2, one line --------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["compare", "/nonexistent/snap"], "no snapshot file /nonexistent/snap.json"),
    (["record", "{tmp}/x", "-e", "no_such_module_xyz:explain"], "cannot load the explainer 'no_such_module_xyz:"),
    (["record", "{tmp}/x", "-e", "{tmp}/missing.py:explain"], "no such file"),
    (["record", "{tmp}/x", "-e", "nrm:NoSuchPreset"], "'NoSuchPreset' is neither a preset"),
    (["record", "{tmp}/x", "-e", "nrm:Epsilon(eps=x)"], "only literal arguments"),
    (["record", "{tmp}/x", "-e", "gradient"], "expected an explainer spec"),
    (["record", "{tmp}/x", "-e", "nrm:Zero()", "--cases", "huge"], "unknown case set 'huge'"),
    (["record", "{tmp}/x"], "give at least one --explainer"),
    (["record", "{tmp}/x", "--suite", "nope"], "unknown suite 'nope'"),
    (["compare", str(CORE), "--case", "resnet"], "no case named ['resnet']"),
    (["record", "{tmp}/x", "-e", "nrm:ZBox"], "ZBox() raised TypeError"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    rc, out, err = run_cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "x.json").exists()


def test_existing_snapshot_needs_force_and_corruption_is_a_usage_error(tmp_path, capsys):
    snap = tmp_path / "s"
    assert run_cli(capsys, "record", snap, "-e", "nrm:Zero()", "--cases", "quick")[0] == 0
    rc, _, err = run_cli(capsys, "record", snap, "-e", "nrm:Zero()", "--cases", "quick")
    assert rc == 2 and "exists" in err and "--force" in err
    assert run_cli(capsys, "record", snap, "-e", "nrm:Zero()", "--cases", "quick", "--force")[0] == 0
    manifest = json.loads(snap.with_suffix(".json").read_text())
    manifest["results"][0]["outputs"]["marginal/input"]["sha256"] = "0" * 64
    snap.with_suffix(".json").write_text(json.dumps(manifest))
    rc, _, err = run_cli(capsys, "compare", snap)
    assert rc == 2 and "does not match the manifest's hash" in err


def test_an_explainer_that_raises_while_recording_is_named(tmp_path):
    def bad(model, x, target):
        return [1, 2]

    with pytest.raises(R.SnapshotError, match=r"explainer 'bad' raised on case 'mlp': TypeError: .*returned list"):
        R.record(tmp_path / "s", {"bad": bad}, cases="quick")


def test_peer_specs_say_how_to_install_a_missing_peer(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zennit", None)  # import zennit → ImportError, installed or not
    monkeypatch.setitem(sys.modules, "zennit.composites", None)
    rc, _, err = run_cli(capsys, "record", tmp_path / "x", "-e", "zennit:EpsilonGammaFlat")
    assert rc == 2 and "needs zennit" in err and "pip install" in err


def test_captum_specs_call_attribute_with_the_target_and_keywords(tmp_path, monkeypatch):
    """The captum adapter against a stand-in ``captum.attr`` (captum itself is optional)."""
    calls = []

    class Saliency:
        def __init__(self, model):
            self.model = model

        def attribute(self, x, target, scale=1.0):
            calls.append((target, scale))
            x = x.clone().requires_grad_(True)
            out = self.model(x)
            (g,) = torch.autograd.grad(out[:, target].sum() if isinstance(target, int) else
                                       out.gather(1, torch.tensor(target)[:, None]).sum(), x)
            return scale * g.abs()

    fake = types.ModuleType("captum.attr")
    fake.Saliency = Saliency
    monkeypatch.setitem(sys.modules, "captum", types.ModuleType("captum"))
    monkeypatch.setitem(sys.modules, "captum.attr", fake)
    snap = R.record(tmp_path / "c", ["captum:Saliency(scale=2.0)"], cases="quick")
    assert calls == [([0, 2], 2.0), (3, 2.0)]
    assert set(snap.arrays[("captum:Saliency(scale=2.0)", "mlp")]) == {"input"}
    assert R.compare(tmp_path / "c").ok


def test_example_external_explainer_runs(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("regression_external", ROOT / "examples" / "regression_external.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PASS  gxi @ mlp: identical" in out and "FAIL  gxi @ mlp" in out
    assert "float32 change caught: True" in out
    assert (tmp_path / "gxi.json").exists() and (tmp_path / "gxi.npz").exists()
