"""The NRM object: marginals, events, joints, conditionals and walks (NRM-SPEC §3).

    μ({ω}) = π(n_L) Π_{l=1..L} q_l(n_{l−1} | n_l),    μ(A) = Σ_{ω∈A} μ({ω}),
    π = δ_c (target c, needs f_c(x) ≠ 0)   or   π = R / Σ R (a start vector R).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from .capture import no_autocast
from .check import check_mode
from .engine import Constraint, Engine
from .errors import (
    ArgumentError,
    DtypeMismatchError,
    EventIndexError,
    NonFiniteError,
    NullEventError,
    ShapeError,
    StaleMeasureError,
    UnknownLayerError,
    ZeroOutputError,
)
from .events import OMEGA, At, Event
from .graph import ProperFFNN, check_eval_mode
from .presets import assign

DEFAULT_CHUNK = 256


def _fresh(method):
    """Check, before answering, that nothing the measure reads changed since ``explain``;
    answer outside autocast, in the record's dtype: the widest floating dtype the model computed
    in, at least float32 (nrm.capture.upcast)."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        self.check_fresh()
        with no_autocast(self.engine.device):
            return method(self, *args, **kwargs)

    return checked


class Measure:
    """The normalized relevance measure of one batch. Build it with :func:`explain`.

    Every method returns one value per sample (the batch dimension first, or after the
    event dimension K for batched events).

    A measure owns what it reads: the input is a copy, the activations are the values the
    model computed at ``explain``, and the parameters, buffers and recorded activations it
    reads are checked before every answer — a tensor changed in place since (an
    ``optimizer.step()``, a reused buffer) raises :class:`~nrm.errors.StaleMeasureError`
    instead of mixing two models into one answer.
    """

    def __init__(self, network: ProperFFNN, engine: Engine, start: torch.Tensor, f: torch.Tensor,
                 chunk: int = DEFAULT_CHUNK):
        self.network = network
        self.engine = engine
        self.start = start  # π, (B, *output shape)
        self.f = f  # (B,): f_c(x), or Σ R for a start vector
        self.chunk = chunk
        self._plain: dict[tuple[int, bool], tuple] = {}
        self._reads = _tensors_read(network, engine)

    def check_fresh(self) -> None:
        """Raise :class:`~nrm.errors.StaleMeasureError` when a tensor the measure reads (a
        parameter, a buffer, a recorded activation) changed since ``explain``."""
        for name, t, version, ptr in self._reads:
            if t._version != version or t.data_ptr() != ptr:
                raise StaleMeasureError(
                    f"{name} changed after explain (written in place, e.g. by optimizer.step() or a reused buffer); "
                    "this measure would mix the model before and after. Call nrm.explain again")

    # -- layers ------------------------------------------------------------------------
    @property
    def input(self) -> torch.Tensor:
        """The input the measure explains: the measure's own copy of ``x``."""
        return self.network.captured.input

    @property
    def layers(self) -> list[str]:
        """Every name that names a layer: "input", module names, "output"."""
        return list(self.engine.aliases)

    @property
    def depth(self) -> int:
        return self.network.depth

    def layer_index(self, layer: str) -> int:
        return self._alias(layer)[0]

    def layer_shape(self, layer: str) -> tuple[int, ...]:
        """One sample's shape of the layer as that name sees it."""
        return self._alias(layer)[1]

    @_fresh
    def activations(self, layer: str) -> torch.Tensor:
        """a_l: the layer's activations (after its elementwise non-linearity); a copy."""
        l, shape = self._alias(layer)
        return self.engine.values[l].reshape((self.engine.batch,) + shape).clone()  # an empty layer too

    def rule(self, layer: str):
        """The rule of the linear map producing the layer (None for input and max-pool)."""
        return self.network.blocks[self._alias(layer)[0]].rule

    def _alias(self, layer: str) -> tuple[int, tuple]:
        if not isinstance(layer, str):
            raise UnknownLayerError(f"layers are named by strings, got {layer!r}")
        try:
            return self.engine.aliases[layer]
        except KeyError:
            raise UnknownLayerError(
                f"no layer named {layer!r}; valid names are {self.layers}"
            ) from None

    # -- resolving events ------------------------------------------------------------
    def constraint(self, atom) -> Constraint:
        """An atom of an event (:class:`nrm.events.Atom`) resolved against its layer: the layer
        index, the neuron mask (None: every neuron) and whether ⊥ is in it. A complement
        atom {X_l ∉ S} has the other neurons, the absorber unless S holds it, and the
        bypassing walks unless S holds them."""
        c = self._selection(atom)
        if not atom.negated:
            return c
        sequential = self.network.sequential
        full = torch.ones(self.engine.shape[c.layer], dtype=torch.bool, device=self.engine.device)
        mask = ~full if c.mask is None else ~c.mask
        parallel = not c.parallel and not sequential
        return Constraint(c.layer, mask, not c.absorber, ("not", c.key, sequential), parallel)

    def _selection(self, atom) -> Constraint:
        l, shape = self._alias(atom.layer)
        canon = self.engine.shape[l]
        n = _numel(shape)
        parallel = atom.parallel and not self.network.sequential  # nothing bypasses a layer of a chain
        if atom.selector == "all":
            return Constraint(l, None, atom.absorber, ("all", atom.absorber, parallel), parallel)
        mask = torch.zeros(n, dtype=torch.bool)
        if atom.selector == "index":
            bad = [i for i in atom.values if not 0 <= i < n]
            if bad:
                raise EventIndexError(
                    f"{atom!r}: indices {bad[:5]} are out of range for layer {atom.layer!r}, which has {n} neurons "
                    f"per sample (shape {shape}); index= takes flat indices 0..{n - 1}"
                )
            mask[list(atom.values)] = True
        elif atom.selector == "channels":
            if len(shape) < 1:
                raise EventIndexError(f"{atom!r}: layer {atom.layer!r} has no channel dimension")
            channels = shape[0]
            bad = [c for c in atom.values if not 0 <= c < channels]
            if bad:
                raise EventIndexError(
                    f"{atom!r}: channels {bad[:5]} are out of range for layer {atom.layer!r} with {channels} channels"
                )
            mask = mask.reshape(shape[0], -1)
            mask[list(atom.values)] = True
        elif atom.selector == "mask":
            if tuple(atom.mask.shape) != tuple(shape) and tuple(atom.mask.shape) != tuple(canon):
                raise EventIndexError(
                    f"{atom!r}: the mask has shape {tuple(atom.mask.shape)} but layer {atom.layer!r} has shape {shape}"
                )
            mask = atom.mask.reshape(-1).clone()
        mask = mask.reshape(canon).to(self.engine.device)
        # the key names the neuron set: channels=[0] of a Flatten alias is not channel 0 of the conv
        return Constraint(l, mask, atom.absorber, (atom.selector, atom.values, atom.absorber, tuple(shape), parallel),
                          parallel)

    def _resolve(self, cylinder, resolved: dict) -> dict[int, Constraint]:
        """A cylinder (frozenset of atoms) → one constraint per layer (intersected). ``resolved``:
        the atoms' constraints resolved so far (an atom shared by many cylinders — a walk's end
        node, a head — is resolved once per table)."""
        by_layer: dict[int, Constraint] = {}
        for atom in sorted(cylinder, key=repr):
            c = resolved.get(atom)
            if c is None:
                c = resolved[atom] = self.constraint(atom)
            if c.layer in by_layer:
                c = _intersect(by_layer[c.layer], c, self.engine.shape[c.layer], self.engine.device)
            by_layer[c.layer] = c
        return by_layer

    # -- measures of events ------------------------------------------------------------
    @_fresh
    def measure(self, event: Event | Sequence[Event]) -> torch.Tensor:
        """μ(event), tensor (B,); for a list of K events, (K, B) in one pass."""
        events = _events(event)
        table = self._cylinder_table(events)
        # stop at the lowest constrained layer, or below it where no skip path still holds
        # relevance (the copies of the proper FFNN would otherwise be left out of the sum)
        jobs = [(cons, self.network.cut_below(min(cons)) if cons else self.depth) for cons in table]
        values = [r.reshape(r.shape[0], -1).sum(1) + rbot for r, rbot in self._down(jobs)]
        out = self._combine(events, table, values, ())
        return out[0] if not isinstance(event, (list, tuple)) else out

    __call__ = measure

    @_fresh
    def conditional(self, event: Event, given: Event) -> torch.Tensor:
        """μ(event | given) = μ(event ∩ given) / μ(given), tensor (B,).

        Raises :class:`NullEventError` when μ(given) = 0 for a sample (the measure is signed:
        a non-empty event can have measure 0, and values may lie outside [0, 1]).
        """
        both, base = self.measure([event & given, given])
        self._check_null(given, base)
        return both / base

    def _check_null(self, given: Event, base: torch.Tensor) -> None:
        tol = 64 * torch.finfo(base.dtype).eps
        null = base.abs() <= tol
        if bool(null.any()):
            samples = null.nonzero().flatten().tolist()
            raise NullEventError(
                f"cannot condition on {given!r}: its measure is 0 for samples {samples} "
                f"(|μ| ≤ {tol:.1e}); the conditional is undefined there. Condition on an event of non-zero measure"
            )

    # -- marginals -----------------------------------------------------------------------
    @_fresh
    def marginal(self, layer: str, within: Event | Sequence[Event] | None = None) -> torch.Tensor:
        """m_l(j) = μ(X_l = j) for the layer's real neurons, tensor (B, *shape).

        ``within=E`` gives μ(X_l = j, E) (for instance a conditional heatmap), and
        ``within=[E_1, …, E_K]`` a tensor (K, B, *shape) computed in one pass.
        """
        return self._marginal(layer, within, absorber=False)

    @_fresh
    def marginals(self, absorber: bool = False) -> dict:
        """Every layer's marginal m_l (and, with ``absorber=True``, a pair (m_l, m_l(⊥))),
        by canonical layer name, from **one** backward pass (the passes to every layer
        share their whole path)."""
        names = self.canonical_names()
        results = self._down([({}, l) for l in range(len(names))], absorber=absorber)
        out = {}
        for name, (r, rbot) in zip(names, results):
            marg = r.reshape((self.engine.batch,) + self.engine.shape[self.layer_index(name)])  # an empty layer too
            out[name] = (marg, rbot) if absorber else marg
        return out

    @_fresh
    def absorbed(self, layer: str, within: Event | Sequence[Event] | None = None) -> torch.Tensor:
        """m_l(⊥_l) = μ(X_l = ⊥_l): the mass the layer's absorber holds, tensor (B,)
        (with ``within`` as in :meth:`marginal`). By L1, Σ_j m_l(j) + m_l(⊥_l) = 1."""
        return self._marginal(layer, within, absorber=True)

    @_fresh
    def bypassing(self, layer: str, within: Event | Sequence[Event] | None = None) -> torch.Tensor:
        """The measure of the walks that bypass the layer's node: they pass its proper layer
        on the copies of a skip or parallel path (NRM-SPEC §1), tensor (B,). Zero in a
        sequential model. L1 on a model with branches reads
        Σ_j m_l(j) + bypassing(l) + m_l(⊥_l) = 1."""
        skip = At(layer, index=[], parallel=True)
        if within is None:
            return self.measure(skip)
        events = _events(within)
        out = self.measure([skip & e for e in events])
        return out[0] if isinstance(within, Event) else out

    @_fresh
    def relevance(self, layer: str) -> torch.Tensor:
        """LRP relevance R_j^(l) = f · m_l(j) (L8)."""
        m = self.marginal(layer)
        return m * self.f.reshape((-1,) + (1,) * (m.dim() - 1))

    def _marginal(self, layer: str, within, absorber: bool) -> torch.Tensor:
        l, shape = self._alias(layer)
        events = _events(OMEGA if within is None else within)
        table = self._cylinder_table(events)
        uppers = [{k: c for k, c in cons.items() if k >= l} for cons in table]
        lowers = [{k: c for k, c in cons.items() if k < l} for cons in table]
        down = self._down([(u, l) for u in uppers], absorber=absorber)
        need_up = [i for i, lo in enumerate(lowers) if lo]
        if absorber and need_up and not self.network.sequential:
            # on a branched model ⊥_l mixes walks absorbed at different layers, whose chance
            # of meeting the constraints below differs: measure each event with ⊥_l directly
            out = self.measure([At(layer, index=[], absorber=True) & e for e in events])
            return out[0] if (within is None or isinstance(within, Event)) else out
        ups = dict(zip(need_up, self._up([(lowers[i], l) for i in need_up]))) if need_up else {}
        values = []
        for i, (r, rbot) in enumerate(down):
            if i in ups:
                v, vbot = ups[i]
                r, rbot = r * v, None if rbot is None else rbot * vbot
            values.append(rbot if absorber else r)
        per_sample = () if absorber else shape
        out = self._combine(events, table, values, per_sample)
        single = within is None or isinstance(within, Event)
        return out[0] if single else out

    # -- joints and walks ------------------------------------------------------------------
    @_fresh
    def joint(self, layer_a: str, layer_b: str, by: str = "channel") -> torch.Tensor:
        """μ(X_a ∈ A_i, X_b ∈ B_k) for every pair of groups, tensor (B, n_a, n_b).

        ``by="channel"`` groups neurons by channel (dim 1; a dense layer's neurons are its
        channels), ``by="neuron"`` takes single neurons. Row sums give the marginal of
        layer a, column sums that of layer b (L3). Computed as one batched masked
        backward from the upper layer.
        """
        if by not in ("channel", "neuron"):
            raise ArgumentError(f"joint(by=…) takes 'channel' or 'neuron', got {by!r}")
        la, lb = self._alias(layer_a)[0], self._alias(layer_b)[0]
        if la == lb:
            raise ArgumentError(f"joint() needs two different layers, got {layer_a!r} and {layer_b!r} (both name "
                                f"layer {la}); pick a layer above or below")
        lo, hi = (layer_a, layer_b) if la < lb else (layer_b, layer_a)
        hi_groups = self._groups(hi, by)
        events = [At(hi, **{("channels" if by == "channel" else "index"): [g]}) for g in range(hi_groups)]
        cond = self.marginal(lo, within=events)  # (K, B, *shape_lo)
        K, B = cond.shape[:2]
        if by == "channel":
            cond = cond.reshape(K, B, self.layer_shape(lo)[0] if len(self.layer_shape(lo)) else 1, -1).sum(-1)
        else:
            cond = cond.reshape(K, B, -1)
        out = cond.permute(1, 2, 0)  # (B, n_lo, n_hi)
        return out if la < lb else out.transpose(1, 2)

    def _groups(self, layer: str, by: str) -> int:
        shape = self.layer_shape(layer)
        return (shape[0] if shape else 1) if by == "channel" else _numel(shape)

    @_fresh
    def walk(self, path: Sequence[int | None]) -> torch.Tensor:
        """μ({ω}) of one walk ω = (n_0, …, n_L) given as flat indices per layer (None is
        the absorber), tensor (B,)."""
        if isinstance(path, (str, bytes)) or not isinstance(path, Sequence):
            raise ArgumentError(f"walk() takes one neuron per layer (a list of flat indices, None for ⊥), got "
                                f"{type(path).__name__}")
        if len(path) != self.depth + 1:
            raise ShapeError(f"a walk names one neuron per layer: {self.depth + 1} entries, got {len(path)}")
        names = self.canonical_names()
        ev = OMEGA
        for name, n in zip(names, path):
            ev = ev & (At(name, index=[], absorber=True) if n is None else At(name, index=[n]))
        return self.measure(ev)

    def canonical_names(self) -> list[str]:
        """One name per layer index 0 … L: the first name whose shape is the layer's own
        (not a flattened or reshaped alias of it)."""
        names = [""] * (self.depth + 1)
        for name, (l, shape) in self.engine.aliases.items():
            if not names[l] and shape == self.engine.shape[l]:
                names[l] = name
        return names

    # -- plumbing -----------------------------------------------------------------------
    def _cylinder_table(self, events: list[Event]) -> _Table:
        """The distinct cylinders of ``events``, resolved (a local value: a measure may be read
        from several threads at once)."""
        seen: dict = {}
        resolved: dict = {}
        for ev in events:
            for cyl in ev.terms:
                if cyl not in seen:
                    seen[cyl] = self._resolve(cyl, resolved)
        return _Table(list(seen.values()), {cyl: i for i, cyl in enumerate(seen)})

    def _combine(self, events, table: _Table, values, per_sample) -> torch.Tensor:
        B = self.engine.batch
        out = torch.zeros((len(events), B) + tuple(per_sample), dtype=self.engine.dtype, device=self.engine.device)
        for k, ev in enumerate(events):
            for cyl, coef in ev.terms.items():
                out[k] += coef * values[table.index[cyl]].reshape((B,) + tuple(per_sample))
        return out

    def _down(self, jobs, absorber: bool = True):
        """Masked backward passes in chunks; the unconstrained pass is cached per layer
        (with or without the absorber, which marginals over real neurons never need)."""
        results = []
        for i in range(0, len(jobs), self.chunk):
            chunk = jobs[i:i + self.chunk]
            cached = [self._plain.get((stop, True)) or (None if absorber else self._plain.get((stop, False)))
                      for _, stop in chunk]
            if all(not cons for cons, _ in chunk) and all(c is not None for c in cached):
                results += cached
                continue
            results += self.engine.down(self.start, chunk, absorber=absorber)
            for (cons, stop), res in zip(chunk, results[-len(chunk):]):
                if not cons:
                    self._plain[(stop, absorber)] = res
        return results

    def _up(self, jobs):
        out = []
        for i in range(0, len(jobs), self.chunk):
            out += self.engine.up(jobs[i:i + self.chunk])
        return out


class _Table(list):
    """Resolved cylinders (a list of {layer: Constraint}) with ``index``: cylinder → position."""

    def __init__(self, items, index: dict):
        super().__init__(items)
        self.index = index


def _tensors_read(network: ProperFFNN, engine: Engine) -> list[tuple[str, torch.Tensor, int, int]]:
    """(name, tensor, version, storage) of every tensor a measure reads: the constants of the
    recorded calls (parameters, buffers) and the recorded activations the engine keeps."""
    out = [(f"'{name}'", t, version, t.data_ptr()) for name, t, version in network.captured.constants]
    for what, table in (("input", engine.inputs), ("pre-activation", engine.pre), ("activation", engine.values)):
        for l, t in table.items():
            name = f"the recorded {what} of layer '{network.blocks[l].name}'"
            out.append((name, t, t._version, t.data_ptr()))
    return out


def _intersect(a: Constraint, b: Constraint, shape, device) -> Constraint:
    full = torch.ones(shape, dtype=torch.bool, device=device)
    ma = full if a.mask is None else a.mask
    mb = full if b.mask is None else b.mask
    mask = None if (a.mask is None and b.mask is None) else ma & mb
    return Constraint(a.layer, mask, a.absorber and b.absorber, ("and", a.key, b.key), a.parallel and b.parallel)


def _events(x) -> list[Event]:
    if isinstance(x, Event):
        return [x]
    if isinstance(x, (list, tuple)) and x and all(isinstance(e, Event) for e in x):
        return list(x)
    if isinstance(x, (list, tuple)) and not x:
        raise ArgumentError("expected an nrm event or a non-empty list of them, got an empty list")
    raise ArgumentError(f"expected an nrm event (nrm.At(...) and combinations) or a list of them, got "
                        f"{type(x).__name__} {x!r:.40}")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def explain(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None, *,
            rules=None, start: torch.Tensor | None = None, chunk: int = DEFAULT_CHUNK, output=None,
            check: bool | str = True) -> Measure:
    """The NRM of ``model`` at the batch ``x`` for output ``target``.

    Args:
        model: any module in eval mode. nrm calls ``model(x)`` once, under ``torch.no_grad()``,
            and records what ``forward()`` computes on ``x`` (:mod:`nrm.capture`); every
            operation must be read by a layer kind (:mod:`nrm.layers`). The model is only
            read: parameters, buffers, hooks and mode stay as they are.
        x: the input batch (batch, ...), float32 or float64, on the model's device. The
            measure keeps its own copy.
        target: the output index c (one int for all samples, or one per sample). The
            output measure is π = δ_c; f_c(x) must be non-zero.
        rules: a rule, a mapping, or a preset (see :mod:`nrm.presets`); default LRP-0.
        start: instead of ``target``, a start vector R^(L) (batch, *output shape); the
            output measure is π = R / Σ R.
        chunk: how many cylinders share one stacked pass at most (memory bound).
        output: a function picking the tensor to explain from what the model returns (a
            tuple, a dict, a ``ModelOutput``); by default the model returns one tensor.
        check: the self-check of the layer kinds' maps against what the model computed
            (:mod:`nrm.check`): True (once per signature in the process), "full" (every
            map, every time) or False.

    Raises:
        UnsupportedOperationError (and its kinds), CaptureMismatchError, TrainingModeError,
        DeviceMismatchError, DtypeMismatchError, NonFiniteError, RuleAssignmentError,
        ShapeError, ZeroOutputError.
    """
    check_options(chunk, check, output)
    network, engine = prepared(model, x, rules, output, check)
    return measure_of(network, engine, x, target, start, chunk)


def prepared(model: nn.Module, x: torch.Tensor, rules, output, check) -> tuple[ProperFFNN, Engine]:
    """The captured network with its rules and the engine's forward record: what
    :func:`explain` builds before it knows the output measure (``nrm.gnn`` reads the output's
    shape from it, instead of running the model once more)."""
    check_eval_mode(model)
    network = ProperFFNN(model, x, output=output, check=check)
    assign(network, rules)
    return network, Engine(network, check=check)


def measure_of(network: ProperFFNN, engine: Engine, x: torch.Tensor, target, start, chunk: int) -> Measure:
    """The measure of a :func:`prepared` network for output ``target`` (or the start vector ``start``)."""
    out = engine.output.reshape(x.shape[0], -1)
    if (target is None) == (start is None):
        raise ShapeError("give exactly one of target= (an output index) or start= (a start vector)")
    if start is not None:
        R, what = _start_vector(start, engine.output), "Σ R (the start vector's total)"
    else:
        R, what = _target_vector(target, out), "f_c(x)"
    f = R.sum(1)
    zero = f == 0
    if bool(zero.any()):
        raise ZeroOutputError(
            f"{what} = 0 for samples {zero.nonzero().flatten().tolist()}: the measure π = R / {what} is undefined. "
            "Choose another target or input (a negative output is fine)"
        )
    if not bool(torch.isfinite(f).all()):
        raise NonFiniteError(f"{what} overflows to {f.tolist()} in {f.dtype}: π = R / {what} would be 0 everywhere "
                             "(and the measure not normalized). Rescale the start vector or use float64")
    # π over the output layer's neurons, in its own shape (a flatten after a pooled conv
    # renames them: the model returns (B, C), the layer is (C, 1, 1))
    pi = (R / f.reshape(-1, 1)).reshape((x.shape[0],) + engine.shape[network.depth])
    return Measure(network, engine, pi, f, chunk)


def check_options(chunk, check, output) -> None:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ArgumentError(f"chunk= takes a whole number >= 1 (how many cylinders share one pass), got {chunk!r}")
    check_mode(check)
    if output is not None and not callable(output):
        raise ArgumentError(f"output= takes a function that picks the tensor to explain from what the model returns "
                            f"(e.g. lambda out: out.logits), got {type(output).__name__}")


def _start_vector(start, output: torch.Tensor) -> torch.Tensor:
    """R^(L) from ``start=`` (the output's shape, finite), flattened per sample."""
    if not isinstance(start, torch.Tensor):
        raise ArgumentError(f"start= takes a tensor of the output's shape {tuple(output.shape)}, got "
                            f"{type(start).__name__}; use torch.tensor(...)")
    if not (start.is_floating_point() or start.dtype in (torch.int64, torch.int32, torch.bool)):
        raise DtypeMismatchError(f"start= must hold real numbers, got {start.dtype}")
    if tuple(start.shape) != tuple(output.shape):
        raise ShapeError(f"start= must have the output's shape {tuple(output.shape)}, got {tuple(start.shape)}")
    R = start.detach().to(dtype=output.dtype, device=output.device).reshape(output.shape[0], -1)
    if not bool(torch.isfinite(R).all()):
        bad = (~torch.isfinite(R)).any(1).nonzero().flatten().tolist()
        raise NonFiniteError(f"start= contains NaN or Inf (samples {bad}) (in {output.dtype}); give finite values")
    return R


def _target_vector(target, out: torch.Tensor) -> torch.Tensor:
    """R^(L) = f_c δ_c from ``target=``: one int for every sample, or one per sample."""
    B, n = out.shape
    values = target.flatten().tolist() if isinstance(target, torch.Tensor) else target
    if isinstance(values, (list, tuple)):
        if len(values) != B:
            raise ShapeError(f"target= takes one int or one int per sample ({B}), got {target!r}")
    else:
        values = [values] * B
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in values) or (
            isinstance(target, torch.Tensor) and (target.is_floating_point() or target.dtype == torch.bool)):
        raise ShapeError(f"target= takes one int or one int per sample ({B}), got {target!r:.80}")
    bad = [c for c in values if not 0 <= c < n]
    if bad:
        raise ShapeError(f"target {bad[:5]} is out of range for an output of {n} values")
    c = torch.tensor(values, device=out.device)
    R = torch.zeros_like(out)
    rows = torch.arange(B, device=out.device)
    R[rows, c] = out[rows, c]
    return R
