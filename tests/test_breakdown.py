"""Where the step goes (issue 22): exclusive parts per step that add up to the step's time,
communication beside them, and the bandwidth probe with the step's lower bound."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from jobs import schema
from jobs.breakdown import PARTS, StepParts, union_length
from jobs.comm_probe import collective_factor, section


def test_union_length_counts_overlaps_once() -> None:
    assert union_length([]) == 0.0
    assert union_length([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0)]) == pytest.approx(3.0)
    assert union_length([(0.0, 4.0), (1.0, 2.0)]) == pytest.approx(4.0)


def test_nested_parts_are_exclusive_and_carved_time_moves_between_parts() -> None:
    parts = StepParts()
    parts.begin_step()
    start = time.perf_counter()
    with parts.part("wait"):
        time.sleep(0.02)
        with parts.part("forward"):
            time.sleep(0.03)
            parts.carve("exposed_comm", 0.01)  # 10 ms of the forward were a wait for a collective
    total = time.perf_counter() - start
    parts.communication(start, start + 0.005)
    parts.communication(start + 0.004, start + 0.008)
    parts.end_step()
    record = parts.record([total])
    got = {name: values[0] for name, values in record["parts_s"].items()}
    assert set(got) == set(PARTS)
    assert got["wait"] == pytest.approx(0.02, abs=0.008)
    assert got["forward"] == pytest.approx(0.02, abs=0.008)
    assert got["exposed_comm"] == pytest.approx(0.01)
    assert sum(got.values()) == pytest.approx(total, rel=1e-9)
    assert record["comm_s"] == [pytest.approx(0.008)]
    assert record["clock"] == "host"


def test_a_strategy_without_collectives_has_no_communication_figure() -> None:
    parts = StepParts()
    parts.begin_step()
    with parts.part("forward"):
        pass
    parts.end_step()
    assert parts.record([0.001])["comm_s"] is None


def test_the_breakdown_refuses_a_step_count_it_was_not_given() -> None:
    parts = StepParts()
    parts.begin_step()
    parts.end_step()
    with pytest.raises(ValueError, match="1 steps broken down for 2 timed steps"):
        parts.record([0.1, 0.1])


def test_collective_factors_are_the_algorithms() -> None:
    assert collective_factor("all_reduce", 4) == pytest.approx(1.5)
    assert collective_factor("all_gather", 4) == pytest.approx(0.75)
    assert collective_factor("reduce_scatter", 2) == pytest.approx(0.5)
    assert collective_factor("send_recv", 2) == 1.0
    assert collective_factor("all_reduce", 1) == 0.0
    with pytest.raises(ValueError, match="expected one of"):
        collective_factor("alltoall", 2)
    probes = [{"bus_gbps": 2.0}]
    done = section(probes, [{"collective": "all_reduce", "payload_bytes": 10**9, "factor": 1.0}])
    assert done is not None and done["bound_s"] == pytest.approx(0.5)
    assert section([], []) is None


FRAMEWORKS = [
    ["framework=ddp"],
    ["framework=horovod"],
    ["framework=fsdp"],
    ["framework=zero"],
    ["framework=pipeline", "pipeline.schedule=1f1b", "pipeline.stages=2"],
    ["framework=pipeline", "pipeline.schedule=pipedream", "pipeline.stages=1"],
]


def _mean_parts(phase: dict[str, Any]) -> dict[str, float]:
    return {name: statistics.fmean(values) for name, values in phase["breakdown"]["parts_s"].items()}


@pytest.mark.parametrize("overrides", FRAMEWORKS, ids=lambda o: "-".join(v.split("=")[1] for v in o))
def test_every_frameworks_parts_add_up_to_its_step_time_and_it_measures_its_communication(
    overrides: list[str], run_cell_here: Any, tmp_path: Path
) -> None:
    if "framework=horovod" in overrides:
        from test_horovod import require_horovod

        require_horovod()
    dumps = run_cell_here(
        [*overrides, "model=resnet18", "gpus=2", "dataset=synthetic", "steps=4", "warmup_steps=1", "val_steps=3",
         "breakdown=true"],
        tmp_path,
    )
    assert len(dumps) == 2
    for doc in dumps:
        assert schema.validate(doc) == []
        for name in ("train", "val"):
            phase = doc["phases"][name]
            record = phase["breakdown"]
            assert record["clock"] == "host"
            assert all(len(v) == phase["timed_steps"] for v in record["parts_s"].values())
            parts = _mean_parts(phase)
            step = statistics.fmean(phase["step_times_s"])
            named = sum(v for k, v in parts.items() if k != "other")
            # The named parts never claim more than the step took, and explain nearly all of it:
            # what is left ("other": the loop's and the step's bookkeeping) is small.
            assert named <= step * 1.02, (name, parts, step)
            assert parts["other"] <= 0.10 * step, (name, parts, step)
            assert sum(parts.values()) == pytest.approx(step, rel=0.02)
            assert parts["forward"] > 0
        train = doc["phases"]["train"]["breakdown"]
        parts = _mean_parts(doc["phases"]["train"])
        assert parts["backward"] > 0 and parts["optimizer"] > 0
        comm = train["comm_s"]
        communication = doc["communication"]
        if "pipeline.stages=2" in overrides:  # one replica per stage: only sends and receives, in wait
            assert parts["wait"] > 0
            # Each stage sends per micro-batch: the first its activation forward, the last the same
            # bytes' gradient back; both held against the wait they block in.
            (sent,) = communication["collectives"]
            assert sent["collective"] == "send_recv" and sent["payload_bytes"] > 0
            assert communication["timed_in"] == ["comm", "wait"] and communication["bound_s"] > 0
            continue
        assert comm is not None and all(c > 0 for c in comm), comm
        # exposed communication is communication: never more than all of it (the clock reads around
        # a blocking collective's part and its interval differ by microseconds per collective)
        assert parts["exposed_comm"] <= statistics.fmean(comm) * 1.01 + 1e-4
        pipelined = "framework=pipeline" in overrides
        assert communication["timed_in"] == (["comm", "wait"] if pipelined else ["comm"])
        assert communication["probes"][0]["processes"] == 2
        assert communication["probes"][0]["bus_gbps"] > 0
        assert communication["bytes_per_step"] > 0 and communication["bound_s"] > 0


def test_the_breakdown_is_off_unless_the_cell_asks_for_it(run_cell_here: Any, tmp_path: Path) -> None:
    """It costs DDP 1–2.5 % (BENCHMARKS.md): a cell that did not ask runs the bare loop."""
    dumps = run_cell_here(
        ["framework=ddp", "model=resnet18", "gpus=2", "dataset=synthetic", "steps=2", "warmup_steps=1"], tmp_path
    )
    for doc in dumps:
        assert doc["config"]["breakdown"] is False
        assert doc["phases"]["train"]["breakdown"] is None and doc["phases"]["val"]["breakdown"] is None
        assert schema.validate(doc) == []
        # The bandwidth probe is not the breakdown: the bound is still known, its efficiency is not.
        assert doc["communication"]["bound_s"] > 0


def test_a_phase_that_disagrees_with_the_breakdown_knob_is_refused() -> None:
    from jobs.schema.meaning import _breakdown_knob_reasons

    timed = {"step_times_s": [0.1], "breakdown": {"clock": "host"}}
    bare = {"step_times_s": [0.1], "breakdown": None}
    assert _breakdown_knob_reasons("phases.train.", timed, {"breakdown": False}) == [
        "phases.train.breakdown: present, but the cell ran with breakdown=false (the bare loop)"
    ]
    assert _breakdown_knob_reasons("phases.train.", bare, {"breakdown": True}) == [
        "phases.train.breakdown: missing, but the cell asked for breakdown=true"
    ]
    assert _breakdown_knob_reasons("phases.train.", timed, {"breakdown": True}) == []
    assert _breakdown_knob_reasons("phases.train.", bare, {"breakdown": False}) == []
    assert _breakdown_knob_reasons("phases.train.", timed, {}) == []  # a config from before the knob


@pytest.mark.gpu
def test_gpu_parts_are_cuda_event_times_that_add_up(run_cell_here: Any, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    dumps = run_cell_here(
        ["framework=ddp", "model=resnet18", "gpus=1", "dataset=synthetic", "steps=5", "device=cuda", "breakdown=true"],
        tmp_path,
    )
    phase = dumps[0]["phases"]["train"]
    assert phase["breakdown"]["clock"] == "cuda_events"
    parts = _mean_parts(phase)
    step = statistics.fmean(phase["step_times_s"])
    assert sum(v for k, v in parts.items() if k != "other") <= step * 1.02
    assert parts["forward"] > 0 and parts["backward"] > 0


def test_the_scaling_loss_splits_into_parts_that_add_up_and_is_told_in_a_sentence() -> None:
    import pandas as pd

    from analysis import breakdown as analysis_breakdown

    def row(key: str, world: int, efficiency: float, **parts: float) -> dict[str, Any]:
        seconds = {f"{p}_s": parts.get(p, 0.0) for p in analysis_breakdown.PARTS}
        return {
            "sweep": "s", "config_key": key, "phase": "train", "model": "resnet18", "framework": "horovod",
            "world_size": world, "efficiency": efficiency, "baseline_config_key": "one", **seconds,
        }  # fmt: skip

    # 1 process: 0.1 s compute. 2 processes: compute grew to 0.13 s, 0.05 s of exposed all-reduce, 0.02 s waiting.
    results = pd.DataFrame(
        [
            row("one", 1, 1.0, forward=0.04, backward=0.06),
            row("two", 2, 0.1 / 0.2, forward=0.05, backward=0.08, exposed_comm=0.05, wait=0.02),
        ]
    )
    out = analysis_breakdown.add_scaling_loss(results).set_index("config_key")
    two = out.loc["two"]
    assert two["loss_comm"] == pytest.approx(0.05 / 0.2)
    assert two["loss_wait"] == pytest.approx(0.02 / 0.2)
    assert two["loss_compute"] == pytest.approx(0.03 / 0.2)
    assert two["loss_comm"] + two["loss_wait"] + two["loss_compute"] == pytest.approx(1 - two["efficiency"])
    assert out.loc["one", ["loss_comm", "loss_wait", "loss_compute"]].tolist() == [0.0, 0.0, 0.0]
    assert analysis_breakdown.sentences(out.reset_index()) == {
        "resnet18": [
            "horovod, 2 processes: efficiency 0.50; 0.25 lost to exposed communication, "
            "0.15 to slower compute, 0.10 to waiting"
        ]
    }


def test_a_pipelines_efficiency_holds_its_bound_against_communication_and_the_wait_its_sends_block_in() -> None:
    from analysis import breakdown as analysis_breakdown

    def dump(timed_in: list[str]) -> dict[str, Any]:
        parts = {part: [0.0] for part in PARTS}
        parts.update(forward=[0.05], wait=[0.03])
        communication = {
            "probes": [{"bus_gbps": 1.0}], "timed_in": timed_in, "bound_s": 99.0,  # a stored summary: not read
            "collectives": [{"collective": "send_recv", "payload_bytes": 10**7, "factor": 1.0}],
        }  # fmt: skip
        phases = {"train": {"breakdown": {"parts_s": parts, "comm_s": [0.01]}}}
        return {"phases": phases, "communication": communication}

    pipeline = analysis_breakdown.phase_columns([dump(["comm", "wait"])], "train")
    assert pipeline["comm_bound_s"] == pytest.approx(0.01)  # 10 MB at 1 GB/s, recomputed
    assert pipeline["comm_efficiency"] == pytest.approx(0.01 / (0.01 + 0.03))
    data_parallel = analysis_breakdown.phase_columns([dump(["comm"])], "train")
    assert data_parallel["comm_efficiency"] == pytest.approx(1.0)
    older = dump(["comm"])
    del older["communication"]["timed_in"]
    assert analysis_breakdown.phase_columns([older], "train")["comm_efficiency"] == pytest.approx(1.0)
