"""Opening a run for the loop in train.py: a new one (its folder and config.json), or the one
a last.pt holds, checked against the flags and the torchrun world and restored exactly
(weights, optimizer, schedule, random generators, RunState). Model, optimizer and data are set
up here, in the order that lets every process refuse bad settings before any waits for another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistcli import checkpoint as ckpt
from mnistcli import distributed, runs
from mnistcli.checkpoint import Checkpoint
from mnistcli.config import flag_name
from mnistcli.data import Mnist, Tensors, make_tensors, split_indices
from mnistcli.distributed import World
from mnistcli.errors import CheckpointError, ConfigError
from mnistcli.events import Event, RunStarted
from mnistcli.run_state import Run, RunState
from mnistcli.settings import HyperParams, TrainSettings


def open_run(
    settings: TrainSettings,
    mnist: Mnist,
    emit: Callable[[Event], None],
    should_stop: Callable[[], bool],
    *,
    world: World = distributed.SINGLE,
) -> Run:
    """A new run (folder, config.json) or the run a last.pt holds, ready for its next batch."""
    from mnistcli.device import autocast_dtype
    from mnistcli.model import count_parameters

    started = time.perf_counter()
    last_path, saved = _checkpoint_to_resume(settings)
    hyper = saved.meta.hyper if saved else settings.hyper
    if saved and last_path:
        _check_resumable(saved.meta, last_path)
        check_resume_flags(settings, hyper)
        _check_world(saved.meta, world, last_path)
    # Everything that can refuse the settings comes before a new run folder is made, and
    # everything that can fail on one rank alone comes before the ranks first wait for each
    # other (joining the process group): a rank that stopped would leave the others waiting.
    device = _open_device(settings, world)
    model, forward = _build(settings, hyper, device, world)
    train_set, val_set = _datasets(mnist, hyper, device)
    run_dir = _run_folder(settings, last_path, world)
    # torch's Adam, its fused kernel: one pass over all the parameters per step, on the CPU too
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper.lr, fused=True)
    run = Run(
        settings=settings,
        hyper=hyper,
        mnist=mnist,
        run_dir=run_dir,
        device=device,
        model=model,
        forward=forward,
        optimizer=optimizer,
        scheduler=None,
        amp=autocast_dtype(hyper.precision, device),
        train_set=train_set,
        val_set=val_set,
        emit=emit if world.is_main else _ignore,  # only rank 0 reports
        should_stop=should_stop,
        started=started,
        world=world,
        resumed=saved is not None,
    )
    if hyper.schedule == "onecycle":
        run.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=hyper.lr, total_steps=hyper.epochs * run.batches
        )
    if saved and last_path:
        _restore(run, saved, last_path)
    elif world.is_main:
        runs.write_config(run_dir, _config_doc(settings, hyper, mnist, world))
    if world.is_main:
        runs.point_latest(settings.runs_dir, run_dir)
    run.emit(_run_started(run, count_parameters(model)))
    return run


def _run_started(run: Run, parameters: int) -> RunStarted:
    """The event that opens a run: what it trains, where, and (resumed) where it stands."""
    state = run.state
    return RunStarted(
        run_dir=run.run_dir,
        device=str(run.device),
        precision="bf16" if run.amp is not None else "fp32",
        hyper=run.hyper,
        parameters=parameters,
        n_train=len(run.train_set),
        n_val=len(run.val_set),
        n_test=len(run.mnist.test_labels),
        batches_per_epoch=run.batches,
        start_epoch=state.epoch + 1,
        resumed=run.resumed,
        history=tuple(state.history),
        best_epoch=state.best.epoch,
        epochs_without_gain=state.epochs_without_gain,
        world_size=run.world.size,
    )


def _checkpoint_to_resume(settings: TrainSettings) -> tuple[Path | None, Checkpoint | None]:
    """The last.pt that --resume names, loaded (None, None for a new run)."""
    if settings.resume is None:
        return None, None
    path = runs.resume_path(settings.resume, settings.runs_dir)
    saved = ckpt.load_checkpoint(path)
    if saved.meta.finished:
        run = path.parent
        raise CheckpointError(
            f"run {run} is {saved.meta.status}: nothing to resume; use it with "
            f"'mnistcli eval --checkpoint {run}', or start a new run with 'mnistcli train'"
        )
    return path, saved


def _check_resumable(meta: ckpt.CheckpointMeta, path: Path) -> None:
    """A run that used a setting since removed cannot go on as it started (its checkpoints
    still load for eval, predict, inspect and export)."""
    used = HyperParams.removed_in_use(meta.config)
    if used:
        raise ConfigError(
            f"{path} was trained with train.{used[0]} = {meta.config[used[0]]}, a setting this "
            f"mnistcli removed; it cannot be resumed (its best.pt still evaluates and predicts)"
        )


def _restore(run: Run, saved: Checkpoint, path: Path) -> None:
    """Weights, optimizer, schedule, RNG and RunState from last.pt; best weights from best.pt."""
    ckpt.load_weights(run.model, saved.model_state, path)
    try:
        if saved.resume is None:
            raise KeyError("optimizer_state")
        run.optimizer.load_state_dict(saved.resume.optimizer)
        if run.scheduler is not None:
            if saved.resume.scheduler is None:
                raise KeyError("scheduler_state")
            run.scheduler.load_state_dict(saved.resume.scheduler)
        rng = saved.resume.rng
        _set_rng_state(rng["ranks"][run.world.rank] if run.world.is_distributed else rng)
        run.state = RunState.from_checkpoint(saved.meta)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} lacks the state needed to resume ({exc}); start a new run"
        ) from None
    best_path = run.run_dir / "best.pt"
    if run.state.best.validated and best_path.exists():
        run.best_state = ckpt.load_checkpoint(best_path).model_state


def _datasets(mnist: Mnist, hyper: HyperParams, device: torch.device) -> tuple[Tensors, Tensors]:
    """The run's training and validation tensors (resident on `device`, batches by indexing)."""
    split = split_indices(len(mnist.train_labels), hyper.val_size, hyper.seed, hyper.limit)
    train_set = make_tensors(
        mnist.train_images[split.train], mnist.train_labels[split.train], device
    )
    if len(train_set) == 0:
        raise ConfigError("no training images left: lower --val-size or raise --limit")
    val_set = make_tensors(mnist.train_images[split.val], mnist.train_labels[split.val], device)
    return train_set, val_set


def _config_doc(
    settings: TrainSettings, hyper: HyperParams, mnist: Mnist, world: World
) -> dict[str, Any]:
    """config.json: the resolved settings of a new run."""
    return {
        "hyper": hyper.to_dict(),
        "device": settings.device,
        "world_size": world.size,
        "data": {
            "root": str(settings.data.root),
            "mirrors": list(settings.data.mirrors),
            "checksums": mnist.checksums,
        },
    }


def _open_device(settings: TrainSettings, world: World) -> torch.device:
    """This process's device, with its threads set; under torchrun, once every rank has found
    its device, join the other ranks (the first collective)."""
    from mnistcli.device import resolve_device

    device = distributed.rank_device(world, resolve_device(settings.device))
    if settings.threads:
        torch.set_num_threads(settings.threads)
    elif world.is_distributed and device.type == "cpu":
        torch.set_num_threads(distributed.cpu_threads(world))  # the ranks share the cores
    distributed.start(world, device)
    return device


def _build(
    settings: TrainSettings, hyper: HyperParams, device: torch.device, world: World
) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The seeded model (what checkpoints store) and what the training steps call: the
    model, wrapped in DistributedDataParallel under torchrun and torch.compile if asked."""
    from mnistcli.model import build_model

    torch.manual_seed(hyper.seed)
    # channels_last makes the CPU convolutions faster here (see bench/); harmless elsewhere.
    model = build_model(hyper.model).to(device).to(memory_format=torch.channels_last)
    forward: Any = model
    if world.is_distributed:
        from torch.nn.parallel import DistributedDataParallel

        # DDP copies rank 0's weights to every rank; dropout then differs per rank
        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        torch.manual_seed(hyper.seed + 1_000_003 * (world.rank + 1))
    # torch.compile wraps the module for the training steps only; weights stay shared with
    # `model`, whose state_dict (without the wrapper's prefixes) is what checkpoints store.
    return model, torch.compile(forward) if settings.compile else forward


def _run_folder(settings: TrainSettings, last_path: Path | None, world: World) -> Path:
    """The resumed run's folder, or a new one (made by rank 0 and told to the others)."""
    if last_path is not None:
        run_dir = last_path.parent
    else:
        made = runs.create_run(settings.runs_dir, settings.name) if world.is_main else None
        run_dir = Path(distributed.broadcast(str(made) if made else "", world))
    if world.is_main:
        runs.remove_stale_temp_files(run_dir)
    return run_dir


def _check_world(meta: ckpt.CheckpointMeta, world: World, path: Path) -> None:
    """A run resumes with as many processes as it was trained with (the batches depend on it)."""
    if meta.world_size != world.size:
        how = (
            f"torchrun with {meta.world_size} processes in all"
            if meta.world_size > 1
            else "plain 'mnistcli train --resume' (one process)"
        )
        raise ConfigError(
            f"{path} was trained by {meta.world_size} process(es) and this is {world.size}; "
            f"resume it with {how}"
        )


def check_resume_flags(settings: TrainSettings, saved: HyperParams) -> None:
    """A resumed run keeps its own hyper-parameters; a flag that contradicts them is an error."""
    for key in settings.explicit:
        name = key.split(".")[-1]
        if not key.startswith(("train.", "data.")) or not hasattr(saved, name):
            continue
        asked, had = getattr(settings.hyper, name), getattr(saved, name)
        if asked != had:
            raise ConfigError(
                f"{flag_name(key)} {asked} differs from the resumed "
                f"run's {name} = {had}; a resumed run keeps its settings (start a "
                f"new run to change them)"
            )


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _ignore(_event: Event) -> None:
    return None
