"""Named environments (docs/environments.md), each through the real `dnnbench` CLI and real ranks:

- `env=a,b` is a sweep axis: each cell runs with its environment's variables, its preload and its
  setup lines, and its dump's fingerprint shows them;
- a rank outside its declared environment (the lock says another package version, the definition
  was edited after create, a preload went missing) fails `failed:env_mismatch`, the difference named,
  and measures nothing;
- `env create --base current` builds a layered venv that runs a cell; `env list` / `env show` say what
  each environment holds;
- a definition that cannot run is refused at plan time, before anything is written;
- cells of `env=current` keep the ids they had before environments existed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs import schema
from orchestrator.cell_identity import cell_id
from orchestrator.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
TINY = ["framework=ddp", "gpus=1", "model=resnet18", "dataset=synthetic", "steps=2", "warmup_steps=1",
        "val_steps=2", "batch_size=4"]  # fmt: skip


def dnnbench(env_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DNNBENCH_ENV_DIR": str(env_dir)}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=env_dir.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def define(env_dir: Path, name: str, **fields: object) -> Path:
    path = env_dir / "env" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"name": name, **fields}))
    return path


def dumps(sweep_dir: Path) -> dict[str, dict]:
    """Rank 0's dump of every cell, by the environment its config names."""
    found = {}
    for path in sweep_dir.glob("cells/*/attempt_*/rank_0.json"):
        doc = json.loads(path.read_text())
        found[doc["config"]["env"]["name"]] = doc
    return found


@pytest.fixture
def env_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "envs"
    folder.mkdir()
    return folder


def test_an_env_sweep_axis_runs_each_cell_in_its_own_environment(env_dir: Path, tmp_path: Path) -> None:
    if not JEMALLOC.is_file():
        pytest.skip(f"{JEMALLOC} missing: apt-get install libjemalloc2")
    marker = tmp_path / "setup-ran"
    define(env_dir, "arena2", variables={"MALLOC_ARENA_MAX": "2"}, setup=[f"touch {marker}"])
    define(env_dir, "jem", variables={"LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": "narenas:1"})
    sweep_dir = tmp_path / "sweep"
    done = dnnbench(env_dir, "sweep", "env=arena2,jem", *TINY, "--sweep-dir", str(sweep_dir), "--no-aggregate")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    by_env = dumps(sweep_dir)
    assert set(by_env) == {"arena2", "jem"}
    arena, jem = by_env["arena2"]["environment"], by_env["jem"]["environment"]
    assert arena["variables"]["MALLOC_ARENA_MAX"] == "2" and "LD_PRELOAD" not in arena["variables"]
    assert "libjemalloc.so.2" not in arena["libraries"] and marker.exists()  # its setup line ran
    assert jem["variables"]["LD_PRELOAD"] == str(JEMALLOC) and jem["variables"]["MALLOC_CONF"] == "narenas:1"
    assert "libjemalloc.so.2" in jem["libraries"] and "MALLOC_ARENA_MAX" not in jem["variables"]
    assert schema.environment_hash(arena) != schema.environment_hash(jem)


def test_a_failing_setup_line_fails_the_cell_instead_of_running_it_elsewhere(env_dir: Path, tmp_path: Path) -> None:
    define(env_dir, "broken", setup=["false"])
    sweep_dir = tmp_path / "sweep"
    done = dnnbench(env_dir, "sweep", "env=broken", *TINY, "--sweep-dir", str(sweep_dir), "--no-aggregate")
    assert done.returncode == ExitCode.CELLS_FAILED, done.stdout + done.stderr
    assert not list(sweep_dir.glob("cells/*/attempt_*/rank_*.json"))


def _locked_env(env_dir: Path, name: str, variables: dict[str, str]) -> Path:
    """A definition with a lock taken by this interpreter, as `env create` takes it (no venv built)."""
    environ = {**os.environ, **variables, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "jobs.env_lock", "snapshot"], env=environ, capture_output=True,
                         text=True, check=True)  # fmt: skip
    lock = env_dir / "data" / name / "lock.json"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({**json.loads(out.stdout), "name": name, "variables": variables}))
    define(env_dir, name, variables=variables, lock=str(lock))
    return lock


def _edit_lock_package(lock: Path, name: str, version: str) -> None:
    doc = json.loads(lock.read_text())
    doc["fingerprint"]["packages"][name] = version
    lock.write_text(json.dumps(doc))


@pytest.mark.parametrize("change", ["package_version", "variable_edited_after_create", "preload_dropped"])
def test_a_rank_outside_its_declared_environment_fails_env_mismatch_naming_the_difference(
    env_dir: Path, tmp_path: Path, change: str
) -> None:
    if change == "preload_dropped" and not JEMALLOC.is_file():
        pytest.skip(f"{JEMALLOC} missing: apt-get install libjemalloc2")
    variables = {"MALLOC_CONF": "narenas:1"} | ({"LD_PRELOAD": str(JEMALLOC)} if change == "preload_dropped" else {})
    lock = _locked_env(env_dir, "locked", variables)
    import numpy

    if change == "package_version":
        _edit_lock_package(lock, "numpy", "1.0.0")
        says = f"numpy: 1.0.0 in the lock, {numpy.__version__} here"
    elif change == "variable_edited_after_create":
        define(env_dir, "locked", variables={"MALLOC_CONF": "narenas:2"}, lock=str(lock))
        says = "MALLOC_CONF: 'narenas:1' in the lock, 'narenas:2' here"
    else:
        define(env_dir, "locked", variables={"MALLOC_CONF": "narenas:1"}, lock=str(lock))
        says = "libjemalloc.so.2: loaded in the lock, not loaded here"
    sweep_dir = tmp_path / "sweep"
    done = dnnbench(env_dir, "sweep", "env=locked", *TINY, "--sweep-dir", str(sweep_dir), "--no-aggregate")
    assert done.returncode == ExitCode.CELLS_FAILED, done.stdout + done.stderr
    (outcome,) = sweep_dir.glob("cells/*/attempt_0/outcome.json")
    recorded = json.loads(outcome.read_text())
    assert recorded["failure_class"] == "env_mismatch"
    (failure,) = outcome.parent.glob("failure_rank_*.json")
    assert says in json.loads(failure.read_text())["reason"]
    assert not list(outcome.parent.glob("rank_*.json"))  # nothing measured
    status = dnnbench(env_dir, "status", str(sweep_dir), "--json")
    assert "env_mismatch" in status.stdout, status.stdout


def test_the_same_lock_unedited_runs_the_cell(env_dir: Path, tmp_path: Path) -> None:
    _locked_env(env_dir, "locked", {"MALLOC_CONF": "narenas:1"})
    sweep_dir = tmp_path / "sweep"
    done = dnnbench(env_dir, "sweep", "env=locked", *TINY, "--sweep-dir", str(sweep_dir), "--no-aggregate")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr


def test_env_create_layers_a_venv_on_the_current_packages_and_a_cell_runs_in_it(env_dir: Path, tmp_path: Path) -> None:
    # six: not in the base; iniconfig: in the base (pytest's) at another version, shadowed by the layer's.
    made = dnnbench(env_dir, "env", "create", "extra", "--base", "current", "--pip", "six==1.16.0 iniconfig==2.0.0",
                    "--variable", "MALLOC_CONF=narenas:1")  # fmt: skip
    if made.returncode != 0 and "six" in made.stdout and "No matching distribution" in made.stdout:
        pytest.skip("six==1.16.0 not reachable from this machine's package index")
    assert made.returncode == ExitCode.OK, made.stdout + made.stderr
    assert "installing six==1.16.0 iniconfig==2.0.0" in made.stdout  # progress said while building
    shown = json.loads(dnnbench(env_dir, "env", "show", "extra", "--json").stdout)
    assert shown["specs"] == ["six==1.16.0", "iniconfig==2.0.0"] and shown["base"] == "current" and shown["torch"]
    assert shown["variables"] == {"MALLOC_CONF": "narenas:1"} and shown["packages"] > 10
    listed = dnnbench(env_dir, "env", "list").stdout
    assert "extra" in listed and "current" in listed
    lock = json.loads(Path(shown["lock"]).read_text())
    assert "six==1.16.0" in lock["pip_freeze"] and lock["fingerprint"]["packages"]["six"] == "1.16.0"
    assert lock["fingerprint"]["packages"]["iniconfig"] == "2.0.0"  # the one imported, not the base's
    again = dnnbench(env_dir, "env", "create", "extra", "--base", "current")
    assert again.returncode == ExitCode.ERROR and "exists already" in again.stderr  # never replaced
    sweep_dir = tmp_path / "sweep"
    done = dnnbench(env_dir, "sweep", "env=extra", *TINY, "--sweep-dir", str(sweep_dir), "--no-aggregate")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    (doc,) = dumps(sweep_dir).values()
    assert doc["environment"]["packages"]["six"] == "1.16.0" and doc["environment"]["packages"]["iniconfig"] == "2.0.0"
    log = next(sweep_dir.glob("cells/*/attempt_0/launcher_node0.log")).read_text()
    assert log.startswith(f"$ {env_dir / 'data' / 'extra' / 'venv' / 'bin' / 'python'} -m torch.distributed.run")


@pytest.mark.parametrize(
    ("definition", "says"),
    [
        ({"runtime": "docker", "container": "img.sif"}, "env.runtime=docker: expected one of apptainer"),
        ({"container": "img.sif"}, "env.container=img.sif without env.runtime"),
        ({"python": "/nonexistent/venv"}, "env.python=/nonexistent/venv: /nonexistent/venv does not exist here"),
        ({"variables": {"OMP_NUM_THREADS": 4}}, "env.variables.OMP_NUM_THREADS=4: a int, not a string"),
        ({"variables": {"A": "x\ny"}}, "holds a control character"),
        ({"variables": {"1A": "x"}}, "env.variables.1A: not a variable name"),
        ({"setup": ["module load x; rm -rf /"]}, "env.setup line"),
        ({"runtime": "apptainer", "container": "img.sif", "mounts": ["--bind=/"]}, "env.mounts[0]"),
        ({"runtime": "pyxis", "container": "img.sqsh"}, "env.runtime=pyxis: a per-cell pyxis container"),
    ],
    ids=["unknown_runtime", "container_without_runtime", "python_missing", "variable_not_string",
         "variable_newline", "variable_bad_name", "setup_unsafe", "mount_as_option",
         "pyxis_per_cell"],
)
def test_a_definition_that_cannot_run_is_refused_at_plan_time(
    env_dir: Path, tmp_path: Path, definition: dict, says: str
) -> None:
    define(env_dir, "bad", **definition)
    sweep_dir = tmp_path / "sweep"
    done = dnnbench(env_dir, "sweep", "env=bad", *TINY, "--sweep-dir", str(sweep_dir))
    assert done.returncode == ExitCode.ERROR and says in done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and not sweep_dir.exists()  # nothing submitted, nothing written


def test_cells_of_env_current_keep_the_ids_they_had_before_environments(env_dir: Path) -> None:
    from orchestrator.config import compose, resolved

    config = resolved(compose(TINY))
    assert config["env"]["name"] == "current"
    before = {k: v for k, v in config.items() if k != "env"}  # as cell files before this section existed
    assert cell_id(config) == cell_id(before)
    other = {**config, "env": {**config["env"], "name": "jem", "variables": {"MALLOC_CONF": "narenas:1"}}}
    assert cell_id(other) != cell_id(config)  # any other environment is another cell


def test_setup_lines_run_in_the_cells_shell_and_the_launcher_words_stay_its_own(tmp_path: Path) -> None:
    from orchestrator.environments import setup_wrapped

    show = "import os, sys; print(os.getcwd()); print(sys.argv[1:])"
    argv = setup_wrapped({"setup": [f"cd {tmp_path}"]}, [sys.executable, "-c", show, "a b", "; touch x", "$HOME"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [str(tmp_path), "['a b', '; touch x', '$HOME']"]  # the setup's cd reached it; no word re-read
    assert not (tmp_path / "x").exists()


def test_a_container_environment_runs_the_launcher_through_its_runtime_after_the_setup_lines() -> None:
    from orchestrator.environments import rank_variables, setup_wrapped

    env = {"container": "/img/x", "runtime": "charliecloud", "mounts": ["/data"], "setup": ["module load ch"]}
    assert setup_wrapped(env, ["python", "-m", "jobs.entry"]) == [
        "bash", "-c", 'set -e\nmodule load ch\nexec "$@"', "dnnbench-env",
        "ch-run", "--bind=/data:/data", "/img/x", "--", "python", "-m", "jobs.entry",
    ]  # fmt: skip
    apptainer = {"container": "/img/x.sif", "runtime": "apptainer"}
    assert setup_wrapped(apptainer, ["python"]) == ["apptainer", "exec", "--nv", "/img/x.sif", "python"]
    declared = rank_variables({**apptainer, "variables": {"A": "b"}})
    assert declared == {"A": "b", "DNNBENCH_CONTAINER": "apptainer:/img/x.sif"}
