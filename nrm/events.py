"""Events on the walk space, held exactly (NRM-SPEC §3).

An *atom* ``At(layer, …)`` is the event {X_layer ∈ S}; its complement ``~At(layer, …)``
is an atom too, {X_layer ∉ S} (the other neurons of the layer, ⊥ unless S holds it, and the
walks that bypass the layer's node). A *cylinder* is an intersection of atoms. Every
event built with ``&`` (intersection), ``|`` (union), ``~`` (complement) and ``-``
(difference) is a linear combination of cylinders with integer coefficients
(inclusion–exclusion), so the measure of any event is exact by linearity:

    μ(A ∪ B) = μ(A) + μ(B) − μ(A ∩ B),   μ(Aᶜ) = μ(Ω) − μ(A),   μ(A − B) = μ(A) − μ(A ∩ B).

**Size.** Inclusion–exclusion alone makes a union of n cylinders 2ⁿ − 1 of them. Events are
kept small instead:

* atoms of one layer merge: ``At(l, index=[1]) | At(l, index=[2])`` is ``At(l, index=[1, 2])``
  (same selector kind, absorber and ``parallel`` flags; indices, channels and masks);
* every result is simplified with two exact identities, P − (P ∩ a) = P ∩ ¬a and
  (P ∩ a) + (P ∩ ¬a) = P, which turn a union of n atoms or cylinders into its disjoint
  decomposition, a ∪ b ∪ c = a + (b ∩ ¬a) + (c ∩ ¬a ∩ ¬b): n cylinders, not 2ⁿ − 1;
* an intersection of unions multiplies their sizes. An event of more than
  :data:`MAX_CYLINDERS` cylinders is refused (:class:`~nrm.errors.EventTooLargeError`) before
  it is built, with advice, rather than measured for minutes.

Each cylinder costs one masked pass (shared with the others above the layer where they
differ). Events do not know the model: layer names and neuron sets are checked when measured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import torch

from .errors import ArgumentError, EventIndexError, EventTooLargeError

MAX_CYLINDERS = 1 << 12
"""The most cylinders an event may hold (each is one masked pass of the engine)."""


@dataclass(frozen=True)
class Atom:
    """{X_layer ∈ S}: S is given by ``index`` (flat indices within one sample's layer),
    ``channels`` (whole channels, dim 1 of the layer), ``mask`` (a boolean tensor of the
    layer's shape) or nothing (all real neurons); ``absorber=True`` adds ⊥_layer;
    ``negated=True`` is the complement {X_layer ∉ S}."""

    layer: str
    selector: str  # "index" | "channels" | "mask" | "all" | "none"
    values: tuple = ()
    absorber: bool = False
    mask: torch.Tensor | None = field(default=None, compare=False, hash=False)
    parallel: bool = False  # also the walks that bypass the layer's node (skip-path copies)
    negated: bool = False

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
        text = f"At({', '.join(args)})"
        return f"~{text}" if self.negated else text

    def complement(self) -> Atom:
        other = _COMPLEMENTS.get(self)
        if other is None:
            other = replace(self, negated=not self.negated)
            if len(_COMPLEMENTS) > 1 << 16:
                _COMPLEMENTS.clear()
            _COMPLEMENTS[self] = other
        return other


_COMPLEMENTS: dict[Atom, Atom] = {}


Cylinder = frozenset  # of Atom; the empty cylinder is Ω


class Event:
    """An integer combination of cylinders: {cylinder: coefficient}."""

    __slots__ = ("terms",)

    def __init__(self, terms: dict | None = None):
        self.terms: dict[frozenset, int] = {k: v for k, v in (terms or {}).items() if v != 0}

    # -- algebra -----------------------------------------------------------------
    def __and__(self, other: Event) -> Event:
        other = _event(other)
        _check_size(len(self.terms) * len(other.terms), "the intersection")
        out: dict[frozenset, int] = {}
        for a, ca in self.terms.items():
            for b, cb in other.terms.items():
                key = a | b
                if _empty(key):
                    continue
                out[key] = out.get(key, 0) + ca * cb
        return _simplified(out)

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
        merged = _merge_atoms(self, other)
        if merged is not None:
            return merged
        out = dict(self.terms)
        for k, v in other.terms.items():
            out[k] = out.get(k, 0) + v
        for k, v in (self & other).terms.items():
            out[k] = out.get(k, 0) - v
        return _simplified(out)

    def __invert__(self) -> Event:
        out = {frozenset(): 1}
        for k, v in self.terms.items():
            out[k] = out.get(k, 0) - v
        return _simplified(out)

    def __sub__(self, other: Event) -> Event:
        """The set difference A − B = A ∩ Bᶜ."""
        out = dict(self.terms)
        for k, v in (self & _event(other)).terms.items():
            out[k] = out.get(k, 0) - v
        return _simplified(out)

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
    raise ArgumentError(f"events combine with events (nrm.At(...) and their combinations), got {type(x).__name__}")


def _check_size(n: int, what: str) -> None:
    if n > MAX_CYLINDERS:
        raise EventTooLargeError(
            f"{what} would hold up to {n} cylinders (more than {MAX_CYLINDERS}, one masked pass each). Merge the "
            "atoms of one layer into one At(layer, index=[…]) or mask=, or measure the parts as a list of events "
            "(m.measure([…]) shares their passes)")


def _empty(cylinder: frozenset) -> bool:
    """A cylinder holding an atom and its complement is the empty event."""
    return any(a.complement() in cylinder for a in cylinder if not a.negated)


def _cylinder_order(cylinder: frozenset) -> tuple:
    """Longest first, then by the atoms' text: an order that does not depend on hashing, so
    that one event has one decomposition in every process (PYTHONHASHSEED)."""
    return -len(cylinder), sorted(map(repr, cylinder))


def _simplified(terms: dict) -> Event:
    """The event with P − (P ∩ a) → P ∩ ¬a and (P ∩ a) + (P ∩ ¬a) → P applied until neither
    applies (both are identities of events; each removes a cylinder)."""
    terms = {k: v for k, v in terms.items() if v != 0 and not _empty(k)}
    changed = len(terms) > 1  # both rules remove a pair of cylinders: one cylinder is as simple as it gets
    while changed:
        changed = False
        for key in sorted(terms, key=_cylinder_order):
            c = terms.get(key)
            if not c:
                continue
            for atom in sorted(key, key=repr):
                rest = key - {atom}
                other = rest | {atom.complement()}
                if terms.get(rest) == -c:  # P − (P ∩ a) = P ∩ ¬a   (with the roles of ± c as given)
                    del terms[key], terms[rest]
                    terms[other] = terms.get(other, 0) - c
                elif terms.get(other) == c:  # (P ∩ a) + (P ∩ ¬a) = P
                    del terms[key], terms[other]
                    terms[rest] = terms.get(rest, 0) + c
                else:
                    continue
                terms = {k: v for k, v in terms.items() if v != 0}
                changed = True
                break
            if changed:
                break
    _check_size(len(terms), "the event")
    return Event(terms)


def _merge_atoms(a: Event, b: Event) -> Event | None:
    """``At(l, S1) | At(l, S2)`` as one atom ``At(l, S1 ∪ S2)`` when both are single atoms
    of one layer with the same selector kind; None otherwise."""
    if len(a.terms) != 1 or len(b.terms) != 1:
        return None
    (ka, ca), (kb, cb) = next(iter(a.terms.items())), next(iter(b.terms.items()))
    if ca != 1 or cb != 1 or len(ka) != 1 or len(kb) != 1:
        return None
    x, y = next(iter(ka)), next(iter(kb))
    if x.layer != y.layer or x.negated or y.negated:
        return None
    absorber, parallel = x.absorber or y.absorber, x.parallel or y.parallel
    if "all" in (x.selector, y.selector):
        atom = Atom(x.layer, "all", (), absorber, parallel=parallel)
    elif x.selector == "none" or y.selector == "none":
        keep = y if x.selector == "none" else x
        atom = replace(keep, absorber=absorber, parallel=parallel)
    elif x.selector == y.selector and x.selector in ("index", "channels"):
        atom = Atom(x.layer, x.selector, tuple(sorted(set(x.values) | set(y.values))), absorber, parallel=parallel)
    elif x.selector == y.selector == "mask" and x.mask.shape == y.mask.shape:
        atom = _mask_atom(x.layer, x.mask | y.mask, absorber, parallel)
    else:
        return None
    return Event({frozenset([atom]): 1})


def _mask_atom(layer: str, mask: torch.Tensor, absorber: bool, parallel: bool) -> Atom:
    m = mask.detach().to("cpu").contiguous()
    digest = hashlib.sha1(m.numpy().tobytes()).hexdigest()
    return Atom(layer, "mask", (tuple(m.shape), digest), absorber, m, parallel)


OMEGA = Event({frozenset(): 1})
"""Ω, the sure event (μ(Ω) = 1)."""

EMPTY = Event({})
"""∅."""


class At(Event):
    """The event {X_layer ∈ S}.

    Exactly one of ``index`` (flat neuron indices within one sample's layer),
    ``channels`` (whole channels), ``nodes`` (every feature of the named nodes of a graph
    network's layer of shape (N, F), :mod:`nrm.gnn`), ``tokens`` (every feature of the named
    positions of a transformer's token layer of shape (T, D): the residual stream, a block's
    output, the input embeddings), ``heads`` (the named heads of an attention layer of shape
    (H, T, …): the scores, the softmax, a head's values before they are merged) — these three
    are the selection ``channels`` makes, per-sample dimension 0, under the name the
    architecture gives it — or ``mask`` (a boolean tensor of the layer's shape) may
    be given; with none of them S is every real neuron of the layer. A token of an (H, T, D)
    layer, or a head of a (T, H·D) one, is a ``mask``. ``absorber=True``
    adds the absorber ⊥_layer to S (alone, ``At(layer, index=[], absorber=True)`` is
    {X_layer = ⊥}). ``~At(…)`` is its complement, again one atom.

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
                 absorber: bool = False, parallel: bool = False, nodes: Iterable[int] | int | None = None,
                 tokens: Iterable[int] | int | None = None, heads: Iterable[int] | int | None = None):
        if not isinstance(layer, str):
            raise ArgumentError(f"At() takes a layer name (str) first, got {layer!r}")
        for name, flag in (("absorber", absorber), ("parallel", parallel)):
            if not isinstance(flag, bool):
                raise ArgumentError(f"At({layer!r}, {name}=…) takes True or False, got {flag!r}")
        given = [n for n, v in (("index", index), ("channels", channels), ("mask", mask), ("nodes", nodes),
                                ("tokens", tokens), ("heads", heads)) if v is not None]
        if len(given) > 1:
            raise EventIndexError(f"At({layer!r}) takes one of index=, channels=, mask=, nodes=, tokens=, heads=, "
                                  f"got {given}")
        what = "channels"
        for word, named in (("nodes", nodes), ("tokens", tokens), ("heads", heads)):
            if named is not None:  # per-sample dimension 0 under the architecture's name for it
                channels, what = named, word
        if index is not None:
            values = _ints(index, "index")
            atom = Atom(layer, "index" if values else "none", values, absorber, parallel=parallel)
        elif channels is not None:
            values = _ints(channels, what)
            atom = Atom(layer, "channels" if values else "none", values, absorber, parallel=parallel)
        elif mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise EventIndexError(f"At({layer!r}, mask=…) needs a boolean torch tensor of the layer's shape")
            atom = _mask_atom(layer, mask, absorber, parallel)
        else:
            atom = Atom(layer, "all", (), absorber, parallel=parallel)
        super().__init__({frozenset([atom]): 1})
        self.atom = atom


def _ints(values, what) -> tuple[int, ...]:
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bool:
            raise EventIndexError(f"{what}= takes integers, got a boolean tensor; for a boolean selection use mask=")
        values = values.flatten().tolist()
    elif isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise EventIndexError(f"{what}= takes an int or integers, got {values!r:.60}")
    out = []
    for v in values:
        if isinstance(v, bool):
            raise EventIndexError(f"{what}= takes integers, got {v!r}; for a boolean selection use mask=")
        if not isinstance(v, int):
            try:
                v = int(v) if float(v) == int(v) else v
            except (TypeError, ValueError, OverflowError):
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
