"""A constant whose broadcast enlarges the input-derived operand (``nrm.layers.fused.
EnlargedByConstantDecomposition``): ``x * c``, ``x / c``, ``x + c``, ``x − c``, ``c − x`` with c of
a shape that spreads x over a new axis — Mamba's discretization ``exp(A[None, :, None, :] ·
Δ[:, :, :, None])`` — read as ``expand(x) ∘ c``: an index map (each neuron's copies send their
relevance back to it) and the kind that reads a product or sum with a constant of x's shape.

Exact first: the engine equals the exact DAG oracle (fractions) at every layer under LRP-0, ε, γ;
LRP-0 is gradient × input where the model is piecewise linear (L9); the value is torch's own,
bitwise; what would put a dimension in front of the batch or enlarge it stays refused by name;
a selective-scan block written as Mamba's sequential path is explained under AttnLRP's uniform
split, equal to the oracle, and its default split says how to choose."""

from __future__ import annotations

import copy

import pytest
import torch
from agreement import NoReference, compare_layers, held_laws, product_split, seeded
from torch import nn

import nrm
import nrm.layers.fused as fused
from nrm.errors import AmbiguousProductError, CaptureMismatchError, UnsupportedOperationError
from nrm_verify.references.exact_dag import ExactGraph

D = torch.float64
RULES = [None, nrm.rules.Epsilon(0.05), nrm.rules.Gamma(0.25)]
RULE_IDS = ["lrp0", "eps", "gamma"]
FORMS = {
    "c * x": lambda d, c: c * d,
    "x * c": lambda d, c: d * c,
    "torch.mul(c, x)": lambda d, c: torch.mul(c, d),
    "x / c": lambda d, c: d / c,
    "x + c": lambda d, c: d + c,
    "x - c": lambda d, c: d - c,
    "c - x": lambda d, c: c - d,
    "x.mul(c)": lambda d, c: d.mul(c),
}


def _x(*shape, seed=0):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class Spread(nn.Module):
    """relu(W x) of shape (B, 4, 1) combined with a constant of shape (1, 1, 5): each neuron
    spread over five positions, each position its own constant; then a linear head."""

    def __init__(self, form: str):
        super().__init__()
        self.a, self.head, self.form = nn.Linear(3, 4), nn.Linear(20, 2), FORMS[form]
        self.register_buffer("c", torch.linspace(0.5, 2.0, 5, dtype=D).reshape(1, 1, 5))

    def forward(self, x):
        d = torch.relu(self.a(x))[..., None]
        y = self.form(d, self.c)
        return self.head(torch.relu(y).reshape(y.shape[0], -1))


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("rules", RULES, ids=RULE_IDS)
def test_a_constant_that_spreads_the_input_agrees_with_the_exact_oracle(form, rules):
    model, x = seeded(Spread(form)), _x(1, 3)
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    torch.testing.assert_close(m.f, model(x)[:, 1].detach(), rtol=1e-13, atol=1e-13)
    exact, bottom = ExactGraph(model, x, rules).marginals(1)
    compare_layers(m, exact, bottom, NoReference())


@pytest.mark.parametrize("form", list(FORMS))
def test_it_is_recorded_as_an_expand_then_the_constant_kind(form):
    calls = nrm.capture(seeded(Spread(form)), _x(2, 3)).calls
    names = [c.kind.name for c in calls if c.kind is not None]
    assert all(c.kind is not None for c in calls), [c.refusal for c in calls if c.kind is None]
    constant = "ConstantScale" if "*" in form or "/" in form or "mul" in form else "AddConstant"
    assert names[names.index("Expand") + 1] == constant, names


@pytest.mark.parametrize("form", ["x * c", "c - x", "x / c"])
def test_lrp0_is_gradient_x_input_with_two_samples(form):
    """Each sample on its own (the constant is the same for both); L9 where piecewise linear."""
    model, x = seeded(Spread(form)), _x(2, 3)
    m = nrm.explain(model, x, target=0, rules=nrm.rules.Zero())
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx)[:, 0].sum(), xx)
    torch.testing.assert_close(m.marginal("input") * m.f[:, None], g * x, rtol=1e-12, atol=1e-13)


def test_the_laws_hold():
    held = held_laws(seeded(Spread("x * c")), _x(1, 3), 0, nrm.rules.Epsilon(1e-3))
    assert {"L1", "L2", "L7"} <= held, held


class Grows(nn.Module):
    def __init__(self, c: torch.Tensor, how: str = "mul"):
        super().__init__()
        self.fc, self.how = nn.Linear(3, 3), how
        self.register_buffer("c", c)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return h * self.c if self.how == "mul" else h + self.c


@pytest.mark.parametrize("c, how, words", [
    (torch.ones(2, 1, 3, dtype=D), "mul", "enlarges it"),  # a dimension in front of the batch
    (torch.ones(2, 1, 3, dtype=D), "add", "enlarges it"),
    (torch.ones(4, 3, dtype=D), "mul", "enlarges it"),  # one sample becomes four
], ids=["mul, new leading dimension", "add, new leading dimension", "mul, enlarges the batch"])
def test_a_constant_that_adds_a_dimension_in_front_or_enlarges_the_batch_stays_refused(c, how, words):
    model = seeded(Grows(c, how))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError, match=words):
        nrm.explain(model, _x(1, 3), target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_value_that_is_not_torchs_own_is_a_capture_mismatch(monkeypatch):
    """The decomposition compares its value with torch's broadcast, bitwise."""
    monkeypatch.setattr(fused, "same_values", lambda ours, theirs: False)
    with pytest.raises(CaptureMismatchError, match="expanded first does not reproduce it bitwise"):
        nrm.explain(seeded(Spread("x * c")), _x(1, 3), target=0)


def test_two_input_derived_operands_keep_their_own_decomposition():
    """a + b of two computed tensors of different shapes is still SumDecomposition's (Expand, Add)."""
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 5)

        def forward(self, x):
            grid = torch.relu(self.a(x))[:, :, None] + torch.relu(self.b(x))[:, None, :]
            return grid.sum((1, 2), keepdim=True)[:, 0]

    names = [c.kind.name for c in nrm.capture(seeded(Two()), _x(1, 3)).calls]
    assert names.count("Expand") == 2 and "Add" in names and "AddConstant" not in names, names


class SelectiveScan(nn.Module):
    """Mamba's mixer as transformers' sequential path writes it (``MambaMixer.slow_forward``, without
    the causal convolution): step sizes Δ = softplus(W_Δ x), input-dependent B and C, a constant A
    (D, N) < 0; Ā = exp(A · Δ) spread over the state (the constant enlarges Δ), the scan
    h_t = Ā_t ⊙ h_{t−1} + Δ_t B_t x_t, y_t = h_t C_t + D x_t, gated by silu(z)."""

    def __init__(self, d: int = 3, n: int = 2):
        super().__init__()
        self.inp, self.dt, self.bc = nn.Linear(d, 2 * d), nn.Linear(d, d), nn.Linear(d, 2 * n)
        self.out = nn.Linear(d, 2)
        self.n = n
        self.register_buffer("A_log", torch.log(torch.arange(1, n + 1, dtype=D).repeat(d, 1)))
        self.D = nn.Parameter(torch.ones(d, dtype=D))

    def forward(self, x):  # (B, L, d)
        hidden, gate = self.inp(x).transpose(1, 2).chunk(2, dim=1)  # (B, d, L) each
        hidden = nn.functional.silu(hidden)
        B, C = self.bc(hidden.transpose(1, 2)).split([self.n, self.n], dim=-1)  # (B, L, n)
        delta = nn.functional.softplus(self.dt(hidden.transpose(1, 2))).transpose(1, 2)  # (B, d, L)
        A = -torch.exp(self.A_log)  # (d, n), constant
        dA = torch.exp(A[None, :, None, :] * delta[:, :, :, None])  # (B, d, L, n)
        dBu = delta[:, :, :, None] * B[:, None, :, :] * hidden[:, :, :, None]
        state = torch.zeros(x.shape[0], hidden.shape[1], self.n, dtype=x.dtype)
        ys = []
        for t in range(x.shape[1]):
            state = dA[:, :, t, :] * state + dBu[:, :, t, :]
            ys.append(torch.matmul(state, C[:, t, :].unsqueeze(-1))[:, :, 0])
        y = (torch.stack(ys, dim=-1) + hidden * self.D[None, :, None]) * nn.functional.silu(gate)
        return self.out(y.transpose(1, 2)[:, -1])


@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.05)], ids=["lrp0", "eps"])
def test_a_selective_scan_agrees_with_the_exact_oracle_under_the_uniform_split(rules):
    model, x = seeded(SelectiveScan(), scale=0.5), _x(1, 3, 3)
    with product_split(split="equal"):
        m = nrm.explain(model, x, target=1, rules=rules, check="full")
        exact, bottom = ExactGraph(model, x, rules).marginals(1)
    torch.testing.assert_close(m.f, model(x)[:, 1].detach(), rtol=1e-13, atol=1e-13)
    compare_layers(m, exact, bottom, NoReference())


def test_a_selective_scan_under_the_default_split_says_how_to_choose():
    """Δ B x: three factors, none a gate; the default split cannot choose and says how."""
    with pytest.raises(AmbiguousProductError, match="split='equal'"):
        nrm.explain(seeded(SelectiveScan(), scale=0.5), _x(1, 3, 3), target=1)
