"""A peer against nrm on one model, with one of two outcomes that pass and two that fail.

:func:`compare` runs a peer :class:`~nrm_verify.peers.Explainer` (built for nrm rules:
:class:`~nrm_verify.peers.ZennitExplainer`, :class:`~nrm_verify.peers.CaptumExplainer`)
and :func:`nrm.explain` with the same rules on ``(model, x, target)`` and classifies what
happened (:class:`Outcome`):

* ``"equal"`` — the peer ran, and at the input and at each compared layer the largest
  deviation from nrm's relevance, relative to the largest |R| that nrm gives the layer, is
  at most ``tolerance``;
* ``"refused"`` — the adapter raised :class:`~nrm_verify.peers.PeerConventionError`, whose
  message names the layer and the cause (what the peer would do there instead of the rule);
* ``"deviates"`` — the peer ran and differs by more: an unexplained deviation;
* ``"crashed"`` — any other exception (from the peer, the adapter or nrm).

Only the first two pass (:attr:`Outcome.passes`): a sweep over a model zoo
(``peer_tests/test_torchvision_peers.py``) asserts that every model is equal or refused
with its cause, so that no third outcome goes by silently.

The deviation is relative to the layer's own largest |R|, not floored at 1 as the peer
suite's ``close()`` is: torchvision's models at random initialization give relevance of
1e-9 (googlenet) to 1e2 (resnext50 under γ), and an absolute floor would accept any
difference on the small ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from nrm_verify.peers.base import PeerConventionError
from nrm_verify.peers.explainer import Explainer

TOLERANCE = 1e-9
"""Largest relative deviation that counts as equal (the peer suite's ``TOL``; float64 leaves ~1e-13)."""

VERDICTS = ("equal", "refused", "deviates", "crashed")


@dataclass
class Outcome:
    """What one peer gave on one model: ``verdict`` (one of :data:`VERDICTS`); for a run
    that finished, ``deviation`` (the worst relative deviation) at ``layer`` and every
    compared layer's in ``deviations``; for a refusal or a crash, ``detail`` (the message)."""

    model: str
    peer: str
    label: str
    verdict: str
    deviation: float | None = None
    layer: str | None = None
    deviations: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    seconds: float = 0.0
    tensors: dict = field(default_factory=dict, repr=False)
    """With ``compare(…, keep=True)``: {layer: (nrm's R, the peer's R)}, for a record of each."""

    @property
    def passes(self) -> bool:
        return self.verdict in ("equal", "refused")

    def summary(self) -> str:
        if self.verdict in ("equal", "deviates"):
            return f"{self.verdict}: worst relative deviation {self.deviation:.1e} at '{self.layer}'"
        return f"{self.verdict}: {self.detail}"

    def as_dict(self) -> dict:
        out = asdict(self)
        del out["tensors"]
        return out


def compared_layers(model: nn.Module, names: Sequence[str], count: int = 3) -> list[str]:
    """Up to ``count`` of nrm's layer ``names`` that are convolution or dense modules of
    ``model`` (where every peer records relevance at the module's output): the first, the
    last and ones evenly in between."""
    modules = dict(model.named_modules())
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    found = [n for n in names if isinstance(modules.get(n), kinds)]
    if len(found) <= count:
        return found
    picks = sorted({round(i * (len(found) - 1) / (count - 1)) for i in range(count)})
    return [found[i] for i in picks]


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.detach().double().reshape(-1), theirs.detach().double().reshape(-1)
    if ours.shape != theirs.shape:
        raise ValueError(f"nrm has {ours.numel()} values, the peer {theirs.numel()}")
    if not bool(torch.isfinite(theirs).all()):
        return math.inf
    dev = float((ours - theirs).abs().max())
    scale = float(ours.abs().max())
    return dev / scale if scale > 0 else dev


def compare(explainer: Explainer, model: nn.Module, x: torch.Tensor, target: int, *, model_name: str = "",
            label: str = "", layers: Sequence[str] | None = None, tolerance: float = TOLERANCE,
            keep: bool = False) -> Outcome:
    """Run ``explainer`` (built for nrm rules) and nrm with ``explainer.rules`` on
    ``(model, x, target)``; compare the input and ``layers`` (default: three convolution or
    dense layers, :func:`compared_layers`) and classify the outcome (:class:`Outcome`);
    ``keep=True`` keeps both relevances of each compared layer (``Outcome.tensors``)."""
    import nrm
    from nrm.errors import ArgumentError

    if explainer.rules is None:
        raise ArgumentError(f"{explainer!r} runs a peer's own composite or method, not nrm rules, so nrm has nothing "
                            "to run beside it: build the explainer with rules= (e.g. ZennitExplainer(nrm.presets."
                            "EpsilonPlusFlat()))")
    out = Outcome(model=model_name, peer=explainer.name, label=label or str(explainer.row), verdict="crashed")
    start = time.perf_counter()
    try:
        m = nrm.explain(model, x, target, rules=explainer.rules)
        wanted = list(layers) if layers is not None else compared_layers(model, m.layers)
        theirs = explainer(model, x, target, layers=wanted)
        for layer in ["input", *wanted]:
            ours = m.relevance(layer)
            out.deviations[layer] = _relative(ours, theirs[layer])
            if keep:
                out.tensors[layer] = (ours.detach(), theirs[layer].detach())
        out.layer, out.deviation = max(out.deviations.items(), key=lambda kv: kv[1])
        out.verdict = "equal" if out.deviation <= tolerance else "deviates"
    except PeerConventionError as e:
        out.verdict, out.detail = "refused", str(e)
    except Exception as e:  # noqa: BLE001 — a crash is an outcome, reported with its type
        out.verdict, out.detail = "crashed", f"{type(e).__name__}: {e}"
    out.seconds = time.perf_counter() - start
    return out


_CAUSES = (
    (r"'([^']+)' multiplies activations", "product of activations at '{}'"),
    (r"the sum '([^']+)' is not the residual sum", "sum '{}' outside a ResNet block"),
    (r"the sum '([^']+)' is a plain '\+'", "plain '+' at '{}'"),
    (r"the batch norm '([^']+)'", "batch norm '{}' not folded"),
    (r"the linear layer '([^']+)' \((\w+), a function call\)", "'{}' ({}) a function call"),
    (r"the linear layer '([^']+)' \((\w+), (\w+)\) is not a module", "'{}' ({}, {}) unhooked"),
    (r"the module '([^']+)' \((\w+)\) has no captum rule", "'{}' ({}) has no captum rule"),
)


def short_cause(detail: str) -> str:
    """A refusal's causes in a few words each (for a table): the layer and what it is."""
    import re

    found = []
    for pattern, text in _CAUSES:
        hit = re.search(pattern, detail)
        if hit:
            found.append(text.format(*hit.groups()))
    return "; ".join(found) or detail.splitlines()[0][:120]


def table(rows: dict) -> str:
    """The markdown table of a zoo sweep: ``rows`` is {model: {"size": …, "outcomes": [Outcome.as_dict(), …]}}
    (``peer_tests/results/torchvision_peers.json``); one column per (peer, label)."""
    columns = []
    for row in rows.values():
        for o in row["outcomes"]:
            if (o["peer"], o["label"]) not in columns:
                columns.append((o["peer"], o["label"]))
    out = ["| model | image | " + " | ".join(f"{p} {label}" for p, label in columns) + " |",
           "|---|---|" + "---|" * len(columns)]
    for name, row in rows.items():
        cells = {(o["peer"], o["label"]): o for o in row["outcomes"]}
        text = []
        for key in columns:
            o = cells.get(key)
            if o is None:
                text.append("not run")
            elif o["verdict"] in ("equal", "deviates"):
                text.append(f"{'**deviates**' if o['verdict'] == 'deviates' else 'equal'} {o['deviation']:.0e}")
            elif o["verdict"] == "refused":
                text.append("refused: " + short_cause(o["detail"]))
            else:
                text.append(f"**crashed**: {o['detail'][:100]}")
        out.append(f"| {name} | {row['size']} | " + " | ".join(text) + " |")
    return "\n".join(out)


__all__ = ["TOLERANCE", "VERDICTS", "Outcome", "compared_layers", "compare", "short_cause", "table"]
