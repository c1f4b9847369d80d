"""Issue 12 §4 as named faults: no user text becomes an option or a script line.

User text reaches three places: the batch script (sweep folder, interpreter, Slurm names,
setup lines), sbatch's reading of its ``#SBATCH`` lines (its own quoting, ``%`` patterns in
file names, ``hetjob``), and command lines (rsync/ssh for ``pull``, sbatch). Each hostile value
is either refused before anything is written, with the reason, or rendered so that every
reader gets back exactly that value. The renders are read back the way bash and sbatch read
them (sbatch's argument scanner is reimplemented below from Slurm's ``src/sbatch/opt.c``),
and one sweep with a hostile folder runs for real on the dev Slurm cluster.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_fixtures import dnnbench as slurm_dnnbench
from slurm_fixtures import ledger_rows, slurm_cluster, wait_until  # noqa: F401 - slurm_cluster is a fixture

from analysis.pull import rsync_command
from orchestrator import cli
from orchestrator.backends.base import CellJob, Shape, ShapeGroup
from orchestrator.backends.slurm import job_name, render_script
from orchestrator.config import compose, resolved, validate
from orchestrator.errors import ConfigError
from orchestrator.paths import SweepPaths

REPO = Path(__file__).resolve().parents[1]
DNNBENCH = [sys.executable, "-m", "orchestrator.cli"]

# Folder names that are legal on POSIX and must reach Slurm and bash as exactly themselves.
RENDERED_FOLDERS = {
    "space": "my sweep",
    "percent patterns": "run%j-%A_%a-50%%-%x",
    "command substitution": "$(touch PWNED)",
    "backticks": "`touch PWNED`",
    "double quotes": 'say "hi"',
    "single quote": "it's",
    "hash and a directive": "x #SBATCH --partition=evil",
    "semicolon": "s;touch PWNED;",
    "leading dash": "-rf",
    "parameter expansion": "${HOME}x",
    "unicode": "résumé-日本-ü",
    "all at once": "a b%j $(touch PWNED) `x` \"q\" 'q' #h ü",
}
# Folder names no batch script can carry as themselves: refused before anything is written.
REFUSED_FOLDERS = {
    "newline": ("a\nb", "control character"),
    "trailing newline": ("run\n", "control character"),
    "carriage return": ("a\rb", "control character"),
    "tab": ("a\tb", "control character"),
    "backslash": ("a\\b", "backslash"),
    "hetjob": ("my-hetjob", "hetjob"),
    "packjob in capitals": ("PackJob-1", "PackJob"),
}
# Values for Slurm names (partition, account, …) that must be refused wherever they come from.
HOSTILE_NAMES = {
    "trailing newline": "gpu\n",
    "newline": "gpu\n#SBATCH --qos=high",
    "percent": "gpu%j",
    "command substitution": "$(touch PWNED)",
    "backticks": "`touch PWNED`",
    "quote": 'gpu"',
    "space": "gpu a100",
    "leading dash": "-x",
    "hash": "gpu#x",
    "hetjob": "hetjob",
    "unicode": "gpü",
}


# ---------------------------------------------------------------- sbatch's reading, from opt.c ---
def _sbatch_argument(line: str) -> tuple[str | None, str]:
    """One argument of an #SBATCH line as sbatch's ``_get_argument`` scans it; (argument, rest)."""
    i = 0
    while i < len(line) and line[i].isspace():
        i += 1
    if i == len(line):
        return None, ""
    out, quote, escape = [], "", False
    while i < len(line) and (quote or not line[i].isspace()) and line[i] != "\n":
        char = line[i]
        i += 1
        if escape:
            escape = False
        elif char == "\\":
            escape = True
            continue
        elif quote:
            if char == quote:
                quote = ""
                continue
        elif char in "\"'":
            quote = char
            continue
        elif char == "#":
            return "".join(out), ""
        out.append(char)
    assert not quote, f"sbatch: unmatched quote in {line!r}"
    return "".join(out), line[i:]


def sbatch_directives(script: str) -> list[str]:
    """The options sbatch takes from a script: #SBATCH lines up to the first command line."""
    options = []
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if line.startswith("#SBATCH"):
            assert not re.search("hetjob|packjob", line, re.I), f"a heterogeneous job separator: {line!r}"
            rest = line[len("#SBATCH") :]
            while True:
                argument, rest = _sbatch_argument(rest)
                if argument is None:
                    break
                options.append(argument)
    return options


def slurm_file_name(pattern: str, job: str, index: str) -> str:
    """Slurm's expansion of an --output pattern; any % sequence other than %%, %A, %a fails the test."""

    def expand(match: re.Match[str]) -> str:
        code = match.group(1)
        assert code in "%Aa", f"an unexpanded or unexpected %{code} in {pattern!r}"
        return {"%": "%", "A": job, "a": index}[code]

    assert "\\" not in pattern, "a backslash turns Slurm's pattern expansion off"
    return re.sub(r"%(.)", expand, pattern)


def command_lines(script: str) -> list[str]:
    body = False
    lines = []
    for line in script.splitlines()[1:]:
        body = body or bool(line.strip() and not line.strip().startswith("#"))
        if body and line.strip() and not line.strip().startswith("#"):
            lines.append(line)
    return lines


# ---------------------------------------------------------------------------- rendering ---
def _group(cluster: dict | None = None) -> ShapeGroup:
    config = resolved(compose(["cluster=slurm"]))
    config["cluster"].update(cluster or {})
    return ShapeGroup(Shape.of(config), [CellJob("c0", "c0", "/x/c0/cell.json", config)])


def _render(folder: Path, group: ShapeGroup | None = None) -> str:
    paths = SweepPaths(folder)
    name = job_name(paths.root, "0123456789")
    return render_script(paths, group or _group(), name, paths.jobs / f"{name}.cells.json")


def _assert_reads_back(script: str, folder: Path, tmp_path: Path) -> None:
    """bash and sbatch both read back exactly ``folder``, and every #SBATCH line is an option."""
    directives = sbatch_directives(script)
    assert all(d.startswith("--") for d in directives), directives
    # sbatch stops reading options at the first command: every option line must come before it.
    first_command = script.splitlines().index(command_lines(script)[0])
    late = [line for line in script.splitlines()[first_command:] if line.startswith("#SBATCH")]
    assert not late, f"#SBATCH lines after the first command: {late}"
    assert len(directives) == sum(line.startswith("#SBATCH") for line in script.splitlines())
    options = dict(d[2:].split("=", 1) for d in directives if "=" in d)
    assert slurm_file_name(options["output"], "77", "3") == f"{folder}/jobs/77_3.out"
    assert slurm_file_name(options["error"], "77", "3") == f"{folder}/jobs/77_3.err"
    assert re.fullmatch(r"[A-Za-z0-9_.+\-]+", options["job-name"]), options["job-name"]
    (exec_line,) = [line for line in command_lines(script) if line.startswith("exec srun")]
    assert shlex.split(exec_line)[-1] == str(folder / "jobs" / f"{options['job-name']}.cells.json")
    script_file = tmp_path / "rendered.sh"
    script_file.write_text(script)
    syntax = subprocess.run(["bash", "-n", str(script_file)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


@pytest.mark.parametrize("name", sorted(RENDERED_FOLDERS))
def test_hostile_sweep_folder_renders_as_itself(name: str, tmp_path: Path) -> None:
    folder = tmp_path / RENDERED_FOLDERS[name]
    script = _render(folder)
    _assert_reads_back(script, folder, tmp_path)
    assert not list(tmp_path.rglob("PWNED*"))


@pytest.mark.parametrize("name", sorted(REFUSED_FOLDERS))
def test_sweep_folder_no_script_can_carry_is_refused_at_render(name: str, tmp_path: Path) -> None:
    value, reason = REFUSED_FOLDERS[name]
    with pytest.raises(ConfigError, match=re.escape(reason)):
        _render(tmp_path / value)


@pytest.mark.parametrize("name", ["trailing newline", "newline", "backslash", "hetjob"])
def test_sweep_folder_no_script_can_carry_is_refused_through_the_cli_before_writing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    value, reason = {**REFUSED_FOLDERS}[name]
    folder = tmp_path / value
    code = cli.main(["sweep", "cluster=slurm", "framework=noop", "--dry-run", "--sweep-dir", str(folder)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("Error: sweep folder") and reason in err, err
    assert list(tmp_path.iterdir()) == [], "a refused folder was created"


def test_control_characters_in_the_sweep_folder_are_refused_on_the_local_backend_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["sweep", "framework=noop", "--dry-run", "--sweep-dir", str(tmp_path / "run\n")])
    assert code == 1 and "control character" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_hostile_interpreter_path_renders_as_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The interpreter is where the venv is: a real one at such a path would take minutes to build.
    python = '/opt/my env/$(touch PWNED)/`x`/it\'s "q" %j/bin/python'
    monkeypatch.setattr(sys, "executable", python)
    script = _render(tmp_path / "s")
    (exec_line,) = [line for line in command_lines(script) if line.startswith("exec srun")]
    assert shlex.split(exec_line)[5] == python
    _assert_reads_back(script, tmp_path / "s", tmp_path)
    monkeypatch.setattr(sys, "executable", "/opt/env\n/bin/python")
    with pytest.raises(ConfigError, match="python interpreter"):
        _render(tmp_path / "s")


@pytest.mark.parametrize("key", ["partition", "account", "qos", "constraint", "gpu_type"])
@pytest.mark.parametrize("name", sorted(HOSTILE_NAMES))
def test_hostile_slurm_names_are_refused_at_plan_time(key: str, name: str) -> None:
    config = resolved(compose(["cluster=slurm"]))
    config["cluster"][key] = HOSTILE_NAMES[name]
    with pytest.raises(ConfigError, match=rf"cluster\.{key}"):
        validate(config, check_data=False)
    with pytest.raises(ConfigError, match=rf"cluster\.{key}"):  # and again where the script is written
        _render(Path("/tmp/s"), _group({key: HOSTILE_NAMES[name]}))


@pytest.mark.parametrize(
    "override",
    ["cluster.partition='gpu a100'", "cluster.account='$(touch PWNED)'", "cluster.qos=-x", "cluster.constraint='a%j'",
     "cluster.gpu_type=a100:2"],
)  # fmt: skip
def test_hostile_slurm_names_from_the_command_line_exit_1_with_nothing_written(
    override: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["sweep", "cluster=slurm", "framework=noop", override, "--sweep-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("Error:") and override.split("=")[0] in err, err
    assert not (tmp_path / "s").exists() and not list(tmp_path.rglob("PWNED*"))


@pytest.mark.parametrize(
    ("line", "reason"),
    [("module load a\nmodule load b", "control character"), ("module load a\n", "control character"),
     ("echo $(touch PWNED)", "not a plain word"), ("echo `touch PWNED`", "not a plain word"),
     ("module load 'x'", "not a plain word"), ("module load x; touch PWNED", "not a plain word")],
)  # fmt: skip
def test_setup_lines_are_one_plain_command_each(line: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        _render(Path("/tmp/s"), _group({"setup": [line]}))


def test_setup_lines_render_as_written() -> None:
    script = _render(Path("/tmp/s"), _group({"setup": ["module load CUDA/12.1.1", "export OMP_PLACES=cores"]}))
    assert "\nmodule load CUDA/12.1.1\nexport OMP_PLACES=cores\n" in script


def test_job_names_are_labels_that_no_slurm_reader_splits(tmp_path: Path) -> None:
    for name in [*RENDERED_FOLDERS.values(), "a,b", "hetjob", "x PACKJOB y"]:
        label = job_name(tmp_path / name, "abc")
        assert re.fullmatch(r"dnnbench-[A-Za-z0-9_.+\-]+-abc", label), label
        assert not re.search("hetjob|packjob", label, re.I), label
    assert job_name(tmp_path / "plain-sweep_1.0", "abc") == "dnnbench-plain-sweep_1.0-abc"


def test_every_safety_pattern_matches_the_whole_value() -> None:
    """`re.match(r"^…$")` lets a final newline through; only fullmatch (or \\Z) checks a whole value."""
    for path in [REPO / "orchestrator" / "shell_safety.py", REPO / "analysis" / "pull.py"]:
        source = path.read_text()
        assert ".fullmatch(" in source, path
        assert not re.search(r"re\.compile\(r\"\^[^\"]*\$\"\)", source), f"{path}: a `^…$` pattern"
        assert not re.search(r"[A-Z_]+\.match\(", source), f"{path}: a pattern checked with .match"


# -------------------------------------------------------------------------------- pull ---
@pytest.mark.parametrize(
    "remote",
    ["-e sh -c 'touch PWNED #'", "--rsh=sh -c 'touch PWNED'", "-oProxyCommand=touch PWNED",
     "alice@-oProxyCommand=touch PWNED:/x", "-e/x", "ho st:/x", "alice@host;touch PWNED:/x", "host\n:/x",
     "rsync://host/module", "host::module", "alice@$(touch PWNED):/x"],
)  # fmt: skip
def test_pull_never_passes_the_source_as_options(remote: str, tmp_path: Path) -> None:
    # After `--` argparse hands any text over as the operand (without it, most of these are usage errors).
    run = subprocess.run([*DNNBENCH, "pull", "--", remote, str(tmp_path / "dest")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 1 and run.stderr.startswith("Error: source"), run.stderr
    assert not list(tmp_path.rglob("PWNED*")) and not (tmp_path / "dest").exists()


def test_pull_never_passes_the_destination_as_options(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "cells" / "c").mkdir(parents=True)
    (source / "cells" / "c" / "cell.json").write_text("{}")
    run = subprocess.run([*DNNBENCH, "pull", "--", str(source), "-e sh -c 'touch PWNED'"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 1 and run.stderr.startswith("Error: destination"), run.stderr
    assert not list(tmp_path.rglob("PWNED*"))
    # A destination with a ':' is a local folder, not a host to copy to.
    run = subprocess.run([*DNNBENCH, "pull", str(source), "backup:1"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "backup:1" / "cells" / "c" / "cell.json").is_file()


def test_pull_argv_ends_options_before_the_operands() -> None:
    argv = rsync_command("alice@login.cluster:/scratch/a b/$(x)", "/tmp/dest")
    assert argv[-3:] == ["--", "alice@login.cluster:/scratch/a b/$(x)/", "/tmp/dest/"]
    assert "-s" in argv  # the remote path goes to the remote rsync, not through its shell
    assert rsync_command("[::1]:/x", "/tmp/d")[-2] == "[::1]:/x/"


# ------------------------------------------------------------------- the real dev cluster ---
@pytest.mark.slurm
def test_a_hostile_sweep_folder_submits_and_runs_on_slurm(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / RENDERED_FOLDERS["all at once"]
    run = slurm_dnnbench(
        "sweep", "framework=noop", "cluster=slurm", "cluster.request_gpus=false", "cluster.cpus_per_gpu=1",
        "cluster.time_limit_min=5", "model.time_limit_min=null", "seed=1,2", "--sweep-dir", str(folder), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    waited = slurm_dnnbench("wait", str(folder), "--timeout", "240", "--interval", "2", cwd=tmp_path, timeout=300)
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    (submission,) = ledger_rows(folder, "SELECT job_id, job_name FROM submissions")
    logs = sorted(p.name for p in (folder / "jobs").iterdir() if p.suffix in (".out", ".err"))
    job = submission["job_id"]
    assert logs == [f"{job}_0.err", f"{job}_0.out", f"{job}_1.err", f"{job}_1.out"]
    statuses = json.loads(slurm_dnnbench("status", "--json", str(folder), cwd=tmp_path).stdout)
    assert [s["state"] for s in statuses] == ["completed", "completed"]
    # Nothing ran the folder's text, and no log landed where a % pattern or a quote would point.
    assert not list(tmp_path.rglob("PWNED*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
    script = (folder / "jobs" / f"{submission['job_name']}.sh").read_text()
    _assert_reads_back(script, folder, tmp_path)


@pytest.mark.slurm
def test_a_sweep_folder_with_a_newline_never_reaches_sbatch(slurm_cluster, tmp_path: Path) -> None:  # noqa: F811
    run = slurm_dnnbench(
        "sweep", "framework=noop", "cluster=slurm", "cluster.request_gpus=false", "--sweep-dir",
        str(tmp_path / "s\n#SBATCH --partition=nosuch"), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 1 and "control character" in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []
