"""``nrm-verify explain --modality text`` (issue 14, item 6): the built-in seeded causal LM and
user models (a plain module on embeddings, an LM and a classifier) end to end — the files, and
JSON numbers equal to the Python API's (:mod:`nrm_verify.report.text` on the same measure) —
and every bad value of the new arguments as one line on stderr, exit status 2, the user's model
unchanged and the built-in kinds registered again."""

from __future__ import annotations

import json
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest
import torch

pytest.importorskip("matplotlib", reason="the explain figures need matplotlib (the report extra)")

import nrm  # noqa: E402
from nrm import At  # noqa: E402
from nrm.layers.attention import MatMul  # noqa: E402
from nrm_verify.commands import main  # noqa: E402
from nrm_verify.commands.explain_text import builtin_model, embed, load_ids, measure_text  # noqa: E402
from nrm_verify.report.text import head_relevance, token_flow, token_relevance  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
FILES = ("index.html", "tokens.json", "heads.json", "heads.png", "flow.json", "flow.png", "summary.json")

USER_MODELS = textwrap.dedent("""
    import torch
    from torch import nn
    from nrm_verify.commands.explain_text import builtin_model

    LM = builtin_model(3)

    def shared_lm():
        return LM

    def nan_lm():
        model = builtin_model(4)
        with torch.no_grad():
            model.embed.weight[5] = float("nan")
        return model

    class MeanClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.embed, self.mix, self.head = nn.Embedding(10, 6), nn.Linear(6, 6), nn.Linear(6, 3)

        def get_input_embeddings(self):
            return self.embed

        def forward(self, e):
            a = torch.softmax(e @ e.transpose(-1, -2), dim=-1)
            return self.head((a @ self.mix(e)).mean(1))

    def no_embedding():
        return nn.Linear(4, 4)
""")


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    (tmp_path / "textnets.py").write_text(USER_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import textnets
    return importlib.reload(textnets)


@pytest.fixture(scope="module")
def builtin_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["explain", "--modality", "text", "--out", str(out), "--quiet"])
    finally:
        torch.set_num_threads(before)
    return code, out


def test_the_built_in_model_writes_every_file(builtin_report):
    code, out = builtin_report
    assert code == 0
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attention_layers"] == ["softmax", "softmax_1"]
    assert summary["flow_layers"] == ["input", "model.blocks.0", "model.blocks.1"]
    assert summary["position"] == 7 and summary["rules"].startswith("AttnLRP")
    assert all(Path(p).is_file() for p in summary["files"].values())
    page = (out / "index.html").read_text()
    assert page.count("<span title=") == 8 and "t0:" in page


def test_the_json_numbers_are_the_python_api_s(builtin_report):
    _, out = builtin_report
    model = builtin_model(0)
    ids, _ = load_ids(None, 64, 0)
    _, position, target, m = measure_text(model, embed(model.embed, ids))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ids"], summary["target"], summary["position"]) == (ids[0].tolist(), target, position)
    assert summary["f"] == pytest.approx(float(m.f[0]), rel=1e-12)
    tokens = json.loads((out / "tokens.json").read_text())
    torch.testing.assert_close(torch.tensor(tokens["relevance"], dtype=torch.float64), token_relevance(m),
                               rtol=1e-10, atol=1e-12)
    # the tokens' relevance is f · μ(At(input)): what did not go to ⊥
    assert sum(tokens["relevance"]) == pytest.approx(float(m.f[0] * m.measure(At("input"))[0]), rel=1e-10)
    heads = json.loads((out / "heads.json").read_text())
    torch.testing.assert_close(torch.tensor(heads["relevance"], dtype=torch.float64),
                               head_relevance(m, ["softmax", "softmax_1"]), rtol=1e-10, atol=1e-12)
    flow = json.loads((out / "flow.json").read_text())
    assert flow["layers"] == ["input", "model.blocks.0", "model.blocks.1"]
    for pair in flow["pairs"]:
        torch.testing.assert_close(torch.tensor(pair["matrix"], dtype=torch.float64),
                                   token_flow(m, pair["below"], pair["above"]), rtol=1e-10, atol=1e-12)


def test_a_user_lm_with_ids_tokens_position_target_and_cp_lrp(user_models, tmp_path):
    (tmp_path / "ids.json").write_text("[3, 1, 4, 1, 5]")
    out = tmp_path / "o"
    code = main(["explain", "--modality", "text", "--model", "textnets:shared_lm()", "--input",
                 str(tmp_path / "ids.json"), "--tokens", "The", "<cat>", "sat", "on", "it", "--position", "2",
                 "--target", "9", "--rules", "CP-LRP", "--out", str(out), "--quiet",
                 "--flow-layers", "input", "model.blocks.1"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["position"], summary["target"], summary["ids"]) == (2, 9, [3, 1, 4, 1, 5])
    with torch.no_grad():
        assert summary["f"] == pytest.approx(float(user_models.LM(user_models.LM.embed(torch.tensor([[3, 1, 4, 1,
                                                                                                       5]])))[0, 2, 9]))
    # CP-LRP: the attention weights take nothing, so no walk passes a head
    assert all(v == 0.0 for row in json.loads((out / "heads.json").read_text())["relevance"] for v in row)
    tokens = json.loads((out / "tokens.json").read_text())
    assert tokens["tokens"] == ["The", "<cat>", "sat", "on", "it"]
    assert all(v == 0.0 for v in tokens["relevance"][3:]), "a causal LM at position 2 cannot see tokens 3 and 4"
    assert "&lt;cat&gt;" in (out / "index.html").read_text()
    assert nrm.layers.REGISTRY.kinds["MatMul"].theta == Fraction(1, 2), "the built-in split is registered again"


def test_a_classifier_on_embeddings(user_models, tmp_path):
    torch.save(torch.tensor([[1, 2, 3, 4]]), tmp_path / "ids.pt")
    out = tmp_path / "o"
    code = main(["explain", "--modality", "text", "--model", "textnets:MeanClassifier", "--input",
                 str(tmp_path / "ids.pt"), "--target", "1", "--rules", "Epsilon(1e-6)", "--out", str(out),
                 "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["position"] is None and summary["target"] == 1 and summary["attention_layers"] == []
    assert summary["flow_layers"][0] == "input" and len(summary["flow_layers"]) == 2


def _exit_status(argv: list[str]) -> int:
    """main's return value, or the status argparse exits with on a value it refuses itself."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _ids(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


BAD = {
    "modality": [(["--modality", "audio"], "invalid choice: 'audio'"), (["--modality", "TEXT"], "invalid choice"),
                 (["--modality", ""], "invalid choice")],
    "input": [(["--input", "{tmp}/nope.json"], "no such file"), (["--input", "ids:[64]"], "token id 64 is not in"),
              (["--input", "ids:[]"], "holds no token ids"), (["--input", "ids:[1.5, 2]"], "list of token ids"),
              (["--input", "ids:[-1]"], "token id -1 is not in")],
    "tokens": [(["--tokens", "a"], "1 strings for the 8 token ids"),
               (["--tokens"] + list("abcdefghi"), "9 strings for the 8"), (["--tokens", "a", "b", "c"], "3 strings")],
    "position": [(["--position", "8"], "--position 8: the output has 8 positions"),
                 (["--position", "-9"], "--position -9"), (["--position", "last"], "invalid int value")],
    "target": [(["--target", "64"], "the model has 64 outputs"), (["--target", "1000"], "64 outputs"),
               (["--target", "-1"], "must be 0 or more")],
    "rules": [(["--rules", "Nope"], "unknown name 'Nope'"), (["--rules", "Epsilon(-1)"], "Epsilon(-1)"),
              (["--rules", "AttnLRP(2)"], "unknown name 'AttnLRP'")],
    "model": [(["--model", "textnets:nan_lm()", "--input", "ids:[1, 5]"], "token ids [5] hold NaN"),
              (["--model", "textnets:no_embedding()"], "get_input_embeddings"),
              (["--model", "textnets:nothing_here"], "cannot load"),
              (["--model", "textnets:MeanClassifier", "--input", "ids:[1, 2]", "--position", "0"],
               "a classifier, no token dimension")],
    "flow-layers": [(["--flow-layers", "input", "nope"], "unknown layer 'nope'"),
                    (["--flow-layers", "input", "softmax"], "'softmax' has per-sample shape (4, 8, 8)"),
                    (["--flow-layers", "model.blocks.1", "input"], "not in the order of the network")],
}


@pytest.mark.parametrize("argument, words", [(a, w) for cases in BAD.values() for a, w in cases],
                         ids=[f"{k}-{i}" for k, cases in BAD.items() for i in range(len(cases))])
def test_bad_values_are_one_line_exit_2_and_touch_nothing(argument, words, user_models, tmp_path, capsys):
    argument = [_ids(tmp_path, "ids.json", a[4:]) if a.startswith("ids:") else a.format(tmp=tmp_path)
                for a in argument]
    lm = {k: v.clone() for k, v in user_models.LM.state_dict().items()}
    model = [] if "--model" in argument else ["--model", "textnets:shared_lm()"]
    mine = MatMul(theta=Fraction(1, 4))
    nrm.layers.register(mine)  # a user's registration outlives the failed command
    try:
        code = _exit_status(["explain", "--modality", "text", *model, "--out", str(tmp_path / "o"), "--quiet",
                             *argument])
        kind = nrm.layers.REGISTRY.kinds["MatMul"]
    finally:
        nrm.layers.register(MatMul())
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "error" in err and words in err, err
    assert all(torch.equal(v, user_models.LM.state_dict()[k]) for k, v in lm.items())
    assert not any(p.grad is not None for p in user_models.LM.parameters())
    assert kind is mine
