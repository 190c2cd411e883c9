"""``torch.einsum`` of an input-derived tensor with a constant — a weight written as an einsum
(``"bld,de->ble"``, a 1×1 convolution ``"bchw,oc->bohw"``, Funnel's relative attention
``"binh,tnh->bnit"`` whose weight differs per head) — read as the linear map it is
(``nrm.layers.fused.EinsumWeightDecomposition``: index maps around one ``F.linear`` with a
block-diagonal weight). Refused by name before 2026-12-07 ("write it with F.linear").

Exact first: every layer's marginal equals the exact DAG oracle's (fractions) and the explicit
reference's within 1e-12, under LRP-0, ε and γ; the decomposition's value is torch's einsum's
to rounding; f is the model's output; what is not a linear map of x is refused by name."""

from __future__ import annotations

import pytest
import torch
from agreement import agree
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError
from nrm.layers.fused import EinsumWeightDecomposition
from nrm_verify import laws

D = torch.float64

CASES = {  # equation, x's per-sample shape before the einsum, the constant's shape, x first
    "tokens": ("bld,de->ble", (3, 4), (4, 5), True),
    "matrix": ("bi,ij->bj", (4,), (4, 3), True),
    "weight-first": ("oi,bi->bo", (4,), (3, 4), False),
    "1x1-conv": ("bchw,oc->bohw", (4, 2, 2), (3, 4), True),
    "per-head": ("binh,tnh->bnit", (3, 2, 2), (5, 2, 2), True),  # Funnel: C differs per head n
    "summed-weight": ("bi,ijk->bj", (4,), (4, 3, 2), True),  # k summed out of C alone
    "transposed-out": ("bld,de->bel", (3, 4), (4, 5), True),
}


class Einsum(nn.Module):
    """x → Linear over its last dim (so x is input-derived, non-negative parts and all) → ReLU →
    the einsum with a constant C → flatten → Linear(·, 3)."""

    def __init__(self, equation, x_shape, c_shape, x_first, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.equation, self.x_first = equation, x_first
        self.fc = nn.Linear(x_shape[-1], x_shape[-1])
        self.C = nn.Parameter(torch.randn(c_shape, generator=g, dtype=D))
        with torch.no_grad():
            out = self._einsum(torch.zeros((1,) + x_shape, dtype=D))
        self.head = nn.Linear(out[0].numel(), 3)

    def _einsum(self, h):
        return torch.einsum(self.equation, h, self.C) if self.x_first else torch.einsum(self.equation, self.C, h)

    def forward(self, x):
        return self.head(self._einsum(torch.relu(self.fc(x))).flatten(1))


def _case(name, seed=0, batch=1):
    equation, x_shape, c_shape, x_first = CASES[name]
    model = Einsum(equation, x_shape, c_shape, x_first, seed).double().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.fc.weight.copy_(torch.randn(model.fc.weight.shape, generator=g, dtype=D) * 0.7)
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g, dtype=D) * 0.7)
    return model, torch.randn((batch,) + x_shape, generator=g, dtype=D)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.05), nrm.rules.Gamma(0.25)], ids=["lrp0", "eps", "gamma"])
def test_engine_equals_exact_oracle_and_reference(name, rules):
    model, x = _case(name)
    m = agree(model, x, target=1, rules=rules)
    kinds = [b.producer.layer_kind.name for b in m.network.blocks[1:]]
    assert kinds.count("Dense") == 3, kinds  # fc, the einsum, head


@pytest.mark.parametrize("name", list(CASES))
def test_f_is_the_models_and_l1_holds_on_a_batch(name):
    model, x = _case(name, batch=3)
    m = nrm.explain(model, x, target=[0, 1, 2], check="full")
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[torch.arange(3), torch.tensor([0, 1, 2])], rtol=1e-13, atol=1e-13)
    assert float(laws.normalization(m).deviation) <= 1e-12


@pytest.mark.parametrize("name", list(CASES))
def test_the_decomposition_is_torchs_einsum(name):
    equation, x_shape, c_shape, x_first = CASES[name]
    g = torch.Generator().manual_seed(3)
    x, c = torch.randn((2,) + x_shape, generator=g, dtype=D), torch.randn(c_shape, generator=g, dtype=D)
    args = (equation, x, c) if x_first else (equation, c, x)
    d = EinsumWeightDecomposition(0 if x_first else 1)
    assert d.refusal(args, {}) is None
    torch.testing.assert_close(d(*args), torch.einsum(*args), rtol=1e-13, atol=1e-13)


class Bad(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.fc, self.how = nn.Linear(4, 4).double(), how
        self.C = nn.Parameter(torch.randn(4, 3, dtype=D))

    def forward(self, x):
        h = self.fc(x)
        if self.how == "sample-in-weight":
            return torch.einsum("bi,bj->ij", h, torch.ones(2, 3, dtype=D)).flatten().unsqueeze(0)
        if self.how == "sample-not-first":
            return torch.einsum("ib,ij->jb", h.t(), self.C).t()
        if self.how == "summed-alone":
            return torch.einsum("bij,jk->bk", h.reshape(-1, 2, 2), torch.ones(2, 3, dtype=D))
        if self.how == "ellipsis":
            return torch.einsum("b...,ij->bj", h, self.C)
        if self.how == "three":
            return torch.einsum("bi,ij,jk->bk", h, self.C, torch.ones(3, 2, dtype=D))
        raise AssertionError(self.how)


@pytest.mark.parametrize("how, words", [
    ("sample-in-weight", "sample dimension first"),
    ("sample-not-first", "batch"),
    ("summed-alone", "x.sum(dim)"),
    ("ellipsis", "'...'"),
    ("three", "two tensors"),
])
def test_what_is_not_a_linear_map_of_x_is_refused_by_name(how, words):
    x = torch.randn((2, 4), generator=torch.Generator().manual_seed(5), dtype=D)
    model = Bad(how).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedOperationError) as info:
        nrm.explain(model, x, target=0)
    assert words in str(info.value), str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_weight_too_large_to_write_densely_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(EinsumWeightDecomposition, "LARGEST", 10)
    model, x = _case("per-head")
    with pytest.raises(UnsupportedOperationError, match="at most 10"):
        nrm.explain(model, x, target=0)
