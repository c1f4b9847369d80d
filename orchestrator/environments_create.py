"""``dnnbench env create|list|show``: build a venv, write its definition and its lock.

``create`` builds ``<env dir>/data/NAME/venv``; ``--base current`` makes that venv see this
interpreter's site-packages through a ``.pth`` file and installs only the requested specs on top
(they shadow the base's). The lock (``<env dir>/data/NAME/lock.json``) is taken by the new
interpreter itself, with the environment's variables set (jobs/env_lock.py). The definition
(``<env dir>/env/NAME.yaml``) is written last: an environment half made is never found by
``env=NAME``, and an existing one is never replaced.
"""

from __future__ import annotations

import json
import os
import shlex
import site
import subprocess
import sys
import sysconfig
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from jobs.atomic import write_atomic_text
from jobs.schema import write_atomic
from orchestrator import environments as envs
from orchestrator.errors import ConfigError, DnnbenchError

CHECKOUT = Path(__file__).resolve().parent.parent
BASE_PTH = "_dnnbench_base.pth"


def _say(text: str) -> None:
    print(f"dnnbench env: {text}", flush=True)


def parse_variables(pairs: list[str]) -> dict[str, str]:
    variables = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--variable {pair!r}: expected NAME=VALUE")
        variables[name] = value
    return variables


def _refuse_bad_request(name: str, variables: dict[str, str], preload: str | None, base: str | None) -> None:
    if not envs.ENV_NAME.fullmatch(name) or name == "current":
        raise ConfigError(f"environment name {name!r}: letters, digits and _.- (starting with a letter or digit), "
                          "not `current` (dnnbench's own)")  # fmt: skip
    if envs.definition_path(name).exists() or envs.data_dir(name).exists():
        raise ConfigError(f"environment {name!r} exists already ({envs.definition_path(name)}): nothing was changed; "
                          "choose another name")  # fmt: skip
    if base not in (None, "current"):
        raise ConfigError(f"--base {base}: only `current` (this interpreter's packages) can be layered on")
    if preload is not None and not Path(preload).is_file():
        raise ConfigError(f"--preload {preload}: no such file (e.g. apt-get install libjemalloc2)")
    problems = envs.environment_problems({"env": {"name": name, "variables": variables}, "cluster": {}})
    if problems:
        raise ConfigError("invalid environment:\n  " + "\n  ".join(problems))


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run a build step, its output shown as it comes; a failure names the step."""
    _say("$ " + " ".join(shlex.quote(a) for a in argv))
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        print("  " + line, end="", flush=True)
    if process.wait() != 0:
        raise DnnbenchError(f"`{' '.join(argv[:4])} …` failed (exit {process.returncode}); nothing was registered")
    return "".join(lines)


def _site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def _layer_on_current(venv: Path) -> None:
    """The new venv sees this interpreter's packages after its own (a .pth line is appended to sys.path)."""
    paths = [p for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"]) if Path(p).is_dir()]
    write_atomic_text(_site_packages(venv) / BASE_PTH, "".join(f"{p}\n" for p in dict.fromkeys(paths)))


def _job_side_requirements() -> list[str]:
    """What a rank imports (jobs/): the project's dependencies and its `train` extra."""
    import tomllib

    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project.get("optional-dependencies", {}).get("train", [])]


def _take_lock(python: Path, variables: dict[str, str]) -> dict[str, Any]:
    # As the runner starts a rank: jobs/ from this checkout, the environment's variables set.
    path = os.pathsep.join(p for p in (str(CHECKOUT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **variables, "PYTHONPATH": path}
    _say(f"taking the lock with {python}")
    out = subprocess.run([str(python), "-m", "jobs.env_lock", "snapshot"], env=env, capture_output=True, text=True,
                         check=False)  # fmt: skip
    if out.returncode != 0:
        raise DnnbenchError(f"the new interpreter could not take its lock: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def create(name: str, specs: list[str], *, base: str | None, variables: dict[str, str], preload: str | None) -> Path:
    """Build environment ``name``; returns its definition's path."""
    if preload is not None:
        variables = {**variables, "LD_PRELOAD": preload}
    _refuse_bad_request(name, variables, preload, base)
    data = envs.data_dir(name)
    venv = data / "venv"
    data.mkdir(parents=True)
    _say(f"creating {venv}" + (" on top of the current packages" if base else ""))
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    if base == "current":
        _layer_on_current(venv)
    wanted = specs if base == "current" else [*_job_side_requirements(), *specs]
    if wanted:
        _say(f"installing {' '.join(wanted)}")
        _run([str(python), "-m", "pip", "install", "--progress-bar", "off", *wanted])
    lock = {**_take_lock(python, variables), "name": name, "specs": specs, "base": base, "variables": variables,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    write_atomic(data / envs.LOCK_FILE, lock)
    definition = {"name": name, "python": str(venv), "variables": variables, "lock": str(data / envs.LOCK_FILE)}
    target = envs.definition_path(name)
    header = "# Written by `dnnbench env create`; docs/environments.md.\n"
    write_atomic_text(target, header + yaml.safe_dump(definition))
    _say(f"environment {name!r} ready: dnnbench sweep env={name} …  ({target})")
    return target


def definitions() -> dict[str, Path]:
    """Every environment ``env=NAME`` finds, by name: conf/env's, then the user folder's."""
    from importlib import resources

    found: dict[str, Path] = {}
    for folder in (Path(str(resources.files("conf") / envs.GROUP)), envs.user_env_dir() / envs.GROUP):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def summary(name: str) -> dict[str, Any]:
    """What an environment holds: its definition and its lock's python, torch and package count."""
    path = definitions().get(name)
    if path is None:
        known = ", ".join(definitions()) or "none"
        raise ConfigError(f"no environment {name!r}: known are {known} (dnnbench env list)")
    definition = yaml.safe_load(path.read_text()) or {}
    variables = definition.get("variables") or {}
    facts: dict[str, Any] = {"name": name, "definition": str(path), "python": definition.get("python"),
                             "setup": definition.get("setup") or [], "variables": variables,
                             "preload": variables.get("LD_PRELOAD"), "container": definition.get("container"),
                             "lock": definition.get("lock")}  # fmt: skip
    if definition.get("lock"):
        try:
            lock = json.loads(Path(definition["lock"]).read_text())
            locked = lock["fingerprint"]
            facts.update(locked_python=locked.get("python"), torch=locked.get("torch"),
                         packages=len(locked.get("packages") or {}), specs=lock.get("specs"),
                         base=lock.get("base"))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as err:
            facts["lock_problem"] = f"unreadable: {err}"
    return facts
