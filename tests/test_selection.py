"""Neuron selection (nrm_verify.report.selection): the curves, the silencing, the rankings, and
that the user's model is left as it was."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

import nrm
from nrm_verify.report.selection import (
    RANKINGS,
    LayerCut,
    default_ks,
    gradient_input_scores,
    mse,
    relevance_scores,
    selection_curves,
    silenced_outputs,
    smape,
)
from nrm_verify.zoo.models import seeded_image, small_cnn, vgg16


@pytest.fixture(scope="module")
def vgg_curves():
    torch.set_num_threads(1)
    model = vgg16()
    x = seeded_image(32)
    target = int(model(x).argmax())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    curves = selection_curves(model, x, "features.24", target, rules=nrm.presets.EpsilonGammaFlat())
    return model, before, curves


def test_curves_have_one_value_per_k(vgg_curves):
    _, _, curves = vgg_curves
    assert curves.channels == 512
    assert curves.ks == default_ks(512) and curves.ks[0] == 0 and curves.ks[-1] == 512
    assert set(curves.mse) == set(curves.smape) == set(curves.target) == set(RANKINGS)
    for name in RANKINGS:
        assert len(curves.mse[name]) == len(curves.smape[name]) == len(curves.target[name]) == len(curves.ks)
        assert sorted(curves.order[name]) == list(range(512))  # a permutation of the channels


def test_all_channels_kept_is_the_full_model(vgg_curves):
    _, _, curves = vgg_curves
    for name in RANKINGS:
        assert curves.mse[name][-1] == 0.0 and curves.smape[name][-1] == 0.0
        assert curves.target[name][-1] == pytest.approx(curves.full_target, abs=0)
        # k = 0 silences the whole layer whatever the ranking
        assert curves.mse[name][0] == pytest.approx(curves.mse["relevance"][0], rel=1e-12)
    assert curves.mse["relevance"][0] > 0


def test_silencing_nothing_through_the_batched_pass_is_the_full_output():
    model = small_cnn()
    x = seeded_image(16)
    m = nrm.explain(model, x, target=0)
    cut = LayerCut(model, m, "features.0")
    ys = silenced_outputs(cut, cut.head(x), x, list(range(8)), [8, 8, 8])  # one batch of three
    assert torch.allclose(ys, model(x).expand(3, -1), rtol=1e-6, atol=1e-7)


def test_relevance_ranking_beats_random_on_the_seeded_vgg(vgg_curves):
    # measured on the seeded VGG16 at 32×32 (features.24, EpsilonGammaFlat): mean MSE over the
    # ks 0.061 for the relevance ranking, 0.068 for gradient×input, 0.094 for random (5 draws)
    _, _, curves = vgg_curves
    assert curves.area("mse", "relevance") < curves.area("mse", "random")
    assert curves.area("smape", "relevance") < curves.area("smape", "random")
    # and at every k below C the relevance ranking is not worse than the random average
    small = [i for i, k in enumerate(curves.ks) if 0 < k <= 64]
    assert all(curves.mse["relevance"][i] < curves.mse["random"][i] for i in small)


def test_the_model_is_untouched(vgg_curves):
    model, before, _ = vgg_curves
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
        assert not module.training
    assert all(p.grad is None for p in model.parameters())


def test_gradient_input_ranking_is_the_lrp0_marginal_times_f():
    # law L9: with LRP-0 everywhere m_l(j) = a_j ∂f/∂a_j / f, so the channel sums agree
    model = small_cnn(dtype=torch.float64)
    x = seeded_image(16, dtype=torch.float64)
    m = nrm.explain(model, x, target=3)
    cut = LayerCut(model, m, "features.3")
    gi = gradient_input_scores(cut, x, 3)
    rel = relevance_scores(m, "features.3") * m.f[0]
    assert torch.allclose(gi, rel, rtol=1e-9, atol=1e-12)


def _bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 6, 3, padding=1), bn=nn.BatchNorm2d(6), relu=nn.ReLU(),
                                    pool=nn.AdaptiveAvgPool2d((2, 2)), flat=nn.Flatten(), fc=nn.Linear(24, 4)))
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.bias.uniform_(-0.5, 0.5)
    return net.double().eval()


def test_silencing_cuts_after_batch_norm_and_activation():
    net = _bn_net()
    x = seeded_image(8, dtype=torch.float64)
    m = nrm.explain(net, x, target=0)
    cut = LayerCut(net, m, "conv")
    a = cut.head(x)
    assert torch.equal(cut.tail(a), net(x))
    keep = [4, 1]
    # expected: zero channels of the ReLU output (not of the conv: BN(0) ≠ 0) in a hooked copy
    hooked = copy.deepcopy(net)
    mask = torch.zeros(1, 6, 1, 1, dtype=x.dtype)
    mask[0, keep] = 1
    hooked.relu.register_forward_hook(lambda mod, inp, out: out * mask)
    got = silenced_outputs(cut, a, x, keep, [2])
    assert torch.allclose(got[0], hooked(x)[0], rtol=0, atol=1e-14)
    assert not torch.allclose(got[0], net(x)[0])


class _NotSequential(nn.Module):
    """small_cnn's modules under the same names, run by a forward of its own."""

    def __init__(self):
        super().__init__()
        src = small_cnn(dtype=torch.float64)
        self.features, self.avgpool, self.flatten, self.classifier = src.features, src.avgpool, src.flatten, \
            src.classifier

    def forward(self, x):
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def test_a_module_that_is_not_sequential_is_cut_on_a_copy():
    wrapped = _NotSequential().eval()
    plain = small_cnn(dtype=torch.float64)
    x = seeded_image(16, dtype=torch.float64)
    m = nrm.explain(plain, x, target=1)
    pieces, hooked = LayerCut(plain, m, "features.3"), LayerCut(wrapped, m, "features.3")
    assert hooked._leaves is None  # the deep-copy path
    order, ks = list(range(15, -1, -1)), [0, 3, 16]
    a = pieces.head(x)
    assert torch.equal(hooked.head(x), a)
    assert torch.allclose(silenced_outputs(hooked, a, x, order, ks), silenced_outputs(pieces, a, x, order, ks),
                          rtol=0, atol=1e-13)
    assert all(not mod._forward_hooks for mod in wrapped.modules())


def test_selection_below_an_upper_set_uses_the_joint():
    model = small_cnn(dtype=torch.float64)
    x = seeded_image(16, dtype=torch.float64)
    m = nrm.explain(model, x, target=2)
    upper = nrm.At("features.3", channels=[0, 5])
    scores = relevance_scores(m, "features.0", within=upper)
    joint = m.joint("features.0", "features.3")[0][:, [0, 5]].sum(1)
    assert torch.allclose(scores, joint, rtol=1e-10, atol=1e-14)
    curves = selection_curves(model, x, "features.0", 2, measure=m, within=upper, ks=[0, 2, 8], random_draws=2)
    assert curves.ks == [0, 2, 8] and curves.mse["relevance"][-1] == 0.0
    assert curves.order["relevance"][0] == int(scores.abs().argmax())


def test_metrics():
    y = torch.tensor([1.0, -2.0, 0.0])
    assert mse(y, y) == 0.0 and smape(y, y) == 0.0
    assert mse(torch.zeros(3), y) == pytest.approx(5 / 3)
    # 0 against a non-zero value is the maximum, 200 %; 0 against 0 counts as 0
    assert smape(torch.zeros(3), y) == pytest.approx(400 / 3)
    assert default_ks(6) == [0, 1, 2, 3, 4, 5, 6]


def test_bad_arguments():
    model = small_cnn()
    x = seeded_image(16)
    with pytest.raises(ValueError, match="one sample"):
        selection_curves(model, seeded_image(16, batch=2), "features.0", 0)
    m = nrm.explain(model, x, target=0)
    with pytest.raises(ValueError, match="ks must lie"):
        selection_curves(model, x, "features.0", 0, measure=m, ks=[0, 9])
    with pytest.raises(ValueError, match="output"):
        selection_curves(model, x, "output", 0, measure=m)
    with pytest.raises(nrm.UnknownLayerError):
        selection_curves(model, x, "features.99", 0, measure=m)
