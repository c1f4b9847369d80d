"""Framework × environment: how much of a difference is the framework's, and how much its environment's.

When the rows of a table (one sweep, several, or a compared pair) ran in more than one environment,
per *group* (model, dataset, precision, batch size, processes, partition and phase; swept knobs are
not told apart) and per (framework, environment) of the group:

- ``throughput`` rows: the row's throughput and its 95 % CI, as the results table has them;
- ``env_effect`` rows: framework F in environment E against F in the reference environment
  ``env_base`` (the first environment the table holds), ``ratio = T(F, E) / T(F, env_base)``;
- ``framework_effect`` rows: F against the reference framework ``framework_base`` (the first by
  name) within one environment E, ``ratio = T(F, E) / T(framework_base, E)``;
- ``interaction`` rows: the framework ratio in E over the framework ratio in ``env_base`` (a ratio
  of ratios: 1 when the environment changes both frameworks alike), and ``ranking_flips``: whether
  the faster of the two frameworks in ``env_base`` is the slower in E (``flip_significant``: both
  framework ratios' CIs exclude 1, on opposite sides);
- ``missing`` rows: a (framework, environment) of the group's factorial that was not measured, with
  the ``dnnbench sweep`` command that adds it.

The ratios' 95 % CIs are the ones ``compare`` gives (Fieller's, :func:`analysis.stats.ratio_ci95`,
over each row's ``mean``/``std``/``n``). The interaction's CI is Fieller's interval again
(:func:`analysis.stats.fieller_ci95`) of the two framework ratios, each with its delta-method
squared standard error ``r² (v_F/m_F² + v_base/m_base²)``, at the Welch–Satterthwaite degrees of
freedom of the four rows' relative variances, rounded down.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

from analysis.atomic_outputs import write_csv
from analysis.stats import fieller_ci95, ratio_ci95
from jobs.layout import SweepLayout

FILE = "env_effect.csv"
FIGURE = "env_effect_{model}.png"
GROUP = ["model", "dataset", "precision", "batch_size", "world_size", "partition", "phase"]
COLUMNS = [
    "kind",
    *GROUP,
    "framework",
    "framework_base",
    "env",
    "env_base",
    "throughput",
    "ci95_low",
    "ci95_high",
    "n",
    "ratio",
    "ratio_ci95_low",
    "ratio_ci95_high",
    "ranking_flips",
    "flip_significant",
    "command",
]
HASH_PREFIX = "env:"
_SHORT_HASH = 8
# The results column B's named environments fill (config env.name), and the knob column a swept
# env.name becomes before that column exists.
_NAME_COLUMNS = ("env", "cfg.env.name")


# ------------------------------------------------------------------------------ the label ---
def environment_label(name: Any, environment_hash: Any) -> str:
    """Which environment a row ran in: its name, else ``env:<short hash>…`` of its environment hash
    (repeats in several environments: each short hash, joined with ``+``)."""
    if isinstance(name, str) and name.strip():
        return name.strip()
    hashes = [h for h in str(environment_hash or "").split(";") if h and h != "nan"]
    if not hashes:
        return HASH_PREFIX + "unknown"
    return "+".join(f"{HASH_PREFIX}{h[:_SHORT_HASH]}…" for h in hashes)


def environment_labels(results: Any) -> Any:
    """The environment label of every row of a results table (see :func:`environment_label`)."""
    import pandas as pd

    names = pd.Series([None] * len(results), index=results.index, dtype=object)
    for column in _NAME_COLUMNS:
        if column in results:
            values = results[column].map(lambda v: v if isinstance(v, str) and v.strip() else None)
            names = names.where(names.notna(), values)
    hashes = results["environment_hash"] if "environment_hash" in results else pd.Series([""] * len(results))
    hashes = pd.Series(list(hashes), index=results.index).fillna("").astype(str)
    labels = pd.Series(
        [environment_label(n, h) for n, h in zip(names, hashes, strict=True)], index=results.index, dtype=object
    )
    # One name over two fingerprints (env=current run once plainly, once under LD_PRELOAD) is two
    # environments: the name alone would pool them, so such rows also carry their short hash.
    named = names.notna()
    spread = hashes[named].groupby(labels[named]).nunique()
    for name in spread[spread > 1].index:
        rows = labels == name
        labels[rows] = [f"{name} ({environment_label(None, h)})" for h in hashes[rows]]
    return labels


def is_named(label: str) -> bool:
    """A label that names one environment (``env=NAME`` selects it), not only a hash."""
    return not label.startswith(HASH_PREFIX) and f" ({HASH_PREFIX}" not in label


def name_of(label: str) -> str | None:
    """The ``env=`` name a label holds (also where the name spans several fingerprints), else None."""
    return None if label.startswith(HASH_PREFIX) else label.split(f" ({HASH_PREFIX}")[0]


def spans_environments(results: Any) -> bool:
    return not results.empty and environment_labels(results).nunique() > 1


# ------------------------------------------------------------------------------- the table ---
def group_keys(frame: Any) -> list[str]:
    """What one group holds fixed: :data:`GROUP` and each swept knob (``cfg.*``) but the environment's name."""
    return GROUP + [c for c in frame.columns if c.startswith("cfg.") and c not in _NAME_COLUMNS]


def _with_group_columns(results: Any) -> Any:
    frame = results.assign(env=environment_labels(results))
    if "partition" not in frame:
        frame = frame.assign(partition="")
    return _keys_as_text(frame)


def _keys_as_text(frame: Any) -> Any:
    """The group keys as text, a missing value as "" (never the text "nan"), so that groups match."""
    keys = group_keys(frame)
    return frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), "").astype(str) for c in keys})


def _environment_order(frame: Any) -> list[str]:
    """Environments in a fixed order, the reference first: compare's A before B (the sweep each first
    appears in), and within a sweep `current` (what dnnbench itself runs in) before the others by
    name, so the same rows always give the same ratios, whatever order the table holds them in."""
    sweeps = list(dict.fromkeys(frame["sweep"])) if "sweep" in frame.columns else []
    first_sweep = {}
    for sweep, env in zip(frame["sweep"] if sweeps else [""] * len(frame), frame["env"], strict=True):
        first_sweep.setdefault(env, sweeps.index(sweep) if sweeps else 0)
    return sorted(first_sweep, key=lambda env: (first_sweep[env], name_of(env) != "current", env))


def effect_table(results: Any, sweeps: dict[str, str] | None = None) -> Any:
    """The rows of the module docstring, for the groups that ran in two or more environments;
    empty (with :data:`COLUMNS`) when the table spans one environment."""
    import pandas as pd

    if not spans_environments(results):
        return pd.DataFrame(columns=COLUMNS)
    frame = _with_group_columns(results)
    order = _environment_order(frame)
    keys = group_keys(frame)
    rows: list[dict[str, Any]] = []
    for key, group in frame.groupby(keys, sort=True):
        if group["env"].nunique() < 2:
            continue
        where = dict(zip(keys, key, strict=True))
        try:
            rows += _group_rows(where, group, order, sweeps or {})
        except EnvEffectError as err:  # said in the table and the report, never a silent pick of one row
            rows.append({**where, "kind": "ambiguous", "command": str(err)})
    columns = COLUMNS[: len(GROUP) + 1] + keys[len(GROUP) :] + COLUMNS[len(GROUP) + 1 :]
    return pd.DataFrame(rows, columns=columns)


def _cells(group: Any) -> dict[tuple[str, str], Any]:
    """(framework, env) → its row. Two rows of one pair (a knob swept, or one environment measured by
    two sweeps) are not one measurement: the pair is an error, not a silent choice."""
    counts = group.groupby(["framework", "env"]).size()
    twice = counts[counts > 1]
    if not twice.empty:
        pairs = ", ".join(f"{f} in {e}" for f, e in twice.index)
        raise EnvEffectError(
            f"{pairs}: measured by more than one row of {group['model'].iloc[0]} × {group['world_size'].iloc[0]} "
            f"{group['phase'].iloc[0]} (a swept knob, or two sweeps of one environment); aggregate them apart"
        )
    return {(r.framework, r.env): r for r in group.itertuples(index=False)}


class EnvEffectError(ValueError):
    """Rows that cannot be laid out as one framework × environment factorial."""


def _ratio(base: Any, other: Any) -> tuple[float, float, float]:
    """``other / base``: the throughput ratio and compare's 95 % CI of it (NaN where none)."""
    ci = ratio_ci95(base.mean, base.std, int(base.n), other.mean, other.std, int(other.n))
    low, high = ci if ci is not None else (math.nan, math.nan)
    return other.throughput / base.throughput if base.throughput else math.nan, low, high


def _variance_of_mean(row: Any) -> float:
    return row.std**2 / row.n if row.n >= 2 else math.nan


def interaction_ci(base_e0: Any, f_e0: Any, base_e1: Any, f_e1: Any) -> tuple[float, float]:
    """95 % CI of ``(f/base in e1) / (f/base in e0)`` (module docstring); NaN where any row has no spread."""
    four = (base_e0, f_e0, base_e1, f_e1)
    relative = [_variance_of_mean(r) / r.mean**2 if r.mean else math.nan for r in four]
    if not all(math.isfinite(w) for w in relative):
        return math.nan, math.nan
    r0, r1 = f_e0.mean / base_e0.mean, f_e1.mean / base_e1.mean
    v0, v1 = r0**2 * (relative[0] + relative[1]), r1**2 * (relative[2] + relative[3])
    denominator = sum(w**2 / (r.n - 1) for w, r in zip(relative, four, strict=True))
    df = max(1, math.floor(sum(relative) ** 2 / denominator)) if denominator > 0 else 1
    ci = fieller_ci95(r0, v0, r1, v1, df)
    return ci if ci is not None else (math.nan, math.nan)


def _group_rows(key: dict[str, str], group: Any, order: list[str], sweeps: dict[str, str]) -> list[dict[str, Any]]:
    cells = _cells(group)
    frameworks = sorted(group["framework"].unique())
    envs = [e for e in order if e in set(group["env"])]
    rows = [
        {**key, "kind": "throughput", "framework": f, "env": e, "throughput": r.throughput,
         "ci95_low": r.ci95_low, "ci95_high": r.ci95_high, "n": r.n}
        for (f, e), r in sorted(cells.items(), key=lambda item: (item[0][0], envs.index(item[0][1])))
    ]  # fmt: skip
    for f in frameworks:
        if (f, envs[0]) in cells:
            for e in envs[1:]:
                if (f, e) in cells:
                    ratio, low, high = _ratio(cells[f, envs[0]], cells[f, e])
                    rows.append(_ratio_row(key, "env_effect", f, "", e, envs[0], ratio, low, high))
    base = frameworks[0]
    for e in envs:
        for f in frameworks[1:]:
            if (base, e) in cells and (f, e) in cells:
                ratio, low, high = _ratio(cells[base, e], cells[f, e])
                rows.append(_ratio_row(key, "framework_effect", f, base, e, "", ratio, low, high))
    rows += _interaction_rows(key, cells, frameworks, envs)
    rows += [
        {**key, "kind": "missing", "framework": f, "env": e, "command": missing_cell_command(f, e, group, sweeps)}
        for f in frameworks
        for e in envs
        if (f, e) not in cells
    ]
    return rows


def _ratio_row(key: dict[str, str], kind: str, f: str, f_base: str, e: str, e_base: str, *ratio: float) -> dict:
    return {**key, "kind": kind, "framework": f, "framework_base": f_base, "env": e, "env_base": e_base,
            "ratio": ratio[0], "ratio_ci95_low": ratio[1], "ratio_ci95_high": ratio[2]}  # fmt: skip


def _interaction_rows(key: dict[str, str], cells: dict, frameworks: list[str], envs: list[str]) -> list[dict]:
    """Every pair of frameworks measured in the reference environment and another one."""
    rows = []
    e0 = envs[0]
    for i, base in enumerate(frameworks):
        for f in frameworks[i + 1 :]:
            for e in envs[1:]:
                four = [cells.get((x, y)) for y in (e0, e) for x in (base, f)]
                if any(r is None for r in four):
                    continue
                b0, f0, b1, f1 = four
                r0, r1 = f0.throughput / b0.throughput, f1.throughput / b1.throughput
                low, high = interaction_ci(b0, f0, b1, f1)
                rows.append(
                    {**_ratio_row(key, "interaction", f, base, e, e0, r1 / r0, low, high),
                     "ranking_flips": (r0 > 1) != (r1 > 1),
                     "flip_significant": _significant_flip(b0, f0, b1, f1)}
                )  # fmt: skip
    return rows


def _significant_flip(b0: Any, f0: Any, b1: Any, f1: Any) -> bool:
    """Both framework ratios' 95 % CIs exclude 1, on opposite sides of it."""
    (_, low0, high0), (_, low1, high1) = _ratio(b0, f0), _ratio(b1, f1)
    return (low0 > 1 and high1 < 1) or (high0 < 1 and low1 > 1)


# ----------------------------------------------------------------- the cells that are missing ---
def _cell_overrides(row: Any, sweeps: dict[str, str]) -> list[str] | None:
    """The point overrides the row's first cell was planned from (its cell.json), if readable."""
    root = sweeps.get(str(row.sweep)) if hasattr(row, "sweep") else None
    cell_id = str(getattr(row, "cells", "")).split(";")[0].split(":")[0]
    if not root or not cell_id:
        return None
    try:
        overrides = json.loads(SweepLayout(Path(root)).cell(cell_id).cell_file.read_text()).get("overrides")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(o) for o in overrides] if isinstance(overrides, list) else None


def _row_overrides(row: Any) -> list[str]:
    """The overrides a results row's own columns give (a results folder read back has no cell.json)."""
    found = [f"model={row.model}", f"dataset={row.dataset}", f"batch_size={row.batch_size}"]
    found += [f"gpus={row.gpus}", f"nodes={row.nodes}", f"precision={row.precision}"]
    return found + ([f"cluster.partition={row.partition}"] if getattr(row, "partition", "") else [])


def missing_cell_command(framework: str, env: str, group: Any, sweeps: dict[str, str]) -> str:
    """``dnnbench sweep … framework=F env=E``: the cell F in E, from the overrides of F's own cell
    (its environment swapped), into the sweep folder that ran E when that is known."""
    template = group[group["framework"] == framework].iloc[0]
    overrides = _cell_overrides(template, sweeps) or _row_overrides(template)
    kept = [o for o in overrides if o.lstrip("+~").split("=")[0] not in ("framework", "env")]
    words = ["dnnbench", "sweep", *kept, f"framework={framework}"]
    if name_of(env):
        words.append(f"env={name_of(env)}")
    in_env = group[group["env"] == env]
    root = sweeps.get(str(in_env["sweep"].iloc[0])) if "sweep" in in_env and not in_env.empty else None
    if root:
        words += ["--sweep-dir", root]
    command = " ".join(shlex.quote(w) for w in words)
    if not name_of(env):
        command += f"  # run in environment {env} (it has no name: define it under conf/env/ for env=NAME)"
    elif not is_named(env):
        command += f"  # run where env={name_of(env)} gives the fingerprint of {env} (the name covers several)"
    return command


# --------------------------------------------------------------------------------- in words ---
def confounded_groups(table: Any) -> list[str]:
    """Per group that has missing cells and no interaction: the sentence that says the two effects
    cannot be told apart, which frameworks ran where, and the commands that add the missing cells."""
    sentences = [f"Not laid out: {m}" for m in table.loc[table["kind"] == "ambiguous", "command"]]
    for _, rows in table.groupby(group_keys(table), sort=True):
        missing = rows[rows["kind"] == "missing"]
        if missing.empty:
            continue
        first = rows.iloc[0]
        measured = rows[rows["kind"] == "throughput"]
        where = "; ".join(
            f"{f} in {', '.join(sorted(set(m['env']), key=list(measured['env']).index))}"
            for f, m in measured.groupby("framework", sort=True)
        )
        separable = (rows["kind"] == "interaction").any()
        lead = (
            "Some framework × environment cells are missing"
            if separable
            else "The framework and the environment are confounded: no framework ran in both environments "
            "beside another that did too, so a difference between frameworks may be their environments'"
        )
        sentences.append(
            f"{first.model} × {first.world_size} {first.phase} (batch {first.batch_size}): {lead} ({where}). "
            "Add the missing cells (each framework in the other's environment):\n"
            + "\n".join(f"  {c}" for c in missing["command"])
        )
    return sentences


def _true(value: Any) -> bool:
    """A flag as computed (bool) or read back from env_effect.csv (the text True/False)."""
    return value is True or str(value) == "True"


def _interval(low: Any, high: Any) -> str:
    return "–" if not (isinstance(low, float) and math.isfinite(low)) else f"{low:.3f} – {high:.3f}"


_HEAD = ("model", "procs", "phase", "effect", "ratio of", "ratio", "95% CI", "ranking")


def _ratio_line(r: Any) -> str:
    what = {
        "env_effect": f"{r.framework}: {r.env} / {r.env_base}",
        "framework_effect": f"in {r.env}: {r.framework} / {r.framework_base}",
        "interaction": f"({r.framework} / {r.framework_base}) in {r.env} ÷ in {r.env_base}",
    }[r.kind]
    flip = ""
    if r.kind == "interaction":
        significant = " (significant)" if _true(r.flip_significant) else ""
        flip = f" flips{significant}" if _true(r.ranking_flips) else " same ranking"
    return f"| {r.model} | {r.world_size} | {r.phase} | {r.kind} | {what} | {r.ratio:.3f} | " \
        f"{_interval(r.ratio_ci95_low, r.ratio_ci95_high)} |{flip} |"  # fmt: skip


def markdown(table: Any) -> str:
    """The effects as a Markdown table and the confounded groups in words; "" for an empty table."""
    if table.empty:
        return ""
    head = "| " + " | ".join(_HEAD) + " |\n|" + "---|" * len(_HEAD)
    ratios = table[table["kind"].isin(["env_effect", "framework_effect", "interaction"])]
    lines = ["## Framework × environment", ""]
    if not ratios.empty:
        lines += [head, *(_ratio_line(r) for r in ratios.itertuples(index=False)), ""]
    lines += [f"- {s}" for s in confounded_groups(table)]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------ the outputs ---
def write(out: Path, results: Any, sweeps: dict[str, str] | None, *, figures: bool) -> list[Path]:
    """env_effect.csv (and with ``figures`` one env_effect_<model>.png per model) into ``out`` when the
    table spans environments; nothing otherwise."""
    table = effect_table(results, sweeps)
    if table.empty:
        return []
    write_csv(table, out / FILE)  # the one writer: a whole file or the old one
    written = [out / FILE]
    if figures:
        written += write_figures(out, table)
    return written


def read(out: Path, results: Any) -> Any:
    """The table aggregate wrote into ``out``, else computed from ``results`` (no cell.json to read)."""
    import pandas as pd

    path = out / FILE
    if path.exists():
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
        # A key left empty (the default partition) is "" as computed, not the text "nan".
        return _keys_as_text(table)
    return effect_table(results)


def write_figures(out: Path, table: Any) -> list[Path]:
    from analysis.figures import _setup, framework_colors, save_figure

    plt = _setup()
    written = []
    measured = table[table["kind"] == "throughput"]
    colours = framework_colors(measured["framework"])
    for model, rows in measured.groupby("model", sort=True):
        within = [c for c in group_keys(table) if c != "model"]
        panels = list(rows.groupby(within, sort=True))
        cols = min(3, len(panels))
        fig, axes = plt.subplots(
            math.ceil(len(panels) / cols), cols, figsize=(4.2 * cols, 3.2 * math.ceil(len(panels) / cols)),
            squeeze=False,
        )  # fmt: skip
        for ax, (key, panel) in zip(axes.flat, panels, strict=False):
            _draw_panel(ax, panel, colours, dict(zip(within, key, strict=True)))
        for ax in list(axes.flat)[len(panels) :]:
            ax.set_visible(False)
        fig.suptitle(f"{model}: throughput per environment (one line per framework, 95 % CI)")
        fig.tight_layout()
        name = Path(FIGURE.format(model=model)).stem
        written += save_figure(fig, out, name)  # closes the figure
    return written


def _draw_panel(ax: Any, panel: Any, colours: dict[str, Any], key: dict[str, str]) -> None:
    envs = list(dict.fromkeys(panel["env"]))
    for framework, rows in panel.groupby("framework", sort=True):
        x = [envs.index(e) for e in rows["env"]]
        y = rows["throughput"].astype(float)
        low = (y - rows["ci95_low"].astype(float)).fillna(0)
        high = (rows["ci95_high"].astype(float) - y).fillna(0)
        ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=4, label=framework, color=colours.get(framework))
    ax.set_xticks(range(len(envs)), envs, rotation=15)
    ax.set_xlim(-0.3, len(envs) - 0.7)
    ax.set_ylabel("samples/s")
    ax.set_title(f"{key['phase']}, {key['world_size']} proc(s), batch {key['batch_size']}", fontsize=9)
    ax.legend(fontsize=7)


# ----------------------------------------------------------------------------- report.html ---
def html_section(folder: Path, results: Any) -> str:
    """report.html's "Framework × environment" section; "" when the rows span one environment."""
    import base64
    import html

    table = read(folder, results)
    if table.empty:
        return ""
    esc = html.escape
    ratios = table[table["kind"].isin(["env_effect", "framework_effect", "interaction"])]
    body = "".join(
        "<tr>" + "".join(f'<td class="text">{esc(c.strip())}</td>' for c in _ratio_line(r).strip("|").split("|"))
        + "</tr>"
        for r in ratios.itertuples(index=False)
    )  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in _HEAD)
    words = "".join(f"<li><pre>{esc(s)}</pre></li>" for s in confounded_groups(table))
    figures = "".join(
        f'<figure><img alt="{esc(p.stem)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{esc(p.stem)}: throughput per environment, one line per framework; bars: 95 % CI.</figcaption>"
        "</figure>"
        for p in sorted(folder.glob(FIGURE.format(model="*")))
    )
    return (
        "<h2>Framework × environment</h2>\n<p>The rows ran in more than one environment. Per model, processes "
        "and phase: the environment effect within each framework, the framework effect within each environment "
        "(ratios of throughput with compare's 95 % CI, Fieller's) and their interaction (the ratio of the framework "
        "ratios, with its CI); env_effect.csv holds every number.</p>\n"
        + (f"<table><tr>{head}</tr>{body}</table>\n" if body else "")
        + (f'<div class="warning"><ul>{words}</ul></div>\n' if words else "")
        + figures
    )
