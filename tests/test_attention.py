"""Attention's kernels (issue 14, NRM-SPEC §8): the matrix product of two activations
(:class:`nrm.layers.attention.MatMul`, θ split) and the softmax
(:class:`nrm.layers.attention.Softmax`, AttnLRP Prop. 3.1).

Exact first: each kernel is compared, in fractions, with its closed form (the exact DAG
oracle's kernel on a model where the kind reads the input's own values); then the engine
equals the exact oracle (:mod:`nrm_verify.references.exact_dag`) and the explicit LRP
reference (:mod:`nrm_verify.references.explicit`, dense matrices written from the
definitions) at every layer, for several rules and splits θ; L1 ≤ 1e-12; f = model(x)[:, c];
bad arguments are refused by name.
"""

from __future__ import annotations

import contextlib
import math
from fractions import Fraction

import nets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from agreement import agree
from torch import nn

import nrm
from nrm.errors import ArgumentError, UnsupportedOperationError
from nrm.layers.attention import MatMul
from nrm.linear import SoftmaxMap
from nrm_verify import laws
from nrm_verify.references.exact_dag import ExactGraph

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.rules.AlphaBeta(2, 1),
         nrm.rules.Flat(), nrm.presets.EpsilonPlus()]


@contextlib.contextmanager
def theta(value):
    """Read every matrix product with ``MatMul(theta=value)`` (the default kind back afterwards)."""
    nrm.layers.register(MatMul(theta=value))
    try:
        yield
    finally:
        nrm.layers.register(MatMul())


class Products(nn.Module):
    """O = A · V with A, V the two halves of the input itself (so the factors' values are exact)."""

    def forward(self, x):
        return (x[:, 0] @ x[:, 1]).flatten(1)


class SoftmaxOfInput(nn.Module):
    def forward(self, x):
        return F.softmax(x, dim=-1).flatten(1)


class Head(nn.Module):
    """x (T, d) → one self-attention head softmax(q kᵀ / √d) v → flatten → dense."""

    def __init__(self, t=3, d=3, out=2):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.fc = nn.Linear(t * d, out)
        self.scale = 1 / math.sqrt(d)

    def forward(self, x):
        a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) * self.scale, dim=-1)
        return self.fc(torch.matmul(a, self.v(x)).flatten(1))


def _head(seed=0, batch=1):
    model = nets.seeded(Head().double(), seed)
    x = torch.randn((batch, 3, 3), generator=torch.Generator().manual_seed(seed + 100), dtype=D)
    return model, x


# -- the kernels in closed form, exactly -------------------------------------------------------


@pytest.mark.parametrize("split", [Fraction(1, 2), Fraction(0), Fraction(1, 3), Fraction(1)], ids=str)
def test_matmul_kernel_is_the_theta_split_exactly(split):
    """q(A_ji | O_jp) = θ A_ji V_ip / O_jp, q(V_ip | O_jp) = (1 − θ) A_ji V_ip / O_jp, q(⊥ | O_jp) = 0
    under LRP-0, in fractions (the oracle's kernel), for θ = ½, 0, ⅓, 1."""
    x = torch.randn((1, 2, 2, 2), generator=torch.Generator().manual_seed(3), dtype=D)
    model = Products().eval()
    with theta(split):
        graph = ExactGraph(model, x, nrm.rules.Zero())
    l = next(b.index for b in graph.network.blocks if b.kind == "linear")
    q, qbot = graph.kernels[l]
    A, V = (np.array([[Fraction(float(v)) for v in row] for row in x[0, i]], dtype=object) for i in range(2))
    O = A.dot(V)
    for j in range(2):
        for p in range(2):
            k = j * 2 + p
            assert qbot[k] == 0
            for i in range(2):
                assert q[j * 2 + i, k] == split * A[j, i] * V[i, p] / O[j, p]
                assert q[4 + i * 2 + p, k] == (1 - split) * A[j, i] * V[i, p] / O[j, p]
            assert sum(q[:, k]) == 1


def test_matmul_epsilon_sends_the_stabilizer_share_to_the_absorber():
    """Under LRP-ε: q(⊥ | O_jp) = ε s(O_jp) / (O_jp + ε s(O_jp)) exactly, and the real shares are divided by it."""
    x = torch.randn((1, 2, 2, 2), generator=torch.Generator().manual_seed(4), dtype=D)
    eps = Fraction(1, 10)
    graph = ExactGraph(Products().eval(), x, nrm.rules.Epsilon(0.1))
    l = next(b.index for b in graph.network.blocks if b.kind == "linear")
    q, qbot = graph.kernels[l]
    A, V = (np.array([[Fraction(float(v)) for v in row] for row in x[0, i]], dtype=object) for i in range(2))
    O = A.dot(V)
    e = float(eps)
    for j in range(2):
        for p in range(2):
            s = 1 if O[j, p] >= 0 else -1
            D_ = O[j, p] + Fraction(e) * s
            assert qbot[j * 2 + p] == Fraction(e) * s / D_
            assert q[j * 2, j * 2 + p] == Fraction(1, 2) * A[j, 0] * V[0, p] / D_


def test_softmax_kernel_is_attnlrp_prop_3_1_exactly():
    """q(x_i | s_j) = x_i (δ_ij − s_i), q(⊥ | s_j) = 1 − x_j + Σ_i s_i x_i under LRP-0, in fractions:
    each column sums to one (Σ_i x_i (δ_ij − s_i) = x_j − Σ_i s_i x_i)."""
    x = torch.randn((1, 2, 3), generator=torch.Generator().manual_seed(5), dtype=D)
    graph = ExactGraph(SoftmaxOfInput().eval(), x, nrm.rules.Zero())
    l = next(b.index for b in graph.network.blocks if b.kind == "linear")
    q, qbot = graph.kernels[l]
    xs = np.array([Fraction(float(v)) for v in x.reshape(-1)], dtype=object)
    s = np.array([Fraction(float(v)) for v in torch.softmax(x, -1).reshape(-1)], dtype=object)
    for g in range(2):
        group = range(3 * g, 3 * g + 3)
        for j in group:
            for i in group:
                assert q[i, j] == xs[i] * ((1 if i == j else 0) - s[i])
            assert qbot[j] == 1 - xs[j] + sum(s[i] * xs[i] for i in group)
            assert sum(q[:, j]) + qbot[j] == 1
        for i in group:  # no edge across groups
            assert all(q[i, j] == 0 for j in range(6) if j not in group)


def test_softmax_relevance_is_attnlrp_equation_9():
    """As relevance: R_i = x_i (R_i^out − s_i Σ_j R_j^out) (AttnLRP eq. 9), the engine against it."""
    model = nn.Sequential(SoftmaxOfInput(), nn.Linear(6, 2)).double().eval()
    nets.seeded(model, 7)
    x = torch.randn((2, 2, 3), generator=torch.Generator().manual_seed(8), dtype=D)
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero())
    R_out = m.relevance("0").reshape(2, 2, 3)
    s = torch.softmax(x, -1)
    want = x * (R_out - s * R_out.sum(-1, keepdim=True))
    torch.testing.assert_close(m.relevance("input"), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_softmax_map_applied_as_itself_equals_its_dense_weight(dim):
    """SoftmaxMap applies W = diag(s) − s sᵀ without forming it (``own_weight``, the
    probabilities): its forward, transpose (on R·B stacked rows) and magnitude Σ_j |x_j| |W_jk|
    equal those of the dense W (B, G, n, n), also at a masked entry (x = finfo.min, s = 0)."""
    gen = torch.Generator().manual_seed(21)
    x = torch.randn((2, 3, 4, 5), generator=gen, dtype=D)
    x[0, 1, 2, 3] = torch.finfo(D).min
    model = nets.seeded(nn.Sequential(nn.Softmax(dim=dim + 1), nn.Flatten(), nn.Linear(60, 2)).double().eval(), 22)
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero())
    (lmap,) = [t for t in m.engine.maps.values() if isinstance(t, SoftmaxMap)]
    own, dense = lmap.own_weight(), lmap.weight
    assert own.dim() == 3 and dense.shape == own.shape + own.shape[-1:]
    rows = torch.randn((6,) + tuple(x.shape[1:]), generator=gen, dtype=D)
    for t in (x, rows):
        torch.testing.assert_close(lmap.forward(t, own), lmap.forward(t, dense), rtol=1e-13, atol=1e-300)
        torch.testing.assert_close(lmap.transpose(t, own, x.shape[1:]), lmap.transpose(t, dense, x.shape[1:]),
                                   rtol=1e-13, atol=1e-300)
    torch.testing.assert_close(lmap.magnitude(x), lmap.forward(x.abs(), dense.abs()), rtol=1e-13, atol=1e-300)
    torch.testing.assert_close(lmap.forward(x, own) + lmap.bias, torch.softmax(x, dim + 1), rtol=1e-13, atol=1e-15)


# -- engine = exact oracle = explicit reference -----------------------------------------------


@pytest.mark.parametrize("rules", RULES, ids=repr)
def test_attention_head_engine_equals_oracle_and_reference(rules):
    model, x = _head()
    m = agree(model, x, 1, rules)
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert laws.column_sums(m).holds is True
    with torch.no_grad():
        assert float(m.f[0]) == float(model(x)[0, 1])


@pytest.mark.parametrize("split", [0, "equal", Fraction(1, 3), 1.0], ids=str)
def test_attention_head_every_split_agrees(split):
    model, x = _head(seed=1)
    with theta(split):
        m = agree(model, x, 0, nrm.rules.Epsilon(1e-3))
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_cp_lrp_gives_the_attention_nothing():
    """θ = 0 (CP-LRP): the softmax, the scores and the query/key projections receive nothing; every
    bit of relevance reaches the input through the values. θ = ½: the attention gets half of each
    product's share."""
    model, x = _head(seed=2)
    with theta("values"):
        cp = nrm.explain(model, x, target=0)
    for name in ("softmax", "matmul", "mul", "q", "k", "transpose"):
        assert float(cp.marginal(name).abs().max()) == 0.0, name
    assert float(cp.marginal("v").sum()) == pytest.approx(float(cp.marginal("matmul_1").sum()), rel=1e-12)
    half = nrm.explain(model, x, target=0)  # LRP-0: nothing to ⊥ at the product, half to each factor
    total = float(half.marginal("matmul_1").sum())
    assert float(half.marginal("softmax").sum()) == pytest.approx(total / 2, rel=1e-12)
    assert float(half.marginal("v").sum()) == pytest.approx(total / 2, rel=1e-12)
    assert not torch.allclose(cp.marginal("input"), half.marginal("input"))


def test_batch_of_heads_equals_each_sample_alone():
    model, x = _head(seed=3, batch=3)
    m = nrm.explain(model, x, target=1)
    for i in range(3):
        one = nrm.explain(model, x[i:i + 1], target=1)
        torch.testing.assert_close(m.marginal("input")[i:i + 1], one.marginal("input"), rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 1], rtol=0, atol=0)
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_l9_holds_through_softmax_and_only_detached_through_a_product():
    """LRP-0 through the softmax is Gradient × Input (its W is the Jacobian); a matrix product of
    activations keeps L9 only in its general form (θ A V̄ + (1 − θ) Ā V)."""
    soft = nets.seeded(nn.Sequential(nn.Linear(3, 3), nn.Softmax(-1), nn.Flatten(), nn.Linear(6, 2)).double(), 9)
    x = torch.randn((2, 2, 3), generator=torch.Generator().manual_seed(10), dtype=D)
    assert laws.gradient_x_input(soft, x, 0).holds is True
    model, x = _head(seed=4, batch=2)
    plain = laws.gradient_x_input(model, x, 0)
    assert plain.holds is None and "MatMul" in plain.detail
    assert laws.gradient_x_input(model, x, 0, detached=True).holds is True


# -- bad arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "half", None, [0.5]], ids=repr)
def test_matmul_refuses_a_bad_theta(bad):
    with pytest.raises(ArgumentError, match="theta"):
        MatMul(theta=bad)


class Broadcast(nn.Module):
    """(B, 2, 2, 3) @ (B, 3, 2) with B = 2: torch aligns the second factor's batch with the first's
    head dimension (a broadcast over a missing dimension, which mixes the samples)."""

    def forward(self, x):
        return (x @ x[:, 0].transpose(-1, -2)).flatten(1)


class BatchSoftmax(nn.Module):
    def forward(self, x):
        return torch.softmax(x, dim=0)


@pytest.mark.parametrize("module,shape,words", [
    (Broadcast(), (2, 2, 3), ("matmul", "shapes", "over a missing dimension")),
    (BatchSoftmax(), (3,), ("softmax", "batch dimension")),
], ids=["broadcast", "batch-softmax"])  # a constant on the left: read since 2026-12-07 (test_matmul_weight.py)
def test_unreadable_attention_operations_are_named(module, shape, words):
    x = torch.randn((2,) + shape, generator=torch.Generator().manual_seed(11), dtype=D)
    with pytest.raises(UnsupportedOperationError) as info:
        nrm.explain(module.eval(), x, target=0)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_softmax_shift_moves_the_real_shares_not_the_absorber():
    """softmax(x + c) = softmax(x), but the kernel is a Taylor expansion at x: the real shares move
    by c (δ_ij − s_i) (a column sum of 0) and ⊥'s share 1 − x_j + Σ_i s_i x_i does not. Measured,
    not forced: the input marginal changes by c (R_i − s_i Σ_j R_j) / f."""
    model = nets.seeded(nn.Sequential(SoftmaxOfInput(), nn.Linear(6, 2)).double(), 12)
    x = torch.randn((1, 2, 3), generator=torch.Generator().manual_seed(13), dtype=D)
    c = 0.75
    m, shifted = nrm.explain(model, x, target=0), nrm.explain(model, x + c, target=0)
    assert float(m.f[0]) == pytest.approx(float(shifted.f[0]), rel=1e-15)
    torch.testing.assert_close(shifted.absorbed("input"), m.absorbed("input"), rtol=1e-12, atol=1e-14)
    R = m.marginal("0").reshape(1, 2, 3)
    s = torch.softmax(x, -1)
    torch.testing.assert_close(shifted.marginal("input") - m.marginal("input"),
                               c * (R - s * R.sum(-1, keepdim=True)), rtol=1e-10, atol=1e-13)
    assert float((shifted.marginal("input") - m.marginal("input")).abs().max()) > 1e-3


def test_gnn_lrp_reference_says_a_softmax_is_not_affine():
    """The GNN-LRP reference reads affine maps from the recorded operation on the unit basis; a
    softmax is linear only at its forward value, so L15 is not applicable (not a wrong number)."""
    model = nets.seeded(nn.Sequential(nn.Linear(3, 3), nn.Softmax(-1), nn.Flatten(), nn.Linear(6, 2)).double(), 14)
    x = torch.randn((1, 2, 3), generator=torch.Generator().manual_seed(15), dtype=D)
    result = laws.walk_relevance(model, x, 0, {"1": [0]})
    assert result.holds is None and "not an affine operation" in result.detail


@pytest.mark.parametrize("split", [0, Fraction(1, 3), 1], ids=str)
def test_check_layer_passes_matmul_at_other_splits(split):
    """The built-in kinds' check (tests/test_layers.py) runs θ = ½; the other splits pass it too,
    and the registry is back to the default afterwards."""
    from nrm_verify.validate.layers import check_layer

    report = check_layer(MatMul(theta=split), max_examples=3, only=["K2", "K3", "K5", "L1", "L18"])
    assert report.ok, str(report)
    assert nrm.layers.REGISTRY.kinds["MatMul"].theta == Fraction(1, 2)


class Batched(nn.Module):
    """torch.bmm and Tensor.matmul of two projections of x (B, 3, 2): (x W_a)(x W_b)ᵀ then times x W_c."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.head = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(6, 2)

    def forward(self, x):
        scores = torch.bmm(self.a(x), self.b(x).transpose(1, 2))
        return self.head(scores.matmul(self.c(x)).flatten(1))


@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.1)], ids=repr)
def test_bmm_and_tensor_matmul_are_read(rules):
    model = nets.seeded(Batched().double(), 16)
    x = torch.randn((1, 3, 2), generator=torch.Generator().manual_seed(17), dtype=D)
    m = agree(model, x, 0, rules)
    assert [b.producer.layer_kind.name for b in m.network.blocks[1:]].count("MatMul") == 2


# -- multi-query attention: one key/value head broadcast over the query heads ---------------------
class MultiQuery(nn.Module):
    """Falcon-style multi-query attention on x (B, T, 4): 2 query heads, one key/value head of
    size 2 broadcast over them by ``@`` ((B, 2, T, 2) @ (B, 1, 2, T)); ``expand=True`` writes the
    same model with the key/value head expanded explicitly (an index map)."""

    def __init__(self, expand: bool = False):
        super().__init__()
        self.q, self.kv = nets.seeded(nn.Linear(4, 4).double(), 21), nets.seeded(nn.Linear(4, 4).double(), 22)
        self.head = nets.seeded(nn.Linear(4, 3).double(), 23)
        self.expand = expand

    def forward(self, x):
        B, T, _ = x.shape
        q = self.q(x).reshape(B, T, 2, 2).transpose(1, 2)                  # (B, 2, T, 2)
        kv = self.kv(x).reshape(B, T, 2, 2)
        k, v = kv[:, :, 0].unsqueeze(1), kv[:, :, 1].unsqueeze(1)            # (B, 1, T, 2) each
        if self.expand:
            k, v = k.expand(B, 2, T, 2), v.expand(B, 2, T, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) * 0.5, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(B, T, 4)
        return self.head(F.relu(o).mean(1))


@pytest.mark.parametrize("split", [Fraction(1, 2), 0], ids=["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("rules", ["zero", "epsilon", "gamma"])
def test_a_key_value_head_broadcast_over_the_query_heads(split, rules):
    """A MatMul whose second factor is broadcast over the first's head dimension: engine = exact
    oracle (its map unrolled from the definition, the shared head read by every query head) =
    explicit reference at every layer, L1, and the same marginals as the model that expands the
    key/value head explicitly (an index map whose transpose sums the heads' relevance)."""
    rule = {"zero": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "gamma": nrm.rules.Gamma(0.25)}[rules]
    x = torch.randn((1, 3, 4), generator=torch.Generator().manual_seed(31), dtype=D)
    with theta(split):
        m = agree(MultiQuery().eval(), x, target=1, rules=rule)
        twin = nrm.explain(MultiQuery(expand=True).eval(), x, 1, rules=rule)
        xb = torch.randn((2, 3, 4), generator=torch.Generator().manual_seed(32), dtype=D)
        assert laws.batch_invariance(MultiQuery().eval(), xb, 1, rule).holds is True
    for name in m.canonical_names():
        total = m.marginal(name).flatten(1).sum(1) + m.absorbed(name)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)
    torch.testing.assert_close(m.marginal("input"), twin.marginal("input"), rtol=0, atol=1e-13)
    torch.testing.assert_close(m.absorbed("input"), twin.absorbed("input"), rtol=0, atol=1e-13)
