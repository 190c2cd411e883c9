"""A matrix product of an input-derived tensor with a stack of constant matrices (x @ W, W of
(…, k, m)) or with a constant on the left (W @ x), read as the einsum it is
(``nrm.layers.fused.MatmulWeightDecomposition`` → ``EinsumWeightDecomposition``: a Dense layer,
block diagonal over the stack, between index maps); refused by name before 2026-12-07 ("a batched
constant", "a constant matrix on the left"). MViT's relative positions, one table per frame of a
value that folds the frames into dimension 0, are read for one sample (``nrm.layers.one_sample``).

Exact first: engine = exact oracle = explicit reference at every layer under LRP-0, ε, γ (the
reference where there are no folds); LRP-0 = gradient × input (a linear map, L9); the folded
per-frame product equals its twin written batch first; what stays refused is refused by name."""

from __future__ import annotations

import pytest
import torch
from agreement import agree, seeded, twin_and_oracle
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError

D = torch.float64
RULES = [None, nrm.rules.Epsilon(0.05), nrm.rules.Gamma(0.25)]
RULE_IDS = ["lrp0", "eps", "gamma"]


def _x(*shape, seed=0):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class Products(nn.Module):
    """x (B, 2, 3, 4) through a linear layer, then one product with constants, then a head."""

    def __init__(self, how: str):
        super().__init__()
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(24, 2)
        g = torch.Generator().manual_seed(5)
        self.register_buffer("stack", torch.randn(2, 4, 4, generator=g, dtype=D))  # one matrix per position
        self.register_buffer("left", torch.randn(3, 3, generator=g, dtype=D))
        self.register_buffer("left_stack", torch.randn(2, 3, 3, generator=g, dtype=D))
        self.how = how

    def forward(self, x):
        h = torch.relu(self.fc(x))  # (B, 2, 3, 4)
        if self.how == "x @ stack":
            y = h @ self.stack
        elif self.how == "torch.matmul(x, stack)":
            y = torch.matmul(h, self.stack)
        elif self.how == "W @ x":
            y = self.left @ h
        elif self.how == "stack @ x":
            y = torch.matmul(self.left_stack, h)
        else:
            raise AssertionError(self.how)
        return self.head(y.flatten(1))


HOWS = ["x @ stack", "torch.matmul(x, stack)", "W @ x", "stack @ x"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_the_product_agrees_with_the_exact_oracle_and_the_explicit_reference(how, rules):
    model, x = seeded(Products(how)), _x(1, 2, 3, 4)
    m = agree(model, x, target=1, rules=rules)
    torch.testing.assert_close(m.f, model(x)[:, 1].detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", HOWS)
def test_lrp0_is_gradient_x_input_on_a_batch(how):
    model, x = seeded(Products(how)), _x(3, 2, 3, 4)
    m = nrm.explain(model, x, target=[0, 1, 0], rules=nrm.rules.Zero(), check="full")
    xx = x.clone().requires_grad_(True)
    out = model(xx)
    (g,) = torch.autograd.grad(out[0, 0] + out[1, 1] + out[2, 0], xx)
    torch.testing.assert_close(m.marginal("input") * m.f.reshape(-1, 1, 1, 1), g * x, rtol=1e-11, atol=1e-12)


class Frames(nn.Module):
    """MViT's relative positions: q (1, T, N, d) moved to (T, N, d) — the frames in dimension 0,
    a fold of the one sample — times one table per frame, Rt (T, d, T); the twin keeps the
    batch first and broadcasts the tables over it."""

    def __init__(self, fold: bool = True, T: int = 3):
        super().__init__()
        self.q, self.head = nn.Linear(4, 4), nn.Linear(T * 2 * T, 2)
        self.register_buffer("tables", torch.randn(T, 4, T, generator=torch.Generator().manual_seed(2), dtype=D))
        self.fold = fold

    def forward(self, x):  # (B, T, N = 2, 4)
        q = torch.relu(self.q(x))
        if self.fold:
            r = torch.matmul(q.permute(1, 0, 2, 3).reshape(q.shape[1], -1, 4), self.tables)  # (T, B·N, T)
            r = r.reshape(q.shape[1], q.shape[0], 2, -1).transpose(0, 1)
        else:
            r = torch.matmul(q, self.tables)
        return self.head(r.flatten(1))


@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_one_table_per_frame_for_one_sample_is_its_twin_and_agrees_with_the_exact_oracle(rules):
    model = seeded(Frames())
    twin = Frames(fold=False).double().eval()
    twin.load_state_dict(model.state_dict())
    twin_and_oracle(model, twin, _x(1, 3, 2, 4), 1, rules)


def test_one_table_per_frame_for_two_samples_is_refused_by_name():
    with pytest.raises(UnsupportedOperationError, match="moves the batch dimension"):
        nrm.explain(seeded(Frames()), _x(2, 3, 2, 4), target=0)


class Broadcast(nn.Module):
    """A stack whose size does not match x's positions (broadcast over size 1): not read."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("stack", torch.ones(1, 4, 4, dtype=D))

    def forward(self, x):  # (B, 2, 3, 4)
        return (torch.relu(self.fc(x)) @ self.stack).flatten(1)


def test_a_stack_that_broadcasts_is_refused_by_name():
    with pytest.raises(UnsupportedOperationError, match="batched constant"):
        nrm.explain(seeded(Broadcast()), _x(1, 2, 3, 4), target=0)


class CrossAttention(nn.Module):
    """A decoder's cross-attention over x (B, T, 4): the queries come from the decoder's own tokens,
    not from the explained input — a constant with the batch's dimension (1 or B, h, L, d), as T5 and
    transformers' SDPA path hand it on (SigLIP's pooling probe likewise) — and the keys and values
    from x. ``differ``: the queries differ between samples (other decoder tokens per sample)."""

    def __init__(self, how: str = "matmul", differ: bool = False):
        super().__init__()
        self.k, self.v, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(2 * 3 * 2, 2)
        self.queries = nn.Parameter(torch.zeros(1, 2, 3, 2, dtype=D))  # (1, h = 2, L = 3, d = 2)
        self.how, self.differ = how, differ

    def forward(self, x):
        B, T = x.shape[:2]
        q = self.queries.expand(B, -1, -1, -1)
        if self.differ:
            q = q + torch.arange(B, dtype=D).reshape(B, 1, 1, 1)
        k = torch.relu(self.k(x)).reshape(B, T, 2, 2).transpose(1, 2)  # (B, h, T, d)
        v = self.v(x).reshape(B, T, 2, 2).transpose(1, 2)
        if self.how == "sdpa":
            o = nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax(torch.matmul(q, k.transpose(-1, -2)), dim=-1) @ v
        return self.head(o.flatten(1))


@pytest.mark.parametrize("how", ["matmul", "sdpa"])
@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_cross_attention_with_constant_queries_agrees_with_the_exact_oracle(how, rules):
    """Q · Kᵀ with Q a constant that carries the batch's dimension (size 1) is W @ x, read as its
    einsum with Q's one sample; the rest of the attention is the usual softmax and A · V."""
    model = seeded(CrossAttention(how))
    m = agree(model, _x(1, 5, 4), target=1, rules=rules)
    torch.testing.assert_close(m.f, model(_x(1, 5, 4))[:, 1].detach(), rtol=1e-12, atol=1e-12)


def test_cross_attention_queries_equal_for_every_sample_are_read_on_a_batch_and_differing_ones_refused():
    """Queries expanded to the batch (equal samples) are one constant: each sample's measure is its
    own explain's; queries that differ between samples are refused by name, the model untouched."""
    model, x = seeded(CrossAttention()), _x(2, 5, 4)
    m = nrm.explain(model, x, target=0, check="full")
    for b in range(2):
        one = nrm.explain(model, x[b:b + 1], target=0)
        torch.testing.assert_close(m.marginal("input")[b:b + 1], one.marginal("input"), rtol=1e-12, atol=1e-13)
    other = seeded(CrossAttention(differ=True))
    state = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(UnsupportedOperationError, match="whose samples differ"):
        nrm.explain(other, x, target=0)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    assert torch.isfinite(nrm.explain(other, x[:1], target=0).marginal("input")).all()  # one sample: one constant
