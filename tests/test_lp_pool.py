"""Power-average pooling (``nn.LPPool1d/2d/3d``, ``F.lp_pool*d``), read through torch's own
definition (nrm/layers/fused.py, ``LPPoolDecomposition``): x^p, an average pooling, the
activation sign(s) · relu(|s|) of s alone, the window's size, the p-th root; for p = ±∞ a max
pooling of |x|. Engine = exact oracle = explicit reference at every layer, L9 in its general
form, refusals by name."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from agreement import agree
from nets import Fn
from torch import nn

import nrm
from nrm_verify.laws.limits import gradient_x_input

D = torch.float64

# (id, the pooling, the input shape after the first convolution's channels)
CASES = [
    ("LPPool2d-p2", lambda: nn.LPPool2d(2, 2), (3, 4, 4)),
    ("LPPool2d-p3-stride1", lambda: nn.LPPool2d(3, (2, 3), stride=1), (3, 4, 5)),
    ("LPPool2d-ceil", lambda: nn.LPPool2d(2, 3, stride=2, ceil_mode=True), (3, 5, 5)),
    ("LPPool1d-p1.5", lambda: nn.LPPool1d(1.5, 2), (3, 6)),
    ("LPPool3d-p2", lambda: nn.LPPool3d(2, 2), (2, 4, 4, 4)),
    ("LPPool2d-inf", lambda: nn.LPPool2d(math.inf, 2), (3, 4, 4)),
    ("LPPool2d-minus-inf", lambda: nn.LPPool2d(-math.inf, 2), (3, 4, 4)),
    ("F.lp_pool2d", lambda: Fn(lambda h: F.lp_pool2d(h, 4, 2), "F.lp_pool2d"), (3, 4, 4)),
]
IDS = [c[0] for c in CASES]
CONV = {2: nn.Conv1d, 3: nn.Conv2d, 4: nn.Conv3d}


def _model(pool: nn.Module, shape: tuple, seed: int = 0, relu: bool = True) -> tuple[nn.Module, torch.Tensor]:
    """Conv(1×…×1) → ReLU → the pooling → Flatten → Linear(·, 2), seeded; a batch of one."""
    g = torch.Generator().manual_seed(seed)
    layers = [CONV[len(shape)](shape[0], shape[0], 1)] + ([nn.ReLU()] if relu else []) + [pool, nn.Flatten()]
    body = nn.Sequential(*layers).double()
    x = torch.randn((1,) + shape, generator=g, dtype=D)
    with torch.no_grad():
        for p in body.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
        width = body(x).shape[1]
    head = nn.Linear(width, 2).double()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    return nn.Sequential(body, head).eval(), x


@pytest.mark.parametrize(("case", "make", "shape"), CASES, ids=IDS)
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.25), nrm.presets.EpsilonPlusFlat()],
                         ids=["zero", "epsilon", "preset"])
def test_engine_equals_the_exact_oracle_and_the_explicit_reference(case, make, shape, rules):
    model, x = _model(make(), shape)
    m = agree(model, x, target=1, rules=rules)
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])  # the decomposition's value is torch's, bitwise


@pytest.mark.parametrize(("case", "make", "shape"), CASES, ids=IDS)
def test_what_it_is_read_as(case, make, shape):
    model, x = _model(make(), shape)
    kinds = [b.producer.layer_kind.name for b in nrm.explain(model, x, target=0).network.blocks[1:]]
    if "inf" in case:
        assert "MaxPool" in kinds and "AvgPool" not in kinds
    else:
        assert "AvgPool" in kinds and "MaxPool" not in kinds


@pytest.mark.parametrize(("case", "make", "shape"), CASES, ids=IDS)
def test_l9_in_its_general_form_holds(case, make, shape):
    model, x = _model(make(), shape, seed=2)
    result = gradient_x_input(model, x, 0, detached=True)
    assert result.holds is True, str(result)


def test_a_batch_is_read_per_sample():
    model, _ = _model(nn.LPPool2d(2, 2), (3, 4, 4))
    x = torch.randn((3, 3, 4, 4), generator=torch.Generator().manual_seed(4), dtype=D)
    batched = nrm.explain(model, x, target=0).marginal("input")
    for i in range(3):
        one = nrm.explain(model, x[i:i + 1], target=0).marginal("input")
        torch.testing.assert_close(batched[i:i + 1], one, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("norm_type", "words"), [
    (torch.tensor(2.0, dtype=D), "norm_type=tensor"), (True, "norm_type=True"), (float("nan"), "norm_type=nan"),
], ids=["tensor", "bool", "nan"])
def test_a_norm_type_it_does_not_read_is_refused_by_name(norm_type, words):
    """torch computes each (p = 0 is torch's own ZeroDivisionError); nrm reads a number p ≠ 0."""
    model, x = _model(Fn(lambda h: F.lp_pool2d(h, norm_type, 2), "bad"), (3, 4, 4))
    with pytest.raises(nrm.UnsupportedOperationError, match=f"lp_pool2d.*{words}"):
        nrm.explain(model, x, target=0)


def test_a_fractional_power_of_a_negative_value_is_the_models_own_nan_named_where_it_starts():
    """Without the ReLU, x^1.5 of a negative x is NaN in torch too: NonFiniteError naming pow."""
    model, x = _model(nn.LPPool2d(1.5, 2), (3, 4, 4), relu=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(nrm.NonFiniteError, match="first at Tensor.pow"):
        nrm.explain(model, x, target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_window_larger_than_the_input_is_torchs_error_named_where_it_is():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.LPPool2d(2, 8)).double().eval()
    with pytest.raises(nrm.NRMError, match="LPPool2d"):
        nrm.explain(model, torch.randn(1, 3, 4, 4, dtype=D), target=0)
