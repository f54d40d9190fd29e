"""Paths, folders and globs -> batched predictions, one Prediction per image, in order.

The model is any function from a (N, 1, 28, 28) float32 numpy batch of prepared images (pixel
values / 255, bright ink on black: imaging.Prepared.image) to (N, 10) float logits: a
loading.LoadedModel (a checkpoint in PyTorch, an .onnx on onnxruntime) is one.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistcli.errors import ImageError
from mnistcli.imaging import FORMATS, SUFFIXES, Prepared, load_image

if TYPE_CHECKING:
    from mnistcli.loading import PixelLogits


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
                add([ImageError("no files match this pattern", arg)])
            for match in matches:
                add(_expand(Path(match)))
        else:
            add([ImageError("no such file or folder", arg)])
    return found


def _expand(path: Path) -> list[Path | ImageError]:
    if not path.is_dir():
        return [path]
    try:
        entries = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    except OSError as exc:
        return [ImageError(f"cannot read this folder ({exc.strerror or exc})", path)]
    if not entries:
        kinds = ", ".join(f.lower() for f in FORMATS)
        return [ImageError(f"this folder holds no images ({kinds})", path)]
    return list(entries)


# ---------------------------------------------------------------------------------------------
# Predictions


@dataclass(frozen=True)
class Prediction:
    """The outcome for one path: a digit, "no digit found", or an error message."""

    path: str
    digit: int | None = None
    probability: float | None = None
    top_k: tuple[tuple[int, float], ...] = ()  # (digit, probability), most likely first
    pixels: np.ndarray | None = None  # (28, 28) uint8: what the model saw
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


def to_batch(prepared: Sequence[Prepared]) -> np.ndarray:
    """Prepared images -> the (N, 1, 28, 28) float32 batch every model takes."""
    if not prepared:
        return np.zeros((0, 1, 28, 28), dtype=np.float32)
    return np.stack([p.image for p in prepared])[:, None]


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, 10) logits -> probabilities, computed in float64 and stable for large logits."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predict_paths(
    paths: Sequence[Path | ImageError],
    model: PixelLogits,
    *,
    top_k: int = 3,
    raw: bool = False,
    batch_size: int = 256,
) -> Iterator[Prediction]:
    """Preprocess and classify, in order and in batches; a file that fails yields its error."""
    for start in range(0, len(paths), batch_size):
        yield from _predict_batch(paths[start : start + batch_size], model, top_k, raw)


def _predict_batch(
    paths: Sequence[Path | ImageError], model: PixelLogits, top_k: int, raw: bool
) -> list[Prediction]:
    prepared: list[Prepared | ImageError] = []
    for item in paths:
        try:
            prepared.append(item if isinstance(item, ImageError) else load_image(item, raw=raw))
        except ImageError as exc:
            prepared.append(exc)
    ready = [p for p in prepared if isinstance(p, Prepared) and not p.blank]
    probs = softmax(model(to_batch(ready))) if ready else np.zeros((0, 10))
    out: list[Prediction] = []
    rows = iter(probs)
    for item, prep in zip(paths, prepared, strict=True):
        if isinstance(prep, ImageError):
            out.append(Prediction(path=prep.path or str(item), error=str(prep)))
        elif prep.blank:
            out.append(Prediction(path=str(item), pixels=prep.pixels))
        else:
            row = next(rows)
            order = np.argsort(-row, kind="stable")[: min(top_k, 10)]
            ranked = tuple((int(d), float(row[d])) for d in order)
            out.append(
                Prediction(
                    path=str(item),
                    digit=ranked[0][0],
                    probability=ranked[0][1],
                    top_k=ranked,
                    pixels=prep.pixels,
                )
            )
    return out
