"""jobs/schema.py: a real dump validates; every kind of corruption is named; writes are atomic."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import pytest

from jobs import schema


@pytest.fixture
def dump(tiny_ddp_dumps) -> dict:
    """A fresh copy of a real rank dump (rank 0 of the tiny two-process DDP cell)."""
    return copy.deepcopy(tiny_ddp_dumps[0])


def test_real_dumps_validate(tiny_ddp_dumps):
    for doc in tiny_ddp_dumps:
        assert schema.validate(doc) == []
        assert doc["schema"] == schema.SCHEMA_NAME and doc["schema_version"] == schema.SCHEMA_VERSION


def test_a_real_dump_round_trips_through_write_atomic_and_load(dump, tmp_path):
    path = tmp_path / schema.dump_filename(0)
    schema.write_atomic(path, dump)
    assert schema.load(path) == dump


def _set(doc: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc[key]
    doc[last] = value


def _delete(doc: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc[key]
    del doc[last]


@pytest.mark.parametrize(
    ("dotted", "value", "reason"),
    [
        ("rank", "0", "rank: expected int, got str"),
        ("world_size", 2.0, "world_size: expected int, got float"),
        ("phases", [], "phases: expected dict, got list"),
        ("environment_hash", None, "environment_hash: null not allowed"),
        ("phases.train.seconds", "1.5", "phases.train.seconds: expected int|float, got str"),
        ("phases.val.memory.peak_rss_bytes", 1.5, "phases.val.memory.peak_rss_bytes: expected int, got float"),
    ],
)
def test_wrong_type_is_named(dump, dotted, value, reason):
    _set(dump, dotted, value)
    assert reason in schema.validate(dump)


@pytest.mark.parametrize(
    ("dotted", "reason"),
    [
        ("cell_id", "cell_id: missing"),
        ("phases.train.step_times_s", "phases.train.step_times_s: missing"),
        ("phases.val.memory.kind", "phases.val.memory.kind: missing"),
        ("phases.val", "phases.val: missing"),
    ],
)
def test_missing_field_is_named(dump, dotted, reason):
    _delete(dump, dotted)
    assert reason in schema.validate(dump)


def test_optional_fields_may_be_absent(dump):
    del dump["pipeline"], dump["extra"]
    assert schema.validate(dump) == []


@pytest.mark.parametrize(
    ("dotted", "reason"),
    [
        ("attempt", "attempt: expected int, got bool"),
        ("phases.train.samples", "phases.train.samples: expected int, got bool"),
        ("phases.val.correct", "phases.val.correct: expected int, got bool"),
    ],
)
def test_bool_where_a_count_belongs_is_rejected(dump, dotted, reason):
    _set(dump, dotted, True)
    assert reason in schema.validate(dump)


def test_bool_step_time_is_rejected(dump):
    dump["phases"]["train"]["step_times_s"][0] = True
    assert "phases.train.step_times_s: entries must be non-negative numbers" in schema.validate(dump)


def test_peak_allocated_above_reserved_is_impossible(dump):
    memory = dump["phases"]["train"]["memory"]
    memory.update(kind="cuda", peak_allocated_bytes=2048, peak_reserved_bytes=1024)
    assert "phases.train.memory: peak allocated 2048 > peak reserved 1024" in schema.validate(dump)


def test_step_times_must_match_timed_steps(dump):
    train = dump["phases"]["train"]
    steps = train["timed_steps"]
    train["step_times_s"].pop()
    assert f"phases.train.step_times_s: {steps - 1} entries for {steps} steps" in schema.validate(dump)


def test_negative_step_time_is_rejected(dump):
    dump["phases"]["val"]["step_times_s"][0] = -0.1
    assert "phases.val.step_times_s: entries must be non-negative numbers" in schema.validate(dump)


def test_rank_outside_world_is_rejected(dump):
    dump["rank"] = dump["world_size"]
    assert f"rank: {dump['world_size']} outside world_size {dump['world_size']}" in schema.validate(dump)


def test_unknown_memory_kind_is_rejected(dump):
    dump["memory_kind"] = "hbm"
    assert "memory_kind: expected one of ('cuda', 'rss'), got 'hbm'" in schema.validate(dump)


def test_environment_must_carry_the_comparable_basics(dump):
    del dump["environment"]["torch"], dump["environment"]["threads"]
    assert "environment: missing torch, threads" in schema.validate(dump)


def test_other_schema_version_is_refused_not_misread(dump):
    dump["schema_version"] = schema.SCHEMA_VERSION + 1
    assert schema.validate(dump) == [
        f"schema_version: this reader understands {schema.SCHEMA_VERSION}, got {schema.SCHEMA_VERSION + 1}"
    ]


def test_other_schema_name_is_refused(dump):
    dump["schema"] = "someone.else"
    assert schema.validate(dump) == ["schema: expected 'dnnbench.metrics', got 'someone.else'"]


def test_not_an_object_is_refused():
    assert schema.validate([1, 2]) == ["top level: expected object, got list"]


def test_every_reason_is_reported_not_only_the_first(dump):
    del dump["cell_id"]
    dump["rank"] = True
    assert {"cell_id: missing", "rank: expected int, got bool"} <= set(schema.validate(dump))


def test_load_of_a_truncated_file_raises_schema_error_with_the_path(dump, tmp_path):
    path = tmp_path / "rank_0.json"
    text = json.dumps(dump)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(schema.SchemaError, match=r"rank_0\.json: unreadable: ") as caught:
        schema.load(path)
    assert caught.value.path == str(path)
    assert caught.value.reasons[0].startswith("unreadable: ")


def test_load_of_a_missing_file_raises_schema_error(tmp_path):
    with pytest.raises(schema.SchemaError, match=r"nothere\.json: unreadable: .*No such file"):
        schema.load(tmp_path / "nothere.json")


def test_load_of_an_invalid_dump_lists_every_reason(dump, tmp_path):
    del dump["cell_id"]
    dump["phases"]["train"]["step_times_s"] = []
    path = tmp_path / "rank_0.json"
    path.write_text(json.dumps(dump))
    with pytest.raises(schema.SchemaError) as caught:
        schema.load(path)
    # Top-level problems are reported first; phase checks run once the top level is sound.
    assert caught.value.reasons == ["cell_id: missing"]


def test_write_atomic_leaves_only_the_target(tmp_path):
    target = tmp_path / "deep" / "outcome.json"
    schema.write_atomic(target, {"state": "completed"})
    schema.write_atomic(target, {"state": "failed"})
    assert sorted(p.name for p in target.parent.iterdir()) == ["outcome.json"]
    assert json.loads(target.read_text()) == {"state": "failed"}


@pytest.mark.parametrize("bad", [float("nan"), object()], ids=["nan", "unserialisable"])
def test_a_failed_write_keeps_the_old_file_whole_and_leaves_no_temp_file(tmp_path, bad):
    target = tmp_path / "rank_0.json"
    schema.write_atomic(target, {"ok": 1})
    # Sorted keys: most of the document is written before the bad value is reached.
    doc = {"a": list(range(10_000)), "zz_bad": bad}
    with pytest.raises((ValueError, TypeError)):
        schema.write_atomic(target, doc)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["rank_0.json"]


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path):
    target = tmp_path / "rank_0.json"
    big = {"payload": ["x" * 100] * 20_000}  # ~2 MB: a plain write would be seen half-done
    schema.write_atomic(target, {"version": -1, **big})
    stop, seen, errors = threading.Event(), set(), []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add(json.loads(Path(target).read_text())["version"])
            except ValueError as err:  # a torn read
                errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in range(300):
            schema.write_atomic(target, {"version": version, **big})
            if len(seen) >= 3 and version >= 20:
                break
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert len(seen) >= 2, "the reader never ran between writes: the test proved nothing"


def test_added_config_keys_are_filled_in_and_left_out_without_touching_the_input():
    new = {"steps": 3, "cudnn_benchmark": False, "cluster": {"name": "slurm", "ssh_port": None}}
    before = json.loads(json.dumps(new))
    old = schema.without_added_defaults(new)
    assert old == {"steps": 3, "cluster": {"name": "slurm"}}
    assert schema.with_added_defaults(old) == {
        "steps": 3, "cudnn_benchmark": False,
        "cluster": {"name": "slurm", "ssh_port": None, "ssh_identity_file": None, "gpu_type": None,
                    "exclusive": False},
        "env": schema.ADDED_CONFIG_DEFAULTS["env"],  # a section added whole: env=current
        "breakdown": True,  # cells before the knob were timed part by part
    }  # fmt: skip
    assert new == before, "the caller's config was changed"
    # A value other than the old default is part of the config, not an added default.
    assert schema.without_added_defaults({"cudnn_benchmark": True}) == {"cudnn_benchmark": True}


@pytest.mark.parametrize(
    ("batch", "replicas", "size", "val_steps", "expected"),
    [
        (4, 1, 1024, 2, (1, 4, 8)),  # two whole batches, the first untimed
        (16, 2, 51, None, (1, 10, 26)),  # padded to 26 per replica: 16 untimed + 10 timed
        (16, 2, 64, 2, (1, 16, 32)),
        (8, 3, 2, None, (0, 0, 1)),  # fewer samples than replicas: one padded sample each, untimed
        (8, 1, 100, 0, (0, 0, 0)),  # val_steps=0: no batch at all
        (8, 1, 0, None, (0, 0, 0)),  # an empty split
        (32, 4, 8192, 11, (10, 320, 352)),
    ],
)
def test_val_counts_follow_the_loop(batch, replicas, size, val_steps, expected):
    assert schema.val_counts(batch, replicas, size, val_steps) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": [1.0, {"b": float("-inf")}]}, ("a[1].b", "-Infinity is not a finite number")),
        ({"x": 2**63}, ("x", "an integer of 19 digits is out of range")),
        ([0.5, float("nan")], ("[1]", "NaN is not a finite number")),
    ],
)
def test_non_finite_names_each_number_by_its_path(value, problem):
    assert schema.non_finite(value) == [problem]


def test_the_largest_finite_numbers_are_finite():
    assert schema.non_finite({"f": [1.7976931348623157e308, -1e308], "i": [2**63 - 1, -(2**63)], "s": "NaN"}) == []


def test_a_noop_dump_without_timed_steps_is_valid(dump):
    for name in schema.PHASES:
        phase = dump["phases"][name]
        phase.update(timed_steps=0, samples=0, seconds=0.0, throughput_samples_per_s=0.0, step_times_s=[],
                     correct=None, evaluated=None, accuracy=None, breakdown=None)  # fmt: skip
    dump["phases"]["val"]["warmup_steps"] = 0  # as jobs/noop.py writes it: noop runs no validation step
    dump["config"]["framework"]["name"] = dump["framework"] = "noop"
    assert schema.validate(dump) == []


@pytest.mark.parametrize(
    "number_text",
    ["Infinity", "-Infinity", "NaN", "1e999", "1E+400", "-2e308", "9" * 400 + ".0", str(2**63), str(-(2**63) - 1)],
)
def test_text_that_can_spell_an_odd_number_is_always_walked(number_text: str) -> None:
    """The byte check that lets a dump skip the walk over its numbers never misses one the walk names."""
    text = ('{"phases": {"train": {"seconds": ' + number_text + "}}}").encode()
    assert schema.non_finite(json.loads(text)), number_text  # the walk names it …
    assert schema.text_may_hold_odd_numbers(text)  # … so the text check must send it to the walk


def test_text_of_ordinary_numbers_skips_the_walk_and_the_walk_agrees() -> None:
    import random

    rng = random.Random(0)
    for _ in range(2000):
        value = rng.choice([rng.uniform(-1e300, 1e300), rng.random(), rng.randint(-(2**62), 2**62), 1e-320, 0.0])
        text = json.dumps({"x": [value, {"y": value}]}).encode()
        if not schema.text_may_hold_odd_numbers(text):
            assert schema.non_finite(json.loads(text)) == [], text
