"""One registry mechanism (jobs/registry.py) for frameworks, launchers and backends, one refusal."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobs.frameworks import FRAMEWORKS, framework
from jobs.launchers import LAUNCHERS, get_launcher
from jobs.registry import Registry, UnknownNameError, load
from orchestrator.backends import BACKENDS, Backend, get_backend

REPO = Path(__file__).resolve().parents[1]

LOOKUPS: dict[str, tuple[Registry[Any], Callable[[Any], object]]] = {
    "framework.name": (FRAMEWORKS, framework),
    "framework.launcher": (LAUNCHERS, get_launcher),
    "cluster.backend": (BACKENDS, lambda name: get_backend({"backend": name})),
}


@pytest.mark.parametrize("kind", sorted(LOOKUPS))
@pytest.mark.parametrize("name", ["nope", "", None, 3, "DDP "])
def test_an_unknown_name_is_one_error_naming_the_known_ones(kind, name):
    registry, lookup = LOOKUPS[kind]
    with pytest.raises(UnknownNameError) as raised:
        lookup(name)
    err = raised.value
    assert (err.kind, err.name, err.known) == (kind, name, registry.names())
    assert str(err) == f"{kind}={name}: expected one of {', '.join(sorted(registry))}"
    assert isinstance(err, ValueError)  # a bad config value: the CLI's error path, exit code ERROR


def test_every_backend_row_loads_the_backend_it_is_named_by():
    for name in BACKENDS:
        cls = BACKENDS.load(name)
        assert issubclass(cls, Backend) and cls.name == name


def test_a_backend_module_is_imported_only_when_a_sweep_uses_it():
    code = (
        "import sys; from orchestrator.backends import get_backend; "
        "assert 'orchestrator.backends.slurm' not in sys.modules, 'imported early'; "
        "get_backend({'backend': 'local'}); "
        "assert 'orchestrator.backends.slurm' not in sys.modules, 'slurm imported for a local sweep'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_dotted_path_without_its_attribute_is_refused_clearly():
    with pytest.raises(ValueError, match="module:attribute"):
        load("jobs.launchers")
    with pytest.raises(TypeError, match="not a dotted path"):
        FRAMEWORKS.load("ddp")  # a framework's row is a Framework, not one path


def test_an_unknown_backend_stops_a_dry_run_with_the_known_names(tmp_path, capsys):
    from orchestrator import cli
    from orchestrator.errors import ExitCode

    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--sweep-dir", str(out), "--dry-run", "cluster.backend=nope"]) == ExitCode.ERROR
    assert "cluster.backend=nope: expected one of local, slurm" in capsys.readouterr().err
    assert not out.exists()
