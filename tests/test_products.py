"""Products of activations (issue 13, NRM-SPEC §8, K6): ``a * b`` of two input-derived tensors,
read by :class:`nrm.layers.products.Multiply` with the split ``"signal"`` (the gate gets
nothing), ``"equal"`` (θ_i = 1/n) or ``"proportional"`` (θ_i = a⁽ⁱ⁾ / (Σ_j a⁽ʲ⁾ + ε sign), the
rest to ⊥).

Exact first: every model here is evaluated by the exact DAG oracle in fractions
(:mod:`nrm_verify.references.exact_dag`) — L1 holds exactly there — and by the explicit LRP
reference (:mod:`nrm_verify.references.explicit`), and the engine equals both. Then the laws:
L1 (≤ 1e-12), L2–L7 through :mod:`nrm_verify.laws`, association (K6), L9 not applicable.
"""

from __future__ import annotations

from fractions import Fraction

import nets
import pytest
import torch
from agreement import agree
from torch import nn

import nrm
from nrm import At
from nrm.layers.products import Multiply
from nrm_verify import laws
from nrm_verify.references.exact_dag import ExactGraph

pytestmark = pytest.mark.usefixtures("single_thread")
SPLITS = ("signal", "equal", "proportional")


split = nets.product_split

class SE(nn.Module):
    """conv → ReLU → [avgpool → fc → ReLU → fc → sigmoid] × signal → conv (squeeze-excitation)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(3, 2, 1), nn.Conv2d(2, 3, 1)
        self.conv2 = nn.Conv2d(3, 2, 2)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(h)))))
        return self.conv2(h * gate).flatten(1)


class TwoBranches(nn.Module):
    """relu(A x) · (B x) → C: a product of two branches, neither a gate."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.c(torch.relu(self.a(x)) * self.b(x))


class Triple(nn.Module):
    """Three branches multiplied as (a·b)·c or a·(b·c); ``gates`` puts sigmoids on a and c."""

    def __init__(self, left: bool, gates: bool = False):
        super().__init__()
        self.left, self.gates = left, gates
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        act = torch.sigmoid if self.gates else torch.relu
        a, b, c = act(self.a(x)), torch.relu(self.b(x)), act(self.c(x))
        return self.out((a * b) * c if self.left else a * (b * c))


def _case(cls, seed=0, shape=(2, 4, 4), **kw):
    model = nets.seeded(cls(**kw).double(), seed)
    x = torch.randn((1,) + shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 100))
    return model, x


@pytest.mark.parametrize("how", SPLITS)
def test_se_block_engine_equals_oracle_and_reference(how):
    model, x = _case(SE)
    with split(how):
        m = agree(model, x, 1)
        assert float(laws.normalization(m).deviation) <= 1e-12
        assert laws.column_sums(m).holds is True


def test_signal_gives_the_gate_nothing():
    """split="signal": the gate branch (sigmoid and everything before it on the branch) gets 0;
    "equal" gives it half of what reaches the product."""
    model, x = _case(SE, seed=1)
    with split("signal"):
        m = nrm.explain(model, x, target=0)
    with split("equal"):
        e = nrm.explain(model, x, target=0)
    for name in ("sigmoid", "fc2", "fc1", "pool"):
        assert float(m.marginal(name).abs().max()) == 0.0, name
    mul = e.marginal("mul")
    assert float(e.marginal("sigmoid").sum()) == pytest.approx(float(mul.sum()) / 2, rel=1e-12)
    assert not torch.allclose(m.marginal("input"), e.marginal("input"))


@pytest.mark.parametrize("how", SPLITS)
def test_broadcast_gate_neuron_sums_its_shares(how):
    """A gate neuron (c) of shape (B, C, 1, 1) receives Σ_{h,w} θ m(o_{c,h,w})."""
    model, x = _case(SE, seed=2)
    with split(how):
        m = nrm.explain(model, x, target=1)
    if how == "proportional":  # θ_gate(c, h, w) = g_c / (h_chw + g_c + ε sign(h_chw + g_c))
        h, g = m.activations("relu"), m.activations("sigmoid")
        total = h + g
        theta = g / (total + 1e-6 * torch.where(total >= 0, 1.0, -1.0).to(total.dtype))
    else:
        theta = 0.0 if how == "signal" else 0.5
    want = (theta * m.marginal("mul")).sum((2, 3), keepdim=True)
    torch.testing.assert_close(m.marginal("sigmoid").reshape(want.shape), want, rtol=1e-12, atol=1e-14)


def test_two_branches():
    """Neither factor is a gate: "signal" refuses and says how to choose; "equal" is exact."""
    model, x = _case(TwoBranches, shape=(3,))
    with pytest.raises(nrm.AmbiguousProductError, match="split='equal'"):
        nrm.explain(model, x, target=0)
    with split("equal"):
        m = agree(model, x, 0)
        mul = m.marginal("mul")
        torch.testing.assert_close(m.marginal("relu"), mul / 2, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(m.marginal("b"), mul / 2, rtol=1e-12, atol=1e-14)
    with split("proportional"):
        m = agree(model, x, 0)
        assert laws.normalization(m).holds is True and laws.column_sums(m).holds is True


class Coordinates(nn.Module):
    """x1 · x2 · x3 of the input's coordinates, associated as (x1·x2)·x3 or x1·(x2·x3)."""

    def __init__(self, left: bool):
        super().__init__()
        self.left = left

    def forward(self, x):
        a, b, c = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        return (a * b) * c if self.left else a * (b * c)


@pytest.mark.parametrize("left", (True, False))
def test_spec_numbers_of_the_nary_uniform_rule(left):
    """NRM-SPEC §8: x1·x2·x3 at (2, 3, 4) under the n-ary uniform rule gives relevance
    (8, 8, 8) for either association (a binary rule would give (6, 6, 12) or (12, 6, 6))."""
    x = torch.tensor([[2.0, 3.0, 4.0]], dtype=torch.float64)
    model = Coordinates(left).eval()
    with split("equal"):
        m = nrm.explain(model, x, target=0)
        exact, _ = ExactGraph(model, x).marginals(0)
    assert [b.kind for b in m.network.blocks].count("product") == 1
    torch.testing.assert_close(m.marginal("input") * 24, torch.tensor([[8.0, 8.0, 8.0]], dtype=torch.float64),
                               rtol=1e-14, atol=1e-14)
    assert list(exact[0]) == [Fraction(1, 3)] * 3


@pytest.mark.parametrize(("how", "gates"), [("equal", False), ("equal", True), ("signal", True),
                                            ("proportional", False), ("proportional", True)])
def test_association_law(how, gates):
    """K6: (a·b)·c and a·(b·c) give the same measure (flattened into one ternary product).
    With gates (a and c sigmoids, b the signal) both associations flatten to one product with
    one signal."""
    left, x = _case(Triple, seed=5, shape=(3,), left=True, gates=gates)
    right = nets.seeded(Triple(left=False, gates=gates).double(), 5)
    with split(how):
        ml, mr = agree(left, x, 1), agree(right, x, 1)
    result = laws.association(ml, mr, ["input", "a", "b", "c"])
    assert result.holds is True, str(result)
    n = [b.kind for b in ml.network.blocks].count("product")
    assert n == 1 == [b.kind for b in mr.network.blocks].count("product")


def test_nested_gates_are_flattened_before_the_split():
    """sigmoid(a)·sigmoid(c) alone has no signal; multiplied by relu(b) it is a ternary
    product with one signal, so split="signal" accepts it."""
    model, x = _case(Triple, seed=6, shape=(3,), left=False, gates=True)

    class Gates(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            i = self.inner
            return i.out((torch.sigmoid(i.a(x)) * torch.sigmoid(i.c(x))) * torch.relu(i.b(x)))

    m = agree(Gates(model).eval(), x, 0)
    assert float(m.marginal("inner.a").abs().max()) == 0.0


@pytest.mark.parametrize("how", SPLITS)
def test_laws_l2_to_l7_on_the_se_block(how):
    model, x = _case(SE, seed=7)
    x = torch.cat([x, -x])
    a, b = At("conv1", index=[0, 5, 9]), At("mul", index=[1, 2, 20])
    with split(how):  # the explicit reference of L18 reads the split too
        m = nrm.explain(model, x, target=1)
        results = (laws.additivity(m, a, b), laws.marginalization(m, "conv1", b),
                   laws.joint_marginals(m, "conv1", "mul"), laws.multiplicative(m, a, b), laws.bayes(m, a, b),
                   laws.total_measure(m, b, "conv1"), laws.markov(m, "conv2", 1, [0, 1], nrm.OMEGA),
                   laws.modularity(m, model, x, 1))
    for result in results:
        assert result.holds is True, str(result)


def test_gradient_x_input_not_applicable_through_a_product():
    model, x = _case(TwoBranches, shape=(3,))
    with split("equal"):
        result = laws.gradient_x_input(model, x, 0)
    assert result.holds is None
    assert "multiplies activations" in result.detail and "mul" in result.detail


def test_product_with_a_constant_is_not_a_product_of_activations():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3, dtype=torch.float64))

        def forward(self, x):
            return torch.relu(x) * self.s

    model, x = Scale().eval(), torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    calls = nrm.capture(model, x).calls
    assert calls[-1].kind is not None and calls[-1].kind.name == "ConstantScale"  # a diagonal map, not Multiply
    assert "diagonal linear map" in Multiply().accepts(calls[-1])
    m = nrm.explain(model, x, target=2)
    assert float(m.f) == pytest.approx(3.0)


@pytest.mark.parametrize("bad", ["Proportional", "Equal", "", None, 0.5, ["equal"], ("signal",)])
def test_split_must_be_named(bad):
    with pytest.raises(nrm.errors.ArgumentError,
                       match=r"Multiply\(split=…\) takes one of 'signal', 'equal', 'proportional'"):
        Multiply(split=bad)
    assert Multiply().split == "signal" and Multiply(split="equal").split == "equal"


@pytest.mark.parametrize("bad", [0, 0.0, -1e-6, float("nan"), float("inf"), True, "1e-6", None, [1e-6]])
def test_the_proportional_stabilizer_is_a_positive_number(bad):
    with pytest.raises(nrm.errors.ArgumentError, match=r"Multiply\(stabilizer=…\) is a finite number > 0"):
        Multiply(split="proportional", stabilizer=bad)
    assert Multiply(split="proportional", stabilizer=1e-3).stabilizer == 1e-3


@pytest.mark.parametrize(("point", "left"), [((2.0, 3.0, 4.0), True), ((2.0, 3.0, 4.0), False),
                                             ((2.0, -5.0, 1.0), True), ((1.0, -1.0, 3.0), False)])
def test_numbers_of_the_proportional_split(point, left):
    """LRP-prop on x1·x2·x3: factor i gets a_i / (S + ε sign S) of the product, S = Σ a_j,
    and ⊥ the rest, ε sign S / (S + ε sign S) — exactly in fractions, for either association
    and whatever the sign of S; at (2, 3, 4) the relevance of 24 is 24·(2, 3, 4)/(9 + ε)."""
    x = torch.tensor([point], dtype=torch.float64)
    model = Coordinates(left).eval()
    with split("proportional"):
        m = nrm.explain(model, x, target=0)
        exact, bottom = ExactGraph(model, x).marginals(0)
    eps = Fraction(1e-6)
    a = [Fraction(v) for v in point]
    total = sum(a)
    sign = 1 if total >= 0 else -1
    assert list(exact[0]) == [v / (total + eps * sign) for v in a]
    assert bottom[0] == eps * sign / (total + eps * sign)
    want = torch.tensor([[float(v / (total + eps * sign)) for v in a]], dtype=torch.float64)
    torch.testing.assert_close(m.marginal("input"), want, rtol=1e-14, atol=1e-15)
    assert float(m.absorbed("input")[0]) == pytest.approx(float(bottom[0]), rel=1e-9, abs=1e-18)


@pytest.mark.parametrize("cls,shape,target", [(SE, (2, 4, 4), 1), (TwoBranches, (3,), 0)])
def test_gradient_x_input_general_form_through_the_proportional_split(cls, shape, target):
    """L9's general form: LRP-0 equals the gradient × input of the model whose products are
    Σ_i θ_i a⁽ⁱ⁾ Π_{j≠i} a⁽ʲ⁾ with θ and the other factors detached — θ_i(k) the proportional
    shares, whose sum 1 − q(⊥|k) leaves the stabilizer's share out of the gradient as LRP-0
    leaves it at ⊥."""
    model, x = _case(cls, seed=3, shape=shape)
    with split("proportional"):
        result = laws.gradient_x_input(model, x, target, detached=True)
        plain = laws.gradient_x_input(model, x, target)
    assert result.holds is True and result.deviation <= 1e-12, str(result)
    assert plain.holds is None and "multiplies activations" in plain.detail


@pytest.mark.parametrize("how", SPLITS)
def test_check_layer_on_the_product_kind(how):
    """nrm-verify check-layer on Multiply (its examples: an SE gate; under "equal" also a
    product of two branches): K5 against the exact DAG oracle, L1–L7, L18 against the explicit
    reference; K3, L8 and L9 against the model's gradient not applicable, with the reason; L9's
    general form (gates detached) held."""
    from nrm_verify.validate.layers import check_layer

    with split(how):
        report = check_layer(Multiply, max_examples=3, only=["K5", "L1", "L2", "L7", "L8", "L9", "L18"])
    assert report.ok, str(report)
    verdicts = {v.law: v for v in report.verdicts}
    l9 = {v.status: v.detail for v in report.verdicts if v.law == "L9"}  # the model's gradient; its general form
    assert set(l9) == {"not applicable", "held"}, l9
    assert "multiplies activations" in l9["not applicable"]
    assert "joins branches" in verdicts["L8"].detail
