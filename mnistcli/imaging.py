"""An image file -> the (28, 28) array the model expects, preprocessed as MNIST was made.

MNIST digits are bright ink on black, size-normalised with anti-aliasing so the longer side of
the ink fits a 20x20 box, then placed in 28x28 so that the centre of mass is at pixel (14, 14)
(the mean centre of mass of the MNIST test set is (13.99, 14.01), spread 0.29 px: an integer
shift). A photo, a scan or a drawing is brought to that form step by step:

    open (format allow-list, pixel cap, EXIF rotation) -> grayscale (transparency on white,
    16-bit scaled) -> invert if the background is light -> subtract uneven lighting ->
    stretch the contrast (printed lines go black) -> crop to the ink (ignoring specks) ->
    longer side to 20 px -> centre of mass at (14, 14)

Nothing assumes that the image's border is background: a digit cropped tightly, or drawn to
fill its canvas, has ink all along the edges. The paper's level is the densest level of the
border's darker half once the ink is bright (ink and printed lines only ever stand above the
paper), its noise comes from the paper pixels alone, and the lighting plane is fitted to those.

An image whose ink is too faint, too small or lost in noise is "blank": no digit found. Every
failure to read a file is an ImageError naming the file. The core never prints.

This is the one implementation of the preprocessing, on numpy and Pillow only: it never imports
torch, so a model run by another runtime (an exported ONNX graph) sees exactly the same input as
the PyTorch model does. Turning the result into a batch is predict.py's business.
"""

from __future__ import annotations

import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mnistcli.errors import ImageError
from mnistcli.strokes import fit_box_with_stroke

# Formats Pillow may open: the ones users have digits in. Restricting them keeps the parsers of
# exotic formats (FITS had a decompression bomb, CVE-2026-40192) away from untrusted files.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp"}
)
MAX_PIXELS = 40_000_000  # well below Pillow's own bomb limit (89 MP); decoded RGB, 120 MB
WORK_SIDE = 1024  # larger images are reduced (box filter) to this longer side before the rest

SIZE = 28  # MNIST's side; the ink fits a BOX x BOX box (strokes.BOX) inside it
CENTRE = 14.0  # MNIST's centre of mass, in pixel indices (rows and columns)

MIN_CONTRAST = 0.1  # ink must differ from the background by 10% of the range (25 of 255)
NOISE_CONTRAST = 6  # ... and by 6 times the background noise (its largest specks reach ~5)
INK_LEVEL = 0.3  # after stretching, a pixel brighter than this is ink (for cropping)
NOISE_INK = 4  # ... and only if it is 4 noise levels above the background
MASK_SIDE = 128  # speck removal runs on an ink mask reduced to at most this longer side
SPECK_FRACTION = 0.1  # ink components smaller than 10% of the largest one are specks
MIN_DIGIT_FRACTION = 1 / 64  # ink smaller than 1/64 of the image's longer side is no digit
MIN_DIGIT_PIXELS = 3  # ... or smaller than 3 pixels
RIM_FRACTION = 0.06  # ink's anti-aliased rim: up to 6% of its size beyond the Otsu mask
MIN_PAPER_FRACTION = 0.1  # paper levels are measured only where 10% of the image is paper
QUANTUM = 1 / 255  # one step of an 8-bit image
GRADIENT_FIT = 0.9  # a plane explaining 90% of the border's variance is lighting, not ink
MAX_FLOOR = 0.4  # the stretch's floor stays below 40% of the contrast: faint ink is kept


@dataclass(frozen=True)
class Prepared:
    """One image made ready for the model, and what the user may want to see of it."""

    pixels: np.ndarray  # (28, 28) uint8, the image the model sees (bright ink on black)
    blank: bool  # no digit found: the model is not asked
    inverted: bool  # the background was light, so the image was inverted
    size: tuple[int, int]  # the file's width and height, pixels
    mode: str  # the file's PIL mode ("RGBA", "I;16", ...)

    @property
    def image(self) -> np.ndarray:
        """(28, 28) float32 in [0, 1]: pixel values / 255, the form every backend is fed."""
        return self.pixels.astype(np.float32) / np.float32(255.0)


# ---------------------------------------------------------------------------------------------
# Reading a file


def open_image(path: Path) -> Image.Image:
    """Open and decode one file safely: allowed formats only, at most MAX_PIXELS, first frame,
    EXIF orientation applied. Any failure is an ImageError that names the file."""
    from PIL import ImageOps, UnidentifiedImageError

    if path.is_dir():
        raise ImageError("is a folder, not an image", path)
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        raise ImageError("is not a regular file", path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; we refuse instead. Its other
            # warnings (corrupt EXIF, odd chunks) are about files it still reads: not shown.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"{width}x{height} is {width * height / 1e6:.0f} megapixels, more "
                        f"than the {MAX_PIXELS / 1e6:.0f} allowed; crop or shrink it",
                        path,
                    )
                if width < 1 or height < 1:
                    raise ImageError(f"the image is empty ({width}x{height})", path)
                im.seek(0)  # an animation: its first frame
                if im.format == "JPEG" and max(width, height) > 2 * WORK_SIDE:
                    im.draft(None, (WORK_SIDE, WORK_SIDE))  # decode at a reduced scale: faster
                im.load()
                out = ImageOps.exif_transpose(im)
                out.load()
                return out
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("no such file", path) from None
    except PermissionError:
        raise ImageError("permission denied", path) from None
    except UnidentifiedImageError:
        kinds = ", ".join(FORMATS[:-1]) + " or WebP"
        raise ImageError(f"not an image this program reads ({kinds})", path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("too many pixels (a decompression bomb?); refused", path) from None
    # Pillow's decoders signal a damaged file with any of these (the PNG text-chunk guard raises
    # a bare ValueError, truncated data an OSError or EOFError, bad headers SyntaxError or
    # struct.error).
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the system's, not a decoder's
            raise ImageError(f"cannot read the file ({exc.strerror})", path) from None
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"cannot decode the image ({why})", path) from None


def to_grayscale(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W) float32 in [0, 1]. Transparency is composed on white (ink drawn on
    a transparent canvas is dark ink on paper); 16-bit and 32-bit values are scaled, not cut."""
    mode = im.mode
    if mode == "P" or (mode in ("L", "RGB", "1") and "transparency" in im.info):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    if im.mode.startswith("I") or im.mode == "F":
        values = np.asarray(im.convert("F"), dtype=np.float32)
        with np.errstate(invalid="ignore"):
            lo, hi = float(values.min()), float(values.max())
        if im.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        elif lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0
        elif lo >= 0 and hi <= 65535:
            lo, hi = 0.0, 65535.0
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ImageError("the image holds values that are not finite numbers")
        scaled = (values.astype(np.float64) - lo) / max(hi - lo, 1e-12)
        return np.clip(scaled, 0, 1).astype(np.float32)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, 1: through RGB, which L supports
    return np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255.0)


def reduce_large(gray: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Shrink by an integer factor (box average) so the longer side is at most `side` pixels:
    the digit keeps far more than 20 px while the work per image stays bounded. A partial box
    at the right or bottom edge averages the pixels it holds."""
    factor = math.ceil(max(gray.shape) / side)
    if factor <= 1:
        return gray
    return _box_mean(gray, factor)


def _box_mean(values: np.ndarray, factor: int) -> np.ndarray:
    h, w = values.shape
    rows, cols = -(-h // factor), -(-w // factor)
    padded = np.zeros((rows * factor, cols * factor), dtype=np.float64)
    padded[:h, :w] = values
    counts = np.zeros_like(padded)
    counts[:h, :w] = 1
    shape = (rows, factor, cols, factor)
    total = padded.reshape(shape).sum(axis=(1, 3))
    return (total / counts.reshape(shape).sum(axis=(1, 3))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The preprocessing steps, each on an (H, W) float32 array in [0, 1]


def border(gray: np.ndarray) -> np.ndarray:
    """The pixels of the outermost ring (all of them for images 2 px thin)."""
    if min(gray.shape) <= 2:
        return gray.ravel()
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def border_coordinates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the pixels `border` returns, in the same order."""
    if min(height, width) <= 2:
        rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        return rows.ravel(), cols.ravel()
    inner = np.arange(1, height - 1)
    across = np.arange(width)
    rows = np.concatenate([np.zeros(width), np.full(width, height - 1), inner, inner])
    cols = np.concatenate([across, across, np.zeros(height - 2), np.full(height - 2, width - 1)])
    return rows.astype(np.int64), cols.astype(np.int64)


def median(values: np.ndarray) -> float:
    """np.median of `values` (0.0 when empty). This and `quantile` stand in for numpy's own,
    which check for masked arrays and so import numpy.ma: 11 ms of every predict's start-up."""
    x = np.asarray(values).ravel()
    if len(x) == 0:
        return 0.0
    k = len(x) // 2
    if len(x) % 2:
        return float(np.partition(x, k)[k])
    return float(np.mean(np.partition(x, (k - 1, k))[k - 1 : k + 1]))


def quantile(values: np.ndarray, q: float) -> float:
    """np.quantile(values, q) for a non-empty array, with its default linear interpolation
    worked out as numpy does it (so the same float, bit for bit)."""
    x = np.asarray(values).ravel()
    n = len(x)
    at = (n - 1) * q
    lo = min(max(math.floor(at), 0), n - 1)
    hi = min(lo + 1, n - 1)
    part = np.partition(x, (lo, hi))
    kind = x.dtype.type if np.issubdtype(x.dtype, np.floating) else np.float64
    a, b, t = kind(part[lo]), kind(part[hi]), at - lo
    diff = b - a
    return float(b - diff * kind(1 - t) if t >= 0.5 else a + diff * kind(t))


def half_sample_mode(values: np.ndarray) -> float:
    """The densest value of a sample: the half-sample mode (Bickel and Fruehwirth, 2006), which
    repeatedly keeps the half of the sorted values that spans the shortest range.

    It finds the paper's level when ink covers up to most of the sample, as long as the paper
    is its densest part: what the border of a tightly cropped digit is (ink crosses it, with a
    spread of anti-aliased levels around it, while the paper sits at one level)."""
    x = np.sort(values.ravel())
    while len(x) > 3:
        half = (len(x) + 1) // 2
        widths = x[half - 1 :] - x[: len(x) - half + 1]
        start = int(np.argmin(widths))
        x = x[start : start + half]
    return median(x)


def paper_level(values: np.ndarray) -> float:
    """The paper's level in an image with bright ink (after make_ink_bright): the densest value
    of the darkest quarter of `values`. Ink and printed lines (ruled or squared paper) only
    ever stand above the paper, so they cannot pull it up even where they cover three quarters
    of the border; on paper that is only noise it lies a little below the middle, which the
    callers allow for (fit_paper keeps 3 noise levels above it)."""
    ordered = np.sort(values.ravel())
    return half_sample_mode(ordered[: max(3, (len(ordered) + 3) // 4)])


def make_ink_bright(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """Invert when the background is the lighter side: the border's densest level (its
    half-sample mode) is above the middle of the image's range (dark ink on paper, or grey on
    lighter grey); ink crossing the border does not move that level. When a plane explains
    nearly all of the border's variation (a lighting gradient, which would otherwise spread the
    paper over more than the ink's contrast), it is subtracted first."""
    level = gray
    h, w = gray.shape
    if min(h, w) >= 8:
        rows, cols = border_coordinates(h, w)
        values = gray[rows, cols].astype(np.float64)
        design = np.stack([np.ones(len(rows)), rows / h, cols / w], axis=1)
        coef = np.linalg.lstsq(design, values, rcond=None)[0]
        explained = 1 - float(np.var(values - design @ coef)) / max(float(np.var(values)), 1e-12)
        if explained >= GRADIENT_FIT:
            ys, xs = np.arange(h)[:, None] / h, np.arange(w)[None, :] / w
            level = gray - (coef[1] * ys + coef[2] * xs).astype(np.float32)
    background = half_sample_mode(border(level))
    middle = (float(level.min()) + float(level.max())) / 2
    if background > middle:
        return 1.0 - gray, True
    return gray, False


def fit_paper(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The paper under bright ink, lit unevenly: a plane a + b*row + c*column fitted by least
    squares to the border pixels that are paper, and the residuals of those pixels.

    Paper pixels are first those on the paper's side of Otsu's threshold (ink touching the
    edge is left out by its level, however much of the border it covers); then, refit after
    refit, those within 3 noise levels above the paper's level (printed lines and the rim of
    the ink only ever stand above it). The noise level for that comes from differences between
    neighbouring border pixels, which neither a lighting gradient nor a few crossings of ink
    change much."""
    h, w = gray.shape
    if min(h, w) < 8:  # too few border pixels for a fit: the level alone
        ring = border(gray)
        return np.full_like(gray, paper_level(ring)), ring - paper_level(ring)
    rows, cols = border_coordinates(h, w)
    values = gray[rows, cols].astype(np.float64)
    design = np.stack([np.ones_like(values), rows / h, cols / w], axis=1)
    step = 1.4826 * median(np.abs(np.diff(values))) / math.sqrt(2)
    keep = values <= otsu_threshold(gray)
    if keep.sum() < 3:
        keep[:] = True
    for _ in range(5):
        coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        residual = values - design @ coef
        keep = residual <= paper_level(residual[keep]) + 3 * step + QUANTUM
        if keep.sum() < 3:
            keep[:] = True
    ys = np.arange(h, dtype=np.float64)[:, None] / h
    xs = np.arange(w, dtype=np.float64)[None, :] / w
    plane = (coef[0] + coef[1] * ys + coef[2] * xs).astype(np.float32)
    return plane, residual[keep]


def flatten_background(gray: np.ndarray) -> np.ndarray:
    """Subtract the uneven lighting of a photo (fit_paper's plane) from an image with bright
    ink: the background is then about 0; uniform paper just has its level subtracted."""
    return gray - fit_paper(gray)[0]


def paper_statistics(flat: np.ndarray, paper: np.ndarray) -> tuple[float, float]:
    """The paper's level and noise (a standard deviation) in a flattened image with bright ink,
    from `paper`, the border's paper pixels (fit_paper's residuals).

    The noise is the larger of their spread (1.4826 times their median absolute deviation) and
    the spread of all the image's pixels below the paper, which no ink reaches. When most of
    the image lies below the border's level, the border was not paper at all (a frame of ruled
    lines, or ink all round): the paper is then the densest level of the image's darkest
    quarter."""
    level = median(paper)
    spread = 1.4826 * median(np.abs(paper - level))
    if np.mean(flat < level - 3 * spread - QUANTUM) > 0.5:
        level, spread = paper_level(flat), 0.0
    below = level - flat[flat < level - QUANTUM]
    sigma_below = 1.4826 * median(below)
    return level, max(sigma_below, spread)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the level that splits the values into two classes with the largest
    between-class variance (here: ink, and paper with whatever is printed on it)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)
    mass = np.cumsum(counts * centres)
    total, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mass / weight
        mean_high = (total_mass - mass) / (total - weight)
        between = weight * (total - weight) * (mean_low - mean_high) ** 2
    return float(edges[int(np.nanargmax(between[:-1])) + 1])


def paper_ceiling(flat: np.ndarray) -> float:
    """The level under which everything is paper: the 99th percentile of the pixels that are
    neither ink (above half the brightest ink's level) nor next to it (its anti-aliased rim).
    On plain paper that is a little above the noise; on ruled or squared paper it is the
    printed lines' level (lines are fainter than the writing over them), which then go black
    as MNIST's background is."""
    ink = flat > float(flat.max()) / 2
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if not len(rows):
        return 0.0
    reach = max(2, math.ceil(RIM_FRACTION * max(rows[-1] - rows[0], cols[-1] - cols[0])))
    near = _grow(ink, reach)
    paper = flat[~near]
    if len(paper) < MIN_PAPER_FRACTION * flat.size:
        return 0.0
    return quantile(paper, 0.99)


def _grow(mask: np.ndarray, reach: int) -> np.ndarray:
    """A mask grown by `reach` pixels in a square neighbourhood: a sliding "any" along the
    rows, then along the columns, each from a cumulative sum (linear time for any reach)."""
    for axis in (0, 1):
        counts = np.cumsum(mask, axis=axis, dtype=np.int64)
        pad = [(0, 0), (0, 0)]
        pad[axis] = (reach + 1, reach)
        counts = np.pad(counts, pad, mode="edge")
        zero = [slice(None), slice(None)]
        zero[axis] = slice(0, reach + 1)
        counts[tuple(zero)] = 0
        n = mask.shape[axis]
        upper = [slice(None), slice(None)]
        lower = [slice(None), slice(None)]
        upper[axis] = slice(2 * reach + 1, 2 * reach + 1 + n)
        lower[axis] = slice(0, n)
        mask = (counts[tuple(upper)] - counts[tuple(lower)]) > 0
    return mask


def stretch_contrast(
    gray: np.ndarray, noise: float = 0.0, ceiling: float = 0.0, background: float | None = None
) -> tuple[np.ndarray, float]:
    """Map the background (the paper's level: `background`, by default found on the border)
    to 0, raised by twice its `noise` so that grain goes black as MNIST's background is, or up
    to the paper's `ceiling` so that printed lines do; the brightest ink goes to 1.

    Returns the stretched image and the contrast (ink minus background, 0..1) before it; with
    too little contrast the image is left as it was, since there is no ink to stretch.
    """
    if background is None:
        background = paper_level(border(gray))
    peak = float(gray.max())
    contrast = peak - background
    if contrast < MIN_CONTRAST:
        return gray, max(contrast, 0.0)
    grain = min(2 * noise, contrast / 4)
    floor = background + max(grain, min(ceiling - background, contrast * MAX_FLOOR))
    return np.clip((gray - floor) / (peak - floor), 0, 1).astype(np.float32), contrast


def label_components(mask: np.ndarray) -> np.ndarray:
    """Connected components (8-neighbour) of a boolean (H, W) mask: each ink pixel gets its
    component's label (1, 2, ...), background 0. Runs of ink in each row are joined with the
    runs they touch in the row above (union-find), then painted."""
    labels = np.zeros(mask.shape, dtype=np.int64)
    parent: list[int] = []

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    runs: list[tuple[int, int, int, int]] = []  # (row, start, end exclusive, run id)
    above: list[tuple[int, int, int, int]] = []
    for r, line in enumerate(mask):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], line.view(np.int8), [0]))))
        row_runs = []
        for start, end in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
            run = len(parent)
            parent.append(run)
            for _, s, e, other in above:  # 8-neighbours: columns start-1 .. end touch
                if s <= end and e >= start:
                    parent[root(run)] = root(other)
            row_runs.append((r, start, end, run))
        runs += row_runs
        above = row_runs
    roots: dict[int, int] = {}
    for r, start, end, run in runs:
        labels[r, start:end] = roots.setdefault(root(run), len(roots) + 1)
    return labels


def ink_bbox(ink: np.ndarray, level: float = INK_LEVEL) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), bottom/right exclusive, of the ink without isolated specks.

    The ink mask is reduced (any ink in a cell) to at most MASK_SIDE px and dilated by one
    cell, so broken strokes join; components with less than SPECK_FRACTION of the largest
    one's area are dust, scan noise or JPEG artefacts and are ignored. The box is then made
    tight on the full-size mask. None when there is no ink at all.
    """
    mask = ink > level
    if not mask.any():
        return None
    h, w = mask.shape
    cell = max(1, math.ceil(max(h, w) / MASK_SIDE))
    rows, cols = -(-h // cell), -(-w // cell)
    padded = np.zeros((rows * cell, cols * cell), dtype=bool)
    padded[:h, :w] = mask
    small = _grow(padded.reshape(rows, cell, cols, cell).any(axis=(1, 3)), 1)
    labels = label_components(small)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    kept = np.flatnonzero(sizes >= SPECK_FRACTION * sizes.max())
    keep_small = np.isin(labels, kept)
    keep = keep_small.repeat(cell, 0).repeat(cell, 1)[:h, :w] & mask
    ink_rows = np.flatnonzero(keep.any(1))
    ink_cols = np.flatnonzero(keep.any(0))
    return int(ink_rows[0]), int(ink_cols[0]), int(ink_rows[-1]) + 1, int(ink_cols[-1]) + 1


def centre_of_mass(ink: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted mean position; the middle for an empty image."""
    h, w = ink.shape
    total = float(ink.sum(dtype=np.float64))
    if total <= 0:
        return (h - 1) / 2, (w - 1) / 2
    rows = float(ink.sum(1, dtype=np.float64) @ np.arange(h))
    cols = float(ink.sum(0, dtype=np.float64) @ np.arange(w))
    return rows / total, cols / total


def place_by_mass(patch: np.ndarray, size: int = SIZE, centre: float = CENTRE) -> np.ndarray:
    """Paste `patch` (at most size x size) into a black size x size canvas with its centre of
    mass at (centre, centre), shifted by whole pixels as MNIST was, without cutting ink off."""
    h, w = patch.shape
    cy, cx = centre_of_mass(patch)
    top = min(max(round(centre - cy), 0), size - h)
    left = min(max(round(centre - cx), 0), size - w)
    canvas = np.zeros((size, size), dtype=patch.dtype)
    canvas[top : top + h, left : left + w] = patch
    return canvas


# ---------------------------------------------------------------------------------------------
# The whole recipe


def preprocess(im: Image.Image, *, raw: bool = False) -> Prepared:
    """A decoded image -> Prepared, by the MNIST recipe (or as is with `raw`, for images that
    already are 28x28 bright-on-black MNIST digits)."""
    size, mode = im.size, im.mode
    if raw:
        if im.size != (SIZE, SIZE):
            raise ImageError(
                f"--raw needs a {SIZE}x{SIZE} image, this one is {im.width}x{im.height}; "
                f"leave out --raw to preprocess it"
            )
        pixels = _quantise(to_grayscale(im))
        blank = int(pixels.max()) - int(pixels.min()) < MIN_CONTRAST * 255
        return Prepared(pixels, blank, False, size, mode)
    gray, inverted = make_ink_bright(reduce_large(to_grayscale(im)))
    crop = ink_crop(gray)
    if crop is None:
        return Prepared(np.zeros((SIZE, SIZE), np.uint8), True, inverted, size, mode)
    digit = fit_box_with_stroke(crop)
    digit = digit / max(float(digit.max()), 1e-6)  # the brightest ink is 255 again, as in MNIST
    return Prepared(_quantise(place_by_mass(digit)), False, inverted, size, mode)


def ink_crop(gray: np.ndarray) -> np.ndarray | None:
    """The digit's ink, [0, 1] on a black background, cropped to its bounding box, from a
    bright-ink grey image; None when there is no digit (too little contrast, or too small)."""
    plane, paper = fit_paper(gray)
    flat = gray - plane
    level, noise = paper_statistics(flat, paper)
    ink, contrast = stretch_contrast(flat, noise, paper_ceiling(flat), level)
    box = None
    if contrast >= max(MIN_CONTRAST, NOISE_CONTRAST * noise):
        box = ink_bbox(ink, level=max(INK_LEVEL, NOISE_INK * noise / contrast))
    smallest = max(MIN_DIGIT_PIXELS, MIN_DIGIT_FRACTION * max(gray.shape))
    if box is None or max(box[2] - box[0], box[3] - box[1]) < smallest:
        return None
    top, left, bottom, right = box
    return ink[top:bottom, left:right]


def _quantise(image: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8, as MNIST is stored."""
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def load_image(path: Path, *, raw: bool = False) -> Prepared:
    """Read one file and preprocess it; every failure is an ImageError naming the file."""
    im = open_image(path)
    try:
        return preprocess(im, raw=raw)
    except ImageError as exc:  # from preprocess, which knows no path
        raise ImageError(exc.reason, path) from None
    except (OSError, ValueError) as exc:  # a mode conversion Pillow does not support
        raise ImageError(f"cannot convert this image ({exc})", path) from None
