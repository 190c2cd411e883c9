"""Neuron selection by relevance: keep a layer's top-k channels, silence the rest, and
watch the output (Bhati, Neha, Amiruzzaman, Guercio, Shukla, Ward, *Neural network
interpretability with layer-wise relevance propagation: novel techniques for neuron
selection and visualization*, arXiv:2412.05686, on VGG16).

For a layer l with channels c = 1 … C and a ranking r (a permutation of the channels,
most important first), the selected network keeps the activations of r_1 … r_k and sets
the others to zero::

    a_l^(k)[c] = a_l[c] · 1{c ∈ {r_1, …, r_k}},        y^(k) = g_l(a_l^(k))

where g_l is the part of the network above l. Against the full output y = g_l(a_l)
(all N outputs, the logits)::

    MSE(k)   = (1/N) Σ_i (y_i^(k) − y_i)²
    SMAPE(k) = (100/N) Σ_i 2 |y_i^(k) − y_i| / (|y_i^(k)| + |y_i|)      (0/0 counts as 0)

so MSE(C) = SMAPE(C) = 0 for every ranking (that row is y itself, not recomputed). Rankings compared:

* ``relevance`` — the channel's NRM marginal m_l(c) = Σ_{j ∈ c} μ(X_l = j), largest first
  (with ``within=E``: the joint μ(X_l ∈ c, E) with an upper event E, such as a set of
  channels of a higher layer: Guercio et al.'s selection below a chosen upper set);
* ``gradient×input`` — Σ_{j ∈ c} a_j ∂f_c/∂a_j, largest first (equal to the LRP-0 marginal
  times f_c by law L9, so it differs from ``relevance`` only through the rules);
* ``random`` — seeded uniform permutations, the curves averaged over the draws.

The user's model is only read: an ``nn.Sequential`` is run in two pieces (the modules up
to the layer, then the rest); any other module is run as a deep copy with a forward hook
on the copy, which is then dropped. No hook is ever registered on the user's model and
no parameter, buffer, mode or ``.grad`` changes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

import nrm

RANKINGS = ("relevance", "gradient×input", "random")
"""The rankings :func:`selection_curves` compares, in the order they are reported."""


@dataclass
class SelectionCurves:
    """MSE and SMAPE of the selected network against the full one, per ranking and k.

    ``order[name]`` is the ranking (channel indices, most important first; for
    ``random`` the first draw), ``mse[name][i]`` and ``smape[name][i]`` the errors with
    the top ``ks[i]`` channels kept, ``target[name][i]`` the target output f_c then.
    """

    layer: str
    channels: int
    ks: list[int]
    target_index: int
    full_target: float
    order: dict[str, list[int]] = field(default_factory=dict)
    mse: dict[str, list[float]] = field(default_factory=dict)
    smape: dict[str, list[float]] = field(default_factory=dict)
    target: dict[str, list[float]] = field(default_factory=dict)
    random_draws: int = 0

    def area(self, metric: str = "mse", name: str = "relevance") -> float:
        """The mean of a curve over its ks: one number per ranking, lower is better."""
        values = getattr(self, metric)[name]
        return sum(values) / len(values)

    def to_dict(self) -> dict:
        return {
            "layer": self.layer, "channels": self.channels, "ks": self.ks, "target_index": self.target_index,
            "full_target": self.full_target, "random_draws": self.random_draws,
            "order": self.order, "mse": self.mse, "smape": self.smape, "target": self.target,
            "mean_mse": {k: self.area("mse", k) for k in self.mse},
            "mean_smape": {k: self.area("smape", k) for k in self.smape},
        }


# -- metrics -------------------------------------------------------------------------------
def mse(y: torch.Tensor, reference: torch.Tensor) -> float:
    """(1/N) Σ_i (y_i − ŷ_i)² over every output of every sample."""
    return float(((y.double() - reference.double()) ** 2).mean())


def smape(y: torch.Tensor, reference: torch.Tensor) -> float:
    """(100/N) Σ_i 2 |y_i − ŷ_i| / (|y_i| + |ŷ_i|), a term with both values 0 counting as 0."""
    y, reference = y.double(), reference.double()
    num = 2 * (y - reference).abs()
    den = y.abs() + reference.abs()
    terms = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    return float(100 * terms.mean())


def default_ks(channels: int) -> list[int]:
    """0, powers of two below C, nine evenly spaced counts, and C itself."""
    ks = {0, channels}
    ks.update(2 ** i for i in range(int(math.log2(max(channels, 1))) + 1) if 2 ** i < channels)
    ks.update(round(channels * i / 8) for i in range(9))
    return sorted(ks)


# -- running the model with a layer silenced -------------------------------------------------
class LayerCut:
    """The model split at layer ``layer``: ``head(x)`` gives a_l, ``tail(a)`` the output.

    ``layer`` is a layer name of ``measure`` (module names, ``"input"``). The cut lies
    after the *last* module that belongs to the layer (its activation, batch norm,
    dropout), so a_l is the activation nrm calls the layer's and a silenced channel is
    exactly 0 where the next layer reads it.
    """

    def __init__(self, model: nn.Module, measure: nrm.Measure, layer: str):
        index, shape = measure.layer_index(layer), measure.layer_shape(layer)
        if index == measure.depth:
            raise ValueError(f"layer {layer!r} is the output; select channels of a hidden layer or the input")
        names = {n for n in measure.layers if measure.layer_index(n) == index and measure.layer_shape(n) == shape}
        self.model, self.layer, self.shape = model, layer, shape
        self._leaves = list(_leaves(model)) if _plain_sequential(model) else None
        if self._leaves is not None:
            cut = 0 if index == 0 else max(i + 1 for i, (path, _) in enumerate(self._leaves) if path in names)
            self._head = [m for _, m in self._leaves[:cut]]
            self._tail = [m for _, m in self._leaves[cut:]]
        else:  # any other module: a deep copy with a hook on the copy's module at the cut
            self._copy = copy.deepcopy(model)
            paths = dict(self._copy.named_modules())
            at = [n for n in paths if n in names]
            if index == 0 or not at:
                raise ValueError(f"cannot cut {type(model).__name__} at {layer!r}: no submodule produces it")
            self._module = paths[at[-1]]

    def head(self, x: torch.Tensor) -> torch.Tensor:
        if self._leaves is not None:
            return _run(self._head, x)
        seen = []
        handle = self._module.register_forward_hook(lambda mod, inp, out: seen.append(out))
        try:
            self._copy(x)
        finally:
            handle.remove()
        return seen[0]

    def tail(self, a: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The output with the layer's activations replaced by ``a`` (any batch size;
        the copy path needs ``x``, repeated to a's batch, to run the modules below)."""
        if self._leaves is not None:
            return _run(self._tail, a)
        handle = self._module.register_forward_hook(lambda mod, inp, out: a)
        try:
            return self._copy(x.expand((a.shape[0],) + tuple(x.shape[1:])))
        finally:
            handle.remove()


def _plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward and all(
        _plain_sequential(c) for c in module.children() if isinstance(c, nn.Sequential))


def _leaves(module: nn.Module, prefix: str = ""):
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, path)
        else:
            yield path, child


def _run(modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for m in modules:
        x = m(x)
    return x


def silenced_outputs(cut: LayerCut, a: torch.Tensor, x: torch.Tensor, order: Sequence[int], ks: Sequence[int],
                     chunk: int = 8) -> torch.Tensor:
    """y^(k) for every k of ``ks``: the output with only channels ``order[:k]`` of a_l kept,
    tensor (len(ks), *output shape of one sample). ``a`` is a_l of one sample (1, C, …)."""
    channels = a.shape[1]
    outs = []
    with torch.no_grad():
        for i in range(0, len(ks), chunk):
            group = ks[i:i + chunk]
            keep = torch.zeros(len(group), channels, dtype=a.dtype, device=a.device)
            for row, k in enumerate(group):
                keep[row, list(order[:k])] = 1.0
            keep = keep.reshape((len(group), channels) + (1,) * (a.dim() - 2))
            outs.append(cut.tail(a * keep, x))
    return torch.cat(outs)


# -- rankings ------------------------------------------------------------------------------
def _per_channel(t: torch.Tensor) -> torch.Tensor:
    """(…, C, *spatial) → (…, C): the sum over each channel's neurons."""
    return t if t.dim() == 1 else t.reshape(t.shape[0], -1).sum(1)


def relevance_scores(measure: nrm.Measure, layer: str, within: nrm.Event | None = None,
                     sample: int = 0) -> torch.Tensor:
    """Σ_{j ∈ c} μ(X_l = j [, E]) per channel c of the layer, of one sample of the measure, tensor (C,)."""
    m = measure.marginal(layer, within=within)[sample]
    return _per_channel(m)


def gradient_input_scores(cut: LayerCut, x: torch.Tensor, target: int) -> torch.Tensor:
    """Σ_{j ∈ c} a_j ∂f_target/∂a_j per channel c, tensor (C,). Uses torch.autograd.grad
    on a detached copy of a_l, so no ``.grad`` of the model is written."""
    with torch.no_grad():
        a = cut.head(x)
    a = a.detach().requires_grad_(True)
    with torch.enable_grad():
        y = cut.tail(a, x).reshape(a.shape[0], -1)
        (grad,) = torch.autograd.grad(y[:, target].sum(), a)
    return _per_channel((a * grad).detach()[0])


def ranking(scores: torch.Tensor, by: str = "absolute") -> list[int]:
    """Channels by descending score (``by="signed"``) or descending |score|
    (``by="absolute"``), ties by channel index."""
    if by not in ("signed", "absolute"):
        raise ValueError(f"by= takes 'signed' or 'absolute', got {by!r}")
    key = scores.abs() if by == "absolute" else scores
    return sorted(range(scores.numel()), key=lambda c: (-float(key[c]), c))


# -- the curves --------------------------------------------------------------------------------
def selection_curves(model: nn.Module, x: torch.Tensor, layer: str, target: int, *, rules=None,
                     measure: nrm.Measure | None = None, within: nrm.Event | None = None,
                     ks: Sequence[int] | None = None, by: str = "absolute", random_draws: int = 5, seed: int = 0,
                     progress: Callable[[str], None] | None = None, sample: int = 0,
                     cut: LayerCut | None = None) -> SelectionCurves:
    """MSE and SMAPE of the output as the top-k channels of ``layer`` are kept, for the
    relevance, gradient×input and random rankings (see the module docstring).

    Args:
        model: the model (eval mode); only read.
        x: one sample, shape (1, …).
        layer: a layer name of the measure, with a channel dimension.
        target: the output index c explained.
        rules: nrm rules for the relevance ranking (ignored when ``measure`` is given).
        measure: an ``nrm.explain`` result for (model, x, target) to reuse — or of a batch
            whose row ``sample`` is x (a dataset run reuses its batch's measure).
        within: an upper event E; the relevance ranking is then μ(X_l ∈ c, E).
        ks: channel counts to keep (default :func:`default_ks`).
        random_draws: random permutations averaged for the ``random`` curve.
        seed: seeds the random permutations.
        progress: called with a short label before each ranking's curve.
        sample: the row of ``measure`` that is x (0 for a measure of x alone).
        cut: a :class:`LayerCut` of this model at ``layer`` to reuse (a dataset run makes one
            per batch, not one deep copy of the model per sample).
    """
    if x.dim() < 2 or x.shape[0] != 1:
        raise ValueError(f"selection_curves takes one sample, shape (1, …); got {tuple(x.shape)}")
    if measure is None:
        measure, sample = nrm.explain(model, x, target=target, rules=rules), 0
    shape = measure.layer_shape(layer)
    if len(shape) == 0:
        raise ValueError(f"layer {layer!r} has no channel dimension")
    channels = shape[0]
    ks = default_ks(channels) if ks is None else sorted({int(k) for k in ks})
    if ks[0] < 0 or ks[-1] > channels:
        raise ValueError(f"ks must lie in 0 … {channels} (the channels of {layer!r}), got {ks}")
    cut = LayerCut(model, measure, layer) if cut is None else cut
    with torch.no_grad():
        a = cut.head(x)
        full = cut.tail(a, x)
    full_flat = full.reshape(-1)
    curves = SelectionCurves(layer=layer, channels=channels, ks=list(ks), target_index=int(target),
                             full_target=float(full_flat[target]), random_draws=random_draws)

    def record(name: str, orders: list[list[int]]) -> None:
        if progress is not None:
            progress(name)
        # keeping every channel is the full model: that row is y itself, not a batched pass
        # whose float rounding differs from the batch-1 pass by ~1e-7 relative
        partial = [k for k in ks if k < channels]
        runs = [torch.cat([silenced_outputs(cut, a, x, order, partial).reshape(len(partial), -1),
                           full_flat.reshape(1, -1).expand(len(ks) - len(partial), -1)]) for order in orders]
        curves.order[name] = orders[0]
        curves.mse[name] = [sum(mse(r[i], full_flat) for r in runs) / len(runs) for i in range(len(ks))]
        curves.smape[name] = [sum(smape(r[i], full_flat) for r in runs) / len(runs) for i in range(len(ks))]
        curves.target[name] = [sum(float(r[i, target]) for r in runs) / len(runs) for i in range(len(ks))]

    record("relevance", [ranking(relevance_scores(measure, layer, within, sample), by)])
    record("gradient×input", [ranking(gradient_input_scores(cut, x, target), by)])
    if random_draws > 0:
        generator = torch.Generator().manual_seed(seed)
        record("random", [torch.randperm(channels, generator=generator).tolist() for _ in range(random_draws)])
    return curves
