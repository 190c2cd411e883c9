"""Rules and presets written as text — the one parser for every command and function that
takes them (``nrm-verify explain --rules``, ``check-rule`` / ``check --rule``, snapshot
explainers ``nrm:…``):

    parse_call("Epsilon(1e-6)")                  # ("Epsilon", (1e-06,), {})
    builtin("EpsilonGammaBox(-2, 2)")            # a preset of nrm.presets.PRESETS (a RuleMap)
    builtin("Gamma(gamma=0.25)")                 # a rule of nrm.rules.RULES
    builtin("EpsilonGammaBox", x=x)              # its box defaults to [min x, max x]
    user_rule("mypkg.rules:MyRule(0.5)")         # a rule of your own: module or path/to/file.py

Arguments are Python literals only (numbers, strings, lists, …: ``ast.literal_eval``),
never evaluated code. Every problem raises :class:`RuleSpecError` naming the spec and what
would be valid; callers turn it into their own error (a usage error, an invalid rule).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from nrm.presets import PRESETS
from nrm.rules import RULES, Rule
from nrm_verify.properties.loader import load_object


class RuleSpecError(ValueError):
    """A rule or preset spec that cannot be read (the message says why and what is valid)."""


def parse_call(text: str, *, dotted: bool = False) -> tuple[str, tuple, dict]:
    """``"Name"`` or ``"Name(literal, …, key=literal)"`` → (name, args, kwargs).
    ``dotted`` admits ``"module_attr.Name(…)"`` (a name inside a module)."""
    if not isinstance(text, str) or not text.strip():
        raise RuleSpecError(f"expected a name or a call such as Epsilon(1e-6), got {text!r}")
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise RuleSpecError(f"{text!r} is not a name or a call with literal arguments: {e.msg}") from None
    args, kwargs = (), {}
    if isinstance(node, ast.Call):
        try:
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg is not None}
        except ValueError:
            raise RuleSpecError(f"{text!r}: only literal arguments (numbers, strings, lists…) can be given") from None
        if any(k.arg is None for k in node.keywords):
            raise RuleSpecError(f"{text!r}: **kwargs cannot be given; name each argument")
        node = node.func
    if isinstance(node, ast.Name) or (dotted and isinstance(node, ast.Attribute)):
        return ast.unparse(node), args, kwargs
    raise RuleSpecError(f"{text!r} is not a name or a call with literal arguments")


def names() -> str:
    """The built-in names, for messages."""
    return f"presets: {', '.join(PRESETS)}; rules: {', '.join(sorted(RULES))}"


def builtin(text: str, *, x: Any = None) -> Rule | Any:
    """A preset of :data:`nrm.presets.PRESETS` or a rule of :data:`nrm.rules.RULES` from
    ``"Name"`` or ``"Name(literal args)"``. ``EpsilonGammaBox`` without arguments takes the
    box [min x, max x] of the input ``x`` (required then)."""
    name, args, kwargs = parse_call(text)
    if name in PRESETS:
        factory = PRESETS[name]
        if name == "EpsilonGammaBox" and not args and not kwargs:
            if x is None:
                raise RuleSpecError(f"{text!r}: give the box, e.g. EpsilonGammaBox(-2.0, 2.0)")
            args = (float(x.min()), float(x.max()))
    elif name in RULES:
        factory = RULES[name]
    else:
        raise RuleSpecError(f"{text!r}: unknown name {name!r}; {names()}")
    try:
        return factory(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 — a rule's parameter check: the user's values
        raise RuleSpecError(f"{name}({_args_text(args, kwargs)}) raised {type(e).__name__}: "
                            f"{' '.join(str(e).split())}") from None


def user_rule(spec: str) -> Rule:
    """A rule of your own from ``"package.module:RuleClass"`` (instantiated without
    arguments), ``"package.module:factory()"``, ``"package.module:RuleClass(0.5, eps=1e-3)"``
    or ``"path/to/file.py:…"`` in any of these forms. The rule remembers where it came
    from (``__nrm_source__``), so that counterexample programs load it the same way."""
    if not isinstance(spec, str) or ":" not in spec:
        raise RuleSpecError(f"expected 'package.module:RuleClass' or 'path/to/file.py:RuleClass', got {spec!r}")
    where, _, what = spec.rpartition(":")
    name, args, kwargs = parse_call(what, dotted=True)
    is_call = "(" in what
    try:
        obj = load_object(f"{where}:{name}")
    except (ImportError, AttributeError, FileNotFoundError, ValueError) as e:
        raise RuleSpecError(f"cannot load {spec!r}: {type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 — the user's module raised while importing
        raise RuleSpecError(f"importing {where!r} raised {type(e).__name__}: {e}") from None
    if is_call or (isinstance(obj, type) and issubclass(obj, Rule)):
        if not callable(obj):
            raise RuleSpecError(f"{spec!r}: {name} is not callable")
        try:
            obj = obj(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise RuleSpecError(f"{name}({_args_text(args, kwargs)}) raised {type(e).__name__}: {e}") from None
    if not isinstance(obj, Rule):
        raise RuleSpecError(f"{spec!r} gives {describe(obj)}, not an nrm.rules.Rule")
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    try:
        obj.__nrm_source__ = f"{Path(where).expanduser().resolve()}:{what}" if is_file else spec
    except AttributeError:  # a rule with __slots__: code falls back to its repr or a pickle
        pass
    return obj


def rule_or_preset(spec: str, *, x: Any = None) -> Rule | Any:
    """:func:`user_rule` for ``module:Name(…)`` specs, :func:`builtin` otherwise."""
    return user_rule(spec) if isinstance(spec, str) and ":" in spec else builtin(spec, x=x)


def describe(obj) -> str:
    """What an object is, for a message."""
    if isinstance(obj, type):
        return f"the class {obj.__name__} (not a Rule subclass)"
    return f"a {type(obj).__name__} ({obj!r:.60})"


def _args_text(args, kwargs) -> str:
    return ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])


__all__ = ["RuleSpecError", "parse_call", "builtin", "user_rule", "rule_or_preset", "names", "describe"]
