"""PNG figures drawn with Pillow (no matplotlib): the helpers every figure shares, and the
training curves (curves.png) that a run writes after each epoch. A core module, not in render/,
because the trainer itself writes curves.png (a run trained by calling `train()` has them too);
it imports Pillow only."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mnistcli.files import write_atomic
from mnistcli.records import EpochStats

TRAIN_COLOR = (31, 119, 180)  # blue
VAL_COLOR = (255, 127, 14)  # orange
INK = (40, 40, 40)
GRID = (225, 225, 225)
MARK = (120, 120, 120)  # the best epoch's dashed line


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    start = (lo // step) * step
    ticks, t = [], start
    while t <= hi + step * 0.01:
        if t >= lo - step * 0.01:
            ticks.append(round(t, 10))
        t += step
    return ticks


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    xs: Sequence[int],
    series: Sequence[tuple[str, Sequence[float], tuple[int, int, int]]],
    fmt: str,
    legend_at_top: bool = True,
    mark: int | None = None,
) -> None:
    """One chart of `series` against epochs `xs`, with a dashed line at epoch `mark`."""
    left, top, right, bottom = box
    f_title, f_tick = font(18), font(13)
    draw.text(((left + right) // 2, top), title, fill=INK, font=f_title, anchor="mt")
    plot = (left + 60, top + 34, right - 10, bottom - 40)
    values = [v for _, ys, _ in series for v in ys]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.5
    lo, hi = lo - pad, hi + pad
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            plot[0] + (x - x_lo) / x_span * (plot[2] - plot[0])
            if x_hi > x_lo
            else (plot[0] + plot[2]) / 2,
            plot[3] - (y - lo) / (hi - lo) * (plot[3] - plot[1]),
        )

    for t in _nice_ticks(lo, hi):
        _, y = px(x_lo, t)
        draw.line([(plot[0], y), (plot[2], y)], fill=GRID)
        draw.text((plot[0] - 6, y), format(t, fmt), fill=INK, font=f_tick, anchor="rm")
    step = max(1, round(len(xs) / 10))
    for x in xs[::step]:
        X, _ = px(x, lo)
        draw.line([(X, plot[3]), (X, plot[3] + 4)], fill=INK)
        draw.text((X, plot[3] + 6), str(x), fill=INK, font=f_tick, anchor="mt")
    draw.rectangle(plot, outline=INK)
    draw.text(((plot[0] + plot[2]) // 2, bottom - 16), "epoch", fill=INK, font=f_tick, anchor="mt")
    if mark is not None and x_lo <= mark <= x_hi:
        X, _ = px(mark, lo)
        for y in range(plot[1] + 2, plot[3], 10):  # dashed: 6 on, 4 off
            draw.line([(X, y), (X, min(y + 6, plot[3]))], fill=MARK, width=2)
        # the label: away from the legend's corner, and inside the plot at either end
        right = plot[2] - X > 70  # room for the label on its right
        y, v = (plot[3] - 4, "b") if legend_at_top else (plot[1] + 4, "t")
        x, h = (X + 5, "l") if right else (X - 5, "r")
        draw.text((x, y), f"best {mark}", fill=MARK, font=f_tick, anchor=h + v)
    for i, (label, ys, color) in enumerate(series):
        points = [px(x, y) for x, y in zip(xs, ys, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=color, width=3, joint="curve")
        for X, Y in points:
            draw.ellipse([X - 4, Y - 4, X + 4, Y + 4], fill=color)
        # loss falls and accuracy rises: the legend goes in the corner the curves leave empty
        first = plot[1] + 10 if legend_at_top else plot[3] - 10 - 22 * (len(series) - 1)
        lx, ly = plot[2] - 120, first + 22 * i
        draw.line([(lx, ly), (lx + 26, ly)], fill=color, width=3)
        draw.text((lx + 32, ly), label, fill=INK, font=f_tick, anchor="lm")


def save_curves(history: Sequence[EpochStats], path: Path, best: int | None = None) -> None:
    """curves.png: loss and accuracy per epoch, train vs validation, side by side; a dashed line
    marks the `best` epoch (the one the run keeps)."""
    if not history:
        return
    width, height = 1200, 480
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    xs = [h.epoch for h in history]
    _panel(
        draw,
        (0, 10, width // 2, height - 5),
        "Loss (cross-entropy)",
        xs,
        [
            ("train", [h.train_loss for h in history], TRAIN_COLOR),
            ("validation", [h.val_loss for h in history], VAL_COLOR),
        ],
        ".3f",
        mark=best,
    )
    _panel(
        draw,
        (width // 2, 10, width, height - 5),
        "Accuracy (%)",
        xs,
        [
            ("train", [100 * h.train_acc for h in history], TRAIN_COLOR),
            ("validation", [100 * h.val_acc for h in history], VAL_COLOR),
        ],
        ".2f",
        legend_at_top=False,
        mark=best,
    )
    save_png(image, path)


def save_png(image: Image.Image, path: Path) -> None:
    """Encode in memory, then write atomically (a PNG is never left half-written)."""
    write_atomic(path, png_bytes(image))


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG, in memory."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
