"""Allowed values are Literal types (conf/structured.py, a framework's knobs in jobs/checks/): the plan accepts
each one and refuses any other by name."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from conf import structured
from jobs.checks import fsdp, horovod
from jobs.pipeline import bandwidth, planner
from orchestrator.config import compose, resolved, validate
from orchestrator.errors import ConfigError

# key -> (its Literal type, the overrides that make a cell read the key)
KEYS: dict[str, tuple[Any, list[str]]] = {
    "precision": (structured.PrecisionName, []),
    "device": (structured.DeviceName, []),
    "dataset.name": (structured.DatasetName, []),
    "horovod.compression": (horovod.HorovodCompression, ["framework=horovod"]),
    "fsdp.param_dtype": (fsdp.FsdpDtype, ["framework=fsdp", "gpus=2"]),
    "fsdp.reduce_dtype": (fsdp.FsdpDtype, ["framework=fsdp", "gpus=2"]),
    "fsdp.wrap": (fsdp.FsdpWrap, ["framework=fsdp", "gpus=2"]),
    "pipeline.schedule": (planner.PipelineSchedule, ["framework=pipeline", "gpus=2"]),
    "pipeline.bandwidth": (bandwidth.PipelineBandwidth, ["framework=pipeline", "gpus=2"]),
}


def _problems(overrides: list[str]) -> str:
    try:
        validate(resolved(compose(overrides)), check_data=False)
    except ConfigError as err:
        return str(err)
    return ""


@pytest.mark.parametrize("key", sorted(KEYS))
def test_each_allowed_value_passes_and_any_other_is_refused_naming_them_all(key):
    literal, overrides = KEYS[key]
    allowed = get_args(literal)
    for value in allowed:
        assert f"{key}={value}: expected" not in _problems([*overrides, f"{key}={value}"])
    refused = _problems([*overrides, f"{key}=bogus"])
    assert f"{key}=bogus: expected one of {', '.join(allowed)}" in refused
