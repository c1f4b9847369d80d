"""Reference files and `dnnbench check`: validation, pass / fail / no reference, the baseline gate,
`aggregate --reference`, and the shipped thesis reference. Through the CLI on synthetic sweeps."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import synthetic_sweeps as synthetic

from analysis.references import read_references
from orchestrator import cli
from orchestrator.errors import ExitCode

HEADER = "framework,model,processes,phase,metric,value,lower,upper,source\n"
STEP = 0.25  # seconds per training step of every rank in these sweeps


def throughput(n: int, step: float = STEP) -> float:
    """Train throughput of a synthetic n-rank cell: n × 32 samples a step / (1.002 × step time)."""
    return n * 32 / (1.002 * step)


def sweep(root: Path, gpus: tuple[int, ...] = (1, 2), *, step: float = STEP, repeats: int = 1, env=None) -> Path:
    for n in gpus:
        for repeat in range(repeats):
            cfg = synthetic.config(gpus=n, repeat=repeat, repeats=repeats)
            # Repeats differ a little so that their CI is an interval, not a point.
            times = [[step * (1 + 0.01 * repeat)] * 6] * n
            synthetic.write_cell(root, cfg, step_times=times, environment=env)
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def reference(tmp_path: Path, rows: str, name: str = "ref.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + rows)
    return path


def check_rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| s |")]


# --------------------------------------------------------------------------------- check --reference ---
def test_check_passes_a_sweep_that_meets_its_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = sweep(tmp_path / "s")
    rows = [f"ddp,resnet18,1,train,samples_per_s,{throughput(1):.3f},2%,2%,lab A100 run\n",
            f"ddp,resnet18,2,train,samples_per_s,{throughput(2) * 1.01:.3f},2%,2%,lab A100 run\n"]  # fmt: skip
    ref = reference(tmp_path, "".join(rows))
    code, out, err = run(capsys, "check", str(folder), "--reference", str(ref))
    assert code == ExitCode.OK, out + err
    rows = check_rows(out)
    assert [r[-2] for r in rows if r[6] == "samples_per_s"] == ["pass", "pass"]
    # The val rows have no reference: said, and no failure.
    assert sorted(r[-2] for r in rows if r[5] == "val") == ["no reference", "no reference"]
    assert "[1] lab A100 run" in out and out.rstrip().endswith("PASSED")


@pytest.mark.parametrize("factor", [1.03, 0.97, 1.5])
def test_check_fails_a_sweep_that_misses_its_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], factor: float
) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))
    ref = reference(tmp_path, f"ddp,resnet18,1,train,samples_per_s,{throughput(1) * factor:.3f},2%,2%,paper\n")
    code, out, _ = run(capsys, "check", str(folder), "--reference", str(ref))
    assert code == ExitCode.CHECK_FAILED == 7
    assert [r[-2] for r in check_rows(out) if r[6]] == ["fail"]
    assert "1 fail" in out and out.rstrip().endswith("FAILED")


def test_derived_metrics_per_process_and_epoch_seconds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = sweep(tmp_path / "s", gpus=(2,))
    per_process = throughput(2) / 2
    epoch = 4096 / throughput(2)  # the synthetic training split has 4096 samples
    ref = reference(tmp_path, f"ddp,resnet18,2,train,samples_per_s_per_process,{per_process:.4f},0.01,0.01,x\n"
                              f"ddp,resnet18,2,train,epoch_s,{epoch:.5f},0.1%,0.1%,x\n")  # fmt: skip
    code, out, _ = run(capsys, "check", str(folder), "--reference", str(ref))
    assert code == 0, out
    measured = {r[6]: float(r[7].replace(",", "")) for r in check_rows(out) if r[6]}
    assert measured["samples_per_s_per_process"] == pytest.approx(per_process, rel=1e-3)
    assert measured["epoch_s"] == pytest.approx(epoch, rel=1e-3)


def test_a_metric_the_run_did_not_measure_fails_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))  # a CPU run: RSS, no CUDA allocator peak
    ref = reference(tmp_path, "ddp,resnet18,1,val,peak_allocated_gib,0.17,2%,2%,thesis\n")
    code, out, _ = run(capsys, "check", str(folder), "--reference", str(ref))
    assert code == ExitCode.CHECK_FAILED
    assert "fail (not measured in this run" in out


@pytest.mark.parametrize(
    ("lower", "upper", "value", "passes"),
    [
        ("10", "10", 95.0, True),  # absolute: 90 … 110
        ("10", "10", 111.0, False),
        ("5%", "inf", 1e9, True),  # one-sided: at least 95
        ("5%", "inf", 94.0, False),
        ("0", "0", 100.0, True),
    ],
)
def test_tolerances_relative_absolute_and_one_sided(
    tmp_path: Path, lower: str, upper: str, value: float, passes: bool
) -> None:
    import pandas as pd

    from analysis.references import check

    refs = read_references(reference(tmp_path, f"ddp,resnet18,1,train,samples_per_s,100,{lower},{upper},s\n"))
    row = {"framework": "ddp", "model": "resnet18", "world_size": 1, "phase": "train", "dataset": "synthetic",
           "precision": "fp32", "batch_size": 32, "throughput": value}  # fmt: skip
    assert check(pd.DataFrame([row]), refs)["status"].tolist() == ["pass" if passes else "fail"]


def test_the_most_specific_reference_wins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))
    path = tmp_path / "ref.csv"
    path.write_text(
        HEADER.replace("source", "batch_size,source")
        + "ddp,resnet18,1,train,samples_per_s,1,2%,2%,,any batch\n"
        + f"ddp,resnet18,1,train,samples_per_s,{throughput(1):.3f},2%,2%,32,batch 32\n"
    )
    code, out, _ = run(capsys, "check", str(folder), "--reference", str(path))
    assert code == 0, out
    assert "[1] batch 32" in out and "any batch" not in out


def test_a_spreadsheet_csv_with_byte_order_mark_and_comments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))
    path = tmp_path / "ref.csv"
    row = f" ddp , resnet18 , 1 , train , samples_per_s , {throughput(1):.3f} , 2% , 2% , sheet\n"
    path.write_text("\ufeff# exported from a spreadsheet\n" + HEADER + row, encoding="utf-8")
    code, out, err = run(capsys, "check", str(folder), "--reference", str(path))
    assert code == 0 and "pass" in out, out + err


def test_yaml_reference_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))
    path = tmp_path / "ref.yaml"
    path.write_text(
        "references:\n"
        f"  - {{framework: ddp, model: resnet18, processes: 1, phase: train, metric: samples_per_s,\n"
        f"     value: {throughput(1) * 2:.3f}, lower: 2%, upper: 2%, source: site acceptance 2026}}\n"
    )
    code, out, _ = run(capsys, "check", str(folder), "--reference", str(path))
    assert code == ExitCode.CHECK_FAILED and "site acceptance 2026" in out


BAD_FILES = {
    "unknown metric": (HEADER + "ddp,resnet18,1,train,flops,1,2%,2%,s\n", "unknown metric 'flops'"),
    "missing column": ("framework,model,processes,phase,metric,value,lower,source\n", "missing column(s) upper"),
    "non-numeric value": (HEADER + "ddp,resnet18,1,train,samples_per_s,fast,2%,2%,s\n", "value must be a number"),
    "NaN value": (HEADER + "ddp,resnet18,1,train,samples_per_s,nan,2%,2%,s\n", "value must be a number"),
    "empty value": (HEADER + "ddp,resnet18,1,train,samples_per_s,,2%,2%,s\n", "missing value(s) for value"),
    "no source": (HEADER + "ddp,resnet18,1,train,samples_per_s,1,2%,2%,\n", "missing value(s) for source"),
    "negative tolerance": (HEADER + "ddp,resnet18,1,train,samples_per_s,1,-2%,2%,s\n", "lower must be ≥ 0"),
    "bad tolerance": (HEADER + "ddp,resnet18,1,train,samples_per_s,1,2%,lots,s\n", "upper must be a number"),
    "bad phase": (HEADER + "ddp,resnet18,1,test,samples_per_s,1,2%,2%,s\n", "phase must be train or val"),
    "fractional processes": (HEADER + "ddp,resnet18,1.5,train,samples_per_s,1,2%,2%,s\n", "processes must be"),
    "zero processes": (HEADER + "ddp,resnet18,0,train,samples_per_s,1,2%,2%,s\n", "processes must be"),
    "unknown column": (HEADER.replace("source", "gpu,source") + "ddp,resnet18,1,train,samples_per_s,1,2%,2%,a,s\n",
                       "unknown column(s) gpu"),
    "extra value": (HEADER + "ddp,resnet18,1,train,samples_per_s,1,2%,2%,s,extra\n", "more values than columns"),
    "duplicate row": (HEADER + "ddp,resnet18,1,train,samples_per_s,1,2%,2%,s\n" * 2, "same configuration"),
    "no rows": (HEADER, "has no rows"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_reference_file_is_an_error_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))
    text, says = BAD_FILES[case]
    path = tmp_path / "ref.csv"
    path.write_text(text)
    for argv in (
        ["check", str(folder), "--reference", str(path)],
        ["aggregate", str(folder), "--reference", str(path)],
    ):
        code, out, err = run(capsys, *argv)
        assert code == ExitCode.ERROR, out + err
        assert err.startswith("Error: ") and says in err and "Traceback" not in err, err
    assert not (folder / "results").exists()  # aggregate wrote nothing


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("ref.yaml", "framework: ddp\n", "expected a list of rows"),
        ("ref.yaml", "- [unclosed\n", "not valid YAML"),
        ("ref.json", "[]", "expected a .csv, .yaml or .yml file"),
        ("absent.csv", None, "does not exist"),
    ],
)
def test_bad_reference_files_other_than_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str | None, says: str
) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))
    if text is not None:
        (tmp_path / name).write_text(text)
    code, _, err = run(capsys, "check", str(folder), "--reference", str(tmp_path / name))
    assert code == ExitCode.ERROR and says in err, err


def test_check_needs_a_reference_or_a_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))
    code, _, err = run(capsys, "check", str(folder))
    assert code == ExitCode.ERROR and "--reference FILE, --baseline OTHER_SWEEP" in err


def test_check_of_something_not_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = reference(tmp_path, "ddp,resnet18,1,train,samples_per_s,1,2%,2%,s\n")
    code, _, err = run(capsys, "check", str(tmp_path / "nowhere"), "--reference", str(ref))
    assert code == ExitCode.NOT_A_SWEEP and err.startswith("Error: ")


# ---------------------------------------------------------------------------------- check --baseline ---
def test_baseline_gate_fails_a_significant_drop_and_names_the_confound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sweep(tmp_path / "before", gpus=(1,), repeats=3)
    other = {**synthetic.BASE_ENVIRONMENT, "torch": "2.15.0"}
    slower = sweep(tmp_path / "slower", gpus=(1,), repeats=3, step=STEP * 1.25, env=other)  # 20 % fewer samples/s
    code, out, _ = run(capsys, "check", str(slower), "--baseline", str(before), "--max-drop", "5%")
    assert code == ExitCode.CHECK_FAILED, out
    assert "FAIL  ddp resnet18 batch 32 × 1 train B/A 0.800" in out
    assert "torch: 2.14.1 → 2.15.0" in out


@pytest.mark.parametrize("drop", ["5%", "0.05", "25%"])
def test_baseline_gate_passes_the_same_speed(tmp_path: Path, capsys: pytest.CaptureFixture[str], drop: str) -> None:
    before = sweep(tmp_path / "before", gpus=(1, 2), repeats=3)
    again = sweep(tmp_path / "again", gpus=(1, 2, 4), repeats=3)
    code, out, _ = run(capsys, "check", str(again), "--baseline", str(before), "--max-drop", drop)
    assert code == 0, out
    assert out.count("  pass  ") == 4 and out.count("no baseline") == 2
    assert "Confound" not in out


def test_a_reference_that_matches_no_row_is_not_a_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gate that judged nothing (every row "no reference") exits 7, never 0."""
    folder = sweep(tmp_path / "s", gpus=(1,))
    ref = reference(tmp_path, f"horovod,resnet50,4,train,samples_per_s,{throughput(1):.3f},2%,2%,paper\n")
    code, out, _ = run(capsys, "check", str(folder), "--reference", str(ref))
    assert code == ExitCode.CHECK_FAILED, out
    assert "0 pass, 0 fail" in out and "NOTHING CHECKED" in out and "PASSED" not in out


def test_a_baseline_with_no_comparable_row_is_not_a_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Grids that share no configuration: every row "no baseline", so nothing is judged: exit 7."""
    before, again = sweep(tmp_path / "before", gpus=(1,)), sweep(tmp_path / "again", gpus=(2,))
    code, out, _ = run(capsys, "check", str(again), "--baseline", str(before))
    assert code == ExitCode.CHECK_FAILED, out
    assert "no baseline" in out and "NOTHING CHECKED" in out and "PASSED" not in out


@pytest.mark.parametrize("drop", ["5", "-1%", "100%", "five"])
def test_a_bad_max_drop_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], drop: str) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))
    code, _, err = run(capsys, "check", str(folder), "--baseline", str(folder), f"--max-drop={drop}")
    assert code == ExitCode.ERROR and "--max-drop" in err, err


# ------------------------------------------------------------------------------- aggregate --reference ---
def test_aggregate_draws_and_reports_references(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = sweep(tmp_path / "s")
    thesis = Path(__file__).parent.parent / "docs" / "reference" / "thesis_resnet50.csv"
    code, out, err = run(capsys, "aggregate", str(folder), "--no-progress", "--reference", str(thesis))
    assert code == 0, out + err
    results = folder / "results"
    assert (results / "reference.png").stat().st_size > 10_000 and (results / "reference.svg").exists()
    html = (results / "report.html").read_text()
    assert "<h2>Reference values</h2>" in html and 'alt="reference"' in html
    # A resnet18 CPU run matches no resnet50 row: none is checked, every row says so.
    with open(results / "reference_check.csv", newline="") as handle:
        assert {r["status"] for r in csv.DictReader(handle)} == {"no reference"}
    svg = (results / "reference.svg").read_text()
    assert "Lisa GPUs" in svg and "on cpu" in svg  # GPU reference vs CPU-scale run, on the figure


def test_aggregate_reference_section_lists_reference_vs_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = sweep(tmp_path / "s", gpus=(1,))
    ref = reference(tmp_path, f"ddp,resnet18,1,train,samples_per_s,{throughput(1) * 2:.1f},2%,2%,site run 2026\n")
    code, out, _ = run(capsys, "aggregate", str(folder), "--no-progress", "--reference", str(ref))
    assert code == 0 and "Reference: 0 check(s) pass, 1 fail" in out
    html = (folder / "results" / "report.html").read_text()
    section = html[html.index("<h2>Reference values</h2>") :]
    value = round(throughput(1) * 2, 1)
    assert "site run 2026" in section and f"<td>{value:,.3f}</td>" in section and ">fail<" in section
    assert f"<td>{throughput(1):,.3f}</td>" in section and f"{value * 0.98:,.3f} – {value * 1.02:,.3f}" in section


# ---------------------------------------------------------------------------------- thesis reference ---
THESIS = {  # seconds per epoch, samples/s per GPU, train and val allocated GB; 1 … 4 GPUs
    "ddp": ([44.4] * 4, [1337] * 4, [0.26] * 4, [0.17] * 4),
    "horovod": ([43.2, 31.7, 21.4, 16.4], [1367, 928, 920, 898],
                [0.25, 0.65, 0.97, 1.30], [0.39, 0.93, 1.40, 1.86]),
    "pipeline": ([40.5, 26.0, 18.5, 14.1], [1466, 1133, 1057, 1042],
                 [0.48, 0.97, 1.46, 1.95], [0.34, 0.70, 1.06, 1.43]),
}  # fmt: skip


def test_the_shipped_thesis_reference_is_the_studys_table() -> None:
    refs = read_references(Path(__file__).parent.parent / "docs" / "reference" / "thesis_resnet50.csv")
    got = {(r.keys["framework"], int(r.keys["processes"]), r.keys["phase"], r.metric): r for r in refs}
    expected = {}
    for framework, (epoch, per_gpu, train_gb, val_gb) in THESIS.items():
        for i, n in enumerate(range(1, 5)):
            expected[(framework, n, "train", "epoch_s")] = epoch[i]
            expected[(framework, n, "train", "samples_per_s_per_process")] = per_gpu[i]
            expected[(framework, n, "train", "peak_allocated_gib")] = train_gb[i]
            expected[(framework, n, "val", "peak_allocated_gib")] = val_gb[i]
    assert {k: v.value for k, v in got.items()} == expected
    assert all(r.keys["model"] == "resnet50" and r.lower.amount == r.upper.amount == 0.02 for r in refs)
    assert all(r.lower.relative and "Lisa GPUs" in r.source and "2020" in r.source for r in refs)
    assert all(math.isclose(r.low, r.value * 0.98) for r in refs)
