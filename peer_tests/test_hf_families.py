"""transformers families that no other test names, read as a user would read them: a small random
configuration (no download), float64, ``inputs_embeds`` → the last position's logits (an LM) or
the class logits, nrm's defaults (no conventions registered). Each is captured with
``check="full"`` (every map reproduces the model's values), f is the model's logit and L1 holds
to 1e-12 at every layer. What stays refused is refused by name."""

from __future__ import annotations

import pytest
import torch

import nrm
from nrm.errors import AmbiguousProductError, ArgumentError
from nrm.layers.products import Multiply
from nrm_verify import laws
from nrm_verify.peers.base import rms_norms_in_input_dtype

transformers = pytest.importorskip("transformers", reason="transformers is installed in the peer environment only")

D = torch.float64
COMMON = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
              max_position_embeddings=16)
FAMILIES = {
    "gpt2-gelu_new": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)),  # GPT-2's default activation
    "distilbert": lambda: transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=24, max_position_embeddings=16, num_labels=3)),
    "roberta": lambda: transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        **COMMON, num_labels=3, pad_token_id=1)),
    "gpt_neox": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**COMMON)),
    "phi": lambda: transformers.PhiForCausalLM(transformers.PhiConfig(**COMMON)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**COMMON, num_key_value_heads=1)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**COMMON, num_key_value_heads=1)),
    # Falcon: projections written x @ self.weight.T (ConstantMatMul), multi-query attention that broadcasts
    # its one key/value head over the query heads in `@` (MatMul), rotary, parallel attention and MLP
    "falcon": lambda: transformers.FalconForCausalLM(transformers.FalconConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, attn_implementation="eager")),
    # MobileBERT: F.pad(x, [0, 0, 0, 1, 0, 0]) shifts the tokens, its (0, 0) pair on the batch dimension padding nothing
    "mobilebert": lambda: transformers.MobileBertForSequenceClassification(transformers.MobileBertConfig(
        vocab_size=50, hidden_size=16, embedding_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=24, intra_bottleneck_size=8, true_hidden_size=8, max_position_embeddings=16, num_labels=3)),
    "stablelm": lambda: transformers.StableLmForCausalLM(transformers.StableLmConfig(**COMMON, num_key_value_heads=1)),
    "gemma": lambda: transformers.GemmaForCausalLM(transformers.GemmaConfig(**COMMON, num_key_value_heads=1,
                                                                             head_dim=8)),  # RMSNorm (1 + w)
    "gemma2": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**COMMON, num_key_value_heads=1,
                                                                                head_dim=8)),
    "albert": lambda: transformers.AlbertForSequenceClassification(transformers.AlbertConfig(
        vocab_size=50, embedding_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=16, num_labels=3)),  # one layer's weights used twice
    "electra": lambda: transformers.ElectraForSequenceClassification(transformers.ElectraConfig(
        vocab_size=50, embedding_size=16, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=16, num_labels=3)),
    "gpt_bigcode": lambda: transformers.GPTBigCodeForCausalLM(transformers.GPTBigCodeConfig(
        vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16)),  # multi-query attention
    "starcoder2": lambda: transformers.Starcoder2ForCausalLM(transformers.Starcoder2Config(**COMMON,
                                                                                          num_key_value_heads=1)),
}
FLOAT32_FAMILIES = {
    # GPT-J: rotary by torch.stack((-x2, x1), dim=-1) (read as unsqueeze and cat); its attention casts the query
    # and key to float32 (a no-op here; in float64 read widened: the as-written test)
    "gptj": lambda: transformers.GPTJForCausalLM(transformers.GPTJConfig(
        vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16, rotary_dim=4)),
    # OLMo: a LayerNorm without affine parameters computed in float32 (the same no-op)
    "olmo": lambda: transformers.OlmoForCausalLM(transformers.OlmoConfig(**COMMON)),
}
AS_WRITTEN_FAMILIES = {
    # read in float64 as written only (test_the_family_in_float64_is_read_as_transformers_writes_it): norms or
    # attention computing in float32 inside, in forms the helper does not rewrite, and the families below
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**COMMON, num_key_value_heads=1)),
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**COMMON, num_key_value_heads=1,
                                                                              head_dim=8)),  # q/k RMSNorms
    "granite": lambda: transformers.GraniteForCausalLM(transformers.GraniteConfig(**COMMON, num_key_value_heads=1)),
    "cohere": lambda: transformers.CohereForCausalLM(transformers.CohereConfig(**COMMON, num_key_value_heads=1)),
    "olmo2": lambda: transformers.Olmo2ForCausalLM(transformers.Olmo2Config(**COMMON)),
    "helium": lambda: transformers.HeliumForCausalLM(transformers.HeliumConfig(**COMMON, num_key_value_heads=1,
                                                                                head_dim=8)),
    # the batch folded into the rows: OPT's MLP (reshape(-1, E)), DeBERTa-v2's heads (view(-1, T, d)); Funnel's
    # relative attention (an einsum with a constant, a where between two scores); Falcon's one key/value head
    "opt": lambda: transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=24,
        max_position_embeddings=16, word_embed_proj_dim=16, pad_token_id=0)),
    "deberta_v2": lambda: transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(**COMMON)),
    "funnel": lambda: transformers.FunnelForSequenceClassification(transformers.FunnelConfig(
        vocab_size=50, d_model=16, n_head=2, d_head=8, d_inner=24, block_sizes=[1, 1])),
    "falcon": lambda: transformers.FalconForCausalLM(transformers.FalconConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, new_decoder_architecture=False,
        multi_query=True, alibi=False, bias=False)),
    "gpt_neo": lambda: transformers.GPTNeoForCausalLM(transformers.GPTNeoConfig(  # attention in float32
        vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
        max_position_embeddings=16, window_size=4)),
    # sequence first inside (einsum "ibnd,jbnd->bnij"): read for one sample
    "xlnet": lambda: transformers.XLNetLMHeadModel(transformers.XLNetConfig(
        vocab_size=50, d_model=16, n_layer=2, n_head=2, d_inner=24)),
    # baddbmm with a per-head ALiBi bias over the heads folded into the rows: read for one sample
    "bloom": lambda: transformers.BloomForCausalLM(transformers.BloomConfig(
        vocab_size=50, hidden_size=16, n_layer=2, n_head=2)),
    # a stranger's sweep, 2026-12-08: Phi-3's rotary slice q[..., rotary_dim:] has zero width when the whole head
    # rotates (a layer of no neurons: marginals() raised before); the others read with no change
    "phi3": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(
        **COMMON, num_key_value_heads=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "modernbert": lambda: transformers.ModernBertForSequenceClassification(transformers.ModernBertConfig(
        **COMMON, num_labels=3, pad_token_id=0, reference_compile=False)),
    "smollm3": lambda: transformers.SmolLM3ForCausalLM(transformers.SmolLM3Config(
        **COMMON, num_key_value_heads=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "glm": lambda: transformers.GlmForCausalLM(transformers.GlmConfig(
        **COMMON, num_key_value_heads=1, head_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "arcee": lambda: transformers.ArceeForCausalLM(transformers.ArceeConfig(**COMMON, num_key_value_heads=1)),
}


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, e):
        out = self.model(inputs_embeds=e).logits
        return out[:, -1, :] if out.dim() == 3 else out


def _case(name: str, seed: int = 0, dtype: torch.dtype = D):
    torch.manual_seed(seed)
    model = {**FAMILIES, **FLOAT32_FAMILIES, **AS_WRITTEN_FAMILIES}[name]().to(dtype).eval()
    ids = torch.randint(2, 50, (1, 6), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return Logits(model).eval(), model.get_input_embeddings()(ids).detach()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_family_is_read_with_nrms_defaults_and_l1_holds_at_every_layer(name):
    model, e = _case(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with rms_norms_in_input_dtype(model):
        m = nrm.explain(model, e, target=1, check="full")
        with torch.no_grad():
            f = float(model(e)[0, 1])
    assert abs(float(m.f[0]) - f) <= 1e-12 * max(1.0, abs(f))
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert torch.isfinite(m.marginal("input")).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model untouched


@pytest.mark.parametrize("name", list(FLOAT32_FAMILIES))
def test_families_that_compute_in_float32_are_read_in_float32(name):
    """Families whose forward casts to float32 inside are read in float32 too: f the model's,
    L1 ≤ 1e-6 at every layer."""
    model, e = _case(name, dtype=torch.float32)
    m = nrm.explain(model, e, target=1, check="full")
    with torch.no_grad():
        f = float(model(e)[0, 1])
    assert abs(float(m.f[0]) - f) <= 1e-6 * max(1.0, abs(f))
    assert float(laws.normalization(m).deviation) <= 1e-6
    assert torch.isfinite(m.marginal("input")).all()


@pytest.mark.parametrize("name", list(FAMILIES) + list(FLOAT32_FAMILIES) + list(AS_WRITTEN_FAMILIES))
def test_the_family_in_float64_is_read_as_transformers_writes_it(name):
    """No helper: the RMSNorms (and GPT-J's attention) that compute in float32 inside the float64
    model are read as computed, widened (nrm.capture.upcast; refused by name before 2026-12-07,
    "converts torch.float64 to torch.float32"). Every map reproduces the model's values
    (check="full"), f is the model's logit, L1 ≤ 1e-12 at every layer, the model untouched."""
    model, e = _case(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = nrm.explain(model, e, target=1, check="full")
    with torch.no_grad():
        f = float(model(e)[0, 1])
    assert abs(float(m.f[0]) - f) <= 1e-12 * max(1.0, abs(f))
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert torch.isfinite(m.marginal("input")).all() and m.marginal("input").dtype == D
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _read_under(split: str, model, e) -> nrm.Measure:
    """Explained with products split ``split`` (nrm's default kind again after): every map checked,
    f the logit at 1, L1 ≤ 1e-12 at every layer, the input marginal finite."""
    nrm.layers.register(Multiply(split=split))
    try:
        m = nrm.explain(model, e, target=1, check="full")
    finally:
        nrm.layers.register(Multiply())
    with torch.no_grad():
        f = float(model(e)[0, 1])
    assert abs(float(m.f[0]) - f) <= 1e-12 * max(1.0, abs(f))
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert torch.isfinite(m.marginal("input")).all()
    return m


def _state_space(name: str, wrap):
    torch.manual_seed(0)
    inner = STATE_SPACE[name]().to(D).eval()
    ids = torch.randint(2, 50, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return wrap(inner).eval(), inner.get_input_embeddings()(ids).detach()


def _mamba():
    torch.manual_seed(0)
    model = transformers.MambaForCausalLM(transformers.MambaConfig(
        vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, intermediate_size=32)).to(D).eval()
    ids = torch.randint(2, 50, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return Logits(model).eval(), model.get_input_embeddings()(ids).detach()


def test_convbert_is_read_through_torch_multiply_under_a_split():
    """ConvBERT's span-based convolution multiplies two activations with ``torch.multiply`` (refused
    as "no layer kind" before 2026-12-08: nrm read ``torch.mul`` but not its alias); by default
    that product is refused by name (neither factor is a gate), under AttnLRP's uniform split every
    map reproduces the model's values, f is the logit and L1 ≤ 1e-12 at every layer."""
    torch.manual_seed(0)
    inner = transformers.ConvBertForSequenceClassification(transformers.ConvBertConfig(
        **COMMON, num_labels=3, embedding_size=16)).to(D).eval()
    ids = torch.randint(2, 50, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model, e = Logits(inner).eval(), inner.get_input_embeddings()(ids).detach()
    with pytest.raises(AmbiguousProductError, match="torch.multiply"):
        nrm.explain(model, e, target=1)
    _read_under("equal", model, e)


@pytest.mark.parametrize("split", ["equal", "proportional"])
def test_mamba_is_read_under_a_split_of_its_products(split):
    """Mamba's sequential path (transformers' ``slow_forward``, the one a CPU runs): its
    discretization exp(A · Δ) spreads the step sizes over the state with a constant
    (``EnlargedByConstantDecomposition``; refused by name before 2026-12-07), its scan multiplies
    Δ, B and the signal, none a gate: under AttnLRP's uniform split or the proportional one,
    every map reproduces the model's values, f is the logit, L1 ≤ 1e-12 at every layer."""
    _read_under(split, *_mamba())


class NoCache(torch.nn.Module):
    """The last position's logits without a cache (Mamba-2 writes its convolution state into a
    cache of (layers, batch, …) when one is made: the layers in dimension 0, a write nrm refuses)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, e):
        return self.model(inputs_embeds=e, use_cache=False).logits[:, -1, :]


STATE_SPACE = {
    "mamba2": lambda: transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
        vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, num_heads=4, head_dim=8, n_groups=1,
        expand=2)),
    "falcon_mamba": lambda: transformers.FalconMambaForCausalLM(transformers.FalconMambaConfig(
        vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2, intermediate_size=32, use_mambapy=False)),
    "rwkv": lambda: transformers.RwkvForCausalLM(transformers.RwkvConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16, intermediate_size=24,
        context_length=16)),
}


@pytest.mark.parametrize("name", list(STATE_SPACE))
def test_state_space_and_recurrent_lms_are_read_under_the_uniform_split(name):
    """Mamba-2's chunked scan (``torch_forward``: ``clamp(dt, 0, inf)``, ``repeat_interleave(…,
    output_size=)``, ``exp`` of a −∞-masked segment sum), FalconMamba's (Mamba's with
    RMS-normalized B, C, Δ) and RWKV-4's CPU recurrence (its token shift ``ZeroPad2d((0, 0, 1,
    −1))``, a crop; its state kept in float32 inside the float64 model, combined by ±, maximum
    and division, widened), all read since 2026-12-07, each a product of activations under the
    uniform split: every map reproduces the model's values, f is the logit, L1 ≤ 1e-12 at every
    layer."""
    _read_under("equal", *_state_space(name, NoCache))


def test_rwkv_with_its_cache_is_read():
    """RWKV's forward with its cache (transformers' default): each block reads its float32 state
    slice (a constant), then writes the new state into it in place; the reads keep the values they
    read (a capture mismatch before 2026-12-07), the float64 writes are cast to the state's float32
    as torch casts them. Under the uniform split: f the logit, L1 ≤ 1e-12 at every layer."""
    _read_under("equal", *_state_space("rwkv", Logits))


def test_mamba_under_the_default_split_says_how_to_choose():
    model, e = _mamba()
    with pytest.raises(AmbiguousProductError, match="split='equal'"):
        nrm.explain(model, e, target=1)


@pytest.mark.parametrize("name", ["gemma", "qwen2"])
def test_rms_norms_in_input_dtype_keeps_each_familys_formula(name):
    """The helper rewrites each RMSNorm class with the formula its own forward computes (Gemma's
    (1 + w), Llama's w), found on a seeded input: the rewritten float64 model equals the model as
    transformers computes it (in float32 inside) to float32's rounding; a class computing another
    formula is a PeerConventionError naming it."""
    from nrm_verify.peers.base import PeerConventionError

    model, e = _case(name)
    with torch.no_grad():
        torch.nn.init.normal_(next(m for m in model.modules() if type(m).__name__.endswith("RMSNorm")).weight)
        theirs = model(e)
        with rms_norms_in_input_dtype(model):
            ours = model(e)
    assert float((ours - theirs).abs().max()) <= 1e-5 * float(theirs.abs().max())
    norm = type(next(m for m in model.modules() if type(m).__name__.endswith("RMSNorm")))
    own = norm.forward
    norm.forward = lambda self, h: 2 * own(self, h)
    try:
        with pytest.raises(PeerConventionError, match=norm.__name__):
            with rms_norms_in_input_dtype(model):
                pass
    finally:
        norm.forward = own
    assert norm.forward is own
    for bad in ("a model", None, 3):
        with pytest.raises(ArgumentError, match="takes a torch.nn.Module"):
            with rms_norms_in_input_dtype(bad):
                raise AssertionError("entering the context must raise")


def test_gpt2s_gelu_new_is_read_as_one_gelu_not_a_product():
    """gelu_new, 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))), is recorded as F.gelu(x, 'tanh')
    (checked against the module's output within 10³ ulp): one elementwise layer per block."""
    model, e = _case("gpt2-gelu_new")
    kinds = [c.kind.name for c in nrm.capture(model, e).calls if c.kind is not None]
    assert kinds.count("GELU") == 2 and "Multiply" not in kinds


def test_qwen2s_swiglu_gate_takes_nothing_by_default():
    """SwiGLU, down(silu(gate(x)) · up(x)): the SiLU factor is the unit's gate (Product.GLU)."""
    model, e = _case("qwen2")
    with rms_norms_in_input_dtype(model):
        m = nrm.explain(model, e, target=1)
    silu = [n for n in m.layers if n.endswith("mlp.act_fn")]
    assert silu and all(float(m.marginal(n).abs().max()) == 0.0 for n in silu)


def test_gelu_fast_is_read_as_an_activation_written_by_hand():
    """FastGELUActivation writes √(2/π) as 0.7978845608: not F.gelu's formula to 10³ ulp, so it is
    read as what it computes — 0.5 x · (1 + tanh(…x…)), a product of functions of x alone, one of
    them x up to a constant — an activation of x (nrm.graph's own signal): the relevance at its
    output reaches c_fc's output whole under LRP-0, and L1 holds at every layer."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                     activation_function="gelu_fast")
    model = Logits(transformers.GPT2LMHeadModel(config).to(D).eval()).eval()
    e = torch.randn(1, 4, 16, dtype=D)
    m = nrm.explain(model, e, target=0)
    assert laws.normalization(m).holds
    act = next(n for n in m.layers if n.endswith("mlp.act"))
    fc = next(n for n in m.layers if n.endswith("mlp.c_fc"))
    torch.testing.assert_close(m.marginal(act), m.marginal(fc), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("attn,dtype,tol", [("sdpa", torch.float64, 1e-12), ("eager", torch.float32, 1e-6),
                                            ("sdpa", torch.bfloat16, 1e-5)])
def test_transformers_vit_for_image_classification(attn, dtype, tol):
    """transformers' ViT (pixel values → class logits): read with nrm's defaults, L1 at every layer
    to the dtype's tolerance (half precision is explained in float32). Its eager attention's
    softmax computes in float32 (dtype=torch.float32): a no-op in a float32 model, read widened in
    a float64 one (nrm.capture.upcast)."""
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=24, num_labels=3)
    config._attn_implementation = attn
    vit = transformers.ViTForImageClassification(config).to(dtype).eval()

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = vit

        def forward(self, x):
            return self.vit(pixel_values=x).logits

    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    m = nrm.explain(Classifier().eval(), x, target=1)
    assert float(laws.normalization(m).deviation) <= tol
    assert all(bool(torch.isfinite(m.marginal(n)).all()) for n in m.layers)
    if dtype is torch.float32:  # in float64 the eager softmax's float32 is read widened (refused before 2026-12-07)
        wide = nrm.explain(Classifier().double().eval(), x.double(), target=1, check="full")
        assert float(laws.normalization(wide).deviation) <= 1e-12


def test_gpt2s_conv1d_is_recorded_as_a_linear_map_with_the_modules_own_output():
    """Each Conv1D is one recorded ``F.linear`` whose value is the module's output (not computed
    again), and the self-check of every map reproduces the model (check="full"); a Conv1D whose
    forward was replaced is refused by the capture's projected check, whether its output is wrong
    everywhere or at one token only, with the default check too."""
    import types

    model, e = _case("gpt2-gelu_new")
    m = nrm.explain(model, e, target=3, check="full")
    attn = model.model.transformer.h[0].attn
    calls = [c for c in m.network.captured.calls if c.path == "model.transformer.h.0.attn.c_attn"]
    assert [c.func for c in calls] == [torch.nn.functional.linear]
    own = type(attn.c_attn).forward

    def shifted(self, x, token=None):
        out = own(self, x)
        if token is None:
            return out + 1.0
        out = out.clone()
        out[:, token] += 1.0
        return out

    for token in (None, 2):
        attn.c_attn.forward = types.MethodType(lambda self, x, t=token: shifted(self, x, t), attn.c_attn)
        try:
            with pytest.raises(nrm.CaptureMismatchError, match="does not reproduce the module's output"):
                nrm.explain(model, e, target=3)
        finally:
            del attn.c_attn.forward


def test_gpt2s_conv1d_check_runs_once_per_signature_and_a_class_patched_forward_is_still_refused(monkeypatch):
    """The projected check of a Conv1D is a self-check of an interpretation: it runs the first
    time a signature (class, its forward, argument shapes) is seen, every time with
    check="full", and a forward patched on the class afterwards is another signature — refused."""
    from nrm.layers.fused import Conv1DDecomposition

    checks = []
    real = Conv1DDecomposition.recorded_as
    monkeypatch.setattr(Conv1DDecomposition, "recorded_as", lambda self, *a: checks.append(1) or real(self, *a))
    model, e = _case("gpt2-gelu_new")
    nrm.check.forget()
    first = nrm.explain(model, e, target=3)
    assert len(checks) >= 1
    done = len(checks)
    again = nrm.explain(model, e, target=3)
    assert len(checks) == done and torch.equal(first.marginal("input"), again.marginal("input"))
    nrm.explain(model, e, target=3, check="full")
    assert len(checks) > done
    conv1d = type(model.model.transformer.h[0].attn.c_attn)
    own = conv1d.forward
    monkeypatch.setattr(conv1d, "forward", lambda self, x: own(self, x) + 1.0)
    with pytest.raises(nrm.CaptureMismatchError, match="does not reproduce the module's output"):
        nrm.explain(model, e, target=3)


def test_gpt2s_conv1d_weights_changed_between_explains_are_read_as_they_are_now():
    """The check's W r is kept per weight tensor; a weight changed in place (through ``.data``,
    which leaves the version counter as it was, or under no_grad) is read anew: f is the model's."""
    model, e = _case("gpt2-gelu_new")
    nrm.explain(model, e, target=3)
    c_fc = model.model.transformer.h[1].mlp.c_fc
    c_fc.weight.data.mul_(-0.5)
    with torch.no_grad():
        want = model(e)[0, 3]
    torch.testing.assert_close(nrm.explain(model, e, target=3, check="full").f[0], want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        c_fc.weight.add_(0.01)
        want = model(e)[0, 3]
    torch.testing.assert_close(nrm.explain(model, e, target=3).f[0], want, rtol=1e-12, atol=1e-12)
