"""Stragglers: a real two-rank cell with rank 1 slowed on purpose shows in stragglers.csv with its host.

The slowdown is the ``DNNBENCH_TEST_SLOW_RANK`` hook of jobs/loop.py (an environment variable, so
the cell's id and config stay those of the plain cell). The table logic is also checked on
hand-built rank rows where the medians are known exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from slurm_fixtures import slurm_cluster  # noqa: F401 - a fixture

from analysis import stragglers
from analysis.cli import aggregate_command

TWO_RANKS = [
    "framework=ddp", "model=resnet18", "gpus=2", "dataset=synthetic", "batch_size=8", "steps=4",
    "warmup_steps=1", "val_steps=4", "dataset.train_samples=64", "dataset.val_samples=64", "device=cpu",
]  # fmt: skip
SLOW_S = 0.4  # far above a tiny resnet18 step on 8 samples: the straggler stands out on a busy machine


@pytest.fixture(scope="module")
def slowed_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local sweep of one 2-rank DDP cell whose rank 1 sleeps SLOW_S in every timed step."""
    pytest.importorskip("torch")
    sweep = tmp_path_factory.mktemp("slowed") / "sweep"
    env = {**os.environ, "DNNBENCH_TEST_SLOW_RANK": f"1:{SLOW_S}"}
    dnnbench = str(Path(sys.executable).parent / "dnnbench")
    command = [dnnbench, "sweep", *TWO_RANKS, "--sweep-dir", str(sweep), "--no-aggregate"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return sweep


@pytest.mark.slow
def test_slowed_rank_is_listed_with_its_host(slowed_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert aggregate_command([str(slowed_sweep)], str(out), figures=True, progress=False) == 0
    table = pd.read_csv(out / stragglers.FILE)
    slow = table[(table["kind"] == "rank") & (table["phase"] == "val")]
    assert list(slow["rank"]) == [1]
    assert slow["hostname"].iloc[0] == socket.gethostname()
    assert slow["excess"].iloc[0] > 0.10
    report = (out / "report.html").read_text()
    assert "<h2>Stragglers</h2>" in report and f">{socket.gethostname()}<" in report
    node = table[(table["kind"] == "node") & (table["phase"] == "val")].iloc[0]
    assert (node["node"], node["rank_phases"], node["straggled"]) == (socket.gethostname(), 2, 1)
    # Every dump names its host and (on the CPU, none) device index; where this machine has no
    # energy counter (no /sys/class/powercap), the energy fields are null with the reason.
    no_rapl = not Path("/sys/class/powercap").exists()
    for dump in sorted(slowed_sweep.glob("cells/*/attempt_0/rank_*.json")):
        doc = json.loads(dump.read_text())
        assert doc["environment"]["hostname"] == socket.gethostname() and doc["environment"]["device_index"] is None
        for phase in ("train", "val"):
            record = doc["phases"][phase]["energy"]
            assert record["gpu_j"] is None and record["gpu_reason"] == "not a CUDA device"
            if no_rapl:
                assert record["cpu_package_j"] is None and "no RAPL package domain" in record["cpu_reason"]
    if no_rapl:  # the results say why there is no energy, and draw no energy figure
        assert "no RAPL package domain" in report and not (out / "energy.png").exists()
        assert pd.read_csv(out / "results.csv")["energy_j"].isna().all()


@pytest.mark.slow
def test_threshold_option_through_the_cli(slowed_sweep: Path, tmp_path: Path) -> None:
    """A threshold above the slowdown lists no straggling rank; the node rows stay."""
    from orchestrator import cli

    out = tmp_path / "results"
    args = ["aggregate", str(slowed_sweep), "--out", str(out), "--no-figures", "--no-progress"]
    with pytest.raises(SystemExit) as refused:  # beyond the accepted range: a usage error, no traceback
        cli.main([*args, "--straggler-threshold", "5000%"])
    assert refused.value.code == 2 and not out.exists()
    assert cli.main([*args, "--straggler-threshold", "900%"]) == 0
    table = pd.read_csv(out / stragglers.FILE)
    assert (table["kind"] == "rank").sum() == 0 and (table["kind"] == "node").sum() >= 1


def _ranks(medians: dict[tuple[str, int], float], host_of: dict[int, str]) -> pd.DataFrame:
    rows = [
        {"sweep": "s", "cell_id": cell, "phase": "train", "rank": rank, "local_rank": rank % 2,
         "node": host_of[rank], "hostname": "h-" + host_of[rank], "device_index": rank % 2, "step_median_s": median}
        for (cell, rank), median in medians.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_rank_above_the_threshold_straggles_and_its_node_is_counted() -> None:
    hosts = {0: "n1", 1: "n1", 2: "n2", 3: "n2"}
    medians = {("a", 0): 1.0, ("a", 1): 1.0, ("a", 2): 1.0, ("a", 3): 1.2}  # cell median 1.0: rank 3 is +20 %
    medians |= {("b", 0): 1.0, ("b", 1): 1.05, ("b", 2): 1.0, ("b", 3): 1.0}  # +5 %: within 10 %
    table = stragglers.stragglers(_ranks(medians, hosts))
    slow = table[table["kind"] == "rank"]
    assert list(zip(slow["cell_id"], slow["rank"], slow["node"], strict=True)) == [("a", 3, "n2")]
    assert slow["excess"].iloc[0] == pytest.approx(0.2)
    nodes = table[table["kind"] == "node"].set_index("node")
    assert nodes.loc["n2", "hostname"] == "h-n2"
    assert (nodes.loc["n2", "straggled"], nodes.loc["n2", "rank_phases"], nodes.loc["n2", "cells"]) == (1, 4, "a")
    assert nodes.loc["n1", "straggled"] == 0
    # A lower threshold catches the +5 % rank too.
    assert set(stragglers.stragglers(_ranks(medians, hosts), 0.04).query("kind == 'rank'")["cell_id"]) == {"a", "b"}


def test_single_rank_and_untimed_cells_are_skipped() -> None:
    ranks = _ranks({("one", 0): 1.0, ("noop", 0): float("nan"), ("noop", 1): float("nan")}, {0: "n1", 1: "n1"})
    assert stragglers.stragglers(ranks).empty


@pytest.mark.parametrize(("text", "value"), [("10%", 0.10), ("0.25", 0.25), (" 50% ", 0.5)])
def test_threshold_parsing(text: str, value: float) -> None:
    assert stragglers.parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "ten", "0", "-5%", "1000%", "nan"])
def test_threshold_parsing_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        stragglers.parse_threshold(text)


# ------------------------------------------------------------------ --exclude-nodes, local backend ---
NOOP = ["framework=noop", "steps=2", "val_steps=2"]


def _ledger(sweep: Path, sql: str) -> list[tuple]:
    import sqlite3

    db = sqlite3.connect(sweep / "ledger.sqlite")
    try:
        return list(db.execute(sql))
    finally:
        db.close()


@pytest.mark.parametrize("nodes", ["node1", "node[1-2]"])
def test_local_backend_refuses_exclude_nodes_and_submits_nothing(tmp_path: Path, nodes: str, capsys) -> None:
    from orchestrator import cli

    sweep = tmp_path / "sweep"
    assert cli.main(["sweep", *NOOP, "--sweep-dir", str(sweep), "--no-aggregate"]) == 0
    (cell_id,) = [row[0] for row in _ledger(sweep, "SELECT cell_id FROM cells")]
    before = _ledger(sweep, "SELECT * FROM attempts")
    assert cli.main(["resubmit", str(sweep), "--force", cell_id, "--exclude-nodes", nodes]) == 1
    assert "no nodes to exclude" in capsys.readouterr().err
    assert _ledger(sweep, "SELECT * FROM attempts") == before


@pytest.mark.parametrize("nodes", ["node1;reboot", "node1 node2", "-node1", "node1\n#SBATCH --x", "", "hetjob1"])
def test_unsafe_node_names_are_refused_before_anything(tmp_path: Path, nodes: str, capsys) -> None:
    from orchestrator import cli

    sweep = tmp_path / "sweep"
    assert cli.main(["sweep", *NOOP, "--sweep-dir", str(sweep), "--no-aggregate"]) == 0
    before = _ledger(sweep, "SELECT * FROM attempts")
    assert cli.main(["resubmit", str(sweep), f"--exclude-nodes={nodes}"]) == 1
    assert "--exclude-nodes" in capsys.readouterr().err
    assert _ledger(sweep, "SELECT * FROM attempts") == before


# ----------------------------------------------------------------------- the real dev Slurm cluster ---
SLURM = [
    "cluster=slurm", "cluster.time_limit_min=10", "model.time_limit_min=null", "cluster.cpus_per_gpu=1",
    "cluster.request_gpus=false",
]  # fmt: skip


def _slurm_sweep(sweep: Path, overrides: list[str], env: dict[str, str] | None = None) -> None:
    from slurm_fixtures import dnnbench

    submitted = dnnbench("sweep", *overrides, *SLURM, "--sweep-dir", str(sweep), env=env, timeout=300)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    waited = dnnbench("wait", str(sweep), "--timeout", "400", "--interval", "3", timeout=450)
    assert waited.returncode == 0, waited.stdout + waited.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_two_node_cell_names_the_slow_ranks_node(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    if slurm_cluster.nodes < 2:
        pytest.skip("needs two Slurm nodes")
    sweep = tmp_path / "two-nodes"
    overrides = [*(o for o in TWO_RANKS if o != "gpus=2"), "gpus=1", "nodes=2"]  # one rank on each node
    _slurm_sweep(sweep, overrides, env={**os.environ, "DNNBENCH_TEST_SLOW_RANK": f"1:{SLOW_S}"})
    dumps = {d["rank"]: d for d in map(json.loads, map(Path.read_text, sweep.glob("cells/*/attempt_0/rank_*.json")))}
    nodes = {rank: doc["environment"]["slurm"]["SLURMD_NODENAME"] for rank, doc in dumps.items()}
    assert len(set(nodes.values())) == 2, nodes
    out = tmp_path / "results"
    assert aggregate_command([str(sweep)], str(out), figures=False, progress=False) == 0
    table = pd.read_csv(out / stragglers.FILE)
    slow = table[(table["kind"] == "rank") & (table["phase"] == "val")]
    assert list(zip(slow["rank"], slow["node"], strict=True)) == [(1, nodes[1])]
    counted = table[(table["kind"] == "node") & (table["phase"] == "val")].set_index("node")
    assert (counted.loc[nodes[1], "straggled"], counted.loc[nodes[0], "straggled"]) == (1, 0)


@pytest.mark.slurm
@pytest.mark.slow
def test_resubmit_exclude_nodes_keeps_the_attempt_off_them_and_records_it(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    from slurm_fixtures import dnnbench, ledger_rows, sacct_jobs

    if slurm_cluster.nodes < 2:
        pytest.skip("needs two Slurm nodes")
    sweep = tmp_path / "exclude"
    _slurm_sweep(sweep, NOOP)
    (cell_id,) = [row[0] for row in _ledger(sweep, "SELECT cell_id FROM cells")]
    excluded = "node1"
    result = dnnbench("resubmit", str(sweep), "--force", cell_id, "--exclude-nodes", excluded, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    waited = dnnbench("wait", str(sweep), "--timeout", "300", "--interval", "3", timeout=350)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    rows = ledger_rows(sweep, "SELECT job_id, exclude_nodes, script FROM submissions ORDER BY submission_id")
    assert [r["exclude_nodes"] for r in rows] == [None, excluded]
    assert f"#SBATCH --exclude={excluded}\n" in Path(rows[1]["script"]).read_text()
    assert "--exclude" not in Path(rows[0]["script"]).read_text()
    ran_on = subprocess.run(["sacct", "-n", "-X", "-P", "-j", rows[1]["job_id"], "-o", "NodeList"], capture_output=True,
                    text=True, check=True).stdout.split()  # fmt: skip
    assert ran_on and excluded not in ran_on, ran_on
    assert sacct_jobs([rows[1]["job_id"]])[0]["State"] == "COMPLETED"


def test_no_ranks_gives_an_empty_table_with_its_columns() -> None:
    assert list(stragglers.stragglers(pd.DataFrame()).columns) == stragglers.COLUMNS
