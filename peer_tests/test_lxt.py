"""nrm on ``transformers`` 4.55.4 models (GPT-2 LM head, a Llama causal LM, BERT sequence
classification; small random configurations, float64, no downloads) and equivalence with LXT
2.1's efficient AttnLRP and CP-LRP (``nrm_verify.peers.lxt``; ``docs/attention.md``, "LXT").

nrm explains ``inputs_embeds`` (the embedding output is the input layer; a token's relevance is
the sum over its hidden dimension); the target is the logit of token 7 at the last position
(LM) or of class 1 (BERT). LXT's relevance is x · ∂f/∂x of its patched model; nrm's is
f · m_l. Conventions: LRP-0 everywhere (nrm's default rule), θ = ½ (AttnLRP) or θ = 0 (CP-LRP),
SwiGLU's product uniform (AttnLRP) or its gate taking nothing (CP-LRP).
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

import nrm
from nrm_verify import laws
from nrm_verify.peers import lxt as peer
from nrm_verify.peers.base import PeerConventionError

transformers = pytest.importorskip("transformers", reason="transformers is installed by scripts/setup-peers.sh")
pytest.importorskip("lxt.efficient", reason="lxt 2.1 is installed by scripts/setup-peers.sh")

from transformers.models.llama import modeling_llama  # noqa: E402

D = torch.float64
TARGET = 7


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(name: str, attn: str = "sdpa", seed: int = 0):
    """A small random model of the family and an embedded token sequence (1, 6, 16); "vit": torchvision's
    VisionTransformer with 2×2 patches of a 16×16 image (``attn`` the patch size), two images."""
    torch.manual_seed(seed)
    if name == "vit":
        from test_torchvision_attention import _instance, _vit
        return _instance(lambda: _vit(8 if attn == "sdpa" else int(attn)))
    if name == "gpt2":
        # gelu_pytorch_tanh is F.gelu(approximate="tanh"); GPT-2's default gelu_new is the same function written
        # with pow, tanh and products, which nrm reads as that composite, not as one activation
        config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                         activation_function="gelu_pytorch_tanh", attn_implementation=attn)
        model = transformers.GPT2LMHeadModel(config)
    elif name == "llama":
        config = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                                          attn_implementation=attn)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=24, max_position_embeddings=16, num_labels=3,
                                         attn_implementation=attn)
        model = transformers.BertForSequenceClassification(config)
    model = model.to(D).eval()
    ids = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        return model, model.get_input_embeddings()(ids).detach()


class Logit(torch.nn.Module):
    """inputs_embeds → the logits at the last position (LM) or the class logits (BERT)."""

    def __init__(self, model, causal_lm: bool = True):
        super().__init__()
        self.model, self.causal_lm = model, causal_lm

    def forward(self, e):
        if self.causal_lm:
            return self.model(inputs_embeds=e, use_cache=False).logits[:, -1, :]
        return self.model(inputs_embeds=e).logits


@contextlib.contextmanager
def rms_norm_in_input_dtype():
    """transformers' LlamaRMSNorm computes in float32 whatever the model's dtype (nrm reads that as
    the model computes it: test_llama_in_float64_as_transformers_writes_it); the same formula in the
    input's dtype, for the comparisons with LXT in float64 at 1e-10."""
    original = modeling_llama.LlamaRMSNorm.forward

    def forward(self, h):
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    modeling_llama.LlamaRMSNorm.forward = forward
    try:
        yield
    finally:
        modeling_llama.LlamaRMSNorm.forward = original


def explained(name, model):
    """The module nrm explains: the logits of ``Logit`` (the image model itself for ViT)."""
    return model if name == "vit" else Logit(model, name != "bert").eval()


def explain(name, model, x, variant="attnlrp", target=TARGET):
    with rms_norm_in_input_dtype(), peer.conventions(variant):
        return nrm.explain(explained(name, model), x, target=target, check="full")


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


MODELS = [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa"), ("bert", "eager"), ("bert", "sdpa")]


@pytest.mark.parametrize("name,attn", MODELS, ids=lambda v: v)
@pytest.mark.parametrize("variant", peer.VARIANTS)
def test_nrm_reads_the_model_and_l1_holds_at_every_layer(name, attn, variant):
    """Captured (check='full': every map reproduces the model's values); f is the model's logit;
    L1 ≤ 1e-12 (nrm_verify.laws.normalization: every layer, copies of the residual stream
    counted); the kinds of a transformer are all there."""
    model, x = build(name, attn)
    m = explain(name, model, x, variant, target=1)
    with torch.no_grad(), rms_norm_in_input_dtype():
        assert abs(float(m.f[0]) - float(Logit(model, name != "bert")(x)[0, 1])) <= 1e-12
    assert float(laws.normalization(m).deviation) <= 1e-12
    kinds = {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    assert {"MatMul", "Softmax", "Dense", "Add", "AddConstant"} <= kinds
    if name == "llama":
        assert {"Negate", "Cat", "Expand", "Multiply", "Power", "Select"} <= kinds  # rotary, GQA, SwiGLU, RMSNorm
    if name == "gpt2":
        assert "Select" in kinds  # SDPA's is_causal, or eager's causal where, as where(keep, scores, finfo.min)


@pytest.mark.parametrize("variant", peer.VARIANTS)
def test_gpt2_eager_minus_inf_mask_equals_lxt_and_sdpa(variant):
    """GPT-2's eager attention adds its finfo.min mask to scores already set to finfo.min by its
    causal where: −inf in the model's values. nrm records those scores as finfo.min (masked: no
    parent, the mask value to ⊥); every marginal is finite, L1 ≤ 1e-12 at every layer, the
    relevance equals LXT's efficient mode on the same eager model (≤ 1e-10 relative) and nrm's own
    on the SDPA path (the same function)."""
    model, x = build("gpt2", "eager")
    m = explain("gpt2", model, x, variant)
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert all(bool(torch.isfinite(m.marginal(n)).all()) for n in m.layers)
    ours = m.marginal("input") * m.f[0]
    with peer.patched("gpt2", variant, identity_epsilon=0.0):
        theirs = peer.relevance(model, x, TARGET)
    assert relative(ours, theirs) <= 1e-10
    sdpa, _ = build("gpt2", "sdpa")
    other = explain("gpt2", sdpa, x, variant)
    assert relative(ours, other.marginal("input") * other.f[0]) <= 1e-10


def target_of(name):
    return 1 if name in ("bert", "vit") else TARGET


def causal_lm(name):
    """peer.logits' mode: the last position of an LM, a classifier of embeddings, an image model (None)."""
    return None if name == "vit" else name != "bert"


def lxt_relevance(name, model, x, variant="attnlrp", **kwargs):
    """LXT's relevance at inputs_embeds under its map of the family (BERT: on LXT's copy of the class)."""
    with peer.patched(name, variant, **kwargs):
        return peer.relevance(peer.lxt_model(model), x, target_of(name), causal_lm=causal_lm(name))


# every family and variant LXT 2.1's efficient maps have among GPT-2, Llama, BERT, ViT (BERT: AttnLRP only; ViT:
# torchvision's, CP-LRP only, patch sizes 8 and 4 in place of the attention implementation)
CASES = [(name, attn, variant) for name, attns in (("gpt2", ["sdpa"]), ("llama", ["sdpa"]), ("bert", ["eager", "sdpa"]),
                                                   ("vit", ["8", "4"]))
         for attn in attns for variant in peer.FAMILIES[name]]


@pytest.mark.parametrize("name,attn,variant", CASES, ids=lambda v: v)
def test_lxt_equals_nrm_at_the_input_embeddings(record, name, attn, variant):
    """LXT's efficient AttnLRP / CP-LRP (identity rule with ε = 0 in place of its 1e-10) equals
    f · m_input of nrm with the matching conventions, ≤ 1e-10 relative (≈ 1e-15 observed); token
    relevance (the sum over the hidden dimension) follows. Recorded in deviations.json (peer
    ``lxt``; the README's LXT table is read from it)."""
    model, x = build(name, attn)
    m = explain(name, model, x, variant, target=target_of(name))
    ours = m.marginal("input") * per_sample(m.f, x)
    theirs = lxt_relevance(name, model, x, variant, identity_epsilon=0.0)
    record(lxt_explainer(name, variant), f"efficient {variant}", case_label(name, attn), ours, theirs)
    assert relative(ours, theirs) <= 1e-10
    assert relative(ours.sum(-1), theirs.sum(-1)) <= 1e-10


def per_sample(f, x):
    """f of each sample, broadcast over the sample's dimensions."""
    return f.reshape((-1,) + (1,) * (x.dim() - 1))


BLOCKS = {"gpt2": "transformer.h", "llama": "model.layers", "bert": "bert.encoder.layer", "vit": "encoder.layers"}


def case_label(name, attn):
    """The model column of the records: the family and its attention implementation (ViT: patch size)."""
    return f"{name} (patch {attn})" if name == "vit" else f"{name} ({attn})"


def lxt_explainer(name, variant):
    """The explainer whose name and row the records of an efficient-mode comparison carry."""
    return peer.LXTExplainer(name, variant, identity_epsilon=0.0, causal_lm=bool(causal_lm(name)))


@pytest.mark.parametrize("name,attn,variant", CASES, ids=lambda v: v)
def test_lxt_equals_nrm_at_every_block_output(record, name, attn, variant):
    """Relevance at each block's output hidden states, h · ∂f/∂h under LXT's patch, equals
    f · m at nrm's layer of that module's output, ≤ 1e-10 relative."""
    model, x = build(name, attn)
    m = explain(name, model, x, variant, target=target_of(name))
    with peer.patched(name, variant, identity_epsilon=0.0):
        theirs_model = peer.lxt_model(model)
        blocks = [f"{BLOCKS[name]}.{n}" for n, _ in theirs_model.get_submodule(BLOCKS[name]).named_children()]
        with peer.kept_outputs(theirs_model, blocks) as kept:
            peer.relevance(theirs_model, x, target_of(name), causal_lm=causal_lm(name))
    for i, block in enumerate(blocks):
        theirs = (kept[block] * kept[block].grad).detach()
        # nrm's layer of the block's output: the one whose recorded value is that tensor (its residual sum;
        # LXT's patched norms compute it in another order, so within rounding)
        h = kept[block].detach()
        same = [n for n in m.layers if n != "input" and m.activations(n).shape == h.shape
                and float((m.activations(n) - h).abs().max()) <= 1e-12 * float(h.abs().max())]
        assert same, i
        ours = m.marginal(same[-1]) * per_sample(m.f, h)
        record(lxt_explainer(name, variant), f"efficient {variant}", case_label(name, attn), ours, theirs, what=block)
        assert relative(ours, theirs) <= 1e-10, (i, same)


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "vit"])
def test_lxt_identity_rule_epsilon_is_the_whole_deviation(name):
    """LXT's identity rule is σ(z)/(z + 1e-10) · g (BERT: on its GELU and its pooler's tanh): with its
    default the deviation from nrm is about 1e-10 / |z| (far above rounding), and it grows tenfold
    with ε = 1e-9 — the cause."""
    model, x = build(name)
    variant = peer.FAMILIES[name][0]
    m = explain(name, model, x, variant, target=target_of(name))
    ours = m.marginal("input") * per_sample(m.f, x)
    devs = [relative(ours, lxt_relevance(name, model, x, variant, identity_epsilon=eps)) for eps in (None, 1e-9)]
    assert 1e-13 < devs[0] < 1e-6
    assert 5 < devs[1] / devs[0] < 15


def test_lxt_float32_rms_norm_is_a_deviation_of_dtype():
    """LXT's rms_norm_forward (as transformers' RMSNorm) computes in float32 in a float64 model: its
    relevance then differs from nrm's float64 one at float32 rounding (≥ 1e-9), and not with the
    formula in the input's dtype (test_lxt_equals_nrm_at_the_input_embeddings)."""
    model, x = build("llama")
    m = explain("llama", model, x)
    ours = m.marginal("input") * m.f[0]
    with peer.patched("llama", "attnlrp", identity_epsilon=0.0, rms_in_input_dtype=False):
        theirs = peer.relevance(model, x, TARGET)
    assert 1e-9 < relative(ours, theirs) < 1e-4


def test_cp_lrp_is_conservative_and_gives_the_attention_nothing():
    """CP-LRP on Llama (θ = 0, SwiGLU's gate takes nothing, 1/σ held): the query and key
    projections get nothing; with LRP-0 and no biases (Llama has none) nothing reaches ⊥ except
    through the softmax-free path, so the input marginal sums to 1 within rounding."""
    model, x = build("llama")
    m = explain("llama", model, x, "cp")
    for layer in ("model.model.layers.0.self_attn.q_proj", "model.model.layers.0.self_attn.k_proj",
                  "model.model.layers.0.mlp.gate_proj"):
        assert float(m.marginal(layer).abs().max()) == 0.0, layer
    assert abs(float(m.marginal("input").sum()) - 1) <= 1e-12


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_llama_in_float64_as_transformers_writes_it(attn):
    """Llama's RMSNorm (and its eager softmax) compute in float32 inside a float64 model: read as
    written, in float64 (nrm.capture.upcast; before 2026-12-07 refused by name, "converts
    torch.float64 to torch.float32"). f is the model's logit, L1 ≤ 1e-12 at every layer, every map
    reproduces the model's values (check="full", the float32 steps to float32's tolerance), and
    the input heatmap is the one of the norm rewritten in float64 (rms_norm_in_input_dtype) to
    float32's rounding."""
    model, x = build("llama", attn)
    with peer.conventions("attnlrp"):
        m = nrm.explain(Logit(model).eval(), x, target=TARGET, check="full")
    with torch.no_grad():
        assert abs(float(m.f[0]) - float(Logit(model)(x)[0, TARGET])) <= 1e-12
    assert float(laws.normalization(m).deviation) <= 1e-12
    widened = explain("llama", model, x).marginal("input")
    assert 0 < relative(m.marginal("input"), widened) <= 1e-5


@pytest.mark.parametrize("name,attn", [("llama", "eager"), ("llama", "sdpa"), ("gpt2", "sdpa"), ("bert", "eager")])
def test_float32_as_transformers_writes_it(name, attn):
    """In float32 transformers' own RMSNorm and Llama's eager softmax keep the dtype: every model read
    as written; f is the model's logit and L1 holds to float32 precision."""
    model, x = build(name, attn)
    model, x = model.float(), x.float()
    with peer.conventions("attnlrp"):
        m = nrm.explain(Logit(model, name != "bert").eval(), x, target=1)
    with torch.no_grad():
        assert abs(float(m.f[0]) - float(Logit(model, name != "bert")(x)[0, 1])) <= 1e-5
    assert float(laws.normalization(m).deviation) <= 1e-5


def test_patch_is_undone():
    """peer.patched restores every class method and module attribute LXT's monkey_patch replaced."""
    module = peer.family("llama")
    before = (module.LlamaMLP.forward, module.LlamaRMSNorm.forward, module.eager_attention_forward,
              module.ALL_ATTENTION_FUNCTIONS, dict(module.ALL_ATTENTION_FUNCTIONS.items()))
    for variant in peer.VARIANTS:
        with peer.patched("llama", variant):
            assert module.LlamaMLP.forward is not before[0]
    after = (module.LlamaMLP.forward, module.LlamaRMSNorm.forward, module.eager_attention_forward,
             module.ALL_ATTENTION_FUNCTIONS, dict(module.ALL_ATTENTION_FUNCTIONS.items()))
    assert after == before


def test_bert_patch_is_undone_and_lxts_copy_computes_the_same_model():
    """LXT's BERT map replaces every attribute of transformers' modeling_bert by those of its own copy
    of the file (lxt.efficient.models.bert); peer.lxt_model builds that copy's class from the model's
    config and parameters: the same logits (eager and SDPA, to the last bit here), and after
    peer.patched the module is transformers' own again, with no attribute left behind."""
    module = peer.family("bert")
    before = dict(vars(module))
    for attn in ("eager", "sdpa"):
        model, x = build("bert", attn)
        with peer.patched("bert"):
            theirs = peer.lxt_model(model)
            assert type(theirs).__module__ == "lxt.efficient.models.bert"
            with torch.no_grad():
                assert float((theirs(inputs_embeds=x).logits - model(inputs_embeds=x).logits).abs().max()) <= 1e-14
    assert dict(vars(module)) == before
    with pytest.raises(PeerConventionError, match="inside peer.patched"):
        peer.lxt_model(model)  # outside the patch modeling_bert's class is transformers' own


def test_vit_patch_is_undone():
    """LXT's ViT map patches torch's own GELU, LayerNorm and MultiheadAttention classes (keeping the
    originals as original_forward); peer.patched leaves the three classes as they were."""
    classes = (torch.nn.GELU, torch.nn.LayerNorm, torch.nn.MultiheadAttention)
    before = {cls: dict(vars(cls)) for cls in classes}
    with peer.patched("vit", "cp"):
        assert all("original_forward" in vars(cls) for cls in (torch.nn.GELU, torch.nn.MultiheadAttention))
        assert torch.nn.LayerNorm.forward is not before[torch.nn.LayerNorm]["forward"]
    assert {cls: dict(vars(cls)) for cls in classes} == before


def test_lxt_has_no_attnlrp_map_for_vit():
    """lxt.efficient.models.vit_torch defines cp_LRP only (AttnLRP outside the attention, CP-LRP inside):
    AttnLRP on ViT is refused by name."""
    assert not hasattr(__import__("lxt.efficient.models.vit_torch", fromlist=["x"]), "attnLRP")
    with pytest.raises(PeerConventionError, match="no 'attnlrp' map for 'vit'"):
        with peer.patched("vit", "attnlrp"):
            pass


def test_lxt_has_no_cp_lrp_map_for_bert():
    """lxt.efficient.models.bert defines attnLRP only: asking for CP-LRP on BERT is refused by name (the
    CP-LRP comparison runs on GPT-2 and Llama)."""
    assert not hasattr(__import__("lxt.efficient.models.bert", fromlist=["x"]), "cp_LRP")
    with pytest.raises(PeerConventionError, match="no 'cp' map for 'bert'"):
        with peer.patched("bert", "cp"):
            pass
    with pytest.raises(PeerConventionError, match="no 'cp' map for 'bert'"):
        peer.LXTExplainer("bert", "cp", causal_lm=False)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_batch_invariance(name):
    """A batch of two sequences equals each sequence alone (nrm_verify.laws.batch_invariance)."""
    model, x = build(name)
    _, y = build(name, seed=1)
    with rms_norm_in_input_dtype(), peer.conventions("attnlrp"):
        result = laws.batch_invariance(Logit(model).eval(), torch.cat([x, y]), TARGET)
    assert result.holds is True, result


LAW_CASES = [(name, variant) for name in ("gpt2", "llama", "bert") for variant in peer.FAMILIES[name]]


@pytest.mark.parametrize("name,variant", LAW_CASES, ids=lambda v: v)
def test_the_laws_of_the_measure_on_each_family(name, variant):
    """L1 (every layer, and every column of every kernel), L2–L7 and L17 through
    :mod:`nrm_verify.laws` on each transformers family under AttnLRP and CP-LRP (LXT's
    conventions), with the events the CNN and torchvision attention families use (A: the three
    heaviest neurons a third of the way up; B: half of a layer two thirds up with its absorber;
    Markov at the highest layer that reads only the one below). ViT's are in
    test_torchvision_attention.py."""
    from test_torchvision_laws import laws_that_fail

    model, x = build(name, "eager" if name == "bert" else "sdpa")
    m = explain(name, model, x, variant, target=target_of(name))
    failed = laws_that_fail(m)
    assert not failed, failed


class Padded(torch.nn.Module):
    """BERT with a padding mask (the last two tokens are padding): the class logits."""

    def __init__(self, model, mask):
        super().__init__()
        self.model = model
        self.register_buffer("mask", mask)

    def forward(self, e):
        return self.model(inputs_embeds=e, attention_mask=self.mask).logits


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_padding_tokens_take_nothing(attn):
    """BERT's padding mask (additive finfo.min in eager, a float mask through SDPA): the padded
    tokens are keys no query reads, and the class token reads only through attention, so they take
    exactly no relevance; L1 holds."""
    model, x = build("bert", attn)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    m = nrm.explain(Padded(model, mask).eval(), x, target=1, check="full")
    with torch.no_grad():
        assert abs(float(m.f[0]) - float(model(inputs_embeds=x, attention_mask=mask).logits[0, 1])) <= 1e-12
    tokens = m.marginal("input")[0].sum(-1)
    assert float(tokens[4:].abs().max()) == 0.0
    assert float(tokens[:4].abs().min()) > 0
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_lxt_explainer_is_the_peer_interface():
    """LXTExplainer (the Explainer interface of the other peers) gives the same relevance at the input
    and at a block output as the functions above, for a batch of two with a target per sample."""
    model, x = build("llama")
    _, y = build("llama", seed=1)
    batch = torch.cat([x, y])
    got = peer.LXTExplainer("llama", identity_epsilon=0.0)(model, batch, [TARGET, 3], layers=["model.layers.1"])
    with peer.patched("llama", identity_epsilon=0.0):
        want = torch.cat([peer.relevance(model, x, TARGET), peer.relevance(model, y, 3)])
    assert relative(got["input"], want) <= 1e-12
    assert got["model.layers.1"].shape == batch.shape
    assert peer.LXTExplainer("gpt2").name == "lxt" and peer.LXTExplainer("gpt2").row is None


def test_the_text_report_of_gpt2(tmp_path):
    """nrm_verify.report.text on GPT-2: the tokens' relevance at inputs_embeds, the relevance
    through each head of both layers (a row sums to the layer's), the flow from the input
    tokens to the last token layer (summing to the walks through both); the page colours the
    six tokens."""
    from nrm import At
    from nrm_verify.report.text import head_relevance, text_report, token_flow, token_relevance

    model, x = build("gpt2")
    m = explain("gpt2", model, x)
    attention = [n for n in m.layers if n.split(".")[-1].startswith("softmax") and len(m.layer_shape(n)) == 3]
    assert len(attention) == 2, m.layers
    H = head_relevance(m, attention)
    assert H.shape == (2, 2)
    for row, layer in zip(H, attention):
        assert abs(float(row.sum() - m.f[0] * m.measure(At(layer))[0])) <= 1e-12 * max(1.0, float(m.f.abs()))
    tokens_layers = [n for n in m.layers if tuple(m.layer_shape(n)) == (6, 16)]
    F = token_flow(m, "input", tokens_layers[-1])
    assert F.shape == (6, 6)
    through = m.f[0] * m.measure(At("input") & At(tokens_layers[-1]))[0]
    assert abs(float(F.sum() - through)) <= 1e-12 * max(1.0, float(m.f.abs()))
    assert abs(float(token_relevance(m).sum() - m.f[0] * m.measure(At("input"))[0])) <= 1e-12
    page = text_report(m, [f"t{i}" for i in range(6)], tmp_path / "r", attention=attention,
                       flow=("input", tokens_layers[-1]))
    assert page.read_text().count("<span title=") == 6


def test_lxt_explainer_on_vit():
    """LXTExplainer("vit", "cp") runs torchvision's ViT on the image (no inputs_embeds): the same
    relevance as peer.relevance for a target per image, and a block output's relevance."""
    model, x = build("vit")
    got = peer.LXTExplainer("vit", "cp", identity_epsilon=0.0)(model, x, [1, 2],
                                                                layers=["encoder.layers.encoder_layer_1"])
    with peer.patched("vit", "cp", identity_epsilon=0.0):
        want = torch.cat([peer.relevance(model, x[:1], 1, causal_lm=None),
                          peer.relevance(model, x[1:], 2, causal_lm=None)])
    assert relative(got["input"], want) <= 1e-12
    assert got["encoder.layers.encoder_layer_1"].shape == (2, 5, 8)


# LXT's explicit mode (nrm_verify.peers.lxt_explicit): LXT 2.1's wheel ships its explicit rules but no family
# map; its recipe for vision transformers on torchvision's ViT, CP-LRP in the attention


def explicit_case(patch):
    from nrm_verify.peers import lxt_explicit

    model, x = build("vit", patch)
    m = explain("vit", model, x, "cp", target=1)
    return lxt_explicit, model, x, m


def block_values(model, x):
    """The output of each encoder block of the plain model."""
    values = []
    handles = [b.register_forward_hook(lambda mod, a, out: values.append(out.detach())) for b in model.encoder.layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return values


@pytest.mark.parametrize("patch", ["8", "4"])
def test_lxt_explicit_equals_nrm_at_the_image_and_every_block_output(record, patch):
    """LXT's explicit CP-LRP composite (MultiheadAttention_CP, LayerNormEpsilon, IdentityRule on GELU,
    EpsilonRule on the projections, add2 on '+', zennit's ε on Conv2d and Linear) with every
    stabilizer 0 and its rules kept in the traced model equals f · m of nrm (LRP-0, θ = 0) at the
    image and at each encoder block's output, ≤ 1e-10 relative (≈ 1e-15 observed)."""
    lxt_explicit, model, x, m = explicit_case(patch)
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(len(model.encoder.layers))]
    explainer = record.uses(lxt_explicit.LXTExplicitExplainer(epsilon=0.0, linear_epsilon=0.0))
    theirs = explainer(model, x, 1, layers=blocks)
    ours = m.marginal("input") * per_sample(m.f, x)
    record(explainer, "explicit cp", f"vit (patch {patch})", ours, theirs["input"])
    assert relative(ours, theirs["input"]) <= 1e-10
    for name, h in zip(blocks, block_values(model, x)):
        same = [n for n in m.layers if n != "input" and m.activations(n).shape == h.shape
                and float((m.activations(n) - h).abs().max()) <= 1e-12 * float(h.abs().max())]
        assert same, name
        ours = m.marginal(same[-1]) * per_sample(m.f, h)
        record(explainer, "explicit cp", f"vit (patch {patch})", ours, theirs[name], what=name)
        assert relative(ours, theirs[name]) <= 1e-10, name


def test_lxt_explicit_stabilizers_are_the_whole_deviation():
    """LXT's explicit rules divide by z + ε, unsigned (EpsilonRule and add2 1e-8, layer_norm and the
    attention's A · V 1e-6); with its defaults the relevance differs from nrm's LRP-0 far above
    rounding, and the deviation is linear in ε (one ε everywhere: tenfold ε, tenfold deviation);
    with ε = 0 it is rounding (test above) — the cause."""
    lxt_explicit, model, x, m = explicit_case("8")
    ours = m.marginal("input") * per_sample(m.f, x)
    default = relative(ours, lxt_explicit.relevance(model, x, 1, epsilon=None, linear_epsilon=1e-6)["input"])
    assert 1e-10 < default < 1e-2
    devs = [relative(ours, lxt_explicit.relevance(model, x, 1, epsilon=e, linear_epsilon=e)["input"])
            for e in (1e-9, 1e-8)]
    assert devs[0] > 1e-13 and 5 < devs[1] / devs[0] < 15


def test_lxt_explicit_tracer_drops_the_gelu_identity_rule():
    """Composite.register traces the model with HFTracer (the composite's add2 needs the trace), which
    traces through LXT's WrapModules: IdentityRule(GELU) becomes a call of the GELU module itself, so
    the GELU's gradient acts on the relevance — a deviation of order one. With lxt_explicit's
    leaf_tracer the rule stays (a call of the IdentityRule module) and the deviation is rounding."""
    import copy

    from transformers.utils.fx import HFTracer

    lxt_explicit, model, x, m = explicit_case("8")
    ours = m.marginal("input") * per_sample(m.f, x)
    dropped = relative(ours, lxt_explicit.relevance(model, x, 1, keep_rules=False)["input"])
    assert dropped > 1e-3
    calls = {}
    for tracer in (HFTracer, lxt_explicit.leaf_tracer()):
        traced = lxt_explicit.composite().register(copy.deepcopy(model), dummy_inputs={"x": x}, tracer=tracer)
        calls[tracer] = {n.target for n in traced.graph.nodes if n.op == "call_module" and ".mlp.1" in n.target}
    assert calls[HFTracer] == {"encoder.layers.encoder_layer_0.mlp.1.module",
                               "encoder.layers.encoder_layer_1.mlp.1.module"}
    kept = [c for t, c in calls.items() if t is not HFTracer][0]
    assert kept == {"encoder.layers.encoder_layer_0.mlp.1", "encoder.layers.encoder_layer_1.mlp.1"}
    assert relative(ours, lxt_explicit.relevance(model, x, 1, epsilon=0.0)["input"]) <= 1e-10


def test_lxt_explicit_stabilizers_are_restored():
    """lxt_explicit.stabilizers restores LXT's defaults on exit (its rules are module-level state)."""
    import lxt.explicit.functional as lf
    import lxt.explicit.rules as rules

    from nrm_verify.peers import lxt_explicit

    before = (rules.EpsilonRule.__init__.__defaults__, lf.add2.__defaults__,
              lf.layer_norm_grad_fn.forward.__defaults__, rules.epsilon_lrp)
    with lxt_explicit.stabilizers(0.0):
        assert rules.EpsilonRule.__init__.__defaults__ == (0.0,) and rules.epsilon_lrp is not before[3]
    assert (rules.EpsilonRule.__init__.__defaults__, lf.add2.__defaults__,
            lf.layer_norm_grad_fn.forward.__defaults__, rules.epsilon_lrp) == before
    assert before[:3] == ((1e-8,), (False, 1e-8), (1e-6,))


def test_lxt_explicit_stabilizer_is_unsigned():
    """The cause of the stabilizer deviation, isolated: LXT's explicit EpsilonRule on two linear layers
    divides by z + ε whatever the sign of z. It equals nrm's Epsilon(ε, stabilizer_sign="unsigned")
    to rounding, and differs from the signed z + ε s(z) (zennit's, nrm's default) wherever z < 0."""
    import copy

    import lxt.explicit.core as core
    import lxt.explicit.rules as rules

    from nrm_verify.peers import lxt_explicit

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)).to(D).eval()
    x = torch.randn(2, 4, dtype=D)
    eps = 0.1
    with lxt_explicit.stabilizers(eps):
        theirs_model = copy.deepcopy(model)
        core.Composite({torch.nn.Linear: rules.EpsilonRule}).register(theirs_model)
        xx = x.clone().requires_grad_(True)
        f = theirs_model(xx)[:, 1]
        f.backward(f.detach())
    with torch.no_grad():
        z = model[0](x)
    assert bool((z < 0).any()) and bool((z > 0).any())
    devs = {}
    for sign in ("unsigned", "signed"):
        m = nrm.explain(model, x, 1, rules=nrm.rules.Epsilon(eps, stabilizer_sign=sign))
        devs[sign] = relative(m.marginal("input") * per_sample(m.f, x), xx.grad)
    assert devs["unsigned"] <= 1e-12 and devs["signed"] > 1e-3, devs


class MaskedSoftmaxNet(torch.nn.Module):
    """Linear → scores + mask (``fill`` at the masked positions, 0 elsewhere) → softmax → Linear."""

    def __init__(self, fill, softmax=torch.softmax):
        super().__init__()
        torch.manual_seed(0)
        self.inner, self.outer, self.softmax = torch.nn.Linear(4, 5), torch.nn.Linear(5, 2), softmax
        self.register_buffer("mask", torch.tensor([0.0, fill, 0.0, fill, 0.0], dtype=D))

    def forward(self, x):
        return self.outer(self.softmax(self.inner(x) + self.mask, -1))


def test_lxt_explicit_softmax_sets_minus_inf_to_zero():
    """LXT's explicit softmax (AttnLRP Prop. 3.1, R_i = x_i (R_i − s_i Σ_j R_j)) replaces −inf inputs by
    0 in its backward, so a −inf-masked score takes nothing instead of −inf · 0 = NaN. nrm reads
    the mask as finfo.min (finite): the masked score's kernel column is x_i · 0 = 0, the same.
    LXT on the −inf mask equals nrm on the finfo.min mask; without LXT's replacement the
    relevance at the masked scores is NaN."""
    import lxt.explicit.core as core
    import lxt.explicit.functional as lf
    import lxt.explicit.rules as rules

    from nrm_verify.peers import lxt_explicit

    x = torch.randn(3, 4, dtype=D, generator=torch.Generator().manual_seed(1))
    ours_model = MaskedSoftmaxNet(torch.finfo(D).min).to(D).eval()
    with peer.conventions("attnlrp"):
        m = nrm.explain(ours_model, x, 1, check="full")
    theirs = MaskedSoftmaxNet(float("-inf"), softmax=lf.softmax).to(D).eval()
    with lxt_explicit.stabilizers(0.0):
        core.Composite({torch.nn.Linear: rules.EpsilonRule}).register(theirs)
        xx = x.clone().requires_grad_(True)
        f = theirs(xx)[:, 1]
        f.backward(f.detach())
    assert relative(m.marginal("input") * per_sample(m.f, x), xx.grad) <= 1e-12
    scores = torch.tensor([[1.0, float("-inf"), 0.5]], dtype=D, requires_grad=True)
    s = lf.softmax(scores, -1)
    s.backward(s.detach())
    assert float(scores.grad[0, 1]) == 0.0 and bool(torch.isfinite(scores.grad).all())
    raw = scores.detach() * (s.detach() - s.detach() * s.detach().sum(-1, keepdim=True))
    assert bool(torch.isnan(raw[0, 1]))  # the formula itself at −inf


HALF_TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2}  # relative to the float64 model's relevance


@pytest.mark.parametrize("name,attn", [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa"), ("llama", "eager")])
@pytest.mark.parametrize("dtype", list(HALF_TOLERANCE), ids=str)
def test_half_precision_is_explained_in_float32(name, attn, dtype):
    """The model and input in bfloat16 / float16, as transformers writes them (its RMSNorm and
    Llama's eager softmax compute in float32 and cast back: read, the record being widened to
    float32): relevance in float32, finite at every layer, L1 ≤ 1e-5 (float32 accumulation;
    ≈ 1e-7 observed), and f · m_input within the stated tolerance of the float64 model's (the
    half-precision forward's rounding: ≈ 4e-3 – 8e-3 bfloat16, ≈ 6e-4 – 8e-4 float16 observed)."""
    model, x = build(name, attn)
    with peer.conventions("attnlrp"):
        m = nrm.explain(Logit(copy.deepcopy(model).to(dtype)).eval(), x.to(dtype), target=TARGET)
    assert all(m.marginal(n).dtype == torch.float32 and bool(torch.isfinite(m.marginal(n)).all()) for n in m.layers)
    assert float(laws.normalization(m).deviation) <= 1e-5
    want = explain(name, *build(name, "sdpa"))  # float64 throughout (eager Llama: its softmax in float32)
    ours = m.marginal("input").double() * float(m.f[0])
    assert relative(ours, want.marginal("input") * want.f[0]) <= HALF_TOLERANCE[dtype]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.parametrize("dtype", list(HALF_TOLERANCE), ids=str)
def test_lxt_in_half_precision_beside_nrm(name, dtype):
    """LXT's own relevance of the half-precision model (its map as shipped, RMSNorm in float32,
    the backward in the model's dtype) beside nrm's (kernels and relevance in float32), each
    against the float64 model's (nrm's, equal to LXT's in float64 within 1e-10). Both finite and
    within the half-precision forward's tolerance on these models. In bfloat16 (8-bit mantissa)
    LXT's is the further from float64: 1.0e-2 (GPT-2) and 1.1e-2 (Llama) against nrm's 3.7e-3 and
    7.8e-3 observed — its gradient is rounded to bfloat16 at every operation of the backward,
    nrm's relevance only where the model itself rounded. In float16 (11 bits) they are alike
    (9.3e-4 / 8.0e-4 against 6.1e-4 / 8.2e-4)."""
    model, x = build(name, "sdpa")
    want = explain(name, model, x)
    truth = want.marginal("input") * want.f[0]
    with peer.conventions("attnlrp"):
        m = nrm.explain(Logit(copy.deepcopy(model).to(dtype)).eval(), x.to(dtype), target=TARGET)
    ours = m.marginal("input").double() * float(m.f[0])
    theirs = lxt_relevance(name, copy.deepcopy(model).to(dtype), x.to(dtype), rms_in_input_dtype=False)
    assert theirs.dtype == dtype and bool(torch.isfinite(theirs).all()) and bool(torch.isfinite(ours).all())
    ours_error, their_error = relative(ours, truth), relative(theirs.double(), truth)
    assert max(ours_error, their_error) <= HALF_TOLERANCE[dtype], (ours_error, their_error)
    if dtype == torch.bfloat16:
        assert ours_error < their_error, (ours_error, their_error)


class _GeluMLP(torch.nn.Module):
    """Linear → GELU → Linear; ``lxt=True`` applies the GELU through LXT's identity rule, as its
    maps of GPT-2, Llama and BERT do."""

    def __init__(self, lxt: bool = False):
        super().__init__()
        self.lin1, self.act, self.lin2, self.lxt = torch.nn.Linear(4, 6), torch.nn.GELU(), torch.nn.Linear(6, 3), lxt

    def forward(self, x):
        from lxt.efficient.rules import identity_rule_implicit

        z = self.lin1(x)
        return self.lin2(identity_rule_implicit(self.act, z) if self.lxt else self.act(z))


def test_lxt_identity_rule_is_nan_at_a_zero_input_in_float16_and_nrm_is_finite():
    """A cause of LXT's NaNs in half precision: its identity rule keeps out / (x + 1e-10) for the
    backward, and in float16 1e-10 rounds to 0, so an activation whose input is exactly 0 (here a
    GELU unit with zero weights and bias) gives 0 / 0 = NaN, which the backward spreads to every
    input. In bfloat16 and float32 1e-10 is representable and the relevance is finite. nrm's
    identity rule passes the relevance without dividing: finite in every dtype, L1 ≤ 1e-6."""
    from nrm_verify import laws

    torch.manual_seed(0)
    net = _GeluMLP()
    with torch.no_grad():
        net.lin1.weight[0].zero_()
        net.lin1.bias[0].zero_()
    x = torch.randn(2, 4)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        theirs = _GeluMLP(lxt=True)
        theirs.load_state_dict(net.state_dict())
        theirs = theirs.to(dtype).eval()
        xx = x.to(dtype).requires_grad_(True)
        theirs(xx)[:, 1].sum().backward()
        assert bool(torch.isfinite(xx * xx.grad).all()) == (dtype != torch.float16), dtype
        m = nrm.explain(copy.deepcopy(net).to(dtype).eval(), x.to(dtype), target=1)
        assert bool(torch.isfinite(m.marginal("input")).all()), dtype
        assert float(laws.normalization(m).deviation) <= 1e-6, dtype


def test_lxt_explicit_explainer_names_a_bad_target_or_layer():
    """A target outside the logits and a layer the traced ViT does not have are ArgumentErrors
    naming them (before: an IndexError, and an unknown layer silently left out)."""
    from nrm.errors import ArgumentError
    from nrm_verify.peers.lxt_explicit import LXTExplicitExplainer

    _, model, x, _ = explicit_case("8")
    explainer = LXTExplicitExplainer()
    with pytest.raises(ArgumentError, match="not a class"):
        explainer(model, x, 99)
    with pytest.raises(ArgumentError, match="'nolayer'"):
        explainer(model, x, 1, layers=["nolayer"])
    assert set(explainer(model, x, 1, layers=["encoder.layers.encoder_layer_0"])) == {
        "input", "encoder.layers.encoder_layer_0"}
