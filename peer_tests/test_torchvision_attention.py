"""torchvision's attention models, small, in the peer suite (issue 14, item 1).

VisionTransformer (``vit_b_16`` / ``vit_b_32``: the class, at two patch sizes), SwinTransformer
(``swin_t``, and ``swin_v2_t`` with its V2 block and patch merging) and MaxVit (``maxvit_t``),
built with torchvision's own classes at reduced widths and depths (seeded weights of a scale
that keeps every layer O(1), float64, eval mode). What they needed, and the conventions
(class token, position embeddings, relative position bias, masks): ``docs/attention.md``.

For every model that nrm reads: ε, EpsilonGammaFlat, EpsilonPlus and LRP-0 accepted, and CP-LRP
(θ = 0: the attention weights take nothing), the captured output
equal to ``model(x)`` (``explain`` checks it), L1 ≤ 1e-12 at every layer; L9 (LRP-0 = gradient
× input) not applicable with its reason — the matrix products hold one factor at its forward
value (θ = ½ each, while the gradient gives each factor the whole product), layer norms hold
σ, GELU is not homogeneous — and L9's general form (that model's gradient with those held
factors detached) at 1e-12; the laws of the measure L2–L7 and L17 as
``test_torchvision_laws.py`` checks them on the CNN families; batch invariance.

Swin folds its windows into the batch dimension (``(B, H, W, C) → (B·nW, N, C)``), which nrm
refuses; its attention modules are read through ``nrm.layers.fused.ShiftedWindowDecomposition``,
the same computation with the windows in a per-sample dimension, checked against the module's
own output. The Swin models here: windows that divide the image (one stage, the second block
shifted) and windows that need padding (5×5 patches, window 3: padded to 6×6, shifted; a patch
merging of an odd size, padded; a second stage whose window covers it, not shifted).
"""

from __future__ import annotations

import sys

import pytest
import torch
from cases import seeded_instance
from torchvision.models import maxvit, swin_transformer, vision_transformer

import nrm
from nrm.errors import CaptureMismatchError
from nrm_verify import laws

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_torchvision_laws import _events, _markov_layer  # noqa: E402 — the events the CNN families use


def _vit(patch: int):
    return vision_transformer.VisionTransformer(image_size=16, patch_size=patch, num_layers=2, num_heads=2,
                                                hidden_dim=8, mlp_dim=16, num_classes=4), 16


def _maxvit():
    return maxvit.MaxVit(input_size=(16, 16), stem_channels=4, partition_size=2, block_channels=[8],
                         block_layers=[1], head_dim=4, stochastic_depth_prob=0.0, num_classes=4), 16


def _swin(v2: bool, padded: bool = False):
    extra = dict(block=swin_transformer.SwinTransformerBlockV2,
                 downsample_layer=swin_transformer.PatchMergingV2) if v2 else {}
    if padded:  # 10 px, 2×2 patches: 5×5, window 3 → padded to 6×6; merging 5×5 → 3×3 (padded); window 3 = 3×3
        return swin_transformer.SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[2, 1], num_heads=[2, 2],
                                                window_size=[3, 3], num_classes=4, **extra), 10
    return swin_transformer.SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[2], num_heads=[2],
                                            window_size=[2, 2], num_classes=4, **extra), 8


MODELS = {
    "vit_b_16-shaped": lambda: _vit(8),   # VisionTransformer, 2×2 patches of an image of 16
    "vit_b_32-shaped": lambda: _vit(4),   # the same class, 4×4 patches
    "maxvit_t-shaped": _maxvit,
    "swin_t-shaped": lambda: _swin(False),  # 4×4 patches, window 2: the second block shifted
    "swin_v2_t-shaped": lambda: _swin(True),
    "swin_t-shaped, padded": lambda: _swin(False, padded=True),
    "swin_v2_t-shaped, padded": lambda: _swin(True, padded=True),
}
SWIN = [name for name in MODELS if name.startswith("swin")]


def _instance(build):
    return seeded_instance(build)


RULES = {"LRP-0": nrm.rules.Zero(), "epsilon": nrm.rules.Epsilon(0.01),
         "EpsilonGammaFlat": nrm.presets.EpsilonGammaFlat(), "EpsilonPlus": nrm.presets.EpsilonPlus()}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_rule_is_accepted_and_l1_holds_at_every_layer(name):
    model, x = _instance(MODELS[name])
    with torch.no_grad():
        logits = model(x)
    targets = logits.argmax(1)
    for label, rules in RULES.items():
        m = nrm.explain(model, x, targets, rules=rules, check="full")
        # the captured computation is the model's: nn.MultiheadAttention is read through its
        # definition, whose sums run in another order than torch's fused kernel (a few ulp)
        torch.testing.assert_close(m.f, logits[torch.arange(2), targets], rtol=1e-13, atol=0, msg=label)
        l1 = laws.normalization(m, tol=1e-12)
        assert l1.holds is True and l1.deviation <= 1e-12, (label, str(l1))
        assert laws.column_sums(m).holds is True, label


@pytest.mark.parametrize("name", list(MODELS))
def test_cp_lrp_gives_the_attention_weights_nothing(name):
    """θ = 0 on every matrix product (CP-LRP, the attention held constant): L1 ≤ 1e-12 at every
    layer, and every softmax layer — the attention weights — carries no relevance at all."""
    from nrm.layers.attention import MatMul

    model, x = _instance(MODELS[name])
    targets = model(x).argmax(1)
    nrm.layers.register(MatMul(theta=0))
    try:
        m = nrm.explain(model, x, targets, rules=nrm.presets.EpsilonGammaFlat())
    finally:
        nrm.layers.register(MatMul())
    l1 = laws.normalization(m, tol=1e-12)
    assert l1.holds is True, str(l1)
    softmaxes = [b.name for b in m.network.blocks[1:] if b.producer.layer_kind.name == "Softmax"]
    assert softmaxes, "no softmax layer"
    for layer in softmaxes:
        assert float(m.marginal(layer).abs().max()) == 0.0, layer


@pytest.mark.parametrize("name", list(MODELS))
def test_l9_is_not_applicable_and_its_general_form_holds(name):
    """LRP-0 is not the model's gradient × input through attention: each matrix product gives
    its factors θ = ½ of every term (the gradient gives each the whole product), layer norms
    hold σ and GELU is not homogeneous. With exactly those factors detached it is (L9's
    general form), at every layer."""
    model, x = _instance(MODELS[name])
    targets = model(x).argmax(1)
    l9 = laws.gradient_x_input(model, x, targets)
    assert l9.holds is None, str(l9)
    assert any(w in l9.detail for w in ("multiplies activations", "not positively homogeneous",
                                        "input-dependent factor")), l9.detail
    general = laws.gradient_x_input(model, x, targets, detached=True, tol=1e-12)
    assert general.holds is True and general.deviation <= 1e-12, str(general)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_laws_of_the_measure(name):
    """L2–L7 and L17 through :mod:`nrm_verify.laws`, with the events of the CNN families' test."""
    model, x = _instance(MODELS[name])
    targets = model(x).argmax(1)
    m = nrm.explain(model, x, targets, rules=nrm.presets.EpsilonGammaFlat())
    lo, hi, a, b = _events(m)
    layer, k, lower = _markov_layer(m)
    results = [laws.additivity(m, a, b), laws.marginalization(m, lo, b), laws.marginalization(m, hi, a),
               laws.joint_marginals(m, lo, hi), laws.multiplicative(m, a, b), laws.bayes(m, a, b),
               laws.total_measure(m, b, lo), laws.markov(m, layer, k, lower), laws.channel_sum(m, hi)]
    failed = [str(r) for r in results if r.holds is not True]
    assert not failed, failed


@pytest.mark.parametrize("name", ["vit_b_16-shaped", "maxvit_t-shaped", "swin_t-shaped, padded",
                                  "swin_v2_t-shaped, padded"])
def test_a_batch_gives_each_image_its_own_measure(name):
    model, x = _instance(MODELS[name])
    targets = model(x).argmax(1)
    result = laws.batch_invariance(model, x, targets, nrm.presets.EpsilonGammaFlat())
    assert result.holds is True, str(result)


@pytest.mark.parametrize("name", SWIN)
def test_swin_is_read_with_its_windows_batch_first(name):
    """Each window attention is read through its batch-first decomposition: the scores and the
    output of each window are matrix products, the relative position bias and the shifted
    windows' mask constants; the cyclic shift rolls, the padding pads (where the windows do not
    divide), swin_v2's cosine attention holds the norms (a product with a held rsqrt)."""
    model, x = _instance(MODELS[name])
    m = nrm.explain(model, x, model(x).argmax(1), rules=nrm.presets.EpsilonGammaFlat())
    kinds = [b.producer.layer_kind.name for b in m.network.blocks[1:] if b.producer is not None]
    blocks = sum(1 for mod in model.modules() if isinstance(mod, swin_transformer.ShiftedWindowAttention))
    assert kinds.count("MatMul") == 2 * blocks and kinds.count("Softmax") == blocks, kinds
    assert "Roll" in kinds, kinds  # the second block of the first stage is shifted
    assert ("Pad" in kinds) == name.endswith("padded"), kinds
    assert ("Multiply" in kinds) == ("v2" in name), kinds  # F.normalize(q), F.normalize(k)


@pytest.mark.parametrize("v2", [False, True])
def test_a_patched_window_attention_is_refused_not_rewritten(v2, monkeypatch):
    """The decomposition is checked against the module's own output: a shifted_window_attention
    that computes something else (patched by the user) is refused, never silently replaced."""
    model, x = _instance(lambda: _swin(v2))
    original = swin_transformer.shifted_window_attention

    def patched(*args, **kwargs):
        return 0.5 * original(*args, **kwargs)

    monkeypatch.setattr(swin_transformer, "shifted_window_attention", patched)
    with pytest.raises(CaptureMismatchError, match="ShiftedWindowAttention"):
        nrm.explain(model, x, 0)


def test_a_subclass_with_its_own_forward_is_recorded_as_it_runs():
    """Only torchvision's own classes are decomposed (the exact type): a subclass with a forward
    of its own runs recorded — torchvision's ``shifted_window_attention`` as written, its windows
    folded into the batch (refused by name before 2026-12-07; read since, docs/capture.md) — and
    gives the measure of the decomposed model: f, the input marginal (to 1e-12), L1."""

    class Mine(swin_transformer.ShiftedWindowAttention):
        def forward(self, x):
            return super().forward(x)

    model, x = _instance(lambda: _swin(False))
    decomposed = nrm.explain(model, x, 0)
    for block in model.features[1]:
        old = block.attn
        block.attn = Mine(8, old.window_size, old.shift_size, old.num_heads).to(x.dtype)
        block.attn.load_state_dict(old.state_dict())
    model.eval()
    m = nrm.explain(model, x, 0, check="full")
    folds = [c for c in m.network.captured.calls if type(c.module).__name__ == "Mine" and c.kind is not None
             and c.kind.name == "View" and c.output.shape[0] != c.in_shapes[0][0]]
    assert folds  # its windows went through the batch dimension, as torchvision writes them
    torch.testing.assert_close(m.f, decomposed.f, rtol=1e-12, atol=1e-12)
    scale = float(decomposed.marginal("input").abs().max())
    assert float((m.marginal("input") - decomposed.marginal("input")).abs().max()) <= 1e-12 * scale
    assert float(laws.normalization(m).deviation) <= 1e-12
