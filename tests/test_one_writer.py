"""One writer for every file dnnbench writes (jobs.atomic): a crash or a full disk between writing
and publishing leaves the old file and no temporary file; no other module publishes a file itself.

Each writer is the real function its module calls (outcome and dumps, failure records, node
records, MNIST's unpacked files, cell files, the ledger's creation, report.html, the analysis
tables and figures); the fault is a refused rename or link (a kill at that point cannot be
timed for real) and a real full tmpfs.
"""

from __future__ import annotations

import ast
import errno
import gzip
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from jobs import atomic, schema

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("jobs", "orchestrator", "analysis")


def _write_cell_file(path: Path) -> None:
    from orchestrator.submit import write_cell_file
    from orchestrator.sweep import Cell

    config = {"framework": {"name": "ddp"}, "model": {"name": "mlp"}, "dataset": {"name": "mnist"},
              "nodes": 1, "gpus": 1, "batch_size": 8, "repeat": 0}  # fmt: skip
    write_cell_file(path, Cell("c0", ["batch_size=8"], config))


def _write_failure(path: Path) -> None:
    from jobs.failures import NoGpuError, write_rank_failure

    write_rank_failure(path.parent, 0, NoGpuError("no GPU here"))


def _write_node_record(path: Path) -> None:
    from jobs.colocation import write_node_jobs

    write_node_jobs(path.parent, {}, environ={"SLURM_NODEID": "0"})


def _write_ledger(path: Path) -> None:
    from orchestrator.ledger import Ledger

    Ledger(path).close()


def _write_report(path: Path) -> None:
    from analysis.report import _write_whole

    _write_whole(path, "<html>new</html>")


def _write_csv(path: Path) -> None:
    import pandas as pd

    from analysis.atomic_outputs import write_csv

    write_csv(pd.DataFrame({"a": [1, 2]}), path)


def _write_parquet(path: Path) -> None:
    import pandas as pd

    from analysis.atomic_outputs import write_parquet

    write_parquet(pd.DataFrame({"a": [1, 2]}), path)


def _write_figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.atomic_outputs import write_figure

    fig, _ = plt.subplots()
    write_figure(fig, path, dpi=20)
    plt.close(fig)


def _write_mnist(path: Path) -> None:
    from jobs.dataset_files import MNIST_FILES, unpacked_mnist_root

    raw = path.parent
    for stem in MNIST_FILES[True] + MNIST_FILES[False]:
        if stem != path.name:
            (raw / stem).write_bytes(b"idx")  # already unpacked: only path's file is written
    with gzip.open(raw / f"{path.name}.gz", "wb") as packed:
        packed.write(b"new idx bytes")
    path.unlink(missing_ok=True)  # a file still packed is the one unpacked
    unpacked_mnist_root(raw.parent.parent)


# (name, the file it writes under a folder, the writer, whether an old file there may be replaced)
WRITERS: list[tuple[str, str, Callable[[Path], None], bool]] = [
    ("outcome/dump (schema.write_atomic)", "attempt_0/outcome.json", lambda p: schema.write_atomic(p, {"n": 2}), True),
    ("failure record", "attempt_0/failure_rank_0.json", _write_failure, True),
    ("report.html", "results/report.html", _write_report, True),
    ("results.csv", "results/results.csv", _write_csv, True),
    ("results.parquet", "results/results.parquet", _write_parquet, True),
    ("figure", "results/throughput.png", _write_figure, True),
    ("cell.json", "cells/c0/cell.json", _write_cell_file, False),
    ("ledger", "sweep/ledger.sqlite", _write_ledger, False),
    ("node record", "attempt_0/colocation_node0.json", _write_node_record, False),
    ("MNIST file", "MNIST/raw/t10k-labels-idx1-ubyte", _write_mnist, False),
]
IDS = [w[0] for w in WRITERS]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(atomic.TEMPORARY_SUFFIX))


def _refuse(*_: object, **__: object) -> None:
    raise OSError(errno.EIO, "injected: the process dies between writing and publishing")


@pytest.mark.parametrize(("name", "relative", "write", "replaces"), WRITERS, ids=IDS)
def test_a_crash_before_the_rename_leaves_the_old_file_and_no_temporary(
    tmp_path, monkeypatch, name, relative, write, replaces
):
    target = tmp_path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    write(target)  # the writer works: it publishes a whole file
    assert target.is_file() and target.stat().st_size > 0, name
    assert _leftovers(target.parent) == []
    if replaces:
        target.write_bytes(b"old content")  # what a writer writing in place would change
    else:
        target.unlink()
    before = sorted(p.name for p in target.parent.iterdir())
    monkeypatch.setattr(os, "replace", _refuse)
    monkeypatch.setattr(os, "link", _refuse)
    try:
        write(target)
    except OSError as err:  # raised as it came, or (the node record) said on stderr and dropped
        assert "injected" in str(err), err
    if replaces:
        assert target.read_bytes() == b"old content", f"{name}: the old file was changed"
    else:
        assert not target.exists(), f"{name}: a file appeared without being published"
    assert sorted(p.name for p in target.parent.iterdir()) == before, f"{name}: a temporary file was left behind"


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path):
    with _tiny_tmpfs(tmp_path / "small", "64k") as small:
        target = small / "outcome.json"
        schema.write_atomic(target, {"state": "completed"})
        before = target.read_bytes()
        with pytest.raises(OSError) as raised:
            atomic.write_atomic_bytes(target, b"x" * (1 << 20))
        assert raised.value.errno == errno.ENOSPC  # the callers name a full disk by its errno
        assert target.read_bytes() == before
        assert _leftovers(small) == []


def test_the_writer_keeps_an_existing_record_when_asked(tmp_path):
    target = tmp_path / "record.json"
    assert atomic.write_atomic_text(target, "first", keep_existing=True)
    assert not atomic.write_atomic_text(target, "second", keep_existing=True)
    assert target.read_text() == "first" and _leftovers(tmp_path) == []


def test_the_writer_gives_new_files_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_atomic_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # readable by the group, as `open` makes it
    atomic.write_atomic_text(tmp_path / "b.sh", "", mode=0o700)
    assert (tmp_path / "b.sh").stat().st_mode & 0o777 == 0o700


@contextmanager
def _tiny_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not let the test mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


# --------------------------------------------------------------------------- no writer of its own

# Calls that publish or write a file in place; only jobs/atomic.py and analysis/atomic_outputs.py make them.
_FUNCTIONS = {
    ("os", "replace"), ("os", "rename"), ("os", "renames"), ("os", "link"), ("tempfile", "mkstemp"),
    ("tempfile", "NamedTemporaryFile"), ("json", "dump"), ("shutil", "copyfile"), ("shutil", "copy"),
}  # fmt: skip
_METHODS_WITH_A_PATH = {"write_text", "write_bytes", "to_csv", "to_parquet", "savefig", "rename", "replace"}
_WRITERS = {"jobs/atomic.py", "analysis/atomic_outputs.py"}
# The writes that are not whole-file replacements, each for its reason (the comment at the site says so).
ALLOWED = {
    ("analysis/results_folder.py", "os.rename"): "swaps whole results folders (renameat2 or two renames)",
    ("jobs/data.py", ".rename"): "publishes a copied folder (a dataset's copy on node-local scratch)",
    ("orchestrator/runner.py", "open"): "the launcher log, appended while the launcher runs",
    ("jobs/measure.py", ".write_text"): "a /proc control file (clear_refs), not a file of dnnbench's",
}


def _writes_in(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        named = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
        if named and (func.value.id, func.attr) in _FUNCTIONS and not _to_a_stream(node):
            yield node.lineno, f"{func.value.id}.{func.attr}"
        elif isinstance(func, ast.Attribute) and func.attr in _METHODS_WITH_A_PATH and _takes_a_path(func.attr, node):
            yield node.lineno, f".{func.attr}"
        elif isinstance(func, ast.Name) and func.id == "open" and _opens_for_writing(node):
            yield node.lineno, "open"


def _to_a_stream(call: ast.Call) -> bool:
    """``json.dump(doc, sys.stdout)``: printed, not a file written."""
    stream = call.args[1] if len(call.args) > 1 else None
    return isinstance(stream, ast.Attribute) and isinstance(stream.value, ast.Name) and stream.value.id == "sys"


def _takes_a_path(method: str, call: ast.Call) -> bool:
    """Path.replace/rename take one target (str.replace two strings, a pandas rename a name or keywords)."""
    if method in ("rename", "replace"):
        return len(call.args) == 1 and not call.keywords and not isinstance(call.args[0], ast.Constant)
    if method in ("to_csv", "to_parquet"):  # to a path, not into memory (None)
        return bool(call.args) and not (isinstance(call.args[0], ast.Constant) and call.args[0].value is None)
    return True


def _opens_for_writing(call: ast.Call) -> bool:
    modes = [a for a in call.args[1:2]] + [k.value for k in call.keywords if k.arg == "mode"]
    return any(isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) & set("wax+") for m in modes)


def test_no_module_writes_a_file_but_through_the_one_writer():
    found = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name in _WRITERS:
                continue
            for line, call in _writes_in(ast.parse(path.read_text(), name)):
                if (name, call) not in ALLOWED:
                    found.append(f"{name}:{line}: {call}")
    assert found == [], "write through jobs.atomic (or analysis.atomic_outputs) instead:\n" + "\n".join(found)


def test_the_scan_finds_a_writer_of_its_own():
    """The scan above must be able to fail: each kind of private writer is found."""
    code = """
import os, json, tempfile
os.replace(tmp, path)
Path(tmp).replace(path)
tmp.rename(path)
path.write_text("x")
frame.to_csv(path, index=False)
fig.savefig(path)
json.dump(doc, handle)
fd, tmp = tempfile.mkstemp()
with open(path, "w") as handle: pass
"""
    found = [call for _, call in _writes_in(ast.parse(code))]
    assert found == ["os.replace", ".replace", ".rename", ".write_text", ".to_csv", ".savefig", "json.dump",
                     "tempfile.mkstemp", "open"]  # fmt: skip
    harmless = 'name.replace("a", "b")\nseries.rename("cells")\nframe.rename(columns={})\nopen(path)\n'
    harmless += "frame.to_csv(None)\n"
    assert list(_writes_in(ast.parse(harmless))) == []


def test_the_writers_json_is_what_schema_wrote_before(tmp_path):
    """Behaviour kept: the same bytes as json.dump(indent=1, sort_keys=True) gave, and NaN refused before any file."""
    doc = {"b": [1, 2.5], "a": {"z": None}}
    schema.write_atomic(tmp_path / "d.json", doc)
    assert (tmp_path / "d.json").read_text() == json.dumps(doc, indent=1, sort_keys=True)
    with pytest.raises(ValueError):
        schema.write_atomic(tmp_path / "nan.json", {"x": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]
