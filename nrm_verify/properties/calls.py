"""One law call with placeholders for a case's values: what a law check draws, runs on the
case, and writes as the last lines of a counterexample program.

    LawCall(laws.markov, (M, "1", 0, [0, 1], OMEGA)).run(case)      # → LawResult
    LawCall(laws.markov, (M, "1", 0, [0, 1], OMEGA)).code(Writer())  # → ["result = laws.markov(m, '1', 0, …)"]

The placeholders :data:`M`, :data:`MODEL`, :data:`X`, :data:`TARGET`, :data:`RULES` stand
for the case's measure, model, input, target and rules (:class:`Sym`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nrm_verify.properties.codegen import Writer


class Sym:
    """A name in the counterexample program (``m``, ``model``, ``x``, ``target``, ``rules``,
    or a value the call defines first, such as ``x2``)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


M, MODEL, X, TARGET, RULES = Sym("m"), Sym("model"), Sym("x"), Sym("target"), Sym("rules")


@dataclass
class LawCall:
    """``function(*args, **kwargs)`` with :class:`Sym` placeholders for the case's values.

    ``function`` is a law function (returns a :class:`~nrm_verify.laws.LawResult`); one of
    :mod:`nrm_verify.laws` is written ``laws.<name>(…)`` in programs, any other is imported
    from its module (so a law of your own must be importable for its counterexamples to run)."""

    function: Callable[..., Any]
    args: tuple
    extra: dict = field(default_factory=dict)  # names defined before the call (e.g. x2)
    kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return getattr(self.function, "__name__", repr(self.function))

    def run(self, case) -> Any:
        """The law on ``case`` (a :class:`~nrm_verify.properties.strategies.Case`)."""
        env = {"m": case.measure() if any(a is M for a in self.args) else None, "model": case.model, "x": case.x,
               "target": case.target, "rules": case.rules, **self.extra}
        args = [env[a.name] if isinstance(a, Sym) else a for a in self.args]
        return self.function(*args, **self.kwargs)

    def code(self, w: Writer) -> list[str]:
        """The lines that recompute the law into ``result``."""
        lines = [f"{k} = {w.expr(v)}" for k, v in self.extra.items()]
        args = [a.name if isinstance(a, Sym) else w.expr(a) for a in self.args]
        args += [f"{k}={w.expr(v)}" for k, v in self.kwargs.items()]
        return lines + [f"result = {self._callee(w)}({', '.join(args)})"]

    def _callee(self, w: Writer) -> str:
        module = getattr(self.function, "__module__", "") or ""
        if module == "nrm_verify.laws" or module.startswith("nrm_verify.laws."):
            w.imports.add("from nrm_verify import laws")
            return f"laws.{self.name}"
        w.imports.add(f"from {module} import {self.name}")
        return self.name


__all__ = ["LawCall", "Sym", "M", "MODEL", "X", "TARGET", "RULES"]
