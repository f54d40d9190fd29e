"""What `mnistcli train` shows: a rich live view on a terminal, plain lines elsewhere."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from mnistcli.events import (
    BatchDone,
    EarlyStopped,
    EpochDone,
    EpochStarted,
    Event,
    RunStarted,
    TestDone,
    TrainResult,
)
from mnistcli.records import EpochStats, parse_run_status
from mnistcli.render.charts import curves
from mnistcli.render.console import is_color, percent, plural


def describe_run(e: RunStarted) -> str:
    h = e.hyper
    verb = f"resuming at epoch {e.start_epoch}:" if e.resumed else "training"
    stop = f"patience {h.patience}" if h.patience else "no early stopping"
    extra = f", {h.schedule} lr" if h.schedule != "constant" else ""
    extra += f", shifts up to {h.shift:g}px" if h.shift else ""
    extra += ", affine warps" if h.rotate or h.scale or h.shear else ""
    extra += f", label smoothing {h.label_smoothing:g}" if h.label_smoothing else ""
    if h.select == "latest-within-se":
        extra += ", keeping the latest epoch within 1 SE of the best validation accuracy"
    batch = f"batch {h.batch_size}"
    if e.world_size > 1:
        batch = f"batch {h.batch_size} x {e.world_size} processes = {h.batch_size * e.world_size}"
    return (
        f"{verb} {h.model} ({e.parameters:,} parameters) on {e.device} ({e.precision}), "
        f"recipe {h.recipe}: "
        f"{e.n_train:,} train / {e.n_val:,} validation images, {batch}, "
        f"lr {h.lr:g}{extra}, up to {plural(h.epochs, 'epoch')}, "
        f"{stop} -> {e.run_dir}"
    )


def epoch_line(e: EpochDone) -> str:
    s = e.stats
    mark = (
        "  * best"
        if e.is_best
        else f"  (no gain {e.epochs_without_gain}/{e.patience})"
        if e.patience
        else ""
    )
    return (
        f"epoch {s.epoch:>2}  train loss {s.train_loss:.4f} acc {percent(s.train_acc):>7}  "
        f"val loss {s.val_loss:.4f} acc {percent(s.val_acc):>7}  lr {s.lr:.2e}  "
        f"{s.seconds:5.1f}s  {s.samples_per_s:,.0f} img/s{mark}"
    )


def epochs_table(
    history: tuple[EpochStats, ...], best_epoch: int, epochs_without_gain: int, patience: int
) -> Table:
    title = "epochs" + (f"  (patience {epochs_without_gain}/{patience})" if patience else "")
    table = Table(title=title, title_justify="left", expand=False, pad_edge=False)
    for col in (
        "epoch",
        "train loss",
        "train acc",
        "val loss",
        "val acc",
        "lr",
        "time",
        "img/s",
        "",
    ):
        table.add_column(col, justify="right")
    for s in history:
        best = s.epoch == best_epoch
        table.add_row(
            str(s.epoch),
            f"{s.train_loss:.4f}",
            percent(s.train_acc),
            f"{s.val_loss:.4f}",
            percent(s.val_acc),
            f"{s.lr:.1e}",
            f"{s.seconds:.1f}s",
            f"{s.samples_per_s:,.0f}",
            "★ best" if best else "",
            style="bold green" if best else None,
        )
    return table


class QuietView:
    """--quiet: nothing while training (the run still writes curves.png)."""

    def __enter__(self) -> QuietView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, event: Event) -> None:
        return None


class PlainView(QuietView):
    """One line per epoch on stderr: readable in CI logs and files (like Keras verbose=2)."""

    def __init__(self, err: Console) -> None:
        self.err = err

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.err.print(escape(describe_run(event)), soft_wrap=True)
            for s in event.history:
                self.err.print(
                    f"epoch {s.epoch:>2}  (from the checkpoint) val acc {percent(s.val_acc)}"
                )
        elif isinstance(event, EpochDone):
            self.err.print(epoch_line(event), soft_wrap=True)
        elif isinstance(event, EarlyStopped | TestDone):
            self.err.print(_event_text(event))


class LiveView(PlainView):
    """A rich Live view: epoch progress bar, a table of finished epochs, plotext curves."""

    def __init__(self, err: Console) -> None:
        super().__init__(err)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[speed]:,.0f} img/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
        )
        self.task = self.progress.add_task(
            "epoch", total=1, epoch=0, epochs=0, loss=0.0, speed=0.0, visible=False
        )
        self.header = Text("")
        self.table: Table | None = None
        self.chart: Text | None = None
        self.notes: list[Text] = []  # early stop, the test set: below the curves, in order
        self.live = Live(
            self._group(),
            console=err,
            refresh_per_second=8,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def _group(self) -> Group:
        parts: list = [self.header]
        if self.table is not None:
            parts.append(self.table)
        if self.chart is not None:
            parts.append(self.chart)
        parts.extend(self.notes)
        parts.append(self.progress)
        return Group(*parts)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.update(self.task, visible=False)
        self.live.update(self._group(), refresh=True)
        self.live.__exit__(None, None, None)

    def _redraw_history(
        self, history: tuple[EpochStats, ...], best: int, without_gain: int, patience: int
    ) -> None:
        self.table = epochs_table(history, best, without_gain, patience)
        if len(history) >= 2:  # a curve needs two points
            width = min(self.err.width, 120)
            self.chart = Text.from_ansi(
                curves(
                    history,
                    width,
                    14,
                    color=is_color(self.err),
                )
            )
        self.live.update(self._group())

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.header = Text(describe_run(event))
            if event.history:  # a resumed run: its epochs so far, as the trainer judged them
                self._redraw_history(
                    event.history,
                    event.best_epoch,
                    event.epochs_without_gain,
                    event.hyper.patience,
                )
            self.live.update(self._group())
        elif isinstance(event, EpochStarted):
            self.progress.reset(
                self.task,
                total=event.batches,
                completed=event.first_batch,
                visible=True,
                epoch=event.epoch,
                epochs=event.epochs,
                loss=0.0,
                speed=0.0,
            )
        elif isinstance(event, BatchDone):
            self.progress.update(
                self.task, completed=event.batch, loss=event.loss, speed=event.samples_per_s
            )
        elif isinstance(event, EpochDone):
            self._redraw_history(
                event.history, event.best_epoch, event.epochs_without_gain, event.patience
            )
        elif isinstance(event, EarlyStopped | TestDone):
            self.progress.update(self.task, visible=False)
            self.notes.append(Text(_event_text(event)))
            self.live.update(self._group(), refresh=True)


def _event_text(event: EarlyStopped | TestDone) -> str:
    if isinstance(event, EarlyStopped):
        return (
            f"early stop: no better validation accuracy for {plural(event.patience, 'epoch')}; "
            f"best epoch {event.best_epoch}"
        )
    return (
        f"test set ({event.score.n:,} images) on the restored best model: "
        f"acc {percent(event.score.acc)}, loss {event.score.loss:.4f}"
    )


def summary_table(result: TrainResult) -> Table:
    """The final summary (stdout): best epoch, accuracies, where things were saved."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("state", parse_run_status(result.stop_reason).label)
    table.add_row("epochs run", str(result.epochs_run))
    table.add_row(
        "best epoch",
        f"{result.best_epoch} (validation acc "
        f"{percent(result.best_val_acc)}, loss {result.best_val_loss:.4f})"
        if result.best_epoch
        else "none yet (no epoch finished)",
    )
    if result.test_acc is not None:
        table.add_row(
            "test accuracy",
            f"{percent(result.test_acc)} (loss {result.test_loss:.4f}, best model restored)",
        )
    table.add_row("elapsed", f"{result.seconds:.1f} s on {result.device}")
    table.add_row(
        "saved in",
        escape(str(result.run_dir)) + "  (best.pt, last.pt, metrics.csv, "
        "metrics.json, config.json, curves.png)",
    )
    return table
