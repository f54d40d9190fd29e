"""What `mnistcli eval` prints: summary, confusion matrix, per-class scores, confused pairs and
a gallery of misclassified digits drawn with half-block characters.

Only formats what `mnistcli.metrics` computed. Without colour (NO_COLOR, --no-color, a pipe)
every number is still there, the diagonal is [bracketed] and the digits are drawn in
black-and-white half-blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.style import Style
from rich.table import Table
from rich.text import Text

from mnistcli.metrics import ClassScore, EvalReport, Evaluation, Mistake
from mnistcli.render.charts import curves
from mnistcli.render.console import is_color, percent, probability

if TYPE_CHECKING:
    from mnistcli.labelled import ImagesReport
from mnistcli.render.digits import digit_rows

# Cell colours as (background, text) pairs, light to dark. Both colours are set, so a cell reads
# the same on dark and light terminals. Diagonal (correct) in blues, mistakes in reds.
DIAGONAL_SHADES = (
    ("#c6dbef", "black"),
    ("#9ecae1", "black"),
    ("#6baed6", "black"),
    ("#3182bd", "white"),
    ("#08519c", "white"),
)
ERROR_SHADES = (
    ("#fee5d9", "black"),
    ("#fcbba1", "black"),
    ("#fc9272", "black"),
    ("#fb6a4a", "black"),
    ("#de2d26", "white"),
    ("#a50f15", "white"),
)
CROP = 2  # pixels cut from each edge of a 28x28 digit in the gallery (MNIST's border is blank)
GALLERY_GAP = 2  # spaces between gallery tiles


def shade(count: int, largest: int, steps: int) -> int:
    """Which of `steps` shades a count gets: log scale, so 1 and 5 mistakes look different when
    the largest cell holds 100. Returns -1 for 0."""
    if count <= 0 or largest <= 0:
        return -1
    level = math.ceil(math.log1p(count) / math.log1p(largest) * steps) - 1
    return min(max(level, 0), steps - 1)


def summary_table(
    ev: Evaluation,
    *,
    checkpoint: str,
    split: str,
    device: str,
    trained: str | None = None,
    saved: Sequence[str] = (),
    data: str | None = None,
) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", escape(checkpoint))
    if trained:
        table.add_row("trained", escape(trained))
    table.add_row("data", escape(data) if data else f"{split} split, {ev.n:,} images")
    ci = ev.interval
    table.add_row(
        "accuracy",
        f"[bold]{percent(ev.accuracy)}[/]  {percent(ci.level, 0)} CI "
        f"{percent(ci.low)} to {percent(ci.high)} (Wilson score interval)",
    )
    per_error = 100 / ev.n if ev.n else 0.0
    table.add_row(
        "errors",
        f"{ev.errors:,} of {ev.n:,} (one error is {per_error:.3g} percentage points)",
    )
    table.add_row("mean loss", f"{ev.loss:.4f} (cross-entropy)")
    speed = ev.n / ev.seconds if ev.seconds > 0 else 0.0
    table.add_row("time", f"{ev.seconds:.2f} s on {escape(device)} ({speed:,.0f} images/s)")
    if saved:
        table.add_row("saved", escape(", ".join(saved)))
    return table


def confusion_table(
    confusion: Sequence[Sequence[int]], *, color: bool, no_digit: Sequence[int] = ()
) -> Table:
    """Rows true, columns predicted; cell colour by count (blue diagonal, red mistakes).
    `no_digit`: a last column, "none", of the images in which no digit was found."""
    size = len(confusion)
    diag_max = max((confusion[i][i] for i in range(size)), default=0)
    off_max = max((confusion[t][p] for t in range(size) for p in range(size) if t != p), default=0)
    table = Table(
        title="confusion matrix (rows: true label, columns: predicted label)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        padding=(0, 0),  # SIMPLE_HEAD already puts a space between columns
    )
    rows: list[list[Text]] = []
    for t in range(size):
        cells: list[Text] = []
        for p in range(size):
            count = confusion[t][p]
            diagonal = t == p
            if not color:
                cells.append(Text(f"[{count}]" if diagonal else f"{count} "))
                continue
            shades = DIAGONAL_SHADES if diagonal else ERROR_SHADES
            level = shade(count, diag_max if diagonal else off_max, len(shades))
            if level < 0:
                cells.append(Text(f"{count} ", style="dim"))
            else:
                bg, fg = shades[level]
                cells.append(Text(f" {count} ", style=Style(color=fg, bgcolor=bg, bold=diagonal)))
        rows.append(cells)
    # every count must stay whole: columns never shrink below their widest cell
    table.add_column("true", justify="right", style="bold", no_wrap=True, min_width=4)
    for p in range(size):
        widest = max([len(str(p)) + 1] + [r[p].cell_len for r in rows])
        table.add_column(f"{p} ", justify="right", no_wrap=True, min_width=widest)
    if no_digit:
        for t, cells in enumerate(rows):
            style = Style(color="yellow") if color and no_digit[t] else None
            cells.append(Text(f"{no_digit[t]} ", style=style or ""))
        table.add_column("none ", justify="right", no_wrap=True, min_width=5)
    for t, cells in enumerate(rows):
        table.add_row(str(t), *cells)
    return table


def class_table(scores: Sequence[ClassScore], macro: ClassScore) -> Table:
    table = Table(title="per class", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("digit", "precision", "recall", "F1", "support", "predicted"):
        table.add_column(name, justify="right")
    worst = min(scores, key=lambda s: (s.f1, s.label)).label if scores else None
    for s in scores:
        table.add_row(
            str(s.label),
            percent(s.precision),
            percent(s.recall),
            percent(s.f1),
            f"{s.support:,}",
            f"{s.predicted:,}",
            style="bold red" if s.label == worst and s.f1 < 1 else None,
        )
    table.add_section()
    table.add_row(
        "macro avg",
        percent(macro.precision),
        percent(macro.recall),
        percent(macro.f1),
        f"{macro.support:,}",
        f"{macro.predicted:,}",
        style="bold",
    )
    return table


def pairs_text(ev: Evaluation) -> Text:
    """'4 -> 9   12   (1.23% of all 4s)', most confused first."""
    out = Text("most confused pairs (true -> predicted, count)\n", style="bold")
    if not ev.pairs:
        out.append("  none: no mistakes\n")
        return out
    width = max(len(f"{p.count:,}") for p in ev.pairs)
    for pair in ev.pairs:
        support = ev.per_class[pair.true].support
        share = f"{percent(pair.count / support)} of all {pair.true}s" if support else ""
        out.append(f"  {pair.true} -> {pair.pred}  ")
        out.append(f"{pair.count:>{width},}", style="bold")
        out.append(f"   ({share})\n" if share else "\n")
    return out


def gallery(mistakes: Sequence[Mistake], errors: int, width: int, *, color: bool) -> Group:
    """Misclassified digits side by side, each captioned 'true -> predicted  confidence  #index'."""
    head = Text(f"most confident mistakes ({len(mistakes)} of {errors:,})", style="bold")
    files = any(m.path for m in mistakes)
    where = "and its file" if files else "#index in the split"
    head.append(f"\n  each: true -> predicted, confidence, {where}", style="not bold")
    if not mistakes:
        return Group(head, Text("  none: no mistakes"))
    tiles = [digit_rows(m.pixels, color=color, crop=CROP) for m in mistakes]
    w = tiles[0][0].cell_len
    per_row = max(1, (width + GALLERY_GAP) // (w + GALLERY_GAP))
    lines: list[RenderableType] = [head]
    for start in range(0, len(mistakes), per_row):
        chunk = mistakes[start : start + per_row]
        drawn = tiles[start : start + per_row]
        captions = [
            f"{m.true} -> {m.pred}  {probability(m.confidence)}"
            + ("" if m.path else f"  #{m.index}")
            for m in chunk
        ]
        for r in range(len(drawn[0])):
            lines.append(Text(" " * GALLERY_GAP).join(t[r] for t in drawn))
        caption = Text(" " * GALLERY_GAP).join(Text(c[:w].ljust(w)) for c in captions)
        caption.stylize("bold")
        lines.append(caption)
        if files:  # the path's end, which names the file, under the digit
            names = [_tail(m.path or "", w).ljust(w) for m in chunk]
            lines.append(Text(" " * GALLERY_GAP).join(Text(n) for n in names))
        lines.append(Text(""))
    return Group(*lines)


def _tail(path: str, width: int) -> str:
    """The end of a path in `width` cells, marked with … where its start is left out."""
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def print_report(
    console: Console,
    ev: Evaluation,
    *,
    checkpoint: str,
    split: str,
    device: str,
    trained: str | None = None,
    saved: Sequence[str] = (),
    top: int = 10,
    gallery_size: int = 16,
    data: str | None = None,
) -> None:
    """Everything, in reading order: summary, matrix, per-class table, pairs, gallery."""
    color = is_color(console)
    console.print(
        summary_table(
            ev,
            checkpoint=checkpoint,
            split=split,
            device=device,
            trained=trained,
            saved=saved,
            data=data,
        )
    )
    console.print()
    console.print(confusion_table(ev.confusion, color=color, no_digit=ev.no_digit))
    if not color:
        console.print(Text("  [n]: correct predictions (the diagonal)"))
    if ev.no_digit:
        console.print(Text("  none: no digit found (counted as wrong)"))
    console.print()
    console.print(class_table(ev.per_class, ev.macro))
    if top > 0:
        console.print(pairs_text(ev))
    if gallery_size > 0:
        console.print(gallery(ev.mistakes, ev.errors, console.width, color=color))


def trained_line(report: EvalReport) -> str:
    """How the checkpoint's model was trained, in one line."""
    h = report.hyper
    return (
        f"{h.model}, epoch {report.epoch} (of {report.epochs_in_checkpoint} in this "
        f"checkpoint), recipe {h.recipe}, seed {h.seed}, {report.n_train:,} training images"
    )


def print_eval(
    out: Console, err: Console, report: EvalReport, saved: Sequence[Path], *, top: int, gallery: int
) -> None:
    """The report on `out` (`top` pairs, `gallery` mistakes: 0 leaves the section out), then
    the run's training curves on `err`, as `mnistcli train` drew them (two epochs or more)."""
    print_report(
        out,
        report.evaluation,
        checkpoint=str(report.checkpoint),
        split=report.split,
        device=report.device,
        trained=trained_line(report),
        saved=[str(p) for p in saved],
        top=top,
        gallery_size=gallery,
    )
    if len(report.history) >= 2:
        chart = curves(report.history, min(err.width, 120), 14, color=is_color(err))
        err.print(Text.from_ansi(chart))


def print_images_eval(
    out: Console, report: ImagesReport, saved: Sequence[Path], *, top: int, gallery: int
) -> None:
    """eval --images: the same report, its data line saying where the images and labels came
    from, how many had no digit found and how many files were left out."""
    ev = report.evaluation
    data = f"{ev.n:,} images from {report.source}"
    if sum(ev.no_digit):
        data += f"; no digit found in {sum(ev.no_digit):,} (wrong)"
    if report.left_out:
        data += f"; {len(report.left_out):,} left out (unreadable or unlabelled, listed above)"
    print_report(
        out,
        ev,
        checkpoint=str(report.checkpoint),
        split="images",
        device=report.device,
        trained=report.model,
        saved=[str(p) for p in saved],
        top=top,
        gallery_size=gallery,
        data=data,
    )
