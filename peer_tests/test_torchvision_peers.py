"""zennit and captum on torchvision's convolutional classifiers, one model per family (issue 13).

Each model is built as the zoo command builds it (``benchmarks/zoo_torchvision.py``: random
weights, seed 0, float64, eval mode, one seeded image, target = the arg-max logit) and run
through the zennit adapter (EpsilonPlusFlat and EpsilonGammaFlat: zennit's ResNet canonizer
on ResNet blocks, the exact batch-norm merge on every conv → BN, ``Pass`` on activations) and
the captum adapter (``Epsilon(1e-6)`` on every layer). :func:`nrm_verify.peers.sweep.compare`
classifies each run: *equal* to nrm at the input and three convolution / dense layers (the
deviation relative to the layer's largest |R|, at most the suite's ``TOL``), or *refused*
with a :class:`~nrm_verify.peers.PeerConventionError` naming the layer and the cause. An
unexplained deviation or another exception fails. :data:`EXPECTED` says which, per model,
with the cause asserted; ``docs/peers.md`` has the table for the whole zoo, from
:func:`test_the_whole_zoo` (opt-in: ``--nrm-slow`` or ``NRM_SLOW=1``).

The families whose refusals ``test_torchvision.py`` already asserts on one model each
(densenet, mobilenet_v2/v3, efficientnet, mnasnet, convnext) are not repeated here.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import pytest
import torch
from cases import TOL
from torch import nn

import nrm
from nrm.rules import Epsilon
from nrm_verify.peers import CaptumExplainer, ZennitExplainer
from nrm_verify.peers.sweep import compare

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import zoo_torchvision as zoo  # noqa: E402 — the zoo command's build

SIZE = 32

CASES = {
    ("zennit", "EpsilonPlusFlat"): lambda: ZennitExplainer(nrm.presets.EpsilonPlusFlat()),
    ("zennit", "EpsilonGammaFlat"): lambda: ZennitExplainer(nrm.presets.EpsilonGammaFlat()),
    ("captum", "Epsilon(1e-6)"): lambda: CaptumExplainer(Epsilon(1e-6)),
}
"""(peer, label) → the explainer; its rules are what nrm runs too."""

EQUAL = None
Z_PLUS, Z_GAMMA, CAPTUM = CASES
_SUM = "is not the residual sum of a torchvision BasicBlock or Bottleneck"
_PLAIN = "is a plain '+', which captum's LRP propagates as a gradient"
_BN = "has no batch-norm canonizer and applies its EpsilonRule to it as a layer of its own"

EXPECTED: dict[str, dict[tuple[str, str], str | None]] = {
    # dense layers and max pooling only: every peer as nrm
    "alexnet": {Z_PLUS: EQUAL, Z_GAMMA: EQUAL, CAPTUM: EQUAL},
    # conv → BN → ReLU: zennit merges the batch norm exactly; captum gives it a rule of its own
    "vgg11_bn": {Z_PLUS: EQUAL, Z_GAMMA: EQUAL, CAPTUM: "the batch norm 'features.1' (BatchNorm2d)"},
    # BasicBlock / Bottleneck: zennit's ResNet canonizer; captum's '+' passes the gradient. The Bottleneck
    # family is wide_resnet50_2, not resnext50_32x4d: under γ, resnext50 at random initialization is so
    # ill-conditioned that nrm's own relevance at conv1 moves by 5e-10 when x moves by 1e-15; zennit's
    # differs by 7e-10 there, inside TOL by a factor 1.4 only (docs/peers.md; the zoo run covers it)
    "resnet18": {Z_PLUS: EQUAL, Z_GAMMA: EQUAL, CAPTUM: "the sum 'add' " + _PLAIN},
    "wide_resnet50_2": {Z_PLUS: EQUAL, Z_GAMMA: EQUAL, CAPTUM: "the sum 'add' " + _PLAIN},
    # inception modules: concatenations routed by the gradient, BN merged
    "googlenet": {Z_PLUS: EQUAL, Z_GAMMA: EQUAL, CAPTUM: "the batch norm 'conv1.bn' (BatchNorm2d)"},
    # InceptionA's F.avg_pool2d(x, 3, stride=1, padding=1): a function call, no module to hook
    "inception_v3": {k: "the linear layer 'avg_pool2d' (AvgPool, a function call)" for k in CASES},
    # ResBottleneckBlock's x + f(x): not a ResNet block, no canonizer
    "regnet_x_400mf": {Z_PLUS: "the sum 'add' " + _SUM, Z_GAMMA: "the sum 'add' " + _SUM,
                       CAPTUM: "the sum 'add' " + _PLAIN},
    # x.mean([2, 3]) before the classifier (the channel shuffle is exact: see the pooled test below)
    "shufflenet_v2_x0_5": {Z_PLUS: "the linear layer 'mean' (Reduce, a function call)",
                           Z_GAMMA: "the linear layer 'mean' (Reduce, a function call)",
                           CAPTUM: "the linear layer 'mean' (Reduce, a function call)"},
    # fire modules: squeeze, two expands concatenated; no batch norm
    "squeezenet1_0": {Z_PLUS: EQUAL, Z_GAMMA: EQUAL, CAPTUM: EQUAL},
}
"""Per model and (peer, label): ``EQUAL``, or a part of the refusal's message (the layer and its cause)."""


def _check(outcome, expected):
    """Assert one outcome against its expectation (equal, or refused with the named cause)."""
    where = f"{outcome.model} / {outcome.peer} {outcome.label}"
    assert outcome.verdict in ("equal", "refused"), f"{where}: {outcome.summary()}"
    if expected is EQUAL:
        assert outcome.verdict == "equal", f"{where}: expected equal to nrm, got {outcome.summary()}"
        assert outcome.deviation <= TOL and len(outcome.deviations) >= 2, (where, outcome.deviations)
    else:
        assert outcome.verdict == "refused", f"{where}: expected refused ({expected}), got {outcome.summary()}"
        assert expected in outcome.detail, f"{where}: the refusal does not name {expected!r}: {outcome.detail}"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_peers_equal_nrm_or_refuse_naming_the_cause(record, name):
    """Every (peer, preset) on one model of each family: equal to nrm (input and three
    layers), or refused with the layer and cause in :data:`EXPECTED`. Equalities go into
    ``deviations.json`` through ``record``."""
    model, x = zoo.build(name, max(SIZE, zoo.MIN_SIZE.get(name, SIZE)))
    with torch.no_grad():
        target = int(model(x).argmax())
    for (peer, label), expected in EXPECTED[name].items():
        explainer = record.uses(CASES[(peer, label)]())
        outcome = compare(explainer, model, x, target, model_name=name, label=label, tolerance=TOL, keep=True)
        for layer, (ours, theirs) in outcome.tensors.items():
            record(explainer, label, name, ours, theirs, what=layer)
        _check(outcome, expected)


def _pooled_shufflenet():
    """shufflenet_v2_x0_5 with its ``x.mean([2, 3])`` computed by an ``AdaptiveAvgPool2d``
    module and a flatten (the same function), as a Sequential of the model's own modules."""
    model, x = zoo.build("shufflenet_v2_x0_5", SIZE)
    pooled = nn.Sequential(model.conv1, model.maxpool, model.stage2, model.stage3, model.stage4, model.conv5,
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc).eval()
    with torch.no_grad():
        assert torch.allclose(pooled(x), model(x), rtol=1e-14, atol=1e-14)
    return pooled, x


@pytest.mark.parametrize("label", ["EpsilonPlusFlat", "EpsilonGammaFlat"])
def test_zennit_passes_the_channel_shuffle_exactly(record, label):
    """ShuffleNet's channel shuffle (view → transpose → view) and its chunk / cat are
    renamings of neurons: zennit passes them by their gradient, which routes each neuron's
    relevance to the neuron it came from, as nrm does — the adapter refuses shufflenet only
    for its functional mean. With the mean as a pooling module, zennit equals nrm at the
    input and at the convolutions on both sides of a shuffle.

    The pointwise convolution after each depthwise one (no ReLU between) reads signed
    inputs, where zennit's own ZPlus is α1β0 and its γ the generalized one: the adapter puts
    nrm's rule built from zennit's parts there (``zp.signed_inputs``); before it did, this
    test failed with a relative deviation of 1 from ``4.3.branch2.3`` (stage4's last block) down."""
    model, x = _pooled_shufflenet()
    with torch.no_grad():
        target = int(model(x).argmax())
    explainer = record.uses(CASES[("zennit", label)]())
    layers = ["0.0", "2.0.branch2.0", "2.1.branch2.0", "4.3.branch2.5", "5.0", "8"]  # across stages and shuffles
    outcome = compare(explainer, model, x, target, model_name="shufflenet_v2_x0_5 (pooled)", label=label,
                      layers=layers, tolerance=TOL, keep=True)
    for layer, (ours, theirs) in outcome.tensors.items():
        record(explainer, label, "shufflenet_v2_x0_5 (pooled)", ours, theirs, what=layer)
    _check(outcome, EQUAL)
    assert set(outcome.deviations) == {"input", *layers}


def test_captum_refuses_an_unruled_batch_norm_and_equals_nrm_with_it_bridged(record):
    """captum has no batch-norm canonizer: on vgg11_bn its default EpsilonRule on each batch
    norm differs from nrm's folding (before this refusal the adapter ran it and gave a
    deviation of ~5e-7 of the largest relevance). Refused, naming the batch norm and the
    bridge; with the bridge (``bn_as_conv`` and ``Flat`` on nrm's side, ``IdentityRule`` on
    captum's) the two are equal."""
    from captum.attr._utils.lrp_rules import IdentityRule

    from nrm_verify.peers import captum as cp

    model, x = zoo.build("vgg11_bn", SIZE)
    with torch.no_grad():
        target = int(model(x).argmax())
    outcome = compare(CaptumExplainer(Epsilon(1e-6)), model, x, target, model_name="vgg11_bn")
    assert outcome.verdict == "refused", outcome.summary()
    assert re.search(r"the batch norm 'features\.1' \(BatchNorm2d\).*bn_as_conv.*IdentityRule", outcome.detail)
    bns = [n for n, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)]
    split = cp.bn_as_conv(model)
    rules = nrm.RuleMap(Epsilon(1e-6), by_name={n: nrm.rules.Flat() for n in bns})
    explainer = record.uses(CaptumExplainer(rules, module_rules={n: IdentityRule() for n in bns}))
    bridged = compare(explainer, split, x, target, model_name="vgg11_bn (BN as 1x1 conv)", label="Epsilon(1e-6)",
                      tolerance=TOL, keep=True)
    for layer, (ours, theirs) in bridged.tensors.items():
        record(explainer, "Epsilon(1e-6) + IdentityRule on BN (nrm: BN as 1x1 conv, Flat)", "vgg11_bn", ours, theirs,
               what=layer)
    _check(bridged, EQUAL)


def test_a_third_outcome_fails():
    """The sweep's classification: a peer that runs and differs is *deviates* and a peer that
    raises anything but PeerConventionError is *crashed*; neither passes."""
    from nrm_verify.peers.explainer import Explainer

    class Off(Explainer):
        name = "off"

        def relevance(self, model, x, target, layers):
            r = nrm.explain(model, x, target, rules=self.rules)
            return {n: r.relevance(n) * (1 + 1e-6) for n in ["input", *(layers or [])]}

    class Broken(Explainer):
        name = "broken"

        def relevance(self, model, x, target, layers):
            raise RuntimeError("no")

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double().eval()
    x = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    off = compare(Off(Epsilon(1e-6)), model, x, 0, tolerance=TOL)
    assert off.verdict == "deviates" and not off.passes and off.deviation == pytest.approx(1e-6, rel=1e-3)
    assert set(off.deviations) == {"input", "0", "2"}
    broken = compare(Broken(Epsilon(1e-6)), model, x, 0)
    assert broken.verdict == "crashed" and not broken.passes and broken.detail == "RuntimeError: no"
    with pytest.raises(nrm.errors.ArgumentError, match="build the explainer with rules="):
        compare(ZennitExplainer(composite=lambda: None), model, x, 0)  # a peer's own composite: nothing to compare


# -- the whole zoo (opt-in) -------------------------------------------------------------------------
ZOO_RESULTS = pathlib.Path(__file__).parent / "results" / "torchvision_peers.json"


@pytest.mark.nrm_slow
def test_the_whole_zoo():
    """Every convolutional classifier of torchvision (``zoo.CONVOLUTIONAL``) through every
    case of :data:`CASES`: each equal or refused (no third outcome). The outcomes go to
    ``peer_tests/results/torchvision_peers.json`` (merged by model, so the zoo can be run in
    parts: ``NRM_ZOO_MODELS=resnet50,vgg16`` picks models), from which ``docs/peers.md``'s
    table is written. Opt-in (``--nrm-slow`` or ``NRM_SLOW=1``): the large models take minutes."""
    import os

    names = [n for n in os.environ.get("NRM_ZOO_MODELS", "").split(",") if n] or zoo.CONVOLUTIONAL
    unknown = sorted(set(names) - set(zoo.CONVOLUTIONAL))
    assert not unknown, f"not in zoo.CONVOLUTIONAL: {unknown}"
    rows = json.loads(ZOO_RESULTS.read_text()) if ZOO_RESULTS.exists() else {}
    failed = []
    for name in names:
        size = max(SIZE, zoo.MIN_SIZE.get(name, SIZE))
        model, x = zoo.build(name, size)
        with torch.no_grad():
            target = int(model(x).argmax())
        outcomes = [compare(make(), model, x, target, model_name=name, label=label, tolerance=TOL)
                    for (_, label), make in CASES.items()]
        rows[name] = {"size": size, "outcomes": [o.as_dict() for o in outcomes]}
        failed += [f"{name} / {o.peer} {o.label}: {o.summary()}" for o in outcomes if not o.passes]
        del model
        ZOO_RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    assert not failed, "\n".join(failed)
