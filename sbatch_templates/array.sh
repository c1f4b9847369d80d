#!/bin/bash
# dnnbench array job: one array task = one benchmark cell.
# Rendered by orchestrator/backends/slurm.py from sbatch_templates/array.sh; every value
# below was checked against a safe pattern or quoted for where it lands (shell lines: shell
# quoting; sbatch's option lines: sbatch's own quoting, with a % of a log path doubled).
#   To submit by hand:  sbatch ${script_path}
#   Cells of this array: ${cells_file} (array index -> cell file, attempt folder)
#SBATCH --job-name=${job_name}
#SBATCH --array=0-${last_index}%${parallelism}
#SBATCH --nodes=${nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=${cpus_per_task}
#SBATCH --time=${time_limit}
#SBATCH --output=${output_log}
#SBATCH --error=${error_log}
#SBATCH --open-mode=append
# Timeout/preemption: USR2 reaches every task ${signal_delay_s} s before the limit and the
# task requeues the job itself (at most ${max_requeues} times); Slurm may requeue on preemption.
#SBATCH --signal=USR2@${signal_delay_s}
#SBATCH --requeue
${resource_lines}
set -eo pipefail
${setup_lines}
export DNNBENCH_MAX_REQUEUES=${max_requeues}
# One task per node; each runs the framework's launcher for its node. The task gets the job's CPUs
# on its node explicitly: since Slurm 22.05 srun no longer inherits --cpus-per-task from the job, and
# where the site binds tasks to cores the launcher and all its ranks would share one core.
exec srun --ntasks-per-node=1 --cpus-per-task=${cpus_per_task} --kill-on-bad-exit=1 ${python} -m orchestrator.slurm_task ${cells_file}
