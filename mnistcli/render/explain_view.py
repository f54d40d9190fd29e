"""What `mnistcli predict --explain` shows: beside each input the model saw (the digit in grey),
the pixels that decided for the predicted digit (the saliency, in colour over a dim copy of the
digit). Without colour the saliency is drawn in shade glyphs, one line per pixel row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.color import Color
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mnistcli.errors import printable
from mnistcli.predict import Prediction
from mnistcli.render.colorscale import heat, shade
from mnistcli.render.console import is_color
from mnistcli.render.digits import half_block_lines
from mnistcli.render.predict_view import (
    CHART_WIDTH,
    digit_art,
    framed,
    headline,
    predict_view,
    predictions_table,
    summary_line,
    top_k_chart,
)

if TYPE_CHECKING:
    import torch

    from mnistcli.explain import Explained

DIM = 0.35  # the digit under the saliency, at this share of its brightness
METHOD = "integrated gradients from a black image"


def _blend(grey: int, s: float) -> tuple[int, int, int]:
    """A pixel of the saliency picture: heat colour where salient, the dim digit elsewhere."""
    r, g, b = heat(s)
    base = grey * DIM
    return (round(max(r, base)), round(max(g, base)), round(max(b, base)))


def display_max(saliency: torch.Tensor) -> float:
    """The value drawn brightest: the 98th percentile of the salient pixels, so that one or two
    outstanding pixels do not leave the rest of the map dark (as Captum's own drawings do)."""
    positive = saliency[saliency > 0]
    if positive.numel() == 0:
        return 1.0
    return float(positive.float().quantile(0.98)) or float(positive.max())


def saliency_art(pixels: torch.Tensor, saliency: torch.Tensor, *, color: bool) -> Text:
    """The (28, 28) saliency, scaled to `display_max`: half-blocks over the dim digit in
    colour (14 lines), two shade characters per pixel without (28 lines)."""
    grey = [[int(v) for v in row] for row in pixels.tolist()]
    top = display_max(saliency)
    sal = [[v / top for v in row] for row in saliency.tolist()]
    if color:
        both = [list(zip(g, v, strict=True)) for g, v in zip(grey, sal, strict=True)]
        lines = half_block_lines(both, lambda p: Color.from_rgb(*_blend(*p)))
    else:
        lines = [Text("".join(shade(min(v, 1.0)) * 2 for v in row)) for row in sal]
    return Text("\n", no_wrap=True, overflow="crop").join(lines)


def _pair(pred: Prediction, saliency: torch.Tensor, *, color: bool, width: int) -> RenderableType:
    """The input and its saliency, side by side (or one above the other when narrow)."""
    left = framed(digit_art(pred.pixels, color=color))
    right = framed(saliency_art(pred.pixels, saliency, color=color), f"why {pred.digit}")
    side = left.width or 0
    if 2 * side + 1 <= width:
        grid = Table.grid(padding=(0, 1))
        grid.add_row(left, right)
        return grid
    return Group(left, right)


def explain_panel(pred: Prediction, saliency: torch.Tensor | None, *, color: bool, width: int):
    """One image: the verdict and top-k chart, then the input beside its saliency."""
    title = Text(printable(pred.path))
    if saliency is None or pred.pixels is None or pred.digit is None:
        return Panel(headline(pred), title=title, title_align="left", expand=False)
    chart = Group(headline(pred), Text(""), top_k_chart(pred))
    pair = _pair(pred, saliency, color=color, width=width - 4)
    legend = Text(f"brighter = more responsible for {pred.digit} ({METHOD})", style="dim")
    body: RenderableType = Group(chart, Text(""), pair, legend)
    if width >= CHART_WIDTH + 4:
        return Panel(body, title=title, title_align="left", expand=False)
    return body


def explain_view(
    explained: Sequence[Explained],
    *,
    color: bool,
    width: int = 120,
    table_width: int | None = 120,
) -> RenderableType:
    """A panel for a single image; for many, the table (laid out for `table_width`, None: a
    pipe, whole rows), each input beside its saliency, and the summary line."""
    if len(explained) == 1:
        one = explained[0]
        return explain_panel(one.prediction, one.saliency, color=color, width=width)
    preds = [e.prediction for e in explained]
    cells = []
    for pred, sal in ((e.prediction, e.saliency) for e in explained):
        if sal is None or pred.pixels is None:
            continue
        caption = Text(f"{printable(pred.path)}: {pred.digit}", overflow="ellipsis", no_wrap=True)
        cells.append(Group(caption, _pair(pred, sal, color=color, width=width)))
    parts: list[RenderableType] = [predictions_table(preds, width=table_width), Text("")]
    parts += [Columns(cells, padding=(1, 2)), Text(f"brighter = more responsible ({METHOD})")]
    return Group(*parts, Text(""), summary_line(preds))


def print_predictions(
    out: Console, preds: list[Prediction], explained: list[Explained] | None, *, show: bool
) -> None:
    """`mnistcli predict`'s view on stdout: predict_view, or with --explain, explain_view (each
    input beside its saliency). A single image that failed shows nothing: its error line says
    it all. (Here rather than in predict_view, which this module builds on.)"""
    keep = [i for i, p in enumerate(preds) if len(preds) > 1 or not p.error]
    if not keep:
        return
    color, width = is_color(out), out.width
    table = width if out.is_terminal else None  # a pipe: whole rows, every top-k entry
    if explained is not None:
        chosen = [explained[i] for i in keep]
        view = explain_view(chosen, color=color, width=width, table_width=table)
    else:
        chosen_preds = [preds[i] for i in keep]
        view = predict_view(chosen_preds, show=show, color=color, width=width, table_width=table)
    out.print(view, crop=out.is_terminal)  # a pipe: rows longer than 80 columns stay whole
