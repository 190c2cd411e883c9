"""Two kinds found by running torch.nn's modules one by one through ``nrm.explain``:

* :class:`nrm.layers.shape.Copies` — ``F.pad`` in reflect, replicate and circular mode
  (``nn.ReflectionPad*d``, ``nn.ReplicationPad*d``, ``nn.CircularPad*d``),
  ``torch.channel_shuffle`` (``nn.ChannelShuffle``), flip, rot90, narrow, movedim and gather
  with a constant index: index maps read by running the call on the neurons' names, which also
  proves the call per-sample; a neuron copied n times receives the sum of its copies' relevance.
* :class:`nrm.layers.fused.RMSNormDecomposition` — ``F.rms_norm`` (``nn.RMSNorm``) read as
  x · rsqrt(mean(x²) + ε) · w, σ held: the diagonal map x_k ↦ w_k x_k / σ.

Each: the recorded kinds, f = model(x)[:, c], the engine against the exact oracle and the
explicit reference at every layer for several rules, L1, the index against the definition,
and the refusals by name with the model untouched.
"""

from __future__ import annotations

import nets
import pytest
import torch
import torch.nn.functional as F
from agreement import agree
from torch import nn

import nrm
from nrm.capture import capture
from nrm.errors import UnsupportedOperationError
from nrm_verify import laws

pytestmark = pytest.mark.usefixtures("single_thread")
D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.25), nrm.presets.EpsilonGammaFlat()]


class Around(nn.Module):
    """conv → relu → op → flatten → linear (the operation between two learned layers)."""

    def __init__(self, op: nn.Module, features: int, conv: nn.Module | None = None):
        super().__init__()
        self.conv = conv or nn.Conv2d(2, 4, 2)
        self.op, self.fc = op, nn.Linear(features, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.op(F.relu(self.conv(x))), 1))


COPIES = {  # name: (op, flattened features after it, conv, input shape); the conv gives (4, 4, 4) or (4, 4)
    "ReflectionPad2d": (nn.ReflectionPad2d((2, 1, 1, 0)), 4 * 5 * 7, None, (1, 2, 5, 5)),
    "ReplicationPad2d": (nn.ReplicationPad2d(1), 4 * 6 * 6, None, (1, 2, 5, 5)),
    "CircularPad2d": (nn.CircularPad2d((1, 1, 0, 2)), 4 * 6 * 6, None, (1, 2, 5, 5)),
    "ReflectionPad1d": (nn.ReflectionPad1d(2), 4 * 8, nn.Conv1d(2, 4, 2), (1, 2, 5)),
    "F.pad replicate": (nets.Fn(lambda h: F.pad(h, (0, 3, 0, 0), mode="replicate")), 4 * 4 * 7, None, (1, 2, 5, 5)),
    "ChannelShuffle": (nn.ChannelShuffle(2), 4 * 4 * 4, None, (1, 2, 5, 5)),
    "torch.channel_shuffle": (nets.Fn(lambda h: torch.channel_shuffle(h, 4)), 4 * 4 * 4, None, (1, 2, 5, 5)),
    "flip": (nets.Fn(lambda h: h.flip(1, 3)), 4 * 4 * 4, None, (1, 2, 5, 5)),
    "fliplr, rot90": (nets.Fn(lambda h: torch.rot90(torch.fliplr(h.movedim(1, 3)), 1, (1, 2))), 4 * 4 * 4, None,
                      (1, 2, 5, 5)),
    "narrow": (nets.Fn(lambda h: torch.narrow(h.narrow(2, 1, 2), 3, 0, 3)), 4 * 2 * 3, None, (1, 2, 5, 5)),
    "movedim, moveaxis": (nets.Fn(lambda h: torch.moveaxis(h.movedim(1, -1), 2, 1)), 4 * 4 * 4, None, (1, 2, 5, 5)),
    "gather": (nets.Fn(lambda h: h.gather(3, torch.tensor([3, 0, 0, 2, 1]).expand(1, 4, 4, 5))), 4 * 4 * 5, None,
               (1, 2, 5, 5)),
    "take_along_dim": (nets.Fn(lambda h: torch.take_along_dim(h, torch.tensor([[[[1]], [[0]], [[3]], [[3]]]]), 1)),
                       4 * 4 * 4, None, (1, 2, 5, 5)),
    "Tensor.unfold": (nets.Fn(lambda h: h.unfold(3, 2, 1)), 4 * 4 * 3 * 2, None, (1, 2, 5, 5)),
    # HaloNet's key/value blocks: overlapping windows along both spatial dimensions
    "Tensor.unfold, 2-d windows": (nets.Fn(lambda h: h.unfold(2, 3, 1).unfold(3, 3, 1)), 4 * 2 * 2 * 3 * 3, None,
                                   (1, 2, 5, 5)),
}


def copies_model(name: str, seed: int = 0):
    op, features, conv, shape = COPIES[name]
    model = nets.seeded(Around(op, features, conv).double().eval(), seed)
    return model, torch.randn(shape, generator=torch.Generator().manual_seed(seed + 50), dtype=D)


@pytest.mark.parametrize("rules", RULES, ids=repr)
@pytest.mark.parametrize("name", list(COPIES))
def test_copies_engine_equals_oracle_and_reference(name, rules):
    model, x = copies_model(name)
    kinds = [c.kind.name for c in capture(model, x).calls]
    assert "Copies" in kinds, kinds
    m = agree(model, x, 1, rules)
    assert float(laws.normalization(m).deviation) <= 1e-12
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 1])


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_a_convolution_with_a_padding_mode_agrees(mode):
    """nn.Conv2d(padding_mode=…) pads with F.pad in that mode, then convolves without padding."""
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode)
    model = nets.seeded(nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double().eval(), 20)
    x = torch.randn((1, 2, 4, 4), generator=torch.Generator().manual_seed(21), dtype=D)
    assert [c.kind.name for c in capture(model, x).calls][:2] == ["Copies", "Conv"]
    m = agree(model, x, 0, nrm.presets.EpsilonGammaFlat())
    assert float(laws.normalization(m).deviation) <= 1e-12


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_the_pad_index_is_the_definition(mode):
    """index[k] = ρ(k − p) along a padded dimension of size n = 5 with p = 2 before, 3 after."""
    x = torch.randn((1, 1, 5), generator=torch.Generator().manual_seed(3), dtype=D)
    model = nn.Sequential(nets.Fn(lambda t: F.pad(torch.relu(t), (2, 3), mode=mode))).eval()
    (call,) = [c for c in capture(model, x).calls if c.kind.name == "Copies"]
    n, p = 5, 2

    def rho(t):
        if mode == "reflect":
            return -t if t < 0 else 2 * (n - 1) - t if t >= n else t
        if mode == "replicate":
            return min(max(t, 0), n - 1)
        return t % n

    assert call.kind.route(call).tolist() == [rho(i - p) for i in range(n + 5)]


def test_a_neuron_copied_several_times_receives_the_sum_of_its_copies():
    """LRP-0 through a replicate pad: the edge neuron's relevance is the sum over its copies."""
    model = nn.Sequential(nets.Fn(lambda t: F.pad(t, (3, 0), mode="replicate")), nn.Flatten(),
                          nets.seeded(nn.Linear(7, 2), 4)).double().eval()
    x = torch.randn((1, 1, 4), generator=torch.Generator().manual_seed(5), dtype=D)
    m = nrm.explain(model, x, target=0, rules=nrm.rules.Zero())
    out = m.relevance("0").reshape(-1)
    got = m.relevance("input").reshape(-1)
    torch.testing.assert_close(got[0], out[:4].sum(), rtol=1e-13, atol=0)
    torch.testing.assert_close(got[1:], out[4:], rtol=1e-13, atol=0)


@pytest.mark.parametrize("rules", RULES, ids=repr)
@pytest.mark.parametrize("norm", [nn.RMSNorm(6), nn.RMSNorm((2, 6), eps=1e-3), nn.RMSNorm(6, elementwise_affine=False)],
                         ids=["last", "two-dims-eps", "no-weight"])
def test_rms_norm_engine_equals_oracle_and_reference(norm, rules):
    norm = nets.seeded(norm.double(), 7)
    model = nets.seeded(nn.Sequential(nn.Linear(3, 6), norm, nn.Flatten(), nn.Linear(12, 2)).double(), 8).eval()
    x = torch.randn((1, 2, 3), generator=torch.Generator().manual_seed(9), dtype=D)
    kinds = [c.kind.name for c in capture(model, x).calls]
    assert "Rsqrt" in kinds and "Multiply" in kinds, kinds
    m = agree(model, x, 0, rules)
    assert float(laws.normalization(m).deviation) <= 1e-12
    with torch.no_grad():
        assert torch.equal(m.f, model(x)[:, 0]) or torch.allclose(m.f, model(x)[:, 0], rtol=1e-14, atol=0)


def test_rms_norm_holds_sigma_and_passes_relevance_unchanged():
    """Without a bias after it, LRP-0 gives q(x_k | y_k) = 1: the norm's input marginal is its output's."""
    norm = nets.seeded(nn.RMSNorm(5).double(), 10)
    model = nn.Sequential(nets.seeded(nn.Linear(4, 5), 11), norm, nets.seeded(nn.Linear(5, 2), 12)).double().eval()
    x = torch.randn((2, 4), generator=torch.Generator().manual_seed(13), dtype=D)
    m = nrm.explain(model, x, target=1, rules=nrm.rules.Zero())
    torch.testing.assert_close(m.marginal("0"), m.marginal("1"), rtol=1e-12, atol=1e-14)


def test_a_gather_whose_index_differs_between_samples_is_refused():
    """Two samples gathered with two different constant indices: not one pattern per sample."""
    index = torch.tensor([[[0, 1, 2, 3]], [[3, 2, 1, 0]]])
    model = nn.Sequential(nets.seeded(nn.Linear(4, 4), 16), nn.Unflatten(1, (1, 4)),
                          nets.Fn(lambda t: t.gather(2, index)), nn.Flatten()).double().eval()
    x = torch.randn((2, 4), generator=torch.Generator().manual_seed(17), dtype=D)
    with pytest.raises(UnsupportedOperationError, match="another pattern in each sample"):
        nrm.explain(model, x, target=0)
    same = torch.tensor([[[3, 2, 1, 0]], [[3, 2, 1, 0]]])  # one pattern for both samples: read
    model[2] = nets.Fn(lambda t: t.gather(2, same)).eval()
    m = nrm.explain(model, x, target=0)
    assert float(laws.normalization(m).deviation) <= 1e-12


class BatchRMS(nn.Module):
    def forward(self, x):
        return F.rms_norm(x, tuple(x.shape))


@pytest.mark.parametrize("op,words", [
    (nets.Fn(lambda t: F.pad(t, (-1, 1), mode="reflect")), ("Copies", "crops", "slice")),
    (nets.Fn(lambda t: t.flip(0)), ("flip", "moves neurons between samples")),
    (nets.Fn(lambda t: t.movedim(0, 2)), ("movedim", "moves neurons between samples")),
    (nets.Fn(lambda t: t.narrow(0, 0, 1)), ("narrow", "moves neurons between samples")),
    (nets.Fn(lambda t: t.unfold(0, 2, 1)), ("unfold", "moves neurons between samples")),
    (BatchRMS(), ("rms_norm", "batch dimension")),
], ids=["negative-pad", "flip-batch", "movedim-batch", "narrow-batch", "unfold-batch", "rms-over-batch"])
def test_unreadable_calls_are_named_and_the_model_untouched(op, words):
    model = nn.Sequential(nets.seeded(nn.Linear(4, 4), 14), nn.Unflatten(1, (1, 4)), op, nn.Flatten()).double().eval()
    x = torch.randn((2, 4), generator=torch.Generator().manual_seed(15), dtype=D)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedOperationError) as info:
        nrm.explain(model, x, target=0)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_gather_into_out_is_refused_and_the_buffer_untouched():
    """``out=`` is refused before the call is run on the names (which would write into the buffer)."""
    buf = torch.full((2, 1, 4), 7.0, dtype=D)
    index = torch.tensor([[[3, 2, 1, 0]], [[3, 2, 1, 0]]])
    model = nn.Sequential(nets.seeded(nn.Linear(4, 4), 18), nn.Unflatten(1, (1, 4)),
                          nets.Fn(lambda t: torch.gather(t, 2, index, out=buf) * 1.0), nn.Flatten()).double().eval()
    x = torch.randn((2, 4), generator=torch.Generator().manual_seed(19), dtype=D)
    with torch.no_grad():
        model(x)
    after_forward = buf.clone()
    with pytest.raises(UnsupportedOperationError, match="out="):
        nrm.explain(model, x, target=0)
    assert torch.equal(buf, after_forward)


def test_a_constant_pad_is_still_the_pad_kind():
    model = nn.Sequential(nets.Fn(lambda t: F.pad(torch.relu(t), (1, 1), value=0.5))).eval()
    x = torch.randn((1, 1, 3), dtype=D)
    assert [c.kind.name for c in capture(model, x).calls] == ["ReLU", "Pad"]


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA device on this machine")),
])
def test_a_gather_with_an_index_on_the_device_is_read_there(device):
    """The names run on the call's device (a gather's index lives there): the same measure as on CPU."""
    index = torch.tensor([3, 0, 0, 2, 1]).expand(1, 4, 4, 5)
    model, x = copies_model("gather")
    ref = nrm.explain(model, x, target=1)
    on = nets.Fn(lambda h: h.gather(3, index.to(h.device)))
    moved = nets.seeded(Around(on, 4 * 4 * 5).double().eval(), 0).to(device)
    m = nrm.explain(moved, x.to(device), target=1)
    torch.testing.assert_close(m.marginal("input").cpu(), ref.marginal("input"), rtol=1e-12, atol=1e-14)
