"""An image file -> the (1, 28, 28) tensor the model expects, preprocessed as MNIST was made.

MNIST digits are bright ink on black, size-normalised with anti-aliasing so the longer side of
the ink fits a 20x20 box, then placed in 28x28 so that the centre of mass is at pixel (14, 14)
(the mean centre of mass of the MNIST test set is (13.99, 14.01), spread 0.29 px: an integer
shift). A photo, a scan or a drawing is brought to that form step by step:

    open (format allow-list, pixel cap, EXIF rotation) -> grayscale (transparency on white,
    16-bit scaled) -> invert if the background is light -> subtract uneven lighting ->
    stretch the contrast -> crop to the ink (ignoring specks) -> longer side to 20 px ->
    centre of mass at (14, 14) -> data.normalize (the training normalisation)

An image whose ink is too faint, too small or lost in noise is "blank": no digit found. Every
failure to read a file is an ImageError naming the file. The core never prints.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnistcli.errors import ImageError

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

# Formats Pillow may open: the ones users have digits in. Restricting them keeps the parsers of
# exotic formats (FITS had a decompression bomb, CVE-2026-40192) away from untrusted files.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp"}
)
MAX_PIXELS = 40_000_000  # well below Pillow's own bomb limit (89 MP); decoded RGB, 120 MB
WORK_SIDE = 1024  # larger images are reduced (box filter) to this longer side before the rest

BOX, SIZE = 20, 28  # MNIST: the ink fits a 20x20 box inside a 28x28 image
CENTRE = 14.0  # MNIST's centre of mass, in pixel indices (rows and columns)

MIN_CONTRAST = 0.1  # ink must differ from the background by 10% of the range (25 of 255)
NOISE_CONTRAST = 6  # ... and by 6 times the background noise (its largest specks reach ~5)
INK_LEVEL = 0.3  # after stretching, a pixel brighter than this is ink (for cropping)
NOISE_INK = 4  # ... and only if it is 4 noise levels above the background
MASK_SIDE = 128  # speck removal runs on an ink mask reduced to at most this longer side
SPECK_FRACTION = 0.1  # ink components smaller than 10% of the largest one are specks
MIN_DIGIT_FRACTION = 1 / 64  # ink smaller than 1/64 of the image's longer side is no digit
MIN_DIGIT_PIXELS = 3  # ... or smaller than 3 pixels


@dataclass(frozen=True)
class Prepared:
    """One image made ready for the model, and what the user may want to see of it."""

    tensor: torch.Tensor  # (1, 28, 28) float32, normalised as in training
    pixels: torch.Tensor  # (28, 28) uint8, the image the model sees (bright ink on black)
    blank: bool  # no digit found: the model is not asked
    inverted: bool  # the background was light, so the image was inverted
    size: tuple[int, int]  # the file's width and height, pixels
    mode: str  # the file's PIL mode ("RGBA", "I;16", ...)


def image_error(path: Path | str, why: str) -> ImageError:
    """An ImageError whose message starts with the path; `.path` keeps the path for reports."""
    exc = ImageError(f"{path}: {why}")
    exc.path = str(path)  # type: ignore[attr-defined]
    return exc


# ---------------------------------------------------------------------------------------------
# Finding the files


def collect_paths(args: Sequence[str]) -> list[Path | ImageError]:
    """Files as given, the images in folders, the matches of globs: in order, errors in place.

    Globs are expanded here too, since a quoted glob reaches the program unexpanded. A missing
    path, an unreadable or image-less folder and a glob without matches become ImageErrors at
    their place in the list, so the other paths are still predicted.
    """
    found: list[Path | ImageError] = []
    seen: set[Path] = set()

    def add(items: list[Path | ImageError]) -> None:
        for item in items:  # 'imgs/**' matches imgs/ and its files: each file once per argument
            if isinstance(item, Path):
                if item in seen:
                    continue
                seen.add(item)
            found.append(item)

    for arg in args:
        seen.clear()  # a file named twice on the command line is predicted twice, as asked
        path = Path(arg).expanduser()
        if path.exists() or path.is_symlink():
            add(_expand(path))
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
            if not matches:
                add([image_error(arg, "no files match this pattern")])
            for match in matches:
                add(_expand(Path(match)))
        else:
            add([image_error(arg, "no such file or folder")])
    return found


def _expand(path: Path) -> list[Path | ImageError]:
    if not path.is_dir():
        return [path]
    try:
        entries = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    except OSError as exc:
        return [image_error(path, f"cannot read this folder ({exc.strerror or exc})")]
    if not entries:
        kinds = ", ".join(f.lower() for f in FORMATS)
        return [image_error(path, f"this folder holds no images ({kinds})")]
    return list(entries)


# ---------------------------------------------------------------------------------------------
# Reading a file


def open_image(path: Path) -> Image.Image:
    """Open and decode one file safely: allowed formats only, at most MAX_PIXELS, first frame,
    EXIF orientation applied. Any failure is an ImageError that names the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path.is_dir():
        raise image_error(path, "is a folder, not an image")
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        raise image_error(path, "is not a regular file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; we refuse instead. Its other
            # warnings (corrupt EXIF, odd chunks) are about files it still reads: not shown.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise image_error(
                        path,
                        f"{width}x{height} is {width * height / 1e6:.0f} megapixels, more "
                        f"than the {MAX_PIXELS / 1e6:.0f} allowed; crop or shrink it",
                    )
                if width < 1 or height < 1:
                    raise image_error(path, f"the image is empty ({width}x{height})")
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
        raise image_error(path, "no such file") from None
    except PermissionError:
        raise image_error(path, "permission denied") from None
    except UnidentifiedImageError:
        kinds = ", ".join(FORMATS[:-1]) + " or WebP"
        raise image_error(path, f"not an image this program reads ({kinds})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise image_error(path, "too many pixels (a decompression bomb?); refused") from None
    # Pillow's decoders signal a damaged file with any of these (the PNG text-chunk guard raises
    # a bare ValueError, truncated data an OSError or EOFError, bad headers SyntaxError or
    # struct.error).
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise image_error(path, f"cannot decode the image ({why})") from None


def to_grayscale(im: Image.Image) -> torch.Tensor:
    """Any PIL mode -> (H, W) float32 in [0, 1]. Transparency is composed on white (ink drawn on
    a transparent canvas is dark ink on paper); 16-bit and 32-bit values are scaled, not cut."""
    import torch
    from PIL import Image

    mode = im.mode
    if mode == "P" or (mode in ("L", "RGB", "1") and "transparency" in im.info):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    if im.mode.startswith("I") or im.mode == "F":
        values = _as_tensor(im.convert("F"), torch.float32)
        lo, hi = float(values.min()), float(values.max())
        if im.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        elif lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0
        elif lo >= 0 and hi <= 65535:
            lo, hi = 0.0, 65535.0
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ImageError("the image holds values that are not finite numbers")
        return ((values - lo) / max(hi - lo, 1e-12)).clamp_(0, 1)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, 1: through RGB, which L supports
    return _as_tensor(im.convert("L"), torch.uint8).float().div_(255.0)


def _as_tensor(im: Image.Image, dtype: torch.dtype) -> torch.Tensor:
    """(H, W) tensor of an "L" (uint8) or "F" (float32) image, without numpy."""
    import torch

    return torch.frombuffer(bytearray(im.tobytes()), dtype=dtype).reshape(im.height, im.width)


def reduce_large(gray: torch.Tensor, side: int = WORK_SIDE) -> torch.Tensor:
    """Shrink by an integer factor (box average) so the longer side is at most `side` pixels:
    the digit keeps far more than 20 px while the work per image stays bounded."""
    import torch.nn.functional as F

    factor = math.ceil(max(gray.shape) / side)
    if factor <= 1:
        return gray
    return F.avg_pool2d(gray[None, None], factor, stride=factor, ceil_mode=True)[0, 0]


# ---------------------------------------------------------------------------------------------
# The preprocessing steps, each on an (H, W) float tensor in [0, 1]


def border(gray: torch.Tensor) -> torch.Tensor:
    """The pixels of the outermost ring (all of them for images 2 px thin)."""
    import torch

    if min(gray.shape) <= 2:
        return gray.flatten()
    return torch.cat([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def border_coordinates(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of the pixels `border` returns, in the same order."""
    import torch

    if min(height, width) <= 2:
        rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        return rows.flatten(), cols.flatten()
    inner = torch.arange(1, height - 1)
    across = torch.arange(width)
    rows = torch.cat([torch.zeros(width), torch.full((width,), height - 1), inner, inner])
    cols = torch.cat(
        [across, across, torch.zeros(height - 2), torch.full((height - 2,), width - 1)]
    )
    return rows.long(), cols.long()


def flatten_background(gray: torch.Tensor) -> torch.Tensor:
    """Subtract the uneven lighting of a photo: a plane a + b*row + c*column fitted to the
    border by least squares, refitted once without outliers (ink touching the edge). The
    background is then about 0; uniform paper just has its level subtracted."""
    import torch

    h, w = gray.shape
    if min(h, w) < 8:  # too few border pixels for a fit: the level alone
        return gray - border(gray).median()
    rows, cols = border_coordinates(h, w)
    values = gray[rows, cols].double()
    design = torch.stack([torch.ones_like(values), rows / h, cols / w], dim=1).double()
    keep = torch.ones_like(values, dtype=torch.bool)
    for _ in range(2):
        coef = torch.linalg.lstsq(design[keep], values[keep, None]).solution.flatten()
        residual = values - design @ coef
        keep = residual.abs() <= 3 * float(residual.abs().median()) + 0.02
    ys = torch.arange(h, dtype=torch.float64)[:, None] / h
    xs = torch.arange(w, dtype=torch.float64)[None, :] / w
    return gray - (coef[0] + coef[1] * ys + coef[2] * xs).float()


def make_ink_bright(gray: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Invert when the background is the lighter side: the border's median is above the middle
    of the image's range (dark ink on paper, or grey on lighter grey)."""
    background = float(border(gray).median())
    middle = (float(gray.min()) + float(gray.max())) / 2
    if background > middle:
        return 1.0 - gray, True
    return gray, False


def stretch_contrast(gray: torch.Tensor, noise: float = 0.0) -> tuple[torch.Tensor, float]:
    """Map the background (the border's median, plus twice its `noise` so that grain goes
    black as MNIST's background is) to 0 and the brightest ink to 1.

    Returns the stretched image and the contrast (ink minus background, 0..1) before it; with
    too little contrast the image is left as it was, since there is no ink to stretch.
    """
    background = float(border(gray).median())
    peak = float(gray.max())
    contrast = peak - background
    if contrast < MIN_CONTRAST:
        return gray, max(contrast, 0.0)
    floor = background + min(2 * noise, contrast / 4)
    return ((gray - floor) / (peak - floor)).clamp_(0, 1), contrast


def noise_level(gray: torch.Tensor) -> float:
    """The background's noise, as a standard deviation: 1.4826 times the median absolute
    deviation of the border (robust to ink touching the edge)."""
    ring = border(gray)
    return 1.4826 * float((ring - ring.median()).abs().median())


def label_components(mask: torch.Tensor) -> torch.Tensor:
    """Connected components (8-neighbour) of a boolean (H, W) mask: each ink pixel gets its
    component's largest pixel number + 1, background 0. By repeated 3x3 max-pooling."""
    import torch
    import torch.nn.functional as F

    h, w = mask.shape
    labels = torch.arange(1, h * w + 1, dtype=torch.float32).reshape(1, 1, h, w)
    keep = mask.reshape(1, 1, h, w).float()
    labels = labels * keep
    for _ in range(h * w):  # converges in about the longest path through a component
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * keep
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.reshape(h, w).long()


def ink_bbox(ink: torch.Tensor, level: float = INK_LEVEL) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), bottom/right exclusive, of the ink without isolated specks.

    The ink mask is reduced by max-pooling to at most MASK_SIDE px and dilated by one cell, so
    broken strokes join; components with less than SPECK_FRACTION of the largest one's area
    are dust, scan noise or JPEG artefacts and are ignored. The box is then made tight on the
    full-size mask. None when there is no ink at all.
    """
    import torch
    import torch.nn.functional as F

    mask = ink > level
    if not bool(mask.any()):
        return None
    h, w = mask.shape
    cell = max(1, math.ceil(max(h, w) / MASK_SIDE))
    small = F.max_pool2d(mask[None, None].float(), cell, stride=cell, ceil_mode=True)
    small = F.max_pool2d(small, 3, stride=1, padding=1)[0, 0] > 0
    labels = label_components(small)
    ids, sizes = torch.unique(labels[labels > 0], return_counts=True)
    kept = ids[sizes >= SPECK_FRACTION * sizes.max()]
    keep_small = torch.isin(labels, kept)
    keep = keep_small.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[:h, :w] & mask
    rows = torch.nonzero(keep.any(1)).flatten()
    cols = torch.nonzero(keep.any(0)).flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def fit_box(ink: torch.Tensor, box: int = BOX) -> torch.Tensor:
    """Scale so the longer side is `box` px, keeping the aspect ratio, with anti-aliasing
    (bilinear with antialias=True: area-like averaging when shrinking)."""
    import torch.nn.functional as F

    h, w = ink.shape
    scale = box / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    out = F.interpolate(
        ink[None, None], size=size, mode="bilinear", antialias=True, align_corners=False
    )
    return out[0, 0].clamp_(0, 1)


def centre_of_mass(ink: torch.Tensor) -> tuple[float, float]:
    """(row, column) of the intensity-weighted mean position; the middle for an empty image."""
    import torch

    h, w = ink.shape
    total = float(ink.sum())
    if total <= 0:
        return (h - 1) / 2, (w - 1) / 2
    rows = torch.arange(h, dtype=ink.dtype)
    cols = torch.arange(w, dtype=ink.dtype)
    return float((ink.sum(1) * rows).sum()) / total, float((ink.sum(0) * cols).sum()) / total


def place_by_mass(patch: torch.Tensor, size: int = SIZE, centre: float = CENTRE) -> torch.Tensor:
    """Paste `patch` (at most size x size) into a black size x size canvas with its centre of
    mass at (centre, centre), shifted by whole pixels as MNIST was, without cutting ink off."""
    import torch

    h, w = patch.shape
    cy, cx = centre_of_mass(patch)
    top = min(max(round(centre - cy), 0), size - h)
    left = min(max(round(centre - cx), 0), size - w)
    canvas = torch.zeros(size, size, dtype=patch.dtype)
    canvas[top : top + h, left : left + w] = patch
    return canvas


def to_model_input(pixels: torch.Tensor) -> torch.Tensor:
    """(28, 28) uint8 -> (1, 28, 28) float32 with the training normalisation (data.normalize)."""
    from mnistcli.data import normalize

    return normalize(pixels[None])[0]


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
        blank = float(pixels.max() - pixels.min()) < MIN_CONTRAST * 255
        return Prepared(to_model_input(pixels), pixels, blank, False, size, mode)
    gray = reduce_large(to_grayscale(im))
    gray, inverted = make_ink_bright(gray)
    flat = flatten_background(gray)
    noise = noise_level(flat)
    ink, contrast = stretch_contrast(flat, noise)
    box = None
    if contrast >= max(MIN_CONTRAST, NOISE_CONTRAST * noise):
        box = ink_bbox(ink, level=max(INK_LEVEL, NOISE_INK * noise / contrast))
    smallest = max(MIN_DIGIT_PIXELS, MIN_DIGIT_FRACTION * max(gray.shape))
    if box is None or max(box[2] - box[0], box[3] - box[1]) < smallest:
        pixels = _quantise(ink.new_zeros(SIZE, SIZE))
        return Prepared(to_model_input(pixels), pixels, True, inverted, size, mode)
    top, left, bottom, right = box
    digit = fit_box(ink[top:bottom, left:right])
    digit = digit / digit.max().clamp(min=1e-6)  # the brightest ink is 255 again, as in MNIST
    pixels = _quantise(place_by_mass(digit))
    return Prepared(to_model_input(pixels), pixels, False, inverted, size, mode)


def _quantise(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8, as MNIST is stored."""
    import torch

    return image.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def load_image(path: Path, *, raw: bool = False) -> Prepared:
    """Read one file and preprocess it; every failure is an ImageError naming the file."""
    im = open_image(path)
    try:
        return preprocess(im, raw=raw)
    except ImageError as exc:  # from preprocess, which knows no path
        raise image_error(path, str(exc)) from None
    except (OSError, ValueError) as exc:  # a mode conversion Pillow does not support
        raise image_error(path, f"cannot convert this image ({exc})") from None


# ---------------------------------------------------------------------------------------------
# Predictions


@dataclass(frozen=True)
class Prediction:
    """The outcome for one path: a digit, "no digit found", or an error message."""

    path: str
    digit: int | None = None
    probability: float | None = None
    top_k: tuple[tuple[int, float], ...] = ()  # (digit, probability), most likely first
    pixels: torch.Tensor | None = None  # (28, 28) uint8: what the model saw
    error: str | None = None

    @property
    def status(self) -> str:
        return "error" if self.error else "no digit" if self.digit is None else "ok"

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "status": self.status,
            "digit": self.digit,
            "probability": None if self.probability is None else round(self.probability, 6),
            "top_k": [{"digit": d, "probability": round(p, 6)} for d, p in self.top_k],
            "error": self.error,
        }


def predict_paths(
    paths: Sequence[Path | ImageError],
    model: nn.Module,
    device: torch.device | str = "cpu",
    *,
    top_k: int = 3,
    raw: bool = False,
    batch_size: int = 256,
) -> Iterator[Prediction]:
    """Preprocess and classify, in order and in batches; a file that fails yields its error."""
    for start in range(0, len(paths), batch_size):
        yield from _predict_batch(paths[start : start + batch_size], model, device, top_k, raw)


def _predict_batch(
    paths: Sequence[Path | ImageError],
    model: nn.Module,
    device: torch.device | str,
    top_k: int,
    raw: bool,
) -> list[Prediction]:
    import torch

    prepared: list[Prepared | ImageError] = []
    with single_thread():
        for item in paths:
            try:
                prepared.append(item if isinstance(item, ImageError) else load_image(item, raw=raw))
            except ImageError as exc:
                prepared.append(exc)
    ready = [p for p in prepared if isinstance(p, Prepared) and not p.blank]
    probs = torch.empty(0, 10)
    if ready:
        with torch.inference_mode():
            logits = model(torch.stack([p.tensor for p in ready]).to(device))
            probs = torch.softmax(logits.float(), dim=1).cpu()
    top_p, top_i = probs.topk(min(top_k, 10), dim=1)
    out: list[Prediction] = []
    row = 0
    for item, prep in zip(paths, prepared, strict=True):
        name = _display_name(item)
        if isinstance(prep, ImageError):
            name = getattr(prep, "path", name)
            out.append(Prediction(path=name, error=str(prep)))
        elif prep.blank:
            out.append(Prediction(path=name, pixels=prep.pixels))
        else:
            ranked = tuple((int(d), float(p)) for d, p in zip(top_i[row], top_p[row], strict=True))
            out.append(
                Prediction(
                    path=name,
                    digit=ranked[0][0],
                    probability=ranked[0][1],
                    top_k=ranked,
                    pixels=prep.pixels,
                )
            )
            row += 1
    return out


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: preprocessing is many small operations, for which handing work
    to other threads costs more than it saves (5-10x slower on a busy 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _display_name(item: Path | ImageError) -> str:
    return str(item) if isinstance(item, Path) else getattr(item, "path", "?")
