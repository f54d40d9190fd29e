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
from rich.padding import Padding
from rich.style import Style
from rich.table import Table
from rich.text import Text

from mnistcli.errors import printable
from mnistcli.metrics import ClassScore, EvalReport, Evaluation, Mistake
from mnistcli.render.charts import curves
from mnistcli.render.console import is_color, percent, probability

if TYPE_CHECKING:
    from mnistcli.labelled import ImagesReport
from mnistcli.render.digits import digit_rows
from mnistcli.render.fit import Whole, first_fit, needed_width, path_tail, stack_if_narrow

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


def summary_rows(
    ev: Evaluation,
    *,
    checkpoint: str,
    split: str,
    device: str,
    trained: str | None = None,
    saved: Sequence[str] = (),
    data: str | None = None,
) -> list[tuple[str, str]]:
    """The summary's (name, value in rich markup) pairs: model, data, accuracy, errors, time.
    The paths in them (the model, the data's folders, the files saved) are shown `printable`."""
    rows = [("model", escape(printable(checkpoint)))]
    if trained:
        rows.append(("trained", escape(trained)))
    rows.append(("data", escape(printable(data)) if data else f"{split} split, {ev.n:,} images"))
    ci = ev.interval
    rows.append(
        (
            "accuracy",
            f"[bold]{percent(ev.accuracy)}[/]  {percent(ci.level, 0)} CI "
            f"{percent(ci.low)} to {percent(ci.high)} (Wilson score interval)",
        )
    )
    per_error = 100 / ev.n if ev.n else 0.0
    rows.append(
        ("errors", f"{ev.errors:,} of {ev.n:,} (one error is {per_error:.3g} percentage points)")
    )
    rows.append(("mean loss", f"{ev.loss:.4f} (cross-entropy)"))
    speed = ev.n / ev.seconds if ev.seconds > 0 else 0.0
    rows.append(("time", f"{ev.seconds:.2f} s on {escape(device)} ({speed:,.0f} images/s)"))
    if saved:
        rows.append(("saved", escape(printable(", ".join(saved)))))
    return rows


def summary_table(rows: Sequence[tuple[str, str]]) -> Table:
    """summary_rows as a table: names in bold, values beside them (wrapped between words)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(Whole(name), value)  # a name never wraps: its value does
    return table


MATRIX_TITLE = "confusion matrix (rows: true label, columns: predicted label)"
SHORT_MATRIX_TITLE = "confusion matrix (rows: true, columns: predicted)"
DIAGONAL_MARK = "·"  # where the correct count stood, in the form that lists it in its own column


def _matrix_cell(count: int, diagonal: bool, shades: int, *, color: bool, pad: bool) -> Whole:
    """One count of the matrix, whole: its colour by `shades` (-1: none, dim), or, without
    colour, a diagonal count [bracketed] when `pad` (the full form)."""
    if not color:
        return Whole(f"[{count}]" if diagonal else f"{count} ") if pad else Whole(str(count))
    palette = DIAGONAL_SHADES if diagonal else ERROR_SHADES
    if shades < 0:
        return Whole(f"{count} " if pad else str(count), style="dim")
    bg, fg = palette[shades]
    text = f" {count} " if pad else str(count)
    return Whole(text, style=Style(color=fg, bgcolor=bg, bold=diagonal))


def _shades(confusion: Sequence[Sequence[int]]) -> list[list[int]]:
    """Each cell's shade: log scale within the diagonal, and within the mistakes."""
    size = len(confusion)
    diag_max = max((confusion[i][i] for i in range(size)), default=0)
    off_max = max((confusion[t][p] for t in range(size) for p in range(size) if t != p), default=0)
    return [
        [
            shade(
                confusion[t][p],
                diag_max if t == p else off_max,
                len(DIAGONAL_SHADES if t == p else ERROR_SHADES),
            )
            for p in range(size)
        ]
        for t in range(size)
    ]


def confusion_table(
    confusion: Sequence[Sequence[int]],
    *,
    color: bool,
    titled: bool = True,
    no_digit: Sequence[int] = (),
) -> Table:
    """Rows true, columns predicted; cell colour by count (blue diagonal, red mistakes). The
    full form: `titled` puts the title in the table (else the caller prints it above).
    `no_digit`: a last column, "none", of the images in which no digit was found."""
    size = len(confusion)
    levels = _shades(confusion)
    table = Table(
        title=MATRIX_TITLE if titled else None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        padding=(0, 0),  # SIMPLE_HEAD already puts a space between columns
    )
    rows = [
        [
            _matrix_cell(confusion[t][p], t == p, levels[t][p], color=color, pad=True)
            for p in range(size)
        ]
        for t in range(size)
    ]
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


def compact_confusion_table(
    confusion: Sequence[Sequence[int]],
    *,
    color: bool,
    diagonal_apart: bool = False,
    no_digit: Sequence[int] = (),
) -> Table:
    """The matrix in as few columns as its counts allow: no padding around a count, one space
    between columns. With `diagonal_apart` the correct counts leave the diagonal (marked ·)
    for a last column, 'ok', so each column is only as wide as its largest mistake."""
    size = len(confusion)
    levels = _shades(confusion)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 0))
    table.add_column("", justify="right", style="bold", no_wrap=True)
    for p in range(size):
        table.add_column(str(p), justify="right", no_wrap=True)
    if diagonal_apart:
        table.add_column("ok", justify="right", no_wrap=True)
    if no_digit:
        table.add_column("none", justify="right", no_wrap=True)
    for t in range(size):
        cells: list[Text] = []
        for p in range(size):
            if diagonal_apart and t == p:
                cells.append(Whole(DIAGONAL_MARK, style="dim"))
                continue
            cells.append(
                _matrix_cell(confusion[t][p], t == p, levels[t][p], color=color, pad=False)
            )
        if diagonal_apart:
            cells.append(_matrix_cell(confusion[t][t], True, levels[t][t], color=color, pad=False))
        if no_digit:
            cells.append(Whole(str(no_digit[t]), style="yellow" if color and no_digit[t] else ""))
        table.add_row(str(t), *cells)
    return table


def confusion_view(
    console: Console,
    confusion: Sequence[Sequence[int]],
    *,
    color: bool,
    no_digit: Sequence[int] = (),
) -> RenderableType:
    """The matrix in the widest form that fits the console, every count whole: the full table;
    a compact one; one with the correct counts in a column of their own; or, when not even that
    fits, one line saying how to see it."""
    heading = Text(SHORT_MATRIX_TITLE)
    plain_legend = Text("  [n]: correct predictions (the diagonal)")
    compact_legend = legend("the diagonal (row = column): correct predictions")
    apart_legend = legend(f"ok: correct predictions, moved out of the diagonal ({DIAGONAL_MARK})")
    none = [legend("none: no digit found (counted as wrong)")] if no_digit else []

    def full() -> RenderableType:
        table = confusion_table(confusion, color=color, no_digit=no_digit)
        return Group(table, *none) if color else Group(table, plain_legend, *none)

    def compact(apart: bool) -> RenderableType:
        table = compact_confusion_table(
            confusion, color=color, diagonal_apart=apart, no_digit=no_digit
        )
        return Group(heading, table, apart_legend if apart else compact_legend, *none)

    forms = [full, lambda: compact(False), lambda: compact(True)]
    fitted = first_fit(console, forms)
    if fitted is not None:
        return fitted
    need = needed_width(console, forms[-1]())
    return Text(
        f"confusion matrix left out: it needs {need} columns and the terminal has "
        f"{console.width}; see it in a wider terminal or with --json"
    )


# the per-class table's columns: full header, short header (narrow terminals), meaning
CLASS_COLUMNS = (
    ("digit", "digit", ""),
    ("precision", "prec", "precision"),
    ("recall", "rec", "recall"),
    ("F1", "F1", ""),
    ("support", "n", "support, images of the digit"),
    ("predicted", "pred", "images predicted as the digit"),
)


def class_table(
    scores: Sequence[ClassScore], macro: ClassScore, *, short: bool = False, tight: bool = False
) -> Table:
    """Precision, recall, F1, support and predictions per digit, the worst F1 in red, then the
    macro average. `short`: abbreviated headers (class_legend explains them); `tight`: also one
    space between columns and percentages without their '%' sign. A digit with no images and
    no predictions has no scores: '-' (absent_legend says so), never the worst."""
    table = Table(
        title="per class" + (" (prec, rec, F1 in %)" if tight else ""),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=not tight,
        padding=(0, 0) if tight else (0, 1),
    )
    for full_name, short_name, _meaning in CLASS_COLUMNS:
        table.add_column(short_name if short else full_name, justify="right")

    def pct(value: float | None) -> Whole:
        return Whole(percent(value).removesuffix("%") if tight else percent(value))

    scored = [s for s in scores if s.f1 is not None]
    worst = min(scored, key=lambda s: (s.f1 or 0.0, s.label)).label if scored else None
    for s in scores:
        table.add_row(
            Whole(str(s.label)),
            pct(s.precision),
            pct(s.recall),
            pct(s.f1),
            Whole(f"{s.support:,}"),
            Whole(f"{s.predicted:,}"),
            style="bold red" if s.label == worst and (s.f1 or 0.0) < 1 else None,
        )
    table.add_section()
    table.add_row(
        Whole("avg" if short else "macro avg"),
        pct(macro.precision),
        pct(macro.recall),
        pct(macro.f1),
        Whole(f"{macro.support:,}"),
        Whole(f"{macro.predicted:,}"),
        style="bold",
    )
    return table


def class_legend() -> RenderableType:
    """What the short headers of class_table stand for."""
    pairs = [f"{short}: {meaning}" for _full, short, meaning in CLASS_COLUMNS if meaning]
    return legend("; ".join([*pairs, "avg: macro average, the mean over the digits present"]))


ABSENT_LEGEND = "-: no images of the digit and none predicted as it; not in the average"


def legend(text: str) -> RenderableType:
    """A note under a table, indented two columns on every line it wraps to."""
    return Padding(Text(text), (0, 0, 0, 2))


def class_view(console: Console, scores: Sequence[ClassScore], macro: ClassScore) -> RenderableType:
    """The per-class table in the widest form that fits, every number whole: full headers;
    short headers with a legend; tight; or one line saying how to see it. Under each, when a
    digit is absent (no images, no predictions), what its '-' means."""
    absent = [legend(ABSENT_LEGEND)] if any(s.f1 is None for s in scores) else []
    forms = [
        lambda: Group(class_table(scores, macro), *absent),
        lambda: Group(class_table(scores, macro, short=True), class_legend(), *absent),
        lambda: Group(class_table(scores, macro, short=True, tight=True), class_legend(), *absent),
    ]
    fitted = first_fit(console, forms)
    if fitted is not None:
        return fitted
    need = needed_width(console, forms[-1]())
    return Text(
        f"per-class table left out: it needs {need} columns and the terminal has "
        f"{console.width}; see it in a wider terminal or with --json"
    )


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
    if not mistakes:  # nothing drawn: no legend to read
        return Group(head, Text("  none: no mistakes"))
    files = any(m.path for m in mistakes)
    where = "and its file" if files else "#index in the split"
    head.append(f"\n  each: true -> predicted, confidence, {where}", style="not bold")
    tiles = [digit_rows(m.pixels, color=color, crop=CROP) for m in mistakes]
    w = tiles[0][0].cell_len
    if w > width:
        return Group(head, Text(f"  left out: a digit needs {w} columns, the terminal has {width}"))
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
            names = [path_tail(printable(m.path or ""), w).ljust(w) for m in chunk]
            lines.append(Text(" " * GALLERY_GAP).join(Text(n) for n in names))
        lines.append(Text(""))
    return Group(*lines)


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
    rows = summary_rows(
        ev,
        checkpoint=checkpoint,
        split=split,
        device=device,
        trained=trained,
        saved=saved,
        data=data,
    )
    console.print(stack_if_narrow(console, summary_table(rows), rows))
    console.print()
    console.print(confusion_view(console, ev.confusion, color=color, no_digit=ev.no_digit))
    console.print()
    console.print(class_view(console, ev.per_class, ev.macro))
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
