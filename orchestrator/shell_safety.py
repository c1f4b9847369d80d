"""User text that reaches a batch script or a command line must stay one value: never a command,
a line of its own or an option.

Three kinds of text get there, each with one rule:

- names (``cluster.partition``, ``account``, ``qos``, ``constraint``, ``gpu_type``,
  ``ssh_identity_file``): the whole value (``re.fullmatch``: ``$`` would let a final newline
  through) matches a plain pattern and does not start with ``-``; else the config is refused;
- setup lines: plain words on one line, each shell-quoted;
- paths (the sweep folder, the interpreter): any text without control characters or a
  backslash, quoted where it lands: :func:`shlex.quote` in shell lines, :func:`sbatch_quote` in
  ``#SBATCH`` lines, where sbatch expands ``%`` patterns in file names (``%%`` is a literal ``%``).

Nothing is silently changed: a value either renders to exactly itself or is refused with the reason.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

# Values that land in #SBATCH lines or in an argv: no spaces, quotes, %, # or shell metacharacters.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_.,:@+=/\-\[\]]+")
# A GPU type is the middle of `--gpus-per-node=TYPE:COUNT`: a ':' or ',' would change the request.
SAFE_GPU_TYPE = re.compile(r"[A-Za-z0-9_.\-]+")
# Setup lines are commands (module load …): words only, no ; | & $ ` < > or quotes.
_SAFE_WORD = re.compile(r"[A-Za-z0-9_.,:@%+=/\-]+")
# Control characters end a line (for bash or for sbatch's reading of #SBATCH lines) or hide text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# sbatch reads an #SBATCH line holding either word anywhere (any case) as the start of the next
# component of a heterogeneous job.
_HETJOB_WORD = re.compile(r"hetjob|packjob", re.IGNORECASE)
SLURM_OPTION_KEYS = ("partition", "account", "qos", "constraint")

# Values that reach the command line horovodrun runs over ssh on the other nodes.
REMOTE_SHELL_KEYS = ("ssh_identity_file",)


def check_safe(
    name: str, value: str | None, where: str = "Slurm options", pattern: re.Pattern[str] = _SAFE_VALUE
) -> None:
    """Refuse a name that is not entirely plain text, or that would read as an option."""
    if value is None:
        return
    text = str(value)
    if not pattern.fullmatch(text):
        allowed = "letters, digits and _.-" if pattern is SAFE_GPU_TYPE else "letters, digits and _.,:@+=/-[]"
        raise ConfigError(f"{name}={text!r}: only {allowed} are allowed in {where} (the value would reach a shell)")
    if text.startswith("-"):
        raise ConfigError(f"{name}={text!r}: may not start with '-' (it would read as an option in {where})")
    _check_hetjob_word(name, text)


def _check_hetjob_word(name: str, text: str) -> None:
    word = _HETJOB_WORD.search(text)
    if word:
        raise ConfigError(
            f"{name} {text!r} contains {word.group()!r}: sbatch reads an #SBATCH line holding that word as the "
            "start of a heterogeneous job; choose a value without it"
        )


def check_path(name: str, path: str | Path) -> None:
    """Refuse a path that cannot be written into a batch script as exactly itself.

    A control character (a newline above all) would end the line it is on; a backslash makes
    sbatch skip every ``%`` pattern of an ``--output`` path, so the logs would land elsewhere.
    """
    text = str(path)
    bad = _CONTROL.search(text)
    if bad:
        raise ConfigError(
            f"{name} {text!r} contains the control character {bad.group()!r}: it would split a line of the "
            "batch script; choose a path without control characters"
        )
    if "\\" in text:
        raise ConfigError(
            f"{name} {text!r} contains a backslash: sbatch would not expand the log file patterns of a path "
            "with one; choose a path without backslashes"
        )


def check_sweep_folder(root: str | Path, backends: Collection[str]) -> None:
    """Refuse, before anything is written, a sweep folder the backend cannot carry as itself.

    Any backend: no control characters (a folder name that holds a newline misleads every listing).
    Slurm also writes the folder into #SBATCH lines (see :func:`sbatch_filename`), and this
    interpreter's path into the script: both are checked here, at plan time.
    """
    bad = _CONTROL.search(str(root))
    if bad:
        raise ConfigError(
            f"sweep folder {str(root)!r} contains the control character {bad.group()!r}: "
            "choose a --sweep-dir without control characters"
        )
    if "slurm" in backends:
        check_path("sweep folder", root)
        _check_hetjob_word("sweep folder", str(root))
        check_path("python interpreter", sys.executable)


def sbatch_filename(folder: str | Path, pattern: str) -> str:
    """``folder/pattern`` as the value of ``#SBATCH --output``/``--error``: sbatch reads it back as
    that path, with only ``pattern``'s own ``%`` sequences (``%A_%a.out``) expanded.

    sbatch reads #SBATCH lines with its own rules (quotes, backslash escapes, ``#`` starts a
    comment), not bash's: double quotes with ``"`` escaped keep spaces, ``#``, ``$`` and quotes.
    Every ``%`` of ``folder`` is doubled: Slurm's file name expansion gives ``%%`` back as ``%``.
    """
    text = str(folder)
    check_path("folder", text)
    _check_hetjob_word("folder", text)
    literal = text.replace("%", "%%").replace('"', '\\"')
    return f'"{literal}/{pattern}"'


def render_setup(lines: list[str], name: str = "cluster.setup") -> str:
    """``lines`` as shell lines, every word quoted; ``name``: the key they came from, for the message."""
    rendered = []
    for line in lines:
        bad_char = _CONTROL.search(str(line))
        if bad_char:
            raise ConfigError(
                f"{name} line {line!r} contains the control character {bad_char.group()!r}: "
                "give each command as its own list entry"
            )
        words = str(line).split()
        bad = [w for w in words if not _SAFE_WORD.fullmatch(w)]
        if bad:
            raise ConfigError(
                f"{name} line {line!r}: {bad[0]!r} is not a plain word; setup lines are simple commands "
                "such as `module load CUDA/12.1.1` (no ; | & $ ` quotes or redirections)"
            )
        rendered.append(" ".join(shlex.quote(w) for w in words))
    return "\n".join(rendered)


def _without_home(value: str | None) -> str | None:
    return value[2:] if isinstance(value, str) and value.startswith("~/") else value


def check_cluster(cluster: dict[str, Any]) -> list[str]:
    """Every shell-unsafe value of a cluster profile, as messages (empty when safe)."""
    problems = []
    checks = [(key, cluster.get(key), "Slurm options", _SAFE_VALUE) for key in SLURM_OPTION_KEYS]
    checks.append(("gpu_type", cluster.get("gpu_type"), "the GPU request (--gpus-per-node=TYPE:N)", SAFE_GPU_TYPE))
    # A leading ~/ is the user's home on the node, as ssh itself reads it.
    checks += [(key, _without_home(cluster.get(key)), "ssh options", _SAFE_VALUE) for key in REMOTE_SHELL_KEYS]
    for key, value, where, pattern in checks:
        try:
            check_safe(f"cluster.{key}", value, where, pattern)
        except ConfigError as err:
            problems.append(str(err))
    try:
        render_setup(list(cluster.get("setup") or []))
    except ConfigError as err:
        problems.append(str(err))
    return problems
