"""Labelled image files -> eval's report: "how well does it read MY digits?"

Labels come from one of two layouts that image-classification tools already use:
- one folder per class, `DIR/0/*.png ... DIR/9/*.png`, as torchvision's ImageFolder reads it
  (a class is a folder directly under DIR, its images are found in it and below it, links
  followed, names sorted, suffixes matched whatever their case). Unlike ImageFolder, a class
  folder must be named with its digit, and hidden files and folders (`.DS_Store`,
  `.ipynb_checkpoints`, macOS `._x.png`) are skipped rather than made a class or decoded;
- a CSV or TSV manifest (`--labels FILE`) with a `path` and a `label` column, relative paths
  taken from the manifest's folder.

Each image then goes through exactly predict's pipeline (predict.ImageFeed and predict_feed),
and metrics.evaluation_from_logits computes every figure, as for MNIST's splits. The listing
needs no torch, so a bad layout is refused before the model is loaded.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mnistcli.errors import ImageError, InputError
from mnistcli.imaging import SUFFIXES
from mnistcli.predict import STDIN, ImageFeed, Item, Prediction, collect_paths, predict_feed

if TYPE_CHECKING:
    from mnistcli.loading import PixelLogits
    from mnistcli.metrics import Evaluation

DIGITS = tuple(str(d) for d in range(10))
TSV_SUFFIXES = (".tsv", ".tab")


@dataclass(frozen=True)
class LabelledImages:
    """The files to score in order, each with its true digit, and what the user must be told."""

    items: list[Item]  # a file, or why an input is left out (unreadable, no label)
    labels: list[int]  # the true digit of each item (-1 where the item is an error)
    source: str  # where the labels came from, for the report's "data" line
    warnings: list[str] = field(default_factory=list)  # one line each: empty classes...


# ---------------------------------------------------------------------------------------------
# One folder per class


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _images_below(folder: Path) -> tuple[list[Path], list[ImageError]]:
    """The images in `folder` and its subfolders (links followed), sorted, hidden ones skipped;
    and the subfolders that could not be read."""
    found: list[Path] = []
    errors: list[ImageError] = []

    def refused(exc: OSError) -> None:
        errors.append(ImageError(f"cannot read this folder ({exc.strerror or exc})", exc.filename))

    for root, dirs, files in sorted(os.walk(folder, followlinks=True, onerror=refused)):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        found.extend(
            Path(root, name)
            for name in sorted(files)
            if _visible(name) and Path(name).suffix.lower() in SUFFIXES
        )
    return found, errors


def class_folders(root: Path) -> LabelledImages:
    """DIR/0 ... DIR/9 -> the images and their digits. A visible folder with another name is
    an error (its images would silently go unmeasured); a digit folder without images and a
    digit without a folder are warnings; images lying directly in DIR are left out, said."""
    try:
        entries = sorted((e for e in os.scandir(root) if _visible(e.name)), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{root}: cannot read this folder ({exc.strerror or exc})") from None
    folders = [e for e in entries if e.is_dir()]
    strangers = [e.name for e in folders if e.name not in DIGITS]
    if strangers:
        raise InputError(
            f"{root / strangers[0]}: not a class folder; class folders are named with their "
            f"digit, 0 to 9{_more(strangers)}: move it out of {root}, or list the images "
            "with --labels FILE"
        )
    if not folders:
        raise InputError(
            f"{root}: no class folders in it; lay the images out as {root}/0/*.png ... "
            f"{root}/9/*.png, or give their labels with --labels FILE"
        )
    out = LabelledImages([], [], f"{root} (one folder per digit)")
    loose = [e for e in entries if e.is_file() and Path(e.name).suffix.lower() in SUFFIXES]
    if loose:
        out.warnings.append(
            f"{root}: {len(loose)} image(s) directly in the folder, not in a digit folder, left out"
        )
    present = {e.name for e in folders}
    missing = [d for d in DIGITS if d not in present]
    if missing:
        out.warnings.append(f"{root}: no folder for digit(s) {', '.join(missing)}: not measured")
    for entry in folders:
        images, errors = _images_below(Path(entry.path))
        if not images:
            out.warnings.append(f"{entry.path}: no images in this class folder: not measured")
        out.items.extend([*images, *errors])
        out.labels.extend([int(entry.name)] * len(images) + [-1] * len(errors))
    return out


def _more(names: Sequence[str]) -> str:
    return f" (and {len(names) - 1} more: {', '.join(names[1:4])})" if len(names) > 1 else ""


def digit_of(path: Path) -> int | None:
    """The digit of the nearest folder above `path` named with one digit (its class folder)."""
    for parent in path.parents:
        if parent.name in DIGITS:
            return int(parent.name)
    return None


# ---------------------------------------------------------------------------------------------
# A manifest


@dataclass(frozen=True)
class Row:
    line: int  # in the manifest, 1 for the header
    path: Path
    label: int


def read_manifest(manifest: Path) -> list[Row]:
    """A CSV (or TSV, by suffix or by its header) with `path` and `label` columns, any others
    ignored; relative paths are taken from the manifest's folder. A label that is not one
    digit 0-9 is an error naming its line."""
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            return _rows(fh, manifest)
    except OSError as exc:
        raise InputError(f"--labels {manifest}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"--labels {manifest}: not a CSV or TSV file ({exc})") from None


def _rows(fh: TextIO, manifest: Path) -> list[Row]:
    head = fh.readline()
    fh.seek(0)
    tab = manifest.suffix.lower() in TSV_SUFFIXES or ("\t" in head and "," not in head)
    reader = csv.DictReader(fh, delimiter="\t" if tab else ",")
    columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
    if "path" not in columns or "label" not in columns:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise InputError(
            f"--labels {manifest}: needs a 'path' and a 'label' column in its first line "
            f"(found {found})"
        )
    rows: list[Row] = []
    bad: list[str] = []
    for record in reader:
        text = (record.get(columns["path"]) or "").strip()
        label = (record.get(columns["label"]) or "").strip()
        where = f"{manifest} line {reader.line_num}"
        if not text and not label:
            continue  # a blank line
        if label not in DIGITS:
            bad.append(f"{where}: label {label!r} is not a digit 0-9")
            continue
        if not text:
            bad.append(f"{where}: the path is empty")
            continue
        path = Path(text).expanduser()
        rows.append(
            Row(reader.line_num, path if path.is_absolute() else manifest.parent / path, int(label))
        )
    if bad:
        more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
        raise InputError(f"{bad[0]}{more}; labels are the digits 0 to 9")
    if not rows:
        raise InputError(f"--labels {manifest}: no rows under its header")
    return rows


# ---------------------------------------------------------------------------------------------
# What to score


def collect_labelled(
    args: Sequence[str], labels: Path | None = None, *, stdin: TextIO | None = None
) -> LabelledImages:
    """The images of `--images` (folders, files, globs, `-` for stdin, as predict takes them)
    with their labels: from `labels` (a manifest) when given, else from the folder layout.

    With a manifest and no `args`, its rows are the images, and a row naming a missing file is
    left out, one line each. With both, each image is looked up in the manifest.
    """
    if labels is not None:
        return _from_manifest(args, labels, stdin)
    out = LabelledImages([], [], "")
    sources = []
    for arg in args:
        path = Path(arg).expanduser()
        if arg != STDIN and path.is_dir() and path.name not in DIGITS:
            part = class_folders(path)
            out.items.extend(part.items)
            out.labels.extend(part.labels)
            out.warnings.extend(part.warnings)
            sources.append(part.source)
            continue
        sources.append("standard input" if arg == STDIN else arg)
        if arg != STDIN and path.is_dir():  # DIR/7 itself: its images, all of them 7s
            images, errors = _images_below(path)
            found: list[Item] = [*images, *errors]
        else:
            found = collect_paths([arg], stdin=stdin)
        for item in found:
            digit = digit_of(item) if isinstance(item, Path) else None
            if isinstance(item, Path) and digit is None:
                item = ImageError(
                    "no label: it is in no folder named 0-9; lay the images out as DIR/0 ... "
                    "DIR/9, or give the labels with --labels FILE",
                    item,
                )
            out.items.append(item)
            out.labels.append(-1 if digit is None else digit)
    return dataclasses.replace(out, source=", ".join(sources))


def _from_manifest(args: Sequence[str], manifest: Path, stdin: TextIO | None) -> LabelledImages:
    rows = read_manifest(manifest)
    out = LabelledImages([], [], f"{manifest} ({len(rows):,} rows)")
    if not args:
        for row in rows:
            if row.path.is_file():
                out.items.append(row.path)
                out.labels.append(row.label)
            else:
                why = "no such file" if not row.path.exists() else "not a file"
                out.items.append(ImageError(f"{why} (--labels line {row.line})", row.path))
                out.labels.append(-1)
        return out
    by_path = {os.path.realpath(row.path): row.label for row in rows}
    for item in collect_paths(args, stdin=stdin):
        label = by_path.get(os.path.realpath(item)) if isinstance(item, Path) else None
        if isinstance(item, Path) and label is None:
            item = ImageError(f"no row for it in {manifest}", item)
        out.items.append(item)
        out.labels.append(-1 if label is None else label)
    return out


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class ImagesReport:
    """A model evaluated on labelled files: eval's figures, and the files left out."""

    checkpoint: Path
    model: str  # "simplecnn, epoch 9"
    device: str
    source: str
    evaluation: Evaluation
    left_out: tuple[str, ...]  # one line per file left out of the figures, and why
    warnings: tuple[str, ...]
    split: str = "images"  # names the files written: eval_images.json, ...

    def to_dict(self, saved: Sequence[Path] = ()) -> dict[str, Any]:
        """The JSON document (`--json` and eval_images.json); `saved`: the files written."""
        ev = self.evaluation
        return {
            "checkpoint": str(self.checkpoint),
            "model": self.model,
            "split": self.split,
            "images": self.source,
            "device": self.device,
            **ev.to_dict(),
            "no_digit_found": sum(ev.no_digit),
            "left_out": len(self.left_out),
            "left_out_files": list(self.left_out),
            "warnings": list(self.warnings),
            "saved": [str(p) for p in saved],
        }


def evaluate_images(
    labelled: LabelledImages,
    feed: ImageFeed,
    model: PixelLogits,
    *,
    top: int = 10,
    gallery: int = 16,
    batch_size: int = 256,
    on_prediction: Callable[[Prediction], None] = lambda _p: None,
) -> tuple[Evaluation, tuple[str, ...]]:
    """Predict every file of `labelled` through `feed` (entered, over `labelled.items`) and
    compute eval's figures on the readable ones. Returns the evaluation and the lines of the
    files left out (unreadable, no label). Pixels are kept only for wrong predictions."""
    import numpy as np
    import torch

    from mnistcli.metrics import Mistake, evaluation_from_logits, mistake_order

    start = time.perf_counter()
    targets: list[int] = []
    probs: list[np.ndarray] = []
    paths: list[str] = []
    wrong: dict[int, bytes] = {}  # index among the scored images -> the 28x28 input
    no_digit = [0] * 10
    left_out: list[str] = []
    preds: Iterator[Prediction] = predict_feed(feed, model, top_k=10, batch_size=batch_size)
    for label, pred in zip(labelled.labels, preds, strict=True):
        on_prediction(pred)
        if pred.error:
            left_out.append(pred.error)
        elif pred.digit is None:
            no_digit[label] += 1
        else:
            row = np.zeros(10)
            for digit, p in pred.top_k:
                row[digit] = p
            if pred.digit != label and pred.pixels is not None:
                wrong[len(targets)] = pred.pixels.tobytes()
            targets.append(label)
            probs.append(row)
            paths.append(pred.path)
    target = torch.tensor(targets, dtype=torch.long)
    p = torch.from_numpy(np.array(probs).reshape(-1, 10))
    # log-probabilities are logits whose softmax is `p`: cross-entropy is then -log p(true)
    logits = p.clamp_min(1e-300).log().float()
    evaluation, _ = evaluation_from_logits(logits, target, top=top, no_digit=no_digit)
    mistakes = tuple(
        Mistake(
            index=i,
            true=targets[i],
            pred=int(p[i].argmax()),
            confidence=float(p[i].max()),
            true_prob=float(p[i, targets[i]]),
            pixels=wrong[i],
            path=paths[i],
        )
        for i in mistake_order(p, target, gallery)
    )
    seconds = time.perf_counter() - start
    return dataclasses.replace(evaluation, mistakes=mistakes, seconds=seconds), tuple(left_out)
