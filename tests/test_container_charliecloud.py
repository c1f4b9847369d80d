"""One real cell inside a real Charliecloud image (issue 21 §6), opt-in.

The image is a Debian minbase root built by scripts/container-image.sh (about 30 s from Debian's
apt mirror, no image registry). The interpreter and the venv are bind-mounted at their own paths,
so the ranks import this checkout's torch while their C library, /etc and every system library
come from the image. Each rank's fingerprint must say so itself: the runtime's own variable and
the root mount of the image's folder, not what dnnbench declared.

Opt in with ``DNNBENCH_CONTAINER_IMAGE=/path/to/built/image`` or ``DNNBENCH_RUN_CONTAINER=1``
(builds one into a temporary folder; needs root and ``apt-get install -y debootstrap
charliecloud-runtime``). Once opted in, a missing ch-run or a failed build fails the test:
it never skips then. See docs/environments.md, "Containers".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_DDP, RunCell

from jobs.environment import container_identity

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "container-image.sh"
MARKER = ".dnnbench-image"

pytestmark = [
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.environ.get("DNNBENCH_CONTAINER_IMAGE") or os.environ.get("DNNBENCH_RUN_CONTAINER") == "1"),
        reason="opt-in: set DNNBENCH_CONTAINER_IMAGE=<built image> or DNNBENCH_RUN_CONTAINER=1",
    ),
]


def _interpreter_prefix() -> Path:
    """The prefix of the interpreter the venv was made from: it lies outside the venv."""
    return Path(sys.base_prefix).resolve()


def _mounts() -> list[str]:
    return [str(REPO), str(_interpreter_prefix())]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert shutil.which("ch-run"), "ch-run not found: apt-get install -y charliecloud-runtime"
    given = os.environ.get("DNNBENCH_CONTAINER_IMAGE")
    folder = Path(given) if given else tmp_path_factory.mktemp("image") / "bookworm"
    mount_points = [word for mount in _mounts() for word in ("--mount-point", mount)]
    # Run for a given image too: it adds the mount points this checkout needs, and is a no-op otherwise.
    built = subprocess.run(["bash", str(BUILD_SCRIPT), str(folder), *mount_points], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert (folder / MARKER).is_file(), built.stderr
    return folder.resolve()


def _container_overrides(image: Path) -> list[str]:
    mounts = ",".join(_mounts())
    return [f"env.container={image}", "env.runtime=charliecloud", f"env.mounts=[{mounts}]"]


def test_a_cell_runs_inside_the_image_and_its_fingerprint_says_so(
    image: Path, run_cell_here: RunCell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", os.environ.get("USER") or "root")  # ch-run refuses to start without $USER
    host = container_identity()
    dumps: list[dict[str, Any]] = run_cell_here([*TINY_DDP, *_container_overrides(image)], tmp_path)
    assert len(dumps) == 2
    for dump in dumps:
        inside = dump["environment"]["container"]
        assert inside["runtime"] == "charliecloud", inside
        assert inside["declared"] == f"charliecloud:{image}", inside
        assert inside["root"] is not None and inside["root"].endswith(f":{image}"), (inside, host)
        assert inside["root"] != host["root"]
        assert inside["os"], inside
        assert dump["phases"]["train"]["throughput_samples_per_s"] > 0
    assert host["runtime"] is None, "the test process itself must run outside a container"
