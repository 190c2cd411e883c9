"""What a run computes per sample (:class:`Spec`), and the computation of one batch.

For a batch x with targets c, one ``nrm.explain(model, x, target=c, rules=rules)`` gives
the measure μ; then, per sample:

* ``f`` = f_c(x), the ``target`` and the model's arg-max ``predicted``;
* ``absorbed/<layer>`` = m_l(⊥_l) for every layer (one backward pass: ``Measure.marginals``);
* for each of ``layers``: the ``top_k`` neurons by |m_l(j)| (flat indices and values) and
  ``channels/<layer>``, the channel sums Σ_{j∈c} m_l(j) (a dense layer's neurons are its
  channels);
* ``full`` layers: the whole marginal m_l, an array per sample (Zarr);
* ``events``: μ(E) per named event; ``conditional``: μ(X_l = i, E) per named (layer, event),
  an array per sample (a conditional heatmap, CRP's L16);
* the laws' residuals: ``l1_residual`` = max_l |Σ_j m_l(j) + m_l(⊥_l) [+ bypassing_l] − 1|
  (L1, the same sums as :func:`nrm_verify.laws.normalization`, absolute, per sample), and
  ``l9_residual``: the deviation of :func:`nrm_verify.laws.gradient_x_input` on the sample
  alone (LRP-0 against gradient × input; null with a note where the law does not apply);
* ``peer/<name>``: max_i |R_i − f·m_input(i)| / Σ_i |f·m_input(i)| between an
  :class:`~nrm_verify.peers.explainer.Explainer`'s input relevance and nrm's;
* ``selection`` layers: Guercio et al.'s neuron-selection curves of the sample
  (:mod:`nrm_verify.report.selection`): with the top k channels of the layer kept and the
  rest silenced, ``selection/<layer>/<ranking>/mse`` and ``…/smape`` of the output against
  the full one, for every k of :func:`~nrm_verify.report.selection.default_ks` (the same ks
  for every sample, so the run's reductions average the curves over the dataset), for the
  rankings ``relevance`` (the sample's NRM channel marginals), ``gradient×input`` and
  ``random`` (``selection_draws`` seeded permutations, the same for every sample).

A sample that cannot be explained (NaN or Inf in it, f_c(x) = 0, a result that is not
finite) is an error row with its reason; the others of its batch are unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

import nrm
from nrm_verify.report.dataset.errors import SpecError
from nrm_verify.report.selection import RANKINGS, LayerCut, default_ks, selection_curves

LAWS = ("L1", "L9")
"""The laws a run can check per sample."""


@dataclass(frozen=True)
class Spec:
    """What to compute per sample; see the module's docstring."""

    layers: tuple[str, ...] = ("input",)
    full: tuple[str, ...] = ()
    top_k: int = 5
    channel_top_k: int = 8
    events: Mapping[str, nrm.Event] = field(default_factory=dict)
    conditional: Mapping[str, tuple[str, nrm.Event]] = field(default_factory=dict)
    laws: tuple[str, ...] = ("L1",)
    explainers: Mapping[str, object] = field(default_factory=dict)
    selection: tuple[str, ...] = ()
    selection_draws: int = 3

    def __post_init__(self):
        for name in ("layers", "full", "laws", "selection"):
            value = getattr(self, name)
            if isinstance(value, str) or not hasattr(value, "__iter__") or not all(isinstance(v, str) for v in value):
                raise SpecError(f"{name}= takes a list of names, got {value!r:.80}")
            object.__setattr__(self, name, tuple(value))
        for name in ("events", "conditional", "explainers"):
            if not isinstance(getattr(self, name), Mapping):
                raise SpecError(f"{name}= takes a dict of names, got {type(getattr(self, name)).__name__}")
            object.__setattr__(self, name, dict(getattr(self, name)))
        for name in ("top_k", "channel_top_k", "selection_draws"):
            value, low = getattr(self, name), (1 if name == "channel_top_k" else 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SpecError(f"{name}= takes a whole number >= {low}, got {value!r}")
        unknown = [law for law in self.laws if law not in LAWS]
        if unknown:
            raise SpecError(f"unknown law {unknown[0]!r}; a run checks {', '.join(LAWS)}")
        self._check_events()

    def _check_events(self) -> None:
        from nrm_verify.peers.explainer import Explainer

        for name, ev in self.events.items():
            if not isinstance(name, str) or not isinstance(ev, nrm.Event):
                raise SpecError(f"events= maps names to nrm events (nrm.At(...)), got {name!r}: {ev!r:.60}")
        for name, pair in self.conditional.items():
            if not (isinstance(name, str) and isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                    and isinstance(pair[1], nrm.Event)):
                raise SpecError(f"conditional= maps names to (layer, nrm event) pairs, got {name!r}: {pair!r:.60}")
        for name, ex in self.explainers.items():
            if not isinstance(name, str) or not isinstance(ex, Explainer):
                raise SpecError(f"explainers= maps names to nrm_verify.peers Explainer objects, got {name!r}: "
                                f"{type(ex).__name__}")

    def describe(self) -> dict:
        """The spec as JSON data (part of the run's fingerprint)."""
        return {"layers": list(self.layers), "full": list(self.full), "top_k": self.top_k,
                "channel_top_k": self.channel_top_k, "events": {k: repr(v) for k, v in sorted(self.events.items())},
                "conditional": {k: [v[0], repr(v[1])] for k, v in sorted(self.conditional.items())},
                "laws": list(self.laws), "explainers": {k: repr(v) for k, v in sorted(self.explainers.items())},
                "selection": list(self.selection), "selection_draws": self.selection_draws}

    def rankings(self) -> tuple[str, ...]:
        """The rankings of the selection curves: relevance, gradient×input[, random]."""
        return RANKINGS if self.selection_draws else RANKINGS[:2]


@dataclass
class Plan:
    """The spec resolved against the model: every layer's name (``canonical``), the channel
    count of each of ``layers``, the per-sample shape of every stored array, and the channel
    counts k kept along each selection curve."""

    canonical: list[str]
    channels: dict[str, int]
    arrays: dict[str, tuple[int, ...]]
    outputs: int
    sequential: bool
    selection: dict[str, list[int]] = field(default_factory=dict)


def plan_for(m: nrm.Measure, spec: Spec, model=None) -> Plan:
    """Check the spec on a measure of one sample (unknown layers, events that do not fit)
    and resolve it: :class:`nrm.UnknownLayerError`, :class:`nrm.EventIndexError` before any
    result is written."""
    wanted = list(spec.layers) + list(spec.full) + [layer for layer, _ in spec.conditional.values()]
    wanted += list(spec.selection)
    for name in wanted:
        if name not in m.layers:
            raise nrm.UnknownLayerError(f"no layer named {name!r}; valid names are {m.layers}")
    if spec.events:
        m.measure(list(spec.events.values()))
    for layer, ev in spec.conditional.values():
        m.marginal(layer, within=ev)
    arrays = {f"marginal/{name}": m.layer_shape(name) for name in spec.full}
    arrays.update({f"conditional/{k}": m.layer_shape(layer) for k, (layer, _) in spec.conditional.items()})
    channels = {name: _channel_count(m.layer_shape(name)) for name in spec.layers}
    outputs = int(np.prod(m.layer_shape("output"))) if m.layer_shape("output") else 1
    return Plan(m.canonical_names(), channels, arrays, outputs, m.network.sequential, _selection_ks(model, m, spec))


def _selection_ks(model, m: nrm.Measure, spec: Spec) -> dict[str, list[int]]:
    """The ks of each selection layer; a layer the curves cannot cut raises SpecError now."""
    out = {}
    for layer in spec.selection:
        try:
            LayerCut(model, m, layer)
        except ValueError as e:
            raise SpecError(f"selection= {layer!r}: {e}") from None
        if not m.layer_shape(layer):
            raise SpecError(f"selection= {layer!r} has no channel dimension; name a layer with channels")
        out[layer] = default_ks(m.layer_shape(layer)[0])
    return out


def _channel_count(shape: tuple[int, ...]) -> int:
    return shape[0] if shape else 1


def channel_sums(marg: torch.Tensor) -> torch.Tensor:
    """Σ_{j ∈ c} m(j) per channel c (dim 1), (B, C)."""
    return marg.reshape(marg.shape[0], 1) if marg.dim() == 1 else marg.reshape(marg.shape[0], marg.shape[1], -1).sum(2)


@dataclass
class Explained:
    """The per-sample results of the samples ``positions`` of a batch (columns → arrays with
    the batch first) and the errors of the others (position → reason)."""

    positions: list[int]
    columns: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    errors: dict[int, str]


def measure_columns(model, m: nrm.Measure, x: torch.Tensor, targets: list[int], spec: Spec,
                    plan: Plan) -> tuple[dict, dict]:
    """The scalar and list columns and the arrays of the samples of one measure."""
    cols: dict[str, np.ndarray] = {"f": _np(m.f)}
    marg = m.marginals(absorber=True)
    residual = np.zeros(x.shape[0])
    for name in plan.canonical:
        mm, bottom = marg[name]
        cols[f"absorbed/{name}"] = _np(bottom)
        total = mm.reshape(mm.shape[0], -1).sum(1) + bottom
        if not plan.sequential:
            total = total + m.bypassing(name)
        residual = np.maximum(residual, np.abs(_np(total) - 1.0))
    if "L1" in spec.laws:
        cols["l1_residual"] = residual
    for name in spec.layers:
        mm = m.marginal(name)
        cols[f"channels/{name}"] = _np(channel_sums(mm))
        if spec.top_k:
            flat = mm.reshape(mm.shape[0], -1)
            k = min(spec.top_k, flat.shape[1])
            index = flat.abs().topk(k, dim=1, sorted=True).indices  # ties: torch's order, fixed for a given input
            cols[f"top_k/{name}/index"] = index.cpu().numpy()
            cols[f"top_k/{name}/value"] = _np(flat.gather(1, index))
    if spec.events:
        values = m.measure(list(spec.events.values()))
        for k, name in enumerate(spec.events):
            cols[f"event/{name}"] = _np(values[k])
    arrays = {f"marginal/{name}": m.marginal(name).cpu().numpy() for name in spec.full}
    for key, (layer, ev) in spec.conditional.items():
        arrays[f"conditional/{key}"] = m.marginal(layer, within=ev).cpu().numpy()
    for layer, ks in plan.selection.items():
        cols.update(selection_columns(model, m, x, targets, layer, ks, spec))
    if spec.explainers:
        ref = m.relevance("input").reshape(x.shape[0], -1)
        for key, explainer in spec.explainers.items():
            R = explainer(model, x, targets)["input"].reshape(x.shape[0], -1).to(ref.dtype)
            cols[f"peer/{key}"] = _np((R - ref).abs().max(1).values / ref.abs().sum(1))
    return cols, arrays


def selection_columns(model, m: nrm.Measure, x: torch.Tensor, targets: list[int], layer: str, ks: list[int],
                      spec: Spec) -> dict[str, np.ndarray]:
    """The selection curves of each sample of the batch (one model cut per batch), (n, len(ks)) per column."""
    cut = LayerCut(model, m, layer)
    cols = {f"selection/{layer}/{r}/{metric}": [] for r in spec.rankings() for metric in ("mse", "smape")}
    for i in range(x.shape[0]):
        curves = selection_curves(model, x[i:i + 1], layer, targets[i], measure=m, sample=i, ks=ks,
                                  random_draws=spec.selection_draws, seed=0, cut=cut)
        for r in spec.rankings():
            cols[f"selection/{layer}/{r}/mse"].append(curves.mse[r])
            cols[f"selection/{layer}/{r}/smape"].append(curves.smape[r])
    return {k: np.asarray(v, dtype=np.float64).reshape(x.shape[0], len(ks)) for k, v in cols.items()}


def l9_columns(model, x: torch.Tensor, targets: list[int]) -> dict[str, np.ndarray | list]:
    """L9 on each sample alone: its deviation, or None and the law's reason where it does not apply."""
    from nrm_verify.laws import gradient_x_input

    values, notes = [], []
    for i, t in enumerate(targets):
        try:
            result = gradient_x_input(model, x[i:i + 1], t)
        except nrm.NRMError as e:  # LRP-0 itself undefined here (f_c = 0 under LRP-0 is impossible; a kind refused)
            values.append(None)
            notes.append(f"{type(e).__name__}: {' '.join(str(e).split())}")
            continue
        values.append(result.deviation if result.applicable else None)
        notes.append("" if result.applicable else result.detail)
    return {"l9_residual": values, "l9_note": notes}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def finite_rows(cols: dict, arrays: dict, n: int) -> np.ndarray:
    """Which of ``n`` samples have finite values in every float column and array."""
    ok = np.ones(n, dtype=bool)
    for value in list(cols.values()) + list(arrays.values()):
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            ok &= np.isfinite(value.reshape(n, -1)).all(1)
    return ok


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _measures(model, rules, x: torch.Tensor, targets: list[int], good: list[int], errors: dict) -> list:
    """[(positions, measure)]: one measure of the good samples, or — when that batch fails
    (f_c(x) = 0 for one of them, …) — one per sample, the failures recorded in ``errors``."""
    try:
        return [(good, nrm.explain(model, x[good], target=[targets[i] for i in good], rules=rules))]
    except nrm.NRMError:
        pass  # one sample spoils the batch's explain: fall through and explain each alone, recording who failed
    out = []
    for i in good:
        try:
            out.append(([i], nrm.explain(model, x[i:i + 1], target=[targets[i]], rules=rules)))
        except nrm.NRMError as e:
            errors[i] = _one_line(e)
    return out


def explain_batch(model, rules, spec: Spec, plan: Plan, x: torch.Tensor, targets: list[int | None]) -> Explained:
    """The results of the samples of ``x`` (targets None: the model's arg-max) that can be
    explained, and the reason for each that cannot."""
    n = x.shape[0]
    errors: dict[int, str] = {}
    for i in (~torch.isfinite(x.reshape(n, -1)).all(1)).nonzero().flatten().tolist():
        errors[i] = "NonFiniteError: the input holds NaN or Inf"
    good = [i for i in range(n) if i not in errors]
    predicted = np.zeros(n, dtype=np.int64)
    if good:
        with torch.no_grad():
            predicted[good] = model(x[good]).reshape(len(good), -1).argmax(1).cpu().numpy()
    resolved = [int(predicted[i]) if t is None else t for i, t in enumerate(targets)]
    parts = []
    for positions, m in _measures(model, rules, x, resolved, good, errors) if good else []:
        xs = x[positions]
        ts = [resolved[i] for i in positions]
        cols, arrays = measure_columns(model, m, xs, ts, spec, plan)
        if "L9" in spec.laws:
            cols.update(l9_columns(model, xs, ts))
        cols["predicted"], cols["target"] = predicted[positions], np.asarray(ts, dtype=np.int64)
        finite = finite_rows(cols, arrays, len(positions))
        for j in np.flatnonzero(~finite).tolist():
            errors[positions[j]] = "NonFiniteError: a result is NaN or Inf (overflow in the model's dtype?)"
        keep = np.flatnonzero(finite).tolist()
        parts.append(([positions[j] for j in keep], {k: _take(v, keep) for k, v in cols.items()},
                      {k: v[keep] for k, v in arrays.items()}))
    return _joined(parts, errors)


def _take(value, keep: list[int]):
    return value[keep] if isinstance(value, np.ndarray) else [value[j] for j in keep]


def _joined(parts: list, errors: dict) -> Explained:
    positions = [p for part in parts for p in part[0]]
    if not parts:
        return Explained([], {}, {}, errors)
    cols = {k: concat_columns([part[1][k] for part in parts]) for k in parts[0][1]}
    arrays = {k: np.concatenate([part[2][k] for part in parts]) for k in parts[0][2]}
    return Explained(positions, cols, arrays, errors)


def concat_columns(values: list):
    """One column from its parts: arrays concatenated, lists joined."""
    return np.concatenate(values) if isinstance(values[0], np.ndarray) else [v for part in values for v in part]
