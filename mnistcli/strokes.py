"""Stroke width: measuring how wide a digit's pen was, and bringing a far thinner or thicker
stroke back into MNIST's range before the digit is fitted to its 20 px box.

MNIST digits were written with a similar pen; a fine-liner or a marker is read far better once
its strokes are as wide as MNIST's. Part of the preprocessing in imaging.py (numpy and Pillow
only, like it).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BOX = 20  # MNIST: the ink fits a 20x20 box inside the 28x28 image

# Stroke width in box pixels (2 x ink / the length of its outline, see stroke_width), measured
# as preprocess measures it (on the ink's bounding box, before the blur of reducing the ink to
# the box): MNIST's 60,000 training digits measure 1.56-3.68 px from the 2.5th to the 97.5th
# percentile, median 2.29 (tests/test_imaging.py checks it on a sample). A digit outside that
# range is brought back: a fine pen is thickened to the median (dilation only adds ink), a
# marker is thinned only as far as the range's top (erosion removes detail: thinning markers
# to the median lost 3 points of agreement where the top lost none).
STROKE_RANGE = (1.56, 3.68)
STROKE_MEDIAN = 2.29
STROKE_SCALE = 4  # the width is changed on a 4x finer copy of the box: quarter-pixel steps


def fit_box(ink: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale so the longer side is `box` px, keeping the aspect ratio, with anti-aliasing
    (Pillow's bilinear filter, which widens its support when shrinking: area-like averaging)."""
    h, w = ink.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow: (width, height)
    out = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32)).resize(  # mode "F"
        size, Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(out, dtype=np.float32), 0, 1)


def stroke_width(ink: np.ndarray) -> float:
    """The mean width of the strokes in a [0, 1] ink image, in pixels: twice the ink's area over
    the length of its outline, both measured on the grey levels (the outline as the total
    gradient), so anti-aliased edges count as they look. A stroke of width w and length L has
    area wL and an outline of about 2L."""
    gy, gx = np.gradient(np.pad(ink.astype(np.float64), 1))  # the outline at the edges too
    edge = float(np.sqrt(gx * gx + gy * gy).sum())
    return 2 * float(ink.sum(dtype=np.float64)) / edge if edge > 0 else 0.0


def box_stroke_width(ink: np.ndarray) -> float:
    """stroke_width of `ink` once fitted to the 20 px box, in box pixels, measured on it fitted
    to a box STROKE_SCALE times finer: the width it was drawn with, before the blur of reducing
    it to 20 px (a 28x28 MNIST digit measures as it is)."""
    return _box_width(fit_box(ink, BOX * STROKE_SCALE))


def _box_width(fine: np.ndarray) -> float:
    """stroke_width of fine ink, in pixels of the 20 px box it will be fitted to (its ink's
    longer side becomes BOX pixels); 0.0 without ink."""
    crop = _crop_to_ink(fine)
    return 0.0 if crop is None else stroke_width(crop) * BOX / max(crop.shape)


def _crop_to_ink(ink: np.ndarray) -> np.ndarray | None:
    """The smallest box holding every non-zero pixel; None when there is none."""
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if not len(rows):
        return None
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _disk_filter(ink: np.ndarray, radius: int, grow: bool) -> np.ndarray:
    """Grey-level dilation (grow) or erosion of `ink` by a disk of `radius` pixels."""
    pad = np.pad(ink, radius, constant_values=0.0)
    h, w = ink.shape
    pick = np.maximum if grow else np.minimum
    out = ink.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy or dx) and dy * dy + dx * dx <= radius * radius:
                out = pick(out, pad[radius + dy : radius + dy + h, radius + dx : radius + dx + w])
    return out


MAX_RESTROKE = 3  # box pixels: the most a stroke's radius is changed by


def fit_box_with_stroke(crop: np.ndarray) -> np.ndarray:
    """fit_box, with a stroke width outside STROKE_RANGE brought back: to STROKE_MEDIAN when
    thinner, to the range's top when thicker.

    The width is measured on the ink fitted to a box STROKE_SCALE times finer than the 20 px
    one (so, as nearly as can be, at the resolution it was captured with, before the blur of
    reducing it), in box pixels. Outside the range, that fine ink is grown or shrunk by disks
    of radius 1, 2, ... fine pixels until its width reaches the target, and the last two are
    blended to land on the target; then it is cropped to its ink and fitted to the box.
    A digit inside the range comes out exactly as fit_box makes it."""
    digit = fit_box(crop)
    fine = fit_box(crop, BOX * STROKE_SCALE)
    width = _box_width(fine)
    lo, hi = STROKE_RANGE
    if width == 0 or lo <= width <= hi:
        return digit
    grow = width < lo
    target = STROKE_MEDIAN if grow else hi
    most = MAX_RESTROKE * STROKE_SCALE
    if grow:
        fine = np.pad(fine, most)  # room to grow: no ink is cut at the box's edges
    before = fine
    for radius in range(1, most + 1):
        after = _disk_filter(fine, radius, grow)
        if not after.any():
            break
        if (_box_width(after) >= target) == grow:  # reached or passed the target
            return _refit(_blend_to(before, after, target, grow))
        before = after
    return _refit(before)


def _blend_to(before: np.ndarray, after: np.ndarray, target: float, grow: bool) -> np.ndarray:
    """The blend of two fine inks (one disk step apart) whose stroke width is closest to
    `target`: eight halvings of the blend's weight, the width rising with it (grow) or
    falling."""
    low, high = 0.0, 1.0
    for _ in range(8):
        t = (low + high) / 2
        if (_box_width(before + t * (after - before)) >= target) == grow:
            high = t
        else:
            low = t
    return before + high * (after - before)


def _refit(fine: np.ndarray) -> np.ndarray:
    """Fine ink (never blank here) cropped to its ink and fitted to the box."""
    crop = _crop_to_ink(fine)
    assert crop is not None
    return fit_box(crop)
