"""Where the test suite's time goes: the tests that existed at a baseline commit against those added since.

A suite-time target is set for the suite of its day; later issues add their own end-to-end tests. This
splits one run's ``--durations=0`` report by the tests a baseline commit already collected (same node id,
or the same test function under new parameters) and the tests added since, and names the files the added
time is in::

    make test PYTEST_ARGS="--durations=0 -q -p no:cacheprovider" > /tmp/suite.log
    .venv/bin/python benchmarks/suite_split.py /tmp/suite.log --baseline eaa4982

The baseline's tests are collected in a temporary git worktree of that commit (``pytest --collect-only``,
nothing run). pytest leaves tests under 5 ms out of its report: the sums are of what it reports.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURATION = re.compile(r"^\s*([\d.]+)s (?:call|setup|teardown)\s+(\S+::\S+)")


def seconds_per_test(report: Path) -> dict[str, float]:
    """Node id → its call, setup and teardown seconds, from a ``--durations`` report."""
    found: dict[str, float] = defaultdict(float)
    for line in report.read_text(errors="replace").splitlines():
        match = DURATION.match(line)
        if match:
            found[match.group(2)] += float(match.group(1))
    return dict(found)


def collected_at(commit: str) -> set[str]:
    """The node ids pytest collects at ``commit``."""
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), commit], check=True)
        try:
            listed = subprocess.run(
                [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                cwd=tree, capture_output=True, text=True, check=False,
            )  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    ids = {line.strip() for line in listed.stdout.splitlines() if "::" in line}
    if not ids:
        raise SystemExit(f"pytest collected nothing at {commit}:\n{listed.stdout[-2000:]}{listed.stderr[-2000:]}")
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the output of a pytest run with --durations=0")
    parser.add_argument("--baseline", required=True, help="the commit whose tests count as existing")
    args = parser.parse_args()
    durations = seconds_per_test(args.report)
    if not durations:
        raise SystemExit(f"{args.report}: no durations (run pytest with --durations=0)")
    baseline = collected_at(args.baseline)
    functions = {node.split("[")[0] for node in baseline}
    existing = {node: s for node, s in durations.items() if node in baseline or node.split("[")[0] in functions}
    added = {node: s for node, s in durations.items() if node not in existing}
    added_by_file: dict[str, float] = defaultdict(float)
    for node, seconds in added.items():
        added_by_file[node.split("::")[0]] += seconds
    print(f"{len(baseline)} tests collected at {args.baseline}; {len(durations)} tests reported, "
          f"{sum(durations.values()):.0f} s")  # fmt: skip
    for side, tests in ((f"existing at {args.baseline}", existing), ("added since", added)):
        total = sum(tests.values())
        print(f"{side}: {len(tests)} tests, {total:.0f} s ({total / 60:.1f} min)")
    for name, seconds in sorted(added_by_file.items(), key=lambda item: -item[1]):
        print(f"  {seconds:6.0f} s  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
