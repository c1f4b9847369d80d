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


# Values that reach the command line horovodrun runs over ssh on the other nodes.
REMOTE_SHELL_KEYS = ("ssh_identity_file",)


def check_safe(name: str, value: str | None, where: str = "Slurm options") -> None:
    if value is not None and not _SAFE_VALUE.match(str(value)):
        raise ConfigError(
            f"{name}={value!r}: only letters, digits and _.,:@%+=/-[] are allowed in {where} "
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


def _without_home(value: str | None) -> str | None:
    return value[2:] if isinstance(value, str) and value.startswith("~/") else value


def check_cluster(cluster: dict[str, Any]) -> list[str]:
    """Every shell-unsafe value of a cluster profile, as messages (empty when safe)."""
    problems = []
    values = [(key, cluster.get(key), "Slurm options") for key in SLURM_OPTION_KEYS]
    # A leading ~/ is the user's home on the node, as ssh itself reads it.
    values += [(key, _without_home(cluster.get(key)), "ssh options") for key in REMOTE_SHELL_KEYS]
    for key, value, where in values:
        try:
            check_safe(f"cluster.{key}", value, where)
        except ConfigError as err:
            problems.append(str(err))
    try:
        render_setup(list(cluster.get("setup") or []))
    except ConfigError as err:
        problems.append(str(err))
    return problems
