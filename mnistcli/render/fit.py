"""Making a view fit the terminal's width without cutting anything silently.

rich shrinks a table that is too wide by wrapping its cells and, when that is not enough, by
cutting them with '…' (or dropping a column). So each table here is drawn in a few forms, widest
first, and the first whose every cell fits whole is printed: `needed_width` says how many columns
a form needs, counting every `Whole` cell at its full width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

UNLIMITED = 10_000  # columns: wide enough to measure any table at its natural width


class Whole(Text):
    """Text that must never be wrapped or cut (a number, a shape): rich measures its minimum
    width as its full width, so `needed_width` counts all of it."""

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = max((line.cell_len for line in self.split("\n")), default=0)
        return Measurement(width, width)


def needed_width(console: Console, renderable: RenderableType) -> int:
    """The fewest columns `renderable` can be drawn in with no Whole cell and no word cut."""
    return console.measure(renderable, options=console.options.update_width(UNLIMITED)).minimum


def first_fit(
    console: Console, forms: Sequence[Callable[[], RenderableType]], width: int | None = None
) -> RenderableType | None:
    """The first of `forms` (widest first) that fits `width` (the console's) whole; None if none."""
    limit = console.width if width is None else width
    for make in forms:
        renderable = make()
        if needed_width(console, renderable) <= limit:
            return renderable
    return None


def stack_if_narrow(
    console: Console, grid: Table, rows: Sequence[tuple[str, str | Text]]
) -> RenderableType:
    """`grid` (names beside their values, built from `rows`) when a value's longest word fits
    beside the names; otherwise each name in bold on its own line, its value indented below."""
    if needed_width(console, grid) <= console.width:
        return grid
    stacked: list[RenderableType] = []
    for name, value in rows:
        if name:
            stacked.append(Text(name, style="bold"))
        text = value if isinstance(value, Text) else Text.from_markup(value)
        stacked.append(Padding(text, (0, 0, 0, 2)))
    return Group(*stacked)


def path_tail(path: str, width: int) -> str:
    """The end of a path in `width` terminal cells, marked with … where its start is left
    out: the end names the file (gallery captions, panel titles)."""
    if cell_len(path) <= width:
        return path
    kept = ""
    for char in reversed(path):
        if cell_len(char + kept) > width - 1:
            break
        kept = char + kept
    return "…" + kept
