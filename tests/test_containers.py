"""Containers (issue 21 §6): the command line of every runtime, rendered and read back.

Each runtime's argv is checked word by word; the batch-script form is substituted into the real
sbatch_templates/array.sh, read back by bash's own word splitting and syntax check, so a hostile
image path reaches the runtime as exactly itself. Plan-time problems are each named.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from string import Template

import pytest

from jobs.environment import container_identity
from orchestrator.containers import (
    RUNTIMES,
    container_argv,
    container_launch_problems,
    container_prefix,
    container_problems,
    pyxis_srun_options,
    render_for_script,
)
from orchestrator.errors import CellFailedError, ConfigError

INNER = ["/opt/venv/bin/python", "-m", "orchestrator.slurm_task", "/s/jobs/a.cells.json"]
MOUNTS = ["/work/main", "/scratch/data:/data"]
# Legal path text that a shell would otherwise read as more than one word or as code.
HOSTILE_IMAGES = ["/img/my image.sif", "/img/$(touch PWNED).sif", "/img/a'b\"c;d`e`.sif", "/img/50%-#x"]


def test_runtimes_are_the_three_supported() -> None:
    assert RUNTIMES == ("apptainer", "pyxis", "charliecloud")


def test_apptainer_argv_binds_each_mount_before_the_image() -> None:
    argv = container_argv("apptainer", "/img/torch.sif", MOUNTS, INNER)
    assert argv == [
        "apptainer", "exec", "--nv",
        "--bind=/work/main:/work/main", "--bind=/scratch/data:/data",
        "/img/torch.sif", *INNER,
    ]  # fmt: skip


def test_charliecloud_argv_ends_its_options_with_double_dash() -> None:
    argv = container_argv("charliecloud", "/var/tmp/img", MOUNTS, INNER)
    assert argv == [
        "ch-run", "--bind=/work/main:/work/main", "--bind=/scratch/data:/data",
        "/var/tmp/img", "--", *INNER,
    ]  # fmt: skip


def test_container_without_mounts_is_runtime_image_command() -> None:
    assert container_argv("charliecloud", "/i", [], ["true"]) == ["ch-run", "/i", "--", "true"]
    assert container_argv("apptainer", "/i.sif", [], ["true"]) == ["apptainer", "exec", "--nv", "/i.sif", "true"]


def test_pyxis_is_srun_options_not_a_prefix() -> None:
    with pytest.raises(ConfigError, match="pyxis is not a command prefix"):
        container_argv("pyxis", "nvcr.io#nvidia/pytorch:24.01-py3", [], INNER)
    options = pyxis_srun_options("nvcr.io#nvidia/pytorch:24.01-py3", MOUNTS)
    assert options == [
        "--container-image=nvcr.io#nvidia/pytorch:24.01-py3",
        "--container-mounts=/work/main:/work/main,/scratch/data:/data",
    ]
    assert pyxis_srun_options("/img/x.sqsh") == ["--container-image=/img/x.sqsh"]


def test_container_needs_a_command() -> None:
    with pytest.raises(ConfigError, match="needs the command"):
        container_argv("charliecloud", "/i", [], [])


PROBLEMS = {
    "unknown runtime": (("docker", "/i", [], "local"), "'docker' is not one of apptainer, pyxis, charliecloud"),
    "pyxis off slurm": (("pyxis", "/i.sqsh", [], "local"), "it needs backend=slurm, not backend=local"),
    "empty image": (("charliecloud", "  ", [], "local"), "container image is empty"),
    "no image": (("apptainer", None, [], "local"), "container image is empty"),
    "image as option": (("apptainer", "--writable", [], "local"), "may not start with '-'"),
    "image newline": (("charliecloud", "/i\n/x", [], "local"), "control character"),
    "image backslash": (("charliecloud", "/i\\x", [], "local"), "backslash"),
    "mount three parts": (("apptainer", "/i", ["/a:/b:ro"], "local"), "is not SRC or SRC:DST"),
    "mount empty side": (("apptainer", "/i", ["/a:"], "local"), "is not SRC or SRC:DST"),
    "mount relative": (("charliecloud", "/i", ["data:/data"], "local"), "'data' is not an absolute path"),
    "mount comma": (("pyxis", "/i", ["/a,/b"], "slurm"), "contains ','"),
    "mount option": (("charliecloud", "/i", ["-w"], "local"), "may not start with '-'"),
    "mount newline": (("charliecloud", "/i", ["/a\n/b"], "local"), "control character"),
    "mounts not a list": (("charliecloud", "/i", "/a:/b", "local"), "give a list of SRC or SRC:DST"),
    "mount not text": (("charliecloud", "/i", [3], "local"), "give SRC or SRC:DST as text"),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_container_problem_is_named_at_plan_time(name: str) -> None:
    args, reason = PROBLEMS[name]
    problems = container_problems(*args)
    assert any(reason in problem for problem in problems), problems


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_valid_container_has_no_problems(runtime: str) -> None:
    assert container_problems(runtime, "/img/x", MOUNTS, "slurm") == []
    assert container_problems(None, None, None, "local") == []


def test_a_refused_container_never_renders() -> None:
    for render in (lambda: container_prefix("charliecloud", "/i", ["rel"]), lambda: pyxis_srun_options("-x")):
        with pytest.raises(ConfigError):
            render()


def _script_with(runtime: str, image: str, mounts: list[str]) -> str:
    """array.sh with the container words on its srun line, as a renderer puts them there."""
    options, prefix = render_for_script(runtime, image, mounts)
    python = shlex.quote(INNER[0])
    template = Template((resources.files("sbatch_templates") / "array.sh").read_text())
    values = {name: "X" for name in re.findall(r"\$\{(\w+)\}", template.template)}
    values.update(python=" ".join(part for part in (prefix, python) if part), cells_file=shlex.quote(INNER[-1]))
    script = template.substitute(values)
    return script.replace("--kill-on-bad-exit=1", " ".join(part for part in ("--kill-on-bad-exit=1", options) if part))


def _srun_argv(script: str) -> list[str]:
    (line,) = [line for line in script.splitlines() if line.startswith("exec srun")]
    return shlex.split(line)[1:]


@pytest.mark.parametrize("image", HOSTILE_IMAGES)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_batch_script_reads_back_the_container_argv(runtime: str, image: str, tmp_path: Path) -> None:
    script = _script_with(runtime, image, MOUNTS)
    srun = _srun_argv(script)
    inner = srun[srun.index(INNER[0]) :]
    assert inner == [INNER[0], "-m", "orchestrator.slurm_task", INNER[-1]]
    if runtime == "pyxis":
        assert srun[: srun.index(INNER[0])][-2:] == pyxis_srun_options(image, MOUNTS)
    else:
        before = srun[: srun.index(INNER[0])]
        prefix = container_prefix(runtime, image, MOUNTS)
        assert before[-len(prefix) :] == prefix
    path = tmp_path / "array.sh"
    path.write_text(script)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert not list(tmp_path.rglob("PWNED*"))


# ------------------------------------------------------------------ on the node, before launch ---
BOUND_FILES = ("etc/hosts", "etc/resolv.conf")


def _directory_image(root: Path, mount_points: list[str], files: tuple[str, ...] = BOUND_FILES) -> Path:
    for folder in mount_points:
        (root / folder.lstrip("/")).mkdir(parents=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


# Stand-ins for the node's executable finder (shutil.which): only the runtime's own checks run against them, the
# same on every machine whatever it has installed.
def finds_every(name: str) -> str:
    return f"/usr/bin/{name}"


def finds_none(_name: str) -> None:
    return None


def test_runtime_missing_on_the_node_is_named(tmp_path: Path) -> None:
    image = _directory_image(tmp_path / "img", ["/work"])
    for runtime, executable in (("charliecloud", "ch-run"), ("apptainer", "apptainer")):
        (problem,) = container_launch_problems(runtime, str(image), ["/work"], which=finds_none)
        assert f"container runtime {runtime}: {executable} not found on this node" in problem


def test_directory_image_lacking_what_ch_run_binds_is_named(tmp_path: Path) -> None:
    # ch-run found on every machine: only the image is checked here. (shutil.which found nothing where
    # charliecloud is not installed, and the test failed there instead of checking the image.)
    binds = ["/work/main", "/scratch:/data"]
    ready = _directory_image(tmp_path / "ready", ["/work/main", "/data"])
    assert container_launch_problems("charliecloud", str(ready), binds, which=finds_every) == []
    bare = _directory_image(tmp_path / "bare", ["/work/main"], files=())
    problems = container_launch_problems("charliecloud", str(bare), binds, which=finds_every)
    assert any("has no folder /data to bind /scratch on" in p and "--mount-point /data" in p for p in problems)
    assert any("has no /etc/hosts" in p for p in problems), problems
    assert any("has no /etc/resolv.conf" in p for p in problems), problems


def test_image_path_missing_on_the_node_is_named(tmp_path: Path) -> None:
    (problem,) = container_launch_problems("apptainer", str(tmp_path / "no.sif"), [], which=finds_every)
    assert "no such file or folder on this node" in problem
    # A registry reference or a name in the runtime's own storage is the runtime's to find.
    assert container_launch_problems("apptainer", "docker://python:3.11", [], which=finds_every) == []


def _run_one_cell(overrides: list[str], folder: Path) -> dict:
    """Plan one cell, write its cell.json as a sweep does, run it here; the attempt's outcome."""
    from orchestrator.runner import run_cell
    from orchestrator.submit import write_cell_file
    from orchestrator.sweep import plan

    (cell,) = plan(overrides).cells
    cell_file = folder / "cells" / cell.id / "cell.json"
    write_cell_file(cell_file, cell)
    out_dir = cell_file.parent / "attempt_0"
    with pytest.raises(CellFailedError, match="no_container"):
        run_cell(str(cell_file), str(out_dir))
    return json.loads((out_dir / "outcome.json").read_text())


TINY_CELL = ["framework=ddp", "model=resnet18", "gpus=1", "dataset=synthetic", "steps=2", "device=cpu"]


@pytest.mark.skipif(shutil.which("apptainer") is not None, reason="apptainer is installed here: nothing is missing")
def test_cell_whose_runtime_is_missing_on_the_node_fails_as_no_container(tmp_path: Path) -> None:
    image = tmp_path / "torch.sif"
    image.write_bytes(b"")  # there: only the runtime is missing
    outcome = _run_one_cell([*TINY_CELL, f"env.container={image}", "env.runtime=apptainer"], tmp_path)
    assert outcome["failure_class"] == "no_container", outcome
    assert any("apptainer not found on this node" in reason for reason in outcome["reasons"]), outcome
    log = next((tmp_path / "cells").rglob("launcher_node0.log")).read_text()
    assert "the container cannot start on this node" in log


def test_cell_in_a_directory_image_without_its_mount_point_fails_before_starting(tmp_path: Path) -> None:
    image = _directory_image(tmp_path / "img", [])
    overrides = [*TINY_CELL, f"env.container={image}", "env.runtime=charliecloud", f"env.mounts=[{tmp_path}]"]
    outcome = _run_one_cell(overrides, tmp_path)
    assert outcome["failure_class"] == "no_container", outcome
    wanted = f"has no folder {tmp_path}" if shutil.which("ch-run") else "ch-run not found on this node"
    assert any(wanted in reason for reason in outcome["reasons"]), outcome


MOUNTINFO = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
611 22 253:0 /var/tmp/img / ro,nosuid,relatime - ext4 /dev/vda rw
612 611 0:5 / /dev rw,nosuid - devtmpfs udev rw
"""


def test_container_identity_reads_the_root_mount_and_runtime(tmp_path: Path) -> None:
    mountinfo, os_release = tmp_path / "mountinfo", tmp_path / "os-release"
    mountinfo.write_text(MOUNTINFO)
    os_release.write_text('NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    environ = {"CH_RUNNING": "Weird Al Yankovic", "DNNBENCH_CONTAINER": "charliecloud:/var/tmp/img"}
    inside = container_identity(environ, str(mountinfo), str(os_release))
    assert inside == {
        "declared": "charliecloud:/var/tmp/img",
        "runtime": "charliecloud",
        "root": "/dev/vda:/var/tmp/img",  # the last mount at / is the one the process sees
        "os": "Debian GNU/Linux 12 (bookworm)",
    }
    outside = container_identity({}, str(tmp_path / "none"), str(tmp_path / "none"))
    assert outside == {"declared": None, "runtime": None, "root": None, "os": None}


def test_ranks_of_a_container_cell_get_the_declared_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.runner import rank_environment

    monkeypatch.setenv("DNNBENCH_CONTAINER", "apptainer:/stale.sif")  # from the shell that started dnnbench

    config = {"threads_per_process": 1, "env": {"container": "/var/tmp/img", "runtime": "charliecloud"}}
    assert rank_environment(config)["DNNBENCH_CONTAINER"] == "charliecloud:/var/tmp/img"
    assert "DNNBENCH_CONTAINER" not in rank_environment({"threads_per_process": 1, "env": {}})
