"""``torch.where(m, a, b)`` with both values computed from the input and a constant condition
(Funnel's token-type attention), read as ``where(m, a, 0) + where(¬m, b, 0)``
(``nrm.layers.fused.WhereDecomposition``): two Selects and a sum. Refused by name before
2026-12-07 ("selects between two input-derived tensors").

Exact first: the engine equals the exact DAG oracle and the explicit reference at every layer,
under LRP-0 and ε; the value is torch's own; each position's relevance goes whole to the value it
took; what is not a constant selection is refused by name."""

from __future__ import annotations

import pytest
import torch
from agreement import agree, seeded
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError
from nrm.layers.fused import WhereDecomposition
from nrm_verify import laws

D = torch.float64
KEEP = torch.tensor([[True, False, True], [False, False, True], [True, True, False]])


class Picks(nn.Module):
    """Two branches a = Linear(x), b = relu(Linear(x)) of x (B, 3, 3), one picked per position by a
    constant mask, then a Linear head. ``how`` writes the selection as torch.where, Tensor.where,
    with the condition by keyword, or with b broadcast from one row."""

    def __init__(self, how="function"):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(9, 2)
        self.register_buffer("keep", KEEP.clone())
        self.how = how

    def forward(self, x):
        a, b = self.a(x), torch.relu(self.b(x))
        if self.how == "method":
            y = a.where(self.keep, b)
        elif self.how == "keywords":
            y = torch.where(condition=self.keep, input=a, other=b)
        elif self.how == "broadcast":
            y = torch.where(self.keep, a, b[:, :1])
        else:
            y = torch.where(self.keep, a, b)
        return self.head(y.flatten(1))


def _case(how="function", batch=1, seed=0):
    return seeded(Picks(how), seed), torch.randn((batch, 3, 3), generator=torch.Generator().manual_seed(seed + 7),
                                                 dtype=D)


@pytest.mark.parametrize("how", ["function", "method", "keywords", "broadcast"])
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.05)], ids=["lrp0", "eps"])
def test_engine_equals_exact_oracle_and_reference(how, rules):
    model, x = _case(how)
    m = agree(model, x, target=1, rules=rules)
    kinds = [b.producer.layer_kind.name for b in m.network.blocks[1:]]
    assert kinds.count("Select") == 2 and "Add" in kinds, kinds


@pytest.mark.parametrize("how", ["function", "method", "keywords", "broadcast"])
def test_f_is_the_models_and_l1_holds_on_a_batch(how):
    model, x = _case(how, batch=3)
    m = nrm.explain(model, x, target=[0, 1, 0], check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[torch.arange(3), torch.tensor([0, 1, 0])])
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_each_position_gives_its_relevance_to_the_value_it_took():
    """Under LRP-0 the relevance arriving at the selection at a position kept from a reaches a's
    neuron there whole, and b's neuron there gets nothing (and the reverse)."""
    model, x = _case()
    m = nrm.explain(model, x, target=1)
    ra, rb = m.marginal("a")[0], m.marginal("relu")[0]
    assert bool((rb[KEEP] == 0).all()) and bool((ra[~KEEP] == 0).all())
    assert bool((ra[KEEP] != 0).any()) and bool((rb[~KEEP] != 0).any())


def test_the_decomposition_is_torchs_where_nan_and_signed_zero_included():
    a = torch.tensor([[1.0, float("nan"), -0.0], [float("inf"), 2.0, 3.0]], dtype=D)
    b = torch.tensor([[5.0, 6.0, float("nan")], [7.0, -float("inf"), 0.0]], dtype=D)
    m = torch.tensor([[True, True, False], [False, True, True]])
    d = WhereDecomposition(torch.where)
    assert d.refusal((m, a, b), {}) is None
    out = d(m, a, b)
    want = torch.where(m, a, b)
    assert bool(((out == want) | (torch.isnan(out) & torch.isnan(want))).all())


class Bad(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.fc, self.how = nn.Linear(3, 3).double(), how

    def forward(self, x):
        a, b = self.fc(x), torch.relu(self.fc(x))
        if self.how == "derived-condition":
            return torch.where(a > 0, a, b)
        if self.how == "other-batch":
            return torch.where(KEEP[0], a, b[:1])
        if self.how == "out":
            return torch.where(KEEP[0], a, b, out=torch.empty_like(a))
        raise AssertionError(self.how)


@pytest.mark.parametrize("how, words", [
    ("derived-condition", "mask computed from the input"),
    ("other-batch", "batch size"),
    ("out", "out="),
])
def test_what_is_not_a_constant_selection_is_refused_by_name(how, words):
    model = Bad(how).eval()
    x = torch.randn((2, 3), generator=torch.Generator().manual_seed(2), dtype=D)
    with pytest.raises(UnsupportedOperationError) as info:
        nrm.explain(model, x, target=0)
    assert words in str(info.value), str(info.value)
