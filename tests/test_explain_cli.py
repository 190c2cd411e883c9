"""``nrm-verify explain``: the built-in model, a user TorchScript model, a user class with
a state dict, the files it writes, and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib", reason="the explain figures need matplotlib (the report extra)")

from nrm_verify.commands import main  # noqa: E402
from nrm_verify.commands.loading import sequential_from_script  # noqa: E402
from nrm_verify.zoo.models import small_cnn  # noqa: E402

FIGURES = ("heatmap.png", "masses.png", "joint.png", "flow.png", "concepts.png")


def check_image(path: Path, min_side: int = 200) -> None:
    """The PNG opens, is at least min_side pixels on each side, and is not blank."""
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4), (path, img.shape)
    assert min(img.shape[:2]) >= min_side, (path, img.shape)
    rgb = img[..., :3].reshape(-1, 3)
    assert float(rgb.var()) > 0, f"{path} is blank"
    assert len(np.unique(rgb, axis=0)) > 8, f"{path} has almost one colour"


@pytest.fixture(scope="module")
def vgg_report(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("vgg")
    code = main(["explain", "--size", "32", "--out", str(out), "--quiet", "--top", "4", "--beam", "6",
                 "--concepts", "3", "--selection", "features.28", "--random-draws", "2"])
    return code, out


def test_default_model_writes_every_figure(vgg_report):
    code, out = vgg_report
    assert code == 0
    for name in FIGURES + ("selection.png",):
        check_image(out / name)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_shape"] == [1, 3, 32, 32]
    assert summary["flow_layers"] == ["features.21", "features.24", "features.26", "features.28"]
    assert summary["joint_layers"] == ["features.26", "features.28"]
    assert all(Path(p).is_file() for p in summary["files"].values())


def test_masses_are_normalized_at_every_layer(vgg_report):
    _, out = vgg_report
    rows = json.loads((out / "masses.json").read_text())
    assert rows[0]["layer"] == "input" and rows[-1]["layer"] == "classifier.6" and len(rows) == 23
    for r in rows:  # L1: Σ_j m_l(j) + m_l(⊥) = 1, and the real mass splits into its signed parts
        assert r["total"] == pytest.approx(1.0, abs=1e-4)
        assert r["positive"] + r["negative"] == pytest.approx(r["real"], abs=1e-5)
        assert r["positive"] >= 0 >= r["negative"]


def test_joint_and_flow_are_consistent(vgg_report):
    _, out = vgg_report
    J = np.load(out / "joint.npy")
    assert J.shape == (512, 512)
    # an edge of the flow (marginal within At(features.28, channels=[d])) is the joint's entry
    flow = json.loads((out / "flow.json").read_text())
    edges = [e for e in flow["edges"] if e["from"][0] == "features.26" and e["to"][0] == "features.28"]
    assert edges
    for e in edges:
        assert e["mu"] == pytest.approx(float(J[e["from"][1], e["to"][1]]), rel=1e-4, abs=1e-9)
    # the critical paths are sorted by |μ|, one channel per flow layer
    paths = flow["paths"]
    assert len(paths) == 5
    assert [abs(p["mu"]) for p in paths] == sorted((abs(p["mu"]) for p in paths), reverse=True)
    for p in paths:
        assert p["layers"] == flow["layers"] and len(p["channels"]) == 4
        for layer, c in zip(p["layers"], p["channels"]):
            assert c in [n["channel"] for n in flow["nodes"][layer]]  # drawn as a node
    # edges join every node of a layer to every node of the next one
    sizes = [len(flow["nodes"][l]) for l in flow["layers"]]
    assert len(flow["edges"]) == sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def test_conditional_heatmaps_add_up_to_their_channel_mass(vgg_report):
    _, out = vgg_report
    concepts = json.loads((out / "concepts.json").read_text())
    assert concepts["layer"] == "features.28" and len(concepts["channels"]) == 3
    # L3: Σ_i μ(X_0 = i, X_l ∈ c) + μ(X_0 = ⊥, X_l ∈ c) = μ(X_l ∈ c) (the input absorber holds the
    # biases' share of every layer below l)
    for total, bottom, mu in zip(concepts["heatmap_sums"], concepts["input_absorbed"], concepts["mu"]):
        assert total + bottom == pytest.approx(mu, rel=1e-4, abs=1e-7)
        assert total != pytest.approx(mu, rel=1e-6)  # the biases did take some mass
    assert np.load(out / "concepts.npy").shape == (3, 32, 32)


def test_selection_curves_in_the_report(vgg_report):
    _, out = vgg_report
    sel = json.loads((out / "selection.json").read_text())
    assert sel["layer"] == "features.28" and sel["ks"][-1] == 512
    assert {k: len(v) for k, v in sel["mse"].items()} == {k: len(sel["ks"]) for k in sel["mse"]}
    assert all(v[-1] == 0.0 for v in sel["mse"].values())


def _scripted_cnn(tmp_path: Path) -> tuple[Path, nn.Sequential]:
    model = small_cnn()
    path = tmp_path / "cnn.pt"
    torch.jit.script(model).save(str(path))
    return path, model


def test_a_torchscript_model_is_rebuilt_as_a_sequential(tmp_path):
    path, model = _scripted_cnn(tmp_path)
    rebuilt = sequential_from_script(torch.jit.load(str(path)))
    assert isinstance(rebuilt, nn.Sequential) and not isinstance(rebuilt, torch.jit.ScriptModule)
    assert [n for n, _ in rebuilt.named_modules()] == [n for n, _ in model.named_modules()]
    assert [type(m) for m in rebuilt.modules()] == [type(m) for m in model.modules()]
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rebuilt.eval()(x), model(x))


def test_explain_a_user_torchscript_model(tmp_path):
    path, _ = _scripted_cnn(tmp_path)
    out = tmp_path / "out"
    code = main(["explain", "--model", str(path), "--size", "16", "--out", str(out), "--quiet",
                 "--selection", "features.3", "--random-draws", "2"])
    assert code == 0
    for name in FIGURES + ("selection.png",):
        check_image(out / name)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flow_layers"] == ["features.0", "features.3"]
    assert summary["model"].startswith("TorchScript")


def test_explain_a_user_class_with_a_state_dict_and_a_tensor_input(tmp_path):
    (tmp_path / "mynet.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))\n")
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    torch.save(torch.tensor([0.5, -1.0, 2.0, 0.3, 1.1, -0.4]), tmp_path / "x.pt")
    out = tmp_path / "out"
    code = main(["explain", "--model", f"{tmp_path / 'mynet.py'}:Net", "--state-dict", str(tmp_path / "w.pt"),
                 "--input", str(tmp_path / "x.pt"), "--rules", "Epsilon(1e-6)", "--target", "1",
                 "--out", str(out), "--quiet"])
    assert code == 0
    for name in FIGURES:
        check_image(out / name, min_side=150)
    summary = json.loads((out / "summary.json").read_text())
    x = torch.tensor([[0.5, -1.0, 2.0, 0.3, 1.1, -0.4]])
    with torch.no_grad():
        assert summary["f"] == pytest.approx(float(ref(x)[0, 1]), rel=1e-6)
    assert summary["flow_layers"] == ["0", "2"]


def test_an_image_file_is_resized(tmp_path):
    import matplotlib.image

    path, _ = _scripted_cnn(tmp_path)
    rng = np.random.default_rng(0)
    matplotlib.image.imsave(tmp_path / "img.png", rng.random((40, 30, 3)))
    out = tmp_path / "out"
    code = main(["explain", "--model", str(path), "--input", str(tmp_path / "img.png"), "--size", "16",
                 "--out", str(out), "--quiet", "--paths", "0"])
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["input_shape"] == [1, 3, 16, 16]
    check_image(out / "heatmap.png")


# -- bad arguments: one line on stderr, exit status 2, no traceback ------------------------------------
def _bad(argv, capsys, match: str) -> None:
    code = main(["explain", "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nrm-verify explain: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err and match in err, err


def test_missing_files(tmp_path, capsys):
    _bad(["--model", str(tmp_path / "nope.pt")], capsys, "no such file")
    _bad(["--input", str(tmp_path / "nope.png"), "--size", "32"], capsys, "no such file")
    path, _ = _scripted_cnn(tmp_path)
    _bad(["--model", "nrm_verify.zoo.models:small_cnn()", "--state-dict", str(tmp_path / "nope.pt")], capsys,
         "no such file")


def test_wrong_input_shape(tmp_path, capsys):
    path, _ = _scripted_cnn(tmp_path)
    torch.save(torch.zeros(1, 5), tmp_path / "x.pt")
    _bad(["--model", str(path), "--input", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o")], capsys,
         "does not fit the model")
    torch.save(torch.zeros(2, 3, 16, 16), tmp_path / "x2.pt")
    _bad(["--model", str(path), "--input", str(tmp_path / "x2.pt"), "--out", str(tmp_path / "o")], capsys,
         "one sample")
    (tmp_path / "x.txt").write_text("1 2 3")
    _bad(["--model", str(path), "--input", str(tmp_path / "x.txt"), "--out", str(tmp_path / "o")], capsys,
         "expected an image")


def test_unknown_layers(tmp_path, capsys):
    path, _ = _scripted_cnn(tmp_path)
    common = ["--model", str(path), "--size", "16", "--out", str(tmp_path / "o")]
    _bad(common + ["--joint", "features.0", "features.9"], capsys, "unknown layer 'features.9'")
    _bad(common + ["--flow-layers", "features.0", "nope"], capsys, "unknown layer 'nope'")
    _bad(common + ["--selection", "classifier.9"], capsys, "unknown layer 'classifier.9'")
    _bad(common + ["--concept-layer", "output"], capsys, "output layer")


def test_bad_rules(tmp_path, capsys):
    path, _ = _scripted_cnn(tmp_path)
    common = ["--model", str(path), "--size", "16", "--out", str(tmp_path / "o")]
    _bad(common + ["--rules", "Foo(1)"], capsys, "unknown name 'Foo'")
    _bad(common + ["--rules", "Epsilon(-1)"], capsys, "Epsilon(-1)")
    _bad(common + ["--rules", "Epsilon(1e-6"], capsys, "is not a name or a call with literal arguments")
    _bad(common + ["--rules", "Epsilon(eps=x)"], capsys, "literal arguments")
    _bad(common + ["--target", "10"], capsys, "out of range")


def test_models_that_cannot_be_read(tmp_path, capsys):
    traced = tmp_path / "traced.pt"
    torch.jit.trace(small_cnn(), torch.zeros(1, 3, 16, 16)).save(str(traced))
    _bad(["--model", str(traced), "--size", "16"], capsys, "torch.jit.script")

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x) * 2

    custom = tmp_path / "custom.pt"
    torch.jit.script(Custom()).save(str(custom))
    _bad(["--model", str(custom)], capsys, "not an nn.Sequential")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    _bad(["--model", str(junk)], capsys, "not a TorchScript archive")
    _bad(["--model", "nrm_verify.zoo.models:no_such_thing"], capsys, "cannot load")
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "w.pt")
    _bad(["--model", "nrm_verify.zoo.models:small_cnn()", "--state-dict", str(tmp_path / "w.pt")], capsys,
         "does not fit the model")


def test_help_names_every_output(capsys):
    with pytest.raises(SystemExit) as info:
        main(["explain", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in FIGURES + ("selection.png", "--flow-layers", "--joint", "--state-dict", "--selection"):
        assert word in text

