"""The layer vocabulary: kinds declared once (nrm.layers), read by the engine, the exact
oracle, the explicit reference and the laws; a user's kind through the public API only;
``check-layer`` passing sound kinds and catching broken ones."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import torch
from torch import nn

import nrm
from nrm.linear import DiagonalMap
from nrm_verify import laws
from nrm_verify.properties.checks import laws_on_case
from nrm_verify.references.explicit import reference_lrp
from nrm_verify.references.oracle import ExactNetwork
from nrm_verify.validate import HELD, NOT_APPLICABLE, PROVED, VIOLATED
from nrm_verify.validate.layers import check_layer

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = pathlib.Path(__file__).resolve().parents[1]
D = torch.float64
RULES = [nrm.rules.Zero(), nrm.rules.Epsilon(0.1), nrm.rules.Gamma(0.5), nrm.rules.AlphaBeta(2, 1),
         nrm.rules.WSquare(), nrm.rules.Flat()]


sys.path.insert(0, str(ROOT / "examples" / "layers"))  # the examples import by name (counterexamples pickle them)
import channel_scale as scale_example  # noqa: E402
import soft_clip as clip_example  # noqa: E402


@pytest.fixture
def channel_scale_kind():
    nrm.layers.register(scale_example.ChannelScaleKind)
    yield scale_example
    nrm.layers.unregister(scale_example.ChannelScaleKind)


def _scaled_cnn() -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.ReLU(), scale_example.ChannelScale(3), nn.Flatten(),
                          nn.Linear(12, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    x = torch.randn((1, 2, 3, 3), generator=g, dtype=D)
    return model.eval(), x


# -- a kind registered through the public API only -----------------------------------------------


def test_an_unregistered_user_module_is_read_through_its_operations():
    """Without a kind, the module's forward is recorded operation by operation: x * scale is
    a product with a parameter, read by the built-in ConstantScale (issue 13; before it, the
    product was refused, named with its module)."""
    model, x = _scaled_cnn()
    m = nrm.explain(model, x, target=0)
    assert "ConstantScale" in [b.producer.layer_kind.name for b in m.network.blocks[1:]]
    assert laws.normalization(m, tol=1e-12).holds


@pytest.mark.parametrize("rules", RULES + ["preset"], ids=repr)
def test_a_registered_kind_against_the_oracle_the_reference_and_the_laws(channel_scale_kind, rules):
    if rules == "preset":  # a preset knows nn's types; the user's kind gets its rule by its own type
        rules = {nrm.FIRST: nrm.rules.Flat(), nn.Conv2d: nrm.rules.Gamma(0.25), nn.Linear: nrm.rules.Epsilon(1e-6),
                 scale_example.ChannelScale: nrm.rules.Epsilon(1e-6)}
    model, x = _scaled_cnn()
    m = nrm.explain(model, x, target=1, rules=rules, check="full")
    assert m.network.blocks[m.layer_index("2")].producer.layer_kind.name == "ChannelScaleKind"
    exact = ExactNetwork.from_model(model, x, rules).explain(target=1)
    scale = float(exact.total_variation())
    for name in ("input", "0", "2", "4"):
        want = torch.tensor([float(v) for v in exact.marginal(name).reshape(-1)], dtype=D)
        assert float((m.marginal(name).reshape(-1) - want).abs().max()) <= 1e-9 * max(1.0, scale), name
    ref = reference_lrp(model, x, 1, rules)
    for name in ("input", "0", "2"):
        torch.testing.assert_close(m.relevance(name), ref.relevance[name].reshape(m.relevance(name).shape),
                                   rtol=1e-10, atol=1e-12)
    failed = [(call, r) for call, r in laws_on_case(model, x, 1, rules) if r.holds is False]
    assert not failed, failed[:2]
    assert laws.layer_maps(m).holds and laws.layer_transposes(m).holds


def test_lrn_reaches_the_oracle_and_the_reference():
    from nrm.lrn import LRNIdentity, LRNTaylor

    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0),
                          nn.Flatten(), nn.Linear(16, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D))
    model.eval()
    x = torch.randn((1, 2, 2, 2), generator=g, dtype=D)
    for lrn_rule in (LRNTaylor(), LRNTaylor(expansion="gradient"), LRNIdentity(), nrm.rules.Epsilon(0.01)):
        rules = {nn.LocalResponseNorm: lrn_rule, nn.Conv2d: nrm.rules.Zero(), nn.Linear: nrm.rules.Epsilon(1e-6)}
        m = nrm.explain(model, x, target=0, rules=rules, check="full")
        exact = ExactNetwork.from_model(model, x, rules).explain(target=0)
        scale = max(1.0, float(exact.total_variation()))
        for name in ("input", "0", "2"):
            want = torch.tensor([float(v) for v in exact.marginal(name).reshape(-1)], dtype=D)
            assert float((m.marginal(name).reshape(-1) - want).abs().max()) <= 1e-9 * scale, (lrn_rule, name)
        ref = reference_lrp(model, x, 0, rules)
        for name in ("input", "0", "2"):
            torch.testing.assert_close(m.relevance(name), ref.relevance[name].reshape(m.relevance(name).shape),
                                       rtol=1e-9, atol=1e-12, msg=f"{lrn_rule!r} at {name}")


# -- check-layer ------------------------------------------------------------------------------------


def _statuses(report) -> dict[str, str]:
    return {f"{v.law} {v.name}": v.status for v in report.verdicts}


def test_check_layer_passes_a_sound_linear_kind():
    report = check_layer(scale_example.ChannelScaleKind, max_examples=10)
    assert report.ok, str(report)
    statuses = _statuses(report)
    for key in ("K2 layer maps reproduce the module", "K3 transposes are adjoints", "K5 exact oracle",
                "L1 normalization", "L18 modularity", "L9 LRP-0 = gradient × input"):
        assert statuses[key] in (HELD, PROVED), (key, statuses[key])
    assert "ChannelScaleKind" not in nrm.layers.REGISTRY.kinds  # registered for the check only


def test_check_layer_passes_a_sound_activation_and_says_l9_does_not_apply():
    report = check_layer(clip_example.SoftClipKind, max_examples=6)
    assert report.ok, str(report)
    statuses = _statuses(report)
    assert statuses["L9 LRP-0 = gradient × input"] == NOT_APPLICABLE
    assert statuses["K3 transposes are adjoints"] == NOT_APPLICABLE
    assert statuses["K2 layer maps reproduce the module"] == HELD


class LeakyTranspose(DiagonalMap):
    """Sends 10% less relevance down than its forward says: a leaking kernel."""

    def transpose(self, g, weight, in_shape):
        return 0.9 * super().transpose(g, weight, in_shape)


class LeakingKind(nrm.layers.Linear):
    modules = (scale_example.ChannelScale,)

    def map(self, call, a, rule=None):
        return LeakyTranspose(call.module.scale.detach())

    def examples(self):
        return [(scale_example.ChannelScale(3).double().eval(), (3,))]


class TransposedWrongly(DiagonalMap):
    """Multiplies by the weight of the next channel on the way down: not the adjoint."""

    def transpose(self, g, weight, in_shape):
        return super().transpose(g, torch.roll(weight, 1), in_shape)


class WrongTransposeKind(LeakingKind):
    def map(self, call, a, rule=None):
        return TransposedWrongly(call.module.scale.detach())


@pytest.mark.parametrize("kind", [LeakingKind, WrongTransposeKind])
def test_check_layer_catches_a_broken_transpose_with_a_runnable_counterexample(kind):
    report = check_layer(kind, max_examples=6, only=["K3", "L1"])
    assert not report.ok
    statuses = _statuses(report)
    assert statuses["K3 transposes are adjoints"] == VIOLATED
    if kind is LeakingKind:
        assert statuses["L1 normalization"] == VIOLATED  # relevance leaks: columns no longer sum to one
    verdict = next(v for v in report.verdicts if v.law == "K3")
    script = verdict.counterexample.script
    assert "nrm.layers.register(kind)" in script
    namespace: dict = {}
    try:
        exec(compile(script, "<counterexample>", "exec"), namespace)  # noqa: S102 — the program it prints
    finally:
        nrm.layers.unregister(kind.__name__)
    assert namespace["result"].holds is False


def test_check_layer_refuses_what_is_not_a_kind():
    assert check_layer("nrm.rules:Epsilon").exit_code == 2
    assert check_layer("no.such.module:Kind").exit_code == 2

    class NoExamples(nrm.layers.Linear):
        modules = (nn.Identity,)

    report = check_layer(NoExamples)
    assert report.exit_code == 2 and "examples()" in report.invalid


def test_check_layer_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "nrm_verify.commands", "check-layer",
                          "examples/layers/channel_scale.py:ChannelScaleKind", "--max-examples", "3",
                          "--law", "K2", "--law", "K3", "--json", str(tmp_path / "r.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "K3 transposes are adjoints" in out.stdout and (tmp_path / "r.json").is_file()
    bad = subprocess.run([sys.executable, "-m", "nrm_verify.commands", "check-layer", "nrm.rules:Epsilon"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("name", sorted(nrm.layers.REGISTRY.kinds))
def test_check_layer_passes_every_built_in_kind(name):
    kind = nrm.layers.REGISTRY.kinds[name]
    report = check_layer(kind, max_examples=3, only=["K2", "K3", "K5", "L1", "L18"])
    assert report.ok, str(report)
