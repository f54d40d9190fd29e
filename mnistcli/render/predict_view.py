"""What `mnistcli predict` shows: one panel per image (digit, probability, top-k bars and,
with --show, the 28x28 input the model saw), or a table of many images and a summary line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mnistcli.predict import Prediction
from mnistcli.render.console import percent
from mnistcli.render.digits import digit_rows

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


def pct(p: float) -> str:
    """A probability with one decimal; short of 1 it never reads as 100% (99.96% -> 99.9%)."""
    return percent(p, 1, below_100=True)


def headline(pred: Prediction) -> Text:
    if pred.error:
        return Text(f"failed: {pred.error}", style="red")
    if pred.digit is None:
        return Text("no digit found", style="yellow") + Text(
            " (blank, or too little ink or contrast)", style="dim"
        )
    text = Text("digit ")
    text.append(str(pred.digit), style="bold green")
    text.append(f"  {pct(pred.probability or 0.0)}", style="bold")
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
    return Panel(body, title=Text(pred.path), title_align="left", expand=False)


def digit_art(pixels: np.ndarray, *, color: bool) -> Text:
    """The (28, 28) input, whole: half-blocks in true greys in colour (28 x 14 cells), two shade
    characters per pixel without (28 x 28 lines: the proportions and grey levels are kept)."""
    rows = digit_rows(pixels, color=color, plain="shades")
    return Text("\n", no_wrap=True, overflow="crop").join(rows)


def framed(art: Text, subtitle: str | Text = "28x28 input") -> Panel:
    """A drawn picture in a thin frame just its size, so its edges (and the centring) show."""
    width = max(line.cell_len for line in art.split()) + 2  # the widest line and two sides
    return Panel(art, padding=0, width=width, subtitle=subtitle)


def predictions_table(preds: Sequence[Prediction]) -> Table:
    """Many images: one row each (digit, probability, the other candidates)."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("image", overflow="fold")
    table.add_column("digit", justify="right")
    table.add_column("prob.", justify="right")
    table.add_column("top-k", no_wrap=True)
    for pred in preds:
        if pred.error:
            table.add_row(Text(pred.path), Text("-"), Text(""), Text("failed", style="red"))
        elif pred.digit is None:
            table.add_row(
                Text(pred.path), Text("-"), Text(""), Text("no digit found", style="yellow")
            )
        else:
            others = "  ".join(f"{d} {pct(p)}" for d, p in pred.top_k)
            table.add_row(
                Text(pred.path),
                Text(str(pred.digit), style="bold green"),
                Text(pct(pred.probability or 0.0)),
                Text(others, style="dim"),
            )
    return table


def gallery(preds: Sequence[Prediction], *, color: bool) -> Columns:
    """--show with many images: each input drawn small, captioned with the file and the guess."""
    cells = []
    for pred in preds:
        if pred.pixels is None or pred.digit is None:
            continue  # failed, or a blank canvas: nothing to see
        guess = f"{pred.digit} {pct(pred.probability or 0)}"
        cell = framed(digit_art(pred.pixels, color=color), Text(guess))
        cell.title = Text(_short(pred.path, (cell.width or 0) - 6))
        cells.append(cell)
    return Columns(cells, padding=(0, 1))


def _short(path: str, width: int) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def summary_line(preds: Sequence[Prediction]) -> Text:
    """ "12 images: 10 predicted, 1 no digit found, 1 failed" and the digits counted."""
    ok = [p for p in preds if p.status == "ok"]
    blank = sum(p.status == "no digit" for p in preds)
    failed = sum(p.status == "error" for p in preds)
    text = Text(f"{len(preds)} images: {len(ok)} predicted")
    if blank:
        text.append(f", {blank} no digit found", style="yellow")
    if failed:
        text.append(f", {failed} failed", style="red")
    if ok:
        counts = {d: sum(p.digit == d for p in ok) for d in range(10)}
        text.append("; digits " + ", ".join(f"{d}: {n}" for d, n in counts.items() if n))
    return text


def predict_view(
    preds: Sequence[Prediction], *, show: bool, color: bool, width: int = 120
) -> RenderableType:
    """A panel for a single image; a table, a summary and (with `show`) a gallery for many."""
    if len(preds) == 1:
        return prediction_panel(preds[0], show=show, color=color, width=width)
    parts: list[RenderableType] = [predictions_table(preds)]
    if show:
        parts += [Text(""), gallery(preds, color=color)]
    parts += [Text(""), summary_line(preds)]
    return Group(*parts)
