"""The exact oracle checked on its own: against torch's modules, against hand computations,
and its two methods (walk enumeration, transition matrices) against each other — exactly."""

from __future__ import annotations

import ast
import inspect
from fractions import Fraction as F

import nets
import pytest
import torch
from torch import nn

import nrm
import nrm_verify.references.oracle as oracle
from nrm_verify.references.oracle import METHODS, ExactNetwork, exact_rule

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest

D = torch.float64


def floats(values) -> torch.Tensor:
    return nets.as_tensor(values)


# -- every linear map as a matrix reproduces the module ------------------------------------

MODULES = [
    (lambda: nn.Linear(3, 2, dtype=D), (3,)),
    (lambda: nn.Linear(3, 2, dtype=D), (2, 3)),  # acts on the last dimension
    (lambda: nn.Conv2d(2, 3, 3, padding=1, dtype=D), (2, 4, 4)),
    (lambda: nn.Conv2d(2, 2, 2, stride=2, dilation=1, groups=2, dtype=D), (2, 4, 5)),
    (lambda: nn.Conv2d(1, 2, 2, dilation=2, padding=(1, 0), bias=False, dtype=D), (1, 5, 4)),
    (lambda: nn.Conv2d(1, 2, 3, padding="same", dtype=D), (1, 4, 4)),
    (lambda: nn.Conv2d(1, 1, 2, padding="same", dtype=D), (1, 3, 3)),  # asymmetric padding
    (lambda: nn.Conv1d(2, 2, 3, stride=2, padding=1, dtype=D), (2, 6)),
    (lambda: nn.AvgPool2d(2), (2, 4, 4)),
    (lambda: nn.AvgPool2d(3, stride=1, padding=1), (1, 3, 3)),
    (lambda: nn.AvgPool2d(2, divisor_override=3), (1, 4, 4)),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 5)),  # windows of unequal size
    (lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 3)),
]


def exact_map(module: nn.Module, x: torch.Tensor):
    """The exact matrix the layer kind of ``module``'s one operation declares (also for a call
    the fast path refuses, such as an asymmetric 'same' padding)."""
    call = nrm.capture(module, x).calls[-1]
    kind = call.kind or nrm.layers.REGISTRY.function_kinds(call.func)[0]
    return kind.exact(call, x)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("k", range(len(MODULES)))
def test_dense_matrix_reproduces_the_module(k):
    make, in_shape = MODULES[k]
    with torch.random.fork_rng():  # torch's default init draws from the global RNG: keep it as it was
        torch.manual_seed(k)
        module = make()
        x = torch.randn((1,) + in_shape, dtype=D)
    dmap = exact_map(module, x)
    with torch.no_grad():
        expected = module(x)
    z = oracle.fractions(x[0]).reshape(-1) @ dmap.weight
    if dmap.bias is not None:
        z = z + dmap.bias
    assert tuple(expected.shape[1:]) == dmap.out_shape
    assert torch.allclose(floats(z), expected.reshape(-1), rtol=1e-12, atol=1e-12)
    # structure: every non-zero weight is a connection; nothing connects across groups
    assert not ((dmap.weight != 0) & ~dmap.connected).any()


def test_structural_fan_in_of_a_padded_convolution():
    """in(k) is the receptive field without padding: a 3×3 conv with padding 1 on 3×3 has
    4 inputs per channel at a corner, 6 on an edge, 9 in the centre — zero weights included."""
    conv = nn.Conv2d(2, 1, 3, padding=1, bias=False, dtype=D)
    with torch.no_grad():
        conv.weight.zero_()
    dmap = exact_map(conv, torch.ones((1, 2, 3, 3), dtype=D))
    assert dmap.connected.sum(0).reshape(3, 3).tolist() == [[8, 12, 8], [12, 18, 12], [8, 12, 8]]
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, dtype=D), nn.ReLU(), nn.Flatten(), nn.Linear(9, 1, dtype=D))
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[0].weight[0, 0, 0, 0] = 0.0
        model[0].bias.fill_(0.1)
        model[3].weight.fill_(1.0)
        model[3].bias.zero_()
    mu = ExactNetwork.from_model(model.eval(), torch.ones((1, 1, 3, 3), dtype=D), nrm.rules.Flat()).explain(target=0)
    # flat: q(j|k) = 1/|in(k)|; the output spreads 1/9 to each conv neuron
    corner = sum(F(1, 9) * F(1, n) for n in (4, 6, 6, 9))  # input (0,0) feeds 4 conv neurons
    assert mu.marginal("input")[0, 0, 0] == corner


def test_batchnorm_is_folded():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        bn = nn.BatchNorm2d(3, dtype=D)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        model = nn.Sequential(nn.Conv2d(2, 3, 2, dtype=D), bn).eval()
        x = torch.randn((1, 2, 3, 3), dtype=D)
    net = ExactNetwork.from_model(model, x, nrm.rules.Zero())
    with torch.no_grad():
        assert torch.allclose(floats(net.values("output")), model(x)[0], rtol=1e-12, atol=1e-12)


def test_maxpool_winner_is_the_first_maximum_like_torch():
    """Ties (dead ReLUs give many zeros) go to the first maximal element in row-major window
    order, as torch's CPU kernel does; padding positions never win."""
    x = torch.tensor([[[[0.0, 0.0, 1.0, 1.0, -1.0],
                        [2.0, 0.0, 1.0, 1.0, -3.0],
                        [0.0, 2.0, -1.0, -1.0, -2.0],
                        [0.0, 0.0, -1.0, -1.0, -0.5]]]], dtype=D)
    for pool in (nn.MaxPool2d(2), nn.MaxPool2d(2, stride=1), nn.MaxPool2d(3, stride=2, padding=1),
                 nn.MaxPool2d(2, stride=2, ceil_mode=True), nn.MaxPool2d(2, stride=1, dilation=2)):
        _, idx = nn.functional.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                          pool.ceil_mode, return_indices=True)
        params = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
        winners, out_shape, _ = oracle.maxpool_winners(params, oracle.fractions(x[0]).reshape(-1), (1, 4, 5))
        assert out_shape == tuple(idx.shape[1:]), pool
        assert winners.tolist() == idx.flatten().tolist(), pool


def test_forward_is_the_models_forward():
    for seed in range(10):
        case = nets.network(seed)
        net = ExactNetwork.from_model(case.model, case.x[:1], nrm.rules.Zero())
        with torch.no_grad():
            out = case.model(case.x[:1])
        assert torch.allclose(floats(net.output), out.reshape(-1), rtol=1e-12, atol=1e-12), case


# -- a hand-computed convolution -----------------------------------------------------------


def test_hand_computed_conv1d():
    """x = (1, 2, −1) → Conv1d w = (1, 1), b = 0: z = (3, 1) → ReLU → Linear (1, −2): y = 1.
    LRP-0: q(z1|y) = 3, q(z2|y) = −2; q(x1|z1) = 1/3, q(x2|z1) = 2/3; q(x2|z2) = 2, q(x3|z2) = −1.
    Input marginal: (1, 2 − 4, 2) = (1, −2, 2); sums to 1."""
    model = nn.Sequential(nn.Conv1d(1, 1, 2, bias=False, dtype=D), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2, 1, bias=False, dtype=D)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[[1.0, 1.0]]]))
        model[3].weight.copy_(torch.tensor([[1.0, -2.0]]))
    x = torch.tensor([[[1.0, 2.0, -1.0]]], dtype=D)
    net = ExactNetwork.from_model(model, x, nrm.rules.Zero())
    q1, _ = net.kernel(1)
    assert q1.tolist() == [[F(1, 3), 0], [F(2, 3), 2], [0, -1]]
    for method in METHODS:
        mu = net.explain(target=0)
        assert mu.marginal("input", method=method).tolist() == [[1, -2, 2]]
        assert mu.marginal("2", method=method).tolist() == [3, -2]  # the Flatten's name
        assert mu.marginal("0", method=method).tolist() == [[3, -2]]
    m = nrm.explain(model, x, target=0)
    assert torch.allclose(m.marginal("input"), torch.tensor([[[1.0, -2.0, 2.0]]], dtype=D), atol=1e-12)


# -- the two methods agree exactly, and the laws hold exactly ----------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_walks_and_matrices_agree_exactly(seed):
    rules = [nrm.rules.Epsilon(0.1), nrm.rules.AlphaBeta(2, 1), nrm.presets.EpsilonGammaFlat(),
             nrm.rules.Zero(leak="renormalize"), nrm.rules.WSquare(bias=True)][seed % 5]
    ec = nets.exact_case(seed, lambda case, s: rules)
    case, net, mu = ec.case, ec.network, ec.exact
    for name in net.names:
        walks = mu.marginal(name, method="walks")
        assert (walks == mu.marginal(name, method="matrix")).all()
        # L1, exactly: Σ_{j ∈ V̄_l} m_l(j) = 1
        assert sum(walks.reshape(-1)) + mu.absorbed(name) == 1
    assert sum(mu for _, mu in mu.walks()) == 1
    for l in range(1, net.depth + 1):  # every column of every Q_l sums to one
        Q = net.transition(l)
        assert all(sum(Q[:, k]) == 1 for k in range(Q.shape[1])), (case, l)


def test_start_vector():
    case = nets.network(3)
    net = ExactNetwork.from_model(case.model, case.x[:1], nrm.rules.Epsilon(0.1))
    R = torch.tensor([[0.5, -2.0, 1.0][: len(net.output)]], dtype=D)
    mu = net.explain(start=R)
    assert mu.pi[:-1].tolist() == [v / sum(oracle.fractions(R[0])) for v in oracle.fractions(R[0])]
    assert mu.f == sum(oracle.fractions(R[0]))
    assert mu.marginal("output").tolist() == mu.pi[:-1].tolist()
    assert sum(mu.marginal("input").reshape(-1)) + mu.absorbed("input") == 1


def test_exact_rule_reads_float_parameters_exactly_and_leaves_the_rule_alone():
    rule = nrm.rules.Gamma(0.1, stabilizer=0.25)
    clone = exact_rule(rule)
    assert clone.gamma == F(0.1) and clone.gamma != F(1, 10) and clone.stabilizer == F(1, 4)
    assert rule.gamma == 0.1 and isinstance(rule.gamma, float)
    box = exact_rule(nrm.rules.ZBox(torch.tensor([-1.0, 0.5]), 1.0))
    assert box.low.tolist() == [-1, F(1, 2)]


def test_errors():
    model, x = nets.mlp(0).model, nets.mlp(0).x
    net = ExactNetwork.from_model(model, x[:1], nrm.rules.Zero())
    with pytest.raises(nrm.ShapeError):
        ExactNetwork.from_model(model, torch.cat([x, x]), nrm.rules.Zero())
    with pytest.raises(nrm.UnknownLayerError):
        net.layer("nope")
    with pytest.raises(nrm.ZeroOutputError):
        net.explain(start=torch.zeros((1, len(net.output)), dtype=D))
    with pytest.raises(nrm.EventIndexError):
        net.explain(target=0).measure(nrm.At("input", index=[99]))
    with pytest.raises(nrm.TrainingModeError):
        ExactNetwork.from_model(nets.mlp(0).model.train(), x[:1], nrm.rules.Zero())


def test_the_model_is_only_read():
    case = nets.cnn(5)
    before = {k: v.clone() for k, v in case.model.state_dict().items()}
    ExactNetwork.from_model(case.model, case.x[:1], nrm.presets.EpsilonGammaFlat()).explain(target=0).walks()
    after = case.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in case.model.modules())


def test_the_oracle_does_not_use_the_engine():
    """Independence: the oracle imports no part of nrm that computes a measure."""
    tree = ast.parse(inspect.getsource(oracle))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"nrm.engine", "nrm.linear", "nrm.measure", "nrm"}, imported


def test_layers_by_index_and_by_name():
    mu = ExactNetwork.from_model(nets.cnn(2).model, nets.cnn(2).x[:1], nrm.rules.Zero()).explain(target=0)
    net = mu.network
    for name, (l, shape) in net.names.items():
        assert (mu.marginal(l).reshape(-1) == mu.marginal(name).reshape(-1)).all()
        assert mu.marginal(name).shape == shape


def test_batchnorm1d_after_a_linear_on_rows():
    """A Linear on a (P, F) input followed by BatchNorm1d(P): the batch norm normalizes the
    rows (dim 1), which the oracle folds as it should; the engine's per-feature folding
    cannot express it and must refuse rather than give a silently wrong measure."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        bn = nn.BatchNorm1d(2, dtype=D)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([2.0, 0.5]))
            bn.bias.copy_(torch.tensor([0.3, -0.2]))
            bn.running_mean.copy_(torch.tensor([0.1, -0.4]))
            bn.running_var.copy_(torch.tensor([1.5, 0.7]))
        model = nn.Sequential(nn.Linear(3, 2, dtype=D), bn, nn.ReLU(), nn.Flatten(), nn.Linear(4, 1, dtype=D)).eval()
        x = torch.randn((1, 2, 3), dtype=D)
    net = ExactNetwork.from_model(model, x, nrm.rules.Zero())
    with torch.no_grad():
        assert torch.allclose(floats(net.values("2")), model[:3](x)[0], rtol=1e-12, atol=1e-12)
        assert torch.allclose(floats(net.output), model(x)[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(nrm.UnsupportedModuleError, match="cannot be folded"):
        nrm.explain(model, x, target=0)


def test_linear_on_rows_adds_its_bias_to_the_last_dimension():
    """nn.Linear on a (P, F) input acts on F; with P equal to the output width a bias added
    along dim 1 would go unnoticed by shapes. Engine and oracle must both follow torch."""
    model = nn.Sequential(nn.Linear(3, 2, dtype=D), nn.ReLU(), nn.Flatten(), nn.Linear(4, 1, dtype=D)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -1.0, 0.25], [1.0, 0.5, -0.5]]))
        model[0].bias.copy_(torch.tensor([1.0, -1.0]))
        model[3].weight.copy_(torch.tensor([[1.0, -0.5, 0.75, 2.0]]))
        model[3].bias.zero_()
    x = torch.tensor([[[0.5, -0.25, 1.0], [-1.0, 0.75, 0.5]]], dtype=D)
    with torch.no_grad():
        hidden, out = model[:2](x), model(x)
    mu = ExactNetwork.from_model(model, x, nrm.rules.Zero()).explain(target=0)
    assert torch.allclose(floats(mu.network.values("1")), hidden[0], rtol=0, atol=1e-15)
    m = nrm.explain(model, x, target=0)
    assert torch.allclose(m.activations("1"), hidden, rtol=0, atol=1e-15)
    assert torch.allclose(m.f, out[:, 0], rtol=0, atol=1e-15)
    for name in ("input", "0", "output"):
        assert torch.allclose(m.marginal(name)[0], floats(mu.marginal(name)), rtol=0, atol=1e-12)
        assert abs(float(m.absorbed(name)[0]) - float(mu.absorbed(name))) <= 1e-12


def test_a_rule_that_reads_relevance_has_no_exact_walk_measure():
    class Reading(nrm.rules.Zero):
        reads_relevance = True

    case = nets.mlp(0)
    with pytest.raises(nrm.errors.RelevanceDependentRuleError, match="no fixed kernel"):
        ExactNetwork.from_model(case.model, case.x[:1], Reading())
