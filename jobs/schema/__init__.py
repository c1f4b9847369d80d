"""The metrics schema: the only contract between ``jobs/`` (writers) and ``analysis/`` (readers).

Every rank of every cell writes one JSON document of this shape (``rank_<N>.json``).
Readers call :func:`validate` and get a list of reasons, never an exception, so a
corrupt dump is reported, not fatal. Validation checks meaning as well as types: every
number finite, times positive, samples and predictions that the dump's config can
produce, throughput equal to samples / seconds (docs/metrics.md lists the rules).
:func:`check_against_cell` compares a dump with its cell's ``cell.json``, and
:func:`read_attempt` / :func:`validate_attempt` judge a whole attempt folder: what the
runner, the reader and ``status`` all use. Bump :data:`SCHEMA_VERSION` on any change a
reader of the previous version would misread; docs/metrics.md describes each field.

One job per module: ``fields`` (names, types, limits, the field checker), ``structs`` (the
dump's shape as msgspec structs, checked while parsing), ``config_migration`` (config keys
added since the first dumps), ``environment_hash``, ``numbers`` (the finite walk), ``shape``
(what a config can produce), ``pipeline_section``, ``communication`` (the breakdown and
communication sections), ``meaning`` (:func:`validate`), ``attempts`` and ``files``. Every
name is re-exported here: callers import from ``jobs.schema``.

The standard library and msgspec only, on purpose: the laptop install (``.[analysis]``)
imports it without torch.
"""

from __future__ import annotations

# The standard modules the single-file schema imported stay attributes of the package (tests read
# schema.hashlib to recompute an old version's hash).
import errno  # noqa: F401
import hashlib  # noqa: F401
import json  # noqa: F401
import math  # noqa: F401
import os  # noqa: F401
import re  # noqa: F401
import stat  # noqa: F401
import tempfile  # noqa: F401

from jobs.schema.attempts import _cell_reasons as _cell_reasons
from jobs.schema.attempts import _differences as _differences
from jobs.schema.attempts import check_against_cell as check_against_cell
from jobs.schema.attempts import check_ranks as check_ranks
from jobs.schema.attempts import load as load
from jobs.schema.attempts import read_attempt as read_attempt
from jobs.schema.attempts import validate_attempt as validate_attempt
from jobs.schema.communication import _BREAKDOWN as _BREAKDOWN
from jobs.schema.communication import _COLLECTIVE as _COLLECTIVE
from jobs.schema.communication import _COMMUNICATION as _COMMUNICATION
from jobs.schema.communication import _PARTS_SUM_ABSOLUTE_S as _PARTS_SUM_ABSOLUTE_S
from jobs.schema.communication import _PARTS_SUM_RELATIVE as _PARTS_SUM_RELATIVE
from jobs.schema.communication import _PROBE as _PROBE
from jobs.schema.communication import _PROBE_SIZE as _PROBE_SIZE
from jobs.schema.communication import BREAKDOWN_CLOCKS as BREAKDOWN_CLOCKS
from jobs.schema.communication import BREAKDOWN_PARTS as BREAKDOWN_PARTS
from jobs.schema.communication import COLLECTIVES as COLLECTIVES
from jobs.schema.communication import COMMUNICATION_TIMED_IN as COMMUNICATION_TIMED_IN
from jobs.schema.communication import PROBE_SCOPES as PROBE_SCOPES
from jobs.schema.communication import _breakdown_reasons as _breakdown_reasons
from jobs.schema.communication import _collective_reasons as _collective_reasons
from jobs.schema.communication import _comm_time_reasons as _comm_time_reasons
from jobs.schema.communication import _communication_reasons as _communication_reasons
from jobs.schema.communication import _non_negative_numbers as _non_negative_numbers
from jobs.schema.communication import _probe_reasons as _probe_reasons
from jobs.schema.communication import _probe_size_reasons as _probe_size_reasons
from jobs.schema.communication import bytes_moved as bytes_moved
from jobs.schema.communication import collective_factor as collective_factor
from jobs.schema.communication import communication_bound_s as communication_bound_s
from jobs.schema.config_migration import ADDED_CONFIG_DEFAULTS as ADDED_CONFIG_DEFAULTS
from jobs.schema.config_migration import _parent_copied as _parent_copied
from jobs.schema.config_migration import with_added_defaults as with_added_defaults
from jobs.schema.config_migration import without_added_defaults as without_added_defaults
from jobs.schema.environment_hash import ADDED_COMPARABLE_KEYS as ADDED_COMPARABLE_KEYS
from jobs.schema.environment_hash import ADDED_ENVIRONMENT_DEFAULTS as ADDED_ENVIRONMENT_DEFAULTS
from jobs.schema.environment_hash import COMPARABLE_KEYS as COMPARABLE_KEYS
from jobs.schema.environment_hash import ENVIRONMENT_REQUIRED as ENVIRONMENT_REQUIRED
from jobs.schema.environment_hash import HASHED_SINCE_ADDED as HASHED_SINCE_ADDED
from jobs.schema.environment_hash import _hash_of as _hash_of
from jobs.schema.environment_hash import environment_hash as environment_hash
from jobs.schema.environment_hash import environment_hashes as environment_hashes
from jobs.schema.environment_hash import environment_reasons as environment_reasons
from jobs.schema.environment_hash import with_environment_defaults as with_environment_defaults
from jobs.schema.fields import _ABSENT as _ABSENT
from jobs.schema.fields import _FLOATS as _FLOATS
from jobs.schema.fields import _INT_LIMIT as _INT_LIMIT
from jobs.schema.fields import _LISTED as _LISTED
from jobs.schema.fields import _MEMORY as _MEMORY
from jobs.schema.fields import _MODEL_STATE as _MODEL_STATE
from jobs.schema.fields import _NUM as _NUM
from jobs.schema.fields import _NUMBER_TYPES as _NUMBER_TYPES
from jobs.schema.fields import _PHASE as _PHASE
from jobs.schema.fields import _RATIO_TOLERANCE as _RATIO_TOLERANCE
from jobs.schema.fields import _REPLICA_PER_RANK as _REPLICA_PER_RANK
from jobs.schema.fields import _STEP_SUM_ABSOLUTE_S as _STEP_SUM_ABSOLUTE_S
from jobs.schema.fields import _STEP_SUM_RELATIVE as _STEP_SUM_RELATIVE
from jobs.schema.fields import _TOP_LEVEL as _TOP_LEVEL
from jobs.schema.fields import DEVICE_MEMORY_KEY as DEVICE_MEMORY_KEY
from jobs.schema.fields import DEVICE_MEMORY_LIMIT_BYTES as DEVICE_MEMORY_LIMIT_BYTES
from jobs.schema.fields import DEVICE_TYPES as DEVICE_TYPES
from jobs.schema.fields import MAX_JSON_BYTES as MAX_JSON_BYTES
from jobs.schema.fields import MEMORY_KIND_OF_DEVICE as MEMORY_KIND_OF_DEVICE
from jobs.schema.fields import MEMORY_KINDS as MEMORY_KINDS
from jobs.schema.fields import MODEL_STATE_FIELDS as MODEL_STATE_FIELDS
from jobs.schema.fields import NODE_MEMORY_KEY as NODE_MEMORY_KEY
from jobs.schema.fields import NODE_MEMORY_LIMIT_BYTES as NODE_MEMORY_LIMIT_BYTES
from jobs.schema.fields import PHASES as PHASES
from jobs.schema.fields import SCHEMA_NAME as SCHEMA_NAME
from jobs.schema.fields import SCHEMA_VERSION as SCHEMA_VERSION
from jobs.schema.fields import SchemaError as SchemaError
from jobs.schema.fields import _check_fields as _check_fields
from jobs.schema.fields import _names as _names
from jobs.schema.fields import exactly_equal as exactly_equal
from jobs.schema.fields import nulls_filled as nulls_filled
from jobs.schema.files import _NOT_REGULAR as _NOT_REGULAR
from jobs.schema.files import DumpText as DumpText
from jobs.schema.files import NotRegularFileError as NotRegularFileError
from jobs.schema.files import _read_json_text as _read_json_text
from jobs.schema.files import dump_filename as dump_filename
from jobs.schema.files import error_filename as error_filename
from jobs.schema.files import new_dump as new_dump
from jobs.schema.files import open_regular as open_regular
from jobs.schema.files import read_bytes as read_bytes
from jobs.schema.files import read_dump as read_dump
from jobs.schema.files import read_json as read_json
from jobs.schema.files import write_atomic as write_atomic
from jobs.schema.meaning import _ALLOCATOR_FIELDS as _ALLOCATOR_FIELDS
from jobs.schema.meaning import _PREDICTION_FIELDS as _PREDICTION_FIELDS
from jobs.schema.meaning import _RSS_FIELDS as _RSS_FIELDS
from jobs.schema.meaning import _SAMPLE_FIELDS as _SAMPLE_FIELDS
from jobs.schema.meaning import _TIME_FIELDS as _TIME_FIELDS
from jobs.schema.meaning import _check_phase as _check_phase
from jobs.schema.meaning import _device_reasons as _device_reasons
from jobs.schema.meaning import _field_of as _field_of
from jobs.schema.meaning import _memory_limits as _memory_limits
from jobs.schema.meaning import _memory_reasons as _memory_reasons
from jobs.schema.meaning import _model_state_reasons as _model_state_reasons
from jobs.schema.meaning import _phase_meaning as _phase_meaning
from jobs.schema.meaning import _prediction_reasons as _prediction_reasons
from jobs.schema.meaning import _sample_reasons as _sample_reasons
from jobs.schema.meaning import _time_reasons as _time_reasons
from jobs.schema.meaning import _val_bounds as _val_bounds
from jobs.schema.meaning import validate as validate
from jobs.schema.numbers import _ODD_NUMBER_TEXT as _ODD_NUMBER_TEXT
from jobs.schema.numbers import _all_finite as _all_finite
from jobs.schema.numbers import _collect_non_finite as _collect_non_finite
from jobs.schema.numbers import _non_finite_reasons as _non_finite_reasons
from jobs.schema.numbers import non_finite as non_finite
from jobs.schema.numbers import text_may_hold_big_ints as text_may_hold_big_ints
from jobs.schema.numbers import text_may_hold_odd_numbers as text_may_hold_odd_numbers
from jobs.schema.pipeline_section import _NON_NEGATIVE_ENDINGS as _NON_NEGATIVE_ENDINGS
from jobs.schema.pipeline_section import _PIPELINE as _PIPELINE
from jobs.schema.pipeline_section import _PIPELINE_MEASURED as _PIPELINE_MEASURED
from jobs.schema.pipeline_section import _PIPELINE_PREDICTED as _PIPELINE_PREDICTED
from jobs.schema.pipeline_section import _PIPELINE_SHARED as _PIPELINE_SHARED
from jobs.schema.pipeline_section import _PIPELINE_STAGE as _PIPELINE_STAGE
from jobs.schema.pipeline_section import _POSITIVE_ENDINGS as _POSITIVE_ENDINGS
from jobs.schema.pipeline_section import PLAN_SOURCES as PLAN_SOURCES
from jobs.schema.pipeline_section import _pipeline_config_reasons as _pipeline_config_reasons
from jobs.schema.pipeline_section import _pipeline_number_reasons as _pipeline_number_reasons
from jobs.schema.pipeline_section import _pipeline_rank_reasons as _pipeline_rank_reasons
from jobs.schema.pipeline_section import _pipeline_reasons as _pipeline_reasons
from jobs.schema.pipeline_section import _pipeline_shape_reasons as _pipeline_shape_reasons
from jobs.schema.pipeline_section import _pipeline_stage_reasons as _pipeline_stage_reasons
from jobs.schema.pipeline_section import _pipeline_types as _pipeline_types
from jobs.schema.shape import _at as _at
from jobs.schema.shape import _fixed_shape as _fixed_shape
from jobs.schema.shape import _positive_int as _positive_int
from jobs.schema.shape import _requested as _requested
from jobs.schema.shape import _Shape as _Shape
from jobs.schema.shape import _shape as _shape
from jobs.schema.shape import _shown as _shown
from jobs.schema.shape import _split_size as _split_size
from jobs.schema.shape import _step_reasons as _step_reasons
from jobs.schema.shape import _train_steps as _train_steps
from jobs.schema.shape import _val_size as _val_size
from jobs.schema.shape import data_replicas as data_replicas
from jobs.schema.shape import dump_replicas as dump_replicas
from jobs.schema.shape import val_counts as val_counts
from jobs.schema.shape import value_at as value_at
from jobs.schema.shape import world_size_of as world_size_of
from jobs.schema.structs import DecodeFailure as DecodeFailure
from jobs.schema.structs import Dump as Dump
from jobs.schema.structs import decode_document as decode_document
from jobs.schema.structs import decode_dump as decode_dump
