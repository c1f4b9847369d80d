"""Named environments: where their definitions live, what a definition may hold, and how a cell
runs in one (docs/environments.md).

A cell's ``env`` section (conf/structured.py ``EnvConfig``) names the interpreter, the setup lines,
the variables and the container its launcher runs with. The same section is applied by the runner
on every node (locally and inside a Slurm array task), so cells of one array may each run in
another environment. Definitions come from ``conf/env/`` and from the user environment folder
(:func:`user_env_dir`), which ``dnnbench env create`` writes and Hydra searches.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.shell_safety import check_path, check_safe, render_setup

ENV_DIR_VARIABLE = "DNNBENCH_ENV_DIR"
DEFAULT_ENV_DIR = Path("~/.local/share/dnnbench/envs")
# The group folder Hydra finds under the user folder (<dir>/env/<name>.yaml), and each environment's files.
GROUP = "env"
DATA = "data"
LOCK_FILE = "lock.json"
# A variable name as the shell and `env` accept it.
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An environment's name: a file name of the env group, and a word of the results table.
ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The wrapper that runs an environment's setup lines, then replaces itself by the launcher (its "$@").
SETUP_WRAPPER_NAME = "dnnbench-env"


def user_env_dir() -> Path:
    """The folder of user environments: ``$DNNBENCH_ENV_DIR``, else ~/.local/share/dnnbench/envs."""
    configured = os.environ.get(ENV_DIR_VARIABLE)
    return Path(configured).expanduser() if configured else DEFAULT_ENV_DIR.expanduser()


def search_path_override() -> list[str]:
    """The Hydra override that adds the user folder to the search path (none while it does not exist)."""
    folder = user_env_dir()
    if not (folder / GROUP).is_dir():
        return []
    return [f"hydra.searchpath=[file://{folder.resolve()}]"]


def definition_path(name: str) -> Path:
    return user_env_dir() / GROUP / f"{name}.yaml"


def data_dir(name: str) -> Path:
    """Where ``env create`` puts an environment's venv and lock (beside, not inside, the group folder)."""
    return user_env_dir() / DATA / name


def interpreter(env: dict[str, Any]) -> str:
    """The Python the cell's launcher runs: dnnbench's own, an interpreter, or a prefix's bin/python."""
    python = env.get("python")
    if not python:
        return sys.executable
    path = Path(str(python)).expanduser()
    return str(path / "bin" / "python") if path.is_dir() else str(path)


def rank_variables(env: dict[str, Any]) -> dict[str, str]:
    """The variables the environment sets for every rank (checked to be strings at plan time), and
    the image it was declared to run in (orchestrator/containers.py CONTAINER_VARIABLE)."""
    variables = {str(k): str(v) for k, v in (env.get("variables") or {}).items()}
    if env.get("container"):
        from orchestrator.containers import CONTAINER_VARIABLE, container_label

        variables[CONTAINER_VARIABLE] = container_label(str(env["runtime"]), str(env["container"]))
    return variables


def setup_wrapped(env: dict[str, Any], argv: list[str]) -> list[str]:
    """``argv`` inside the container the environment names, after its setup lines.

    The setup lines run in a ``bash -c`` that then ``exec``s the launcher, so modules loaded and
    files sourced there reach the launcher and its ranks; the launcher's words stay its own
    arguments (``"$@"``), never parsed by that shell.
    """
    inner = list(argv)
    if env.get("container"):
        from orchestrator import containers  # rendered per runtime there

        inner = containers.container_argv(env["runtime"], env["container"], list(env.get("mounts") or []), inner)
    setup = list(env.get("setup") or [])
    if not setup:
        return inner
    # set -e: a setup line that fails (a module not found) fails the cell instead of running it elsewhere.
    script = "set -e\n" + render_setup(setup, name="env.setup") + '\nexec "$@"'
    return ["bash", "-c", script, SETUP_WRAPPER_NAME, *inner]


def describe_command(argv: list[str]) -> str:
    """One shell line that runs ``argv`` (for the launcher log: what exactly ran)."""
    return " ".join(shlex.quote(word) for word in argv)


def environment_problems(config: dict[str, Any]) -> list[str]:
    """Why a cell's ``env`` section cannot run as written, as messages (empty when it can)."""
    env = config.get("env") or {}
    problems: list[str] = []
    name = str(env.get("name", ""))
    if not ENV_NAME.fullmatch(name):
        problems.append(f"env.name={name!r}: letters, digits and _.- only, starting with a letter or digit")
    problems += _python_problems(env, local=config.get("cluster", {}).get("backend") == "local")
    problems += _variable_problems(env.get("variables") or {})
    problems += _container_problems(env)
    try:
        render_setup(list(env.get("setup") or []), name="env.setup")
    except ConfigError as err:
        problems.append(str(err))
    lock = env.get("lock")
    if lock and not Path(str(lock)).expanduser().is_file() and config.get("cluster", {}).get("backend") == "local":
        problems.append(f"env.lock={lock}: no such file (rerun `dnnbench env create {name}`)")
    return problems


def _python_problems(env: dict[str, Any], *, local: bool) -> list[str]:
    python = env.get("python")
    if not python:
        return []
    try:
        check_path("env.python", str(python))
    except ConfigError as err:
        return [str(err)]
    path = Path(interpreter(env))
    if not Path(str(python)).expanduser().is_absolute():
        return [f"env.python={python}: give an absolute path (the cell runs from another folder)"]
    if local and not path.is_file():
        return [f"env.python={python}: {path} does not exist here"]
    return []


def _variable_problems(variables: dict[str, Any]) -> list[str]:
    problems = []
    for key, value in variables.items():
        if not _VARIABLE_NAME.fullmatch(str(key)):
            problems.append(f"env.variables.{key}: not a variable name (letters, digits and _, not first a digit)")
        elif not isinstance(value, str):
            problems.append(
                f"env.variables.{key}={value!r}: a {type(value).__name__}, not a string; quote it "
                f'({key}: "{value}") so the rank gets exactly that text'
            )
        elif _CONTROL.search(value):
            problems.append(f"env.variables.{key}={value!r}: holds a control character (a newline would split "
                            "the line that sets it)")  # fmt: skip
    return problems


def _container_problems(env: dict[str, Any]) -> list[str]:
    from conf.structured import CONTAINER_RUNTIMES

    image, runtime = env.get("container"), env.get("runtime")
    if runtime is not None and runtime not in CONTAINER_RUNTIMES:
        return [f"env.runtime={runtime}: expected one of {', '.join(CONTAINER_RUNTIMES)} or null"]
    if image and runtime is None:
        return [f"env.container={image} without env.runtime: set env.runtime to one of {', '.join(CONTAINER_RUNTIMES)}"]
    if runtime is not None and not image:
        return [f"env.runtime={runtime} without env.container: name the image"]
    if runtime is None:
        return []
    if runtime == "pyxis":
        # pyxis is srun's options, and one array's srun line serves cells of every environment.
        return ["env.runtime=pyxis: a per-cell pyxis container is not supported yet (it is an option of the "
                "array's srun, shared by its cells); use apptainer or charliecloud"]  # fmt: skip
    problems = []
    mounts = [(f"env.mounts[{i}]", mount) for i, mount in enumerate(env.get("mounts") or [])]
    for key, value in [("env.container", image), *mounts]:
        try:
            check_safe(key, value, "the container command line")
        except ConfigError as err:
            problems.append(str(err))
    from orchestrator.containers import container_problems  # the runtime's own rules (mount forms)

    problems += [f"env: {p}" for p in container_problems(runtime, image, list(env.get("mounts") or []), "local")]
    return problems
