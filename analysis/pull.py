"""Copy a sweep's dumps, ledger, tables and figures from a cluster (rsync over ssh).

Logs, scheduler scripts and anything else (checkpoints, datasets) stay behind unless
``include_logs``; then logs and error files come too, checkpoints still never do.

The two operands are user text that reaches rsync's and ssh's command lines, so neither may
read as an option: ``--`` ends rsync's options, an operand that starts with ``-`` is refused,
the host is checked as a host name (ssh would take ``-oProxyCommand=…`` as an option), the
destination is passed as an absolute local path, and ``-s`` (``--secluded-args``) sends the
remote path to the remote rsync itself, never through the remote shell.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from analysis.errors import AnalysisError
from jobs.layout import (
    CELL_FILE,
    CELLS_DIR,
    ERROR_FILE_GLOB,
    JOBS_DIR,
    LEDGER_FILE,
    MANIFEST_FILE,
    OUTCOME_FILE,
    RANK_DUMP_GLOB,
    RESULTS_DIR,
)

# rsync patterns of jobs.layout's names: what analysis reads, and (with --logs) what explains a failure.
ALWAYS = [MANIFEST_FILE, LEDGER_FILE, f"{CELLS_DIR}/*/{CELL_FILE}", RANK_DUMP_GLOB, OUTCOME_FILE, f"{RESULTS_DIR}/***"]
LOGS = ["*.log", ERROR_FILE_GLOB, f"{JOBS_DIR}/***"]

# USER@HOST:PATH or HOST:PATH, as rsync reads a remote-shell source (a ':' before any '/').
_REMOTE = re.compile(r"(?:(?P<user>[^@:/]*)@)?(?P<host>\[[^\]/]*\]|[^:/]*):(?P<path>.*)", re.DOTALL)
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
# A host name, an ssh config alias, an IPv4 address or a bracketed IPv6 address.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*|\[[0-9A-Fa-f:.]+\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _refuse_option_like(name: str, value: str) -> None:
    if value.startswith("-"):
        raise AnalysisError(
            f"{name} {value!r} starts with '-': rsync would read it as an option; "
            "write a local folder of that name as ./NAME"
        )
    bad = _CONTROL.search(value)
    if bad:
        raise AnalysisError(f"{name} {value!r} contains the control character {bad.group()!r}")


def source_operand(remote: str) -> str:
    """The source as rsync must get it: ``[USER@]HOST:PATH/`` checked, or a local folder, absolute."""
    _refuse_option_like("source", remote)
    # rsync's daemon forms (no ssh): rsync://HOST/MODULE and HOST::MODULE (an IPv6 [::1] is a host).
    if remote.startswith("rsync://") or "::" in re.sub(r"\[[^\]]*\]", "", remote.split("/", 1)[0]):
        raise AnalysisError(f"source {remote!r}: pull copies over ssh; give USER@HOST:SWEEP_DIR or a local folder")
    local = Path(remote).expanduser()
    match = None if local.is_dir() else _REMOTE.fullmatch(remote)
    if match is None:
        if not local.is_dir():
            raise AnalysisError(f"source {remote!r} is neither USER@HOST:SWEEP_DIR nor an existing local folder")
        return str(local.resolve()) + "/"
    user, host, path = match.group("user"), match.group("host"), match.group("path")
    if user is not None and not _USER.fullmatch(user):
        raise AnalysisError(f"source {remote!r}: {user!r} is not a user name (letters, digits, _ . -)")
    if not _HOST.fullmatch(host):
        raise AnalysisError(f"source {remote!r}: {host!r} is not a host name (letters, digits, _ . -)")
    return remote if path.endswith("/") else remote + "/"


def rsync_command(remote: str, dest: str, include_logs: bool = False) -> list[str]:
    """The rsync argv: directories are walked, only the listed files are copied."""
    patterns = ALWAYS + (LOGS if include_logs else [])
    source = source_operand(remote)
    _refuse_option_like("destination", dest)
    # Absolute: a destination with a ':' (``backup:1``) stays a local folder, never a host.
    target = str(Path(dest).expanduser().resolve()) + "/"
    return [
        "rsync",
        "-a",
        "-s",  # --secluded-args (formerly --protect-args): the remote path never meets a shell
        "--prune-empty-dirs",
        "--info=stats1",
        "-e",
        "ssh",
        "--include=*/",
        *[f"--include={p}" for p in patterns],
        "--exclude=*",
        "--",
        source,
        target,
    ]


def pull(remote: str, dest: str, include_logs: bool = False) -> int:
    if shutil.which("rsync") is None:
        raise AnalysisError("rsync is not installed here (apt install rsync / brew install rsync)")
    argv = rsync_command(remote, dest, include_logs)  # checked before anything is created
    Path(dest).expanduser().mkdir(parents=True, exist_ok=True)
    result = subprocess.run(argv, check=False)
    if result.returncode != 0:
        raise AnalysisError(f"rsync from {remote} failed with exit code {result.returncode}")
    return 0
