"""The framework table (jobs/frameworks.py): each framework declared once, loaded lazily, no import cycles."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs import frameworks
from jobs.frameworks import FRAMEWORKS, foreign_knobs
from jobs.launchers import LAUNCHERS, Launcher, get_launcher
from orchestrator.cell_identity import cell_id
from orchestrator.config import compose, resolved

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("jobs", "orchestrator", "analysis", "conf")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _top_level_imports(module: str) -> set[str]:
    """Project modules ``module`` imports when it is imported (not those imported inside functions)."""
    path = REPO / Path(*module.split("."))
    source = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def test_no_project_module_imports_itself_through_a_cycle():
    known = set(_modules())
    graph = {module: {m for m in _top_level_imports(module) if m in known and m != module} for module in known}
    cycles = []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(" → ".join([*path[path.index(target) :], target]))
            elif target not in done:
                visit(target, [*path, target], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(known):
        if module not in done:
            visit(module, [module], done)
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The graph walk above, on two modules that import each other: the check can fail."""
    package = tmp_path / "jobs"
    package.mkdir()
    (package / "a.py").write_text("from jobs.b import x\n")
    (package / "b.py").write_text("import jobs.a\nx = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert "jobs.b" in _top_level_imports("jobs.a") and "jobs.a" in _top_level_imports("jobs.b")


@pytest.mark.parametrize("module", _modules())
def test_every_module_imports_alone(module):
    """A fresh interpreter per module: a cycle or a missing registration shows as an ImportError."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_table_is_read_without_torch():
    code = "import sys, jobs.frameworks, orchestrator.framework_checks; assert 'torch' not in sys.modules, 'torch'"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_each_row_names_real_parts(name):
    from jobs.strategies.base import Strategy, get_strategy

    row = FRAMEWORKS[name]
    assert row.launcher in LAUNCHERS and isinstance(get_launcher(row.launcher), Launcher)
    if row.strategy is not None:
        strategy = get_strategy(name)
        assert issubclass(strategy, Strategy) and strategy.name == name
        assert not inspect.isabstract(strategy)
    for dotted in (row.checks, row.available):
        if dotted:
            assert callable(frameworks.load(dotted)), dotted
    preset = yaml.safe_load((REPO / "conf" / "framework" / f"{name}.yaml").read_text())
    assert preset["name"] == name and preset["launcher"] == row.launcher
    for section in row.knobs:
        assert isinstance(resolved(compose([f"framework={name}"]))[section], dict), section


def test_every_framework_preset_has_a_row_and_colours_differ():
    presets = {path.stem for path in (REPO / "conf" / "framework").glob("*.yaml")}
    assert presets == set(FRAMEWORKS)
    colours = [row.colour for row in FRAMEWORKS.values()]
    assert len(set(colours)) == len(colours)


def test_a_cell_id_ignores_the_knobs_of_other_frameworks_only():
    def cell(*overrides: str) -> str:
        return cell_id(resolved(compose(list(overrides))))

    assert cell("framework=ddp") == cell("framework=ddp", "horovod.fusion_threshold_mb=1", "pipeline.microbatches=2")
    assert cell("framework=horovod") != cell("framework=horovod", "horovod.fusion_threshold_mb=1")
    assert cell("framework=pipeline") != cell("framework=pipeline", "pipeline.microbatches=2")
    assert foreign_knobs("ddp") == frameworks.KNOB_SECTIONS
    assert "horovod" not in foreign_knobs("horovod")


def test_an_unknown_framework_or_launcher_is_refused_before_anything_starts(tmp_path, capsys):
    from orchestrator import cli
    from orchestrator.errors import ExitCode

    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--sweep-dir", str(out), "--dry-run", "framework.name=nope"]) == ExitCode.ERROR
    assert "framework.name=nope: expected one of ddp, fsdp, horovod" in capsys.readouterr().err
    assert cli.main(["sweep", "--sweep-dir", str(out), "framework=ddp", "framework.launcher=mpirun"]) == ExitCode.ERROR
    assert "framework.launcher=mpirun: expected one of horovodrun, noop, torchrun" in capsys.readouterr().err
    assert not out.exists()
