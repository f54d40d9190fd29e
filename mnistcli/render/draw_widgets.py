"""The draw app's pieces: how large the canvas is drawn for a terminal (Scale, choose_scale and
the too-small message), the footer's key list, and the widgets that draw pictures line by line
(the canvas, the model's 28x28 input) and the probability bars. render/draw_app.py puts them
together and turns events into calls.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.color import Color
from rich.console import Group, RenderableType
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from mnistcli.canvas import Canvas
from mnistcli.draw import Reading
from mnistcli.render.colorscale import heat
from mnistcli.render.predict_view import bar, pct

if TYPE_CHECKING:
    pass


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
        """Tell the app the drawing changed (DrawApp.drawing_changed: read it again), now,
        not through a queued message, so a reading follows the stroke at once."""
        changed = getattr(self.app, "drawing_changed", None)
        if changed is not None:
            changed()

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
