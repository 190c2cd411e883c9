"""Any model → layers of the proper FFNN, through ``torch.fx`` (NRM-SPEC §1).

The model is traced symbolically (``torch.fx.symbolic_trace``: nothing is computed, no
hook runs, the model is not changed). Each operation of the trace becomes:

* a **producer** — a new layer: ``Linear``, ``Conv1d``, ``Conv2d``, ``AvgPool2d``,
  ``AdaptiveAvgPool2d`` (linear maps), ``MaxPool2d`` (winner takes all), a **sum** of
  branches (``a + b``, ``torch.add``, ``+=``: a linear neuron with weights 1, rule key
  :class:`nrm.Sum`), or a **concatenation** (``torch.cat``: the branches share a layer);
* a **trailing step** of the layer it reads — an activation (``ReLU``, ``LeakyReLU``,
  ``F.relu``, ``torch.relu``, ``.relu()``), a reshape (``Flatten``, ``torch.flatten``,
  ``.view``, ``.reshape``, ``.flatten``), an alias (``Identity``, ``Dropout``) or a batch
  norm folded into the ``Linear`` / ``Conv`` before it — when that layer's value has no
  other reader;
* a **pass layer** (q(j|k) = δ_jk) — the same activation or reshape when the value it
  reads also goes elsewhere (an activation on a fanned-out tensor).

Fan-out needs nothing more: relevance that reaches a value from several readers adds up
there (the duplication neurons of §1, q(u | u^(i)) = 1), and a skip path's relevance waits
in the copies of the proper layers it passes (never materialized; the engine holds it as
pending relevance). Layers are numbered in the trace's topological order.

Names: a module's path for its first call (``"layer1.0.conv1"``), the fx node name for a
later call of the same module and for functional operations (``"add"``, ``"add_1"``,
``"cat"``, ``"relu_1"``). Anything else is refused with an error that names the operation.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .errors import UnsupportedOperationError
from .graph import (
    ACTIVATIONS,
    ALIASES,
    BATCHNORMS,
    LINEAR_MODULES,
    NORM_MODULES,
    POOL_MODULES,
    SUPPORTED_NAMES,
    Block,
    Concat,
    Reshape,
    Step,
    Sum,
)

ADD = {operator.add, operator.iadd, torch.add}
CAT = {torch.cat, torch.concat} if hasattr(torch, "concat") else {torch.cat}
RELU = {F.relu, torch.relu}
FLATTEN = {torch.flatten}
METHOD_RESHAPES = {"view", "reshape", "flatten"}
SUPPORTED_OPS = ("a + b / torch.add / +=, torch.cat, F.relu / torch.relu / .relu(), "
                 "torch.flatten / .flatten / .view / .reshape")


class _Tracer(fx.Tracer):
    """Leaves are torch.nn's own modules; a user's container is traced through."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return m.__module__.startswith("torch.nn") and not isinstance(m, nn.Sequential)

    def call_module(self, m, forward, args, kwargs):
        # a container is traced through its forward() itself, never through m(...), which
        # would run the user's hooks
        return super().call_module(m, lambda *a, **k: m.forward(*a, **k), args, kwargs)


def trace_blocks(model: nn.Module, attach_batchnorm) -> list[Block]:
    try:
        graph = _Tracer().trace(model)
    except Exception as error:  # fx raises many kinds (TraceError, TypeError, …): name them all
        raise UnsupportedOperationError(
            f"{type(model).__name__} cannot be traced by torch.fx ({type(error).__name__}: {error}); nrm reads "
            "models whose forward() has no data-dependent control flow. Rewrite that part, or give an nn.Sequential"
        ) from error
    return _Builder(model, graph, attach_batchnorm).build()


class _Builder:
    def __init__(self, model, graph, attach_batchnorm):
        self.model, self.graph, self.attach_batchnorm = model, graph, attach_batchnorm
        self.blocks: list[Block] = []
        self.where: dict[fx.Node, int] = {}  # tensor node → the layer holding its value
        self.tip: dict[int, fx.Node] = {}  # layer → the node its value is (after trailing steps)
        self.used_names: set[str] = set()
        self.called: set[str] = set()

    def build(self) -> list[Block]:
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedOperationError(
                f"nrm explains models with one input tensor; this forward() takes {len(placeholders)} "
                f"({', '.join(n.name for n in placeholders)})"
            )
        for node in self.graph.nodes:
            getattr(self, f"_{node.op}")(node)
        return self.blocks

    # -- node kinds ----------------------------------------------------------------------
    def _placeholder(self, node):
        self.blocks.append(Block(0, None, inputs=[]))
        self._set(node, 0)

    def _output(self, node):
        out = node.args[0]
        if not isinstance(out, fx.Node) or out not in self.where:
            raise UnsupportedOperationError(
                f"the model returns {out!r}; nrm explains models that return one tensor"
            )
        l = self.where[out]
        if l != len(self.blocks) - 1 or self.tip[l] is not out:
            raise UnsupportedOperationError(
                f"the model's output '{out.name}' is not its last operation; operations after it "
                "do not reach the output. Remove them"
            )

    def _get_attr(self, node):
        raise UnsupportedOperationError(
            f"'{node.target}' is read as a tensor inside forward() (node '{node.name}'); nrm reads parameters "
            "only through modules. Wrap that computation in a module (e.g. nn.Linear)"
        )

    def _call_module(self, node):
        module = self.model.get_submodule(node.target)
        name = node.target if node.target not in self.called else node.name
        self.called.add(node.target)
        if isinstance(module, LINEAR_MODULES + POOL_MODULES + NORM_MODULES + (nn.MaxPool2d,)):
            self._producer(node, Step(self._name(name), module), [self._input(node, 0)])
        elif isinstance(module, BATCHNORMS):
            self._batchnorm(node, Step(self._name(name), module))
        elif isinstance(module, ACTIVATIONS + ALIASES):
            self._elementwise(node, Step(self._name(name), module))
        else:
            raise UnsupportedOperationError(
                f"{type(module).__name__} at '{node.target}' has no propagation rule in nrm. Supported modules: "
                f"{SUPPORTED_NAMES}; supported operations: {SUPPORTED_OPS}"
            )

    def _call_function(self, node):
        fn = node.target
        if fn in ADD:
            self._sum(node)
        elif fn in CAT:
            self._cat(node)
        elif fn in RELU:  # inplace= makes no difference to a value nrm computes itself
            self._elementwise(node, Step(self._name(node.name), nn.ReLU()))
        elif fn in FLATTEN:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if start != 1:
                raise UnsupportedOperationError(
                    f"torch.flatten at '{node.name}' uses start_dim={start}; nrm keeps the batch dimension, "
                    "use torch.flatten(x, 1)"
                )
            self._elementwise(node, Step(self._name(node.name), nn.Flatten(start, end)))
        elif fn in (getattr, operator.getitem) and self._is_meta(node):
            return  # x.shape / x.size(0): evaluated where a reshape reads it
        else:
            raise UnsupportedOperationError(
                f"the operation {_fn_name(fn)} at node '{node.name}' has no propagation rule in nrm (a product "
                f"or gate needs a rule that says where relevance goes). Supported operations: {SUPPORTED_OPS}; "
                f"supported modules: {SUPPORTED_NAMES}"
            )

    def _call_method(self, node):
        if node.target == "size":
            return  # evaluated where a reshape reads it
        if node.target in ("relu", "relu_"):
            self._elementwise(node, Step(self._name(node.name), nn.ReLU()))
        elif node.target in METHOD_RESHAPES:
            self._elementwise(node, Step(self._name(node.name), Reshape(self._shape_of(node))))
        elif node.target in ("add", "add_"):
            self._sum(node)
        else:
            raise UnsupportedOperationError(
                f"the method .{node.target}() at node '{node.name}' has no propagation rule in nrm. Supported "
                f"operations: {SUPPORTED_OPS}; supported modules: {SUPPORTED_NAMES}"
            )

    # -- building ------------------------------------------------------------------------
    def _producer(self, node, step, inputs):
        block = Block(len(self.blocks), step, inputs=inputs)
        self.blocks.append(block)
        self._set(node, block.index)

    def _batchnorm(self, node, step):
        src = node.args[0]
        l = self.where.get(src)
        block = self.blocks[l] if l is not None else None
        if block is None or self.tip[l] is not src or len(src.users) != 1:
            raise UnsupportedOperationError(
                f"{type(step.module).__name__} at '{step.name}' does not directly follow a Linear or Conv layer whose "
                "output goes nowhere else, so it cannot be folded into it; place it right after its Linear/Conv layer"
            )
        self.attach_batchnorm(block, step)
        self.tip[l] = node
        self.where[node] = l

    def _elementwise(self, node, step):
        src = node.args[0]
        l = self._input(node, 0)
        if self.tip[l] is src and len(src.users) == 1:
            self.blocks[l].trailing.append(step)
            self.tip[l] = node
            self.where[node] = l
        else:  # the value fans out (or is the input): a layer of its own, q = δ
            self._producer(node, step, [l])

    def _sum(self, node):
        args = list(node.args) + [v for k, v in node.kwargs.items() if k not in ("alpha",)]
        if "alpha" in node.kwargs or not all(isinstance(a, fx.Node) and a in self.where for a in args):
            raise UnsupportedOperationError(
                f"the addition at node '{node.name}' ({_fn_name(node.target)}) adds a constant or a scaled term "
                f"({[a if not isinstance(a, fx.Node) else a.name for a in args]}); nrm reads sums of tensors "
                "computed by the model (residual connections). Fold constants into a bias of a layer"
            )
        self._producer(node, Step(self._name(node.name), Sum(len(args))), [self._input(node, i)
                                                                           for i in range(len(args))])

    def _cat(self, node):
        parts = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(parts, (list, tuple)) or not all(isinstance(p, fx.Node) and p in self.where for p in parts):
            raise UnsupportedOperationError(f"torch.cat at node '{node.name}' concatenates something other than "
                                            "tensors computed by the model")
        if dim == 0:
            raise UnsupportedOperationError(f"torch.cat at node '{node.name}' concatenates along the batch dimension")
        inputs = [self.where[p] for p in parts]
        self._producer(node, Step(self._name(node.name), Concat(dim)), inputs)

    # -- helpers ---------------------------------------------------------------------------
    def _set(self, node, l):
        self.where[node] = l
        self.tip[l] = node

    def _input(self, node, i) -> int:
        arg = node.args[i]
        if not isinstance(arg, fx.Node) or arg not in self.where:
            raise UnsupportedOperationError(
                f"node '{node.name}' reads {arg!r}, which is not a tensor computed by the model"
            )
        return self.where[arg]

    def _name(self, name: str) -> str:
        if name in self.used_names or name in ("input", "output"):
            name = f"{name}_{len(self.blocks)}"
        self.used_names.add(name)
        return name

    @staticmethod
    def _is_meta(node) -> bool:
        src = node.args[0]
        return isinstance(src, fx.Node) and (
            (src.op == "call_method" and src.target == "size")
            or (node.target is getattr and node.args[1] == "shape")
            or (src.op == "call_function" and src.target is getattr)
        )

    def _shape_of(self, node) -> tuple[int, ...]:
        """The per-sample target shape of a traced view / reshape / flatten."""
        x = node.args[0]
        if node.target == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1 or (len(node.args) > 2 and node.args[2] not in (-1,)):
                raise UnsupportedOperationError(
                    f".flatten() at '{node.name}' must keep the batch dimension: use x.flatten(1)"
                )
            return (-1,)
        dims = node.args[1:]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if not dims or not _is_batch(dims[0], x):
            raise UnsupportedOperationError(
                f".{node.target}() at '{node.name}' must keep the batch dimension first "
                f"(x.{node.target}(x.size(0), …) or x.{node.target}(-1, …) with the batch first); got {dims}"
            )
        rest = []
        for d in dims[1:]:
            if not isinstance(d, int):
                raise UnsupportedOperationError(
                    f".{node.target}() at '{node.name}' takes a shape computed from tensors ({d}); give the "
                    "per-sample sizes as integers (or -1)"
                )
            rest.append(d)
        return tuple(rest)


def _is_batch(d, x) -> bool:
    """x.size(0), x.shape[0] or -1 with the other sizes fixed names the batch dimension."""
    if isinstance(d, int):
        return d == -1
    if isinstance(d, fx.Node):
        if d.op == "call_method" and d.target == "size" and d.args[0] is x:
            return len(d.args) > 1 and d.args[1] == 0
        if d.op == "call_function" and d.target is operator.getitem and d.args[1] == 0:
            src = d.args[0]
            return isinstance(src, fx.Node) and src.target is getattr and src.args[0] is x
    return False


def _fn_name(fn) -> str:
    mod = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__name__", repr(fn))
    return f"{mod}.{name}" if mod and mod != "_operator" else f"operator.{name}"
