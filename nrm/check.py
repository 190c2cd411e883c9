"""The self-check of every ``explain``: the kernels' maps reproduce what the model computed.

The forward record of the engine is the model's own computation (:mod:`nrm.capture`): the
activations are the values ``model(x)`` produced, so they need no check. What nrm adds is
an *interpretation* of each recorded call — the map W that a rule splits, the winners of a
max-pool — built by the call's layer kind from its arguments. :func:`check_map` verifies
it where it matters, against the recorded output:

    | W a + b − z_recorded |  ≤  64 · eps(dtype) · (|W| |a| + |b|)      per neuron,

the bound of a float sum of the same terms in another order. A map that fails raises
:class:`~nrm.errors.CaptureMismatchError` naming the layer, its kind and the deviation.

An interpretation depends on the call's arguments and shapes, not on the values of the
weights or the input, so a map checked once is known good for every later call with the
same *signature* (kind, function, non-tensor arguments, shapes, dtype, device): the check
runs the first time a signature is seen in the process, and every time with
``explain(..., check="full")`` (the test suite's setting). Index maps (:func:`check_route`:
slicing, permutes) follow the same rule. Maps built from the input itself (LRN, a graph's
scatter-max) are checked every time, except those of one form at every input (``same_form``):
a norm's centring (:class:`~nrm.linear.CentringMap`, σ torch's own), a softmax
(:class:`~nrm.linear.SoftmaxMap`) and a product of two activations
(:class:`~nrm.linear.MatMulMap`). A module's decomposition (``nn.MultiheadAttention``) is
compared with the module's own output once per signature the same way (:func:`seen`,
:func:`remember`, :func:`call_signature`; ``nrm.capture``).
"""

from __future__ import annotations

import types
from collections import OrderedDict

import torch

from .errors import ArgumentError, CaptureMismatchError

_CHECKED: OrderedDict = OrderedDict()
_CAPACITY = 4096


def signature(block, a: torch.Tensor) -> tuple:
    """What a map's interpretation depends on: kind, function, arguments other than tensor
    values (tensors by shape and dtype), input shape, dtype and device."""

    steps = [block.producer] + list(block.batchnorms)
    return tuple((s.layer_kind.name, _function(s.call.func), _part(s.call.args), _part(s.call.kwargs))
                 for s in steps) + (tuple(a.shape[1:]), a.dtype, a.device.type)


_ATOMS = (int, bool, str, type(None))
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.MethodDescriptorType,
              types.WrapperDescriptorType, types.MethodWrapperType)


def _part(v):
    """An argument as a hashable key: a tensor by shape, dtype and device; integers, strings
    and None with their type (1 and True differ), a float by its repr (−0.0 and 0.0 differ);
    containers element by element; any other object by its repr."""
    t = type(v)
    if t in _ATOMS:
        return t, v
    if t is float:
        return repr(v)
    if isinstance(v, torch.Tensor):
        return "tensor", tuple(v.shape), v.dtype, v.device.type
    if t is tuple or t is list:
        return t, tuple(map(_part, v))
    if isinstance(v, (list, tuple)):
        return tuple(map(_part, v))
    if isinstance(v, dict):
        return tuple(sorted((k, _part(x)) for k, x in v.items()))
    return repr(v)


def _function(func):
    """A called function by itself (torch's functions and methods live as long as the
    process); anything else (a module recorded whole, a bound method, a closure) by its repr,
    so the cache holds no model."""
    owner = getattr(func, "__self__", None)
    plain = owner is None or isinstance(owner, (types.ModuleType, type))
    plain = plain and getattr(func, "__closure__", None) is None
    return func if isinstance(func, _FUNCTIONS) and plain else repr(func)


def check_mode(check) -> None:
    """Raise :class:`~nrm.errors.ArgumentError` unless ``check`` is True, False or "full"."""
    if check not in (True, False, "full"):
        raise ArgumentError(f"check= takes True, False or 'full', got {check!r}")


def seen(key: tuple) -> bool:
    """Whether an interpretation of this signature was checked in this process (and, if so,
    keep it among the recent ones)."""
    if key in _CHECKED:
        _CHECKED.move_to_end(key)
        return True
    return False


def remember(key: tuple) -> None:
    """Record that an interpretation of this signature was checked and held."""
    _CHECKED[key] = True
    if len(_CHECKED) > _CAPACITY:
        _CHECKED.popitem(last=False)


def call_signature(func, args: tuple, kwargs: dict) -> tuple:
    """A call by what an interpretation of it depends on: the function and its arguments other
    than tensor values (tensors by shape, dtype and device), as :func:`signature` keys a map."""
    return _function(func), _part(args), _part(kwargs)


def check_map(block, lmap, a: torch.Tensor, pre: torch.Tensor, full: bool = False) -> None:
    """Raise :class:`CaptureMismatchError` when ``lmap`` at ``a`` does not give ``pre``."""
    # a map built from the input (LRN, the softmax) is checked every time, unless its form is the
    # same at every input (a norm's centring with torch's own σ held: CentringMap.same_form)
    depends_on_input = getattr(lmap, "batch", None) is not None and not getattr(lmap, "same_form", False)
    key = None
    if not full and not depends_on_input:
        key = signature(block, a)
        if seen(key):
            return
    z = lmap.forward(a, lmap.own_weight())
    bias = lmap.bias_for(z) if lmap.bias is not None else None
    if bias is not None:
        z = z + bias
    scale = lmap.magnitude(a)
    if bias is not None:
        scale = scale + bias.abs()
    deviation = (z - pre).abs()
    computed_in = getattr(block.producer.call, "computed_in", None)  # computed in a narrower dtype, widened (upcast)
    eps = max(torch.finfo(a.dtype).eps, torch.finfo(computed_in).eps if computed_in is not None else 0.0)
    bound = 64 * eps * scale + torch.finfo(a.dtype).tiny
    if not bool((deviation <= bound).all()):
        if not (bool(torch.isfinite(pre).all()) and bool(torch.isfinite(a).all())):
            return  # not the map's fault: the engine reports the layer whose value is not finite
        worst = float(deviation.max())
        where = block.producer
        raise CaptureMismatchError(
            f"the map of layer '{where.name}' ({where.layer_kind.name}, {where.call.describe()}) does not reproduce "
            f"what the model computed there: max |W a + b − z| = {worst:.3e} (allowed up to "
            f"{float(bound.max()):.3e}). The layer kind's map() disagrees with the operation; fix the kind "
            "(nrm-verify check-layer tests one)")
    if key is not None:
        remember(key)


def check_winners(step, pooled: torch.Tensor, recorded: torch.Tensor) -> None:
    """The winners' values are the recorded output of a winner-takes-all layer."""
    if not torch.equal(pooled, recorded):
        worst = float((pooled - recorded).abs().max())
        raise CaptureMismatchError(
            f"the winners of layer '{step.name}' ({step.layer_kind.name}, {step.call.describe()}) do not reproduce "
            f"what the model computed there (max deviation {worst:.3e})")


def check_route(block, a: torch.Tensor, index: torch.Tensor | None, recorded: torch.Tensor,
                permutation: tuple | None = None, full: bool = False) -> None:
    """An index map (:meth:`nrm.layers.Reshape.index`) takes the recorded output from its
    input exactly: output k is input neuron index[k] of the same sample (or, for a permutation
    of the per-sample dimensions, the input permuted). An index map depends on the call's
    arguments and shapes only: checked once per signature, as maps are (every time with
    ``full``)."""
    key = None
    if not full:
        key = signature(block, a)
        if seen(key):
            return
    step = block.producer
    if permutation is not None:
        picked = a.permute((0,) + tuple(d + 1 for d in permutation))
        good = picked.shape == recorded.shape and torch.equal(picked, recorded)
        count = a[0].numel()
    else:
        picked = a.reshape(a.shape[0], -1).index_select(1, index)
        good = picked.shape[1] == recorded[0].numel() and torch.equal(picked, recorded.reshape(picked.shape))
        count = picked.shape[1]
    if not good:
        raise CaptureMismatchError(
            f"the index map of layer '{step.name}' ({step.layer_kind.name}, {step.call.describe()}) does not "
            f"reproduce what the model computed there ({count} indices for an output of shape "
            f"{tuple(recorded.shape[1:])})")
    if key is not None:
        remember(key)


def forget() -> None:
    """Forget which signatures were checked (the next explain checks every map again)."""
    _CHECKED.clear()
