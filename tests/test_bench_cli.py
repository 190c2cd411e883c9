"""``nrm-verify bench --quick``: the comparison table, the JSON it saves, the joint, the cost
curves and their plot. Speed is never asserted (the machine is shared); only that every
case ran and the ratios are what the table prints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import matplotlib.image
import pytest

from nrm_verify.commands import main

ROOT = Path(__file__).resolve().parents[1]


def _bench_peers():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "bench_peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peers_importable() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("zennit", "captum", "crp"))


def test_bench_quick_prints_the_table_and_saves_json(tmp_path, capsys):
    out = tmp_path / "peers.json"
    code = main(["bench", "--quick", "--threads", "1", "--no-progress", "--output", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    header = next(line for line in stdout.splitlines() if line.startswith("case"))
    assert "× grad" in header and "target" in header and "peak +MiB" in header
    data = json.loads(out.read_text())
    assert data["input"] == [1, 3, 32, 32] and data["events"] == 64
    for case in ("gradient", "epsilon", "preset", "preset_epf", "events64"):
        f = data["cases"][case]
        assert f["median_s"] > 0
        line = next(line for line in stdout.splitlines() if line.startswith(case + " "))
        assert f"{f['ratio_to_gradient']:.2f}×" in line  # the table prints the saved ratio
    assert data["cases"]["gradient"]["ratio_to_gradient"] == 1.0
    assert data["cases"]["epsilon"]["target_ratio"] == 1.15 and data["cases"]["preset"]["target_ratio"] == 1.6
    assert data["memory"]["events64"]["growth_mib"] >= 0
    assert data["joint"]["shape"] == [1, 512, 512] and data["joint"]["seconds"] > 0
    if _peers_importable():
        assert "crp64" in data["cases"] and "speedup" in data["crp_comparison"]
    else:
        assert set(data["not_run"]) == {"zennit_epf", "captum_eps", "crp64"}
        assert "not installed" in stdout
    # the cost curves and their plot, beside the JSON
    curves = json.loads((tmp_path / "scaling-quick.json").read_text())
    assert [p["x"] for p in curves["curves"]["events"]] == [1, 4, 16]
    assert [p["x"] for p in curves["curves"]["depth"]] == [2, 7, 13]
    assert all(p["nrm_s"] > 0 and p["gradient_s"] > 0 for c in curves["curves"].values() for p in c)
    img = matplotlib.image.imread(tmp_path / "scaling-quick.png")
    assert img.shape[0] > 300 and img.shape[1] > 1000 and float(img[..., :3].std()) > 0.02
    assert "cost curves" in stdout


@pytest.mark.parametrize("argv, message", [(["--size", "8"], "--size must be at least 32"),
                                           (["--repeats", "0"], "--repeats must be at least 1")])
def test_bench_usage_errors(argv, message, capsys, tmp_path):
    code = main(["bench", "--quick", *argv, "--output", str(tmp_path / "x.json")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_table_states_targets_and_the_crp_comparison():
    bp = _bench_peers()
    result = {"events": 64, "cases": {
        "gradient": {"median_s": 1.0}, "epsilon": {"median_s": 1.1}, "preset": {"median_s": 2.0},
        "events64": {"median_s": 3.0}, "crp64": {"median_s": 45.0}},
        "memory": {"events64": {"growth_mib": 100.0}, "crp64": {"growth_mib": 300.0}},
        "crp_comparison": {"speedup": 15.0, "meets_speed": True, "memory_ratio": 1 / 3, "meets_memory": False}}
    text = bp.table(result)
    eps = next(line for line in text.splitlines() if line.startswith("epsilon"))
    preset = next(line for line in text.splitlines() if line.startswith("preset"))
    assert "1.10×" in eps and eps.endswith("ok") and "2.00×" in preset and preset.endswith("MISSED")
    assert "15.0× faster" in text and "0.33 of crp64's" in text and "MISSED" in text.splitlines()[-1]
    assert "45.00×" in next(line for line in text.splitlines() if line.startswith("crp64"))


def test_truncated_vgg_depths():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_scaling", ROOT / "benchmarks" / "bench_scaling.py")
    bs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bs)
    import torch
    for depth in (1, 5, 13):
        model = bs.truncated_vgg(depth)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == depth
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="depth must be 1 … 13"):
        bs.truncated_vgg(14)


def test_each_peer_is_compared_at_its_fastest_setting():
    """Issue 12, item 19: every setting that changes a peer's speed is timed once and the
    fastest is the one compared (fake timings here: speed is never asserted)."""
    bp = _bench_peers()
    seconds = {1: 9.0, 4: 3.0, 8: 2.0, 16: 5.0}
    ran = []

    def timer(case, setting):
        def run():
            ran.append((case, setting.get("batch"), setting.get("context")))
            return {"total": seconds[setting["batch"]] if "batch" in setting
                    else {"per call": 1.0, "held": 0.5}[setting["context"]]}
        return run

    args = bp.parser().parse_args(["--quick"])
    bp.settle(args)
    assert args.crp_batches == (1, 4)  # --quick sweeps two batch sizes
    args = bp.parser().parse_args(["--crp-batches", "1,4,8,16"])
    bp.settle(args)
    assert args.crp_batches == (1, 4, 8, 16) and bp.CRP_BATCHES == (1, 4, 8, 16)
    result = bp.sweep(["zennit_epf", "captum_eps", "crp64"], bp.sweeps(args), None, None, 0, 64, warmup=1,
                      timer=timer)
    assert result["crp64"]["best"] == {"batch": 8, "no_param_grad": True}
    assert [r["seconds"] for r in result["crp64"]["runs"]] == [9.0, 3.0, 2.0, 5.0]
    assert result["zennit_epf"]["best"] == {"context": "held"}
    assert result["captum_eps"] == {"runs": [], "best": {}}  # no option changes its speed: not swept
    assert len([r for r in ran if r[0] == "crp64"]) == 8  # a warm-up and a timed run per batch size
    text = bp.table({"events": 64, "cases": {"gradient": {"median_s": 1.0}, "crp64": {"median_s": 2.0}},
                     "sweep": result,
                     "crp_comparison": {"speedup": 6.0, "meets_speed": False}})
    line = next(s for s in text.splitlines() if s.startswith("crp64 settings"))
    assert "batch 1 9.000 s" in line and "batch 16 5.000 s" in line and line.endswith("fastest: batch 8, timed above")
    assert "against crp64 at its fastest setting: 6.0× faster" in text


@pytest.mark.parametrize("value", ["0,4", "a,b", ""])
def test_bad_crp_batches_are_usage_errors(value, tmp_path, capsys):
    code = main(["bench", "--quick", "--crp-batches", value, "--output", str(tmp_path / "x.json")])
    assert code == 2 and "--crp-batches" in capsys.readouterr().err
