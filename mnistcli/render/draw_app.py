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
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from rich.color import Color
from rich.console import Group, RenderableType
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical, VerticalScroll
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from mnistcli.canvas import Canvas, DigitFolder
from mnistcli.draw import DrawModel, MnistDigits, Reading, activations, read_drawing, saliency
from mnistcli.draw import to_canvas as saliency_on_canvas
from mnistcli.errors import MnistcliError
from mnistcli.render.colorscale import heat
from mnistcli.render.feature_view import layer_block
from mnistcli.render.predict_view import bar, pct

if TYPE_CHECKING:
    from mnistcli.explain import Activations

READ_INTERVAL = 0.02  # seconds between two readings while drawing: at most 50 a second
INSIGHT_INTERVAL = 0.15  # seconds between two saliency / feature-map updates
CURSOR_STEP = 2  # canvas pixels an arrow key moves the cursor


@dataclass(frozen=True)
class Scale:
    """How the canvas is drawn: canvas pixels per character cell, across and down."""

    across: int
    down: int  # even: two halves of a cell, one "▀"

    def cells(self, side: int) -> tuple[int, int]:
        """(columns, lines) the canvas takes."""
        return side // self.across, side // self.down


FULL, HALF = Scale(1, 2), Scale(2, 4)
INPUT_WIDTH, INPUT_LINES = 29, 15  # the model's 28x28 input and a gap; a title and 14 lines
BAR_EXTRA, MIN_BAR = 11, 6  # around a bar: "9 " and " 99.9% ◀"; the shortest bar, cells
SIDE_GUTTER = 2  # the side panel's left padding and its scroll bar
SIDE_MIN = SIDE_GUTTER + INPUT_WIDTH + BAR_EXTRA + MIN_BAR


def keys_text(saving: bool) -> str:
    """The footer: every key, in the order a newcomer needs them."""
    parts = [
        "drag: draw",
        "right-drag: erase",
        "arrows: move cursor",
        "space: pen down/up",
        "[ ]: brush size",
        "u: undo",
        "c: clear",
        "s: saliency",
        "f: feature maps",
        "l: next layer",
        "r: random MNIST digit",
        "0-9: save as that digit" if saving else "0-9: save (start with --save-to DIR)",
        "q/Esc: quit",
    ]
    return "  ".join(parts)


def footer_lines(width: int, texts: Sequence[str]) -> int:
    """Lines the footer takes at `width`: the status line, then `texts` (the keys, the saved
    counts) wrapped as the screen wraps them."""
    wrapped = (textwrap.wrap(t, max(1, width), break_on_hyphens=False) for t in texts)
    return 1 + sum(max(1, len(lines)) for lines in wrapped)


def needed_size(scale: Scale, side: int, footer: Sequence[str], width: int) -> tuple[int, int]:
    """The terminal (columns, lines) the layout needs with the canvas drawn at `scale`."""
    cols, lines = scale.cells(side)
    need_width = cols + 2 + SIDE_MIN  # the canvas in its frame, then the reading
    need_lines = max(lines + 2, INPUT_LINES) + footer_lines(max(width, need_width), footer)
    return need_width, need_lines


def choose_scale(width: int, height: int, side: int, footer: Sequence[str]) -> Scale | None:
    """The largest scale whose layout fits the terminal; None when none does."""
    for scale in (FULL, HALF):
        need_width, need_lines = needed_size(scale, side, footer, width)
        if width >= need_width and height >= need_lines:
            return scale
    return None


def too_small_message(width: int, height: int, side: int, footer: Sequence[str]) -> str:
    small = needed_size(HALF, side, footer, width)
    full = needed_size(FULL, side, footer, width)
    return (
        f"The terminal is {width}x{height}; mnistcli draw needs at least "
        f"{small[0]}x{small[1]} ({full[0]}x{full[1]} for the full-size canvas).\n"
        f"Enlarge the window (or make the font smaller); q quits."
    )


def counts_text(root: Path, counts: dict[int, int]) -> str:
    """The footer's line of drawings saved per digit."""
    return f"saved in {root}:  " + "  ".join(f"{d}:{n}" for d, n in counts.items())


# ---------------------------------------------------------------------------------------------
# Widgets


PAPER = 24  # the canvas background, a dark grey so its edge shows on a black terminal
HEAT = np.array([heat(t) for t in np.linspace(0.3, 1.0, 256)], dtype=np.uint8)  # saliency


class PictureView(Widget):
    """A picture of (2 x lines, columns) RGB colours drawn as lines of "▀" (the upper half in
    the foreground colour, the lower half behind it), as digits.half_block_lines draws them.

    Built for redrawing many times a second: a new picture refreshes only the lines that
    changed, and a line's Strip is kept (by its colours), so an unchanged line costs a lookup.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._colours: np.ndarray | None = None  # (2 x lines, columns, 3) uint8
        self._strips: dict[bytes, Strip] = {}
        self._styles: dict[bytes, Style] = {}

    def show(self, colours: np.ndarray) -> None:
        """Draw `colours` ((2 x lines, columns, 3) uint8), refreshing the lines that changed."""
        old, self._colours = self._colours, colours
        if old is None or old.shape != colours.shape:
            self.refresh()
            return
        lines = colours.shape[0] // 2
        changed = (old != colours).reshape(lines, -1).any(axis=1)
        if changed.any():
            first, last = np.flatnonzero(changed)[[0, -1]]
            self.refresh(Region(0, int(first), colours.shape[1], int(last - first + 1)))

    def render_line(self, y: int) -> Strip:
        colours = self._colours
        if colours is None or 2 * y + 1 >= colours.shape[0]:
            return Strip.blank(self.size.width, Style())
        pair = colours[2 * y : 2 * y + 2]
        key = pair.tobytes()
        strip = self._strips.get(key)
        if strip is None:
            if len(self._strips) > 4096:  # a long session: forget old lines
                self._strips.clear()
            cells = pair.transpose(1, 0, 2).reshape(pair.shape[1], 6)
            strip = Strip([Segment("▀", self._style(cell)) for cell in cells])
            self._strips[key] = strip
        return strip

    def _style(self, cell: np.ndarray) -> Style:
        key = cell.tobytes()
        style = self._styles.get(key)
        if style is None:
            r, g, b, r2, g2, b2 = (int(v) for v in cell)
            style = Style(color=Color.from_rgb(r, g, b), bgcolor=Color.from_rgb(r2, g2, b2))
            self._styles[key] = style
        return style


def greys(values: np.ndarray) -> np.ndarray:
    """(h, w) uint8 grey levels as (h, w, 3) RGB."""
    return np.repeat(values[:, :, None], 3, axis=2)


class CanvasView(PictureView):
    """The drawing, two pixel rows per line at full size; the mouse draws and erases on it."""

    DEFAULT_CSS = "CanvasView { width: 56; height: 28; }"

    def __init__(self, canvas: Canvas, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.canvas = canvas
        self.scale = FULL
        self.overlay: np.ndarray | None = None  # (side, side) saliency in [0, 1], or None
        self.cursor: tuple[float, float] | None = None  # canvas pixels, shown once keys move it
        self.pen_down = False

    def set_scale(self, scale: Scale) -> None:
        self.scale = scale
        cols, lines = scale.cells(self.canvas.side)
        self.styles.width, self.styles.height = cols, lines
        self.refresh_drawing()

    def to_canvas(self, x: int, y: int) -> tuple[float, float]:
        """The canvas pixel under the middle of character cell (x, y)."""
        return (x + 0.5) * self.scale.across - 0.5, (y + 0.5) * self.scale.down - 0.5

    # -- mouse: left draws, right erases, a drag is one stroke ------------------------------

    def on_mouse_down(self, event: events.MouseDown) -> None:
        if event.button not in (1, 3):
            return
        self.capture_mouse()
        x, y = self.to_canvas(event.x, event.y)
        self.canvas.begin(x, y, erase=event.button == 3)
        self.app_changed()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self.canvas.drawing and not self.pen_down:
            self.canvas.extend(*self.to_canvas(event.x, event.y))
            self.app_changed()

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self.canvas.drawing and not self.pen_down:
            self.canvas.extend(*self.to_canvas(event.x, event.y))
            self.canvas.end()
            self.app_changed()
        self.release_mouse()

    def app_changed(self) -> None:
        app = self.app
        if isinstance(app, DrawApp):
            app.drawing_changed()

    # -- drawing ----------------------------------------------------------------------------

    def refresh_drawing(self) -> None:
        """Redraw the canvas: the ink averaged over the pixels each half cell covers, in
        greys, in heat colours where the saliency overlay is, and the keyboard cursor."""
        scale = self.scale
        side = self.canvas.side
        half = scale.down // 2
        rows, cols = side // half, side // scale.across
        ink = self.canvas.ink.reshape(rows, half, cols, scale.across).mean(axis=(1, 3))
        if self.overlay is None:
            colours = greys(np.round(PAPER + ink * (255 - PAPER)).astype(np.uint8))
        else:  # the ink dimmed, the salient pixels in colour
            colours = greys(np.round(PAPER + ink * (110 - PAPER)).astype(np.uint8))
            sal = self.overlay.reshape(rows, half, cols, scale.across).max(axis=(1, 3))
            hot = sal > 0.04
            colours[hot] = HEAT[np.round(np.clip(sal[hot], 0, 1) * 255).astype(int)]
        if self.cursor is not None:
            cx, cy = self.cursor
            r = min(rows - 1, max(0, int(cy // half)))
            c = min(cols - 1, max(0, int(cx // scale.across)))
            colours[r, c] = (230, 60, 60) if self.pen_down else (60, 200, 230)
        self.show(colours)


class InputView(PictureView):
    """The 28x28 image the model saw, in its own greys (bright ink on black)."""

    DEFAULT_CSS = "InputView { width: 28; height: 14; }"

    def set_pixels(self, pixels: np.ndarray) -> None:
        self.show(greys(pixels))


def bars_view(reading: Reading | None, width: int) -> RenderableType:
    """The ten probabilities as bars, the top one marked; "no digit found" for a blank canvas."""
    lines: list[Text] = []
    if reading is None or reading.probabilities is None:
        head = Text("no digit found", style="yellow")
        if width >= 24:
            head.append("  draw one", style="dim")
        lines.append(head)
        probs = np.zeros(10)
        top = None
    else:
        probs = reading.probabilities
        top = reading.digit
        head = Text("reads as ")
        head.append(str(top), style="bold green")
        head.append(f"  {pct(float(probs[top]))}", style="bold")
        lines.append(head)
    bar_width = max(MIN_BAR, width - BAR_EXTRA)
    for digit, p in enumerate(probs.tolist()):
        best = digit == top
        line = Text(f"{digit} ", style="bold" if best else "")
        line.append(bar(p, bar_width), style="bold green" if best else "cyan")
        line.append(f" {pct(p):>6}" if top is not None else "       ")
        line.append(" ◀" if best else "", style="bold green")
        lines.append(line)
    return Group(*lines)


# ---------------------------------------------------------------------------------------------
# The app


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
