"""`mnistcli inspect --image IMAGE --out-dir DIR`: feature_maps.png (every conv, ReLU and pool
output for the image, a grid per layer) and filters.png (the first convolution's filters), drawn
with pillow in the colour scales of the terminal view."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from mnistcli.errors import OutputError
from mnistcli.explain import Activations, LayerActivation
from mnistcli.figures import INK, font, png_bytes
from mnistcli.files import write_atomic
from mnistcli.render.colorscale import Scale

BACKGROUND = (255, 255, 255)
MAP_PX = 84  # each feature map is drawn this many pixels wide
PER_ROW = 16
PAD = 6
TITLE_PX = 44


def _tile(values: list[list[float]], scale: Scale, size: int) -> Image.Image:
    """One map as an RGB picture, each value a square of pixels (nearest neighbour)."""
    h, w = len(values), len(values[0])
    small = Image.new("RGB", (w, h))
    small.putdata([scale.rgb(v) for row in values for v in row])
    return small.resize((size * w // max(h, w), size * h // max(h, w)), Image.Resampling.NEAREST)


def _grid_height(count: int, per_row: int) -> int:
    return math.ceil(count / per_row) * (MAP_PX + PAD)


def _draw_layer(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, layer: LayerActivation, top: int
) -> int:
    """One layer's title and grid of maps from `top`; returns the next free row of pixels."""
    scale = Scale(layer.min, layer.max)
    shape = "x".join(str(d) for d in layer.shape)
    title = f"{layer.name}  {layer.type}  {shape}    colour: {scale.legend()}"
    draw.text((PAD, top + 12), title, fill=INK, font=font(18))
    top += TITLE_PX
    for c, values in enumerate(layer.values.tolist()):
        row, col = divmod(c, PER_ROW)
        x, y = PAD + col * (MAP_PX + PAD), top + row * (MAP_PX + PAD)
        canvas.paste(_tile(values, scale, MAP_PX), (x, y))
    return top + _grid_height(layer.shape[0], PER_ROW) + PAD


def feature_maps_png(acts: Activations) -> bytes:
    """Every (C, H, W) layer output as a titled grid, 16 maps a row."""
    layers = [layer for layer in acts.layers if len(layer.shape) == 3]
    width = PAD + PER_ROW * (MAP_PX + PAD)
    height = PAD + sum(TITLE_PX + _grid_height(la.shape[0], PER_ROW) + PAD for la in layers)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    top = PAD
    for layer in layers:
        top = _draw_layer(canvas, draw, layer, top)
    return png_bytes(canvas)


def filters_png(acts: Activations) -> bytes:
    """The first convolution's filters (input channel 0), 8 a row, one signed colour scale."""
    if acts.filters is None:
        raise OutputError("the model has no convolution: no filters to draw")
    weights = acts.filters[:, 0]
    span = float(weights.abs().max()) or 1.0
    scale = Scale(-span, span)
    per_row, size = 8, 96
    rows = math.ceil(len(weights) / per_row)
    width = PAD + per_row * (size + 2 * PAD)
    canvas = Image.new("RGB", (width, TITLE_PX + rows * (size + 2 * PAD + 18)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    kh, kw = weights.shape[1:]
    title = f"{acts.filters_layer}: {len(weights)} learned {kh}x{kw} filters   {scale.legend()}"
    draw.text((PAD, 12), title, fill=INK, font=font(18))
    for i, w in enumerate(weights.tolist()):
        row, col = divmod(i, per_row)
        x, y = PAD + col * (size + 2 * PAD), TITLE_PX + row * (size + 2 * PAD + 18)
        draw.text((x + size // 2, y), str(i), fill=INK, font=font(13), anchor="mt")
        canvas.paste(_tile(w, scale, size), (x, y + 16))
    return png_bytes(canvas)


def save_feature_figures(acts: Activations, folder: Path) -> list[Path]:
    """Write feature_maps.png and filters.png into `folder` (created if needed)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name, data in [("feature_maps.png", feature_maps_png(acts))] + (
            [("filters.png", filters_png(acts))] if acts.filters is not None else []
        ):
            write_atomic(folder / name, data)
            written.append(folder / name)
    except OSError as exc:
        raise OutputError(
            f"cannot write the figures into {folder}: {exc.strerror or exc}"
        ) from None
    return written
