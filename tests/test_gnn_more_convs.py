"""PyG layers that no code of nrm names, read by the kinds that read GCNConv (gather, constant
scales, scatter, linear maps, a max aggregation, a sigmoid gate): ChebConv, SGConv, TAGConv,
ARMAConv, LEConv, ClusterGCNConv, EdgeConv, APPNP, SSGConv, ResGatedGraphConv — found read in a
stranger's sweep of PyG (2026-12-07), held here as the GCN family is (tests/test_gnn.py): every
operation read by a kind, f the model's, L1–L7 with node events and L18 (explicit LRP on the
original graph), the exact rational oracle, and LRP-0 = gradient × input where it applies (the
gated one and EdgeConv's empty max at the isolated node: reported not applicable)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_geometric", reason="the graph tests need torch_geometric (pip install -e '.[graph]')")

import graphs  # noqa: E402  (tests/graphs.py imports torch_geometric)

import nrm  # noqa: E402
from nrm import At  # noqa: E402
from nrm.gnn import OnGraph  # noqa: E402
from nrm_verify import laws  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

MODELS = sorted(graphs.more_builders())
RULES = {"zero": nrm.rules.Zero(), "gamma": nrm.rules.Gamma(0.25), "flat-preset": nrm.presets.EpsilonGammaFlat()}


def wrapped(name, seed=0):
    model, g, kwargs = graphs.case(name, seed)
    m = OnGraph(model, g.edge_index, **kwargs)
    out = m(g.x.unsqueeze(0))
    return m, g.x.unsqueeze(0), int(out.reshape(-1).abs().argmax())  # the output of largest magnitude


@pytest.mark.parametrize("name", MODELS)
def test_every_operation_is_read_and_f_is_the_models(name):
    model, x, target = wrapped(name)
    cap = nrm.capture(model, x)
    assert all(c.kind is not None for c in cap.calls), [c.describe() for c in cap.calls if c.kind is None]
    kinds = {c.kind.name for c in cap.calls}
    assert {"IndexSelect", "Scatter"} <= kinds, kinds  # messages gathered from the sources, summed (or maxed) in
    assert ("Multiply" in kinds) == (name == "res_gated"), kinds  # only the gated layer multiplies activations
    m = nrm.explain(model, x, target, check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x).reshape(1, -1)[:, target])


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("name", MODELS)
def test_laws_l1_to_l7_and_l18_with_node_events(name, rule):
    model, x, target = wrapped(name)
    m = nrm.explain(model, x, target, rules=RULES[rule], check="full")
    names = m.canonical_names()
    node_layers = [n for n in names if len(m.layer_shape(n)) == 2 and m.layer_shape(n)[0] == x.shape[1]]
    lo, hi = node_layers[0], node_layers[-1]
    a, b = At(lo, nodes=[0, 2]), At(hi, nodes=[1, x.shape[1] - 1])
    graphs.held(laws.normalization(m))
    graphs.held(laws.column_sums(m))
    for result in (laws.additivity(m, a, b), laws.marginalization(m, lo, b), laws.joint_marginals(m, lo, hi),
                   laws.multiplicative(m, a, b), laws.bayes(m, a, b), laws.total_measure(m, b, lo)):
        assert result.holds is not False, str(result)
    graphs.held(laws.modularity(m, model, x, target, RULES[rule]))


@pytest.mark.parametrize("name", MODELS)
def test_the_exact_rational_oracle(name):
    model, x, target = wrapped(name)
    for rule in ("zero", "gamma"):
        graphs.held(laws.exact_oracle(model, x, target, RULES[rule]))


@pytest.mark.parametrize("name", MODELS)
def test_lrp_zero_is_gradient_times_input_where_it_applies(name):
    model, x, target = wrapped(name)
    result = laws.gradient_x_input(model, x, target)
    if graphs.more_builders()[name][2]:
        graphs.held(result)
    else:
        assert result.holds is None, str(result)  # a sigmoid gate (not homogeneous), an empty max
