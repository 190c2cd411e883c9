"""``torch.logsumexp`` (LSE pooling, a smooth maximum) read as its Taylor linearization at the
forward value (nrm/layers/attention.py, ``LogSumExp``; nrm/linear.py, ``LogSumExpMap``): weights
s = softmax(x) over each reduced group, the entropy H(s) to ⊥. Engine = exact oracle =
explicit reference at every layer, L1 in fractions, L9 (W is the Jacobian), the worked values,
masks, refusals by name, check-layer."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from agreement import agree
from nets import Fn, seeded
from torch import nn

import nrm
from nrm.capture import capture
from nrm_verify import laws
from nrm_verify.validate.layers import check_layer

D = torch.float64

# (id, the logsumexp on h (B, 12))
CASES = [
    ("last", lambda h: torch.logsumexp(h.reshape(-1, 3, 4), -1)),
    ("middle-keepdim", lambda h: torch.logsumexp(h.reshape(-1, 3, 4), 1, keepdim=True).reshape(-1, 4)),
    ("two-dims", lambda h: h.reshape(-1, 2, 3, 2).logsumexp((1, 3))),
    ("whole-sample", lambda h: torch.logsumexp(h, 1, keepdim=True)),
]
IDS = [c[0] for c in CASES]


def _model(fn, name: str, seed: int = 0) -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 12), Fn(fn, name), nn.Flatten(), nn.LazyLinear(2)).double()
    model(torch.zeros(1, 4, dtype=D))  # the lazy head takes its shape
    return seeded(model, seed, scale=1.0)


def _x(batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn((batch, 4), generator=torch.Generator().manual_seed(seed), dtype=D)


@pytest.mark.parametrize(("case", "fn"), CASES, ids=IDS)
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.25), nrm.rules.Gamma(0.5), nrm.presets.EpsilonPlusFlat()],
                         ids=["zero", "epsilon", "gamma", "preset"])
def test_engine_equals_the_exact_oracle_and_the_explicit_reference(case, fn, rules):
    model = _model(fn, case)
    m = agree(model, _x(), target=1, rules=rules)
    with torch.no_grad():
        assert torch.equal(m.f, model(_x())[:, 1])
    assert "LogSumExp" in {b.producer.layer_kind.name for b in m.network.blocks[1:]}


@pytest.mark.parametrize(("case", "fn"), CASES, ids=IDS)
def test_l9_lrp0_is_gradient_times_input(case, fn):
    model = _model(fn, case, seed=2)
    result = laws.gradient_x_input(model, _x(2), 0)
    assert result.holds is True and result.deviation <= 1e-12, str(result)


def test_the_worked_values():
    """x = (0, log 3) (s = (1/4, 3/4), y = log 4): R(x) = s ⊙ x under LRP-0 with R(y) = y, and
    ⊥ takes H(s) = log 4 − (3/4) log 3; the exact map's column sums to y."""
    model = nn.Sequential(Fn(lambda x: torch.logsumexp(x, 1, keepdim=True), "lse")).double().eval()
    x = torch.tensor([[0.0, math.log(3.0)]], dtype=D)
    m = nrm.explain(model, x, target=0)
    torch.testing.assert_close(m.f, torch.tensor([math.log(4.0)], dtype=D))
    torch.testing.assert_close(m.relevance("input"), torch.tensor([[0.0, 0.75 * math.log(3.0)]], dtype=D))
    torch.testing.assert_close(m.absorbed("input") * m.f, torch.tensor([math.log(4.0) - 0.75 * math.log(3.0)],
                                                                       dtype=D))
    call = capture(model, x).calls[0]
    exact = call.kind.exact(call, x)
    s = [Fraction(float(v)) for v in torch.exp(x - torch.logsumexp(x, 1, keepdim=True))[0]]  # ∂y/∂x, float64
    assert list(exact.weight[:, 0]) == s
    xs = [Fraction(float(v)) for v in x[0]]
    assert sum(w * v for w, v in zip(exact.weight[:, 0], xs)) + exact.bias[0] == Fraction(float(m.f[0]))


def test_a_masked_entry_takes_nothing():
    """An entry at −∞ (a mask) has s = 0: the rest share as without it; a group masked
    everywhere (logsumexp = −∞) is refused by name."""
    mask = torch.tensor([[0.0, -math.inf, 0.0, 0.0]], dtype=D)
    model = nn.Sequential(nn.Linear(4, 4), Fn(lambda h: torch.logsumexp(h + mask, 1, keepdim=True), "lse"),
                          nn.Linear(1, 1)).double().eval()
    m = agree(model, _x(), target=0)
    assert float(m.marginal("0")[0, 1]) == 0.0
    full = torch.full((1, 4), -math.inf, dtype=D)
    bad = nn.Sequential(nn.Linear(4, 4), Fn(lambda h: torch.logsumexp(h + full, 1, keepdim=True), "lse"),
                        nn.Linear(1, 1)).double().eval()
    with pytest.raises(nrm.UnsupportedOperationError, match="logsumexp.*(−inf|masked)"):
        nrm.explain(bad, _x(), target=0)


def test_a_batch_is_read_per_sample_and_float32_works():
    model = _model(CASES[2][1], "two-dims")
    x = _x(3)
    batched = nrm.explain(model, x, target=0).marginal("input")
    for i in range(3):
        torch.testing.assert_close(batched[i:i + 1], nrm.explain(model, x[i:i + 1], target=0).marginal("input"),
                                   rtol=1e-12, atol=1e-14)
    m32 = nrm.explain(model.float(), x.float(), target=0)
    assert bool(torch.isfinite(m32.marginal("input")).all())
    torch.testing.assert_close(m32.marginal("input").double(), batched, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dims", [0, (0, 1), (1, 0)], ids=["batch", "batch-and-sample", "sample-and-batch"])
def test_a_logsumexp_over_the_batch_is_refused_by_name(dims):
    model = nn.Sequential(nn.Linear(4, 3), Fn(lambda h: torch.logsumexp(h, dims, keepdim=True).expand_as(h), "bad"),
                          nn.Linear(3, 2)).double().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(nrm.UnsupportedOperationError, match="logsumexp.*batch dimension"):
        nrm.explain(model, _x(2), target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_rule_keyed_by_its_marker_applies():
    model = _model(CASES[0][1], "last")
    plain = nrm.explain(model, _x(), target=0).marginal("input")
    keyed = nrm.RuleMap(nrm.rules.Zero(), by_type={nrm.markers.SoftMaximum: nrm.rules.Epsilon(10.0)})
    eps = nrm.explain(model, _x(), target=0, rules=keyed).marginal("input")
    assert float((plain - eps).abs().max()) > 1e-6


def test_check_layer_passes():
    report = check_layer(nrm.layers.REGISTRY.kinds["LogSumExp"], max_examples=3, only=["K2", "K3", "K5", "L1", "L9"])
    assert report.ok, str(report)
    assert np.all([v.status != "violated" for v in report.verdicts])
