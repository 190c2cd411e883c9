"""With one sample, dimension 0 belongs to the sample (``nrm.layers.one_sample``): the
sequence-first layout — ``nn.MultiheadAttention``, ``nn.TransformerEncoder`` /
``TransformerDecoderLayer`` / ``nn.Transformer``, ``nn.LSTM`` / ``GRU`` / ``RNN`` with their default
``batch_first=False``, a cell looped over the steps, the tutorial's positional encoding, XLNet's
sequence-first einsum attention — and every
operation along dimension 0 (``x[-1]``, ``x.mean(0)``,
``torch.cat(…, 0)``, ``torch.stack``, ``unbind(0)``, ``h_n[-1]``, a permute that moves it) are read
when nrm explains one sample, and refused by name for more.

Exact first: every layer's marginal equals the exact DAG oracle's (fractions) under LRP-0, ε, γ;
each sequence-first model's measure equals its batch-first twin's (the same parameters); LRP-0 is
gradient × input where the model is piecewise linear (L9); the laws hold; the rewritten value is
torch's own bitwise, and a rewrite that is not is a capture mismatch."""

from __future__ import annotations

import copy

import pytest
import torch
from agreement import NoReference, compare_layers, held_laws, seeded
from torch import nn

import nrm
import nrm.layers.one_sample as one_sample
from nrm.errors import CaptureMismatchError, UnsupportedModuleError, UnsupportedOperationError
from nrm_verify.references.exact_dag import ExactGraph
from nrm_verify.references.explicit import reference_lrp

D = torch.float64
RULES = [None, nrm.rules.Epsilon(0.05), nrm.rules.Gamma(0.25)]
RULE_IDS = ["lrp0", "eps", "gamma"]


def _x(*shape, seed=0):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class Gallery(nn.Module):
    """Every operation along dimension 0 of a sequence-first value (T, 1, E), piecewise linear."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):  # (1, T = 4, 3)
        y = torch.relu(self.a(x.transpose(0, 1)))  # (T, 1, 4): a transpose that is a view
        first, rest = y[0], y[1:]
        z = torch.cat([rest, y[:1]], 0)  # rolled along the sequence
        z = torch.stack(z.unbind(0), 0) + y
        rows = torch.arange(1, 5, dtype=x.dtype).reshape(4, 1, 1)  # a constant per row of the sequence
        z = (z + rows) * rows / (rows + 1) - rows
        c0, c1 = z.chunk(2, 0)
        s0, _ = z.split([1, 3], dim=0)
        w = torch.relu(self.b(c1.sum(0)) + s0.mean(dim=0) - c0.mean(0))  # (1, 4)
        p = z.permute(1, 2, 0).sum(-1)  # (1, 4, T): a permute that moves dimension 0
        return self.head(w + first + p + z[-1] + z.sum(0, keepdim=True)[0])


class Encoder(nn.Module):
    """nn.TransformerEncoder (two layers, post- or pre-norm) in either layout, the first token's
    output to a head: ``batch_first=False`` reads (L, B, E) and the model transposes around it."""

    def __init__(self, batch_first: bool, norm_first: bool = False, mask: bool = False):
        super().__init__()
        layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head, self.batch_first, self.mask = nn.Linear(4, 2), batch_first, mask

    def forward(self, x):
        T = x.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=x.dtype) if self.mask else None
        if self.batch_first:
            return self.head(self.encoder(x, mask=causal)[:, 0])
        return self.head(self.encoder(x.transpose(0, 1), mask=causal)[0])


class Decoder(nn.Module):
    """nn.TransformerDecoderLayer (self- and cross-attention) on the input and its memory."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.memory = nn.Linear(4, 4)
        self.decoder = nn.TransformerDecoderLayer(4, 2, 6, dropout=0.0, batch_first=batch_first)
        self.head, self.batch_first = nn.Linear(4, 2), batch_first

    def forward(self, x):
        if self.batch_first:
            return self.head(self.decoder(x, torch.relu(self.memory(x))).mean(1))
        s = x.transpose(0, 1)
        return self.head(self.decoder(s, torch.relu(self.memory(s))).mean(0))


class Attention(nn.Module):
    """nn.MultiheadAttention itself, with a key padding mask, the weights returned and used."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 2, batch_first=batch_first)
        self.head, self.batch_first = nn.Linear(4 + 3, 2), batch_first

    def forward(self, x):
        padding = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
        padding[:, -1] = True  # the last key of every sample
        s = x if self.batch_first else x.transpose(0, 1)
        out, weights = self.attention(s, s, s, key_padding_mask=padding)
        last = out[:, -1] if self.batch_first else out[-1]
        return self.head(torch.cat([last, weights[:, -1]], -1))


class Recurrent(nn.Module):
    """nn.LSTM / GRU / RNN (two layers, optionally bidirectional) in either layout, read at the
    last step (``out[-1]``), through the final state (``h_n[-1]``) or pooled over the steps."""

    def __init__(self, cell: type, batch_first: bool, use: str = "last", bidirectional: bool = False):
        super().__init__()
        self.rnn = cell(3, 4, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
        self.head = nn.Linear(8 if bidirectional else 4, 2)
        self.batch_first, self.use = batch_first, use

    def forward(self, x):
        out, final = self.rnn(x if self.batch_first else x.transpose(0, 1))
        h_n = final[0] if isinstance(final, tuple) else final
        if self.use == "state":
            return self.head(h_n[-1])  # (B, H): the last layer's state, through stack and select
        steps = out if self.batch_first else out.transpose(0, 1)  # (B, T, H) either way
        return self.head(steps[:, -1] if self.use == "last" else steps.mean(1))


class SequenceFirstRecurrent(Recurrent):
    """The same, reading the sequence-first output along dimension 0 (``out[-1]``, ``out.mean(0)``)."""

    def forward(self, x):
        out, _ = self.rnn(x.transpose(0, 1))
        return self.head(out[-1] if self.use == "last" else out.mean(0))


class EncoderDecoder(nn.Module):
    """nn.Transformer (two encoder and two decoder layers), the target the first two positions of
    the source, halved, under a causal mask; the last target position's output to a head."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.transformer = nn.Transformer(4, 2, 2, 2, 6, dropout=0.0, batch_first=batch_first)
        self.head, self.batch_first = nn.Linear(4, 2), batch_first

    def forward(self, x):
        causal = nn.Transformer.generate_square_subsequent_mask(2, dtype=x.dtype)
        if self.batch_first:
            return self.head(self.transformer(x, x[:, :2] * 0.5, tgt_mask=causal)[:, -1])
        s = x.transpose(0, 1)
        return self.head(self.transformer(s, s[:2] * 0.5, tgt_mask=causal)[-1])


class CellLoop(nn.Module):
    """A GRUCell run by the model's own loop over the steps: ``for x_t in x.transpose(0, 1)``
    (sequence first: unbind along dimension 0) or over ``x[:, t]``."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.cell, self.head, self.batch_first = nn.GRUCell(3, 4), nn.Linear(4, 2), batch_first

    def forward(self, x):
        h = None
        steps = [x[:, t] for t in range(x.shape[1])] if self.batch_first else x.transpose(0, 1)
        for x_t in steps:
            h = self.cell(x_t, h)
        return self.head(h)


class EinsumAttention(nn.Module):
    """XLNet's attention, sequence first: scores = einsum("ibnd,jbnd->bnij", q + u, k) with a
    learned bias u, softmax, einsum("bnij,jbnd->ibnd", A, v); the twin writes it batch first."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.q, self.k, self.v, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.u = nn.Parameter(torch.zeros(2, 2, dtype=D))
        self.batch_first = batch_first

    def forward(self, x):  # (1, L, 4)
        s = x if self.batch_first else x.transpose(0, 1)
        q, k, v = (p(s).reshape(s.shape[0], s.shape[1], 2, 2) for p in (self.q, self.k, self.v))
        if self.batch_first:
            a = torch.softmax(torch.einsum("bind,bjnd->bnij", q + self.u, k), -1)
            o = torch.einsum("bnij,bjnd->bind", a, v)
            return self.head(o.reshape(o.shape[0], o.shape[1], 4)[:, -1])
        a = torch.softmax(torch.einsum("ibnd,jbnd->bnij", q + self.u, k), -1)
        o = torch.einsum("bnij,jbnd->ibnd", a, v)
        return self.head(o.reshape(o.shape[0], o.shape[1], 4)[-1])


class LanguageModel(nn.Module):
    """The PyTorch tutorial's transformer language model, from its embeddings: scaled, plus a
    sinusoidal positional encoding held as (max_len, 1, E) — one constant per row of the
    sequence-first value — (or (1, max_len, E) batch first), a causal nn.TransformerEncoder, the
    logits of the last position. The sequence-first model is explained through a batch-first
    wrapper: ``forward(e)`` with e (1, L, E) transposes it, as a user does."""

    def __init__(self, batch_first: bool, E: int = 4, max_len: int = 8):
        super().__init__()
        position = torch.arange(max_len, dtype=D).unsqueeze(1)
        div = torch.exp(torch.arange(0, E, 2, dtype=D) * (-9.21 / E))
        pe = torch.zeros(max_len, E, dtype=D)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.register_buffer("pe", pe.unsqueeze(0) if batch_first else pe.unsqueeze(1))
        layer = nn.TransformerEncoderLayer(E, 2, 6, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.decoder, self.batch_first = nn.Linear(E, 5), batch_first

    def forward(self, e):
        L = e.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(L, dtype=e.dtype)
        if self.batch_first:
            h = self.encoder(e * 2.0 + self.pe[:, :L], mask=causal)
            return self.decoder(h)[:, -1]
        s = e.transpose(0, 1)
        h = self.encoder(s * 2.0 + self.pe[:L], mask=causal)
        return self.decoder(h)[-1]


PAIRS = {
    "tutorial language model": (lambda bf: LanguageModel(bf), (1, 3, 4)),
    "nn.Transformer, causal target": (lambda bf: EncoderDecoder(bf), (1, 3, 4)),
    "GRUCell, for x_t in x": (lambda bf: CellLoop(bf), (1, 4, 3)),
    "einsum attention, sequence first": (lambda bf: EinsumAttention(bf), (1, 3, 4)),
    "encoder, post-norm": (lambda bf: Encoder(bf), (1, 3, 4)),
    "encoder, pre-norm, causal": (lambda bf: Encoder(bf, norm_first=True, mask=True), (1, 3, 4)),
    "decoder layer": (lambda bf: Decoder(bf), (1, 3, 4)),
    "attention, padding, weights": (lambda bf: Attention(bf), (1, 3, 4)),
    "LSTM, last step": (lambda bf: Recurrent(nn.LSTM, bf), (1, 3, 3)),
    "LSTM, h_n[-1]": (lambda bf: Recurrent(nn.LSTM, bf, "state"), (1, 3, 3)),
    "GRU, bidirectional, mean": (lambda bf: Recurrent(nn.GRU, bf, "mean", bidirectional=True), (1, 3, 3)),
    "RNN, h_n[-1]": (lambda bf: Recurrent(nn.RNN, bf, "state"), (1, 3, 3)),
}


def _pair(name):
    make, shape = PAIRS[name]
    model, twin = seeded(make(False)), seeded(make(True))
    twin.load_state_dict(dict(model.named_parameters()), strict=False)  # the same parameters (buffers: own layout)
    return model, twin, _x(*shape)


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_every_operation_along_dimension_0_agrees_with_the_exact_oracle(rules):
    model, x = seeded(Gallery()), _x(1, 4, 3)
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    torch.testing.assert_close(m.f, model(x)[:, 1].detach(), rtol=1e-13, atol=1e-13)
    exact, bottom = ExactGraph(model, x, rules).marginals(1)
    compare_layers(m, exact, bottom, NoReference())


def test_lrp0_is_gradient_x_input_through_every_operation_along_dimension_0():
    model, x = seeded(Gallery()), _x(1, 4, 3)
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero())
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx)[0, 1], xx)
    torch.testing.assert_close(m.marginal("input") * m.f.reshape(-1, 1, 1), g * x, rtol=1e-12, atol=1e-13)


def test_the_operations_are_recorded_as_views_and_kinds_that_keep_dimension_0():
    """What the capture recorded: no call refused, no kind reading dimension 0 — the rewrites are
    unsqueeze, the operation along dimension 1, reshape."""
    calls = nrm.capture(seeded(Gallery()), _x(1, 4, 3)).calls
    assert all(c.kind is not None for c in calls), [c.refusal for c in calls if c.kind is None]
    names = {c.kind.name for c in calls}
    assert {"View", "Index", "Cat", "Chunk", "Permute", "Reduce"} <= names, names


@pytest.mark.parametrize("name", ["encoder, post-norm", "LSTM, h_n[-1]", "attention, padding, weights",
                                  "tutorial language model", "einsum attention, sequence first"])
@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_sequence_first_models_agree_with_the_exact_oracle(name, rules):
    model, _, x = _pair(name)
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    exact, bottom = ExactGraph(model, x, rules).marginals(1)
    compare_layers(m, exact, bottom, NoReference())


@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.05), nrm.presets.EpsilonPlusFlat()],
                         ids=["lrp0", "eps", "EpsilonPlusFlat"])
def test_a_sequence_first_model_is_its_batch_first_twin(name, rules):
    """The same parameters in the other layout: f, the input marginal and the absorbed mass at
    the input equal the twin's (to rounding: the kernels sum the same terms), L1 ≤ 1e-12."""
    model, twin, x = _pair(name)
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin(x), rtol=1e-12, atol=1e-12)
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    w = nrm.explain(twin, x, target=1, rules=rules)
    torch.testing.assert_close(m.f, w.f, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(m.marginal("input"), w.marginal("input"), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.absorbed("input"), w.absorbed("input"), rtol=1e-10, atol=1e-12)
    assert abs(float(m.marginal("input").sum() + m.absorbed("input").sum()) - 1) <= 1e-12


@pytest.mark.parametrize("use", ["last", "mean"])
def test_the_sequence_first_output_read_along_dimension_0_is_the_twins(use):
    model = seeded(SequenceFirstRecurrent(nn.LSTM, False, use))
    twin = seeded(Recurrent(nn.LSTM, True, use))
    twin.load_state_dict(model.state_dict())
    x = _x(1, 4, 3)
    m, w = nrm.explain(model, x, target=0, check="full"), nrm.explain(twin, x, target=0)
    torch.testing.assert_close(m.marginal("input"), w.marginal("input"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["encoder, post-norm", "decoder layer", "RNN, h_n[-1]"])
def test_the_laws_hold_on_sequence_first_models_as_on_their_twins(name):
    model, twin, x = _pair(name)
    held = held_laws(model, x, 0, nrm.rules.Epsilon(1e-3))
    assert {"L1", "L2", "L7"} <= held and held == held_laws(twin, x, 0, nrm.rules.Epsilon(1e-3)), held


def test_a_layer_of_the_sequence_first_layout_has_its_rows_and_takes_events():
    """The encoder's first linear layer holds (L, 1, 6) per sample (a fold of the one sample's
    rows); an event on its first row gives the twin's conditional input heatmap."""
    model, twin, x = _pair("encoder, post-norm")
    m, w = nrm.explain(model, x, target=1), nrm.explain(twin, x, target=1)
    layer = "encoder.layers.0.linear1"
    assert tuple(m.marginal(layer).shape) == (1, 3, 1, 6) and tuple(w.marginal(layer).shape) == (1, 3, 6)
    torch.testing.assert_close(m.marginal(layer).reshape(1, 3, 6), w.marginal(layer), rtol=1e-10, atol=1e-12)
    mine, theirs = torch.zeros(3, 1, 6, dtype=torch.bool), torch.zeros(3, 6, dtype=torch.bool)
    mine[0], theirs[0] = True, True
    torch.testing.assert_close(m.marginal("input", within=nrm.At(layer, mask=mine)),
                               w.marginal("input", within=nrm.At(layer, mask=theirs)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, words", [
    ("encoder, post-norm", "batch_first=False"),
    ("attention, padding, weights", "batch_first=False"),
    ("LSTM, last step", "batch_first=False"),
    ("GRU, bidirectional, mean", "batch_first=False"),
], ids=["encoder", "attention", "LSTM", "GRU"])
def test_the_sequence_first_layout_on_a_batch_of_two_is_refused_by_name(name, words):
    model, _, x = _pair(name)
    x = torch.cat([x, x.flip(1)])
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError, match=words) as e:
        nrm.explain(model, x, target=0)
    assert "explains a batch of 2" in str(e.value) and "one sample at a time" in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(mod.training for mod in model.modules())


class WindowQuery(nn.Module):
    """GCViT's global query: made once per sample from the whole input, repeated along dimension
    0 for each window of the sample (the windows folded into dimension 0), added to the windows'
    own values; piecewise linear. ``repeat`` tiles it instead of interleaving."""

    def __init__(self, tile: bool = False):
        super().__init__()
        self.local, self.glob, self.head, self.tile = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2), tile

    def forward(self, x):  # (1, 4 tokens, 3)
        windows = torch.relu(self.local(x)).reshape(2, 2, 4)  # two windows of two tokens, folded into dim 0
        q = torch.relu(self.glob(x.mean(1)))  # (1, 4): one per sample
        q = q.repeat(2, 1) if self.tile else q.repeat_interleave(2, dim=0)  # (2, 4): one per window
        return self.head(torch.relu(windows + q[:, None, :] * torch.tensor([1.0, -0.5], dtype=x.dtype)[:, None, None])
                         .reshape(1, 4, 4).sum(1))


@pytest.mark.parametrize("tile", [False, True], ids=["repeat_interleave", "repeat"])
@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_a_query_repeated_for_each_window_agrees_with_the_exact_oracle(tile, rules):
    model, x = seeded(WindowQuery(tile)), _x(1, 4, 3)
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    torch.testing.assert_close(m.f, model(x)[:, 1].detach(), rtol=1e-13, atol=1e-13)
    exact, bottom = ExactGraph(model, x, rules).marginals(1)
    compare_layers(m, exact, bottom, NoReference())
    kinds = {c.kind.name for c in nrm.capture(model, x).calls if c.kind is not None}
    assert "Repeat" in kinds, kinds


class ScalarAttention(nn.Module):
    """CSATv2's single-head attention with scalar q, k, v per position: q, k, v (B, N) and
    ``(q @ k.transpose(-1, -2)).softmax(-1) @ v`` — (B, B) scores, which mix samples for B > 1 and
    are one sample's own for B = 1."""

    def __init__(self):
        super().__init__()
        self.qkv, self.head = nn.Linear(2, 3), nn.Linear(4, 2)

    def forward(self, x):  # (B, N = 4, 2)
        q, k, v = self.qkv(x).unbind(-1)
        return self.head((q @ k.transpose(-1, -2)).softmax(dim=-1) @ torch.relu(v))


@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.05)], ids=["lrp0", "eps"])
def test_a_product_of_two_matrices_of_the_one_sample_agrees_with_the_exact_oracle(rules):
    model, x = seeded(ScalarAttention()), _x(1, 4, 2)
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    exact, bottom = ExactGraph(model, x, rules).marginals(1)
    kinds = [c.kind.name for c in nrm.capture(model, x).calls if c.kind is not None]
    torch.testing.assert_close(m.f, model(x)[:, 1].detach(), rtol=1e-13, atol=1e-13)
    compare_layers(m, exact, bottom, NoReference())
    assert kinds.count("MatMul") == 2, kinds


def test_a_product_of_two_matrices_that_mixes_two_samples_is_refused_by_name():
    with pytest.raises(UnsupportedOperationError, match="MatMul"):
        nrm.explain(seeded(ScalarAttention()), _x(2, 4, 2), target=1)


class Mixer(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.fc, self.op = nn.Linear(3, 3), op

    def forward(self, x):
        return self.op(torch.relu(self.fc(x)))


@pytest.mark.parametrize("op, why", [
    (lambda h: h[0:1], "selects along the batch dimension"),
    (lambda h: h.mean(0), "reduces over the batch dimension"),
    (lambda h: torch.cat([h, h], 0), "batch dimension"),
    (lambda h: torch.stack([h, h]).sum(0), "stacks along a new first dimension"),
    (lambda h: h.unbind(0)[0].unsqueeze(0), "splits the batch dimension"),
    (lambda h: h.t(), "moves the batch dimension"),
    (lambda h: h.repeat_interleave(2, dim=0), "repeats along the batch dimension"),
    (lambda h: h.repeat(2, 1), "repeats the batch"),
], ids=["x[0:1]", "mean(0)", "cat(0)", "stack(0)", "unbind(0)", "t()", "repeat_interleave(0)", "repeat(2, 1)"])
def test_with_two_samples_an_operation_along_dimension_0_is_still_refused(op, why):
    model = seeded(Mixer(op))
    with pytest.raises(UnsupportedOperationError, match=why):
        nrm.explain(model, _x(2, 3), target=0)


@pytest.mark.parametrize("op", [lambda h: h[0:1], lambda h: h.mean(0, keepdim=True),
                                lambda h: torch.cat([h, 2 * h], 0).sum(0, keepdim=True),
                                lambda h: torch.stack([h, h]).sum(0), lambda h: h.t().t(),
                                lambda h: (h.repeat_interleave(3, dim=0) * torch.arange(1.0, 4.0).double()[:, None])
                                .sum(0, keepdim=True),
                                lambda h: torch.repeat_interleave(h, 2, 0).sum(0, keepdim=True) + h,
                                lambda h: h.repeat(2, 2)[1:2, 3:]],
                         ids=["x[0:1]", "mean(0)", "cat(0)", "stack(0)", "t()", "repeat_interleave(3, dim=0)",
                              "torch.repeat_interleave(h, 2, 0)", "repeat(2, 2)"])
def test_with_one_sample_the_same_operations_are_what_the_model_computes(op):
    """The refusals above, with one sample: read, f = model(x) and L9 (piecewise linear)."""
    model, x = seeded(Mixer(op)), _x(1, 3)
    m = nrm.explain(model, x, target=0, rules=nrm.rules.Zero(), check="full")
    xx = x.clone().requires_grad_(True)
    out = model(xx)[0, 0]
    (g,) = torch.autograd.grad(out, xx)
    torch.testing.assert_close(m.f, out.detach().reshape(1), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(m.marginal("input") * m.f, g * x, rtol=1e-12, atol=1e-13)


def test_a_reduction_over_every_dimension_stays_refused_with_one_sample():
    """x.sum() leaves no dimension for the sample: refused by name, as before."""
    model = seeded(Mixer(lambda h: h + h.sum()))
    with pytest.raises(UnsupportedOperationError, match="reduces over every dimension"):
        nrm.explain(model, _x(1, 3), target=0)


def test_a_rewrite_that_does_not_reproduce_torch_is_a_capture_mismatch(monkeypatch):
    """The capture compares the rewritten value with torch's own, bitwise."""
    class Wrong:
        def rewrite(self, args, kwargs, derived):
            x = args[0]
            return lambda: x.unsqueeze(0)[:, :1] * 1.5  # the first row, not the sum

    monkeypatch.setitem(one_sample.ONE_SAMPLE, torch.Tensor.sum, Wrong())  # the capture's own table
    with pytest.raises(CaptureMismatchError, match="along dimension 0 of a batch of one sample"):
        nrm.explain(seeded(Mixer(lambda h: h.sum(0, keepdim=True))), _x(1, 3), target=0)


def test_a_rewrite_whose_value_the_capture_did_not_record_is_a_capture_mismatch(monkeypatch):
    """A rewrite that computes outside the recorder (here: its value built before the capture
    sees it) would leave an input-derived value untracked, a constant: refused, never explained."""
    class Untracked:
        def rewrite(self, args, kwargs, derived):
            value = args[0].sum(dim=0, keepdim=True)  # computed now, unrecorded (the right value)
            return lambda: value.unsqueeze(0)

    monkeypatch.setitem(one_sample.ONE_SAMPLE, torch.Tensor.sum, Untracked())
    with pytest.raises(CaptureMismatchError, match="along dimension 0 of a batch of one sample"):
        nrm.explain(seeded(Mixer(lambda h: h.sum(0, keepdim=True))), _x(1, 3), target=0)


def test_the_explicit_reference_says_it_reads_no_folds():
    model, _, x = _pair("encoder, post-norm")
    with pytest.raises(UnsupportedModuleError, match="folds each sample into several rows"):
        reference_lrp(model, x, 1)


class WriteRows(nn.Module):
    """A write into the rows of a sequence-first value: y[0] += 1, y[0] = 3 · y[1], y[1:].mul_(2)."""

    def __init__(self, how: str):
        super().__init__()
        self.a, self.head, self.how = nn.Linear(3, 4), nn.Linear(16, 2), how

    def forward(self, x):  # (1, 4, 3)
        y = torch.relu(self.a(x)).transpose(0, 1).clone()  # (4, 1, 4)
        if self.how == "iadd":
            y[0] += 1.0
        elif self.how == "setitem":
            y[0] = y[1] * 3.0
        else:
            y[1:].mul_(2.0)
        return self.head(y.transpose(0, 1).flatten(1))


@pytest.mark.parametrize("how, error, words", [
    ("iadd", UnsupportedOperationError, "across the rows one sample holds in dimension 0"),
    ("setitem", UnsupportedOperationError, "build the rows with torch.cat"),
    ("mul_", nrm.errors.InPlaceViewError, "changed in place through a view"),
])
def test_a_write_into_rows_along_dimension_0_stays_refused_with_one_sample(how, error, words):
    """Not read (the writes are not rewritten): refused by name, never a wrong number — write
    the rows with torch.cat, or along dimension 1 of the batch-first value."""
    model = seeded(WriteRows(how))
    with pytest.raises(error, match=words):
        nrm.explain(model, _x(1, 4, 3), target=0)
