"""A cell that trains nothing: ``python -m jobs.noop CELL_JSON OUT_DIR`` (``framework=noop``).

Writes one schema-valid dump per rank of the cell without importing torch, so the
orchestrator can be exercised at the scale of real studies (thousands of cells on a dev
cluster) in minutes. Its numbers are not measurements: ``extra.noop`` says so, and the
throughput is 0.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jobs import schema
from jobs.energy import unmeasured
from jobs.environment import fingerprint
from jobs.schema import environment_hash


def _phase(warmup: int) -> dict[str, Any]:
    return {
        "timed_steps": 0,
        "warmup_steps": warmup,
        "samples": 0,
        "seconds": 0.0,
        "throughput_samples_per_s": 0.0,
        "step_times_s": [],
        "memory": {
            "kind": "rss",
            "peak_allocated_bytes": None,
            "peak_reserved_bytes": None,
            "peak_rss_bytes": None,
            "end_rss_bytes": None,
        },
        "loss": None,
        "accuracy": None,
        "correct": None,
        "evaluated": None,
        "energy": unmeasured("a noop cell runs nothing"),
    }


# Test hook: with DNNBENCH_TEST_NOOP_GATE=<path> set, a noop cell waits (up to 10 min) for that file
# to exist before writing its dumps, so a test holds a cell running as long as it needs (a `{seed}`
# in the path is the cell's seed: one gate per cell of a sweep). An environment variable, not a
# config key: the cell's id and config stay those of a plain noop cell.
GATE_ENV = "DNNBENCH_TEST_NOOP_GATE"


def wait_for_gate(seed: Any = None, limit_s: float = 600.0) -> None:
    gate = os.environ.get(GATE_ENV, "").replace("{seed}", str(seed))
    deadline = time.monotonic() + limit_s
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def write_dumps(cell: dict[str, Any], out_dir: Path) -> int:
    config = cell["config"]
    world = config["gpus"] * config["nodes"]
    env = fingerprint(with_torch=False)
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    for rank in range(world):
        doc = schema.new_dump(
            cell_id=cell["cell_id"], attempt=int(cell.get("attempt", 0)), repeat=int(config["repeat"]),
            rank=rank, local_rank=rank % config["gpus"], world_size=world, node_rank=rank // config["gpus"],
            framework=config["framework"]["name"], model=config["model"]["name"], dataset=config["dataset"]["name"],
            device_type="cpu", memory_kind="rss", counts_samples=True, config=config,
            phases={"train": _phase(config["warmup_steps"]), "val": _phase(0)},
            environment=env, environment_hash=environment_hash(env), started_at=now, finished_at=now,
            pipeline=None, model_state=dict.fromkeys(schema.MODEL_STATE_FIELDS, 0), extra={"noop": True},
        )  # fmt: skip
        schema.write_atomic(out_dir / schema.dump_filename(rank), doc)
    return world


if __name__ == "__main__":
    cell_file, out = sys.argv[1:3]
    cell = json.loads(Path(cell_file).read_text())
    wait_for_gate(cell["config"].get("seed"))
    count = write_dumps(cell, Path(out))
    print(f"noop: wrote {count} rank dump(s) to {out}")
