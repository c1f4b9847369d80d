"""report.html: one self-contained page (figures inlined as base64 PNG, no scripts).

Sections: confound warnings, results table, how busy the nodes were, figures with
captions, environment summary, incomplete cells and notes.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from analysis import colocation
from analysis.outputs import MARKDOWN_COLUMNS, memory_gib

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; font-size: 12px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f0f0f0; } td.text { text-align: left; }
.warning { background: #fff3f3; border-left: 4px solid #c00; padding: .5em 1em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #444; } .confound { color: #a00000; }
"""

_CAPTIONS = {
    "throughput": "Global throughput (samples/s) vs processes per framework, one panel per "
    "model and phase. Band: 95 % CI (see the table's CI column); dashed: linear "
    "scaling from the 1-process configuration.",
    "scaling": "Speedup over the 1-process configuration of the same framework, model and "
    "batch size (dotted: ideal), and scaling efficiency = speedup / processes.",
    "memory": "Peak memory per process, the maximum over ranks.",
    "stage_balance": "Pipeline stages: predicted vs measured time per stage.",
}


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 1) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    return "–" if number != number else f"{number:,.{digits}f}"


def results_table(results: Any) -> str:
    knobs = [c for c in results.columns if c.startswith("cfg.")]
    head = ["sweep", *list(MARKDOWN_COLUMNS.values())[:3], *knobs, *list(MARKDOWN_COLUMNS.values())[3:]]
    rows = ["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    knob_values = results[knobs]
    for row in results.itertuples(index=True):
        ci = f"{_num(row.ci95_low)} – {_num(row.ci95_high)}" if row.ci95_low == row.ci95_low else "–"
        text = [row.sweep, row.framework, row.model]
        cells = [f'<td class="text">{_esc(v)}</td>' for v in text]
        cells += [f"<td>{_esc(row.batch_size)}</td>"]
        cells += [f'<td class="text">{_esc(v)}</td>' for v in knob_values.loc[row.Index]]
        cells += [f"<td>{_esc(v)}</td>" for v in (row.world_size,)]
        cells += [
            f'<td class="text">{_esc(row.phase)}</td>',
            f"<td>{_esc(row.repeats)}</td>",
            f"<td>{_num(row.throughput)}</td>",
            f"<td>{ci}</td>",
            f'<td class="text">{_esc(row.ci_basis)}</td>',
            f"<td>{_num(row.speedup, 2)}</td>",
            f"<td>{_num(row.efficiency, 2)}</td>",
            f"<td>{_num(memory_gib(row), 2)}</td>",
            f"<td>{_num(row.accuracy, 3)}</td>",
            f'<td class="text confound">{_esc(row.confound)}</td>',
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def load_table(results: Any) -> str:
    """How busy each row's nodes were while it measured (analysis/colocation.py)."""
    numbers = [c for c in colocation.COLUMNS if c != "busy"]
    if results.empty or not set(numbers) <= set(results.columns) or results[numbers].isna().all().all():
        return "<p>Not recorded for these cells (noop cells, or measured before dnnbench recorded it).</p>"
    head = ["sweep", "framework", "model", "procs", "phase", "CPUs of other processes", "CPU steal %",
            "load (1 min)", "other GPU processes", "other Slurm jobs", "beside other work"]  # fmt: skip
    rows = ["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for row in results.itertuples(index=False):
        busy = colocation.text(row.busy)
        cells = [f'<td class="text">{_esc(v)}</td>' for v in (row.sweep, row.framework, row.model)]
        cells += [f"<td>{_esc(row.world_size)}</td>", f'<td class="text">{_esc(row.phase)}</td>']
        cells += [f"<td>{_num(row.other_cpus, 2)}</td>", f"<td>{_num(100 * row.cpu_steal, 1)}</td>"]
        cells += [f"<td>{_num(row.load_1m, 2)}</td>", f"<td>{_num(row.other_gpu_processes, 0)}</td>"]
        cells += [f"<td>{_num(row.other_slurm_jobs, 0)}</td>", f'<td class="text confound">{_esc(busy)}</td>']
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def environment_table(results: Any, environments: dict[str, dict[str, Any]]) -> str:
    used = [
        h for h in dict.fromkeys(h for value in results.get("environment_hash", []) for h in str(value).split(";") if h)
    ]
    if not used:
        return "<p>No environment recorded.</p>"
    keys = sorted({k for h in used for k in environments.get(h, {})})
    head = "<tr><th>field</th>" + "".join(f"<th>{_esc(h)}</th>" for h in used) + "</tr>"
    body = []
    for key in keys:
        values = [environments.get(h, {}).get(key) for h in used]
        differs = len({str(v) for v in values}) > 1
        style = ' class="text confound"' if differs else ' class="text"'
        body.append(
            f'<tr><td class="text">{_esc(key)}</td>' + "".join(f"<td{style}>{_esc(v)}</td>" for v in values) + "</tr>"
        )
    return "<table>" + head + "\n".join(body) + "</table>"


def problems_list(problems: Any, status: str) -> str:
    chosen = problems[problems["status"] == status] if not problems.empty else problems
    if chosen.empty:
        return "<p>None.</p>"
    items = [
        f"<li><code>{_esc(r.sweep)}/{_esc(r.cell_id)}</code> attempt {_esc(r.attempt)}: {_esc(r.reason)}</li>"
        for r in chosen.itertuples(index=False)
    ]
    return "<ul>" + "\n".join(items) + "</ul>"


def timeline_list(timelines: list[tuple[str, str]]) -> str:
    """Links to the Horovod timelines of the cells that kept one (open in Perfetto or chrome://tracing)."""
    if not timelines:
        return ""
    items = [f'<li><a href="{_esc(href)}">{_esc(label)}</a></li>' for label, href in timelines]
    return (
        "<h2>Horovod timelines</h2>\n<p>Chrome-trace files kept by <code>horovod.timeline=true</code>: "
        "open them in Perfetto or <code>chrome://tracing</code>.</p>\n<ul>" + "\n".join(items) + "</ul>\n"
    )


def _figure(path: Path, caption: str, warnings: list[str]) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    extra = "".join(f'<br><span class="confound">{_esc(w)}</span>' for w in warnings)
    return (
        f'<figure><img alt="{_esc(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_esc(caption)}{extra}</figcaption></figure>"
    )


def render(
    results: Any,
    problems: Any,
    environments: dict[str, dict[str, Any]],
    warnings: list[str],
    figure_dir: Path,
    title: str = "dnnbench report",
    timelines: list[tuple[str, str]] | None = None,
) -> str:
    """The whole page as a string."""
    figures = [
        _figure(figure_dir / f"{name}.png", caption, warnings)
        for name, caption in _CAPTIONS.items()
        if (figure_dir / f"{name}.png").exists()
    ]
    warning_html = (
        '<div class="warning"><strong>Confounds:</strong><ul>'
        + "".join(f"<li>{_esc(w)}</li>" for w in warnings)
        + "</ul></div>"
        if warnings
        else "<p>No confounds: every compared cell ran in the same environment.</p>"
    )
    excluded = 0 if problems.empty else int((problems["status"] == "excluded").sum())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style></head>
<body>
<h1>{_esc(title)}</h1>
<p>{len(results)} result rows (configuration × phase), {excluded} incomplete cell(s).
Throughput = samples of the counting ranks / the slowest rank's time. 95 % CI: t-based, of
the mean over the values in <em>CI over</em> (repeats, or timed steps when there is one
repeat).</p>
<h2>Confound check</h2>
{warning_html}
<h2>Results</h2>
{results_table(results)}
<h2>How busy the nodes were</h2>
<p>While each row measured, per phase, the busiest of its nodes and repeats: CPUs used by processes
outside the cell, CPU time the hypervisor stole, the 1-minute load average, other processes on its
GPUs and other Slurm jobs on its nodes. A row is flagged beside other work from
{colocation.OTHER_CPUS_BUSY} CPUs of other processes or {100 * colocation.STEAL_BUSY:.0f}% steal, or
any other GPU process or Slurm job; <code>cluster.exclusive=true</code> keeps other jobs off a cell's nodes.</p>
{load_table(results)}
<h2>Figures</h2>
{"".join(figures) or "<p>No figures.</p>"}
{timeline_list(timelines or [])}<h2>Environment</h2>
{environment_table(results, environments)}
<h2>Incomplete cells</h2>
{problems_list(problems, "excluded")}
<h2>Notes</h2>
{problems_list(problems, "note")}
</body></html>
"""


def write_report(
    out: Path,
    results: Any,
    problems: Any,
    environments: dict[str, Any],
    warnings: list[str],
    figure_dir: Path | None = None,
    timelines: list[tuple[str, str]] | None = None,
) -> Path:
    """``timelines``: (label, path) of kept Horovod timelines, linked relative to the report."""
    path = out / "report.html"
    links = [(label, os.path.relpath(target, out)) for label, target in timelines or []]
    path.write_text(render(results, problems, environments, warnings, figure_dir or out, timelines=links))
    return path
