"""The one interface of nrm and its peers, ``nrm_verify.peers.Explainer``, where it runs
without the peers (in ``.venv``): nrm's own explainer, the arguments every explainer checks,
the rows explainers speak for, and the error a missing peer raises. The peer-backed
explainers are tested against the peers in ``peer_tests/test_explainers.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nrm
from nrm.errors import ArgumentError, UnknownLayerError
from nrm.rules import Epsilon, Gamma, Zero
from nrm_verify.peers import (
    SETUP_COMMAND,
    CaptumExplainer,
    CRPExplainer,
    Explainer,
    NRMExplainer,
    PeerMissingError,
    ZennitExplainer,
    row_of,
)
from nrm_verify.zoo import models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mlp_case():
    model = models.mlp([6, 8, 5, 3], seed=0, dtype=torch.float64)
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return model, x, [0, 2]


# -- nrm's own explainer ----------------------------------------------------------------------
def test_nrm_explainer_gives_lrp_relevance_per_layer(mlp_case):
    model, x, target = mlp_case
    m = nrm.explain(model, x, target=target, rules=Epsilon(0.1))
    explainer = NRMExplainer(Epsilon(0.1))
    out = explainer(model, x, target, layers=["input", "fc2"])
    assert list(out) == ["input", "fc2"]
    assert torch.equal(out["input"], m.relevance("input")) and torch.equal(out["fc2"], m.relevance("fc2"))
    every = explainer(model, x, target)
    assert list(every) == ["input", "fc1", "fc2", "fc3"]
    assert explainer.name == "nrm" and explainer.row == "Epsilon"


def test_nrm_explainer_keeps_the_snapshot_outputs(mlp_case):
    """``outputs="marginal"`` / ``"relevance+f"`` are the outputs of the snapshot specs
    ``nrm:…`` / ``nrm-relevance:…``, key for key."""
    model, x, target = mlp_case
    m = nrm.explain(model, x, target=target, rules=nrm.presets.EpsilonPlus())
    marginal = NRMExplainer(nrm.presets.EpsilonPlus(), outputs="marginal")(model, x, target, layers=["input", "fc1"])
    assert list(marginal) == ["absorbed/input", "marginal/input", "absorbed/fc1", "marginal/fc1"]
    assert torch.equal(marginal["marginal/fc1"], m.marginal("fc1"))
    assert torch.equal(marginal["absorbed/fc1"], m.absorbed("fc1"))
    with_f = NRMExplainer(nrm.presets.EpsilonPlus(), outputs="relevance+f")(model, x, target, layers=["fc1"])
    assert list(with_f) == ["f", "relevance/fc1"] and torch.equal(with_f["f"], m.f)
    with pytest.raises(ArgumentError, match="outputs= takes one of"):
        NRMExplainer(Zero(), outputs="heatmap")


def test_snapshot_specs_build_the_explainers():
    from nrm_verify.report import snapshots as R

    explainer = R.load_explainer("nrm:EpsilonGammaBox(-2.0, 2.0)")
    assert isinstance(explainer, NRMExplainer) and explainer.outputs == "marginal"
    assert explainer.row == "EpsilonGammaBox" and explainer.spec == "nrm:EpsilonGammaBox(-2.0, 2.0)"
    relevance = R.load_explainer("nrm-relevance:Gamma(0.25)")
    assert relevance.outputs == "relevance+f" and relevance.row == "Gamma"
    assert R.NRMExplainer is NRMExplainer  # still importable where the snapshots defined it


# -- rows -------------------------------------------------------------------------------------
def test_rows_come_from_the_rules_or_are_named():
    assert row_of(Epsilon(0.1)) == "Epsilon" and row_of(Gamma(0.25)) == "Gamma"
    assert row_of(nrm.presets.EpsilonGammaBox(-1.0, 1.0)) == "EpsilonGammaBox"
    assert row_of(nrm.RuleMap(Epsilon(0.1), first=Zero())) is None  # several rules: no one row
    assert row_of(None) is None

    class Stricter(Epsilon):  # a subclass with conventions of its own is no built-in row
        pass

    assert row_of(Stricter(0.1)) is None and NRMExplainer(Stricter(0.1), row="Epsilon").row == "Epsilon"
    assert ZennitExplainer(nrm.presets.EpsilonPlusFlat()).row == "EpsilonPlusFlat"
    assert ZennitExplainer(composite=lambda: None).row is None  # zennit's own composite
    assert ZennitExplainer(composite=lambda: None, row="Gamma").row == "Gamma"
    assert CaptumExplainer(Epsilon(0.1)).row == "Epsilon"
    assert CRPExplainer(Zero(), condition={"fc1": [0]}).row == "Zero"
    assert [e.name for e in (ZennitExplainer(Zero()), CaptumExplainer(Zero()), CRPExplainer(Zero()))] == [
        "zennit", "captum", "zennit-crp"]


# -- bad arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize("call,message", [
    (lambda m, x: NRMExplainer(Zero())("model", x, 0), "model takes a torch.nn.Module"),
    (lambda m, x: NRMExplainer(Zero())(m, x.tolist(), 0), "x takes a torch.Tensor"),
    (lambda m, x: NRMExplainer(Zero())(m, x.long(), 0), "floating-point"),
    (lambda m, x: NRMExplainer(Zero())(m, x, 1.5), "target takes an int"),
    (lambda m, x: NRMExplainer(Zero())(m, x, True), "target takes an int"),
    (lambda m, x: NRMExplainer(Zero())(m, x, "0"), "target takes an int"),
    (lambda m, x: NRMExplainer(Zero())(m, x, [0, 1, 2]), "3 entries for a batch of 2"),
    (lambda m, x: NRMExplainer(Zero())(m, x, torch.tensor([0.0, 1.0])), "float32 tensor"),
    (lambda m, x: NRMExplainer(Zero())(m, x, 0, layers="fc1"), "layers= takes a list of layer names"),
    (lambda m, x: NRMExplainer(Zero())(m, x, 0, layers=[1]), "layers= takes a list of layer names"),
    (lambda m, x: ZennitExplainer(Zero(), composite=lambda: None), "one of rules= .* or composite="),
    (lambda m, x: ZennitExplainer(), "one of rules= .* or composite="),
    (lambda m, x: ZennitExplainer(composite=3), "composite= takes a zennit composite"),
    (lambda m, x: ZennitExplainer(Zero(), start="ones"), "start= takes one of"),
    (lambda m, x: ZennitExplainer(Zero(), row=3), "row= takes the name"),
    (lambda m, x: CaptumExplainer(Zero(), row="RawBiasZPlus"), "row= takes the name of a conformance row"),
    (lambda m, x: CaptumExplainer(), "one of rules= .* or method="),
    (lambda m, x: CaptumExplainer(method=3), "method= takes a captum.attr class"),
    (lambda m, x: CaptumExplainer(Zero(), attribute={"n_steps": 4}), "attribute= takes"),
    (lambda m, x: CRPExplainer(Zero(), condition={"fc1": 0}), "a list of channel indices for 'fc1'"),
    (lambda m, x: CRPExplainer(Zero(), condition=["fc1"]), r"condition= takes \{layer name: channels\}"),
    (lambda m, x: CRPExplainer(Zero(), condition=[]), "empty list"),
    (lambda m, x: CRPExplainer(Zero(), exclude_parallel="no"), "exclude_parallel= takes True or False"),
    (lambda m, x: CRPExplainer(Zero())(m, x, 0), "one sample"),
])
def test_bad_arguments_are_named(mlp_case, call, message):
    model, x, _ = mlp_case
    with pytest.raises(ArgumentError, match=message):
        call(model, x)


def test_a_tensor_target_is_read_as_ints(mlp_case):
    model, x, _ = mlp_case
    explainer = NRMExplainer(Zero())
    by_tensor = explainer(model, x, torch.tensor([0, 2]), layers=["input"])["input"]
    assert torch.equal(by_tensor, explainer(model, x, [0, 2], layers=["input"])["input"])
    assert torch.equal(explainer(model, x, torch.tensor(1), layers=["input"])["input"],
                       explainer(model, x, 1, layers=["input"])["input"])


def test_an_unknown_layer_is_named(mlp_case):
    model, x, target = mlp_case
    with pytest.raises(UnknownLayerError):
        NRMExplainer(Zero())(model, x, target, layers=["fc9"])


def test_a_subclass_must_compute_and_return_a_dict(mlp_case):
    model, x, target = mlp_case

    class Incomplete(Explainer):
        name = "incomplete"

    with pytest.raises(TypeError, match="relevance"):
        Incomplete()

    class ReturnsAList(Explainer):
        name = "list"

        def relevance(self, model, x, target, layers):
            return [x]

    with pytest.raises(TypeError, match="must return a dict"):
        ReturnsAList()(model, x, target)


# -- missing peers ------------------------------------------------------------------------------
def _without(monkeypatch, *modules):
    for name in modules:  # import name → ImportError, installed or not
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("make,modules", [
    (lambda: ZennitExplainer.named("EpsilonPlusFlat"), ("zennit", "zennit.composites")),
    (lambda: CaptumExplainer(method="Saliency"), ("captum", "captum.attr")),
])
def test_a_missing_peer_says_how_to_install_it_when_made(monkeypatch, make, modules):
    _without(monkeypatch, *modules)
    with pytest.raises(PeerMissingError, match=re.escape(SETUP_COMMAND)):
        make()


@pytest.mark.parametrize("explainer,modules", [
    (ZennitExplainer(Epsilon(0.1)), ("torchvision", "zennit")),
    (CaptumExplainer(Epsilon(0.1)), ("captum", "captum.attr")),
    (CRPExplainer(Epsilon(0.1), condition={"fc1": [0]}), ("torchvision", "crp", "crp.attribution")),
])
def test_a_missing_peer_says_how_to_install_it_when_run(monkeypatch, explainer, modules):
    _without(monkeypatch, *modules)
    model = models.mlp([6, 8, 3], seed=0, dtype=torch.float64)
    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.raises(PeerMissingError, match=re.escape(SETUP_COMMAND)):
        explainer(model, x, 0)


def test_importing_the_peers_package_imports_no_peer():
    code = ("import sys, nrm_verify.peers, nrm_verify.report.snapshots; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('zennit', 'captum', 'crp', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- the page ---------------------------------------------------------------------------------
def test_the_example_of_docs_peers_runs(capsys):
    """docs/peers.md, "Writing an explainer for a new peer": its Python block runs, and the
    new explainer (gradient × input) equals nrm's LRP-0 explainer (law L9)."""
    page = (ROOT / "docs" / "peers.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) == 1
    namespace: dict = {"__name__": "docs_peers"}
    exec(compile(blocks[0], "docs/peers.md", "exec"), namespace)  # noqa: S102 — the page's own code
    row, dev = capsys.readouterr().out.split()
    assert row == "Zero" and float(dev) < 1e-12
    with pytest.raises(ArgumentError, match="input's relevance only"):
        namespace["GradientTimesInput"]()(namespace["model"], namespace["x"], 0, layers=["fc1"])
