"""The screen `mnistcli train` redraws on a terminal, fitted to the terminal's current size.

Top to bottom: the table of finished epochs, the loss/accuracy curves, the early-stop and test
lines, and the progress line of the epoch running. The progress line is always on screen: when
the terminal is short, the curves shrink and then give way, and the table keeps only its newest
rows (its title says how many are not shown). When it is narrow, the table wraps its headers,
then leaves out its least needed columns and says which, so no number is ever cut. rich's Live
renders the screen again at every refresh, so a resized terminal gets a new layout; a live frame
leaves the terminal's last row and column free, for rich to redraw it cleanly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from mnistcli.records import EpochStats
from mnistcli.render.charts import curves
from mnistcli.render.console import is_color, percent

CURVES_MAX = 14  # lines of the curves when there is room
CURVES_MIN = 10  # fewer lines leave too few rows of plot to read; the curves give way instead
# Narrower, plotext 6 draws the loss chart's title alone over both charts: the accuracy chart's
# title ('accuracy %   • train   ▞ val', 28 columns) does not fit its half of the width.
CURVES_MIN_WIDTH = 55
CURVES_MAX_WIDTH = 120
MIN_ROWS = 3  # epochs the table keeps before the curves may take the rest of the height


@dataclass(frozen=True)
class Layout:
    """How a screen of a given height is shared: the newest `rows` epochs in the table (0: no
    table), and `curves` lines of curves (0: none)."""

    rows: int
    curves: int


def plan_layout(height: int, epochs: int, *, fixed: int, chrome: int, curves_fit: bool) -> Layout:
    """Share `height` lines between the epoch table and the curves.

    `fixed`: lines that always show (the progress line, the early-stop and test lines);
    `chrome`: the table's lines besides its rows (title, borders, header, the note of what it
    left out); `curves_fit`: whether the terminal is wide enough for the curves. The table keeps
    at least MIN_ROWS epochs (or all, if fewer) before the curves get room; the curves get up
    to CURVES_MAX lines, or none when fewer than CURVES_MIN are left; the table fills the rest.
    """
    room = height - fixed
    if epochs == 0 or room <= chrome:
        return Layout(rows=0, curves=0)
    lines = 0
    if curves_fit and epochs >= 2:  # a curve needs two points
        lines = min(CURVES_MAX, room - chrome - min(epochs, MIN_ROWS))
        lines = lines if lines >= CURVES_MIN else 0
    return Layout(rows=min(epochs, room - lines - chrome), curves=lines)


@dataclass(frozen=True)
class _Column:
    header: str  # on one line
    short: str  # on two lines, for narrower terminals
    drop: int  # the order in which a narrow terminal leaves it out (0: always kept)


_COLUMNS = (
    _Column("epoch", "epoch", 0),
    _Column("train loss", "train\nloss", 4),
    _Column("train acc", "train\nacc", 5),
    _Column("val loss", "val\nloss", 0),
    _Column("val acc", "val\nacc", 0),
    _Column("lr", "lr", 3),
    _Column("time", "time", 2),
    _Column("img/s", "img/s", 1),
)


def _cells(s: EpochStats) -> tuple[str, ...]:
    return (
        str(s.epoch),
        f"{s.train_loss:.4f}",
        percent(s.train_acc),
        f"{s.val_loss:.4f}",
        percent(s.val_acc),
        f"{s.lr:.1e}",
        f"{s.seconds:.1f}s",
        f"{s.samples_per_s:,.0f}",
    )


@dataclass(frozen=True)
class TableForm:
    """One way to draw the epoch table: one- or two-line headers, and the columns kept."""

    short_headers: bool
    columns: tuple[int, ...]  # indexes into _COLUMNS

    @property
    def left_out(self) -> list[str]:
        return [c.header for i, c in enumerate(_COLUMNS) if i not in self.columns]


def table_forms() -> list[TableForm]:
    """The table's forms from widest to narrowest: full headers; two-line headers; then the
    columns a narrow terminal can best spare left out, one at a time."""
    every = tuple(range(len(_COLUMNS)))
    forms = [TableForm(False, every), TableForm(True, every)]
    for rank in range(1, max(c.drop for c in _COLUMNS) + 1):
        kept = tuple(i for i in forms[-1].columns if _COLUMNS[i].drop != rank)
        forms.append(TableForm(True, kept))
    return forms


def epochs_table(
    history: Sequence[EpochStats],
    best_epoch: int,
    epochs_without_gain: int,
    patience: int,
    *,
    form: TableForm | None = None,
    rows: int | None = None,
) -> Table:
    """The finished epochs, the newest `rows` of them (all when None), in `form`."""
    form = form or table_forms()[0]
    shown = list(history)[-rows:] if rows is not None and rows < len(history) else list(history)
    notes = []
    if len(shown) < len(history):
        notes.append(f"{len(history) - len(shown)} earlier not shown")
    if patience:
        notes.append(f"patience {epochs_without_gain}/{patience}")
    title = "epochs" + (f"  ({', '.join(notes)})" if notes else "")
    caption = None
    if form.left_out:
        caption = f"{', '.join(form.left_out)}: not shown at this width; see metrics.csv"
    table = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        expand=False,
    )
    for i in form.columns:
        column = _COLUMNS[i]
        table.add_column(column.short if form.short_headers else column.header, justify="right")
        table.columns[-1].no_wrap = True  # a number is never wrapped or cut: a narrower form is
    table.add_column("best" if form.short_headers else "", no_wrap=True)
    for s in shown:
        best = s.epoch == best_epoch
        cells = _cells(s)
        table.add_row(
            *(cells[i] for i in form.columns),
            ("★" if form.short_headers else "★ best") if best else "",
            style="bold green" if best else None,
        )
    return table


def table_width(console: Console, table: Table) -> int:
    """The columns `table` takes when nothing squeezes it."""
    return console.measure(table, options=console.options.update_width(10_000)).maximum


def fitting_form(
    console: Console, history: Sequence[EpochStats], width: int, patience: int
) -> TableForm:
    """The widest form of the epoch table that fits `width` columns (the narrowest if none)."""
    forms = table_forms()
    best = history[0].epoch if history else 0  # measured with the best epoch's mark
    for form in forms:
        if (
            table_width(console, epochs_table(history, best, patience, patience, form=form))
            <= width
        ):
            return form
    return forms[-1]


def clock(seconds: float | None) -> str:
    """Seconds as h:mm:ss, as rich's progress columns show them; -:--:-- when unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}"


@dataclass
class EpochProgress:
    """Where the running epoch is: what its progress line shows."""

    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 1
    first_batch: int = 0  # > 0 when a resumed epoch starts part-way
    loss: float = 0.0
    speed: float = 0.0  # images per second
    started: float = 0.0  # time.monotonic() at the epoch's start
    visible: bool = False

    def start(self, epoch: int, epochs: int, batches: int, first_batch: int) -> None:
        self.epoch, self.epochs, self.batches = epoch, epochs, max(batches, 1)
        self.batch = self.first_batch = first_batch
        self.loss, self.speed = 0.0, 0.0
        self.started, self.visible = time.monotonic(), True

    def eta(self, now: float) -> float | None:
        """Seconds left in the epoch, from the pace of the batches done so far."""
        done = self.batch - self.first_batch
        return (now - self.started) / done * (self.batches - self.batch) if done > 0 else None


def progress_lines(p: EpochProgress, width: int, *, color: bool, now: float) -> list[Text]:
    """The progress line: epoch, bar, batches, running loss, images/s, elapsed, ETA.

    As the terminal narrows, the bar shrinks, then the elapsed time and then the bar are left
    out; below that the pieces go on two lines, never cut."""
    head = f"epoch {p.epoch}/{p.epochs}"
    started = p.batch > p.first_batch  # before the first batch: no loss, no speed yet
    tail = [
        f"{p.batch}/{p.batches}",
        f"loss {p.loss:.4f}" if started else "loss -",
        f"{p.speed:,.0f} img/s" if started else "- img/s",
    ]
    elapsed, eta = clock(now - p.started), f"eta {clock(p.eta(now))}"
    for with_elapsed in (True, False):
        pieces = [head, *tail, *([elapsed] if with_elapsed else []), eta]
        bar = min(40, width - len(" ".join(pieces)) - 1)
        if bar >= 10:
            line = Text(head + " ", style="bold")
            line.append_text(_bar(p.batch / p.batches, bar, color=color))
            line.append(" " + " ".join(pieces[1:]))
            return [line]
    lines = [Text("")]
    for piece in [head, *tail, eta]:  # word by word, no piece split
        if lines[-1].plain and len(lines[-1].plain) + 1 + len(piece) > width:
            lines.append(Text(""))
        lines[-1].append(("" if not lines[-1].plain else " ") + piece)
    return lines


def _bar(fraction: float, width: int, *, color: bool) -> Text:
    done = round(width * min(max(fraction, 0.0), 1.0))
    if color:  # rich's own bar colours
        return Text.assemble(("━" * done, "bar.complete"), ("━" * (width - done), "bar.back"))
    return Text("━" * done + "─" * (width - done))  # without colour the rest must still show


class TrainScreen:
    """What the live view draws, as a rich renderable that lays itself out for the size it is
    given at each refresh. `final`: the last frame, drawn once into the scrollback, shows every
    epoch and full-size curves whatever the terminal's height."""

    def __init__(self) -> None:
        self.progress = EpochProgress()
        self.history: tuple[EpochStats, ...] = ()
        self.best_epoch = 0
        self.epochs_without_gain = 0
        self.patience = 0
        self.notes: list[Text] = []  # early stop, the test set: below the curves, in order
        self.final = False
        self._version = 0  # bumped when anything above the progress line changes
        self._upper: tuple[tuple[object, ...], list[list[Segment]]] | None = None
        self._curves: dict[tuple[int, int, int, bool], Text] = {}

    def set_history(
        self, history: tuple[EpochStats, ...], best: int, without_gain: int, patience: int
    ) -> None:
        self.history, self.best_epoch = history, best
        self.epochs_without_gain, self.patience = without_gain, patience
        self._version += 1

    def add_note(self, note: Text) -> None:
        self.notes.append(note)
        self._version += 1

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.final:
            width, height = options.max_width, 1_000_000
        else:
            # A live frame leaves the terminal's last row and last column empty. rich redraws
            # the frame by moving up one row per line it drew last time: when it ends the view
            # it writes a newline, and a frame as tall as the terminal scrolls its top line out
            # of reach, left behind above the final frame. A line as wide as the terminal wraps
            # onto a row rich does not count as soon as the terminal narrows by one column.
            width = max(1, options.max_width - 1)
            height = max(1, (options.height or options.max_height) - 1)
        bottom = (
            progress_lines(self.progress, width, color=is_color(console), now=time.monotonic())
            if self.progress.visible and not self.final
            else []
        )
        key = (width, height, len(bottom), self._version, self.final)
        if self._upper is None or self._upper[0] != key:
            self._upper = (key, self._fit(console, width, height - len(bottom)))
        lines = self._upper[1] + [line for b in bottom for line in self._render(console, width, b)]
        # the last resort: what cannot fit goes from the top, never the progress line at the bottom
        for line in lines[-height:]:
            yield from line
            yield Segment.line()

    def layout(self, console: Console, width: int, height: int) -> tuple[TableForm, Layout]:
        """The table's form for `width` and how `height` lines are shared."""
        form = fitting_form(console, self.history, width, self.patience)
        fixed = sum(len(self._render(console, width, note)) for note in self.notes)
        curves_fit = width >= CURVES_MIN_WIDTH
        chrome = self._chrome(console, width, form, hidden=False)
        plan = plan_layout(
            height, len(self.history), fixed=fixed, chrome=chrome, curves_fit=curves_fit
        )
        if 0 < plan.rows < len(self.history):  # the title now says how many are not shown
            chrome = self._chrome(console, width, form, hidden=True)
            plan = plan_layout(
                height, len(self.history), fixed=fixed, chrome=chrome, curves_fit=curves_fit
            )
        return form, plan

    def _fit(self, console: Console, width: int, height: int) -> list[list[Segment]]:
        """Everything above the progress line, laid out in `height` lines, as lines."""
        form, plan = self.layout(console, width, height)
        parts: list[RenderableType] = []
        if plan.rows:
            parts.append(self._table(form, plan.rows))
        if plan.curves:
            parts.append(self._chart(console, min(width, CURVES_MAX_WIDTH), plan.curves))
        parts.extend(self.notes)
        lines: list[list[Segment]] = []
        for part in parts:
            lines.extend(self._render(console, width, part))
        return lines

    def _table(self, form: TableForm, rows: int) -> Table:
        return epochs_table(
            self.history,
            self.best_epoch,
            self.epochs_without_gain,
            self.patience,
            form=form,
            rows=rows,
        )

    def _chrome(self, console: Console, width: int, form: TableForm, *, hidden: bool) -> int:
        """The table's lines besides its rows. `hidden`: with the title's count of epochs not
        shown, measured at its widest (all but one hidden)."""
        rows = 1 if hidden else len(self.history)
        return len(self._render(console, width, self._table(form, rows))) - rows

    def _chart(self, console: Console, width: int, height: int) -> Text:
        key = (len(self.history), width, height, is_color(console))
        if key not in self._curves:
            self._curves = {
                key: Text.from_ansi(curves(self.history, width, height, color=key[3]).rstrip("\n"))
            }
        return self._curves[key]

    @staticmethod
    def _render(console: Console, width: int, part: RenderableType) -> list[list[Segment]]:
        return console.render_lines(
            part, console.options.update(width=width, height=None), pad=False
        )
