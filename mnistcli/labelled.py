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


def _folder_key(path: Path) -> tuple[int, int] | None:
    """What identifies a folder however it is reached (links included), or None if unreadable."""
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _images_below(
    folder: Path, seen: set[tuple[int, int]] | None = None
) -> tuple[list[Path], list[ImageError], list[str]]:
    """The images in `folder` and its subfolders (links followed), sorted, hidden files and
    folders skipped; the subfolders that could not be read; and one warning per folder not
    read again: a link back up (a loop) or to a folder already read, which would count its
    images twice. `seen` holds the folders already read (shared across class folders)."""
    seen = set() if seen is None else seen
    found: list[Path] = []
    errors: list[ImageError] = []
    skipped: list[str] = []
    start = _file_key(folder)
    stack = [folder]
    while stack:
        current = stack.pop()
        key = _folder_key(current)
        real = _file_key(current)
        up = current != folder and (real == start or start.startswith(real.rstrip(os.sep) + os.sep))
        if up or (key is not None and key in seen and current != folder):
            skipped.append(f"{current}: a link to a folder already read (or a loop): skipped")
            continue
        if key is not None:
            seen.add(key)
        try:
            with os.scandir(current) as listing:
                entries = sorted((e for e in listing if _visible(e.name)), key=lambda e: e.name)
        except OSError as exc:
            errors.append(ImageError(f"cannot read this folder ({exc.strerror or exc})", current))
            continue
        subfolders = []
        for entry in entries:
            if _is(entry, "dir"):
                subfolders.append(Path(entry.path))
            elif _suffix(entry.name) in SUFFIXES and _is(entry, "file"):
                found.append(Path(entry.path))
        stack.extend(reversed(subfolders))  # depth first, in name order
    return found, errors, skipped


def _is(entry: os.DirEntry[str], kind: str) -> bool:
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError:  # a link the system cannot follow (too many levels...): neither
        return False


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def class_folders(root: Path, seen: set[tuple[int, int]] | None = None) -> LabelledImages:
    """DIR/0 ... DIR/9 -> the images and their digits. A visible folder with another name is
    an error (its images would silently go unmeasured); a digit folder without images and a
    digit without a folder are warnings; images lying directly in DIR are left out, said.
    Each folder is read once: a link from one class folder to another, or back to DIR, is
    skipped with a warning rather than giving the other class's images a wrong label."""
    try:
        with os.scandir(root) as listing:
            entries = sorted((e for e in listing if _visible(e.name)), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{root}: cannot read this folder ({exc.strerror or exc})") from None
    folders = [e for e in entries if _is(e, "dir")]
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
    loose = [e for e in entries if _is(e, "file") and _suffix(e.name) in SUFFIXES]
    if loose:
        out.warnings.append(
            f"{root}: {len(loose)} image(s) directly in the folder, not in a digit folder, left out"
        )
    present = {e.name for e in folders}
    missing = [d for d in DIGITS if d not in present]
    if missing:
        out.warnings.append(f"{root}: no folder for digit(s) {', '.join(missing)}: not measured")
    # the root and every class folder are taken before any is read: a link to one of them
    # from inside another class is skipped, never read under the wrong digit
    seen = set() if seen is None else seen
    seen.update(k for k in map(_folder_key, [root, *(Path(e.path) for e in folders)]) if k)
    for entry in folders:
        images, errors, skipped = _images_below(Path(entry.path), seen)
        if not images:
            out.warnings.append(f"{entry.path}: no images in this class folder: not measured")
        out.warnings.extend(skipped)
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
    if str(manifest) == STDIN:
        raise InputError(
            "--labels -: the labels are read from a file; save them to one (image paths on "
            "standard input go to --images -)"
        )
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
    reader = csv.DictReader(fh, delimiter=_delimiter(manifest, head))
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
        path = expand_user(text)
        rows.append(
            Row(reader.line_num, path if path.is_absolute() else manifest.parent / path, int(label))
        )
    if bad:
        more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
        raise InputError(f"{bad[0]}{more}; labels are the digits 0 to 9")
    if not rows:
        raise InputError(f"--labels {manifest}: no rows under its header")
    return rows


def _delimiter(manifest: Path, head: str) -> str:
    """Tab for a .tsv/.tab file or a tab-separated header; ';' for a header that has one and
    no comma (spreadsheets in many languages save CSV so); otherwise ','."""
    if manifest.suffix.lower() in TSV_SUFFIXES or ("\t" in head and "," not in head):
        return "\t"
    return ";" if ";" in head and "," not in head else ","


def expand_user(text: str) -> Path:
    """`~/x` and `~user/x` as the shell would expand them; left as written where there is no
    such user or home (Path.expanduser raises there)."""
    return Path(os.path.expanduser(text))


def _file_key(path: Path) -> str:
    """One name per file however it is reached (links, `..`); the path itself where the system
    cannot resolve it (a NUL byte, a loop)."""
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return str(path)


# ---------------------------------------------------------------------------------------------
# What to score


def collect_labelled(
    args: Sequence[str], labels: Path | None = None, *, stdin: TextIO | None = None
) -> LabelledImages:
    """The images of `--images` (folders, files, globs, `-` for stdin, as predict takes them)
    with their labels: from `labels` (a manifest) when given, else from the folder layout.

    A folder of class folders is read as ImageFolder reads it (a class is a folder directly in
    it); a digit folder given itself (`DIR/7`) labels everything below it with its digit;
    files and globs take the digit of the nearest folder above them named 0-9. With a manifest
    and no `args`, its rows are the images, and a row naming a missing file is left out, one
    line each; with both, each image is looked up in the manifest. A file reached twice (named
    twice, or through a link) is scored once, with a warning; a file given two different
    labels is an error.
    """
    out = _from_manifest(args, labels, stdin) if labels is not None else _from_layout(args, stdin)
    return _once_each(out)


def _from_layout(args: Sequence[str], stdin: TextIO | None) -> LabelledImages:
    out = LabelledImages([], [], "")
    sources = []
    seen: set[tuple[int, int]] = set()  # folders read, across all arguments
    for arg in args:
        path = expand_user(arg)
        if arg != STDIN and path.is_dir() and path.name not in DIGITS:
            part = class_folders(path, seen)
            out.items.extend(part.items)
            out.labels.extend(part.labels)
            out.warnings.extend(part.warnings)
            sources.append(part.source)
            continue
        sources.append("standard input" if arg == STDIN else arg)
        if arg != STDIN and path.is_dir():  # DIR/7 itself: its images, all of them 7s
            # its sibling class folders are taken, as class_folders takes them: a link to one
            # from inside this folder is skipped, never read as 7s
            siblings = (path.parent / d for d in DIGITS if d != path.name)
            seen.update(k for k in map(_folder_key, siblings) if k)
            images, errors, skipped = _images_below(path, seen)
            out.items.extend([*images, *errors])
            out.labels.extend([int(path.name)] * len(images) + [-1] * len(errors))
            out.warnings.extend(skipped)
            continue
        for item in collect_paths([arg], stdin=stdin):
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
    by_key: dict[str, Row] = {}
    for row in rows:
        first = by_key.setdefault(_file_key(row.path), row)
        if first.label != row.label:
            raise InputError(
                f"{manifest} lines {first.line} and {row.line} give {row.path} two labels "
                f"({first.label} and {row.label}); keep the right one"
            )
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
    found: list[Item] = []
    for arg in args:
        path = expand_user(arg)
        if arg != STDIN and path.is_dir():  # a folder: every image below it, as for classes
            images, errors, skipped = _images_below(path)
            found.extend([*images, *errors])
            out.warnings.extend(skipped)
        else:
            found.extend(collect_paths([arg], stdin=stdin))
    for item in found:
        row = by_key.get(_file_key(item)) if isinstance(item, Path) else None
        if isinstance(item, Path) and row is None:
            item = ImageError(f"no row for it in {manifest}", item)
        out.items.append(item)
        out.labels.append(-1 if row is None else row.label)
    return out


def _once_each(found: LabelledImages) -> LabelledImages:
    """Each file scored once: a file reached again (named twice, linked from elsewhere, a
    manifest row repeated) is dropped and counted in one warning; the same file with two
    different labels is an error naming both."""
    first: dict[str, tuple[Path, int]] = {}
    items: list[Item] = []
    labels: list[int] = []
    dropped = 0
    for item, label in zip(found.items, found.labels, strict=True):
        if isinstance(item, Path):
            key = _file_key(item)
            if key in first:
                seen_as, seen_label = first[key]
                if seen_label != label:
                    raise InputError(
                        f"{item} is the file {seen_as} with another label ({label}, there "
                        f"{seen_label}); an image has one digit: keep it in one class"
                    )
                dropped += 1
                continue
            first[key] = (item, label)
        items.append(item)
        labels.append(label)
    warnings = list(found.warnings)
    if dropped:
        warnings.append(
            f"{dropped:,} file(s) reached twice (named again, or through a link): each scored once"
        )
    return dataclasses.replace(found, items=items, labels=labels, warnings=warnings)


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
