"""``torch.tril`` / ``torch.triu`` and ``torch.diff`` of activations, read through their
definitions (``nrm.layers.fused.TriangleDecomposition``, ``DiffDecomposition``): a masked fill
with 0 (a diagonal map whose dropped neurons have no parent) and differences of shifted
slices (slices and a subtraction). The survey of torch.nn (benchmarks/torch_nn_survey.py)
found them refused. Each is checked here against the exact oracle and the explicit reference
layer by layer, with L1, bitwise against torch's value, and refused by name where nrm does not
read it."""

from __future__ import annotations

import pytest
import torch
from agreement import agree
from nets import Fn, seeded
from torch import nn

import nrm
from nrm_verify import laws

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64


class Between(nn.Module):
    """Linear(4, 12) → relu → (B, 3, 4) → f → flatten → Linear(·, 2)."""

    def __init__(self, f: Fn, out: int):
        super().__init__()
        self.a, self.f, self.b = nn.Linear(4, 12), f, nn.Linear(out, 2)

    def forward(self, x):
        h = torch.relu(self.a(x)).reshape(x.shape[0], 3, 4)
        return self.b(self.f(h).reshape(x.shape[0], -1))


CASES = {
    "torch.tril": lambda h: torch.tril(h),
    "Tensor.tril(-1)": lambda h: h.tril(-1),
    "torch.triu(1)": lambda h: torch.triu(h, diagonal=1),
    "Tensor.triu": lambda h: h.triu(),
    "torch.diff": lambda h: torch.diff(h),
    "Tensor.diff(dim=1)": lambda h: h.diff(dim=1),
    "diff n=2": lambda h: torch.diff(h, n=2, dim=-1),
    "diff n=0": lambda h: torch.diff(h, n=0),
    "diff prepend": lambda h: torch.diff(h, dim=1, prepend=torch.full((h.shape[0], 1, 4), 0.5, dtype=h.dtype)),
    "diff append": lambda h: h.diff(append=torch.tensor([0.5, 2.0], dtype=h.dtype).expand(h.shape[0], 3, 2)),
}


def _model(name: str, seed: int = 0):
    f = Fn(CASES[name], name)
    out = f(torch.zeros(1, 3, 4, dtype=D)).reshape(1, -1).shape[1]
    return seeded(Between(f, out).double(), seed).eval()


@pytest.mark.parametrize("name", list(CASES))
def test_engine_equals_the_oracle_and_the_reference(name):
    model = _model(name)
    x = torch.randn(1, 4, dtype=D, generator=torch.Generator().manual_seed(7))
    m = agree(model, x, 0)
    assert float(laws.normalization(m).deviation) <= 1e-12
    torch.testing.assert_close(m.f, model(x)[:, 0], rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_lrp0_is_gradient_times_input(name):
    """Both are linear in x, with weights 0 and ±1: L9 holds through them (ReLU before)."""
    model = _model(name, seed=1)
    x = torch.randn(2, 4, dtype=D, generator=torch.Generator().manual_seed(8))
    result = laws.gradient_x_input(model, x, 1)
    assert result.holds is True and result.deviation <= 1e-12, str(result)


@pytest.mark.parametrize("f, words", [
    (lambda h: torch.tril(h.reshape(h.shape[0], -1)), "per-sample dimensions"),
    (lambda h: torch.diff(h, dim=0, prepend=torch.zeros(1, 3, 4, dtype=h.dtype)), "batch dimension"),
    (lambda h: torch.tril(h, out=torch.empty_like(h)), "out="),
    (lambda h: torch.diff(h, dim=-1, prepend=torch.full((h.shape[0], 3, 1), float("nan"), dtype=h.dtype)),
     "torch.cat.*not finite"),
], ids=["tril over the batch", "diff over the batch", "out=", "a NaN constant prepended"])
def test_what_is_not_read_is_refused_by_name(f, words):
    model = seeded(Between(Fn(f, "bad"), 12).double(), 0).eval()
    with pytest.raises(nrm.UnsupportedOperationError, match=words):
        nrm.explain(model, torch.randn(2, 4, dtype=D), target=0)


def test_a_negative_order_is_torchs_error_named_where_it_is():
    model = seeded(Between(Fn(lambda h: torch.diff(h, n=-1), "bad"), 12).double(), 0).eval()
    with pytest.raises(nrm.ShapeError, match="Fn at 'f'.*order must be non-negative"):
        nrm.explain(model, torch.randn(2, 4, dtype=D), target=0)
