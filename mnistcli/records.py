"""What a run records as it goes: each finished epoch, the best one so far, the running totals
of an epoch stopped part-way, and the test score. Small frozen dataclasses that checkpoints,
metrics files, events and views all share; nothing here imports torch."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class EpochStats:
    """One finished epoch, as the trainer measured it."""

    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    samples_per_s: float


@dataclass(frozen=True)
class Best:
    """The best validated epoch so far; epoch 0 until one has been validated."""

    epoch: int = 0
    val_acc: float = -1.0
    val_loss: float = math.inf

    @property
    def validated(self) -> bool:
        return self.epoch > 0

    def reported(self) -> tuple[float | None, float | None]:
        """(val_acc, val_loss) for a report: None, not -1 and Infinity, before any validation."""
        return (self.val_acc, self.val_loss) if self.validated else (None, None)


@dataclass(frozen=True)
class EpochTotals:
    """An epoch's training totals over the images seen so far: at its end, or where a run
    stopped part-way (last.pt keeps them, so a resume continues them exactly)."""

    loss_sum: float = 0.0  # summed over the images seen
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class TestScore:
    """The test set, evaluated once on the restored best model at the end of a run."""

    loss: float
    acc: float
    n: int
