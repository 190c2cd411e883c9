"""Check a layer kind (:mod:`nrm.layers`) as ``check-rule`` checks a rule.

    from nrm_verify.validate.layers import check_layer
    report = check_layer("mypkg.layers:ChannelScaleKind")     # or a Kind class or instance
    print(report); report.ok

and ``nrm-verify check-layer mypkg.layers:ChannelScaleKind`` (exit 0 when everything
held, 1 on a violation, 2 when the argument is not a usable kind).

Networks are built around the kind's :meth:`~nrm.layers.Kind.examples` (a learned layer
before it where its input allows, a flattening dense head after it), with random
built-in rules on every linear layer, and a hypothesis search looks for a violation of:

* **K2** the kind's interpretation reproduces what the module computes (its map W a + b,
  or its elementwise function, against the recorded output);
* **K3** a linear kind's transpose is the adjoint of its map, for the weight and every
  modification of it the rules make (w⁺, w⁻, w², 1), against autograd;
* **L1** columns sum to one with ⊥ (the normalization at every layer, and column by column);
* **K5** the engine equals the exact rational oracle (every layer's marginal);
* **L18** the engine equals the explicit LRP reference, which reads the recorded operation
  itself (the module's own forward on the unit basis), not the kind's map;
* **L2–L8**, **INV** (batch invariance), and **L9** (LRP-0 = Gradient × Input) where the
  kind keeps it (linear maps, routes, positively homogeneous activations).

A violation comes with a shrunk, runnable program that rebuilds the network, the input and
the check.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from torch import nn

import nrm
from nrm.layers import Kind
from nrm_verify.laws import catalogue
from nrm_verify.laws.catalogue import Check
from nrm_verify.laws.status import NOT_APPLICABLE
from nrm_verify.properties import strategies as S
from nrm_verify.properties.checks import SOUND_OTHERS
from nrm_verify.properties.loader import load_object
from nrm_verify.validate.rules import SEARCH_TIMEOUT, RuleReport
from nrm_verify.validate.search import Verdict, run_check, search_settings


class LayerReport(RuleReport):
    """The verdicts of :func:`check_layer` for one layer kind."""

    command = "check-layer"
    unusable = "NOT A USABLE LAYER KIND"


class InvalidKind(ValueError):
    """The argument is not a layer kind that can be checked (the message says why)."""


def load_kind(spec) -> Kind:
    """A kind from ``"package.module:KindClass"`` or ``"path/to/file.py:KindClass"`` (a
    :class:`nrm.layers.Kind` subclass, instantiated without arguments, or an instance)."""
    if isinstance(spec, str):
        if ":" not in spec:
            raise InvalidKind(f"expected 'package.module:KindClass' or 'path/to/file.py:KindClass', got {spec!r}")
        try:
            spec = load_object(spec)
        except (ImportError, AttributeError, FileNotFoundError, ValueError) as e:
            raise InvalidKind(f"cannot load it: {type(e).__name__}: {e}") from None
        except Exception as e:  # noqa: BLE001 — the user's module raised while importing
            raise InvalidKind(f"importing it raised {type(e).__name__}: {e}") from None
    if isinstance(spec, type) and issubclass(spec, Kind):
        try:
            spec = spec()
        except Exception as e:  # noqa: BLE001
            raise InvalidKind(f"{spec.__name__}() raised {type(e).__name__}: {e}") from None
    if not isinstance(spec, Kind):
        raise InvalidKind(f"expected a subclass of nrm.layers.Kind (Linear, Elementwise, …), got {spec!r:.80}")
    if not spec.role:
        raise InvalidKind(f"{spec.name} has no role: subclass one of nrm.layers' Linear, Elementwise, Reshape, …")
    if not spec.functions and not spec.modules:
        raise InvalidKind(f"{spec.name} declares neither functions= nor modules=: nothing would reach it")
    return spec


def _examples(kind: Kind) -> list[tuple[nn.Module, tuple[int, ...]]]:
    try:
        examples = list(kind.examples())
    except Exception as e:  # noqa: BLE001
        raise InvalidKind(f"{kind.name}.examples() raised {type(e).__name__}: {e}") from None
    if not examples:
        raise InvalidKind(f"{kind.name}.examples() gives no example: return [(module, per-sample input shape)], or "
                          "set example_shape for a module that builds without arguments")
    for module, shape in examples:
        if not isinstance(module, nn.Module) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise InvalidKind(f"{kind.name}.examples() must give (nn.Module, tuple of sizes), got ({module!r:.40}, "
                              f"{shape!r})")
    return examples


class LayerContext:
    """How cases are drawn for a layer kind (the validator's :class:`~nrm_verify.properties.checks.Context`
    for rules, with networks built around the kind's examples)."""

    def __init__(self, kind: Kind, examples):
        self.rule = kind  # what counterexample comments and error locations name
        self.kind, self.examples = kind, examples
        self.input_kind, self.low, self.high = "arbitrary", -2.0, 2.0

    def cases(self, batch=(1, 2), size: str = "any") -> st.SearchStrategy:
        """"one layer"/"small": the example alone with its head; "any": with a learned layer before it."""
        return S.kind_cases(self.kind, self.examples, batch=batch, prefix=size != "one layer",
                            rules=S.rules(tuple(r for r in SOUND_OTHERS if r not in self.kind.refused_rules)))


# -- the checks -------------------------------------------------------------------------------
def layer_checks() -> list[Check]:
    """The checks of a layer kind: the catalogue's checks that say how they apply to a
    kind: the kind's own laws first (K2, K3, K5: not columns of the rule matrix), then
    L1 – L9, L18, INV and any law registered with a ``kind`` test."""
    return sorted(catalogue.checks("kind"), key=lambda c: catalogue.law(c.law).column)


def __getattr__(name: str):
    if name == "LAYER_CHECKS":  # read from the catalogue when used
        return tuple(layer_checks())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_layer(kind, *, profile: str | None = None, max_examples: int | None = None,
                only: Sequence[str] | None = None, search_timeout: float | None = None) -> LayerReport:
    """Check a layer kind (a :class:`nrm.layers.Kind` class or instance, or a spec string as
    :func:`load_kind` takes) on networks built around its examples; returns a
    :class:`LayerReport`. Never raises for a bad kind: the report says what was wrong. The
    kind is registered for the duration of the check (and unregistered after, unless it
    already was).

    ``only`` restricts the checks (keys of :func:`layer_checks`: K2, K3, K5, L1 …, any
    case); ``search_timeout`` bounds the whole search in seconds (default
    :data:`nrm_verify.validate.rules.SEARCH_TIMEOUT` of the profile): checks it does not reach are
    "not settled"."""
    start = time.perf_counter()
    label = kind if isinstance(kind, str) else repr(kind)
    profile = profile or os.environ.get("HYPOTHESIS_PROFILE") or "ci"
    try:
        settings.get_profile(profile)
        instance = load_kind(kind)
        examples = _examples(instance)
        only = _laws(only)
        _options(max_examples, search_timeout)
    except HypothesisException:
        return LayerReport(label, invalid=f"unknown hypothesis profile {profile!r}; use 'ci' or 'thorough'")
    except InvalidKind as e:
        return LayerReport(label, invalid=str(e), profile=profile)
    budget = search_timeout if search_timeout is not None else SEARCH_TIMEOUT.get(profile, SEARCH_TIMEOUT["ci"])
    deadline = start + budget
    current = nrm.layers.REGISTRY.kinds.get(instance.name)
    if current is not None and type(current) is type(instance):
        instance = current  # a registered kind named by its class (a built-in one): check the one the capture uses
    registered = instance.name in nrm.layers.REGISTRY.kinds
    if not registered:
        nrm.layers.register(instance)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = LayerReport(label, profile=profile)
        problem = _recognized(instance, examples)
        if problem:
            report.invalid = problem
            return report
        ctx = LayerContext(instance, examples)
        hyp = settings(search_settings(profile, max_examples), suppress_health_check=list(HealthCheck))
        for check in layer_checks():
            if only and check.law not in only:
                continue
            reason = check.kind(instance)
            if reason:
                report.verdicts.append(Verdict(check.law, check.name, NOT_APPLICABLE, detail=reason))
                continue
            report.verdicts.append(run_check(check, ctx, hyp, deadline))
    finally:
        torch.set_num_threads(threads)
        if not registered:
            nrm.layers.unregister(instance)
    report.seconds = time.perf_counter() - start
    return report


def _laws(only: Sequence[str] | None) -> list[str] | None:
    """The check keys asked for, in their canonical case; an unknown key is an error."""
    if not only:
        return None
    known = {c.law.upper(): c.law for c in layer_checks()}
    if isinstance(only, str):
        only = [only]
    unknown = [k for k in only if not isinstance(k, str) or k.upper() not in known]
    if unknown:
        raise InvalidKind(f"unknown check {unknown[0]!r}; the checks of check-layer are "
                          f"{', '.join(sorted(set(known.values())))}")
    return [known[k.upper()] for k in only]


def _options(max_examples, search_timeout) -> None:
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                     or max_examples < 1):
        raise InvalidKind(f"max_examples must be a whole number >= 1, got {max_examples!r}")
    if search_timeout is not None and (isinstance(search_timeout, bool) or not isinstance(search_timeout, (int, float))
                                       or not math.isfinite(search_timeout) or search_timeout <= 0):
        raise InvalidKind(f"search_timeout must be a number of seconds > 0, got {search_timeout!r}")


def _recognized(kind: Kind, examples) -> str:
    """'' when every example is read by this kind, else why not."""
    for module, shape in examples:
        model = S.network_around(module, shape, 0, prefix=False)
        try:
            captured = nrm.capture(model, torch.zeros((1,) + tuple(shape), dtype=torch.float64))
        except nrm.NRMError as e:
            return f"capturing the example {type(module).__name__} failed: {e}"
        unfolded = [nrm.layers.REGISTRY.kinds.get(getattr(c.kind, "unfolded", None) or "") for c in captured.calls]
        if not any(c.kind is kind for c in captured.calls) and kind not in unfolded:  # a batch norm that cannot fold
            found = sorted({c.kind.name if c.kind else f"(none: {c.refusal})" for c in captured.calls})
            return (f"no operation of the example {type(module).__name__} is read by {kind.name} (its operations are "
                    f"read by {found}); check functions= / modules=")
    return ""


__all__ = ["check_layer", "load_kind", "LayerReport", "InvalidKind", "layer_checks"]
