"""Events on the walk space, held exactly (NRM-SPEC §3).

An *atom* ``At(layer, …)`` is the event {X_layer ∈ S}. A *cylinder* is an intersection of
atoms. Every event built with ``&`` (intersection), ``|`` (union), ``~`` (complement) and
``-`` (difference) is a linear combination of cylinders with integer coefficients
(inclusion–exclusion), so the measure of any event is exact by linearity:

    μ(A ∪ B) = μ(A) + μ(B) − μ(A ∩ B),   μ(Aᶜ) = μ(Ω) − μ(A),   μ(A − B) = μ(A) − μ(A ∩ B).

Events do not know the model: layer names and neuron sets are checked when measured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from .errors import EventIndexError


@dataclass(frozen=True)
class Atom:
    """{X_layer ∈ S}: S is given by ``index`` (flat indices within one sample's layer),
    ``channels`` (whole channels, dim 1 of the layer), ``mask`` (a boolean tensor of the
    layer's shape) or nothing (all real neurons); ``absorber=True`` adds ⊥_layer."""

    layer: str
    selector: str  # "index" | "channels" | "mask" | "all" | "none"
    values: tuple = ()
    absorber: bool = False
    mask: torch.Tensor | None = field(default=None, compare=False, hash=False)
    parallel: bool = False  # also the walks that bypass the layer's node (skip-path copies)

    def __repr__(self) -> str:
        args = [repr(self.layer)]
        if self.selector in ("index", "channels"):
            args.append(f"{self.selector}={list(self.values)}")
        elif self.selector == "mask":
            args.append(f"mask=<bool {tuple(self.mask.shape)}, {int(self.mask.sum())} true>")
        elif self.selector == "none":
            args.append("index=[]")
        if self.absorber:
            args.append("absorber=True")
        if self.parallel:
            args.append("parallel=True")
        return f"At({', '.join(args)})"


Cylinder = frozenset  # of Atom; the empty cylinder is Ω


class Event:
    """An integer combination of cylinders: {cylinder: coefficient}."""

    __slots__ = ("terms",)

    def __init__(self, terms: dict | None = None):
        self.terms: dict[frozenset, int] = {k: v for k, v in (terms or {}).items() if v != 0}

    # -- algebra -----------------------------------------------------------------
    def __and__(self, other: Event) -> Event:
        other = _event(other)
        out: dict[frozenset, int] = {}
        for a, ca in self.terms.items():
            for b, cb in other.terms.items():
                key = a | b
                out[key] = out.get(key, 0) + ca * cb
        return Event(out)

    def __add__(self, other: Event) -> Event:
        other = _event(other)
        out = dict(self.terms)
        for k, v in other.terms.items():
            out[k] = out.get(k, 0) + v
        return Event(out)

    def _scaled(self, c: int) -> Event:
        return Event({k: c * v for k, v in self.terms.items()})

    def __or__(self, other: Event) -> Event:
        other = _event(other)
        return self + other + (self & other)._scaled(-1)

    def __invert__(self) -> Event:
        return OMEGA + self._scaled(-1)

    def __sub__(self, other: Event) -> Event:
        """The set difference A − B = A ∩ Bᶜ."""
        return self + (self & _event(other))._scaled(-1)

    def __eq__(self, other) -> bool:
        return isinstance(other, Event) and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(frozenset(self.terms.items()))

    # -- presentation ------------------------------------------------------------
    def cylinders(self) -> list[tuple[frozenset, int]]:
        return list(self.terms.items())

    def layers(self) -> set[str]:
        return {a.layer for cyl in self.terms for a in cyl}

    def __repr__(self) -> str:
        if not self.terms:
            return "∅"
        parts = []
        for cyl, c in sorted(self.terms.items(), key=lambda kv: (len(kv[0]), repr(sorted(map(repr, kv[0]))))):
            body = " & ".join(sorted(map(repr, cyl))) if cyl else "Ω"
            if len(cyl) > 1 and len(self.terms) > 1:
                body = f"({body})"
            sign = "-" if c < 0 else "+"
            mag = "" if abs(c) == 1 else f"{abs(c)}·"
            parts.append(f"{sign} {mag}{body}")
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else text


def _event(x) -> Event:
    if isinstance(x, Event):
        return x
    raise TypeError(f"events combine with events, got {type(x).__name__}")


OMEGA = Event({frozenset(): 1})
"""Ω, the sure event (μ(Ω) = 1)."""

EMPTY = Event({})
"""∅."""


class At(Event):
    """The event {X_layer ∈ S}.

    Exactly one of ``index`` (flat neuron indices within one sample's layer),
    ``channels`` (whole channels) or ``mask`` (a boolean tensor of the layer's shape) may
    be given; with none of them S is every real neuron of the layer. ``absorber=True``
    adds the absorber ⊥_layer to S (alone, ``At(layer, index=[], absorber=True)`` is
    {X_layer = ⊥}).

    In a model with branches (residual or parallel paths, NRM-SPEC §1, L16) the layer of a
    node also holds the *copies* of the neurons whose relevance passes it on a skip or
    parallel path. ``parallel=False`` (the default) keeps S to the node's own neurons: the
    walks through them (zennit-crp's ``exclude_parallel=True``). ``parallel=True`` also
    admits every walk that bypasses the node (``exclude_parallel=False``);
    ``At(layer, index=[], parallel=True)`` alone is the event "bypasses the layer". In a
    sequential model nothing bypasses a layer and both are the same event.
    """

    __slots__ = ("atom",)

    def __init__(self, layer: str, *, index: Iterable[int] | int | None = None,
                 channels: Iterable[int] | int | None = None, mask: torch.Tensor | None = None,
                 absorber: bool = False, parallel: bool = False):
        if not isinstance(layer, str):
            raise TypeError(f"At() takes a layer name (str) first, got {layer!r}")
        given = [n for n, v in (("index", index), ("channels", channels), ("mask", mask)) if v is not None]
        if len(given) > 1:
            raise EventIndexError(f"At({layer!r}) takes one of index=, channels=, mask=, got {given}")
        if index is not None:
            values = _ints(index, "index")
            atom = Atom(layer, "index" if values else "none", values, absorber, parallel=parallel)
        elif channels is not None:
            values = _ints(channels, "channels")
            atom = Atom(layer, "channels" if values else "none", values, absorber, parallel=parallel)
        elif mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise EventIndexError(f"At({layer!r}, mask=…) needs a boolean torch tensor of the layer's shape")
            m = mask.detach().to("cpu").contiguous()
            digest = hashlib.sha1(m.numpy().tobytes()).hexdigest()
            atom = Atom(layer, "mask", (tuple(m.shape), digest), absorber, m, parallel)
        else:
            atom = Atom(layer, "all", (), absorber, parallel=parallel)
        super().__init__({frozenset([atom]): 1})
        self.atom = atom


def _ints(values, what) -> tuple[int, ...]:
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    elif isinstance(values, int):
        values = [values]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            try:
                v = int(v) if float(v) == int(v) else v
            except (TypeError, ValueError):
                pass
        if not isinstance(v, int):
            raise EventIndexError(f"{what}= takes integers, got {v!r}")
        out.append(v)
    return tuple(sorted(set(out)))


def Walk(path: dict[str, int | None] | Iterable[tuple[str, int | None]]) -> Event:
    """The cylinder of one neuron per named layer; ``None`` stands for the absorber.

    With every layer named it is a single walk {ω}; otherwise the set of walks through
    the named neurons (a GNN-LRP walk set, L15).
    """
    items = path.items() if isinstance(path, dict) else path
    ev = OMEGA
    for layer, neuron in items:
        ev = ev & (At(layer, index=[], absorber=True) if neuron is None else At(layer, index=[neuron]))
    return ev
