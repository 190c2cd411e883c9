"""Idioms of timm's models that nrm reads (benchmarks/timm_survey.py found them refused):

* the q, k, v split of timm's ``Attention`` (ViT, DeiT, CaiT, PiT, BEiT, EVA, Twins) and XCiT's /
  EdgeNeXt's cross-covariance attention — ``qkv.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)``,
  then ``.unbind(0)`` or ``qkv[0], qkv[1], qkv[2]``: the permute moves the batch, its pieces do
  not (``nrm.capture._Recorder._through_moved_batch``);
* ``torch.addcmul`` (ResMLP's ``Affine``, ConvNeXt V2's GRN): c + v · t₁ · t₂
  (``nrm.layers.fused.AddcmulDecomposition``).

Each model (float64): f within rounding of the model's, L1 at every layer, the engine equal to
the explicit reference, LRP-0 = Gradient × Input where the model is linear in its factors'
relevance paths (the Affine). What is still not read is refused by name.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from agreement import seeded
from torch import nn

import nrm
from nrm.capture import capture
from nrm_verify.references.explicit import reference_lrp

pytestmark = pytest.mark.usefixtures("single_thread")

D = torch.float64


def _x(*shape, seed=1):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


class TimmAttention(nn.Module):
    """timm's ``Attention`` (eager path), a mean over tokens and a head."""

    def __init__(self, how: str, dim: int = 8, heads: int = 2):
        super().__init__()
        self.heads, self.how = heads, how
        self.qkv, self.proj, self.head = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), nn.Linear(dim, 3)

    def forward(self, x):
        B, N, C = x.shape
        if self.how == "xca":  # XCiT / EdgeNeXt: (3, B, H, d, N), attention over channels
            qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 4, 1)
        else:
            qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if self.how == "index":  # CaiT: q, k, v = qkv[0] * scale, qkv[1], qkv[2]
            q, k, v = qkv[0] * 0.5, qkv[1], qkv[2]
        else:
            q, k, v = qkv.unbind(0)
            q = q * 0.5
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        out = attn @ v
        out = out.permute(0, 3, 1, 2) if self.how == "xca" else out.transpose(1, 2)
        return self.head(self.proj(out.reshape(B, N, C)).mean(1))


class Affine(nn.Module):
    """ResMLP's Affine (β + α ⊙ x, addcmul) around a token-mixing linear layer."""

    def __init__(self):
        super().__init__()
        self.alpha, self.beta = nn.Parameter(torch.ones(6)), nn.Parameter(torch.zeros(6))
        self.mix, self.head = nn.Linear(4, 4), nn.Linear(6, 2)

    def forward(self, x):  # (B, 4 tokens, 6 channels)
        h = torch.addcmul(self.beta, self.alpha, x)
        h = self.mix(h.transpose(1, 2)).transpose(1, 2)
        return self.head(F.relu(h).mean(1))


class GRN(nn.Module):
    """ConvNeXt V2's global response normalization as timm writes it: x + addcmul(β, γ, x ⊙ n)."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.fc, self.head, self.value = nn.Linear(3, 6), nn.Linear(6, 2), value
        self.gamma, self.beta = nn.Parameter(torch.zeros(1, 1, 6)), nn.Parameter(torch.zeros(1, 1, 6))

    def forward(self, x):  # (B, tokens, 3)
        h = F.gelu(self.fc(x))
        g = torch.linalg.vector_norm(h, 2, dim=1, keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        return self.head((h + torch.addcmul(self.beta, self.gamma, h * n, value=self.value)).mean(1))


MODELS = {
    "timm attention, unbind(0)": (lambda: TimmAttention("unbind"), (2, 5, 8)),
    "CaiT, qkv[0], qkv[1], qkv[2]": (lambda: TimmAttention("index"), (2, 5, 8)),
    "XCiT cross-covariance, permute(2, 0, 3, 4, 1)": (lambda: TimmAttention("xca"), (2, 5, 8)),
    "ResMLP Affine (addcmul with constants)": (Affine, (2, 4, 6)),
    "ConvNeXt V2 GRN (addcmul of a product)": (GRN, (2, 5, 3)),
    "addcmul value=0.5": (lambda: GRN(0.5), (2, 5, 3)),
}
RULES = [nrm.rules.Epsilon(0.1), nrm.presets.EpsilonGammaFlat()]
from nrm.layers.products import Multiply  # noqa: E402  (the product of two activations, GRN's x·n: AttnLRP's split)


def _model(name: str, seed: int = 0):
    make, shape = MODELS[name]
    return seeded(make(), seed), _x(*shape, seed=seed + 1)


def _explain(model, x, target, rules):
    nrm.layers.register(Multiply(split="equal"))
    try:
        return nrm.explain(model, x, target=target, rules=rules, check="full"), reference_lrp(model, x, target, rules)
    finally:
        nrm.layers.register(Multiply())


@pytest.mark.parametrize("rules", RULES, ids=repr)
@pytest.mark.parametrize("name", list(MODELS))
def test_read_faithful_normalized_and_equal_to_the_reference(name, rules):
    model, x = _model(name)
    m, ref = _explain(model, x, 1, rules)
    with torch.no_grad():
        torch.testing.assert_close(m.f, model(x)[:, 1], rtol=1e-12, atol=1e-12)
    for layer in m.canonical_names():
        total = m.marginal(layer).reshape(x.shape[0], -1).sum(1) + m.absorbed(layer) + m.bypassing(layer)
        assert float((total - 1).abs().max()) <= 1e-12, layer
    torch.testing.assert_close(m.relevance("input"), ref.relevance["input"].reshape(x.shape), rtol=1e-9, atol=1e-12)


def test_the_pieces_are_read_from_the_permutes_input_and_the_permute_is_dropped():
    model, x = _model("timm attention, unbind(0)")
    calls = capture(model, x).calls
    permutes = [c for c in calls if c.kind is not None and c.kind.name == "Permute"]
    assert permutes and all(c.kind.order(c)[0] == 0 for c in permutes)  # every permute nrm reads keeps the batch first
    moved = [c for c in calls if c.kind is None and c.refusal and "moves the batch" in c.refusal]
    assert len(moved) == 1  # the qkv permute was recorded (refused) and then read by nothing: the explain works
    nrm.explain(model, x, target=0, rules=nrm.rules.Epsilon(0.1))


def test_lrp0_is_gradient_x_input_through_the_affine():
    model, x = _model("ResMLP Affine (addcmul with constants)")
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero(), check="full")
    xx = x.clone().requires_grad_(True)
    f = model(xx)[:, 1]
    g, = torch.autograd.grad(f.sum(), xx)
    torch.testing.assert_close(m.marginal("input"), g * x / f.detach().reshape(-1, 1, 1), rtol=1e-9, atol=1e-12)


class Other(nn.Module):
    def __init__(self, use):
        super().__init__()
        self.qkv, self.use = nn.Linear(4, 12), use

    def forward(self, x):
        qkv = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, 2, 2).permute(2, 0, 3, 1, 4)
        return self.use(qkv).reshape(x.shape[0], -1)


@pytest.mark.parametrize("use, words", [
    (lambda qkv: qkv.sum(0), "moves the batch dimension"),  # another use of the moved tensor: still refused
    (lambda qkv: qkv[0:2].sum(0), "moves the batch dimension"),  # a slice of pieces, not a piece
    (lambda qkv: torch.addcmul(qkv[0], qkv[1], qkv[2], out=torch.empty(2, 2, 3, 2, dtype=D)), "out="),
], ids=["sum-over-pieces", "slice-of-pieces", "addcmul-out"])
def test_what_is_not_read_is_refused_by_name(use, words):
    model = seeded(Other(use))
    with pytest.raises(nrm.UnsupportedOperationError, match=words):
        nrm.explain(model, _x(2, 3, 4), target=0)
