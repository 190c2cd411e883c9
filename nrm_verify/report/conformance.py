"""The report of ``nrm-verify check``: the conformance table of
:mod:`nrm_verify.validate.conformance` as ``report.md``, ``report.html`` and ``report.json``, and two
figures (matplotlib, Agg backend, imported only when the figures are drawn):

* ``matrix.png`` — rows (rules, presets) × columns (L1 … L18, INV, peers), one coloured
  square per verdict: proved, held on N cases, violated, n/a, not checked;
* ``deviations.png`` — per law, the worst deviation the search measured over all rows
  (log scale, relative to the size of the terms, NRM-SPEC §4), with the tolerance it was
  held to.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from nrm_verify.laws.status import HELD, NOT_APPLICABLE, NOT_CHECKED, PROVED, VIOLATED
from nrm_verify.validate.conformance import STATUSES, Conformance
from nrm_verify.validate.conformance import titles as column_titles

COLOURS = {PROVED: "#1a7f37", HELD: "#8fd19e", VIOLATED: "#d1242f", NOT_APPLICABLE: "#d0d7de",
           NOT_CHECKED: "#ffffff"}
"""Cell colours: dark green proved, light green held, red violated, grey n/a, white not checked."""

LEGEND = {PROVED: "proved symbolically (and no counterexample found)", HELD: "held on N generated cases",
          VIOLATED: "violated (counterexample below)", NOT_APPLICABLE: "the law says nothing about this row",
          NOT_CHECKED: "not checked (no check yet, or the source was not run)"}


def write(result: Conformance, out: str | Path, figures: bool = True) -> dict[str, Path]:
    """Write the report into the folder ``out`` (created); returns {kind: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    if figures:
        paths["matrix"] = matrix_figure(result, out / "matrix.png")
        paths["deviations"] = deviation_figure(result, out / "deviations.png")
    paths["json"] = out / "report.json"
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, default=repr) + "\n", encoding="utf-8")
    paths["md"] = out / "report.md"
    paths["md"].write_text(markdown(result, figures), encoding="utf-8")
    paths["html"] = out / "report.html"
    paths["html"].write_text(html_page(result, figures), encoding="utf-8")
    return paths


# -- text ------------------------------------------------------------------------------------------
def summary(result: Conformance) -> str:
    counts = result.counts()
    verdict = "no law violated" if result.ok else f"{len(result.violated)} cell(s) VIOLATED" + (
        f", {len(result.failures)} other failure(s)" if result.failures else "")
    parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
    return f"{verdict}: {len(result.rows)} rows × {len(result.columns)} columns ({parts}); " \
           f"{result.seconds.get('total', 0.0):.1f} s"


def terminal_table(result: Conformance) -> str:
    """The table as fixed-width text (one line per row)."""
    first = max(len(r) for r in result.rows) if result.rows else 4
    widths = {c: max(len(c), *(len(result.cell(r, c).short) for r in result.rows)) for c in result.columns}
    head = f"{'':<{first}}  " + " ".join(f"{c:<{widths[c]}}" for c in result.columns)
    lines = [head, "-" * len(head)]
    for r in result.rows:
        lines.append(f"{r:<{first}}  " + " ".join(f"{result.cell(r, c).short:<{widths[c]}}" for c in result.columns))
    lines.append("proved: symbolic proof · held N: no violation in N generated cases · n/a: the law says nothing "
                 "about it · '·': not checked")
    return "\n".join(lines)


def _deviation_text(cell) -> str:
    if cell.deviation is None:
        return ""
    return f"worst deviation {cell.deviation:.3g} (tolerance {cell.tolerance:.2g})" if cell.tolerance else \
        f"worst deviation {cell.deviation:.3g}"


def markdown(result: Conformance, figures: bool = True) -> str:
    titles = column_titles()
    lines = ["# nrm-verify check: conformance of the rules and presets to the laws", "",
             f"**{summary(result)}**", "",
             "Rows: the built-in rules of `nrm.rules` (each drawn with its parameters and conventions, on every "
             "layer; z^B on the first layer) and the presets of `nrm.presets`. Columns: the laws of NRM-SPEC §4, "
             "INV (batch invariance) and peer equivalence.", "", "## Sources", ""]
    for name, text in result.sources.items():
        lines.append(f"- **{name}**: {text}")
    lines += ["", "## Table", ""]
    lines.append("| rule / preset | " + " | ".join(result.columns) + " |")
    lines.append("|---|" + "---|" * len(result.columns))
    for r in result.rows:
        cells = []
        for c in result.columns:
            cell = result.cell(r, c)
            mark = {PROVED: "✓ ", HELD: "✓ ", VIOLATED: "✗ "}.get(cell.status, "")
            cells.append(mark + cell.short.replace("·", "—"))
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += ["", "Columns: " + "; ".join(f"**{c}** {titles.get(c, c)}" for c in result.columns) + ".", "",
              "Verdicts: " + "; ".join(f"*{k}*: {v}" for k, v in LEGEND.items()) + "."]
    if figures:
        lines += ["", "![pass/fail matrix](matrix.png)", "", "![worst deviation per law](deviations.png)"]
    bad = result.violated
    lines += ["", "## Violations", ""]
    if not bad and not result.failures:
        lines.append("None.")
    lines += [f"- {f}" for f in result.failures]
    for r, c in bad:
        cell = result.cell(r, c)
        lines += [f"### {r}, {c} ({titles.get(c, c)})", "", cell.detail or "(no detail)", ""]
        if cell.symbolic:
            lines += [f"Symbolic: {cell.symbolic}", ""]
        if cell.counterexample:
            lines += ["Runnable counterexample:", "", "```python", cell.counterexample.rstrip(), "```", ""]
    lines += ["", "## Details per row", ""]
    for r in result.rows:
        lines += [f"### {r}", ""]
        for c in result.columns:
            cell = result.cell(r, c)
            bits = [b for b in (cell.detail, _deviation_text(cell),
                                f"symbolic: {cell.symbolic}" if cell.symbolic else "") if b]
            lines.append(f"- **{c}** {cell.status}" + (f" — {'; '.join(bits)}" if bits else ""))
        lines.append("")
    devs = result.worst_deviations()
    if devs:
        lines += ["## Worst deviation per law (over all rows)", "", "| law | worst deviation |", "|---|---|"]
        lines += [f"| {c} | {d:.3g} |" for c, d in devs.items()]
        lines.append("")
    lines += ["## Time", ""] + [f"- {k}: {v:.1f} s" for k, v in result.seconds.items()]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def html_page(result: Conformance, figures: bool = True) -> str:
    titles = column_titles()
    e = html.escape
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #8c959f;padding:3px 6px;text-align:center}"
             "td.name{text-align:left;font-weight:600}pre{background:#f6f8fa;padding:1em;overflow-x:auto}"
             ".legend span{display:inline-block;padding:2px 8px;margin-right:6px;border:1px solid #8c959f}")
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>nrm-verify check</title>",
           f"<style>{style}</style></head><body>", "<h1>nrm-verify check</h1>", f"<p><b>{e(summary(result))}</b></p>",
           "<ul>"]
    out += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in result.sources.items()]
    out += ["</ul>", "<p class='legend'>"]
    out += [f"<span style='background:{COLOURS[s]}'>{e(s)}</span>" for s in STATUSES]
    out += ["</p>", "<table><tr><th>rule / preset</th>"]
    out += [f"<th title='{e(titles.get(c, c))}'>{e(c)}</th>" for c in result.columns]
    out.append("</tr>")
    for r in result.rows:
        out.append(f"<tr><td class='name'>{e(r)}</td>")
        for c in result.columns:
            cell = result.cell(r, c)
            tip = "; ".join(b for b in (cell.detail, _deviation_text(cell), cell.symbolic) if b)
            colour = "#ffffff" if cell.status == VIOLATED else "#000000"
            out.append(f"<td style='background:{COLOURS[cell.status]};color:{colour}' title='{e(tip)}'>"
                       f"{e(cell.short)}</td>")
        out.append("</tr>")
    out.append("</table><p>Hover over a cell for its detail.</p>")
    if figures:
        out += ["<h2>Figures</h2>", "<img src='matrix.png' alt='pass/fail matrix' style='max-width:100%'>",
                "<img src='deviations.png' alt='worst deviation per law' style='max-width:100%'>"]
    out.append("<h2>Violations</h2>")
    if not result.violated and not result.failures:
        out.append("<p>None.</p>")
    out += [f"<p>{e(f)}</p>" for f in result.failures]
    for r, c in result.violated:
        cell = result.cell(r, c)
        out += [f"<h3>{e(r)}, {e(c)} ({e(titles.get(c, c))})</h3>", f"<p>{e(cell.detail)}</p>"]
        if cell.symbolic:
            out.append(f"<p>Symbolic: {e(cell.symbolic)}</p>")
        if cell.counterexample:
            out.append(f"<pre>{e(cell.counterexample)}</pre>")
    out.append("<h2>Time</h2><ul>")
    out += [f"<li>{e(k)}: {v:.1f} s</li>" for k, v in result.seconds.items()]
    out.append("</ul>")
    if result.notes:
        out += ["<h2>Notes</h2><ul>"] + [f"<li>{e(n)}</li>" for n in result.notes] + ["</ul>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- figures ---------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def matrix_figure(result: Conformance, path: Path) -> Path:
    """The pass/fail matrix as a coloured grid, the cell's short text inside."""
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    plt = _pyplot()
    rows, cols = result.rows, result.columns
    grid = [[to_rgb(COLOURS[result.cell(r, c).status]) for c in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(cols), 1.6 + 0.42 * len(rows)), dpi=110)
    ax.imshow(grid, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_xticks([x - 0.5 for x in range(1, len(cols))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(rows))], minor=True)
    ax.grid(which="minor", color="#8c959f", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            cell = result.cell(r, c)
            text = {PROVED: "P", HELD: str(cell.cases), VIOLATED: "✗", NOT_APPLICABLE: "–"}.get(cell.status, "")
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5,
                    color="white" if cell.status in (PROVED, VIOLATED) else "black")
    handles = [Patch(facecolor=COLOURS[s], edgecolor="#8c959f", label=s) for s in STATUSES]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=len(handles), fontsize=8,
              frameon=False)
    ax.set_title("nrm-verify check: rules and presets × laws (P proved, N held on N cases)", fontsize=10, pad=22)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def deviation_figure(result: Conformance, path: Path) -> Path:
    """Per law, the worst deviation over every row (log scale), its tolerance as a tick."""
    plt = _pyplot()
    floor = 1e-18
    laws = [c for c in result.columns if any(result.cell(r, c).deviation is not None for r in result.rows)]
    worst, tols, colours = [], [], []
    for c in laws:
        cells = [result.cell(r, c) for r in result.rows if result.cell(r, c).deviation is not None]
        cell = max(cells, key=lambda x: math.inf if math.isnan(x.deviation) else
                   x.deviation / (x.tolerance or 1.0))
        d = cell.deviation
        worst.append(1e3 if math.isnan(d) else max(d, floor))
        tols.append(cell.tolerance)
        colours.append(COLOURS[VIOLATED] if any(result.cell(r, c).status == VIOLATED for r in result.rows)
                       else "#0969da")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(laws) + 2), 3.8), dpi=110)
    if laws:
        xs = range(len(laws))
        ax.bar(xs, worst, color=colours, bottom=floor)
        for x, t in zip(xs, tols):
            if t:
                ax.plot([x - 0.4, x + 0.4], [t, t], color="black", linewidth=1.2)
        ax.set_yscale("log")
        ax.set_xticks(list(xs), laws, fontsize=8)
        ax.set_ylim(floor, max(max(worst), max((t or 0) for t in tols)) * 10)
        ax.set_ylabel("worst relative deviation")
    else:
        ax.text(0.5, 0.5, "no deviation measured (the search did not run)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title("Worst deviation per law over all rows (bars; black line: tolerance; 0 shown at 1e-18)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["write", "markdown", "html_page", "terminal_table", "summary", "matrix_figure", "deviation_figure",
           "COLOURS", "LEGEND"]
