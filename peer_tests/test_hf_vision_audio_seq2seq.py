"""transformers' vision, audio and encoder-decoder families, read as a stranger would read them:
a small random configuration (no download), float64, the model's own input — ``pixel_values``,
raw ``input_values`` (wav2vec2's convolutional feature encoder), Whisper's ``input_features``, or
the encoder's ``inputs_embeds`` with fixed decoder tokens (the decoder's own tokens are constants
of the explanation; its cross-attention queries come from them) — and nrm's defaults. Each is
captured with ``check="full"``, f is the model's output and L1 holds to 1e-12 at every layer; the
model is untouched. Before 2026-12-07 the encoder-decoders and SigLIP's pooling head were refused
(a constant query with the batch's dimension on the left of Q · Kᵀ), and T5 in float64 was
refused at its float32 softmax (its float64 mask narrowed to −inf); a stranger's sweep of these
families found both."""

from __future__ import annotations

import pytest
import torch

import nrm
from nrm_verify import laws

T = pytest.importorskip("transformers", reason="transformers is installed in the peer environment only")

D = torch.float64
VISION = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24)
AUDIO = dict(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
             num_labels=3, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4,
             num_conv_pos_embedding_groups=2, classifier_proj_size=8)
SEQ2SEQ = dict(vocab_size=50, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
               decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32)

FAMILIES = {
    "vit": ("pixel", lambda: T.ViTForImageClassification(T.ViTConfig(**VISION, num_labels=3))),
    "deit": ("pixel", lambda: T.DeiTForImageClassification(T.DeiTConfig(**VISION, num_labels=3))),
    "beit": ("pixel", lambda: T.BeitForImageClassification(T.BeitConfig(**VISION, num_labels=3,
                                                                         use_relative_position_bias=True))),
    "dinov2": ("pixel", lambda: T.Dinov2ForImageClassification(T.Dinov2Config(**VISION, num_labels=3, mlp_ratio=2))),
    "vit_msn": ("pixel", lambda: T.ViTMSNForImageClassification(T.ViTMSNConfig(**VISION, num_labels=3))),
    "swin": ("pixel", lambda: T.SwinForImageClassification(T.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=3))),
    "swinv2": ("pixel", lambda: T.Swinv2ForImageClassification(T.Swinv2Config(
        image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=3))),
    "pvt_v2": ("pixel", lambda: T.PvtV2ForImageClassification(T.PvtV2Config(
        image_size=32, hidden_sizes=[8, 16], depths=[1, 1], num_attention_heads=[1, 2], sr_ratios=[2, 1],
        num_encoder_blocks=2, patch_sizes=[3, 3], strides=[2, 2], mlp_ratios=[2, 2], num_labels=3))),
    "resnet": ("pixel", lambda: T.ResNetForImageClassification(T.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3))),
    "regnet": ("pixel", lambda: T.RegNetForImageClassification(T.RegNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=4, num_labels=3))),
    "mobilenet_v2": ("pixel", lambda: T.MobileNetV2ForImageClassification(T.MobileNetV2Config(
        image_size=32, depth_multiplier=0.25, num_labels=3))),
    "levit": ("pixel", lambda: T.LevitForImageClassification(T.LevitConfig(
        image_size=32, hidden_sizes=[16, 24, 32], num_attention_heads=[2, 2, 2], depths=[1, 1, 1], key_dim=[8, 8, 8],
        num_labels=3))),
    "mobilevit": ("pixel", lambda: T.MobileViTForImageClassification(T.MobileViTConfig(
        image_size=32, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32], num_labels=3))),
    "poolformer": ("pixel", lambda: T.PoolFormerForImageClassification(T.PoolFormerConfig(
        hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_labels=3))),
    "segformer": ("pixel", lambda: T.SegformerForImageClassification(T.SegformerConfig(
        hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16,
        num_labels=3))),
    "clip_vision": ("pixel", lambda: T.CLIPVisionModelWithProjection(T.CLIPVisionConfig(**VISION, projection_dim=8))),
    "siglip_vision": ("pixel", lambda: T.SiglipVisionModel(T.SiglipVisionConfig(**VISION))),
    "wav2vec2": ("audio", lambda: T.Wav2Vec2ForSequenceClassification(T.Wav2Vec2Config(**AUDIO))),
    "hubert": ("audio", lambda: T.HubertForSequenceClassification(T.HubertConfig(**AUDIO))),
    "data2vec_audio": ("audio", lambda: T.Data2VecAudioForSequenceClassification(T.Data2VecAudioConfig(**AUDIO))),
    "whisper_encoder": ("features", lambda: T.WhisperForAudioClassification(T.WhisperConfig(
        vocab_size=50, num_mel_bins=8, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
        decoder_attention_heads=2, d_model=16, encoder_ffn_dim=24, decoder_ffn_dim=24, max_source_positions=8,
        num_labels=3))),
    "bart": ("seq2seq", lambda: T.BartForConditionalGeneration(T.BartConfig(**SEQ2SEQ))),
    "mbart": ("seq2seq", lambda: T.MBartForConditionalGeneration(T.MBartConfig(**SEQ2SEQ))),
    "marian": ("seq2seq", lambda: T.MarianMTModel(T.MarianConfig(**SEQ2SEQ, decoder_vocab_size=50, pad_token_id=1))),
    "pegasus": ("seq2seq", lambda: T.PegasusForConditionalGeneration(T.PegasusConfig(**SEQ2SEQ))),
    "t5": ("seq2seq", lambda: T.T5ForConditionalGeneration(T.T5Config(
        vocab_size=50, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2))),
}
DECODER_TOKENS = torch.tensor([[2, 5, 7]])


class Output(torch.nn.Module):
    """The model's own input → its logits at the last position (a decoder), its class logits, or
    its pooled embedding (CLIP's, SigLIP's)."""

    def __init__(self, model, how: str):
        super().__init__()
        self.model, self.how = model, how

    def forward(self, x):
        if self.how == "pixel":
            out = self.model(pixel_values=x)
        elif self.how == "audio":
            out = self.model(input_values=x)
        elif self.how == "features":
            out = self.model(input_features=x)
        else:
            out = self.model(inputs_embeds=x, decoder_input_ids=DECODER_TOKENS.expand(x.shape[0], -1), use_cache=False)
        y = next(y for y in (getattr(out, k, None) for k in ("logits", "image_embeds", "pooler_output"))
                 if y is not None)
        return y[:, -1] if y.dim() == 3 else y


def _case(name: str):
    how, build = FAMILIES[name]
    torch.manual_seed(0)
    inner = build().to(D).eval()
    g = torch.Generator().manual_seed(0)
    if how == "pixel":
        x = torch.randn(1, 3, 32, 32, generator=g, dtype=D)
    elif how == "audio":
        x = torch.randn(1, 400, generator=g, dtype=D)
    elif how == "features":
        x = torch.randn(1, 8, 16, generator=g, dtype=D)
    else:
        with torch.no_grad():
            x = inner.get_input_embeddings()(torch.randint(3, 50, (1, 6), generator=g)).detach()
    return Output(inner, how).eval(), x


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_family_is_read_with_nrms_defaults_and_l1_holds_at_every_layer(name):
    model, x = _case(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y = model(x)
    target = int(y[0].abs().argmax())
    m = nrm.explain(model, x, target=target, check="full")
    torch.testing.assert_close(m.f[0], y[0, target], rtol=1e-12, atol=1e-14)
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert torch.isfinite(m.marginal("input")).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_seq2seq_model_with_other_decoder_tokens_per_sample_is_refused_by_name():
    """Two samples whose decoders read different tokens have different cross-attention queries: one
    constant per sample, which nrm does not read; refused by name, the model untouched (one sample
    with its own tokens is read: the family test above)."""
    model, x = _case("marian")
    two = torch.cat([x, x.flip(1)])

    class Differ(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model.model

        def forward(self, e):
            tokens = torch.tensor([[2, 5, 7], [2, 9, 4]])
            return self.inner(inputs_embeds=e, decoder_input_ids=tokens, use_cache=False).logits[:, -1]

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(nrm.UnsupportedOperationError, match="whose samples differ"):
        nrm.explain(Differ().eval(), two, target=3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
