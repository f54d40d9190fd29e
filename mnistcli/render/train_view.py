"""What `mnistcli train` shows: a rich live view on a terminal, plain lines elsewhere."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from rich.console import Console
from rich.live import Live
from rich.markup import escape
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
from mnistcli.records import parse_run_status
from mnistcli.render.console import percent, plural
from mnistcli.render.train_screen import TrainScreen


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
    """A rich Live view on a terminal: the run's line printed once, then a screen redrawn in
    place (train_screen.TrainScreen) that fits the terminal at every refresh, with the progress
    line always at its bottom. The last frame, left in the scrollback, has every epoch."""

    def __init__(self, err: Console) -> None:
        super().__init__(err)
        self.screen = TrainScreen()
        self.live = Live(
            self.screen,
            console=err,
            refresh_per_second=4,
            transient=True,  # cleared at the end, for the final frame printed in its place
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.resizes = ResizeRedraw(self.live)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        self.resizes.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.resizes.stop()
        self.screen.progress.visible = False
        self.live.__exit__(None, None, None)
        self.screen.final = True  # every epoch and full-size curves, left in the scrollback
        self.err.print(self.screen)

    def __call__(self, event: Event) -> None:
        screen = self.screen
        if isinstance(event, RunStarted):
            # above the live screen: scrolls away with the terminal, never takes its room
            self.err.print(Text(describe_run(event)))
            # a resumed run: its epochs so far, as the trainer judged them
            screen.set_history(
                event.history, event.best_epoch, event.epochs_without_gain, event.hyper.patience
            )
        elif isinstance(event, EpochStarted):
            screen.progress.start(event.epoch, event.epochs, event.batches, event.first_batch)
        elif isinstance(event, BatchDone):
            screen.progress.batch, screen.progress.loss = event.batch, event.loss
            screen.progress.speed = event.samples_per_s
        elif isinstance(event, EpochDone):
            screen.set_history(
                event.history, event.best_epoch, event.epochs_without_gain, event.patience
            )
            self.live.refresh()
        elif isinstance(event, EarlyStopped | TestDone):
            screen.progress.visible = False
            screen.add_note(Text(_event_text(event)))
            self.live.refresh()


class ResizeRedraw:
    """Redraws a rich Live view as soon as the terminal reports a new size (SIGWINCH), rather
    than at the next of its 4 refreshes a second.

    A terminal that narrows rewraps the lines on its screen (tmux, VTE, iTerm2, kitty do), and
    rich, which clears one row per line it drew, leaves the first part of each wrapped line
    behind. Every live frame is one column narrower than the terminal (train_screen), so a
    terminal narrowed one column at a time wraps none of its lines if the next frame comes
    before the next column goes. Narrowed by more at once, it still leaves pieces: rich cannot
    know how the terminal rewrapped what it drew (Textualize/rich#971).

    The handler only sets an event; a thread of its own redraws, under the Live's lock, so no
    redraw is cut into by another. Only the main thread may set a handler, and not every system
    has SIGWINCH: there the view keeps rich's refreshes alone.
    """

    def __init__(self, live: Live) -> None:
        self.live = live
        self.resized = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=self._redraw, name="resize-redraw", daemon=True)
        # None: a handler not set from Python, put back as the default one
        self.previous: Callable[[int, FrameType | None], object] | int | None = None
        self.installed = False

    def start(self) -> None:
        winch = getattr(signal, "SIGWINCH", None)
        if winch is None or threading.current_thread() is not threading.main_thread():
            return
        self.previous = signal.signal(winch, self._resized)
        self.installed = True
        self.thread.start()

    def stop(self) -> None:
        if not self.installed:
            return
        previous = signal.SIG_DFL if self.previous is None else self.previous
        signal.signal(signal.SIGWINCH, previous)
        self.done = True
        self.resized.set()
        self.thread.join()
        self.installed = False

    def _resized(self, signum: int, frame: FrameType | None) -> None:
        self.resized.set()

    def _redraw(self) -> None:
        while True:
            self.resized.wait()
            self.resized.clear()
            if self.done:
                return
            self.live.refresh()


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


# What a run folder can hold, in the order the summary lists them.
RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "metrics.json", "config.json", "curves.png")


def summary_table(result: TrainResult) -> Table:
    """The final summary (stdout): how the run ended, the best epoch, accuracies, and the files
    the run folder holds now (after an early Ctrl-C, best.pt and curves.png do not exist yet)."""
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
    files = [name for name in RUN_FILES if (result.run_dir / name).is_file()]
    table.add_row(
        "saved in",
        escape(str(result.run_dir)) + (f"  ({', '.join(files)})" if files else "  (nothing yet)"),
    )
    return table
