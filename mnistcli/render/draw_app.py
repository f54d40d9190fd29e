"""`mnistcli draw`: a full-screen Textual app to draw a digit with the mouse and watch the network
read it, live.

The canvas (canvas.Canvas, 56x56) is drawn with half-block characters, two pixel rows per line,
so it keeps its square shape; on a terminal too small for that it is drawn at half size (each
character cell covering 2x4 pixels), and below that the app says how large the terminal must
be. Every change to the drawing schedules a reading (draw.read_drawing: predict's own
preprocessing, then the model), at most one per READ_INTERVAL so a flood of mouse events stays
fluid; the bars show it. The saliency overlay and the feature maps (explain.py, drawn by
feature_view as `inspect --image` draws them) follow, at most one per INSIGHT_INTERVAL, since
they cost more than the reading. State lives in the plain classes of canvas.py and draw.py;
this module only draws them and turns events into calls.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from rich.console import Group
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from mnistcli.canvas import Canvas, DigitFolder
from mnistcli.draw import DrawModel, MnistDigits, Reading, activations, read_drawing, saliency
from mnistcli.draw import to_canvas as saliency_on_canvas
from mnistcli.errors import MnistcliError
from mnistcli.render.draw_widgets import (
    FULL,
    INPUT_WIDTH,
    SIDE_GUTTER,
    SIDE_MIN,
    CanvasView,
    InputView,
    Scale,
    bars_view,
    choose_scale,
    counts_text,
    keys_text,
    too_small_message,
)
from mnistcli.render.feature_view import layer_block

if TYPE_CHECKING:
    from mnistcli.explain import Activations

READ_INTERVAL = 0.02  # seconds between two readings while drawing: at most 50 a second
INSIGHT_INTERVAL = 0.15  # seconds between two saliency / feature-map updates
CURSOR_STEP = 2  # canvas pixels an arrow key moves the cursor


class DrawApp(App[None]):
    """Draw a digit; the model reads it as you draw."""

    TITLE = "mnistcli draw"
    # no text selection: a drag draws, and a selection following it would repaint the whole
    # screen on every mouse event (4x the work of a stroke segment, measured)
    ALLOW_SELECT = False
    CSS = """
    Screen { layout: vertical; }
    #main { height: 1fr; }
    #frame { width: auto; height: auto; border: round $accent; }
    #side { width: 1fr; height: 1fr; padding: 0 0 0 1; scrollbar-size-vertical: 1; }
    #reading { height: auto; }
    #input { width: 29; height: auto; }
    #bars { width: 1fr; height: auto; }
    #insight { height: auto; }
    #status { height: 1; }
    #keys { height: auto; color: $text-muted; }
    #counts { height: auto; }
    #too-small { display: none; width: 1fr; height: 1fr; content-align: center middle;
                 text-align: center; }
    """
    BINDINGS: ClassVar = [
        Binding("q", "quit", "quit"),
        Binding("escape", "quit", "quit", show=False),
        Binding("u", "undo", "undo"),
        Binding("c", "clear", "clear"),
        Binding("left_square_bracket", "brush(-1)", "smaller brush"),
        Binding("right_square_bracket", "brush(1)", "larger brush"),
        Binding("s", "toggle_saliency", "saliency"),
        Binding("f", "toggle_features", "feature maps"),
        Binding("l", "next_layer", "next layer"),
        Binding("r", "random_digit", "random MNIST digit"),
        Binding("up", "move(0, -1)", show=False),
        Binding("down", "move(0, 1)", show=False),
        Binding("left", "move(-1, 0)", show=False),
        Binding("right", "move(1, 0)", show=False),
        Binding("space", "pen", show=False),
        *(Binding(str(d), f"save({d})", show=False) for d in range(10)),
    ]

    def __init__(
        self,
        model: DrawModel,
        *,
        save_to: Path | None = None,
        digits: MnistDigits | None = None,
        canvas: Canvas | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.canvas = canvas or Canvas()
        self.folder = DigitFolder(save_to) if save_to is not None else None
        self.digits = digits
        self.reading: Reading | None = None
        self.show_saliency = False
        self.show_features = False
        self.layer = 0  # index into the activations' layers
        self.version = 0  # changes to the drawing so far; a reading remembers which it saw
        self._read_version = -1
        self._last_read = 0.0
        self._read_scheduled = False
        self._insight_scheduled = False
        self._last_insight = 0.0
        self._activations: Activations | None = None
        self._scale: Scale | None = FULL

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        self.view = CanvasView(self.canvas, id="canvas")
        with Horizontal(id="main"):
            with Container(id="frame"):
                yield self.view
            with VerticalScroll(id="side", can_focus=False):
                with Horizontal(id="reading"):
                    with Vertical(id="input"):
                        yield Static(Text("the model's input, 28x28", style="dim"))
                        yield InputView(id="seen")
                    yield Static(id="bars")
                yield Static(id="insight")
        yield Static(id="status")
        yield Static(Text(keys_text(self.folder is not None)), id="keys")
        if self.folder is not None:
            yield Static(id="counts")
        yield Static(id="too-small")

    def on_mount(self) -> None:
        self.fit_to(self.size.width, self.size.height)
        self._update_frame_title()
        self._update_counts()
        self.set_status(
            f"model: {self.model.path} ({self.model.description}) on {self.model.where}"
        )
        self.read_now()

    def on_resize(self, event: events.Resize) -> None:
        self.fit_to(event.size.width, event.size.height)

    def fit_to(self, width: int, height: int) -> None:
        """Lay the app out for a terminal of width x height, or say that it is too small."""
        saving = self.folder is not None
        footer = self._footer_texts()
        scale = choose_scale(width, height, self.canvas.side, footer)
        self._scale = scale
        small = self.query_one("#too-small", Static)
        for part in ("#main", "#status", "#keys", *(("#counts",) if saving else ())):
            self.query_one(part).display = scale is not None
        small.display = scale is None
        if scale is None:
            message = too_small_message(width, height, self.canvas.side, footer)
            small.update(Text(message, justify="center"))
            return
        self.view.set_scale(scale)
        self._update_bars()

    @property
    def up_to_date(self) -> bool:
        """Whether the reading shown is of the drawing as it is now."""
        return self._read_version == self.version and not self._read_scheduled

    @property
    def too_small(self) -> bool:
        return self._scale is None

    def _side_width(self) -> int:
        """Columns for the side panel's content (the reading, the feature maps)."""
        cols, _ = (self._scale or FULL).cells(self.canvas.side)
        return max(SIDE_MIN, self.size.width - cols - 2) - SIDE_GUTTER

    def _update_frame_title(self) -> None:
        frame = self.query_one("#frame")
        frame.border_title = f"draw here · brush {self.canvas.brush:g}"
        marks = []
        if self.show_saliency:
            marks.append("saliency")
        if self.view.pen_down:
            marks.append("pen down")
        frame.border_subtitle = " · ".join(marks)

    def _footer_texts(self) -> list[str]:
        texts = [keys_text(self.folder is not None)]
        if self.folder is not None:
            texts.append(counts_text(self.folder.root, self.folder.counts))
        return texts

    def _update_counts(self) -> None:
        if self.folder is None:
            return
        text = counts_text(self.folder.root, self.folder.counts)
        self.query_one("#counts", Static).update(Text(text))

    def set_status(self, message: str, style: str = "") -> None:
        # one line, whatever it says: no new layout needed
        status = self.query_one("#status", Static)
        status.update(Text(message, style=style, no_wrap=True), layout=False)

    # -- reading the drawing ------------------------------------------------------------------

    def drawing_changed(self) -> None:
        """The drawing changed: redraw it now, read it soon (at most once per READ_INTERVAL)."""
        self.version += 1
        self.view.refresh_drawing()
        if self._read_scheduled:
            return
        self._read_scheduled = True
        wait = self._last_read + READ_INTERVAL - time.perf_counter()
        if wait > 0:
            self.set_timer(wait, self.read_now)
        else:
            self.call_later(self.read_now)

    def read_now(self) -> None:
        """Read the drawing as it is now and show the bars (the insight views follow)."""
        self._read_scheduled = False
        self._last_read = time.perf_counter()
        version = self.version
        if version == self._read_version:
            return
        self._read_version = version
        self.reading = read_drawing(self.model, self.canvas.to_image())
        self._update_bars()
        self.call_after_refresh(self.bars_shown, version)
        if self.show_saliency or self.show_features:
            self._schedule_insight()
        elif self.view.overlay is not None:
            self.view.overlay = None
            self.view.refresh_drawing()

    def bars_shown(self, version: int) -> None:
        """Called once the bars of the reading of drawing `version` are on the screen
        (bench/draw_latency.py listens here)."""

    def _update_bars(self) -> None:
        if self.too_small:
            return
        bars_width = self._side_width() - INPUT_WIDTH
        # the same size every time: redraw them without laying the screen out again
        pixels = np.zeros((28, 28), np.uint8) if self.reading is None else self.reading.pixels
        self.query_one(InputView).set_pixels(pixels)
        self.query_one("#bars", Static).update(bars_view(self.reading, bars_width), layout=False)

    # -- saliency and feature maps -------------------------------------------------------------

    def _schedule_insight(self) -> None:
        if self._insight_scheduled:
            return
        self._insight_scheduled = True
        wait = self._last_insight + INSIGHT_INTERVAL - time.perf_counter()
        if wait > 0:
            self.set_timer(wait, self.update_insight)
        else:
            self.call_later(self.update_insight)

    def update_insight(self) -> None:
        """Compute and show the saliency overlay and the feature maps, whichever are on."""
        self._insight_scheduled = False
        self._last_insight = time.perf_counter()
        reading = self.reading
        try:
            if self.show_saliency and reading is not None:
                sal = saliency(self.model, reading)
                peak = float(sal.max())
                on_canvas = saliency_on_canvas(
                    sal / peak if peak > 0 else sal, reading, self.canvas.ink
                )
                self.view.overlay = on_canvas
            else:
                self.view.overlay = None
            self.view.refresh_drawing()
            self._activations = None
            if self.show_features and reading is not None and not reading.blank:
                self._activations = activations(self.model, reading)
        except MnistcliError as exc:  # the weights of an export could not be loaded
            self.show_saliency = self.show_features = False
            self.view.overlay = None
            self.set_status(f"error: {exc}", "bold red")
        self._show_features()

    def _show_features(self) -> None:
        insight = self.query_one("#insight", Static)
        if not self.show_features:
            insight.update("")
            return
        acts = self._activations
        if acts is None:
            insight.update(
                Text("\nfeature maps: draw a digit to see what each layer finds", style="dim")
            )
            return
        self.layer %= len(acts.layers)
        layer = acts.layers[self.layer]
        before = acts.layers[self.layer - 1].shape if self.layer else (1, 28, 28)
        width = self._side_width()
        parts = layer_block(layer, acts, before, color=True, width=width)
        head = Text(f"\nlayer {self.layer + 1} of {len(acts.layers)} (l: next)", style="dim")
        insight.update(Group(head, *parts))

    # -- actions ------------------------------------------------------------------------------

    def action_undo(self) -> None:
        if self.canvas.undo():
            self.drawing_changed()
        else:
            self.set_status("nothing to undo")

    def action_clear(self) -> None:
        self.view.pen_down = False
        self.canvas.clear()
        self._update_frame_title()
        self.drawing_changed()

    def action_brush(self, steps: int) -> None:
        self.canvas.resize_brush(steps)
        self._update_frame_title()

    def action_toggle_saliency(self) -> None:
        self.show_saliency = not self.show_saliency
        self._update_frame_title()
        if self.show_saliency:
            self.set_status(
                "saliency: the pixels that spoke for the top digit glow (integrated gradients)"
            )
        self._schedule_insight()

    def action_toggle_features(self) -> None:
        self.show_features = not self.show_features
        self._schedule_insight()

    def action_next_layer(self) -> None:
        if not self.show_features:
            self.show_features = True
            self._schedule_insight()
            return
        self.layer += 1
        self._show_features()

    def action_move(self, dx: int, dy: int) -> None:
        side = self.canvas.side
        x, y = self.view.cursor or (side / 2, side / 2)
        x = min(side - 1.0, max(0.0, x + dx * CURSOR_STEP))
        y = min(side - 1.0, max(0.0, y + dy * CURSOR_STEP))
        self.view.cursor = (x, y)
        if self.view.pen_down:
            self.canvas.extend(x, y)
            self.drawing_changed()
        else:
            self.view.refresh_drawing()

    def action_pen(self) -> None:
        """Space: put the pen down at the cursor (a dot), or lift it."""
        side = self.canvas.side
        if self.view.cursor is None:
            self.view.cursor = (side / 2, side / 2)
        if self.view.pen_down:
            self.view.pen_down = False
            self.canvas.end()
        else:
            self.view.pen_down = True
            self.canvas.begin(*self.view.cursor)
        self._update_frame_title()
        self.drawing_changed()

    def action_save(self, digit: int) -> None:
        if self.folder is None:
            self.set_status("to keep drawings, start with --save-to DIR; a digit key then saves")
            return
        if self.canvas.blank:
            self.set_status("nothing to save: the canvas is blank")
            return
        try:
            path = self.folder.save(self.canvas.to_image(), digit)
        except MnistcliError as exc:
            self.set_status(f"error: {exc}", "bold red")
            return
        self.set_status(f"saved {path} as a {digit}; the canvas is clear for the next one")
        self._update_counts()
        self.view.pen_down = False
        self.canvas.clear()
        self._update_frame_title()
        self.drawing_changed()

    def action_random_digit(self) -> None:
        if self.digits is None:
            self.set_status("no MNIST data configured")
            return
        if not self.digits.loaded:
            self.set_status("loading the MNIST test digits…")
        self.run_worker(self._pick_digit, thread=True, exclusive=True, group="mnist")

    def _pick_digit(self) -> None:
        """In a worker thread: MNIST's first load reads and verifies files (seconds)."""
        assert self.digits is not None
        try:
            pixels, label, index = self.digits.pick()
        except MnistcliError as exc:
            self.call_from_thread(self.set_status, f"error: {exc}", "bold red")
            return
        self.call_from_thread(self._put_digit, pixels, label, index)

    def _put_digit(self, pixels: np.ndarray, label: int, index: int) -> None:
        self.view.pen_down = False
        self.canvas.load(pixels)
        self.set_status(f"MNIST test digit #{index}, labelled {label} (u: back to your drawing)")
        self.drawing_changed()


def run_draw(
    checkpoint: Path, device: str, *, save_to: Path | None, digits: MnistDigits | None
) -> None:
    """Load the model (any error is raised here, before the screen opens), then run the app."""
    model = DrawModel(checkpoint, device, threads=1)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise MnistcliError(
            "mnistcli draw is a full-screen app and needs a terminal; its input or output is "
            "redirected here: run it in a terminal window"
        )
    DrawApp(model, save_to=save_to, digits=digits).run()
