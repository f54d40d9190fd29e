"""Progress on stderr for the long operations outside training: checking or fetching the MNIST
files, and scoring a split in `mnistcli eval`.

Shown only when stderr is an interactive terminal (rich's `Console.is_interactive`: a TTY, not
TERM=dumb, TTY_INTERACTIVE): a pipe or a file gets no bar and no escape codes. NO_COLOR and
--no-color take the colour away, never the progress; --json leaves it on, since it is on stderr
and the JSON on stdout. The bars are transient: once the work is done they leave the screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from mnistcli.data import FileProgress


@dataclass
class TaskProgress:
    """Callbacks for the core (`data`: a FileProgress, `scoring`: images done and in all) that
    move a rich Progress, or do nothing when there is none to move."""

    progress: Progress | None
    _files: dict[tuple[str, str], TaskID] = field(default_factory=dict)
    _scoring: TaskID | None = None

    def data(self, event: FileProgress) -> None:
        if self.progress is None:
            return
        key = (event.name, event.action)
        if key not in self._files:
            self._files[key] = self.progress.add_task(
                f"{event.action} {event.name}", total=None, amount=""
            )
        total = f"/{decimal(event.total)}" if event.total else ""
        self.progress.update(
            self._files[key],
            completed=event.done,
            total=event.total or None,
            amount=f"{decimal(event.done)}{total}",
        )
        if event.total and event.done >= event.total:  # done: make room for the next one
            self.progress.remove_task(self._files.pop(key))

    def scoring(self, done: int, total: int) -> None:
        if self.progress is None:
            return
        if self._scoring is None:
            self._scoring = self.progress.add_task("scoring", total=total, amount="")
        self.progress.update(self._scoring, completed=done, amount=f"{done:,}/{total:,} images")


@contextmanager
def task_progress(err: Console) -> Iterator[TaskProgress]:
    """A TaskProgress drawing on `err` for the duration of the block, if `err` is interactive."""
    if not err.is_interactive:
        yield TaskProgress(None)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=None),
        TextColumn("{task.fields[amount]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        expand=True,
    )
    with progress:
        yield TaskProgress(progress)
