"""The drawing of `mnistcli draw`: a square canvas finer than MNIST, strokes, undo, saving.

Ink is a (side, side) float32 array in [0, 1] (1 is full ink). A stroke is a chain of straight
segments between the points the mouse reported, each painted as a capsule (every pixel within
the brush radius of the segment), so a fast stroke whose mouse events lie far apart has no gaps.
Its edge is anti-aliased over one pixel, as a pen on paper scanned into MNIST was. Undo keeps a
copy of the ink from before each change (side 56: 12 KiB each), so it restores the previous
drawing exactly, whatever the stroke did.

Saved drawings are PNGs of dark ink on white at the canvas resolution, the form a user draws
in a paint program, so `mnistcli predict` reads them through the same preprocessing as the app.
Plain numpy and Pillow: the app's state, testable without a terminal.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image

from mnistcli.errors import OutputError
from mnistcli.files import write_atomic

SIDE = 56  # canvas pixels per side: twice MNIST's 28, so a stroke's edge can be drawn finely
BRUSH = 2.5  # default brush radius, canvas pixels: MNIST's median stroke, on a digit 40 px tall
BRUSH_RANGE = (1.0, 6.0)
BRUSH_STEP = 0.5
MAX_UNDO = 200  # changes kept for undo (200 x 12 KiB)


class Canvas:
    """The drawing and its undo history. Coordinates are (x, y) in canvas pixels, floats
    allowed, (0, 0) the top-left pixel's centre."""

    def __init__(self, side: int = SIDE, brush: float = BRUSH) -> None:
        self.side = side
        self.ink = np.zeros((side, side), dtype=np.float32)
        self.brush = brush
        self._history: list[np.ndarray] = []
        self._last: tuple[float, float] | None = None  # the stroke's last point, while drawing
        self._erasing = False
        # pixel centres, for the distance of every pixel to a segment
        self._ys, self._xs = np.mgrid[0:side, 0:side].astype(np.float32)

    # -- strokes --------------------------------------------------------------------------

    @property
    def drawing(self) -> bool:
        """Whether a stroke is in progress (begun and not yet ended)."""
        return self._last is not None

    def begin(self, x: float, y: float, *, erase: bool = False) -> None:
        """Start a stroke at (x, y): a dot of the brush's size (or erase one)."""
        self._remember()
        self._erasing = erase
        self._last = (x, y)
        self._paint(x, y, x, y)

    def extend(self, x: float, y: float) -> None:
        """Continue the stroke in a straight line to (x, y); begins one if none is going."""
        if self._last is None:
            self.begin(x, y)
            return
        x0, y0 = self._last
        self._last = (x, y)
        self._paint(x0, y0, x, y)

    def end(self) -> None:
        """Lift the pen: the next begin() starts a new stroke (a new step for undo)."""
        self._last = None

    def _paint(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Ink (or erase) every pixel within the brush radius of the segment, anti-aliased."""
        r = self.brush
        reach = r + 1
        top = max(0, math.floor(min(y0, y1) - reach))
        bottom = min(self.side, math.ceil(max(y0, y1) + reach) + 1)
        left = max(0, math.floor(min(x0, x1) - reach))
        right = min(self.side, math.ceil(max(x0, x1) + reach) + 1)
        if top >= bottom or left >= right:
            return  # the segment lies wholly outside the canvas
        xs = self._xs[top:bottom, left:right]
        ys = self._ys[top:bottom, left:right]
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        # the nearest point of the segment to each pixel: its parameter t in [0, 1]
        t = np.zeros_like(xs) if length2 == 0 else ((xs - x0) * dx + (ys - y0) * dy) / length2
        t = np.clip(t, 0.0, 1.0)
        dist = np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy))
        cover = np.clip(r + 0.5 - dist, 0.0, 1.0)  # 1 inside, a one-pixel ramp at the edge
        patch = self.ink[top:bottom, left:right]
        if self._erasing:
            np.minimum(patch, 1.0 - cover, out=patch)
        else:
            np.maximum(patch, cover, out=patch)

    # -- whole-drawing changes ------------------------------------------------------------

    def _remember(self) -> None:
        self._history.append(self.ink.copy())
        del self._history[:-MAX_UNDO]

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def undo(self) -> bool:
        """Put back the drawing as it was before the last change; False when there is none."""
        self.end()
        if not self._history:
            return False
        self.ink = self._history.pop()
        return True

    def clear(self) -> None:
        """Wipe the canvas (undoable)."""
        self.end()
        if self.blank:
            return
        self._remember()
        self.ink[:] = 0

    def load(self, pixels: np.ndarray) -> None:
        """Replace the drawing by a (h, w) uint8 image, bright ink on black (an MNIST digit),
        scaled to the canvas (undoable)."""
        self.end()
        self._remember()
        im = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L")
        scaled = im.resize((self.side, self.side), Image.Resampling.BILINEAR)
        self.ink = np.asarray(scaled, dtype=np.float32) / np.float32(255.0)

    def resize_brush(self, steps: int) -> float:
        """Make the brush `steps` notches larger (negative: smaller), within BRUSH_RANGE."""
        low, high = BRUSH_RANGE
        self.brush = min(high, max(low, self.brush + steps * BRUSH_STEP))
        return self.brush

    @property
    def blank(self) -> bool:
        return not bool(self.ink.any())

    # -- out of the canvas ----------------------------------------------------------------

    def to_image(self) -> Image.Image:
        """The drawing as a grey ("L") image, dark ink on white, at the canvas resolution: what
        a paint program would save, and what the model is shown through imaging.preprocess."""
        paper = np.round((1.0 - self.ink) * 255.0)
        return Image.fromarray(paper.astype(np.uint8), mode="L")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class DigitFolder:
    """Drawings kept as examples of each digit: `root/<digit>/0001.png`, numbered in order."""

    NAME = re.compile(r"^(\d+)\.png$")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.counts = {d: len(self._numbers(d)) for d in range(10)}

    def _numbers(self, digit: int) -> list[int]:
        folder = self.root / str(digit)
        try:
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        except OSError:
            return []
        return [int(m.group(1)) for n in names if (m := self.NAME.match(n))]

    def save(self, image: Image.Image, digit: int) -> Path:
        """Write `image` as the next number under `root/<digit>/`, atomically (a reader never
        sees half a file) and never over an existing file; returns its path."""
        if not 0 <= digit <= 9:
            raise ValueError(f"a digit is 0-9, not {digit}")
        folder = self.root / str(digit)
        data = png_bytes(image)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            number = max(self._numbers(digit), default=0) + 1
            while (path := folder / f"{number:04d}.png").exists():
                number += 1  # a file the listing missed (written meanwhile): never replace it
            write_atomic(path, data)
        except OSError as exc:
            raise OutputError(
                f"cannot save the drawing in {folder}: {exc.strerror or exc}; "
                f"choose another folder with --save-to"
            ) from None
        self.counts[digit] += 1
        return path
