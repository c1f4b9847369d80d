"""horovodrun as a cell starts it: ``python -m jobs.horovodrun_pinned HOROVODRUN_ARGUMENTS…``.

horovodrun (horovod.runner, 0.28) starts the ranks of other nodes over ssh itself, and two things
it does there must not reach a cell:

- It forwards its whole environment to every rank as ``env NAME=value …`` on the rank's command
  line, except the names matching ``horovod.runner.common.util.env.IGNORE_REGEXES`` (which already
  holds ``CUDA_VISIBLE_DEVICES``). Node 0's Slurm step variables (``SLURM_NODEID``,
  ``SLURM_STEP_GPUS``, ``SLURMD_NODENAME``, …) would tell the other nodes' ranks they are node 0.
  :data:`NOT_FORWARDED` adds those names to that list: node 0's own ranks still inherit them from
  this process (horovodrun starts local ranks with its environment), the other nodes' ranks get
  what is the same on every node (the job's ids, modules' PATH and LD_LIBRARY_PATH, thread and
  HOROVOD_* settings) and nothing that describes node 0.
- It runs ``cd <its working directory>`` unquoted in each remote rank's shell
  (``gloo_run._exec_command``): a working directory with a space is not found, one holding ``;``
  or ``$(…)`` runs as commands on every other node. This process therefore runs from ``/`` (a
  ``cd /`` is harmless) and each rank returns to the real working directory itself, forwarded
  quoted like any variable (:data:`WORKDIR_VARIABLE`, see ``RANK_PREFIX`` in
  jobs/horovodrun_launcher.py).
"""

from __future__ import annotations

import os
import sys

WORKDIR_VARIABLE = "DNNBENCH_WORKDIR"
# Slurm variables that are the same on every node of a job: forwarded.
JOB_WIDE_SLURM = (
    "JOB_ID", "JOBID", "JOB_NAME", "ARRAY_JOB_ID", "ARRAY_TASK_ID", "JOB_PARTITION", "JOB_NODELIST",
    "NODELIST", "JOB_NUM_NODES", "NNODES", "RESTART_COUNT", "CLUSTER_NAME", "JOB_ACCOUNT", "JOB_QOS",
    "GPUS_PER_NODE", "CPUS_PER_TASK", "SUBMIT_DIR", "SUBMIT_HOST",
)  # fmt: skip
# Names (matched from their start, as horovod does) that describe node 0 or this shell: not forwarded.
NOT_FORWARDED = (
    rf"SLURM_(?!({'|'.join(JOB_WIDE_SLURM)})$)",  # the step, task, node and its CPUs/GPUs
    r"SLURMD_",
    r"SRUN_",
    r"PMIX?_",  # Slurm's MPI bootstrap for node 0's task
    r"OMPI_COMM_WORLD_",
    r"(ROCR|HIP|GPU_DEVICE|NVIDIA)_VISIBLE_DEVICES$",  # CUDA_VISIBLE_DEVICES: horovod's own list
    r"GPU_DEVICE_ORDINAL$",
    r"(HOSTNAME|HOST|PWD|SHLVL|DISPLAY|XDG_RUNTIME_DIR)$",
    r"SSH_",
)


def keep_node_variables_home() -> None:
    """Add :data:`NOT_FORWARDED` to horovod's list of variables it never forwards."""
    from horovod.runner.common.util import env as horovod_env

    ignored = getattr(horovod_env, "IGNORE_REGEXES", None)
    if not isinstance(ignored, set):
        raise SystemExit(
            "dnnbench: this horovod has no horovod.runner.common.util.env.IGNORE_REGEXES set: its other "
            "nodes' ranks would get node 0's Slurm and GPU variables. Use horovod 0.28 (scripts/install-horovod.sh)."
        )
    ignored.update(NOT_FORWARDED)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    keep_node_variables_home()
    os.environ[WORKDIR_VARIABLE] = os.getcwd()
    os.chdir("/")
    from horovod.runner.launch import run_commandline

    sys.argv = ["horovodrun", *args]
    run_commandline()


if __name__ == "__main__":
    main()
