"""Softmax weights that multiply a tensor elementwise are a gate: SKNet's and ResNeSt's
radix attention, ``(x * softmax(a, dim=1)).sum(1)``.

Before, such a product had two factors neither of which was a gate, and the default split
("signal") refused it (``AmbiguousProductError``), so timm's ``skresnet18`` and
``resnest14d`` were refused. The softmax now gates as a sigmoid does
(:attr:`nrm.layers.attention.Softmax.gate`): the attention branch takes nothing, the signal
all, and the explicit reference (which names its gates by function,
``nrm_verify.references.explicit.GATES``) agrees. A log-softmax is no gate (its values are
log-probabilities), and a softmax times a sigmoid has no signal: both are still refused, by
name.
"""

from __future__ import annotations

import nets
import pytest
import torch
from agreement import agree
from torch import nn

import nrm
from nrm_verify import laws

pytestmark = pytest.mark.usefixtures("single_thread")
split = nets.product_split


class RadixAttention(nn.Module):
    """ResNeSt's split attention on R = 2 radix branches (timm's ``SplitAttn``, reduced):
    conv to R·C channels, the branches summed, pooled, an MLP to R·C logits, a softmax over the
    radix (dimension 1 of (B, R, C)), and the branches weighted by it and summed."""

    def __init__(self, c: int = 3, radix: int = 2, transposed: bool = False):
        super().__init__()
        self.c, self.radix, self.transposed = c, radix, transposed
        self.conv = nn.Conv2d(2, c * radix, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c * radix, 1)
        self.head = nn.Linear(c, 2)

    def forward(self, x):
        B = x.shape[0]
        h = torch.relu(self.conv(x))
        branches = h.reshape(B, self.radix, self.c, *h.shape[2:])
        logits = self.fc2(torch.relu(self.fc1(branches.sum(1).mean((2, 3), keepdim=True))))
        if self.transposed:  # timm's RadixSoftmax: (B, C, R) → transpose → softmax over R
            attn = logits.reshape(B, self.c, self.radix).transpose(1, 2).softmax(1)
        else:
            attn = torch.softmax(logits.reshape(B, self.radix, self.c), dim=1)
        out = (branches * attn.reshape(B, self.radix, self.c, 1, 1)).sum(1)
        return self.head(out.mean((2, 3)))


class SoftmaxTimes(nn.Module):
    """relu(A x) · g(B x) with g a log-softmax or softmax · sigmoid: no single signal."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        if self.how == "log_softmax":
            return self.c(torch.relu(self.a(x)) * torch.log_softmax(self.b(x), -1))
        return self.c(torch.softmax(self.a(x), -1) * torch.sigmoid(self.b(x)))


def _case(model, shape, seed=0, batch=1):
    model = nets.seeded(model.double(), seed).eval()
    x = torch.randn((batch,) + shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 50))
    return model, x


@pytest.mark.parametrize("transposed", [False, True], ids=["softmax(dim=1)", "transpose-softmax"])
def test_radix_attention_explains_by_default_and_agrees_with_the_references(transposed):
    model, x = _case(RadixAttention(transposed=transposed), (2, 4, 4), seed=1)
    m = agree(model, x, 1)  # engine = exact oracle = explicit reference, layer by layer
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert laws.column_sums(m).holds is True


def test_the_attention_branch_takes_nothing_under_the_default_split():
    model, x = _case(RadixAttention(), (2, 4, 4), seed=2, batch=2)
    m = nrm.explain(model, x, target=0)
    for name in ("softmax", "fc2", "fc1"):
        assert float(m.marginal(name).abs().max()) == 0.0, name
    assert float(m.marginal("conv").abs().sum()) > 0


def test_the_uniform_split_gives_the_attention_half():
    model, x = _case(RadixAttention(), (2, 4, 4), seed=3)
    with split("equal"):
        m = agree(model, x, 0)
    assert float(m.marginal("softmax").abs().sum()) > 0
    torch.testing.assert_close(m.marginal("softmax").sum(), m.marginal("mul").sum() / 2, rtol=1e-12, atol=0)


def test_gradient_x_input_with_the_attention_detached():
    """L9's general form: LRP-0 with the gate held is the gradient × input of the model with
    the softmax's output detached."""
    model, x = _case(RadixAttention(), (2, 4, 4), seed=4, batch=2)
    result = laws.gradient_x_input(model, x, 1, detached=True)
    assert result.holds is True and result.deviation <= 1e-12, str(result)


@pytest.mark.parametrize("how", ["log_softmax", "softmax_sigmoid"])
def test_a_product_without_exactly_one_signal_is_still_refused(how):
    model, x = _case(SoftmaxTimes(how), (3,))
    with pytest.raises(nrm.AmbiguousProductError, match="split='equal'"):
        nrm.explain(model, x, target=0)
    with split("equal"):
        agree(model, x, 0)
