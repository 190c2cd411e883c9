"""One-dimensional pooling (audio and time-series CNNs): ``nn.AvgPool1d``, ``nn.MaxPool1d`` and
``nn.AdaptiveAvgPool1d`` are the 2-D kinds read along one axis. Each is checked the way every
kind is: engine = exact oracle = explicit reference at every layer, L1, L9 for LRP-0 on a
homogeneous model, check-layer on the kind, and the refusals that remain named."""

from __future__ import annotations

import pytest
import torch
from agreement import agree
from torch import nn

import nrm
from nrm_verify.laws.limits import gradient_x_input
from nrm_verify.validate.layers import check_layer

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = {"LRP-0": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "EpsilonPlus": nrm.presets.EpsilonPlus(),
         "EpsilonGammaFlat": nrm.presets.EpsilonGammaFlat()}
POOLS = {
    "avg k2": lambda: nn.AvgPool1d(2),
    "avg k3 s2 p1": lambda: nn.AvgPool1d(3, stride=2, padding=1),
    "avg k3 s2 p1 count_include_pad=False": lambda: nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False),
    "avg k3 s2 ceil_mode": lambda: nn.AvgPool1d(3, stride=2, ceil_mode=True),
    "avg k3 s2 p1 ceil_mode count_include_pad=False": lambda: nn.AvgPool1d(3, 2, 1, ceil_mode=True,
                                                                           count_include_pad=False),
    "max k2": lambda: nn.MaxPool1d(2),
    "max k3 s2 p1 d2": lambda: nn.MaxPool1d(3, stride=2, padding=1, dilation=2),
    "adaptive divides": lambda: nn.AdaptiveAvgPool1d(5),
    "adaptive uneven": lambda: nn.AdaptiveAvgPool1d(3),
    "adaptive global": lambda: nn.AdaptiveAvgPool1d(1),
}


def _model(pool: nn.Module, activation: nn.Module) -> nn.Module:
    """Conv1d → activation → pool → Conv1d → activation → global average → Linear, seeded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), activation, pool, nn.Conv1d(3, 3, 2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(3, 4)).to(D).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.7)
    return model


def _x(batch: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randn(batch, 2, length, dtype=D, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("rules", list(RULES))
@pytest.mark.parametrize("pool", list(POOLS))
def test_engine_equals_the_exact_oracle_and_the_explicit_reference_at_every_layer(pool, rules):
    model, x = _model(POOLS[pool](), nn.SiLU()), _x(batch=1)  # the oracle explains one sample
    m = agree(model, x, target=1, rules=RULES[rules])
    for name in m.layers:  # L1 at every layer, every sample
        total = m.marginal(name).flatten(1).sum(1) + m.absorbed(name)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pool", list(POOLS))
def test_lrp0_is_gradient_x_input_through_a_1d_pool(pool):
    model, x = _model(POOLS[pool](), nn.ReLU()), _x()
    assert gradient_x_input(model, x, 2).holds is True


@pytest.mark.parametrize("name", ["AvgPool", "AdaptiveAvgPool", "MaxPool"])
def test_check_layer_passes_the_pool_kinds_on_their_1d_examples(name):
    kind = nrm.layers.REGISTRY.kinds[name]
    assert any(len(shape) == 2 for _, shape in kind.examples())  # a (channels, length) example is among them
    report = check_layer(kind, max_examples=3, only=["K2", "K3", "K5", "L1", "L18"])
    assert report.ok, str(report)


def test_the_relevance_of_a_max_pool_goes_to_its_first_maximum_only():
    """Ties: torch's index is the first maximum of the window, and so is nrm's winner."""
    model = nn.Sequential(nn.MaxPool1d(2), nn.Flatten(), nn.Linear(3, 1, bias=False)).to(D).eval()
    with torch.no_grad():
        model[2].weight.fill_(1.0)
    x = torch.tensor([[[1.0, 1.0, 3.0, 2.0, 0.5, 4.0]]], dtype=D)
    m = nrm.explain(model, x, target=0, rules=nrm.rules.Zero())
    want = torch.tensor([[[1.0, 0.0, 3.0, 0.0, 0.0, 4.0]]], dtype=D) / 8.0
    torch.testing.assert_close(m.marginal("input"), want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("pool,why", [
    (nn.AdaptiveMaxPool1d(3), "adaptive_max_pool1d"),
    (nn.MaxPool1d(2, return_indices=True), "max_pool1d_with_indices"),
])
def test_what_stays_refused_is_named(pool, why):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool, self.fc = pool, nn.LazyLinear(2)

        def forward(self, x):
            y = self.pool(x)
            y = y[0] if isinstance(y, tuple) else y
            return self.fc(y.flatten(1))

    model, x = Net().to(D), _x(length=7)
    model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(nrm.UnsupportedOperationError, match=why):
        nrm.explain(model.eval(), x, target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("pool", ["avg k3 s2 p1", "max k3 s2 p1 d2", "adaptive uneven"])
def test_l15_walk_relevance_through_a_1d_pool_equals_nested_masking(pool):
    """GNN-LRP's nested masking (the independent reference) reads the 1-D pools too: the
    relevance of walk sets through chosen neurons of the pool's layer and the next is f · μ."""
    from nrm_verify import laws

    model, x = _model(POOLS[pool](), nn.ReLU()), _x(batch=1)
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Epsilon(0.1))
    names = list(m.layers)
    pooled = next(n for n in names if n.startswith("2"))
    later = names[names.index(pooled) + 1]
    for i in range(3):
        r = laws.walk_relevance(model, x, 1, {pooled: [i, i + 3], later: [i]}, nrm.rules.Epsilon(0.1))
        assert r.holds is True, str(r)
