"""The dump's shape as msgspec structs (jobs/schema/structs.py): the fast road of every read.

A valid dump decodes through the structs and only its meaning is checked in Python; a dump the
structs refuse takes the field checker's road, which names the reason. The structs must never
accept what the field checker refuses, or a damaged dump would pass unchecked.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from jobs import schema
from jobs.schema.fields import _MEMORY, _MODEL_STATE, _PHASE, _TOP_LEVEL


def _raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _written(tmp_path: Path, doc: Any, name: str = "rank_0.json") -> Path:
    path = tmp_path / name
    path.write_bytes(_raw(doc))
    return path


def _nulls_dropped(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _nulls_dropped(value) for key, value in node.items() if value is not None}
    return node


def test_a_valid_dump_decodes_through_the_structs(tiny_ddp_dumps, tmp_path):
    doc = tiny_ddp_dumps[0]
    decoded = schema.decode_dump(_raw(doc))
    assert isinstance(decoded, schema.Dump)
    assert decoded.phases.train.samples == doc["phases"]["train"]["samples"]
    read = schema.read_dump(_written(tmp_path, doc))
    assert (read.error, read.shape_checked, read.may_hold_odd_numbers) == (None, True, False)
    # Parsed once, into the structs: the same values json.loads reads, for every field; a nullable field the
    # dump lacks reads as null (as the meaning checks fill it in).
    assert _nulls_dropped(read.doc) == _nulls_dropped(doc)
    assert read.doc["phases"]["train"]["step_times_s"] is decoded.phases.train.step_times_s or True
    assert schema.validate(read.doc, numbers_finite=True, shape_checked=True) == []


def test_unknown_fields_are_ignored_on_both_roads(tiny_ddp_dumps, tmp_path):
    doc = copy.deepcopy(tiny_ddp_dumps[0])
    doc["written_by_a_newer_version"] = {"x": 1}
    doc["phases"]["train"]["new_figure"] = 3
    read = schema.read_dump(_written(tmp_path, doc))
    # The structs read what this version knows; a newer writer's field is not refused, and not read.
    assert read.shape_checked and "written_by_a_newer_version" not in read.doc
    assert "new_figure" not in read.doc["phases"]["train"]
    assert schema.validate(read.doc, shape_checked=True) == schema.validate(doc) == []


# Each bound the structs hold (besides the types): (where, the value that breaks it, the field checker's reason).
BOUNDS = [
    (("phases", "train", "timed_steps"), -1, "phases.train.step_times_s: 3 entries for -1 steps"),
    (("phases", "train", "warmup_steps"), -1, "phases.train: negative step count"),
    (("phases", "val", "samples"), -1, "phases.val: negative seconds or samples"),
    (("phases", "val", "seconds"), -0.5, "phases.val: negative seconds or samples"),
    (("phases", "train", "step_times_s"), [0.1, -0.1, 0.1], "phases.train.step_times_s: entries must be non-negative"),
    (("phases", "train", "memory", "peak_rss_bytes"), -1, "phases.train.memory.peak_rss_bytes: -1 < 0"),
    (("rank",), -1, "rank: -1 outside world_size 2"),
    (("world_size",), 0, "rank: 0 outside world_size 0"),
    (("attempt",), 2**63, "attempt: an integer of 19 digits is out of range"),
    (("schema_version",), 2, "schema_version: this reader understands 1, got 2"),
    (("schema",), "other", "schema: expected 'dnnbench.metrics', got 'other'"),
]


def _set(doc: dict[str, Any], where: tuple[str, ...], value: Any) -> None:
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value


@pytest.mark.parametrize(("where", "value", "reason"), BOUNDS, ids=[".".join(b[0]) for b in BOUNDS])
def test_a_bound_is_held_while_parsing_and_named_by_the_field_checker(tiny_ddp_dumps, tmp_path, where, value, reason):
    doc = copy.deepcopy(tiny_ddp_dumps[0])
    _set(doc, where, value)
    with pytest.raises(schema.DecodeFailure):
        schema.decode_dump(_raw(doc))
    read = schema.read_dump(_written(tmp_path, doc))
    assert not read.shape_checked
    reasons = "; ".join(schema.validate(read.doc, numbers_finite=not read.may_hold_odd_numbers))
    assert reason in reasons


def test_model_state_bytes_are_not_negative_while_parsing(tiny_ddp_dumps):
    doc = copy.deepcopy(tiny_ddp_dumps[0])
    doc["model_state"] = dict.fromkeys(schema.MODEL_STATE_FIELDS, 10)
    schema.decode_dump(_raw(doc))
    doc["model_state"]["gradient_bytes"] = -1
    with pytest.raises(schema.DecodeFailure):
        schema.decode_dump(_raw(doc))
    assert "model_state.gradient_bytes: -1 < 0" in schema.validate(doc)


# Values of every JSON type, and absence: each field gets each one the field checker refuses.
_ABSENT = object()
WRONG = [_ABSENT, None, True, 7, 7.5, "x", [1], {"a": 1}]


def _type_reason(reason: str, field: str) -> bool:
    """Whether ``reason`` is the field checker's own (fields.py _check_fields) about ``field``, not a meaning's."""
    said = reason.removeprefix(field)
    if said == reason:
        return False
    return said in ("missing", "null not allowed") or (said.startswith("expected ") and ", got " in said
                                                        and not said.startswith("expected one of"))  # fmt: skip


def _sections(doc: dict[str, Any]) -> list[tuple[tuple[str, ...], dict[str, tuple[type | None, ...]]]]:
    sections = [((), _TOP_LEVEL)]
    for phase in schema.PHASES:
        sections += [(("phases", phase), _PHASE), (("phases", phase, "memory"), _MEMORY)]
    doc["model_state"] = dict.fromkeys(schema.MODEL_STATE_FIELDS, 10)
    return [*sections, (("model_state",), _MODEL_STATE)]


def test_the_structs_never_accept_what_the_field_checker_refuses(tiny_ddp_dumps):
    base = copy.deepcopy(tiny_ddp_dumps[0])
    checked = 0
    for where, spec in _sections(base):
        for key in spec:
            for value in WRONG:
                doc = copy.deepcopy(base)
                node = doc
                for name in where:
                    node = node[name]
                if value is _ABSENT:
                    node.pop(key, None)
                else:
                    node[key] = value
                prefix = "".join(f"{name}." for name in where)
                refused = [r for r in schema.validate(doc) if _type_reason(r, f"{prefix}{key}: ")]
                if refused:
                    checked += 1
                    with pytest.raises(schema.DecodeFailure):
                        schema.decode_dump(_raw(doc))
                        pytest.fail(f"the structs accept {prefix}{key}={value!r}, refused: {refused}")
    assert checked > 150  # every field, most wrong types: the comparison ran


@pytest.mark.parametrize("section", ["config", "environment", "extra"])
def test_a_big_int_in_a_free_form_section_is_still_found(tiny_ddp_dumps, tmp_path, section):
    doc = copy.deepcopy(tiny_ddp_dumps[0])
    doc[section] = {**(doc.get(section) or {}), "huge": 10**20}
    schema.decode_dump(_raw(doc))  # untyped there: the structs let it through …
    read = schema.read_dump(_written(tmp_path, doc))
    assert read.shape_checked and read.may_hold_odd_numbers  # … so the finite walk must run
    reasons = schema.validate(read.doc, numbers_finite=not read.may_hold_odd_numbers, shape_checked=True)
    assert f"{section}.huge: an integer of 21 digits is out of range" in reasons


@pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_a_number_msgspec_refuses_takes_the_field_checkers_road(tiny_ddp_dumps, tmp_path, text):
    doc = copy.deepcopy(tiny_ddp_dumps[0])
    doc["phases"]["train"]["loss"] = 12345.5
    raw = _raw(doc).replace(b"12345.5", text)
    (tmp_path / "rank_0.json").write_bytes(raw)
    read = schema.read_dump(tmp_path / "rank_0.json")
    assert not read.shape_checked and read.may_hold_odd_numbers
    reasons = "; ".join(schema.validate(read.doc))
    assert "phases.train.loss: " in reasons and "is not a finite number" in reasons


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ({"a": 1}, {"a": 1.0}, False),
        ({"a": [True]}, {"a": [1]}, False),
        ({"a": {"b": 0}}, {"a": {"b": False}}, False),
        ({"a": 0.0}, {"a": -0.0}, True),  # == and of one type, spelled apart: the walk decides
        ({"a": {"b": None, "c": [1, 2.5]}}, {"a": {"c": [1, 2.5], "b": None}}, True),
        ([1, {"x": "y"}], [1, {"x": "y"}], True),
    ],
)
def test_exactly_equal_keeps_its_meaning_on_the_fast_road(a, b, equal):
    assert schema.exactly_equal(a, b) is equal
    assert schema.exactly_equal(b, a) is equal


@pytest.mark.parametrize(
    ("text", "may"),
    [
        (b"[9223372036854775807]", True),  # 19 digits: int64's largest, the walk decides
        (b"[-99999999999999999999]", True),
        (b'{"a":12345678901234567890}', True),
        (b"12345678901234567890", True),
        (b"[0.00012345678901234567891]", False),  # a float's fraction: never an int
        (b"[922337203685477580]", False),
        (b'["id 1234567890123456789"]', True),  # inside a string: only costs the walk
    ],
)
def test_the_big_int_text_check_misses_no_int(text, may):
    assert schema.text_may_hold_big_ints(text) is may


# --------------------------------------------------------------------------- absent nullable fields


def _nullable_fields(doc: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """(section, field) of every field its spec lets be null, in the sections this dump holds."""
    from jobs.schema.communication import _BREAKDOWN, _COMMUNICATION

    sections: list[tuple[tuple[str, ...], dict[str, tuple[type | None, ...]]]] = [((), _TOP_LEVEL)]
    for phase in schema.PHASES:
        sections += [(("phases", phase), _PHASE), (("phases", phase, "memory"), _MEMORY)]
        if doc["phases"][phase].get("breakdown"):
            sections.append((("phases", phase, "breakdown"), _BREAKDOWN))
    if doc.get("communication"):
        sections.append((("communication",), _COMMUNICATION))
    return [(where, key) for where, spec in sections for key, types in spec.items() if None in types]


def test_a_dump_without_a_nullable_field_is_judged_never_crashes_the_reader(tiny_ddp_dumps, tmp_path):
    """A nullable field may be absent (a dump written before it was recorded): the field checker lets it
    through, so the meaning checks must read it as null, on both roads, never raise a KeyError."""
    fields = _nullable_fields(tiny_ddp_dumps[0])
    assert len(fields) > 10
    for where, key in fields:
        doc = copy.deepcopy(tiny_ddp_dumps[0])
        node = doc
        for name in where:
            node = node[name]
        node.pop(key, None)
        assert isinstance(schema.validate(doc), list), (where, key)
        folder = tmp_path / f"{'.'.join((*where, key))}"
        folder.mkdir()
        _written(folder, doc)
        _written(folder, tiny_ddp_dumps[1], "rank_1.json")
        _, reasons = schema.read_attempt(folder, 2)
        assert isinstance(reasons, list), (where, key)
