"""``F.glu`` (``nn.GLU``) and ``F.softmin`` (``nn.Softmin``), read through their definitions
(:class:`nrm.layers.fused.GLUDecomposition`, :class:`nrm.layers.fused.SoftminDecomposition`):
a gated linear unit is a chunk, a sigmoid and a product whose gate gets nothing by default;
a softmin is the softmax of −x. Each: the recorded kinds, f = model(x)[:, c], the engine against
the exact oracle and the explicit reference at every layer, L1, the product's splits, float32,
and the refusals by name with the model untouched.
"""

from __future__ import annotations

import contextlib

import nets
import pytest
import torch
import torch.nn.functional as F
from agreement import agree
from torch import nn

import nrm
from nrm.capture import capture
from nrm.errors import UnsupportedOperationError
from nrm_verify import laws

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.presets.EpsilonPlusFlat()]


def gated(gate: nn.Module, seed: int = 0) -> nn.Module:
    """Linear(4, 6) → gate (6 → 3) → Linear(3, 2)."""
    return nets.seeded(nn.Sequential(nn.Linear(4, 6), gate, nn.Linear(3, 2)).double().eval(), seed)


def softmin_net(seed: int = 0, gate=None) -> nn.Module:
    """Linear(4, 3) → softmin over the 3 → Linear(3, 2)."""
    return nets.seeded(nn.Sequential(nn.Linear(4, 3), gate or nn.Softmin(dim=1), nn.Linear(3, 2)).double().eval(),
                       seed)


def batch(n: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, 4), generator=torch.Generator().manual_seed(seed), dtype=D)


@pytest.mark.parametrize("spelling", [nn.GLU(), nn.GLU(dim=1), nets.Fn(lambda t: F.glu(t, -1))],
                         ids=["module", "dim1", "F"])
def test_glu_is_recorded_as_chunk_sigmoid_and_product(spelling):
    model, x = gated(spelling), batch(2)
    with torch.no_grad():
        want = model(x)
    captured = capture(model, x)
    assert [c.kind.name for c in captured.calls] == ["Dense", "Chunk", "Chunk", "Sigmoid", "Multiply", "Dense"]
    assert torch.equal(captured.result, want)


@pytest.mark.parametrize("rules", RULES, ids=repr)
def test_glu_engine_equals_oracle_and_reference(rules):
    model, x = gated(nn.GLU(), seed=2), batch(1, seed=3)
    m = agree(model, x, 1, rules)
    assert float(laws.normalization(m).deviation) <= 1e-12
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])


def test_glu_gate_gets_nothing_by_default_and_half_under_the_equal_split():
    model, x = gated(nn.GLU(), seed=4), batch(2, seed=5)
    signal = nrm.explain(model, x, target=0)
    assert float(signal.marginal("sigmoid").abs().max()) == 0.0
    with nets.product_split("equal"):
        equal = agree(model, x[:1], 0, nrm.rules.Zero())
    product = float(equal.marginal("mul").sum())
    assert float(equal.marginal("sigmoid").sum()) == pytest.approx(product / 2, rel=1e-12)


@pytest.mark.parametrize("rules", RULES, ids=repr)
def test_softmin_engine_equals_oracle_and_reference(rules):
    model, x = softmin_net(seed=6), batch(1, seed=7)
    m = agree(model, x, 0, rules)
    assert float(laws.normalization(m).deviation) <= 1e-12


@pytest.mark.parametrize("spelling", [nn.Softmin(dim=1), nn.Softmin(dim=-1), nets.Fn(lambda t: F.softmin(t, 1))],
                         ids=["module", "neg-dim", "F"])
def test_softmin_is_the_softmax_of_minus_x(spelling):
    x = batch(2, seed=8)
    model = softmin_net(seed=9, gate=spelling)
    captured = capture(model, x)
    assert [c.kind.name for c in captured.calls] == ["Dense", "Negate", "Softmax", "Dense"]
    by_hand = softmin_net(seed=9, gate=nets.Fn(lambda t: torch.softmax(-t, 1)))
    a, b = nrm.explain(model, x, target=1), nrm.explain(by_hand, x, target=1)
    torch.testing.assert_close(a.marginal("input"), b.marginal("input"), rtol=0, atol=0)


def test_float32_gives_no_nan():
    for model in (gated(nn.GLU(), seed=10).float(), softmin_net(seed=11).float()):
        x = batch(4, seed=12).float()
        m = nrm.explain(model, x, target=0)
        for name, (mm, bottom) in m.marginals(absorber=True).items():
            assert bool(torch.isfinite(mm).all()) and bool(torch.isfinite(bottom).all()), name
        assert float(laws.normalization(m).deviation) <= 1e-4


class SoftminNoDim(nn.Module):
    def forward(self, x):
        return F.softmin(x, dim=None)


@pytest.mark.parametrize("gate,shape,words", [
    (nets.Fn(lambda t: F.glu(t, 0)), (4,), ("glu", "batch dimension")),
    (nets.Fn(lambda t: F.softmin(t, 1, dtype=torch.float32)), (4,), ("softmin", "dtype")),
    (SoftminNoDim(), (4,), ("softmin", "explicit dim")),
], ids=["glu-batch", "softmin-dtype", "softmin-no-dim"])
def test_unreadable_calls_are_named_and_the_model_untouched(gate, shape, words):
    model = nets.seeded(nn.Sequential(nn.Linear(4, 4), gate).double().eval(), 13)
    x = torch.randn((2,) + shape, generator=torch.Generator().manual_seed(14), dtype=D)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings_allowed():
        with pytest.raises(UnsupportedOperationError) as info:
            nrm.explain(model, x, target=0)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@contextlib.contextmanager
def warnings_allowed():
    """F.softmin without a dim warns about the implicit dimension before nrm refuses it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
