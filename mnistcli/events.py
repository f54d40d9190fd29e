"""What the trainer tells the caller: small frozen events as a run goes (started, epoch started,
batch done, epoch done, early stop, test set done) and the result it returns. The command
line draws them; the trainer itself prints nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mnistcli.records import Best, EpochStats, TestScore
from mnistcli.settings import HyperParams


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
    # a RunStatus: finished, early-stopped or interrupted ("running" in metrics.json between
    # epochs); runs written before these words say "completed" and "early_stop"
    stop_reason: str
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
