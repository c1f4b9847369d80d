"""DDP end to end on CPU: real torchrun, real gloo processes, real dumps; MNIST learns.

No mocks: every test here starts ``python -m torch.distributed.run`` through
orchestrator.runner.run_cell, exactly as a sweep does.
"""

from __future__ import annotations

import pytest

from jobs import schema
from jobs.schema import COMPARABLE_KEYS, environment_hash
from orchestrator.errors import ConfigError
from orchestrator.sweep import plan


def test_two_ranks_each_write_a_valid_dump(tiny_ddp_dumps):
    assert sorted(d["rank"] for d in tiny_ddp_dumps) == [0, 1]
    assert len({d["cell_id"] for d in tiny_ddp_dumps}) == 1
    for doc in tiny_ddp_dumps:
        assert (doc["world_size"], doc["local_rank"], doc["node_rank"]) == (2, doc["rank"], 0)
        assert (doc["framework"], doc["model"], doc["dataset"]) == ("ddp", "resnet18", "synthetic")
        assert doc["device_type"] == "cpu" and doc["memory_kind"] == "rss"
        assert doc["counts_samples"] is True


def test_each_rank_records_throughput_and_step_times(tiny_ddp_dumps):
    for doc in tiny_ddp_dumps:
        config, train, val = doc["config"], doc["phases"]["train"], doc["phases"]["val"]
        steps, batch, val_steps = config["steps"], config["batch_size"], config["val_steps"]
        assert (steps, batch, val_steps) == (3, 16, 2)  # conftest.TINY_DDP
        assert train["timed_steps"] == steps and len(train["step_times_s"]) == steps
        assert train["samples"] == steps * batch
        # The first validation step is warm-up: counted for accuracy, not timed.
        assert val["timed_steps"] == val_steps - 1 and val["warmup_steps"] == 1
        assert val["samples"] == (val_steps - 1) * batch and val["evaluated"] == val_steps * batch
        for phase in (train, val):
            assert phase["throughput_samples_per_s"] > 0
            assert phase["throughput_samples_per_s"] == pytest.approx(phase["samples"] / phase["seconds"])
            assert all(t > 0 for t in phase["step_times_s"])
            # The steps cover the phase: nothing large happens outside the step clock.
            assert 0.8 * phase["seconds"] <= sum(phase["step_times_s"]) <= phase["seconds"] * 1.0001
        assert train["loss"] > 0 and 0 <= val["accuracy"] <= 1


def test_cpu_memory_is_peak_rss(tiny_ddp_dumps):
    for doc in tiny_ddp_dumps:
        for name in ("train", "val"):
            memory = doc["phases"][name]["memory"]
            assert memory["kind"] == "rss"
            assert memory["peak_rss_bytes"] > 100 * 2**20  # torch + resnet18 are well above 100 MiB
            assert memory["end_rss_bytes"] > 0
            assert memory["peak_allocated_bytes"] is None and memory["peak_reserved_bytes"] is None


def test_fingerprint_and_its_hash(tiny_ddp_dumps):
    hashes = set()
    for doc in tiny_ddp_dumps:
        env = doc["environment"]
        assert set(COMPARABLE_KEYS) <= set(env)
        assert env["torch"] and env["python"] and env["hostname"]
        assert doc["environment_hash"] == environment_hash(env)
        hashes.add(doc["environment_hash"])
    assert len(hashes) == 1, "two ranks on one machine differ in a comparable key"


def test_parameters_are_identical_across_ranks_after_training(tiny_ddp_dumps):
    digests = [doc["extra"]["parameter_digests"] for doc in tiny_ddp_dumps]
    assert len(digests[0]) == 2
    # Each rank saw different samples: only gradient averaging keeps the replicas equal.
    assert digests[0] == digests[1]
    assert digests[0][0] == digests[0][1]


def test_threads_are_set_as_configured(tiny_ddp_dumps):
    for doc in tiny_ddp_dumps:
        threads = doc["environment"]["threads"]
        wanted = doc["config"]["threads_per_process"]
        assert threads["OMP_NUM_THREADS"] == str(wanted)
        assert threads["MKL_NUM_THREADS"] == str(wanted)
        assert threads["torch_intra_op_threads"] == wanted


def test_numeric_settings_are_recorded(tiny_ddp_dumps):
    for doc in tiny_ddp_dumps:
        assert doc["config"]["cudnn_benchmark"] is True
        # Recorded, and as a knob of the config not in the environment hash (sweeping it is no confound).
        assert "cudnn_benchmark" not in doc["environment"]["numerics"]
        assert set(doc["environment"]["numerics"]) == set(schema.ADDED_ENVIRONMENT_DEFAULTS["numerics"])


def test_the_dump_carries_the_resolved_config_and_data_record(tiny_ddp_dumps):
    for doc in tiny_ddp_dumps:
        assert doc["config"]["gpus"] == 2 and doc["config"]["batch_size"] == 16
        assert doc["extra"]["data"] == {
            "name": "synthetic", "on_device": True, "root": None, "train_samples": 128, "val_samples": 64,
            "pinned": False,
        }  # fmt: skip


MNIST_ONE_EPOCH = [
    "dataset=mnist", "epochs=1", "gpus=1", "batch_size=64", "model=resnet18", "dataset.on_device=true",
    "lr=0.05", "momentum=0.9", "seed=0", "warmup_steps=5", "val_steps=null",
]  # fmt: skip
# What this test proves is that training learns, not how well one machine's kernels happen to do.
# One epoch is 125 steps at lr 0.05 with momentum 0.9: the validation accuracy of that end point
# (BatchNorm in eval mode, running statistics of the last steps) moves with the floating-point
# order of the CPU's kernels, so it differs between machines while data order and threads do
# not. Measured with this cell: 0.964 (seed 0), 0.948, 0.952 (seeds 1, 2) on an AVX-512/AMX
# machine; 0.921 and 0.922 on the same machine with its kernels held to AVX2 and to SSE4.1
# (ONEDNN_MAX_CPU_ISA + ATEN_CPU_CAPABILITY); 0.7765 on a machine whose CPU this project does
# not know. Chance is 0.1: 0.5 is five times chance and 0.27 below the lowest value seen.
LEARNED_ACCURACY = 0.5
# Cross-entropy of a uniform guess over 10 classes is ln 10 ≈ 2.30.
LEARNED_TRAIN_LOSS = 1.0


@pytest.mark.slow
def test_resnet18_learns_mnist_in_one_epoch(mnist_root, run_cell_here, tmp_path):
    (doc,) = run_cell_here([*MNIST_ONE_EPOCH, f"dataset.root={mnist_root}"], tmp_path)
    train, val = doc["phases"]["train"], doc["phases"]["val"]
    assert doc["extra"]["data"]["train_samples"] == 8000 and doc["extra"]["data"]["val_samples"] == 2000
    assert train["timed_steps"] + train["warmup_steps"] == 8000 // 64
    assert val["evaluated"] == 2000
    assert train["loss"] < LEARNED_TRAIN_LOSS, f"last training loss {train['loss']:.3f} after one epoch"
    assert val["accuracy"] >= LEARNED_ACCURACY, f"val accuracy {val['accuracy']:.4f} after one epoch"


def test_the_loader_path_reads_mnist_files(mnist_root, run_cell_here, tmp_path):
    (doc,) = run_cell_here(
        ["dataset=mnist", f"dataset.root={mnist_root}", "dataset.on_device=false", "gpus=1", "batch_size=16",
         "steps=3", "warmup_steps=1", "val_steps=2", "threads_per_process=2"],
        tmp_path,
    )  # fmt: skip
    assert doc["extra"]["data"]["on_device"] is False
    assert doc["extra"]["data"]["root"] == str(mnist_root)
    assert doc["phases"]["train"]["samples"] == 3 * 16 and doc["phases"]["val"]["evaluated"] == 2 * 16
    assert doc["environment"]["threads"]["OMP_NUM_THREADS"] == "2"
    assert doc["environment"]["threads"]["torch_intra_op_threads"] == 2


def test_a_gz_only_mnist_root_is_read_or_refused_at_plan_time(mnist_gz_only_root, run_cell_here, tmp_path):
    overrides = ["dataset=mnist", f"dataset.root={mnist_gz_only_root}", "gpus=1", "batch_size=16", "steps=2",
                 "warmup_steps=1", "val_steps=2"]  # fmt: skip
    try:
        plan(overrides)
    except ConfigError as err:  # refusing before anything runs is one acceptable fix
        assert str(mnist_gz_only_root) in str(err)
        return
    (doc,) = run_cell_here(overrides, tmp_path)  # reading the .gz files is the other
    assert doc["phases"]["val"]["evaluated"] == 32


def test_mnist_is_copied_to_node_local_scratch_first(mnist_root, run_cell_here, tmp_path):
    scratch = tmp_path / "scratch"
    overrides = ["dataset=mnist", f"dataset.root={mnist_root}", "dataset.copy_to_scratch=true",
                 f"cluster.scratch={scratch}", "gpus=1", "batch_size=16", "steps=2", "warmup_steps=1",
                 "val_steps=2", "dataset.train_samples=64", "dataset.val_samples=32"]  # fmt: skip
    (doc,) = run_cell_here(overrides, tmp_path / "run")
    served_from = doc["extra"]["data"]["root"]
    assert served_from.startswith(str(scratch)), served_from
    assert sorted(p.name for p in (scratch / "dnnbench-data" / "MNIST" / "raw").iterdir()) == sorted(
        p.name for p in (mnist_root / "MNIST" / "raw").iterdir()
    )
    assert doc["phases"]["val"]["evaluated"] == 32
