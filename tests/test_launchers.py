"""jobs/launchers.py: the exact torchrun command for one node and for several."""

from __future__ import annotations

import pytest
from conftest import launch_spec as spec

from jobs.launchers import PORT_BASE, PORT_SPAN, get_launcher, rendezvous_port


def test_one_node_is_standalone_with_an_os_chosen_port():
    argv = get_launcher("torchrun").command(spec())
    assert argv == [
        "/opt/venv/bin/python", "-m", "torch.distributed.run",
        "--standalone", "--nnodes", "1",
        "--nproc_per_node", "4",
        "-m", "jobs.entry", "/sweeps/s/cells/abc/cell.json", "/sweeps/s/cells/abc/attempt_0",
    ]  # fmt: skip


@pytest.mark.parametrize("node_rank", [0, 1])
def test_two_nodes_meet_at_the_first_host_on_a_port_from_the_job_id(node_rank):
    # Static rendezvous: the node rank alone says which node hosts the store (never a name lookup).
    argv = get_launcher("torchrun").command(
        spec(nnodes=2, nproc_per_node=2, node_rank=node_rank, hosts=("10.0.0.7", "10.0.0.8"))
    )
    assert argv == [
        "/opt/venv/bin/python", "-m", "torch.distributed.run",
        "--nnodes", "2",
        "--node_rank", str(node_rank),
        "--rdzv_backend", "static",
        "--master_addr", "10.0.0.7",
        "--master_port", "23456",  # 20000 + 123456 % 20000
        "--rdzv_id", "dnnbench-123456",
        "--nproc_per_node", "2",
        "-m", "jobs.entry", "/sweeps/s/cells/abc/cell.json", "/sweeps/s/cells/abc/attempt_0",
    ]  # fmt: skip


def test_torchrun_starts_on_every_node():
    assert get_launcher("torchrun").per_node is True


def test_different_job_ids_get_different_ports_in_range():
    numeric = [str(n) for n in range(4_000_000, 4_000_200)]
    array_tasks = ["4000000_0", "4000000_1", "4000000_2"]
    ports = [rendezvous_port(job) for job in numeric + array_tasks]
    assert len(set(ports[:200])) == 200, "consecutive Slurm job ids share a rendezvous port"
    assert len(set(ports[200:])) == 3, "tasks of one array share a rendezvous port"
    assert all(PORT_BASE <= p < PORT_BASE + PORT_SPAN for p in ports)
    assert PORT_BASE >= 1024 and PORT_BASE + PORT_SPAN <= 65536
    # Slurm job ids grow without bound: still in the window.
    assert PORT_BASE <= rendezvous_port(str(2**40 + 7)) < PORT_BASE + PORT_SPAN


def test_the_same_job_id_gives_the_same_port_on_every_node():
    assert rendezvous_port("987654") == rendezvous_port("987654") == PORT_BASE + 987654 % PORT_SPAN


def test_unknown_launcher_names_the_known_ones():
    with pytest.raises(ValueError, match=r"framework.launcher=mpirun: expected one of .*torchrun"):
        get_launcher("mpirun")


@pytest.mark.parametrize("node_rank", [0, 1])
def test_torchrun_takes_the_store_host_from_the_node_rank_and_the_address_given(node_rank):
    """Read back by torch's own parser and rendezvous registry (torch.distributed.run): a static
    rendezvous at the given address whose store is hosted by node rank 0 (``is_master = rank == 0``)
    and whose ranks meet there; no host name is looked up or compared."""
    pytest.importorskip("torch")
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler
    from torch.distributed.run import config_from_args, parse_args

    argv = get_launcher("torchrun").command(
        spec(nnodes=2, nproc_per_node=2, node_rank=node_rank, hosts=("10.0.0.7", "10.0.0.8"))
    )
    config, _, _ = config_from_args(parse_args(argv[3:]))
    params = RendezvousParameters(
        backend=config.rdzv_backend, endpoint=config.rdzv_endpoint, run_id=config.run_id,
        min_nodes=config.min_nodes, max_nodes=config.max_nodes, **config.rdzv_configs,
    )  # fmt: skip
    handler = get_rendezvous_handler(params)
    assert type(handler).__name__ == "StaticTCPRendezvous"
    assert (handler.master_addr, handler.master_port, handler.rank) == ("10.0.0.7", 23456, node_rank)
    assert handler.use_agent_store, "the ranks meet at the agent's store: MASTER_ADDR is the address given"
