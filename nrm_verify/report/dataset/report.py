"""The report of a run: an HTML page and PNG figures (matplotlib, the ``report`` extra).

* ``absorbed.png`` — the absorbed mass m_l(⊥_l) per layer over the samples, one box per layer;
* ``residuals.png`` — one histogram per law the run checked (L1, L9), the run's merged
  histogram reductions (bins by decade; below 1e-17 in the first bin);
* ``top-<layer>.png`` — per layer of ``layers=`` and channel (the first ``channels``), the
  reference samples where the channel is most relevant (the merged ``channel_top``
  reductions): the samples' images when the dataset can be read (``data=``, or the folder or
  index the run read), else their input heatmaps when the run stored them, else their ids;
* ``selection-<layer>.png`` — per layer of ``selection=``: the neuron-selection curves (MSE
  and SMAPE of the output with the top-k channels kept) averaged over the dataset, one line
  per ranking with a band of ± one standard deviation over the samples (the merged moments);
* ``index.html`` — the counts, the worst L1 samples and the figures.

:func:`figures` returns the matplotlib figures (for tests and notebooks); :func:`build_report`
writes them and the page.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from nrm_verify.report.dataset.sources import as_source
from nrm_verify.report.dataset.store import read_run
from nrm_verify.report.page import html_page

MAX_CHANNELS = 16


def _plt():
    from nrm_verify.report.figures import DPI  # noqa: F401 — the same extra; says what to install if missing
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the report needs matplotlib: pip install 'nrm-verify[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def heat(a: np.ndarray) -> np.ndarray:
    """A sample's array as a 2-D picture: (C, H, W) summed over C, (n,) as one row."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3:
        return a.sum(0)
    if a.ndim == 2:
        return a
    return a.reshape(1, -1)


def _heat_panel(ax, a: np.ndarray, title: str) -> None:
    picture = heat(a)
    lim = float(np.abs(picture).max()) or 1.0
    ax.imshow(picture, cmap="bwr", vmin=-lim, vmax=lim, aspect="auto" if picture.shape[0] == 1 else "equal")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def worst_figure(comparison):
    """The worst samples of a :class:`~nrm_verify.report.dataset.regress.RunComparison`, one
    row each: recorded, current, difference (None when no sample was compared)."""
    if not comparison.worst:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(comparison.worst), 3, figsize=(7, 2.2 * len(comparison.worst)), squeeze=False)
    for row, s in zip(axes, comparison.worst):
        old, new = comparison.arrays[s.id]
        for ax, a, what in zip(row, (old, new, new - old), ("recorded", "current", "difference")):
            _heat_panel(ax, a, f"{s.id} {what}" + (f" dev {s.deviation:.2g}" if what == "difference" else ""))
    return fig


def _absorbed(plt, manifest: dict, rows: list[dict]):
    layers = manifest["layers"]
    values = [[r[f"absorbed/{name}"] for r in rows if r[f"absorbed/{name}"] is not None] for name in layers]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(layers)), 3.5))
    ax.boxplot(values)
    ax.set_xticks(range(1, len(layers) + 1), layers, rotation=70, fontsize=7)
    ax.set_ylabel("absorbed mass m_l(⊥_l)")
    ax.set_title(f"absorbed mass per layer ({len(rows)} samples)")
    return fig


def _residuals(plt, laws: list[str], reductions: dict):
    fig, axes = plt.subplots(1, len(laws), figsize=(4.5 * len(laws), 3.2), squeeze=False)
    for ax, law in zip(axes[0], laws):
        h = reductions[f"{law.lower()}_histogram"]
        edges = np.asarray(h["edges"])
        ax.bar(np.arange(len(h["counts"])), h["counts"], width=0.9)
        ticks = np.arange(0, len(edges), 3)
        ax.set_xticks(ticks - 0.5, [f"{e:.0e}" for e in edges[ticks]], rotation=60, fontsize=7)
        ax.set_title(f"{law} residual ({sum(h['counts'])} samples; above {h['above']}, NaN {h['nan']})", fontsize=8)
        ax.set_ylabel("samples")
    return fig


def _pictures(folder: Path, manifest: dict, data):
    """``picture(row)`` → (2-D array, cmap) for the image grids, or None (ids only)."""
    where = manifest["fingerprint"]["dataset"].get("where") or ""
    if data is None and where and Path(where).exists():
        data = where
    if data is not None:
        source = as_source(data, size=manifest["fingerprint"]["sample_shape"][-1])

        def image(row: int):
            x = source.load(row)[0].double().numpy()
            if x.ndim == 3 and x.shape[0] == 3:
                x = x.transpose(1, 2, 0)
                return (x - x.min()) / (np.ptp(x) or 1.0), None
            return heat(x), "gray"
        return image
    if "marginal/input" in manifest.get("arrays", {}):
        import zarr
        stored = zarr.open_group(str(folder / "arrays.zarr"), mode="r")["marginal/input"]
        return lambda row: (heat(stored[row]), "bwr")
    return None


def _top(plt, layer: str, top: dict, ids: dict[int, str], picture, channels: int):
    shown = min(channels, top["channels"])
    k = top["k"]
    fig, axes = plt.subplots(shown, k, figsize=(1.3 * k, 1.4 * shown), squeeze=False)
    for c in range(shown):
        for j in range(k):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(top["rows"][c]):
                ax.axis("off")
                continue
            row, value = top["rows"][c][j], top["values"][c][j]
            if picture is None:
                ax.text(0.5, 0.5, ids[row], ha="center", va="center", fontsize=7)
            else:
                a, cmap = picture(row)
                lim = float(np.abs(a).max()) or 1.0
                ax.imshow(a, cmap=cmap, **({"vmin": -lim, "vmax": lim} if cmap == "bwr" else {}))
            ax.set_title(f"{ids[row]} {value:.2g}", fontsize=6)
            if j == 0:
                ax.set_ylabel(f"ch {c}", fontsize=7)
    fig.suptitle(f"{layer}: the top samples per channel", fontsize=9)
    return fig


def _selection(plt, layer: str, ks: list[int], rankings: list[str], reductions: dict):
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4))
    for ax, metric in zip(axes, ("mse", "smape")):
        for r in rankings:
            moments = reductions[f"selection/{layer}/{r}/{metric}"]
            mean, n = np.asarray(moments["mean"], dtype=np.float64), moments["count"]
            sd = np.sqrt(np.asarray(moments["m2"], dtype=np.float64) / max(n, 1))
            ax.plot(ks, mean, marker=".", label=r)
            ax.fill_between(ks, mean - sd, mean + sd, alpha=0.2)
        ax.set_xlabel(f"channels of {layer} kept (k)")
        ax.set_ylabel(metric.upper() + (" (%)" if metric == "smape" else ""))
        ax.set_yscale("symlog" if metric == "mse" else "linear")
        ax.legend(fontsize=7)
    fig.suptitle(f"{layer}: selection curves, mean ± sd over {n} samples", fontsize=9)
    return fig


def figures(folder: str | os.PathLike, data=None, channels: int = MAX_CHANNELS) -> dict:
    """The report's figures of the run in ``folder``: ``{"absorbed": fig, "residuals": fig,
    "top-<layer>": fig, …}`` (residuals only when the run checked a law)."""
    import json

    manifest, store = read_run(folder)
    folder = Path(folder)
    plt = _plt()
    rows = [r for r in store.table().to_pylist() if r["status"] == "ok"]
    reductions = json.loads((folder / "reductions.json").read_text())
    spec = manifest["fingerprint"]["spec"]
    out = {"absorbed": _absorbed(plt, manifest, rows)}
    if spec["laws"]:
        out["residuals"] = _residuals(plt, spec["laws"], reductions)
    ids = {r["row"]: r["id"] for r in rows}
    picture = _pictures(folder, manifest, data) if spec["layers"] else None
    for layer in spec["layers"]:
        if f"channel_top/{layer}" in reductions:
            out[f"top-{layer}"] = _top(plt, layer, reductions[f"channel_top/{layer}"], ids, picture, channels)
    for layer, ks in manifest.get("selection", {}).items():
        rankings = [r for r in ("relevance", "gradient×input", "random") if f"selection/{layer}/{r}/mse" in reductions]
        out[f"selection-{layer}"] = _selection(plt, layer, ks, rankings, reductions)
    return out


def build_report(folder: str | os.PathLike, out: str | os.PathLike | None = None, data=None,
                 channels: int = MAX_CHANNELS) -> Path:
    """Write the report of the run in ``folder`` to ``out`` (default ``folder/report``):
    the figures as PNG and ``index.html``; returns the page's path."""
    manifest, store = read_run(folder)
    out = Path(out) if out is not None else Path(folder) / "report"
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    images = []
    for name, fig in figures(folder, data, channels).items():
        fig.savefig(out / f"{name}.png", dpi=90, bbox_inches="tight", facecolor="white")
        plt.close(fig)
        images.append(f"<h2>{html.escape(name)}</h2><img src='{html.escape(name)}.png'>")
    rows = store.table().to_pylist()
    worst = sorted((r for r in rows if r.get("l1_residual") is not None), key=lambda r: -r["l1_residual"])[:10]
    table = "".join(f"<tr><td>{html.escape(r['id'])}</td><td>{r['l1_residual']:.3g}</td></tr>" for r in worst)
    body = (f"<p>{manifest.get('rows', len(rows))} of {manifest.get('samples', '?')} samples, "
            f"{manifest.get('errors', 0)} errors, status {html.escape(str(manifest.get('status')))}; "
            f"model {html.escape(manifest['fingerprint']['model']['class'])}, rules "
            f"{html.escape(manifest['fingerprint']['rules'])}</p>"
            + (f"<h2>worst L1 residuals</h2><table><tr><th>id</th><th>residual</th></tr>{table}</table>"
               if worst else "") + "".join(images))
    (out / "index.html").write_text(html_page(f"run {Path(folder).resolve().name}", body))
    return out / "index.html"
