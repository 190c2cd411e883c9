"""torchvision's video classifiers built from 3-d convolutions (random weights, no download,
float64, eval mode, one clip of 4 frames at 32×32): ``r3d_18``, ``mc3_18`` and ``r2plus1d_18``,
which nrm refused before 2026-12-06 (no kind for ``F.conv3d``). f is the model's arg-max logit,
every map reproduces the model (``check="full"``), L1 holds at every layer and LRP-0 is
gradient × input (ReLU, batch norm folded into the convolutions, average pooling)."""

from __future__ import annotations

import pytest
import torch

import nrm
from nrm_verify import laws
from nrm_verify.laws.limits import gradient_x_input

video = pytest.importorskip("torchvision.models.video", reason="torchvision is installed by scripts/setup-peers.sh")

D = torch.float64


@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_a_video_model_is_explained_and_keeps_the_laws(name):
    torch.manual_seed(0)
    model = getattr(video, name)().to(D).eval()
    x = torch.randn(2, 3, 4, 32, 32, dtype=D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    target = int(logits[0].argmax())
    m = nrm.explain(model, x, target=target, check="full")
    torch.testing.assert_close(m.f, logits[:, target], rtol=1e-12, atol=1e-12)
    kinds = {b.producer.layer_kind.name for b in m.network.blocks[1:] if b.producer is not None}
    assert "Conv" in kinds and "AdaptiveAvgPool" in kinds, kinds
    assert float(laws.normalization(m).deviation) <= 1e-12
    l9 = gradient_x_input(model, x, target, tol=1e-9)
    assert l9.holds is True, str(l9)


@pytest.mark.parametrize("shape", [(1, 3, 4, 56, 56), (1, 3, 3, 36, 44)], ids=["windows divide", "padded"])
def test_video_swin_is_read_with_its_windows_batch_first(shape):
    """swin3d_t: its 3-d shifted-window attention folds the windows into the batch; nrm reads it
    through ShiftedWindow3dDecomposition (the windows in a per-sample dimension), checked against
    the module's own output. f is the model's, L1 ≤ 1e-12, L9 in its general form (softmax,
    layer norm's σ and the GELUs detached)."""
    torch.manual_seed(0)
    model = video.swin3d_t().to(D).eval()
    x = torch.randn(*shape, dtype=D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    target = int(logits[0].argmax())
    m = nrm.explain(model, x, target=target, check="full")
    torch.testing.assert_close(m.f, logits[:, target], rtol=1e-12, atol=1e-12)
    assert float(laws.normalization(m).deviation) <= 1e-12
    general = gradient_x_input(model, x, target, detached=True, tol=1e-9)
    assert general.holds is True, str(general)


def _small_mvit():
    """MViT v2 as torchvision builds it (relative positions, residual pooling, the class token),
    with three small blocks over 4 frames of 32×32 (one pooled stage)."""
    torch.manual_seed(0)
    blocks = [video.mvit.MSBlockConfig(num_heads=h, input_channels=i, output_channels=o, kernel_q=[3, 3, 3],
                                       kernel_kv=[3, 3, 3], stride_q=sq, stride_kv=skv)
              for h, i, o, sq, skv in [(1, 8, 8, [1, 1, 1], [1, 2, 2]), (2, 8, 16, [1, 2, 2], [1, 1, 1]),
                                       (2, 16, 16, [1, 1, 1], [1, 1, 1])]]
    return video.mvit._mvit(spatial_size=(32, 32), temporal_size=4, block_setting=blocks, residual_pool=True,
                            residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True,
                            stochastic_depth_prob=0.0, weights=None, progress=False, num_classes=5).to(D).eval()


def test_mvit_is_read_for_one_sample():
    """MViT v2's relative positions move the batch off dimension 0 (``r_q.permute(2, 0, 1, 3, 4,
    5)``) and multiply by one table per frame: read for one sample (docs/capture.md, *With one
    sample, dimension 0 is the sample's*; refused before 2026-12-07). f is the model's, L1 ≤
    1e-12, L9 in its general form; two samples are refused by name."""
    model = _small_mvit()
    x = torch.randn(1, 3, 4, 32, 32, dtype=D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    target = int(logits[0].argmax())
    m = nrm.explain(model, x, target=target, check="full")
    torch.testing.assert_close(m.f, logits[:, target], rtol=1e-12, atol=1e-12)
    assert float(laws.normalization(m).deviation) <= 1e-12
    general = gradient_x_input(model, x, target, detached=True, tol=1e-9)
    assert general.holds is True, str(general)
    with pytest.raises(nrm.UnsupportedOperationError, match="moves the batch dimension"):
        nrm.explain(model, torch.cat([x, x]), target=target)


@pytest.mark.nrm_slow
def test_mvit_v2_s_at_its_size_is_read():
    """torchvision's mvit_v2_s (16 frames of 224×224, float32): f the model's, L1 at the input
    (opt-in, about 90 s on 2 CPU cores)."""
    torch.manual_seed(0)
    model = video.mvit_v2_s().eval()
    x = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    target = int(logits[0].argmax())
    m = nrm.explain(model, x, target=target, rules=nrm.rules.Epsilon(1e-6))
    torch.testing.assert_close(m.f, logits[:, target], rtol=1e-5, atol=1e-5)
    total = m.marginal("input").sum() + m.absorbed("input").sum()
    assert abs(float(total) - 1) <= 1e-4, float(total)
