"""A torch model → its proper-FFNN view (NRM-SPEC §1).

Layers V_0 (the input), …, V_L. Each *producer* module makes a new layer: a linear map
(``Linear``, ``Conv1d``, ``Conv2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` — average
pooling is a linear neuron) or a winner-takes-all ``MaxPool2d``. Elementwise activations
(``ReLU``, ``LeakyReLU``) belong to their neuron; ``Flatten``, ``Identity`` and
``Dropout`` (eval) only rename it; ``BatchNorm1d/2d`` is folded into the linear map
before it. Every module name of the model therefore names a layer: the layer its
output belongs to.

The user's model is only read: weights are detached views, folded batch norms are new
tensors, no hook is registered and no mode is changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    NonFiniteError,
    TrainingModeError,
    UnsupportedModuleError,
)
from .linear import ConvMap, DenseMap, LinearMap, SumMap, adaptive_avgpool_map, avgpool_map

LINEAR_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d)
POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
NORM_MODULES = (nn.LocalResponseNorm,)  # a linear map at the input it reads (nrm.lrn)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)
ALIASES = (nn.Identity, nn.modules.dropout._DropoutNd, nn.Flatten)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
SUPPORTED = LINEAR_MODULES + POOL_MODULES + NORM_MODULES + ACTIVATIONS + ALIASES + BATCHNORMS + (nn.MaxPool2d,
                                                                                                 nn.Sequential)

SUPPORTED_NAMES = ", ".join(
    ["Linear", "Conv1d", "Conv2d", "ReLU", "LeakyReLU", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
     "LocalResponseNorm", "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d", "Identity", "Sequential"]
)


class Sum(nn.Module):
    """The addition of branches, z = Σ_i a^(i) (NRM-SPEC §1): a linear neuron with weights 1
    over the summands, to which any rule applies (LRP-0 splits in proportion to the
    summands). Key of a rule mapping: ``{nrm.Sum: rule}``. Never called; it only names
    the operation of a traced ``+``."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def extra_repr(self) -> str:
        return f"n={self.n}"


class Concat(nn.Module):
    """``torch.cat`` of branches along a per-sample dimension: the branches share a layer,
    and relevance goes back to each part unchanged (q = 1). Never called."""

    def __init__(self, dim: int, sizes: tuple[int, ...] = ()):
        super().__init__()
        self.dim, self.sizes = dim, sizes


class Reshape(nn.Module):
    """A traced ``view`` / ``reshape`` / ``flatten``: renames neurons, keeps the batch
    dimension. ``shape`` is the per-sample target shape (-1 allowed). Never called."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)


@dataclass
class Step:
    """One module (or traced operation) of the model, in forward order."""

    name: str
    module: nn.Module

    @property
    def kind(self) -> str:
        m = self.module
        if isinstance(m, LINEAR_MODULES + POOL_MODULES + NORM_MODULES + (Sum,)):
            return "linear"
        if isinstance(m, nn.MaxPool2d):
            return "maxpool"
        if isinstance(m, Concat):
            return "concat"
        if isinstance(m, ACTIVATIONS):
            return "activation"
        if isinstance(m, (nn.Flatten, Reshape)):
            return "reshape"
        return "alias"


@dataclass
class Block:
    """Layer ``index``: its producer (None for the input) and the steps that only act
    on its neurons (activations, reshapes, aliases) or fold into it (batch norm).

    ``inputs`` are the layers the producer reads (one, or several for a sum or a
    concatenation); in a sequential model it is the layer before. Layers are numbered in
    a topological order, so every input has a smaller index."""

    index: int
    producer: Step | None
    trailing: list[Step] = field(default_factory=list)
    batchnorms: list[Step] = field(default_factory=list)
    rule: object = None
    inputs: list[int] | None = None

    def __post_init__(self):
        if self.inputs is None:
            self.inputs = [] if self.producer is None else [self.index - 1]

    @property
    def name(self) -> str:
        return "input" if self.producer is None else self.producer.name

    @property
    def kind(self) -> str:
        """input, linear (a linear map or a sum), maxpool, concat, or pass (an
        activation or reshape that is a layer of its own because its input fans out:
        q(j|k) = δ_jk)."""
        if self.producer is None:
            return "input"
        k = self.producer.kind
        return k if k in ("linear", "maxpool", "concat") else "pass"


def _leaves(module: nn.Module, prefix: str):
    if isinstance(module, nn.Sequential):
        for child_name, child in module.named_children():
            yield from _leaves(child, f"{prefix}.{child_name}" if prefix else child_name)
        return
    if not isinstance(module, SUPPORTED) or any(True for _ in module.children()):
        where = f"'{prefix}'" if prefix else "the top level"
        detail = (
            "it is a container whose forward() nrm cannot read; rebuild it as nn.Sequential"
            if any(True for _ in module.children())
            else "it has no propagation rule in nrm"
        )
        raise UnsupportedModuleError(
            f"{type(module).__name__} at {where} is not supported: {detail}. Supported modules: {SUPPORTED_NAMES}."
        )
    yield prefix, module


def check_eval_mode(model: nn.Module) -> None:
    """nrm refuses models in training mode (dropout and batch norm would then be
    random or batch-dependent); it never switches the mode itself."""
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:5]) + (", …" if len(training) > 5 else "")
        raise TrainingModeError(
            f"the model is in training mode ({shown}); call model.eval() before nrm.explain "
            "(nrm never changes the mode of your model)"
        )


class ProperFFNN:
    """The proper-FFNN view of a model: an ``nn.Sequential`` (nested Sequentials allowed)
    is read module by module; any other module is traced with ``torch.fx`` into layers
    with fan-outs, sums and concatenations (:mod:`nrm.trace`)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._maps: dict[int, LinearMap] = {}
        if not _plain_sequential(model):
            from .trace import trace_blocks

            self.blocks = trace_blocks(model, self._attach_batchnorm)
            self.consumers = _consumers(self.blocks)
            return
        blocks = [Block(0, None)]
        for name, module in _leaves(model, ""):
            step = Step(name, module)
            kind = step.kind
            if kind in ("linear", "maxpool"):
                blocks.append(Block(len(blocks), step))
            elif isinstance(module, BATCHNORMS):
                self._attach_batchnorm(blocks[-1], step)
            else:
                blocks[-1].trailing.append(step)
        self.blocks = blocks
        self.consumers = _consumers(blocks)

    @staticmethod
    def _attach_batchnorm(block: Block, step: Step) -> None:
        producer = block.producer
        clean = all(s.kind == "alias" and not isinstance(s.module, nn.Flatten) for s in block.trailing)
        if producer is None or not isinstance(producer.module, LINEAR_MODULES) or not clean:
            raise UnsupportedModuleError(
                f"{type(step.module).__name__} at '{step.name}' does not directly follow a Linear or Conv layer, "
                "so it cannot be folded into one; place it right after its Linear/Conv layer"
            )
        if not step.module.track_running_stats or step.module.running_mean is None:
            raise UnsupportedModuleError(
                f"{type(step.module).__name__} at '{step.name}' has no running statistics "
                "(track_running_stats=False), so it depends on the batch; it cannot be folded"
            )
        block.batchnorms.append(step)
        block.trailing.append(step)

    # -- what the rest of nrm asks ------------------------------------------------
    @property
    def depth(self) -> int:
        """L: the index of the output layer."""
        return len(self.blocks) - 1

    def linear_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.kind == "linear"]

    @property
    def sequential(self) -> bool:
        """Whether every layer reads only the layer before it (no branches)."""
        return all(b.inputs == [b.index - 1] for b in self.blocks[1:])

    def cut_below(self, l: int) -> int:
        """The highest layer ≤ l that no skip or parallel path passes (no copies): all the
        relevance of the walks is on its own neurons and its absorber. A sequential
        model's every layer is one."""
        if not hasattr(self, "_cuts"):  # the highest layer each edge spans, then the cut at or below every layer
            reach, cuts = 0, []
            for u in range(len(self.blocks)):
                cuts.append(u if reach <= u else cuts[-1])
                reach = max(reach, max(self.consumers[u], default=u))
            self._cuts = cuts
        return self._cuts[l]

    def ancestors(self, l: int) -> set[int]:
        """Every layer that layer ``l`` reads, directly or not."""
        seen, todo = set(), list(self.blocks[l].inputs)
        while todo:
            u = todo.pop()
            if u not in seen:
                seen.add(u)
                todo += self.blocks[u].inputs
        return seen

    def tensors(self):
        """(path, tensor) of every parameter and buffer the view reads."""
        for block in self.blocks[1:]:
            for step in [block.producer] + block.batchnorms:
                for pname, t in list(step.module.named_parameters(recurse=False)) + list(
                    step.module.named_buffers(recurse=False)
                ):
                    if t is not None and t.is_floating_point():
                        yield f"{step.name}.{pname}", t

    def check_input(self, x: torch.Tensor) -> None:
        """Dtype and device of the input and of every tensor read; finiteness of the input.

        Non-finite weights are caught during the forward pass instead: every weight
        meets at least one input, and NaN or Inf then reaches that layer's output
        (checked with one cheap reduction per layer), after which
        :meth:`raise_nonfinite` names the tensor."""
        if not isinstance(x, torch.Tensor):
            raise DtypeMismatchError(f"the input must be a torch.Tensor of shape (batch, ...), got {type(x).__name__}")
        if not x.is_floating_point():
            raise DtypeMismatchError(f"the input must be floating point (float32 or float64), got {x.dtype}")
        for path, t in self.tensors():
            if t.device != x.device:
                raise DeviceMismatchError(
                    f"'{path}' is on {t.device} but the input is on {x.device}; move both to one device "
                    f"(model.to({str(x.device)!r}) or x.to({str(t.device)!r}))"
                )
            if t.dtype != x.dtype:
                raise DtypeMismatchError(
                    f"'{path}' is {t.dtype} but the input is {x.dtype}; convert one of them "
                    "(model.double() with x.double(), or model.float() with x.float())"
                )
        if not all_finite(x):
            bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero().flatten().tolist()
            raise NonFiniteError(f"the input contains NaN or Inf (samples {bad}); clean the input first")

    def raise_nonfinite(self, layer_name: str) -> None:
        """Called when a layer's output is not finite: name the culprit tensor, or the overflow."""
        for path, t in self.tensors():
            if not all_finite(t):
                raise NonFiniteError(f"'{path}' contains NaN or Inf; the model's weights must be finite")
        raise NonFiniteError(
            f"the activations overflow to Inf/NaN at layer '{layer_name}' although input and weights are finite; "
            "use float64 or rescale the input"
        )

    def linear_map(self, block: Block, in_shape: tuple[int, ...], dtype, device, a=None) -> LinearMap:
        """The (batch-norm folded) linear map of a block, built for the input shape; a local
        response normalization's map is built anew for its input ``a`` (:func:`nrm.lrn.lrn_map`)."""
        if isinstance(block.producer.module, NORM_MODULES):
            from .lrn import lrn_forward

            return lrn_forward(block.producer.module, a, block.rule).map
        if block.index not in self._maps:
            self._maps[block.index] = self._build_map(block, tuple(in_shape), dtype, device)
        return self._maps[block.index]

    def _build_map(self, block: Block, in_shape, dtype, device) -> LinearMap:
        m, name = block.producer.module, block.producer.name
        if isinstance(m, Sum):
            lmap = SumMap(m.n, dtype, device)
        elif isinstance(m, nn.Linear):
            if block.batchnorms and len(in_shape) != 1:
                raise UnsupportedModuleError(
                    f"{type(block.batchnorms[0].module).__name__} at '{block.batchnorms[0].name}' follows the Linear "
                    f"at '{name}', which acts on an input of shape {tuple(in_shape)}: the batch norm then normalizes "
                    "dim 1, not the Linear's output features, so it cannot be folded into it. Flatten before the "
                    "Linear, or remove the batch norm"
                )
            lmap: LinearMap = DenseMap(m.weight.detach(), None if m.bias is None else m.bias.detach())
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            if m.padding_mode != "zeros":
                raise UnsupportedModuleError(
                    f"{type(m).__name__} at '{name}' uses padding_mode={m.padding_mode!r}; only 'zeros' padding "
                    "has padding positions that are not neurons. Use padding_mode='zeros'"
                )
            padding = m.padding
            if isinstance(padding, str):
                padding = self._string_padding(m, name)
            lmap = ConvMap(m.weight.detach(), None if m.bias is None else m.bias.detach(),
                           m.stride, padding, m.dilation, m.groups)
        elif isinstance(m, nn.AvgPool2d):
            k, s, p = (_pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding))
            if m.ceil_mode or (not m.count_include_pad and any(p)):
                raise UnsupportedModuleError(
                    f"AvgPool2d at '{name}' uses ceil_mode=True or count_include_pad=False with padding; its window "
                    "weights then vary by position. Use ceil_mode=False and count_include_pad=True"
                )
            lmap = avgpool_map(in_shape[0], k, s, p, dtype, device, m.divisor_override)
        else:  # AdaptiveAvgPool2d
            out = _pair(m.output_size)
            hw = tuple(in_shape[-2:])
            out = tuple(hw[i] if out[i] is None else out[i] for i in range(2))
            lmap = adaptive_avgpool_map(in_shape[0], hw, out, dtype, device)
        for bn in block.batchnorms:
            lmap = _fold_batchnorm(lmap, bn.module)
        return lmap

    @staticmethod
    def _string_padding(m, name):
        if m.padding == "valid":
            return (0,) * (m.weight.dim() - 2)
        span = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        if any(s % 2 for s in span):
            raise UnsupportedModuleError(
                f"{type(m).__name__} at '{name}' uses padding='same' with an even kernel span, which pads "
                "asymmetrically; give explicit integer padding"
            )
        return tuple(s // 2 for s in span)


def _plain_sequential(model: nn.Module) -> bool:
    """An nn.Sequential whose modules are all torch.nn's own (nested Sequentials allowed):
    read module by module. Anything else is traced."""
    if not isinstance(model, nn.Sequential):
        return False
    return all(isinstance(m, nn.Sequential)
               or (m.__module__.startswith("torch.nn") and not any(True for _ in m.children()))
               for m in model.modules())


def _consumers(blocks: list[Block]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {b.index: [] for b in blocks}
    for b in blocks:
        for u in b.inputs:
            out[u].append(b.index)
    return out


def all_finite(t: torch.Tensor) -> bool:
    """Whether every element is finite; a finite sum proves it at the cost of one reduction."""
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _fold_batchnorm(lmap: LinearMap, bn: nn.Module) -> LinearMap:
    """BN(z) = γ (z − μ) / √(σ² + eps) + β  ⇒  W' = s W, b' = s (b − μ) + β, s = γ / √(σ² + eps)."""
    std = torch.sqrt(bn.running_var.detach() + bn.eps)
    scale = (bn.weight.detach() if bn.weight is not None else torch.ones_like(std)) / std
    shift = bn.bias.detach() if bn.bias is not None else torch.zeros_like(std)
    weight = lmap.weight * scale.view((-1,) + (1,) * (lmap.weight.dim() - 1))
    bias = lmap.bias if lmap.bias is not None else torch.zeros_like(std)
    bias = (bias - bn.running_mean.detach()) * scale + shift
    if isinstance(lmap, DenseMap):
        return DenseMap(weight, bias)
    return ConvMap(weight, bias, lmap.stride, lmap.padding, lmap.dilation, lmap.groups)
