"""report.html: one self-contained page (figures inlined as base64 PNG, no scripts).

Sections: confound warnings, results table, how busy the nodes were, stragglers, energy,
framework × environment (when the rows span environments), figures with captions, environment
summary, incomplete cells and notes.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from analysis import breakdown, breakdown_figure, colocation, env_effect, study_figures
from analysis.outputs import MARKDOWN_COLUMNS, memory_gib
from jobs.atomic import write_atomic_text

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
    "breakdown": breakdown_figure.CAPTION,
    "energy": "Samples per joule vs processes (rows with a readable energy counter only; see the Energy table).",
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
    titles = list(MARKDOWN_COLUMNS.values())
    shaped = _has_pipeline_shape(results)
    head = ["sweep", *titles[:3], *knobs, titles[3], *(["pipeline stages × replicas"] if shaped else []), *titles[4:]]
    rows = ["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    knob_values = results[knobs]
    for row in results.itertuples(index=True):
        ci = f"{_num(row.ci95_low)} – {_num(row.ci95_high)}" if row.ci95_low == row.ci95_low else "–"
        text = [row.sweep, row.framework, row.model]
        cells = [f'<td class="text">{_esc(v)}</td>' for v in text]
        cells += [f"<td>{_esc(row.batch_size)}</td>"]
        cells += [f'<td class="text">{_esc(v)}</td>' for v in knob_values.loc[row.Index]]
        cells += [f"<td>{_esc(v)}</td>" for v in (row.world_size,)]
        cells += [f"<td>{_pipeline_shape(row)}</td>"] if shaped else []
        cells += [
            f'<td class="text">{_esc(row.phase)}</td>',
            f"<td>{_esc(row.repeats)}</td>",
            f"<td>{_num(row.throughput)}</td>",
            f"<td>{ci}</td>",
            f'<td class="text">{_esc(row.ci_basis)}</td>',
            f"<td>{_num(row.samples_per_s_per_process)}</td>",
            f"<td>{_num(row.epoch_s, 2)}</td>",
            f"<td>{_num(row.speedup, 2)}</td>",
            f"<td>{_num(row.efficiency, 2)}</td>",
            f"<td>{_num(memory_gib(row), 2)}</td>",
            f"<td>{_num(row.peak_mem_sum_gib, 2)}</td>",
            f"<td>{_num(row.accuracy, 3)}</td>",
            f'<td class="text confound">{_esc(row.confound)}</td>',
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def _has_pipeline_shape(results: Any) -> bool:
    """Whether any row ran a pipeline (results read back from before the shape was recorded have none)."""
    return "pp_stages" in results and bool(results["pp_stages"].notna().any())


def _pipeline_shape(row: Any) -> str:
    """``S × R``: the stages and replicas a pipelined row ran (analysis/load.py: pipeline_columns); – else."""
    import pandas as pd

    stages, replicas = getattr(row, "pp_stages", None), getattr(row, "pp_replicas", None)
    return "–" if pd.isna(stages) or pd.isna(replicas) else f"{int(stages)} × {int(replicas)}"


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


def allocation_table(results: Any) -> str:
    """What each row's ranks were given, and what fell short of the cell's ask (analysis/allocation.py)."""
    given = ["cpus_per_rank", "gpus_per_rank"]
    if results.empty or not set(given) <= set(results.columns) or results[given].isna().all().all():
        return "<p>Not recorded for these cells (noop cells, or measured before dnnbench recorded it).</p>"
    head = ["sweep", "framework", "model", "procs", "phase", "CPUs per rank (fewest)",
            "GPUs per rank (fewest)", "Horovod NCCL", "given less than asked"]  # fmt: skip
    rows = ["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for row in results[results["phase"] == "train"].itertuples(index=False):
        cells = [f'<td class="text">{_esc(v)}</td>' for v in (row.sweep, row.framework, row.model)]
        cells += [f"<td>{_esc(row.world_size)}</td>", f'<td class="text">{_esc(row.phase)}</td>']
        cells += [f"<td>{_num(row.cpus_per_rank, 0)}</td>", f"<td>{_num(row.gpus_per_rank, 0)}</td>"]
        cells.append(f'<td class="text">{_esc(colocation.text(row.horovod_nccl))}</td>')
        cells.append(f'<td class="text confound">{_esc(colocation.text(row.allocation))}</td>')
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


def energy_table(results: Any) -> str:
    """Joules per phase and samples per joule (analysis/load.py: energy_columns), or why there are none."""
    if results.empty or "energy_j" not in results:
        return "<p>Not recorded for these results (written before dnnbench measured energy).</p>"
    head = ["sweep", "framework", "model", "procs", "phase", "energy J", "samples/J", "why unmeasured"]
    rows = ["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for row in results.itertuples(index=False):
        reason = getattr(row, "energy_reason", "")
        cells = [f'<td class="text">{_esc(v)}</td>' for v in (row.sweep, row.framework, row.model)]
        cells += [f"<td>{_esc(row.world_size)}</td>", f'<td class="text">{_esc(row.phase)}</td>']
        cells += [f"<td>{_num(row.energy_j, 1)}</td>", f"<td>{_num(row.samples_per_j, 2)}</td>"]
        cells += [f'<td class="text">{_esc("" if reason != reason else reason)}</td>']
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def breakdown_section(results: Any) -> str:
    """Per model, one computed sentence per framework and scale on its scaling loss, then the
    parts of every row's step (analysis/breakdown.py)."""
    if results.empty or "forward_s" not in results or not results["forward_s"].notna().any():
        return "<p>No breakdown: these dumps were written before steps were broken down.</p>"
    said = breakdown.sentences(results)
    text = "".join(
        f"<p><strong>{_esc(model)}</strong>: " + "; ".join(_esc(s) for s in lines) + ".</p>"
        for model, lines in said.items()
    )
    intro = (
        "<p>Mean seconds per step of each part (they add up to the step time); <code>comm</code> is all "
        "communication, hidden or not, <code>comm_bound</code> its lower bound at the bandwidth the cell "
        "measured between its processes, <code>comm_eff</code> = bound ÷ comm. Each row's scaling loss "
        "(1 − efficiency) splits into exposed communication, waiting and slower compute per process, "
        "which add up to it.</p>"
    )
    rows = results[results["forward_s"].notna()].sort_values(["phase", "model", "framework", "world_size"])
    columns = [*breakdown.PART_COLUMNS, "comm_s", "comm_bound_s", "comm_efficiency", *breakdown.LOSS_PARTS]
    head = "".join(f"<th>{_esc(c.removesuffix('_s'))}</th>" for c in ["phase", "model", "framework", "world_size"])
    head += "".join(f"<th>{_esc(c.removesuffix('_s').replace('efficiency', 'eff'))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{_esc(row[c])}</td>" for c in ["phase", "model", "framework", "world_size"])
        + "".join(f"<td>{_num(row[c], 4 if c.endswith('_s') else 2)}</td>" for c in columns)
        + "</tr>"
        for _, row in rows.iterrows()
    )
    return intro + text + f"<table><tr>{head}</tr>{body}</table>"


def straggler_section(table: Any) -> str:
    """stragglers.csv as two tables: the slow ranks, then every node's counts."""
    if table is None or table.empty:
        return "<p>No straggling rank (or no cell with more than one timed rank).</p>"
    ranks, nodes = table[table["kind"] == "rank"], table[table["kind"] == "node"]
    parts = [f"<p>{len(ranks)} straggling rank phase(s).</p>"]
    if not ranks.empty:
        head = ["sweep", "cell", "phase", "rank", "node", "host", "device", "median step s", "cell median s"]
        head.append("slower by")
        rows = ["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
        for r in ranks.itertuples(index=False):
            text = (r.sweep, r.cell_id, r.phase, r.rank, r.node, r.hostname, r.device_index)
            cells = [f'<td class="text">{_esc("–" if v != v else v)}</td>' for v in text]
            cells += [f"<td>{_num(r.step_median_s, 4)}</td>", f"<td>{_num(r.cell_median_s, 4)}</td>"]
            cells += [f"<td>{_num(100 * r.excess, 0)} %</td>"]
            rows.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("<table>" + "\n".join(rows) + "</table>")
    head = ["sweep", "node", "host", "phase", "rank phases", "straggled", "share", "cells"]
    rows = ["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for r in nodes.itertuples(index=False):
        slow = ' class="text confound"' if r.straggled else ' class="text"'
        cells = [f'<td class="text">{_esc(v)}</td>' for v in (r.sweep, r.node, r.hostname, r.phase)]
        cells += [f"<td>{_num(r.rank_phases, 0)}</td>", f"<td>{_num(r.straggled, 0)}</td>"]
        cells += [f"<td>{_num(100 * r.straggled_fraction, 0)} %</td>"]
        cells += [f"<td{slow}>{_esc('' if r.cells != r.cells else r.cells)}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("<table>" + "\n".join(rows) + "</table>")
    return "\n".join(parts)


def _read_stragglers(out: Path) -> Any:
    import pandas as pd

    from analysis.stragglers import FILE

    path = out / FILE
    return pd.read_csv(path) if path.exists() else None


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
    stragglers: Any = None,
) -> str:
    """The whole page as a string."""
    figures = [
        _figure(figure_dir / f"{name}.png", caption, warnings)
        for name, caption in {**_CAPTIONS, **study_figures.captions(results)}.items()
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
<h2>What the ranks were given</h2>
<p>Per row, the fewest CPUs a rank could run on (its CPU affinity) and the fewest GPUs a rank saw,
and for Horovod the NCCL it was built with (0: none). A row is flagged when a rank had fewer CPUs
than its threads, a GPU cell's rank saw no GPU, or Horovod reduced CUDA tensors without NCCL.</p>
{allocation_table(results)}
<h2>Where the step goes</h2>
{breakdown_section(results)}
<h2>Stragglers</h2>
<p>Ranks whose median step time exceeds their cell's median over ranks by more than the threshold
(<code>--straggler-threshold</code>), and per node how often its ranks straggled (stragglers.csv).
Synchronous training makes every rank wait for the slowest in each all-reduce, so in
<em>train</em> a straggler shows only by what is left over; <em>val</em> shows it plainly.</p>
{straggler_section(stragglers)}
<h2>Energy</h2>
<p>Joules of each phase's timed part: every rank's GPU (NVML) plus each node's CPU packages
(RAPL) once; samples/J = samples / joules. Blank where no counter was readable, with the reason.</p>
{energy_table(results)}
{env_effect.html_section(figure_dir, results)}<h2>Figures</h2>
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
    page = render(
        results, problems, environments, warnings, figure_dir or out, timelines=links, stragglers=_read_stragglers(out)
    )
    _write_whole(path, page)
    return path


def _write_whole(path: Path, text: str) -> None:
    """Replace ``path`` in one rename: `report` on a results folder must not leave half a page if killed."""
    write_atomic_text(path, text)


def reference_section(table: Any, figure: Path | None) -> str:
    """Reference vs measured per result row and metric (``analysis.references.check``'s table)."""
    checked = table[table["status"] != "no reference"]
    unchecked = len(table) - len(checked)
    sources = list(dict.fromkeys(s for s in checked["source"] if s))
    head = ["sweep", "framework", "model", "batch", "procs", "phase", "metric", "measured", "reference",
            "allowed", "status", "source"]  # fmt: skip
    rows = ["<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for r in checked.itertuples(index=False):
        style = "text" if r.status == "pass" else "text confound"
        cells = [f'<td class="text">{_esc(v)}</td>' for v in (r.sweep, r.framework, r.model)]
        cells += [f"<td>{_esc(v)}</td>" for v in (r.batch_size, r.processes)]
        cells += [f'<td class="text">{_esc(v)}</td>' for v in (r.phase, r.metric)]
        cells += [f"<td>{_num(r.measured, 3)}</td>", f"<td>{_num(r.reference, 3)}</td>"]
        cells += [f"<td>{_num(r.low, 3)} – {_num(r.high, 3)}</td>"]
        cells += [f'<td class="{style}">{_esc(r.status + (f" ({r.note})" if r.note else ""))}</td>']
        cells += [f"<td>[{sources.index(r.source) + 1}]</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = "<table>" + "\n".join(rows) + "</table>" if len(rows) > 1 else "<p>No result row has a reference.</p>"
    notes = "".join(f"<li>[{i}] {_esc(s)}</li>" for i, s in enumerate(sources, start=1))
    image = _figure(figure, "Reference values vs this run; sources in the caption.", []) if figure else ""
    return (
        f"<h2>Reference values</h2>\n<p>Each result row against the reference file's value for its framework, "
        f"model, processes and phase; {unchecked} row(s) without a reference are not listed.</p>\n"
        f"{body}\n<ul>{notes}</ul>\n{image}\n"
    )


def add_reference_section(report: Path, table: Any, figure: Path | None) -> Path:
    """Insert :func:`reference_section` into an existing report.html, before its environment section."""
    page = report.read_text()
    section = reference_section(table, figure if figure and figure.exists() else None)
    anchor = "<h2>Environment</h2>" if "<h2>Environment</h2>" in page else "</body>"
    _write_whole(report, page.replace(anchor, section + anchor, 1))
    return report
