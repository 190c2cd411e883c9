"""A measure's engine and network are freed by reference counting as soon as the measure is
dropped — no reference cycle keeps them (and a large model's folded and rule-modified
weights) alive until Python's cycle collector happens to run. Explaining a 145 M-parameter
RegNet with eight rule sets in a loop peaked at 20.4 GB before (two cycles: the engine's
``z_nobias`` cache held the engine, and the prepared kernels' closures held it through
``self``), 6.7 GB after."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from test_torch_transformer import PADDING, Encoder, _seeded

import nrm
from nrm_verify.zoo import models

RULES = [None, nrm.rules.Epsilon(0.1), nrm.presets.EpsilonGammaFlat(), nrm.presets.EpsilonAlpha2Beta1()]


def _cases():
    encoder, x = _seeded(Encoder(layers=2, padding=PADDING, norm_first=True), seed=1, batch=2)
    return {"small_cnn": (models.small_cnn(seed=0), models.seeded_image(32, batch=2, seed=1), [0, 1]),
            "vgg16": (models.vgg16(seed=0, num_classes=10), models.seeded_image(32, batch=1, seed=2), 3),
            "transformer encoder": (encoder, x, 0)}


@pytest.mark.parametrize("rules", RULES, ids=repr)
def test_the_engine_is_freed_with_the_measure_without_the_cycle_collector(rules):
    for name, (model, x, target) in _cases().items():
        gc.collect()
        gc.disable()
        try:
            m = nrm.explain(model, x, target=target, rules=rules)
            m.marginal("input")
            m.marginals(absorber=True)
            m.marginal(m.layers[1], within=nrm.At("input", channels=[0]))
            alive = [weakref.ref(m.engine), weakref.ref(m.network), weakref.ref(m.engine.z_nobias)]
            del m
            assert [r() is None for r in alive] == [True, True, True], name
        finally:
            gc.enable()


def test_the_engine_of_a_measure_still_held_stays():
    model, x = models.small_cnn(seed=0), models.seeded_image(32, batch=1, seed=1)
    m = nrm.explain(model, x, target=0)
    engine = weakref.ref(m.engine)
    gc.collect()
    assert engine() is m.engine and torch.isfinite(m.marginal("input")).all()
