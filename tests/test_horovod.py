"""framework=horovod: the exact horovodrun command, a real 2-process run, fairness with DDP,
and a sweep that plans on when horovod is missing.

Tests that start Horovod skip when it is not importable, unless DNNBENCH_REQUIRE_HOROVOD=1
(CI after `make horovod`), which turns the skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, TINY_DDP, launch_spec, run_cell_in
from slurm_fixtures import CLUSTER_SCRIPT, dnnbench, slurm_cluster  # noqa: F401 - slurm_cluster is a fixture

from jobs import schema
from jobs.horovodrun_launcher import RANK_PREFIX
from jobs.launchers import LaunchSpec, get_launcher

pytestmark = pytest.mark.horovod

TINY_HOROVOD = ["framework=horovod" if o == "framework=ddp" else o for o in TINY_DDP]
KNOBS = {"fusion_threshold_mb": 64, "cycle_time_ms": 1.0, "compression": "none", "autotune": False, "timeline": False}


def horovod_importable() -> bool:
    try:
        return importlib.util.find_spec("horovod.torch") is not None
    except (ImportError, ValueError):
        return False


def require_horovod() -> None:
    if horovod_importable():
        return
    if os.environ.get("DNNBENCH_REQUIRE_HOROVOD") == "1":
        pytest.fail("DNNBENCH_REQUIRE_HOROVOD=1 but horovod.torch is not importable: run scripts/install-horovod.sh")
    pytest.skip("horovod not installed (scripts/install-horovod.sh); DNNBENCH_REQUIRE_HOROVOD=1 makes this fail")


def spec(**changes: Any) -> LaunchSpec:
    config = {"framework": {"name": "horovod", "launcher": "horovodrun", "backend": "auto"}, "horovod": KNOBS}
    return launch_spec(**{"nproc_per_node": 2, "hosts": ("localhost",), "config": config, **changes})


# Each rank: back to the working directory (horovodrun runs from "/"), then the entry point.
ENTRY = [*RANK_PREFIX, "/opt/venv/bin/python", "-m", "jobs.entry", "/sweeps/s/cells/abc/cell.json",
         "/sweeps/s/cells/abc/attempt_0"]  # fmt: skip


@pytest.mark.parametrize("address", ["127.0.0.2", "gcn7", "10.1.2.3"])
def test_a_one_node_cell_names_its_node_localhost_whatever_its_address(address):
    """horovodrun takes a host for remote unless its address is on a local interface, and ssh-es to it:
    a one-node cell on the dev cluster's second node (127.0.0.2) failed "could not connect via ssh"."""
    argv = get_launcher("horovodrun").command(spec(hosts=(address,)))
    assert argv[argv.index("-H") + 1] == "localhost:2"


def test_one_node_runs_np_processes_on_localhost_with_the_knobs_as_flags():
    argv = get_launcher("horovodrun").command(spec())
    assert argv == [
        "/opt/venv/bin/python", "-m", "jobs.horovodrun_pinned",
        "-np", "2", "-H", "localhost:2", "--gloo",
        "--fusion-threshold-mb", "64", "--cycle-time-ms", "1.0",
        *ENTRY,
    ]  # fmt: skip


def test_two_nodes_list_every_host_with_its_slots_and_all_knobs():
    knobs = {**KNOBS, "fusion_threshold_mb": 0, "cycle_time_ms": 2.5, "autotune": True, "timeline": True}
    config = {"framework": {"backend": "auto"}, "horovod": knobs}
    argv = get_launcher("horovodrun").command(spec(nnodes=2, nproc_per_node=4, hosts=("gcn1", "gcn2"), config=config))
    assert argv == [
        "/opt/venv/bin/python", "-m", "jobs.horovodrun_pinned",
        "-np", "8", "-H", "gcn1:4,gcn2:4", "--gloo",
        "--fusion-threshold-mb", "0", "--cycle-time-ms", "2.5", "--autotune",
        "--timeline-filename", "/sweeps/s/cells/abc/attempt_0/timeline.json",
        *ENTRY,
    ]  # fmt: skip


def test_the_clusters_ssh_settings_become_horovodruns_ssh_flags(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    config = {"framework": {"backend": "auto"}, "horovod": KNOBS,
              "cluster": {"ssh_port": 2222, "ssh_identity_file": "~/.ssh/id_cluster"}}  # fmt: skip
    argv = get_launcher("horovodrun").command(spec(nnodes=2, hosts=("gcn1", "gcn2"), config=config))
    assert argv[argv.index("--ssh-port") :][:4] == [
        "--ssh-port", "2222", "--ssh-identity-file", "/home/me/.ssh/id_cluster",
    ]  # fmt: skip
    assert "--ssh-port" not in get_launcher("horovodrun").command(spec())


def test_backend_mpi_selects_horovods_mpi_controller():
    config = {"framework": {"backend": "mpi"}, "horovod": KNOBS}
    assert "--mpi" in get_launcher("horovodrun").command(spec(config=config))


def test_horovodrun_starts_once_for_all_nodes():
    assert get_launcher("horovodrun").per_node is False


def test_nodes_sharing_one_address_are_refused():
    with pytest.raises(ValueError, match="distinct name or address per node"):
        get_launcher("horovodrun").command(spec(nnodes=2, hosts=("127.0.0.1", "127.0.0.1")))


@pytest.fixture(scope="module")
def horovod_dumps(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    require_horovod()
    return run_cell_in([*TINY_HOROVOD, "horovod.timeline=true"], tmp_path_factory.mktemp("tiny-horovod"))


def test_two_processes_write_two_valid_dumps_with_identical_parameters(horovod_dumps):
    assert [d["rank"] for d in horovod_dumps] == [0, 1]
    assert {d["world_size"] for d in horovod_dumps} == {2}
    assert {d["framework"] for d in horovod_dumps} == {"horovod"}
    digests = [d["extra"]["parameter_digests"] for d in horovod_dumps]
    assert len(digests[0]) == 2 and digests[0][0] == digests[0][1], "ranks hold different parameters"
    assert digests[0] == digests[1]


def test_the_dump_records_the_knobs_and_the_variables_horovod_saw(horovod_dumps):
    knobs = horovod_dumps[0]["extra"]["framework_knobs"]
    assert knobs["fusion_threshold_mb"] == 64 and knobs["compression"] == "none"
    assert knobs["env"]["HOROVOD_FUSION_THRESHOLD"] == str(64 * 1024 * 1024)
    assert float(knobs["env"]["HOROVOD_CYCLE_TIME"]) == 1.0
    assert knobs["controller"] == "gloo"
    assert knobs["timeline"] == "timeline.json"


def test_the_timeline_is_kept_in_the_cells_folder(horovod_dumps):
    timeline = Path(horovod_dumps[0]["extra"]["framework_knobs"]["env"]["HOROVOD_TIMELINE"])
    assert timeline.name == "timeline.json" and timeline.stat().st_size > 0


def test_the_report_links_the_kept_timeline(horovod_dumps, tmp_path):
    import re

    from analysis.aggregate import aggregate

    timeline = Path(horovod_dumps[0]["extra"]["framework_knobs"]["env"]["HOROVOD_TIMELINE"])
    sweep = timeline.parents[3]  # SWEEP/cells/<cell>/attempt_0/timeline.json
    out = tmp_path / "results"
    aggregate([str(sweep)], out, figures=False, progress=False)
    page = (out / "report.html").read_text()
    assert "<h2>Horovod timelines</h2>" in page
    (href,) = re.findall(r'<a href="([^"]+timeline\.json)">', page)
    assert (out / href).resolve() == timeline.resolve()


def test_ddp_and_horovod_cells_run_with_the_same_thread_settings(horovod_dumps, tiny_ddp_dumps):
    def threads(dumps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d["environment"]["threads"] for d in dumps]

    expected = str(horovod_dumps[0]["config"]["threads_per_process"])
    for recorded in threads(horovod_dumps) + threads(tiny_ddp_dumps):
        assert recorded["OMP_NUM_THREADS"] == recorded["MKL_NUM_THREADS"] == expected
        assert recorded["torch_intra_op_threads"] == int(expected)
    assert threads(horovod_dumps) == threads(tiny_ddp_dumps)
    assert {d["config"]["threads_per_process"] for d in horovod_dumps + tiny_ddp_dumps} == {int(expected)}


PLAN_WITHOUT_HOROVOD = textwrap.dedent(
    """
    import sys
    sys.modules["horovod"] = None  # what `import horovod` sees when it is not installed
    from orchestrator.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_sweep_without_horovod_plans_its_ddp_cells_and_names_the_install_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PLAN_WITHOUT_HOROVOD, "sweep", "--dry-run", "--list", "--sweep-dir", str(tmp_path / "s"),
         "framework=ddp,horovod", "gpus=1,2", "model=resnet18", "dataset=synthetic"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = [line for line in result.stdout.splitlines() if "/resnet18/" in line]
    ddp = [line for line in listed if " ddp/" in line]
    horovod = [line for line in listed if " horovod/" in line]
    assert len(ddp) == 2 and not any("unavailable" in line for line in ddp)
    assert len(horovod) == 2
    for line in horovod:
        assert "[unavailable: horovod is not installed" in line and "scripts/install-horovod.sh" in line
    assert "dry run: 4 cells" in result.stdout
    assert "2 cell(s) not submitted: horovod is not installed" in result.stderr


def slurm_up() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.slurm
@pytest.mark.slow
def test_a_ddp_and_horovod_sweep_completes_on_the_dev_slurm_cluster_side_by_side(tmp_path):
    require_horovod()
    if not slurm_up():
        pytest.skip("no Slurm cluster answers sinfo: scripts/slurm-dev-cluster.sh up")
    import csv

    dnnbench = [sys.executable, "-m", "orchestrator.cli"]
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in TINY_DDP if not o.startswith(("framework=", "gpus="))]
    submitted = subprocess.run(
        [*dnnbench, "sweep", "--sweep-dir", str(sweep_dir), "framework=ddp,horovod", "gpus=2", "cluster=slurm",
         *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    waited = subprocess.run([*dnnbench, "wait", str(sweep_dir), "--timeout", "900", "--interval", "5"],
                            cwd=REPO, capture_output=True, text=True, timeout=960)  # fmt: skip
    assert waited.returncode == 0, waited.stdout + waited.stderr
    aggregated = subprocess.run([*dnnbench, "aggregate", str(sweep_dir), "--no-figures", "--no-progress"],
                                cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert aggregated.returncode == 0, aggregated.stdout + aggregated.stderr
    with open(sweep_dir / "results" / "results.csv", newline="") as handle:
        train = [row for row in csv.DictReader(handle) if row["phase"] == "train"]
    assert sorted(row["framework"] for row in train) == ["ddp", "horovod"]
    assert all(float(row["throughput"]) > 0 and row["world_size"] == "2" for row in train)


def dev_cluster_ssh() -> tuple[str, str, Path]:
    """The dev cluster's ssh port, client key and sshd log (from `slurm-dev-cluster.sh env`)."""
    printed = subprocess.run([str(CLUSTER_SCRIPT), "env"], capture_output=True, text=True, timeout=30, check=True)
    values = dict(line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines())
    return values["DNNBENCH_SLURM_SSH_PORT"], values["DNNBENCH_SLURM_SSH_KEY"], Path(
        values["DNNBENCH_SLURM_DIR"], "log", "sshd.log"
    )


@pytest.mark.slurm
@pytest.mark.slow
def test_a_two_node_horovod_cell_starts_the_second_node_over_ssh(slurm_cluster, tmp_path):  # noqa: F811
    require_horovod()
    assert slurm_cluster.nodes >= 2, "the dev cluster has one node: `slurm-dev-cluster.sh up --nodes 2`"
    port, key, sshd_log = dev_cluster_ssh()
    logins_before = sshd_log.read_text().count("Accepted publickey") if sshd_log.exists() else 0
    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in TINY_HOROVOD if not o.startswith("gpus=")]
    submitted = dnnbench("sweep", "--sweep-dir", str(sweep_dir), *overrides, "gpus=1", "nodes=2", "cluster=slurm",
                         f"cluster.ssh_port={port}", f"cluster.ssh_identity_file={key}", cwd=REPO)  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    waited = dnnbench("wait", str(sweep_dir), "--timeout", "600", "--interval", "3", cwd=REPO, timeout=660)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    (attempt,) = sweep_dir.glob("cells/*/attempt_0")
    launcher_log = (attempt / "launcher_node0.log").read_text()
    command = launcher_log.splitlines()[0]
    assert "-H 127.0.0.1:1,127.0.0.2:1" in command and f"--ssh-port {port} --ssh-identity-file {key}" in command
    dumps = [schema.load(path) for path in sorted(attempt.glob("rank_*.json"))]
    assert [(d["rank"], d["node_rank"], d["local_rank"]) for d in dumps] == [(0, 0, 0), (1, 1, 0)]
    assert {d["world_size"] for d in dumps} == {2}
    digests = [d["extra"]["parameter_digests"] for d in dumps]
    assert digests[0] == digests[1] and digests[0][0] == digests[0][1], "the two nodes' replicas differ"
    # Rank 1 was started through the dev cluster's sshd, as on a cluster's second node.
    assert sshd_log.read_text().count("Accepted publickey") > logins_before
    # ... and was not told node 0's Slurm step or GPUs (jobs/horovodrun_pinned.py).
    node0, node1 = (d["environment"]["resources"] for d in dumps)
    assert "SLURM_STEP_GPUS" in node0["slurm_gpu_variables"] and node0["cuda_visible_devices"] is not None
    assert "SLURM_STEP_GPUS" not in node1["slurm_gpu_variables"] and node1["cuda_visible_devices"] is None
