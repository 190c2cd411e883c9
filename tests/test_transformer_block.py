"""A small self-written transformer block explained end to end (issue 14): single-head and
multi-head self-attention written with Linear, view/transpose, ``@``, softmax, plus LayerNorm,
a GELU MLP and residual sums, then a mean over the tokens and a dense head.

Every layer's marginal from the engine equals the exact DAG oracle's (fractions; L1 holds
exactly there) and the explicit LRP reference's; L1 ≤ 1e-12 at every layer in float64; the
captured output equals ``model(x)`` bit for bit; the laws that apply hold on the block.
"""

from __future__ import annotations

import contextlib
import copy
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from agreement import compare_layers
from torch import nn

import nrm
from nrm.errors import CaptureMismatchError, UnsupportedOperationError
from nrm.layers.attention import MatMul
from nrm.layers.fused import MHADecomposition
from nrm_verify import laws
from nrm_verify.properties.checks import laws_on_case
from nrm_verify.references.exact_dag import ExactGraph
from nrm_verify.references.explicit import reference_lrp

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64


class SelfAttention(nn.Module):
    """Multi-head self-attention on x (B, T, E) with ``heads`` heads of E / heads dimensions."""

    def __init__(self, e: int, heads: int):
        super().__init__()
        self.heads, self.d = heads, e // heads
        self.q, self.k, self.v, self.o = (nn.Linear(e, e) for _ in range(4))

    def split(self, t):
        B, T, E = t.shape
        return t.view(B, T, self.heads, self.d).transpose(1, 2)

    def forward(self, x):
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d), dim=-1)
        return self.o((a @ v).transpose(1, 2).reshape(x.shape))


class Block(nn.Module):
    """Post-norm block: LN(x + MHSA(x)) → LN(h + MLP(h)), MLP = Linear → GELU → Linear; mean over T → head."""

    def __init__(self, e: int = 4, heads: int = 2, hidden: int = 6, classes: int = 2):
        super().__init__()
        self.attn, self.ln1, self.ln2 = SelfAttention(e, heads), nn.LayerNorm(e), nn.LayerNorm(e)
        self.mlp = nn.Sequential(nn.Linear(e, hidden), nn.GELU(), nn.Linear(hidden, e))
        self.head = nn.Linear(e, classes)

    def forward(self, x):
        x = self.ln1(x + self.attn(x))
        x = self.ln2(x + self.mlp(x))
        return self.head(x.mean(1))


def _block(heads: int, seed: int = 0, batch: int = 1, tokens: int = 3):
    g = torch.Generator().manual_seed(seed)
    model = Block(heads=heads).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.7)
    return model, torch.randn((batch, tokens, 4), generator=g, dtype=D)


@contextlib.contextmanager
def theta(value):
    nrm.layers.register(MatMul(theta=value))
    try:
        yield
    finally:
        nrm.layers.register(MatMul())


CASES = [(1, None, "equal"), (2, None, "equal"), (2, nrm.rules.Epsilon(0.01), "equal"),
         (2, nrm.presets.EpsilonPlus(), "equal"), (2, nrm.rules.Epsilon(1e-6), "values"),
         (1, nrm.rules.Gamma(0.25), "values")]


@pytest.mark.parametrize("heads,rules,split", CASES, ids=lambda v: repr(v) if not isinstance(v, int) else f"h{v}")
def test_block_engine_equals_exact_oracle_and_reference(heads, rules, split):
    model, x = _block(heads, seed=heads)
    with theta(split):
        m = nrm.explain(model, x, target=0, rules=rules, check="full")
        exact, bottom = ExactGraph(model, x, rules).marginals(0)
        ref = reference_lrp(model, x, 0, rules)
    kinds = {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    assert {"MatMul", "Softmax", "LayerNormCentring", "Add", "Dense", "Permute", "Reduce"} <= kinds
    compare_layers(m, exact, bottom, ref)
    assert float(laws.normalization(m).deviation) <= 1e-12
    with torch.no_grad():
        assert float(m.f[0]) == float(model(x)[0, 0])


def test_cp_lrp_sends_nothing_through_the_attention_weights():
    """θ = 0: the scores, the softmax, and the query and key projections get nothing; the input's
    relevance comes through the values, the residual and the MLP only."""
    model, x = _block(2, seed=5)
    with theta("values"):
        m = nrm.explain(model, x, target=1, rules=nrm.rules.Epsilon(1e-6))
    for name in ("attn.q", "attn.k", "matmul", "softmax"):
        assert float(m.marginal(name).abs().max()) == 0.0, name
    assert float(m.marginal("attn.v").abs().max()) > 0


@pytest.mark.parametrize("split", ["equal", "values"])
def test_the_laws_hold_on_the_block(split):
    """L1 – L8 (L8 not applicable: branches), the chain rule, batch invariance on a batch of two,
    with ε on every layer; and L9 in its general form (GELU's ratio, LayerNorm's σ and each
    product's held factor detached) with LRP-0."""
    model, x = _block(2, seed=7, batch=2)
    with theta(split):
        results = laws_on_case(model, x, 0, nrm.rules.Epsilon(1e-3))
        failed = [(call, r) for call, r in results if r.holds is False]
        assert not failed, failed[:2]
        assert sum(r.holds is True for _, r in results) >= 10
        assert laws.gradient_x_input(model, x, 0, detached=True).holds is True
        assert laws.gradient_x_input(model, x, 0).holds is None


def test_batch_and_float32():
    """A batch of four equals each sample alone; float32 runs and keeps L1 to float32 precision."""
    model, x = _block(2, seed=9, batch=4)
    m = nrm.explain(model, x, target=1)
    for i in range(4):
        one = nrm.explain(model, x[i:i + 1], target=1)
        torch.testing.assert_close(m.marginal("input")[i:i + 1], one.marginal("input"), rtol=1e-11, atol=1e-13)
    want = m.marginal("input")
    m32 = nrm.explain(copy.deepcopy(model).float(), x.float(), target=1)
    assert float(laws.normalization(m32).deviation) <= 1e-5
    torch.testing.assert_close(m32.marginal("input").double(), want, rtol=1e-3, atol=1e-4)


# -- torch's attention: F.scaled_dot_product_attention and nn.MultiheadAttention -----------------


class FusedHead(nn.Module):
    """Two heads through F.scaled_dot_product_attention on x (B, 3, 4)."""

    def __init__(self, **sdpa):
        super().__init__()
        self.q, self.k, self.v, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(12, 2)
        self.sdpa = sdpa

    def forward(self, x):
        q, k, v = (p(x).view(x.shape[0], 3, 2, 2).transpose(1, 2) for p in (self.q, self.k, self.v))
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, **self.sdpa)
        return self.head(o.transpose(1, 2).flatten(1))


class TorchMHA(nn.Module):
    """nn.MultiheadAttention(4, 2) on x (B, 3, 4), a residual, LayerNorm and a dense head."""

    def __init__(self, need_weights=True, batch_first=True, padding=None, **call):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=batch_first)
        self.ln, self.head = nn.LayerNorm(4), nn.Linear(12, 2)
        self.need_weights, self.call, self.padding = need_weights, call, padding

    def forward(self, x):
        call = dict(self.call)
        if self.padding is not None:  # key_padding_mask (B, S): one row, the same for every sample
            call["key_padding_mask"] = self.padding.expand(x.shape[0], -1)
        a, _ = self.attn(x, x, x, need_weights=self.need_weights, **call)
        return self.head(self.ln(x + a).flatten(1))


def _seeded_model(model, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.7)
    return model, torch.randn((batch, 3, 4), generator=g, dtype=D)


CAUSAL = ~torch.ones(3, 3, dtype=torch.bool).tril()  # nn.MultiheadAttention's boolean masks: True = not allowed
MHA_MASKS = [
    ("mha-causal-bool", lambda: TorchMHA(attn_mask=CAUSAL)),
    ("mha-causal-hint", lambda: TorchMHA(attn_mask=CAUSAL, is_causal=True)),
    ("mha-sdpa-float-inf", lambda: TorchMHA(need_weights=False,
                                            attn_mask=torch.zeros(3, 3, dtype=D).masked_fill(CAUSAL, float("-inf")))),
    ("mha-padding-bool", lambda: TorchMHA(padding=torch.tensor([[False, False, True]]))),
    ("mha-sdpa-padding-float", lambda: TorchMHA(need_weights=False, padding=torch.tensor([[0.0, float("-inf"), 0.5]],
                                                                                            dtype=D))),
    ("mha-both", lambda: TorchMHA(attn_mask=CAUSAL, padding=torch.tensor([[False, True, False]]))),
]
TORCH_ATTENTION = [("sdpa", FusedHead), ("mha", TorchMHA), ("mha-sdpa", lambda: TorchMHA(need_weights=False)),
                   ("sdpa-causal", lambda: FusedHead(is_causal=True))] + MHA_MASKS  # more: test_transformer_parts.py


@pytest.mark.parametrize("name,build", TORCH_ATTENTION, ids=[n for n, _ in TORCH_ATTENTION])
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.01)], ids=repr)
def test_torch_attention_engine_equals_exact_oracle_and_reference(name, build, rules):
    model, x = _seeded_model(build(), seed=3)
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    exact, bottom = ExactGraph(model, x, rules).marginals(1)
    ref = reference_lrp(model, x, 1, rules)
    assert sum(exact[0], Fraction(0)) + bottom[0] == 1
    assert {"MatMul", "Softmax"} <= {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    scale = 1 + float(sum(abs(v) for v in exact[0]))
    for layer in m.layers:
        l = m.layer_index(layer)
        want = np.array([float(v) for v in exact[l]])
        assert np.abs(m.marginal(layer).reshape(-1).numpy() - want).max() <= 1e-12 * scale, layer
        if layer in ref.relevance:
            assert np.abs(ref.marginal(layer).reshape(-1).numpy() - want).max() <= 1e-12 * scale, layer
    assert float(laws.normalization(m).deviation) <= 1e-12


@pytest.mark.parametrize("name,build", TORCH_ATTENTION, ids=[n for n, _ in TORCH_ATTENTION])
def test_torch_attention_output_is_the_models(name, build):
    """f equals model(x) — with gradients, and in eval mode without them, where nn.MultiheadAttention
    takes torch's fused fast path (aten::_native_multi_head_attention, seen by the profiler) — within
    a few ulp (nrm reads the decomposition; the fused kernels sum in another order); L1 holds."""
    model, x = _seeded_model(build(), seed=4, batch=3)
    m = nrm.explain(model, x, target=0)
    with torch.no_grad(), torch.profiler.profile() as prof:
        fast = model(x)[:, 0]
    if name == "mha":
        assert "aten::_native_multi_head_attention" in {e.name for e in prof.events()}
    slow = model(x)[:, 0].detach()
    for want in (fast, slow):
        torch.testing.assert_close(m.f, want, rtol=1e-13, atol=1e-15)
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_torch_attention_in_float32():
    model, x = _seeded_model(TorchMHA(), seed=5, batch=2)
    model, x = model.float(), x.float()
    m = nrm.explain(model, x, target=0)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 0], rtol=1e-5, atol=1e-6)
    assert float(laws.normalization(m).deviation) <= 1e-5


REFUSED = [
    ("sdpa-dropout", lambda: FusedHead(dropout_p=0.5), UnsupportedOperationError,
     ("scaled_dot_product_attention", "dropout")),
    ("mha-seq-first", lambda: TorchMHA(batch_first=False), UnsupportedOperationError,  # one sample: read
     ("MultiheadAttention at 'attn'", "batch_first=False", "explains a batch of 2")),
    ("mha-all-masked", lambda: TorchMHA(attn_mask=CAUSAL, padding=torch.tensor([[True, False, False]])),
     UnsupportedOperationError, ("MultiheadAttention at 'attn'", "masks every key")),
]


@pytest.mark.parametrize("name,build,error,words", REFUSED, ids=[r[0] for r in REFUSED])
def test_torch_attention_nrm_cannot_read_is_refused_by_name(name, build, error, words):
    model, x = _seeded_model(build(), seed=6, batch=2)
    with pytest.raises(error) as info:
        nrm.explain(model, x, target=0)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_mha_whose_output_differs_from_its_definition_is_a_capture_mismatch():
    """A MultiheadAttention whose forward was replaced (here: its output shifted by 1) is not what
    its definition computes: the capture refuses it rather than explain something else."""
    model, x = _seeded_model(TorchMHA(), seed=7)
    original = model.attn.forward
    model.attn.forward = lambda *a, **k: (original(*a, **k)[0] + 1, None)
    with pytest.raises(CaptureMismatchError, match="does not reproduce the module's output"):
        nrm.explain(model, x, target=0)


def _placeholders(monkeypatch) -> list:
    """The capture's skips of nn.MultiheadAttention's own fused call, counted (one entry per skip)."""
    skips: list = []
    real = MHADecomposition.placeholder

    def counted(args, kwargs):
        out = real(args, kwargs)
        skips.append(out is not None)
        return out
    monkeypatch.setattr(MHADecomposition, "placeholder", staticmethod(counted))
    return skips


def test_mha_own_fused_call_is_compared_once_per_signature_then_skipped(monkeypatch):
    """The module's own attention is compared with the decomposition the first time its call's
    signature is seen; later calls with that signature skip it (the decomposition's output replaces
    it anyway) and give the same measure; check="full" compares every call, a new signature
    (another batch) is compared first, check=False never runs it."""
    skips = _placeholders(monkeypatch)
    nrm.check.forget()
    model, x = _seeded_model(TorchMHA(), seed=8)
    first = nrm.explain(model, x, target=0).marginal("input")
    assert skips == []
    again = nrm.explain(model, x, target=0).marginal("input")
    assert skips == [True] and torch.equal(first, again)
    assert torch.equal(nrm.explain(model, x, target=0, check="full").marginal("input"), first)
    assert skips == [True]
    two = torch.cat([x, x.flip(1)])
    nrm.explain(model, two, target=0)
    assert skips == [True]
    nrm.explain(model, two, target=0)
    assert skips == [True, True]
    nrm.check.forget()
    assert torch.equal(nrm.explain(model, x, target=0, check=False).marginal("input"), first)
    assert skips == [True, True, True]


@pytest.mark.parametrize("where", ["instance", "class"])
def test_mha_forward_patched_after_its_signature_was_checked_is_still_a_capture_mismatch(monkeypatch, where):
    """A signature checked once does not let a forward replaced afterwards through: on the
    instance the module's call is never skipped, on the class the key holds the class's forward."""
    nrm.check.forget()
    model, x = _seeded_model(TorchMHA(), seed=9)
    nrm.explain(model, x, target=0)
    if where == "instance":
        original = model.attn.forward
        model.attn.forward = lambda *a, **k: (original(*a, **k)[0] + 1, None)
    else:
        original = nn.MultiheadAttention.forward
        monkeypatch.setattr(nn.MultiheadAttention, "forward", lambda self, *a, **k: (original(self, *a, **k)[0] + 1,
                                                                                     None))
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(CaptureMismatchError, match="does not reproduce the module's output"):
        nrm.explain(model, x, target=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_softmax_and_matrix_product_maps_are_checked_once_per_signature(monkeypatch):
    """Softmax and matrix-product maps are built from the record but have one form per signature:
    the self-check (which forms their magnitude) runs at the first explain, not at the second;
    every time with check="full"."""
    counts = {"softmax": 0, "matmul": 0}
    for name, cls in (("softmax", nrm.linear.SoftmaxMap), ("matmul", nrm.linear.MatMulMap)):
        real = cls.magnitude

        def counted(self, x, real=real, name=name):
            counts[name] += 1
            return real(self, x)
        monkeypatch.setattr(cls, "magnitude", counted)
    nrm.check.forget()
    model, x = _seeded_model(TorchMHA(), seed=10)
    nrm.explain(model, x, target=0)
    assert counts["softmax"] >= 1 and counts["matmul"] >= 2
    seen = dict(counts)
    nrm.explain(model, x, target=0)
    assert counts == seen
    nrm.explain(model, x, target=0, check="full")
    assert counts["softmax"] > seen["softmax"] and counts["matmul"] > seen["matmul"]


def test_heads_and_tokens_are_selections_and_head_conditional_token_heatmaps_are_one_call():
    """At(layer, heads=[h]) on an (H, T, T) attention layer and At(layer, tokens=[t]) on a
    (T, D) token layer are the channel selections of per-sample dimension 0; the token
    heatmaps of the input conditioned on each head are one batched call whose rows add up, over
    the heads, to the heatmap conditioned on the softmax layer (every walk through it passes
    one head)."""
    from nrm import At

    model, x = _seeded_model(TorchMHA(), seed=1)
    m = nrm.explain(model, x, target=0)
    heads, tokens = m.layer_shape("softmax")[0], m.layer_shape("input")[0]
    assert (heads, tokens) == (2, 3)
    per_head = m.marginal("input", within=[At("softmax", heads=[h]) for h in range(heads)])
    assert per_head.shape == (heads, 1, tokens, 4)
    torch.testing.assert_close(per_head.sum(0), m.marginal("input", within=At("softmax")), rtol=1e-12, atol=1e-15)
    for h in range(heads):
        torch.testing.assert_close(per_head[h], m.marginal("input", within=At("softmax", channels=[h])),
                                   rtol=0, atol=0)
    token_map = per_head.sum(-1)  # (heads, 1, T): each head's token heatmap
    assert token_map.shape == (heads, 1, tokens)
    flows = m.measure([At("input", tokens=[i]) & At("add", tokens=[j]) for i in range(tokens) for j in range(tokens)])
    torch.testing.assert_close(flows.reshape(tokens, tokens).sum(0), m.measure(
        [At("input") & At("add", tokens=[j]) for j in range(tokens)])[:, 0], rtol=1e-12, atol=1e-15)
    with pytest.raises(nrm.EventIndexError, match="one of index=, channels=, mask=, nodes=, tokens=, heads="):
        At("softmax", heads=[0], tokens=[1])
    with pytest.raises(nrm.EventIndexError, match="out of range"):
        m.measure(At("softmax", heads=[5]))


# -- precision: bfloat16 and float16 are explained in float32 --------------------------------------

HALF_TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2}  # × max |m_input| of the float64 model


@pytest.mark.parametrize("dtype", list(HALF_TOLERANCE), ids=str)
def test_half_precision_is_explained_in_float32(dtype):
    """A bfloat16 / float16 model and input: the record is widened to float32 (exactly) and the
    kernels built and accumulated there, so every marginal is float32 and finite, L1 holds to
    float32 precision (≤ 1e-5; ≈ 5e-8 observed, 2e-3 when it was accumulated in bfloat16), f is the
    model's output, and the input marginal is the float64 model's within the stated tolerance
    (the half-precision forward's own rounding; ≈ 1.4e-2 bfloat16, 1.4e-3 float16 observed)."""
    model, x = _block(2, seed=9, batch=2)
    want = nrm.explain(model, x, target=1).marginal("input")
    half, xh = copy.deepcopy(model).to(dtype), x.to(dtype)
    m = nrm.explain(half, xh, target=1)
    assert all(m.marginal(n).dtype == torch.float32 and bool(torch.isfinite(m.marginal(n)).all()) for n in m.layers)
    assert float(laws.normalization(m).deviation) <= 1e-5
    with torch.no_grad():
        assert torch.equal(m.f, half(xh)[:, 1].float())
    assert float((m.marginal("input").double() - want).abs().max()) <= HALF_TOLERANCE[dtype] * float(want.abs().max())


class MaskedHead(nn.Module):
    """One causal head written with masked_fill(−inf) (or also a whole row masked by finfo.min), on x (B, 3, 4)."""

    def __init__(self, how="causal"):
        super().__init__()
        self.q, self.k, self.v, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(12, 2)
        self.how = how
        self.register_buffer("keep", torch.ones(3, 3, dtype=torch.bool).tril())

    def forward(self, x):
        s = self.q(x) @ self.k(x).transpose(-1, -2)
        if self.how == "row":  # the first query masks every key with finfo.min: a uniform row in torch, refused
            s = s.masked_fill(torch.tensor([[True] * 3, [False] * 3, [False] * 3]), torch.finfo(s.dtype).min)
        s = s.masked_fill(~self.keep, float("-inf"))
        return self.head((torch.softmax(s, -1) @ self.v(x)).flatten(1))


def _zeroed(how):
    """Models whose kernels meet zero denominators: zero attention logits, all-zero values, a
    LayerNorm input with zero variance (a constant token), masked scores (and a finfo.min row)."""
    if how in ("causal", "row"):
        model, x = _seeded_model(MaskedHead(how), seed=11)
        return model, x
    model, x = _block(2, seed=10)
    with torch.no_grad():
        if how == "zero-logits":
            model.attn.q.weight.zero_(), model.attn.q.bias.zero_()
        elif how == "zero-values":
            model.attn.v.weight.zero_(), model.attn.v.bias.zero_()
        else:  # zero variance: the attention adds nothing and every token is constant over its features
            model.attn.o.weight.zero_(), model.attn.o.bias.zero_()
            x = torch.ones_like(x) * torch.tensor([0.5, -1.0, 2.0], dtype=D)[None, :, None]
    return model, x


@pytest.mark.parametrize("dtype", [D, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("how", ["zero-logits", "zero-values", "zero-variance", "causal"])
def test_zero_and_masked_denominators_give_no_nan_or_inf(how, dtype):
    """No NaN or Inf anywhere (every layer's marginal and absorbed mass) where a kernel's denominator
    is zero or a score masked, in float64, float32 and bfloat16; L1 holds (≤ 1e-12 in float64,
    1e-5 otherwise: float32 accumulation)."""
    model, x = _zeroed(how)
    m = nrm.explain(copy.deepcopy(model).to(dtype), x.to(dtype), target=0, rules=nrm.rules.Epsilon(1e-6))
    for n in m.layers:
        assert bool(torch.isfinite(m.marginal(n)).all()) and bool(torch.isfinite(m.absorbed(n)).all()), n
    assert float(laws.normalization(m).deviation) <= (1e-12 if dtype == D else 1e-5)


@pytest.mark.parametrize("dtype", [D, torch.bfloat16], ids=str)
def test_a_query_with_every_key_masked_is_refused(dtype):
    """A softmax row at finfo.min everywhere (torch: uniform) would have shares x_i (δ_ij − s_i) of
    size finfo.min, which overflow to NaN in float32: refused by name, as a row of −inf is (torch:
    NaN; tests/test_transformer_parts.py)."""
    model, x = _zeroed("row")
    with pytest.raises(UnsupportedOperationError, match="masks every entry of a row"):
        nrm.explain(copy.deepcopy(model).to(dtype), x.to(dtype), target=0)
