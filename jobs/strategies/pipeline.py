"""Pipeline parallelism (PipeDream-style plan, torch.distributed.pipelining runtime).

Processes form a ``(dp, pp)`` device mesh: rank = replica · stages + stage. Every rank
builds the whole model from the same seed, keeps its stage's blocks (so initial
weights equal the single-process model's) and runs a ``torch.distributed.pipelining``
schedule over a manual :class:`PipelineStage`. Data-parallel replicas of a stage average
their gradients over the mesh's ``dp`` group after the schedule, before the optimizer.

``pipedream`` and ``pipedream_2bw`` (no flush, weights updated while micro-batches are in
flight) run on :class:`jobs.pipeline.async_schedules.AsyncPipeline` instead: point-to-point
send/recv between the stages, the same stage modules, timers and dump section.

``model_parallel`` is the same runtime with one micro-batch: naive model parallelism.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.pipelining import PipelineStage
from torch.distributed.pipelining.schedules import (
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from jobs.breakdown import NO_PARTS, StepParts
from jobs.comm_probe import collective, torch_distributed_probes
from jobs.data import Shard
from jobs.measure import StepClock, peak_rss_bytes
from jobs.pipeline import bandwidth, planner
from jobs.pipeline.async_schedules import AsyncPipeline
from jobs.pipeline.blocks import split_blocks, stage_module
from jobs.pipeline.section import pipeline_section
from jobs.strategies.base import Placement, StepResult, Strategy
from jobs.strategies.ddp import gather_floats, init_torch_distributed, shutdown_torch_distributed


def _mean_s(clock: StepClock) -> float | None:
    times = clock.finish()
    return sum(times) / len(times) if times else None


class TimedStage(PipelineStage):
    """A PipelineStage timing its own compute: forward and backward of each micro-batch.

    The schedule waits for received activations/gradients before calling these, so the
    spans are this stage's compute (plus, on the last stage, the loss inside backward),
    not time spent waiting on neighbours.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.recording = False
        self.parts: StepParts = NO_PARTS  # the strategy's, for the step in progress
        self.reset_timing()

    def reset_timing(self) -> None:
        self.forward_span, self.backward_span = StepClock(self.device), StepClock(self.device)
        self.inflight = self.max_inflight = 0

    def forward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        if not self.recording:
            with self.parts.part("forward"):
                return super().forward_one_chunk(*args, **kwargs)
        self.forward_span.start()
        with self.parts.part("forward"):
            output = super().forward_one_chunk(*args, **kwargs)
        self.forward_span.stop()
        # Micro-batches whose activations this stage holds: 1F1B's per-stage difference.
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        return output

    def backward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        if not self.recording:
            return super().backward_one_chunk(*args, **kwargs)
        self.backward_span.start()
        with self.parts.part("backward"):
            result = super().backward_one_chunk(*args, **kwargs)
        self.backward_span.stop()
        self.inflight -= 1
        return result


def _peak_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()


class PipelineStrategy(Strategy):
    name = "pipeline"
    # Sends and receives run inside the schedule, timed as its wait (with the bubble): the
    # communication efficiency a pipeline reports is a lower bound.
    communication_timed_in = ("comm", "wait")

    def setup(self) -> Placement:
        if self.cfg.precision != "fp32":
            raise RuntimeError(f"{self.name} runs precision=fp32 only (no loss scaling across stages)")
        self.placement = init_torch_distributed(self.cfg.device, self.cfg.framework.backend)
        # The shape (stages × replicas) may be the planner's: known once build() has planned.
        self.request = planner.ShapeRequest.of(self.name, self.cfg.pipeline, self.placement.world_size)
        self.phase = "setup"  # begin_phase() says which; the pipeline section describes "train" only
        self.step_span = StepClock(self.device)
        self.allreduce_span = StepClock(self.device)
        self.peak_bytes: int | None = None
        return self.placement

    # ---- build -------------------------------------------------------------------------
    def build(self, model_factory: Callable[[], nn.Module]) -> None:
        blocks = split_blocks(model_factory())  # every rank: the same seeded weights
        # Probed before planning (every rank together), so the planner weighs the links measured.
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
        self.probes = torch_distributed_probes(self.device, self.local_world)
        hosts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(hosts, socket.gethostname())
        self.hosts = [str(h) for h in hosts]
        self.plan = self._shared_plan(model_factory)
        self._make_mesh()
        bounds = [0, *self.plan.split, len(blocks)]
        v = self.layout.virtual_stages
        self.stage_indices = list(range(self.pp_rank, v, self.layout.stages))
        self.stages: list[TimedStage] = []
        for k in self.stage_indices:
            module = stage_module(blocks, bounds[k], bounds[k + 1]).to(self.device)
            self.stages.append(TimedStage(module, k, v, self.device, group=self.pp_group))
        params = [p for st in self.stages for p in st.submod.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum)
        self.schedule = self._schedule(nn.CrossEntropyLoss())
        self.is_first = 0 in self.stage_indices
        self.is_last = v - 1 in self.stage_indices
        self.counts_samples = self.is_last

    def _schedule(self, loss: nn.Module) -> Any:
        m, name = self.layout.microbatches, self.layout.schedule
        if name in planner.ASYNC_SCHEDULES:
            return self._async_pipeline(name)
        if name == "interleaved_1f1b":
            return ScheduleInterleaved1F1B(self.stages, m, loss_fn=loss)
        kind = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}[name]
        return kind(self.stages[0], m, loss_fn=loss)

    def _async_pipeline(self, name: str) -> AsyncPipeline:
        (stage,) = self.stages  # one stage a process: the asynchronous schedules are not interleaved
        return AsyncPipeline(
            stage.submod, schedule=name, stage=stage.stage_index, stages=self.layout.stages,
            microbatches=self.layout.microbatches, device=self.device, lr=self.cfg.lr, momentum=self.cfg.momentum,
            pp_group=self.pp_group, dp_group=self.dp_group, replicas=self.layout.replicas, timer=stage,
            allreduce_span=self.allreduce_span,
        )  # fmt: skip

    def _shared_plan(self, model_factory: Callable[[], nn.Module]) -> planner.Plan:
        """Rank 0 profiles and plans, everyone uses its plan (and its shape): timings differ between ranks."""
        box: list[Any] = [None]
        if dist.get_rank() == 0:
            box[0] = self._make_plan(model_factory)
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], str):
            raise RuntimeError(box[0])
        return box[0]

    def _make_mesh(self) -> None:
        """The ``(dp, pp)`` mesh of the plan's shape: rank = replica · stages + stage."""
        s, r, world = self.plan.stages, self.plan.replicas, self.placement.world_size
        if s * r != world:
            raise RuntimeError(f"pipeline.stages={s} × pipeline.replicas={r} ≠ {world} processes")
        self.layout = self.request.layout(s, r)
        mesh = init_device_mesh(self.device.type, (r, s), mesh_dim_names=("dp", "pp"))
        self.pp_group, self.dp_group = mesh.get_group("pp"), mesh.get_group("dp")
        self.pp_rank, self.replica = mesh.get_local_rank("pp"), mesh.get_local_rank("dp")

    def _make_plan(self, model_factory: Callable[[], nn.Module]) -> planner.Plan | str:
        from jobs.pipeline.profiler import cached_profile

        cfg, request = self.cfg, self.request
        shape = [cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.image_size]
        try:
            # Forked RNG: profiling on rank 0 must not shift rank 0's random stream.
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                profile, _, _ = cached_profile(
                    model_factory, cfg.model.name, shape,
                    cfg.batch_size // request.microbatches, self.device, cfg.precision,
                )  # fmt: skip
            per_node, nodes = max(self.local_world, 1), len(set(self.hosts))
            configured = (float(cfg.cluster.intranode_gbps), float(cfg.cluster.interconnect_gbps))
            probes = self.probes if cfg.pipeline.get("bandwidth", "config") == "measured" else []
            links = bandwidth.from_probes(probes, nodes, per_node, *configured)
            if links.source != "config":  # the first measurement of these nodes: repeats plan alike
                where = (self.hosts, request.processes, per_node, self.device.type, cfg.framework.backend)
                links = bandwidth.cached(bandwidth.cache_key(*where), links)
            result = planner.plan_for(request, profile, links.topology(request.processes, per_node))
            result.bandwidth = links.__dict__
            return result
        except (planner.PlanError, ValueError) as err:  # sent to every rank, raised there
            return f"pipeline plan failed: {err}"

    # ---- steps ---------------------------------------------------------------------------
    def data_shard(self) -> Shard:
        # Every stage of a replica reads the replica's batch: images feed the first, labels the last.
        return Shard(rank=self.replica, world=self.layout.replicas)

    def _set_mode(self, train: bool, recording: bool) -> None:
        for st in self.stages:
            st.submod.train(train)
            st.recording = recording

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        recording = self.phase == "train"
        self._set_mode(True, recording)
        self._share_parts()
        self.step_span.start()
        # The schedule's time that no stage's compute, all-reduce or update claims is waiting:
        # for neighbours' activations and gradients (sends and receives), the bubble.
        with self.parts.part("wait"):
            if isinstance(self.schedule, AsyncPipeline):
                # Updates happen inside: per micro-batch (pipedream) or per step, delayed (2BW).
                losses = self.schedule.train_step(images if self.is_first else None, labels if self.is_last else None)
            else:
                losses = self._synchronous_step(images, labels, recording)
        if recording:
            self.step_span.stop()
            peak = _peak_memory(self.device)
            if peak is not None:
                self.peak_bytes = max(self.peak_bytes or 0, peak)
        if not self.is_last:
            return StepResult(loss=None, samples=0)
        return StepResult(loss=torch.stack(losses).mean().detach(), samples=images.shape[0])

    def _synchronous_step(self, images: torch.Tensor, labels: torch.Tensor, recording: bool) -> list[torch.Tensor]:
        """One flush-terminated step of the torch.distributed.pipelining schedule, then one update."""
        parts = self.parts
        with parts.part("optimizer"):
            self.optimizer.zero_grad(set_to_none=True)
        losses: list[torch.Tensor] = []
        args = (images,) if self.is_first else ()
        target = labels if self.is_last else None
        self.schedule.step(*args, target=target, losses=losses if self.is_last else None, return_outputs=False)
        if self.layout.replicas > 1:
            self.allreduce_span.start()
            with parts.part("exposed_comm"):
                start = parts.now()
                self._average_gradients()
                parts.communication(start, parts.now())
            if recording:
                self.allreduce_span.stop()
        with parts.part("optimizer"):
            self.optimizer.step()
        return losses

    def _share_parts(self) -> None:
        """The loop gives the strategy this phase's parts; the stages and the schedule time into them."""
        for st in self.stages:
            st.parts = self.parts
        if isinstance(self.schedule, AsyncPipeline):
            self.schedule.parts = self.parts

    def _average_gradients(self) -> None:
        grads = [p.grad for st in self.stages for p in st.submod.parameters() if p.grad is not None]
        if not grads:
            return
        # One flat buffer: one all-reduce per step instead of one per tensor.
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, group=self.dp_group)
        flat.div_(self.layout.replicas)
        for grad, reduced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
            grad.copy_(reduced)

    @torch.no_grad()
    def eval_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
        self._set_mode(False, False)
        self._share_parts()
        made = labels.shape[0]
        padding = self.cfg.batch_size - made
        if padding > 0:
            # The stages' buffers are shaped for the training batch; a short last batch is
            # padded (eval-mode BatchNorm is per-sample, so padding changes no prediction).
            images = torch.cat([images, images.new_zeros(padding, *images.shape[1:])])
            labels_in = torch.cat([labels, labels.new_zeros(padding)])
        else:
            labels_in = labels
        with self.parts.part("wait"):
            if isinstance(self.schedule, AsyncPipeline):
                output = self.schedule.evaluate(images if self.is_first else None)
            else:
                args = (images,) if self.is_first else ()
                # The schedule computes its loss_fn in eval too, so the last stage needs targets.
                output = self.schedule.eval(*args, target=labels_in if self.is_last else None)
        if not self.is_last:
            return 0, 0
        predicted = output[:made].argmax(dim=1)
        return int((predicted == labels).sum().item()), int(made)

    def begin_phase(self, phase: str) -> None:
        if isinstance(self.schedule, AsyncPipeline) and phase == "val":
            # No flush during training: the backwards still owed, and their updates, run now, untimed,
            # so validation (and the digests after it) sees the final weights.
            self._set_mode(True, False)
            self.schedule.drain()
        self.phase = phase
        if phase == "train":  # the timed steps: the only ones the pipeline section describes
            for st in self.stages:
                st.reset_timing()
            if isinstance(self.schedule, AsyncPipeline):
                self.schedule.reset_stats()

    def barrier(self) -> None:
        dist.barrier()

    def communication_probes(self) -> list[dict[str, Any]]:
        return self.probes  # measured in build(), before planning

    def step_collectives(self) -> list[dict[str, Any]]:
        """This process's sends of one step: per micro-batch the activation each of its stages sends
        forward and the gradient it sends back (the size of the activation it received), then the
        replicas' all-reduce of its gradients (once per update: per micro-batch for pipedream)."""
        found = []
        m, plans = self.layout.microbatches, self.plan.stage_plans
        for k in self.stage_indices:
            sent = (plans[k].activation_in_bytes if k > 0 else 0) + (
                plans[k + 1].activation_in_bytes if k + 1 < len(plans) else 0
            )
            if sent:
                found.append(collective("send_recv", sent * m, 2))
        if self.layout.replicas > 1:
            gradients = sum(p.numel() * p.element_size() for st in self.stages for p in st.submod.parameters())
            updates = self.schedule.updates_per_step if isinstance(self.schedule, AsyncPipeline) else 1
            found += [collective("all_reduce", gradients, self.layout.replicas) for _ in range(updates)]
        return found

    def parameter_digests(self) -> list[float]:
        with torch.no_grad():
            local = sum(p.double().sum().item() for st in self.stages for p in st.submod.parameters())
        return gather_floats(float(local), self.device)

    def model_state(self) -> dict[str, int]:
        from jobs.model_state import measure

        params = (p for st in self.stages for p in st.submod.parameters())
        if not isinstance(self.schedule, AsyncPipeline):
            return measure(params, self.optimizer)
        # Its own out-of-place SGD holds the momentum; the stashed versions are gone after the drain.
        state = measure(params, None)
        return {**state, "optimizer_state_bytes": self.schedule.weights.optimizer_state_bytes}

    def teardown(self) -> None:
        shutdown_torch_distributed()

    # ---- metrics -------------------------------------------------------------------------
    def _local_record(self) -> dict[str, Any]:
        step_s = _mean_s(self.step_span)
        stages = []
        busy = 0.0
        for st in self.stages:
            forward, backward = _mean_s(st.forward_span), _mean_s(st.backward_span)
            if forward is not None and backward is not None:
                busy += (forward + backward) * self.layout.microbatches
            stages.append({"stage": st.stage_index, "forward_s": forward, "backward_s": backward,
                           "max_inflight_microbatches": st.max_inflight})  # fmt: skip
        allreduce = _mean_s(self.allreduce_span)
        versions = self._version_record()
        if allreduce is not None and isinstance(self.schedule, AsyncPipeline):
            allreduce *= self.schedule.updates_per_step  # pipedream averages at every micro-batch's update
        return {
            "rank": dist.get_rank(), "pp_rank": self.pp_rank, "replica": self.replica,
            "step_s": step_s, "allreduce_s": allreduce,
            "busy_s": busy, "peak_memory_bytes": self.peak_bytes, "stages": stages, "versions": versions,
        }  # fmt: skip

    def _version_record(self) -> dict[str, int]:
        """Weight versions this rank held (peak), its gradients' staleness in updates, the stash's bytes."""
        if isinstance(self.schedule, AsyncPipeline):
            stats = self.schedule.stats
            return {"weight_versions": stats.peak_versions, "staleness_updates": stats.max_staleness,
                    "stashed_weight_bytes": stats.peak_stashed_bytes}  # fmt: skip
        # A flush before every update: one version, gradients of the weights they update.
        return {"weight_versions": 1, "staleness_updates": 0, "stashed_weight_bytes": 0}

    def pipeline_metrics(self) -> dict[str, Any] | None:
        records: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(records, self._local_record())
        return pipeline_section(
            self.plan, self.layout, records, batch_size=int(self.cfg.batch_size), stage=self.pp_rank,
            replica=self.replica, shape_chosen_by=self.request.chosen_by,
        )  # fmt: skip


class ModelParallelStrategy(PipelineStrategy):
    """Naive model parallelism: the pipeline's stages with one micro-batch (no overlap)."""

    name = "model_parallel"
