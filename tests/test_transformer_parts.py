"""The parts of today's transformers beyond the attention head (issue 14): attention masks
(SDPA's ``is_causal``, boolean and additive masks, a causal ``torch.where``), RMSNorm (1/σ held),
rotary embeddings (x cos + rotate_half(x) sin), SwiGLU (act(gate(x)) · up(x)), grouped-query
attention (``enable_gqa``, ``repeat_kv``'s expand) and added position embeddings — written here
as Llama writes them, small, in float64.

Exact first: every layer's marginal from the engine equals the exact DAG oracle's (fractions;
L1 exactly) and the explicit LRP reference's within 1e-12; the laws hold (L1–L7, the chain rule,
batch invariance); masked positions take exactly nothing; what cannot be read is refused by name.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from agreement import agree, held_laws
from agreement import product_split as split
from torch import nn

import nrm
from nrm.errors import ArgumentError, UnsupportedOperationError
from nrm.layers.products import Multiply
from nrm_verify import laws

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
T, E, H, HKV = 3, 4, 2, 1
DH = E // H


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, dtype=D))

    def forward(self, h):
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))


class Decoder(nn.Module):
    """x (B, T, E) + positions → RMSNorm → causal GQA attention with rotary embeddings (SDPA, or
    written out with a mask) → residual → RMSNorm → SwiGLU → residual → the last token → logits."""

    def __init__(self, mask: str = "causal"):
        super().__init__()
        self.mask = mask
        self.pos = nn.Parameter(torch.zeros(T, E, dtype=D))
        self.n1, self.n2 = RMSNorm(E), RMSNorm(E)
        self.q, self.o = nn.Linear(E, E, bias=False), nn.Linear(E, E, bias=False)
        self.k, self.v = nn.Linear(E, HKV * DH, bias=False), nn.Linear(E, HKV * DH, bias=False)
        self.gate, self.up, self.down = nn.Linear(E, 6, bias=False), nn.Linear(E, 6, bias=False), nn.Linear(6, E)
        self.head = nn.Linear(E, 3)
        angle = torch.arange(T, dtype=D)[:, None] * torch.tensor([0.7] * (DH // 2), dtype=D)[None]
        self.register_buffer("cos", torch.cat([angle.cos()] * 2, -1))
        self.register_buffer("sin", torch.cat([angle.sin()] * 2, -1))
        self.register_buffer("keep", torch.ones(T, T, dtype=torch.bool).tril())

    def heads(self, t, n):
        return t.view(t.shape[0], T, n, DH).transpose(1, 2)

    def attend(self, q, k, v):
        if self.mask == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if self.mask == "bool":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.keep, enable_gqa=True)
        if self.mask == "mqa":  # one key/value head broadcast by torch itself (Falcon's multi-query attention)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.mask == "float":
            additive = torch.zeros(T, T, dtype=D).masked_fill(~self.keep, float("-inf"))
            return F.scaled_dot_product_attention(q, k, v, attn_mask=additive, enable_gqa=True)
        # written out as Llama's eager path: repeat_kv by expand, an additive finfo.min mask
        k, v = (t[:, :, None].expand(t.shape[0], HKV, H // HKV, T, DH).reshape(t.shape[0], H, T, DH) for t in (k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(DH)
        if self.mask == "where":
            scores = torch.where(self.keep, scores, torch.finfo(D).min)
        elif self.mask == "fill-inf":
            scores = scores.masked_fill(~self.keep, float("-inf"))
        elif self.mask == "add-inf":
            scores = scores + torch.zeros(T, T, dtype=D).masked_fill(~self.keep, float("-inf"))
        elif self.mask == "gpt2":  # GPT-2's eager path: where(causal, s, finfo.min) + finfo.min overflows to −inf
            scores = torch.where(self.keep, scores, torch.finfo(D).min)
            scores = scores + torch.zeros(T, T, dtype=D).masked_fill(~self.keep, torch.finfo(D).min)
        else:
            scores = scores + torch.zeros(T, T, dtype=D).masked_fill(~self.keep, torch.finfo(D).min)
        return torch.softmax(scores, dim=-1) @ v

    def forward(self, x):
        x = x + self.pos
        h = self.n1(x)
        q, k, v = self.heads(self.q(h), H), self.heads(self.k(h), HKV), self.heads(self.v(h), HKV)
        q, k = q * self.cos + rotate_half(q) * self.sin, k * self.cos + rotate_half(k) * self.sin
        x = x + self.o(self.attend(q, k, v).transpose(1, 2).reshape(x.shape))
        h = self.n2(x)
        x = x + self.down(F.silu(self.gate(h)) * self.up(h))
        return self.head(x[:, -1])


def _decoder(mask="causal", seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    model = Decoder(mask).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.7)
    return model, torch.randn((batch, T, E), generator=g, dtype=D)


MASKS = ["causal", "bool", "float", "where", "additive", "mqa"]
INF_MASKS = ["fill-inf", "add-inf", "gpt2"]  # −inf in the model's own code: recorded as finfo.min
SPLITS = [{"split": "equal"}, {"gates": ("SiLU",)}]


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("how", SPLITS, ids=["equal", "gate-nothing"])
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.01)], ids=["lrp0", "eps"])
def test_decoder_engine_equals_exact_oracle_and_reference(mask, how, rules):
    model, x = _decoder(mask, seed=len(mask))
    with split(**how):
        m = agree(model, x, 1, rules)
    kinds = {b.producer.layer_kind.name for b in m.network.blocks[1:]}
    assert {"AddConstant", "MatMul", "Softmax", "Multiply", "Negate", "Cat", "Power", "Expand"} <= kinds
    assert float(laws.normalization(m).deviation) <= 1e-12
    with torch.no_grad():  # torch's fused SDPA sums in another order than its math form: a few ulp
        assert abs(float(m.f[0]) - float(model(x)[0, 1])) <= 1e-13


@pytest.mark.parametrize("mask", INF_MASKS)
@pytest.mark.parametrize("rules", [None, nrm.rules.Epsilon(0.01)], ids=["lrp0", "eps"])
def test_minus_inf_masks_engine_equals_exact_oracle_and_reference(mask, rules):
    """masked_fill(−inf), an additive −inf mask and GPT-2's overflow (finfo.min + finfo.min = −inf):
    the masked scores are recorded as finfo.min (no parent, the mask value to ⊥); engine = exact
    oracle = explicit reference at every layer, L1 ≤ 1e-12, f the model's logit bit for bit."""
    model, x = _decoder(mask, seed=len(mask))
    with split(split="equal"):
        m = agree(model, x, 1, rules)
    assert float(laws.normalization(m).deviation) <= 1e-12
    with torch.no_grad():
        assert float(m.f[0]) == float(model(x)[0, 1])
    for name in m.layers:
        assert bool(torch.isfinite(m.marginal(name)).all()), name


@pytest.mark.parametrize("mask", MASKS + INF_MASKS)
def test_the_decomposed_attention_is_the_models(mask):
    """Masks as finfo.min in place of −inf give torch's softmax exactly; the output is torch's SDPA
    (GQA included) within a few ulp."""
    model, x = _decoder(mask, seed=3)
    ref, _ = _decoder("causal", seed=3)
    with split(split="equal"):
        m = nrm.explain(model, x, target=0)
    with torch.no_grad():
        assert abs(float(m.f[0]) - float(ref(x)[0, 0])) <= 1e-13


def test_masked_positions_take_nothing():
    """The scores of masked (query, key) pairs — finfo.min before the softmax, s = 0 after —
    take exactly no relevance (x_i (δ_ij − s_i) with s_i = 0 and s_j = 0), under every rule."""
    for rules, mask, layers in [(None, "where", ("where", "softmax")), (nrm.rules.Epsilon(0.1), "where", ("where",)),
                                (nrm.rules.Gamma(0.25), "where", ("where",)), (None, "fill-inf", ("masked_fill",)),
                                (nrm.rules.Epsilon(0.1), "add-inf", ("add_4",)), (None, "gpt2", ("where", "add_4"))]:
        model, x = _decoder(mask, seed=4)
        with split(split="equal"):
            m = nrm.explain(model, x, target=2, rules=rules)
        masked = ~model.keep
        for layer in layers + ("softmax",):
            r = m.marginal(layer)[0]  # (H, T, T)
            assert float(r[:, masked].abs().max()) == 0.0, (layer, rules)
            assert float(r[:, ~masked].abs().max()) > 0, (layer, rules)


def test_rms_norm_holds_sigma_and_conserves():
    """1/σ is held: the mean square and its rsqrt take nothing; RMSNorm's input takes exactly what
    its output had (a diagonal map with no bias: q(x_k | y_k) = 1 under LRP-0)."""
    model, x = _decoder(seed=5)
    with split(split="equal"):
        m = nrm.explain(model, x, target=0)
    for layer in ("pow", "mean", "add_1", "rsqrt"):
        assert float(m.marginal(layer).abs().max()) == 0.0, layer
    torch.testing.assert_close(m.marginal("mul_1"), m.marginal("n1"), rtol=0, atol=1e-15)


def test_swiglu_gate_takes_nothing_under_signal_and_half_under_equal():
    model, x = _decoder(seed=6)
    with split(gates=("SiLU",)):
        m = nrm.explain(model, x, target=0)
    assert float(m.marginal("gate").abs().max()) == 0.0
    with split(split="equal"):
        m2 = nrm.explain(model, x, target=0)
    # θ = ½ to each factor of one product, element by element: the two factors' marginals are equal
    torch.testing.assert_close(m2.marginal("silu"), m2.marginal("up"), rtol=0, atol=0)
    assert float(m2.marginal("up").abs().max()) > 0


def test_swiglus_gate_takes_nothing_by_default_and_glu_says_which_activations_gate():
    """Product.GLU: a product of two factors, neither a sigmoid gate, one of them a SiLU (or GELU)
    output, is a gated linear unit whose activated factor takes nothing — the same numbers as
    naming SiLU a gate; ``glu=()`` gives the refusal back; bad values are named errors."""
    model, x = _decoder(seed=6)
    m = nrm.explain(model, x, target=0)
    with split(gates=("SiLU",)):
        named = nrm.explain(model, x, target=0)
    assert float(m.marginal("gate").abs().max()) == 0.0
    torch.testing.assert_close(m.marginal("input"), named.marginal("input"), rtol=0, atol=0)
    agree(model, x[:1], 0)  # the exact oracle and the explicit reference read the same convention
    with split(glu=()), pytest.raises(nrm.AmbiguousProductError, match="split='equal'"):
        nrm.explain(model, x, target=0)
    for bad in ("SiLU", ("SiLU", 3), None):
        with pytest.raises(ArgumentError, match="glu="):
            Multiply(glu=bad)
        with pytest.raises(ArgumentError, match="gates="):
            Multiply(gates=bad)


@pytest.mark.parametrize("mask", ["causal", "where"])
def test_the_laws_hold_on_the_decoder(mask):
    """L1 – L7, the chain rule and batch invariance (a batch of two) with ε on every layer."""
    model, x = _decoder(mask, seed=8, batch=2)
    with split(split="equal"):
        held = held_laws(model, x, 0, nrm.rules.Epsilon(1e-3))
    assert {"L1", "L2", "L7"} <= held, held


class MinusInf(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.lin = nn.Linear(3, 3).double()

    def forward(self, x):
        h = self.lin(x)
        keep = torch.ones(3, 3, dtype=torch.bool).tril()
        if self.how == "masked_fill":  # every key of every query masked: torch's softmax gives NaN
            h = h.masked_fill(torch.ones(3, 3, dtype=torch.bool), float("-inf"))
        elif self.how == "row":  # one query whose keys are all −inf
            h = h.masked_fill(torch.tensor([[True] * 3, [False] * 3, [False] * 3]), float("-inf"))
        elif self.how == "plus-inf":
            h = h + torch.zeros(3, 3, dtype=D).masked_fill(~keep, float("inf"))
        else:  # a query that attends to nothing
            q = h[:, None]
            return F.scaled_dot_product_attention(q, q, q, attn_mask=torch.zeros(3, 3, dtype=torch.bool)).flatten(1)
        return torch.softmax(h, -1).flatten(1)


@pytest.mark.parametrize("how,words", [("masked_fill", "every entry is masked"), ("row", "every entry is masked"),
                                       ("plus-inf", r"\+inf or NaN"), ("empty", "masks every key")])
def test_what_cannot_be_read_is_refused_by_name(how, words):
    """A softmax row masked everywhere (torch: 0/0 = NaN) is not defined away as zero: refused, as
    is a +inf constant; SDPA with every key masked too."""
    x = torch.randn((1, 3, 3), generator=torch.Generator().manual_seed(9), dtype=D)
    with pytest.raises(UnsupportedOperationError, match=words):
        nrm.explain(MinusInf(how).eval(), x, target=0)


@pytest.mark.parametrize("kind", ["AddConstant", "Select", "Negate", "Power", "Rsqrt", "Expand"])
def test_check_layer_holds_every_law_on_the_new_kinds(kind):
    """nrm-verify check-layer on each kind's examples: K2, K3, K5, L1–L9 (where they apply), L18 and
    batch invariance (the table in docs/attention.md)."""
    from nrm_verify.validate import check_layer

    report = check_layer(nrm.layers.REGISTRY.kinds[kind], max_examples=2)
    assert report.ok, str(report)


@pytest.mark.parametrize("mask", ["where", "additive"])
def test_flat_rule_agrees_on_masks(mask):
    """Flat ignores the weights: a masked neuron keeps its one edge (weight 0) in the engine, the
    exact oracle and the explicit reference alike."""
    model, x = _decoder(mask, seed=11)
    with split(split="equal"):
        agree(model, x, 0, nrm.rules.Flat())


class Shifts(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how, self.lin = how, nn.Linear(3, 3).double()
        self.register_buffer("c", torch.tensor([0.5, -1.0, 2.0], dtype=D))

    def forward(self, x):
        h = self.lin(x)
        return {"add": lambda: torch.add(h, self.c, alpha=0.3), "radd": lambda: torch.add(self.c, h, alpha=0.3),
                "sub": lambda: torch.sub(h, self.c, alpha=0.3), "rsub": lambda: torch.sub(self.c, h, alpha=0.3),
                "rsub-op": lambda: 2.0 - h, "iadd": lambda: h.__iadd__(self.c), "minus": lambda: h - 1.5}[self.how]()


@pytest.mark.parametrize("how", ["add", "radd", "sub", "rsub", "rsub-op", "iadd", "minus"])
def test_add_constant_every_form(how):
    """x ± c, c ± x, alpha= on the second operand: the map reproduces the model (check='full') and
    the engine equals the exact oracle and the explicit reference."""
    model = Shifts(how).eval()
    x = torch.randn((1, 3), generator=torch.Generator().manual_seed(12), dtype=D)
    m = agree(model, x, 1, nrm.rules.Epsilon(0.01))
    assert "AddConstant" in {b.producer.layer_kind.name for b in m.network.blocks[1:]}


class PerSampleMask(nn.Module):
    def forward(self, x):
        keep = torch.ones(x.shape, dtype=torch.bool)
        keep[1:, :, 0] = False
        return torch.where(keep, x, torch.finfo(D).min).softmax(-1).flatten(1)


def test_a_mask_per_sample_is_refused():
    x = torch.randn((2, 3, 3), generator=torch.Generator().manual_seed(13), dtype=D)
    with pytest.raises(UnsupportedOperationError, match="differs between samples"):
        nrm.explain(PerSampleMask().eval(), x, target=0)
