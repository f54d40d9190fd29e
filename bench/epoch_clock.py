"""Times a training run by the trainer's own events (shared by gpu_bench.py and recipe_check.py).

clock = EpochClock()
result = train(settings, mnist, on_event=clock)
clock.train_seconds   # first epoch's start to last epoch's end (validation, checkpoints in)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class EpochClock:
    """An `on_event` callback that notes when each epoch starts and ends, and the precision."""

    starts: list[float] = field(default_factory=list)  # time.perf_counter() at EpochStarted
    ends: list[float] = field(default_factory=list)  # ... at EpochDone
    precision: str | None = None

    def __call__(self, event: object) -> None:
        from mnistcli.events import EpochDone, EpochStarted, RunStarted

        now = time.perf_counter()
        if isinstance(event, RunStarted):
            self.precision = event.precision
        elif isinstance(event, EpochStarted):
            self.starts.append(now)
        elif isinstance(event, EpochDone):
            self.ends.append(now)

    @property
    def train_seconds(self) -> float:
        return self.ends[-1] - self.starts[0]
