"""Names the config chooses by, each declared once in a table: frameworks, launchers, backends.

A registry maps a name (``framework.name``, ``framework.launcher``, ``cluster.backend``) to a row.
Code a row names is a dotted path (``module:attribute``) imported on first use, so reading a table
imports nothing heavy: a login node lists and checks names without torch, and no module imports
another to register itself. Every registry refuses a name it does not hold the same way, with
:class:`UnknownNameError`, which says what the name was and which names there are.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from typing import Any, Generic, TypeVar

Row = TypeVar("Row")


class UnknownNameError(ValueError):
    """A name no row of the ``kind`` registry declares (a ValueError: a bad config value)."""

    def __init__(self, kind: str, name: object, known: Iterable[str]):
        self.kind = kind
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(f"{kind}={name}: expected one of {', '.join(self.known)}")


@cache
def load(dotted: str) -> Any:
    """The attribute a ``module:attribute`` path names, its module imported now (once)."""
    module, colon, attribute = dotted.partition(":")
    if not colon or not module or not attribute:
        raise ValueError(f"{dotted!r}: a dotted path reads module:attribute")
    return getattr(importlib.import_module(module), attribute)


class Registry(Generic[Row]):
    """The rows of one kind of name, in the order declared; read-only once built."""

    def __init__(self, kind: str, rows: Mapping[str, Row]):
        # kind is the config key the name is given under: it heads every refusal.
        self.kind = kind
        self._rows = dict(rows)

    def get(self, name: object) -> Row:
        """The row of ``name``; :class:`UnknownNameError` for any other name (a non-string too)."""
        row = self.find(name)
        if row is None:
            raise UnknownNameError(self.kind, name, self._rows)
        return row

    def find(self, name: object) -> Row | None:
        """The row of ``name``, or None: for callers that treat an unknown name as no row at all."""
        return self._rows.get(name) if isinstance(name, str) else None

    def load(self, name: object) -> Any:
        """What the row of ``name`` names, imported on first use (for rows that are a dotted path)."""
        row = self.get(name)
        if not isinstance(row, str):
            raise TypeError(f"{self.kind}={name}: its row is a {type(row).__name__}, not a dotted path")
        return load(row)

    def names(self) -> tuple[str, ...]:
        """Every name, sorted: what ``--list`` and every refusal show."""
        return tuple(sorted(self._rows))

    def values(self) -> Iterable[Row]:
        return self._rows.values()

    def items(self) -> Iterable[tuple[str, Row]]:
        return self._rows.items()

    def __getitem__(self, name: object) -> Row:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return self.find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names())})"
