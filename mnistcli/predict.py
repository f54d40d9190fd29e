"""Paths, folders, globs and stdin -> batched predictions, one Prediction per image, in order.

Decoding and preprocessing (imaging.load_image: numpy and Pillow, about 4 ms an image) run in a
pool of worker processes, one per core, while this process feeds the model whole batches in the
input order; the model is any function from a (N, 1, 28, 28) float32 numpy batch of prepared
images (pixel values / 255, bright ink on black: imaging.Prepared.image) to (N, 10) float
logits: a loading.LoadedModel (a checkpoint in PyTorch, an .onnx on onnxruntime) is one.
Nothing here imports torch, so every input can be checked before the model is loaded.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from mnistcli.errors import ImageError
from mnistcli.imaging import FORMATS, SUFFIXES, Prepared, load_image

if TYPE_CHECKING:
    from types import TracebackType

    from mnistcli.loading import PixelLogits

STDIN = "-"  # the argument that stands for paths read from standard input, one a line
# A pool pays for itself only past a few dozen images: starting it (a fork server that imports
# numpy and Pillow, then one process per core) takes about as long as preparing 50 images on
# one core (bench/README.md, "predict on every core"). Fewer are prepared in this process.
POOL_MIN_IMAGES = 64
CHUNK = 16  # images per task sent to a worker: few enough round trips, small enough to stream
# Chunks queued per worker: 1,024 images (about 1 MB prepared), enough to keep the workers busy
# through the seconds this process spends importing torch and loading the model, and a bound
# that keeps memory flat however many files there are.
AHEAD = 64

Item = Path | ImageError  # a file to prepare, or the error already known for an input
Ready = Prepared | ImageError  # a prepared image, or why it could not be prepared


# ---------------------------------------------------------------------------------------------
# Finding the files


def read_path_lines(stream: TextIO) -> list[str]:
    """The paths in `stream`, one a line (`find scans -name '*.png' | mnistcli predict -`);
    blank lines are skipped and nothing else is stripped, since a name may end in a space."""
    return [line.rstrip("\r\n") for line in stream if line.strip()]


def collect_paths(args: Sequence[str], *, stdin: TextIO | None = None) -> list[Item]:
    """Files as given, the images in folders, the matches of globs: in order, errors in place.

    Globs are expanded here too, since a quoted glob reaches the program unexpanded. A missing
    path, an unreadable or image-less folder and a glob without matches become ImageErrors at
    their place in the list, so the other paths are still predicted. `-` stands for the paths
    in `stdin`, one a line, each taken literally (no glob expansion: `find` prints real names).
    """
    found: list[Item] = []
    seen: set[Path] = set()

    def add(items: list[Item]) -> None:
        for item in items:  # 'imgs/**' matches imgs/ and its files: each file once per argument
            if isinstance(item, Path):
                if item in seen:
                    continue
                seen.add(item)
            found.append(item)

    for arg in args:
        seen.clear()  # a file named twice on the command line is predicted twice, as asked
        if arg == STDIN and stdin is not None:
            for line in read_path_lines(stdin):
                found.extend(_literal(line))
            continue
        path = Path(os.path.expanduser(arg))  # Path.expanduser raises for an unknown ~user
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


def _literal(line: str) -> list[Item]:
    path = Path(line)
    if path.exists() or path.is_symlink():
        return _expand(path)
    return [ImageError("no such file or folder", line)]


def _expand(path: Path) -> list[Item]:
    if not path.is_dir():
        return [path]
    try:
        # hidden files skipped, as eval --images skips them (macOS's ._x.png are not images)
        entries = sorted(
            p
            for p in path.iterdir()
            if not p.name.startswith(".") and p.suffix.lower() in SUFFIXES and p.is_file()
        )
    except OSError as exc:
        return [ImageError(f"cannot read this folder ({exc.strerror or exc})", path)]
    if not entries:
        kinds = ", ".join(f.lower() for f in FORMATS)
        if any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
            pattern = os.path.join(str(path), "*", "*.png")
            return [
                ImageError(
                    f"this folder holds no images ({kinds}), only folders, which are not "
                    f"searched; give them as '{pattern}'",
                    path,
                )
            ]
        return [ImageError(f"this folder holds no images ({kinds})", path)]
    return list(entries)


# ---------------------------------------------------------------------------------------------
# Preparing the images, on every core


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity, as os.process_cpu_count counts)."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if counter is not None:
        return max(1, counter() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def prepare(item: Item, raw: bool = False) -> Ready:
    """One input -> its prepared image or its error. Any failure stays with its file: a decoder
    bug or a MemoryError in one image must not stop the thousands after it."""
    if isinstance(item, ImageError):
        return item
    try:
        return load_image(item, raw=raw)
    except ImageError as exc:
        return exc
    except Exception as exc:  # isolated and reported with its file, as said above
        return ImageError(f"cannot prepare this image ({type(exc).__name__}: {exc})", item)


def _prepare_chunk(items: list[Item], raw: bool) -> list[Ready]:
    return [prepare(item, raw) for item in items]


def _quiet_worker() -> None:
    """Ctrl-C reaches every process of the terminal's group; the workers leave it to the main
    process, which stops the pool itself (no traceback from each worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool_context() -> multiprocessing.context.BaseContext:
    """A fork server where the platform has one (Linux, macOS): workers forked from a small
    process that imported only numpy, Pillow and imaging, never from one running torch's
    threads, where fork is unsafe; Python 3.14 made it the default for the same reason."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


class ImageFeed:
    """The prepared images of `items`, in their order, prepared ahead by `workers` processes.

    Use it as a context manager: entering starts the pool and queues the first chunks, so the
    workers can prepare while the caller loads the model; leaving (Ctrl-C included) cancels
    what is queued and shuts the pool down. At most workers x AHEAD chunks are in flight, so
    memory does not grow with the number of files. With one worker, or fewer than
    POOL_MIN_IMAGES items, everything happens in this process and no pool is started.
    """

    def __init__(self, items: Sequence[Item], *, raw: bool = False, workers: int = 1) -> None:
        self.items = items
        self.raw = raw
        chunks = -(-len(items) // CHUNK)
        self.workers = max(1, min(workers, chunks)) if len(items) >= POOL_MIN_IMAGES else 1
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[tuple[int, Future[list[Ready]]]] = deque()
        self._next = 0  # the start of the next chunk to queue
        self._worked = False  # a chunk came back from the pool

    def __enter__(self) -> ImageFeed:
        if self.workers > 1:
            self._start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def model_threads(self) -> int | None:
        """The threads the model may compute on beside the pool: the cores the workers leave
        free, at least one (None without a pool: the library's default). A model's own threads
        competing with busy workers for the same cores cost more than they give."""
        if self.workers == 1:
            return None
        return max(1, default_workers() - self.workers)

    def close(self) -> None:
        """Cancel the queued chunks and stop the workers (each finishes its current chunk)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def __iter__(self) -> Iterator[Ready]:
        if self.workers == 1:
            for item in self.items:
                yield prepare(item, self.raw)
            return
        while self._pending:
            start, future = self._pending.popleft()
            try:
                ready = future.result()
                self._worked = True
            except BrokenProcessPool:
                if not self._worked:
                    # no chunk ever came back: the workers cannot start here (a main module
                    # they cannot import, a system refusing processes); this process does it
                    self.close()
                    for item in self.items[start:]:
                        yield prepare(item, self.raw)
                    return
                ready = self._recover(start)
            self._fill()
            yield from ready

    def _start(self) -> None:
        self._start_empty()
        self._fill()

    def _fill(self) -> None:
        assert self._pool is not None
        while self._next < len(self.items) and len(self._pending) < self.workers * AHEAD:
            self._pending.append((self._next, self._submit(self._next)))
            self._next += CHUNK

    def _recover(self, start: int) -> list[Ready]:
        """A worker died (a decoder crashed, the system killed it): every queued chunk is lost
        with it. Start a new pool, prepare the chunk at `start` one image at a time, so the file
        that kills a worker is found and reported, and queue the lost chunks again."""
        lost = [s for s, _ in self._pending]
        self.close()
        self._start_empty()
        ready: list[Ready] = []
        for item in self.items[start : start + CHUNK]:
            assert self._pool is not None
            try:
                ready.append(self._pool.submit(prepare, item, self.raw).result())
            except BrokenProcessPool:
                ready.append(ImageError("preparing this image stopped its process", item))
                self.close()
                self._start_empty()
        for s in lost:
            self._pending.append((s, self._submit(s)))
        return ready

    def _submit(self, start: int) -> Future[list[Ready]]:
        """The chunk at `start`, queued; a pool that broke meanwhile gives a failed future,
        recovered like any other when its turn comes."""
        assert self._pool is not None
        try:
            return self._pool.submit(
                _prepare_chunk, list(self.items[start : start + CHUNK]), self.raw
            )
        except BrokenProcessPool as exc:
            failed: Future[list[Ready]] = Future()
            failed.set_exception(exc)
            return failed

    def _start_empty(self) -> None:
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=_pool_context(), initializer=_quiet_worker
        )


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
    reason: str | None = None  # the error without the path, for a row that names the file
    low_confidence: bool = False  # the top probability is below predict.min_confidence

    @property
    def status(self) -> str:
        return "error" if self.error else "no digit" if self.digit is None else "ok"

    def to_dict(self) -> dict[str, object]:
        """The JSON form: probabilities as computed (floats, never rounded up to 1.0)."""
        return {
            "path": self.path,
            "status": self.status,
            "digit": self.digit,
            "probability": self.probability,
            "low_confidence": self.low_confidence,
            "top_k": [{"digit": d, "probability": p} for d, p in self.top_k],
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
    paths: Sequence[Item],
    model: PixelLogits,
    *,
    top_k: int = 3,
    raw: bool = False,
    batch_size: int = 256,
    workers: int = 1,
    min_confidence: float = 0.0,
) -> Iterator[Prediction]:
    """Preprocess (on `workers` processes) and classify, in order and in batches; a file that
    fails yields its error. Closing the iterator early stops the workers."""
    with ImageFeed(paths, raw=raw, workers=workers) as feed:
        yield from predict_feed(
            feed, model, top_k=top_k, batch_size=batch_size, min_confidence=min_confidence
        )


def predict_feed(
    feed: ImageFeed,
    model: PixelLogits,
    *,
    top_k: int = 3,
    batch_size: int = 256,
    min_confidence: float = 0.0,
) -> Iterator[Prediction]:
    """Predictions for an entered ImageFeed, `batch_size` images per call of the model, each
    batch's predictions yielded as soon as the model has answered."""
    for batch in predict_batches(
        feed, model, top_k=top_k, batch_size=batch_size, min_confidence=min_confidence
    ):
        yield from batch


def predict_batches(
    feed: ImageFeed,
    model: PixelLogits,
    *,
    top_k: int = 3,
    batch_size: int = 256,
    min_confidence: float = 0.0,
) -> Iterator[list[Prediction]]:
    """predict_feed's predictions a batch at a time: for a caller that prints each batch at
    once."""
    batch: list[tuple[Item, Ready]] = []
    for item, ready in zip(feed.items, feed, strict=True):
        batch.append((item, ready))
        if len(batch) == batch_size:
            yield _predict_batch(batch, model, top_k, min_confidence)
            batch = []
    if batch:
        yield _predict_batch(batch, model, top_k, min_confidence)


def _predict_batch(
    batch: Sequence[tuple[Item, Ready]], model: PixelLogits, top_k: int, min_confidence: float
) -> list[Prediction]:
    ready = [p for _, p in batch if isinstance(p, Prepared) and not p.blank]
    probs = softmax(model(to_batch(ready))) if ready else np.zeros((0, 10))
    out: list[Prediction] = []
    rows = iter(probs)
    for item, prep in batch:
        if isinstance(prep, ImageError):
            path = prep.path or str(item)
            out.append(Prediction(path=path, error=str(prep), reason=prep.reason))
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
                    low_confidence=ranked[0][1] < min_confidence,
                )
            )
    return out


def without_pixels(pred: Prediction) -> Prediction:
    """The prediction without its 28x28 input: what a long run keeps once a row is printed."""
    return pred if pred.pixels is None else replace(pred, pixels=None)
