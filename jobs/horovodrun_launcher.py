"""The horovodrun launcher: started once, on the job's first node, for all of its ranks.

``python -m jobs.horovodrun_pinned`` is horovodrun (``horovod.runner.launch``) pinned to the job's
interpreter (as ``python -m torch.distributed.run`` is torchrun), keeping node 0's Slurm and GPU
variables and its working directory's shell text away from the other nodes' ranks (see that
module). It starts every rank itself: locally on hosts that resolve to this machine, over ssh on
the others (see docs/horovod.md). Each rank starts through :data:`RANK_PREFIX`, which returns it
to the working directory before Python starts. The cell's ``horovod:`` knobs become horovodrun
flags, which set the ``HOROVOD_*`` variables the ranks see; ``cluster.ssh_port``/
``ssh_identity_file`` become its ssh flags. No horovod import here: argv is built on login nodes too.
"""

from __future__ import annotations

import os
from pathlib import Path

from jobs.horovodrun_pinned import WORKDIR_VARIABLE
from jobs.launchers import Launcher, LaunchSpec

TIMELINE_FILE = "timeline.json"
# Run by a shell on the rank's node (a fixed text: the directory arrives as a variable, quoted by
# horovodrun like every variable it forwards); a directory that node lacks leaves the rank in "/".
RANK_PREFIX = ["/bin/sh", "-c", f'cd "${WORKDIR_VARIABLE}" 2>/dev/null; exec "$@"', "dnnbench-rank"]


def host_list(hosts: tuple[str, ...], slots: int) -> str:
    """horovodrun's ``-H``: every node with ``slots`` processes, in node order."""
    return ",".join(f"{host}:{slots}" for host in hosts)


class HorovodrunLauncher(Launcher):
    name = "horovodrun"
    per_node = False

    def command(self, spec: LaunchSpec) -> list[str]:
        knobs = spec.config.get("horovod", {})
        backend = spec.config.get("framework", {}).get("backend", "auto")
        # One node: horovodrun runs on it, so every rank is local. Named by its address it may not be:
        # horovodrun calls a host local only if the address is on one of its interfaces, and ssh-es
        # to the others (a node reached as 127.0.0.2, or by a name of another network, failed so).
        hosts = ("localhost",) if spec.nnodes == 1 else spec.hosts[: spec.nnodes]
        if len(set(hosts)) < spec.nnodes:
            # horovodrun keys local and cross ranks by host name: repeated names give wrong ranks.
            raise ValueError(
                f"horovodrun needs a distinct name or address per node, got {', '.join(hosts)} "
                "(several slurmd on one host?): run horovod cells with nodes=1 there"
            )
        world = spec.nnodes * spec.nproc_per_node
        argv = [
            spec.python, "-m", "jobs.horovodrun_pinned",
            "-np", str(world),
            "-H", host_list(hosts, spec.nproc_per_node),
            "--mpi" if backend == "mpi" else "--gloo",
        ]  # fmt: skip
        if "fusion_threshold_mb" in knobs:
            argv += ["--fusion-threshold-mb", str(knobs["fusion_threshold_mb"])]
        if "cycle_time_ms" in knobs:
            argv += ["--cycle-time-ms", str(knobs["cycle_time_ms"])]
        if knobs.get("autotune"):
            argv += ["--autotune"]
        if knobs.get("timeline"):
            argv += ["--timeline-filename", str(Path(spec.out_dir) / TIMELINE_FILE)]
        cluster = spec.config.get("cluster") or {}
        if cluster.get("ssh_port") is not None:
            argv += ["--ssh-port", str(cluster["ssh_port"])]
        if cluster.get("ssh_identity_file"):
            # Absolute: horovodrun runs from "/" (jobs/horovodrun_pinned.py).
            argv += ["--ssh-identity-file", os.path.abspath(os.path.expanduser(str(cluster["ssh_identity_file"])))]
        return [*argv, *RANK_PREFIX, spec.python, *spec.entry]
