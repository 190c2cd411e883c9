"""A model that computes part of its values in another floating dtype is read in the widest one
(``nrm.capture.upcast``): transformers' RMSNorm and eager softmax compute in float32 inside a
float64 model (Llama, Qwen, Mistral, Gemma, GPT-Neo's attention, HF ConvNeXt's norm), a float32
model may widen a step to float64. The narrower values are the model's own, widened exactly; the
map checks hold them to their own dtype's tolerance (``call.computed_in``); the kernels are built
and the relevance accumulated in the widest dtype, so L1 holds to its precision and f is the
model's output. bfloat16 / float16 (explained in float32) are held by
``tests/test_transformer_block.py::test_half_precision_is_explained_in_float32``."""

from __future__ import annotations

import copy

import pytest
import torch
from agreement import compare_layers, product_split
from torch import nn

import nrm
from nrm.capture import capture, upcast
from nrm.errors import UnsupportedOperationError
from nrm_verify import laws
from nrm_verify.references.exact_dag import ExactGraph
from nrm_verify.references.explicit import reference_lrp

D = torch.float64


class RMSNorm(nn.Module):
    """transformers' LlamaRMSNorm as it is written: float32 inside whatever the input's dtype
    (``inside=None``: in the input's dtype, the same formula)."""

    def __init__(self, n: int, inside: torch.dtype | None = torch.float32, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.inside, self.eps = inside, eps

    def forward(self, h):
        dtype = h.dtype
        h = h.to(self.inside or dtype)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + self.eps)
        return self.weight * h.to(dtype)


class Attention(nn.Module):
    """One head whose softmax computes in float32 and casts back (Llama's eager attention)."""

    def __init__(self, n: int, inside: torch.dtype | None = torch.float32):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(n, n), nn.Linear(n, n), nn.Linear(n, n)
        self.inside = inside

    def forward(self, x):
        s = self.q(x) @ self.k(x).transpose(-1, -2)
        a = torch.softmax(s, dim=-1, dtype=self.inside or s.dtype).to(x.dtype)
        return a @ self.v(x)


class Block(nn.Module):
    def __init__(self, inside: torch.dtype | None = torch.float32, n: int = 6):
        super().__init__()
        self.up, self.norm, self.attn = nn.Linear(4, n), RMSNorm(n, inside), Attention(n, inside)
        self.head = nn.Linear(3 * n, 3)

    def forward(self, x):
        return self.head(self.attn(torch.relu(self.norm(self.up(x)))).flatten(1))


def _seeded(model: nn.Module, dtype=D, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = model.to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.randn(p.shape, generator=g, dtype=D) * 0.7).to(dtype))
    return model


def _x(batch: int = 2, dtype=D, seed: int = 1) -> torch.Tensor:
    return torch.randn((batch, 3, 4), generator=torch.Generator().manual_seed(seed), dtype=D).to(dtype)


def test_a_float64_model_with_float32_norm_and_softmax_is_read_in_float64():
    """f is the model's output; L1 ≤ 1e-12 at every layer (the kernels are float64); every
    marginal float64 and finite; the full map check passes (the float32 steps against float32's
    tolerance); the model is untouched; and the input marginal is that of the same model
    computed in float64 throughout, to float32's rounding."""
    model, x = _seeded(Block()), _x()
    before = copy.deepcopy(model.state_dict())
    m = nrm.explain(model, x, target=1, check="full")
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert all(m.marginal(n).dtype == D and bool(torch.isfinite(m.marginal(n)).all()) for n in m.layers)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    wide = _seeded(Block(inside=None))
    want = nrm.explain(wide, x, target=1).marginal("input")
    got = m.marginal("input")
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
    assert float((got - want).abs().max()) > 0  # the model's float32 steps are read as the model computes them


def test_law_k2_evaluates_the_float32_steps_in_float32_as_the_model_did():
    """K2 (every kind's interpretation reproduces the recorded computation) holds to 1e-12 on the
    float64 model with float32 steps: an elementwise step the model computed in float32 (the
    norm's rsqrt) is evaluated in float32. Evaluated in float64 it differs from the model's by
    float32's rounding (about 1e-7: K2 reported 'VIOLATED' on every float64 Llama-family model
    before 2026-12-08, found as a stranger on Phi-3)."""
    m = nrm.explain(_seeded(Block()), _x(), target=1)
    result = laws.layer_maps(m)
    assert result.holds and result.deviation <= 1e-12, str(result)


def test_the_float32_steps_are_widened_exactly_and_keep_their_dtype_for_the_checks():
    """upcast widens every float32 value of a float64 record (exactly: a float32 number is a
    float64 number) and marks the calls that computed in float32; the float64 ones are unmarked."""
    model, x = _seeded(Block()), _x()
    with torch.no_grad():
        kept = capture(model, x)
        narrow = {c.index: [t.clone() for t in c.outputs if t is not None] for c in kept.calls
                  if any(t is not None and t.dtype == torch.float32 for t in c.outputs)}
        widened = upcast(kept)
    assert narrow, "the norm and the softmax compute in float32"
    for call in widened.calls:
        assert all(t is None or t.dtype == D for t in call.outputs)
        if call.index in narrow:
            assert call.computed_in == torch.float32
            assert all(torch.equal(t, u.double()) for t, u in zip(call.outputs, narrow[call.index]))
        else:
            assert call.computed_in is None


def test_a_float32_model_that_widens_a_step_to_float64_is_read_in_float64():
    """The record's widest dtype decides: a float32 model computing its norm in float64 is
    explained in float64 (marginals float64), its f the model's output and L1 ≤ 1e-12."""
    model, x = _seeded(Block(inside=D), dtype=torch.float32), _x(dtype=torch.float32)
    m = nrm.explain(model, x, target=0, check="full")
    assert m.marginal("input").dtype == D
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 0].double())
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_a_record_in_one_dtype_is_left_as_it_is():
    model, x = _seeded(Block(inside=None)), _x()
    with torch.no_grad():
        kept = capture(model, x)
    outputs = [list(c.outputs) for c in kept.calls]
    assert upcast(kept) is kept
    assert all(c.computed_in is None and all(t is u for t, u in zip(c.outputs, o))
               for c, o in zip(kept.calls, outputs))


class ToInteger(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.fc, self.dtype = nn.Linear(4, 3), dtype

    def forward(self, x):
        return self.fc(x) * self.fc(x).to(self.dtype).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_a_conversion_to_a_dtype_that_is_not_floating_is_refused_by_name(dtype):
    model, x = _seeded(ToInteger(dtype)), _x(1)[:, 0]
    with pytest.raises(UnsupportedOperationError, match=f"converts torch.float64 to {dtype}"):
        nrm.explain(model, x, target=0)


class T5Norm(nn.Module):
    """T5's LayerNorm: the variance in float32, the input in its own dtype times its rsqrt (a
    product of a float64 and a float32 factor, which torch computes in float64)."""

    def __init__(self, n: int):
        super().__init__()
        self.fc, self.weight, self.head = nn.Linear(4, n), nn.Parameter(torch.ones(n)), nn.Linear(n, 2)

    def forward(self, x):
        h = self.fc(x)
        variance = h.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return self.head(self.weight * (h * torch.rsqrt(variance + 1e-6)))


def _agree_widened(model, x, target):
    """Engine = explicit reference at every layer to 1e-12 (both read the widened record) and =
    the exact DAG oracle to float32's rounding (the oracle evaluates the model's function in
    fractions, where a cast is the identity: it does not see the model's float32 rounding)."""
    m = nrm.explain(model, x, target=target, check="full")
    exact, bottom = ExactGraph(model, x).marginals(target)
    ref = reference_lrp(model, x, target)
    assert compare_layers(m, exact, bottom, ref, tolerance=1e-5) > 0
    for name in ref.relevance:
        if name in m.layers:
            assert float((m.marginal(name) - ref.marginal(name)).abs().max()) <= 1e-12, name
    return m


def test_a_product_of_a_float64_and_a_float32_factor_is_read_widened():
    """T5's norm multiplies the float64 input by a float32 1/σ (refused before 2026-12-07,
    "multiplies tensors of different dtypes"): 1/σ is held, the input takes all; f the model's,
    L1 ≤ 1e-12, the engine the explicit reference's and the oracle's (_agree_widened)."""
    model, x = _seeded(T5Norm(5)), _x()[:1, 0]
    m = _agree_widened(model, x, target=1)
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    assert float(laws.normalization(m).deviation) <= 1e-12
    splits = [tuple(b.split) for b in m.network.blocks if b.split is not None]
    assert splits and all(sorted(s) == [0, 1] for s in splits)


def test_the_mixed_dtype_block_equals_the_explicit_reference_and_the_exact_oracle():
    model, x = _seeded(Block()), _x(1)
    _agree_widened(model, x, target=2)


class FloatState(nn.Module):
    """RWKV's CPU recurrence inside a float64 model: a state kept in float32 (``.float()`` of the
    keys), combined with float64 values by a − b, a + b, maximum(a, b) and a / b, which torch
    promotes to float64 (refused before 2026-12-07, "operands of one dtype")."""

    def __init__(self, how: str):
        super().__init__()
        self.k, self.v, self.head, self.how = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2), how

    def forward(self, x):  # (B, 3, 4)
        key = self.k(x).float()  # float32
        value = torch.relu(self.v(x)) + 1.0  # float64
        if self.how == "sub":
            h = value - torch.relu(key)
        elif self.how == "add":
            h = torch.relu(key) + value
        elif self.how == "maximum":
            h = torch.maximum(key, value - 1.0)
        else:
            h = value / (torch.relu(key) + 1.0)
        return self.head(h.sum(1))


@pytest.mark.parametrize("how", ["sub", "add", "maximum", "div"])
def test_a_float32_state_combined_with_float64_values_is_read_widened(how):
    """The float32 operand widened by .to (exact, what torch's promotion does): f the model's,
    L1 ≤ 1e-12, the engine the explicit reference's and the oracle's (division: under the uniform
    split of its product)."""
    model, x = _seeded(FloatState(how)), _x(1)
    with product_split(split="equal" if how == "div" else "signal"):
        m = _agree_widened(model, x, target=1)
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    assert float(laws.normalization(m).deviation) <= 1e-12
    assert any(c.kind is not None and c.kind.name == "Same" and c.in_dtypes != [c.output.dtype]
               for c in capture(model, x).calls)


class WritesFloat32(nn.Module):
    """A float64 activation written into a float32 buffer (``t[i] = v`` casts to t's dtype), then
    read back widened: RWKV's float32 state written by a float64 model."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(6, 2)

    def forward(self, x):  # (B, 4)
        h = torch.relu(self.fc(x)) + 0.1234567891234  # not a float32 number
        state = torch.zeros(x.shape[0], 4, 2, dtype=torch.float32)  # RWKV's (batch, hidden, layers)
        state[:, :, 1] = h  # a column: torch casts h to float32 as it writes
        return self.head(state.to(x.dtype).flatten(1)[:, 2:])


def test_a_write_that_casts_to_the_buffers_dtype_is_read():
    """The write is read as v cast to t's dtype (``.to``, recorded: Same) then the index map over
    t's and v's neurons, torch's value bitwise (a capture mismatch before 2026-12-07: the
    reading kept v in float64); f the model's, L1 ≤ 1e-12, the engine the explicit reference's
    and the oracle's."""
    model, x = _seeded(WritesFloat32()), _x(1)[:, 0]
    m = _agree_widened(model, x, target=1)
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    assert float(laws.normalization(m).deviation) <= 1e-12


class NarrowedMask(nn.Module):
    """T5's decoder self-attention in a float64 model: a causal mask of finfo(float64).min added to
    the scores, the softmax computed in float32 (``softmax(scores.float()).type_as(scores)``) — the
    narrowing turns the mask into −inf. ``read_by``: "tanh" reads the narrowed scores otherwise."""

    def __init__(self, read_by: str = "softmax"):
        super().__init__()
        self.q, self.k, self.v, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(12, 2)
        self.read_by = read_by

    def forward(self, x):  # (B, 3, 4)
        s = self.q(x) @ self.k(x).transpose(-1, -2)
        mask = torch.zeros(3, 3, dtype=s.dtype).masked_fill(~torch.ones(3, 3, dtype=torch.bool).tril(),
                                                            torch.finfo(s.dtype).min)
        narrowed = (s + mask).float()
        a = torch.softmax(narrowed, dim=-1) if self.read_by == "softmax" else torch.tanh(narrowed)
        return self.head((a.type_as(s) @ self.v(x)).flatten(1))


def test_a_float64_mask_narrowed_to_minus_inf_before_a_float32_softmax_is_read_as_a_mask():
    """The float64 mask value narrowed to float32 is −inf, the model's own value: recorded as
    float32's finfo.min (a mask, exp of which is 0 as exp(−∞) is), so the model is explained — f the
    model's, L1 ≤ 1e-12, the engine the explicit reference's and the exact oracle's; refused before
    2026-12-07 ("the activations overflow to Inf/NaN", T5ForConditionalGeneration in float64)."""
    model, x = _seeded(NarrowedMask()), _x(1)
    with torch.no_grad():
        assert bool(torch.isneginf((model.q(x) @ model.k(x).transpose(-1, -2) + torch.finfo(D).min).float()).any())
    m = _agree_widened(model, x, target=1)
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])
    assert float(laws.normalization(m).deviation) <= 1e-12


def test_a_narrowed_mask_read_by_another_function_is_refused_by_name():
    """The same −inf read by tanh (where −inf and finfo.min differ) is refused, the model untouched."""
    model, x = _seeded(NarrowedMask(read_by="tanh")), _x(1)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError, match="reads a masked value"):
        nrm.explain(model, x, target=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
