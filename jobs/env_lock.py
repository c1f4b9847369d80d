"""A rank runs in the environment its cell declares, or fails before it measures.

``dnnbench env create`` writes an environment's lock (``lock.json``): ``pip freeze`` of its
interpreter and the fingerprint of :mod:`jobs.environment` taken by that interpreter, with the
environment's variables set (``python -m jobs.env_lock snapshot``). Each rank compares its own
fingerprint with the lock before it builds anything: the Python version, every installed
distribution (one missing, one more, another version), the memory allocators mapped (a preload
that is missing or another one), a library of the same name but other bytes, and each variable
the lock or the cell declares. A difference raises :class:`EnvironmentMismatch` (failure class
``env_mismatch``), every difference named in the reason. A cell whose ``env.lock`` is null
(``env=current``) is checked only for its declared variables.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.failures import RankFailure

LOCK_FORMAT = "dnnbench.env-lock"
LOCK_VERSION = 1
# Allocators a preload brings (or a build links): one more, one fewer or another is another environment.
ALLOCATOR_LIBRARY = re.compile(r"^lib(jemalloc|tcmalloc\w*|mimalloc|hoard)")


class EnvironmentMismatch(RankFailure):
    """The rank's software differs from the lock of the environment its cell declares."""

    failure_class = "env_mismatch"


def snapshot() -> dict[str, Any]:
    """The lock of the interpreter running this: pip freeze and the fingerprint (torch imported,
    as on a rank, so the libraries torch maps are among those recorded)."""
    from jobs.environment import fingerprint

    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=False
    )
    return {
        "format": LOCK_FORMAT,
        "version": LOCK_VERSION,
        "python_executable": sys.executable,
        "pip_freeze": freeze.stdout.splitlines() if freeze.returncode == 0 else None,
        "fingerprint": fingerprint(),
    }


def read_lock(path: str | Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EnvironmentMismatch(f"the environment's lock {path} cannot be read: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != LOCK_FORMAT or not isinstance(doc.get("fingerprint"), dict):
        raise EnvironmentMismatch(f"{path} is not an environment lock (format {LOCK_FORMAT})")
    return doc


def package_differences(locked: Mapping[str, str], here: Mapping[str, str]) -> list[str]:
    """``numpy: 2.3.1 in the lock, 2.4.0 here`` for every distribution that differs, by name."""
    return [
        f"{name}: {locked.get(name) or 'not'} in the lock, {here.get(name) or 'not installed'} here"
        for name in sorted({*locked, *here})
        if locked.get(name) != here.get(name)
    ]


def library_differences(locked: Mapping[str, str], here: Mapping[str, str]) -> list[str]:
    """Allocators mapped in one and not the other, and libraries of one name but other bytes."""
    differences = []
    for name in sorted({*locked, *here}):
        ours, theirs = here.get(name), locked.get(name)
        if ALLOCATOR_LIBRARY.match(name) and (ours is None) != (theirs is None):
            differences.append(f"{name}: {'loaded' if theirs else 'not loaded'} in the lock, "
                               f"{'loaded' if ours else 'not loaded'} here")  # fmt: skip
        elif ours is not None and theirs is not None and ours != theirs:
            differences.append(f"{name}: {theirs} in the lock, {ours} here")
    return differences


def variable_differences(declared: Mapping[str, str], environ: Mapping[str, str], source: str) -> list[str]:
    return [
        f"{name}: {value!r} {source}, " + (f"{environ[name]!r} here" if name in environ else "unset here")
        for name, value in sorted(declared.items())
        if environ.get(name) != value
    ]


def differences(env: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> list[str]:
    """Every way this process differs from the environment ``env`` (a cell's ``env`` section) declares."""
    from jobs.environment import installed_packages, loaded_libraries

    environ = os.environ if environ is None else environ
    declared = {str(k): str(v) for k, v in (env.get("variables") or {}).items()}
    found = variable_differences(declared, environ, "declared")
    if not env.get("lock"):
        return found
    lock = read_lock(str(env["lock"]))
    locked = lock["fingerprint"]
    # Against the lock too: a definition edited after create (another MALLOC_CONF) is another environment.
    found += variable_differences(dict(lock.get("variables") or {}), environ, "in the lock")
    if locked.get("python") != platform.python_version():
        found.append(f"python: {locked.get('python')} in the lock, {platform.python_version()} here")
    found += package_differences(locked.get("packages") or {}, installed_packages())
    found += library_differences(locked.get("libraries") or {}, loaded_libraries())
    return found


def check(env: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`EnvironmentMismatch` naming every difference; nothing is measured then."""
    found = differences(env, environ)
    if found:
        where = f" (lock {env['lock']})" if env.get("lock") else ""
        raise EnvironmentMismatch(
            f"this rank does not run in environment {env.get('name')!r}{where}: " + "; ".join(found)
        )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["snapshot"]:
        print("usage: python -m jobs.env_lock snapshot   (prints this interpreter's lock as JSON)", file=sys.stderr)
        return 2
    json.dump(snapshot(), sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
