"""What the GPU check needs on a machine that may have nothing but PyTorch, checked before it runs.

Standard library only: it runs first on a bare machine, where anything else may be missing.
  python benchmarks/gpu_check_preflight.py imports
      every module the check imports, and torchvision built for this torch; exit 2 with
      one line per missing package (and how to get it) when something is not right.
  python benchmarks/gpu_check_preflight.py wheels DIR
      the wheels ``make gpu-wheels`` left in DIR: one per carried package, and installed
      alone (no site-packages) they import and plan a cell; exit 2 with what is missing.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Need:
    module: str  # what the check imports
    distribution: str  # what pip installs
    carried: bool  # `make gpu-wheels` carries it; torch and torchvision are the machine's


NEEDS = (
    Need("torch", "torch", carried=False),
    Need("torchvision", "torchvision", carried=False),
    # hydra-core and omegaconf (cells are composed by Hydra) and what they import.
    Need("hydra", "hydra-core", carried=True),
    Need("omegaconf", "omegaconf", carried=True),
    Need("antlr4", "antlr4-python3-runtime", carried=True),
    Need("yaml", "PyYAML", carried=True),
    Need("packaging", "packaging", carried=True),
    # The dump schema's typed decoding (jobs/schema/structs.py). Not pure Python: its wheel is built
    # for this machine's Python and platform, which the card's machine must share (x86_64, CPython
    # of the same minor version) or install msgspec itself.
    Need("msgspec", "msgspec", carried=True),
)
CARRIED = tuple(need for need in NEEDS if need.carried)
# A cell planned with only the carried wheels and the standard library: what the check does first.
PLAN_PROBE = (
    "from orchestrator import sweep; "
    "sweep.plan(['framework=ddp', 'model=resnet18', 'dataset=synthetic', 'device=cpu'], check_data=False)"
)


def import_error(module: str) -> str | None:
    """Why ``module`` does not import here, or None."""
    try:
        importlib.import_module(module)
    except Exception as err:  # a broken install raises anything at import
        return " ".join(f"{type(err).__name__}: {err}".split())
    return None


def expected_torchvision(torch_version: str) -> str | None:
    """The torchvision minor series built for a torch version (torch 2.N ↔ torchvision 0.(N+15))."""
    match = re.match(r"2\.(\d+)", torch_version)
    return f"0.{int(match.group(1)) + 15}" if match else None


def torchvision_problem() -> str | None:
    """Why this torchvision does not fit this torch, or None."""
    import torch

    try:
        vision = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return None  # reported as missing
    wanted = expected_torchvision(torch.__version__)
    if wanted is not None and not (vision == wanted or vision.startswith(wanted + ".")):
        return (
            f"torchvision {vision} was not built for this torch {torch.__version__}: install "
            f"torchvision=={wanted}.* from the index this torch came from (pip install 'torchvision=={wanted}.*' "
            "--no-deps), or load the site module that pairs them"
        )
    import torchvision

    if not hasattr(torch.ops.torchvision, "nms"):
        return f"torchvision {vision}'s compiled operators do not load with torch {torch.__version__}"
    del torchvision
    return None


def import_problems() -> list[str]:
    problems = []
    for need in NEEDS:
        error = import_error(need.module)
        if error is not None:
            how = "carried by `make gpu-wheels` (.whl/)" if need.carried else "the machine's own install"
            problems.append(f"{need.distribution} (import {need.module}) missing: {error}; it comes from {how}")
    if import_error("torch") is None and import_error("torchvision") is None:
        problem = torchvision_problem()
        if problem:
            problems.append(problem)
    return problems


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_problems(folder: Path, carried: tuple[Need, ...] = CARRIED) -> list[str]:
    """What the carried wheels in ``folder`` lack, checked as a bare machine would see them."""
    wheels = {_normal(path.name.split("-")[0]): path for path in folder.glob("*.whl")}
    problems = [
        f"no wheel for {need.distribution} in {folder}" for need in carried if _normal(need.distribution) not in wheels
    ]
    if problems:
        return problems
    with tempfile.TemporaryDirectory(prefix="dnnbench-wheels-") as site:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
             "--target", site, *map(str, wheels.values())],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        # -S: no site-packages, so only the standard library, the wheels and this checkout import.
        code = (
            f"import sys; sys.path[:0] = [{site!r}, {str(REPO)!r}]; "
            + "; ".join(f"import {need.module}" for need in carried)
            + f"; {PLAN_PROBE}"
        )
        done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            problems.append(f"the wheels in {folder} alone do not import and plan a cell: {last}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("imports")
    sub.add_parser("wheels").add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    problems = import_problems() if args.what == "imports" else wheel_problems(args.folder)
    if problems:
        what = "this machine cannot run the check yet" if args.what == "imports" else "the wheels are incomplete"
        print(f"gpu-check: {what}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
