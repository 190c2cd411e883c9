"""The current side of a dataset-scale comparison (:func:`~nrm_verify.report.dataset.regress.compare_run`):
what an explainer gives for a batch of a run's samples, as float64 arrays, and whether it is a
marginal m_l or a relevance R_l — in this process (:func:`local_explained`) or in a Ray worker
(:mod:`~nrm_verify.report.dataset.ray_compare`), with the same code."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from nrm_verify.report.dataset.engine import model_dtype
from nrm_verify.report.dataset.errors import SpecError

RELEVANCE, MARGINAL = "relevance", "marginal"


def as_current(value, layer: str) -> tuple[np.ndarray, str]:
    """The explainer's output for ``layer`` and whether it is a marginal or a relevance."""
    if isinstance(value, Mapping):
        keys = {f"marginal/{layer}": MARGINAL, layer: RELEVANCE, f"relevance/{layer}": RELEVANCE}
        found = [key for key in keys if key in value]
        if found:
            value, quantity = value[found[0]], keys[found[0]]
        else:
            raise SpecError(f"the explainer returned {sorted(value)[:6]}; none of marginal/{layer}, {layer}, "
                            f"relevance/{layer}")
    else:
        quantity = MARGINAL
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise SpecError(f"the explainer returned a {type(value).__name__}; give a tensor or a dict of tensors")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64), quantity


def explained(fn: Callable, model: torch.nn.Module, x: torch.Tensor, targets: list[int],
              layer: str) -> tuple[np.ndarray, str]:
    """The explainer's output for ``layer`` on one batch, as float64 (n, …), and whether it is
    a marginal or a relevance (an explainer that starts from R_c = 1, the ``zennit:…`` specs,
    gives R / f_c = m: a marginal)."""
    with torch.enable_grad():
        current, quantity = as_current(fn(model, x, targets), layer)
    if getattr(fn, "start", "f") == "one-hot":
        quantity = MARGINAL
    return current, quantity


def local_explained(rows: list[dict], model: torch.nn.Module, source, fn: Callable, layer: str, batch_size: int):
    """The run's rows explained here, ``batch_size`` at a time: (rows, current, quantity) per batch."""
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        x = torch.stack([source.load(r["row"])[0] for r in batch]).to(model_dtype(model))
        current, quantity = explained(fn, model, x, [r["target"] for r in batch], layer)
        yield [r["row"] for r in batch], current, quantity
