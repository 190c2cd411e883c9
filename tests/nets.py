"""Seeded builders of tiny random networks, inputs, rule assignments and events.

Everything is float64 by construction (explicit ``dtype=``), drawn from a private
``torch.Generator`` / ``random.Random`` seeded per case: building a case neither reads nor
changes torch's global random state or default dtype. Networks are kept tiny (a few
hundred walks at most) so that exact walk enumeration stays cheap.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import nrm
from nrm_verify.references.oracle import ExactMeasure, ExactNetwork

DTYPE = torch.float64


@dataclass
class Case:
    """A model in eval mode, an input batch, and a one-line description for failures."""

    model: nn.Sequential
    x: torch.Tensor
    description: str

    def __repr__(self) -> str:
        return f"Case({self.description}, x{tuple(self.x.shape)})"


def _module(cls, *args, **kwargs) -> nn.Module:
    """A module with uninitialized float64 parameters (no draw from the global RNG)."""
    return torch.nn.utils.skip_init(cls, *args, dtype=DTYPE, **kwargs)


def _fill(module: nn.Module, g: torch.Generator, rng: random.Random, bias: str) -> None:
    """Weights ~ N(0, 1/fan_in)·√2; biases ~ U(−0.3, 0.3), a few strongly negative
    (``bias="dead"``: dead ReLUs) or none at all."""
    w = module.weight
    fan_in = w[0].numel()
    with torch.no_grad():
        w.copy_(torch.randn(w.shape, generator=g, dtype=DTYPE) * math.sqrt(2.0 / fan_in))
        if module.bias is not None:
            b = (torch.rand(module.bias.shape, generator=g, dtype=DTYPE) - 0.5) * 0.6
            if bias == "dead":
                for i in range(len(b)):
                    if rng.random() < 0.3:
                        b[i] = -3.0
            module.bias.copy_(b)


def _batchnorm(cls, n: int, g: torch.Generator) -> nn.Module:
    bn = cls(n, dtype=DTYPE)
    with torch.no_grad():
        bn.weight.copy_(1 + 0.3 * torch.randn(n, generator=g, dtype=DTYPE))
        bn.bias.copy_(0.2 * torch.randn(n, generator=g, dtype=DTYPE))
        bn.running_mean.copy_(0.2 * torch.randn(n, generator=g, dtype=DTYPE))
        bn.running_var.copy_(0.5 + torch.rand(n, generator=g, dtype=DTYPE))
    return bn


def _activation(rng: random.Random, leaky: bool | None = None) -> nn.Module:
    if leaky is None:
        leaky = rng.random() < 0.3
    return nn.LeakyReLU(rng.choice([0.1, 0.01])) if leaky else nn.ReLU()


def _linear(n_in, n_out, g, rng, bias_mode):
    lin = _module(nn.Linear, n_in, n_out, bias=bias_mode != "none")
    _fill(lin, g, rng, bias_mode)
    return lin


def mlp(seed: int, *, leaky: bool | None = None, bias: str | None = None, batch: int = 1) -> Case:
    """Linear (+ BatchNorm1d, Dropout, Identity) + ReLU/LeakyReLU stacks, widths 2–4,
    sometimes nested in an inner Sequential. The input is a vector, or (``form="image"``) a
    (1, n) tensor flattened first, or (``form="rows"``) two rows that the first Linear maps
    separately (it acts on the last dimension) before a Flatten."""
    g, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    bias = bias or rng.choice(["none", "plain", "dead", "dead"])
    form = rng.choice(["vector", "vector", "vector", "image", "rows"])
    widths = [rng.randint(2, 4) for _ in range(rng.randint(2, 3))] + [rng.randint(2, 3)]
    mods: list[tuple[str, nn.Module]] = [("flatten_in", nn.Flatten())] if form == "image" else []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        if form == "rows" and i == 1:
            a *= 2
        mods.append((f"fc{i}", _linear(a, b, g, rng, bias)))
        if not last:
            if rng.random() < 0.3 and not (form == "rows" and i == 0):
                mods.append((f"bn{i}", _batchnorm(nn.BatchNorm1d, b, g)))
            mods.append((f"act{i}", _activation(rng, leaky)))
            if rng.random() < 0.2:
                mods.append((f"drop{i}", nn.Dropout(0.5) if rng.random() < 0.5 else nn.Identity()))
            if form == "rows" and i == 0:
                mods.append(("flatten", nn.Flatten()))
    if rng.random() < 0.3 and len(mods) > 2:  # nested names like "body.fc0"
        split = rng.randint(1, len(mods) - 1)
        model = nn.Sequential()
        model.add_module("body", nn.Sequential(OrderedDict(mods[:split])))
        for name, m in mods[split:]:
            model.add_module(name, m)
    else:
        model = nn.Sequential(OrderedDict(mods))
    shape = {"vector": (widths[0],), "image": (1, widths[0]), "rows": (2, widths[0])}[form]
    x = torch.rand((batch,) + shape, generator=g, dtype=DTYPE) * 2 - 1
    return Case(model.eval(), x, f"mlp(seed={seed}, {form}, widths={widths}, bias={bias})")


def cnn(seed: int, *, pool: str | None = None, leaky: bool | None = None, bias: str | None = None,
        batch: int = 1) -> Case:
    """Conv2d (+ BatchNorm2d) + ReLU/LeakyReLU + a pooling layer + Flatten + Linear, on 1–2
    channels of 3×3 or 4×4. ``pool``: "max", "avg", "adaptive" or "none"."""
    g, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    bias = bias or rng.choice(["none", "plain", "dead", "dead"])
    pool = pool or rng.choice(["max", "max", "avg", "adaptive"])
    c_in, size, c = rng.randint(1, 2), rng.choice([3, 4]), 2
    conv_kw = rng.choice([
        dict(kernel_size=2), dict(kernel_size=2, stride=2), dict(kernel_size=3, padding=1),
        dict(kernel_size=3, padding="same"), dict(kernel_size=2, dilation=2), dict(kernel_size=2, groups=2),
    ])
    if conv_kw.get("groups") and c_in != 2:
        conv_kw = dict(kernel_size=2)
    if size == 3 and conv_kw.get("dilation"):
        conv_kw = dict(kernel_size=2, padding=1)
    conv = _module(nn.Conv2d, c_in, c, bias=bias != "none", **conv_kw)
    _fill(conv, g, rng, bias)
    mods: list[tuple[str, nn.Module]] = [("conv", conv)]
    if rng.random() < 0.3:
        mods.append(("bn", _batchnorm(nn.BatchNorm2d, c, g)))
    mods.append(("act", _activation(rng, leaky)))
    with torch.no_grad():
        hw = conv(torch.zeros((1, c_in, size, size), dtype=DTYPE)).shape[-1]
    if pool == "max" and hw >= 2:
        mods.append(("pool", rng.choice([nn.MaxPool2d(2, stride=1), nn.MaxPool2d(2),
                                         nn.MaxPool2d(2, stride=2, ceil_mode=True), nn.MaxPool2d(3, 1, padding=1)])))
    elif pool == "avg" and hw >= 2:
        mods.append(("pool", rng.choice([nn.AvgPool2d(2, stride=1), nn.AvgPool2d(2, stride=1, padding=1),
                                         nn.AvgPool2d(2)])))
    elif pool == "adaptive":
        adaptive = [nn.AdaptiveAvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((1, 2))]
        mods.append(("pool", rng.choice(adaptive)))
    mods.append(("flatten", nn.Flatten()))
    model = nn.Sequential(OrderedDict(mods)).eval()
    with torch.no_grad():
        n = model(torch.zeros((1, c_in, size, size), dtype=DTYPE)).shape[1]
    model.add_module("fc", _linear(n, rng.randint(2, 3), g, rng, bias))
    x = torch.rand((batch, c_in, size, size), generator=g, dtype=DTYPE) * 2 - 1
    return Case(model.eval(), x, f"cnn(seed={seed}, in={(c_in, size, size)}, conv={conv_kw}, pool={pool}, bias={bias})")


def cnn1d(seed: int, *, leaky: bool | None = None, bias: str | None = None, batch: int = 1) -> Case:
    """Conv1d (+ BatchNorm1d) + ReLU/LeakyReLU + Flatten + Linear on 1–2 channels of length 4–5."""
    g, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    bias = bias or rng.choice(["none", "plain", "dead", "dead"])
    c_in, length = rng.randint(1, 2), rng.randint(4, 5)
    kw = rng.choice([dict(kernel_size=2), dict(kernel_size=3, padding=1), dict(kernel_size=2, stride=2)])
    conv = _module(nn.Conv1d, c_in, 2, bias=bias != "none", **kw)
    _fill(conv, g, rng, bias)
    mods: list[tuple[str, nn.Module]] = [("conv", conv)]
    if rng.random() < 0.3:
        mods.append(("bn", _batchnorm(nn.BatchNorm1d, 2, g)))
    mods += [("act", _activation(rng, leaky)), ("flatten", nn.Flatten())]
    model = nn.Sequential(OrderedDict(mods)).eval()
    with torch.no_grad():
        n = model(torch.zeros((1, c_in, length), dtype=DTYPE)).shape[1]
    model.add_module("fc", _linear(n, 2, g, rng, bias))
    x = torch.rand((batch, c_in, length), generator=g, dtype=DTYPE) * 2 - 1
    return Case(model.eval(), x, f"cnn1d(seed={seed}, in={(c_in, length)}, conv={kw}, bias={bias})")


BUILDERS = (mlp, cnn, mlp, cnn, cnn1d)


def network(seed: int, **kwargs) -> Case:
    """A random tiny network of a kind chosen by the seed (MLPs, CNNs, 1-d CNNs)."""
    return BUILDERS[seed % len(BUILDERS)](seed, **kwargs)


# -- rules ----------------------------------------------------------------------------------

R = nrm.rules
RULES = {
    "zero": lambda: R.Zero(),
    "zero-renormalize": lambda: R.Zero(leak="renormalize"),
    "epsilon": lambda: R.Epsilon(0.1),
    "epsilon-unsigned": lambda: R.Epsilon(0.1, stabilizer_sign="unsigned"),
    "epsilon-renormalize": lambda: R.Epsilon(0.1, leak="renormalize"),
    "gamma": lambda: R.Gamma(0.25),
    "gamma-rawbias-stabilized": lambda: R.Gamma(1.0, modify_bias=False, stabilizer=0.01),
    "zplus": lambda: R.ZPlus(),
    "zplus-nobias": lambda: R.ZPlus(bias=False),
    "alphabeta21": lambda: R.AlphaBeta(2, 1),
    "alphabeta10": lambda: R.AlphaBeta(1, 0),
    "wsquare": lambda: R.WSquare(),
    "wsquare-bias": lambda: R.WSquare(bias=True),
    "flat": lambda: R.Flat(),
    "zbox-first": lambda: nrm.RuleMap(R.Epsilon(0.1), first=R.ZBox(-1.0, 1.0)),
}
PRESETS = {
    "EpsilonPlus": lambda: nrm.presets.EpsilonPlus(),
    "EpsilonPlusFlat": lambda: nrm.presets.EpsilonPlusFlat(0.01),
    "EpsilonGammaFlat": lambda: nrm.presets.EpsilonGammaFlat(),
    "EpsilonGammaBox": lambda: nrm.presets.EpsilonGammaBox(-1.0, 1.0, epsilon=0.01),
    "EpsilonAlpha2Beta1": lambda: nrm.presets.EpsilonAlpha2Beta1(),
    "EpsilonAlpha2Beta1Flat": lambda: nrm.presets.EpsilonAlpha2Beta1Flat(),
}
MIX_POOL = ("zero", "epsilon", "gamma", "zplus", "alphabeta21", "wsquare", "flat", "epsilon-renormalize",
            "epsilon-unsigned", "wsquare-bias")


def mixed_rules(case: Case, seed: int):
    """A random per-layer assignment: keys are layer names (sometimes an activation's alias),
    module types and nrm.FIRST, as ``rules=`` accepts them."""
    rng = random.Random(seed * 7919 + 1)
    net = nrm.ProperFFNN(case.model, case.x[:1])
    rules: dict = {}
    if rng.random() < 0.5:
        rules[nrm.FIRST] = rng.choice([R.Flat(), R.WSquare(), R.ZBox(-1.0, 1.0)])
    for t in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d):
        rules[t] = RULES[rng.choice(MIX_POOL)]()
    for block in net.linear_blocks():
        if rng.random() < 0.5:
            names = [block.name] + [s.name for s in block.trailing]
            rules[rng.choice(names)] = RULES[rng.choice(MIX_POOL)]()
    return rules


# -- events ---------------------------------------------------------------------------------


def random_atom(rng: random.Random, name: str, shape: tuple) -> nrm.Event:
    """{X_name ∈ S} with S by index, channels or mask (or all), sometimes with the absorber."""
    n = math.prod(shape)
    absorber = rng.random() < 0.3
    kind = rng.choice(["index", "index", "channels", "mask", "all"])
    if kind == "index":
        return nrm.At(name, index=rng.sample(range(n), rng.randint(0 if absorber else 1, min(n, 3))),
                      absorber=absorber)
    if kind == "channels":
        return nrm.At(name, channels=rng.sample(range(shape[0]), rng.randint(1, shape[0])), absorber=absorber)
    if kind == "mask":
        mask = torch.tensor([rng.random() < 0.5 for _ in range(n)], dtype=torch.bool).reshape(shape)
        return nrm.At(name, mask=mask, absorber=absorber)
    return nrm.At(name, absorber=absorber)


def random_cylinder(rng: random.Random, names: dict[str, tuple[int, tuple]], max_layers: int = 3) -> nrm.Event:
    """An intersection of atoms on 1–``max_layers`` layers (any names, aliases included)."""
    chosen = rng.sample(sorted(names), rng.randint(1, min(max_layers, len(names))))
    ev = nrm.OMEGA
    for name in chosen:
        ev = ev & random_atom(rng, name, names[name][1])
    return ev


# -- a case with its exact oracle -------------------------------------------------------------


@dataclass
class ExactCase:
    """A case explained twice: by the engine (float64) and by the exact oracle."""

    case: Case
    rules: object
    target: int | None
    start: torch.Tensor | None
    measure: nrm.Measure
    exact: ExactMeasure
    scale: float  # max(1, Σ_ω |μ(ω)|): float errors of any event are relative to this
    redraws: int  # how many drawn networks were passed over (f ≈ 0 or margin too small)

    @property
    def network(self) -> ExactNetwork:
        return self.exact.network

    def __repr__(self) -> str:
        return f"ExactCase({self.case!r}, rules={self.rules!r}, redraws={self.redraws})"


MIN_MARGIN = 1e-6
"""Cases closer than this to a float discontinuity (see ExactNetwork.margin) are redrawn."""


def exact_case(seed: int, rules_for, *, builder=None, use_start: bool = False) -> ExactCase:
    """The first well-conditioned case among seeds seed, seed + 100003, … of one kind
    (``builder``, by default the kind :func:`network` gives ``seed``): |f| ≥ 0.05 for the
    target (or Σ R for a start vector) and oracle margin ≥ MIN_MARGIN. Deterministic."""
    builder = builder or BUILDERS[seed % len(BUILDERS)]
    for attempt in range(50):
        s = seed + 100_003 * attempt
        case = builder(s)
        rules = rules_for(case, s)
        x = case.x[:1]
        with torch.no_grad():
            out = case.model(x)
        target, start = None, None
        if use_start:
            g = torch.Generator().manual_seed(s)
            start = torch.randn(out.shape, generator=g, dtype=DTYPE)
            if abs(float(start.sum())) < 0.05:
                continue
        else:
            target = int(out.abs().argmax())
            if abs(float(out[0, target])) < 0.05:
                continue
        net = ExactNetwork.from_model(case.model, x, rules)
        if net.margin() < MIN_MARGIN:
            continue
        exact = net.explain(target=target, start=start)
        measure = nrm.explain(case.model, x, target=target, start=start, rules=rules)
        scale = max(1.0, float(exact.total_variation()))
        return ExactCase(case, rules, target, start, measure, exact, scale, attempt)
    raise RuntimeError(f"no well-conditioned case for seed {seed} in 50 draws")


def as_tensor(values) -> torch.Tensor:
    """Exact values (a Fraction or an object array of them) as a float64 tensor."""
    arr = np.asarray(values, dtype=object)
    return torch.tensor(np.vectorize(float, otypes=[float])(arr) if arr.size else np.zeros(arr.shape),
                        dtype=DTYPE).reshape(arr.shape)


def assert_matches(engine, exact, scale: float, what: str, rel: float = 1e-9) -> None:
    """|engine − exact| ≤ rel · scale elementwise (float64 engine against exact fractions)."""
    expected = as_tensor(exact)
    got = torch.as_tensor(engine, dtype=DTYPE).reshape(expected.shape)
    err = float((got - expected).abs().max()) if expected.numel() else 0.0
    assert err <= rel * scale, f"{what}: max error {err:.3e} > {rel:.0e}·{scale:.3g}\nengine {got}\nexact  {expected}"


def seeded(module: nn.Module, seed: int, scale: float = 0.7) -> nn.Module:
    """``module`` with every parameter drawn N(0, scale²) in float64 from ``seed``, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale)
    return module.eval()


class Fn(nn.Module):
    """A function as a module: the functional spelling of an operation (``F.glu(x, -1)``,
    ``x.log_softmax(-1)``), as a model's ``forward`` writes it."""

    def __init__(self, fn, name: str = ""):
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


@contextlib.contextmanager
def product_split(how: str):
    """Read every product of activations with ``Multiply(split=how)`` (the default kind back afterwards)."""
    from nrm.layers.products import Multiply

    nrm.layers.register(Multiply(split=how))
    try:
        yield
    finally:
        nrm.layers.register(Multiply())
