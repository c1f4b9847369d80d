"""Asynchronous pipeline schedules: PipeDream's weight stashing and PipeDream-2BW, on point-to-point send/recv.

``pipedream`` (Narayanan et al., SOSP 2019): 1F1B without a flush. Stage ``s`` of ``S`` runs
``S-1-s`` forwards ahead of its backwards, so it holds up to ``S-s`` micro-batches in flight.
It updates its weights after every micro-batch's backward; a micro-batch's forward uses the
newest weights, and its backward the version stashed at that forward, so a stage keeps one
weight version per in-flight micro-batch and its gradients are ``S-1-s`` updates stale.

``pipedream_2bw`` (Narayanan et al., ICML 2021): the same 1F1B order, but the gradients of a
step's ``M`` micro-batches are accumulated and applied once, with a one-step delay: every
micro-batch of step ``t`` (0-based) runs forward and backward on ``W(max(t-1, 0))`` and the update
is ``W(t+1) = W(t) - lr · ∇f_t(W(t-1))``. Two weight buffers suffice when ``M ≥ S``.

Versions are tensors, never overwritten: an update makes a new version (the optimizer step is
out of place) and the module's parameters are pointed at it, so an in-flight micro-batch's
autograd graph keeps exactly the version its forward used, and a version is freed with the last
graph that used it. Gradients come from ``torch.autograd.grad`` per micro-batch, so each
update's gradient is the micro-batch's own (observers see it: :class:`AppliedUpdate`).

No flush between steps: one :meth:`AsyncPipeline.train_step` pushes ``M`` micro-batches in
(``M`` forwards and ``M`` backwards per stage in steady state); the backwards still owed at the
end of training are run by :meth:`AsyncPipeline.drain`, which the strategy calls when validation
begins (outside the timed steps, as the fill is inside the untimed warm-up steps).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.func import functional_call

from jobs.breakdown import NO_PARTS, StepParts
from jobs.measure import StepClock

# The shape header before a stage's first activation: ndim, then up to this many sizes.
_MAX_DIMS = 8


class Timer(Protocol):
    """Where a stage's compute spans and its most micro-batches in flight go (the strategy's stage object)."""

    forward_span: StepClock
    backward_span: StepClock
    recording: bool
    max_inflight: int


@dataclass
class StageTimer:
    """Per-stage compute spans and the most micro-batches held, recorded while ``recording``."""

    forward_span: StepClock
    backward_span: StepClock
    recording: bool = False
    max_inflight: int = 0

    @classmethod
    def on(cls, device: torch.device) -> StageTimer:
        return cls(StepClock(device), StepClock(device))


@dataclass(frozen=True)
class AppliedUpdate:
    """One weight update of a stage: the gradient it applied and the version it was computed at."""

    microbatches: tuple[int, ...]  # global indices whose gradients were summed (one for pipedream)
    version: int  # weight version those micro-batches' forward and backward used
    weights: list[torch.Tensor]  # that version's tensors (read-only, and only during the observer's call)
    gradients: list[torch.Tensor]  # as applied: averaged over replicas
    base_version: int  # the version the update was applied to (the newest one)


@dataclass
class _InFlight:
    index: int
    version: int
    weights: list[torch.Tensor]
    received: torch.Tensor | None  # the input activation (requires grad) on stages after the first
    output: torch.Tensor  # the activation sent on, or the loss on the last stage


@dataclass
class VersionStats:
    """What weight stashing cost a stage: versions held between operations, and gradient staleness."""

    peak_versions: int = 1
    peak_stashed_bytes: int = 0
    max_staleness: int = 0


class WeightVersions:
    """The weight versions of one stage, SGD with momentum applied out of place.

    Version 0 is the module's own parameters. An update computes a new version from the
    newest one (``W_new = W_newest - lr · buf``, ``buf = momentum · buf + g`` as torch.optim.SGD)
    and points the module's parameters at it; older versions live while a stash holds them. The
    new version is written into the storage of a version nobody will read again when there is one
    (the one the update's own micro-batches used, once their backwards are done), so steady state
    allocates no weights and never holds one version more than the stash needs.
    """

    def __init__(self, module: nn.Module, lr: float, momentum: float):
        named = list(module.named_parameters())
        self.names = [name for name, _ in named]
        self.parameters = [p for _, p in named]
        self.lr, self.momentum = lr, momentum
        self.versions: dict[int, list[torch.Tensor]] = {0: [p.detach().requires_grad_() for p in self.parameters]}
        self.newest = 0
        self._buffers: list[torch.Tensor] | None = None
        self.bytes_per_version = sum(p.numel() * p.element_size() for p in self.parameters)

    def get(self, version: int) -> list[torch.Tensor]:
        if version not in self.versions:
            raise RuntimeError(f"weight version {version} is not held (held: {sorted(self.versions)})")
        return self.versions[version]

    def as_mapping(self, version: int) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.get(version), strict=True))

    @torch.no_grad()
    def update(self, gradients: Sequence[torch.Tensor], recycle: int | None = None) -> int:
        """Make version newest+1 from the newest version and ``gradients``, in the tensors of version
        ``recycle`` when given (it is gone after; it may be the newest: an in-place step); returns its number."""
        if self.momentum:
            if self._buffers is None:
                self._buffers = [g.detach().clone() for g in gradients]
            else:
                for buf, g in zip(self._buffers, gradients, strict=True):
                    buf.mul_(self.momentum).add_(g)
            steps: Sequence[torch.Tensor] = self._buffers
        else:
            steps = gradients
        source = self.versions[self.newest]
        if recycle is None:
            new = [torch.add(w, d, alpha=-self.lr) for w, d in zip(source, steps, strict=True)]
        else:
            new = self.versions.pop(recycle)
            for target, w, d in zip(new, source, steps, strict=True):
                torch.add(w, d, alpha=-self.lr, out=target)
        self.newest += 1
        self.versions[self.newest] = [t.requires_grad_() for t in new]
        for p, t in zip(self.parameters, new, strict=True):
            p.data = t.detach()  # eval and digests read the module: it always shows the newest weights
        return self.newest

    @property
    def optimizer_state_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers or [])

    def keep_only(self, wanted: set[int]) -> None:
        for version in [v for v in self.versions if v not in wanted and v != self.newest]:
            del self.versions[version]


@dataclass
class _Peers:
    """Send/receive between neighbouring stages of one replica (pipeline group ranks)."""

    group: dist.ProcessGroup | None
    stage: int
    stages: int
    device: torch.device
    pending: list[tuple[dist.Work, torch.Tensor]] = field(default_factory=list)
    sent_shape: torch.Size | None = None
    received_shape: torch.Size | None = None

    def exchange(self, sends: list[tuple[torch.Tensor, int]], recvs: list[tuple[torch.Tensor, int]]) -> None:
        """Post the sends and receives together and wait for the receives only.

        Posting a send to the next stage together with the receive of its gradient (and the
        reverse) is what keeps two stages that both send first from waiting on each other
        where sends block until received (NCCL); with gloo it is simply asynchronous.
        """
        if not sends and not recvs:
            return
        ops = [dist.P2POp(dist.isend, t, group=self.group, group_peer=peer) for t, peer in sends]
        ops += [dist.P2POp(dist.irecv, t, group=self.group, group_peer=peer) for t, peer in recvs]
        works = dist.batch_isend_irecv(ops)
        for work in works[len(sends) :]:
            work.wait()
        self.pending = [(w, t) for w, t in self.pending if not w.is_completed()]
        self.pending += list(zip(works[: len(sends)], [t for t, _ in sends], strict=True))

    def activation_buffer(self) -> torch.Tensor:
        """A buffer for the previous stage's activation; the first one is preceded by its shape."""
        if self.received_shape is None:
            header = torch.zeros(_MAX_DIMS + 1, dtype=torch.int64, device=self.device)
            dist.recv(header, group=self.group, group_src=self.stage - 1)
            ndim, *sizes = header.tolist()
            self.received_shape = torch.Size(sizes[:ndim])
        return torch.empty(self.received_shape, device=self.device)

    def announce(self, activation: torch.Tensor) -> None:
        """Send the activation's shape before the first one; later ones must keep it."""
        if self.sent_shape is None:
            if activation.dim() > _MAX_DIMS:
                raise RuntimeError(f"stage {self.stage}: a {activation.dim()}-dimensional activation is not supported")
            header = torch.zeros(_MAX_DIMS + 1, dtype=torch.int64, device=self.device)
            header[0] = activation.dim()
            header[1 : activation.dim() + 1] = torch.tensor(activation.shape)
            self.exchange([(header, self.stage + 1)], [])
            self.sent_shape = activation.shape
        elif activation.shape != self.sent_shape:
            raise RuntimeError(
                f"stage {self.stage}: activation of shape {tuple(activation.shape)} after {tuple(self.sent_shape)}: "
                "every micro-batch must have the same size"
            )

    def wait_all(self) -> None:
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()


class AsyncPipeline:
    """One stage of an asynchronous pipeline (``pipedream`` or ``pipedream_2bw``) in one process.

    ``pp_group`` holds the stages of this replica (group rank = stage); ``dp_group`` the replicas
    of this stage, whose gradients are averaged before every update.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        schedule: str,
        stage: int,
        stages: int,
        microbatches: int,
        device: torch.device,
        lr: float,
        momentum: float,
        pp_group: dist.ProcessGroup | None = None,
        dp_group: dist.ProcessGroup | None = None,
        replicas: int = 1,
        timer: Timer | None = None,
        allreduce_span: StepClock | None = None,
    ):
        if schedule not in ("pipedream", "pipedream_2bw"):
            raise ValueError(f"schedule {schedule!r}: expected pipedream or pipedream_2bw")
        if schedule == "pipedream_2bw" and microbatches < stages:
            raise RuntimeError(
                f"pipedream_2bw needs pipeline.microbatches ≥ stages ({microbatches} < {stages}): "
                "a step's micro-batches must cover the pipeline for two weight versions to suffice"
            )
        self.module, self.schedule, self.device = module, schedule, device
        self.stage, self.stages, self.microbatches = stage, stages, microbatches
        self.is_first, self.is_last = stage == 0, stage == stages - 1
        # How many forwards this stage runs ahead of its backwards (1F1B's warm-up length).
        self.ahead = stages - 1 - stage
        self.weights = WeightVersions(module, lr, momentum)
        self.peers = _Peers(pp_group, stage, stages, device)
        self.dp_group, self.replicas = dp_group, replicas
        self.timer: Timer = timer or StageTimer.on(device)
        self.allreduce_span = allreduce_span or StepClock(device)
        self.inflight: deque[_InFlight] = deque()
        self.next_forward = 0
        self._accumulated: list[torch.Tensor] | None = None
        self._owed_upstream: list[tuple[torch.Tensor, int]] = []  # input gradients not yet posted
        self._expected_gradient: torch.Tensor | None = None
        self.stats = VersionStats()
        self.observers: list[Callable[[AppliedUpdate], None]] = []
        self.loss = nn.CrossEntropyLoss()
        self.parts: StepParts = NO_PARTS  # the strategy's, for the step in progress (jobs/breakdown.py)

    @property
    def updates_per_step(self) -> int:
        return self.microbatches if self.schedule == "pipedream" else 1

    # ---- training ---------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor | None, labels: torch.Tensor | None) -> list[torch.Tensor]:
        """Push one step's ``M`` micro-batches in; returns the last stage's losses (one per micro-batch)."""
        m = self.microbatches
        inputs = list(images.tensor_split(m)) if self.is_first and images is not None else [None] * m
        targets = list(labels.tensor_split(m)) if self.is_last and labels is not None else [None] * m
        losses: list[torch.Tensor] = []
        for x, y in zip(inputs, targets, strict=True):
            # 1F1B: forward j, then the backward of j - ahead if it is in flight (not in the fill
            # at the start of training, nor drained already).
            if self._forward(x, y, losses):
                self._backward(gradient_received=True)
        self._post_owed()
        return losses

    def _holds(self, index: int) -> bool:
        """Whether micro-batch ``index`` is in flight here: its backward is due in 1F1B order."""
        return bool(self.inflight) and self.inflight[0].index == index

    def _version_for(self, index: int) -> int:
        if self.schedule == "pipedream":
            return self.weights.newest
        return max(index // self.microbatches - 1, 0)  # 2BW: step t's micro-batches use W(t-1)

    def _forward(self, x: torch.Tensor | None, y: torch.Tensor | None, losses: list[torch.Tensor]) -> bool:
        """Forward the next micro-batch; True when a backward is due after it (its gradient then received)."""
        index = self.next_forward
        received = None
        if not self.is_first:
            buffer = self.peers.activation_buffer()
            self.peers.exchange(self._take_owed(), [(buffer, self.stage - 1)])
            received = x = buffer.requires_grad_()
        version = self._version_for(index)
        weights = self.weights.get(version)
        timing = self.timer.recording
        if timing:
            self.timer.forward_span.start()
        with self.parts.part("forward"):
            output = functional_call(self.module, dict(zip(self.weights.names, weights, strict=True)), (x,))
            if self.is_last:
                loss = self.loss(output, y)
                losses.append(loss.detach())
                # Every schedule minimises the step's mean loss over its M micro-batches at the cell's lr: 2BW
                # sums the M terms into one update; pipedream applies each term as soon as it has it, so a
                # step's M updates add up to one synchronous step's (but for staleness and momentum).
                output = loss / self.microbatches
        if timing:
            self.timer.forward_span.stop()
        self.inflight.append(_InFlight(index, version, weights, received, output))
        self.next_forward += 1
        if timing:
            self.timer.max_inflight = max(self.timer.max_inflight, len(self.inflight))
        self._note_versions()
        backward_due = self._holds(index - self.ahead)
        if not self.is_last:
            sent = output.detach()
            self.peers.announce(sent)
            # The activation goes down together with the receive of the gradient the backward needs.
            self._expected_gradient = torch.empty_like(sent) if backward_due else None
            recvs = [(self._expected_gradient, self.stage + 1)] if backward_due else []
            self.peers.exchange([(sent, self.stage + 1)], recvs)
        return backward_due

    def _backward(self, *, gradient_received: bool) -> None:
        entry = self.inflight.popleft()
        gradient = None
        if not self.is_last:
            if gradient_received:
                gradient = self._expected_gradient
            else:
                gradient = torch.empty(self.peers.sent_shape or entry.output.shape, device=self.device)
                self.peers.exchange([], [(gradient, self.stage + 1)])
        inputs = [*entry.weights, *([entry.received] if entry.received is not None else [])]
        timing = self.timer.recording
        if timing:
            self.timer.backward_span.start()
        outputs_gradient = [gradient] if gradient is not None else None
        with self.parts.part("backward"):
            grads = torch.autograd.grad([entry.output], inputs, grad_outputs=outputs_gradient, allow_unused=True)
        if timing:
            self.timer.backward_span.stop()
        if entry.received is not None:
            assert grads[-1] is not None
            self._owed_upstream.append((grads[-1], self.stage - 1))
        n = len(entry.weights)
        weight_grads = [
            g if g is not None else torch.zeros_like(w) for g, w in zip(grads[:n], entry.weights, strict=True)
        ]
        del grads
        self._apply(entry, weight_grads)

    def _apply(self, entry: _InFlight, grads: list[torch.Tensor]) -> None:
        if self.schedule == "pipedream":
            self._update(entry, (entry.index,), grads)
            return
        if self._accumulated is None:
            self._accumulated = grads
        else:
            for acc, g in zip(self._accumulated, grads, strict=True):
                acc.add_(g)
        if entry.index % self.microbatches == self.microbatches - 1:  # the step's last micro-batch
            first = entry.index - self.microbatches + 1
            accumulated, self._accumulated = self._accumulated, None
            self._update(entry, tuple(range(first, entry.index + 1)), accumulated)

    def _update(self, entry: _InFlight, microbatches: tuple[int, ...], grads: list[torch.Tensor]) -> None:
        if self.replicas > 1:
            grads = self._average_over_replicas(grads)
        base = self.weights.newest
        self.stats.max_staleness = max(self.stats.max_staleness, base - entry.version)
        for observe in self.observers:  # before the update: it may overwrite the version they used
            observe(AppliedUpdate(microbatches, entry.version, entry.weights, grads, base))
        done = entry.version not in self._wanted()
        with self.parts.part("optimizer"):
            self.weights.update(grads, recycle=entry.version if done else None)
        self._note_versions()

    def _average_over_replicas(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        timing = self.timer.recording
        if timing:
            self.allreduce_span.start()
        flat = _flatten_dense_tensors(grads)  # one all-reduce per update, not one per tensor
        with self.parts.part("exposed_comm"):
            start = self.parts.now()
            dist.all_reduce(flat, group=self.dp_group)
            self.parts.communication(start, self.parts.now())
        flat.div_(self.replicas)
        if timing:
            self.allreduce_span.stop()
        return list(_unflatten_dense_tensors(flat, grads))

    def _wanted(self) -> set[int]:
        """Versions someone will still read: in-flight micro-batches' backwards, 2BW's next forwards."""
        wanted = {e.version for e in self.inflight}
        if self.schedule == "pipedream_2bw":
            wanted.add(self._version_for(self.next_forward))
        return wanted

    def _note_versions(self) -> None:
        """Drop versions nobody can use any more and record how many are held."""
        self.weights.keep_only(self._wanted())
        held = len(self.weights.versions)
        self.stats.peak_versions = max(self.stats.peak_versions, held)
        stashed = (held - 1) * self.weights.bytes_per_version
        self.stats.peak_stashed_bytes = max(self.stats.peak_stashed_bytes, stashed)

    def _take_owed(self) -> list[tuple[torch.Tensor, int]]:
        owed, self._owed_upstream = self._owed_upstream, []
        return owed

    def _post_owed(self) -> None:
        self.peers.exchange(self._take_owed(), [])

    # ---- phases ---------------------------------------------------------------------------------
    def drain(self) -> None:
        """Run the backwards still owed (oldest first) and apply their updates: no micro-batch in flight after.

        Every stage drains at the same point, so the gradients each one waits for are the ones
        its next stage sends while draining; 2BW completes the step in flight and applies it.
        """
        while self.inflight:
            self._backward(gradient_received=False)
            self._post_owed()
        self.peers.wait_all()

    def reset_stats(self) -> None:
        self.stats = VersionStats(len(self.weights.versions), 0, 0)
        self._note_versions()

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor | None) -> torch.Tensor | None:
        """Forward only, on the newest weights, in ``M`` micro-batches; the last stage returns the outputs."""
        self.drain()
        m = self.microbatches
        inputs = list(images.tensor_split(m)) if self.is_first and images is not None else [None] * m
        outputs = []
        for x in inputs:
            if not self.is_first:
                x = self.peers.activation_buffer()
                self.peers.exchange([], [(x, self.stage - 1)])
            with self.parts.part("forward"):
                output = self.module(x)
            if self.is_last:
                outputs.append(output)
            else:
                self.peers.announce(output)
                self.peers.exchange([(output, self.stage + 1)], [])
        self.peers.wait_all()
        return torch.cat(outputs) if self.is_last else None
