"""The planner finds the optimal contiguous split (checked by brute force) and is fast."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time

import pytest

from jobs.pipeline import planner
from jobs.pipeline.planner import BlockCost, PlanError, Profile, Topology


def _random_profile(rng: random.Random, n: int) -> Profile:
    blocks = [
        BlockCost(
            name=f"b{i}", forward_s=rng.uniform(1e-4, 1e-2), backward_s=rng.uniform(1e-4, 2e-2),
            activation_bytes=rng.randrange(1, 1 << 24), saved_bytes=rng.randrange(1, 1 << 24),
            parameter_bytes=rng.randrange(0, 1 << 26),
        )
        for i in range(n)
    ]
    return Profile("random", [1, 28, 28], 8, "cpu", "fp32", "", blocks)


def _model(profile: Profile, stages: int, replicas: int, microbatches: int, per_node: int):
    topology = Topology(stages * replicas, per_node, intranode_gbps=50.0, interconnect_gbps=1.0)
    return planner._Model(profile.blocks, stages, stages, replicas, microbatches, topology)


@pytest.mark.parametrize("seed", range(40))
def test_dynamic_programme_matches_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 11)
    stages = rng.randint(1, min(n, 5))
    # Small per_node puts some boundaries across nodes: links then matter.
    model = _model(_random_profile(rng, n), stages, rng.choice([1, 2]), rng.choice([1, 4]),
                   per_node=rng.choice([1, 2, 8]))  # fmt: skip
    best, split = planner.optimal_split(model, n)
    brute, _ = planner.brute_force_split(model, n)
    assert best == pytest.approx(brute, rel=1e-12)
    assert model.bottleneck([0, *split, n]) == pytest.approx(best, rel=1e-12)


def test_plan_reports_stages_bottleneck_and_bubble():
    profile = _random_profile(random.Random(1), 12)
    result = planner.plan(profile, stages=3, microbatches=4, topology=Topology(3, 4, 50, 12.5))
    assert [p.start for p in result.stage_plans] == [0, *result.split]
    assert result.stage_plans[-1].stop == 12
    assert result.bottleneck_s == max(max(p.time_s, p.link_in_s) for p in result.stage_plans)
    assert 0 < result.bubble_fraction < 1
    # 1F1B: stage s holds S - s micro-batches' activations.
    assert [p.inflight_microbatches for p in result.stage_plans] == [3, 2, 1]


def test_equal_blocks_give_textbook_bubble():
    blocks = [BlockCost(f"b{i}", 1.0, 2.0, 0, 0, 0) for i in range(8)]
    profile = Profile("flat", [1, 1, 1], 1, "cpu", "fp32", "", blocks)
    result = planner.plan(profile, stages=4, microbatches=6, topology=Topology(4, 4, 1, 1))
    assert result.split == [2, 4, 6]
    assert result.bubble_fraction == pytest.approx((4 - 1) / (6 + 4 - 1))


def test_manual_split_is_used_and_checked():
    profile = _random_profile(random.Random(2), 6)
    topology = Topology(2, 2, 50, 12.5)
    assert planner.plan(profile, stages=2, microbatches=2, topology=topology, split=[4]).split == [4]
    with pytest.raises(PlanError, match="increase strictly"):
        planner.plan(profile, stages=3, microbatches=2, topology=topology, split=[4, 4])
    with pytest.raises(PlanError, match="need 1 first-block"):
        planner.plan(profile, stages=2, microbatches=2, topology=topology, split=[1, 2])


def test_more_stages_than_blocks_is_an_error():
    profile = _random_profile(random.Random(3), 3)
    with pytest.raises(PlanError, match="at most 3 stages"):
        planner.plan(profile, stages=4, microbatches=1, topology=Topology(4, 4, 1, 1))


def test_choose_shape_prefers_replication_when_links_are_slow():
    blocks = [BlockCost(f"b{i}", 1e-3, 1e-3, 1 << 30, 0, 1000) for i in range(8)]
    profile = Profile("fat-links", [1, 1, 1], 1, "cpu", "fp32", "", blocks)
    best = planner.choose_shape(profile, processes=4, microbatches=4,
                                topology=Topology(4, 4, 1.0, 1.0))  # fmt: skip
    assert (best.stages, best.replicas) == (1, 4)


def test_planning_200_blocks_on_64_processes_under_a_second():
    profile = _random_profile(random.Random(4), 200)
    started = time.perf_counter()
    planner.plan(profile, stages=64, microbatches=8, topology=Topology(64, 4, 50, 12.5))
    assert time.perf_counter() - started < 1.0


def test_planner_does_not_import_torch():
    import subprocess

    code = "import sys, jobs.pipeline.planner; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("model_name", "stages"),
    [pytest.param("resnet50", 4, marks=pytest.mark.slow), ("efficientnet_b0", 4)],
)
def test_real_profiles_reach_the_brute_force_optimum(model_name, stages):
    torch = pytest.importorskip("torch")
    from jobs.models import build_model
    from jobs.pipeline.profiler import profile_blocks

    torch.manual_seed(0)
    profile = profile_blocks(build_model(model_name), model_name, [1, 28, 28], 2,
                             torch.device("cpu"), warmup=1, repeats=1)  # fmt: skip
    n = len(profile.blocks)
    model = _model(profile, stages, 1, 4, per_node=4)
    brute, _ = planner.brute_force_split(model, n)
    chosen = planner.plan(profile, stages=stages, microbatches=4, topology=model.topology)
    assert chosen.bottleneck_s <= 1.05 * brute


def test_a_profile_says_when_it_was_measured_on_a_busy_machine():
    quiet = dataclasses.replace(_random_profile(random.Random(0), 4), spread=0.08, load_per_core=0.3)
    assert not quiet.noisy
    assert dataclasses.replace(quiet, spread=0.4).noisy
    assert dataclasses.replace(quiet, load_per_core=1.5).noisy
    # A profile cached before these were recorded is read as it is: nothing known, no warning.
    raw = json.loads(quiet.to_json())
    del raw["spread"], raw["load_per_core"]
    old = Profile.from_json(json.dumps(raw))
    assert old.spread is None and not old.noisy


def test_a_measured_profile_records_its_spread_and_load_and_warns_when_noisy():
    torch = pytest.importorskip("torch")
    from jobs.models import build_model
    from jobs.pipeline.profiler import format_profile, profile_blocks

    profile = profile_blocks(build_model("resnet18"), "resnet18", [1, 28, 28], 2,
                             torch.device("cpu"), warmup=1, repeats=3)  # fmt: skip
    assert profile.spread is not None and profile.spread >= 0
    assert profile.load_per_core is not None and profile.load_per_core >= 0
    assert "measured with repeat spread" in format_profile(profile)
    warning = "warning: measured on a busy or unsteady machine"
    assert (warning in format_profile(profile)) == profile.noisy
    assert warning in format_profile(dataclasses.replace(profile, spread=0.5))
