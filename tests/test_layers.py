"""The layers hold: conf ← jobs ← orchestrator ← analysis (docs/architecture.md).

Imports, inside functions too, are import-linter's contracts in pyproject.toml; code loaded by a
dotted path held in a string (a framework row's strategy and checks, a backend) is no import, so
the strings are read here. Each check is also shown to fail on a planted violation.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("conf", "jobs", "orchestrator", "analysis")  # each may name only those before it, and itself
# `dnnbench` is one program: its parser hands the analysis subcommands on (pyproject.toml says so too).
ALLOWED_UPWARD = {("orchestrator.cli", "analysis.cli")}


def _lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if linter is None:
        pytest.fail("lint-imports is not installed: `pip install -e .[dev]` installs import-linter")
    return subprocess.run(
        [linter, str(config), "--no-cache"], cwd=cwd, capture_output=True, text=True,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}, timeout=300,
    )  # fmt: skip


def test_the_import_contracts_hold() -> None:
    done = _lint_imports(ROOT / "pyproject.toml", ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_an_import_across_the_layers_breaks_a_contract(tmp_path: Path) -> None:
    for package in LAYERS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    # A job module that imports the orchestrator inside a function: still an import.
    (tmp_path / "jobs" / "sneaky.py").write_text("def f():\n    from orchestrator import ledger\n    return ledger\n")
    (tmp_path / "orchestrator" / "ledger.py").write_text("")
    (tmp_path / "orchestrator" / "cli.py").write_text("import analysis.cli\n")  # the one allowed upward import
    (tmp_path / "analysis" / "cli.py").write_text("")
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text())
    done = _lint_imports(config, tmp_path)
    assert done.returncode != 0
    assert "jobs.sneaky -> orchestrator.ledger" in done.stdout


def _layer(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def _is_module(root: Path, dotted: str) -> bool:
    parts = dotted.split(".")
    return all(p.isidentifier() for p in parts) and (root / Path(*parts)).with_suffix(".py").exists()


def dotted_paths_named(root: Path) -> list[tuple[str, str]]:
    """(module, named module) for every string constant that names a project module by dotted path
    (``pkg.mod`` or ``pkg.mod:attr``), in every module of the layers under ``root``."""
    found = []
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            strings = (n.value for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, ast.Constant))
            for text in strings:
                target = text.split(":")[0] if isinstance(text, str) else ""
                if _layer(target) is not None and "." in target and _is_module(root, target):
                    found.append((module, target))
    return found


def upward_names(root: Path) -> list[str]:
    return [
        f"{module} names {target}"
        for module, target in dotted_paths_named(root)
        if (_layer(target) or 0) > (_layer(module) or 0) and (module, target) not in ALLOWED_UPWARD
    ]


def test_no_module_loads_code_of_a_layer_above_it_by_a_dotted_path() -> None:
    named = dotted_paths_named(ROOT)
    assert any(target.startswith("jobs.checks.") for _, target in named), "the framework rows are read"
    assert upward_names(ROOT) == []


def test_a_dotted_path_to_a_layer_above_is_seen(tmp_path: Path) -> None:
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "orchestrator" / "checks.py").write_text("")
    (tmp_path / "jobs" / "table.py").write_text('ROW = {"checks": "orchestrator.checks:check"}\n')
    assert upward_names(tmp_path) == ["jobs.table names orchestrator.checks"]
