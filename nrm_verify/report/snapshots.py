"""Regression snapshots of explanations: record an explainer's outputs once, compare later runs.

An *explainer* is any function ``explainer(model, x, target) -> Tensor | dict[str, Tensor]``:
nrm's own marginals (``nrm:EpsilonGammaFlat``), a peer library (``zennit:…``,
``captum:…``) or a user's function (``package.module:function``, ``path/file.py:function``).
:func:`record` runs every explainer on a fixed set of seeded :class:`SnapshotCase` s (a model from
:mod:`nrm_verify.zoo.models`, a seeded input, a target) and writes a snapshot; :func:`compare`
runs them again and reports, per (explainer, case), the worst deviation and where it is.

A snapshot ``NAME`` is two files:

* ``NAME.json`` — the manifest: format, versions, the explainers' specs, each case's full
  description (enough to rebuild it), and per result the tolerance and, per output, the
  array's key, shape, dtype, SHA-256, sum and largest magnitude (a readable ``git diff``);
* ``NAME.npz`` — the arrays, stored exactly in their dtype; loaded with
  ``allow_pickle=False``, written with fixed zip timestamps so that re-recording an
  unchanged explainer gives byte-identical files.

A result passes when every entry satisfies (the scale is per output array)::

    |current − recorded| ≤ atol + rtol · scale,    scale = max |recorded|

and the reported relative deviation is |current − recorded| / scale: relative to the
output's magnitude, so entries that are zero up to rounding cannot make it explode.
NaN matches NaN and ±inf matches the same infinity; any other non-finite mismatch fails.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import platform
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nrm.errors import ArgumentError
from nrm_verify.peers import CaptumExplainer, Explainer, NRMExplainer, PeerMissingError, ZennitExplainer
from nrm_verify.properties import specs
from nrm_verify.properties.loader import load_object
from nrm_verify.zoo import models

FORMAT = "nrm-verify-snapshot/1"
DEFAULT_RTOL = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}
"""Relative tolerance by the dtype of the recorded array (integers: exact)."""


class SnapshotError(ValueError):
    """A usage error: a missing or corrupt snapshot, a bad case set (the message says what to do)."""


class CaseBuildError(SnapshotError):
    """A case's model or input builder raised (the message names the builder and the case)."""


# -- cases ---------------------------------------------------------------------------------------
def seeded_normal(shape: Sequence[int], seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """x ~ N(0, 1) of the given shape from a generator seeded with ``seed`` (global RNG untouched)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float64).to(dtype)


def seeded_uniform(shape: Sequence[int], seed: int = 0, low: float = 0.0, high: float = 1.0,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """x ~ U(low, high) of the given shape from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(tuple(shape), generator=g, dtype=torch.float64)).to(dtype)


def small_vgg16(seed: int = 0, num_classes: int = 10, width: int = 8, hidden: int = 64,
                dtype: torch.dtype = torch.float64) -> torch.nn.Sequential:
    """VGG16's layout with ``width`` times fewer channels: torchvision's module names
    (``features.0`` … ``features.30``, ``avgpool``, ``flatten``, ``classifier.0`` … ``classifier.6``),
    configuration "D" with channels c / width (64 → 8 … 512 → 64), the classifier
    ``Linear(C·7·7, hidden), ReLU, Dropout, Linear(hidden, hidden), ReLU, Dropout,
    Linear(hidden, num_classes)``; seeded He-style weights as in :func:`nrm_verify.zoo.models.vgg16`.

    The full VGG16 in float64 holds 138 M parameters (1.1 GB, 3 GB while explaining); this
    one has 0.25 M, which keeps a snapshot of it fast and its arrays small.
    """
    from collections import OrderedDict

    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    with torch.device("meta"):
        for v in models.VGG16_CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers += [nn.Conv2d(channels, v // width, kernel_size=3, padding=1), nn.ReLU()]
            channels = v // width
        classifier = nn.Sequential(nn.Linear(channels * 49, hidden), nn.ReLU(), nn.Dropout(),
                                   nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(), nn.Linear(hidden, num_classes))
        model = nn.Sequential(OrderedDict(features=nn.Sequential(*layers), avgpool=nn.AdaptiveAvgPool2d((7, 7)),
                                          flatten=nn.Flatten(), classifier=classifier))
    models.materialize(model)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            gain = 1.0 if module is classifier[6] else 2.0 ** 0.5
            models.fill(module, generator, gain=gain, bias_std=models.BIAS_STD)
    return model.to(dtype).eval()


MODELS: dict[str, Callable] = {"mlp": models.mlp, "small_cnn": models.small_cnn, "small_vgg16": small_vgg16,
                               "vgg16": models.vgg16}
INPUTS: dict[str, Callable] = {"seeded_image": models.seeded_image, "seeded_normal": seeded_normal,
                               "seeded_uniform": seeded_uniform}


@dataclass(frozen=True)
class SnapshotCase:
    """One seeded situation: ``model(**model_kwargs, dtype=torch_dtype)``,
    ``input(**input_kwargs, dtype=torch_dtype)`` and the target (an output index, or one
    per sample). ``dtype`` is stored as a string ("float64", "float32", …: the manifest is
    JSON), and a builder receives it as the ``torch.dtype`` it names (``torch.float64``),
    ready for ``torch.zeros(..., dtype=dtype)`` or ``model.to(dtype)``.

    ``model`` and ``input`` name a builder of :data:`MODELS` / :data:`INPUTS`, a
    ``module:function`` or a ``path/file.py:function`` (a file path relative to the
    snapshot's folder when the case is rebuilt from a snapshot). ``layers`` lists the
    layers that nrm's built-in explainers record (None: every layer); other explainers
    ignore it.
    """

    name: str
    model: str
    model_kwargs: dict = field(default_factory=dict)
    input: str = "seeded_normal"
    input_kwargs: dict = field(default_factory=dict)
    target: int | list[int] = 0
    dtype: str = "float64"
    layers: list[str] | None = None
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> SnapshotCase:
        try:
            return cls(**d)
        except TypeError as e:
            raise SnapshotError(f"a case description in the manifest does not fit SnapshotCase: {e}") from None

    def build(self, base: str | os.PathLike | None = None) -> tuple[torch.nn.Module, torch.Tensor]:
        """(model in eval mode, input). ``base``: the folder that relative builder file
        paths are read from (a snapshot's folder); failures raise :class:`CaseBuildError`
        naming the builder."""
        dtype = getattr(torch, str(self.dtype), None)
        if not isinstance(dtype, torch.dtype):
            raise CaseBuildError(f"case {self.name!r}: unknown dtype {self.dtype!r} (use 'float64' or 'float32')")
        model = self._call("model", self.model, MODELS, self.model_kwargs, dtype, base)
        if not isinstance(model, torch.nn.Module):
            raise CaseBuildError(f"the model builder {self.model!r} of case {self.name!r} returned a "
                                 f"{type(model).__name__}, not a torch.nn.Module")
        x = self._call("input", self.input, INPUTS, self.input_kwargs, dtype, base)
        if not isinstance(x, torch.Tensor):
            raise CaseBuildError(f"the input builder {self.input!r} of case {self.name!r} returned a "
                                 f"{type(x).__name__}, not a torch.Tensor")
        return model.eval(), x

    def _call(self, what: str, name: str, table, kwargs: dict, dtype: torch.dtype, base):
        builder = _builder(_resolve_spec(name, base), table, what)
        try:
            return builder(**kwargs, dtype=dtype)
        except Exception as e:  # noqa: BLE001 — the user's builder: say that it was the builder
            raise CaseBuildError(f"the {what} builder {name!r} of case {self.name!r} raised {type(e).__name__}: {e} "
                                 f"(it is called as {name.rpartition(':')[2]}(**{what}_kwargs, dtype={dtype}))") \
                from None


def _builder(name: str, table: Mapping[str, Callable], what: str) -> Callable:
    if name in table:
        return table[name]
    if ":" in name:
        try:
            return load_object(name)
        except Exception as e:
            raise CaseBuildError(f"cannot load the {what} builder {name!r}: {type(e).__name__}: {e}") from None
    raise CaseBuildError(f"unknown {what} builder {name!r}: use one of {sorted(table)} or 'module:function'")


def _is_file_spec(spec: str) -> bool:
    where = spec.rpartition(":")[0]
    return where.endswith(".py") or "/" in where or "\\" in where


def _resolve_spec(spec: str, base: str | os.PathLike | None) -> str:
    """A recorded ``path/file.py:name`` with a relative path, read from the snapshot's
    folder ``base`` (a path that exists only relative to the current directory, as older
    snapshots recorded them, is kept)."""
    if base is None or not isinstance(spec, str) or ":" not in spec or not _is_file_spec(spec):
        return spec
    where, _, what = spec.rpartition(":")
    path = Path(where).expanduser()
    if path.is_absolute():
        return spec
    candidate = Path(base) / path
    return f"{candidate}:{what}" if candidate.is_file() or not path.is_file() else spec


def _portable_spec(spec: str | None, base: Path) -> str | None:
    """A ``path/file.py:name`` spec as the snapshot stores it: relative to its folder
    ``base``, so that comparing works from any current directory."""
    prefix = spec.partition(":")[0] if spec else ""
    if not spec or ":" not in spec or not _is_file_spec(spec) or prefix in ("nrm", "nrm-relevance", "zennit", "captum"):
        return spec
    where, _, what = spec.rpartition(":")
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        return spec
    return f"{Path(os.path.relpath(path, base.resolve())).as_posix()}:{what}"


CASES: dict[str, list[SnapshotCase]] = {}
CASES["quick"] = [
    SnapshotCase("mlp", "mlp", {"widths": [8, 6, 5, 3], "seed": 0}, "seeded_normal", {"shape": [2, 8], "seed": 1},
         target=[0, 2], description="dense ReLU net 8-6-5-3, two samples with their own targets"),
    SnapshotCase("small_cnn", "small_cnn", {"seed": 0, "num_classes": 10}, "seeded_image", {"size": 16, "seed": 0},
         target=3, layers=["input", "features.3", "avgpool", "classifier.0"],
         description="small VGG-like CNN on a 16x16 seeded image"),
]
CASES["default"] = CASES["quick"] + [
    SnapshotCase("small_vgg16", "small_vgg16", {"seed": 0, "num_classes": 10}, "seeded_image", {"size": 32, "seed": 0},
         target=3, layers=["input", "features.28", "classifier.0"],
         description="VGG16 layout with 8x fewer channels (small_vgg16) on a 32x32 seeded image"),
]
CASES["vgg16"] = [
    SnapshotCase("vgg16", "vgg16", {"num_classes": 10, "seed": 0}, "seeded_image", {"size": 32, "seed": 0}, target=3,
         layers=["input", "features.28"], description="the full VGG16 (seeded weights, 10 classes) at 32x32"),
]
"""Named case sets: ``quick`` (mlp, small_cnn), ``default`` (adds :func:`small_vgg16` at
32×32) and ``vgg16`` (the full VGG16 at 32×32: 138 M parameters, about 3 GB in float64)."""


def load_cases(spec: str | Sequence[SnapshotCase]) -> list[SnapshotCase]:
    """A case set by name (:data:`CASES`), a ``module:function`` returning a list of
    :class:`SnapshotCase`, or the list itself."""
    if not isinstance(spec, str):
        cases = list(spec)
    elif spec in CASES:
        cases = list(CASES[spec])
    elif ":" in spec:
        try:
            obj = load_object(spec)
            cases = list(obj() if callable(obj) else obj)
        except Exception as e:
            raise SnapshotError(f"cannot load the cases {spec!r}: {type(e).__name__}: {e}") from None
    else:
        raise SnapshotError(f"unknown case set {spec!r}: use one of {sorted(CASES)} or 'module:function'")
    if not cases or not all(isinstance(c, SnapshotCase) for c in cases):
        raise SnapshotError(f"the case set {spec!r} must be a non-empty list of "
                            "nrm_verify.report.snapshots.SnapshotCase")
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise SnapshotError(f"case names must be unique, got {names}")
    return cases


# -- explainers ---------------------------------------------------------------------------------
class ExplainerSpecError(SnapshotError):
    """An explainer spec that cannot be loaded (the message says which forms exist)."""


SPEC_FORMS = ("nrm:Preset, nrm:Rule(args), nrm-relevance:Preset, zennit:Composite(args), captum:Method(args), "
              "package.module:function or path/file.py:function")


def _call_parts(text: str, spec: str) -> tuple[str, tuple, dict]:
    """``"Name"`` or ``"Name(literal args)"`` → (name, args, kwargs)
    (:func:`nrm_verify.properties.specs.parse_call`)."""
    try:
        return specs.parse_call(text)
    except specs.RuleSpecError as e:
        raise ExplainerSpecError(f"{spec!r}: {e}") from None


def _nrm_explainer(spec: str, text: str, relevance: bool) -> NRMExplainer:
    from nrm.presets import PRESETS
    from nrm.rules import RULES

    name, _, _ = _call_parts(text, spec)
    if name not in PRESETS and name not in RULES:
        raise ExplainerSpecError(f"{spec!r}: {name!r} is neither a preset ({', '.join(PRESETS)}) nor a rule "
                                 f"({', '.join(sorted(RULES))})")
    try:
        rules = specs.builtin(text)
    except specs.RuleSpecError as e:
        raise ExplainerSpecError(f"{spec!r}: {e}") from None
    return NRMExplainer(rules, outputs="relevance+f" if relevance else "marginal", spec=spec)


def _peer(spec: str, build: Callable[[], Explainer]) -> Explainer:
    """The peer explainer ``build()`` makes for ``spec``, its errors as :class:`ExplainerSpecError`."""
    peer = spec.partition(":")[0]
    try:
        return build()
    except PeerMissingError as e:
        raise ExplainerSpecError(f"{spec!r} needs {peer}, which cannot be imported ({e.__cause__ or e}); install it "
                                 f"(pip install -e '.[peers]'), or run in .venv-peers (bash scripts/setup-peers.sh)") \
            from None
    except ArgumentError as e:
        raise ExplainerSpecError(f"{spec!r}: {e}") from None


class _Function:
    """A user's ``explainer(model, x, target)`` with the spec it was loaded from."""

    def __init__(self, spec: str, fn: Callable):
        self.spec, self.fn = spec, fn

    def __call__(self, model, x, target):
        return self.fn(model, x, target)


def load_explainer(spec: str) -> Callable:
    """An explainer ``(model, x, target) -> tensor | dict`` from a spec:

    * ``nrm:EpsilonGammaFlat``, ``nrm:EpsilonGammaBox(-2.0, 2.0)`` — a preset of
      :data:`nrm.presets.PRESETS`; ``nrm:Epsilon(1e-6)``, ``nrm:Zero()`` — one rule of
      :mod:`nrm.rules` on every linear layer: marginals and absorbed mass
      (:class:`~nrm_verify.peers.NRMExplainer` with ``outputs="marginal"``);
    * ``nrm-relevance:…`` — the same, as LRP relevances f · m_l (``outputs="relevance+f"``);
    * ``zennit:EpsilonGammaFlat`` — a composite of ``zennit.composites`` (arguments go to it),
      run with the one-hot of the target as output relevance
      (:class:`~nrm_verify.peers.ZennitExplainer` with ``start="one-hot"``): ``input``;
    * ``captum:InputXGradient``, ``captum:IntegratedGradients(n_steps=16)`` — a method of
      ``captum.attr`` (arguments go to ``attribute``; :class:`~nrm_verify.peers.CaptumExplainer`);
    * ``package.module:function``, ``path/file.py:function``, ``module:factory()`` — a user's function.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ExplainerSpecError(f"expected an explainer spec ({SPEC_FORMS}), got {spec!r}")
    prefix, _, text = spec.partition(":")
    if prefix in ("nrm", "nrm-relevance"):
        return _nrm_explainer(spec, text, relevance=prefix == "nrm-relevance")
    if prefix == "zennit":
        name, args, kwargs = _call_parts(text, spec)
        # zennit's Gradient attributor with the one-hot of the target: R / f_c, as recorded since the first format
        return _peer(spec, lambda: ZennitExplainer.named(name, args, kwargs, start="one-hot", spec=spec))
    if prefix == "captum":
        name, args, kwargs = _call_parts(text, spec)
        if args:
            raise ExplainerSpecError(f"{spec!r}: captum arguments go to attribute() by keyword, e.g. n_steps=16")
        return _peer(spec, lambda: CaptumExplainer(method=name, attribute=kwargs, spec=spec))
    try:
        fn = load_object(spec)
    except FileNotFoundError as e:
        raise ExplainerSpecError(f"cannot load the explainer {spec!r}: {e}") from None
    except (ImportError, AttributeError, ValueError) as e:
        raise ExplainerSpecError(f"cannot load the explainer {spec!r}: {type(e).__name__}: {e} "
                                 f"(forms: {SPEC_FORMS})") from None
    except Exception as e:  # the user's module raised while importing
        raise ExplainerSpecError(f"importing the explainer {spec!r} raised {type(e).__name__}: {e}") from None
    if not callable(fn):
        raise ExplainerSpecError(f"{spec!r} is {type(fn).__name__}, not a function (model, x, target)")
    return _Function(spec, fn)


# -- running ---------------------------------------------------------------------------------------
NRM_CORE = ["nrm:EpsilonPlus", "nrm:EpsilonPlusFlat", "nrm:EpsilonGammaFlat", "nrm:EpsilonGammaBox(-2.0, 2.0)",
            "nrm:EpsilonAlpha2Beta1", "nrm:EpsilonAlpha2Beta1Flat", "nrm:Zero()", "nrm:Epsilon(0.25)",
            "nrm:Gamma(0.25)", "nrm:ZPlus()", "nrm:AlphaBeta(2, 1)", "nrm-relevance:EpsilonGammaFlat"]
"""The explainers of the project's own snapshot ``tests/snapshots/nrm-core`` (every preset,
a few rules on every layer, and LRP relevances)."""

SUITES = {"nrm-core": NRM_CORE}


def _outputs(value: Any, where: str) -> dict[str, np.ndarray]:
    """An explainer's return value → {name: numpy array}; a bare tensor is named 'attribution'."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = {"attribution": value}
    if not isinstance(value, Mapping) or not value:
        raise TypeError(f"{where} returned {type(value).__name__}; an explainer returns a tensor or a non-empty "
                        f"dict {{name: tensor}}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, (torch.Tensor, np.ndarray)):
            raise TypeError(f"{where} returned the entry {k!r}: {type(v).__name__}; entries are str → tensor")
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            if v.dtype == torch.bfloat16:
                v = v.float()
            v = v.resolve_conj().resolve_neg().numpy()
        if v.dtype.kind not in "fiub":
            raise TypeError(f"{where}: entry {k!r} has dtype {v.dtype}; only real numbers can be snapshotted")
        out[k] = np.ascontiguousarray(v)
    return out


class _Runner:
    """Builds each case once and runs explainers on it, each call under a forked, seeded RNG."""

    def __init__(self, cases: Sequence[SnapshotCase], base: str | os.PathLike | None = None):
        self.cases = list(cases)
        self.base = base
        self._built: dict[str, tuple] = {}

    def run(self, explainer: Callable, case: SnapshotCase, label: str) -> dict[str, np.ndarray]:
        if case.name not in self._built:
            self._built = {case.name: case.build(self.base)}  # one model alive at a time (VGG16 in float64: 1.1 GB)
        model, x = self._built[case.name]
        target = case.target if isinstance(case.target, int) else list(case.target)
        kwargs = {"layers": case.layers} if getattr(explainer, "accepts_layers", False) else {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            value = explainer(model, x.clone(), target, **kwargs)
        return _outputs(value, f"explainer {label!r} on case {case.name!r}")


def _explainers(explainers) -> dict[str, Callable]:
    """{label: callable} from a mapping, a list of specs ('LABEL=SPEC' or 'SPEC') or callables."""
    if isinstance(explainers, (str, Callable)) and not isinstance(explainers, Mapping):
        explainers = [explainers]
    if isinstance(explainers, Mapping):
        items = list(explainers.items())
    else:
        items = []
        for e in explainers:
            if isinstance(e, str):
                label, spec = split_label(e)
                items.append((label, spec))
            else:
                items.append((getattr(e, "__name__", repr(e)), e))
    out: dict[str, Callable] = {}
    for label, e in items:
        if label in out:
            raise SnapshotError(f"two explainers are labelled {label!r}; give one another label with LABEL=SPEC")
        out[label] = load_explainer(e) if isinstance(e, str) else e
        if not callable(out[label]):
            raise SnapshotError(f"explainer {label!r} is {type(e).__name__}, not a function (model, x, target)")
    if not out:
        raise SnapshotError("no explainer given")
    return out


def split_label(text: str) -> tuple[str, str]:
    """``"eps=nrm:Epsilon(1e-6)"`` → ("eps", "nrm:Epsilon(1e-6)"); without a label the spec is the label."""
    head, sep, tail = text.partition("=")
    if sep and head and not any(c in head for c in ":()/\\ ,"):
        return head, tail
    return text, text


def _spec_of(explainer) -> str | None:
    """The spec a loaded explainer came from (None for a Python callable: it cannot be re-run by name)."""
    return getattr(explainer, "spec", None) if isinstance(explainer, (Explainer, _Function)) else None


# -- files -------------------------------------------------------------------------------------------
def snapshot_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``NAME``, ``NAME.json`` or ``NAME.npz`` → (NAME.json, NAME.npz)."""
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".npz")


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).hexdigest()


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arrays[key], allow_pickle=False)
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)


def _versions(labels_specs: Mapping[str, str | None]) -> dict[str, str]:
    import nrm

    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
         "nrm": nrm.__version__}
    specs = " ".join(s or "" for s in labels_specs.values())
    for peer in ("zennit", "captum"):
        if f"{peer}:" in specs:
            try:
                v[peer] = importlib.metadata.version(peer)
            except importlib.metadata.PackageNotFoundError:  # imported from a path, not installed
                v[peer] = getattr(__import__(peer), "__version__", "unknown")
    return v


@dataclass
class Snapshot:
    """A loaded snapshot: the manifest and {(explainer, case): {output: array}}."""

    manifest: dict
    arrays: dict[tuple[str, str], dict[str, np.ndarray]]

    @property
    def cases(self) -> list[SnapshotCase]:
        return [SnapshotCase.from_dict(d) for d in self.manifest["cases"]]

    @property
    def explainers(self) -> dict[str, str | None]:
        return {e["label"]: e.get("spec") for e in self.manifest["explainers"]}


def record(path: str | os.PathLike, explainers, cases: str | Sequence[SnapshotCase] = "default", *,
           rtol: float | None = None, atol: float = 0.0, overwrite: bool = False,
           command: str | None = None) -> Snapshot:
    """Run every explainer on every case and write the snapshot ``path`` (.json + .npz).

    ``explainers``: a spec or callable, a list of them (specs may carry a label,
    ``"LABEL=SPEC"``), or a mapping {label: spec or callable}. ``rtol`` defaults by dtype
    (:data:`DEFAULT_RTOL`). Raises :class:`SnapshotError` when the snapshot exists and
    ``overwrite`` is false, or when an explainer raises (naming explainer and case).
    """
    jpath, npath = snapshot_paths(path)
    if not overwrite and (jpath.exists() or npath.exists()):
        raise SnapshotError(f"{jpath.with_suffix('')} exists; pass overwrite=True (--force) to record it again")
    table = _explainers(explainers)
    case_list = load_cases(cases)
    runner = _Runner(case_list)
    arrays: dict[str, np.ndarray] = {}
    results, loaded = [], {}
    for case in case_list:
        for label, explainer in table.items():
            try:
                outs = runner.run(explainer, case, label)
            except SnapshotError as e:  # a case that cannot be built: its builder is named, not the explainer
                raise SnapshotError(f"cannot record: {e}") from None
            except Exception as e:
                raise SnapshotError(f"cannot record: explainer {label!r} raised on case {case.name!r}: "
                                    f"{type(e).__name__}: {e}") from None
            entry = {"explainer": label, "case": case.name, "rtol": rtol, "atol": float(atol), "outputs": {}}
            worst_rtol = 0.0
            for name, a in outs.items():
                key = f"a{len(arrays):05d}"
                arrays[key] = a
                worst_rtol = max(worst_rtol, DEFAULT_RTOL.get(a.dtype.name, 0.0))
                entry["outputs"][name] = _describe(key, a)
            if rtol is None:
                entry["rtol"] = worst_rtol
            results.append(entry)
            loaded[(label, case.name)] = outs
    manifest = {
        "format": FORMAT,
        "about": f"nrm-verify regression snapshot; compare with: nrm-verify snapshot compare {jpath.with_suffix('')}",
        "record_command": command,
        "versions": _versions({k: _spec_of(e) for k, e in table.items()}),
        "explainers": [{"label": k, "spec": _portable_spec(_spec_of(e), jpath.parent)} for k, e in table.items()],
        "cases": [_portable_case(c, jpath.parent) for c in case_list],
        "results": results,
    }
    try:
        jpath.parent.mkdir(parents=True, exist_ok=True)
        _write_npz(npath, arrays)
        tmp = jpath.with_name(jpath.name + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, jpath)
    except OSError as e:
        raise SnapshotError(f"cannot write the snapshot {jpath.with_suffix('')}: {e.strerror or e}"
                            + (f" ({e.filename})" if e.filename else "")) from None
    return Snapshot(manifest, loaded)


def _portable_case(case: SnapshotCase, base: Path) -> dict:
    d = case.to_dict()
    d["model"], d["input"] = _portable_spec(case.model, base), _portable_spec(case.input, base)
    return d


def _describe(key: str, a: np.ndarray) -> dict:
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    return {"key": key, "shape": list(a.shape), "dtype": a.dtype.name, "sha256": _sha256(a),
            "sum": float(finite.sum()) if finite.size else 0.0,
            "max_abs": float(np.abs(finite).max()) if finite.size else 0.0}


def load(path: str | os.PathLike) -> Snapshot:
    """Read a snapshot; a missing file, an unknown format or an array whose hash differs
    from the manifest is a :class:`SnapshotError`."""
    jpath, npath = snapshot_paths(path)
    for p in (jpath, npath):
        if not p.is_file():
            raise SnapshotError(f"no snapshot file {p}; record one with: nrm-verify snapshot record "
                                f"{jpath.with_suffix('')} --explainer SPEC")
    try:
        manifest = json.loads(jpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SnapshotError(f"{jpath} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError(f"{jpath} is not an {FORMAT} manifest")
    arrays: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    try:
        with np.load(npath, allow_pickle=False) as npz:
            for r in manifest["results"]:
                outs = {}
                for name, d in r["outputs"].items():
                    a = npz[d["key"]]
                    if _sha256(a) != d["sha256"]:
                        raise SnapshotError(f"{npath}: array {d['key']} ({r['explainer']} @ {r['case']}, {name}) "
                                            f"does not match the manifest's hash; the two files are out of step, "
                                            f"record the snapshot again")
                    outs[name] = a
                arrays[(r["explainer"], r["case"])] = outs
    except SnapshotError:
        raise
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise SnapshotError(f"cannot read the snapshot {npath}: {type(e).__name__}: {e}") from None
    return Snapshot(manifest, arrays)


# -- comparing ------------------------------------------------------------------------------------
@dataclass
class CaseResult:
    """The verdict for one (explainer, case): the worst absolute and relative deviations
    (output name and index), the tolerance, and problems (missing, extra, raised, shape)."""

    explainer: str
    case: str
    rtol: float
    atol: float
    max_abs: float = 0.0
    abs_at: str = ""
    max_rel: float = 0.0
    rel_at: str = ""
    problems: list[str] = field(default_factory=list)
    exceeded: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.explainer} @ {self.case}"

    @property
    def ok(self) -> bool:
        return not self.problems and not self.exceeded

    def __str__(self) -> str:
        head = f"{'PASS' if self.ok else 'FAIL'}  {self.name}"
        if self.problems and not self.abs_at:
            return head + ": " + "; ".join(self.problems)
        tol = f"tolerance rtol {self.rtol:g}, atol {self.atol:g}"
        if self.max_abs == 0:
            text = f"{head}: identical to the snapshot ({tol})"
        else:
            text = (f"{head}: max |Δ| {self.max_abs:.3g} at {self.abs_at}, max rel {self.max_rel:.3g} at "
                    f"{self.rel_at} ({tol})")
        text += "".join(f"\n      exceeded: {e}" for e in self.exceeded)
        if self.problems:
            text += "\n      " + "; ".join(self.problems)
        return text


@dataclass
class Comparison:
    """All verdicts of :func:`compare`; ``ok``, ``exit_code`` (0 or 1), ``str()`` the report."""

    snapshot: str
    results: list[CaseResult]
    versions: dict
    not_selected: int = 0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        """The verdict in one line: the failing results, or that every one passed."""
        bad = self.failures
        if not bad:
            return f"OK: {len(self.results)} results within their tolerance"
        names = ", ".join(r.name for r in bad[:3]) + (", …" if len(bad) > 3 else "")
        return f"FAILED {len(bad)} of {len(self.results)}: {names}"

    def __repr__(self) -> str:
        """The summary first and last (pytest shows the two ends of a long repr, as in
        ``assert report.ok, report``), the report between them, abbreviated."""
        from nrm_verify.properties import abbreviate

        head = abbreviate.line(f"Comparison({self.snapshot}): {self.summary()}", 110)
        tail = abbreviate.line(f"{self.summary()}; print(report) for the whole report", 110)
        return f"{head}\n{abbreviate.text(str(self), limit=8000)}\n{tail}"

    def __getitem__(self, name: str) -> CaseResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no result named {name!r}; results are {[r.name for r in self.results]}")

    def __str__(self) -> str:
        v, now = self.versions, _versions({})
        lines = [f"snapshot {self.snapshot} (recorded with nrm {v.get('nrm')}, torch {v.get('torch')}, "
                 f"numpy {v.get('numpy')}): {len(self.results)} results compared"
                 + (f", {self.not_selected} recorded results not selected" if self.not_selected else "")]
        changed = [f"{k} {v[k]} → {now[k]}" for k in ("nrm", "torch", "numpy") if k in v and v[k] != now[k]]
        if changed:
            lines.append("note: versions differ from the recording: " + ", ".join(changed))
        lines += [str(r) for r in self.results]
        n = len(self.failures)
        lines.append("OK: every result within its tolerance" if n == 0 else f"FAILED: {n} of {len(self.results)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"snapshot": self.snapshot, "ok": self.ok, "versions": self.versions,
                "not_selected": self.not_selected,
                "results": [asdict(r) | {"name": r.name, "ok": r.ok} for r in self.results]}


def compare(path: str | os.PathLike, explainers=None, cases: str | Sequence[SnapshotCase] | None = None, *,
            only_cases: Sequence[str] | None = None, rtol: float | None = None,
            atol: float | None = None) -> Comparison:
    """Run the explainers again and compare with the snapshot ``path``.

    * ``explainers=None`` re-runs every recorded explainer from its spec; given ones (specs,
      ``"LABEL=SPEC"``, or {label: callable}) are compared under their labels, and recorded
      explainers not given are left out of this comparison (counted as not selected);
    * ``cases=None`` rebuilds the recorded cases from the manifest (``only_cases`` picks
      some by name); a case set here replaces them, and a recorded case it lacks fails;
    * ``rtol``/``atol`` override the recorded tolerances.

    Failures: a tolerance exceeded, a recorded result this run does not produce
    (missing), a result the snapshot lacks (extra), an explainer that raises, an output
    whose name, shape or dtype changed. Usage errors raise :class:`SnapshotError`.
    """
    snap = load(path)
    if explainers is None:
        missing_spec = [k for k, s in snap.explainers.items() if not s]
        if missing_spec:
            raise SnapshotError(f"explainers {missing_spec} were recorded from Python callables; pass them "
                                f"again (compare(path, {{label: function}}) or --explainer LABEL=SPEC)")
        base = snapshot_paths(path)[0].parent  # recorded file paths are relative to the snapshot's folder
        explainers = {label: _resolve_spec(spec, base) for label, spec in snap.explainers.items()}
    table = _explainers(explainers)
    case_list = snap.cases if cases is None else load_cases(cases)
    if only_cases is not None:
        unknown = sorted(set(only_cases) - {c.name for c in case_list})
        if unknown:
            raise SnapshotError(f"no case named {unknown}; cases are {[c.name for c in case_list]}")
        case_list = [c for c in case_list if c.name in set(only_cases)]
    recorded = {(r["explainer"], r["case"]): r for r in snap.manifest["results"]}
    selected = {key for key in recorded if key[0] in table and (only_cases is None or key[1] in only_cases)}
    runner = _Runner(case_list, base=snapshot_paths(path)[0].parent if cases is None else None)
    results: list[CaseResult] = []
    for case in case_list:
        for label, explainer in table.items():
            rec = recorded.get((label, case.name))
            res = CaseResult(label, case.name, rtol if rtol is not None else (rec["rtol"] if rec else 0.0),
                             atol if atol is not None else (rec["atol"] if rec else 0.0))
            results.append(res)
            if rec is None:
                res.problems.append("extra: this run produces it but the snapshot has no such result "
                                    "(record the snapshot again to add it)")
                continue
            try:
                outs = runner.run(explainer, case, label)
            except CaseBuildError as e:  # the case, not the explainer
                res.problems.append(f"the case could not be built: {e}")
                continue
            except Exception as e:  # a regression that makes the explainer crash is a failure, not a usage error
                res.problems.append(f"the explainer raised {type(e).__name__}: {e}")
                continue
            _compare_outputs(res, snap.arrays[(label, case.name)], outs)
    produced = {(r.explainer, r.case) for r in results}
    for label, case_name in sorted(selected - produced):
        res = CaseResult(label, case_name, 0.0, 0.0)
        res.problems.append("missing: recorded in the snapshot but not produced by this run "
                            "(the case or explainer was dropped or renamed)")
        results.append(res)
    return Comparison(str(snapshot_paths(path)[0].with_suffix("")), results, snap.manifest.get("versions", {}),
                      not_selected=len(recorded) - len(selected))


def _compare_outputs(res: CaseResult, old: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray]) -> None:
    for name in old:
        if name not in new:
            res.problems.append(f"output {name!r} is missing from this run")
    for name in new:
        if name not in old:
            res.problems.append(f"output {name!r} is new (not in the snapshot)")
    for name in old:
        if name not in new:
            continue
        a, b = new[name], old[name]
        if a.shape != b.shape:
            res.problems.append(f"output {name!r} has shape {list(a.shape)}, recorded {list(b.shape)}")
            continue
        if a.dtype != b.dtype:
            res.problems.append(f"output {name!r} has dtype {a.dtype}, recorded {b.dtype}")
        if a.size == 0:
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff = np.abs(a64 - b64)
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
        finite = np.abs(b64[np.isfinite(b64)])
        scale = float(finite.max()) if finite.size else 0.0
        flat = int(np.argmax(diff))
        worst = float(diff.flat[flat])
        where = f"{name}{[int(i) for i in np.unravel_index(flat, a.shape)]}" if a.ndim else name
        rel = worst / scale if scale > 0 else (0.0 if worst == 0 else np.inf)
        if worst > res.max_abs or not res.abs_at:
            res.max_abs, res.abs_at = worst, where
        if rel > res.max_rel or not res.rel_at:
            res.max_rel, res.rel_at = rel, where
        if worst > res.atol + res.rtol * scale:
            res.exceeded.append(f"{name}: max |Δ| {worst:.3g} > atol {res.atol:g} + rtol {res.rtol:g} × scale "
                                f"{scale:.3g}")


Case = SnapshotCase
"""The name of :class:`SnapshotCase` before 0.2 (case files written for it keep working)."""

__all__ = ["SnapshotCase", "Case", "CASES", "NRM_CORE", "SUITES", "Snapshot", "SnapshotError", "CaseBuildError",
           "CaseResult",
           "Comparison",
           "record", "compare", "load", "load_cases", "load_explainer", "seeded_normal", "seeded_uniform",
           "snapshot_paths", "split_label", "small_vgg16", "ExplainerSpecError", "NRMExplainer"]
