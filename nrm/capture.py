"""What ``forward()`` computes, recorded while it runs (NRM-SPEC §1, "the captured computation
is the model's").

:func:`capture` calls ``model(x)`` **once**, under ``torch.no_grad()`` and with autocast
off, and records every operation that ``forward()`` executes on tensors derived from the
input — at the level the model's code calls them (``F.conv2d``, ``torch.cat``,
``x.view(...)``, ``a + b``), whichever module, container, hook or helper function issues
them. Nothing reads module types to guess what ``forward()`` does: a module used twice is
recorded twice, a ``Sequential`` subclass with its own ``forward`` is recorded as that
``forward`` runs, a parametrized or hook-computed weight is the tensor the call received.

How (a recorder at the level of torch's function dispatch):

* a :class:`torch.overrides.TorchFunctionMode` sees every torch function, ``Tensor``
  method and operator the Python code calls. An operation with an input-derived tensor
  among its arguments is *recorded* (a :class:`Call`); one without is a constant
  (parameters, masks, position tables) and only runs;
* global module hooks (this thread only) keep the stack of module calls, which names the
  recorded operations (``"features.0"``) and lets a module whose type has a declared layer
  kind (:mod:`nrm.layers`) be recorded whole, as one call;
* reading the *values* of an input-derived tensor into Python (``bool(t)``, ``t.item()``,
  ``t.tolist()``, …) is data-dependent control flow: refused, with the line of the model's
  code that does it. Reading shapes (``x.shape``, ``x.size(0)``, ``assert``, size
  arithmetic) is fine: it is resolved for the given input, as the model itself resolves it;
* in-place operations are recorded as new values (the value before is kept, copied on
  write); a tensor changed in place through a view of it, and read afterwards, is refused.

The recorded values are the model's own: the engine builds its kernels from them, so there
is no second forward pass. Why this rather than ``torch.fx`` or ``torch.export``, and what
the self-check of every ``explain`` verifies: ``docs/capture.md``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from .check import call_signature, check_mode, remember, seen
from .errors import (
    CaptureMismatchError,
    DataDependentControlFlowError,
    InPlaceViewError,
    NRMError,
    ShapeError,
    UnsupportedOperationError,
)
from .layers import REGISTRY, base_name
from .layers.constants import masked
from .layers.elementwise import FLOATING, mixed_precision
from .layers.fused import DECOMPOSED_FUNCTIONS, OWN_FUNCTIONS, decomposition_of, same_values, within_ulp
from .layers.one_sample import ONE_SAMPLE
from .layers.shape import Permute
from .recorded import Piece, Value, dispatch_name

_MISSING = object()
_TORCH_DIR = os.path.join(os.path.dirname(torch.__file__), "")  # with its separator: torchvision is not torch
_NRM_DIR = os.path.dirname(__file__)

METADATA = {
    torch.Tensor.size, torch.Tensor.dim, torch.Tensor.numel, torch.Tensor.stride, torch.Tensor.is_contiguous,
    torch.Tensor.is_floating_point, torch.Tensor.is_complex, torch.Tensor.element_size, torch.Tensor.nelement,
    torch.Tensor.ndimension, torch.Tensor.get_device, torch.Tensor.data_ptr, torch.Tensor.__len__,
    torch.Tensor.__hash__, torch.Tensor.__repr__, torch.Tensor.__format__,
    torch.Tensor.storage_offset, torch.Tensor.untyped_storage,
}
"""Functions that read a tensor's metadata (or print it), never its values into the
computation: they run without being recorded."""

_PROPERTIES = ("shape", "dtype", "device", "ndim", "layout", "requires_grad", "names", "is_leaf", "grad_fn", "grad",
               "itemsize", "nbytes", "_version", "_base", "output_nr",
               "is_cpu", "is_cuda", "is_ipu", "is_maia", "is_meta", "is_mkldnn", "is_mps", "is_mtia", "is_nested",
               "is_quantized", "is_sparse", "is_sparse_csr", "is_vulkan", "is_xla", "is_xpu")
METADATA |= {getattr(torch._C.TensorBase, p) for p in _PROPERTIES if hasattr(torch._C.TensorBase, p)}
# a property's getter reaches __torch_function__ as a fresh method-wrapper each time: keyed by its descriptor

ALIASES = {
    torch.multiply: torch.mul, torch.Tensor.multiply: torch.Tensor.mul, torch.Tensor.multiply_: torch.Tensor.mul_,
    torch.divide: torch.div, torch.Tensor.divide: torch.Tensor.div, torch.Tensor.divide_: torch.Tensor.div_,
    torch.subtract: torch.sub, torch.Tensor.subtract: torch.Tensor.sub, torch.Tensor.subtract_: torch.Tensor.sub_,
}
"""torch's aliases with the signature of the function they name (``torch.multiply`` is
``torch.mul``: the same arguments, the same computation): recorded as that function, so that
every kind and decomposition that reads it reads them too (ConvBERT calls ``torch.multiply``)."""

SHAPE_SOURCES = {torch.Tensor.expand_as, torch.Tensor.view_as, torch.Tensor.reshape_as, torch.Tensor.type_as}
"""Methods that read their second tensor's shape or dtype only: on a constant ``self`` (PyG's
``index.expand_as(src)``) the result is a constant, whatever the other tensor is."""

REFUSED = {
    torch._nested_tensor_from_mask_left_aligned:
        "is nn.TransformerEncoder (enable_nested_tensor=True) checking its src_key_padding_mask: without "
        "gradients, outside nrm, torch then packs the batch as nested tensors and returns 0 at the padded "
        "positions, where the path nrm can record computes them, so the model's output would not be the one "
        "explained. Construct the encoder with enable_nested_tensor=False (the same function with and without "
        "gradients)",
}
"""Functions on input-derived tensors that announce a computation nrm's recording would not
reproduce (torch takes another path when no recorder is active), refused with the reason."""

VALUE_READS = {
    torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__int__, torch.Tensor.__float__,
    torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.__array__, torch.Tensor.__complex__,
}
"""Functions that read an input-derived tensor's values into Python: data-dependent control flow."""

FACTORIES = {
    torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full, torch.Tensor.new_empty,
    torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like,
}
"""Functions that read only a tensor's shape, dtype and device and return a new tensor: their
result is a constant (Swin's attention mask starts as ``x.new_zeros(…)``; PyG's
``src.new_zeros(size)`` before a scatter, ``new_ones`` for a degree count), run and not recorded."""

PIECEWISE = {torch.chunk, torch.Tensor.chunk, torch.split, torch.Tensor.split, torch.unbind, torch.Tensor.unbind,
             torch.tensor_split, torch.Tensor.tensor_split}
"""Functions that return several tensors, each a piece of their input: recorded as one call
per piece (:class:`~nrm.recorded.Piece`), so that every recorded call has one output."""


@dataclass(eq=False)
class Call:
    """One operation that ``forward()`` executed on input-derived tensors.

    ``func`` is what the model's code called (``torch.nn.functional.conv2d``,
    ``torch.Tensor.view``, …) or, for a module captured whole, the module itself.
    ``args`` / ``kwargs`` are the arguments as given, with :class:`Value` in place of every
    input-derived tensor (constants — parameters, buffers, numbers — stay as they were).
    ``outputs`` are the values it produced, in the order of its results (owned by the
    capture: a later in-place change of the model's tensor does not reach them).
    """

    index: int
    func: Any
    args: tuple
    kwargs: dict
    kind: Any  # nrm.layers.Kind, or None when no kind reads this operation
    outputs: list[torch.Tensor]
    module: nn.Module | None  # the innermost module whose forward() issued it
    path: str  # that module's name in the model ("" for the model itself)
    site: Any  # the line of the model's code that issued it: (file, line, function), formatted when read
    name: str = ""
    inplace: bool = False
    whole: bool = False  # a module captured whole
    in_shapes: list[tuple] = field(default_factory=list)  # shapes of the input-derived arguments, in order
    in_dtypes: list[torch.dtype] = field(default_factory=list)
    refusal: str | None = None  # why no kind reads it (None when a kind does, or none is declared)
    owned: bool = False  # the one operation of its module's call (named by the module)
    masked: bool = False  # its −inf outputs (masked scores) are recorded as finfo.min
    computed_in: torch.dtype | None = None  # the model's dtype when :func:`upcast` widened the record
    batch: int = 0  # the model input's batch size B (a value's rows fold B samples when a multiple of it)
    _inputs: list | None = field(default=None, repr=False)  # :attr:`inputs`, found once

    @property
    def output(self) -> torch.Tensor:
        return self.outputs[0]

    @property
    def constants(self) -> tuple[torch.Tensor, ...]:
        """The tensors among its arguments, nested ones included: what it read that is not
        input-derived (its weight and bias; input-derived arguments are :class:`Value`)."""
        return tuple(_tensors(self.kwargs, _tensors(self.args, [])))

    @property
    def where(self) -> str:
        """``model.py:42 in forward: x = self.conv(x)`` (formatted on first read: most calls are
        never named in a message, and reading the source line costs)."""
        if not isinstance(self.site, str):
            self.site = _format_site(self.site)
        return self.site

    def arg(self, index: int, name: str, default: Any = _MISSING) -> Any:
        """The argument given at position ``index`` or by keyword ``name``."""
        if index < len(self.args):
            return self.args[index]
        if name in self.kwargs:
            return self.kwargs[name]
        if default is _MISSING:
            raise ShapeError(f"{self.describe()} has no argument {name!r}")
        return default

    @property
    def inputs(self) -> list[Value]:
        """The input-derived tensors among the arguments, in order."""
        if self._inputs is None:  # args are fixed once recorded (upcast keeps the Values where they are)
            found: list[Value] = []
            _walk((self.args, self.kwargs), lambda v: found.append(v) if isinstance(v, Value) else None)
            self._inputs = found
        return list(self._inputs)

    def describe(self) -> str:
        """``F.conv2d in Conv2d at 'features.0' (model.py:42: …)`` — for messages."""
        where = f" ({self.where})" if self.where else ""
        at = f"'{self.path}'" if self.path else "the top level"
        owner = f" in {type(self.module).__name__}" if self.module is not None and not self.whole else ""
        return f"{func_name(self.func)}{owner} at {at}{where}"

    def __repr__(self) -> str:
        return f"Call({self.index}: {self.name or '?'} = {func_name(self.func)}{tuple(self.args)!r})"


@dataclass
class Captured:
    """The recorded computation of ``model(x)``: the input (an owned copy), the calls in
    the order they ran, the model's output, and names for module outputs.

    ``module_outputs`` maps the name of every module call (containers included) to the
    :class:`Value` it returned, so that ``"layer4"`` names the output of that block.
    """

    model: nn.Module
    input: torch.Tensor
    calls: list[Call]
    output: Value
    result: torch.Tensor  # what model(x) returned (the selected output tensor)
    module_outputs: dict[str, Value] = field(default_factory=dict)
    constants: list[tuple[str, torch.Tensor, int]] = field(default_factory=list)  # (where, tensor, version)

    def value(self, v: Value) -> torch.Tensor:
        """The recorded tensor of a :class:`Value`."""
        if v.node < 0:
            return self.input
        call = self.calls[v.node]
        return call.outputs[0 if v.item is None else v.item]


def func_name(func: Any) -> str:
    """A readable name of a recorded function: ``F.conv2d``, ``Tensor.view``, ``torch.cat``."""
    if isinstance(func, nn.Module):
        return type(func).__name__
    name = getattr(func, "__name__", None) or getattr(func, "__qualname__", None) or repr(func)
    if name == "fn" and hasattr(func, "__qualname__") and "boolean_dispatch" in func.__qualname__:
        name = dispatch_name(func, "max_pool")
    owner = getattr(func, "__objclass__", None)
    if owner is not None and owner.__name__ in ("TensorBase", "Tensor"):
        return f"Tensor.{name}"
    module = getattr(func, "__module__", None) or ""
    if module.startswith("torch.nn.functional") or module == "torch._C._nn":
        return f"F.{name}"
    if module in ("torch", "torch._VariableFunctions", "torch.functional") or module.startswith("torch._C"):
        return f"torch.{name}"
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    return f"{module}.{name}" if module else name


def _tensors(obj: Any, found: list) -> list:
    """The tensors in nested lists, tuples and dicts, in order (appended to ``found``)."""
    for o in (obj.values() if isinstance(obj, dict) else obj):
        if isinstance(o, torch.Tensor):
            found.append(o)
        elif isinstance(o, (list, tuple, dict)):
            _tensors(o, found)
    return found


def _walk(obj: Any, fn: Callable[[Any], Any]) -> None:
    if isinstance(obj, (list, tuple)):
        for o in obj:
            _walk(o, fn)
    elif isinstance(obj, dict):
        for o in obj.values():
            _walk(o, fn)
    else:
        fn(obj)


_CONTAINERS = (list, tuple, dict)


def _map(obj: Any, fn: Callable[[Any], Any]) -> Any:
    t = type(obj)
    if t is tuple or t is list:  # the common case first: a call's args
        return t([_map(o, fn) if isinstance(o, _CONTAINERS) else fn(o) for o in obj])
    if t is dict:
        return {k: _map(v, fn) if isinstance(v, _CONTAINERS) else fn(v) for k, v in obj.items()} if obj else {}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuples (torch.return_types)
        return type(obj)(*(_map(o, fn) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)([_map(o, fn) if isinstance(o, _CONTAINERS) else fn(o) for o in obj])
    if isinstance(obj, dict):
        return {k: _map(v, fn) if isinstance(v, _CONTAINERS) else fn(v) for k, v in obj.items()}
    return fn(obj)


def user_location(skip_torch: bool = True) -> str:
    """The innermost line of the model's own code on the Python stack (not torch's, not nrm's)."""
    return _format_site(_user_site(skip_torch))


def _user_site(skip_torch: bool = True) -> tuple | None:
    """(file, line, function) of the innermost frame of the model's own code, or None."""
    frame = sys._getframe(1)
    kinds = _CODE_KINDS
    while frame is not None:
        code = frame.f_code
        entry = kinds.get(id(code))  # by id: a code object's own hash reads its whole bytecode
        if entry is not None and entry[0] is code:
            kind = entry[1]
        else:
            filename = code.co_filename
            kind = 0 if filename.startswith(_NRM_DIR) or filename.startswith("<frozen") else \
                1 if filename.startswith(_TORCH_DIR) else 2
            if len(kinds) < 65536:
                kinds[id(code)] = (code, kind)
        if kind == 2 or (kind == 1 and not skip_torch):
            return code.co_filename, frame.f_lineno, code.co_name
        frame = frame.f_back
    return None


_CODE_KINDS: dict = {}
"""id(code object) → (the code object, 0 for nrm's or frozen, 1 for torch's, 2 for the model's own), for
:func:`_user_site`."""


def _format_site(site: tuple | None) -> str:
    if site is None:
        return ""
    filename, lineno, function = site
    line = _source_line(filename, lineno)
    here = f"{os.path.basename(filename)}:{lineno} in {function}"
    return f"{here}: {line}" if line else here


def _source_line(filename: str, lineno: int) -> str:
    import linecache

    return linecache.getline(filename, lineno).strip()


class _Frame:
    """One module call on the stack."""

    __slots__ = ("module", "name", "direct", "children", "whole", "inputs", "decompose", "batched", "handling",
                 "own_key", "skipped")

    def __init__(self, module: nn.Module, name: str, whole: Any):
        self.module, self.name, self.whole = module, name, whole
        self.handling = sys.exc_info()[1]  # the exception being handled around the call (None: none)
        self.direct: list[int] = []  # calls recorded directly in this module's forward()
        self.children = False  # whether a module called inside recorded anything
        self.inputs: list[Value] | None = None
        self.decompose: Any = None  # a module read through its definition (DECOMPOSED_MODULES)
        self.batched: tuple | None = None  # an unbatched decomposition's arguments, batch first
        self.own_key: tuple | None = None  # the signature of its own fused call (_own), remembered once it agreed
        self.skipped = False  # whether that call was skipped (its signature had agreed before)


class _Recorder(TorchFunctionMode):
    """Records the calls of one ``model(x)`` (see the module docstring)."""

    def __init__(self, model: nn.Module, kinds, check: bool | str = True):
        super().__init__()
        self.model, self.kinds, self.check = model, kinds, check
        self.thread = threading.get_ident()
        self.names: dict[int, list[str]] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            self.names.setdefault(id(module), []).append(name)
        self.times_called: dict[int, int] = {}
        self.stack: list[_Frame] = []
        self.live: dict[int, tuple[Value, int, torch.Tensor]] = {}  # id(tensor) → (value, version, tensor)
        self.calls: list[Call] = []
        self.by_storage: dict[int, list[tuple[Call, int]]] = {}  # storage → the recorded outputs in it (_copy_on_write)
        self.module_outputs: dict[str, Value] = {}
        self.module_calls: list[str] = []  # names of the module calls, in the order they returned
        self.constants: dict[int, tuple[str, torch.Tensor, int]] = {}
        self.constants_by_storage: dict[int, list[torch.Tensor]] = {}  # the constants read, by storage
        self.naming = _Names(model)
        self.leaf = 0  # depth inside a module captured whole
        self.failed: tuple[nn.Module, str] | None = None  # the innermost module in which forward() raised
        self.input: torch.Tensor | None = None
        self.batch = 0  # the input's batch size (Call.batch)
        self.error: NRMError | None = None

    # -- the input ---------------------------------------------------------------------
    def start(self, x: torch.Tensor) -> None:
        self.input = x
        self.batch = int(x.shape[0]) if x.dim() else 0
        self.live[id(x)] = (Value(-1), x._version, x)

    # -- module calls ------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: tuple) -> tuple | None:
        if threading.get_ident() != self.thread:
            return None
        with torch._C.DisableTorchFunction():  # the hook's own reads of tensors are not the model's
            name = self._call_name(module)
            whole = None if self.leaf else self.kinds.module_kind(module)
            frame = _Frame(module, name, whole)
            if whole is not None:
                frame.inputs = self._tainted(args, strict=False)
                self.leaf += 1
            elif not self.leaf and decomposition_of(module) is not None:  # its own forward runs unrecorded
                frame.decompose = decomposition_of(module)
                self.leaf += 1
                if getattr(frame.decompose, "unbatched", False) and args and isinstance(args[0], torch.Tensor) \
                        and args[0].dim() >= 2:  # a module that reads one sample: its own forward runs on sample 0
                    frame.batched = args
                    self.stack.append(frame)
                    return (args[0][0],) + tuple(args[1:])
            self.stack.append(frame)
        return None

    def post_hook(self, module: nn.Module, args: tuple, *rest) -> Any:
        if threading.get_ident() != self.thread or not self.stack or self.stack[-1].module is not module:
            return None
        replaced = None
        # forward() raised in this module when an exception other than the one handled around
        # its call is being handled now (torch calls always-call hooks from its own handler); a
        # capture run inside the caller's `except` block sees that block's exception before and after
        raised = sys.exc_info()[1] is not self.stack[-1].handling
        if self.stack[-1].decompose is not None:
            self.leaf -= 1
            if not raised and self.error is None:
                replaced = self._decompose(self.stack[-1], args, rest)
        with torch._C.DisableTorchFunction():
            output = rest[-1]
            kwargs = rest[0] if len(rest) == 2 else {}
            if raised and self.failed is None:  # forward() raised in this module
                self.failed = (self.stack[-1].module, self.stack[-1].name)
            frame = self.stack.pop()
            recorded_whole = False
            if frame.whole is not None:
                self.leaf -= 1
                if self.error is None and (frame.inputs or self._tainted(kwargs, strict=False)):
                    self._record(module, args, kwargs, frame.whole, output, frame, whole=True)
                    recorded_whole = True
            if self.stack:  # a module recorded whole is a recorded child too: it keeps its own name
                parent = self.stack[-1]
                parent.children = parent.children or bool(frame.direct) or frame.children or recorded_whole
            if not frame.name:  # the model itself: its output is "output"
                return
            if isinstance(output, torch.Tensor) and id(output) in self.live:
                value, version, _ = self.live[id(output)]
                if version == output._version:
                    self.module_outputs.setdefault(frame.name, value)
            if len(frame.direct) == 1 and not frame.children:
                call = self.calls[frame.direct[0]]
                if not call.name:
                    call.name, call.owned = frame.name, True
            self.module_calls.append(frame.name)
        return replaced

    def _decompose(self, frame: _Frame, args: tuple, rest: tuple) -> Any:
        """A module of DECOMPOSED_MODULES after its own forward ran unrecorded: run its
        definition recorded, on the same arguments, and return that output in place of the
        module's, which it must reproduce (each tensor within 10³ ulp of its largest value)."""
        kwargs, output = (rest[0] if len(rest) == 2 else {}), rest[-1]
        args = args if frame.batched is None else frame.batched
        with torch._C.DisableTorchFunction():
            why = frame.decompose.refusal(frame.module, args, kwargs)
        if why is None and getattr(frame.module, "batch_first", True) is False and self.batch != 1:
            why = (f"has batch_first=False (the batch in dimension 1) and nrm explains a batch of {self.batch} "
                   "samples; nrm reads the sequence-first layout one sample at a time, where moving the batch is a "
                   "view: explain the samples one by one, or construct it with batch_first=True")
        if why is not None:
            self._fail(UnsupportedOperationError(
                f"{type(frame.module).__name__} at '{frame.name}' ({user_location() or 'forward'}) {why}"))
        if hasattr(frame.decompose, "recorded_as") and frame.batched is None and isinstance(output, torch.Tensor):
            return self._reuse(frame, args, output)
        replaced = frame.decompose(frame.module, *args, **kwargs)
        if frame.skipped:  # its own fused call agreed with the decomposition for this signature before (_own)
            return replaced
        if frame.batched is not None:  # the module's own output, one sample at a time, batch first
            output = self._per_sample(frame, args, kwargs, output)
        with torch._C.DisableTorchFunction():
            for mine, theirs in zip(_flat(replaced), _flat(output)):
                if (mine is None) != (theirs is None):
                    self._fail(CaptureMismatchError(f"the decomposition of {type(frame.module).__name__} at "
                                                    f"'{frame.name}' returns other outputs than the module"))
                if mine is None:
                    continue
                bound = 1e3 * torch.finfo(theirs.dtype).eps * max(1.0, float(theirs.abs().max()))
                worst = float((mine - theirs).abs().max()) if mine.shape == theirs.shape else float("inf")
                if not worst <= bound:
                    self._fail(CaptureMismatchError(
                        f"the decomposition of {type(frame.module).__name__} at '{frame.name}' does not reproduce the "
                        f"module's output (max deviation {worst:.3e}, allowed {bound:.3e}); nrm cannot read it "
                        "faithfully"))
        if frame.own_key is not None and self.check is True:  # compared just now (check=False compares nothing)
            remember(frame.own_key)
        return replaced

    def _own(self, func, args: tuple, kwargs: dict) -> Any:
        """The fused call of a decomposed module's own forward (``nn.MultiheadAttention``'s
        ``F.multi_head_attention_forward``): run, and compared with the decomposition in
        :meth:`_decompose`, the first time its signature is seen in the process (every time with
        ``check="full"``); after that skipped — its output would be replaced by the
        decomposition's, which was shown to reproduce it for this signature — with uninitialized
        tensors of its shapes standing in (``placeholder``)."""
        frame = self.stack[-1] if self.stack else None
        if frame is None or frame.decompose is None or self.leaf != 1 or self.error is not None:
            return func(*args, **kwargs)
        with torch._C.DisableTorchFunction():
            key, held = self._signature_held(frame, func, args, kwargs)
            stand_in = frame.decompose.placeholder(args, kwargs) if held else None
        if stand_in is None:
            frame.own_key = key  # remembered once the decomposition reproduces this call (_decompose)
            return func(*args, **kwargs)
        frame.skipped = True
        return stand_in

    def _signature_held(self, frame: _Frame, func, args: tuple, kwargs: dict) -> tuple[tuple | None, bool]:
        """(key, held) of a decomposed module's own check, made once per signature: the key (None —
        checked every call — with ``check="full"`` or the instance's forward replaced) and whether
        it held before in this process (always, with ``check=False``)."""
        module_key = frame.decompose.own_key(frame.module) if self.check != "full" else None
        if module_key is None:
            return None, False
        key = module_key + call_signature(func, args, kwargs)
        return key, self.check is False or seen(key)

    def _reuse(self, frame: _Frame, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """A decomposition that is one call giving the module's own output: that call recorded
        with the output the module computed, checked against the definition through the
        decomposition's projections of both (each within 10³ ulp of its scale) rather than
        computed again — once per signature (``own_key`` and the arguments' shapes), every call
        with ``check="full"``, never with ``check=False``."""
        with torch._C.DisableTorchFunction():
            key, held = self._signature_held(frame, type(frame.decompose), args, {})
        if held:  # this signature's check held before
            self._record(*frame.decompose.call(frame.module, *args), None, output, frame)
            return output
        with torch._C.DisableTorchFunction():
            (func, fargs, fkwargs), mine, theirs, scale = frame.decompose.recorded_as(frame.module, *args, output)
            eps = torch.finfo(theirs.dtype).eps
            worst = float(((mine - theirs).abs() / (1e3 * eps * scale.clamp_min(1.0))).max()) \
                if mine.shape == theirs.shape else float("inf")
        if not worst <= 1.0:
            self._fail(CaptureMismatchError(
                f"the decomposition of {type(frame.module).__name__} at '{frame.name}' does not reproduce the "
                f"module's output (its deviation is {worst:.3g} times the 10³ ulp allowed); nrm cannot read it "
                "faithfully"))
        if key is not None:
            remember(key)
        self._record(func, fargs, fkwargs, None, output, frame)
        return output

    def _per_sample(self, frame: _Frame, args: tuple, kwargs: dict, first: Any) -> Any:
        """An unbatched module's own outputs on every sample of ``args[0]`` (its forward ran on
        sample 0, giving ``first``; the others run here, unrecorded), stacked batch first."""
        outputs = [first]
        self.leaf += 1
        try:
            with torch._C.DisableTorchFunction():
                for b in range(1, args[0].shape[0]):
                    outputs.append(frame.module.forward(args[0][b], *args[1:], **kwargs))
        finally:
            self.leaf -= 1
        if isinstance(first, torch.Tensor):
            return torch.stack(outputs)
        return type(first)(torch.stack(parts) if isinstance(parts[0], torch.Tensor) else parts[0]
                           for parts in zip(*outputs))

    def _call_name(self, module: nn.Module) -> str:
        """The i-th call of a module takes its i-th name in the model (a module registered
        twice, e.g. reused in an nn.Sequential, has two), then fx's ``path_i``."""
        names = self.names.get(id(module)) or [type(module).__name__.lower()]
        i = self.times_called.get(id(module), 0)
        self.times_called[id(module)] = i + 1
        if i < len(names):
            return names[i]
        return f"{names[0].replace('.', '_')}_{i}"

    # -- functions -----------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        func = ALIASES.get(func, func)
        if self.leaf and func in OWN_FUNCTIONS:
            return self._own(func, args, kwargs)
        if self.leaf or _key(func) in METADATA or func in FACTORIES or self.error is not None:
            return func(*args, **kwargs)
        setitem = getattr(func, "__name__", "") == "__setitem__"  # its target may be stale: a[i] += b (_setitem)
        tainted = self._tainted((args, kwargs), strict=not setitem)
        if not tainted or (func in SHAPE_SOURCES and args and not self._tainted(args[0])):
            return func(*args, **kwargs)
        if func in REFUSED:
            self._fail(UnsupportedOperationError(
                f"{func_name(func)} at {user_location() or 'an unknown place'} {REFUSED[func]}"))
        if func in VALUE_READS:
            self._fail(DataDependentControlFlowError(
                f"forward() reads the values of an input-derived tensor into Python ({func_name(func)}) at "
                f"{user_location() or 'an unknown place'}: data-dependent control flow, which nrm does not follow. "
                "Compute it with tensor operations (torch.where, masks) instead of Python branching"))
        if func in _PIECE_SELECTORS:
            pieces = self._through_moved_batch(func, args, kwargs)
            if pieces is not None:
                return pieces
        if self.batch == 1 and _key(func) in ONE_SAMPLE:
            rewritten = ONE_SAMPLE[_key(func)].rewrite(args, kwargs, lambda t: bool(self._tainted(t)))
            if rewritten is not None:
                return self._one_sample(func, args, kwargs, rewritten)
        decomposition, why = DECOMPOSED_FUNCTIONS.get(_key(func)), None
        if decomposition is not None:
            applies = getattr(decomposition, "applies", _always)(args, kwargs, lambda t: bool(self._tainted(t)))
            if isinstance(applies, str):  # refused for what the input-derived arguments are
                decomposition, why = None, applies
            elif not applies:
                decomposition = None  # e.g. x − c: a kind reads it as it is
            else:
                if applies is not True:  # a decomposition for what the input-derived arguments are
                    decomposition = applies
                why = decomposition.refusal(args, kwargs)
        if decomposition is not None and why is None:  # recorded as the operations that define it
            with self:
                return decomposition(*args, **kwargs)
        target = _inplace_target(func, args, kwargs)
        if target is not None and setitem:
            return self._setitem(args, kwargs, target)
        before = None
        if target is not None:
            self._copy_on_write(target)
            if id(target) not in self.live:  # a constant written with input-derived values: keep its value before
                with torch._C.DisableTorchFunction():
                    before = target.detach().clone()
        out = func(*args, **kwargs)
        if not _tensors_only(out):
            self._fail(DataDependentControlFlowError(
                f"{func_name(func)} at {user_location() or 'an unknown place'} turns input-derived tensors into a "
                f"Python {type(out).__name__}: data-dependent control flow, which nrm does not follow"))
        frame = self.stack[-1] if self.stack else None
        if _key(func) in PIECEWISE and isinstance(out, (list, tuple)):  # one call per piece
            for i, piece in enumerate(out):
                self._record(Piece(func, i), args, kwargs, None, piece, frame)
            return out
        self._record(func, args, kwargs, None, out, frame, target=target, before=before)
        if why is not None and self.calls[-1].kind is None:
            self.calls[-1].refusal = why
        return out

    # -- one sample: dimension 0 is the sample's --------------------------------------------
    def _one_sample(self, func, args: tuple, kwargs: dict, rewritten: Callable[[], Any]):
        """An operation along dimension 0 with a batch of one sample, recorded as the same
        operation along dimension 1 of the value unsqueezed in front, reshaped to torch's own
        output, which it must equal bitwise, or within 10³ ulp where the rewrite's own
        decomposition rounds (``rounds``: a matrix product read as an einsum;
        :mod:`nrm.layers.one_sample`)."""
        with torch._C.DisableTorchFunction():
            theirs = func(*args, **kwargs)
        with self:
            ours = rewritten()
            several = isinstance(theirs, (list, tuple))
            if several:
                ours = type(theirs)(o.reshape(t.shape) for o, t in zip(ours, theirs)) \
                    if len(ours) == len(theirs) else ours
            else:
                ours = ours.reshape(theirs.shape)
        pairs = list(zip(ours, theirs)) if several and len(ours) == len(theirs) else \
            [] if several else [(ours, theirs)]
        agree = within_ulp if getattr(ONE_SAMPLE[_key(func)], "rounds", False) else same_values
        if not pairs or not all(agree(o, t) and id(o) in self.live for o, t in pairs):  # recorded, and torch's
            self._fail(CaptureMismatchError(
                f"{func_name(func)} at {user_location() or 'an unknown place'} along dimension 0 of a batch of one "
                "sample, read as the same along dimension 1 of the value unsqueezed in front, does not reproduce "
                "torch's own output; nrm cannot read it faithfully"))
        return ours

    # -- a stack of tensors moved in front of the batch ------------------------------------
    def _through_moved_batch(self, func, args: tuple, kwargs: dict):
        """The pieces of ``x.permute(d, 0, …)`` taken along its new first dimension —
        ``qkv.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)`` or ``qkv[0]``, timm's and
        many ViTs' way to split q, k, v — read as what they are, each piece selected from x
        along d and the other dimensions permuted with the batch first::

            x.permute(σ)[i] = x.select(σ₀, i).permute(σ′)       (σ′: σ₁… renumbered without σ₀)

        (:class:`~nrm.layers.shape.Index` and :class:`~nrm.layers.shape.Permute`, index maps).
        The permute itself, which moves the batch, is then read by nothing and dropped; any other
        use of it is still refused. The pieces must equal torch's, bitwise. None when this is
        not that pattern (the call is then recorded as usual)."""
        t = args[0] if args else None
        entry = self.live.get(id(t)) if isinstance(t, torch.Tensor) else None
        if entry is None or entry[1] != t._version or entry[0].node < 0:
            return None
        call = self.calls[entry[0].node]
        if call.func not in (torch.Tensor.permute, torch.permute) or not call.in_shapes:
            return None
        ndim = len(call.in_shapes[0])
        try:
            order = list(Permute().order(call))  # the permute kind's own reading of its arguments
        except (TypeError, ValueError):
            return None
        if len(order) != ndim or sorted(order) != list(range(ndim)) or order[0] == 0 or order[1] != 0:
            return None
        n = t.shape[0]
        if func.__name__ == "unbind":
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if not isinstance(dim, int) or dim % t.dim() != 0:
                return None
            picked: list[int] | int = list(range(n))
        else:  # t[i] or t[i, :, …]
            index = args[1] if len(args) > 1 else None
            first = index[0] if isinstance(index, tuple) and index else index
            rest_index = index[1:] if isinstance(index, tuple) else ()
            if isinstance(first, bool) or not isinstance(first, int) or not -n <= first < n or any(
                    i is not Ellipsis and i != slice(None) for i in rest_index):
                return None
            picked = first % n
        source_value = call.inputs[0]
        source = self.input if source_value.node < 0 else \
            self.calls[source_value.node].outputs[0 if source_value.item is None else source_value.item]
        if source is None:
            return None
        if self.live.get(id(source), (None, None))[0] != source_value:  # its record, kept apart by copy-on-write
            self.live[id(source)] = (source_value, source._version, source)
        d = order[0]
        rest = [o - (o > d) for o in order[1:]]

        def piece(i: int) -> torch.Tensor:
            selected = source[(slice(None),) * d + (i,)]
            return selected if rest == list(range(len(rest))) else selected.permute(rest)

        with self:
            pieces = [piece(i) for i in picked] if isinstance(picked, list) else piece(picked)
        with torch._C.DisableTorchFunction():
            theirs = func(*args, **kwargs)
            ours = pieces if isinstance(pieces, list) else [pieces]
            theirs_list = list(theirs) if isinstance(theirs, (tuple, list)) else [theirs]
            same = len(ours) == len(theirs_list) and all(same_values(a, b) for a, b in zip(ours, theirs_list))
        if not same:
            self._fail(CaptureMismatchError(
                f"{func_name(func)} at {user_location() or 'an unknown place'}: the pieces of a permute that moves the "
                "batch, read as selections of its input, do not reproduce torch's; report the case"))
        return tuple(pieces) if isinstance(pieces, list) else pieces

    # -- writes into a slice -------------------------------------------------------------
    def _setitem(self, args: tuple, kwargs: dict, target: torch.Tensor) -> None:
        """``t[index] = v`` with t or v input-derived, recorded as the operations that define
        the value t holds afterwards (:func:`overwrite_route`)::

            t′ = cat([t.reshape(B, −1), v.reshape(B, −1)], 1).index_select(1, route).reshape(t.shape)

        an index map over t's and v's neurons: each neuron of t′ is the neuron of t or of v
        whose value it holds, so relevance moves with the values. ``a[i] += b`` is Python's
        ``a.__setitem__(i, a[i].__iadd__(b))``: the add is recorded on the view ``a[i]`` (which
        changes a in place), then this write; ``a`` is then read from its record, the value it
        had before the view changed it. The write itself runs as the model wrote it; t′ must
        equal what it leaves in t, bitwise (:class:`CaptureMismatchError` otherwise)."""
        if kwargs or len(args) != 3:
            self._fail(UnsupportedOperationError(
                f"Tensor.__setitem__ at {user_location() or 'an unknown place'} is called with arguments "
                f"{len(args)} and {sorted(kwargs)}; nrm reads t[index] = value"))
        _, index, value = args
        where = user_location() or "an unknown place"
        self._tainted(value)  # strict: a value changed in place behind the capture's back is an error
        if self._tainted(index, strict=False):
            self._fail(DataDependentControlFlowError(
                f"t[index] = value at {where} writes at positions computed from the input: a data-dependent selection, "
                "which nrm does not read. Use torch.where with a mask computed from the input instead"))
        with torch._C.DisableTorchFunction():
            old = self._before_write(target, where)
            v = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=target.dtype,
                                                                                 device=target.device)
            try:
                route, v = overwrite_route(target, index, v, id(v) in self.live, where)
            except UnsupportedOperationError as error:
                self._fail(error)
        with self:  # recorded: the value t holds after the write, out of place
            batch = target.shape[0]
            if v.dtype != target.dtype and mixed_precision(v.dtype, target.dtype):
                v = v.to(target.dtype)  # the write casts to t's dtype (RWKV's float32 state, a float64 model)
            packed = torch.cat([old.reshape(batch, -1), v.reshape(batch, -1)], 1)
            new = packed.index_select(1, route).reshape(target.shape)
        self._copy_on_write(target)  # the records sharing t's storage keep their values
        with torch._C.DisableTorchFunction():
            torch.Tensor.__setitem__(*args)  # the write as the model wrote it
            same = same_values(new, target)
        if not same and old is not target and id(old) in self.live:  # read from its record: changed another way too
            self._fail(InPlaceViewError(
                f"t[index] = value at {where} writes into a tensor that was also changed in place outside the written "
                "region since it was computed; nrm cannot tell which value the model meant. Use out-of-place "
                "operations there (torch.cat, torch.where)"))
        if not same and isinstance(value, torch.Tensor) and \
                value.untyped_storage().data_ptr() == target.untyped_storage().data_ptr():
            self._fail(UnsupportedOperationError(
                f"t[index] = value at {where} writes a view of t into an overlapping region of t; torch's result then "
                "depends on the order of the copy. Write the value's copy: t[index] = value.clone()"))
        if not same:
            self._fail(CaptureMismatchError(
                f"t[index] = value at {where}: nrm's reading of the write (an index map) does not reproduce what torch "
                "wrote. Write it out of place (torch.cat, torch.where) and report the case"))
        self.live[id(target)] = (self.live[id(new)][0], target._version, target)
        return None

    def _before_write(self, target: torch.Tensor, where: str) -> torch.Tensor:
        """What ``target`` held before this write, as a tensor the capture reads: ``target``
        itself; its record when a view of it has changed it since (``a[i] += b``); a copy when
        it is a constant (a buffer, a ``new_zeros``), which the write is about to change."""
        entry = self.live.get(id(target))
        if entry is None:
            return target.detach().clone()
        value, version, _ = entry
        if target._version == version:
            return target
        recorded = self.calls[value.node].outputs[0 if value.item is None else value.item] if value.node >= 0 \
            else self.input
        if recorded is None or recorded.untyped_storage().data_ptr() == target.untyped_storage().data_ptr():
            self._fail(InPlaceViewError(
                f"t[index] = value at {where} writes into a tensor that was also changed in place another way since "
                "it was computed; nrm cannot tell which value the model meant. Use out-of-place operations there"))
        self.live[id(recorded)] = (value, recorded._version, recorded)
        return recorded

    # -- bookkeeping ---------------------------------------------------------------------
    def _tainted(self, obj, strict: bool = True) -> list[Value]:
        """The input-derived tensors in ``obj``; ``strict``: one changed in place behind the
        recorder's back (through a view) is an error."""
        found: list[Value] = []
        live = self.live
        if isinstance(obj, torch.Tensor):
            held = [obj]
        else:
            held = _tensors(obj, []) if isinstance(obj, (list, tuple, dict)) else ()
        for t in held:
            entry = live.get(id(t))
            if entry is None:
                continue
            if t._version != entry[1]:
                if not strict:
                    continue
                self._fail(InPlaceViewError(
                    f"an input-derived tensor was changed in place through a view of it and read afterwards, at "
                    f"{user_location() or 'an unknown place'}; nrm cannot tell which value the model meant. "
                    "Use an out-of-place operation there (e.g. torch.cat or torch.where instead of writing into "
                    "a slice)"))
            found.append(entry[0])
        return found

    def _copy_on_write(self, target: torch.Tensor) -> None:
        """Before ``target`` changes in place, keep the value every recorded call holds of
        its storage (the call's output stays what it was when computed)."""
        storage = target.untyped_storage().data_ptr()
        for call, i in self.by_storage.pop(storage, ()):
            t = call.outputs[i]
            if t is not None and t.untyped_storage().data_ptr() == storage:
                call.outputs[i] = t.clone()  # a storage of its own, which nothing else writes
        if self.input is not None and self.input.untyped_storage().data_ptr() == storage:
            self.input = self.input.clone()
        self._keep_constants(storage)

    def _keep_constants(self, storage: int) -> None:
        """Before a write into ``storage``, the constants that recorded calls read from it (a
        cache's state, read by one step of a recurrence and written by the next: RWKV's) keep the
        values those calls read: a copy takes their place in the calls' arguments."""
        read = self.constants_by_storage.pop(storage, ())
        kept = {}
        for t in read:
            name, _, version = self.constants.get(id(t), (None, None, None))
            if name is None or t._version != version:
                continue  # already changed: the staleness check names it
            with torch._C.DisableTorchFunction():
                copy = t.detach().clone()
            kept[id(t)] = copy
            del self.constants[id(t)]  # a later read of t is a constant of its own, as it is then
            self.constants[id(copy)] = (name, copy, copy._version)
        if kept:
            def swap(v):
                return kept.get(id(v), v) if isinstance(v, torch.Tensor) else v

            for call in self.calls:
                call.args, call.kwargs = _map(call.args, swap), _map(call.kwargs, swap)

    def _record(self, func, args, kwargs, kind, out, frame, *, whole: bool = False, target=None,
                before: torch.Tensor | None = None) -> None:
        index = len(self.calls)

        shapes, dtypes = [], []

        def placeholder(t):
            if not isinstance(t, torch.Tensor):
                return t
            entry = self.live.get(id(t))
            if entry is not None and (entry[1] == t._version or t is target):  # target: its value before
                shapes.append(tuple(t.shape))
                dtypes.append(t.dtype)
                return entry[0]
            if t is target and before is not None:  # the constant as it was before this call wrote into it
                t = before  # (Swin's mask filled in place, the zeros a PyG scatter adds into)
            if id(t) not in self.constants:
                self.constants[id(t)] = (_ConstantName(self.naming, t, frame), t, t._version)
                self.constants_by_storage.setdefault(t.untyped_storage().data_ptr(), []).append(t)
            return t

        args, kwargs = _map(args, placeholder), (_map(kwargs, placeholder) if kwargs else {})
        outputs: list = []
        several = isinstance(out, (list, tuple))
        for i, t in enumerate(out if several else (out,)):
            if isinstance(t, torch.Tensor):
                self.live[id(t)] = (Value(index, i if several else None), t._version, t)
            outputs.append(t if isinstance(t, torch.Tensor) else None)
        call = Call(index, func, tuple(args), dict(kwargs), kind, outputs,
                    frame.module if frame is not None else None, frame.name if frame is not None else "",
                    _user_site(skip_torch=not whole), inplace=target is not None, whole=whole,
                    in_shapes=shapes, in_dtypes=dtypes,
                    batch=self.batch)
        if whole:
            call.name, call.owned = frame.name, True
        call.kind, call.refusal = self.kinds.resolve(call)
        if getattr(call.kind, "masks", False):  # a masked score (−inf) is recorded as finfo.min (docs/attention.md)
            kept = call.outputs
            call.outputs = [masked(t) if t is not None else None for t in kept]
            call.masked = any(t is not u for t, u in zip(call.outputs, kept))
        self.calls.append(call)
        for i, t in enumerate(call.outputs):
            if t is not None:
                self.by_storage.setdefault(t.untyped_storage().data_ptr(), []).append((call, i))
        if frame is not None and not whole:
            frame.direct.append(index)

    def _fail(self, error: NRMError) -> None:
        if self.error is None:
            self.error = error
        raise error


class _Names:
    """Names of the constants a capture read: a parameter's or buffer's name, else where the
    constant was read. The model's table of names is built at the first question."""

    def __init__(self, model: nn.Module):
        self.model, self.table = model, None

    def __call__(self, t: torch.Tensor, where: str | None) -> str:
        if self.table is None:
            self.table = {}
            for name, p in list(self.model.named_parameters(remove_duplicate=False)) + list(
                    self.model.named_buffers(remove_duplicate=False)):
                self.table.setdefault(id(p), name)
        name = self.table.get(id(t))
        if name is not None:
            return name
        base = t._base
        if base is not None and id(base) in self.table:
            return f"{self.table[id(base)]} (a view of it)"
        return f"a tensor read at '{where or 'the top level'}'"


class _ConstantName:
    """The name of a constant a call read, found when a message first asks for it (most
    names are never read: naming every constant of every capture walked the model's
    parameters each time). Formats as the name."""

    __slots__ = ("_find", "_tensor", "_where", "_name")

    def __init__(self, find: Callable, tensor: torch.Tensor, frame):
        self._find, self._tensor, self._name = find, tensor, None
        self._where = frame.name if frame is not None else None  # the module's name, not the frame

    def __str__(self) -> str:
        if self._name is None:
            self._name = self._find(self._tensor, self._where)
            self._find = self._tensor = None
        return self._name

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return repr(str(self))

    def __eq__(self, other) -> bool:
        return str(self) == (str(other) if isinstance(other, _ConstantName) else other)

    def __hash__(self) -> int:
        return hash(str(self))


_PIECE_SELECTORS = {torch.Tensor.unbind, torch.unbind, torch.Tensor.__getitem__}
"""Calls that may take the pieces of a permute that moved the batch (:meth:`_Recorder._through_moved_batch`)."""


def overwrite_route(target: torch.Tensor, index: Any, value: torch.Tensor, derived: bool,
                    where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The index map of ``t[index] = v`` per sample: (route, v′) with route[j] the neuron of
    the packed (t, v′) per sample — j itself where the write leaves t's neuron, |t| + k where it
    writes v′'s neuron k — and v′ = v with a batch dimension (a constant is expanded to the
    written region; an input-derived v must have one). Found by the write itself, done on
    labels: t labelled 0 … n−1, v′ n … n + |v′| − 1, ``labels[index] = v-labels`` (indexing and
    broadcasting as torch does them), the same per sample or refused."""
    if target.dim() == 0:
        raise UnsupportedOperationError(
            f"t[index] = value at {where} writes into a scalar; nrm keeps a batch dimension")
    batch = target.shape[0]
    region = target[index]
    if region.dim() == 0 or region.shape[0] != batch:
        raise UnsupportedOperationError(
            f"t[index] = value at {where} writes across samples, or across the rows one sample holds in dimension 0 "
            "(the index selects along the batch dimension); nrm does not read such writes: write along dimension 1 "
            "on (t[:, …] = value), or build the rows with torch.cat")
    if not derived:  # a constant: one copy per sample of the region it fills
        value = value.to(target.dtype).expand(region.shape).contiguous()
    elif value.dim() != region.dim() or value.shape[0] != batch:
        raise UnsupportedOperationError(
            f"t[index] = value at {where} writes an input-derived value of shape {tuple(value.shape)} into a region "
            f"of shape {tuple(region.shape)}; nrm reads a value with the same batch dimension first")
    n, nv = target.numel(), value.numel()
    if n + nv >= 2 ** 53:
        raise UnsupportedOperationError(
            f"t[index] = value at {where} writes {n + nv} elements; nrm labels at most 2^53")
    labels = torch.arange(n, dtype=torch.float64, device=target.device).reshape(target.shape)
    labels[index] = (torch.arange(nv, dtype=torch.float64, device=target.device) + n).reshape(value.shape)
    src = labels.reshape(batch, -1).long()
    ns, nvs = n // batch, nv // batch
    b = torch.arange(batch, device=target.device).unsqueeze(1)
    from_t = src < n
    local = torch.where(from_t, src - b * ns, src - n - b * nvs + ns)
    inside = torch.where(from_t, (local >= 0) & (local < ns), (local >= ns) & (local < ns + nvs))
    if not bool(inside.all()) or not bool((local == local[:1]).all()):
        raise UnsupportedOperationError(
            f"t[index] = value at {where} moves values between samples or writes differently per sample; nrm keeps "
            "every sample apart and reads one index map for all of them")
    return local[0].contiguous(), value


def recording() -> bool:
    """Whether a capture is recording on this thread (its mode is active)."""
    return any(isinstance(mode, _Recorder) for mode in torch.overrides._get_current_function_mode_stack())


def _always(*_args) -> bool:
    return True


def _key(func: Any) -> Any:
    """What identifies a function: a property getter by its descriptor."""
    owner = getattr(func, "__self__", None)
    if getattr(func, "__name__", None) == "__get__" and type(owner).__name__ == "getset_descriptor":
        return owner
    return func


def _flat(out: Any) -> list:
    """A module's output as a list of tensors (or None), nested tuples flattened (nn.LSTM's
    ``(output, (h_n, c_n))``)."""
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    return [out]


def _tensors_only(out: Any) -> bool:
    """Whether a call's result carries no values into Python (tensors, None, or text)."""
    if isinstance(out, (torch.Tensor, str, torch.dtype, torch.device, torch.Size)) or out is None:
        return True
    if isinstance(out, (list, tuple)):
        return all(isinstance(o, torch.Tensor) for o in out)
    return False


_INPLACE_EXCEPTIONS = {"requires_grad_", "share_memory_", "retain_grad", "record_stream"}


def _inplace_target(func, args, kwargs) -> torch.Tensor | None:
    """The tensor an in-place call changes: ``t.add_(…)``, ``t[i] = v``, ``out=``."""
    name = getattr(func, "__name__", "")
    if "out" in kwargs and isinstance(kwargs["out"], torch.Tensor):
        return kwargs["out"]
    if name == "__setitem__" or (name.endswith("_") and not name.endswith("__") and name not in _INPLACE_EXCEPTIONS) \
            or name in ("__iadd__", "__isub__", "__imul__", "__itruediv__"):
        return args[0] if args and isinstance(args[0], torch.Tensor) else None
    if kwargs.get("inplace") is True or (name in _INPLACE_ARG and len(args) > _INPLACE_ARG[name]
                                         and args[_INPLACE_ARG[name]] is True):
        return args[0] if args and isinstance(args[0], torch.Tensor) else None
    return None


_INPLACE_ARG = {"relu": 1, "relu6": 1, "leaky_relu": 2, "hardtanh": 3, "elu": 2, "selu": 1, "celu": 2,
                "dropout": 3, "threshold": 3, "rrelu": 4, "hardswish": 1, "hardsigmoid": 1, "silu": 1, "mish": 1}
"""The position of the ``inplace`` argument of the functions of torch.nn.functional that take one."""


def capture(model: nn.Module, x: torch.Tensor, *, output: Callable[[Any], torch.Tensor] | None = None,
            kinds=None, check: bool | str = True) -> Captured:
    """Run ``model(x)`` once and record what it computes on ``x`` (see the module docstring).
    ``check`` is :func:`nrm.explain`'s (True, False or "full"): how often a module read through
    its definition is compared with the module's own output.

    ``x`` is copied first (the capture owns its input). ``output`` selects the tensor to
    explain when the model returns something else (a tuple, a dict, a ``ModelOutput``);
    by default the model must return one tensor. Raises
    :class:`~nrm.errors.DataDependentControlFlowError` for control flow on values,
    :class:`~nrm.errors.InPlaceViewError` for an in-place write through a view read
    afterwards, and :class:`~nrm.errors.ShapeError` when the model raises on this input.
    """

    check_mode(check)
    kinds = REGISTRY if kinds is None else kinds
    x = x.detach().clone()
    recorder = _Recorder(model, kinds, check)
    recorder.start(x)
    handles: list[RemovableHandle] = []
    try:
        handles.append(nn.modules.module.register_module_forward_pre_hook(recorder.pre_hook))
        handles.append(nn.modules.module.register_module_forward_hook(recorder.post_hook, with_kwargs=True,
                                                                      always_call=True))
        with torch.no_grad(), no_autocast(x), recorder:
            result = model(x)
    except NRMError:
        raise
    except Exception as error:
        if recorder.error is not None:
            raise recorder.error from None
        failed = recorder.failed or (model, "")
        at = f"{type(failed[0]).__name__} at '{failed[1]}'" if failed[1] else type(failed[0]).__name__
        raise ShapeError(f"model(x) raised {type(error).__name__} for an input of shape {tuple(x.shape)}, in {at} "
                         f"({user_location() or 'forward'}): {error}") from error
    finally:
        for h in handles:
            h.remove()
    if recorder.error is not None:  # raised inside forward() and swallowed by the model's code
        raise recorder.error
    selected = output(result) if output is not None else result
    if not isinstance(selected, torch.Tensor):
        raise UnsupportedOperationError(
            f"the model returns a {type(result).__name__}, not a tensor; pass output= to nrm.explain, a function "
            "that picks the tensor to explain from what the model returns (e.g. output=lambda out: out.logits)")
    entry = recorder.live.get(id(selected))
    if entry is None or entry[1] != selected._version:
        raise UnsupportedOperationError(
            "the tensor the model returns was not computed from its input by operations nrm could see (a constant, "
            "or the result of an operation outside torch's Python API, such as a C++ extension); nrm explains "
            "outputs computed from the input by torch operations")
    _name_functional_calls(recorder.calls, recorder.module_calls)
    _confine_masks(recorder.calls, entry[0])
    return Captured(model, recorder.input if recorder.input is not None else x, recorder.calls, entry[0],
                    selected, recorder.module_outputs,
                    [(w, t, v) for w, t, v in recorder.constants.values()])




def upcast(captured: Captured) -> Captured:
    """The record in its **widest floating dtype** (at least float32), in place, when it holds a
    narrower one: a bfloat16 or float16 model (explained in float32), or a model whose forward
    computes part of its values in another dtype than the rest (transformers' RMSNorm and eager
    softmax compute in float32 inside a bfloat16 or a float64 model: explained in float64 there).
    The input, every recorded value and every floating constant a call read (parameters, masks,
    position tables; one copy per tensor) are widened exactly — every number of a narrower
    floating dtype is a number of the wider one — so the kernels are built and the relevance
    accumulated in that dtype from the model's own values (``call.computed_in`` keeps the dtype a
    call computed in, for the map checks' tolerance and :meth:`nrm.engine.Engine._widened_pre`).
    A record in one dtype of at least float32 is returned unchanged."""
    held = {captured.input.dtype} | {t.dtype for call in captured.calls for t in call.outputs
                                     if t is not None and t.dtype in FLOATING}
    dtype = max(held | {torch.float32}, key=lambda d: torch.finfo(d).bits if d in FLOATING else 0)
    if held <= {dtype}:
        return captured
    copies: dict[int, torch.Tensor] = {}

    def narrower(d) -> bool:
        return d in FLOATING and d != dtype

    def widen(t):
        if not isinstance(t, torch.Tensor) or not narrower(t.dtype):
            return t
        if id(t) not in copies:
            copies[id(t)] = t.detach().to(dtype)
        return copies[id(t)]

    captured.input = widen(captured.input)
    for call in captured.calls:
        call.computed_in = next((t.dtype for t in call.outputs if t is not None and narrower(t.dtype)), None)
        call.outputs = [widen(t) for t in call.outputs]
        call.args, call.kwargs = _map(call.args, widen), _map(call.kwargs, widen)
        call.in_dtypes = [dtype if narrower(d) else d for d in call.in_dtypes]
    return captured


def _confine_masks(calls: list[Call], output: Value) -> None:
    """A value with −inf entries (a mask) is recorded as ``finfo.min``; that is the model's value
    only for a reader that maps both to the same thing — a softmax (exp(−∞) = exp(finfo.min − m) =
    0) or a further mask (``reads_masks``). Any other reader, or a masked model output, is refused
    (the call gets no kind and says why)."""
    why = ("reads a masked value (−inf, which nrm records as finfo.min): only a softmax or a further mask gives "
           "the same result for both; apply the mask right before the softmax")
    for call in calls:
        rows = getattr(call.kind, "mask_refusal", None)
        if rows is not None and call.inputs and call.inputs[0].node >= 0:
            v = call.inputs[0]
            why_rows = rows(call, calls[v.node].outputs[0 if v.item is None else v.item])
            if why_rows is not None:
                call.kind, call.refusal = None, why_rows
        if call.kind is None or getattr(call.kind, "reads_masks", False):
            continue
        if any(v.node >= 0 and calls[v.node].masked for v in call.inputs):
            call.kind, call.refusal = None, why
    if output.node >= 0 and calls[output.node].masked:
        calls[output.node].kind = None
        calls[output.node].refusal = ("returns −inf (a mask) as the model's output; nrm explains finite outputs and "
                                      "reads −inf only as a mask before a softmax")


def _name_functional_calls(calls: list[Call], module_calls: list[str]) -> None:
    """Name the calls that no module names as torch.fx would: the function's name, then
    ``_1``, ``_2``, … in the order they ran (``add``, ``add_1``, ``relu``, ``cat``); module
    names (also as fx writes them, dots as underscores) and "input"/"output" are taken."""

    used = {"input", "output"}
    for name in module_calls:
        used.add(name)
        used.add(name.replace(".", "_"))
    for call in calls:
        if call.name:
            used.add(call.name)
    counters: dict[str, int] = {}
    for call in calls:
        if call.name:
            continue
        base = base_name(call.func)
        i = counters.get(base, 0)
        name = base if i == 0 else f"{base}_{i}"
        while name in used:
            i += 1
            name = f"{base}_{i}"
        counters[base] = i + 1
        used.add(name)
        call.name = name


class no_autocast:
    """Disable autocast on the input's device for the capture: the measure is computed in
    the input's dtype (under ``torch.autocast`` a model would otherwise run in bfloat16
    or float16 and the measure with it)."""

    def __init__(self, where: torch.Tensor | torch.device):
        self.device = (where.device if isinstance(where, torch.Tensor) else torch.device(where)).type
        self.ctx = None

    def __enter__(self):
        if self.device in ("cpu", "cuda", "xpu", "mps"):
            try:
                self.ctx = torch.autocast(self.device, enabled=False)
            except RuntimeError:  # a device type without autocast support
                self.ctx = None
        if self.ctx is not None:
            self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False
