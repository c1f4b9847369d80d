"""What a sweep's reader works out once and keeps (jobs/schema/memo.py, used by shape.py, environment_hash.py
and analysis/load.py).

Reading 40,000 dumps parses each once, into the structs, and works out what a config lets its ranks hold once
per cell, an environment's hash once per environment and a configuration's key once for all its repeats. Each
is kept by a key equal only for equal values: ``3`` and ``3.0`` (equal in Python, two texts in JSON) never
share what was worked out, nor do two configs that differ anywhere.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from analysis import load
from jobs import schema
from jobs.schema.memo import ExactMemo


def _attempt(folder: Path, dumps: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    folder.mkdir(parents=True)
    for doc in dumps:
        doc = {**copy.deepcopy(doc), "config": copy.deepcopy(config)}
        (folder / schema.dump_filename(doc["rank"])).write_text(json.dumps(doc))
    return schema.read_attempt(folder, len(dumps), config, dumps[0]["cell_id"])[1]


def test_what_a_config_lets_its_ranks_hold_is_never_taken_from_another_config(tiny_ddp_dumps, tmp_path):
    config = tiny_ddp_dumps[0]["config"]
    steps = config["steps"]
    assert _attempt(tmp_path / "a", tiny_ddp_dumps, config) == []
    # The same dumps under a config that times one step more: the facts kept for the first must not be used.
    more = {**config, "steps": steps + 1}
    assert any(f"but the config's steps={steps + 1}" in r for r in _attempt(tmp_path / "b", tiny_ddp_dumps, more))
    # steps=3.0 == 3 in Python, but it is no int: a key by == would have passed it as the first config.
    as_float = {**config, "steps": float(steps)}
    reasons = _attempt(tmp_path / "c", tiny_ddp_dumps, as_float)
    assert any(f"steps={float(steps)} is not a positive int" in r for r in reasons)
    assert _attempt(tmp_path / "d", tiny_ddp_dumps, config) == []  # and the first config reads as before


def test_the_kept_environment_hash_is_the_hash_taken_afresh(tiny_ddp_dumps):
    env = copy.deepcopy(tiny_ddp_dumps[0]["environment"])
    variants = [env, {**env, "cpu_model": 2}, {**env, "cpu_model": 2.0}, {**env, "cpu_model": True}, env]
    fresh = [schema.environment_hash(v) for v in variants]
    kept = [schema.environment_hash(v, decoded=True) for v in variants]
    assert kept == fresh
    assert len(set(fresh[1:4])) == 3  # 2, 2.0 and true are three environments


def test_a_configuration_key_is_kept_only_for_the_same_configuration():
    base = {"batch_size": 32, "lr": 1, "repeat": 0, "model": {"name": "resnet18"}}
    variants = [
        base,
        {**base, "repeat": 1},
        {**base, "lr": 1.0},
        {**base, "lr": True},
        {**base, "model": {"name": "x"}},
    ]
    keys = [load._configuration_of(v)[0] for v in variants]
    assert keys == [load.config_key(v) for v in variants]  # as worked out afresh
    assert keys[0] == keys[1]  # repeats share their configuration's key
    assert len(set(keys[1:])) == 4
    first, again = load._configuration_of(base)[1], load._configuration_of(base)[1]
    first["lr"] = "changed by a reader"
    assert again["lr"] == 1 and load._configuration_of(base)[1]["lr"] == 1  # each caller gets its own copy


def test_the_memo_keeps_apart_what_json_text_would_spell_alike():
    # NaN, Infinity and null are all "null" in JSON's text; 1, 1.0 and true are equal in Python.
    inputs = [{"x": None}, {"x": math.nan}, {"x": math.inf}, {"x": 1}, {"x": 1.0}, {"x": True}, {"x": [1]}]
    memo: ExactMemo[str] = ExactMemo()
    worked = [memo.get(value, lambda value=value: repr(value), decoded=True) for value in inputs]
    assert worked == [repr(value) for value in inputs]
    assert len(memo) == len(inputs)
    assert memo.get({"x": 1.0}, lambda: "worked again", decoded=True) == repr({"x": 1.0})  # kept


def test_the_memo_keeps_nothing_for_a_value_json_has_no_exact_text_for():
    memo: ExactMemo[str] = ExactMemo()
    odd = [{"x": {1, 2}}, {"x": (1, 2)}, {1: "int key"}, {"x": 2**70}]
    for value in odd:
        assert memo.get(value, lambda: "first") == "first"
        assert memo.get(value, lambda: "again") == "again"  # worked out every time
    assert len(memo) == 0
    # The same list as a set and as a list: msgpack spells both as an array, so the walk must tell them apart.
    assert memo.get({"x": [1, 2]}, lambda: "list") == "list"
    assert memo.get({"x": {1, 2}}, lambda: "set") == "set"


def test_the_memo_stays_within_what_it_may_keep():
    memo: ExactMemo[int] = ExactMemo(kept=3)
    for n in range(10):
        assert memo.get({"n": n}, lambda n=n: n, decoded=True) == n
        assert len(memo) <= 3
