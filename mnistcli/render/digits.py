"""A 28x28 uint8 digit (bright ink on black, as the model sees it) drawn as rich Text rows, for
`mnistcli eval`'s gallery of mistakes and `mnistcli predict --show`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from rich.color import Color
from rich.style import Style
from rich.text import Text

SIDE = 28
INK_THRESHOLD = 100  # uint8 level from which a pixel counts as ink in "blocks"
HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}
RAMP = " ░▒▓█"  # "shades", darkest (background) first

Plain = Literal["blocks", "shades"]


def digit_rows(pixels: Any, *, color: bool, crop: int = 0, plain: Plain = "blocks") -> list[Text]:
    """`pixels` (a (28, 28) tensor, or 784 or 28x28 values 0-255) as lines of text.

    In colour: one "▀" per two pixel rows (foreground the upper pixel, background the lower) in
    true greys. Without colour, `plain` picks "blocks" (the same half-block cells, "▀▄█" where a
    pixel is ink) or "shades" (two shade characters per pixel, one line per pixel row: the
    digit keeps its proportions and its grey levels). `crop` cuts that many pixels from each
    edge (MNIST's border is blank).
    """
    values = pixels.tolist() if hasattr(pixels, "tolist") else list(pixels)
    if values and isinstance(values[0], Sequence):  # already rows
        rows = [list(r) for r in values]
    else:  # row by row, as metrics.Mistake.pixels holds it
        rows = [values[i : i + SIDE] for i in range(0, len(values), SIDE)]
    rows = [r[crop : len(r) - crop] for r in rows[crop : len(rows) - crop]]
    if not color and plain == "shades":
        return [Text("".join(RAMP[v * len(RAMP) // 256] * 2 for v in row)) for row in rows]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))
    lines: list[Text] = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        line = Text()
        for t, b in zip(top, bottom, strict=True):
            if color:
                grey = Style(color=Color.from_rgb(t, t, t), bgcolor=Color.from_rgb(b, b, b))
                line.append("▀", grey)
            else:
                line.append(HALF_BLOCKS[t >= INK_THRESHOLD, b >= INK_THRESHOLD])
        lines.append(line)
    return lines
