"""Tables and figures written through the one writer (:mod:`jobs.atomic`): the old file or the new, never half.

pandas and matplotlib write straight into the path they are given, so a kill or a full disk
mid-write leaves half a CSV where `report`, `check` or `compare --out` had a whole one. Each is
rendered in memory here and handed to the writer as one piece.
"""

from __future__ import annotations

import io
import os
from typing import Any

from jobs.atomic import write_atomic_bytes, write_atomic_text


def write_csv(frame: Any, path: str | os.PathLike[str]) -> None:
    """``frame`` (a DataFrame) as CSV, without its index."""
    write_atomic_text(path, frame.to_csv(index=False))


def write_parquet(frame: Any, path: str | os.PathLike[str]) -> None:
    """``frame`` (a DataFrame) as Parquet, without its index."""
    write_atomic_bytes(path, frame.to_parquet(None, index=False))


def write_figure(fig: Any, path: str | os.PathLike[str], **savefig: Any) -> None:
    """A matplotlib figure in the format its path's suffix names (``savefig``'s keywords passed on)."""
    image = io.BytesIO()
    fig.savefig(image, format=os.fspath(path).rsplit(".", 1)[-1], **savefig)
    write_atomic_bytes(path, image.getvalue())
