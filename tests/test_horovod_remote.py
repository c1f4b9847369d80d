"""horovodrun's ranks on other nodes: what they inherit from node 0, and where they start.

Run on the dev cluster's second "node" (127.0.0.2, reached through its private sshd, as
horovodrun reaches a cluster's other nodes). Each rank writes its environment and working
directory instead of training. horovodrun runs from a working directory whose name is shell
text: before, the remote shell ran it (``cd <dir>`` unquoted); now nothing runs and every rank
starts in that directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, launch_spec
from slurm_fixtures import slurm_cluster  # noqa: F401 - a fixture
from test_horovod import KNOBS, dev_cluster_ssh, require_horovod

from jobs.launchers import get_launcher
from orchestrator import cli

WRITE_WHAT_I_SEE = (
    "import json, os, sys\n"
    "path = os.path.join(sys.argv[1], 'rank_' + os.environ['HOROVOD_RANK'] + '.seen')\n"
    "json.dump({'env': dict(os.environ), 'cwd': os.getcwd()}, open(path, 'w'))\n"
)
# What node 0's Slurm task has and the other nodes' ranks must not be told.
NODE0_ONLY = {
    "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURMD_NODENAME": "node1",
    "SLURM_STEP_GPUS": "2", "SLURM_JOB_GPUS": "2", "SLURM_GPUS_ON_NODE": "1", "SLURM_CPUS_ON_NODE": "2",
    "SLURM_TOPOLOGY_ADDR": "node1", "CUDA_VISIBLE_DEVICES": "2", "PMI_RANK": "0",
}  # fmt: skip
# The same on every node of the job: forwarded.
JOB_WIDE = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_GPUS_PER_NODE": "1"}
PWNED = "PWNED_by_the_working_dir"


@pytest.mark.horovod
@pytest.mark.slurm
@pytest.mark.slow
def test_other_nodes_ranks_get_no_node0_variables_and_start_in_a_hostile_working_directory(
    slurm_cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    require_horovod()
    assert slurm_cluster.nodes >= 2, "the dev cluster has one node: `slurm-dev-cluster.sh up --nodes 2`"
    port, key, _ = dev_cluster_ssh()
    workdir = tmp_path / f"work dir; touch {PWNED}; $(touch {PWNED}2)"
    workdir.mkdir()
    out = tmp_path / "seen"
    out.mkdir()
    config = {"framework": {"backend": "auto"}, "horovod": KNOBS,
              "cluster": {"ssh_port": int(port), "ssh_identity_file": key}}  # fmt: skip
    spec = launch_spec(python=sys.executable, out_dir=str(out), nnodes=2, nproc_per_node=1,
                       hosts=("127.0.0.1", "127.0.0.2"), config=config)  # fmt: skip
    argv = get_launcher("horovodrun").command(spec)
    rank_python = len(argv) - len(spec.entry) - 1
    assert argv[rank_python:] == [sys.executable, *spec.entry]
    argv = [*argv[: rank_python + 1], "-c", WRITE_WHAT_I_SEE, str(out)]
    env = {**os.environ, **NODE0_ONLY, **JOB_WIDE, "PYTHONPATH": str(REPO)}
    home_before = set(Path.home().iterdir())
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    local, remote = (json.loads((out / f"rank_{rank}.seen").read_text()) for rank in (0, 1))
    assert remote["env"]["HOROVOD_HOSTNAME"] == "127.0.0.2" and remote["env"].get("SSH_CONNECTION"), remote["env"]
    for name, value in NODE0_ONLY.items():
        assert local["env"].get(name) == value, f"node 0's own rank lost {name}"
        assert name not in remote["env"], f"the other node's rank was told node 0's {name}"
    for name, value in JOB_WIDE.items():
        assert local["env"][name] == remote["env"][name] == value
    assert remote["env"]["PYTHONPATH"] == str(REPO), "what every rank needs still travels"
    # Every rank starts where horovodrun was started; the directory's name ran nowhere.
    assert local["cwd"] == remote["cwd"] == str(workdir)
    new_in_home = set(Path.home().iterdir()) - home_before
    leftovers = [p for p in (*tmp_path.rglob(f"{PWNED}*"), *new_in_home) if PWNED in str(p)]
    assert not leftovers and not Path("/", PWNED).exists(), leftovers


@pytest.mark.parametrize("nodes", [1, 2])
def test_an_interpreter_path_horovodrun_would_split_is_refused_at_plan_for_several_nodes(
    nodes: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """horovodrun runs ``<python> -m horovod.runner.task_fn …`` on other nodes through a shell, unquoted."""
    # The interpreter is where the venv is: a real one at such a path would take minutes to build.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "my env; touch PWNED" / "bin" / "python"))
    overrides = ["framework=horovod", f"nodes={nodes}", "cluster=local"]
    code = cli.main(["sweep", *overrides, "--dry-run", "--sweep-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    if nodes == 1:  # one node: horovodrun starts nothing through a shell with that path
        assert code == 0, err
    else:
        assert code == 1 and "the Python interpreter" in err and "unquoted" in err, err
    assert not list(tmp_path.rglob("PWNED"))
