"""Values that fold each sample into several rows — ``x.reshape(-1, E)`` around OPT's MLP, the
heads into the batch (``reshape(B·h, T, d)``: BLOOM, DeBERTa), Swin's windows
(``view(-1, ws, ws, C)``), LeViT's ``flatten(0, 1)`` before a BatchNorm1d — read as what they are:
a row-major view keeps each sample's rows one block, so the value of a sample is its G rows,
canonical shape (G, *rows), and every kind reads its rows as it reads samples (``nrm.engine``:
``Engine.canonical``; refused by name before 2026-12-07, "changes the batch dimension").

Exact first: on one sample every layer's marginal equals the exact DAG oracle's (fractions; it
builds a folded layer's map row by row, block diagonal); on a batch every marginal of a folded
model equals the same model written without folds, its twin; the laws hold; a view that splits a
sample across rows is refused by name, and the explicit reference says it reads no folds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from agreement import NoReference, compare_layers, held_laws, seeded
from torch import nn

import nrm
from nrm.errors import UnsupportedModuleError, UnsupportedOperationError
from nrm_verify import laws
from nrm_verify.references.exact_dag import ExactGraph
from nrm_verify.references.explicit import reference_lrp

D = torch.float64
T, E, H = 4, 6, 2
DH = E // H


class MLPRows(nn.Module):
    """OPT's decoder MLP: the tokens folded into the batch around fc1 → relu → fc2, a residual."""

    def __init__(self, fold=True):
        super().__init__()
        self.inp, self.fc1, self.fc2, self.head = nn.Linear(3, E), nn.Linear(E, 8), nn.Linear(8, E), nn.Linear(T * E, 2)
        self.fold = fold

    def forward(self, x):
        h = self.inp(x)
        f = h.reshape(-1, h.size(-1)) if self.fold else h
        f = self.fc2(torch.relu(self.fc1(f)))
        return self.head((h + f.view(h.shape)).flatten(1))


class HeadsRows(nn.Module):
    """BLOOM's attention: the heads folded into the batch, (B·h, T, d), scores by bmm, softmax, bmm,
    unfolded and merged; its twin keeps (B, h, T, d)."""

    def __init__(self, fold=True):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(3, E), nn.Linear(3, E), nn.Linear(3, E)
        self.o, self.head = nn.Linear(E, E), nn.Linear(T * E, 2)
        self.fold = fold

    def forward(self, x):
        B = x.shape[0]
        q, k, v = (p(x).view(B, T, H, DH).transpose(1, 2) for p in (self.q, self.k, self.v))
        if self.fold:
            q, k, v = (t.reshape(B * H, T, DH) for t in (q, k, v))
            a = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(DH), dim=-1)
            o = torch.bmm(a, v).view(B, H, T, DH)
        else:
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(DH), dim=-1)
            o = a @ v
        return self.head(self.o(o.transpose(1, 2).reshape(B, T, E)).flatten(1))


class Windows(nn.Module):
    """Swin's window partition: x (B, 4, 4, C) cut into 2×2 windows folded into the batch, each
    window's tokens through a LayerNorm, a Linear and an attention over the window's tokens, then
    the windows put back; the twin keeps the windows as a dimension of the sample."""

    def __init__(self, fold=True, ws=2, C=4):
        super().__init__()
        self.inp, self.norm, self.qkv = nn.Linear(3, C), nn.LayerNorm(C), nn.Linear(C, 3 * C)
        self.head = nn.Linear(16 * C, 2)
        self.fold, self.ws, self.C = fold, ws, C

    def forward(self, x):
        B, ws, C = x.shape[0], self.ws, self.C
        h = self.inp(x)  # (B, 4, 4, C)
        w = h.view(B, 2, ws, 2, ws, C).permute(0, 1, 3, 2, 4, 5)
        w = w.reshape(-1, ws * ws, C) if self.fold else w.reshape(B, 4, ws * ws, C)
        q, k, v = self.qkv(self.norm(w)).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        o = (a @ v).view(B, 2, 2, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, 4, 4, C)
        return self.head((h + o).flatten(1))


class NormRows(nn.Module):
    """LeViT's LinearNorm: a Linear, then a BatchNorm1d over (B·N, C) by ``flatten(0, 1)`` and
    ``reshape_as``; the twin applies the same affine map per channel without the fold."""

    def __init__(self, fold=True):
        super().__init__()
        self.fc, self.bn, self.head = nn.Linear(3, E), nn.BatchNorm1d(E), nn.Linear(T * E, 2)
        self.fold = fold

    def forward(self, x):
        h = self.fc(x)
        if self.fold:
            h = self.bn(h.flatten(0, 1)).reshape_as(h)
        else:
            h = F.batch_norm(h.transpose(1, 2), self.bn.running_mean, self.bn.running_var, self.bn.weight,
                             self.bn.bias, False, 0.0, self.bn.eps).transpose(1, 2)
        return self.head(torch.relu(h).flatten(1))


class Mixed(nn.Module):
    """Folded rows through the other roles: a sigmoid gate (a product), a concatenation along a
    per-row dimension, a slice, a permute, a max pool of folded images, sums."""

    def __init__(self, fold=True):
        super().__init__()
        self.conv, self.g, self.head = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(4, 4), nn.Linear(36, 2)
        self.fold = fold

    def forward(self, x):  # x (B, 2, 2, 4, 4): two images per sample
        B = x.shape[0]
        if self.fold:
            y = self.conv(x.reshape(B * 2, 2, 4, 4))  # (B·2, 3, 4, 4)
        else:
            y = torch.stack([self.conv(x[:, i]) for i in range(2)], 1).reshape(B * 2, 3, 4, 4)
        y = y * torch.sigmoid(self.g(y))  # a gate
        y = F.max_pool2d(y, 2)  # (B·2, 3, 2, 2)
        y = torch.cat([y, y[:, :, :1] + 1.0], dim=2)  # (B·2, 3, 3, 2)
        y = y.permute(0, 2, 1, 3)  # (B·2, 3, 3, 2)
        return self.head(y.reshape(B, -1))


MODELS = {"mlp": (MLPRows, (T, 3)), "heads": (HeadsRows, (T, 3)), "windows": (Windows, (4, 4, 3)),
          "batchnorm": (NormRows, (T, 3)), "mixed": (Mixed, (2, 2, 4, 4))}


def _pair(name, batch=1, seed=0):
    """The folded model, its twin without folds (same parameters), and an input."""
    cls, shape = MODELS[name]
    model = seeded(cls(fold=True), seed, statistics=True)
    twin = cls(fold=False).double().eval()
    twin.load_state_dict(model.state_dict())
    return model, twin, torch.randn((batch,) + shape, generator=torch.Generator().manual_seed(seed + 7), dtype=D)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.05), nrm.rules.Gamma(0.25)], ids=["lrp0", "eps", "gamma"])
def test_engine_equals_exact_oracle_at_every_layer(name, rules):
    model, _, x = _pair(name)
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    exact, bottom = ExactGraph(model, x, rules).marginals(1)
    compare_layers(m, exact, bottom, NoReference())


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.05)], ids=["lrp0", "eps"])
def test_the_folded_model_is_its_twin_without_folds(name, rules):
    """On a batch of three: f, the input marginal, every absorbed mass and L1 at every layer —
    the folded model's measure is the twin's (to rounding: the kernels sum the same terms)."""
    model, twin, x = _pair(name, batch=3)
    targets = [0, 1, 0]
    m = nrm.explain(model, x, target=targets, rules=rules, check="full")
    w = nrm.explain(twin, x, target=targets, rules=rules)
    torch.testing.assert_close(m.f, w.f, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(m.marginal("input"), w.marginal("input"), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m.absorbed("input"), w.absorbed("input"), rtol=1e-10, atol=1e-12)
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_a_folded_layer_has_its_samples_rows_as_its_shape_and_takes_events():
    """The marginal of a folded layer is (B, G, *rows) — OPT's fc1 (B, T, 8) — and an event on
    it is a mask of that shape: the conditional input heatmap given fc1's first token equals the
    twin's."""
    model, twin, x = _pair("mlp", batch=2)
    m, w = nrm.explain(model, x, target=1), nrm.explain(twin, x, target=1)
    assert tuple(m.marginal("fc1").shape) == (2, T, 8)
    torch.testing.assert_close(m.marginal("fc1"), w.marginal("fc1"), rtol=1e-10, atol=1e-12)
    mask = torch.zeros(T, 8, dtype=torch.bool)
    mask[0] = True
    torch.testing.assert_close(m.marginal("input", within=nrm.At("fc1", mask=mask)),
                               w.marginal("input", within=nrm.At("fc1", mask=mask)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["heads", "windows"])
def test_the_laws_hold_on_folded_models(name):
    model, _, x = _pair(name, batch=2)
    held = held_laws(model, x, 0, nrm.rules.Epsilon(1e-3))
    assert {"L1", "L2", "L7"} <= held, held


class Split(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.fc, self.how = nn.Linear(4, 4).double(), how

    def forward(self, x):  # x (2, 3, 4)
        h = self.fc(x)
        if self.how == "across-samples":  # 24 values in 3 rows of 8: sample 0 ends inside row 1
            return h.reshape(3, 8)
        if self.how == "bias-per-row":  # BLOOM's ALiBi: a bias that differs between the heads folded into rows
            return h.reshape(-1, 4) + torch.arange(6, dtype=D).reshape(6, 1)
        if self.how == "cat-rows":  # two folded values stacked along the rows: a sample's rows apart
            f = h.reshape(-1, 4)
            return torch.cat([f, f * 2.0], 0).reshape(2, -1)
        raise AssertionError(self.how)


@pytest.mark.parametrize("how, words", [("across-samples", "changes the batch dimension"),
                                        ("cat-rows", "batch dimension"),
                                        ("bias-per-row", "differs between the rows that fold one sample")])
def test_a_view_that_splits_a_sample_across_rows_is_refused_by_name(how, words):
    x = torch.randn((2, 3, 4), generator=torch.Generator().manual_seed(3), dtype=D)
    with pytest.raises(UnsupportedOperationError, match=words):
        nrm.explain(Split(how).eval(), x, target=0)


def test_the_explicit_reference_says_it_reads_no_folds():
    model, _, x = _pair("mlp")
    with pytest.raises(UnsupportedModuleError, match="folds each sample into several rows"):
        reference_lrp(model, x, 1)
