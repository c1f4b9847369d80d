"""Reference values with tolerances: read a reference file, check a results table against it.

A reference file (CSV, or YAML: a list of mappings, or ``{references: [...]}``) has one row per
configuration, phase and metric; docs/metrics.md ("Reference files") is the user's description.
Everything is validated before a sweep is read: an unknown column or metric, a missing required
value, a number that is not one, a bad tolerance or two rows for the same thing are an
:class:`analysis.errors.AnalysisError` naming the file and row.

Tolerances: ``lower`` and ``upper`` each either end in ``%`` (relative to ``value``: ``2%`` allows
``value × 0.98 … value × 1.02``), or are a bare number in the metric's unit (absolute:
``value − lower … value + upper``), or ``inf`` (no bound on that side).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError

REQUIRED = ("framework", "model", "processes", "phase", "metric", "value", "lower", "upper", "source")
OPTIONAL = ("dataset", "precision", "batch_size")
# Results-table column each key matches (processes is the world size: GPUs × nodes).
MATCH_COLUMNS = {
    "framework": "framework",
    "model": "model",
    "processes": "world_size",
    "phase": "phase",
    "dataset": "dataset",
    "precision": "precision",
    "batch_size": "batch_size",
}
_GIB = 2**30


def _column(row: Any, name: str) -> float:
    value = getattr(row, name, math.nan)
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _per_process(row: Any) -> float:
    return _column(row, "throughput") / _column(row, "world_size")


def _epoch_s(row: Any) -> float:
    # Samples in the phase's split (the dumps' extra.data.<phase>_samples) at the measured rate.
    return _column(row, "split_samples") / _column(row, "throughput")


def _gib(name: str) -> Callable[[Any], float]:
    return lambda row: _column(row, name) / _GIB


# metric → (what it is, how to derive it from a results-table row).
METRICS: dict[str, tuple[str, Callable[[Any], float]]] = {
    "samples_per_s": ("global throughput, samples/s", lambda row: _column(row, "throughput")),
    "samples_per_s_per_process": ("global throughput / processes, samples/s", _per_process),
    "epoch_s": ("seconds per epoch = samples in the phase's split / global throughput", _epoch_s),
    "speedup": ("throughput / the 1-process throughput", lambda row: _column(row, "speedup")),
    "efficiency": ("speedup / processes", lambda row: _column(row, "efficiency")),
    "peak_allocated_gib": ("peak CUDA memory allocated per process, GiB (max over ranks)",
                           _gib("peak_allocated_bytes")),
    "peak_reserved_gib": ("peak CUDA memory reserved per process, GiB (max over ranks)", _gib("peak_reserved_bytes")),
    "peak_rss_gib": ("peak resident set size per process, GiB (max over ranks)", _gib("peak_rss_bytes")),
    "accuracy": ("fraction of evaluated samples classified right", lambda row: _column(row, "accuracy")),
}  # fmt: skip

UNITS = {"samples_per_s": "samples/s", "samples_per_s_per_process": "samples/s per process", "epoch_s": "s per epoch",
         "speedup": "×", "efficiency": "fraction", "peak_allocated_gib": "GiB per process",
         "peak_reserved_gib": "GiB per process", "peak_rss_gib": "GiB per process", "accuracy": "fraction"}  # fmt: skip


@dataclass(frozen=True)
class Tolerance:
    amount: float  # inf: unbounded on this side
    relative: bool

    def bound(self, value: float, sign: int) -> float:
        if math.isinf(self.amount):
            return sign * math.inf
        return value + sign * (abs(value) * self.amount if self.relative else self.amount)


@dataclass(frozen=True)
class Reference:
    keys: dict[str, str]  # MATCH_COLUMNS key → value as text ("" = any, for the optional keys)
    metric: str
    value: float
    lower: Tolerance
    upper: Tolerance
    source: str
    where: str  # file and row, for messages

    @property
    def low(self) -> float:
        return self.lower.bound(self.value, -1)

    @property
    def high(self) -> float:
        return self.upper.bound(self.value, +1)

    def specificity(self) -> int:
        return sum(1 for k in OPTIONAL if self.keys.get(k))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _number(text: str, what: str, where: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise AnalysisError(f"{where}: {what} must be a number, got {text!r}") from None
    if math.isnan(number):
        raise AnalysisError(f"{where}: {what} must be a number, got {text!r}")
    return number


def _tolerance(text: str, what: str, where: str) -> Tolerance:
    if text.lower() in ("inf", "+inf"):
        return Tolerance(math.inf, relative=False)
    relative = text.endswith("%")
    amount = _number(text.removesuffix("%").strip(), what, where)
    if amount < 0 or math.isinf(amount):
        raise AnalysisError(f"{where}: {what} must be ≥ 0 (a bare number, N% or inf), got {text!r}")
    return Tolerance(amount / 100 if relative else amount, relative)


def _integer(text: str, what: str, where: str) -> str:
    number = _number(text, what, where)
    if not number.is_integer() or number < 1:
        raise AnalysisError(f"{where}: {what} must be a positive whole number, got {text!r}")
    return str(int(number))


def _reference(raw: dict[str, Any], where: str) -> Reference:
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        allowed = ", ".join((*REQUIRED, *OPTIONAL))
        raise AnalysisError(f"{where}: unknown column(s) {', '.join(unknown)} (allowed: {allowed})")
    row = {k: _text(v) for k, v in raw.items()}
    missing = [k for k in REQUIRED if not row.get(k)]
    if missing:
        raise AnalysisError(f"{where}: missing value(s) for {', '.join(missing)}")
    if row["metric"] not in METRICS:
        raise AnalysisError(f"{where}: unknown metric {row['metric']!r} (known: {', '.join(METRICS)})")
    if row["phase"] not in ("train", "val"):
        raise AnalysisError(f"{where}: phase must be train or val, got {row['phase']!r}")
    keys = {k: row.get(k, "") for k in MATCH_COLUMNS}
    keys["processes"] = _integer(keys["processes"], "processes", where)
    if keys["batch_size"]:
        keys["batch_size"] = _integer(keys["batch_size"], "batch_size", where)
    value = _number(row["value"], "value", where)
    if math.isinf(value):
        raise AnalysisError(f"{where}: value must be finite, got {row['value']!r}")
    return Reference(
        keys=keys,
        metric=row["metric"],
        value=value,
        lower=_tolerance(row["lower"], "lower", where),
        upper=_tolerance(row["upper"], "upper", where),
        source=row["source"],
        where=where,
    )


def _raw_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, mapping) per row of a CSV or YAML file."""
    try:
        text = path.read_text().removeprefix("\ufeff")  # a spreadsheet's byte-order mark is not part of the header
    except (OSError, UnicodeDecodeError) as err:
        raise AnalysisError(f"cannot read reference file {path}: {err}") from err
    if path.suffix.lower() in (".yaml", ".yml"):
        return _yaml_rows(path, text)
    if path.suffix.lower() != ".csv":
        raise AnalysisError(f"reference file {path}: expected a .csv, .yaml or .yml file")
    return _csv_rows(path, text)


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, mapping) per data row; the header and every row checked for shape, by file line."""
    # Comment lines are dropped before parsing, so each parsed line keeps its number in the file.
    kept = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
            if not line.lstrip().startswith("#")]  # fmt: skip
    if not any(line.strip() for _, line in kept):
        raise AnalysisError(f"reference file {path} is empty: it needs a header line ({', '.join(REQUIRED)})")
    reader = csv.reader(line for _, line in kept)
    rows: list[tuple[str, dict[str, Any]]] = []
    header: list[str] | None = None
    consumed = 0
    try:
        for values in reader:
            line = kept[consumed][0]  # a quoted value may span lines: a row is named by its first
            consumed = reader.line_num
            if len(values) <= 1 and not "".join(values).strip():
                continue  # a blank line
            if header is None:
                header = _csv_header(path, line, values)
                continue
            where = f"{path}, line {line}, data row {len(rows) + 1}"
            rows.append((where, _csv_row(where, header, values)))
    except csv.Error as err:
        line = kept[min(reader.line_num, len(kept)) - 1][0]
        raise AnalysisError(f"{path}, line {line}: not valid CSV ({err})") from None
    return rows


def _csv_header(path: Path, line: int, values: list[str]) -> list[str]:
    """The header's column names: each named, none twice, every required one present."""
    header = [value.strip() for value in values]
    seen: dict[str, int] = {}
    for column, name in enumerate(header, start=1):
        if not name:
            raise AnalysisError(f"{path}, line {line}: column {column} of the header has no name")
        if name in seen:
            raise AnalysisError(
                f"{path}, line {line}: column {name!r} is named twice in the header (columns {seen[name]} and "
                f"{column}): which one holds its values cannot be told"
            )
        seen[name] = column
    absent = [c for c in REQUIRED if c not in seen]
    if absent:
        raise AnalysisError(f"reference file {path}, line {line}: missing column(s) {', '.join(absent)}")
    return header


def _csv_row(where: str, header: list[str], values: list[str]) -> dict[str, str]:
    """A data row as column → value; a row with more or fewer values than the header is refused."""
    if len(values) > len(header):
        raise AnalysisError(
            f"{where}: more values than columns ({len(values)} values, {len(header)} columns in the header)"
        )
    if len(values) < len(header):
        lacking = ", ".join(header[len(values):])
        raise AnalysisError(
            f"{where}: fewer values than columns ({len(values)} values, {len(header)} columns): no value for {lacking}"
        )
    return dict(zip(header, values, strict=True))


def _unique_key_loader() -> type:
    """A YAML SafeLoader that refuses a mapping naming a key twice (safe_load keeps the last silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"line {line}: key {key!r} given twice (first on line {seen[key]})",
                        key_node.start_mark,
                    )  # fmt: skip
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _yaml_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    import yaml

    try:
        data = yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader that refuses repeated keys
    except yaml.YAMLError as err:
        raise AnalysisError(f"reference file {path} is not valid YAML: {err}") from err
    if isinstance(data, dict) and set(data) == {"references"}:
        data = data["references"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise AnalysisError(f"reference file {path}: expected a list of rows (mappings), or references: [...]")
    return [(f"{path}, row {i}", item) for i, item in enumerate(data, start=1)]


def read_references(path: str | Path) -> list[Reference]:
    """Every row of a reference file, validated; raises AnalysisError on the first bad row."""
    file = Path(path)
    if not file.is_file():
        raise AnalysisError(f"reference file {file} does not exist (or is not a file)")
    references = [_reference(raw, where) for where, raw in _raw_rows(file)]
    if not references:
        raise AnalysisError(f"reference file {file} has no rows")
    seen: dict[tuple[Any, ...], str] = {}
    for ref in references:
        key = (*ref.keys.values(), ref.metric)
        if key in seen:
            raise AnalysisError(f"{ref.where}: same configuration, phase and metric as {seen[key]}")
        seen[key] = ref.where
    return references


def _matches(ref: Reference, row: Any) -> bool:
    return all(not want or _text(getattr(row, MATCH_COLUMNS[k], "")) == want for k, want in ref.keys.items())


def _verdict(ref: Reference, measured: float) -> str:
    if math.isnan(measured):
        return "fail"
    return "pass" if ref.low <= measured <= ref.high else "fail"


def check(results: Any, references: list[Reference]) -> Any:
    """One row per (result row, metric with a reference), and one ``no reference`` row per result
    row that no reference names. Per metric the most specific reference wins (most optional keys set).

    ``status``: ``pass`` (inside the allowed range), ``fail`` (outside it, or the metric was not
    measured: ``measured`` is NaN and ``note`` says why), ``no reference``.
    """
    import pandas as pd

    out = []
    for row in results.itertuples(index=False):
        base = {k: getattr(row, c, "") for k, c in MATCH_COLUMNS.items()}
        base["sweep"] = getattr(row, "sweep", "")
        chosen: dict[str, Reference] = {}
        for ref in (r for r in references if _matches(r, row)):
            if ref.metric not in chosen or ref.specificity() > chosen[ref.metric].specificity():
                chosen[ref.metric] = ref
        if not chosen:
            out.append({**base, "metric": "", "measured": math.nan, "reference": math.nan, "low": math.nan,
                        "high": math.nan, "status": "no reference", "note": "", "source": ""})  # fmt: skip
            continue
        for metric, ref in chosen.items():
            measured = METRICS[metric][1](row)
            note = "" if not math.isnan(measured) else f"not measured in this run ({METRICS[metric][0]})"
            verdict = _verdict(ref, measured)
            out.append({**base, "metric": metric, "measured": measured, "reference": ref.value, "low": ref.low,
                        "high": ref.high, "status": verdict, "note": note, "source": ref.source})  # fmt: skip
    return pd.DataFrame(out)


def unmatched(results: Any, references: list[Reference]) -> list[Reference]:
    """References no result row matches (a configuration the sweep did not run)."""
    rows = list(results.itertuples(index=False))
    return [ref for ref in references if not any(_matches(ref, row) for row in rows)]


def _num(value: float) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:,.4g}" if abs(value) < 100 else f"{value:,.1f}"


def markdown(table: Any) -> str:
    """The check table as Markdown (sources listed once, numbered, below it)."""
    head = ["sweep", "framework", "model", "batch", "procs", "phase", "metric", "measured", "reference",
            "allowed", "status", "src"]  # fmt: skip
    sources = list(dict.fromkeys(s for s in table["source"] if s))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples(index=False):
        allowed = "" if r.status == "no reference" else f"{_num(r.low)} – {_num(r.high)}"
        status = r.status + (f" ({r.note})" if r.note else "")
        src = f"[{sources.index(r.source) + 1}]" if r.source else ""
        cells = [r.sweep, r.framework, r.model, r.batch_size, r.processes, r.phase, r.metric, _num(r.measured),
                 _num(r.reference), allowed, status, src]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [""] + [f"[{i}] {s}" for i, s in enumerate(sources, start=1)]
    return "\n".join(lines)
