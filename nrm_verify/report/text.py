"""Reports of a transformer's measure over tokens (issue 14, item 6): a token heatmap as
coloured text, the relevance through every head of every attention layer, and the flow of
relevance from token to token between two token layers.

For a measure μ of a model whose explained input is a token layer (T, D) per sample (the
input embeddings, ``inputs_embeds``):

* the **token heatmap** is R_t = f · Σ_d μ(X_input = (t, d)), the marginal summed over the
  hidden dimension (``token_relevance``);
* the **head × layer matrix** is R_{l,h} = f · μ(At(layer_l, heads=[h])) for attention layers of
  shape (H, T, …) per sample — the share of f whose walks pass head h of layer l; in a layer
  every walk passes at most one head, so a row sums to f · μ(At(layer_l)) (``head_relevance``);
* the **token flow** between token layers a (below) and b (above) is
  F_{ij} = f · μ(At(a, tokens=[i]) ∩ At(b, tokens=[j])), one batched call of T_a · T_b cylinder
  events; its columns sum to f · μ(At(a) ∩ At(b, tokens=[j])) (``token_flow``).

:func:`text_report` writes them as one HTML page (coloured tokens, a head × layer table, the
flow as a PNG when matplotlib is there). Relevance is coloured red for positive, blue for
negative, with intensity |R| / max |R|.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import torch

import nrm


def _check_tokens(m: nrm.Measure, layer: str, tokens: Sequence[str] | None) -> int:
    shape = m.layer_shape(layer)
    if len(shape) != 2:
        raise ValueError(f"layer {layer!r} has shape {tuple(shape)} per sample; a token layer is (tokens, hidden)")
    if tokens is not None:
        if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("tokens= takes a list of strings, one per position (the tokenizer's tokens)")
        if len(tokens) != shape[0]:
            raise ValueError(f"{len(tokens)} tokens for the {shape[0]} positions of layer {layer!r}")
    return shape[0]


def _sample(m: nrm.Measure, sample: int) -> int:
    n = m.f.shape[0]
    if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample < n:
        raise ValueError(f"sample={sample!r}: the measure holds samples 0 … {n - 1}")
    return sample


def token_relevance(m: nrm.Measure, layer: str = "input", *, sample: int = 0) -> torch.Tensor:
    """R_t = f · Σ_d μ(X_layer = (t, d)) of one sample, a tensor (T,)."""
    _check_tokens(m, layer, None)
    sample = _sample(m, sample)
    return m.f[sample] * m.marginal(layer)[sample].sum(-1)


def head_relevance(m: nrm.Measure, layers: Sequence[str], *, sample: int = 0) -> torch.Tensor:
    """R_{l,h} = f · μ(At(layers[l], heads=[h])) of one sample, a tensor (L, H); every layer
    must have shape (H, T, …) per sample with the same H."""
    from nrm import At

    sample = _sample(m, sample)
    if isinstance(layers, str) or not layers:
        raise ValueError("layers= takes a list of attention layer names (their per-sample shape (heads, tokens, …))")
    heads = {m.layer_shape(layer)[0] if len(m.layer_shape(layer)) == 3 else None for layer in layers}
    if len(heads) != 1 or None in heads:
        raise ValueError(f"the layers' per-sample shapes {[tuple(m.layer_shape(a)) for a in layers]} do not share a "
                         "head dimension first: give attention layers of shape (heads, tokens, tokens or head size)")
    h = heads.pop()
    events = [At(layer, heads=[k]) for layer in layers for k in range(h)]
    return (m.f[sample] * m.measure(events)[:, sample]).reshape(len(layers), h)


def token_flow(m: nrm.Measure, below: str, above: str, *, sample: int = 0) -> torch.Tensor:
    """F_{ij} = f · μ(At(below, tokens=[i]) ∩ At(above, tokens=[j])) of one sample, (T_below, T_above)."""
    from nrm import At

    sample = _sample(m, sample)
    t_a, t_b = _check_tokens(m, below, None), _check_tokens(m, above, None)
    events = [At(below, tokens=[i]) & At(above, tokens=[j]) for i in range(t_a) for j in range(t_b)]
    return (m.f[sample] * m.measure(events)[:, sample]).reshape(t_a, t_b)


def _colour(value: float, limit: float) -> str:
    alpha = 0.0 if limit == 0 else min(1.0, abs(value) / limit)
    rgb = "220, 40, 40" if value >= 0 else "40, 80, 220"
    return f"rgba({rgb}, {alpha:.3f})"


def token_html(tokens: Sequence[str], relevance: torch.Tensor) -> str:
    """The tokens as HTML spans coloured by their relevance (red +, blue −), each with its value as a tooltip."""
    values = [float(v) for v in torch.as_tensor(relevance).reshape(-1)]
    if len(values) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens for {len(values)} relevances")
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise ValueError("the relevance holds NaN or Inf")
    limit = max((abs(v) for v in values), default=0.0)
    return "".join(f"<span title='{v:.4g}' style='background:{_colour(v, limit)};padding:1px 2px;margin:1px;"
                   f"border-radius:3px'>{html.escape(t)}</span>" for t, v in zip(tokens, values))


def _table(rows: Sequence[str], columns: Sequence[str], values: torch.Tensor) -> str:
    limit = float(values.abs().max()) if values.numel() else 0.0
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr><th>" + html.escape(r) + "</th>" + "".join(
        f"<td style='background:{_colour(float(v), limit)}'>{float(v):.3g}</td>" for v in row) + "</tr>"
        for r, row in zip(rows, values))
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def text_report(m: nrm.Measure, tokens: Sequence[str], out: str | Path, *, input_layer: str = "input",
                attention: Sequence[str] = (), flow: tuple[str, str] | None = None, sample: int = 0) -> Path:
    """Write ``out/index.html``: the tokens coloured by their relevance at ``input_layer``, the
    head × layer matrix of the ``attention`` layers, and the token flow between the ``flow``
    layers (below, above) as a table; returns the page's path."""
    from nrm_verify.report.page import html_page

    _check_tokens(m, input_layer, tokens)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    R = token_relevance(m, input_layer, sample=sample)
    body = (f"<p>f = {float(m.f[sample]):.6g}; the tokens' relevance sums to {float(R.sum()):.6g} "
            f"(the rest went to ⊥)</p><h2>tokens ({html.escape(input_layer)})</h2><p>{token_html(tokens, R)}</p>")
    if attention:
        H = head_relevance(m, attention, sample=sample)
        body += "<h2>relevance through each head</h2>" + _table(list(attention), [f"head {h}" for h in
                                                                                   range(H.shape[1])], H)
    if flow is not None:
        below, above = flow
        F = token_flow(m, below, above, sample=sample)
        rows = list(tokens) if F.shape[0] == len(tokens) else [str(i) for i in range(F.shape[0])]
        body += (f"<h2>token flow {html.escape(below)} → {html.escape(above)}</h2>"
                 + _table(rows, [str(j) for j in range(F.shape[1])], F))
    page = out / "index.html"
    page.write_text(html_page("token relevance", body))
    return page
