"""The one writer of every file dnnbench writes: the old file or the whole new one, never half.

A file is written to a temporary name in its own folder (``.<name>.<random>.tmp``: what
``orchestrator.paths`` recognises as a start under way), flushed and fsync'd, then renamed
over the target (or, with ``keep_existing``, hard-linked to it, which never replaces a file
another process published meanwhile), and the folder is fsync'd so the rename itself survives
a power cut. Any failure on the way (a full disk's ENOSPC, a kill's KeyboardInterrupt) removes
the temporary file and leaves the target as it was; the error is raised as it came, so the
callers that name a full disk (``orchestrator.entry_point``, the runner's ``failed:no_space``)
still see its errno.

Files that are deliberately not written through here, and why, say so where they are written:
the launcher logs (appended while the launcher runs), the ledger's live SQLite file (SQLite's
own journal makes its writes atomic; only its creation comes through here), the tracebacks a
dying rank leaves, and the results written into a staging folder that
``analysis.results_folder`` swaps in as a whole.

Standard library only: ranks, the runner and the analysis on a laptop import it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TEMPORARY_SUFFIX = ".tmp"
_NEW_FILE_MODE = 0o666  # the process's umask applies, as for any file it opens for writing


def temporary_name(target: Path) -> Path:
    """A fresh name beside ``target`` for the file being written; hidden, and ending in ``.tmp``."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMPORARY_SUFFIX}")


def write_atomic_stream(
    path: str | os.PathLike[str],
    fill: Callable[[BinaryIO], None],
    *,
    mode: int | None = None,
    keep_existing: bool = False,
    durable: bool = True,
) -> bool:
    """Write ``path`` from ``fill(handle)`` atomically; returns whether the new file was published.

    ``mode``: the file's permission bits (default: 0o666 less the umask, as ``open`` gives).
    ``keep_existing``: a file already at ``path`` wins (the return is then False), for records
    that must never be replaced once written. ``durable=False`` skips the fsyncs (still whole or
    absent after a crash of the process, not after a power cut): for fixtures of thousands of files.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target)
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY), "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            fill(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        published = _publish(tmp, target, keep_existing=keep_existing)
    finally:
        tmp.unlink(missing_ok=True)  # gone after os.replace; after a link or a failure, the spare name
    if durable:
        sync_folder(target.parent)
    return published


def write_atomic_bytes(path: str | os.PathLike[str], data: bytes, **how: Any) -> bool:
    """:func:`write_atomic_stream` of ``data`` (``how``: its keywords)."""
    return write_atomic_stream(path, lambda handle: handle.write(data), **how)


def write_atomic_text(path: str | os.PathLike[str], text: str, **how: Any) -> bool:
    """:func:`write_atomic_stream` of ``text`` as UTF-8 (``how``: its keywords)."""
    return write_atomic_bytes(path, text.encode("utf-8"), **how)


def _create_temporary(target: Path) -> Path:
    while True:
        tmp = temporary_name(target)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE))
        except FileExistsError:  # 48 random bits met another writer's: draw again
            continue
        return tmp


def _publish(tmp: Path, target: Path, *, keep_existing: bool) -> bool:
    if not keep_existing:
        os.replace(tmp, target)
        return True
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: the check and the rename are two steps there
        if target.exists():
            return False
        os.replace(tmp, target)
    return True


def sync_folder(folder: Path) -> None:
    """Make the renames (and the folders made) in ``folder`` durable; a file system that cannot fsync a
    folder has already made them visible."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
