"""``F.cosine_similarity`` read as the dot product of its normalized inputs (nrm/layers/fused.py,
``CosineSimilarityDecomposition``), each normalizer held: against constant class embeddings (a
CLIP-style zero-shot head) a linear map of the normalized input; between two computed tensors
a product whose split the user chooses. Engine = exact oracle = explicit reference at every
layer, the worked values, refusals by name."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from agreement import agree
from nets import Fn, product_split
from torch import nn

import nrm

D = torch.float64


class ZeroShot(nn.Module):
    """An image embedding (B, 1, 6) against K = 3 constant class embeddings (1, 3, 6): the
    logits are τ · cos(image, class_k) (CLIP's zero-shot head)."""

    def __init__(self, scale: float = 10.0, how: str = "F"):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.embed = nn.Linear(4, 6).double()
        with torch.no_grad():
            for p in self.embed.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D))
        self.register_buffer("classes", torch.randn((1, 3, 6), generator=g, dtype=D))
        self.scale, self.how = scale, how
        self.cos = nn.CosineSimilarity(dim=-1)

    def forward(self, x):
        image = self.embed(x).unsqueeze(1)
        sim = self.cos(image, self.classes) if self.how == "module" else F.cosine_similarity(image, self.classes, -1)
        return self.scale * sim


class Siamese(nn.Module):
    """cos(A x, B x) of two computed embeddings, then a linear head."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(6)
        self.a, self.b, self.head = nn.Linear(4, 5).double(), nn.Linear(4, 5).double(), nn.Linear(1, 2).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D))

    def forward(self, x):
        return self.head(torch.cosine_similarity(self.a(x), self.b(x), dim=1).unsqueeze(1))


def _x(batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn((batch, 4), generator=torch.Generator().manual_seed(seed), dtype=D)


@pytest.mark.parametrize("how", ["F", "module"])
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.25), nrm.presets.EpsilonPlusFlat()],
                         ids=["zero", "epsilon", "preset"])
def test_a_zero_shot_head_equals_the_exact_oracle_and_the_explicit_reference(how, rules):
    model = ZeroShot(how=how).eval()
    m = agree(model, _x(), target=2, rules=rules)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(_x()).reshape(1, -1)[:, 2], rtol=1e-13, atol=1e-13)


def test_the_worked_values_against_a_constant():
    """cos(x, c) explained under LRP-0: x_j gets x_j c_j / (‖x‖ ‖c‖), summing to the cosine."""
    c = torch.tensor([[1.0, 2.0, 2.0]], dtype=D)

    class Head(nn.Module):
        def forward(self, x):
            return torch.cosine_similarity(x, c, dim=1).unsqueeze(1)

    x = torch.tensor([[3.0, 0.0, 4.0]], dtype=D)
    m = nrm.explain(Head().eval(), x, target=0)
    torch.testing.assert_close(m.f, torch.tensor([11.0 / 15.0], dtype=D))
    torch.testing.assert_close(m.relevance("input"), torch.tensor([[3.0 / 15.0, 0.0, 8.0 / 15.0]], dtype=D))
    assert math.isclose(float(m.absorbed("input")[0]), 0.0, abs_tol=1e-15)


def test_two_computed_embeddings_ask_for_a_split_and_equal_halves_are_read():
    model = Siamese().eval()
    with pytest.raises(nrm.AmbiguousProductError, match="split='equal'"):
        nrm.explain(model, _x(), target=0)
    with product_split("equal"):
        agree(model, _x(), target=0)


def test_a_batch_is_read_per_sample():
    model = ZeroShot().eval()
    x = _x(3)
    batched = nrm.explain(model, x, target=1).marginal("input")
    for i in range(3):
        one = nrm.explain(model, x[i:i + 1], target=1).marginal("input")
        torch.testing.assert_close(batched[i:i + 1], one, rtol=1e-12, atol=1e-14)


def test_a_constant_of_fewer_dimensions_broadcasts():
    """cos(h (B, 6), c (6,)): the constant broadcasts from the left, with no batch of its own."""
    c = torch.linspace(-1.0, 2.0, 6, dtype=D)
    model = nn.Sequential(nn.Linear(4, 6), Fn(lambda h: torch.cosine_similarity(h, c, dim=1).unsqueeze(1), "cos"),
                          nn.Linear(1, 2)).double().eval()
    agree(model, _x(), target=0)
    assert nrm.explain(model, _x(3), target=0).marginal("input").shape == (3, 4)


@pytest.mark.parametrize(("fn", "words"), [
    (lambda h: torch.cosine_similarity(h, torch.ones_like(h), dim=0).unsqueeze(0).expand_as(h), "batch dimension"),
    (lambda h: torch.cosine_similarity(h, torch.ones_like(h), dim=1, eps=0.0).unsqueeze(1), "eps=0.0"),
    (lambda h: torch.cosine_similarity(h, torch.ones_like(h), dim=1, eps=True).unsqueeze(1), "eps=True"),
], ids=["batch", "eps zero", "eps bool"])
def test_what_is_not_read_is_refused_by_name(fn, words):
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3).double()

        def forward(self, x):
            return fn(self.fc(x)).sum(1, keepdim=True)

    model = Bad().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(nrm.UnsupportedOperationError, match=f"cosine_similarity.*{words}"):
        nrm.explain(model, _x(2), target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
