"""Plan-time knowledge of each framework: config checks and whether it can run here.

Reads the framework table (jobs/frameworks.py) and imports a framework's check module only when a
cell of that framework is checked, so the login node checks a sweep without torch distributed or
Horovod importable.
"""

from __future__ import annotations

from typing import Any

from jobs.frameworks import FRAMEWORKS, checks_of, framework
from jobs.frameworks import unavailable_reason as framework_unavailable
from jobs.launchers import LAUNCHERS
from jobs.registry import UnknownNameError

BACKENDS = ("auto", "gloo", "nccl", "mpi")


def check_framework(config: dict[str, Any]) -> list[str]:
    section = config["framework"]
    name = section["name"]
    try:
        row = framework(name)
    except UnknownNameError as err:
        return [str(err)]
    problems = []
    if section["launcher"] not in LAUNCHERS:
        # Another known launcher than the row's is allowed: it fails at run time as a launcher_error,
        # which is how the tests make a cell fail for real (a noop cell started by torchrun).
        problems.append(
            f"framework.launcher={section['launcher']}: expected one of {', '.join(LAUNCHERS.names())} "
            f"(framework {name} is started by {row.launcher})"
        )
    if section["backend"] not in BACKENDS:
        problems.append(f"framework.backend={section['backend']}: expected {', '.join(BACKENDS)}")
    checks = checks_of(name)
    return problems + (checks(config) if checks else [])


def unavailable_reason(config: dict[str, Any]) -> str | None:
    """Why this cell's framework cannot run with what is installed, or None."""
    name = config["framework"]["name"]
    return framework_unavailable(name) if name in FRAMEWORKS else None
