"""Data-parallel training under torchrun: rank and world size, each rank's share of a batch,
the collectives the trainer needs, and "only rank 0 writes".

torchrun starts one process per rank and tells each who it is through environment variables
(RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Without them this
module describes a world of one, and every function here is a no-op or an identity, so the
trainer has one code path for one process and for many.

How the work is shared: every rank draws the same seeded permutation of the training images per
epoch (as a single process does). Global batch b is the slice perm[b*B*W : (b+1)*B*W] of it, B
the per-rank batch and W the world size, and rank r takes every W-th image of that slice
starting at r. The ranks' shares are disjoint and cover the slice; with W = 1 the batches are
exactly those of a single process. DistributedDataParallel averages the gradients, so one step
sees B*W images.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mnistcli.errors import ConfigError, DeviceError

if TYPE_CHECKING:
    import torch

# How long a collective may wait for a rank that went silent before it fails. A rank that died
# is usually noticed at once (its connections close, and torchrun's agent stops the others);
# this bounds the rest, such as a rank stuck in I/O.
COLLECTIVE_TIMEOUT_S = 300

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run (a world of one without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, draws and writes the run folder; the others only compute."""
        return self.rank == 0


SINGLE = World()


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The World torchrun describes in the environment, or a world of one."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return SINGLE
    values: dict[str, int] = {}
    for key in ENV_KEYS:
        raw = env.get(key, "1" if key.endswith("WORLD_SIZE") else "0")
        try:
            values[key] = int(raw)
        except ValueError:
            raise ConfigError(
                f"environment variable {key}={raw!r} is not a number; start data-parallel "
                f"runs with torchrun, which sets it"
            ) from None
    world = World(
        rank=values["RANK"],
        local_rank=values["LOCAL_RANK"],
        size=values["WORLD_SIZE"],
        local_size=values["LOCAL_WORLD_SIZE"],
    )
    if not (0 <= world.rank < world.size and 0 <= world.local_rank < world.local_size):
        raise ConfigError(
            f"inconsistent torchrun environment (RANK={world.rank}, WORLD_SIZE={world.size}, "
            f"LOCAL_RANK={world.local_rank}, LOCAL_WORLD_SIZE={world.local_size})"
        )
    return world


def rank_device(world: World, device: torch.device) -> torch.device:
    """The device of this rank: on CUDA each rank of a machine takes GPU LOCAL_RANK.

    Every rank checks that the machine has a GPU for each of its LOCAL_WORLD_SIZE ranks, not
    only for its own: all of them then refuse together, before any waits for the others (a
    rank 0 left alone in the rendezvous would wait until torchrun killed it)."""
    import torch

    if not world.is_distributed or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if world.local_size > count:
        raise DeviceError(
            f"torchrun started {world.local_size} processes on this machine but it has "
            f"{count} CUDA device(s); use --nproc-per-node {count} or fewer"
        )
    return torch.device("cuda", world.local_rank)


def cpu_threads(world: World, cpus: int | None = None) -> int:
    """Threads per rank on the CPU: the machine's cores shared out, so ranks don't oversubscribe."""
    if cpus is None:
        affinity = getattr(os, "sched_getaffinity", None)  # the cores this process may use
        cpus = len(affinity(0)) if affinity else os.cpu_count() or 1
    return max(1, cpus // world.local_size)


def start(world: World, device: torch.device) -> None:
    """Join the process group: gloo on the CPU, NCCL on CUDA. A world of one joins nothing."""
    if not world.is_distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, timeout=_dt.timedelta(seconds=COLLECTIVE_TIMEOUT_S), **kwargs)


def finish(world: World) -> None:
    """Leave the process group (after the last collective of the run)."""
    if not world.is_distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def batches_per_epoch(n: int, batch_size: int, world: World) -> int:
    """Global batches in an epoch of `n` images; a last slice too small to give every rank an
    image is dropped (a rank with nothing to do would leave the others waiting)."""
    step = batch_size * world.size
    full, rest = divmod(n, step)
    return full + (1 if rest >= world.size else 0)


def rank_slice(perm: torch.Tensor, batch: int, batch_size: int, world: World) -> torch.Tensor:
    """The indices of global batch `batch` that this rank trains on (see the module's text)."""
    step = batch_size * world.size
    chunk = perm[batch * step : (batch + 1) * step]
    return chunk if world.size == 1 else chunk[world.rank :: world.size]


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over the ranks, in place; the identity for a world of one."""
    if world.is_distributed:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when it is True on any: the ranks stop at the same step."""
    if not world.is_distributed:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def gather(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (small picklable objects only)."""
    if not world.is_distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's `obj` on every rank (small picklable objects only)."""
    if not world.is_distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_range(n: int, world: World) -> range:
    """This rank's contiguous share of n items (for sharded evaluation): sizes differ by <= 1."""
    per = math.ceil(n / world.size)
    start = min(n, world.rank * per)
    return range(start, min(n, start + per))
