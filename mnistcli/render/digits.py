"""A 28x28 uint8 digit (bright ink on black, as the model sees it) drawn as rich Text rows, for
`mnistcli eval`'s gallery of mistakes and `mnistcli predict --show`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from rich.color import Color
from rich.style import Style
from rich.text import Text

from mnistcli.render.colorscale import shade

SIDE = 28
INK_THRESHOLD = 100  # uint8 level from which a pixel counts as ink in "blocks"
HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}

Plain = Literal["blocks", "shades"]
V = TypeVar("V")


def row_pairs(rows: Sequence[Sequence[V]]) -> list[tuple[Sequence[V], Sequence[V] | None]]:
    """The rows two at a time, as a line of half-block cells shows them: (upper, lower), the
    lower None under an odd last row."""
    return [(rows[i], rows[i + 1] if i + 1 < len(rows) else None) for i in range(0, len(rows), 2)]


def half_block_lines(rows: Sequence[Sequence[V]], colour: Callable[[V], Color]) -> list[Text]:
    """Two pixel rows per line of "▀" cells: the upper pixel's colour in front, the lower one's
    behind (the terminal's own background under an odd last row). Every colour picture in the
    terminal views is drawn this way."""
    lines = []
    for top, bottom in row_pairs(rows):
        line = Text()
        for j, value in enumerate(top):
            below = None if bottom is None else colour(bottom[j])
            line.append("▀", Style(color=colour(value), bgcolor=below))
        lines.append(line)
    return lines


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
    if color:
        return half_block_lines(rows, lambda v: Color.from_rgb(v, v, v))
    if plain == "shades":
        return [Text("".join(shade(v / 256) * 2 for v in row)) for row in rows]
    ink = [[v >= INK_THRESHOLD for v in row] for row in rows]
    return [
        Text("".join(HALF_BLOCKS[t, bool(bottom and bottom[j])] for j, t in enumerate(top)))
        for top, bottom in row_pairs(ink)
    ]
