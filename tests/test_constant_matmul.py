"""``a @ W`` with a constant matrix W (Falcon's ``FalconLinear``, hand-written projections
``x @ self.weight.T``): read as the dense map of W on the last dimension
(:class:`nrm.layers.linear.ConstantMatMul`). Checked as every kind is: engine = exact oracle =
explicit reference at every layer, L1, L9 for LRP-0, the same measure as the ``nn.Linear``
that computes the same function, check-layer, and the refusals that remain named."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from agreement import agree
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError
from nrm_verify.laws.limits import gradient_x_input
from nrm_verify.validate.layers import check_layer

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = {"LRP-0": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "gamma": nrm.rules.Gamma(0.25),
         "EpsilonPlus": nrm.presets.EpsilonPlus(), "EpsilonGammaFlat": nrm.presets.EpsilonGammaFlat()}
FORMS = {
    "x @ weight.T": lambda x, w: x @ w.T,
    "torch.matmul(x, weight.t())": lambda x, w: torch.matmul(x, w.t()),
    "x.matmul(weight.T)": lambda x, w: x.matmul(w.T),
}


class Projection(nn.Module):
    """relu(x @ W₁ᵀ) → relu(· @ W₂ᵀ) → head, each W a parameter (out, in) as in nn.Linear,
    multiplied in the form under test; the input is (B, tokens, 4)."""

    def __init__(self, form: str = "x @ weight.T"):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w1 = nn.Parameter(torch.randn(5, 4, generator=g, dtype=D))
        self.w2 = nn.Parameter(torch.randn(3, 5, generator=g, dtype=D))
        self.head = nn.Linear(3 * 2, 3).to(D)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(3, 6, generator=g, dtype=D))
        self.form = form

    def forward(self, x):
        mul = FORMS[self.form]
        h = torch.relu(mul(x, self.w1))
        return self.head(torch.relu(mul(h, self.w2)).flatten(1))


class AsLinear(nn.Module):
    """The same function with nn.Linear layers (weights copied)."""

    def __init__(self, src: Projection):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 5, bias=False).to(D), nn.Linear(5, 3, bias=False).to(D)
        with torch.no_grad():
            self.fc1.weight.copy_(src.w1)
            self.fc2.weight.copy_(src.w2)
        self.head = copy.deepcopy(src.head)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))).flatten(1))


def _x(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 2, 4, dtype=D, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("rules", list(RULES))
@pytest.mark.parametrize("form", list(FORMS))
def test_engine_equals_the_exact_oracle_and_the_explicit_reference_at_every_layer(form, rules):
    model = Projection(form).eval()
    m = agree(model, _x(batch=1), target=1, rules=RULES[rules])
    kinds = [b.producer.layer_kind.name for b in m.network.blocks if b.producer is not None]
    assert kinds.count("ConstantMatMul") == 2, kinds
    for name in m.layers:  # L1 at every layer
        total = m.marginal(name).flatten(1).sum(1) + m.absorbed(name)
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


@pytest.mark.parametrize("rules", list(RULES))
def test_the_measure_is_the_one_of_the_same_function_written_with_nn_linear(rules):
    """The rules see the same weights, biases (none) and keys (nn.Linear, first layer for the
    presets' flat rule), so every marginal agrees with the nn.Linear model's."""
    model = Projection().eval()
    twin = AsLinear(model).eval()
    x = _x()
    torch.testing.assert_close(model(x), twin(x), rtol=0, atol=1e-14)
    a = nrm.explain(model, x, 1, rules=RULES[rules])
    b = nrm.explain(twin, x, 1, rules=RULES[rules])
    torch.testing.assert_close(a.marginal("input"), b.marginal("input"), rtol=0, atol=1e-13)
    torch.testing.assert_close(a.absorbed("input"), b.absorbed("input"), rtol=0, atol=1e-13)


def test_lrp0_is_gradient_x_input_through_a_constant_matmul():
    assert gradient_x_input(Projection().eval(), _x(), 2).holds is True


def test_check_layer_passes_the_constant_matmul_kind():
    report = check_layer(nrm.layers.REGISTRY.kinds["ConstantMatMul"], max_examples=3,
                         only=["K2", "K3", "K5", "L1", "L18"])
    assert report.ok, str(report)


class _Refused(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.how = how
        self.w = nn.Parameter(torch.randn(2, 2, generator=g, dtype=D))
        self.v = nn.Parameter(torch.randn(4, generator=g, dtype=D))
        self.batched = nn.Parameter(torch.randn(2, 4, 4, generator=g, dtype=D))
        self.head = nn.Linear(8, 2).to(D)

    def forward(self, x):
        h = F.relu(x)
        if self.how == "left":
            h = self.w @ h
        elif self.how == "vector":
            h = (h @ self.v).unsqueeze(-1).expand(-1, -1, 4)
        else:
            h = h @ self.batched
        return self.head(h.flatten(1))


@pytest.mark.parametrize("how", ["left"])
def test_a_constant_on_the_left_is_read_as_an_einsum(how):
    """Refused by name before 2026-12-07; read since as the einsum it is
    (``MatmulWeightDecomposition``, tests/test_matmul_weight.py): f the model's, L9."""
    model = _Refused(how).eval()
    m = nrm.explain(model, _x(), target=[0, 1], rules=nrm.rules.Zero(), check="full")
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(_x())[torch.arange(2), torch.tensor([0, 1])], rtol=1e-12, atol=1e-12)
    assert gradient_x_input(model, _x(), 1).holds is True


@pytest.mark.parametrize("how, says", [
    ("vector", "nrm reads a @ W with W a matrix"),
    ("batched", "whose samples differ (one matrix per sample"),  # (B, 2, 4) @ (2, 4, 4): read as a constant with
    # the batch's dimension (tests/test_matmul_weight.py) since 2026-12-07, refused for its samples that differ
])
def test_what_it_does_not_read_is_refused_naming_the_operation_and_the_rewrite(how, says):
    model = _Refused(how).eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError, match="matmul") as info:
        nrm.explain(model, _x(), 0)
    assert says in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
