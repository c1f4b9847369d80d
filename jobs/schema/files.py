"""Reading and writing dump files: regular files only, bounded in size, written atomically."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs.atomic import write_atomic_text
from jobs.schema.fields import MAX_JSON_BYTES, SCHEMA_NAME, SCHEMA_VERSION
from jobs.schema.numbers import text_may_hold_big_ints, text_may_hold_odd_numbers
from jobs.schema.structs import DecodeFailure, as_document, decode_document, decode_dump

# --------------------------------------------------------------------------- one attempt


def read_json(path: str | os.PathLike[str]) -> tuple[Any, str | None]:
    """(document, None), or (None, "missing"), or (None, why it is unreadable); never raises for content."""
    text, error = read_bytes(path)
    if text is None:
        return None, error
    return _parsed(text)


def _parsed(text: bytes) -> tuple[Any, str | None]:
    try:
        # msgspec parses in C, 4-5x faster, and reads what json.loads reads as json.loads does, or refuses
        # it (NaN, Infinity, a byte-order mark, a lone surrogate): json.loads then decides, as it always did.
        return decode_document(text), None
    except (*DecodeFailure, RecursionError):
        pass
    try:
        return json.loads(text), None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return None, f"unreadable ({type(err).__name__}: {err})"


_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


class NotRegularFileError(OSError):
    """A path that is a FIFO, a device, a socket or a folder where a file was expected."""


def open_regular(path: str | os.PathLike[str]) -> int:
    """A descriptor of ``path`` opened for reading, only if it is a regular file.

    Never blocks: opened non-blocking (a FIFO opens at once, without a writer), then judged by what
    ``fstat`` says it is, before a byte is read; the descriptor reads as blocking from then on.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _NOT_REGULAR if test(mode)), f"of mode {stat.filemode(mode)}")
            raise NotRegularFileError(f"{path} is {what}, not a regular file")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


_READ_CHUNK = 1 << 16


def read_bytes(path: str | os.PathLike[str], limit: int = MAX_JSON_BYTES) -> tuple[bytes | None, str | None]:
    """(the bytes of a regular file of at most ``limit`` bytes, None), or (None, "missing"), or (None, why not).

    Never blocks: the file is opened non-blocking (a FIFO opens at once, without a writer) and
    anything but a regular file is refused by what ``fstat`` says it is, before a byte is read.
    """
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return None, "missing"
    except NotRegularFileError as err:
        return None, f"unreadable (is {str(err).split(' is ', 1)[-1]})"
    except OSError as err:
        return None, f"unreadable ({type(err).__name__}: {err})"
    try:
        chunks, size = [], 0
        # Ask for what the file holds (and a byte more, to see its end), not for the limit: os.read allocates
        # the whole request, and 64 MiB per read cost more than reading a 10 KB dump. A file that grows
        # while read is still read to its end, or refused past the limit.
        held = os.fstat(fd).st_size
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, max(held + 1 - size, _READ_CHUNK)))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            return None, f"unreadable (larger than {limit} bytes)"
        return b"".join(chunks), None
    except OSError as err:
        return None, f"unreadable ({type(err).__name__}: {err})"
    finally:
        os.close(fd)


def _read_json_text(path: str | os.PathLike[str]) -> tuple[Any, str | None, bool]:
    """:func:`read_json`, and whether the text may hold a number that is not finite or beyond int64."""
    text, error = read_bytes(path)
    if text is None:
        return None, error, True
    doc, error = _parsed(text)
    return doc, error, error is not None or text_may_hold_odd_numbers(text)


@dataclass(frozen=True, slots=True)
class DumpText:
    """A rank dump as read: the document, why it is unreadable, and what its parse already proved."""

    doc: Any
    error: str | None
    shape_checked: bool  # decoded through jobs/schema/structs.py: every field's type and bound holds
    may_hold_odd_numbers: bool  # a number may be non-finite or beyond int64: the finite walk must run


def read_dump(path: str | os.PathLike[str]) -> DumpText:
    """A rank dump, decoded through the structs (the fast road) or, where they refuse it, by ``json.loads``
    for the field checker to name why (jobs/schema/structs.py explains the two roads)."""
    text, error = read_bytes(path)
    if text is None:
        return DumpText(None, error, False, True)
    try:
        dump = decode_dump(text)
    except (*DecodeFailure, RecursionError):
        doc, error = _parsed(text)
        return DumpText(doc, error, False, error is not None or text_may_hold_odd_numbers(text))
    # Parsed once: the document is the structs' own values. msgspec refused NaN, Infinity and overflowing
    # floats already; only a big int in an untyped field is left for the finite walk.
    return DumpText(as_document(dump), None, True, text_may_hold_big_ints(text))


def dump_filename(rank: int) -> str:
    return f"rank_{rank}.json"


def error_filename(rank: int | str) -> str:
    """The traceback file of a rank that raised (``rank`` may be ``unknown``)."""
    return f"error_rank_{rank}.txt"


def write_atomic(path: str | os.PathLike[str], doc: Mapping[str, Any], *, durable: bool = True) -> None:
    """Write JSON so that a reader sees the old file, or the whole new one, never half (:mod:`jobs.atomic`).

    Serialised first: a document that is not JSON (NaN, an object) leaves no file at all.
    ``durable=False``: no fsyncs, for fixtures of thousands of files (:func:`jobs.atomic.write_atomic_stream`).
    """
    write_atomic_text(path, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False), durable=durable)


def new_dump(**fields: Any) -> dict[str, Any]:
    """A dump carrying the schema's name and version; the writer fills in the rest."""
    return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, **fields}
