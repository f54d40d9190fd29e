"""How well `mnistcli predict` reads digits made the ways people make them.

    python bench/robustness.py                      # 2,000 test digits, every condition
    python bench/robustness.py --checkpoint runs/NAME/best.pt --n 500

A fixed sample of MNIST test digits (seeded) is re-rendered once per condition: a tight crop
touching 1, 2, 3 or 4 edges, a thick marker and a thin pen, dark ink on light paper and light ink
on a dark board, a small digit on a large page, an off-centre digit, a rotation by 10 degrees
either way, a phone photo (uneven light, noise, JPEG), ruled and squared paper, coloured pen on
coloured paper. Each rendering goes through the same preprocessing as `mnistcli predict`
(imaging.preprocess) and is scored by agreement with the model's prediction on the original
28x28 digit: the question is whether the preprocessing hands the model the digit it would have
seen, whatever the model's own accuracy. "no digit found" counts as a disagreement.

The renderings are generic (scale, stroke width, placement, lighting, paper, colour), drawn with
Pillow and numpy from a seeded generator per digit and condition; nothing is tuned to one
dataset. Prints a table and writes bench/results/robustness-<time>.json.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mnistcli import imaging  # noqa: E402

Render = Callable[[np.ndarray, np.random.Generator], Image.Image]
SEED = 0
VISIBLE = 0.05  # an ink level a person cropping by eye still sees as ink

# Pastel papers and pens (RGB): what a coloured note, a sticky note or an exercise book looks like.
PAPERS = [(250, 240, 170), (200, 225, 250), (250, 210, 220), (210, 240, 200), (245, 235, 220)]
PENS = [(20, 50, 160), (170, 20, 30), (20, 110, 50), (90, 30, 120), (40, 40, 40)]
LINE_COLOURS = [(150, 185, 230), (170, 170, 170), (230, 150, 150)]


# ---------------------------------------------------------------------------------------------
# Building blocks: an MNIST digit as an ink map, laid on paper


def ink_map(digit: np.ndarray, scale: int) -> np.ndarray:
    """(28, 28) uint8 white-on-black -> (28*scale)^2 float ink coverage in [0, 1] (bicubic)."""
    im = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255.0


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """The smallest box holding every visible pixel of ink."""
    rows = np.flatnonzero((ink > VISIBLE).any(1))
    cols = np.flatnonzero((ink > VISIBLE).any(0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def place(ink: np.ndarray, margins: tuple[int, int, int, int]) -> np.ndarray:
    """The ink on a canvas with (top, left, bottom, right) margins of no ink."""
    top, left, bottom, right = margins
    h, w = ink.shape
    canvas = np.zeros((h + top + bottom, w + left + right), dtype=np.float32)
    canvas[top : top + h, left : left + w] = ink
    return canvas


def margins(rng: np.random.Generator, ink: np.ndarray) -> tuple[int, int, int, int]:
    """Margins of 10-60% of the ink's longer side on each edge, drawn independently."""
    side = max(ink.shape)
    return tuple(int(rng.integers(side // 10, side * 6 // 10 + 1)) for _ in range(4))  # type: ignore[return-value]


def on_paper(
    ink: np.ndarray,
    paper: float | np.ndarray | tuple[int, int, int] = 245.0,
    pen: float | tuple[int, int, int] = 20.0,
) -> Image.Image:
    """Blend a pen over paper by the ink coverage: grey levels give "L", colours give "RGB"; a
    paper array (H, W[, 3]) carries lines or lighting."""
    cover = ink[..., None]
    paper_arr = np.asarray(paper, dtype=np.float32)
    grey = np.ndim(pen) == 0 and paper_arr.ndim in (0, 2)
    if paper_arr.ndim == 2:
        paper_arr = paper_arr[..., None]
    paper_rgb = np.broadcast_to(paper_arr, (*ink.shape, 3))
    pen_rgb = np.broadcast_to(np.asarray(pen, dtype=np.float32), (3,))
    rgb = paper_rgb * (1 - cover) + pen_rgb * cover
    im = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
    return im.convert("L") if grey else im


def grey_levels(rng: np.random.Generator) -> tuple[float, float]:
    """(paper, pen): white-ish paper, dark-ish ink, as scanners and phones give them."""
    return float(rng.uniform(215, 255)), float(rng.uniform(0, 60))


# ---------------------------------------------------------------------------------------------
# The conditions


def tight_crop(edges: int) -> Render:
    """Cropped exactly to the ink (every pixel above 0) on `edges` of the four sides, a margin on
    the others, then enlarged 2-6 times: the ink reaches the image's edge."""

    def render(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
        rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
        crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        scale = int(rng.integers(2, 7))
        im = Image.fromarray(crop).resize(
            (crop.shape[1] * scale, crop.shape[0] * scale), Image.Resampling.BICUBIC
        )
        ink = np.asarray(im, dtype=np.float32) / 255.0
        touching = rng.permutation(4)[:edges]
        m = tuple(0 if i in touching else v for i, v in enumerate(margins(rng, ink)))
        return on_paper(place(ink, m), *grey_levels(rng))  # type: ignore[arg-type]

    return render


def stroke(size: int) -> Render:
    """A thicker (size > 0: dilated) or thinner (size < 0: eroded) stroke at 4x, on paper."""

    def render(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
        im = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC)
        f = ImageFilter.MaxFilter(size) if size > 0 else ImageFilter.MinFilter(-size)
        ink = crop_to_ink(np.asarray(im.filter(f), dtype=np.float32) / 255.0)
        return on_paper(place(ink, margins(rng, ink)), *grey_levels(rng))

    return render


def dark_on_light(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    ink = crop_to_ink(ink_map(digit, int(rng.integers(2, 7))))
    return on_paper(place(ink, margins(rng, ink)), *grey_levels(rng))


def light_on_dark(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Chalk on a board, or a screenshot of a dark-mode drawing app."""
    ink = crop_to_ink(ink_map(digit, int(rng.integers(2, 7))))
    board, chalk = float(rng.uniform(0, 70)), float(rng.uniform(190, 255))
    return on_paper(place(ink, margins(rng, ink)), board, chalk)


def small_on_large(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A digit 20-40 px tall somewhere on a page 8-15 times its size."""
    ink = crop_to_ink(ink_map(digit, int(rng.integers(1, 3))))
    h, w = ink.shape
    side = int(max(h, w) * rng.uniform(8, 15))
    top, left = int(rng.integers(0, side - h)), int(rng.integers(0, side - w))
    return on_paper(place(ink, (top, left, side - h - top, side - w - left)), *grey_levels(rng))


def off_centre(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Near one corner of a canvas three times its size, a small gap to the two near edges."""
    ink = crop_to_ink(ink_map(digit, 4))
    h, w = ink.shape
    gap = [int(rng.integers(2, max(h, w) // 8 + 3)) for _ in range(2)]
    far = [2 * h, 2 * w]
    m = [gap[0], gap[1], far[0], far[1]]
    if rng.random() < 0.5:
        m[0], m[2] = m[2], m[0]
    if rng.random() < 0.5:
        m[1], m[3] = m[3], m[1]
    return on_paper(place(ink, tuple(m)), *grey_levels(rng))  # type: ignore[arg-type]


def rotated(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Turned by 10 degrees, clockwise or anticlockwise (a page held at a slant)."""
    im = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC)
    angle = 10.0 if rng.random() < 0.5 else -10.0
    im = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    ink = crop_to_ink(np.asarray(im, dtype=np.float32) / 255.0)
    return on_paper(place(ink, margins(rng, ink)), *grey_levels(rng))


def phone_photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Light falling off across the page (30-90 levels), sensor noise, a JPEG of quality 50-85."""
    ink = crop_to_ink(ink_map(digit, int(rng.integers(3, 7))))
    ink = place(ink, margins(rng, ink))
    h, w = ink.shape
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w]
    ramp = (np.cos(angle) * ys / h + np.sin(angle) * xs / w).astype(np.float32)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    paper_level, pen = grey_levels(rng)
    paper = paper_level - rng.uniform(30, 90) * ramp + rng.normal(0, rng.uniform(2, 8), (h, w))
    im = on_paper(ink, paper.astype(np.float32), (pen, pen, pen))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(50, 86)))
    return Image.open(buf)


def lined_paper(squared: bool) -> Render:
    """Ruled (lines a digit's height apart) or squared (a grid half a digit's height) paper in
    pale blue, grey or red, the digit written over the lines."""

    def render(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
        ink = crop_to_ink(ink_map(digit, 4))
        ink = place(ink, margins(rng, ink))
        h, w = ink.shape
        paper = np.empty((h, w, 3), np.float32)
        paper[:] = rng.uniform(235, 255)
        lines = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(lines)
        spacing = int(max(h, w) * (rng.uniform(0.2, 0.3) if squared else rng.uniform(0.35, 0.5)))
        width = int(rng.integers(1, 3))
        offset = int(rng.integers(0, spacing))
        for y in range(offset, h, spacing):
            draw.line([(0, y), (w, y)], fill=255, width=width)
        if squared:
            for x in range(offset, w, spacing):
                draw.line([(x, 0), (x, h)], fill=255, width=width)
        colour = np.asarray(LINE_COLOURS[int(rng.integers(len(LINE_COLOURS)))], np.float32)
        cover = np.asarray(lines, dtype=np.float32)[..., None] / 255.0
        paper = paper * (1 - cover) + colour * cover
        pen = PENS[int(rng.integers(len(PENS)))]
        return on_paper(ink, paper, pen)

    return render


def coloured(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A coloured pen on coloured paper (sticky notes, exercise books)."""
    ink = crop_to_ink(ink_map(digit, int(rng.integers(2, 7))))
    paper = PAPERS[int(rng.integers(len(PAPERS)))]
    pen = PENS[int(rng.integers(len(PENS)))]
    return on_paper(place(ink, margins(rng, ink)), paper, pen)


CONDITIONS: dict[str, Render] = {
    "tight crop, 1 edge": tight_crop(1),
    "tight crop, 2 edges": tight_crop(2),
    "tight crop, 3 edges": tight_crop(3),
    "tight crop, 4 edges": tight_crop(4),
    "thick marker": stroke(7),
    "thin pen": stroke(-5),
    "dark on light": dark_on_light,
    "light on dark": light_on_dark,
    "small digit, large page": small_on_large,
    "off-centre": off_centre,
    "rotated 10 degrees": rotated,
    "phone photo (light, noise, JPEG)": phone_photo,
    "ruled paper": lined_paper(squared=False),
    "squared paper": lined_paper(squared=True),
    "coloured pen on coloured paper": coloured,
}
STRICT = ("tight crop", "thick marker", "thin pen")  # conditions held to >= 99%


# ---------------------------------------------------------------------------------------------
# Scoring


def sample(n: int, total: int = 10_000, seed: int = SEED) -> np.ndarray:
    """The fixed sample: n test-set indices drawn without replacement, sorted."""
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def score(
    digits: np.ndarray,
    backend: Callable[[np.ndarray], np.ndarray],
    conditions: dict[str, Render] = CONDITIONS,
    seed: int = SEED,
) -> dict[str, dict[str, float | int | list[int]]]:
    """Per condition: agreement with the prediction on the original digits, the count of "no
    digit found", and the positions (in `digits`) of every miss."""
    from mnistcli.predict import to_batch

    originals = [imaging.Prepared(d, False, False, (28, 28), "L") for d in digits]
    expected = backend(to_batch(originals)).argmax(1)
    rows = {}
    for c, (name, render) in enumerate(conditions.items()):
        prepared = []
        for i, digit in enumerate(digits):
            rng = np.random.default_rng([seed, c, i])
            prepared.append(imaging.preprocess(render(digit, rng)))
        blank = np.array([p.blank for p in prepared])
        got = np.full(len(digits), -1)
        if (~blank).any():
            got[~blank] = backend(to_batch([p for p in prepared if not p.blank])).argmax(1)
        agree = got == expected
        rows[name] = {
            "agreement": float(agree.mean()),
            "no_digit": int(blank.sum()),
            "misses": np.flatnonzero(~agree).tolist(),
        }
    return rows


def overall(rows: dict[str, dict]) -> float:
    return float(np.mean([r["agreement"] for r in rows.values()]))


def table(rows: dict[str, dict], n: int) -> str:
    """One line per condition with its target (issue 12: 99% for STRICT, 98% over all, no
    "no digit found" anywhere) and whether it was met."""

    def verdict(agreement: float, no_digit: int, floor: float | None) -> str:
        if floor is None:
            return "" if no_digit == 0 else "missed"
        met = agreement >= floor and no_digit == 0
        return f">= {100 * floor:.0f}% {'met' if met else 'missed'}"

    head = f"{'condition':<34} {'agreement':>10} {'no digit found':>15}  target"
    lines = [head]
    for name, r in rows.items():
        floor = 0.99 if name.startswith(STRICT) else None
        mark = verdict(r["agreement"], r["no_digit"], floor)
        lines.append(f"{name:<34} {100 * r['agreement']:>9.2f}% {r['no_digit']:>15d}  {mark}")
    blank = sum(r["no_digit"] for r in rows.values())
    mark = verdict(overall(rows), blank, 0.98)
    lines.append(f"{'all conditions (mean)':<34} {100 * overall(rows):>9.2f}% {blank:>15d}  {mark}")
    lines.append(f"({n} MNIST test digits per condition)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="runs/latest/best.pt", help="model to score")
    parser.add_argument("--n", type=int, default=2000, help="test digits (a fixed sample)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "mnist"),
        help="folder with the MNIST files (default: ../shared/mnist), cached as mnistcli does",
    )
    args = parser.parse_args()

    import torch

    from mnistcli.config import default_data_root
    from mnistcli.data import load_mnist
    from mnistcli.loading import load_model, module_logits

    mnist = load_mnist(Path(default_data_root()), [args.data])
    checkpoint = Path(args.checkpoint)
    model, _ = load_model(checkpoint)
    indices = sample(args.n)
    digits = mnist.test_images.numpy()[indices]
    start = time.perf_counter()
    rows = score(digits, functools.partial(module_logits, model))
    seconds = time.perf_counter() - start
    print(table(rows, len(digits)))
    metrics = checkpoint.parent / "metrics.json"  # the run's summary, when it is a run folder
    test_acc = (
        json.loads(metrics.read_text()).get("summary", {}).get("test_acc")
        if metrics.is_file()
        else None
    )
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "checkpoint": str(args.checkpoint),
        "checkpoint_test_accuracy": test_acc,
        "digits": len(digits),
        "sample_seed": SEED,
        "seconds": round(seconds, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__},
        "overall_agreement": overall(rows),
        "conditions": {k: {**v, "misses": indices[v["misses"]].tolist()} for k, v in rows.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"robustness-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path} ({seconds:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
