"""distributed.py: the World torchrun describes, each rank's share of a batch, the threads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from mnistcli.checkpoint import load_checkpoint
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
from tests.helpers import run_cli, start_cli


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


# ---------------------------------------------------------------------------------------------
# Real runs under torchrun: 2 processes on the CPU (gloo), on a small real-MNIST subset.

SMALL = ["--limit", "2000", "--val-size", "500", "--epochs", "2", "--patience", "0"]


def _torchrun(n: int, args: list[str], cwd: Path) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node n -m mnistcli train ARGS`, in its own session."""
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n))
    return start_cli("train", *args, cwd=cwd, python_args=torchrun, start_new_session=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _workers(parent: int) -> list[tuple[int, int]]:
    """(pid, RANK) of the processes torchrun started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        rank = [e for e in environ if e.startswith(b"RANK=")]
        if ppid == parent and rank:
            found.append((int(entry.name), int(rank[0][5:])))
    return found


@pytest.mark.slow
def test_two_processes_stop_on_sigterm_resume_and_match_one_process(tmp_path, mnist_root):
    common = [*SMALL, "--data-root", str(mnist_root), "--runs-dir", str(tmp_path / "runs")]
    proc = _torchrun(2, [*common, "--name", "ddp", "-b", "32"], tmp_path)
    run = tmp_path / "runs" / "ddp"
    _wait_for(run / "last.pt", proc)  # epoch 1 done: stop it in epoch 2 (16 batches)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err
    saved = load_checkpoint(run / "last.pt").meta
    assert saved.world_size == 2 and not saved.finished
    assert err.count("SIGTERM: stopped") == 1  # rank 0 alone speaks
    assert err.count("training simplecnn") == 1 and "batch 32 x 2 processes = 64" in err

    one = run_cli("train", "--resume", str(run), "--data-root", str(mnist_root), cwd=tmp_path)
    assert one.returncode == 2 and one.stderr.count("\n") == 1
    assert "trained by 2 process(es)" in one.stderr

    proc = _torchrun(2, ["--resume", str(run), "--data-root", str(mnist_root), "--json"], tmp_path)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    result = json.loads(out)  # one JSON document: rank 1 printed nothing
    assert result["epochs_run"] == 2 and result["stop_reason"] == "finished"
    best = load_checkpoint(run / "best.pt").meta
    assert best.finished and best.world_size == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp", "latest"]

    # the same number of images per step in one process: the same accuracy, within noise
    alone = run_cli("train", *common, "--name", "one", "-b", "64", "--json", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    single = json.loads(alone.stdout)
    assert result["test_acc"] > 0.85 and single["test_acc"] > 0.85
    assert abs(result["test_acc"] - single["test_acc"]) < 0.025


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_run(tmp_path, mnist_root):
    args = [*SMALL, "--epochs", "20", "--data-root", str(mnist_root), "--runs-dir", str(tmp_path)]
    proc = _torchrun(2, [*args, "--name", "dies"], tmp_path)
    _wait_for(tmp_path / "dies" / "config.json", proc)
    deadline = time.monotonic() + 60
    while len(workers := _workers(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    os.kill(next(pid for pid, rank in workers if rank == 1), signal.SIGKILL)
    proc.communicate(timeout=90)
    assert proc.returncode != 0
    assert time.monotonic() - started < 90
    assert not _workers(proc.pid)


def test_every_rank_refuses_more_processes_than_gpus(monkeypatch):
    """`torchrun --nproc-per-node 2 ... --device cuda` on a machine with one GPU: rank 0 (which
    has a GPU of its own) refuses too, so that no rank is left waiting for the other."""
    from mnistcli.distributed import rank_device
    from mnistcli.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for rank in (0, 1):
        world = World(rank=rank, local_rank=rank, size=2, local_size=2)
        with pytest.raises(DeviceError, match="use --nproc-per-node 1 or fewer"):
            rank_device(world, torch.device("cuda"))
    one = World(rank=0, local_rank=0, size=2, local_size=1)  # one process here, one elsewhere
    assert rank_device(one, torch.device("cuda")) == torch.device("cuda", 0)


def test_the_device_is_checked_before_the_ranks_first_wait_for_each_other(
    tmp_path, tiny_mnist, monkeypatch
):
    """open_run refuses a device before joining the process group (the first collective) and
    before any run folder is made."""
    from mnistcli import device, distributed, resume
    from mnistcli.errors import DeviceError
    from tests.helpers import make_settings

    joined = []
    monkeypatch.setattr(distributed, "start", lambda world, dev: joined.append(dev))
    monkeypatch.setattr(device, "resolve_device", lambda name: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    settings = make_settings(tmp_path, epochs=1)
    world = World(rank=0, local_rank=0, size=2, local_size=2)
    with pytest.raises(DeviceError):
        resume.open_run(settings, tiny_mnist, lambda e: None, lambda: False, world=world)
    assert joined == [] and not (tmp_path / "runs").exists()
