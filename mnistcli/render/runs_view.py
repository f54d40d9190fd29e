"""What `mnistcli runs` prints: one row per run, newest first, the run 'latest' means marked,
and the columns that fit the terminal (the rest named in a note, never cut mid-number); a pipe
or a file, which has no width, gets every column."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mnistcli.records import RunStatus
from mnistcli.render.console import percent
from mnistcli.runs import RunInfo

GAP = 2  # spaces between columns
MARK = "*"  # before the name of the run 'latest' means


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[RunInfo], str]
    right: bool = False  # numbers line up on the right


def _epochs(r: RunInfo) -> str:
    planned = "?" if r.epochs_planned is None else str(r.epochs_planned)
    return f"{r.epochs_run}/{planned}"


def _started(r: RunInfo) -> str:
    return r.started.strftime("%Y-%m-%d %H:%M") if r.started else "-"


# In the order they are given up when the terminal is too narrow: the last first.
COLUMNS: tuple[Column, ...] = (
    Column("run", lambda r: f"{MARK if r.latest else ' '} {r.name}"),
    Column("state", lambda r: str(r.status)),
    Column("test acc", lambda r: percent(r.test_acc), right=True),
    Column("val acc", lambda r: percent(r.val_acc), right=True),
    Column("epochs", _epochs, right=True),
    Column("best", lambda r: str(r.best_epoch or "-"), right=True),
    Column("started", _started),
    Column("recipe", lambda r: r.recipe or "-"),
    Column("device", lambda r: r.device or "-"),
)


def fitting_columns(
    runs: Sequence[RunInfo], width: int | None
) -> tuple[list[Column], list[Column]]:
    """The columns that fit in `width` (the name and state always), and those left out; all of
    them when `width` is None (a pipe or a file)."""
    if width is None:
        return list(COLUMNS), []
    widths = [max(len(c.header), *(len(c.cell(r)) for r in runs)) for c in COLUMNS]
    keep = len(COLUMNS)
    while keep > 2 and sum(widths[:keep]) + GAP * (keep - 1) > width:
        keep -= 1
    return list(COLUMNS[:keep]), list(COLUMNS[keep:])


def _shown(path: Path) -> str:
    """`path` as short as it can be typed from here: relative when it is below the current
    folder, else as it is."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith("..") else relative


def runs_view(runs: Sequence[RunInfo], width: int | None) -> RenderableType:
    """The table of `runs` in `width` columns (None: a pipe or a file, every column), and
    notes: what was left out, which run is 'latest', how to continue an interrupted one."""
    shown, dropped = fitting_columns(runs, width)
    table = Table(box=None, pad_edge=False, padding=(0, GAP, 0, 0), header_style="bold")
    for column in shown:
        # names may wrap; numbers and states never do (their width is in fitting_columns)
        overflow = "fold" if column.header == "run" else "ellipsis"
        table.add_column(
            column.header,
            justify="right" if column.right else "left",
            overflow=overflow,
            no_wrap=column.header != "run",
        )
    for run in runs:
        style = "dim" if run.status is RunStatus.EMPTY else None
        table.add_row(*(escape(c.cell(run)) for c in shown), style=style)
    notes = [f"{MARK} latest: what eval, predict, export and inspect use without --checkpoint"]
    if not any(r.latest for r in runs):
        notes = ["no run has finished an epoch yet, so there is no latest model"]
    interrupted = [r for r in runs if r.status is RunStatus.INTERRUPTED]
    if interrupted:  # the newest one's folder: a command that works as it is typed
        example = shlex.quote(_shown(interrupted[0].path))
        notes.append(
            f"interrupted: continue with 'mnistcli train --resume {example}'"
            if len(interrupted) == 1
            else f"interrupted: continue one with 'mnistcli train --resume' and its folder "
            f"(e.g. {example})"
        )
    if any(r.status is RunStatus.EMPTY for r in runs):
        notes.append("empty: stopped before an epoch was saved; nothing to use or resume")
    if dropped:
        names = ", ".join(c.header for c in dropped)
        notes.append(f"left out for width: {names} (a wider terminal or --json shows them)")
    return Group(table, Text(), *(Text(n, style="dim") for n in notes))
