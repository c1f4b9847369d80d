"""Numbers that are not finite or beyond int64: found by one walk, or ruled out from the file's text."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from jobs.schema.fields import _FLOATS, _INT_LIMIT, _LISTED

# --------------------------------------------------------------------------- finite numbers


def _all_finite(container: dict[str, Any] | list[Any]) -> bool:
    """Whether every number inside ``container`` is finite (and every int within int64).

    The hot path of every read, so one loop without a call per value: ``v - v`` is 0.0 for
    a finite float and NaN for an infinity or a NaN; lists of floats (step times) go in one
    C-level pass.
    """
    stack: list[Any] = [container]
    while stack:
        items = stack.pop()
        if type(items) is dict:
            items = items.values()
        elif set(map(type, items)) <= _FLOATS:
            if not all(map(math.isfinite, items)):
                return False
            continue
        for value in items:
            kind = type(value)
            if kind is float:
                if value - value != 0.0:
                    return False
            elif kind is int:
                if not -_INT_LIMIT <= value < _INT_LIMIT:
                    return False
            elif kind is dict or kind is list:
                stack.append(value)
    return True


def _collect_non_finite(value: Any, path: str, found: list[tuple[str, str]]) -> None:
    kind = type(value)
    if kind is float and not math.isfinite(value):
        found.append((path, f"{json.dumps(value)} is not a finite number"))  # JSON's spelling: Infinity, NaN
    elif kind is int and not -_INT_LIMIT <= value < _INT_LIMIT:
        found.append((path, f"an integer of {len(str(abs(value)))} digits is out of range"))
    elif kind is dict:
        for key, item in value.items():
            _collect_non_finite(item, f"{path}.{key}" if path else str(key), found)
    elif kind is list:
        for index, item in enumerate(value):
            _collect_non_finite(item, f"{path}[{index}]", found)


def non_finite(doc: Any) -> list[tuple[str, str]]:
    """(path, what is wrong) for every number in ``doc`` that is not finite or beyond int64; [] fast."""
    try:
        if type(doc) not in (dict, list) or _all_finite(doc):
            return []
        found: list[tuple[str, str]] = []
        _collect_non_finite(doc, "", found)
    except RecursionError:
        return [("", "nested too deeply to check its numbers")]
    return found


def _non_finite_reasons(found: list[tuple[str, str]]) -> list[str]:
    reasons = [f"{path or 'top level'}: {problem}" for path, problem in found[:_LISTED]]
    if len(found) > _LISTED:
        reasons.append(f"and {len(found) - _LISTED} more numbers that are not finite")
    return reasons


# Every way JSON text can spell a number `non_finite` would name: Python's json reads Infinity, NaN and
# -Infinity, a float literal with a 3-digit exponent or 309+ digits can overflow to inf, and an int
# beyond int64 has 19+ digits. Text without any of these holds only finite, int64-sized numbers.
# Matches inside strings (a host name, a hash) only cost the full walk, never a missed number.
_ODD_NUMBER_TEXT = re.compile(rb"Infinity|NaN|[eE]\+?\d{3}|\d{19}")


def text_may_hold_odd_numbers(text: bytes) -> bool:
    return _ODD_NUMBER_TEXT.search(text) is not None


# Digits mapped to "0", the decimal point kept, everything else to " ": an int token of 19+ digits (beyond
# int64) then shows as " " and 19 zeros, as no int starts after a "."; a float's fraction never does.
# bytes.translate and a substring search run in C (the regex above scans ~30x slower).
_DIGITS_AS_ZERO = bytes(48 if 48 <= b <= 57 else 46 if b == 46 else 32 for b in range(256))
_INT64_DIGITS = b" " + b"0" * 19


def text_may_hold_big_ints(text: bytes) -> bool:
    """Whether ``text`` may hold an int beyond int64 (19+ digits not after a decimal point): what a JSON
    parser that refuses ``NaN``, ``Infinity`` and overflowing floats (msgspec) still lets through untyped
    fields. Digits inside strings may match: that costs the finite walk, never a missed number."""
    return _INT64_DIGITS in (b" " + text).translate(_DIGITS_AS_ZERO)
