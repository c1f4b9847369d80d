"""Values from configs that reach a shell (batch scripts) must not be able to run commands."""

from __future__ import annotations

import re
import shlex
from typing import Any

from orchestrator.errors import ConfigError

# Values that land in #SBATCH lines: no spaces, quotes or shell metacharacters.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:@%+=/\-\[\]]+$")
# Setup lines are commands (module load …): words only, no ; | & $ ` < > or quotes.
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.,:@%+=/\-]+$")
SLURM_OPTION_KEYS = ("partition", "account", "qos", "constraint")


def check_safe(name: str, value: str | None) -> None:
    if value is not None and not _SAFE_VALUE.match(str(value)):
        raise ConfigError(
            f"{name}={value!r}: only letters, digits and _.,:@%+=/-[] are allowed in Slurm options "
            "(the value would reach a shell)"
        )


def render_setup(lines: list[str]) -> str:
    rendered = []
    for line in lines:
        words = line.split()
        bad = [w for w in words if not _SAFE_WORD.match(w)]
        if bad:
            raise ConfigError(
                f"cluster.setup line {line!r}: {bad[0]!r} is not a plain word; setup lines are simple commands "
                "such as `module load CUDA/12.1.1` (no ; | & $ ` quotes or redirections)"
            )
        rendered.append(" ".join(shlex.quote(w) for w in words))
    return "\n".join(rendered)


def check_cluster(cluster: dict[str, Any]) -> list[str]:
    """Every shell-unsafe value of a cluster profile, as messages (empty when safe)."""
    problems = []
    for key in SLURM_OPTION_KEYS:
        try:
            check_safe(f"cluster.{key}", cluster.get(key))
        except ConfigError as err:
            problems.append(str(err))
    try:
        render_setup(list(cluster.get("setup") or []))
    except ConfigError as err:
        problems.append(str(err))
    return problems
