"""What `mnistcli predict` shows: one panel per image (digit, probability, top-k bars and,
with --show, the 28x28 input the model saw), or for many images a table printed row by row as
the predictions come, a summary line, and progress on stderr while it runs."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.cells import cell_len, chop_cells
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from mnistcli.errors import printable
from mnistcli.predict import Prediction
from mnistcli.render.console import probability
from mnistcli.render.digits import digit_rows
from mnistcli.render.fit import path_tail

if TYPE_CHECKING:
    import numpy as np

EIGHTHS = " ▏▎▍▌▋▊▉"  # partial bar cells, in eighths of a character


def bar(fraction: float, width: int) -> str:
    """A horizontal bar `fraction` (0..1) of `width` cells long, in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


def top_k_chart(pred: Prediction, width: int = 30) -> Table:
    """One row per candidate digit: the digit, a bar of its probability, the percentage."""
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right")
    table.add_column(no_wrap=True)
    table.add_column(justify="right")
    for rank, (digit, p) in enumerate(pred.top_k):
        style = "bold green" if rank == 0 else "cyan"
        table.add_row(Text(str(digit), style="bold"), Text(bar(p, width), style=style), pct(p))
    return table


pct = probability  # the one way a probability is printed (render.console.probability)
LOW = "low confidence"  # the marker of an answer below predict.min_confidence


def headline(pred: Prediction) -> Text:
    if pred.error:
        return Text(f"failed: {pred.error}", style="red")
    if pred.digit is None:
        return Text("no digit found", style="yellow") + Text(
            " (blank, or too little ink or contrast)", style="dim"
        )
    text = Text("digit ")
    text.append(str(pred.digit), style="bold yellow" if pred.low_confidence else "bold green")
    text.append(f"  {pct(pred.probability or 0.0)}", style="bold")
    if pred.low_confidence:
        text.append(f"  {LOW}: another digit is about as likely", style="yellow")
    return text


CHART_WIDTH = 40  # the top-k chart: digit, a 30-cell bar, percentage


def prediction_panel(pred: Prediction, *, show: bool, color: bool, width: int = 120) -> Panel:
    """One image: the verdict, the top-k chart and, with `show`, the input drawn beside it (or
    below it when the terminal, `width` columns, is too narrow for both)."""
    body: RenderableType = Group(headline(pred), Text(""), top_k_chart(pred))
    if pred.digit is None:
        body = headline(pred)
    if show and pred.pixels is not None:
        frame = framed(digit_art(pred.pixels, color=color))
        if (frame.width or 0) + 3 + CHART_WIDTH + 4 <= width:
            grid = Table.grid(padding=(0, 3))
            grid.add_column(width=frame.width, no_wrap=True)
            grid.add_column()
            grid.add_row(frame, body)
            body = grid
        else:
            body = Group(body, Text(""), frame)
    return Panel(body, title=Text(printable(pred.path)), title_align="left", expand=False)


def digit_art(pixels: np.ndarray, *, color: bool) -> Text:
    """The (28, 28) input, whole: half-blocks in true greys in colour (28 x 14 cells), two shade
    characters per pixel without (28 x 28 lines: the proportions and grey levels are kept)."""
    rows = digit_rows(pixels, color=color, plain="shades")
    return Text("\n", no_wrap=True, overflow="crop").join(rows)


def framed(art: Text, subtitle: str | Text = "28x28 input") -> Panel:
    """A drawn picture in a thin frame just its size, so its edges (and the centring) show."""
    width = max(line.cell_len for line in art.split()) + 2  # the widest line and two sides
    return Panel(art, padding=0, width=width, subtitle=subtitle)


def predictions_table(preds: Sequence[Prediction], *, width: int | None = 120) -> Group:
    """Many images at once: the header and one row each, as `RowFormat` prints them."""
    top_k = max((len(p.top_k) for p in preds), default=3)
    marks = any(p.low_confidence for p in preds)
    fmt = RowFormat([p.path for p in preds], width, top_k, marks=marks)
    note = fmt.note()
    head = [fmt.header(), note] if note is not None else [fmt.header()]
    return Group(*head, *(line for p in preds for line in fmt.row(p)))


@dataclass(frozen=True)
class RowFormat:
    """One line per image (path, digit, probability, the top-k and a mark), in columns sized
    from every path before the first row is printed, so the rows can stream as they come.

    In a terminal every row fits its width: room is kept for the low-confidence mark where
    answers may carry it (`marks`), paths stay whole where they can, and the top-k list shows
    as many entries as fit beside them (`note` says so); a path too long for any room folds,
    never cut, in a column of at least MIN_IMAGE. Paths are shown `printable` and measured in
    terminal cells (数 takes two)."""

    paths: Sequence[str]
    width: int | None = 120  # a terminal's columns; None: a pipe or a file, nothing folds
    top_k: int = 3
    marks: bool = True  # answers may be marked low confidence
    image: int = field(init=False)  # the path column's width
    shown: int = field(init=False)  # the top-k entries that fit

    DIGIT = 5  # "digit"
    PROB = 6  # "100.0%"
    ENTRY = 8  # a top-k entry, "7 100.0%"
    MIN_IMAGE = 20  # a path that must fold keeps a column this wide

    def __post_init__(self) -> None:
        longest = max((cell_len(printable(p)) for p in self.paths), default=0)
        shown = self.top_k
        if self.width is None:  # a pipe or a file: whole paths, for grep and cut
            image = max(len("image"), longest)
        else:
            room = self.width - 2 - self.DIGIT - 2 - self.PROB - (2 + len(LOW) if self.marks else 0)
            # whole paths before the other guesses; a path that folds anyway keeps MIN_IMAGE
            want = longest if longest <= room else self.MIN_IMAGE
            while shown > 0 and room - self._entries(shown) < max(len("image"), want):
                shown -= 1
            image = max(len("image"), min(longest, room - self._entries(shown)))
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "shown", shown)

    def _entries(self, k: int) -> int:
        """The width of k top-k entries with the two spaces before each."""
        return k * (2 + self.ENTRY)

    def header(self) -> Text:
        head = f"{'image':<{self.image}}  {'digit':>{self.DIGIT}}  {'prob.':>{self.PROB}}"
        return self._whole([Text(head + ("  top-k" if self.shown else ""), style="bold")])[0]

    def note(self) -> Text | None:
        """What the terminal's width left out of the top-k, or None."""
        if self.shown == self.top_k:
            return None
        return Text(
            f"top-k: {self.shown} of {self.top_k} fit in {self.width} columns; --json has all",
            style="dim",
        )

    def row(self, pred: Prediction) -> list[Text]:
        """The lines of one image: its row, after the leading parts of a path too long for
        its column (folded, never cut)."""
        folded = chop_cells(printable(pred.path), self.image) or [""]
        lines = [Text(part) for part in folded[:-1]]
        line = Text(folded[-1] + " " * (self.image - cell_len(folded[-1])) + "  ")
        if pred.error:
            line.append(f"{'-':>{self.DIGIT}}  {'':>{self.PROB}}  ")
            why = self._fold(f"failed: {pred.reason or pred.error}", cell_len(line.plain))
            line.append(why[0], style="red")
            return self._whole([*lines, line, *(Text(part, style="red") for part in why[1:])])
        elif pred.digit is None:
            line.append(f"{'-':>{self.DIGIT}}  {'':>{self.PROB}}  ")
            line.append("no digit found", style="yellow")
        else:
            style = "bold yellow" if pred.low_confidence else "bold green"
            line.append(f"{pred.digit:>{self.DIGIT}}", style=style)
            line.append(f"  {pct(pred.probability or 0.0):>{self.PROB}}")
            entries = [f"{d} {pct(p)}" for d, p in pred.top_k[: self.shown]]
            if entries:
                line.append("  " + "  ".join(entries), style="dim")
            if pred.low_confidence:
                line.append(f"  {LOW}", style="yellow")
        return self._whole([*lines, line])

    def _fold(self, text: str, indent: int) -> list[str]:
        """`text` in lines that fit the terminal after `indent` columns, broken between
        words, the later ones indented under the first; one line where nothing folds."""
        if self.width is None or indent + cell_len(text) <= self.width:
            return [text]
        if self.width - indent >= 20:  # under its own column
            parts = textwrap.wrap(text, self.width - indent, break_on_hyphens=False) or [text]
            return [parts[0], *(" " * indent + part for part in parts[1:])]
        # too narrow a column left: on the lines below the row, indented a little
        parts = textwrap.wrap(text, max(self.width - 4, 20), break_on_hyphens=False) or [text]
        return ["", *("    " + part for part in parts)]

    def _whole(self, lines: list[Text]) -> list[Text]:
        """In a pipe or a file (no width) a row is never wrapped, whatever the console's width."""
        if self.width is None:
            for line in lines:
                line.no_wrap, line.overflow = True, "ignore"
        return lines


def gallery(preds: Sequence[Prediction], *, color: bool) -> Columns:
    """--show with many images: each input drawn small, captioned with the file and the guess."""
    cells = []
    for pred in preds:
        if pred.pixels is None or pred.digit is None:
            continue  # failed, or a blank canvas: nothing to see
        guess = f"{pred.digit} {pct(pred.probability or 0)}"
        cell = framed(digit_art(pred.pixels, color=color), Text(guess))
        cell.title = Text(path_tail(printable(pred.path), (cell.width or 0) - 6))
        cells.append(cell)
    return Columns(cells, padding=(0, 1))


@dataclass
class Tally:
    """What the summary line counts, kept as rows stream by (no prediction is kept)."""

    images: int = 0
    blank: int = 0
    failed: int = 0
    low: int = 0
    digits: Counter[int] = field(default_factory=Counter)

    def add(self, pred: Prediction) -> None:
        self.images += 1
        if pred.error:
            self.failed += 1
        elif pred.digit is None:
            self.blank += 1
        else:
            self.digits[pred.digit] += 1
            self.low += pred.low_confidence


def summary_line(preds: Iterable[Prediction] | Tally, min_confidence: float = 0.0) -> Text:
    """ "12 images: 10 predicted, 1 no digit found, 1 failed" and the digits counted."""
    tally = preds if isinstance(preds, Tally) else Tally()
    if not isinstance(preds, Tally):
        for pred in preds:
            tally.add(pred)
    ok = sum(tally.digits.values())
    text = Text(f"{tally.images:,} images: {ok:,} predicted")
    if tally.low:
        text.append(f" ({tally.low:,} {LOW}, below {_threshold(min_confidence)})", style="yellow")
    if tally.blank:
        text.append(f", {tally.blank:,} no digit found", style="yellow")
    if tally.failed:
        text.append(f", {tally.failed:,} failed", style="red")
    if ok:
        counts = sorted(tally.digits.items())
        text.append("; digits " + ", ".join(f"{d}: {n:,}" for d, n in counts if n))
    return text


def _threshold(p: float) -> str:
    """A setting as given: one decimal where that is exact (50.0%), more where it is not
    (0.9995 -> 99.95%, never rounded to 99.9%)."""
    value = 100 * p
    return f"{value:.1f}%" if round(value, 1) == round(value, 9) else f"{round(value, 9):g}%"


class SpeedColumn(ProgressColumn):
    """Images per second, over the task's recent progress (rich keeps a short window)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} images/s", style="cyan")


class FilesProgress:
    """The one progress line of a command reading many files: "loading the model" at first,
    then each phase named (`phase`), files done, images/s and the time left. Where stderr is
    not interactive nothing is drawn and every call does nothing, so a command says what
    happens without asking whether a line is on screen."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self._progress = progress
        self._task = progress.add_task("loading the model", total=total) if progress else None

    @property
    def console(self) -> Console | None:
        """The console the line is drawn on (None: none drawn); printed through it, text goes
        above the line instead of into it."""
        return self._progress.console if self._progress is not None else None

    def phase(self, description: str, total: int | None = None) -> None:
        """A new phase: its name, its total, and its count and speed from zero."""
        if self._progress is not None and self._task is not None:
            self._progress.reset(self._task, total=total, description=description)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def update(self, done: int, total: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total)


@contextmanager
def files_progress(
    console: Console, total: int, *, redirect_stdout: bool = False
) -> Iterator[FilesProgress]:
    """A FilesProgress on `console` (stderr) for the block, started at once (loading torch and
    the model takes seconds) and gone when the block ends. Colour or not, it is the same line
    (NO_COLOR takes colour, never progress). `redirect_stdout`: stdout is the same terminal, so
    what is printed there with print() goes above it. One file: no line, nothing to follow."""
    if not console.is_interactive or total <= 1:
        yield FilesProgress(None, total)
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("files"),
        SpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        redirect_stdout=redirect_stdout,
        redirect_stderr=False,
    )
    with bar:
        yield FilesProgress(bar, total)


def predict_view(
    preds: Sequence[Prediction],
    *,
    show: bool,
    color: bool,
    width: int = 120,
    table_width: int | None = 120,
) -> RenderableType:
    """A panel for a single image; a table (laid out for `table_width`, None: a pipe, whole
    rows), a summary and (with `show`) a gallery for many."""
    if len(preds) == 1:
        return prediction_panel(preds[0], show=show, color=color, width=width)
    parts: list[RenderableType] = [predictions_table(preds, width=table_width)]
    if show:
        parts += [Text(""), gallery(preds, color=color)]
    parts += [Text(""), summary_line(preds)]
    return Group(*parts)
