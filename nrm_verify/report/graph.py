"""A graph drawing of a graph network's explanation: nodes coloured by signed relevance, the
top walks drawn as arrows along their node paths (matplotlib, the ``report`` extra).

``draw_graph`` writes one PNG and returns its path; ``graph_figure`` builds the same figure and
returns it with what was drawn (:class:`GraphFigure`), for tests and for callers who add to it.
No networkx: the layout is a seeded Fruchterman–Reingold layout in numpy on the drawn nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nrm_verify.report.figures import CMAP, DPI, pyplot, symmetric_limit

MAX_LAYOUT = 1000  # the most nodes the O(n²) layout (and a readable drawing) takes


@dataclass
class GraphFigure:
    """What :func:`graph_figure` drew: the matplotlib figure, the node ids drawn (in the order of
    the node scatter's points, artist gid ``"nodes"``), the walks drawn (one arrow each, gid
    ``"walk"``, in the order given), and the number of self-steps drawn as loops."""

    figure: Any
    nodes: np.ndarray
    walks: list
    self_steps: int


def _ints(values, name: str, n: int) -> np.ndarray:
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"{name} as a boolean mask must have shape ({n},), one entry per node, got {arr.shape}")
        return np.flatnonzero(arr)
    arr = arr.reshape(-1) if arr.ndim else arr.reshape(1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integer node ids (or a boolean mask of the nodes), got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise ValueError(f"{name} names nodes outside 0 … {n - 1} (node_relevance has {n} nodes): {bad[:5].tolist()}")
    return arr


def _check(edge_index, node_relevance, walks, highlight, positions, nodes, explained):
    """Everything as numpy, or a ValueError naming the argument and what to fix."""
    rel = np.asarray(node_relevance.detach().cpu() if hasattr(node_relevance, "detach") else node_relevance)
    if rel.ndim != 1 or not np.issubdtype(rel.dtype, np.floating) or rel.size == 0:
        raise ValueError(f"node_relevance must be a non-empty 1-D float array, one value per node, got shape "
                         f"{rel.shape} of dtype {rel.dtype}; sum a (N, F) marginal over its features first "
                         "(m.marginal('input')[0].sum(-1))")
    if not np.isfinite(rel).all():
        raise ValueError(f"node_relevance has {int((~np.isfinite(rel)).sum())} NaN or infinite entries (first at node "
                         f"{int(np.flatnonzero(~np.isfinite(rel))[0])}); a drawing of relevance needs finite values")
    n = rel.size
    ei = np.asarray(edge_index.detach().cpu() if hasattr(edge_index, "detach") else edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E) (sources, targets), got {ei.shape}; a list of "
                         "(source, target) pairs of shape (E, 2) is edge_index.t()")
    if ei.size and not np.issubdtype(ei.dtype, np.integer):
        raise ValueError(f"edge_index must hold integer node ids, got dtype {ei.dtype}")
    ei = ei.astype(np.int64)
    if ei.size and (ei.min() < 0 or ei.max() >= n):
        bad = ei[:, ((ei < 0) | (ei >= n)).any(0)]
        raise ValueError(f"edge_index names nodes outside 0 … {n - 1} (node_relevance has {n} nodes): edges "
                         f"{bad.T.tolist()[:5]}")
    checked = []
    for k, item in enumerate(walks or []):
        try:
            path, r = item
            path = tuple(int(v) for v in path)
            r = float(r)
        except (TypeError, ValueError):
            raise ValueError(f"walks[{k}] must be (tuple of node ids, relevance), as nrm.gnn.top_walks returns, "
                             f"got {item!r}") from None
        if not path:
            raise ValueError(f"walks[{k}] has no nodes")
        outside = [v for v in path if not 0 <= v < n]
        if outside:
            raise ValueError(f"walks[{k}] = {path} names nodes outside 0 … {n - 1} (node_relevance has {n} nodes): "
                             f"{outside}; give the graph and relevance the walks were computed on")
        if not np.isfinite(r):
            raise ValueError(f"walks[{k}] has relevance {r}; a drawn walk needs a finite relevance")
        checked.append((path, r))
    marked = np.unique(_ints(highlight, "highlight", n)) if highlight is not None else np.zeros(0, np.int64)
    subset = np.unique(_ints(nodes, "nodes", n)) if nodes is not None else None
    if subset is not None and subset.size == 0:
        raise ValueError("nodes is empty: name at least one node to draw")
    if explained is not None:
        _ints([explained], "explained", n)
    pos = None
    if positions is not None:
        pos = np.asarray(positions, dtype=np.float64)
        if pos.shape != (n, 2) or not np.isfinite(pos).all():
            raise ValueError(f"positions must be a finite array of shape ({n}, 2), one (x, y) per node, got "
                             f"{pos.shape}")
    return ei, rel, checked, marked, subset, pos


def neighbourhood(edge_index: np.ndarray, seeds: Iterable[int], hops: int = 1) -> np.ndarray:
    """The nodes within ``hops`` edges of ``seeds`` (either direction), sorted."""
    seen = set(int(s) for s in seeds)
    frontier = set(seen)
    src, dst = np.asarray(edge_index)
    for _ in range(hops):
        mask = np.isin(src, list(frontier)) | np.isin(dst, list(frontier))
        reached = set(src[mask].tolist()) | set(dst[mask].tolist())
        frontier = reached - seen
        seen |= reached
        if not frontier:
            break
    return np.array(sorted(seen), dtype=np.int64)


def layout(n: int, edges: np.ndarray, seed: int = 0, iterations: int = 150) -> np.ndarray:
    """Fruchterman–Reingold positions (n, 2) in [0, 1]² of ``n`` nodes with the edges (2, E) among
    them (local ids), from seeded random starts; O(n²) per iteration, for n ≤ 1000."""
    rng = np.random.default_rng(seed)
    pos = rng.random((n, 2))
    if n == 1:
        return np.full((1, 2), 0.5)
    k = 1.0 / np.sqrt(n)
    adj = np.zeros((n, n))
    if edges.size:
        adj[edges[0], edges[1]] = 1.0
        adj[edges[1], edges[0]] = 1.0
    np.fill_diagonal(adj, 0.0)
    temp = 0.1
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=-1), 1e-3)
        force = k * k / dist**2 - adj * dist / k  # repulsion k²/d, attraction d²/k (per unit vector)
        disp = (delta * force[..., None]).sum(1)
        length = np.maximum(np.linalg.norm(disp, axis=-1), 1e-9)
        pos += disp / length[:, None] * np.minimum(length, temp)[:, None]
        temp -= 0.1 / (iterations + 1)
    pos -= pos.min(0)
    return pos / max(float(pos.max()), 1e-9)


def _walk_path(points: np.ndarray, size: float, offset: np.ndarray, stop: float = 0.0):
    """A matplotlib Path through ``points`` (one per walk step), a small loop at each repeated
    point (a self-step), shifted by ``offset``, the last straight step ending ``stop`` short of
    its node (the arrow head at the node's rim); returns (Path, number of self-steps)."""
    from matplotlib.path import Path as MplPath

    verts, codes, loops = [points[0] + offset], [MplPath.MOVETO], 0
    for a, b in zip(points, points[1:]):
        if np.allclose(a, b):
            loops += 1
            c = a + offset
            verts += [c + size * np.array([1.3, 2.2]), c + size * np.array([-1.3, 2.2]), c]
            codes += [MplPath.CURVE4] * 3
        else:
            verts.append(b + offset)
            codes.append(MplPath.LINETO)
    if codes[-1] == MplPath.LINETO:
        step = verts[-1] - verts[-2]
        length = float(np.linalg.norm(step))
        if length > 2 * stop:
            verts[-1] = verts[-1] - step / length * stop
    return MplPath(np.array(verts), codes), loops


def _drawn_nodes(ei: np.ndarray, walks: list, subset, n: int, pos) -> np.ndarray:
    """The nodes drawn: ``subset`` as given, else the walks' nodes and their 1-hop neighbours,
    else every node of a graph of at most MAX_LAYOUT nodes."""
    if subset is None:
        if walks:
            subset = neighbourhood(ei, {v for w, _ in walks for v in w}, hops=1)
        elif n <= MAX_LAYOUT:
            subset = np.arange(n)
        else:
            raise ValueError(f"the graph has {n} nodes: more than {MAX_LAYOUT} are not drawn readably; give walks "
                             "(their nodes and 1-hop neighbours are drawn) or nodes=[…] (e.g. the explained node's "
                             "k-hop neighbourhood)")
    on_walks = {v for w, _ in walks for v in w}
    if not on_walks <= set(subset.tolist()):
        raise ValueError(f"walks pass nodes that nodes= leaves out: {sorted(on_walks - set(subset.tolist()))[:5]}")
    if subset.size > MAX_LAYOUT and pos is None:
        raise ValueError(f"{subset.size} nodes to draw: more than {MAX_LAYOUT} are not drawn readably (and the "
                         "layout is O(n²)); pass fewer nodes= or positions=")
    return subset


def _draw_walks(ax, walks: list, xy: np.ndarray, local: np.ndarray, span: float) -> int:
    """One arrow per walk along its nodes (red R > 0, blue R < 0, width ∝ |R|); the self-steps drawn as loops."""
    from matplotlib.patches import FancyArrowPatch

    top = max((abs(r) for _, r in walks), default=0.0) or 1.0
    loops = 0
    for k, (walk, r) in enumerate(walks):
        angle = 2 * np.pi * k / max(len(walks), 1)
        offset = 0.006 * span * np.array([np.cos(angle), np.sin(angle)])  # parallel walks side by side
        path, loop = _walk_path(xy[local[list(walk)]], 0.03 * span, offset, stop=0.025 * span)
        loops += loop
        width = 1.0 + 5.0 * abs(r) / top
        arrow = FancyArrowPatch(path=path, arrowstyle=f"-|>,head_length={0.5 + width * 0.12:.2f},"
                                f"head_width={0.3 + width * 0.08:.2f}", color="tab:red" if r > 0 else "tab:blue",
                                linewidth=width, alpha=0.65, zorder=5 + abs(r) / top, mutation_scale=10)
        arrow.set_gid("walk")
        ax.add_patch(arrow)
    return loops


def graph_figure(edge_index, node_relevance, walks: Sequence | None = None, *, title: str | None = None,
                 highlight=None, positions=None, nodes=None, explained: int | None = None, seed: int = 0,
                 labels: bool | None = None) -> GraphFigure:
    """The figure of :func:`draw_graph`, not saved: a :class:`GraphFigure`."""
    ei, rel, walks, marked, subset, pos = _check(edge_index, node_relevance, walks, highlight, positions, nodes,
                                                 explained)
    n = rel.size
    subset = _drawn_nodes(ei, walks, subset, n, pos)
    local = -np.ones(n, dtype=np.int64)
    local[subset] = np.arange(subset.size)
    inside = (local[ei[0]] >= 0) & (local[ei[1]] >= 0) if ei.size else np.zeros(0, bool)
    sub_edges = local[ei[:, inside]] if ei.size else np.zeros((2, 0), np.int64)
    xy = pos[subset] if pos is not None else layout(subset.size, sub_edges, seed)
    span = float(np.ptp(xy, axis=0).max()) or 1.0

    plt = pyplot()
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8.2, 7.0))
    ax.set_aspect("equal")
    ax.axis("off")
    for s, t in sub_edges.T:
        ax.plot(*xy[[s, t]].T, color="0.82", linewidth=0.8, zorder=1)
    lim = symmetric_limit(rel[subset])
    norm = Normalize(-lim, lim)
    size = 260 if subset.size <= 80 else 90
    points = ax.scatter(xy[:, 0], xy[:, 1], c=rel[subset], cmap=CMAP, norm=norm, s=size, edgecolors="0.35",
                        linewidths=0.6, zorder=3)
    points.set_gid("nodes")
    fig.colorbar(points, ax=ax, fraction=0.04, pad=0.02, label="node relevance (summed over features)")
    if labels is None:
        labels = subset.size <= 80
    if labels:
        for (x, y), v in zip(xy, subset):
            ax.text(x, y, str(v), fontsize=6, ha="center", va="center", zorder=7)
    handles = []
    if marked.size:
        ring = marked[local[marked] >= 0]
        rings = ax.scatter(xy[local[ring], 0], xy[local[ring], 1], s=size * 2.6, facecolors="none",
                           edgecolors="tab:green", linewidths=2.2, zorder=2)
        rings.set_gid("highlight")
        handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="tab:green",
                              markeredgewidth=2, markersize=11, label="ground truth"))
    if explained is not None and local[explained] >= 0:
        ax.scatter(*xy[local[explained]], s=size * 1.6, marker="s", facecolors="none", edgecolors="black",
                   linewidths=1.8, zorder=4).set_gid("explained")
        handles.append(Line2D([], [], marker="s", linestyle="", markerfacecolor="none", markeredgecolor="black",
                              markersize=10, label=f"explained node {explained}"))
    loops = _draw_walks(ax, walks, xy, local, span)
    if walks:
        handles += [Line2D([], [], color=c, linewidth=3, label=f"walk, R {s} 0")
                    for c, s, present in (("tab:red", ">", any(r > 0 for _, r in walks)),
                                          ("tab:blue", "<", any(r < 0 for _, r in walks))) if present]
    centre, half = (xy.min(0) + xy.max(0)) / 2, 0.58 * span + 0.04
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=len(handles), fontsize=8,
                  frameon=False)
    note = f"{subset.size} of {n} nodes drawn"
    if walks:
        note += (f"; top {len(walks)} walks i₀ → … → i_L (arrow at the output end), width ∝ |R|"
                 + (f"; {loops} self-steps (i → i) drawn as small loops" if loops else ""))
    ax.set_title((title + "\n" if title else "") + note, fontsize=9)
    return GraphFigure(fig, subset, walks, loops)


def draw_graph(edge_index, node_relevance, walks: Sequence | None = None, *, path, title: str | None = None,
               highlight=None, positions=None, seed: int = 0, nodes=None, explained: int | None = None,
               labels: bool | None = None) -> Path:
    """Draw a graph network's explanation into the PNG ``path`` and return the path.

    * ``edge_index`` (2, E) integer (torch or numpy): the graph, drawn as light grey lines.
    * ``node_relevance`` (N,) float: one value per node (a marginal summed over the features),
      drawn as the nodes' colour on a diverging map centred at 0 (red > 0, blue < 0, limits
      ±max|R| over the drawn nodes), with a colour bar.
    * ``walks``: [(tuple of node ids, relevance)] as ``nrm.gnn.top_walks(…, edge_index=…)``
      returns: one arrow per walk along its node path (head at the last node, the output end),
      red for R > 0, blue for R < 0, width ∝ |R|; a self-step i → i (GCN's self-loop, GIN's
      (1 + ε) x) is a small loop at the node; parallel walks are shifted slightly apart.
    * ``highlight``: node ids or a boolean mask (e.g. a motif), ringed in green.
    * ``explained``: the explained node, outlined with a black square.
    * ``nodes``: the node ids to draw. **Default: the nodes on the walks plus their 1-hop
      neighbourhood** (all nodes when there are no walks and at most 1000 of them): a drawing of
      hundreds of nodes is unreadable, so pass e.g. the explained node's k-hop neighbourhood to
      see more context. Only edges between drawn nodes are drawn.
    * ``positions`` (N, 2): fixed coordinates; else a Fruchterman–Reingold layout of the drawn
      subgraph seeded with ``seed`` (numpy, no networkx).
    * ``labels``: node ids on the nodes (default: when at most 80 nodes are drawn).

    Malformed arguments (shapes, dtypes, NaN relevance, walks or highlights naming nodes out
    of range) raise ValueError saying what to fix. Needs matplotlib:
    ``pip install 'nrm-verify[report]'``."""
    drawn = graph_figure(edge_index, node_relevance, walks, title=title, highlight=highlight, positions=positions,
                         nodes=nodes, explained=explained, seed=seed, labels=labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    drawn.figure.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    pyplot().close(drawn.figure)
    return path
