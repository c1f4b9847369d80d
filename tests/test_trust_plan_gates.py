"""Hangs, unbounded work, plan-time checks and gates: each test through the real `dnnbench` CLI.

- `wait --timeout T` ends within T plus a small slack whatever blocks it (a FIFO where a file
  should be), and `status` / `resubmit` never block on one;
- a grid too large to plan is refused from its size alone, before one point is expanded;
- a number no cell can run with (inf, nan, beyond int64, zero or negative where it must be
  positive) is refused at plan time for every numeric key, naming the key and the value;
- a gate that judged nothing (`compare --fail-below` with no comparable row) is not a pass;
- a malformed reference file is refused naming the file, the line and the column.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import synthetic_sweeps as synthetic

from orchestrator import cli, sweep
from orchestrator.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
DNNBENCH = [sys.executable, "-m", "orchestrator.cli"]
NOOP = ["framework=noop", "steps=1", "val_steps=2", "warmup_steps=0"]


def dnnbench(*args: str, cwd: Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*DNNBENCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def every_path(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def synthetic_sweep(root: Path, gpus: tuple[int, ...], repeats: int = 2) -> Path:
    """A sweep folder of completed synthetic cells, `repeats` repeats each (so a ratio has a CI)."""
    for n in gpus:
        for repeat in range(repeats):
            cfg = synthetic.config(gpus=n, repeat=repeat, repeats=repeats)
            synthetic.write_cell(root, cfg, step_times=[[0.25 * (1 + 0.01 * repeat)] * 6] * n)
    return root


# ------------------------------------------------------------------ a gate that judged nothing ---
def test_compare_fail_below_with_no_comparable_row_is_not_a_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A and B share no configuration: --fail-below judged nothing, exit 7 as `check` does."""
    a, b = synthetic_sweep(tmp_path / "a", gpus=(1,)), synthetic_sweep(tmp_path / "b", gpus=(2,))
    code, out, err = run(capsys, "compare", str(a), str(b), "--fail-below", "0.95")
    assert code == ExitCode.CHECK_FAILED, out + err
    assert "NOTHING CHECKED" in out and "No row's B/A 95% CI lies below" not in out


def test_compare_fail_below_with_a_comparable_row_still_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = synthetic_sweep(tmp_path / "a", gpus=(1,)), synthetic_sweep(tmp_path / "b", gpus=(1, 2))
    code, out, err = run(capsys, "compare", str(a), str(b), "--fail-below", "0.5")
    assert code == ExitCode.OK and "NOTHING CHECKED" not in out, out + err


# ------------------------------------------------------------------ malformed reference files ---
HEADER = "framework,model,processes,phase,metric,value,lower,upper,source"
ROW = "ddp,resnet18,1,train,samples_per_s,100,2%,2%,lab"
# case → (file text, what the error must say); every row below the header is line 3 (a comment first).
MALFORMED_REFERENCES = {
    "column named twice": (f"# lab runs\n{HEADER},value\n{ROW},200\n", "line 2: column 'value' is named twice"),
    "column named twice after stripping": (f"# c\n{HEADER.replace('lower', ' value ')}\n{ROW}\n",
                                           "line 2: column 'value' is named twice"),
    "a column without a name": (f"# c\n{HEADER},\n{ROW},\n", "line 2: column 10 of the header has no name"),
    "required column missing": (f"# c\n{HEADER.replace(',upper', '')}\n{ROW}\n", "line 2: missing column(s) upper"),
    "fewer values than columns": (f"# c\n{HEADER}\n{ROW.rsplit(',', 2)[0]}\n",
                                  "line 3, data row 1: fewer values than columns (7 values, 9 columns): "
                                  "no value for upper, source"),
    "more values than columns": (f"# c\n{HEADER}\n{ROW},x\n", "line 3, data row 1: more values than columns"),
    "non-numeric value": (f"# c\n{HEADER}\n{ROW.replace(',100,', ',fast,')}\n",
                          "line 3, data row 1: value must be a number, got 'fast'"),
    "infinite value": (f"# c\n{HEADER}\n{ROW.replace(',100,', ',inf,')}\n", "line 3, data row 1: value must be finite"),
    "overflowing value": (f"# c\n{HEADER}\n{ROW.replace(',100,', ',1e999,')}\n",
                          "line 3, data row 1: value must be finite"),
    "NaN tolerance": (f"# c\n{HEADER}\n{ROW.replace(',2%,2%,', ',nan%,2%,')}\n",
                      "line 3, data row 1: lower must be a number"),
    "infinite processes": (f"# c\n{HEADER}\n{ROW.replace(',1,', ',inf,', 1)}\n",
                           "line 3, data row 1: processes must be a positive whole number"),
    "the second data row bad, after a blank line": (f"# c\n{HEADER}\n{ROW}\n\n{ROW.replace('train', 'val')},x\n",
                                                    "line 5, data row 2: more values than columns"),
    "empty file": ("", "is empty: it needs a header line"),
    "only comments": ("# nothing yet\n\n", "is empty: it needs a header line"),
    "a value beyond the CSV field limit": (f"# c\n{HEADER}\n{ROW.replace('lab', 'l' * 200_000)}\n",
                                           "line 3: not valid CSV (field larger than field limit"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED_REFERENCES))
def test_a_malformed_reference_csv_is_refused_naming_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    folder = synthetic_sweep(tmp_path / "s", gpus=(1,), repeats=1)
    text, says = MALFORMED_REFERENCES[case]
    path = tmp_path / "ref.csv"
    path.write_text(text)
    for command in ("check", "aggregate"):
        code, out, err = run(capsys, command, str(folder), "--reference", str(path))
        assert code == ExitCode.ERROR, out + err
        assert err.startswith("Error: ") and str(path) in err and says in err and "Traceback" not in err, err
    assert not (folder / "results").exists()  # refused before anything was written


def test_a_yaml_reference_naming_a_key_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """safe_load keeps the last of two `value:` keys silently; the reader names both lines instead."""
    folder = synthetic_sweep(tmp_path / "s", gpus=(1,), repeats=1)
    path = tmp_path / "ref.yaml"
    path.write_text("- framework: ddp\n  model: resnet18\n  processes: 1\n  phase: train\n  metric: samples_per_s\n"
                    "  value: 100\n  lower: 2%\n  upper: 2%\n  source: lab\n  value: 200\n")  # fmt: skip
    code, out, err = run(capsys, "check", str(folder), "--reference", str(path))
    assert code == ExitCode.ERROR and str(path) in err, out + err
    assert "line 10: key 'value' given twice (first on line 6)" in err, err


# ------------------------------------------------------------------------- a grid too large ---
HUGE_GRID = ["seed=range(0,1000)", "steps=range(1,1001)", "lr=range(0.001,1.0,0.001)"]  # 999,000,000 points


# Runs the command and, at its exit, prints its own peak resident memory (VmHWM, KiB): the memory of
# its own image since exec. wait4's ru_maxrss would count the forking pytest process's too.
_PEAK_REPORTER = (
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            print('PEAK_KIB', line.split()[1], file=sys.stderr, flush=True)\n"
    "atexit.register(peak)\n"
    "sys.argv = ['dnnbench', *sys.argv[1:]]\n"
    "runpy.run_module('orchestrator.cli', run_name='__main__')\n"
)


def measured(argv: list[str], *, cwd: Path, timeout: float) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run dnnbench with ``argv``; its result and its own peak resident memory in KiB."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _PEAK_REPORTER, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    peaks = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_KIB ")]
    assert peaks, done.stderr
    stderr = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("PEAK_KIB "))
    return subprocess.CompletedProcess(argv, done.returncode, done.stdout, stderr), peaks[-1]


def test_a_grid_of_a_billion_points_is_refused_at_once_from_its_size(tmp_path: Path) -> None:
    """Counted from the parsed axes (never expanded): refused in seconds, in little memory, naming the count."""
    argv = ["sweep", *HUGE_GRID, "--dry-run", "--sweep-dir", str(tmp_path / "sw")]
    started = time.monotonic()
    result, peak_kib = measured(argv, cwd=tmp_path, timeout=60)
    seconds = time.monotonic() - started
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "a grid of 999,000,000 points (seed: 1,000, steps: 1,000, lr: 999)" in result.stderr, result.stderr
    assert f"more than the {sweep.MAX_SWEEP_CELLS:,} cells" in result.stderr and "Traceback" not in result.stderr
    assert seconds < 30, seconds  # expanding it grew past 1.5 GB in 25 s
    assert peak_kib < 600 * 1024, peak_kib  # KiB: the interpreter and Hydra, no grid
    assert every_path(tmp_path) == [], every_path(tmp_path)  # nothing written


def test_a_grid_just_over_the_limit_is_refused_and_repeats_count(tmp_path: Path) -> None:
    over = dnnbench("sweep", *NOOP, f"seed=range(0,{sweep.MAX_SWEEP_CELLS + 1})", "--dry-run",
                    "--sweep-dir", str(tmp_path / "a"), cwd=tmp_path)  # fmt: skip
    assert over.returncode == ExitCode.USAGE and f"a grid of {sweep.MAX_SWEEP_CELLS + 1:,} points" in over.stderr
    # Few points, many repeats: the cells are what is bounded, refused before the repeats are made.
    repeated = dnnbench("sweep", *NOOP, "seed=0,1", f"repeats={sweep.MAX_SWEEP_CELLS}", "--dry-run",
                        "--sweep-dir", str(tmp_path / "b"), cwd=tmp_path)  # fmt: skip
    assert repeated.returncode == ExitCode.USAGE, repeated.stderr
    assert f"more than {sweep.MAX_SWEEP_CELLS:,} cells" in repeated.stderr and "repeats=100,000" in repeated.stderr
    assert every_path(tmp_path) == []


@pytest.mark.parametrize(
    "arguments",
    [
        ["seed=range(0,7)", "gpus=1,2"],
        ["lr=range(0.1,0.5,0.1)", "seed=range(10,0,-3)"],  # a float range; a falling int range
        ["seed=shuffle(range(0,5))", "seed=1,2"],  # a later override of a key replaces its axis
        ["model=glob(resnet*)", "steps=range(1,3)"],
        ["seed=range(0,0)"],
        ["+sweep=quickstart"],  # the preset's own hydra.sweeper.params
    ],
)
def test_the_grid_count_equals_the_expanded_grid(arguments: list[str]) -> None:
    """The count the limit is applied to is the number of points Hydra's sweeper gives."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from orchestrator import config as compose_config

    with compose_config.hydra_context():
        fixed = [a for a in arguments if not sweep._is_sweep_argument(a)]
        params = compose_config.compose(fixed, with_hydra=True).hydra.sweeper.get("params") or {}
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        overrides = parser.parse_overrides([*(f"{k}={v}" for k, v in params.items()), *arguments])
        counted = sweep.grid_size(overrides)
    assert counted == len(sweep.grid(arguments))


# ------------------------------------------------------------- numbers no cell can run with ---
# (override, what the error must say): top-level keys, every section, a list's item, each kind of number.
BAD_NUMBERS = [
    ("lr=inf", "lr=inf: not a finite number"),
    ("lr=-inf", "lr=-inf: not a finite number"),
    ("lr=nan", "lr=nan: not a finite number"),
    ("momentum=1e999", "momentum=inf: not a finite number"),  # overflows to inf when parsed
    ("steps=9223372036854775808", "steps=9223372036854775808: beyond int64"),
    ("seed=-9223372036854775809", "seed=-9223372036854775809: beyond int64"),
    ("batch_size=99999999999999999999", "batch_size=99999999999999999999: beyond int64"),
    ("horovod.cycle_time_ms=nan", "horovod.cycle_time_ms=nan: not a finite number"),  # another framework's knob
    ("horovod.fusion_threshold_mb=-1", "horovod.fusion_threshold_mb=-1: must be ≥ 0"),
    ("cluster.interconnect_gbps=inf", "cluster.interconnect_gbps=inf: not a finite number"),
    ("cluster.intranode_gbps=0", "cluster.intranode_gbps=0.0: must be > 0"),
    ("cluster.signal_delay_s=-5", "cluster.signal_delay_s=-5: must be ≥ 0"),
    ("cluster.ssh_port=70000", "cluster.ssh_port=70000: must be ≤ 65535"),
    ("dataset.train_samples=0", "dataset.train_samples=0: must be ≥ 1"),  # was read as the default size
    ("dataset.image_size=-28", "dataset.image_size=-28: must be ≥ 1"),
    ("model.time_limit_min=0", "model.time_limit_min=0: must be ≥ 1"),
    ("pipeline.microbatches=0", "pipeline.microbatches=0: must be ≥ 1"),
    ("pipeline.split=[1,-2]", "pipeline.split[1]=-2: must be ≥ 0"),
    ("lr=-0.1", "lr=-0.1: must be ≥ 0"),
    ("warmup_steps=-1", "warmup_steps=-1: must be ≥ 0"),
]


@pytest.mark.parametrize(("override", "says"), BAD_NUMBERS, ids=[o for o, _ in BAD_NUMBERS])
def test_a_number_no_cell_can_run_with_is_refused_at_plan_time(tmp_path: Path, override: str, says: str) -> None:
    """Through `dnnbench sweep --dry-run`: refused naming the key and the value, exit 1, nothing written."""
    result = dnnbench("sweep", *NOOP, override, "--dry-run", "--sweep-dir", str(tmp_path / "sw"), cwd=tmp_path)
    assert result.returncode == ExitCode.ERROR, result.stdout + result.stderr
    assert result.stderr.startswith("Error: ") and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count(says) == 1, result.stderr  # said once
    assert every_path(tmp_path) == []


def test_every_numeric_key_of_the_config_is_checked() -> None:
    """The walk reaches every number of a composed config, in every section: none is left to a list of keys."""
    from orchestrator import config as compose_config

    with compose_config.hydra_context():
        composed = compose_config.resolved(compose_config.compose([*NOOP, "framework=pipeline", "pipeline.split=[2]"]))
    walked = {key for key, _ in compose_config._numbers(composed)}
    for section in ("horovod", "pipeline", "cluster", "dataset", "model"):
        assert any(key.startswith(f"{section}.") for key in walked), section
    for key, _value in compose_config._numbers(composed):
        poisoned = _with(composed, key, math.inf if isinstance(_value, float) else 2**64)
        problems, _ = compose_config.number_problems(poisoned)
        assert any(p.startswith(f"{key}=") for p in problems), (key, problems)


def _with(config: dict, dotted: str, value: float) -> dict:
    import copy
    import re

    changed = copy.deepcopy(config)
    parts = [int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", dotted) if p != ""]
    node = changed
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return changed


# --------------------------------------------------------------------------- wait --timeout bounds it all


@pytest.fixture(scope="module")
def noop_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noop-sweep")
    sweep_dir = root / "sweep"
    done = dnnbench("sweep", *NOOP, "seed=1,2", "--no-aggregate", "--sweep-dir", str(sweep_dir), cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr
    return sweep_dir


def _fifos_in_place_of_files(sweep_dir: Path) -> None:
    """Every file a reading command opens (plans, outcomes, rank dumps, error files, the lock) a FIFO."""
    for path in [*sweep_dir.glob("cells/*/cell.json"), *sweep_dir.glob("cells/*/attempt_*/*.json"),
                 sweep_dir / "submit.lock"]:  # fmt: skip
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    for attempt in sweep_dir.glob("cells/*/attempt_*"):
        os.mkfifo(attempt / "error_rank_0.txt")


@pytest.mark.parametrize(
    "argv",
    [["wait", "--timeout", "3"], ["status"], ["status", "--json"], ["resubmit", "--dry-run"]],
    ids=["wait", "status", "status-json", "resubmit"],
)
def test_no_reading_command_hangs_on_fifos_in_a_sweep_folder(noop_sweep, tmp_path, argv):
    import shutil

    sweep_dir = tmp_path / "sweep"
    shutil.copytree(noop_sweep, sweep_dir)
    _fifos_in_place_of_files(sweep_dir)
    started = time.monotonic()
    done = dnnbench(argv[0], str(sweep_dir), *argv[1:], cwd=tmp_path, timeout=60)
    assert time.monotonic() - started < 30, "a FIFO was waited on"
    assert "Traceback" not in done.stderr, done.stderr
    if argv[0] == "wait":
        assert done.returncode in (ExitCode.TIMEOUT, ExitCode.CELLS_FAILED), done.stdout + done.stderr


def test_wait_timeout_bounds_a_read_that_blocks(noop_sweep, tmp_path, monkeypatch, capsys):
    """A read that never returns (a real FIFO opened blocking, as a file system that hangs would)
    inside wait's loop: the command still ends at its --timeout with the timeout's exit code."""
    from orchestrator import status as status_module

    fifo = tmp_path / "hangs"
    os.mkfifo(fifo)

    def collect_that_hangs(paths):
        with open(fifo, "rb") as handle:  # no writer ever comes
            return handle.read()

    monkeypatch.setattr(status_module, "collect", collect_that_hangs)
    started = time.monotonic()
    assert cli.main(["wait", str(noop_sweep), "--timeout", "2"]) == ExitCode.TIMEOUT
    elapsed = time.monotonic() - started
    assert elapsed < 2 + 1.0, elapsed
    assert "timeout" in capsys.readouterr().err
