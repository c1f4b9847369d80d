"""What a dry run planned, for another program to read: `--dry-run --list --json` and `--cfg [CELL_ID]`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import cli
from orchestrator.cell_identity import cell_id
from orchestrator.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
GRID = ["framework=ddp,noop", "gpus=1,2", "steps=3"]


def _dnnbench(*argv: str) -> subprocess.CompletedProcess[str]:
    """A real `dnnbench` process: its stdout is what a pipe reads, progress bar included."""
    code = "import sys; from orchestrator.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, env=env)


def _json_cells(sweep_dir: Path) -> list[dict]:
    done = _dnnbench("sweep", "--sweep-dir", str(sweep_dir), "--dry-run", "--list", "--json", *GRID)
    assert done.returncode == ExitCode.OK, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]  # every line of stdout is one cell


def test_dry_run_list_json_prints_every_cell_with_its_full_config_and_nothing_else(tmp_path):
    cells = _json_cells(tmp_path / "sweep")
    assert len(cells) == 4 and len({c["id"] for c in cells}) == 4
    for cell in cells:
        assert set(cell) == {"id", "label", "unavailable", "overrides", "config"}
        assert cell_id(cell["config"]) == cell["id"]  # the whole config the id is made from
        assert cell["label"].startswith(cell["config"]["framework"]["name"] + "/")
    assert {(c["config"]["framework"]["name"], c["config"]["gpus"]) for c in cells} == {
        ("ddp", 1), ("ddp", 2), ("noop", 1), ("noop", 2)
    }  # fmt: skip
    assert not (tmp_path / "sweep").exists()


def test_cfg_prints_the_chosen_cell_as_yaml_and_writes_nothing(tmp_path):
    sweep_dir = tmp_path / "sweep"
    by_id = {c["id"]: c for c in _json_cells(sweep_dir)}
    chosen = sorted(by_id)[1]
    done = _dnnbench("sweep", "--sweep-dir", str(sweep_dir), "--cfg", chosen, *GRID)
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout.startswith(f"# cell {chosen}: {by_id[chosen]['label']}\n")
    assert yaml.safe_load(done.stdout) == by_id[chosen]["config"]
    # A grid of one cell needs no id; an override straight after --cfg is an override.
    one = _dnnbench("sweep", "--sweep-dir", str(sweep_dir), "--cfg", "framework=noop", "gpus=2", "steps=3")
    assert one.returncode == ExitCode.OK, one.stderr
    assert cell_id(yaml.safe_load(one.stdout)) == next(
        i for i, c in by_id.items() if c["label"].startswith("noop/") and c["config"]["gpus"] == 2
    )
    assert not sweep_dir.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cfg", *GRID], "--cfg: the grid plans 4 cells; name one"),
        (["--cfg", "0123456789ab", *GRID], "--cfg 0123456789ab: no cell of this grid has that id"),
    ],
)
def test_a_cell_the_grid_does_not_plan_is_refused(tmp_path, capsys, argv, message):
    sweep_dir = tmp_path / "sweep"
    assert cli.main(["sweep", "--sweep-dir", str(sweep_dir), *argv]) == ExitCode.ERROR
    assert message in capsys.readouterr().err
    assert not sweep_dir.exists()


# A grid of noop cells: without the refusal, the ignored option's sweep runs in seconds (and writes its folder).
NOOP_GRID = ["framework=noop", "seed=1,2", "steps=1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--json"], "use it as --dry-run --list --json"),
        (["--dry-run", "--json"], "use it as --dry-run --list --json"),
        (["--list", "--json"], "use it as --dry-run --list --json"),
        (["--cfg", "--list", "--dry-run"], "choose one"),
        (["--list"], "--list prints the cells a dry run plans: use it as --dry-run --list"),
    ],
)
def test_an_output_option_that_would_be_ignored_is_a_usage_error_and_nothing_is_written(tmp_path, argv, message):
    sweep_dir = tmp_path / "sweep"
    done = _dnnbench("sweep", "--sweep-dir", str(sweep_dir), *argv, *NOOP_GRID)
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()  # one line, and no traceback
    assert line.startswith("Error: ") and message in line
    assert not sweep_dir.exists() and "planning cells" not in done.stderr + done.stdout


def test_the_options_are_refused_before_the_grid_is_planned(tmp_path, capsys):
    # A grid that cannot be planned: the option's refusal, not the grid's, is what the command says.
    sweep_dir = tmp_path / "sweep"
    assert cli.main(["sweep", "--sweep-dir", str(sweep_dir), "--list", "framework=no_such_framework"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--list prints the cells a dry run plans" in err and "no_such_framework" not in err
    assert not sweep_dir.exists()
