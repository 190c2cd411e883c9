"""``torch.cumsum`` and ``torch.lerp`` read as what they compute (nrm/layers/fused.py):
cumsum along a per-sample dimension is x U with U_jk = [j ≤ k] (``CumsumDecomposition``:
``ConstantMatMul`` between index maps); lerp with a constant weight is (1 − w) a + w b
(``LerpDecomposition``: ``ConstantScale``, then ``Add`` or ``AddConstant``). Engine = exact
oracle = explicit reference at every layer, L9, the value within 10³ ulp of torch's, refusals
by name."""

from __future__ import annotations

import pytest
import torch
from agreement import agree
from nets import Fn, seeded
from torch import nn

import nrm
from nrm_verify import laws

D = torch.float64
LINSPACE = torch.linspace(-0.5, 1.5, 12, dtype=D)

CASES = [
    ("cumsum-last", lambda h: torch.cumsum(h.reshape(-1, 3, 4), -1).reshape(-1, 12)),
    ("cumsum-middle", lambda h: h.reshape(-1, 3, 4).cumsum(1).reshape(-1, 12)),
    ("cumsum-flat", lambda h: torch.cumsum(h, dim=1)),
    ("lerp-constant-end", lambda h: torch.lerp(h, torch.full_like(h[:1], 0.5), 0.3)),
    ("lerp-two-branches", lambda h: torch.lerp(h, torch.relu(h), 0.7)),
    ("lerp-tensor-weight", lambda h: torch.lerp(torch.relu(h), h, LINSPACE)),
    ("Tensor.lerp-outside", lambda h: torch.relu(h).lerp(h, 1.25)),
]
IDS = [c[0] for c in CASES]


def _model(fn, name: str, seed: int = 0) -> nn.Module:
    return seeded(nn.Sequential(nn.Linear(4, 12), Fn(fn, name), nn.Linear(12, 2)).double(), seed, scale=1.0)


def _x(batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn((batch, 4), generator=torch.Generator().manual_seed(seed), dtype=D)


@pytest.mark.parametrize(("case", "fn"), CASES, ids=IDS)
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.25), nrm.rules.Gamma(0.5)],
                         ids=["zero", "epsilon", "gamma"])
def test_engine_equals_the_exact_oracle_and_the_explicit_reference(case, fn, rules):
    model = _model(fn, case)
    m = agree(model, _x(), target=1, rules=rules)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(_x())[:, 1], rtol=1e-13, atol=1e-13)  # within 10³ ulp of torch's


@pytest.mark.parametrize(("case", "fn"), CASES, ids=IDS)
def test_what_it_is_read_as_and_l9(case, fn):
    model = _model(fn, case, seed=2)
    m = nrm.explain(model, _x(2), target=0)
    kinds = {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    assert ("ConstantMatMul" in kinds) if case.startswith("cumsum") else ("ConstantScale" in kinds)
    result = laws.gradient_x_input(model, _x(2), 0)
    assert result.holds is True and result.deviation <= 1e-12, str(result)


def test_cumsum_sends_each_output_to_the_entries_before_it():
    """y = cumsum(x) explained at y_k under LRP-0: relevance x_j on j ≤ k, none after."""
    model = nn.Sequential(Fn(lambda x: torch.cumsum(x, 1), "cumsum")).double().eval()
    x = torch.tensor([[1.0, 2.0, -0.5, 4.0]], dtype=D)
    m = nrm.explain(model, x, target=2)
    torch.testing.assert_close(m.relevance("input"), torch.tensor([[1.0, 2.0, -0.5, 0.0]], dtype=D))


@pytest.mark.parametrize(("fn", "words"), [
    (lambda h: torch.cumsum(h, 0), "batch dimension"),
    (lambda h: torch.cumsum(h, 1, dtype=torch.float64), "dtype="),
    (lambda h: torch.lerp(torch.relu(h), h, torch.sigmoid(h)), "weighs by a tensor computed from the input"),
    (lambda h: torch.lerp(torch.relu(h), h, True), "weighs by True"),
    (lambda h: torch.lerp(torch.relu(h), h, torch.tensor(1, dtype=torch.int64)), "lerp"),
], ids=["cumsum over the batch", "cumsum dtype", "lerp derived weight", "lerp bool weight", "lerp int weight"])
def test_what_is_not_read_is_refused_by_name(fn, words):
    model = _model(fn, "bad")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(nrm.NRMError, match=words):
        nrm.explain(model, _x(2), target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
