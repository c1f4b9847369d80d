"""Faults of paths and exit codes, through the real CLI on the local backend.

Reading commands (status, wait, resubmit, aggregate, plot, report, compare) on anything that is
not a readable sweep exit 4 with ``Error: …`` and create nothing; writing commands (sweep, run)
refuse a folder that cannot be a sweep before writing anything; a sweep or run whose cell failed
exits 3, ``wait`` exits 0 / 3 / 5; a dry run prints a summary and writes no cell folder.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs.noop import GATE_ENV
from orchestrator import cli
from orchestrator.errors import ExitCode
from orchestrator.ledger import Ledger

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).parent / "dnnbench"
DNNBENCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
NOOP = ["framework=noop", "steps=1", "val_steps=2", "warmup_steps=0"]
# A cell the plan accepts but that fails when it runs: the noop framework under torchrun's
# launcher, whose rank finds no strategy called noop (a real failure: traceback, no dump).
FAILING = [*NOOP, "framework.launcher=torchrun"]
CELL_LINE = re.compile(r"^[0-9a-f]{12}  \S+", re.MULTILINE)
READERS = ("status", "wait", "resubmit", "aggregate")


def dnnbench(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run([*DNNBENCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def tree(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root`` (itself included) → (is a folder, size, mtime): what a command changed."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(folder) / name
            stat = path.lstat()
            found[str(path.relative_to(root))] = (path.is_dir(), stat.st_size, stat.st_mtime_ns)
    return found


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------- what is not a sweep ----
def _random_bytes(folder: Path) -> None:
    folder.mkdir()
    (folder / "ledger.sqlite").write_bytes(os.urandom(8192))


def _empty_ledger(folder: Path) -> None:
    folder.mkdir()
    (folder / "ledger.sqlite").write_bytes(b"")


def _text_ledger(folder: Path) -> None:
    folder.mkdir()
    (folder / "ledger.sqlite").write_text("cell_id,label\nabc,noop\n")


def _ledger_is_a_folder(folder: Path) -> None:
    (folder / "ledger.sqlite").mkdir(parents=True)


def _foreign_db(folder: Path, wal: bool = False) -> None:
    folder.mkdir()
    db = sqlite3.connect(folder / "ledger.sqlite")
    if wal:  # a WAL-mode file: reading it live would leave -wal/-shm files beside it
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('not a sweep')")
    db.commit()
    db.close()


def _cells_without_columns(folder: Path) -> None:
    """dnnbench's table names, other columns: a look-alike, not a ledger."""
    folder.mkdir()
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.executescript("".join(f"CREATE TABLE {name} (id TEXT);" for name in ("cells", "submissions", "attempts")))
    db.close()


def _damaged_ledger(folder: Path, *, truncate: bool) -> None:
    """A real ledger with many cells, then cut in half or with one page overwritten."""
    folder.mkdir()
    path = folder / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.add_cells((f"{i:012x}", f"noop/r{i}", [f"seed={i}"], None) for i in range(20000))
    data = bytearray(path.read_bytes())
    if truncate:
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2 : len(data) // 2 + 4096] = os.urandom(4096)
    path.write_bytes(bytes(data))


NOT_A_SWEEP: dict[str, Callable[[Path], None]] = {
    "missing": lambda p: None,
    "file": lambda p: p.write_text("hello\n"),
    "empty folder": lambda p: p.mkdir(),
    "folder of other files": lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")),
    "random bytes ledger": _random_bytes,
    "empty ledger": _empty_ledger,
    "text ledger": _text_ledger,
    "ledger is a folder": _ledger_is_a_folder,
    "foreign sqlite": _foreign_db,
    "foreign sqlite in WAL mode": lambda p: _foreign_db(p, wal=True),
    "look-alike tables": _cells_without_columns,
    "truncated ledger": lambda p: _damaged_ledger(p, truncate=True),
    "overwritten ledger page": lambda p: _damaged_ledger(p, truncate=False),
}


@pytest.mark.parametrize("kind", NOT_A_SWEEP)
@pytest.mark.parametrize("command", READERS)
def test_reading_a_path_that_is_no_sweep_exits_4_and_creates_nothing(command, kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "sweep"
    NOT_A_SWEEP[kind](target)
    before = tree(tmp_path)
    argv = [command, str(target)] + (["--timeout", "1"] if command == "wait" else [])
    argv += ["--no-progress"] if command == "aggregate" else []
    code, out, err = run_main(argv, capsys)
    assert code == ExitCode.NOT_A_SWEEP, (code, out, err)
    assert err.startswith("Error: ") and str(target) in err, err
    assert tree(tmp_path) == before, "a reading command created or changed a file"


def test_no_traceback_from_any_reading_command_on_a_damaged_ledger(tmp_path):
    """The same, as a user runs it: a separate process, its stderr as printed."""
    _damaged_ledger(tmp_path / "damaged", truncate=True)
    _random_bytes(tmp_path / "random")
    before = tree(tmp_path)
    for folder in ("damaged", "random", "typo"):
        for command in (*READERS, "plot", "report"):
            result = dnnbench(command, str(tmp_path / folder), cwd=tmp_path)
            assert result.returncode == 4, (command, folder, result.stderr)
            assert "Traceback" not in result.stderr and result.stderr.startswith("Error: "), result.stderr
    result = dnnbench("compare", str(tmp_path / "typo"), str(tmp_path / "random"), cwd=tmp_path)
    assert result.returncode == 4 and "Traceback" not in result.stderr, result.stderr
    assert tree(tmp_path) == before


def test_wait_on_a_mistyped_path_exits_4_and_makes_no_folder(tmp_path):
    result = dnnbench("wait", str(tmp_path / "sweeps" / "quickstart-typo"), "--timeout", "5", cwd=tmp_path)
    assert result.returncode == 4 and "no such folder" in result.stderr, result
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------- what cannot become a sweep ----
WRITERS = {
    "sweep": lambda target, *extra: ["sweep", *NOOP, *extra, "--no-aggregate", "--sweep-dir", str(target)],
    "sweep --dry-run": lambda target, *extra: ["sweep", *NOOP, *extra, "cluster=slurm", "--dry-run", "--sweep-dir",
                                               str(target)],
    "run --out": lambda target, *extra: ["run", *NOOP, *extra, "--quiet", "--out", str(target)],
}  # fmt: skip
# For folders a regression must never write into (/, the checkout): a plan that fails too, so a
# missing refusal shows as the plan's error (exit 1), never as files there.
UNPLANNABLE = "gpus=0"


def _bad_targets(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Name → (a folder a writer is given, words its refusal must say)."""
    (tmp_path / "afile").write_text("keep me\n")
    (tmp_path / "others").mkdir()
    (tmp_path / "others" / "thesis.tex").write_text("keep me\n")
    damaged = tmp_path / "damaged-sweep"
    damaged.mkdir()
    (damaged / "sweep.json").write_text(json.dumps({"arguments": NOOP}))
    (damaged / "ledger.sqlite").write_bytes(os.urandom(8192))
    foreign = tmp_path / "foreign-sweep"
    _foreign_db(foreign)
    (foreign / "sweep.json").write_text("{}")
    home = tmp_path / "home"
    home.mkdir()
    return {
        "a file": (tmp_path / "afile", "is a file"),
        "below a file": (tmp_path / "afile" / "sweep", "is a file"),
        "a folder of other files": (tmp_path / "others", "folder of other files"),
        "inside a folder of a sweep": (damaged / "cells" / "new", "inside the sweep folder"),
        "a sweep with a damaged ledger": (damaged, "not a dnnbench ledger"),
        "a sweep with a foreign ledger": (foreign, "not a dnnbench ledger"),
        "the home folder": (home, "your home folder"),
    }


@pytest.mark.parametrize("writer", WRITERS)
def test_writers_refuse_a_folder_that_cannot_be_a_sweep_before_writing(writer, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, (target, words) in _bad_targets(tmp_path).items():
        before = tree(tmp_path)
        code, out, err = run_main(WRITERS[writer](target), capsys)
        assert code == ExitCode.NOT_A_SWEEP, (name, code, out, err)
        assert err.startswith("Error: ") and words in err, (name, err)
        assert tree(tmp_path) == before, f"{name}: something was written"
    repo_before = set(os.listdir(REPO))
    code, out, err = run_main(WRITERS[writer](REPO, UNPLANNABLE), capsys)
    assert code == ExitCode.NOT_A_SWEEP and "the dnnbench checkout" in err, (code, err)
    assert set(os.listdir(REPO)) == repo_before


def test_the_filesystem_root_is_refused_and_left_as_it_was(tmp_path):
    before = set(os.listdir("/"))
    for writer in WRITERS.values():
        for root in ("/", "/tmp/..", "//"):
            result = dnnbench(*writer(root, UNPLANNABLE), cwd=tmp_path)
            assert result.returncode == 4, (result.args, result.stderr)
            assert "the filesystem root" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert set(os.listdir("/")) == before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--sweep-dir", "--out"])
def test_an_empty_folder_name_is_refused(option, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = "run" if option == "--out" else "sweep"
    code, _, err = run_main([command, *NOOP, option, " "], capsys)
    assert code == ExitCode.ERROR and f"{option} is empty" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("grid", [["seed=range(0,0)"], ["model=glob(nosuch*)"], ["seed=range(5,5)", "gpus=1,2"]])
@pytest.mark.parametrize("command", ["sweep", "sweep --dry-run", "run"])
def test_an_empty_grid_is_an_error_and_no_folder(command, grid, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, *flags = command.split()
    target = ["--out" if name == "run" else "--sweep-dir", str(tmp_path / "s")]
    code, out, err = run_main([name, *NOOP, *grid, *flags, *target], capsys)
    assert code == ExitCode.ERROR, (code, out, err)
    assert "the overrides give no cells" in err, err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- exit codes ----
def test_a_local_sweep_with_failed_cells_exits_3_and_wait_agrees(tmp_path):
    every = dnnbench("sweep", *FAILING, "--no-aggregate", "--sweep-dir", str(tmp_path / "all"), cwd=tmp_path)
    assert every.returncode == 3, every.stdout[-2000:] + every.stderr[-2000:]
    assert "1 failed:launcher_error" in every.stdout
    # One cell completes, the other fails: still not every cell completed.
    mixed = dnnbench("sweep", *NOOP, "framework.launcher=noop,torchrun", "--no-aggregate",
                     "--sweep-dir", str(tmp_path / "mixed"), cwd=tmp_path)  # fmt: skip
    assert mixed.returncode == 3, mixed.stdout[-2000:] + mixed.stderr[-2000:]
    assert "1 completed, 1 failed:launcher_error" in mixed.stdout
    for folder in ("all", "mixed"):
        status = dnnbench("status", str(tmp_path / folder), cwd=tmp_path)
        assert status.returncode == 0, status.stderr  # status reports; it does not judge
        waited = dnnbench("wait", str(tmp_path / folder), "--timeout", "60", cwd=tmp_path)
        assert waited.returncode == 3 and "failed:launcher_error" in waited.stdout, waited
    (cell,) = (tmp_path / "all" / "cells").iterdir()  # a folder inside the sweep: named, not read
    inside = dnnbench("status", str(cell), cwd=tmp_path)
    assert inside.returncode == 4 and f"inside the sweep folder {tmp_path / 'all'}" in inside.stderr, inside.stderr
    again = dnnbench("sweep", *FAILING, "--no-aggregate", "--sweep-dir", str(tmp_path / "all"), cwd=tmp_path)
    assert again.returncode == 3 and "already submitted earlier" in again.stdout, again.stdout  # still failed


def test_a_run_whose_cell_fails_exits_3(tmp_path):
    result = dnnbench("run", *FAILING, "--quiet", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.startswith("Error: cell ") and "launcher_error" in result.stderr
    assert dnnbench("wait", str(tmp_path / "run"), cwd=tmp_path).returncode == 3


def test_wait_exits_5_on_timeout_then_0_once_every_cell_completed(tmp_path):
    sweep, gate = tmp_path / "s", tmp_path / "gate"
    env = {**os.environ, GATE_ENV: str(gate)}  # the noop cells wait for the gate file: still running
    argv = [*DNNBENCH, "sweep", *NOOP, "seed=0,1", "--no-aggregate", "--sweep-dir", str(sweep)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (sweep / "ledger.sqlite").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for timeout in ("1", "0"):  # 0: look once, never wait for ever
            timed_out = dnnbench("wait", str(sweep), "--timeout", timeout, "--interval", "0.2", cwd=tmp_path)
            assert timed_out.returncode == 5 and timed_out.stderr.startswith("timeout: "), timed_out
    finally:
        gate.touch()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    waited = dnnbench("wait", str(sweep), "--timeout", "60", cwd=tmp_path)
    assert (waited.returncode, waited.stdout.strip()) == (0, "2 completed"), waited


# ------------------------------------------------------------------------- dry run ----
def test_a_dry_run_prints_a_summary_and_writes_no_cell_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "dry"
    grid = [*NOOP, "cluster=slurm", "seed=range(0,300)", "gpus=1,2"]
    code, out, err = run_main(["sweep", *grid, "--dry-run", "--sweep-dir", str(sweep)], capsys)
    assert code == 0, err
    assert "dry run: 600 cells, 2 array(s) in 2 shape(s)" in out and "by framework: noop 600" in out
    assert not CELL_LINE.search(out), "a dry run without --list printed cells"
    assert len(out.splitlines()) < 12
    assert sorted(p.name for p in sweep.iterdir()) == ["jobs", "sweep.json"]  # no cells/, no ledger
    assert json.loads((sweep / "sweep.json").read_text())["dry_run"] is True
    assert len(list((sweep / "jobs").glob("*.sh"))) == 2
    code, out, err = run_main(["status", str(sweep)], capsys)  # nothing submitted: not a sweep to read yet
    assert code == ExitCode.NOT_A_SWEEP and "without --dry-run" in err, err
    code, out, err = run_main(["sweep", *grid, "--dry-run", "--list", "--sweep-dir", str(sweep)], capsys)
    assert code == 0, err  # the dry run's own folder is accepted again
    assert len(set(CELL_LINE.findall(out))) == 600
    assert not (sweep / "cells").exists() and not (sweep / "ledger.sqlite").exists()


def test_a_local_dry_run_writes_nothing_and_counts_unavailable_cells(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "horovod", None)  # what `import horovod` sees when it is not installed
    argv = ["sweep", "framework=ddp,horovod", "gpus=1,2", "steps=1", "--dry-run", "--sweep-dir", str(tmp_path / "d")]
    code, out, err = run_main(argv, capsys)
    assert code == 0, err  # unavailable cells are reported, not an error, in a dry run
    assert "dry run: 4 cells" in out and "unavailable here: 2" in out
    assert "2 cell(s) not submitted: horovod is not installed" in err
    assert "nothing submitted, nothing written" in out
    assert list(tmp_path.iterdir()) == []
