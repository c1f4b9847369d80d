"""jobs/measure.py: step clocks that cover the device's work, per device kind."""

from __future__ import annotations

import time

import pytest
import torch

from jobs.measure import StepClock, WallClock

CPU = torch.device("cpu")


def test_cpu_steps_are_host_time_and_a_warm_up_step_can_be_dropped():
    clock = StepClock(CPU)
    for pause in (0.05, 0.01, 0.02):
        clock.start()
        time.sleep(pause)
        clock.stop()
    clock.discard_last()
    times = clock.finish()
    assert clock.steps == 2 and len(times) == 2
    assert times[0] == pytest.approx(0.05, abs=0.04) and times[0] > times[1] >= 0.01


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_gpu
def test_gpu_steps_cover_queued_kernels_without_a_sync_per_step():
    device = torch.device("cuda", 0)
    a = torch.randn(4096, 4096, device=device)
    (a @ a).tanh_()  # cuBLAS handle and kernels load here, not inside the timed steps
    torch.cuda.synchronize(device)
    clock, wall = StepClock(device), WallClock(device)
    wall.start()
    host = time.perf_counter()
    for _ in range(20):
        clock.start()
        for _ in range(5):
            a = (a @ a).tanh_()
        clock.stop()
    host_s = time.perf_counter() - host  # when the kernels were queued, not done
    wall_s = wall.stop()
    steps_s = sum(clock.finish())
    assert steps_s == pytest.approx(wall_s, rel=0.05)
    assert host_s < 0.5 * steps_s, "the host was held at each step: the loop lost its overlap"
