"""``nrm-verify explain --modality text`` on a ``transformers`` model (GPT-2 LM head, a small
random configuration, float64, no download): called with ``inputs_embeds``, its tokens'
relevance equals LXT 2.1's efficient AttnLRP summed over the hidden dimension, and each head
row of the head × layer matrix sums to the relevance through that layer's attention weights."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

pytest.importorskip("matplotlib", reason="the explain figures need matplotlib")
pytest.importorskip("transformers", reason="transformers is installed by scripts/setup-peers.sh")
pytest.importorskip("lxt.efficient", reason="lxt 2.1 is installed by scripts/setup-peers.sh")

from nrm_verify.commands import main  # noqa: E402
from nrm_verify.peers import lxt as peer  # noqa: E402

FACTORY = textwrap.dedent("""
    import torch
    import transformers

    def gpt2():
        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                         activation_function="gelu_pytorch_tanh", attn_implementation="sdpa")
        return transformers.GPT2LMHeadModel(config).double().eval()
""")


def test_gpt2_through_the_command_equals_lxt(tmp_path, monkeypatch):
    (tmp_path / "hfnets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "ids.json").write_text("[5, 17, 3, 42, 8, 1]")
    out = tmp_path / "o"
    torch.set_num_threads(1)
    code = main(["explain", "--modality", "text", "--model", "hfnets:gpt2()", "--input", str(tmp_path / "ids.json"),
                 "--target", "7", "--out", str(out), "--quiet"])
    assert code == 0
    import hfnets

    model = hfnets.gpt2()
    e = model.get_input_embeddings()(torch.tensor([[5, 17, 3, 42, 8, 1]])).detach()
    with peer.patched("gpt2", "attnlrp", identity_epsilon=0.0):
        want = peer.relevance(model, e, 7).sum(-1)[0]
    got = torch.tensor(json.loads((out / "tokens.json").read_text())["relevance"], dtype=torch.float64)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["position"] == 5 and len(summary["attention_layers"]) == 2
    assert summary["flow_layers"][0] == "input" and len(summary["flow_layers"]) == 2  # a block's output is a tuple
    flow = json.loads((out / "flow.json").read_text())["pairs"][0]["matrix"]
    assert len(flow) == 6 and all(len(row) == 6 for row in flow)
