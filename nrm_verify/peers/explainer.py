"""One interface for every implementation of LRP that nrm is compared with: :class:`Explainer`.

An explainer is an object that computes relevance for ``(model, x, target)``::

    explainer(model, x, target, layers=["fc1"]) == {"input": R_0, "fc1": R_fc1}

* ``name`` — the peer that computes it: ``"nrm"``, ``"zennit"``, ``"captum"``, ``"zennit-crp"``;
* ``rules`` — the nrm rule or preset it reproduces (``None`` for a peer's own composite or
  method, run as the peer defines it);
* ``row`` — the row of ``nrm-verify check``'s conformance table it speaks for: the rule's
  class name (``"Epsilon"``) or the preset's name (``"EpsilonGammaBox"``); ``None`` when it
  reproduces no nrm rule. Given explicitly (``row="Gamma"``) where a peer's own composite
  is known to reproduce a rule, e.g. zennit's ``Gamma`` on every layer;
* ``explainer(model, x, target, *, layers=None)`` — ``{layer name: R_layer}``, ``"input"``
  for the input. R is LRP's relevance: the target output starts with R_c = f_c(x), so
  R_layer = f · m_layer, nrm's ``m.relevance(layer)`` (NRM-SPEC §3, law L8). ``layers``
  names the layers whose relevance is wanted besides the input's (for the peers: module
  names, the relevance at the module's output; ``None``: the input only, for nrm every layer).

A subclass sets ``name`` and implements :meth:`Explainer.relevance`; ``__call__`` checks the
arguments first (:class:`nrm.errors.ArgumentError` for a wrong type) and the result after.
The implementations: :class:`NRMExplainer` here, :class:`~nrm_verify.peers.zennit.ZennitExplainer`,
:class:`~nrm_verify.peers.captum.CaptumExplainer`, :class:`~nrm_verify.peers.crp.CRPExplainer`;
``docs/peers.md`` shows how to write one for a new peer. The peer suite (``peer_tests``)
computes every peer result through them and records ``peer`` and ``row`` with each
deviation; ``nrm-verify check`` reads those into its PEERS column.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import ClassVar

import torch
from torch import nn

from nrm.errors import ArgumentError


def row_of(rules) -> str | None:
    """The conformance row that ``rules`` is: a built-in rule's name (:data:`nrm.rules.RULES`),
    a preset's name (a :class:`nrm.presets.RuleMap` built by a function of
    :data:`nrm.presets.PRESETS`), or ``None`` (a mapping of several rules, a rule of one's
    own or a subclass with other conventions — ``row=`` names its row — or nothing)."""
    from nrm.presets import PRESETS, RuleMap
    from nrm.rules import RULES, Rule

    if isinstance(rules, Rule):
        name = type(rules).__name__
        return name if RULES.get(name) is type(rules) else None
    if isinstance(rules, RuleMap) and rules.name:
        # a preset's RuleMap is named by the call that built it, "EpsilonPlus(epsilon=1e-06)"
        head = rules.name.partition("(")[0]
        return head if head in PRESETS else None
    return None


ROWS_HELP = "a built-in rule's name (nrm.rules.RULES) or a preset's (nrm.presets.PRESETS)"


def check_row(row) -> str | None:
    """``row`` as the name of a row of ``nrm-verify check``'s table, or ``None``."""
    from nrm.presets import PRESETS
    from nrm.rules import RULES

    if row is not None and (not isinstance(row, str) or (row not in RULES and row not in PRESETS)):
        raise ArgumentError(f"row= takes the name of a conformance row, {ROWS_HELP}, or None; got {row!r:.80}")
    return row


def check_target(target, batch: int) -> int | list[int]:
    """``target`` as one int (every sample) or a list of one int per sample."""
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool or target.dim() > 1:
            raise ArgumentError(f"target takes an int or one int per sample; got a {target.dtype} tensor of shape "
                                f"{tuple(target.shape)}")
        target = target.item() if target.dim() == 0 else target.tolist()
    if _is_int(target):
        return int(target)
    if isinstance(target, Sequence) and not isinstance(target, str):
        values = list(target)
        if all(_is_int(t) for t in values):
            if len(values) != batch:
                raise ArgumentError(f"target has {len(values)} entries for a batch of {batch}; give one int for "
                                    "every sample, or one per sample")
            return [int(t) for t in values]
    raise ArgumentError(f"target takes an int (the output index) or a list of one int per sample, got {target!r:.80}")


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_layers(layers) -> list[str] | None:
    """``layers`` as a list of names, or ``None`` (the explainer's default)."""
    if layers is None:
        return None
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers):
        raise ArgumentError(f"layers= takes a list of layer names, e.g. ['fc1'], or None; got {layers!r:.80}")
    return list(layers)


class Explainer(ABC):
    """Relevance of one implementation of LRP for ``(model, x, target)``; see the module's
    docstring for the contract.

    Subclasses set the class attribute ``name`` and implement :meth:`relevance`. ``rules``
    is the nrm rule or preset the explainer reproduces (``None`` for a peer's own
    composite or method); ``row`` overrides the row derived from it (:func:`row_of`);
    ``spec`` is the text it was loaded from (``nrm_verify.report.snapshots`` records it).
    """

    name: ClassVar[str] = ""

    def __init__(self, rules=None, *, row: str | None = None, spec: str | None = None):
        if spec is not None and not isinstance(spec, str):
            raise ArgumentError(f"spec= takes the text the explainer was loaded from, got {type(spec).__name__}")
        self.rules = rules
        self.spec = spec
        self._row = check_row(row)

    @property
    def row(self) -> str | None:
        """The conformance row this explainer speaks for (``None``: no nrm rule)."""
        return self._row if self._row is not None else row_of(self.rules)

    def __call__(self, model: nn.Module, x: torch.Tensor, target, *,
                 layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``{"input": R_0, layer: R_layer, …}`` (LRP's R: R_c = f_c(x) at the output)."""
        if not isinstance(model, nn.Module):
            raise ArgumentError(f"model takes a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(x, torch.Tensor):
            raise ArgumentError(f"x takes a torch.Tensor (batch first), got {type(x).__name__}; use torch.tensor(...)")
        if not x.is_floating_point() or x.dim() == 0:
            raise ArgumentError(f"x takes a floating-point tensor with a batch axis, got {x.dtype} of shape "
                                f"{tuple(x.shape)}")
        out = self.relevance(model, x, check_target(target, x.shape[0]), check_layers(layers))
        if not isinstance(out, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in out.items()):
            raise TypeError(f"{type(self).__name__}.relevance must return a dict {{layer name: tensor}}, got "
                            f"{type(out).__name__}; fix the explainer")
        return dict(out)

    @abstractmethod
    def relevance(self, model: nn.Module, x: torch.Tensor, target: int | list[int],
                  layers: list[str] | None) -> dict[str, torch.Tensor]:
        """The explainer's work, on checked arguments: ``target`` an int or a list of one
        int per sample, ``layers`` a list of names or ``None`` (the explainer's default; for
        the peers, the input only). Returns ``{"input": R_0, layer: R_layer, …}``."""

    def __repr__(self) -> str:
        if self.spec:
            return f"{type(self).__name__}({self.spec!r})"
        return f"{type(self).__name__}(rules={self.rules!r}, row={self.row!r})"


OUTPUTS = ("relevance", "marginal", "relevance+f")
"""What :class:`NRMExplainer` returns (the ``outputs=`` argument)."""


class NRMExplainer(Explainer):
    """nrm's own measure under ``rules`` (a rule on every linear layer, a mapping or a preset).

    For each of ``layers`` (every layer of the model when ``None``: the first name of each
    layer in order), with ``outputs=``:

    * ``"relevance"`` (the :class:`Explainer` convention): ``{layer: R_l}``, R_l = f · m_l;
    * ``"marginal"``: ``marginal/<layer>`` = m_l (B, *shape) and ``absorbed/<layer>`` =
      m_l(⊥) (B,) — what the snapshot spec ``nrm:…`` records;
    * ``"relevance+f"``: ``relevance/<layer>`` = R_l and ``f`` = f_c(x) — the snapshot spec
      ``nrm-relevance:…``.

    ``accepts_layers``: the snapshots pass a case's layers (nrm's layer names) to it.
    """

    name = "nrm"
    accepts_layers = True

    def __init__(self, rules=None, *, outputs: str = "relevance", row: str | None = None, spec: str | None = None):
        if outputs not in OUTPUTS:
            raise ArgumentError(f"outputs= takes one of {OUTPUTS}, got {outputs!r}")
        super().__init__(rules, row=row, spec=spec)
        self.outputs = outputs

    def relevance(self, model, x, target, layers):
        import nrm

        m = nrm.explain(model, x, target=target, rules=self.rules)
        if layers is None:
            first: dict[int, str] = {}
            for name in m.layers:
                first.setdefault(m.layer_index(name), name)
            layers = [first[i] for i in sorted(first)]
        if self.outputs == "relevance":
            return {name: m.relevance(name) for name in layers}
        out: dict[str, torch.Tensor] = {"f": m.f} if self.outputs == "relevance+f" else {}
        for name in layers:
            if self.outputs == "relevance+f":
                out[f"relevance/{name}"] = m.relevance(name)
            else:
                out[f"absorbed/{name}"] = m.absorbed(name)  # first: its pass (with ⊥) serves the marginal too
                out[f"marginal/{name}"] = m.marginal(name)
        return out


__all__ = ["Explainer", "NRMExplainer", "row_of", "check_row", "check_target", "check_layers", "OUTPUTS"]
