"""``nn.LSTM`` and ``nn.GRU`` read through their definitions (:mod:`nrm.layers.recurrent`):
step by step, the gates sigmoid factors of products that take nothing under the default split
(LSTM-LRP's "signal takes all"). Checked as every kind is: the decomposition reproduces the
module; engine = exact oracle = explicit reference at every layer under several rules; L1; L9
in its general form (gradient × input with the gates detached); the gates' relevance is 0;
batch invariance; what is not read is refused by name and the model left untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from agreement import agree
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError
from nrm_verify.laws.limits import gradient_x_input

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = {"LRP-0": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.1), "gamma": nrm.rules.Gamma(0.25),
         "EpsilonPlusFlat": nrm.presets.EpsilonPlusFlat()}
CONFIGS = {"one layer": {}, "two layers, bidirectional": dict(num_layers=2, bidirectional=True),
           "no bias": dict(bias=False)}


class Tagger(nn.Module):
    """Linear embedding → relu → LSTM / GRU (batch first) → the output at the last step
    (``state=True``: the final state h_n[-1]) → class logits."""

    def __init__(self, cell: type, state: bool = False, batch_first: bool = True, **options):
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.rnn = cell(4, 5, batch_first=batch_first, **options)
        self.head = nn.Linear(5 * (2 if options.get("bidirectional") else 1), 3)
        self.state = state

    def forward(self, x):
        out, final = self.rnn(torch.relu(self.embed(x)))
        if self.state:
            return self.head((final[0] if isinstance(final, tuple) else final)[-1])
        return self.head(out[:, -1])


def _tagger(cell, seed: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    return Tagger(cell, **options).to(D).eval()


def _x(batch: int = 1, steps: int = 4) -> torch.Tensor:
    return torch.randn(batch, steps, 3, dtype=D, generator=torch.Generator().manual_seed(2))


# every rule on one layer without and with bias; two bidirectional layers (slow in the exact oracle's
# fractions: ~20 s a case for the GRU) under LRP-0 and the preset, on 3 steps
AGREEMENT = [(c, r) for c in ("one layer", "no bias") for r in RULES] + [
    ("two layers, bidirectional", "LRP-0"), ("two layers, bidirectional", "EpsilonPlusFlat")]


@pytest.mark.parametrize("config, rules", AGREEMENT)
@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU], ids=lambda c: c.__name__)
def test_a_recurrent_layer_agrees_with_the_exact_oracle_and_the_explicit_reference(cell, config, rules):
    model = _tagger(cell, **CONFIGS[config])
    x = _x(steps=3 if CONFIGS[config] else 4)
    m = agree(model, x, target=1, rules=RULES[rules])
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 1], rtol=1e-12, atol=1e-12)
    for layer in m.canonical_names():  # L1 at every layer, with the walks bypassing it
        total = m.marginal(layer).sum() + m.absorbed(layer).sum() + m.bypassing(layer).sum()
        assert abs(float(total) - 1) <= 1e-12, (layer, float(total))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU], ids=lambda c: c.__name__)
def test_lrp0_is_gradient_x_input_with_the_gates_detached(cell, config):
    model = _tagger(cell, **CONFIGS[config])
    general = gradient_x_input(model, _x(batch=3), 2, detached=True, tol=1e-10)
    assert general.holds is True, str(general)


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU], ids=lambda c: c.__name__)
def test_the_gates_take_nothing_and_each_sequence_has_its_own_measure(cell):
    model, x = _tagger(cell, num_layers=2), _x(batch=3, steps=5)
    m = nrm.explain(model, x, target=0, check="full")
    gates = [n for n in m.layers if n.split(".")[-1].startswith("sigmoid")]  # σ(i), σ(f), σ(o); σ(r), σ(±z)
    assert gates and all(float(m.marginal(n).abs().max()) == 0.0 for n in gates)
    for b in range(3):
        one = nrm.explain(model, x[b:b + 1], target=0)
        torch.testing.assert_close(m.marginal("input")[b:b + 1], one.marginal("input"), rtol=1e-11, atol=1e-13)


def test_the_initial_state_given_as_constants_is_read():
    """An initial state that is not computed from the input is a constant of the steps."""
    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(3, 4, batch_first=True), nn.Linear(4, 2)
            self.h0 = nn.Parameter(torch.randn(1, 1, 4))
            self.c0 = nn.Parameter(torch.randn(1, 1, 4))

        def forward(self, x):
            state = (self.h0.expand(1, x.shape[0], 4).contiguous(), self.c0.expand(1, x.shape[0], 4).contiguous())
            return self.head(self.rnn(x, state)[0][:, -1])

    torch.manual_seed(1)
    model = WithState().to(D).eval()
    m = agree(model, _x(), target=1)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(_x())[:, 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make, says", [
    (lambda: _tagger(nn.LSTM, state=True), "final state (h_n, c_n)"),
    (lambda: _tagger(nn.GRU, state=True), "final state (h_n, c_n)"),
    (lambda: _tagger(nn.LSTM, batch_first=False), "batch_first=False"),
    (lambda: _tagger(nn.GRU, batch_first=False), "batch_first=False"),
    (lambda: _tagger(nn.LSTM, proj_size=2), "proj_size"),
], ids=["LSTM h_n", "GRU h_n", "LSTM seq-first", "GRU seq-first", "proj_size"])
def test_what_is_not_read_is_refused_by_name_and_the_model_is_untouched(make, says):
    """On a batch of two (the final state and the sequence-first layout are read for one sample:
    tests/test_one_sample.py)."""
    model = make()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError, match=says.replace("(", r"\(").replace(")", r"\)")):
        nrm.explain(model, _x(batch=2), target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Looped(nn.Module):
    """A cell (nn.LSTMCell, nn.GRUCell, nn.RNNCell) run over the steps by the model's own loop,
    from no state (zeros), then a head on the last hidden state."""

    def __init__(self, cell: type, **options):
        super().__init__()
        self.cell, self.head = cell(3, 4, **options), nn.Linear(4, 2)

    def forward(self, x):
        state = None
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        return self.head(state[0] if isinstance(state, tuple) else state)


CELLS = {"LSTMCell": (nn.LSTMCell, {}), "GRUCell": (nn.GRUCell, {}), "GRUCell, no bias": (nn.GRUCell, dict(bias=False)),
         "RNNCell": (nn.RNNCell, {}), "RNNCell, relu": (nn.RNNCell, dict(nonlinearity="relu"))}


@pytest.mark.parametrize("rules", ["LRP-0", "epsilon"])
@pytest.mark.parametrize("name", list(CELLS))
def test_a_cell_in_the_models_loop_agrees_with_the_oracle_and_the_reference(name, rules):
    cell, options = CELLS[name]
    torch.manual_seed(0)
    model = Looped(cell, **options).to(D).eval()
    m = agree(model, _x(steps=3), target=0, rules=RULES[rules])
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(_x(steps=3))[:, 0], rtol=1e-12, atol=1e-12)
    general = gradient_x_input(model, _x(batch=2, steps=3), 1, detached=True, tol=1e-10)
    assert general.holds is True, str(general)


@pytest.mark.parametrize("options", [{}, dict(nonlinearity="relu", num_layers=2, bidirectional=True)],
                         ids=["tanh", "relu, two layers, bidirectional"])
def test_nn_rnn_agrees_with_the_oracle_and_the_reference_and_lrp0_is_gradient_x_input(options):
    model = _tagger(nn.RNN, **options)
    m = agree(model, _x(steps=3), target=1)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(_x(steps=3))[:, 1], rtol=1e-12, atol=1e-12)
    relu = options.get("nonlinearity") == "relu"  # piecewise linear: L9 against the model's own gradient
    l9 = gradient_x_input(model, _x(batch=2, steps=3), 1, detached=not relu, tol=1e-10)
    assert l9.holds is True, str(l9)


def test_a_cell_on_an_unbatched_input_is_refused_by_name():
    """A cell's refusal names an unbatched input (inside a model whose input is batched, such an
    input would be a selection along the batch dimension, refused before it)."""
    from nrm.layers.recurrent import CellDecomposition, GRUDecomposition

    reader = CellDecomposition(GRUDecomposition())
    assert "unbatched" in reader.refusal(nn.GRUCell(3, 4), (torch.randn(3),), {})
    assert reader.refusal(nn.GRUCell(3, 4), (torch.randn(2, 3),), {}) is None
    assert "arguments" in reader.refusal(nn.GRUCell(3, 4), (), {"other": 1})
