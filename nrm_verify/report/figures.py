"""Figures of ``nrm-verify explain`` (matplotlib, the non-interactive Agg backend).

matplotlib is the ``report`` extra; this module imports it on first use, so the rest of
nrm_verify works without it. Every function writes one PNG and returns its path.
Relevance is drawn with a diverging colour map centred at 0 (red positive, blue
negative), with symmetric limits ±max|value|.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nrm_verify.report import ZERO  # |μ| at or below it is drawn as nothing

DPI = 110
CMAP = "bwr"


def pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the figures need matplotlib: pip install 'nrm-verify[report]' (or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    pyplot().close(fig)
    return path


def symmetric_limit(values) -> float:
    v = float(np.max(np.abs(values))) if np.size(values) else 0.0
    return v if v > 0 else 1.0


def _show_input(ax, x: torch.Tensor) -> None:
    """One sample's input: an RGB image scaled to [0, 1], a grey image, or a line for a flat input."""
    x = x.detach().double().cpu()
    if x.dim() == 3:
        img = x.permute(1, 2, 0).numpy() if x.shape[0] == 3 else x.mean(0).numpy()
        low, high = img.min(), img.max()
        img = (img - low) / (high - low) if high > low else np.zeros_like(img)
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
    else:
        ax.plot(x.reshape(-1).numpy(), color="black")
    ax.set_title("input")


def _show_map(ax, values: np.ndarray, title: str, fig=None, bar: bool = True) -> None:
    lim = symmetric_limit(values)
    if values.ndim == 2:
        im = ax.imshow(values, cmap=CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        if bar and fig is not None:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    else:
        flat = values.reshape(-1)
        ax.bar(np.arange(flat.size), flat, color=np.where(flat >= 0, "tab:red", "tab:blue"))
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xlabel("input neuron")
    ax.set_title(title, fontsize=9)


def heatmap(path: Path, x: torch.Tensor, values: np.ndarray, title: str) -> Path:
    """The input beside its heatmap μ(X_input = i) (summed over the input's channels)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    _show_input(axes[0], x)
    _show_map(axes[1], values, title, fig)
    return _save(fig, path)


def concepts(path: Path, x: torch.Tensor, plain: np.ndarray, maps: np.ndarray, layer: str,
             channels: Sequence[int], masses: Sequence[float]) -> Path:
    """The input, the plain heatmap and one conditional heatmap μ(X_input = i, X_layer ∈ c)
    per channel c, each on its own symmetric colour scale, with its colour bar."""
    plt = pyplot()
    n = 2 + len(channels)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    flat = axes.reshape(-1)
    _show_input(flat[0], x)
    _show_map(flat[1], plain, "μ(X_input = i)", fig)
    for ax, c, h, mass in zip(flat[2:], channels, maps, masses):
        _show_map(ax, h, f"{layer} channel {c}\nμ(X ∈ c) = {mass:.3g}", fig)
    for ax in flat[n:]:
        ax.axis("off")
    fig.suptitle(f"conditional heatmaps μ(X_input = i, X_{layer} ∈ c) for the top channels c")
    return _save(fig, path)


def masses(path: Path, rows: Sequence[dict]) -> Path:
    """Per layer: positive and negative mass of the real neurons (bars), the absorber's
    mass m_l(⊥_l), and Σ_j m_l(j) (line); Σ_j m_l(j) + m_l(⊥_l) = 1 (L1). When a signed
    part passes ±10 the axis is symlog (linear in [−1, 1]), so the sums stay readable."""
    plt = pyplot()
    names = [r["layer"] for r in rows]
    xs = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.42 * len(rows) + 2), 4.2))
    ax.bar(xs - 0.27, [r["positive"] for r in rows], width=0.27, color="tab:red", label="Σ m_l(j)⁺")
    ax.bar(xs, [r["negative"] for r in rows], width=0.27, color="tab:blue", label="Σ m_l(j)⁻")
    ax.bar(xs + 0.27, [r["absorbed"] for r in rows], width=0.27, color="tab:gray", label="m_l(⊥)")
    ax.plot(xs, [r["real"] for r in rows], "k.-", label="Σ_j m_l(j)")
    ax.axhline(1.0, color="black", linestyle=":", linewidth=0.8)
    ax.axhline(0.0, color="black", linewidth=0.6)
    # symlog: linear on [−1, 1], where Σ_j m_l(j) + m_l(⊥) = 1 lives, logarithmic beyond, so that
    # signed parts of ±1000 (deep residual networks) do not flatten the normalized sums to a line at 0
    big = max((max(abs(r["positive"]), abs(r["negative"]), abs(r["absorbed"])) for r in rows), default=0.0)
    if big > 10:
        ax.set_yscale("symlog", linthresh=1.0, linscale=1.5)
    ax.set_xticks(xs, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("mass (normalized: Σ_j m_l(j) + m_l(⊥) = 1)" + ("; symlog axis, linear in [−1, 1]" if big > 10
                                                                    else ""))
    ax.set_title("per-layer marginal masses")
    ax.legend(fontsize=8, ncols=2)
    return _save(fig, path)


def joint(path: Path, matrix: np.ndarray, layer_a: str, layer_b: str, zoom: int = 24) -> Path:
    """The channel-by-channel joint J[i, k] = μ(X_a ∈ i, X_b ∈ k): the whole matrix, and the
    block of the ``zoom`` channels of each layer with the largest |marginal| (row and column
    sums of J), labelled by channel."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    # a few large pairs would leave the rest white: clip the colour scale at the 99.5th percentile of |J|
    clip = float(np.quantile(np.abs(matrix), 0.995)) if matrix.size else 0.0
    lim = clip if clip > 0 else symmetric_limit(matrix)
    im = axes[0].imshow(matrix, cmap=CMAP, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    axes[0].set_xlabel(f"{layer_b} channel"), axes[0].set_ylabel(f"{layer_a} channel")
    axes[0].set_title(f"μ(X_{layer_a} ∈ i, X_{layer_b} ∈ k), total {matrix.sum():.3g}\n"
                      f"(colour clipped at ±{lim:.2g}, the 99.5th percentile of |J|)", fontsize=9)
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.04)
    rows = np.argsort(-np.abs(matrix.sum(1)), kind="stable")[:zoom]
    cols = np.argsort(-np.abs(matrix.sum(0)), kind="stable")[:zoom]
    block = matrix[np.ix_(rows, cols)]
    lim = symmetric_limit(block)
    im = axes[1].imshow(block, cmap=CMAP, vmin=-lim, vmax=lim, interpolation="nearest")
    axes[1].set_xticks(range(len(cols)), [str(c) for c in cols], rotation=90, fontsize=6)
    axes[1].set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=6)
    axes[1].set_title(f"top {len(rows)} × {len(cols)} channels by |marginal|", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    return _save(fig, path)


def flow(path: Path, data: dict) -> Path:
    """The information flow: one column per layer (input side left), the top channels as
    nodes (area ∝ |m_l(c)|, colour by sign), an edge per pair of nodes of consecutive
    layers with width ∝ |μ(X_a ∈ c, X_b ∈ d)| and colour by its sign, and the critical
    paths drawn over them as numbered dashed lines. Edges of μ = 0 are not drawn (the
    data's ``notes``, shown under the title, say how many, and when nothing flows at all);
    each column is labelled with its layer's name, below and above."""
    plt = pyplot()
    layers = data["layers"]
    nodes = data["nodes"]
    pos = {}
    height = max(len(nodes[l]) for l in layers)
    for i, l in enumerate(layers):
        n = len(nodes[l])
        for r, node in enumerate(nodes[l]):
            pos[(l, node["channel"])] = (i, (n - 1) / 2 - r)  # each column centred, largest m_l(c) on top
    fig, ax = plt.subplots(figsize=(2.6 * len(layers) + 2, 0.55 * height + 2.5))
    drawn = [e for e in data["edges"] if abs(e["mu"]) > ZERO]  # an edge of μ = 0 carries nothing: not drawn
    emax = max((abs(e["mu"]) for e in drawn), default=0.0) or 1.0
    for e in sorted(drawn, key=lambda e: abs(e["mu"])):
        a, b = pos[tuple(e["from"])], pos[tuple(e["to"])]
        w = abs(e["mu"]) / emax
        ax.plot([a[0], b[0]], [a[1], b[1]], color="tab:red" if e["mu"] >= 0 else "tab:blue",
                linewidth=0.3 + 6 * w, alpha=0.25 + 0.6 * w, solid_capstyle="round", zorder=1)
    nmax = max((abs(n["mu"]) for l in layers for n in nodes[l]), default=0.0) or 1.0
    for l in layers:
        for node in nodes[l]:
            x, y = pos[(l, node["channel"])]
            size = 60 + 900 * abs(node["mu"]) / nmax
            colour = "tab:red" if node["mu"] >= 0 else "tab:blue"
            ax.scatter([x], [y], s=size, zorder=3, edgecolors="black", color=colour)
            ax.annotate(f"{node['channel']}", (x, y), xytext=(-(size ** 0.5) / 2 - 3, 0), textcoords="offset points",
                        fontsize=7, zorder=4, ha="right", va="center",
                        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    for rank, p in enumerate(data["paths"]):
        pts = [pos[(l, c)] for l, c in zip(p["layers"], p["channels"])]
        offset = 0.06 * (rank - (len(data["paths"]) - 1) / 2)
        ax.plot([q[0] for q in pts], [q[1] + offset for q in pts], linestyle="--", color=f"C{(rank + 1) % 10}",
                linewidth=1.8, zorder=2, label=f"path {rank + 1}: μ = {p['mu']:.3g}")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("layer (input side → output side); node labels are channel numbers")
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(layers) - 0.5)
    top = (height - 1) / 2 + 0.6
    ax.set_ylim(-(height - 1) / 2 - 0.6, top + 0.5)
    for i, l in enumerate(layers):  # the column's layer, also above it (long figures scroll)
        ax.text(i, top, l, ha="center", va="bottom", fontsize=9, fontweight="bold")
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    title = ("information flow: top channels (nodes, area ∝ |m_l(c)|) and joint relevance of consecutive "
             "layers (edges; red > 0, blue < 0)")
    notes = data.get("notes", [])
    if notes:
        title += "\n" + "\n".join(notes)
    ax.set_title(title, fontsize=9)
    if data["paths"]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="critical paths", title_fontsize=8)
    return _save(fig, path)


def selection(path: Path, curves: dict) -> Path:
    """MSE and SMAPE of the output against the full model as the top-k channels are kept,
    one line per ranking (relevance, gradient×input, random)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, label in ((axes[0], "mse", "MSE"), (axes[1], "smape", "SMAPE (%)")):
        for name, values in curves[metric].items():
            ax.plot(curves["ks"], values, marker=".", label=name)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel(f"channels of {curves['layer']} kept (of {curves['channels']})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"neuron selection at {curves['layer']}: the output with only the top-k channels")
    return _save(fig, path)
