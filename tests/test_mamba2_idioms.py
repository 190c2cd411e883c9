"""What Mamba-2's sequential path (transformers' ``Mamba2Mixer.torch_forward``) writes, read:

* ``torch.clamp(dt, 0.0, float("inf"))`` — an infinite bound on the side it does not clamp is
  absent (:class:`nrm.layers.activations.Clamp`); ``clamp(min=+inf)`` stays refused;
* ``B.repeat_interleave(r, dim=2, output_size=n)`` — ``output_size=`` equal to the output's size
  is only torch's hint (:class:`nrm.layers.shape.Repeat`);
* ``exp(segment_sum(A))`` — a segment sum masked with −∞ above the diagonal, then ``exp``: e^(−∞)
  = e^(finfo.min) = 0, so ``Exp`` reads the masked value as the model does (``reads_masks``).

Exact first: each against the exact DAG oracle at every layer, f the model's."""

from __future__ import annotations

import copy

import pytest
import torch
from agreement import NoReference, compare_layers, product_split, seeded
from torch import nn

import nrm
from nrm.errors import UnsupportedOperationError
from nrm_verify.references.exact_dag import ExactGraph

D = torch.float64
RULES = [None, nrm.rules.Epsilon(0.05)]


def _x(*shape, seed=0):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


def _oracle(model, x, rules):
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    torch.testing.assert_close(m.f, model(x)[:, 1].detach(), rtol=1e-13, atol=1e-13)
    exact, bottom = ExactGraph(model, x, rules).marginals(1)
    compare_layers(m, exact, bottom, NoReference())
    return m


class Clamps(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.lin, self.head, self.how = nn.Linear(3, 4), nn.Linear(4, 2), how

    def forward(self, x):
        h = self.lin(x)
        if self.how == "max +inf":
            h = torch.clamp(h, 0.0, float("inf"))
        elif self.how == "min -inf":
            h = torch.clamp(h, float("-inf"), 0.5)
        elif self.how == "both infinite":
            h = h.clamp(min=float("-inf"), max=float("inf"))
        elif self.how == "min +inf":
            h = torch.clamp(h, min=float("inf"))
        elif self.how == "nan":
            h = torch.clamp(h, min=float("nan"))
        return self.head(h)


@pytest.mark.parametrize("how, twin", [("max +inf", lambda h: h.clamp_min(0.0)),
                                       ("min -inf", lambda h: h.clamp_max(0.5))])
@pytest.mark.parametrize("rules", RULES, ids=["lrp0", "eps"])
def test_an_infinite_bound_that_clamps_nothing_is_absent(how, twin, rules):
    """Read as its finite bound alone: the measure equals the twin's that writes clamp_min / clamp_max."""
    class Twin(Clamps):
        def forward(self, x):
            return self.head(twin(self.lin(x)))

    model, x = seeded(Clamps(how)), _x(1, 3)
    m = _oracle(model, x, rules)
    other = Twin(how).to(D).eval()
    other.load_state_dict(model.state_dict())
    w = nrm.explain(other, x, target=1, rules=rules)
    torch.testing.assert_close(m.marginal("input"), w.marginal("input"), rtol=0, atol=0)
    (clamp,) = [c for c in nrm.capture(model, x).calls if c.kind is not None and c.kind.name == "Clamp"]
    assert clamp.kind.bounds(clamp) in ((0.0, None), (None, 0.5))


@pytest.mark.parametrize("how, words", [("both infinite", "clamps at neither bound"), ("min +inf", "clamps at inf"),
                                        ("nan", "clamps at nan")])
def test_a_bound_that_clamps_everything_or_nothing_or_is_nan_stays_refused(how, words):
    model = seeded(Clamps(how))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError, match=words):
        nrm.explain(model, _x(1, 3), target=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Groups(nn.Module):
    """Mamba-2's B (B, L, groups, n) repeated per head along dimension 2, ``output_size=`` given."""

    def __init__(self, size=None):
        super().__init__()
        self.lin, self.head, self.size = nn.Linear(3, 4), nn.Linear(2 * 6 * 2, 2), size

    def forward(self, x):  # (B, 2, 3)
        b = torch.relu(self.lin(x)).reshape(x.shape[0], 2, 2, 2)  # (B, L, groups = 2, n = 2)
        b = b.repeat_interleave(3, dim=2, output_size=self.size)
        return self.head(b.flatten(1))


@pytest.mark.parametrize("rules", RULES, ids=["lrp0", "eps"])
def test_repeat_interleave_with_its_output_size_given(rules):
    _oracle(seeded(Groups(size=6)), _x(1, 2, 3), rules)


def test_repeat_interleave_with_another_output_size_is_torchs_own_error():
    with pytest.raises(nrm.ShapeError):
        nrm.explain(seeded(Groups(size=5)), _x(1, 2, 3), target=1)


class SegmentDecay(nn.Module):
    """Mamba-2's intra-chunk decay: A (B, H, T) cumulative sums over segments, masked with −∞ above
    the diagonal, exponentiated (0 there), then a decay-weighted sum of the values."""

    def __init__(self):
        super().__init__()
        self.a, self.v, self.head = nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(2 * 4 * 4, 2)

    def forward(self, x):  # (B, T = 4, 3)
        A = -nn.functional.softplus(self.a(x)).transpose(1, 2)  # (B, H = 2, T), a log-decay ≤ 0
        T = A.shape[-1]
        A = A[..., None].expand(*A.shape, T)
        A = A.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1), 0)
        seg = torch.cumsum(A, dim=-2).masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), -torch.inf)
        decay = torch.exp(seg)  # (B, H, T, T): 0 above the diagonal
        return self.head((decay * torch.relu(self.v(x)).transpose(1, 2)[..., None, :]).flatten(1))


@pytest.mark.parametrize("rules", RULES, ids=["lrp0", "eps"])
def test_exp_of_a_masked_segment_sum_agrees_with_the_exact_oracle(rules):
    with product_split(split="equal"):
        model, x = seeded(SegmentDecay(), scale=0.5), _x(1, 4, 3)
        m = _oracle(model, x, rules)
        exp = [c for c in nrm.capture(model, x).calls if c.kind is not None and c.kind.name == "Exp"]
        assert len(exp) == 1 and bool((exp[0].outputs[0] == 0).any())  # the masked triangle: 0, as torch's
        assert torch.isfinite(m.marginal("input")).all()


def test_a_masked_value_read_by_another_function_stays_refused():
    class Tanh(SegmentDecay):
        def forward(self, x):
            seg = self.a(x).masked_fill(torch.tensor([True, False]), -torch.inf)
            return self.head(torch.tanh(seg).repeat(1, 1, 16)[:, 0, :32])

    with pytest.raises(UnsupportedOperationError, match="reads a masked value"):
        nrm.explain(seeded(Tanh()), _x(1, 4, 3), target=1)
