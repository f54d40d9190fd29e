"""The trainer: one loop for every recipe, early stopping on validation, checkpoints, resume.

    run = open_run(...)                 a new run folder, or the state a last.pt holds
    while epochs remain and patience lasts:
        run_epoch(run)                  train, validate, save last.pt (and best.pt), report
    finish_run(run)                     restore the best weights, evaluate the test set once

It prints nothing. Progress goes to an `on_event` callback as small frozen dataclasses; the
command line decides how to draw them. Model selection uses the validation split held out from
the 60k training images; the test set is evaluated once, on the restored best model, and only
reported. Where the run stands lives in one `RunState`, which is what last.pt stores.

Reproducibility: the shuffle order and the augmentation of batch b in epoch e are drawn from
generators seeded by (seed, e, b), and the global RNG (dropout) is saved in every checkpoint, so
a resumed run, even one resumed mid-epoch, replays exactly what an uninterrupted run would do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistcli import checkpoint as ckpt
from mnistcli import distributed, metrics, runs
from mnistcli.checkpoint import Best, Checkpoint, EpochInProgress, EpochStats, TestScore
from mnistcli.config import HyperParams, TrainSettings, flag_name
from mnistcli.data import (
    Mnist,
    Tensors,
    affine_by,
    elastic_fields,
    make_tensors,
    random_affines,
    split_indices,
)
from mnistcli.distributed import World
from mnistcli.errors import CheckpointError, ConfigError, TrainingError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mnistcli.optim import ParameterEMA

__all__ = ["EpochStats", "RunState", "TrainResult", "train"]  # EpochStats: from checkpoint

PROGRESS_INTERVAL = 0.1  # seconds between BatchDone events (each costs one device sync)
# Under torchrun the ranks agree every this many batches whether one was asked to stop (one
# small all-reduce), so that all of them stop after the same batch.
STOP_CHECK_BATCHES = 10
ELASTIC_STREAM = 0xE1A5  # the last element of the seed key of elastic fields (see _elastic)


# ---------------------------------------------------------------------------------------------
# Events and results


@dataclass(frozen=True)
class RunStarted:
    run_dir: Path
    device: str
    precision: str  # what autocast runs in: "bf16" or "fp32"
    hyper: HyperParams
    parameters: int
    n_train: int
    n_val: int
    n_test: int
    batches_per_epoch: int
    start_epoch: int  # 1-based epoch the loop starts in (> 1 after a resume)
    resumed: bool
    history: tuple[EpochStats, ...]
    best_epoch: int  # 0 before the first validated epoch
    epochs_without_gain: int  # since the last improvement (resumed runs carry theirs)
    world_size: int = 1  # processes training together under torchrun


@dataclass(frozen=True)
class EpochStarted:
    epoch: int
    epochs: int
    batches: int
    first_batch: int  # > 0 when resuming mid-epoch


@dataclass(frozen=True)
class BatchDone:
    epoch: int
    batch: int  # batches done in this epoch
    batches: int
    loss: float  # running mean over the epoch so far
    samples_per_s: float


@dataclass(frozen=True)
class EpochDone:
    stats: EpochStats
    history: tuple[EpochStats, ...]
    best_epoch: int
    is_best: bool
    epochs_without_gain: int  # since the last improvement
    patience: int


@dataclass(frozen=True)
class EarlyStopped:
    epoch: int
    best_epoch: int
    patience: int


@dataclass(frozen=True)
class TestDone:
    score: TestScore


Event = RunStarted | EpochStarted | BatchDone | EpochDone | EarlyStopped | TestDone


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    device: str
    stop_reason: str  # "completed", "early_stop", "interrupted" ("running" in metrics.json)
    epochs_run: int
    best_epoch: int
    best_val_acc: float
    best_val_loss: float
    test_acc: float | None
    test_loss: float | None
    seconds: float
    history: tuple[EpochStats, ...] = field(default=())
    interrupted_at: tuple[int, int] | None = None  # (epoch, batch) when interrupted

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        best = Best(self.best_epoch, self.best_val_acc, self.best_val_loss)
        out["best_val_acc"], out["best_val_loss"] = best.reported()
        return out


# ---------------------------------------------------------------------------------------------
# Where a run stands


@dataclass
class RunState:
    """Where a run stands: what last.pt stores and a resume restores."""

    epoch: int = 0  # epochs completed
    step: int = 0  # batches done in the epoch in progress (epoch + 1)
    history: list[EpochStats] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    epochs_without_gain: int = 0
    in_progress: EpochInProgress = field(default_factory=EpochInProgress)  # of epoch + 1

    def record(self, stats: EpochStats, select: str, val_images: int) -> bool:
        """Add a finished epoch; True when it becomes the chosen epoch (best.pt), by `select`:
        "highest": the first epoch with the highest validation accuracy so far;
        "latest-within-se": the latest epoch whose validation accuracy lies within one standard
        error, sqrt(p(1-p)/n) on the `val_images`, of the highest p so far. On an annealed
        schedule the later epochs are as good, and the highest is then a noise peak as often
        as not (bench/README.md). Early stopping counts the epochs in a row that did not raise
        the highest validation accuracy, whichever the rule."""
        top = max((h.val_acc for h in self.history), default=-1.0)
        self.history.append(stats)
        self.epoch, self.step, self.in_progress = stats.epoch, 0, EpochInProgress()
        if stats.val_acc > top:
            top, self.epochs_without_gain = stats.val_acc, 0
        else:
            self.epochs_without_gain += 1
        if select == "latest-within-se":
            kept = stats.val_acc >= top - metrics.standard_error(top, val_images)
        else:
            kept = self.epochs_without_gain == 0
        if kept:
            self.best = Best(stats.epoch, stats.val_acc, stats.val_loss)
            return True
        return False

    def to_checkpoint(
        self,
        kind: str,
        hyper: HyperParams,
        checksums: dict[str, str],
        model_state: dict[str, torch.Tensor],
        *,
        resume: ckpt.ResumeState | None = None,
        world_size: int = 1,
    ) -> Checkpoint:
        """best.pt (the best epoch's weights) or last.pt (with `resume`: everything to go on)."""
        meta = ckpt.CheckpointMeta(
            kind=kind,
            model=hyper.model,
            epoch=self.best.epoch if kind == "best" else self.epoch,
            config=hyper.to_dict(),
            step=self.step if kind == "last" else 0,
            history=tuple(self.history),
            epochs_run=len(self.history),
            best=self.best,
            epochs_without_gain=self.epochs_without_gain,
            data=dict(checksums),
            versions=ckpt.versions(),
            created=ckpt.now_iso(),
            in_progress=self.in_progress if kind == "last" and self.step else None,
            world_size=world_size,
        )
        return Checkpoint(meta=meta, model_state=model_state, resume=resume)

    @classmethod
    def from_checkpoint(cls, meta: ckpt.CheckpointMeta) -> RunState:
        if meta.history is None:
            raise TypeError("its history is not in the form this mnistcli writes")
        return cls(
            epoch=meta.epoch,
            step=meta.step,
            history=list(meta.history),
            best=meta.best,
            epochs_without_gain=meta.epochs_without_gain,
            in_progress=meta.in_progress or EpochInProgress(),
        )


@dataclass
class Run:
    """An open run: its settings, model, optimizer and data, and the RunState they advance."""

    settings: TrainSettings
    hyper: HyperParams
    mnist: Mnist
    run_dir: Path
    device: torch.device
    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LR scheduler, or None for a constant rate
    amp: torch.dtype | None  # autocast dtype, None: float32 throughout
    train_set: Tensors
    val_set: Tensors
    emit: Callable[[Event], None]
    should_stop: Callable[[], bool]
    started: float  # time.perf_counter() at the start
    world: World = distributed.SINGLE
    resumed: bool = False
    state: RunState = field(default_factory=RunState)
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights (CPU)
    ema: ParameterEMA | None = None  # the weights' moving average (hyper.ema > 0)

    @property
    def validated(self) -> nn.Module:
        """The model that validation scores and best.pt keeps: the moving average, if any."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def batches(self) -> int:
        """Global batches per epoch (each rank takes its share of every one)."""
        return distributed.batches_per_epoch(len(self.train_set), self.hyper.batch_size, self.world)

    def checkpoint(self, kind: str) -> Checkpoint:
        """best.pt from the kept best weights, or last.pt from the model as it is now."""
        if kind == "best":
            assert self.best_state is not None
            return self.state.to_checkpoint(
                "best",
                self.hyper,
                self.mnist.checksums,
                self.best_state,
                world_size=self.world.size,
            )
        rng = _rng_state()
        if self.world.is_distributed:  # every rank's generators (dropout differs per rank)
            rng["ranks"] = distributed.gather(_rng_state(), self.world)
        resume = ckpt.ResumeState(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
            rng=rng,
            ema=ckpt.state_dict_copy(self.ema.module) if self.ema is not None else None,
        )
        return self.state.to_checkpoint(
            "last",
            self.hyper,
            self.mnist.checksums,
            ckpt.state_dict_copy(self.model),
            resume=resume,
            world_size=self.world.size,
        )

    def save(self, checkpoint: Checkpoint) -> None:
        """Write best.pt or last.pt; under torchrun only rank 0 writes."""
        if self.world.is_main:
            ckpt.save_checkpoint(checkpoint, self.run_dir / f"{checkpoint.meta.kind}.pt")

    def result(
        self,
        reason: str,
        test: TestScore | None = None,
        interrupted_at: tuple[int, int] | None = None,
    ) -> TrainResult:
        state = self.state
        return TrainResult(
            run_dir=self.run_dir,
            device=str(self.device),
            stop_reason=reason,
            epochs_run=len(state.history),
            best_epoch=state.best.epoch,
            best_val_acc=state.best.val_acc,
            best_val_loss=state.best.val_loss,
            test_acc=test.acc if test else None,
            test_loss=test.loss if test else None,
            seconds=time.perf_counter() - self.started,
            history=tuple(state.history),
            interrupted_at=interrupted_at,
        )

    def write_metrics(self, result: TrainResult) -> None:
        """metrics.csv and metrics.json: the history, and `result` as the summary (without the
        history again) with the run's hyper-parameters."""
        if not self.world.is_main:
            return
        summary = {k: v for k, v in result.to_dict().items() if k != "history"}
        summary["hyper"] = self.hyper.to_dict()
        runs.write_metrics(self.run_dir, self.state.history, summary)


# ---------------------------------------------------------------------------------------------
# The trainer


def train(
    settings: TrainSettings,
    mnist: Mnist,
    *,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train (or resume) one run; returns when done, stopped early, or asked to stop.

    Under torchrun every rank calls this; they train together (see distributed.py).
    """
    world = distributed.world_from_env()
    try:
        run = open_run(settings, mnist, on_event or _ignore, should_stop or _never, world=world)
        state, hyper = run.state, run.hyper
        reason = "completed"
        if run.resumed and patience_exhausted(state.epochs_without_gain, hyper.patience):
            reason = "early_stop"  # stopped while finishing: go straight to the test set
        while reason == "completed" and state.epoch < hyper.epochs:
            if not run_epoch(run):
                return stop_run(run, (state.epoch + 1, state.step))
            if patience_exhausted(state.epochs_without_gain, hyper.patience):
                reason = "early_stop"
                run.emit(EarlyStopped(state.epoch, state.best.epoch, hyper.patience))
            elif _stop_requested(run) and state.epoch < hyper.epochs:
                return stop_run(run, (state.epoch, run.batches))  # last.pt is already saved
        return finish_run(run, reason)
    except OSError as exc:  # a full disk or a folder that became unwritable while saving
        where = f" {exc.filename}" if exc.filename else ""
        raise TrainingError(
            f"could not save{where}: {exc.strerror or exc}; files saved before are intact "
            f"(free some space or fix permissions, then continue with --resume)"
        ) from None
    finally:
        distributed.finish(world)


def open_run(
    settings: TrainSettings,
    mnist: Mnist,
    emit: Callable[[Event], None],
    should_stop: Callable[[], bool],
    *,
    world: World = distributed.SINGLE,
) -> Run:
    """A new run (folder, config.json) or the run a last.pt holds, ready for its next batch."""
    import torch

    from mnistcli.device import autocast_dtype
    from mnistcli.model import count_parameters
    from mnistcli.optim import Adam, ParameterEMA

    started = time.perf_counter()
    last_path, saved = _checkpoint_to_resume(settings)
    hyper = saved.meta.hyper if saved else settings.hyper
    if saved:
        check_resume_flags(settings, hyper)
        _check_world(saved.meta, world, last_path)
    # everything that can refuse the settings comes before a new run folder is made
    device = _join(settings, world)
    model, forward = _build(settings, hyper, device, world)
    train_set, val_set = _datasets(mnist, hyper, device)
    run_dir = _run_folder(settings, last_path, world)
    optimizer = Adam(model.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)
    ema = ParameterEMA(model, hyper.ema) if hyper.ema > 0 else None
    if not world.is_main:
        emit = _ignore  # only rank 0 reports
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
        emit=emit,
        should_stop=should_stop,
        started=started,
        world=world,
        resumed=saved is not None,
        ema=ema,
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
    emit(_run_started(run, count_parameters(model)))
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


def run_epoch(run: Run) -> bool:
    """Train the next epoch (from the batch a resumed run stopped at), validate it, save
    last.pt (and best.pt when it becomes the chosen epoch). False when asked to stop part-way."""
    state, hyper = run.state, run.hyper
    epoch = state.epoch + 1
    run.emit(EpochStarted(epoch, hyper.epochs, run.batches, first_batch=state.step))
    totals = _train_batches(run, epoch)
    if totals is None:
        return False
    ended = time.perf_counter()
    train_loss, train_acc = totals.loss_sum / totals.seen, totals.correct / totals.seen
    if not math.isfinite(train_loss):
        _stop_on_nan(epoch, run.batches, run.run_dir)
    val_loss, val_acc = _loss_and_accuracy(run, run.val_set, run.validated)
    if not math.isfinite(val_loss):
        _stop_on_nan(epoch, run.batches, run.run_dir)
    seconds = totals.seconds + time.perf_counter() - ended  # training and validation
    stats = EpochStats(
        epoch=epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=val_loss,
        val_acc=val_acc,
        lr=run.optimizer.param_groups[0]["lr"],
        seconds=seconds,
        samples_per_s=totals.seen / max(seconds, 1e-9),
    )
    is_best = state.record(stats, hyper.select, len(run.val_set))
    if is_best:
        run.best_state = ckpt.state_dict_copy(run.validated)
        run.save(run.checkpoint("best"))
    run.save(run.checkpoint("last"))
    run.write_metrics(run.result("running"))
    run.emit(
        EpochDone(
            stats=stats,
            history=tuple(state.history),
            best_epoch=state.best.epoch,
            is_best=is_best,
            epochs_without_gain=state.epochs_without_gain,
            patience=hyper.patience,
        )
    )
    return True


def stop_run(run: Run, at: tuple[int, int]) -> TrainResult:
    """Asked to stop: last.pt is saved; metrics.json says so. `at`: (epoch, batch)."""
    result = run.result("interrupted", interrupted_at=at)
    run.write_metrics(result)
    return result


def finish_run(run: Run, reason: str) -> TrainResult:
    """Restore the best epoch's weights, evaluate the test set once, mark both files done."""
    if run.best_state is None:
        raise TrainingError("training finished without a single validated epoch")
    last = run.checkpoint("last")  # the last epoch's weights, before restoring the best
    ckpt.load_weights(run.model, run.best_state, run.run_dir / "best.pt")
    test_set = make_tensors(run.mnist.test_images, run.mnist.test_labels, run.device)
    test_loss, test_acc = _loss_and_accuracy(run, test_set, run.model)
    test = TestScore(loss=test_loss, acc=test_acc, n=len(test_set))
    run.emit(TestDone(test))
    for checkpoint in (run.checkpoint("best"), last):
        done = replace(checkpoint.meta, finished=True, stop_reason=reason, test=test)
        run.save(replace(checkpoint, meta=done))
    result = run.result(reason, test)
    run.write_metrics(result)
    return result


def patience_exhausted(epochs_without_gain: int, patience: int) -> bool:
    """Early stopping: `patience` epochs in a row without a better validation accuracy."""
    return patience > 0 and epochs_without_gain >= patience


# ---------------------------------------------------------------------------------------------
# The steps' parts


def _train_batches(run: Run, epoch: int) -> EpochInProgress | None:
    """The epoch's remaining batches; the epoch's totals, or None when asked to stop (after
    saving last.pt with the totals so far)."""
    import torch

    hyper, state = run.hyper, run.state
    n = len(run.train_set)
    perm = torch.randperm(n, generator=_generator(hyper.seed, epoch)).to(run.device)
    warps, offsets = _epoch_warps(run, epoch, perm)
    start = state.in_progress
    if not run.world.is_main:  # rank 0 carries the saved totals of a resumed epoch
        start = EpochInProgress(seconds=start.seconds)
    loss_sum = torch.tensor(start.loss_sum, device=run.device)
    correct = torch.tensor(start.correct, device=run.device)
    seen = start.seen
    t_epoch = time.perf_counter() - start.seconds
    t_loop = t_shown = time.perf_counter()
    for b in range(state.step, run.batches):
        idx = distributed.rank_slice(perm, b, hyper.batch_size, run.world)
        warp = warps[offsets[b] : offsets[b + 1]] if warps is not None else None
        loss, hits, count = _step(run, idx, warp, _elastic(run, epoch, b, len(idx)))
        loss_sum += loss * count
        correct += hits
        seen += count
        now = time.perf_counter()
        if now - t_shown >= PROGRESS_INTERVAL or b == run.batches - 1:
            running = loss_sum.item() / seen
            if not math.isfinite(running):
                _stop_on_nan(epoch, b + 1, run.run_dir)
            t_shown = now
            speed = (seen - start.seen) / max(now - t_loop, 1e-9)
            run.emit(BatchDone(epoch, b + 1, run.batches, loss=running, samples_per_s=speed))
        if b + 1 < run.batches and _stop_requested(run, b + 1):
            state.step = b + 1
            state.in_progress = _totals(run, loss_sum, correct, seen, t_epoch)
            run.save(run.checkpoint("last"))
            return None
    return _totals(run, loss_sum, correct, seen, t_epoch)


def _totals(
    run: Run, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, t_epoch: float
) -> EpochInProgress:
    """The epoch's running totals, summed over the ranks under torchrun."""
    import torch

    sums = torch.stack(
        [
            loss_sum.double(),
            correct.double(),
            torch.tensor(seen, dtype=torch.float64, device=loss_sum.device),
        ]
    )
    sums = distributed.all_reduce_sum(sums, run.world)  # the identity for one process
    loss, hits, count = sums.tolist()
    return EpochInProgress(loss, round(hits), round(count), time.perf_counter() - t_epoch)


def _stop_requested(run: Run, batches_done: int | None = None) -> bool:
    """Whether to stop now. Alone: whenever asked. Under torchrun: all ranks decide together,
    every STOP_CHECK_BATCHES batches and at the end of an epoch (batches_done None)."""
    if not run.world.is_distributed:
        return run.should_stop()
    if batches_done is not None and batches_done % STOP_CHECK_BATCHES:
        return False
    return distributed.any_rank(run.should_stop(), run.world, run.device)


def _epoch_warps(run: Run, epoch: int, perm: torch.Tensor) -> tuple[torch.Tensor | None, list[int]]:
    """This rank's augmentation for a whole epoch on the device: affine maps, (images, 2, 3)
    (with no rotation, scale or shear, pure shifts: the same draws as data.random_shifts), and
    where batch b's start; None without augmentation, and in the last `clean_epochs` epochs.
    Batch b's are drawn from (seed, epoch, b[, rank]) as they always were, on the CPU, and
    moved to the device once per epoch: no host-to-device copy (and so no wait for the GPU)
    per batch."""
    import torch

    hyper, world = run.hyper, run.world
    warps = (hyper.rotate, hyper.scale, hyper.shear)
    if not hyper.augments or _clean(hyper, epoch):
        return None, []
    key = (world.rank,) if world.is_distributed else ()
    sizes = [
        len(distributed.rank_slice(perm, b, hyper.batch_size, world)) for b in range(run.batches)
    ]
    generators = [_generator(hyper.seed, epoch, b, *key) for b in range(run.batches)]
    pairs = zip(sizes, generators, strict=True)
    parts = [random_affines(n, hyper.augment, *warps, g) for n, g in pairs]
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return torch.cat(parts).to(run.device), offsets


def _clean(hyper: HyperParams, epoch: int) -> bool:
    """Whether `epoch` (1-based) is one of the last `clean_epochs`: no augmentation in it."""
    return epoch > hyper.epochs - hyper.clean_epochs


def _elastic(run: Run, epoch: int, b: int, n: int) -> torch.Tensor | None:
    """Batch b's elastic displacement fields (hyper.elastic > 0), made on the device from a
    generator seeded by (seed, epoch, b[, rank]): no host-to-device copy, and a resumed run
    draws the same ones."""

    if run.hyper.elastic <= 0 or _clean(run.hyper, epoch):
        return None
    key = (run.world.rank,) if run.world.is_distributed else ()
    generator = _generator(run.hyper.seed, epoch, b, *key, ELASTIC_STREAM, device=run.device)
    return elastic_fields(n, run.train_set.x.shape[-1], run.hyper.elastic, generator)


def _step(
    run: Run, idx: torch.Tensor, warp: torch.Tensor | None, fields: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One optimizer step on the images `idx` (warped by the affine maps `warp`, then by the
    elastic displacement `fields`, when augmenting): (the mean loss, correct predictions,
    images)."""
    import torch
    import torch.nn.functional as F

    x, y = run.train_set.x[idx], run.train_set.y[idx]
    if warp is not None:
        x = affine_by(x, warp, fields)
    x = x.contiguous(memory_format=torch.channels_last)
    amp = run.amp
    with torch.autocast(run.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = run.forward(x)
        loss = F.cross_entropy(logits, y, label_smoothing=run.hyper.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    if run.scheduler is not None:
        run.scheduler.step()
    if run.ema is not None:
        run.ema.update()
    return loss.detach(), (logits.detach().argmax(1) == y).sum(), int(y.shape[0])


def _loss_and_accuracy(run: Run, data: Tensors, model: nn.Module) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, by the same evaluation `mnistcli eval` runs. Under
    torchrun each rank evaluates its share and the sums are combined."""
    import torch

    world = run.world
    if not world.is_distributed:
        result, _ = metrics.evaluate_tensors(model, data, batch_size=256, top=0)
        return result.loss, result.accuracy
    part = distributed.shard_range(len(data), world)
    share = Tensors(x=data.x[part.start : part.stop], y=data.y[part.start : part.stop])
    sums = torch.zeros(3, dtype=torch.float64, device=run.device)
    if len(share):
        result, _ = metrics.evaluate_tensors(model, share, batch_size=256, top=0)
        done = [result.loss * len(share), result.accuracy * len(share), len(share)]
        sums += torch.tensor(done, dtype=torch.float64, device=run.device)
    loss_sum, hits, count = distributed.all_reduce_sum(sums, world).tolist()
    return loss_sum / count, hits / count


def _checkpoint_to_resume(settings: TrainSettings) -> tuple[Path | None, Checkpoint | None]:
    """The last.pt that --resume names, loaded (None, None for a new run)."""
    if settings.resume is None:
        return None, None
    path = runs.resume_path(settings.resume, settings.runs_dir)
    saved = ckpt.load_checkpoint(path)
    if saved.meta.finished:
        raise CheckpointError(
            f"run {path.parent} already finished ({saved.meta.stop_reason or 'completed'}); "
            f"nothing to resume. Start a new run with 'mnistcli train'"
        )
    return path, saved


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
        if run.ema is not None:
            if saved.resume.ema is None:
                raise KeyError("ema_state")
            run.ema.load_state_dict(saved.resume.ema)
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


def _join(settings: TrainSettings, world: World) -> torch.device:
    """This process's device and threads; under torchrun, join the other ranks."""
    import torch

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
    import torch

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


def _generator(*key: int, device: torch.device | None = None) -> torch.Generator:
    """A generator (on the CPU unless `device`) seeded by a tuple of integers (seed, epoch[,
    batch, ...])."""
    import torch

    value = 0
    for k in key:
        value = (value * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator(device or "cpu").manual_seed(value)


def _rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _ignore(_event: Event) -> None:
    return None


def _never() -> bool:
    return False


def _stop_on_nan(epoch: int, batch: int, run_dir: Path) -> None:
    raise TrainingError(
        f"the loss became NaN or infinite in epoch {epoch}, batch {batch}; "
        f"training stopped and the checkpoints in {run_dir} were kept as they "
        f"were (try a lower --lr)"
    )
