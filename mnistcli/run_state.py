"""A training run around the loop in train.py: where it stands (RunState, what last.pt
stores), the open run (Run: settings, model, optimizer, data, and the state they advance; its
batches, checkpoints and metrics), and an epoch's running totals (EpochTally). resume.py opens
one, new or from a last.pt.

Reproducibility: the shuffle order and the augmentation of batch b in epoch e are drawn from
generators seeded by (seed, e, b) (augment.py), and the global RNG (dropout) is saved in every
checkpoint, so a resumed run, even one resumed mid-epoch, replays exactly what an
uninterrupted run would do.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistcli import checkpoint as ckpt
from mnistcli import distributed, metrics, runs
from mnistcli.augment import affine_by, epoch_warps, seeded_generator
from mnistcli.checkpoint import Checkpoint
from mnistcli.data import Mnist, Tensors
from mnistcli.distributed import World
from mnistcli.errors import TrainingError
from mnistcli.events import BatchDone, EpochStarted, Event, TrainResult
from mnistcli.records import Best, EpochStats, EpochTotals, TestScore
from mnistcli.settings import HyperParams, TrainSettings

PROGRESS_INTERVAL = 0.1  # seconds between BatchDone events (each costs one device sync)
# Under torchrun the ranks agree every this many batches whether one was asked to stop (one
# small all-reduce), so that all of them stop after the same batch.
STOP_CHECK_BATCHES = 10


@dataclass
class RunState:
    """Where a run stands: what last.pt stores and a resume restores."""

    epoch: int = 0  # epochs completed
    step: int = 0  # batches done in the epoch in progress (epoch + 1)
    history: list[EpochStats] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    epochs_without_gain: int = 0
    in_progress: EpochTotals = field(default_factory=EpochTotals)  # of epoch + 1, so far

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
        self.epoch, self.step, self.in_progress = stats.epoch, 0, EpochTotals()
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
            in_progress=meta.in_progress or EpochTotals(),
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
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its DDP/compile wrapper
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

    @property
    def batches(self) -> int:
        """Global batches per epoch (each rank takes its share of every one)."""
        return distributed.batches_per_epoch(len(self.train_set), self.hyper.batch_size, self.world)

    def out_of_patience(self) -> bool:
        """Early stopping: `patience` epochs in a row without a better validation accuracy."""
        patience = self.hyper.patience
        return patience > 0 and self.state.epochs_without_gain >= patience

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to the run's precision (bf16), or nothing for float32."""
        amp = self.amp
        return torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None)

    def start_epoch(self, epoch: int) -> EpochTally:
        """Announce `epoch` and start its totals (a resumed epoch's from last.pt)."""
        self.emit(EpochStarted(epoch, self.hyper.epochs, self.batches, first_batch=self.state.step))
        return EpochTally(self, epoch)

    def epoch_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The (images, labels) of `epoch`'s remaining batches, this rank's share of each:
        shuffled by a generator seeded by (seed, epoch), augmented when the recipe asks, laid out
        channels_last (faster CPU convolutions here, see bench/; harmless elsewhere)."""
        hyper, world = self.hyper, self.world
        generator = seeded_generator(hyper.seed, epoch)
        perm = torch.randperm(len(self.train_set), generator=generator).to(self.device)
        warps, offsets = epoch_warps(hyper, world, epoch, perm, self.batches, self.device)
        for b in range(self.state.step, self.batches):
            idx = distributed.rank_slice(perm, b, hyper.batch_size, world)
            x, y = self.train_set.x[idx], self.train_set.y[idx]
            if warps is not None:
                x = affine_by(x, warps[offsets[b] : offsets[b + 1]])
            yield x.contiguous(memory_format=torch.channels_last), y

    def stop_requested(self, batches_done: int | None = None) -> bool:
        """Whether to stop now: after `batches_done` batches of the epoch (never after its last:
        the epoch is finished and validated first), or at the end of an epoch (None). Alone:
        whenever asked. Under torchrun: all ranks decide together, every STOP_CHECK_BATCHES
        batches and at the end of an epoch."""
        if batches_done is not None and batches_done >= self.batches:
            return False
        if not self.world.is_distributed:
            return self.should_stop()
        if batches_done is not None and batches_done % STOP_CHECK_BATCHES:
            return False
        return distributed.any_rank(self.should_stop(), self.world, self.device)

    def evaluate(self, data: Tensors) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the model, by the same evaluation `mnistcli eval`
        runs. Under torchrun each rank evaluates its share and the sums are combined."""
        world = self.world
        if not world.is_distributed:
            result, _ = metrics.evaluate_tensors(self.model, data, batch_size=256, top=0)
            return result.loss, result.accuracy
        part = distributed.shard_range(len(data), world)
        share = Tensors(x=data.x[part.start : part.stop], y=data.y[part.start : part.stop])
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        if len(share):
            result, _ = metrics.evaluate_tensors(self.model, share, batch_size=256, top=0)
            done = [result.loss * len(share), result.accuracy * len(share), len(share)]
            sums += torch.tensor(done, dtype=torch.float64, device=self.device)
        loss_sum, hits, count = distributed.all_reduce_sum(sums, world).tolist()
        return loss_sum / count, hits / count

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
            stop_reason=str(reason),  # a plain string, as JSON and checkpoints store it
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


class EpochTally:
    """An epoch's running training loss and accuracy, summed on the device (no host sync per
    batch), and the BatchDone progress events: a resumed epoch starts from last.pt's totals."""

    def __init__(self, run: Run, epoch: int) -> None:
        start = run.state.in_progress
        if not run.world.is_main:  # rank 0 carries the saved totals of a resumed epoch
            start = EpochTotals(seconds=start.seconds)
        self.run, self.epoch, self.start = run, epoch, start
        self.batches_done = run.state.step
        self.loss_sum = torch.tensor(start.loss_sum, device=run.device)
        self.correct = torch.tensor(start.correct, device=run.device)
        self.seen = start.seen
        self.t_epoch = time.perf_counter() - start.seconds
        self.t_loop = self.t_shown = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One batch done: its mean `loss` over `labels`' images, and its `logits`."""
        count = int(labels.shape[0])
        self.loss_sum += loss * count
        self.correct += (logits.argmax(1) == labels).sum()
        self.seen += count
        self.batches_done += 1
        run, now = self.run, time.perf_counter()
        if now - self.t_shown >= PROGRESS_INTERVAL or self.batches_done == run.batches:
            running = self.loss_sum.item() / self.seen
            if not math.isfinite(running):
                raise nan_error(self.epoch, self.batches_done, run.run_dir)
            self.t_shown = now
            speed = (self.seen - self.start.seen) / max(now - self.t_loop, 1e-9)
            run.emit(BatchDone(self.epoch, self.batches_done, run.batches, running, speed))

    def totals(self) -> EpochTotals:
        """The totals so far, summed over the ranks under torchrun (a collective)."""
        sums = torch.stack(
            [
                self.loss_sum.double(),
                self.correct.double(),
                torch.tensor(self.seen, dtype=torch.float64, device=self.loss_sum.device),
            ]
        )
        sums = distributed.all_reduce_sum(sums, self.run.world)  # the identity for one process
        loss, hits, count = sums.tolist()
        return EpochTotals(loss, round(hits), round(count), time.perf_counter() - self.t_epoch)


def nan_error(epoch: int, batch: int, run_dir: Path) -> TrainingError:
    return TrainingError(
        f"the loss became NaN or infinite in epoch {epoch}, batch {batch}; "
        f"training stopped and the checkpoints in {run_dir} were kept as they "
        f"were (try a lower --lr)"
    )


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state
