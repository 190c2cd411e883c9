"""NRM-SPEC §6, the worked example, number by number.

x = (1, 2); hidden ReLU layer without bias: h1 = ReLU(x1 + x2) = 3, h2 = ReLU(3 x1 − x2) = 1;
output y = h1 − h2 = 2 (the target); LRP-0 everywhere unless said otherwise.

Every number is checked twice: by the exact oracle in fractions (``==``, both by walk
enumeration and by transition matrices) and by the public API ``nrm.explain`` in float64
(absolute tolerance 1e-12). Layer names: "input" (x), "0" (the hidden linear layer, alias
"1" for its ReLU), "2" (the output, alias "output").
"""

from __future__ import annotations

from fractions import Fraction as F

import pytest
import torch
from torch import nn

import nrm
from nrm_verify.references.oracle import METHODS, ExactNetwork

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest

X1, X2 = nrm.At("input", index=[0]), nrm.At("input", index=[1])
H1, H2 = nrm.At("0", index=[0]), nrm.At("0", index=[1])


def example(bias=None) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2, bias=bias is not None), nn.ReLU(), nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0], [3.0, -1.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        if bias is not None:
            model[0].bias.copy_(torch.tensor(bias))
    return model.eval()


X = torch.tensor([[1.0, 2.0]], dtype=torch.float64)


def exact(rules=None, bias=None):
    return ExactNetwork.from_model(example(bias), X, rules).explain(target=0)


def engine(rules=None, bias=None):
    return nrm.explain(example(bias), X, target=0, rules=rules)


def close(tensor, values):
    """float64 result of the public API against the spec's exact numbers."""
    expected = torch.tensor([float(v) for v in values], dtype=torch.float64)
    return torch.allclose(tensor.reshape(-1), expected, rtol=0, atol=1e-12)


def marginal_with_absorber(mu, layer, method):
    return list(mu.marginal(layer, method=method)) + [mu.absorbed(layer, method=method)]


# -- LRP-0, no bias ------------------------------------------------------------------------


def test_forward_values():
    net = ExactNetwork.from_model(example(), X, nrm.rules.Zero())
    assert list(net.values("0")) == [3, 1] and list(net.values("output")) == [2]
    m = engine()
    assert close(m.activations("1"), [3, 1]) and close(m.f, [2])


def test_kernels():
    net = ExactNetwork.from_model(example(), X, nrm.rules.Zero())
    q2, bot2 = net.kernel(2)  # q(h | y)
    assert [q2[0, 0], q2[1, 0], bot2[0]] == [F(3, 2), F(-1, 2), 0]
    q1, bot1 = net.kernel(1)  # q(x | h), columns h1, h2
    assert q1[:, 0].tolist() == [F(1, 3), F(2, 3)] and q1[:, 1].tolist() == [3, -2]
    assert bot1.tolist() == [0, 0]
    # Q_1 with its absorber row and column: columns sum to 1 (column-stochastic, signed)
    Q1 = net.transition(1)
    assert Q1.tolist() == [[F(1, 3), 3, 0], [F(2, 3), -2, 0], [0, 0, 1]]
    assert all(sum(Q1[:, k]) == 1 for k in range(3))


def test_walks():
    mu = exact()
    assert dict(mu.walks()) == {(0, 0, 0): F(1, 2), (1, 0, 0): 1, (0, 1, 0): F(-3, 2), (1, 1, 0): 1}
    assert sum(v for _, v in mu.walks()) == 1
    m = engine()
    for path, value in mu.walks():
        assert mu.walk(path) == value
        assert close(m.walk(list(path)), [value])
    assert close(m.measure(nrm.OMEGA), [1])


@pytest.mark.parametrize("method", METHODS)
def test_marginals(method):
    mu = exact()
    assert marginal_with_absorber(mu, "0", method) == [F(3, 2), F(-1, 2), 0]
    assert marginal_with_absorber(mu, "1", method) == [F(3, 2), F(-1, 2), 0]  # the ReLU's name: same layer
    assert marginal_with_absorber(mu, "input", method) == [-1, 2, 0]
    assert mu.marginal("output", method=method).tolist() == [1]
    assert mu.joint("input", "0", by="neuron", method=method).tolist() == [[F(1, 2), F(-3, 2)], [1, 1]]
    m = engine()
    assert close(m.marginal("0"), [1.5, -0.5]) and close(m.absorbed("0"), [0])
    assert close(m.marginal("input"), [-1, 2]) and close(m.absorbed("input"), [0])
    assert close(m.joint("input", "0", by="neuron"), [0.5, -1.5, 1, 1])


def test_input_marginal_is_gradient_times_input():
    model = example()
    x = X.clone().requires_grad_(True)
    y = model(x)[0, 0]
    (grad,) = torch.autograd.grad(y, x)
    assert torch.equal(grad, torch.tensor([[-2.0, 2.0]], dtype=torch.float64))
    assert close(x.detach() * grad / y.detach(), [-1, 2])
    assert close(engine().marginal("input"), (x.detach() * grad / y.detach()).flatten().tolist())


@pytest.mark.parametrize("method", METHODS)
def test_conditionals_and_bayes(method):
    mu = exact()
    assert mu.conditional(X1, given=H2, method=method) == 3
    assert mu.conditional(H2, given=X1, method=method) == F(3, 2)
    # Bayes: μ(A|B) μ(B) = μ(B|A) μ(A)
    bayes_left = mu.conditional(X1, H2, method) * mu(H2, method)
    assert bayes_left == mu.conditional(H2, X1, method) * mu(X1, method) == F(-3, 2)
    m = engine()
    assert close(m.conditional(X1, given=H2), [3]) and close(m.conditional(H2, given=X1), [1.5])
    assert close(m.conditional(X1, given=H2) * m(H2), (m.conditional(H2, given=X1) * m(X1)).tolist())


@pytest.mark.parametrize("method", METHODS)
def test_null_event_cannot_be_conditioned_on(method):
    mu, null = exact(), X1 | H1
    assert mu(null, method=method) == 0  # −1 + 3/2 − 1/2, a non-empty event of measure 0
    assert mu.measure_where(lambda w: w[0] == 0 or w[1] == 0) == 0
    with pytest.raises(nrm.NullEventError):
        mu.conditional(X2, given=null, method=method)
    m = engine()
    assert close(m(null), [0])
    with pytest.raises(nrm.NullEventError, match="measure is 0"):
        m.conditional(X2, given=null)


# -- variants -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_bias(method):
    mu = exact(bias=[1.0, 0.0])
    assert list(mu.network.values("1")) == [4, 1] and mu.f == 3
    assert marginal_with_absorber(mu, "0", method) == [F(4, 3), F(-1, 3), 0]
    assert marginal_with_absorber(mu, "input", method) == [F(-2, 3), F(4, 3), F(1, 3)]
    m = engine(bias=[1.0, 0.0])
    assert close(m.f, [3])
    assert close(m.marginal("0"), [F(4, 3), F(-1, 3)]) and close(m.absorbed("0"), [0])
    assert close(m.marginal("input"), [F(-2, 3), F(4, 3)]) and close(m.absorbed("input"), [F(1, 3)])


@pytest.mark.parametrize("method", METHODS)
def test_epsilon_at_the_output_layer_only(method):
    exact_rules = {"2": nrm.rules.Epsilon(F(1, 10)), "0": nrm.rules.Zero()}
    mu = exact(exact_rules)
    assert marginal_with_absorber(mu, "input", method) == [F(-20, 21), F(40, 21), F(1, 21)]
    float_rules = {"2": nrm.rules.Epsilon(0.1), "0": nrm.rules.Zero()}
    m = engine(float_rules)
    assert close(m.marginal("input"), [F(-20, 21), F(40, 21)]) and close(m.absorbed("input"), [F(1, 21)])
    # the oracle reads the float 0.1 as the exact rational it is: next to 1/10, not equal to it
    near = exact(float_rules).marginal("input")
    assert near[0] != F(-20, 21) and abs(near[0] - F(-20, 21)) < F(1, 10**15)


@pytest.mark.parametrize("method", METHODS)
def test_gamma_one(method):
    mu = exact(nrm.rules.Gamma(1))
    assert marginal_with_absorber(mu, "input", method) == [F(1, 10), F(9, 10), 0]
    m = engine(nrm.rules.Gamma(1.0))
    assert close(m.marginal("input"), [0.1, 0.9]) and close(m.absorbed("input"), [0])


@pytest.mark.parametrize("method", METHODS)
def test_zplus(method):
    mu = exact(nrm.rules.ZPlus())
    assert marginal_with_absorber(mu, "0", method) == [1, 0, 0]
    assert marginal_with_absorber(mu, "input", method) == [F(1, 3), F(2, 3), 0]
    m = engine(nrm.rules.ZPlus())
    assert close(m.marginal("0"), [1, 0]) and close(m.marginal("input"), [F(1, 3), F(2, 3)])
    assert close(m.absorbed("input"), [0])
