"""What `mnistcli export` prints: its progress on a terminal, the file written and its
self-check."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from mnistcli.export import ExportProgress, ExportResult
from mnistcli.render.console import percent

READERS = {"onnx": "onnxruntime", "safetensors": "safetensors", "pt2": "torch.export"}


def export_lines(result: ExportResult) -> str:
    """Rich markup: the files, the two accuracies and the largest logit difference."""
    check = result.check
    files = ", ".join(escape(str(p)) for p in result.files)
    reader = READERS[result.format]
    return "\n".join(
        [
            f"[bold green]wrote[/] {files} ({result.format}, {result.bytes / 2**20:.2f} MiB)",
            f"self-check on {check.n:,} test digits: PyTorch {percent(check.torch_accuracy)}, "
            f"{reader} {percent(check.export_accuracy)}; max |logit difference| "
            f"{check.max_abs_diff:.1e} (limit {check.tolerance:.0e}), "
            f"{check.mismatches} predicted digits differ",
        ]
    )


STAGES = {
    "reference": "PyTorch on the test digits",
    "writing": "writing the file",
    "checking": "checking the written file",
}


class CountColumn(ProgressColumn):
    """'2,000/10,000': done and total with thousands separators, as every count mnistcli
    prints (rich's MofNCompleteColumn has none); the count alone while the total is unknown."""

    def render(self, task: Task) -> Text:
        done = f"{int(task.completed):,}"
        return Text(done if task.total is None else f"{done}/{int(task.total):,}", style="green")


class ExportProgressView:
    """The export's progress on stderr while it is a terminal (with or without colour):
    one transient line per stage, gone when the export ends. Elsewhere it shows nothing."""

    def __init__(self, err: Console) -> None:
        self.progress: Progress | None = None
        if err.is_terminal and not err.is_dumb_terminal:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                CountColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ExportProgressView:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: ExportProgress) -> None:
        if self.progress is None:
            return
        task = self.tasks.get(event.stage)
        if task is None:
            for done in self.tasks.values():  # one stage at a time on screen
                self.progress.update(done, visible=False)
            task = self.progress.add_task(STAGES.get(event.stage, event.stage), total=None)
            self.tasks[event.stage] = task
        total = event.total if event.stage != "writing" else None  # the writer says no more
        self.progress.update(task, completed=event.done, total=total)
