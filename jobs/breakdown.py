"""Where a step's time goes: exclusive time per named part, per timed step.

The loop opens ``data`` around each batch's fetch and copy; a strategy opens its own parts
inside its step (``forward``, ``backward``, ``optimizer``; a pipeline's ``wait``) and says which
time inside an open part was spent waiting for communication (:meth:`StepParts.carve` with
``exposed_comm``). Parts nest: a part's time excludes the parts opened inside it, so the parts of
a step never count a second twice and, with ``other`` (the step's time no part claimed), add up
to the step's time. Communication that runs beside compute (DDP's bucket all-reduces on Gloo's
thread or NCCL's stream) is recorded apart as intervals (:meth:`StepParts.communication`):
``comm`` is the length of their union, of which ``exposed_comm`` is the part nothing hid.

On a GPU a part's start and end are CUDA events on the current stream, read once at the end of
the phase (no host stall per step, as :class:`jobs.measure.StepClock`); communication intervals
and carved waits are host times there. On the CPU everything is the host clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# The parts that add up to a step's time, in the order a step runs them. ``comm`` overlaps
# them (hidden behind backward compute, or exposed) and is reported beside them.
PARTS = ("data", "forward", "backward", "exposed_comm", "optimizer", "wait", "other")
COMM = "comm"


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the ``(start, end)`` intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


class StepParts:
    """Exclusive seconds per part of each step of one phase (host clock)."""

    clock = "host"

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.comm_steps: list[float | None] = []
        self._stack: list[list[Any]] = []  # [name, start, seconds claimed by nested parts]
        self._current: dict[str, float] = {}
        self._intervals: list[tuple[float, float]] = []
        self._measures_comm = False

    @staticmethod
    def now() -> float:
        return time.perf_counter()

    def begin_step(self) -> None:
        self._current, self._intervals = {}, []

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        frame = [name, self._open(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            self._close(frame)

    def _open(self) -> Any:
        return self.now()

    def _close(self, frame: list[Any]) -> None:
        elapsed = self.now() - frame[1]
        self._claim(frame[0], elapsed - frame[2])
        if self._stack:
            self._stack[-1][2] += elapsed

    def _claim(self, name: str, seconds: float) -> None:
        self._current[name] = self._current.get(name, 0.0) + seconds

    def carve(self, name: str, seconds: float) -> None:
        """``seconds`` of the innermost open part belong to ``name`` (a wait measured inside it)."""
        if seconds <= 0 or not self._stack:
            return
        self._claim(name, seconds)
        self._stack[-1][2] += seconds

    def communication(self, start: float, end: float) -> None:
        """A collective ran from ``start`` to ``end`` (host clock), hidden or not."""
        self._measures_comm = True
        self._intervals.append((start, end))

    def measures_communication(self) -> None:
        """This strategy reports its collectives (a step without any has ``comm`` 0, not unknown)."""
        self._measures_comm = True

    def end_step(self) -> None:
        self.steps.append(self._current)
        self.comm_steps.append(union_length(self._intervals) if self._measures_comm else None)
        self._current, self._intervals = {}, []

    def discard_last(self) -> None:
        self.steps.pop()
        self.comm_steps.pop()

    def _resolved(self) -> list[dict[str, float]]:
        return self.steps

    def record(self, step_times_s: list[float]) -> dict[str, Any]:
        """The phase's ``breakdown``: per part, per step, seconds; ``other`` is what no part claimed."""
        steps = self._resolved()
        if len(steps) != len(step_times_s):
            raise ValueError(f"{len(steps)} steps broken down for {len(step_times_s)} timed steps")
        parts: dict[str, list[float]] = {name: [] for name in PARTS}
        for step, total in zip(steps, step_times_s, strict=True):
            for name in PARTS[:-1]:
                parts[name].append(step.get(name, 0.0))
            parts["other"].append(max(total - sum(step.values()), 0.0))
        comm = self.comm_steps if any(c is not None for c in self.comm_steps) else None
        return {"clock": self.clock, "parts_s": parts, "comm_s": comm}


class CudaStepParts(StepParts):
    """Parts timed by CUDA events (the device's time), resolved once at :meth:`record`."""

    clock = "cuda_events"

    def __init__(self) -> None:
        super().__init__()
        self._spans: list[list[tuple[str, Any, Any, int, float]]] = []
        self._step_spans: list[tuple[str, Any, Any, int, float]] = []
        self._carved: list[dict[str, float]] = []

    def begin_step(self) -> None:
        super().begin_step()
        self._step_spans = []

    def _open(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _close(self, frame: list[Any]) -> None:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        # name, start, end, nesting depth, host seconds carved out of it
        self._step_spans.append((frame[0], frame[1], end, len(self._stack), frame[2]))

    def carve(self, name: str, seconds: float) -> None:
        if seconds <= 0 or not self._stack:
            return
        self._claim(name, seconds)
        self._stack[-1][2] += seconds

    def end_step(self) -> None:
        self._spans.append(self._step_spans)
        self._carved.append(self._current)
        self.comm_steps.append(union_length(self._intervals) if self._measures_comm else None)
        self._current, self._intervals, self._step_spans = {}, [], []

    def discard_last(self) -> None:
        self._spans.pop()
        self._carved.pop()
        self.comm_steps.pop()

    def _resolved(self) -> list[dict[str, float]]:
        if self._spans and self._spans[-1]:
            self._spans[-1][-1][2].synchronize()
        steps = []
        for spans, carved in zip(self._spans, self._carved, strict=True):
            step = dict(carved)
            # A span closes after the spans nested in it: walk back, subtracting children from parents.
            child_time = [0.0] * len(spans)
            for index, (name, start, end, depth, carved_s) in enumerate(spans):
                elapsed = start.elapsed_time(end) / 1000
                own = elapsed - child_time[index] - carved_s
                step[name] = step.get(name, 0.0) + max(own, 0.0)
                parent = next((j for j in range(index + 1, len(spans)) if spans[j][3] == depth - 1), None)
                if parent is not None:
                    child_time[parent] += elapsed
            steps.append(step)
        return steps


class NoParts(StepParts):
    """What a strategy holds outside a timed phase: parts are opened and forgotten."""

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        yield

    def carve(self, name: str, seconds: float) -> None:
        pass

    def communication(self, start: float, end: float) -> None:
        pass

    def measures_communication(self) -> None:
        pass

    def begin_step(self) -> None:
        pass

    def end_step(self) -> None:
        pass

    def discard_last(self) -> None:
        pass

    def record(self, step_times_s: list[float]) -> None:  # type: ignore[override]
        return None


NO_PARTS = NoParts()


def enabled(cfg: Any) -> bool:
    """Whether the cell asked for the breakdown (``breakdown=true``): without it the loop opens no
    parts and the strategies register no timed comm hooks, the bare loop."""
    return bool(cfg.get("breakdown", False)) if hasattr(cfg, "get") else bool(getattr(cfg, "breakdown", False))


def step_parts(device: torch.device, cfg: Any) -> StepParts:
    if not enabled(cfg):
        return NO_PARTS
    return CudaStepParts() if device.type == "cuda" else StepParts()
