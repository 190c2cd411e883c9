"""Python source that rebuilds a case: model, input, rules and events.

A counterexample is only useful if a person can paste it and see the failure again. Every
value a property test draws — an ``nn.Sequential`` with its exact weights, an input
tensor, a rule or rule assignment, an event — is written here as an expression that
rebuilds it *exactly*: floats are written with :func:`repr`, which round-trips every
float64 bit for bit, and modules are rebuilt by the small constructors below
(:func:`linear`, :func:`conv2d`, :func:`batchnorm2d`, …) that take their weights as
nested lists.

    w = Writer()
    w.expr(model)      # "nn.Sequential(linear([[1.0, -0.5]], [0.25]), nn.ReLU(), …)"
    w.imports          # the import lines that expression needs

Only :mod:`torch` and :mod:`nrm` are needed to run the code, plus this module for the
module constructors.
"""

from __future__ import annotations

import base64
import importlib.util
import math
import pickle
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch
from torch import nn

import nrm
from nrm.engine import Engine
from nrm.events import Atom, Event
from nrm.graph import ProperFFNN
from nrm.layers import REGISTRY
from nrm.presets import FIRST, RuleMap
from nrm.rules import Rule
from nrm_verify.properties.loader import FILE_MODULES, load_object  # noqa: F401  (generated programs import load_object from here)

DTYPE = torch.float64


# -- module constructors used by the generated code -------------------------------------------
def _tensor(values, dtype=DTYPE) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def _set(module: nn.Module, **tensors) -> nn.Module:
    with torch.no_grad():
        for name, values in tensors.items():
            if values is None:
                continue
            target = getattr(module, name)
            value = _tensor(values).reshape(target.shape)
            target.copy_(value)
    return module.eval()


def linear(weight: Sequence, bias: Sequence | None = None) -> nn.Linear:
    """``nn.Linear`` (float64, eval) with the given weight (out × in) and bias."""
    w = _tensor(weight)
    if w.dim() != 2:
        raise ValueError(f"linear() takes a weight of shape (out, in), got {tuple(w.shape)}")
    m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=DTYPE)
    return _set(m, weight=w.tolist(), bias=bias)


def _conv(cls, weight, bias, stride, padding, dilation, groups):
    w = _tensor(weight)
    m = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias is not None, dtype=DTYPE)
    return _set(m, weight=w.tolist(), bias=bias)


def conv1d(weight: Sequence, bias: Sequence | None = None, *, stride=1, padding=0, dilation=1,
           groups: int = 1) -> nn.Conv1d:
    """``nn.Conv1d`` (float64, eval) with the given weight (out, in/groups, k) and bias."""
    return _conv(nn.Conv1d, weight, bias, stride, padding, dilation, groups)


def conv2d(weight: Sequence, bias: Sequence | None = None, *, stride=1, padding=0, dilation=1,
           groups: int = 1) -> nn.Conv2d:
    """``nn.Conv2d`` (float64, eval) with the given weight (out, in/groups, kh, kw) and bias."""
    return _conv(nn.Conv2d, weight, bias, stride, padding, dilation, groups)


def _batchnorm(cls, running_mean, running_var, weight, bias, eps):
    n = len(running_mean)
    m = cls(n, eps=eps, affine=weight is not None, dtype=DTYPE)
    return _set(m, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)


def batchnorm1d(running_mean: Sequence, running_var: Sequence, weight: Sequence | None = None,
                bias: Sequence | None = None, *, eps: float = 1e-5) -> nn.BatchNorm1d:
    """``nn.BatchNorm1d`` (float64, eval) with the given statistics and affine parameters."""
    return _batchnorm(nn.BatchNorm1d, running_mean, running_var, weight, bias, eps)


def batchnorm2d(running_mean: Sequence, running_var: Sequence, weight: Sequence | None = None,
                bias: Sequence | None = None, *, eps: float = 1e-5) -> nn.BatchNorm2d:
    """``nn.BatchNorm2d`` (float64, eval) with the given statistics and affine parameters."""
    return _batchnorm(nn.BatchNorm2d, running_mean, running_var, weight, bias, eps)


def combine(*terms: tuple[int, Event]) -> Event:
    """Σ coefficient · cylinder: any event of :mod:`nrm.events`, written term by term."""
    out = nrm.EMPTY
    for coefficient, cylinder in terms:
        out = out + Event({k: coefficient * v for k, v in cylinder.terms.items()})
    return out


def unpickle(data: str, what: str = "") -> Any:
    """The object pickled in base64 ``data`` (last resort for a value without a code form);
    ``what`` names its type for the reader of the program."""
    return pickle.loads(base64.b64decode(data))


# -- the writer -------------------------------------------------------------------------------
class Writer:
    """Turns values into Python expressions and collects the imports they need."""

    def __init__(self):
        self.imports: set[str] = set()

    def header(self) -> str:
        order = ["import torch", "from torch import nn", "import nrm", "from nrm import At"]
        first = [i for i in order if i in self.imports]
        rest = sorted(i for i in self.imports if i not in order)
        return "\n".join(first + rest)

    def expr(self, value: Any, indent: int = 0) -> str:
        """A Python expression that evaluates to ``value``."""
        if value is None or isinstance(value, (bool, str)):
            return repr(value)
        if isinstance(value, int):
            return repr(value)
        if isinstance(value, float):
            return float_code(value)
        if isinstance(value, Fraction):
            self.imports.add("from fractions import Fraction")
            return f"Fraction({value.numerator}, {value.denominator})"
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if isinstance(value, nn.Module):
            return self.module(value, indent)
        if isinstance(value, Rule):
            return self.rule(value)
        if isinstance(value, RuleMap):
            return self.rulemap(value)
        if isinstance(value, Event):
            return self.event(value)
        if value is FIRST:
            self.imports.add("import nrm")
            return "nrm.FIRST"
        if isinstance(value, type):
            return self.type_(value)
        if isinstance(value, (list, tuple)):
            items = [self.expr(v, indent) for v in value]
            if isinstance(value, tuple):
                return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
            return "[" + ", ".join(items) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{self.expr(k)}: {self.expr(v, indent)}" for k, v in value.items()) + "}"
        return self.pickled(value)

    # -- tensors and modules -------------------------------------------------------------
    def tensor(self, t: torch.Tensor) -> str:
        self.imports.add("import torch")
        t = t.detach().cpu()
        if t.dtype == torch.bool:
            return f"torch.tensor({t.tolist()!r}, dtype=torch.bool)"
        if t.is_floating_point():
            values = nested(t.to(torch.float64).tolist())
            return f"torch.tensor({values}, dtype=torch.{str(t.dtype).split('.')[-1]})"
        return f"torch.tensor({t.tolist()!r}, dtype=torch.{str(t.dtype).split('.')[-1]})"

    def _constructor(self, name: str) -> str:
        self.imports.add(f"from nrm_verify.properties.codegen import {name}")
        return name

    def module(self, m: nn.Module, indent: int = 0, top: bool = True) -> str:
        """The module as code; the outermost container gets ``.eval()`` (nrm needs eval mode)."""
        self.imports.add("from torch import nn")
        pad = "    " * (indent + 1)
        if isinstance(m, nn.Sequential):
            children = list(m.named_children())
            suffix = ".eval()" if top else ""
            if not children:
                return "nn.Sequential()" + suffix
            default = all(name == str(i) for i, (name, _) in enumerate(children))
            if default:
                body = ",\n".join(pad + self.module(c, indent + 1, False) for _, c in children)
                return f"nn.Sequential(\n{body},\n{'    ' * indent}){suffix}"
            self.imports.add("from collections import OrderedDict")
            body = ",\n".join(f"{pad}({name!r}, {self.module(c, indent + 1, False)})" for name, c in children)
            return f"nn.Sequential(OrderedDict([\n{body},\n{'    ' * indent}])){suffix}"
        if isinstance(m, nn.Linear):
            args = [nested(m.weight.detach().double().tolist())]
            if m.bias is not None:
                args.append(nested(m.bias.detach().double().tolist()))
            return f"{self._constructor('linear')}({', '.join(args)})"
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            if m.padding_mode != "zeros":
                return self.pickled(m)
            name = "conv1d" if isinstance(m, nn.Conv1d) else "conv2d"
            args = [nested(m.weight.detach().double().tolist())]
            if m.bias is not None:
                args.append(nested(m.bias.detach().double().tolist()))
            defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
            for key, default in defaults.items():
                v = getattr(m, key)
                v = v if isinstance(v, str) else (tuple(v) if isinstance(v, (tuple, list)) else v)
                flat = v if isinstance(v, (str, int)) else (v[0] if len(set(v)) == 1 else v)
                if flat != default:
                    args.append(f"{key}={flat!r}")
            return f"{self._constructor(name)}({', '.join(args)})"
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            name = "batchnorm1d" if isinstance(m, nn.BatchNorm1d) else "batchnorm2d"
            if m.running_mean is None:
                return self.pickled(m)
            args = [nested(m.running_mean.double().tolist()), nested(m.running_var.double().tolist())]
            if m.affine:
                args += [nested(m.weight.detach().double().tolist()), nested(m.bias.detach().double().tolist())]
            if m.eps != 1e-5:
                args.append(f"eps={float_code(m.eps)}")
            return f"{self._constructor(name)}({', '.join(args)})"
        if type(m) is nn.ReLU:
            return "nn.ReLU()"
        if type(m) is nn.LeakyReLU:
            return f"nn.LeakyReLU({float_code(m.negative_slope)})"
        if type(m) is nn.Identity:
            return "nn.Identity()"
        if type(m) is nn.Flatten:
            args = [] if (m.start_dim, m.end_dim) == (1, -1) else [str(m.start_dim), str(m.end_dim)]
            return f"nn.Flatten({', '.join(args)})"
        if isinstance(m, nn.modules.dropout._DropoutNd):
            return f"nn.{type(m).__name__}({float_code(m.p)})"
        if type(m) is nn.MaxPool2d:
            return (f"nn.MaxPool2d({m.kernel_size!r}, stride={m.stride!r}, padding={m.padding!r}, "
                    f"dilation={m.dilation!r}, ceil_mode={m.ceil_mode!r})")
        if type(m) is nn.AvgPool2d:
            return (f"nn.AvgPool2d({m.kernel_size!r}, stride={m.stride!r}, padding={m.padding!r}, "
                    f"ceil_mode={m.ceil_mode!r}, count_include_pad={m.count_include_pad!r}, "
                    f"divisor_override={m.divisor_override!r})")
        if type(m) is nn.AdaptiveAvgPool2d:
            return f"nn.AdaptiveAvgPool2d({m.output_size!r})"
        kind = REGISTRY.module_kind(m)  # a user's module with a declared kind may say how to write it
        code = getattr(kind, "code", None)
        if code is not None:
            text = code(m, self)
            if text:
                return text
        return self.pickled(m)

    # -- rules -------------------------------------------------------------------------------
    def rule(self, rule: Rule) -> str:
        cls = type(rule)
        if cls.__module__ == "nrm.rules":
            self.imports.add("import nrm")
            args = [self.expr(v) for v in rule.parameters().values()]
            args += [f"{k}={self.expr(v)}" for k, v in rule.conventions().items()]
            return f"nrm.rules.{cls.__name__}({', '.join(args)})"
        source = getattr(rule, "__nrm_source__", None)
        if isinstance(source, str):  # how the validator loaded it: the same call rebuilds it
            self.imports.add("from nrm_verify.validate.rules import load_rule")
            return f"load_rule({source!r})"
        access = self.class_access(cls)
        if access is not None:
            text = repr(rule)
            base = f"nrm.rules.{cls.__name__}("
            candidates = [text]
            if text.startswith(base):
                candidates.append(f"{cls.__name__}(" + text[len(base):])
            for candidate in candidates:
                try:
                    rebuilt = eval(candidate, {cls.__name__: cls, "nrm": nrm, "torch": torch, "nn": nn})  # noqa: S307
                except Exception:
                    continue
                if rebuilt == rule:
                    self.imports.add(access)
                    if candidate.startswith("nrm."):
                        self.imports.add("import nrm")
                    return candidate
        return self.pickled(rule)

    def class_access(self, cls: type) -> str | None:
        """The import line that gives ``cls`` its own name in fresh code, or None."""
        module = cls.__module__
        if module in FILE_MODULES:
            self.imports.add("from nrm_verify.properties.loader import load_object")
            return f"{cls.__name__} = load_object({str(FILE_MODULES[module]) + ':' + cls.__qualname__!r})"
        if module == "__main__" or "<locals>" in cls.__qualname__:
            return None
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return None
        return f"from {module} import {cls.__qualname__.split('.')[0]}" if "." not in cls.__qualname__ else None

    def rulemap(self, rmap: RuleMap) -> str:
        code = getattr(rmap, "code", None)
        if isinstance(code, str):
            self.imports.add("import nrm")
            return code
        self.imports.add("import nrm")
        args = [self.expr(rmap.default)]
        if rmap.by_name:
            args.append(f"by_name={self.expr(rmap.by_name)}")
        if rmap.by_type:
            args.append(f"by_type={self.expr(rmap.by_type)}")
        if rmap.first is not None:
            args.append(f"first={self.expr(rmap.first)}")
        if rmap.name:
            args.append(f"name={rmap.name!r}")
        return f"nrm.RuleMap({', '.join(args)})"

    def type_(self, t: type) -> str:
        if t.__module__.startswith("torch.nn") and getattr(nn, t.__name__, None) is t:
            self.imports.add("from torch import nn")
            return f"nn.{t.__name__}"
        access = self.class_access(t)
        if access is None:
            return self.pickled(t)
        self.imports.add(access)
        return t.__name__

    # -- events -------------------------------------------------------------------------------
    def event(self, event: Event) -> str:
        code = getattr(event, "code", None)
        if isinstance(code, str):
            self.imports.add("from nrm import At")
            if "OMEGA" in code:
                self.imports.add("import nrm")
            return code
        if event == nrm.OMEGA:
            self.imports.add("import nrm")
            return "nrm.OMEGA"
        if len(event.terms) == 1:
            (cyl, coefficient), = event.terms.items()
            if coefficient == 1:
                return self.cylinder(cyl)
        self._constructor("combine")
        terms = [f"({c}, {self.cylinder(cyl)})" for cyl, c in event.terms.items()]
        return f"combine({', '.join(terms)})"

    def cylinder(self, cylinder) -> str:
        if not cylinder:
            self.imports.add("import nrm")
            return "nrm.OMEGA"
        return " & ".join(self.atom(a) for a in sorted(cylinder, key=repr))

    def atom(self, atom: Atom) -> str:
        self.imports.add("from nrm import At")
        args = [repr(atom.layer)]
        if atom.selector in ("index", "channels"):
            args.append(f"{atom.selector}={list(atom.values)!r}")
        elif atom.selector == "none":
            args.append("index=[]")
        elif atom.selector == "mask":
            args.append(f"mask={self.tensor(atom.mask)}")
        if atom.absorber:
            args.append("absorber=True")
        if atom.parallel:
            args.append("parallel=True")
        text = f"At({', '.join(args)})"
        return f"(~{text})" if atom.negated else text

    def pickled(self, value: Any) -> str:
        self.imports.add("from nrm_verify.properties.codegen import unpickle")
        data = base64.b64encode(pickle.dumps(value)).decode("ascii")
        return f"unpickle({data!r}, {type(value).__name__!r})"


def float_code(v: float) -> str:
    """repr round-trips a float64 exactly; non-finite values need a call."""
    v = float(v)
    if math.isfinite(v):
        return repr(v)
    return f"float({repr(v)!r})"


def nested(values) -> str:
    """A (nested) list of floats as source, every float exact."""
    if isinstance(values, list):
        return "[" + ", ".join(nested(v) for v in values) + "]"
    return float_code(values)


def expression(value: Any) -> tuple[str, str]:
    """(the import lines, an expression) that rebuild ``value``."""
    w = Writer()
    text = w.expr(value)
    return w.header(), text


def neurons(model: nn.Module, x: torch.Tensor) -> int:
    """How many real neurons the proper FFNN of ``model`` has at the input shape of ``x``
    (every layer, the input included): the size of a counterexample."""

    engine = Engine(ProperFFNN(model, x[:1]))
    return sum(math.prod(s) for s in engine.shape.values())


__all__ = ["Writer", "expression", "float_code", "nested", "linear", "conv1d", "conv2d", "batchnorm1d",
           "batchnorm2d", "combine", "load_object", "unpickle", "neurons"]
