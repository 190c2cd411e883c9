"""``torch.baddbmm`` read through its definition (``nrm.layers.fused.BaddbmmDecomposition``),
β · c + α · (A @ B): a batched product of two input-derived factors (BLOOM's scores) or a linear
map of one, plus a constant or a branch.

Exact first: engine = exact oracle = explicit reference at every layer under LRP-0, ε, γ; LRP-0
= gradient × input where the product has one input-derived factor (L9); BLOOM's attention — the
heads folded into the batch, a per-head ALiBi bias — equals its twin written with matmul and a
(B, H, 1, T) bias, for one sample (a constant per row: ``nrm.layers.one_sample``), and is refused
by name for two; the refusals (``out=``, β = 0, α not a number) leave the model untouched."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from agreement import agree, seeded, twin_and_oracle
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError

D = torch.float64
RULES = [None, nrm.rules.Epsilon(0.05), nrm.rules.Gamma(0.25)]
RULE_IDS = ["lrp0", "eps", "gamma"]
T, E, H = 3, 4, 2
DH = E // H


def _x(*shape, seed=0):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class Scores(nn.Module):
    """baddbmm in four spellings: two input-derived factors with a constant bias (β, α), the
    method form with a constant weight as the second factor, a constant first factor, and an
    input-derived ``input``."""

    def __init__(self, how: str):
        super().__init__()
        self.q, self.k, self.head = nn.Linear(3, E), nn.Linear(3, E), nn.Linear(T * T, 2)
        self.weight = nn.Parameter(torch.randn(E, T, dtype=D))
        self.how = how

    def forward(self, x):  # (B, T, 3)
        q, k = self.q(x), self.k(x)
        bias = torch.linspace(-1, 1, T * T, dtype=x.dtype).reshape(1, T, T).expand(x.shape[0], T, T)
        if self.how == "two factors":
            s = torch.baddbmm(bias, q, k.transpose(1, 2), beta=0.5, alpha=1 / math.sqrt(E))
        elif self.how == "constant weight":
            s = bias.baddbmm(torch.relu(q), self.weight.expand(x.shape[0], E, T))
        elif self.how == "constant first factor":
            s = torch.baddbmm(bias, self.weight.t().expand(x.shape[0], T, E), torch.relu(k).transpose(1, 2))
        elif self.how == "derived input":
            s = torch.baddbmm(torch.relu(q @ k.transpose(1, 2)), q, k.transpose(1, 2), alpha=2.0)
        else:
            raise AssertionError(self.how)
        return self.head(s.flatten(1))


@pytest.mark.parametrize("how", ["two factors", "constant weight", "constant first factor", "derived input"])
@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_baddbmm_agrees_with_the_exact_oracle_and_the_explicit_reference(how, rules):
    model, x = seeded(Scores(how)), _x(1, T, 3)
    m = agree(model, x, target=1, rules=rules)
    torch.testing.assert_close(m.f, model(x)[:, 1].detach(), rtol=1e-12, atol=1e-12)


def test_lrp0_is_gradient_x_input_with_one_input_derived_factor():
    model, x = seeded(Scores("constant weight")), _x(2, T, 3)
    m = nrm.explain(model, x, target=[0, 1], rules=nrm.rules.Zero())
    xx = x.clone().requires_grad_(True)
    out = model(xx)
    (g,) = torch.autograd.grad(out[0, 0] + out[1, 1], xx)
    torch.testing.assert_close(m.marginal("input") * m.f.reshape(-1, 1, 1), g * x, rtol=1e-12, atol=1e-13)


class Bloom(nn.Module):
    """BLOOM's attention: q, k, v with the heads folded into the batch (B·H, T, d), scores =
    baddbmm(alibi, q, kᵀ, β = 1, α = 1/√d) with one ALiBi bias per head (B·H, 1, T), softmax,
    bmm with v; the twin keeps (B, H, T, d) and adds the bias as (B, H, 1, T)."""

    def __init__(self, fold: bool = True):
        super().__init__()
        self.qkv, self.o, self.head = nn.Linear(3, 3 * E), nn.Linear(E, E), nn.Linear(T * E, 2)
        self.fold = fold

    def forward(self, x):
        B = x.shape[0]
        slopes = torch.tensor([0.5, 0.25], dtype=x.dtype).reshape(1, H, 1, 1)
        alibi = (slopes * torch.arange(T, dtype=x.dtype).reshape(1, 1, 1, T)).expand(B, H, 1, T)
        q, k, v = (t.reshape(B, T, H, DH).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        if self.fold:
            q, k, v = (t.reshape(B * H, T, DH) for t in (q, k, v))
            scores = alibi.reshape(B * H, 1, T).baddbmm(q, k.transpose(1, 2), beta=1.0, alpha=1 / math.sqrt(DH))
            o = torch.bmm(torch.softmax(scores, -1), v).view(B, H, T, DH)
        else:
            o = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(DH) + alibi, -1) @ v
        return self.head(self.o(o.transpose(1, 2).reshape(B, T, E)).flatten(1))


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_blooms_attention_for_one_sample_is_its_twin_and_agrees_with_the_exact_oracle(rules):
    model = seeded(Bloom())
    twin = Bloom(fold=False).double().eval()
    twin.load_state_dict(model.state_dict())
    twin_and_oracle(model, twin, _x(1, T, 3), 1, rules)


def test_blooms_attention_for_two_samples_is_refused_by_name():
    with pytest.raises(UnsupportedOperationError, match="differs between the rows that fold one sample"):
        nrm.explain(seeded(Bloom()), _x(2, T, 3), target=0)


class Bad(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.fc, self.how = nn.Linear(3, 3), how

    def forward(self, x):  # (B, 3, 3)
        h = self.fc(x)
        c = torch.ones_like(h)
        if self.how == "out":
            return torch.baddbmm(c, h, h, out=torch.empty_like(h))
        if self.how == "beta 0":
            return torch.baddbmm(c, h, h, beta=0)
        if self.how == "alpha tensor":
            return torch.baddbmm(c, h, h, alpha=torch.tensor(2.0, dtype=h.dtype))
        if self.how == "weight per sample":
            w = torch.arange(x.shape[0] * 9, dtype=h.dtype).reshape(-1, 3, 3)
            return torch.baddbmm(c, h, w)
        raise AssertionError(self.how)


@pytest.mark.parametrize("how, words", [("out", "out="), ("beta 0", "beta=0"), ("alpha tensor", "alpha="),
                                        ("weight per sample", "differs between samples")])
def test_what_is_not_read_is_refused_by_name_and_the_model_is_untouched(how, words):
    model = seeded(Bad(how))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError, match=words):
        nrm.explain(model, _x(2, 3, 3), target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
