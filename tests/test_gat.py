"""Graph attention (PyG's GATConv and GATv2Conv) read through its definition (nrm.layers.gat):
the edge softmax as a kernel (nrm.layers.message.SegmentSoftmax), the message α_ij · h_j as a
product whose attention factor is a gate — held constant by default (Multiply's
split="signal", CP-LRP), AttnLRP's uniform split as the option (split="equal").

On the generated graphs of tests/graphs.py (an isolated node, a self-loop, a multi-edge, edge
weights and edge features as GAT's edge_attr, two components), float64: engine = exact oracle
= explicit reference at every layer, L1 exactly in the oracle; L2–L7 with node events; L18;
L9 in its general form and, for the held default, against a hand-written gradient × input of
the model with α detached; the held kernel α_ij W_gf x_jf / (z_ig + ε s) on one layer;
L15 (node walks and walk sets against nested masking on the traced graph, both modes);
check-layer on SegmentSoftmax; malformed graphs and refused calls.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

pytest.importorskip("torch_geometric", reason="the graph tests need torch_geometric (pip install -e '.[graph]')")

import graphs  # noqa: E402  (tests/graphs.py imports torch_geometric)
from agreement import compare_layers  # noqa: E402

import nrm  # noqa: E402
from nrm import At  # noqa: E402
from nrm.gnn import GraphError, OnGraph  # noqa: E402
from nrm.layers.products import Multiply  # noqa: E402
from nrm_verify import laws  # noqa: E402
from nrm_verify.references.exact_dag import ExactGraph  # noqa: E402
from nrm_verify.references.explicit import reference_lrp  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

MODELS = sorted(graphs.gat_builders())
MODES = ("held", "attnlrp")
RULES = {"zero": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "gamma": nrm.rules.Gamma(0.25)}


@contextlib.contextmanager
def mode(how: str):
    """Read GAT's message product held (the default kind) or with AttnLRP's split θ = ½."""
    if how == "attnlrp":
        nrm.layers.register(Multiply(split="equal"))
    try:
        yield
    finally:
        nrm.layers.register(Multiply())


def wrapped(name, seed=0):
    """(OnGraph model of x (1, N, F), x (1, N, F), target (flat output index), graph)."""
    model, g, kwargs = graphs.case(name, seed)
    m = OnGraph(model, g.edge_index, **kwargs)
    rows, classes = m(g.x.unsqueeze(0)).shape[1:]
    return m, g.x.unsqueeze(0), min(1, rows - 1) * classes + 1, g


@pytest.mark.parametrize("name", MODELS)
def test_every_operation_is_read_and_the_edge_softmax_is_a_kernel(name):
    model, x, _, _ = wrapped(name)
    cap = nrm.capture(model, x)
    assert all(c.kind is not None for c in cap.calls), [c.describe() for c in cap.calls if c.kind is None]
    kinds = [c.kind.name for c in cap.calls]
    assert kinds.count("SegmentSoftmax") == 2 and kinds.count("Multiply") == 2, kinds
    assert {"IndexSelect", "Scatter", "LeakyReLU"} <= set(kinds)


AGREEMENT = [(name, rule) for name in MODELS for rule in ("zero", "gamma")] + [("gat", "epsilon"),
                                                                              ("gatv2", "epsilon")]


@pytest.mark.parametrize("how", MODES)
@pytest.mark.parametrize("name, rule", AGREEMENT)
def test_engine_equals_exact_oracle_and_explicit_reference_at_every_layer(name, rule, how):
    """L1 exactly in the oracle (fractions); the engine's marginal and ⊥ at every layer equal
    the oracle's and the explicit reference's to 1e-12 (float64). LRP-0 and γ on every model,
    ε on GATConv and GATv2Conv."""
    model, x, target, _ = wrapped(name)
    with mode(how):
        m = nrm.explain(model, x, target, rules=RULES[rule], check="full")
        exact, bottom = ExactGraph(model, x, RULES[rule]).marginals(target)
        compared = compare_layers(m, exact, bottom, reference_lrp(model, x, target, RULES[rule]))
        graphs.held(laws.normalization(m))
    assert compared >= 10
    assert torch.allclose(m.f, model(x).reshape(1, -1)[:, target], rtol=0, atol=1e-12)


@pytest.mark.parametrize("how", MODES)
@pytest.mark.parametrize("name", MODELS)
def test_laws_l2_to_l7_and_l18_with_node_events(name, how):
    model, x, target, _ = wrapped(name)
    rule = RULES["gamma"]
    with mode(how):
        m = nrm.explain(model, x, target, rules=rule)
        names = m.canonical_names()
        node_layers = [n for n in names if len(m.layer_shape(n)) == 2 and m.layer_shape(n)[0] == x.shape[1]]
        lo, hi = node_layers[0], node_layers[-1]
        a, b = At(lo, nodes=[0, 2]), At(hi, nodes=[1, x.shape[1] - 1])  # the last node is isolated
        graphs.held(laws.column_sums(m))
        for result in (laws.additivity(m, a, b), laws.marginalization(m, lo, b), laws.joint_marginals(m, lo, hi),
                       laws.multiplicative(m, a, b), laws.bayes(m, a, b), laws.total_measure(m, b, lo)):
            assert result.holds is not False, str(result)
        graphs.held(laws.modularity(m, model, x, target, rule))


@pytest.mark.parametrize("how", MODES)
@pytest.mark.parametrize("name", MODELS)
def test_lrp_zero_is_gradient_times_input_with_the_gates_detached(name, how):
    """L9's general form: the gradient of the model with each product's other factors detached
    (held: α detached; AttnLRP: each factor's gradient at half weight); the plain form is not
    applicable (the model multiplies activations) and says so."""
    model, x, target, _ = wrapped(name)
    with mode(how):
        graphs.held(laws.gradient_x_input(model, x, target, detached=True))
        assert laws.gradient_x_input(model, x, target).holds is None


def _gat_alpha_detached(conv, h, edge_index, edge_attr=None):
    """One GATConv with its attention α computed by PyG (return_attention_weights) and held
    constant: z_i = Σ_{e: j → i} α_e (W h_j) (heads concatenated or averaged) + b, written here."""
    _, (ei, alpha) = conv(h, edge_index, edge_attr, return_attention_weights=True)
    H, C = conv.heads, conv.out_channels
    w = conv.lin(h).view(-1, H, C)
    msg = w[ei[0]] * alpha.detach().unsqueeze(-1)
    out = torch.zeros(h.shape[0], H, C, dtype=h.dtype).index_add(0, ei[1], msg)
    out = out.reshape(h.shape[0], H * C) if conv.concat else out.mean(1)
    if conv.res is not None:
        out = out + conv.res(h)
    return out + conv.bias if conv.bias is not None else out


@pytest.mark.parametrize("name", ["gat", "gat_no_loops", "gat_edge_weight"])
def test_held_lrp_zero_is_a_hand_written_gradient_with_alpha_detached(name):
    """Held (the default) under LRP-0: the input marginal times f is x · ∂f/∂x of the network
    with every attention weight α detached, written here from PyG's own α (not nrm's replay)."""
    model, g, kwargs = graphs.case(name)
    ew = kwargs.get("edge_weight")
    x = g.x.clone().requires_grad_(True)
    h = _gat_alpha_detached(model.conv1, x, g.edge_index, ew).relu()
    out = _gat_alpha_detached(model.conv2, h, g.edge_index, ew)
    node, c = 1, 1
    torch.testing.assert_close(out, model(g.x, g.edge_index, **kwargs), rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(out[node, c], x)
    m = nrm.gnn.explain(model, g.x, g.edge_index, target=c, node=node, **kwargs)
    torch.testing.assert_close(m.marginal("input")[0] * m.f[0], (x * grad).detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_held_gat_layer_is_the_kernel_alpha_w_x_over_z(eps):
    """One GATConv (one head, no bias), held: q(x_jf | z_ig) = Σ_{e: j → i} α_e W_gf x_jf /
    (z_ig + ε s(z_ig)), with ε on the aggregation (rule key Aggregate) and LRP-0 elsewhere — the
    linear map in x with weights α, α from PyG."""
    from torch_geometric.nn import GATConv

    from nrm.markers import Aggregate

    g = graphs.graph(0)
    conv = graphs.seeded(GATConv(3, 4, bias=False), 5)
    _, (ei, alpha) = conv(g.x, g.edge_index, return_attention_weights=True)
    W = conv.lin.weight.detach()
    node, feature = 1, 2
    coef = torch.zeros(g.x.shape[0], dtype=g.x.dtype).index_add(0, ei[0], alpha[:, 0] * (ei[1] == node))
    contrib = coef.unsqueeze(1) * g.x * W[feature].unsqueeze(0)  # Σ_e α_e x_jf W_gf, (N, F)
    z = contrib.sum()
    expected = contrib / (z + eps * (1.0 if z >= 0 else -1.0))
    rules = nrm.RuleMap(nrm.rules.Zero(), by_type={Aggregate: nrm.rules.Epsilon(eps) if eps else nrm.rules.Zero()})
    m = nrm.gnn.explain(conv, g.x, g.edge_index, target=feature, node=node, rules=rules)
    torch.testing.assert_close(m.marginal("input")[0], expected, rtol=0, atol=1e-12)


def test_held_gives_the_attention_nothing_and_attnlrp_half_of_each_message():
    """Held: the edge softmax and the scores carry no relevance. AttnLRP's split: each message
    α_ij h_j gives ½ of its relevance to α and ½ to h_j (LRP-0, no absorber at the product)."""
    model, x, target, _ = wrapped("gat")
    held = nrm.explain(model, x, target)
    assert float(held(At("segment_softmax_1"))[0]) == 0.0 and float(held(At("segment_softmax"))[0]) == 0.0
    with mode("attnlrp"):
        split = nrm.explain(model, x, target)
    message, gathered, attention = (float(split(At(n))[0]) for n in ("mul_5", "index_select_5", "segment_softmax_1"))
    assert abs(gathered - message / 2) <= 1e-12 and abs(attention - message / 2) <= 1e-12
    assert float((split.marginal("input") - held.marginal("input")).abs().max()) > 1e-3


@pytest.mark.parametrize("how", MODES)
def test_node_walks_along_the_edges_are_every_walk(how):
    """GNN-LRP's walks on GAT: graph_walks (along the edges and self-loops) gives each walk the
    entry of walk_relevance's full N × N tensor, and every walk it leaves out carries 0 — also
    with AttnLRP's split, whose relevance through α reaches x_i and x_j along the same edges.
    (L15 against nested masking: test_node_walks_are_nested_masking_walk_relevances.)"""
    model, x, target, g = wrapped("gat")
    with mode(how):
        m = nrm.explain(model, x, target)
    layers, end = ["input", "add_1", "add_3"], 1
    R = nrm.gnn.walk_relevance(m, layers, end)
    walks, rel = nrm.gnn.graph_walks(m, layers, g.edge_index, end)
    listed = torch.zeros_like(R)
    for (i0, i1, _), r in zip(walks.tolist(), rel):
        listed[i0, i1] = r
    torch.testing.assert_close(listed, R, rtol=1e-12, atol=1e-14)
    assert float(R.abs().sum()) > 0


# the node states of the GAT models: the input, conv1's output (before the ReLU), conv2's output
GAT_LAYERS = {
    "gat": ["input", "add_1", "add_3"],
    "gat_no_loops": ["input", "add_1", "add_3"],
    "gat_edge_weight": ["input", "add_2", "add_6"],
    "gat_edge_attr": ["input", "add_2", "add_5"],
    "gatv2": ["input", "add_2", "add_5"],
}
WALK_CASES = [(name, "gamma") for name in sorted(GAT_LAYERS)] + [("gat", "zero"), ("gatv2", "zero")]


def _walk_event(layers, walk):
    ev = nrm.OMEGA
    for layer, node in zip(layers, walk):
        ev = ev & At(layer, nodes=[node])
    return ev


@pytest.mark.parametrize("how", MODES)
@pytest.mark.parametrize("name, rule", WALK_CASES)
def test_node_walks_are_nested_masking_walk_relevances(name, rule, how):
    """L15 on GAT, both modes: GAT's scores branch off ``lin`` (α_ij and h_j are two ways down to
    x), so the reference is nested masking on the traced graph
    (nrm_verify.references.nested_masking.nested_masking), through the segment softmax and the
    message product with the same split as nrm. Checked: the two walks of largest |R| ending
    at node 1, the self-walk (1, 1, 1), a walk from the isolated node (it carries nothing),
    and walk sets through chosen nodes at two layers (input and conv2, conv1 and conv2)."""
    from nrm_verify.references import gnnlrp

    rules = RULES[rule]
    model, x, target, _ = wrapped(name)
    layers, end, n = GAT_LAYERS[name], 1, x.shape[1]
    with mode(how):
        m = nrm.explain(model, x, target, rules=rules)
        R = nrm.gnn.walk_relevance(m, layers, end)
        top = [tuple(int(v) for v in torch.unravel_index(torch.tensor(i), R.shape))
               for i in torch.argsort(R.reshape(-1).abs(), descending=True)[:2].tolist()]
        assert float(R.abs().max()) > 1e-3 * float(m.f.abs())
        assert float(R[n - 1].abs().max()) == 0.0  # the isolated node starts no walk to another node
        tol = 1e-10 * max(1.0, float(m.f.abs()))
        for i0, i1 in top + [(1, 1), (n - 1, 0)]:
            event = _walk_event(layers, (i0, i1, end))
            graphs.held(laws.walk_relevance(model, x, target, event, rules))
            expected = gnnlrp.walk_relevance(model, x, target, event, rules)
            assert abs(float(R[i0, i1]) - float(expected)) <= tol, (i0, i1)
        sets = [At(layers[0], nodes=[0, 1, 2]) & At(layers[2], nodes=[1, 3]),
                At(layers[1], nodes=[0, 1]) & At(layers[2], nodes=[1])]
        measured = []
        for event in sets:
            graphs.held(laws.walk_relevance(model, x, target, event, rules))
            measured.append(float(gnnlrp.walk_relevance(model, x, target, event, rules)))
    assert max(abs(v) for v in measured) > 1e-3 * float(m.f.abs()), measured  # the sets carry relevance


def test_walk_relevance_on_gat_is_the_same_inside_an_exception_handler():
    """A capture inside a caller's exception handler: the module hooks tell a forward that raised
    by an exception other than the one handled around the call (they once read any exception
    being handled as the module's own, so GATConv's batch-first decomposition was skipped and
    PyG raised 'Static graphs not supported')."""
    from nrm_verify.references import gnnlrp

    model, x, target, _ = wrapped("gat")
    event = _walk_event(GAT_LAYERS["gat"], (0, 1, 1))
    outside = float(gnnlrp.walk_relevance(model, x, target, event))
    try:
        raise KeyError("an exception being handled")
    except KeyError:
        inside = float(gnnlrp.walk_relevance(model, x, target, event))
    assert inside == outside != 0.0


def test_a_batch_of_feature_sets_is_explained_sample_by_sample():
    """GATConv reads one graph; nrm.gnn's batch of B feature sets runs its own forward per sample
    (checked against the decomposition) and each sample's measure is that sample's alone."""
    model, x, target, _ = wrapped("gat_edge_attr")
    xs = torch.cat([x, x.flip(1) * 0.5 + 0.1], 0)
    both = nrm.explain(model, xs, target)
    for b in range(2):
        one = nrm.explain(model, xs[b:b + 1], target)
        torch.testing.assert_close(both.marginal("input")[b], one.marginal("input")[0], rtol=0, atol=1e-13)


def test_check_layer_passes_segment_softmax():
    from nrm_verify.validate import check_layer

    report = check_layer(nrm.layers.message.SegmentSoftmax(), max_examples=3,
                         only=["K2", "K3", "K5", "L1", "L9", "L18", "INV"])
    assert report.ok, str(report)


@pytest.mark.parametrize("how, match", [
    ("out of range", "outside 0"), ("int32", "int64"), ("nan features", "NaN"), ("weight length", "one weight"),
])
def test_a_malformed_graph_is_a_named_error(how, match):
    model, g, kwargs = graphs.case("gat_edge_weight")
    x, ei, w = g.x.clone(), g.edge_index.clone(), g.edge_weight.clone()
    if how == "out of range":
        ei[1, 0] = x.shape[0]
    elif how == "int32":
        ei = ei.int()
    elif how == "nan features":
        x[2, 1] = float("nan")
    else:
        w = w[:-1]
    with pytest.raises(GraphError, match=match):
        nrm.gnn.explain(model, x, ei, w, target=0, node=1)


def test_refused_calls_name_what_to_do():
    from torch_geometric.nn import GATConv

    g = graphs.graph(0)
    conv = graphs.seeded(GATConv(3, 2, dropout=0.5), 1).train()  # attention dropout: random
    with pytest.raises(nrm.errors.TrainingModeError, match="model.eval"):
        nrm.gnn.explain(conv, g.x, g.edge_index, target=0, node=1)

    class Weights(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = graphs.seeded(GATConv(3, 2), 1)

        def forward(self, x, edge_index):
            return self.conv(x, edge_index, return_attention_weights=True)[0]

    with pytest.raises(nrm.UnsupportedOperationError, match="return_attention_weights"):
        nrm.gnn.explain(Weights().eval(), g.x, g.edge_index, target=0, node=1)
