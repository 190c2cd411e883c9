"""torch's aliases and ``torch.tile`` (found as a stranger: transformers' ConvBERT calls
``torch.multiply``, which nrm refused as "no layer kind" while it read ``torch.mul``).

``torch.multiply``, ``torch.divide``, ``torch.subtract`` and their ``Tensor`` and in-place forms
are recorded as the function they name (``nrm.capture.ALIASES``), so the model written with
either gives the same measure, bitwise. ``torch.tile`` is ``Tensor.repeat`` with its dims padded
in front (``TileDecomposition``), an index map; a tile that repeats the batch is refused by name."""

from __future__ import annotations

import pytest
import torch

import nrm
from nrm.errors import NRMError, UnsupportedOperationError
from nrm_verify import laws

D = torch.float64
C = torch.tensor([0.5, 2.0, 1.5, 0.75], dtype=D)


class Between(torch.nn.Module):
    """Linear → ReLU → op → Linear: ``op`` is the operation under test."""

    def __init__(self, op, width: int = 4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Linear(4, 4).to(D)
        self.b = torch.nn.Linear(width, 3).to(D)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D))
        self.op = op

    def forward(self, x):
        return self.b(self.op(torch.relu(self.a(x)) + 0.1))


ALIASED = {  # alias form, canonical form
    "torch.multiply": (lambda h: torch.multiply(h, C), lambda h: torch.mul(h, C)),
    "Tensor.multiply": (lambda h: h.multiply(C), lambda h: h.mul(C)),
    "Tensor.multiply_": (lambda h: h.clone().multiply_(C), lambda h: h.clone().mul_(C)),
    "torch.divide": (lambda h: torch.divide(h, C), lambda h: torch.div(h, C)),
    "Tensor.divide": (lambda h: h.divide(C), lambda h: h.div(C)),
    "Tensor.divide_": (lambda h: h.clone().divide_(C), lambda h: h.clone().div_(C)),
    "torch.subtract": (lambda h: torch.subtract(h, C), lambda h: torch.sub(h, C)),
    "Tensor.subtract": (lambda h: h.subtract(C, alpha=2), lambda h: h.sub(C, alpha=2)),
    "Tensor.subtract_": (lambda h: h.clone().subtract_(C), lambda h: h.clone().sub_(C)),
    "torch.multiply of two activations": (lambda h: torch.multiply(h, torch.sigmoid(h)),
                                          lambda h: h * torch.sigmoid(h)),
    "torch.divide, rounding_mode=None": (lambda h: torch.divide(h, C, rounding_mode=None), lambda h: h / C),
}


@pytest.mark.parametrize("name", list(ALIASED))
def test_an_alias_gives_the_measure_of_the_function_it_names(name):
    alias, canonical = ALIASED[name]
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=D)
    model = Between(alias).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = nrm.explain(model, x, target=1, check="full")
    reference = Between(canonical).eval()
    r = nrm.explain(reference, x, target=1, check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    assert torch.equal(m.marginal("input"), r.marginal("input"))
    assert float(laws.normalization(m).deviation) <= 1e-13
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


TILED = {  # tile form, the repeat it is
    "fewer dims than the tensor": (lambda h: torch.tile(h, (2,)), lambda h: h.repeat(1, 2), 8),
    "Tensor.tile, varargs": (lambda h: h.tile(1, 2), lambda h: h.repeat(1, 2), 8),
    "dims= keyword": (lambda h: torch.tile(h, dims=(1, 3)), lambda h: h.repeat(1, 3), 12),
    "a new leading dimension, then flattened": (lambda h: torch.tile(h.unsqueeze(1), (1, 2, 1)).flatten(1),
                                                 lambda h: h.unsqueeze(1).repeat(1, 2, 1).flatten(1), 8),
}


@pytest.mark.parametrize("name", list(TILED))
def test_tile_is_the_repeat_torch_defines_it_as(name):
    tiled, repeated, width = TILED[name]
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(2), dtype=D)
    model = Between(tiled, width).eval()
    m = nrm.explain(model, x, target=0, check="full")
    reference = Between(repeated, width).eval()
    r = nrm.explain(reference, x, target=0, check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 0])
    assert torch.equal(m.marginal("input"), r.marginal("input"))
    assert float(laws.normalization(m).deviation) <= 1e-13


def test_a_tile_that_repeats_the_batch_is_refused_by_name():
    model = Between(lambda h: torch.tile(h, (2, 1))[:3]).eval()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=D)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedOperationError, match="repeat"):
        nrm.explain(model, x, target=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dims", [(1.5, 2), ("a",), (1, -2)])
def test_tile_by_what_torch_refuses_is_a_named_error(dims):
    """Bad tile arguments: torch's own error, named by nrm (no Python exception of another kind, no NaN)."""
    model = Between(lambda h: torch.tile(h, dims)[:, :4]).eval()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(4), dtype=D)
    with pytest.raises(NRMError):
        nrm.explain(model, x, target=0)
