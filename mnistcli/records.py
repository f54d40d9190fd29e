"""What a run records as it goes: each finished epoch, the best one so far, the running totals
of an epoch stopped part-way, and the test score. Small frozen dataclasses that checkpoints,
metrics files, events and views all share, and the words for how a run stands (RunStatus);
nothing here imports torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


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


class RunStatus(StrEnum):
    """How a run stands, in the one set of words the train summary, its JSON, metrics.json,
    inspect and `mnistcli runs` all use."""

    FINISHED = "finished"  # every planned epoch run, test set scored
    EARLY_STOPPED = "early-stopped"  # stopped by patience, test set scored
    INTERRUPTED = "interrupted"  # stopped part-way (Ctrl-C, SIGTERM, killed): --resume goes on
    EMPTY = "empty"  # nothing to use or resume: stopped before anything was saved

    @property
    def label(self) -> str:
        """The words for a person: 'interrupted' says it can be resumed."""
        return "interrupted (resumable)" if self is RunStatus.INTERRUPTED else self.value

    @property
    def finished(self) -> bool:
        """Whether the run ended by itself (its test set is scored; nothing to resume)."""
        return self in (RunStatus.FINISHED, RunStatus.EARLY_STOPPED)


# What runs written before these words stored as their stop reason, and "running", which
# metrics.json says between epochs (a run killed then reads as interrupted).
_OLD_WORDS = {
    "completed": RunStatus.FINISHED,
    "early_stop": RunStatus.EARLY_STOPPED,
    "running": RunStatus.INTERRUPTED,
}


def parse_run_status(stored: str | None, *, finished: bool = False) -> RunStatus:
    """A stored stop reason (this version's words or an older one's) as a RunStatus; None is a
    finished run's (from before stop reasons were stored) or an unfinished one's."""
    if stored in _OLD_WORDS:
        return _OLD_WORDS[stored]
    try:
        return RunStatus(stored)
    except ValueError:
        return RunStatus.FINISHED if finished else RunStatus.INTERRUPTED
