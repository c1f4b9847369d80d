"""jobs.schema trusts nothing a dump says about itself: counts, config types, memory, hashes, files.

The trust report (issue 20) found five classes of a dump the schema accepted: counts the config
cannot produce, a config equal to its cell only by Python's ``==``, memory its device cannot have,
an environment edited under its stored hash, and files that are not files. Each class is tested
here on the real dumps of the tiny two-process CPU cell (conftest ``tiny_ddp_dumps``: steps=3,
warmup_steps=1, val_steps=2, batch_size 16, 128 training and 64 validation samples, device=cpu);
``tests/test_faults_dumps.py`` runs the same classes through ``dnnbench aggregate``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import enum
import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from jobs import schema

TIB = 2**40


@pytest.fixture
def dumps(tiny_ddp_dumps) -> list[dict[str, Any]]:
    return copy.deepcopy(tiny_ddp_dumps)


def _timed(phase: dict[str, Any], steps: int, samples: int) -> None:
    """``steps`` timed steps and ``samples`` samples, every other figure consistent with them."""
    step = math.fsum(phase["step_times_s"]) / max(len(phase["step_times_s"]), 1) or 0.01
    phase.update(timed_steps=steps, step_times_s=[step] * steps, samples=samples)
    phase["seconds"] = math.fsum(phase["step_times_s"]) * 1.001
    phase["throughput_samples_per_s"] = samples / phase["seconds"] if phase["seconds"] else 0.0
    if phase.get("breakdown"):  # the whole step unclaimed: a breakdown of the new step count
        phase["breakdown"]["parts_s"] = {p: [step if p == "other" else 0.0] * steps for p in schema.BREAKDOWN_PARTS}
        phase["breakdown"]["comm_s"] = None


def _reasons(doc: dict[str, Any]) -> str:
    return "; ".join(schema.validate(doc))


# --------------------------------------------------------------------------- 1. counts


@pytest.mark.parametrize("rank", [0, 1])
def test_every_count_is_checked_against_the_config_on_every_rank(dumps, rank):
    doc = dumps[rank]
    assert schema.validate(doc) == []
    train = copy.deepcopy(doc)
    _timed(train["phases"]["train"], 100, 100 * 16)
    assert "phases.train.timed_steps: 100, but the config's steps=3 time 3" in _reasons(train)
    fewer = copy.deepcopy(doc)
    _timed(fewer["phases"]["train"], 2, 2 * 16)
    assert "phases.train.timed_steps: 2, but the config's steps=3 time 3" in _reasons(fewer)
    warm = copy.deepcopy(doc)
    warm["phases"]["train"]["warmup_steps"] = 0
    assert "phases.train.warmup_steps: 0, but the config's warmup_steps=1" in _reasons(warm)
    val_warm = copy.deepcopy(doc)
    val_warm["phases"]["val"]["warmup_steps"] = 3
    assert "phases.val.warmup_steps: 3, but validation runs 1 untimed first step" in _reasons(val_warm)
    val = copy.deepcopy(doc)
    _timed(val["phases"]["val"], 40, 40 * 16)
    val["phases"]["val"].update(evaluated=41 * 16, correct=0, accuracy=0.0)
    assert "phases.val: 40 timed steps" in _reasons(val)


def test_a_rank_that_does_not_count_samples_still_runs_the_configs_steps(dumps):
    doc = dumps[1]
    doc["counts_samples"] = False  # refused on DDP, but the step count is checked regardless
    _timed(doc["phases"]["train"], 50, 0)
    assert "phases.train.timed_steps: 50, but the config's steps=3 time 3" in _reasons(doc)


def test_epochs_time_every_whole_batch_of_the_shard_less_the_warm_up(dumps):
    doc = dumps[0]
    doc["config"].update(epochs=2, steps=None)
    # 128 samples over 2 replicas: 64 each, 4 whole batches of 16 an epoch; 2 epochs less 1 warm-up step = 7.
    assert "phases.train.timed_steps: 3, but the config's epochs=2 of 4 steps less warmup_steps=1 time 7" in (
        _reasons(doc)
    )
    _timed(doc["phases"]["train"], 7, 7 * 16)
    assert schema.validate(doc) == []


def test_a_config_without_a_step_count_is_named(dumps):
    doc = dumps[0]
    doc["config"].update(steps=True)
    assert "config: steps=true is not a positive int (and epochs is null)" in _reasons(doc)


def test_the_ranks_of_one_attempt_run_the_same_steps(dumps):
    docs = {d["rank"]: d for d in dumps}
    docs[1]["phases"]["val"]["warmup_steps"] = 0
    assert any("ranks disagree on phases.val.warmup_steps" in r for r in schema.check_ranks(docs, 2))


# --------------------------------------------------------------------------- 2. config types


@pytest.mark.parametrize(
    ("dotted", "dump_value", "cell_value", "shown"),
    [
        ("seed", False, 0, "seed: false in the dump, 0 in cell.json"),
        ("threads_per_process", 1.0, 1, "threads_per_process: 1.0 in the dump, 1 in cell.json"),
        ("cudnn_benchmark", 0, False, "cudnn_benchmark: 0 in the dump, false in cell.json"),
        ("cudnn_benchmark", 1, True, "cudnn_benchmark: 1 in the dump, true in cell.json"),
        ("lr", 0, 0.0, "lr: 0 in the dump, 0.0 in cell.json"),
        ("dataset.on_device", 1, True, "dataset.on_device: 1 in the dump, true in cell.json"),
        ("pipeline.split", [1.0], [1], "pipeline.split: [1.0] in the dump, [1] in cell.json"),
    ],
)
def test_the_config_is_compared_with_its_cell_type_exactly(dumps, dotted, dump_value, cell_value, shown):
    doc = dumps[0]
    cell = copy.deepcopy(doc["config"])
    *parents, leaf = dotted.split(".")
    dump_node, cell_node = doc["config"], cell
    for name in parents:
        dump_node, cell_node = dump_node[name], cell_node[name]
    dump_node[leaf], cell_node[leaf] = dump_value, cell_value
    assert dump_value == cell_value  # equal to Python: that is the bug
    reasons = schema.check_against_cell(doc, cell)
    assert reasons and shown in reasons[0], reasons
    docs = {0: doc, 1: {**dumps[1], "config": cell}}
    assert "ranks disagree on config" in schema.check_ranks(docs, 2)


def test_an_added_key_holding_another_type_is_not_its_old_value():
    config = {"cudnn_benchmark": 0, "cluster": {"exclusive": 0}}
    assert schema.without_added_defaults(config) == config  # 0 is not the old False: kept
    assert schema.without_added_defaults({"cudnn_benchmark": False, "cluster": {}}) == {"cluster": {}}


def test_the_dumps_identity_is_compared_with_its_config_type_exactly(dumps):
    doc = dumps[0]
    doc["config"]["repeat"] = False  # the dump's repeat is 0
    assert "repeat: 0, but the config says repeat=False" in _reasons(doc)


# --------------------------------------------------------------------------- 3. memory


def test_memory_is_consistent_with_its_kind(dumps):
    doc = dumps[0]
    doc["phases"]["train"]["memory"]["peak_allocated_bytes"] = 5 * TIB
    assert "phases.train.memory.peak_allocated_bytes: 5497558138880, but memory kind rss has no CUDA allocator" in (
        _reasons(doc)
    )
    doc = dumps[1]
    doc["phases"]["val"]["memory"]["kind"] = "cuda"
    assert "phases.val.memory.kind: 'cuda', but the dump's memory_kind is 'rss'" in _reasons(doc)


def test_the_device_is_the_configs_and_the_environments(dumps):
    doc = copy.deepcopy(dumps[0])
    doc["device_type"] = "cuda"
    reasons = _reasons(doc)
    assert "device_type: 'cuda', but memory_kind is 'rss'" in reasons
    assert "device_type: 'cuda', but the config says device=cpu" in reasons
    doc = copy.deepcopy(dumps[0])
    doc["config"]["device"] = "auto"  # auto: the environment decides
    doc.update(device_type="cuda", memory_kind="cuda")
    for phase in doc["phases"].values():
        phase["memory"].update(kind="cuda", peak_allocated_bytes=1000, peak_reserved_bytes=2000)
    reasons = _reasons(doc)
    assert "device_type: 'cuda', but environment.device_index is null" in reasons
    assert "device_type: 'cuda', but environment.cuda_available is false" in reasons
    doc = copy.deepcopy(dumps[0])
    doc["device_type"] = "tpu"
    assert "device_type: expected one of ('cpu', 'cuda'), got 'tpu'" in _reasons(doc)


def test_a_cuda_rank_has_allocator_peaks(dumps):
    doc = dumps[0]
    doc["config"]["device"] = "cuda"
    doc.update(device_type="cuda", memory_kind="cuda")
    doc["environment"].update(cuda_available=True, device_index=0, gpu_count=1)
    for phase in doc["phases"].values():
        phase["memory"].update(kind="cuda", peak_allocated_bytes=None, peak_reserved_bytes=None)
    assert "phases.train.memory.peak_allocated_bytes: null, but memory kind cuda records the allocator's peaks" in (
        _reasons(doc)
    )


def test_memory_is_bounded_by_the_node(dumps):
    doc = copy.deepcopy(dumps[0])
    doc["phases"]["train"]["memory"]["peak_rss_bytes"] = 100 * TIB
    assert f"phases.train.memory.peak_rss_bytes: {100 * TIB} > {schema.NODE_MEMORY_LIMIT_BYTES}" in _reasons(doc)
    # Where the node's RAM is recorded, it is the bound.
    doc = copy.deepcopy(dumps[0])
    doc["environment"]["resources"]["memory_total_bytes"] = 2**30
    doc["phases"]["val"]["memory"]["end_rss_bytes"] = 2**31
    assert "phases.val.memory.end_rss_bytes: 2147483648 > 1073741824, the node's memory" in _reasons(doc)
    # A CUDA rank's allocator peaks: bounded by its device's memory where recorded, else the hard bound.
    doc = copy.deepcopy(dumps[0])
    doc["config"]["device"] = "cuda"
    doc.update(device_type="cuda", memory_kind="cuda")
    doc["environment"].update(cuda_available=True, device_index=0, gpu_count=1)
    for phase in doc["phases"].values():
        phase["memory"].update(kind="cuda", peak_allocated_bytes=2**30, peak_reserved_bytes=2**31)
    assert schema.validate(doc) == []
    doc["environment"]["resources"]["gpu_memory_total_bytes"] = 2**30
    assert "phases.train.memory.peak_reserved_bytes: 2147483648 > 1073741824, the device's memory" in _reasons(doc)
    del doc["environment"]["resources"]["gpu_memory_total_bytes"]
    doc["phases"]["val"]["memory"].update(peak_allocated_bytes=5 * TIB, peak_reserved_bytes=5 * TIB)
    assert f"phases.val.memory.peak_allocated_bytes: {5 * TIB} > {schema.DEVICE_MEMORY_LIMIT_BYTES}" in _reasons(doc)


# --------------------------------------------------------------------------- 3b. breakdown, communication


def _parts(doc: dict[str, Any], phase: str = "train") -> dict[str, list[float]]:
    return doc["phases"][phase]["breakdown"]["parts_s"]


def test_the_real_breakdown_and_communication_sections_are_valid(dumps):
    for doc in dumps:
        assert doc["phases"]["train"]["breakdown"]["parts_s"] and doc["communication"]["probes"]
        assert schema.validate(doc) == []


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: _parts(d)["forward"].__setitem__(0, _parts(d)["forward"][0] + 1.0), "step 0's parts add up to"),
        (lambda d: _parts(d, "val").pop("wait"), "phases.val.breakdown.parts_s: parts"),
        (lambda d: _parts(d)["data"].append(0.0), "parts_s.data: 4 entries for 3 timed steps"),
        (lambda d: _parts(d)["optimizer"].__setitem__(1, -0.5), "parts_s.optimizer: entries must be non-negative"),
        (lambda d: _parts(d)["backward"].__setitem__(1, "0.1"), "parts_s.backward: entries must be non-negative"),
        (lambda d: d["phases"]["train"]["breakdown"].update(clock="sundial"), "breakdown.clock: expected one of"),
        (lambda d: d["phases"]["train"]["breakdown"].update(comm_s=[100.0] * 3), "step 0 communicated 100 s"),
        (lambda d: d["phases"]["train"]["breakdown"].update(comm_s=[0.0]), "comm_s: 1 entries for 3 timed steps"),
        (lambda d: d["phases"]["train"].update(breakdown=[1, 2]), "breakdown: expected object, got list"),
    ],
    ids=["parts-exceed-step", "part-missing", "too-many-steps", "negative", "text", "clock", "comm-beyond-step",
         "comm-steps", "not-object"],
)  # fmt: skip
def test_a_breakdown_is_one_non_negative_number_per_part_and_step_adding_up_to_the_step(dumps, damage, reason):
    doc = dumps[0]
    assert doc["phases"]["train"]["timed_steps"] == 3
    damage(doc)
    assert reason in _reasons(doc)


def _comm(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["communication"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: _comm(d).update(bytes_per_step=_comm(d)["bytes_per_step"] * 2), "but the collectives move"),
        (lambda d: _comm(d).update(bound_s=_comm(d)["bound_s"] / 10), "communication.bound_s:"),
        (lambda d: _comm(d).update(bound_s=None), "communication.bound_s: None"),
        (lambda d: _comm(d)["collectives"][0].update(factor=0.3), "not the all_reduce factor of any group of 2..2"),
        (lambda d: _comm(d)["collectives"][0].update(collective="alltoall"), "collective: 'alltoall'"),
        (lambda d: _comm(d)["collectives"][0].update(payload_bytes=-1), "payload_bytes: -1 < 0"),
        (lambda d: _comm(d)["probes"][0].update(bus_gbps=_comm(d)["probes"][0]["bus_gbps"] * 100), "its sizes' best"),
        (lambda d: _comm(d)["probes"][0]["sizes"][0].update(seconds=1e-12), "but bytes ÷ seconds"),
        (lambda d: _comm(d)["probes"][0].update(processes=8), "processes: 8 outside 2..2"),
        (lambda d: _comm(d)["probes"][0].update(scope="moon"), "expected an all_reduce over one of"),
        (lambda d: _comm(d).update(probes=[]), "communication.probes: empty"),
        (lambda d: _comm(d).update(timed_in=["bubble"]), "communication.timed_in: ['bubble']"),
        (lambda d: d.update(communication="fast"), "communication: expected object, got str"),
    ],
    ids=["bytes", "bound", "bound-null", "factor", "name", "payload", "probe-best", "probe-size", "processes",
         "scope", "no-probe", "timed-in", "not-object"],
)  # fmt: skip
def test_the_communication_sections_summaries_are_recomputed_from_its_probes_and_collectives(dumps, damage, reason):
    doc = dumps[1]
    damage(doc)
    assert reason in _reasons(doc)


def test_one_process_has_no_communication_section(dumps):
    doc = dumps[0]
    doc["world_size"] = 1
    assert "a section in a dump of world_size 1" in "; ".join(schema._communication_reasons(doc))


# --------------------------------------------------------------------------- 4. environment hash


def test_the_environment_hash_is_recomputed_on_read(dumps):
    doc = dumps[0]
    stored = doc["environment_hash"]
    doc["environment"]["torch"] = "1.13.0"
    assert f"environment_hash: stored {stored!r}, but the environment hashes to" in _reasons(doc)
    assert doc["environment_hash"] == dumps[1]["environment_hash"]  # the stored summaries agree …
    assert schema.validate(dumps[1]) == []  # … only the edited rank is refused


def test_old_dumps_keep_the_hash_they_were_written_with(dumps):
    doc = dumps[0]
    env = {k: v for k, v in doc["environment"].items() if k not in ("numerics", *schema.ADDED_COMPARABLE_KEYS)}
    doc["environment"] = env
    # Written before numerics existed: hashed over the keys of that version, numerics not among them.
    old_keys = [k for k in schema.COMPARABLE_KEYS if k != "numerics" and k not in schema.ADDED_COMPARABLE_KEYS]
    text = json.dumps({k: env.get(k) for k in old_keys}, sort_keys=True, default=str)
    doc["environment_hash"] = schema.hashlib.sha256(text.encode()).hexdigest()[:12]
    assert schema.validate(doc) == []
    # Written since numerics was hashed, by a rank without torch (noop): numerics hashed as null.
    doc["environment_hash"] = schema.environment_hash(env)
    assert schema.validate(doc) == []


def test_the_hash_check_follows_the_hash_function(dumps, monkeypatch):
    doc = dumps[0]
    monkeypatch.setattr(schema, "environment_hash", lambda env, **_: "0" * 12)
    assert "environment_hash: stored" in _reasons(doc)
    doc["environment_hash"] = "0" * 12
    assert schema.validate(doc) == []


# --------------------------------------------------------------------------- 5. files that are not files


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    def expired(*_: object) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "rank_0.json"
    os.mkfifo(fifo)
    with no_hang():
        assert schema.read_json(fifo) == (None, "unreadable (is a FIFO, not a regular file)")
        with pytest.raises(schema.SchemaError, match="is a FIFO, not a regular file"):
            schema.load(fifo)
        docs, reasons = schema.read_attempt(tmp_path, 1)
    assert docs == [] and reasons == ["rank 0: unreadable (is a FIFO, not a regular file)"]


def test_only_regular_files_of_a_bounded_size_are_read(tmp_path):
    (tmp_path / "folder").mkdir()
    assert schema.read_json(tmp_path / "folder") == (None, "unreadable (is a directory, not a regular file)")
    assert schema.read_json(Path("/dev/zero")) == (None, "unreadable (is a character device, not a regular file)")
    assert schema.read_json(tmp_path / "absent.json") == (None, "missing")
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(schema.MAX_JSON_BYTES + 1)  # sparse: no disk used
    doc, error = schema.read_json(big)
    assert doc is None and error == f"unreadable (larger than {schema.MAX_JSON_BYTES} bytes)"
    (tmp_path / "ok.json").write_text('{"a": 1}')
    os.symlink(tmp_path / "ok.json", tmp_path / "link.json")
    assert schema.read_json(tmp_path / "link.json") == ({"a": 1}, None)


@pytest.mark.parametrize("name", ["cell.json", "outcome.json", "rank_1.json"])
def test_aggregate_never_hangs_on_a_fifo(name, tmp_path, capsys):
    import synthetic_sweeps as synthetic

    from orchestrator import cli

    good = synthetic.write_cell(tmp_path / "sweep", synthetic.config(gpus=2), step_times=[[0.3] * 6] * 2)
    bad = synthetic.write_cell(tmp_path / "sweep", synthetic.config(gpus=2, lr=0.5), step_times=[[0.3] * 6] * 2)
    target = bad / name if name != "cell.json" else bad.parent / name
    target.unlink()
    os.mkfifo(target)
    with no_hang():
        code = cli.main(["aggregate", str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--no-figures",
                         "--no-progress"])  # fmt: skip
    assert code == 0
    listed = (tmp_path / "out" / "incomplete.csv").read_text()
    assert bad.parent.name in listed and "is a FIFO, not a regular file" in listed
    assert good.parent.name in (tmp_path / "out" / "results.csv").read_text()


def _hash_as_written(env: dict) -> str:
    """The hash as every version took it, recomputed with no memo."""
    comparable = {k: env.get(k) for k in schema.COMPARABLE_KEYS if k in env or k not in schema.ADDED_COMPARABLE_KEYS}
    return schema.hashlib.sha256(json.dumps(comparable, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _Colour(enum.Enum):
    RED = "1"


@dataclasses.dataclass
class _Threads:
    OMP_NUM_THREADS: str = "1"


def test_a_remembered_environment_hash_is_never_given_to_another_environment(dumps):
    # Reading a sweep remembers each environment's hash: values a compact encoding could confuse
    # (a set and a list, an Enum and its value, a dataclass and a dict, 1 and 1.0 and true, equal
    # instants in two time zones) each keep the hash of their own JSON text, in either order.
    base = dumps[0]["environment"]
    utc = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.timezone.utc)
    plus_one = utc.astimezone(datetime.timezone(datetime.timedelta(hours=1)))
    lookalikes = [
        ["1", "2"], {"1", "2"}, ("1", "2"), "1", _Colour.RED, 1, 1.0, True, None,
        {"OMP_NUM_THREADS": "1"}, _Threads(), utc, plus_one, [utc], [plus_one], float("nan"), 2**70,
    ]  # fmt: skip
    for order in (lookalikes, lookalikes[::-1]):
        for value in order:
            env = {**base, "threads": value}
            assert schema.environment_hash(env) == _hash_as_written(env), value
