"""This machine: cells run as submitit local jobs, ``array_parallelism`` at a time (1 by default).

Measurements must not share the machine, so the default runs one cell after another;
submit() returns when every cell has ended.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable

from orchestrator.backends.base import Backend, ShapeGroup, SubmitOutcome, register
from orchestrator.ledger import Ledger
from orchestrator.paths import SweepPaths
from orchestrator.runner import run_cell


@register
class LocalBackend(Backend):
    name = "local"
    detached = False

    def submit(
        self,
        paths: SweepPaths,
        ledger: Ledger,
        groups: list[ShapeGroup],
        progress: Callable[[int], None] | None = None,
    ) -> SubmitOutcome:
        import submitit

        executor = submitit.LocalExecutor(folder=paths.jobs / "%j")
        executor.update_parameters(timeout_min=max(g.shape.time_min for g in groups) if groups else 60)
        parallel = max(1, int(self.cluster.get("array_parallelism") or 1))
        queue = [(cell, group) for group in groups for cell in group.cells]
        running: list[tuple[object, int]] = []
        job_ids: list[str] = []
        for cell, group in queue:
            submission, (attempt,) = ledger.begin_submission(
                f"local-{cell.cell_id}-{uuid.uuid4().hex[:8]}",
                self.name,
                group.shape.describe(),
                [cell.cell_id],
                None,
            )
            out_dir = paths.cell(cell.cell_id).attempt(attempt)
            job = executor.submit(run_cell, cell.cell_file, str(out_dir))
            ledger.finish_submission(submission, str(job.job_id), "submitted")
            job_ids.append(str(job.job_id))
            running.append((job, submission))
            if len(running) >= parallel:
                self._wait(running.pop(0)[0], progress)
        for job, _ in running:
            self._wait(job, progress)
        return SubmitOutcome(job_ids)

    @staticmethod
    def _wait(job: object, progress: Callable[[int], None] | None) -> None:
        # A failed cell raises here; its outcome file and `dnnbench status` say why.
        with contextlib.suppress(Exception):
            job.result()  # type: ignore[attr-defined]
        if progress:
            progress(1)
