"""The SHAPE of a rank dump, declared once: field names, types, which may be null, bounds.

:func:`decode_dump` parses a dump's bytes straight into these structs with msgspec, so every
type and bound below is checked while parsing, in C, before any Python runs; msgspec also
refuses ``NaN``, ``Infinity`` and a float literal that overflows, anywhere in the text. A dump
that decodes is therefore of the right shape, and only the MEANING checks (jobs/schema/meaning.py:
throughput = samples ÷ seconds, what the config can produce, memory within limits, the
environment hash) are left to Python, reading the decoded dict (the analysis reads dicts).

A dump that does not decode takes the slower, older road: ``json.loads`` and the field checker of
jobs/schema/fields.py, which names every reason in the words docs/metrics.md and the damage tests
use. Damaged dumps are rare, so the reasons are never built from msgspec's error text: the structs
are a fast path that must never accept what the field checker refuses (each struct is at least as
strict as its spec in fields.py; tests/test_schema_structs.py holds them to it), and may refuse
more (a bound the meaning checks also name) at the cost of the slower road only.

Unknown fields are ignored, as the field checker ignores them (a newer writer may add one).
Free-form sections stay ``dict`` here and keep their Python checks: ``config``, ``environment``,
``extra``, ``energy``, and the rarer ``pipeline``, ``communication`` and ``breakdown`` sections
(their rules, in pipeline_section.py and communication.py, read them as dicts).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import structs

from jobs.schema.fields import SCHEMA_NAME, SCHEMA_VERSION

# Beyond int64 no count, size or time is real (fields.py _INT_LIMIT); such a number takes the slow road,
# whose finite walk names it.
Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Section = dict[str, Any]


class Memory(msgspec.Struct):
    """``phases.<name>.memory``: the allocator's peaks (CUDA) or the process's RSS, in bytes."""

    kind: str
    peak_allocated_bytes: Count | None = None
    peak_reserved_bytes: Count | None = None
    peak_rss_bytes: Count | None = None
    end_rss_bytes: Count | None = None
    peak_is_per_phase: bool | None = None  # whether the RSS peak could be reset for this phase (docs/metrics.md)


class Phase(msgspec.Struct):
    """One phase (``train`` or ``val``) of one rank."""

    timed_steps: Count
    warmup_steps: Count
    samples: Count
    seconds: Seconds
    throughput_samples_per_s: float
    step_times_s: list[Seconds]
    memory: Memory
    loss: float | None = None
    accuracy: float | None = None
    correct: Int | None = None
    evaluated: Int | None = None
    energy: Section | None = None
    breakdown: Section | None = None


class Phases(msgspec.Struct):
    train: Phase
    val: Phase


class ModelState(msgspec.Struct):
    """Bytes this rank owns of the model at the end of training (jobs/model_state.py)."""

    parameter_bytes: Count
    gradient_bytes: Count
    optimizer_state_bytes: Count


class Dump(msgspec.Struct):
    """One rank's dump, ``rank_<N>.json`` (docs/metrics.md describes each field)."""

    schema: Literal["dnnbench.metrics"]
    schema_version: Literal[1]
    cell_id: str
    attempt: Int
    repeat: Int
    rank: Count
    local_rank: Int
    world_size: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    node_rank: Int
    framework: str
    model: str
    dataset: str
    device_type: str
    memory_kind: str
    counts_samples: bool
    config: Section
    phases: Phases
    environment: Section
    environment_hash: str
    started_at: str
    finished_at: str
    pipeline: Section | None = None
    extra: Section | None = None
    model_state: ModelState | None = None
    communication: Section | None = None


# The Literal types above spell the name and version out: they must be the ones fields.py declares.
if (SCHEMA_NAME, SCHEMA_VERSION) != ("dnnbench.metrics", 1):
    raise ImportError("jobs/schema/structs.py: update Dump.schema and Dump.schema_version to fields.py's")

_DECODER = msgspec.json.Decoder(Dump)
_DICT_DECODER = msgspec.json.Decoder()
DecodeFailure = (msgspec.DecodeError, msgspec.ValidationError)


def decode_dump(raw: bytes) -> Dump:
    """``raw`` parsed and shape-checked into a :class:`Dump`; raises one of :data:`DecodeFailure`."""
    return _DECODER.decode(raw)


def as_document(dump: Dump) -> dict[str, Any]:
    """``dump`` as the plain dicts the meaning checks and the analysis read, made without parsing again or
    copying a list or a section: the dicts hold the decoded values themselves. A field the text lacked holds
    the struct's default (null), as :func:`jobs.schema.fields.nulls_filled` would fill it; a field the
    structs do not declare (a newer writer's) is not there, as no reader of this version reads it."""
    doc = structs.asdict(dump)
    phases = dump.phases
    doc["phases"] = {"train": _phase_document(phases.train), "val": _phase_document(phases.val)}
    if dump.model_state is not None:
        doc["model_state"] = structs.asdict(dump.model_state)
    return doc


def _phase_document(phase: Phase) -> dict[str, Any]:
    doc = structs.asdict(phase)
    doc["memory"] = structs.asdict(phase.memory)
    return doc


def decode_document(raw: bytes) -> Any:
    """``raw`` as plain dicts and lists (what the meaning checks and the analysis read); raises as above."""
    return _DICT_DECODER.decode(raw)
