"""train's views: the live screen's layout at every terminal size (unit tests of the layout and
of the rendered screen), the epoch and summary tables at narrow widths, NO_COLOR and --json on
a terminal, and the live view watched through a real pseudo-terminal (tmux) while it trains."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from mnistcli.events import TrainResult
from mnistcli.records import EpochStats
from mnistcli.render.console import make_consoles
from mnistcli.render.train_screen import (
    CURVES_MAX,
    CURVES_MIN,
    CURVES_MIN_WIDTH,
    Layout,
    TrainScreen,
    epochs_table,
    fitting_form,
    plan_layout,
    progress_lines,
    table_forms,
)
from mnistcli.render.train_view import LiveView, summary_table
from tests.helpers import REPO, SHARED_MNIST

# The progress line; before an epoch's first batch its numbers read "loss -", "- img/s" and
# "eta -:--:--".
PROGRESS = re.compile(
    r"^epoch \d+/\d+ .*\d+/\d+ loss (\d\.\d{4}|-) ([\d,]+|-) img/s .*eta (\d:\d\d:\d\d|-:--:--)$"
)


def history(n: int) -> tuple[EpochStats, ...]:
    """n epochs with numbers as wide as real ones get (100.00%, 12,345 img/s, 123.4s)."""
    return tuple(
        EpochStats(
            epoch=i,
            train_loss=2.0 / i,
            train_acc=1.0 if i == n else 0.5 + i / (2 * n),
            val_loss=1.0 / i,
            val_acc=0.5 + i / (2.5 * n),
            lr=1e-3,
            seconds=100 + i / 10,
            samples_per_s=12_000 + i,
        )
        for i in range(1, n + 1)
    )


def screen_lines(width: int, height: int, epochs: int, **kwargs) -> list[str]:
    """The live screen as a terminal of `width` x `height` shows it, mid-way through the
    epoch after the `epochs` finished ones."""
    console = Console(width=width, height=height, color_system=None, force_terminal=True)
    screen = TrainScreen()
    screen.set_history(history(epochs), best=epochs - 2, without_gain=2, patience=5)
    for note in kwargs.get("notes", ()):
        screen.add_note(Text(note))
    screen.progress.start(epochs + 1, 40, batches=100, first_batch=0)
    screen.progress.batch, screen.progress.loss, screen.progress.speed = 37, 0.1234, 12_345.6
    screen.progress.visible = kwargs.get("progress", True)
    screen.final = kwargs.get("final", False)
    with console.capture() as capture:
        console.print(screen)
    return capture.get().rstrip("\n").split("\n")


# The layout: how a height is shared ------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "epochs", "fixed", "chrome", "curves_fit", "expected"),
    [
        (24, 30, 1, 7, True, Layout(rows=3, curves=13)),  # 80x24: curves shrink, 3 rows
        (45, 30, 1, 7, True, Layout(rows=23, curves=CURVES_MAX)),  # 60x45: the rest to rows
        (45, 5, 1, 7, True, Layout(rows=5, curves=CURVES_MAX)),  # everything fits
        (20, 30, 1, 7, True, Layout(rows=12, curves=0)),  # curves would be < CURVES_MIN
        (24, 30, 3, 7, True, Layout(rows=3, curves=11)),  # the early-stop and test lines
        (24, 30, 1, 7, False, Layout(rows=16, curves=0)),  # too narrow for curves
        (24, 1, 1, 7, True, Layout(rows=1, curves=0)),  # one epoch: no curve yet
        (24, 0, 1, 7, True, Layout(rows=0, curves=0)),  # before the first epoch
        (8, 30, 1, 7, True, Layout(rows=0, curves=0)),  # no room for even one row
        (9, 30, 1, 7, True, Layout(rows=1, curves=0)),
    ],
)
def test_plan_layout_shares_the_height(height, epochs, fixed, chrome, curves_fit, expected):
    plan = plan_layout(height, epochs, fixed=fixed, chrome=chrome, curves_fit=curves_fit)
    assert plan == expected
    used = fixed + (chrome + plan.rows if plan.rows else 0) + plan.curves
    assert used <= height
    assert plan.curves == 0 or CURVES_MIN <= plan.curves <= CURVES_MAX


@pytest.mark.parametrize(
    ("width", "height", "epochs", "rows", "curves"),
    [(80, 24, 30, 3, True), (120, 24, 30, 3, True), (60, 45, 30, 21, True), (80, 12, 30, 3, False)],
)
def test_the_screen_fits_the_terminal_with_progress_at_the_bottom(
    width, height, epochs, rows, curves
):
    lines = screen_lines(width, height, epochs)
    assert len(lines) < height  # a spare row and column: see the next test
    assert max(len(line) for line in lines) < width
    assert PROGRESS.match(lines[-1].rstrip()), lines[-1]
    assert "epoch 31/40" in lines[-1]
    shown = [int(m.group(1)) for line in lines if (m := re.match(r"│\s+(\d+) │", line))]
    assert shown == list(range(epochs - rows + 1, epochs + 1))  # the newest rows
    assert f"({epochs - rows} earlier not shown, patience 2/5)" in "\n".join(lines)
    assert ("loss   • train   ▞ val" in "\n".join(lines)) is curves
    assert "…" not in "\n".join(lines)  # nothing cut


def test_a_tiny_terminal_still_shows_the_progress_line():
    lines = screen_lines(40, 4, 30)
    assert len(lines) <= 4
    text = "\n".join(lines)
    for piece in ("epoch 31/40", "37/100", "loss 0.1234", "12,346 img/s", "eta"):
        assert piece in text, piece  # on two lines at 40 columns, none cut


def test_notes_stay_between_the_curves_and_the_progress_line():
    note = "early stop: no better validation accuracy for 5 epochs; best epoch 28"
    lines = screen_lines(80, 24, 30, notes=[note])
    assert len(lines) <= 24
    assert lines[-2].rstrip() == note and PROGRESS.match(lines[-1].rstrip())


def test_the_final_frame_has_every_epoch_and_no_progress_line():
    lines = screen_lines(80, 24, 30, final=True, progress=False)
    shown = [int(m.group(1)) for line in lines if (m := re.match(r"│\s+(\d+) │", line))]
    assert shown == list(range(1, 31))
    assert "earlier not shown" not in "\n".join(lines)
    assert not any(PROGRESS.match(line.rstrip()) for line in lines)


# Narrow terminals: forms of the table, the progress line --------------------------------------


@pytest.mark.parametrize(
    ("width", "left_out"),
    [
        (120, None),
        (90, None),
        (80, "img/s"),  # with numbers this wide (100.00%, 102.8s, 12,030)
        (60, "time, img/s"),
        (45, "train loss, lr, time, img/s"),
        (40, "train loss, train acc, lr, time, img/s"),
    ],
)
def test_the_epoch_table_never_cuts_a_number(width, left_out):
    console = Console(width=width, color_system=None)
    epochs = history(12)
    form = fitting_form(console, epochs, width, patience=3)
    with console.capture() as capture:
        console.print(epochs_table(epochs, 11, 1, 3, form=form))
    text = capture.get()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for s in epochs:
        assert f"{s.val_loss:.4f}" in text and f"{100 * s.val_acc:.2f}%" in text
    if left_out is None:
        assert "not shown" not in text and "1.0e-03" in text
    else:
        assert f"{left_out}: not shown at this width; see metrics.csv" in " ".join(text.split())


@pytest.mark.parametrize("width", [120, 80, 60, 50, 40, 30])
def test_the_progress_line_keeps_its_numbers_at_every_width(width):
    from mnistcli.render.train_screen import EpochProgress

    p = EpochProgress()
    p.start(12, 40, batches=938, first_batch=0)
    p.batch, p.loss, p.speed = 400, 0.1234, 12_345.0
    lines = [t.plain for t in progress_lines(p, width, color=False, now=p.started + 10)]
    assert all(len(line) <= width for line in lines)
    text = " ".join(lines)
    for piece in ("epoch 12/40", "400/938", "loss 0.1234", "12,345 img/s", "eta 0:00:13"):
        assert piece in text, piece
    assert len(lines) == (1 if width >= 60 else 2 if width >= 40 else 3)


# The summary -----------------------------------------------------------------------------------


def result(run_dir: Path, reason: str) -> TrainResult:
    return TrainResult(run_dir, "cpu", reason, 1, 0, -1.0, float("inf"), None, None, 3.2)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("finished", "finished"),
        ("early-stopped", "early-stopped"),
        ("interrupted", "interrupted (resumable)"),
        ("completed", "finished"),  # a run written before the words were one vocabulary
    ],
)
def test_the_summary_lists_only_files_that_exist_and_says_how_the_run_ended(
    tmp_path, reason, words
):
    for name in ("last.pt", "config.json"):  # a Ctrl-C in epoch 1: no best.pt, no curves yet
        (tmp_path / name).write_text("x")
    console = Console(width=60, color_system=None)
    with console.capture() as capture:
        console.print(summary_table(result(tmp_path, reason)))
    text = " ".join(capture.get().split())
    assert f"state {words}" in text
    assert "(last.pt, config.json)" in text
    assert "best.pt" not in text and "curves.png" not in text


# Consoles: NO_COLOR removes colour, never the live view -----------------------------------------


@pytest.mark.parametrize("no_color_env", ["", "1"])
@pytest.mark.parametrize("no_color_flag", [False, True])
def test_no_color_keeps_the_live_view(monkeypatch, no_color_env, no_color_flag):
    monkeypatch.setenv("TTY_INTERACTIVE", "1")  # rich's own switch: an interactive terminal
    monkeypatch.setenv("NO_COLOR", no_color_env)
    cons = make_consoles(no_color=no_color_flag)
    assert cons.live
    assert cons.color is False or not (no_color_env or no_color_flag)
    assert make_consoles(no_color=no_color_flag, plain=True).live is False


def test_a_pipe_gets_plain_lines(monkeypatch):
    monkeypatch.delenv("NO_COLOR")
    assert make_consoles().live is False  # pytest's stderr is not a terminal


# Through a real terminal: tmux at fixed sizes --------------------------------------------------

# mnistcli train on a small synthetic MNIST, each batch held back 40 ms so that every epoch is
# on screen long enough for the captures to see it, whatever the machine's speed.
DRIVER = """
import sys, time
import mnistcli.cli.train as train_command
from mnistcli.render import train_view
from tests.helpers import synthetic_mnist
train_command.load_data = lambda values, log, **_: synthetic_mnist(n_train=256, n_test=64)
draw = train_view.LiveView.__call__
def held_back(self, event):
    draw(self, event)
    if type(event).__name__ == "BatchDone":
        time.sleep(0.04)
train_view.LiveView.__call__ = held_back
sys.argv[0] = "mnistcli"
from mnistcli.cli import main
main()
"""

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One tmux server of its own, one window of a fixed size, running `command`."""

    def __init__(self, tmp_path: Path, width: int, height: int, command: str, env: dict) -> None:
        self.socket = f"mnistcli-test-{os.getpid()}-{width}x{height}-{time.monotonic_ns()}"
        self.width, self.height = width, height
        environment = " ".join(f"{k}={v}" for k, v in env.items())
        shell = f"cd {tmp_path} && env -u COLUMNS -u LINES {environment} {command}; echo EXIT=$?"
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), shell + "; sleep 60")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def screen(self) -> list[str]:
        """The visible screen, wrapped lines joined (so a too-wide line shows as one).

        A capture can land while rich redraws the live screen (it erases the old frame and
        writes the new one, and tmux may show the first part of that write); such a torn
        capture is taken again, a few times, 30 ms apart. A layout that leaves the progress
        line out does so in every capture, so the checks still catch it."""
        for _ in range(5):
            lines = [line.rstrip() for line in self._tmux("capture-pane", "-p", "-J").split("\n")]
            bottom = [line for line in lines if line][-1:]
            if not any(line.startswith("epoch") for line in lines) or (
                bottom and (PROGRESS.match(bottom[0]) or bottom[0].startswith("EXIT="))
            ):
                break
            time.sleep(0.03)
        return lines

    def scrollback(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-")

    def resize(self, width: int, height: int) -> None:
        """Resize the window, as dragging a terminal's edge does: tmux rewraps what is on screen
        at once and tells the program (SIGWINCH) up to 250 ms later."""
        self._tmux("resize-window", "-x", str(width), "-y", str(height))
        self.width, self.height = width, height

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def driver(*args: str) -> str:
    """The shell command that runs `mnistcli train args` on synthetic data."""
    return f"{sys.executable} -c '{DRIVER}' train " + " ".join(args)


def watch(tmp_path: Path, width: int, height: int, command: str, env: dict, timeout: float = 120):
    """Run `command` in a tmux window; capture the screen every 0.1 s until it exits. Returns
    the frames taken while the live view trained, the last screen, and the scrollback."""
    tmux = Tmux(tmp_path, width, height, command, {"PYTHONPATH": str(REPO), **env})
    frames = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames.append(tmux.screen())
            if any(line.startswith("EXIT=") for line in frames[-1]):
                break
            time.sleep(0.1)
        last, scrollback = frames[-1], tmux.scrollback()
    finally:
        tmux.close()
    assert "EXIT=0" in last, "\n".join(last)
    training = []
    for frame in frames:
        if any("test set" in line or line.startswith("EXIT=") for line in frame):
            break  # the run is over: the last frame, then the summary
        if any(PROGRESS.match(line) for line in frame):
            training.append(frame)
    return training, last, scrollback


def check_frames(frames: list[list[str]], width: int, height: int, epochs: int) -> None:
    """Every frame fits the terminal and ends with the progress line; many epochs were seen."""
    assert frames, "no frame showed the progress line"
    seen = set()
    for frame in frames:
        assert max(len(line) for line in frame) <= width, "\n".join(frame)
        lines = [line for line in frame if line]
        assert PROGRESS.match(lines[-1]), "\n".join(frame)  # the progress line, at the bottom
        seen.add(int(re.match(r"epoch (\d+)/", lines[-1]).group(1)))
    assert len(seen) >= epochs // 2 and max(seen) >= epochs - 2, sorted(seen)


def train_args(epochs: int) -> list[str]:
    sizes = ["--val-size=64", "--batch-size=32", "--device=cpu", "--threads=1"]
    return [f"--epochs={epochs}", "--patience=0", *sizes]


@needs_tmux
@pytest.mark.parametrize(("width", "height", "epochs"), [(80, 24, 12), (120, 24, 12), (60, 45, 24)])
def test_the_live_view_in_a_real_terminal_keeps_progress_in_sight(tmp_path, width, height, epochs):
    env = {"TERM": "xterm-256color", "NO_COLOR": ""}
    frames, last, scrollback = watch(tmp_path, width, height, driver(*train_args(epochs)), env)
    check_frames(frames, width, height, epochs)
    # the table outgrew the screen and said so
    assert any("earlier not shown" in line for frame in frames for line in frame)
    assert max(len(line) for line in last) <= width
    assert any(line.startswith("state") and "finished" in line for line in last), last
    # the last frame, in the scrollback, holds every epoch, and nothing of the live view is left
    for epoch in (1, epochs // 2, epochs):
        assert re.search(rf"│\s+{epoch} │", scrollback), epoch
    assert len(TABLE_TITLE.findall(scrollback)) == 1, scrollback


@needs_tmux
def test_no_color_and_json_on_a_terminal_still_show_progress(tmp_path):
    """NO_COLOR removes colour, not the live view; --json keeps stdout for the document and
    still shows progress on stderr when stderr is a terminal."""
    env = {"TERM": "xterm-256color", "NO_COLOR": "1"}
    command = driver(*train_args(8), "--json", "--name=j", ">", "out.json")
    frames, _, _ = watch(tmp_path, 80, 24, command, env)
    check_frames(frames, 80, 24, 8)
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["epochs_run"] == 8 and doc["run_dir"].endswith("j")


@pytest.mark.slow
@needs_tmux
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="real MNIST not found")
def test_real_mnist_run_at_80x24_keeps_progress_in_sight(tmp_path, mnist_root):
    """Thirty short epochs on 300 real images: the table overflows an 80x24 screen early."""
    env = {"TERM": "xterm-256color", "NO_COLOR": ""}
    command = [sys.executable, "-m", "mnistcli", "train", "--limit", "300", "--epochs", "30"]
    command += ["--patience", "0", "--val-size", "200", "--device", "cpu"]
    command += ["--data-root", str(mnist_root), "--data", str(SHARED_MNIST)]
    frames, _, _ = watch(tmp_path, 80, 24, " ".join(command), env, timeout=300)
    check_frames(frames, 80, 24, 30)


# Redrawn in place with nothing left behind -----------------------------------------------------

# The epoch table's title line (the summary's "epochs run" is not one), the curves' key, and the
# progress line: each shows once in a scrollback that holds nothing but the final frame.
TABLE_TITLE = re.compile(r"^epochs(  \(.*\))? *$", re.MULTILINE)
LOSS_TITLE = "loss   • train   ▞ val"
ACC_TITLE = "accuracy %   • train   ▞ val"
STALE_PROGRESS = re.compile(r"^epoch \d+/\d+ ", re.MULTILINE)

NOTES = ("early stop: no better validation accuracy for 5 epochs; best epoch 28", "test set ...")


@pytest.mark.parametrize(
    ("width", "height"),
    [(80, 24), (80, 20), (60, 20), (120, 40), (80, 12), (100, 30), (50, 20), (40, 6), (30, 3)],
)
@pytest.mark.parametrize("epochs", [0, 1, 2, 5, 30])
@pytest.mark.parametrize("notes", [(), NOTES])
def test_every_live_frame_leaves_a_spare_row_and_column(width, height, epochs, notes):
    """rich moves up one row per line it drew to redraw a frame. When the view ends it writes a
    newline first: a frame as tall as the terminal scrolls its top line out of reach, left above
    the final frame. A line as wide as the terminal wraps when it narrows by a column."""
    lines = screen_lines(width, height, epochs, notes=notes, progress=not notes)
    assert len(lines) <= height - 1, "\n".join(lines)
    assert max(len(line) for line in lines) <= width - 1, "\n".join(lines)
    if notes and height >= 12:
        assert lines[-1].rstrip() == NOTES[-1]
    elif width > 60:  # the progress line on one line, at the bottom
        assert PROGRESS.match(lines[-1].rstrip()), lines[-1]


@pytest.mark.parametrize("width", [*range(48, 66), 80, 100, 121, 130])
def test_each_chart_keeps_its_title_or_no_chart_is_drawn(width):
    """Narrower than CURVES_MIN_WIDTH, plotext would draw the loss chart's title alone over
    both charts."""
    for final in (False, True):
        text = "\n".join(screen_lines(width, 45, 12, final=final, progress=not final))
        drawn = (width if final else width - 1) >= CURVES_MIN_WIDTH
        assert (LOSS_TITLE in text) is drawn and (ACC_TITLE in text) is drawn, text


def test_the_epoch_table_pads_its_header_cells_like_its_rows():
    console = Console(width=200, color_system=None)
    for form in table_forms():
        with console.capture() as capture:
            console.print(epochs_table(history(12), 11, 1, 3, form=form))
        lines = [line for line in capture.get().splitlines() if line[:1] in ("┃", "│")]
        assert any(line.startswith("┃") for line in lines)
        for line in lines:
            cells = re.split("[┃│]", line)[1:-1]
            assert all(cell.startswith(" ") and cell.endswith(" ") for cell in cells), line


@needs_tmux
@pytest.mark.parametrize(("width", "height", "epochs"), [(60, 20, 10), (80, 12, 8)])
def test_a_live_view_as_tall_as_the_terminal_leaves_nothing_behind(tmp_path, width, height, epochs):
    """The table outgrows the screen early, so every frame takes all the height it may; at the
    end the scrollback holds the run's line, the final frame and the summary, and nothing else
    of the live view."""
    env = {"TERM": "xterm-256color", "NO_COLOR": ""}
    frames, _, scrollback = watch(tmp_path, width, height, driver(*train_args(epochs)), env)
    check_frames(frames, width, height, epochs)
    assert len(TABLE_TITLE.findall(scrollback)) == 1, scrollback
    assert not STALE_PROGRESS.search(scrollback), scrollback
    for epoch in range(1, epochs + 1):  # the final frame holds every epoch
        assert re.search(rf"│\s+{epoch} │", scrollback), epoch


@needs_tmux
def test_narrowing_the_terminal_a_column_at_a_time_leaves_nothing_behind(tmp_path):
    """tmux rewraps a line wider than the new width at once; the program hears of the new size
    up to 250 ms later. A frame a column narrower than the terminal wraps no line when it
    narrows by one, and the next frame is drawn for the new width before the next step."""
    env = {"TERM": "xterm-256color", "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    tmux = Tmux(tmp_path, 80, 24, driver(*train_args(30)), env)
    redrawn = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(LOSS_TITLE in line for line in tmux.screen()):
            time.sleep(0.05)  # the curves are on screen: every line of the frame is wide
        for width in range(79, 73, -1):
            tmux.resize(width, 24)
            until = time.monotonic() + 5
            while time.monotonic() < until:
                bottom = [line for line in tmux.screen() if line][-1]
                if PROGRESS.match(bottom) and len(bottom) == width - 1:
                    redrawn.append(width)  # the progress bar fills the width the frame has
                    break
                time.sleep(0.03)
        while time.monotonic() < deadline and not any(
            line.startswith("EXIT=") for line in tmux.screen()
        ):
            time.sleep(0.1)
        scrollback = tmux.scrollback()
    finally:
        tmux.close()
    assert "EXIT=0" in scrollback, scrollback
    assert redrawn == list(range(79, 73, -1)), redrawn
    assert len(TABLE_TITLE.findall(scrollback)) == 1, scrollback
    assert scrollback.count(LOSS_TITLE) == 1, scrollback
    assert not STALE_PROGRESS.search(scrollback), scrollback


@pytest.mark.skipif(not hasattr(signal, "SIGWINCH"), reason="no SIGWINCH on this system")
def test_a_resized_terminal_is_redrawn_at_once_and_the_handler_put_back(monkeypatch):
    """The view redraws when the terminal says it has a new size (SIGWINCH): here rich's own
    refreshes are off, so a redraw can only come from the signal."""
    console = Console(
        file=io.StringIO(), width=80, height=24, force_terminal=True, force_interactive=True
    )
    view = LiveView(console)
    view.live.auto_refresh = False
    redrawn = threading.Event()
    refresh = view.live.refresh
    monkeypatch.setattr(view.live, "refresh", lambda: (refresh(), redrawn.set()))
    before = signal.getsignal(signal.SIGWINCH)
    with view:
        redrawn.clear()  # the first frame, drawn as the view starts
        assert not redrawn.wait(0.3)
        os.kill(os.getpid(), signal.SIGWINCH)
        assert redrawn.wait(5)
    assert signal.getsignal(signal.SIGWINCH) == before
