"""Container runtimes: the command line that runs a cell's launcher inside an image.

An environment may name an image (``container``) and the runtime that opens it (``runtime``):

- ``apptainer``: a prefix, ``apptainer exec --nv [--bind SRC:DST]… IMAGE inner…``;
- ``charliecloud``: a prefix, ``ch-run [-b SRC:DST]… IMAGE -- inner…``; ch-run keeps the
  caller's environment (only ``--unset-env`` removes variables), so the rank variables reach the
  ranks as they do without a container;
- ``pyxis``: not a prefix but options of ``srun`` itself (``--container-image``,
  ``--container-mounts``), so it exists only where srun starts the task (the slurm backend).

Every runtime also gets :data:`CONTAINER_VARIABLE` set to ``RUNTIME:IMAGE`` by the caller, so each
rank's fingerprint can say which image it was declared to run in beside what it saw itself.
Mounts are ``SRC`` or ``SRC:DST`` with absolute paths: the three runtimes agree on that form
only, and a ``,`` separates mounts in pyxis's and apptainer's lists, so neither may hold one.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from conf.structured import CONTAINER_RUNTIMES, ContainerRuntime
from jobs.environment import CONTAINER_VARIABLE
from orchestrator.errors import ConfigError
from orchestrator.shell_safety import check_path

# Declared once, with the config's allowed values (conf/structured.py).
Runtime = ContainerRuntime
RUNTIMES: tuple[str, ...] = CONTAINER_RUNTIMES
# The executable each runtime needs on the node (pyxis is a plugin of srun).
RUNTIME_EXECUTABLES: dict[str, str] = {"apptainer": "apptainer", "charliecloud": "ch-run", "pyxis": "srun"}
# Backends whose tasks srun starts: pyxis options exist only there.
_SRUN_BACKENDS = ("slurm",)


def container_problems(runtime: str | None, image: str | None, mounts: Sequence[str] | None, backend: str) -> list[str]:
    """Every reason the container part of an environment cannot run on ``backend``, as messages."""
    if runtime is None and image is None:
        return []
    problems: list[str] = []
    if runtime not in RUNTIMES:
        problems.append(f"container runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    elif runtime == "pyxis" and backend not in _SRUN_BACKENDS:
        problems.append(
            f"runtime pyxis runs a container through srun's options: it needs backend=slurm, not backend={backend}; "
            "use charliecloud or apptainer with this backend"
        )
    problems += _image_problems(image)
    if mounts is not None and (isinstance(mounts, str) or not isinstance(mounts, Sequence)):
        problems.append(f"container mounts {mounts!r}: give a list of SRC or SRC:DST paths")
        return problems
    for mount in mounts or []:
        problems += _mount_problems(mount)
    return problems


def _image_problems(image: str | None) -> list[str]:
    if image is None or not str(image).strip():
        return ["container image is empty: name an image (a path or a runtime's image reference)"]
    return _value_problems("container image", str(image))


def _value_problems(name: str, text: str) -> list[str]:
    try:
        check_path(name, text)
    except ConfigError as err:
        return [str(err)]
    if text.startswith("-"):
        return [f"{name} {text!r} may not start with '-' (the runtime would read it as an option)"]
    return []


def _mount_problems(mount: object) -> list[str]:
    if not isinstance(mount, str):
        return [f"container mount {mount!r}: give SRC or SRC:DST as text"]
    problems = _value_problems("container mount", mount)
    if problems:
        return problems
    if "," in mount:
        return [f"container mount {mount!r} contains ',': pyxis and apptainer split mount lists at ','"]
    parts = mount.split(":")
    if len(parts) > 2 or not all(parts):
        return [f"container mount {mount!r} is not SRC or SRC:DST (one ':' at most, both sides non-empty)"]
    relative = [part for part in parts if not part.startswith("/")]
    if relative:
        return [f"container mount {mount!r}: {relative[0]!r} is not an absolute path (a node's working folder varies)"]
    return []


def _checked(runtime: str, image: str, mounts: Sequence[str], backend: str) -> list[str]:
    """``mounts`` as SRC:DST pairs, or a ConfigError naming every problem."""
    problems = container_problems(runtime, image, mounts, backend)
    if problems:
        raise ConfigError("; ".join(problems))
    return [mount if ":" in mount else f"{mount}:{mount}" for mount in mounts]


def container_prefix(runtime: str, image: str, mounts: Sequence[str] = ()) -> list[str]:
    """The words before the command a container runs (charliecloud's end in ``--``)."""
    if runtime == "pyxis":
        raise ConfigError(
            "runtime pyxis is not a command prefix: it is srun's --container-image/--container-mounts "
            "(see pyxis_srun_options); it runs only where srun starts the task (backend=slurm)"
        )
    pairs = _checked(runtime, image, mounts, backend="local")
    if runtime == "apptainer":
        return ["apptainer", "exec", "--nv", *(f"--bind={pair}" for pair in pairs), image]
    return ["ch-run", *(f"--bind={pair}" for pair in pairs), image, "--"]


def container_argv(runtime: str, image: str, mounts: Sequence[str], inner_argv: Sequence[str]) -> list[str]:
    """``inner_argv`` run inside ``image`` by ``runtime`` (apptainer or charliecloud)."""
    if not inner_argv:
        raise ConfigError("a container command needs the command to run inside it")
    return [*container_prefix(runtime, image, mounts), *inner_argv]


def pyxis_srun_options(image: str, mounts: Sequence[str] = ()) -> list[str]:
    """srun's options that make pyxis start the task inside ``image``."""
    pairs = _checked("pyxis", image, mounts, backend="slurm")
    options = [f"--container-image={image}"]
    if pairs:
        options.append(f"--container-mounts={','.join(pairs)}")
    return options


def container_launch_problems(
    runtime: str, image: str, mounts: Sequence[str] = (), which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """Why the container cannot start on this node, checked there just before the launcher.

    Without this a missing runtime is a shell's "command not found" in the launcher log, and an
    image without a mount point or an ``/etc/hosts`` fails only once the ranks start, or after
    torchrun's rendezvous has waited minutes for a ``localhost`` that does not resolve.
    """
    executable = RUNTIME_EXECUTABLES.get(runtime)
    if executable is None:
        return [f"container runtime {runtime!r} is not one of {', '.join(RUNTIMES)}"]
    if runtime == "pyxis":
        return []  # srun started this task inside the image already: nothing to start here
    if which(executable) is None:
        return [f"container runtime {runtime}: {executable} not found on this node ({_node_name()}, PATH={_path()})"]
    if runtime == "charliecloud" and Path(image).is_dir():
        return _directory_image_problems(Path(image), _checked(runtime, image, mounts, backend="local"))
    if "://" not in image and "/" in image and not Path(image).exists():
        return [f"container image {image}: no such file or folder on this node ({_node_name()})"]
    return []


def environment_container_variables(env: Mapping[str, Any]) -> dict[str, str]:
    """:func:`container_variables` of a cell's ``env`` section (none without a container)."""
    if not env.get("container"):
        return {}
    return container_variables(str(env.get("runtime")), str(env["container"]))


def node_container_problems(env: Mapping[str, Any]) -> list[str]:
    """:func:`container_launch_problems` of a cell's ``env`` section (none without a container)."""
    if not env.get("container"):
        return []
    return container_launch_problems(str(env.get("runtime")), str(env["container"]), list(env.get("mounts") or []))


def _directory_image_problems(image: Path, pairs: Sequence[str]) -> list[str]:
    """ch-run mounts a directory image read-only: each bind destination and the files it binds over
    (/etc/hosts, /etc/resolv.conf) must be in the image already."""
    problems = []
    for pair in pairs:
        destination = pair.split(":", 1)[1]
        if not (image / destination.lstrip("/")).is_dir():
            problems.append(
                f"container image {image} has no folder {destination} to bind {pair.split(':', 1)[0]} on: "
                f"add it (scripts/container-image.sh {image} --mount-point {destination})"
            )
    for needed in ("etc/hosts", "etc/resolv.conf"):
        if not (image / needed).is_file():
            problems.append(
                f"container image {image} has no /{needed}: ch-run binds the host's over it only where it exists, "
                "and without it localhost does not resolve inside (rerun scripts/container-image.sh on it)"
            )
    return problems


def _node_name() -> str:
    return os.uname().nodename


def _path() -> str:
    return os.environ.get("PATH", "")


def container_label(runtime: str, image: str) -> str:
    """The value of :data:`CONTAINER_VARIABLE`: which image, through which runtime."""
    return f"{runtime}:{image}"


def container_variables(runtime: str, image: str) -> dict[str, str]:
    """Variables for the launcher's environment: every runtime passes the caller's variables into
    the container (apptainer and ch-run by default, pyxis as srun does), so each rank records the
    image it was declared to run in beside what it saw itself (jobs.environment.container_identity)."""
    return {CONTAINER_VARIABLE: container_label(runtime, image)}


def render_for_script(runtime: str, image: str, mounts: Sequence[str] = ()) -> tuple[str, str]:
    """(srun options, command prefix) as shell text for a batch script's ``srun`` line.

    Each word is shell-quoted: bash reads back exactly the argv of :func:`pyxis_srun_options` or
    :func:`container_prefix`; the part a runtime does not use is empty.
    """
    if runtime == "pyxis":
        return shlex.join(pyxis_srun_options(image, mounts)), ""
    return "", shlex.join(container_prefix(runtime, image, mounts))
