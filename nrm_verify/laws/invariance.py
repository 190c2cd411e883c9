"""Invariances users rely on (NRM-SPEC §4): a batch gives the per-sample measures; CPU and CUDA agree."""

from __future__ import annotations

from collections.abc import Sequence

import torch

import nrm
from nrm_verify.laws.base import LawResult, Worst, big_terms, canonical_layers, law_result, magnitude, tolerance_for


def batch_invariance(model, x, target, rules=None, *, tol: float | None = None) -> LawResult:
    """A batch gives the same per-sample marginals as one sample at a time."""
    whole = nrm.explain(model, x, target, rules=rules)
    tol = tolerance_for(whole, tol)
    targets = torch.as_tensor(target).reshape(-1).expand(x.shape[0]) if torch.as_tensor(target).numel() == 1 else \
        torch.as_tensor(target).reshape(-1)
    worst = Worst()
    batched = whole.marginals(absorber=True)  # every layer from one pass
    for i in range(x.shape[0]):
        one = nrm.explain(model, x[i:i + 1], int(targets[i]), rules=rules)
        alone = one.marginals(absorber=True)
        size = torch.maximum(magnitude(one), magnitude(whole)[i:i + 1])
        for name in canonical_layers(whole):
            (mb, bb), (ma, ba) = batched[name], alone[name]
            worst.add(mb[i:i + 1], ma, big_terms(one, size).reshape((1,) + (1,) * (ma.dim() - 1)),
                      where=f"sample {i}, m at {name!r}")
            worst.add(bb[i:i + 1], ba, size, where=f"sample {i}, m(⊥) at {name!r}")
    return law_result("INV", "batch invariance", worst.deviation, tol, f"{x.shape[0]} samples, every layer" +
                   (f"; worst: {worst.where} (batched, alone)" if worst.deviation > 0 else ""), pair=worst.pair)


# -- CPU/CUDA invariance ------------------------------------------------------------------------
def available_devices() -> list[str]:
    """"cpu", and "cuda" when torch sees a CUDA device."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rules_on(rules, device):
    """A copy of ``rules`` whose tensor parameters (z^B boxes) live on ``device``."""
    import copy

    rules = copy.deepcopy(rules)
    seen = set()

    def move(obj):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, nrm.rules.Rule):
            for key, value in vars(obj).items():
                if isinstance(value, torch.Tensor):
                    setattr(obj, key, value.to(device))
        elif isinstance(obj, dict):
            for v in obj.values():
                move(v)
        elif hasattr(obj, "__dict__"):
            for v in vars(obj).values():
                move(v)

    move(rules)
    return rules


def device_invariance(model, x, target, rules=None, devices: Sequence[str] | None = None, *,
                      tol: float | None = None, allow_tf32: bool = False) -> LawResult:
    """CPU and CUDA agree: the marginals and the absorbed mass at every layer, and f_c,
    are the same on every device within the float tolerance (1e-9 relative for float64,
    1e-4 for float32, relative to the measure's magnitude).

    ``devices`` defaults to :func:`available_devices`; the model and the input are copied
    to each (the user's model is not moved). With fewer than two devices the law is not
    applicable, and says so. TF32 (cuDNN convolutions use it by default for float32) is
    switched off during the comparison unless ``allow_tf32``: with it, float32 results
    legitimately differ by ~1e-3."""
    import copy

    devices = list(devices) if devices is not None else available_devices()
    if len(devices) < 2:
        return LawResult("INV", "device invariance", None,
                         detail=f"only one device available ({', '.join(devices) or 'none'}): "
                                "torch.cuda.is_available() is False, so there is nothing to compare")
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow_tf32
    try:
        measures = []
        for d in devices:
            moved = copy.deepcopy(model).to(d)
            measures.append(nrm.explain(moved, x.to(d), target, rules=_rules_on(rules, d)))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    base = measures[0]
    tol = tolerance_for(base, tol)
    worst = Worst()
    mag = magnitude(base).cpu()
    for d, m in zip(devices[1:], measures[1:]):
        size = torch.maximum(mag, magnitude(m).cpu())
        worst.add(m.f.cpu(), base.f.cpu(), base.f.abs().cpu(), where=f"f_c on {d}")
        here, there = m.marginals(absorber=True), base.marginals(absorber=True)  # one pass each
        for name in canonical_layers(base):
            (a, abot), (b, bbot) = here[name], there[name]
            a, b = a.cpu(), b.cpu()
            worst.add(a, b, size.reshape((-1,) + (1,) * (a.dim() - 1)), where=f"m at {name!r} on {d}")
            worst.add(abot.cpu(), bbot.cpu(), size, where=f"m(⊥) at {name!r} on {d}")
    return law_result("INV", "device invariance", worst.deviation, tol,
                   f"marginals at {len(canonical_layers(base))} layers on {devices} against {devices[0]}" +
                   (f"; worst: {worst.where}" if worst.deviation > 0 else ""), pair=worst.pair)
