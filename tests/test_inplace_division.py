"""``a /= b`` of two input-derived tensors (``nrm.layers.fused.InPlaceDivisionDecomposition``;
ConViT's ``attn /= attn.sum(dim=-1).unsqueeze(-1)``): read as the out-of-place division,
a · (1/b), written into a — ``Reciprocal`` then ``Multiply`` in place.

Exact first: the engine equals the exact DAG oracle at every layer under a split of the product;
under the default split a divisor that is another activation is ambiguous and the error says how
to choose, while a held normalizer (√(var + ε) of a norm written in place) takes nothing; the value
is torch's within 10³ ulp, else a capture mismatch; rounding modes stay refused by name."""

from __future__ import annotations

import pytest
import torch
from agreement import NoReference, compare_layers, product_split, seeded
from torch import nn

import nrm
import nrm.layers.fused as fused
from nrm.errors import AmbiguousProductError, CaptureMismatchError, ShapeError, UnsupportedOperationError
from nrm_verify.references.exact_dag import ExactGraph

D = torch.float64


def _x(*shape, seed=0):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class Divides(nn.Module):
    """relu(A x) + ½ divided in place by relu(B x) + 1 (``/=``, ``div_``, ``true_divide_``), or by
    its own row sum (ConViT's renormalization), then a linear head."""

    def __init__(self, how: str):
        super().__init__()
        self.a, self.b, self.head, self.how = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2), how

    def forward(self, x):
        h = torch.relu(self.a(x)) + 0.5
        g = torch.relu(self.b(x)) + 1.0
        if self.how == "/=":
            h /= g
        elif self.how == "div_":
            h.div_(g)
        elif self.how == "true_divide_":
            h.true_divide_(g)
        elif self.how == "row sum":
            h /= h.sum(dim=-1).unsqueeze(-1)
        return self.head(h)


HOWS = ["/=", "div_", "true_divide_", "row sum"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("split", ["equal", "proportional"])
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.05)], ids=["lrp0", "eps"])
def test_an_inplace_division_agrees_with_the_exact_oracle(how, split, rules):
    model, x = seeded(Divides(how)), _x(1, 3)
    with product_split(split=split):
        m = nrm.explain(model, x, target=1, rules=rules, check="full")
        exact, bottom = ExactGraph(model, x, rules).marginals(1)
    torch.testing.assert_close(m.f, model(x)[:, 1].detach(), rtol=1e-13, atol=1e-13)
    compare_layers(m, exact, bottom, NoReference())


@pytest.mark.parametrize("how", HOWS)
def test_it_is_the_out_of_place_division_written_into_a(how):
    """The same kinds as ``h = h / g``: a reciprocal, then the product (in place)."""
    model, x = seeded(Divides(how)), _x(2, 3)
    with product_split(split="equal"):
        calls = nrm.capture(model, x).calls
    names = [c.kind.name for c in calls if c.kind is not None]
    assert all(c.kind is not None for c in calls), [c.refusal for c in calls if c.kind is None]
    assert names[names.index("Reciprocal") + 1] == "Multiply", names
    assert calls[names.index("Reciprocal") + 1].func is torch.Tensor.mul_


def test_under_the_default_split_the_error_says_how_to_choose():
    with pytest.raises(AmbiguousProductError, match="split='equal'"):
        nrm.explain(seeded(Divides("/=")), _x(1, 3), target=1)


class NormInPlace(nn.Module):
    """A norm written in place: x − mean, then ``/=`` √(var + ε); the divisor is held."""

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        c = h - h.mean(-1, keepdim=True)
        c /= torch.sqrt((c * c).mean(-1, keepdim=True) + 1e-5)
        return self.head(c)


def test_a_held_divisor_takes_nothing_under_the_default_split():
    """The normalizer is held (the identity on 1/σ): read under the default split, L1 holds,
    and the marginal equals the out-of-place form's."""
    class OutOfPlace(NormInPlace):
        def forward(self, x):
            h = self.a(x)
            c = h - h.mean(-1, keepdim=True)
            return self.head(c / torch.sqrt((c * c).mean(-1, keepdim=True) + 1e-5))

    x = _x(2, 3)
    mine, theirs = seeded(NormInPlace()), seeded(OutOfPlace())
    m, w = nrm.explain(mine, x, target=0, check="full"), nrm.explain(theirs, x, target=0)
    torch.testing.assert_close(m.marginal("input"), w.marginal("input"), rtol=1e-12, atol=1e-13)
    assert float((m.marginal("input").sum(1) + m.absorbed("input") - 1).abs().max()) <= 1e-12


def test_a_value_not_within_ulp_of_torchs_is_a_capture_mismatch(monkeypatch):
    monkeypatch.setattr(fused, "within_ulp", lambda ours, theirs: False)
    with product_split(split="equal"), pytest.raises(CaptureMismatchError, match="a /= b as a \\*= 1/b"):
        nrm.explain(seeded(Divides("/=")), _x(1, 3), target=1)


class Rounded(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.a, self.b, self.how = nn.Linear(3, 4), nn.Linear(3, 4), how

    def forward(self, x):
        h, g = torch.relu(self.a(x)) + 0.5, torch.relu(self.b(x)) + 1.0
        if self.how == "floor":
            return h.div_(g, rounding_mode="floor")
        s = h.sum(-1, keepdim=True)  # (B, 1)
        s /= g  # (B, 1) /= (B, 4): would enlarge s (torch refuses it in place too)
        return s


def test_a_rounding_mode_stays_refused_by_name():
    with pytest.raises(UnsupportedOperationError, match="rounding_mode"):
        nrm.explain(seeded(Rounded("floor")), _x(1, 3), target=0)


def test_a_divisor_that_would_enlarge_a_is_torchs_own_error_named_with_its_place():
    with pytest.raises(ShapeError, match="doesn't match the broadcast shape"):
        nrm.explain(seeded(Rounded("enlarges")), _x(1, 3), target=0)
