"""The fingerprint sees what changes speed (issue 21 §1): performance variables, the shared
libraries mapped, every installed package; the confound check names each difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import confounds
from analysis.load import comparable_environment
from jobs import environment, schema
from orchestrator import cli

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
needs_jemalloc = pytest.mark.skipif(
    not JEMALLOC.exists() and os.environ.get("DNNBENCH_REQUIRE_JEMALLOC") != "1",
    reason="Debian's libjemalloc2 is not installed (apt-get install libjemalloc2)",
)


def test_performance_variables_are_collected_and_per_rank_ones_are_not() -> None:
    environ = {
        "LD_PRELOAD": str(JEMALLOC),
        "MALLOC_CONF": "narenas:1",
        "OMP_PROC_BIND": "close",
        "KMP_BLOCKTIME": "0",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "NCCL_ALGO": "Ring",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        # per rank or launcher-set: differ between frameworks by construction
        "CUDA_VISIBLE_DEVICES": "0",
        "TORCHELASTIC_RUN_ID": "x",
        "NCCL_SOCKET_IFNAME": "lo",
        "HOROVOD_RANK": "1",
        "HOME": "/root",
    }
    found = environment.performance_variables(environ)
    assert found == {
        "ATEN_CPU_CAPABILITY": "avx2",
        "KMP_BLOCKTIME": "0",
        "LD_PRELOAD": str(JEMALLOC),
        "MALLOC_CONF": "narenas:1",
        "NCCL_ALGO": "Ring",
        "OMP_PROC_BIND": "close",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    }


def test_a_library_is_named_with_its_version_and_a_hash_of_its_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "libcudnn.so.9.1.0", tmp_path / "b" / "libcudnn.so.9.1.0"
    for path, payload in ((first, b"build one"), (second, b"build two")):
        path.parent.mkdir()
        path.write_bytes(payload)
    maps = tmp_path / "maps"
    line = "7f00-7f01 r-xp 00000000 08:01 1234                       {}\n"
    maps.write_text(
        line.format(first) + line.format(tmp_path / "libunrelated.so.1") + "7f02-7f03 rw-p 0 0:0 0 [heap]\n"
    )
    found = environment.loaded_libraries(str(maps))
    assert list(found) == ["libcudnn.so.9.1.0"]
    assert found["libcudnn.so.9.1.0"].startswith("9.1.0 sha256:")
    maps.write_text(line.format(second))
    # the same soname and version, other bytes: another identity
    assert environment.loaded_libraries(str(maps))["libcudnn.so.9.1.0"] != found["libcudnn.so.9.1.0"]


@needs_jemalloc
def test_a_preloaded_allocator_is_seen_in_the_process_maps() -> None:
    code = "import json; from jobs import environment; print(json.dumps(environment.fingerprint(with_torch=False)))"
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": "narenas:1"},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    env = json.loads(run.stdout)
    assert "libjemalloc.so.2" in env["libraries"]
    assert env["variables"]["LD_PRELOAD"] == str(JEMALLOC)
    plain = environment.fingerprint(with_torch=False)
    assert "libjemalloc.so.2" not in plain["libraries"] or os.environ.get("LD_PRELOAD")
    assert schema.environment_hash(env) != schema.environment_hash(
        {**env, "libraries": plain["libraries"], "variables": plain["variables"]}
    )


def test_two_venvs_that_differ_in_one_package_differ_in_hash_and_name_it() -> None:
    env = environment.fingerprint(with_torch=False)
    other = json.loads(json.dumps(env))
    other["packages"] = {**env["packages"], "numpy": "0.0.1"}
    assert schema.environment_hash(env) != schema.environment_hash(other)
    assert environment.packages_hash(env["packages"]) != environment.packages_hash(other["packages"])
    named = confounds.differences(comparable_environment(env), comparable_environment(other))
    assert named == [f"numpy: {env['packages'].get('numpy')} vs 0.0.1".replace("None", confounds.ABSENT)]


def test_differences_name_each_variable_and_library_with_a_dash_for_absent() -> None:
    base = {
        "torch": "2.14.1",
        "variables": {},
        "libraries": {"libgomp.so.1": "1 sha256:aa"},
        "packages": {"torch": "2.14.1"},
    }
    preloaded = {
        **base,
        "variables": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "MALLOC_CONF": "narenas:1"},
        "libraries": {**base["libraries"], "libjemalloc.so.2": "2 sha256:bb"},
    }
    named = confounds.differences(comparable_environment(preloaded), comparable_environment(base))
    assert named == [
        "libjemalloc.so.2: 2 sha256:bb vs –",
        "LD_PRELOAD: /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 vs –",
        "MALLOC_CONF: narenas:1 vs –",
    ]


def test_a_dump_from_before_the_new_fields_keeps_its_hash_and_is_named_once() -> None:
    old = {key: None for key in schema.COMPARABLE_KEYS if key not in schema.ADDED_COMPARABLE_KEYS}
    old.update(python="3.11.2", torch="2.14.1", threads={"OMP_NUM_THREADS": "1"})
    # the hash an old dump stored: over the keys that existed then, exactly as they were hashed
    hashed_then = schema.hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert schema.environment_hash(old) == hashed_then
    new = {**old, "variables": {}, "libraries": {"libgomp.so.1": "1 sha256:aa"}, "packages": {"torch": "2.14.1"}}
    assert schema.environment_hash(new) != hashed_then
    assert confounds.differences(comparable_environment(old), comparable_environment(new)) == [
        "variables, libraries, packages: not recorded vs recorded (a dump from before they were)"
    ]


@needs_jemalloc
def test_the_jemalloc_pair_is_flagged_by_compare_with_the_difference_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21's case: the same cell with and without a preloaded allocator."""
    overrides = [
        "framework=ddp",
        "model=resnet18",
        "gpus=1",
        "dataset=synthetic",
        "steps=3",
        "warmup_steps=1",
        "val_steps=2",
    ]
    assert cli.main(["sweep", "--sweep-dir", str(tmp_path / "a"), *overrides]) == 0
    monkeypatch.setenv("LD_PRELOAD", str(JEMALLOC))
    monkeypatch.setenv("MALLOC_CONF", "narenas:1")
    assert cli.main(["sweep", "--sweep-dir", str(tmp_path / "b"), *overrides]) == 0
    monkeypatch.delenv("LD_PRELOAD")
    capsys.readouterr()
    cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "| yes |" in out  # the "env differs" column
    assert f"LD_PRELOAD: – → {JEMALLOC}" in out
    assert "MALLOC_CONF: – → narenas:1" in out
    assert "libjemalloc.so.2: – → 2 sha256:" in out
