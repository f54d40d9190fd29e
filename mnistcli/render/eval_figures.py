"""PNG figures for `mnistcli eval`, drawn with pillow: the confusion matrix and a labelled grid
of misclassified digits."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from mnistcli.errors import OutputError
from mnistcli.figures import INK, font, png_bytes
from mnistcli.files import write_all_atomic
from mnistcli.metrics import EvalReport, Mistake
from mnistcli.render.console import percent, probability
from mnistcli.runs import eval_paths

if TYPE_CHECKING:
    from mnistcli.labelled import ImagesReport

WHITE = (255, 255, 255)
DIAGONAL_RGB = (8, 81, 156)  # dark blue: correct predictions
ERROR_RGB = (165, 15, 21)  # dark red: mistakes
ZERO_INK = (170, 170, 170)

# confusion_matrix.png: 10 cells of CELL px plus margins -> 700 x 700 px
CELL = 56
CM_LEFT, CM_TOP, CM_RIGHT, CM_BOTTOM = 110, 110, 30, 30

# misclassified.png: digits scaled SCALE times, COLUMNS per row, a caption under each
SCALE = 3
COLUMNS = 8
PAD = 8
CAPTION = 22
HEADER = 36
MIN_WIDTH = 520  # room for the title


def confusion_png_size(classes: int = 10) -> tuple[int, int]:
    return (CM_LEFT + classes * CELL + CM_RIGHT, CM_TOP + classes * CELL + CM_BOTTOM)


def misclassified_png_size(count: int) -> tuple[int, int]:
    cols, rows = min(COLUMNS, max(count, 1)), max(1, math.ceil(count / COLUMNS))
    tile = 28 * SCALE
    width = max(MIN_WIDTH, PAD + cols * (tile + PAD))
    return width, HEADER + rows * (tile + CAPTION + PAD) + PAD


def _blend(rgb: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    """White mixed with `rgb`: amount 0 is white, 1 is `rgb`."""
    return tuple(round(255 + (c - 255) * amount) for c in rgb)  # type: ignore[return-value]


def _text_on(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads on `fill` (relative luminance, ITU-R BT.709)."""
    r, g, b = fill
    return INK if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else WHITE


def confusion_png(confusion: Sequence[Sequence[int]], title: str) -> bytes:
    """confusion_matrix.png: counts in every cell, blue diagonal, red mistakes (log scale)."""
    size = len(confusion)
    image = Image.new("RGB", confusion_png_size(size), WHITE)
    draw = ImageDraw.Draw(image)
    f_title, f_axis, f_cell = font(18), font(15), font(14 if size <= 10 else 10)
    width = image.width
    draw.text((width // 2, 14), title, fill=INK, font=f_title, anchor="mt")
    grid_right = CM_LEFT + size * CELL
    draw.text(
        ((CM_LEFT + grid_right) // 2, CM_TOP - 48),
        "predicted label",
        fill=INK,
        font=f_axis,
        anchor="mt",
    )
    draw.text((CM_LEFT - 40, CM_TOP - 24), "true", fill=INK, font=f_axis, anchor="rm")
    off = [confusion[t][p] for t in range(size) for p in range(size) if t != p]
    largest = {True: max(confusion[i][i] for i in range(size)), False: max(off, default=0)}
    for i in range(size):
        draw.text(
            (CM_LEFT + i * CELL + CELL // 2, CM_TOP - 8), str(i), fill=INK, font=f_axis, anchor="mb"
        )
        draw.text(
            (CM_LEFT - 10, CM_TOP + i * CELL + CELL // 2),
            str(i),
            fill=INK,
            font=f_axis,
            anchor="rm",
        )
    for t in range(size):
        for p in range(size):
            count, diagonal = confusion[t][p], t == p
            top = largest[diagonal]
            amount = math.log1p(count) / math.log1p(top) if count and top else 0.0
            fill = _blend(DIAGONAL_RGB if diagonal else ERROR_RGB, 0.15 + 0.85 * amount)
            fill = fill if count else WHITE
            x0, y0 = CM_LEFT + p * CELL, CM_TOP + t * CELL
            draw.rectangle([x0, y0, x0 + CELL, y0 + CELL], fill=fill, outline=(210, 210, 210))
            ink = _text_on(fill) if count else ZERO_INK
            draw.text(
                (x0 + CELL // 2, y0 + CELL // 2), str(count), fill=ink, font=f_cell, anchor="mm"
            )
    draw.rectangle([CM_LEFT, CM_TOP, grid_right, CM_TOP + size * CELL], outline=INK)
    return png_bytes(image)


def misclassified_png(mistakes: Sequence[Mistake], title: str) -> bytes:
    """misclassified.png: each digit with 'true -> predicted  confidence' under it."""
    image = Image.new("RGB", misclassified_png_size(len(mistakes)), WHITE)
    draw = ImageDraw.Draw(image)
    f_title, f_caption = font(16), font(13)
    draw.text((image.width // 2, 10), title, fill=INK, font=f_title, anchor="mt")
    tile = 28 * SCALE
    for k, m in enumerate(mistakes):
        row, col = divmod(k, COLUMNS)
        x0 = PAD + col * (tile + PAD)
        y0 = HEADER + row * (tile + CAPTION + PAD)
        digit = Image.frombytes("L", (28, 28), m.pixels).resize((tile, tile), Image.NEAREST)
        image.paste(digit.convert("RGB"), (x0, y0))
        draw.text(
            (x0 + tile // 2, y0 + tile + 3),
            f"{m.true} -> {m.pred}  {probability(m.confidence)}",
            fill=ERROR_RGB,
            font=f_caption,
            anchor="mt",
        )
    return png_bytes(image)


def save_eval_files(report: EvalReport | ImagesReport, folder: Path) -> list[Path]:
    """Write confusion_matrix.png, misclassified.png (when there are mistakes) and eval.json
    (the report's JSON document, with the list of files saved) into `folder`; a split other
    than "test" adds a suffix (eval_val.json). Returns the paths written; raises OutputError if
    the folder is unwritable.

    The files are one report, written all or none (files.write_all_atomic): a full disk leaves
    the previous report whole, and a misclassified.png from an earlier run with mistakes is
    removed rather than left beside a report that has none."""
    result, checkpoint = report.evaluation, report.checkpoint
    files = eval_paths(folder, report.split)
    title = f"{checkpoint.parent.name}/{checkpoint.name}, {report.split} split"
    saved = [files.report, files.matrix, *([files.mistakes] if result.mistakes else [])]
    # everything drawn in memory first: nothing is written until the whole report exists
    contents: dict[Path, bytes | None] = {
        files.matrix: confusion_png(
            result.confusion, f"{title}: accuracy {percent(result.accuracy)} (n={result.n:,})"
        ),
        files.mistakes: None,  # no mistakes drawn: an earlier run's gallery is removed
        files.report: (json.dumps(report.to_dict(saved), indent=2) + "\n").encode(),
    }
    if result.mistakes:
        contents[files.mistakes] = misclassified_png(
            result.mistakes, f"{title}: most confident mistakes (true -> predicted)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_all_atomic(contents)
    except OSError as exc:
        raise OutputError(
            f"cannot write the results to {folder}: {exc.strerror or exc}; "
            f"choose another folder with --out-dir DIR, or pass --no-save"
        ) from None
    return saved
