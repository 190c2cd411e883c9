"""The text report of a transformer's measure (nrm_verify.report.text, issue 14 item 6):
token heatmaps, the head × layer matrix and token-to-token flow, each the measure of the
events it names, and an HTML page of coloured tokens."""

from __future__ import annotations

import pytest
import torch
from test_transformer_block import TorchMHA, _seeded_model

import nrm
from nrm import At
from nrm_verify.report.text import head_relevance, text_report, token_flow, token_html, token_relevance

pytestmark = pytest.mark.usefixtures("single_thread")
TOKENS = ["The", "<cat>", "sat"]


@pytest.fixture(scope="module")
def measure():
    model, x = _seeded_model(TorchMHA(), seed=2, batch=2)
    return nrm.explain(model, x, target=[0, 1], rules=nrm.rules.Epsilon(1e-6))


def test_the_token_heatmap_is_the_input_marginal_summed_over_the_hidden_dimension(measure):
    for sample in (0, 1):
        R = token_relevance(measure, sample=sample)
        assert R.shape == (3,)
        torch.testing.assert_close(R, measure.f[sample] * measure.marginal("input")[sample].sum(-1))
        torch.testing.assert_close(R.sum(), measure.f[sample] * measure.measure(At("input"))[sample])


def test_heads_carry_the_layer_s_relevance_between_them(measure):
    H = head_relevance(measure, ["softmax", "matmul"], sample=1)
    assert H.shape == (2, 2)
    for row, layer in zip(H, ["softmax", "matmul"]):
        torch.testing.assert_close(row.sum(), measure.f[1] * measure.measure(At(layer))[1], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(row[1], measure.f[1] * measure.measure(At(layer, heads=[1]))[1])


def test_the_token_flow_is_a_table_of_cylinders_whose_columns_add_up(measure):
    F = token_flow(measure, "input", "add")
    assert F.shape == (3, 3)
    above = measure.f[0] * measure.measure([At("input") & At("add", tokens=[j]) for j in range(3)])[:, 0]
    torch.testing.assert_close(F.sum(0), above, rtol=1e-12, atol=1e-14)
    cylinder = At("input", tokens=[2]) & At("add", tokens=[0])
    torch.testing.assert_close(F[2, 0], measure.f[0] * measure.measure(cylinder)[0])


def test_the_page_colours_every_token_and_escapes_it(measure, tmp_path):
    page = text_report(measure, TOKENS, tmp_path / "r", attention=["softmax"], flow=("input", "add"))
    text = page.read_text()
    assert text.count("<span title=") == 3 and "&lt;cat&gt;" in text and "<cat>" not in text
    assert "relevance through each head" in text and "token flow input → add" in text
    html = token_html(["a", "b"], torch.tensor([2.0, -1.0]))
    assert "rgba(220, 40, 40, 1.000)" in html and "rgba(40, 80, 220, 0.500)" in html


@pytest.mark.parametrize("call, words", [
    (lambda m, p: text_report(m, ["only", "two"], p), "2 tokens for the 3 positions"),
    (lambda m, p: text_report(m, "The cat sat", p), "list of strings"),
    (lambda m, p: token_relevance(m, "softmax"), "(tokens, hidden)"),
    (lambda m, p: token_relevance(m, sample=2), "samples 0 … 1"),
    (lambda m, p: head_relevance(m, ["input"]), "head dimension"),
    (lambda m, p: head_relevance(m, "softmax"), "list of attention layer names"),
    (lambda m, p: token_html(["a"], torch.tensor([float("nan")])), "NaN"),
    (lambda m, p: token_html(["a", "b"], torch.tensor([1.0])), "2 tokens for 1"),
], ids=["token count", "a string", "not a token layer", "sample", "not heads", "layers a string", "nan", "lengths"])
def test_bad_arguments_are_named(measure, tmp_path, call, words):
    with pytest.raises(ValueError, match=words.replace("(", "\\(").replace(")", "\\)")):
        call(measure, tmp_path / "r")
