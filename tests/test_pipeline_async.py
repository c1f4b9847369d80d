"""The asynchronous schedules compute what their papers say (fp32, real gloo processes, a tiny model).

``pipedream`` (weight stashing): the gradient a stage applies for micro-batch m is the gradient
one process computes, for m, at the weight versions stashed for m on every stage, and versions
advance by one SGD update per micro-batch. ``pipedream_2bw``: after k steps the weights equal a
single process applying ``W(t+1) = W(t) - lr · ∇f_t(W(t-1))``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from jobs import schema
from jobs.data import Shard
from jobs.pipeline import planner
from jobs.pipeline.async_schedules import AppliedUpdate, AsyncPipeline
from jobs.pipeline.planner import BlockCost, Profile, Topology
from jobs.strategies.base import Placement, StepResult, Strategy
from orchestrator import config as compose_config
from orchestrator.errors import ConfigError

BATCH, LR, MOMENTUM = 8, 0.1, 0.9
# Exact in fp32 up to summation order: both sides run the same kernels on one thread.
TIGHT = {"rtol": 1e-6, "atol": 1e-7}


def _stages(count: int = 2) -> list[nn.Sequential]:
    torch.manual_seed(0)
    first = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 16), nn.Tanh())
    middle = [nn.Sequential(nn.Linear(16, 16), nn.ReLU()) for _ in range(count - 2)]
    last = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5))
    return [first, *middle, last]


def _batch(step: int, replica: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 * replica + step)
    return torch.randn(BATCH, 1, 6, 6, generator=generator), torch.randint(0, 5, (BATCH,), generator=generator)


def _groups(stages: int, replicas: int, rank: int) -> tuple[Any, Any]:
    """This rank's pipeline and replica groups (rank = replica · stages + stage); every rank creates all."""
    pp = [dist.new_group([r * stages + s for s in range(stages)]) for r in range(replicas)]
    dp = [dist.new_group([r * stages + s for r in range(replicas)]) for s in range(stages)]
    return pp[rank // stages], dp[rank % stages]


def _worker(rank: int, world: int, port: int, job: dict[str, Any], out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        stages = job["stages"]
        stage, replica = rank % stages, rank // stages
        pp, dp = _groups(stages, job["replicas"], rank)
        pipe = AsyncPipeline(
            _stages(stages)[stage], schedule=job["schedule"], stage=stage, stages=stages,
            microbatches=job["microbatches"], device=torch.device("cpu"), lr=LR, momentum=MOMENTUM,
            pp_group=pp, dp_group=dp, replicas=job["replicas"],
        )  # fmt: skip
        pipe.timer.recording = True
        updates: list[dict[str, Any]] = []
        pipe.observers.append(lambda u: updates.append(_record(u)))
        losses = []
        for step in range(job["steps"]):
            images, labels = _batch(step, replica)
            losses += [float(v) for v in pipe.train_step(images, labels)]
        pipe.drain()
        images, _ = _batch(99, replica)
        logits = pipe.evaluate(images)
        out[rank] = {
            "updates": updates, "losses": losses, "logits": logits,
            "final": [p.detach().clone() for p in pipe.module.parameters()],
            "peak_versions": pipe.stats.peak_versions, "max_staleness": pipe.stats.max_staleness,
            "stashed_bytes": pipe.stats.peak_stashed_bytes, "version_bytes": pipe.weights.bytes_per_version,
            "max_inflight": pipe.timer.max_inflight,
        }  # fmt: skip
    finally:
        dist.destroy_process_group()


def _record(update: AppliedUpdate) -> dict[str, Any]:
    return {
        "microbatches": update.microbatches, "version": update.version, "base_version": update.base_version,
        "weights": [w.detach().clone() for w in update.weights], "gradients": [g.clone() for g in update.gradients],
    }  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(schedule: str, *, steps: int, microbatches: int, replicas: int = 1, stages: int = 2) -> dict[int, Any]:
    job = {"schedule": schedule, "steps": steps, "microbatches": microbatches, "replicas": replicas, "stages": stages}
    out = mp.Manager().dict()
    world = stages * replicas
    mp.start_processes(_worker, args=(world, _free_port(), job, out), nprocs=world, start_method="spawn")
    return dict(out)


def _microbatch(index: int, microbatches: int, replica: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _batch(index // microbatches, replica)
    part = index % microbatches
    return images.tensor_split(microbatches)[part], labels.tensor_split(microbatches)[part]


def _gradients(weights: list[list[torch.Tensor]], x: torch.Tensor, y: torch.Tensor, divide_by: int = 1):
    """Per stage, the gradient of one process's loss on (x, y) with these weights on every stage."""
    modules = _stages(len(weights))
    with torch.no_grad():
        for module, stage_weights in zip(modules, weights, strict=True):
            for p, w in zip(module.parameters(), stage_weights, strict=True):
                p.copy_(w)
    loss = nn.CrossEntropyLoss()(nn.Sequential(*modules)(x), y) / divide_by
    loss.backward()
    return [[p.grad for p in module.parameters()] for module in modules]


def _assert_all_close(actual: list[torch.Tensor], expected: list[torch.Tensor], what: str) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, **TIGHT, msg=what)


def _sgd_replay(initial: list[torch.Tensor], gradients: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Every version torch.optim.SGD produces from ``initial`` applying ``gradients`` in order."""
    params = [nn.Parameter(t.clone()) for t in initial]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)
    versions = [[p.detach().clone() for p in params]]
    for grads in gradients:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        versions.append([p.detach().clone() for p in params])
    return versions


@pytest.fixture(autouse=True)
def _one_thread():
    # Like the ranks: another thread count may pick other kernels, and the last digits differ.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pipedream_applies_each_microbatch_gradient_at_its_stashed_weights():
    steps, m = 3, 4
    out = _run("pipedream", steps=steps, microbatches=m)
    n = steps * m
    first, last = out[0]["updates"], out[1]["updates"]
    assert [u["microbatches"] for u in first] == [(i,) for i in range(n)] == [u["microbatches"] for u in last]
    # Stage s runs S-1-s forwards ahead: micro-batch i's forward saw i - (S-1-s) updates.
    assert [u["version"] for u in first] == [max(0, i - 1) for i in range(n)]
    assert [u["version"] for u in last] == list(range(n))
    assert [u["base_version"] for u in first] == list(range(n))
    for i in range(n):
        stashed = [first[i]["weights"], last[i]["weights"]]
        expected = _gradients(stashed, *_microbatch(i, m), divide_by=m)
        _assert_all_close(first[i]["gradients"], expected[0], f"stage 0, micro-batch {i}")
        _assert_all_close(last[i]["gradients"], expected[1], f"stage 1, micro-batch {i}")
    # Versions are successive SGD updates, each applying one micro-batch's gradient to the newest weights.
    for updates, rank in ((first, 0), (last, 1)):
        versions = _sgd_replay(updates[0]["weights"], [u["gradients"] for u in updates])
        for u in updates:
            _assert_all_close(u["weights"], versions[u["version"]], f"rank {rank} version {u['version']}")
        _assert_all_close(out[rank]["final"], versions[-1], f"rank {rank} after the drain")
    assert [out[r]["peak_versions"] for r in (0, 1)] == [2, 1]  # one per in-flight micro-batch: S - s
    assert [out[r]["max_staleness"] for r in (0, 1)] == [1, 0]
    assert [out[r]["max_inflight"] for r in (0, 1)] == [2, 1]
    assert out[0]["stashed_bytes"] == out[0]["version_bytes"] and out[1]["stashed_bytes"] == 0


def test_pipedream_on_three_stages_stashes_one_version_per_inflight_microbatch():
    """A middle stage receives from one neighbour and sends to the other in both directions."""
    steps, m, stages = 2, 4, 3
    out = _run("pipedream", steps=steps, microbatches=m, stages=stages)
    n = steps * m
    for s in range(stages):
        ahead = stages - 1 - s
        assert [u["version"] for u in out[s]["updates"]] == [max(0, i - ahead) for i in range(n)], f"stage {s}"
    for i in range(n):
        expected = _gradients([out[s]["updates"][i]["weights"] for s in range(stages)], *_microbatch(i, m), divide_by=m)
        for s in range(stages):
            _assert_all_close(out[s]["updates"][i]["gradients"], expected[s], f"stage {s}, micro-batch {i}")
    assert [out[s]["peak_versions"] for s in range(stages)] == [3, 2, 1]
    assert [out[s]["max_staleness"] for s in range(stages)] == [2, 1, 0]
    assert [out[s]["max_inflight"] for s in range(stages)] == [3, 2, 1]
    images, _ = _batch(99)
    final = _forward_with([out[s]["final"] for s in range(stages)], images)
    torch.testing.assert_close(out[stages - 1]["logits"], final, **TIGHT)


def test_pipedream_matches_a_sequential_reference_and_evaluates_on_the_newest_weights():
    """Independent of what the ranks report: one process replays PipeDream micro-batch by micro-batch."""
    steps, m = 2, 4
    out = _run("pipedream", steps=steps, microbatches=m)
    modules = _stages()
    history = [[[p.detach().clone() for p in module.parameters()]] for module in modules]
    optimizers = [torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM) for module in modules]
    losses = []
    for i in range(steps * m):
        # Stage 0 is one update ahead of its forward (S-1-s = 1), stage 1 none.
        stashed = [history[0][max(0, i - 1)], history[1][i]]
        x, y = _microbatch(i, m)
        grads = _gradients(stashed, x, y, divide_by=m)
        losses.append(float(nn.CrossEntropyLoss()(_forward_with(stashed, x), y)))
        for module, optimizer, g, versions in zip(modules, optimizers, grads, history, strict=True):
            for p, gp in zip(module.parameters(), g, strict=True):
                p.grad = gp
            optimizer.step()
            versions.append([p.detach().clone() for p in module.parameters()])
    assert out[1]["losses"] == pytest.approx(losses, rel=1e-6)
    for rank in (0, 1):
        _assert_all_close(out[rank]["final"], history[rank][-1], f"rank {rank} final weights")
    images, _ = _batch(99)
    expected = _forward_with([history[0][-1], history[1][-1]], images)
    torch.testing.assert_close(out[1]["logits"], expected, **TIGHT)
    assert out[0]["logits"] is None


def _forward_with(weights: list[list[torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    modules = _stages(len(weights))
    with torch.no_grad():
        for module, stage_weights in zip(modules, weights, strict=True):
            for p, w in zip(module.parameters(), stage_weights, strict=True):
                p.copy_(w)
        return nn.Sequential(*modules)(x)


def test_pipedream_replicas_average_each_update_over_replicas():
    steps, m = 2, 2
    out = _run("pipedream", steps=steps, microbatches=m, replicas=2)
    for stage in (0, 1):
        mine, theirs = out[stage]["updates"], out[2 + stage]["updates"]
        for i, (u, v) in enumerate(zip(mine, theirs, strict=True)):
            # Replicas apply the same averaged gradient to the same weights: they never diverge.
            _assert_all_close(u["gradients"], v["gradients"], f"stage {stage} micro-batch {i}: replicas")
            _assert_all_close(u["weights"], v["weights"], f"stage {stage} micro-batch {i}: stashed weights")
    for i in range(steps * m):
        per_replica = [
            _gradients([out[2 * r]["updates"][i]["weights"], out[2 * r + 1]["updates"][i]["weights"]],
                       *_microbatch(i, m, replica=r), divide_by=m)
            for r in (0, 1)
        ]  # fmt: skip
        for stage in (0, 1):
            mean = [(a + b) / 2 for a, b in zip(per_replica[0][stage], per_replica[1][stage], strict=True)]
            _assert_all_close(out[stage]["updates"][i]["gradients"], mean, f"stage {stage} micro-batch {i}")


def test_2bw_matches_the_one_step_delayed_update_rule():
    steps, m = 4, 2
    out = _run("pipedream_2bw", steps=steps, microbatches=m)
    modules = _stages()
    versions = [[[p.detach().clone() for p in module.parameters()] for module in modules]]  # W(t), all stages
    optimizers = [torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM) for module in modules]
    for t in range(steps):
        used = versions[max(t - 1, 0)]  # every micro-batch of step t runs on W(t-1)
        grads = _accumulated(used, t, m)
        for stage, module in enumerate(modules):
            for p, g in zip(module.parameters(), grads[stage], strict=True):
                p.grad = g
            optimizers[stage].step()  # applied to W(t): W(t+1) = W(t) - lr · ∇f_t(W(t-1))
            update = out[stage]["updates"][t]
            assert update["microbatches"] == tuple(range(t * m, (t + 1) * m))
            assert (update["version"], update["base_version"]) == (max(t - 1, 0), t)
            _assert_all_close(update["gradients"], grads[stage], f"stage {stage} step {t} gradient")
            _assert_all_close(update["weights"], used[stage], f"stage {stage} step {t} weights used")
        versions.append([[p.detach().clone() for p in module.parameters()] for module in modules])
    for stage in (0, 1):
        _assert_all_close(out[stage]["final"], versions[steps][stage], f"stage {stage} after {steps} steps")
        assert out[stage]["peak_versions"] == 2 and out[stage]["max_staleness"] == 1
    assert [out[r]["max_inflight"] for r in (0, 1)] == [2, 1]


def _accumulated(weights: list[list[torch.Tensor]], step: int, m: int) -> list[list[torch.Tensor]]:
    """The step's gradient: its micro-batches' mean loss, micro-batch by micro-batch, summed in order."""
    total: list[list[torch.Tensor]] | None = None
    for i in range(step * m, (step + 1) * m):
        grads = _gradients(weights, *_microbatch(i, m), divide_by=m)
        if total is not None:
            grads = [[a + b for a, b in zip(x, y, strict=True)] for x, y in zip(total, grads, strict=True)]
        total = grads
    assert total is not None
    return total


def test_2bw_refuses_fewer_microbatches_than_stages():
    with pytest.raises(RuntimeError, match="microbatches ≥ stages"):
        AsyncPipeline(_stages()[0], schedule="pipedream_2bw", stage=0, stages=2, microbatches=1,
                      device=torch.device("cpu"), lr=LR, momentum=MOMENTUM)  # fmt: skip


# ---- whole cells through the CLI: resnet18, two CPU processes, one stage each ------------------------

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = REPO / ".venv" / "bin" / "dnnbench"
DNNBENCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]
CELL = ["framework=pipeline", "model=resnet18", "gpus=2", "pipeline.stages=2", "device=cpu"]


def _dnnbench_run(tmp_path: Path, *overrides: str) -> list[dict[str, Any]]:
    """``dnnbench run`` one cell; its two rank dumps, validated as the runner validates them."""
    out = tmp_path / "run"
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DNNBENCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([*DNNBENCH, "run", *CELL, *overrides, "--quiet", "--out", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (attempt,) = out.glob("cells/*/attempt_0")
    return [schema.load(attempt / schema.dump_filename(rank)) for rank in range(2)]


@pytest.mark.parametrize(("schedule", "versions", "staleness"), [("pipedream", [2, 1], [1, 0]),
                                                                 ("pipedream_2bw", [2, 2], [1, 1])])  # fmt: skip
def test_asynchronous_cells_run_through_the_cli_with_valid_dumps(tmp_path, schedule, versions, staleness):
    first, last = _dnnbench_run(tmp_path, f"pipeline.schedule={schedule}", "dataset=synthetic", "batch_size=8",
                                "steps=3", "warmup_steps=2", "val_steps=2", "dataset.train_samples=64",
                                "dataset.val_samples=16")  # fmt: skip
    assert (first["counts_samples"], last["counts_samples"]) == (False, True)
    assert last["phases"]["train"]["samples"] == 3 * 8 and first["phases"]["train"]["samples"] == 0
    assert last["phases"]["val"]["evaluated"] == 16
    section = last["pipeline"]
    assert section["schedule"] == schedule and section["stages"] == 2 and section["replicas"] == 1
    stages = section["per_stage"]
    assert [s["weight_versions"] for s in stages] == versions == [s["predicted_weight_versions"] for s in stages]
    assert [s["staleness_updates"] for s in stages] == staleness == [s["predicted_staleness_updates"] for s in stages]
    for held, stage in zip(versions, stages, strict=True):
        # The stash costs a parameter copy per version beyond the newest; the plan counts every version
        # (+ gradient and momentum) in its memory prediction.
        assert stage["stashed_weight_bytes"] == (held - 1) * stage["parameter_bytes"]
        assert stage["predicted_memory_bytes"] >= (held + 2) * stage["parameter_bytes"]
    assert [s["max_inflight_microbatches"] for s in stages] == [2, 1]
    assert 0 <= section["measured"]["bubble_fraction"] < 1


@pytest.mark.slow
def test_pipedream_learns_mnist_as_well_as_1f1b(tmp_path, mnist_root: Path):
    """The same cell under both schedules (about 45 s each on 2 busy cores): 3,200 training images.

    At M = 4 a pipedream update is a quarter of a step's, so its one-update staleness on the first
    stage costs little (measured: 1f1b 0.910, pipedream 0.925; at M = 2 and lr 0.02, 0.919 vs 0.713).
    """
    cell = ["dataset=mnist", "dataset.on_device=true", f"dataset.root={mnist_root}", "batch_size=64",
            "pipeline.microbatches=4", "steps=50", "warmup_steps=2", "val_steps=15", "lr=0.01"]  # fmt: skip
    accuracy = {}
    for schedule in ("1f1b", "pipedream"):
        _, last = _dnnbench_run(tmp_path / schedule, f"pipeline.schedule={schedule}", *cell)
        accuracy[schedule] = last["phases"]["val"]["accuracy"]
    assert accuracy["1f1b"] > 0.8, accuracy  # far above chance (0.1): the comparison means something
    assert abs(accuracy["pipedream"] - accuracy["1f1b"]) < 0.05, accuracy


# ---- what the planner and the plan-time checks say about them (pure Python) ----------------------------


def _equal_profile(blocks: int = 8) -> Profile:
    costs = [
        BlockCost(f"b{i}", 1.0, 2.0, activation_bytes=0, saved_bytes=100, parameter_bytes=1000) for i in range(blocks)
    ]
    return Profile("equal", [1, 28, 28], 8, "cpu", "fp32", "", costs)


def test_planner_predicts_no_flush_and_counts_the_stashed_versions():
    topology = Topology(4, 4, 50.0, 12.5)
    flushed = planner.plan(_equal_profile(), stages=4, microbatches=4, topology=topology, schedule="1f1b")
    assert flushed.bubble_fraction == pytest.approx(3 / 7)  # (S-1)/(M+S-1)
    for name, versions, staleness, gradients in (("pipedream", [4, 3, 2, 1], [3, 2, 1, 0], 1),
                                                 ("pipedream_2bw", [2] * 4, [1] * 4, 2)):  # fmt: skip
        result = planner.plan(_equal_profile(), stages=4, microbatches=4, topology=topology, schedule=name)
        assert result.bubble_fraction == pytest.approx(0.0) and result.step_s == pytest.approx(result.bottleneck_s)
        assert result.step_s < flushed.step_s
        assert [p.weight_versions for p in result.stage_plans] == versions
        assert [p.staleness_updates for p in result.stage_plans] == staleness
        assert [p.inflight_microbatches for p in result.stage_plans] == [4, 3, 2, 1]
        # Versions + gradient(s) + momentum, per parameter byte; activations per in-flight micro-batch.
        expected = [(v + gradients + 1) * 2000 + (4 - s) * 200 for s, v in enumerate(versions)]
        assert [p.memory_bytes for p in result.stage_plans] == expected


def test_planner_charges_pipedream_an_all_reduce_per_microbatch():
    topology = Topology(4, 4, 50.0, 12.5)
    per_step = planner.plan(_equal_profile(), stages=2, replicas=2, microbatches=4, topology=topology, schedule="1f1b")
    per_mb = planner.plan(
        _equal_profile(), stages=2, replicas=2, microbatches=4, topology=topology, schedule="pipedream"
    )
    assert [p.allreduce_s for p in per_mb.stage_plans] == pytest.approx(
        [4 * p.allreduce_s for p in per_step.stage_plans]
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pipeline.schedule=pipedream_2bw", "pipeline.stages=4", "pipeline.microbatches=2", "gpus=4"],
         "pipedream_2bw needs at least as many micro-batches as stages"),
        (["pipeline.schedule=pipedream_3bw", "gpus=2"], "expected one of .*pipedream, pipedream_2bw"),
    ],
)  # fmt: skip
def test_plan_time_checks_know_the_asynchronous_schedules(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config.validate(
            compose_config.resolved(compose_config.compose(["framework=pipeline", "model=resnet18", *overrides]))
        )
    for good in ("pipedream", "pipedream_2bw"):
        composed = compose_config.compose(["framework=pipeline", "gpus=2", f"pipeline.schedule={good}"])
        compose_config.validate(compose_config.resolved(composed))


# ---- the loop tells a strategy which phase starts ------------------------------------------------------


class _PhaseLog(Strategy):
    """A one-process strategy that writes down what the loop asks of it, in order."""

    name = "phase_log"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.calls: list[str] = []

    def setup(self) -> Placement:
        self.placement = Placement(0, 0, 1, 0, torch.device("cpu"))
        return self.placement

    def build(self, model_factory: Any) -> None: ...

    def data_shard(self) -> Shard:
        return Shard(rank=0, world=1)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        self.calls.append("step")
        return StepResult(loss=None, samples=labels.shape[0])

    def eval_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
        self.calls.append("eval")
        return 0, labels.shape[0]

    def begin_phase(self, phase: str) -> None:
        self.calls.append(phase)

    def barrier(self) -> None:
        self.calls.append("barrier")

    def parameter_digests(self) -> list[float]:
        return []


def test_the_loop_announces_each_phase_before_its_barrier():
    from omegaconf import OmegaConf

    from jobs.data import build_batches
    from jobs.loop import train_phase, val_phase
    from jobs.measure import memory_probe

    cfg = OmegaConf.create(compose_config.resolved(compose_config.compose(
        ["framework=ddp", "dataset=synthetic", "batch_size=4", "steps=3", "warmup_steps=2", "val_steps=2",
         "dataset.train_samples=32", "dataset.val_samples=8", "device=cpu"])))  # fmt: skip
    strategy = _PhaseLog(cfg)
    strategy.setup()
    source, _ = build_batches(cfg, strategy.data_shard(), strategy.device)
    probe = memory_probe(strategy.device)
    train_phase(strategy, source, cfg, probe)
    val_phase(strategy, source, cfg, probe)
    assert strategy.calls == ["warmup", "step", "step", "train", "barrier", "step", "step", "step",
                              "val", "barrier", "eval", "eval"]  # fmt: skip
