"""Additive constants and einsum products (issue 14, the vision transformers): a position
embedding, a relative position bias or a mask added to an activation
(:class:`nrm.layers.constants.AddConstant`), a class token concatenated before the tokens
(:class:`nrm.layers.constants.CatConstant`), a tensor made from an input's shape alone
(``x.new_zeros``: a constant), and ``torch.einsum`` of two activations read as a matrix product
(:class:`nrm.layers.fused.EinsumDecomposition`).

Exact first: each kernel against its closed form in fractions (the exact DAG oracle's kernel);
then the engine equals the exact oracle and the explicit LRP reference (which reads the
recorded operations on the unit basis, not the kinds' maps) at every layer on a small vision
transformer written with these operations; L1 ≤ 1e-12; L9 through the constants; refusals by name.
"""

from __future__ import annotations

import math
from fractions import Fraction

import nets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from agreement import compare_layers
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError
from nrm_verify import laws
from nrm_verify.references.exact_dag import ExactGraph
from nrm_verify.references.explicit import reference_lrp

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.presets.EpsilonPlus()]


def _fractions(t) -> np.ndarray:
    return np.array([Fraction(float(v)) for v in t.reshape(-1)], dtype=object)


def _kernel(model, x, rules=None):
    graph = ExactGraph(model, x, rules or nrm.rules.Zero())
    l = next(b.index for b in graph.network.blocks if b.kind == "linear")
    return graph.kernels[l]


class PlusConstant(nn.Module):
    """x + c (or c − x), c a parameter of one sample's shape with a leading 1."""

    def __init__(self, shape, reverse=False):
        super().__init__()
        self.c = nn.Parameter(torch.zeros((1,) + tuple(shape), dtype=D))
        self.reverse = reverse

    def forward(self, x):
        return self.c - x if self.reverse else x + self.c


class Token(nn.Module):
    """cat([t, x], 1) with a token t expanded over the batch (ViT's class token)."""

    def __init__(self, width):
        super().__init__()
        self.t = nn.Parameter(torch.zeros(1, 1, width, dtype=D))

    def forward(self, x):
        return torch.cat([self.t.expand(x.shape[0], -1, -1), x], dim=1)


# -- the kernels in closed form, exactly -------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["x+c", "c-x"])
def test_add_constant_kernel_sends_the_constant_share_to_the_absorber_exactly(reverse):
    """z = s x + c: q(x_k | z_k) = s x_k / z_k, q(⊥ | z_k) = c_k / z_k under LRP-0, in fractions;
    every column sums to one; no edge across neurons."""
    model = nets.seeded(PlusConstant((2, 3), reverse), 1)
    x = torch.randn((1, 2, 3), generator=torch.Generator().manual_seed(2), dtype=D)
    q, qbot = _kernel(model, x)
    xs, c = _fractions(x), _fractions(model.c.detach())
    s = -1 if reverse else 1
    for k in range(6):
        z = s * xs[k] + c[k]
        assert q[k, k] == s * xs[k] / z
        assert qbot[k] == c[k] / z
        assert all(q[j, k] == 0 for j in range(6) if j != k)
        assert sum(q[:, k]) + qbot[k] == 1


def test_add_constant_under_epsilon_divides_by_the_stabilized_sum():
    model = nets.seeded(PlusConstant((4,)), 3)
    x = torch.randn((1, 4), generator=torch.Generator().manual_seed(4), dtype=D)
    q, qbot = _kernel(model, x, nrm.rules.Epsilon(0.1))
    xs, c, eps = _fractions(x), _fractions(model.c.detach()), Fraction(0.1)
    for k in range(4):
        z = xs[k] + c[k]
        d = z + eps * (1 if z >= 0 else -1)
        assert q[k, k] == xs[k] / d and qbot[k] == 1 - xs[k] / d


def test_class_token_is_wholly_absorbed_and_the_copies_pass_unchanged():
    """cat([t, x]): q(x_j | z_k) = 1 for the copy k of x_j, q(⊥ | z_c) = 1 for a token neuron."""
    model = nets.seeded(Token(2), 5)
    x = torch.randn((1, 2, 2), generator=torch.Generator().manual_seed(6), dtype=D)
    q, qbot = _kernel(model, x)
    for c in range(2):  # the token: the first two output neurons
        assert qbot[c] == 1 and all(q[j, c] == 0 for j in range(4))
    for j in range(4):
        assert q[j, j + 2] == 1 and qbot[j + 2] == 0


# -- a small vision transformer: engine = exact oracle = explicit reference --------------------


class TinyViT(nn.Module):
    """Patches (2 tokens × 2) → dense embedding → class token → + position embedding → one
    head written with einsum, + a relative position bias and a shifted-window-style mask of
    −100 built from ``x.new_zeros`` → softmax → einsum with the values → + residual → layer
    norm → the class token → dense head."""

    def __init__(self, d=2, t=2):
        super().__init__()
        self.embed = nn.Linear(2, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, t + 1, d))
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.rel = nn.Parameter(torch.zeros(1, t + 1, t + 1))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        h = self.embed(x)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1) + self.pos
        scores = torch.einsum("bid,bjd->bij", self.q(h), self.k(h)) / math.sqrt(h.shape[-1])
        mask = h.new_zeros((h.shape[1], h.shape[1]))
        mask[0, -1] = -100.0
        a = torch.softmax(scores + self.rel + mask, dim=-1)
        h = self.norm(h + torch.einsum("bij,bjd->bid", a, self.v(h)))
        return self.head(h[:, 0])


def _tiny(seed=0, batch=1):
    model = nets.seeded(TinyViT().double(), seed)
    x = torch.randn((batch, 2, 2), generator=torch.Generator().manual_seed(seed + 100), dtype=D)
    return model, x


@pytest.mark.parametrize("rules", RULES, ids=repr)
def test_tiny_vit_engine_equals_oracle_and_reference(rules):
    model, x = _tiny()
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    exact, bottom = ExactGraph(model, x, rules).marginals(1)
    compared = compare_layers(m, exact, bottom, reference_lrp(model, x, 1, rules))
    assert compared >= 8, compared
    assert float(laws.normalization(m).deviation) <= 1e-12
    kinds = {m.network.blocks[m.layer_index(n)].producer.layer_kind.name for n in m.layers[1:]}
    assert {"AddConstant", "CatConstant", "MatMul", "Softmax"} <= kinds, kinds


def test_einsum_is_read_as_the_matrix_product_it_is():
    """The same model written with ``@`` and ``transpose`` gives the same measure at every layer
    (the decomposition is A' @ B' between index maps), and f equals model(x)."""

    class WithMatmul(TinyViT):
        def forward(self, x):
            h = self.embed(x)
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1) + self.pos
            scores = (self.q(h) @ self.k(h).transpose(1, 2)) / math.sqrt(h.shape[-1])
            mask = h.new_zeros((h.shape[1], h.shape[1]))
            mask[0, -1] = -100.0
            a = torch.softmax(scores + self.rel + mask, dim=-1)
            return self.head(self.norm(h + a @ self.v(h))[:, 0])

    model, x = _tiny(seed=2, batch=2)
    twin = WithMatmul().double().eval()
    twin.load_state_dict(model.state_dict())
    rules = nrm.presets.EpsilonPlus()
    m, n = nrm.explain(model, x, 0, rules=rules), nrm.explain(twin, x, 0, rules=rules)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 0], rtol=1e-14, atol=0)
    torch.testing.assert_close(m.marginal("input"), n.marginal("input"), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(m.absorbed("input"), n.absorbed("input"), rtol=1e-12, atol=1e-14)


def test_laws_hold_on_the_tiny_vit():
    """L1 at every layer, L9 not applicable (products, layer norm) and its general form, batch invariance."""
    model, x = _tiny(seed=3, batch=2)
    m = nrm.explain(model, x, [0, 1], rules=nrm.rules.Zero())
    assert laws.normalization(m, tol=1e-12).holds is True
    assert laws.gradient_x_input(model, x, [0, 1]).holds is None
    general = laws.gradient_x_input(model, x, [0, 1], detached=True, tol=1e-12)
    assert general.holds is True, str(general)
    assert laws.batch_invariance(model, x, [0, 1], nrm.presets.EpsilonPlus()).holds is True


def test_l9_holds_through_constants():
    """A constant added and a token concatenated are affine with W = I: LRP-0 through them is
    gradient × input at every layer (the constants' shares are their ⊥)."""
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), PlusConstant((2, 3)), Token(3), nn.Flatten(),
                          nn.Linear(9, 2)).double()
    model = nets.seeded(model, 7)
    x = torch.randn((2, 2, 3), generator=torch.Generator().manual_seed(8), dtype=D)
    result = laws.gradient_x_input(model, x, [0, 1], tol=1e-12)
    assert result.holds is True, str(result)


# -- refusals, by name ---------------------------------------------------------------------------


class Adds(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def forward(self, x):
        h = torch.relu(x)
        if self.how == "inf":  # −inf is a mask, read only before a softmax: not as the model's output
            return h + torch.tensor([0.0, -math.inf], dtype=h.dtype)
        if self.how == "plus-inf":
            return h + torch.tensor([0.0, math.inf], dtype=h.dtype)
        if self.how == "inf-read":  # a mask read by a linear layer: −inf there is not finfo.min
            masked = h + torch.tensor([0.0, -math.inf], dtype=h.dtype)
            return nn.functional.linear(masked, torch.ones(2, 2, dtype=h.dtype))
        if self.how == "per-sample":
            return h + torch.arange(h.shape[0], dtype=h.dtype).reshape(-1, 1)
        if self.how == "enlarges":
            return h + torch.ones(3, 1, 1, dtype=h.dtype)  # a dimension in front of the batch
        if self.how == "two-parts":
            return torch.cat([h, torch.ones_like(h[:, :1]) * 0 + 1, x], dim=1)
        if self.how == "ellipsis":
            return torch.einsum("b...,b...->b...", h, x)
        if self.how == "trace":
            return torch.einsum("bii,bi->bi", h.unsqueeze(-1) * x.unsqueeze(1), x)
        if self.how == "batch-mixed":
            return torch.einsum("bi,ci->bc", h, x)
        raise AssertionError(self.how)


@pytest.mark.parametrize("how, words", [
    ("inf", "returns −inf (a mask)"),
    ("plus-inf", "+inf or NaN"),
    ("inf-read", "reads a masked value"),
    ("per-sample", "one per sample"),
    ("enlarges", "enlarges it"),
    ("two-parts", "several input-derived tensors with constants"),
    ("ellipsis", "'...'"),
    ("trace", "repeats a subscript"),
    ("batch-mixed", "sample dimension first"),
])
def test_what_is_not_a_constant_or_a_matrix_product_is_refused_by_name(how, words):
    x = torch.randn((2, 2), generator=torch.Generator().manual_seed(9), dtype=D)
    with pytest.raises(UnsupportedOperationError) as info:
        nrm.explain(Adds(how).eval(), x, 0)
    assert words in str(info.value), str(info.value)


def test_a_shape_factory_is_a_constant_not_an_activation():
    """x.new_zeros(…), torch.zeros_like(x): values that do not depend on x's values, constants."""

    class Masked(nn.Module):
        def forward(self, x):
            mask = torch.zeros_like(x)
            mask[:, 0] = -1.0
            return F.relu(x) + mask + x.new_ones(x.shape[1:])

    x = torch.randn((2, 2), generator=torch.Generator().manual_seed(10), dtype=D)
    m = nrm.explain(Masked().eval(), x, 1, rules=nrm.rules.Zero())
    kinds = [b.producer.layer_kind.name for b in m.network.blocks[1:]]
    assert kinds.count("AddConstant") == 2, kinds
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_a_constant_written_in_place_with_an_activation_is_read_as_it_was_before():
    """out = zeros_like(x); out += relu(x): the constant's value before the write (zeros) is the
    bias, not the tensor the write left behind (which would double the activation)."""

    class Accumulate(nn.Module):
        def forward(self, x):
            out = torch.zeros_like(x)
            out += torch.relu(x)
            return out * 2

    x = torch.tensor([[1.5, -1.0, 0.5], [1.5, -1.0, 0.5]], dtype=D)  # equal samples: a per-sample bias would pass
    m = nrm.explain(Accumulate().eval(), x, 0, rules=nrm.rules.Zero(), check="full")
    torch.testing.assert_close(m.marginal("input"), torch.tensor([[1.0, 0, 0]] * 2, dtype=D), rtol=0, atol=1e-15)
    assert float(m.absorbed("input").abs().max()) == 0.0


def test_a_concatenation_of_one_tensor_alone_is_the_index_map_cat():
    """DenseNet's ``torch.cat([x], 1)`` places no constant: read by shape.Cat, not CatConstant
    (as a linear layer it would be one the peers refuse to reproduce)."""

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.out = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.out(torch.cat([torch.relu(self.lin(x))], 1))

    model = nets.seeded(One().double(), 3)
    m = nrm.explain(model, torch.randn(2, 3, dtype=D, generator=torch.Generator().manual_seed(4)), target=0)
    kinds = [b.producer.layer_kind.name for b in m.network.blocks[1:]]
    assert kinds == ["Dense", "Cat", "Dense"], kinds  # the index map Cat, not CatConstant (a linear layer)
    assert float(laws.normalization(m).deviation) <= 1e-12
