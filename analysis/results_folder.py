"""Where ``aggregate`` may write its results, and how a new set replaces the old as a whole.

A results folder is replaced, never edited: everything is written into a sibling staging folder
(``.<name>.partial-<pid>``), then swapped in. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)``
(a reader sees the old folder or the new one, nothing between); elsewhere the old folder is renamed
aside (``.<name>.old-<pid>``), the new renamed in, the old deleted, and a command killed between the
two renames has the old one put back by the next aggregate. Leftover staging folders of commands
that are no longer running are deleted next time; readers never look at them (no ``cells/`` inside).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from analysis.errors import AnalysisError
from orchestrator.errors import ExitCode, NotASweepError
from orchestrator.paths import CELLS_DIR, RESULTS_DIR, SweepPaths, _refuse_special

# Files only a dnnbench results folder holds: an existing --out folder must have one to be replaced.
RESULTS_MARKERS = ("results.csv", "results.parquet", "incomplete.csv")
_STAGING = ".{name}.partial-"
_ASIDE = ".{name}.old-"
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


class OutFolderError(AnalysisError):
    """An ``--out`` folder aggregate must not write into (refused before anything is written)."""

    exit_code = ExitCode.USAGE


def check_out_folder(out: Path, sweeps: Iterable[str | os.PathLike[str]], *, replaced: bool = True) -> None:
    """Refuse an ``--out`` that would spread results among other files or into a sweep's own files.

    Accepted: a new folder, an empty one, a results folder written before (see ``RESULTS_MARKERS``),
    each outside every sweep folder except as that sweep's own ``results/``. Refused as ``--sweep-dir``
    refuses (the filesystem root, the home folder, this checkout, a file), a sweep folder itself, a
    folder inside a sweep other than the results folder of a sweep being aggregated, and a folder of
    other files where the folder is ``replaced`` whole (aggregate; plot and report only add files).
    """
    try:
        target = out.expanduser().resolve()
    except (OSError, RuntimeError) as err:
        raise OutFolderError(f"--out {out}: cannot be used as a results folder: {err}") from err
    try:
        _refuse_special(target, out)
    except NotASweepError as err:
        message = str(err).replace("as a sweep folder", "as a results folder (--out)").replace("my-sweep", "results")
        raise OutFolderError(message) from err
    read = [Path(p).expanduser().resolve() for p in sweeps]
    # The results folders this command reads or writes by default: a sweep's own, or one given to plot/report.
    own_results = {SweepPaths(p).results for p in read} | {p for p in read if _is_results_folder(p)}
    _refuse_sweep_parts(target, out, own_results)
    if target.exists():
        if not target.is_dir():
            raise OutFolderError(f"--out {out} is a file, not a folder: name a folder for the results")
        if replaced and not _is_results_folder(target) and any(target.iterdir()):
            raise OutFolderError(
                f"--out {out} is a folder of other files, not a dnnbench results folder (none of "
                f"{', '.join(RESULTS_MARKERS)}): aggregate replaces its --out folder whole, so it refuses this one; "
                "name a new or empty folder"
            )


def _refuse_sweep_parts(target: Path, given: Path, own_results: set[Path]) -> None:
    if target in own_results:
        return
    for folder in (target, *target.parents):
        paths = SweepPaths(folder)
        if paths.is_sweep() or (folder / CELLS_DIR).is_dir():
            where = "is the sweep folder" if folder == target else "is inside the sweep folder"
            raise OutFolderError(
                f"--out {given} {where} {folder}: results go to a sweep's own {RESULTS_DIR}/ (the default for one "
                "sweep) or to a folder outside every sweep; nothing was written"
            )


def _is_results_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in RESULTS_MARKERS)


@contextlib.contextmanager
def replaced_whole(target: Path) -> Iterator[Path]:
    """A staging folder to write every output into; on success it replaces ``target`` as a whole.

    On an error the staging folder is deleted and ``target`` stays as it was.
    """
    target = target.absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    staging = target.with_name(_STAGING.format(name=target.name) + str(os.getpid()))
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        fault_point("before_swap")
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fault_point(name: str) -> None:
    """Tests kill aggregate here (DNNBENCH_TEST_PAUSE_AT=<name>: pause until killed)."""
    if os.environ.get("DNNBENCH_TEST_PAUSE_AT") == name:
        import time

        print(f"paused at {name}", flush=True)
        time.sleep(3600)


def _swap_in(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now the old results
        return
    aside = target.with_name(_ASIDE.format(name=target.name) + str(os.getpid()))
    os.rename(target, aside)
    fault_point("between_renames")
    os.rename(staging, target)
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2); False where the system cannot."""
    if os.environ.get("DNNBENCH_TEST_NO_EXCHANGE"):  # tests take the two-rename path too
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def _recover(target: Path) -> None:
    """Put back results a killed swap set aside; delete what killed commands left half-written."""
    for prefix in (_STAGING, _ASIDE):
        for leftover in sorted(target.parent.glob(prefix.format(name=target.name) + "*")):
            pid = leftover.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue  # another aggregate into the same folder is writing it now
            if prefix == _ASIDE and not target.exists():
                os.rename(leftover, target)  # killed between the renames: the old results are the complete ones
            else:
                shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
