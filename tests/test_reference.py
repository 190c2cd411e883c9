"""The slow, explicit LRP reference (nrm_verify/reference.py) against the spec's worked
example, against nrm (L8, sequential models, every rule, preset and convention; masked
events), against autograd (L9 on residual and concatenating models), and its own cut
identity (relevance + bypassing + absorbed = f on every node of a DAG)."""

from __future__ import annotations

import copy

import dag_models
import nets
import pytest
import torch
import torch.fx
from torch import nn

import nrm
from nrm.errors import (
    RuleAssignmentError,
    TrainingModeError,
    UnknownLayerError,
    UnsupportedModuleError,
    ZeroOutputError,
)
from nrm_verify.references.explicit import reference_lrp, reference_masked, rule_kernel

R = nrm.rules
DTYPE = torch.float64
REL = 1e-9
ALL_RULES = {**nets.RULES, **nets.PRESETS}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add start-up cost


def assert_close(got, expected, what: str, scale: float | None = None) -> None:
    got, expected = torch.as_tensor(got, dtype=DTYPE), torch.as_tensor(expected, dtype=DTYPE)
    got = got.reshape(expected.shape)
    scale = max(1.0, float(expected.abs().max()) if expected.numel() else 0.0) if scale is None else scale
    err = float((got - expected).abs().max()) if expected.numel() else 0.0
    assert err <= REL * scale, f"{what}: error {err:.3e} > {REL:.0e}·{scale:.3g}\ngot      {got}\nexpected {expected}"


def target_of(model, x) -> int:
    with torch.no_grad():
        return int(model(x)[0].abs().argmax())


def usable(model, x) -> bool:
    """|f| ≥ 0.05 for every sample, so that marginals R/f are well conditioned."""
    with torch.no_grad():
        out = model(x)
    return bool((out[:, target_of(model, x)].abs() >= 0.05).all())


def sequential_case(seed: int) -> nets.Case:
    """The first usable case among seeds seed, seed + 1000, … of the kind ``seed`` selects."""
    for k in range(20):
        case = nets.BUILDERS[seed % len(nets.BUILDERS)](seed + 1000 * k, batch=2)
        if usable(case.model, case.x):
            return case
    raise RuntimeError(f"no usable case for seed {seed}")


def dag_case(kind: str, seed: int):
    for k in range(20):
        model, x = dag_models.BUILDERS[kind](seed + 1000 * k)
        if usable(model, x):
            return model, x
    raise RuntimeError(f"no usable {kind} case for seed {seed}")


def per_sample(f: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return f.reshape((-1,) + (1,) * (like.dim() - 1))


# -- the worked example of NRM-SPEC §6, exactly ------------------------------------------------


def linear(n_in: int, n_out: int, bias: bool = True) -> nn.Linear:
    """A float64 Linear with fixed weights (no draw from torch's global random state)."""
    lin = nn.utils.skip_init(nn.Linear, n_in, n_out, bias=bias, dtype=DTYPE)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(1.0, 1.0 + n_in * n_out, dtype=DTYPE).reshape(n_out, n_in) / 3)
        if bias:
            lin.bias.fill_(0.1)
    return lin


def worked_example(bias=(0.0, 0.0)):
    hidden, out = linear(2, 2), linear(2, 1, bias=False)
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([[1.0, 1.0], [3.0, -1.0]]))
        hidden.bias.copy_(torch.tensor(bias))
        out.weight.copy_(torch.tensor([[1.0, -1.0]]))
    model = nn.Sequential(hidden, nn.ReLU(), out).eval()
    return model, torch.tensor([[1.0, 2.0]], dtype=DTYPE)


def test_worked_example_lrp0():
    model, x = worked_example()
    ref = reference_lrp(model, x, 0, R.Zero())
    assert_close(ref.f, [2.0], "f")
    assert_close(ref.marginal("0"), [[1.5, -0.5]], "layer 1 (h1, h2)")
    assert_close(ref.marginal("input"), [[-1.0, 2.0]], "layer 0 = gradient × input / f")


def test_worked_example_bias_epsilon_gamma_zplus():
    model, x = worked_example(bias=(1.0, 0.0))
    ref = reference_lrp(model, x, 0, R.Zero())
    assert_close(ref.marginal("0"), [[4 / 3, -1 / 3]], "bias: layer 1")
    assert_close(ref.absorbed["0"] / ref.f, [0.0], "bias: ⊥ of layer 1")
    assert_close(ref.marginal("input"), [[-2 / 3, 4 / 3]], "bias: layer 0")
    assert_close(ref.absorbed["input"] / ref.f, [1 / 3], "bias: ⊥ of layer 0")
    model, x = worked_example()
    ref = reference_lrp(model, x, 0, {"2": R.Epsilon(0.1), "0": R.Zero()})
    assert_close(ref.marginal("input"), [[-20 / 21, 40 / 21]], "ε = 1/10 at the output layer")
    assert_close(ref.absorbed["input"] / ref.f, [1 / 21], "ε: ⊥ of layer 0")
    assert_close(reference_lrp(model, x, 0, R.Gamma(1.0)).marginal("input"), [[0.1, 0.9]], "γ = 1")
    ref = reference_lrp(model, x, 0, R.ZPlus())
    assert_close(ref.marginal("0"), [[1.0, 0.0]], "z⁺ layer 1")
    assert_close(ref.marginal("input"), [[1 / 3, 2 / 3]], "z⁺ layer 0")


def test_kernel_columns_follow_the_table():
    """One column by hand: a = (1, −2, 0.5), w = (2, 1, −4), b = 0.5, z = −1.5."""
    a = torch.tensor([[1.0, -2.0, 0.5]], dtype=DTYPE)
    W = torch.tensor([[2.0, 1.0, -4.0]], dtype=DTYPE)
    b = torch.tensor([0.5], dtype=DTYPE)
    M = torch.ones(1, 3, dtype=torch.bool)

    def column(rule):
        Q, qbot = rule_kernel(rule, a, W, b, M, (3,))
        return Q[0, :, 0], qbot[0, 0]

    q, bot = column(R.Zero())
    assert_close(q, [2 / -1.5, -2 / -1.5, -2 / -1.5], "LRP-0")
    assert_close(bot, 0.5 / -1.5, "LRP-0 ⊥")
    q, bot = column(R.Epsilon(0.5))  # z − ε = −2
    assert_close(q, [-1.0, 1.0, 1.0], "ε signed")
    assert_close(bot, (0.5 - 0.5) / -2.0, "ε signed ⊥")
    q, bot = column(R.Epsilon(0.5, stabilizer_sign="unsigned"))  # z + ε = −1
    assert_close(q, [-2.0, 2.0, 2.0], "ε unsigned")
    q, bot = column(R.AlphaBeta(2, 1))  # (aw)⁺ = (2, 0, 0), P = 2.5; (aw)⁻ = (0, −2, −2), N = −4
    assert_close(q, [2 * 2 / 2.5, -1 * -2 / -4, -1 * -2 / -4], "αβ")
    assert_close(bot, 2 * 0.5 / 2.5, "αβ ⊥")
    q, bot = column(R.WSquare(bias=True))
    assert_close(q, [4 / 21.25, 1 / 21.25, 16 / 21.25], "w² with b²")
    q, bot = column(R.Flat())
    assert_close(q, [1 / 3] * 3, "flat")
    assert_close(bot, 0.0, "flat ⊥")
    q, bot = column(R.Zero(leak="renormalize"))
    assert_close(q, [2 / -2.0, -2 / -2.0, -2 / -2.0], "LRP-0 renormalized")
    assert_close(bot, 0.0, "renormalized ⊥")
    q, bot = column(R.ZBox(-2.0, 1.0))  # a w − l w⁺ − h w⁻ = (2+4, −2+2, −2+4) = (6, 0, 2)
    assert_close(q, [6 / 8, 0.0, 2 / 8], "z^B")


def test_zero_denominator_sends_the_column_to_the_absorber():
    a = torch.tensor([[0.0, 0.0]], dtype=DTYPE)
    W = torch.tensor([[1.0, -1.0]], dtype=DTYPE)
    for rule in (R.Zero(), R.Gamma(0.5), R.ZPlus(), R.AlphaBeta(2, 1), R.Zero(leak="renormalize")):
        Q, qbot = rule_kernel(rule, a, W, None, torch.ones(1, 2, dtype=torch.bool), (2,))
        assert torch.equal(Q, torch.zeros_like(Q)), rule
        assert float(qbot) == 1.0, rule


# -- L8 against nrm on sequential models ---------------------------------------------------------


def compare_with_nrm(model, x, rules, what: str) -> None:
    t = target_of(model, x)
    m = nrm.explain(model, x, target=t, rules=rules)
    ref = reference_lrp(model, x, t, rules)
    assert_close(ref.f, m.f, f"{what}: f")
    scale = max(float(ref.f.abs().max()), *(float(r.abs().max()) for r in ref.relevance.values()))
    for layer in m.layers:
        assert layer in ref.relevance, f"{what}: nrm layer {layer!r} unknown to the reference ({ref.order})"
        assert_close(m.relevance(layer), ref.relevance[layer], f"{what}: R at {layer}", scale)
        assert_close(m.absorbed(layer), ref.absorbed[layer] / ref.f, f"{what}: absorbed at {layer}", scale)
        assert_close(ref.pending[layer], torch.zeros_like(ref.f), f"{what}: nothing bypasses {layer}")


@pytest.mark.parametrize("rule_name", sorted(ALL_RULES))
@pytest.mark.parametrize("seed", range(5))
def test_l8_every_rule_and_preset_equals_nrm(rule_name, seed):
    case = sequential_case(seed)
    compare_with_nrm(case.model, case.x, ALL_RULES[rule_name](), f"{case!r}, {rule_name}")


@pytest.mark.parametrize("seed", range(10, 22))
def test_l8_mixed_rule_assignments_equal_nrm(seed):
    case = sequential_case(seed)
    rules = nets.mixed_rules(case, seed)
    compare_with_nrm(case.model, case.x, rules, f"{case!r}, {rules}")


@pytest.mark.parametrize("seed", range(8))
def test_l8_relevance_is_fraction_of_f(seed):
    """marginal = R / f and, over real neurons plus ⊥, sums to 1 at every layer (L1)."""
    case = sequential_case(seed)
    ref = reference_lrp(case.model, case.x, target_of(case.model, case.x), R.Epsilon(0.05))
    for layer in ref.order:
        m = ref.marginal(layer)
        assert_close(m.reshape(m.shape[0], -1).sum(1) + ref.absorbed[layer] / ref.f, torch.ones_like(ref.f),
                     f"L1 at {layer}")


@pytest.mark.parametrize("seed", range(10))
def test_masked_channel_events_equal_nrm(seed):
    """f · m_v(·, X_layer ∈ channel c) at every layer v (above and below) and its ⊥, for a
    channel event at every layer, equals reference_masked."""
    case = sequential_case(seed)
    rules = nets.mixed_rules(case, seed) if seed % 2 else ALL_RULES[sorted(ALL_RULES)[seed % len(ALL_RULES)]]()
    t = target_of(case.model, case.x)
    m = nrm.explain(case.model, case.x, target=t, rules=rules)
    for layer in m.layers:
        shape = m.layer_shape(layer)
        c = (seed + 1) % shape[0]
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[c] = True
        ref = reference_masked(case.model, case.x, t, rules, layer, mask)
        event = nrm.At(layer, channels=[c])
        scale = max(1.0, float(ref.f.abs().max()), *(float(r.abs().max()) for r in ref.relevance.values()))
        for other in m.layers:
            got = per_sample(ref.f, ref.relevance[other]) * m.marginal(other, within=event).reshape(
                ref.relevance[other].shape)
            assert_close(got, ref.relevance[other], f"{case!r}: {other} within {event!r}", scale)
            assert_close(m.absorbed(other, within=event) * ref.f, ref.absorbed[other],
                         f"{case!r}: ⊥ of {other} within {event!r}", scale)


# -- L9 on residual and concatenating models (autograd) --------------------------------------------


class _Recorder(torch.fx.Interpreter):
    """Runs a traced model keeping every intermediate tensor with its gradient."""

    def __init__(self, gm):
        super().__init__(gm)
        self.record = {}

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.retain_grad()
            self.record[n] = out
        return out


def gradient_times_input(model, x, target) -> dict[str, torch.Tensor]:
    """a ⊙ ∂f/∂a at every node, named as the reference names layers; a Linear/Conv followed by
    its batch norm takes the batch norm's (the folded neuron's) value."""
    gm = torch.fx.symbolic_trace(copy.deepcopy(model))
    rec = _Recorder(gm)
    xx = x.clone().requires_grad_(True)
    rec.run(xx)[:, target].sum().backward()
    names, seen, out = {}, set(), {}
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            names[n] = "input"
        elif n.op == "call_module" and n.target not in seen:
            seen.add(n.target)
            names[n] = n.target
        else:
            names[n] = n.name
    for n, t in rec.record.items():
        users = list(n.users)
        if len(users) == 1 and users[0].op == "call_module" and isinstance(
                gm.get_submodule(users[0].target), (nn.BatchNorm1d, nn.BatchNorm2d)):
            t = rec.record[users[0]]
        out[names[n]] = (t * t.grad).detach()
    return out


@pytest.mark.parametrize("kind", sorted(dag_models.BUILDERS))
@pytest.mark.parametrize("seed", range(4))
def test_l9_lrp0_is_gradient_times_input_on_dags(kind, seed):
    model, x = dag_case(kind, seed)
    t = target_of(model, x)
    ref = reference_lrp(model, x, t, R.Zero())
    gi = gradient_times_input(model, x, t)
    scale = max(1.0, *(float(r.abs().max()) for r in gi.values()))
    assert set(gi) <= set(ref.relevance), f"unnamed nodes: {set(gi) - set(ref.relevance)}"
    for name, expected in gi.items():
        assert_close(ref.relevance[name], expected, f"{kind}({seed}): L9 at {name}", scale)
    assert ref.absorbed["input"].abs().max() > 1e-6, "biases must leak something for the check to bite"


# -- the cut identity on DAGs, every rule ----------------------------------------------------------


@pytest.mark.parametrize("rule_name", sorted(ALL_RULES))
@pytest.mark.parametrize("kind", sorted(dag_models.BUILDERS))
def test_conservation_at_every_node_of_a_dag(kind, rule_name):
    """Σ_j R_j^(v) + pending(v) + absorbed(v) = f: every kernel column (bias and stabilizer
    share written from the table) sums to one, and fan-out relevance adds up."""
    model, x = dag_case(kind, 3)
    rules = ALL_RULES[rule_name]()
    ref = reference_lrp(model, x, target_of(model, x), rules)
    scale = max(float(ref.f.abs().max()), *(float(r.abs().max()) for r in ref.relevance.values()))
    bypassed = 0.0
    for name in ref.order:
        r = ref.relevance[name]
        total = r.reshape(r.shape[0], -1).sum(1) + ref.pending[name] + ref.absorbed[name]
        assert_close(total, ref.f, f"{kind}, {rule_name}: cut at {name}", scale)
        bypassed = max(bypassed, float(ref.pending[name].abs().max()))
    if kind != "concat_net":  # residual models have skip edges, and the identity must use them
        assert bypassed > 1e-6


@pytest.mark.parametrize("rule_name", ["zero", "epsilon", "gamma", "zplus", "alphabeta21", "wsquare", "flat",
                                       "epsilon-renormalize"])
def test_rules_on_the_sum_neuron_by_name(rule_name):
    """A rule named for "add" applies to the residual sum z = a + y (weights 1, no bias)."""
    model, x = dag_case("residual_mlp", 5)
    rule = nets.RULES[rule_name]()
    ref = reference_lrp(model, x, target_of(model, x), {nn.Linear: R.Epsilon(0.01), "add": rule})
    assert ref.rules["add"] == rule
    a, y, r = ref.values["act0"], ref.values["fc2"], ref.relevance["add"]
    share = {"zero": y / (a + y), "flat": torch.full_like(y, 0.5), "wsquare": torch.full_like(y, 0.5)}
    if rule_name in share:
        assert_close(ref.relevance["fc2"], share[rule_name] * r, f"{rule_name}: the summand's share")
    for name in ref.order:
        total = ref.relevance[name].reshape(x.shape[0], -1).sum(1) + ref.pending[name] + ref.absorbed[name]
        assert_close(total, ref.f, f"{rule_name} on add: cut at {name}")


def test_sum_rule_resolution():
    """Residual sums take a rule by name, by the key type nrm.Sum, or the default; presets
    give them LRP-0."""
    model, x = dag_case("residual_mlp", 0)
    t = target_of(model, x)
    ref = reference_lrp(model, x, t, R.Epsilon(0.1))
    assert ref.rules["fc1"] == R.Epsilon(0.1)
    assert ref.rules["add"] == R.Epsilon(0.1)
    assert reference_lrp(model, x, t, nrm.presets.EpsilonPlus()).rules["add"] == R.Zero()
    assert reference_lrp(model, x, t, {nn.Linear: R.Zero(), "add": R.Flat()}).rules["add"] == R.Flat()
    ref = reference_lrp(model, x, t, {nn.Linear: R.Zero(), nrm.Sum: R.WSquare()})
    assert ref.rules["add"] == R.WSquare()


@pytest.mark.parametrize("rule_name", sorted(ALL_RULES))
def test_concatenated_halves_equal_the_merged_sequential(rule_name):
    """Two Linears concatenated (torch.cat routes with q = 1) are the one Linear of the merged
    nn.Sequential, column for column: every rule gives the same relevance, also in nrm."""
    model, x = dag_models.split_linear(7)
    merged = model.merged()
    t = target_of(merged, x)
    rules = ALL_RULES[rule_name]()
    ref = reference_lrp(model, x, t, rules)
    flat = reference_lrp(merged, x, t, rules)
    m = nrm.explain(merged, x, target=t, rules=rules)
    for name, other in (("input", "input"), ("cat", "hidden"), ("act", "act"), ("fc", "fc")):
        assert_close(ref.relevance[name], flat.relevance[other], f"{rule_name}: {name} vs merged {other}")
        assert_close(ref.relevance[name], m.relevance(other), f"{rule_name}: {name} vs nrm {other}")
    assert_close(ref.absorbed["input"], flat.absorbed["input"], f"{rule_name}: absorbed")
    top = ref.relevance["cat"][:, :3]
    assert_close(ref.relevance["top"], top, "cat splits relevance by slices")


# -- masked events on DAGs: the two skip-path semantics ---------------------------------------------


@pytest.mark.parametrize("kind,layer", [("residual_mlp", "fc1"), ("residual_cnn", "block1.conv1"),
                                        ("residual_cnn", "block2.conv2"), ("concat_net", "branch_a")])
def test_parallel_and_exclusive_masks(kind, layer):
    model, x = dag_case(kind, 1)
    t = target_of(model, x)
    rules = R.Epsilon(0.01)
    full = reference_lrp(model, x, t, rules)
    shape = full.relevance[layer].shape[1:]
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(shape, generator=g) < 0.5
    ones = torch.ones(shape, dtype=torch.bool)
    par = reference_masked(model, x, t, rules, layer, mask, parallel=True)
    exc = reference_masked(model, x, t, rules, layer, mask, parallel=False)
    exc_c = reference_masked(model, x, t, rules, layer, ~mask, parallel=False)
    all_par = reference_masked(model, x, t, rules, layer, ones, parallel=True)
    all_exc = reference_masked(model, x, t, rules, layer, ones, parallel=False)
    for name in ("input", layer):
        assert_close(all_par.relevance[name], full.relevance[name], f"{name}: nothing masked (parallel)")
        assert_close(exc.relevance[name] + exc_c.relevance[name], all_exc.relevance[name], f"{name}: S + Sᶜ")
        assert_close(par.relevance[name] + exc_c.relevance[name], full.relevance[name], f"{name}: bypass + S + Sᶜ")
    assert_close(exc.relevance[layer], full.relevance[layer] * mask, "the mask itself")
    bypass = full.relevance["input"] - all_exc.relevance["input"]  # skip paths, or branch_b past branch_a
    assert float(bypass.abs().max()) > 1e-6, "some relevance must reach the input past the masked node"
    # the same event measured at a layer above (upward pass) and at the input (downward pass)
    top = exc.relevance["output"]
    assert_close(top.reshape(top.shape[0], -1).sum(1), exc.relevance["input"].reshape(x.shape[0], -1).sum(1)
                 + exc.absorbed["input"], f"{kind}: μ(E) above = μ(E) below")


# -- nrm on DAG models (once nrm traces them) --------------------------------------------------------


@pytest.mark.parametrize("rule_name", ["zero", "epsilon", "gamma", "zplus", "alphabeta21", "flat", "wsquare",
                                       "epsilon-renormalize", "EpsilonGammaFlat", "EpsilonPlus", "EpsilonGammaBox"])
@pytest.mark.parametrize("kind", sorted(dag_models.BUILDERS))
def test_l8_nrm_on_dags(kind, rule_name):
    """Relevance, absorbed mass and bypassing mass (nrm's Measure.bypassing; the reference's
    pending relevance on skip edges) at every layer name of a DAG model."""
    model, x = dag_case(kind, 2)
    rules = ALL_RULES[rule_name]()
    t = target_of(model, x)
    m = nrm.explain(model, x, target=t, rules=rules)
    ref = reference_lrp(model, x, t, rules)
    scale = max(float(ref.f.abs().max()), *(float(r.abs().max()) for r in ref.relevance.values()))
    for layer in m.layers:
        assert layer in ref.relevance, f"nrm layer {layer!r} unknown to the reference ({ref.order})"
        what = f"{kind}, {rule_name}"
        assert_close(m.relevance(layer), ref.relevance[layer], f"{what}: R at {layer}", scale)
        assert_close(m.absorbed(layer), ref.absorbed[layer] / ref.f, f"{what}: absorbed at {layer}", scale)
        assert_close(m.bypassing(layer), ref.pending[layer] / ref.f, f"{what}: bypassing {layer}", scale)


@pytest.mark.parametrize("kind", sorted(dag_models.BUILDERS))
def test_l8_nrm_on_dags_rules_for_sums(kind):
    """Rules on the residual sums (by the key type nrm.Sum) and on single layers by name."""
    model, x = dag_case(kind, 4)
    t = target_of(model, x)
    names = [n for n in reference_lrp(model, x, t).rules if n not in ("add", "add_1")]
    rules = {nn.Linear: R.Epsilon(0.05), nn.Conv2d: R.Gamma(0.5), nrm.Sum: R.Epsilon(0.2), nrm.FIRST: R.Flat(),
             nn.AvgPool2d: R.Zero(), nn.AdaptiveAvgPool2d: R.WSquare(), names[len(names) // 2]: R.AlphaBeta(2, 1)}
    m = nrm.explain(model, x, target=t, rules=rules)
    ref = reference_lrp(model, x, t, rules)
    scale = max(float(ref.f.abs().max()), *(float(r.abs().max()) for r in ref.relevance.values()))
    for layer in m.layers:
        assert_close(m.relevance(layer), ref.relevance[layer], f"{kind}: R at {layer}", scale)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("kind", sorted(dag_models.BUILDERS))
def test_crp_events_nrm_on_dags(kind, parallel):
    """f · μ(X_v = j, X_layer ∈ channel c) at every layer v and its ⊥, for a channel event at
    every layer, with CRP's two skip-path semantics (At(..., parallel=))."""
    model, x = dag_case(kind, 2)
    rules = nrm.presets.EpsilonGammaFlat(0.01)
    t = target_of(model, x)
    m = nrm.explain(model, x, target=t, rules=rules)
    for layer in m.layers:
        shape = m.layer_shape(layer)
        c = len(layer) % shape[0]
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[c] = True
        ref = reference_masked(model, x, t, rules, layer, mask, parallel=parallel)
        event = nrm.At(layer, channels=[c], parallel=parallel)
        scale = max(1.0, float(ref.f.abs().max()), *(float(r.abs().max()) for r in ref.relevance.values()))
        for other in m.layers:
            got = per_sample(ref.f, ref.relevance[other]) * m.marginal(other, within=event).reshape(
                ref.relevance[other].shape)
            assert_close(got, ref.relevance[other], f"{kind}: {other} within {event!r}", scale)
        assert_close(m.absorbed("input", within=event) * ref.f, ref.absorbed["input"],
                     f"{kind}: ⊥ of the input within {event!r}", scale)


# -- errors and hygiene ---------------------------------------------------------------------------


class _Atan(nn.Module):
    def forward(self, x):
        return torch.atan(x)


class _Cosine(nn.Module):
    def forward(self, x):
        return torch.cosine_similarity(x, x.flip(1), dim=1).unsqueeze(1)


class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = linear(2, 2)

    def forward(self, x):
        return self.fc(x) * x  # a product of two activations (a product by a constant is ConstantScale)


@pytest.mark.parametrize("build,name", [
    (lambda: nn.Sequential(linear(2, 2), _Atan()), "atan"),
    (lambda: nn.Sequential(linear(2, 2), _Cosine()), "cosine_similarity"),
    (_Scale, "mul"),
])
def test_unsupported_operations_are_named(build, name):
    with pytest.raises(UnsupportedModuleError, match=name):
        reference_lrp(build().eval(), torch.ones(1, 2, dtype=DTYPE), 0)


def test_bad_input_errors():
    model, x = worked_example()
    with pytest.raises(TrainingModeError):
        reference_lrp(copy.deepcopy(model).train(), x, 0)
    with pytest.raises(RuleAssignmentError, match="nowhere"):
        reference_lrp(model, x, 0, {"nowhere": R.Zero()})
    with pytest.raises(RuleAssignmentError, match="no rule"):
        reference_lrp(model, x, 0, {nn.Conv2d: R.Zero()})
    with pytest.raises(ZeroOutputError):
        reference_lrp(model, torch.zeros(1, 2, dtype=DTYPE), 0)
    with pytest.raises(UnknownLayerError, match="nowhere"):
        reference_masked(model, x, 0, None, "nowhere", torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        reference_masked(model, x, 0, None, "0", torch.ones(3, dtype=torch.bool))


def test_the_model_is_left_untouched():
    model, x = dag_case("residual_cnn", 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference_lrp(model, x, 0, nrm.presets.EpsilonGammaFlat())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m.training for m in model.modules())
    assert next(model.parameters()).dtype == DTYPE
