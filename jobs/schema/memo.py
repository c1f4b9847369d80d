"""What a sweep's reader works out once per distinct input, kept by a key equal only for equal inputs.

Reading 40,000 dumps meets the same few configs and environments tens of thousands of times: an environment's
hash, what a config lets its ranks hold and a configuration's key are each worked out once per distinct value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

Value = TypeVar("Value")

_SORTED_MSGPACK = msgspec.msgpack.Encoder(order="sorted")
_JSON_LEAVES = frozenset((str, int, float, bool, type(None)))
_JSON_CONTAINERS = frozenset((dict, list))
_JSON_TYPES = _JSON_LEAVES | _JSON_CONTAINERS
_UNSET: Any = object()


def exact_key(value: Any, *, decoded: bool = False) -> bytes | None:
    """Bytes equal only for values whose JSON text is equal, else None (nothing may be kept for it).

    Only a tree of exactly dict (str keys), list, str, int, float, bool and null gets a key: for those,
    sorted-key msgpack is canonical and keeps int, float, bool and null apart, NaN and the infinities bit for
    bit (JSON's text spells all three null, so it cannot be the key). msgpack would also encode a set as a
    list, an Enum as its value and a dataclass as a dict, whose ``default=str`` texts differ: such a value
    gets no key. ``decoded``: the value was parsed from JSON text, so it is of those types by construction
    and the walk that checks it is skipped.
    """
    if not decoded and not _plain_json(value):
        return None
    try:
        return _SORTED_MSGPACK.encode(value)
    except (TypeError, ValueError, OverflowError):  # an int beyond 64 bits
        return None


def _plain_json(value: Any) -> bool:
    # The types of a container's members are collected in C (set(map(type, …))); only a member that is a
    # container itself is visited in Python.
    kind = type(value)
    if kind is dict:
        if not set(map(type, value)) <= {str}:
            return False
        members: Any = value.values()
    elif kind is list:
        members = value
    else:
        return kind in _JSON_LEAVES
    kinds = set(map(type, members))
    if not kinds <= _JSON_TYPES:
        return False
    return kinds.isdisjoint(_JSON_CONTAINERS) or all(
        _plain_json(member) for member in members if type(member) in _JSON_CONTAINERS
    )


class ExactMemo(Generic[Value]):
    """Values worked out from JSON-typed inputs, kept by :func:`exact_key` of the inputs; at most ``kept``
    of them (a sweep of more distinct inputs than that only costs the work again)."""

    def __init__(self, kept: int = 4096) -> None:
        self.kept = kept
        self._known: dict[bytes, Value] = {}

    def get(self, inputs: Any, work: Callable[[], Value], *, decoded: bool = False) -> Value:
        """What ``work()`` gives for ``inputs``: worked out the first time, kept for the next ones. Whoever may
        change what it gets must copy it: every caller with equal inputs is handed the same object."""
        key = exact_key(inputs, decoded=decoded)
        if key is None:
            return work()
        known = self._known.get(key, _UNSET)
        if known is _UNSET:
            known = work()
            if len(self._known) >= self.kept:
                self._known.clear()
            self._known[key] = known
        return known

    def __len__(self) -> int:
        return len(self._known)
