"""What `mnistcli inspect --image` adds: every layer's output for that image, in forward order.

Feature maps are drawn as grids of small pictures with half-block characters ("▀": the upper
pixel in the foreground colour, the lower one in the background colour), one colour scale per
layer so the maps of a layer compare; the first convolution's filters as coloured 3x3 tiles;
vectors (hidden units) as rows of vertical bars; the logits beside their probabilities. Without
colour every map degrades to a few shade glyphs, with the same layout. Formats what
mnistcli.explain captured; computes nothing but the drawing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.color import Color
from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text

from mnistcli.explain import Activations, LayerActivation
from mnistcli.render.colorscale import Scale, diverging, heat
from mnistcli.render.console import percent
from mnistcli.render.digits import half_block_lines, row_pairs
from mnistcli.render.predict_view import bar, pct

if TYPE_CHECKING:
    import torch

GAP = 1  # columns between maps
MIN_PER_ROW = 6  # maps are shrunk (averaged) until at least this many fit on one row
EIGHTHS_UP = " ▁▂▃▄▅▆▇█"


def _rgb(rgb: tuple[int, int, int]) -> Color:
    return Color.from_rgb(*rgb)


def map_lines(image: list[list[float]], scale: Scale, *, color: bool) -> list[Text]:
    """One (h, w) map as ceil(h/2) lines of w cells: two pixel rows per line."""
    rows = [list(r) for r in image]
    if color:
        return half_block_lines(rows, lambda v: _rgb(scale.rgb(v)))
    lines = []
    for top, bottom in row_pairs(rows):  # the mean of the two pixels' magnitudes, as a glyph
        means = (v if bottom is None else (v + bottom[j]) / 2 for j, v in enumerate(top))
        lines.append(Text("".join(scale.glyph(mean) for mean in means)))
    return lines


def shrink_factor(side: int, count: int, width: int, minimum: int = MIN_PER_ROW) -> int:
    """The smallest integer factor that fits min(count, `minimum`) maps of `side` columns."""
    wanted = min(count, minimum)
    factor = 1
    while factor < side and wanted * (math.ceil(side / factor) + GAP) > width:
        factor += 1
    return factor


def shrink(maps: torch.Tensor, factor: int) -> torch.Tensor:
    """(C, H, W) averaged over factor x factor blocks (the edges padded), for display only."""
    if factor == 1:
        return maps
    import torch.nn.functional as F

    return F.avg_pool2d(maps[None], factor, ceil_mode=True)[0]


def map_grid(maps: torch.Tensor, scale: Scale, *, color: bool, width: int) -> list[Text]:
    """(C, H, W) maps as a grid of small pictures, each numbered, `width` columns at most."""
    count, side = maps.shape[0], maps.shape[2]
    factor = shrink_factor(side, count, width)
    small = shrink(maps, factor).tolist()
    cell = len(small[0][0]) + GAP
    per_row = max(1, min(count, (width + GAP) // cell))
    out: list[Text] = []
    if factor > 1:
        out.append(Text(f"(each map shrunk {factor}x to fit: averages of {factor}x{factor})"))
    for start in range(0, count, per_row):
        chunk = range(start, min(count, start + per_row))
        drawn = [map_lines(small[c], scale, color=color) for c in chunk]
        if len(str(chunk[-1])) < cell:  # each map's number over it, a space to the next
            labels = Text("".join(str(c).ljust(cell) for c in chunk).rstrip(), style="dim")
        else:  # maps too small for their numbers: the row's range instead, never a cut number
            labels = Text(f"maps {chunk[0]}-{chunk[-1]}", style="dim")
        out.append(labels)
        for k in range(len(drawn[0])):
            out.append(Text(" " * GAP).join(d[k] for d in drawn))
    return out


def filter_grid(filters: torch.Tensor, *, color: bool, width: int) -> list[Text]:
    """(out, 1, kh, kw) weights as tiles of kh lines, two columns per weight, one signed scale."""
    weights = filters[:, 0].tolist()
    span = float(filters.abs().max()) or 1.0
    scale = Scale(-span, span)
    tile = 2 * len(weights[0][0]) + 2
    per_row = max(1, (width + 2) // tile)
    out: list[Text] = []
    for start in range(0, len(weights), per_row):
        chunk = range(start, min(len(weights), start + per_row))
        out.append(Text("".join(str(c).ljust(tile) for c in chunk).rstrip(), style="dim"))
        for r in range(len(weights[0])):
            line = Text()
            for c in chunk:
                for w in weights[c][r]:
                    if color:
                        line.append("██", Style(color=_rgb(scale.rgb(w))))
                    else:
                        line.append(scale.glyph(w) * 2)
                line.append("  ")
            line.rstrip()
            out.append(line)
    legend = scale.legend() if color else scale.plain_legend()
    out.append(Text(f"weights: {legend}", style="dim"))
    return out


def unit_bars(values: Sequence[float], *, color: bool, width: int, height: int = 2) -> list[Text]:
    """A vector as rows of vertical bars, one column per unit: positive values rise `height`
    lines (in eighths of a line), negative ones hang one line below (in halves)."""
    n = len(values)
    rows = math.ceil(n / max(1, width - 1))
    per_row = math.ceil(n / rows)
    span = max((abs(v) for v in values), default=0.0) or 1.0
    negative = any(v < 0 for v in values)
    up_style = Style(color=_rgb(heat(0.75))) if color else Style()
    down_style = Style(color=_rgb(diverging(-0.8))) if color else Style()
    out: list[Text] = []
    for start in range(0, n, per_row):
        chunk = values[start : start + per_row]
        for level in range(height, 0, -1):  # the top line first
            cells = []
            for v in chunk:
                eighths = round(max(0.0, v) / span * height * 8) - (level - 1) * 8
                cells.append(EIGHTHS_UP[max(0, min(8, eighths))])
            out.append(Text("".join(cells), style=up_style))
        if negative:
            cells = []
            for v in chunk:
                halves = round(max(0.0, -v) / span * 2)
                cells.append(" ▀█"[min(2, halves)])
            out.append(Text("".join(cells), style=down_style))
        last = start + len(chunk) - 1
        out.append(Text(f"units {start}-{last}".ljust(len(chunk)), style="dim"))
    return out


LOGITS_FIXED = 24  # columns of logits_table besides its bar: digit, logit, percentage, gaps


def logits_table(layer: LayerActivation, probabilities: Sequence[float], width: int = 100) -> Table:
    """One row per digit: its logit and a bar of its probability; the predicted digit in bold.
    The bar (30 cells at most) gives way so the numbers fit `width` whole."""
    bar_width = max(4, min(30, width - LOGITS_FIXED))
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    table = Table.grid(padding=(0, 2))
    for name, justify in [("digit", "right"), ("logit", "right"), ("p", "left"), ("", "right")]:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    heads = ("digit", "logit", "probability" if bar_width >= len("probability") else "p", "")
    table.add_row(*(Text(h, style="bold") for h in heads))
    for digit, (logit, p) in enumerate(zip(layer.values.tolist(), probabilities, strict=True)):
        style = "bold green" if digit == best else "cyan"
        table.add_row(
            Text(str(digit), style="bold" if digit == best else ""),
            f"{logit:+.2f}",
            Text(bar(p, bar_width), style=style),
            pct(p),
        )
    return table


def describe(layer: LayerActivation, before: tuple[int, ...], last: bool) -> str:
    """One line on what a layer does, from its type and the shapes around it."""
    kind, shape = layer.type, layer.shape
    if kind == "Conv2d":
        return (
            f"{shape[0]} learned filters slide over the input; a map is bright where its pattern is"
        )
    if kind == "ReLU":
        return (
            f"keeps positive responses and sets negative ones to 0: "
            f"{layer.fraction_zero:.0%} of the values are now 0"
        )
    if kind.startswith("MaxPool") and len(before) == 3 and len(shape) == 3:
        k = max(1, before[1] // max(1, shape[1]))
        return f"keeps the strongest response in each {k}x{k} window: the same maps, half the size"
    if kind == "Flatten":
        dims = "x".join(str(d) for d in before)
        return f"lays the {dims} maps end to end: one vector of {shape[0]:,} numbers"
    if kind == "Linear" and last:
        return f"{shape[0]} logits, one per digit; softmax turns them into probabilities"
    if kind == "Linear":
        inputs = before[0] if before else 0
        return f"{shape[0]} hidden units, each a weighted sum of all {inputs:,} inputs plus a bias"
    if kind.startswith("Dropout"):
        return "off at inference: passes its input on unchanged (training zeroes units at random)"
    return f"{kind} output"


def title(layer: LayerActivation, before: tuple[int, ...], last: bool) -> RenderableType:
    shape = "(" + ", ".join(str(d) for d in layer.shape) + ")"
    text = Text(f"{layer.name}  {layer.type}  {shape}", style="bold")
    text.append(
        f"   mean {layer.mean:.3g}  max {layer.max:.3g}  zero {percent(layer.fraction_zero, 0)}",
        style="dim",
    )
    return Group(text, Text(describe(layer, before, last), style="italic"))


def layer_block(
    layer: LayerActivation, acts: Activations, before: tuple[int, ...], *, color: bool, width: int
) -> list[RenderableType]:
    """The title and the drawing of one layer's output."""
    last = layer is acts.layers[-1]
    parts: list[RenderableType] = [title(layer, before, last)]
    if layer.name == acts.filters_layer and acts.filters is not None:
        kh, kw = acts.filters.shape[2:]
        if acts.filters.shape[1] == 1:
            parts.append(Text(f"its {acts.filters.shape[0]} learned {kh}x{kw} filters:"))
            parts.extend(filter_grid(acts.filters, color=color, width=width))
            parts.append(Text("what they find in this image:"))
    if len(layer.shape) == 3:
        scale = Scale(layer.min, layer.max)
        legend = scale.legend() if color else scale.plain_legend()
        parts.extend(map_grid(layer.values, scale, color=color, width=width))
        parts.append(Text(f"scale: {legend}", style="dim"))
    elif last and layer.shape == (len(acts.probabilities),):
        parts.append(logits_table(layer, acts.probabilities, width))
    elif len(layer.shape) == 1 and layer.type != "Flatten" and not layer.type.startswith("Drop"):
        parts.extend(unit_bars(layer.values.tolist(), color=color, width=width))
    return parts


def activations_view(
    acts: Activations, *, color: bool, width: int = 100, only: str | None = None
) -> RenderableType:
    """Every layer's output for one image, in forward order, fitted to `width` columns; with
    `only`, that layer's alone (still described from the shape that reached it)."""
    parts: list[RenderableType] = []
    before: tuple[int, ...] = (1, 28, 28)
    for layer in acts.layers:
        if only is None or layer.name == only:
            parts.append(Text())
            parts.extend(layer_block(layer, acts, before, color=color, width=width))
        before = layer.shape
    return Group(*parts)
