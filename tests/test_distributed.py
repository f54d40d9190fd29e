"""distributed.py: the World torchrun describes, each rank's share of a batch, the threads."""

from __future__ import annotations

import pytest
import torch

from mnistcli.distributed import (
    SINGLE,
    World,
    batches_per_epoch,
    cpu_threads,
    rank_slice,
    shard_range,
    world_from_env,
)
from mnistcli.errors import ConfigError


def test_no_torchrun_is_a_world_of_one():
    assert world_from_env({}) == SINGLE
    assert SINGLE.is_main and not SINGLE.is_distributed


def test_torchrun_environment():
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    world = world_from_env(env)
    assert world == World(rank=3, local_rank=1, size=4, local_size=2)
    assert world.is_distributed and not world.is_main


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "x", "WORLD_SIZE": "2"},
        {"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"},
        {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "1"},
    ],
)
def test_inconsistent_environment_is_refused(env):
    with pytest.raises(ConfigError):
        world_from_env(env)


@pytest.mark.parametrize("n,batch,size", [(1000, 64, 1), (1000, 64, 2), (1001, 64, 3), (7, 4, 4)])
def test_rank_shares_are_disjoint_and_cover_each_global_batch(n, batch, size):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    batches = batches_per_epoch(n, batch, World(size=size, local_size=size))
    seen: list[int] = []
    for b in range(batches):
        shares = [
            rank_slice(perm, b, batch, World(rank=r, local_rank=r, size=size, local_size=size))
            for r in range(size)
        ]
        assert all(len(s) >= 1 for s in shares)  # no rank ever idles (it would stall the rest)
        assert max(len(s) for s in shares) - min(len(s) for s in shares) <= 1
        assert all(len(s) <= batch for s in shares)
        flat = torch.cat(shares).tolist()
        assert sorted(flat) == sorted(perm[b * batch * size : (b + 1) * batch * size].tolist())
        seen += flat
    assert len(seen) == len(set(seen))  # disjoint over the whole epoch
    assert n - len(seen) < size  # at most a sliver too small to share is left out


def test_world_of_one_batches_are_a_single_process_batches():
    perm = torch.randperm(130)
    assert batches_per_epoch(130, 64, SINGLE) == 3
    assert torch.equal(rank_slice(perm, 2, 64, SINGLE), perm[128:])


def test_cpu_threads_share_the_cores():
    assert cpu_threads(SINGLE, cpus=16) == 16
    assert cpu_threads(World(rank=1, local_rank=1, size=4, local_size=4), cpus=16) == 4
    assert cpu_threads(World(rank=0, local_rank=0, size=4, local_size=4), cpus=2) == 1


def test_shard_range_splits_evaluation():
    ranges = [shard_range(10, World(rank=r, local_rank=r, size=3, local_size=3)) for r in range(3)]
    assert [list(r) for r in ranges] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(shard_range(10, SINGLE)) == list(range(10))
