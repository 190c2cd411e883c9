"""transformers' ConvNeXt and ConvNeXt V2 (small random configurations, no download), whose
LayerNorm is written by hand — (x − u) / √(s + ε) over the channels — and, in V2, whose
global response normalization divides by the mean of ``torch.linalg.vector_norm``: read
through the decompositions of a − b, a / b and the Euclidean norm, the divisors held at their
forward values (``tests/test_handwritten_norms.py`` checks them against the explicit reference
on small models). float32; their LayerNorm casts to float32 itself, so a float64 model is read
with those steps widened (``nrm.capture.upcast``). f is the model's logit (to the division's
second rounding, in float32 inside the norm) and L1 holds at every layer."""

from __future__ import annotations

import pytest
import torch

import nrm
from nrm_verify import laws

transformers = pytest.importorskip("transformers", reason="transformers is installed in the peer environment only")


def _model(v2: bool):
    config = (transformers.ConvNextV2Config if v2 else transformers.ConvNextConfig)(
        num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3, image_size=32)
    torch.manual_seed(0)
    model = (transformers.ConvNextV2ForImageClassification if v2 else transformers.ConvNextForImageClassification)(
        config).eval()
    if v2:  # GRN's γ and β start at zero: give them values, so that its path counts
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("grn.weight") or name.endswith("grn.bias"):
                    p.copy_(torch.randn(p.shape) * 0.5)
    return model


@pytest.mark.parametrize("v2", [False, True], ids=["convnext", "convnext-v2"])
def test_convnext_with_hand_written_norms_is_read(v2):
    model = _model(v2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    m = nrm.explain(model, x, target=1, output=lambda o: o.logits, check="full")
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x).logits[:, 1], rtol=1e-5, atol=1e-6)
    for layer in m.canonical_names():
        total = m.marginal(layer).reshape(2, -1).sum(1) + m.absorbed(layer)
        if not m.network.sequential:
            total = total + m.bypassing(layer)
        assert float((total - 1).abs().max()) <= 1e-5, layer
    kinds = {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    assert {"Negate", "Expand", "Multiply"} <= kinds, kinds


def test_a_float64_convnext_is_read_its_norm_computes_in_float32():
    """HF ConvNeXt's channels-first LayerNorm casts to float32 inside (refused by name before
    2026-12-07): read in float64 with those steps widened; f is the model's logit to the float32
    division's second rounding (a · (1/b), ≈ 4e-8 relative here), L1 ≤ 1e-12."""
    model = _model(False).double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    m = nrm.explain(model, x, target=0, output=lambda o: o.logits, check="full")
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x).logits[:, 0], rtol=1e-6, atol=1e-9)
    assert float(laws.normalization(m).deviation) <= 1e-12
