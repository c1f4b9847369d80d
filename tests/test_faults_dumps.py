"""Faults: damaged rank dumps. Validated for meaning, not only type; one bad dump never stops aggregation.

Every kind of damage starts from the dumps of one real two-process DDP cell, run once for the
module (conftest's ``run_cell_in``). Its validation reads the whole split, 51 samples: the
sampler pads that to 26 per rank, read as a full batch of 16 and a partial one of 10, so the
real run also proves the exact validation rule. Each damage is checked three ways: the schema
names it (``validate_attempt``, what ``status`` and the runner use), ``dnnbench aggregate`` over
a sweep holding the damaged cell beside good cells exits 0 with the good cells' results byte for
byte as without it, and ``incomplete.csv`` lists the damaged cell with the reason.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import synthetic_sweeps as synthetic
from conftest import run_cell_in

from jobs import schema
from orchestrator import cli

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the real cell


@dataclass(frozen=True)
class RealCell:
    cell_id: str
    config: dict[str, Any]
    dumps: tuple[dict[str, Any], ...]


# Two gloo processes, batches of 16, 3 timed training steps, validation over the whole split of 51.
REAL_CELL = ["framework=ddp", "model=resnet18", "gpus=2", "dataset=synthetic", "batch_size=16", "steps=3",
             "warmup_steps=1", "val_steps=null", "dataset.train_samples=64", "dataset.val_samples=51"]  # fmt: skip


@pytest.fixture(scope="module")
def real_cell(tmp_path_factory: pytest.TempPathFactory) -> RealCell:
    dumps = run_cell_in(REAL_CELL, tmp_path_factory.mktemp("real-cell"))  # judged by the runner: valid
    first = dumps[0]
    return RealCell(first["cell_id"], first["config"], tuple(dumps))


def test_the_real_partial_last_validation_batch_is_what_the_rule_says(real_cell):
    """51 samples over 2 ranks: padded to 26 each, batches of 16 (untimed) and 10 (timed)."""
    assert schema.val_counts(16, 2, 51, None) == (1, 10, 26)
    for doc in real_cell.dumps:
        val = doc["phases"]["val"]
        assert (val["timed_steps"], val["samples"], val["evaluated"]) == (1, 10, 26)
        assert doc["phases"]["train"]["samples"] == 3 * 16


def write_real_cell(sweep: Path, cell: RealCell) -> Path:
    """The real cell as a completed attempt of ``sweep``: cell.json, both dumps, outcome.json."""
    attempt = sweep / "cells" / cell.cell_id / "attempt_0"
    attempt.mkdir(parents=True)
    (attempt.parent / "cell.json").write_text(json.dumps({"cell_id": cell.cell_id, "config": cell.config}))
    for doc in cell.dumps:
        schema.write_atomic(attempt / schema.dump_filename(doc["rank"]), doc)
    outcome = {"state": "completed", "ranks_expected": 2, "ranks_valid": 2, "reasons": [], "returncode": 0}
    (attempt / "outcome.json").write_text(json.dumps(outcome))
    return attempt


# --------------------------------------------------------------------------- damage, as a table


def _read(attempt: Path, rank: int) -> dict[str, Any]:
    return json.loads((attempt / schema.dump_filename(rank)).read_text())


def _write(attempt: Path, rank: int, doc: Any) -> None:
    # json.dumps writes Infinity and NaN, as a careless writer (or a hand edit) would.
    (attempt / schema.dump_filename(rank)).write_text(json.dumps(doc))


def _put(doc: Any, dotted: str, value: Any) -> None:
    *parents, last = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    for key in parents:
        doc = doc[key]
    doc[last] = value


def setting(changes: dict[str, Any], ranks: tuple[int, ...] = (1,)) -> Callable[[Path], None]:
    def apply(attempt: Path) -> None:
        for rank in ranks:
            doc = _read(attempt, rank)
            for dotted, value in changes.items():
                _put(doc, dotted, value(doc) if callable(value) else value)
            _write(attempt, rank, doc)

    return apply


def raw_text(change: Callable[[str], str], rank: int = 1) -> Callable[[Path], None]:
    def apply(attempt: Path) -> None:
        path = attempt / schema.dump_filename(rank)
        path.write_text(change(path.read_text()))

    return apply


def literal(dotted: str, token: str, rank: int = 1) -> Callable[[Path], None]:
    """Put a raw JSON token (one json.dumps never writes) at ``dotted``."""

    def apply(attempt: Path) -> None:
        doc = _read(attempt, rank)
        _put(doc, dotted, "@@TOKEN@@")
        (attempt / schema.dump_filename(rank)).write_text(json.dumps(doc).replace('"@@TOKEN@@"', token))

    return apply


def cell_json(changes: dict[str, Any]) -> Callable[[Path], None]:
    def apply(attempt: Path) -> None:
        path = attempt.parent / "cell.json"
        doc = json.loads(path.read_text())
        for dotted, value in changes.items():
            _put(doc, dotted, value)
        path.write_text(json.dumps(doc))

    return apply


def _train(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["phases"]["train"]


def _val(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["phases"]["val"]


def _samples_huge(attempt: Path) -> None:
    doc = _read(attempt, 1)
    _train(doc)["samples"] = 10**12
    _train(doc)["throughput_samples_per_s"] = 10**12 / _train(doc)["seconds"]  # consistent with itself
    _write(attempt, 1, doc)


def _val_samples_impossible(attempt: Path) -> None:
    doc = _read(attempt, 1)
    _val(doc)["samples"] = 10**6
    _val(doc)["throughput_samples_per_s"] = 10**6 / _val(doc)["seconds"]
    _write(attempt, 1, doc)


def _phase_shorter_than_its_steps(attempt: Path) -> None:
    doc = _read(attempt, 1)
    _train(doc)["seconds"] /= 100
    _train(doc)["throughput_samples_per_s"] = _train(doc)["samples"] / _train(doc)["seconds"]
    _write(attempt, 1, doc)


def _accuracy_disagrees(attempt: Path) -> None:
    doc = _read(attempt, 1)
    val = _val(doc)
    val["accuracy"] = 0.0 if val["correct"] else 1.0
    _write(attempt, 1, doc)


def _rank_file_holds_rank_0(attempt: Path) -> None:
    shutil.copy(attempt / "rank_0.json", attempt / "rank_1.json")


def _rank_missing(attempt: Path) -> None:
    (attempt / "rank_1.json").unlink()


def _timed_steps_beyond_the_config(ranks: tuple[int, ...]) -> Callable[[Path], None]:
    """100 timed steps in a steps=3 cell, every other figure made consistent with them."""

    def apply(attempt: Path) -> None:
        for rank in ranks:
            doc = _read(attempt, rank)
            train = _train(doc)
            step = math.fsum(train["step_times_s"]) / len(train["step_times_s"])
            train.update(timed_steps=100, step_times_s=[step] * 100, samples=100 * 16)
            train["seconds"] = math.fsum(train["step_times_s"]) * 1.001
            train["throughput_samples_per_s"] = train["samples"] / train["seconds"]
            _write(attempt, rank, doc)

    return apply


def _environment_edited_hash_kept(attempt: Path) -> None:
    doc = _read(attempt, 1)
    doc["environment"]["torch"] = "1.13.0"  # environment_hash left as the real run wrote it
    _write(attempt, 1, doc)


def _fifo_instead_of(name: str) -> Callable[[Path], None]:
    """A FIFO where the file was: a reader that opens it blocking waits for a writer for ever."""

    def apply(attempt: Path) -> None:
        (attempt / name).unlink()
        os.mkfifo(attempt / name)

    return apply


def _folder_instead_of(name: str) -> Callable[[Path], None]:
    def apply(attempt: Path) -> None:
        (attempt / name).unlink()
        (attempt / name).mkdir()

    return apply


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Fail, instead of waiting for ever, when a read blocks (a FIFO opened blocking)."""

    def expired(*_: object) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


_TIB = 2**40


@dataclass(frozen=True)
class Damage:
    name: str
    apply: Callable[[Path], None]
    reason: str  # a fragment of the reason the schema, and incomplete.csv, must give


inf, nan = math.inf, math.nan
DAMAGES = [
    Damage("step_time_infinity", setting({"phases.train.step_times_s.0": inf}),
           "rank 1: invalid dump: phases.train.step_times_s[0]: Infinity is not a finite number"),
    Damage("step_time_nan", setting({"phases.val.step_times_s.0": nan}),
           "phases.val.step_times_s[0]: NaN is not a finite number"),
    Damage("step_time_minus_infinity", setting({"phases.train.step_times_s.1": -inf}),
           "phases.train.step_times_s[1]: -Infinity is not a finite number"),
    Damage("step_time_overflowing_literal", literal("phases.train.step_times_s.2", "1e999"),
           "phases.train.step_times_s[2]: Infinity is not a finite number"),
    Damage("step_time_zero", setting({"phases.train.step_times_s.1": 0.0}), "a timed step took 0 s"),
    Damage("step_time_negative", setting({"phases.train.step_times_s.1": -0.1}),
           "phases.train.step_times_s: entries must be non-negative numbers"),
    Damage("seconds_infinity", setting({"phases.train.seconds": inf}),
           "phases.train.seconds: Infinity is not a finite number"),
    Damage("seconds_nan", setting({"phases.train.seconds": nan}), "phases.train.seconds: NaN is not a finite number"),
    Damage("seconds_zero_with_timed_steps",
           setting({"phases.train.seconds": 0.0, "phases.train.throughput_samples_per_s": 0.0}),
           "phases.train.seconds: 0.0 for 3 timed steps"),
    Damage("phase_shorter_than_its_steps", _phase_shorter_than_its_steps, "the timed steps add up to"),
    Damage("samples_the_config_cannot_produce", _samples_huge,
           "phases.train.samples: 1000000000000, but 3 timed steps of batch_size 16 give 48"),
    Damage("val_samples_the_config_cannot_produce", _val_samples_impossible,
           "phases.val: 1 timed steps, 1000000 samples, 26 evaluated, but the config gives 1, 10, 26"),
    Damage("throughput_disagrees", setting({"phases.train.throughput_samples_per_s": lambda d: 10 * (
        _train(d)["throughput_samples_per_s"])}), "phases.train.throughput_samples_per_s: "),
    Damage("correct_above_evaluated", setting({"phases.val.correct": 10**6}),
           "phases.val.correct: 1000000 > evaluated 26"),
    Damage("accuracy_above_one", setting({"phases.val.accuracy": 2.0}), "phases.val.accuracy: 2.0 outside [0, 1]"),
    Damage("accuracy_disagrees", _accuracy_disagrees, "but correct / evaluated ="),
    Damage("correct_without_evaluated", setting({"phases.val.evaluated": None}), "(both counts or neither)"),
    Damage("loss_negative", setting({"phases.train.loss": -1.0}), "phases.train.loss: -1.0 < 0"),
    Damage("memory_negative", setting({"phases.train.memory.peak_rss_bytes": -1}),
           "phases.train.memory.peak_rss_bytes: -1 < 0"),
    Damage("memory_beyond_int64", setting({"phases.val.memory.end_rss_bytes": 10**30}),
           "phases.val.memory.end_rss_bytes: an integer of 31 digits is out of range"),
    Damage("memory_allocated_above_reserved",
           setting({"phases.val.memory.peak_allocated_bytes": 2048, "phases.val.memory.peak_reserved_bytes": 1024}),
           "phases.val.memory: peak allocated 2048 > peak reserved 1024"),
    Damage("environment_non_finite", setting({"environment.threads.torch_intra_op_threads": nan}),
           "environment.threads.torch_intra_op_threads: NaN is not a finite number"),
    Damage("extra_non_finite", setting({"extra.parameter_digests.0": inf}),
           "extra.parameter_digests[0]: Infinity is not a finite number"),
    Damage("dump_config_differs_from_cell_json", setting({"config.lr": 0.5}, ranks=(0, 1)),
           "config differs from cell.json: lr: 0.5 in the dump, 0.05 in cell.json"),
    Damage("cell_json_edited_after_the_run", cell_json({"config.lr": 0.1}),
           "config differs from cell.json: lr: 0.05 in the dump, 0.1 in cell.json"),
    Damage("cell_json_of_another_cell", cell_json({"cell_id": "0123456789ab"}), "but cell.json is cell '0123456789ab'"),
    Damage("world_size_mismatch", setting({"world_size": 3}), "world_size: 3, but the config's gpus × nodes = 2"),
    Damage("counts_samples_off_on_ddp", setting({"counts_samples": False}),
           "counts_samples: false, but every rank of ddp counts its samples"),
    Damage("repeat_of_another_cell", setting({"repeat": 7}), "repeat: 7, but the config says repeat=0"),
    Damage("bool_where_an_int_belongs", setting({"phases.train.samples": True}),
           "phases.train.samples: expected int, got bool"),
    Damage("rank_file_holds_another_rank", _rank_file_holds_rank_0, "rank_1.json holds rank 0 (duplicated rank)"),
    Damage("rank_missing", _rank_missing, "rank 1: no dump"),
    Damage("truncated_json", raw_text(lambda text: text[: len(text) // 2]), "rank 1: unreadable (JSONDecodeError"),
    Damage("nested_too_deeply", raw_text(lambda _: "[" * 100_000 + "]" * 100_000),
           "rank 1: unreadable (RecursionError"),
    Damage("not_an_object", raw_text(lambda _: "[1, 2]"), "top level: expected object, got list"),
    # Counts against the config, on every rank (trust report, item 1).
    Damage("timed_steps_beyond_the_config", _timed_steps_beyond_the_config((1,)),
           "phases.train.timed_steps: 100, but the config's steps=3 time 3"),
    Damage("timed_steps_beyond_the_config_on_every_rank", _timed_steps_beyond_the_config((0, 1)),
           "phases.train.timed_steps: 100, but the config's steps=3 time 3"),
    Damage("warmup_steps_other_than_the_config", setting({"phases.train.warmup_steps": 7}),
           "phases.train.warmup_steps: 7, but the config's warmup_steps=1"),
    Damage("val_warmup_steps_other_than_one", setting({"phases.val.warmup_steps": 4}, ranks=(0,)),
           "phases.val.warmup_steps: 4, but validation runs 1 untimed first step"),
    # Config compared type-exactly (item 2).
    Damage("config_bool_where_the_cell_has_an_int", setting({"config.seed": False}, ranks=(0, 1)),
           "config differs from cell.json: seed: false in the dump, 0 in cell.json"),
    Damage("config_float_where_the_cell_has_an_int", setting({"config.threads_per_process": 1.0}, ranks=(0, 1)),
           "config differs from cell.json: threads_per_process: 1.0 in the dump, 1 in cell.json"),
    Damage("config_int_where_the_cell_has_a_bool", setting({"config.cudnn_benchmark": 0}, ranks=(0, 1)),
           "config differs from cell.json: cudnn_benchmark: 0 in the dump, false in cell.json"),
    Damage("cell_json_bool_where_the_dumps_have_an_int", cell_json({"config.seed": False}),
           "config differs from cell.json: seed: 0 in the dump, false in cell.json"),
    # Memory consistent with its kind, the device and the node (item 3).
    Damage("cuda_memory_in_a_cpu_cell", setting({"phases.train.memory.peak_allocated_bytes": 5 * _TIB}),
           "phases.train.memory.peak_allocated_bytes: 5497558138880, but memory kind rss has no CUDA allocator"),
    Damage("cuda_memory_and_reserved_in_a_cpu_cell",
           setting({"phases.val.memory.peak_allocated_bytes": 5 * _TIB,
                    "phases.val.memory.peak_reserved_bytes": 6 * _TIB}),
           "phases.val.memory.peak_allocated_bytes: 5497558138880, but memory kind rss has no CUDA allocator"),
    Damage("rss_beyond_any_node", setting({"phases.train.memory.peak_rss_bytes": 100 * _TIB}),
           "phases.train.memory.peak_rss_bytes: 109951162777600 > 70368744177664"),
    Damage("cuda_device_in_a_cpu_cell", setting({"device_type": "cuda"}),
           "device_type: 'cuda', but memory_kind is 'rss'"),
    Damage("cuda_device_and_memory_kind_in_a_cpu_cell",
           setting({"device_type": "cuda", "memory_kind": "cuda", "phases.train.memory.kind": "cuda",
                    "phases.val.memory.kind": "cuda"}),
           "device_type: 'cuda', but environment.device_index is null (the rank ran on no CUDA device)"),
    Damage("phase_memory_kind_other_than_the_dump", setting({"phases.val.memory.kind": "cuda"}),
           "phases.val.memory.kind: 'cuda', but the dump's memory_kind is 'rss'"),
    Damage("unknown_device_type", setting({"device_type": "tpu"}), "device_type: expected one of"),
    # The environment hash recomputed on read (item 4).
    Damage("environment_edited_hash_kept", _environment_edited_hash_kept,
           "environment_hash: stored "),
    # Files that are not regular files (item 5): a reader never blocks on them.
    Damage("rank_dump_is_a_fifo", _fifo_instead_of("rank_1.json"),
           "rank 1: unreadable (is a FIFO, not a regular file)"),
    Damage("rank_dump_is_a_folder", _folder_instead_of("rank_1.json"),
           "rank 1: unreadable (is a directory, not a regular file)"),
]  # fmt: skip


def test_the_table_covers_at_least_15_kinds_of_damage():
    assert len({d.name for d in DAMAGES}) == len(DAMAGES) >= 15


# --------------------------------------------------------------------------- through the CLI


def aggregate(sweep: Path, out: Path) -> int:
    return cli.main(["aggregate", str(sweep), "--out", str(out), "--no-figures", "--no-progress"])


@pytest.fixture(scope="module")
def good_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good cells only (synthetic dumps of 1- and 2-process DDP, two repeats each)."""
    root = tmp_path_factory.mktemp("good") / "sweep"
    synthetic.scaling_sweep(root, frameworks=("ddp",), gpus=(1, 2), repeats=2)
    return root


@pytest.fixture(scope="module")
def good_results(good_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("good-results")
    assert aggregate(good_sweep, out) == 0
    return (out / "results.csv").read_text()


def sweep_with_real_cell(good_sweep: Path, cell: RealCell, folder: Path) -> tuple[Path, Path]:
    sweep = folder / "sweep"  # the name good_sweep has: the results' sweep column matches
    shutil.copytree(good_sweep, sweep)
    return sweep, write_real_cell(sweep, cell)


def incomplete(out: Path) -> dict[str, tuple[str, str]]:
    import pandas as pd

    table = pd.read_csv(out / "incomplete.csv")
    return {row.cell_id: (row.status, row.reason) for row in table.itertuples(index=False)}


def test_the_real_cell_undamaged_is_valid_and_counted(real_cell, good_sweep, good_results, tmp_path):
    """The control: without damage the same cell is a result, so every exclusion below is the damage's doing."""
    sweep, attempt = sweep_with_real_cell(good_sweep, real_cell, tmp_path)
    assert schema.validate_attempt(attempt, real_cell.config) == []
    assert aggregate(sweep, tmp_path / "out") == 0
    results = (tmp_path / "out" / "results.csv").read_text()
    assert results != good_results and f"{real_cell.cell_id}:0" in results
    assert real_cell.cell_id not in incomplete(tmp_path / "out")


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.name for d in DAMAGES])
def test_a_damaged_dump_excludes_its_cell_with_the_reason_and_nothing_else(
    damage, real_cell, good_sweep, good_results, tmp_path, capsys
):
    sweep, attempt = sweep_with_real_cell(good_sweep, real_cell, tmp_path)
    damage.apply(attempt)
    cell = json.loads((attempt.parent / "cell.json").read_text())
    with no_hang():
        reasons = schema.validate_attempt(attempt, cell["config"], cell_id=cell["cell_id"])
    assert any(damage.reason in r for r in reasons), reasons
    out = tmp_path / "out"
    with no_hang():
        assert aggregate(sweep, out) == 0
    assert (out / "results.csv").read_text() == good_results, "a good cell's result changed"
    status, reason = incomplete(out)[real_cell.cell_id]
    assert status == "excluded" and damage.reason in reason
    assert f"incomplete sweep/{real_cell.cell_id}" in capsys.readouterr().out


def test_every_reason_is_listed_not_only_the_first(real_cell, good_sweep, tmp_path):
    sweep, attempt = sweep_with_real_cell(good_sweep, real_cell, tmp_path)
    by_name = {d.name: d for d in DAMAGES}
    for name in ("step_time_infinity", "accuracy_above_one", "memory_negative"):  # all in rank 1, two in train
        by_name[name].apply(attempt)
    setting({"phases.val.step_times_s.0": nan}, ranks=(0,))(attempt)
    assert aggregate(sweep, tmp_path / "out") == 0
    _, reason = incomplete(tmp_path / "out")[real_cell.cell_id]
    for fragment in ("rank 0: invalid dump: phases.val.step_times_s[0]: NaN", "step_times_s[0]: Infinity",
                     "accuracy: 2.0 outside [0, 1]", "peak_rss_bytes: -1 < 0"):  # fmt: skip
        assert fragment in reason


def test_a_dump_from_before_a_config_key_existed_matches_its_cell(real_cell, good_sweep, tmp_path):
    _, attempt = sweep_with_real_cell(good_sweep, real_cell, tmp_path)
    for rank in (0, 1):
        doc = _read(attempt, rank)
        doc["config"] = schema.without_added_defaults(doc["config"])
        _write(attempt, rank, doc)
    assert "cudnn_benchmark" not in _read(attempt, 0)["config"] and "cudnn_benchmark" in real_cell.config
    assert schema.validate_attempt(attempt, real_cell.config) == []


def test_a_sweep_of_only_damaged_cells_is_no_results_not_a_crash(real_cell, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    setting({"phases.train.step_times_s.0": inf})(write_real_cell(sweep, real_cell))
    assert aggregate(sweep, tmp_path / "out") == 1
    assert "no complete cell" in capsys.readouterr().err
    assert "Infinity" in incomplete(tmp_path / "out")[real_cell.cell_id][1]


def test_a_cell_that_cannot_be_tabulated_is_excluded_not_fatal(
    real_cell, good_sweep, good_results, tmp_path, monkeypatch
):
    """Validated dumps cannot break the table; the guard for when one does is tested by injecting the break."""
    import analysis.load as load

    sweep, _ = sweep_with_real_cell(good_sweep, real_cell, tmp_path)
    real_row = load._phase_row

    def breaks_on_the_real_cell(docs, phase):
        if docs[0]["cell_id"] == real_cell.cell_id:
            raise ZeroDivisionError("float division by zero")
        return real_row(docs, phase)

    monkeypatch.setattr(load, "_phase_row", breaks_on_the_real_cell)
    assert aggregate(sweep, tmp_path / "out") == 0
    assert (tmp_path / "out" / "results.csv").read_text() == good_results
    assert "could not be tabulated (ZeroDivisionError" in incomplete(tmp_path / "out")[real_cell.cell_id][1]


# --------------------------------------------------------------------------- counts from what was used


def test_repeats_count_only_repeats_that_have_a_throughput(tmp_path):
    """val_steps=1: the only validation batch is the untimed first one, so no repeat has a val throughput."""
    from analysis.aggregate import collect

    for repeat in range(3):
        cfg = synthetic.config(repeat=repeat, repeats=3, val_steps=1)
        synthetic.write_cell(tmp_path, cfg, step_times=[[0.5, 0.4, 0.6, 0.5, 0.5, 0.5]])
    results = collect([tmp_path], progress=False).results.set_index("phase")
    assert results.loc["train", "repeats"] == 3 and results.loc["train", "n"] == 3
    assert results.loc["val", "repeats"] == 0 and results.loc["val", "n"] == 0
    assert math.isnan(results.loc["val", "throughput"]) and results.loc["val", "ci_basis"] == "none"


def test_summary_statistics_neither_average_nor_count_a_non_finite_value():
    from analysis.stats import summarize

    assert summarize([10.0, nan, 14.0, inf]) == summarize([10.0, 14.0])
    assert summarize([10.0, nan, 14.0])["n"] == 2


# --------------------------------------------------------------------------- at run time


def test_a_run_whose_dumps_are_nonsense_fails_as_bad_metrics(tmp_path):
    """The runner judges with the reader's rules: a rank writing samples=10**12 fails the cell, with the reason."""
    inject = tmp_path / "inject"
    inject.mkdir()
    # The only way to make a real rank write nonsense: wrap its writer in the rank's own process.
    (inject / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('DNNBENCH_TEST_SAMPLES'):\n"
        "    from jobs import schema\n"
        "    _write = schema.write_atomic\n"
        "    def _damaged(path, doc, **how):\n"
        "        if 'phases' in doc:\n"
        "            doc['phases']['train']['samples'] = int(os.environ['DNNBENCH_TEST_SAMPLES'])\n"
        "        _write(path, doc, **how)\n"
        "    schema.write_atomic = _damaged\n"
    )
    env = {**os.environ, "PYTHONPATH": str(inject), "DNNBENCH_TEST_SAMPLES": str(10**12)}
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "orchestrator.cli", "run", "framework=noop", "gpus=2", "--out", str(out)]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "bad_metrics" in done.stderr and "phases.train.samples: 1000000000000" in done.stderr
    (outcome_file,) = out.glob("cells/*/attempt_0/outcome.json")
    outcome = json.loads(outcome_file.read_text())
    assert outcome["state"] == "failed" and outcome["failure_class"] == "bad_metrics"
    assert outcome["ranks_valid"] == 0 and len(outcome["reasons"]) == 2
    # the same run without the injected fault completes: noop dumps (no timed step) are valid
    env.pop("DNNBENCH_TEST_SAMPLES")
    argv[-1] = str(tmp_path / "clean")
    assert subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120).returncode == 0
