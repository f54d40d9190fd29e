"""MNIST: fetch from a list of mirrors, verify by checksum, parse IDX, split, batch by indexing.

The four files are kept decompressed in a data root (a cache folder) and checked against the
published md5 of the *decompressed* bytes every time they are loaded, so a truncated or altered
file is found, removed and fetched again instead of being trained on. A command that needs one
part (eval on the test split) loads only that part's two files: `load_part`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mnistcli.errors import DataError
from mnistcli.files import write_atomic

if TYPE_CHECKING:
    import torch

# name -> (md5 of the decompressed file, decompressed size in bytes); see shared/mnist/README.md
FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}

# The usual MNIST normalisation (mean and std of the training pixels in [0, 1]).
MEAN, STD = 0.1307, 0.3081

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # the largest file, decompressed, is 47 MB
CHUNK_BYTES = 1 << 20  # read and hash in 1 MiB steps, so progress moves during the 47 MB file
Message = Callable[[str], None]

# The two parts of MNIST and their (images, labels) files.
Part = Literal["train", "test"]
PART_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# images in the training part (IDX labels file: an 8-byte header, then one byte per image),
# known without reading it
TRAIN_COUNT = FILES["train-labels-idx1-ubyte"][1] - 8


@dataclass(frozen=True)
class FileProgress:
    """How far checking or fetching one MNIST file has got: `done` of `total` bytes."""

    name: str
    action: Literal["checking", "fetching"]
    done: int
    total: int  # 0 while the size is unknown (a download without a length)


OnProgress = Callable[[FileProgress], None]


def md5_of(data: bytes, on_step: Callable[[int], None] | None = None) -> str:
    """The md5 of `data`, fed in CHUNK_BYTES steps; `on_step(bytes hashed so far)` after each."""
    digest = hashlib.md5(usedforsecurity=False)
    view = memoryview(data)
    for start in range(0, len(data), CHUNK_BYTES):
        digest.update(view[start : start + CHUNK_BYTES])
        if on_step is not None:
            on_step(min(start + CHUNK_BYTES, len(data)))
    return digest.hexdigest()


def _read_source(
    location: str, name: str, timeout: float, on_step: Callable[[int, int], None]
) -> bytes:
    """The bytes of `name` (or `name.gz`) at one mirror: a local folder or a base URL;
    `on_step(done, total bytes)` as a download arrives (total 0 when the server gives none)."""
    if "://" not in location:
        folder = Path(location)
        if not folder.is_dir():
            raise OSError(f"no such folder {folder}")
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate.read_bytes()
        raise OSError(f"neither {name} nor {name}.gz in {folder}")
    url = location.rstrip("/") + f"/{name}.gz"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        chunks: list[bytes] = []
        received = 0
        while received <= MAX_DOWNLOAD_BYTES:
            chunk = response.read(min(CHUNK_BYTES, MAX_DOWNLOAD_BYTES + 1 - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            on_step(received, total)
        data = b"".join(chunks)
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise OSError(f"{url} is larger than any MNIST file")
    return data


def _decompress(data: bytes) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        # BytesIO shares the bytes object until written to (CPython): no copy of the download
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            out = gz.read(MAX_DOWNLOAD_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise OSError(f"corrupt gzip ({exc})") from None
    if len(out) > MAX_DOWNLOAD_BYTES:
        raise OSError("decompresses to more than any MNIST file")
    return out


def ensure_file(
    name: str,
    root: Path,
    mirrors: Sequence[str],
    *,
    timeout: float = 15.0,
    on_message: Message | None = None,
    on_progress: OnProgress | None = None,
) -> bytes:
    """The verified decompressed bytes of one MNIST file, fetching it into `root` if needed;
    `on_progress` hears how far checking (hashing) and fetching (downloading) have got."""
    md5, size = FILES[name]
    target = root / name
    say = on_message or (lambda _msg: None)
    tell = on_progress or (lambda _p: None)

    def checking(done: int) -> None:
        tell(FileProgress(name, "checking", done, size))

    def fetching(done: int, total: int) -> None:
        tell(FileProgress(name, "fetching", done, total))

    if target.is_file():
        try:
            data = target.read_bytes()
        except OSError as exc:
            raise DataError(
                f"cannot read {target}: {exc.strerror or exc}; "
                f"check its permissions or use another data root"
            ) from None
        if len(data) == size and md5_of(data, checking) == md5:
            return data
        say(f"{target} is corrupt or incomplete (checksum mismatch); fetching it again")
        # in a read-only root the unlink fails; the fresh copy below is then used from memory
        with contextlib.suppress(OSError):
            target.unlink()
    tried: list[str] = []
    for location in mirrors:
        try:
            data = _decompress(_read_source(location, name, timeout, fetching))
        except (OSError, urllib.error.URLError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            tried.append(f"{location}: {reason}")
            continue
        if len(data) != size or md5_of(data, checking) != md5:
            tried.append(f"{location}: checksum mismatch, discarded")
            continue
        try:
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data)
            say(f"fetched {name} from {location}")
        except OSError as exc:
            say(f"cannot cache {name} in {root} ({exc.strerror or exc}); using it from memory")
        return data
    raise DataError(
        f"could not get MNIST file {name}: tried "
        + "; ".join(tried or ["no mirrors"])
        + ". Put the four MNIST files (.gz or not) in a folder and pass it with --data DIR"
    )


def parse_idx(data: bytes, *, expect_images: bool) -> torch.Tensor:
    """IDX bytes -> uint8 tensor: (N, rows, cols) images (magic 2051) or (N,) labels (2049)."""
    import torch

    magic = 2051 if expect_images else 2049
    header = 16 if expect_images else 8
    if len(data) < header:
        raise DataError(f"IDX data too short ({len(data)} bytes) for its header")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise DataError(f"IDX magic number is {found}, expected {magic}")
    if expect_images:
        count, rows, cols = struct.unpack(">III", data[4:16])
        shape: tuple[int, ...] = (count, rows, cols)
    else:
        count = struct.unpack(">I", data[4:8])[0]
        shape = (count,)
    expected = header + count * (shape[1] * shape[2] if expect_images else 1)
    if len(data) != expected:
        raise DataError(f"IDX data holds {len(data)} bytes, its header promises {expected}")
    if count == 0:
        return torch.zeros(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


@dataclass(frozen=True)
class Mnist:
    """The whole dataset as uint8 tensors, plus the checksums that identify it."""

    train_images: torch.Tensor  # (60000, 28, 28) uint8
    train_labels: torch.Tensor  # (60000,) int64
    test_images: torch.Tensor  # (10000, 28, 28) uint8
    test_labels: torch.Tensor  # (10000,) int64
    checksums: dict[str, str]


@dataclass(frozen=True)
class Images:
    """One part of MNIST (train or test) as uint8 images and int64 labels."""

    images: torch.Tensor  # (N, 28, 28) uint8
    labels: torch.Tensor  # (N,) int64


def load_part(
    root: Path,
    mirrors: Sequence[str],
    part: Part,
    *,
    on_message: Message | None = None,
    on_progress: OnProgress | None = None,
) -> Images:
    """Fetch (if needed), verify and parse the two files of one part; the other part's files are
    never opened (eval on the test split does not read the 47 MB training images)."""
    images_name, labels_name = PART_FILES[part]
    images, labels = (
        parse_idx(
            ensure_file(name, root, mirrors, on_message=on_message, on_progress=on_progress),
            expect_images=name == images_name,
        )
        for name in (images_name, labels_name)
    )
    return Images(images=images, labels=labels.long())


def load_mnist(
    root: Path,
    mirrors: Sequence[str],
    *,
    on_message: Message | None = None,
    on_progress: OnProgress | None = None,
) -> Mnist:
    """Fetch (if needed), verify and parse the four MNIST files."""
    train, test = (
        load_part(root, mirrors, part, on_message=on_message, on_progress=on_progress)
        for part in ("train", "test")
    )
    return Mnist(
        train_images=train.images,
        train_labels=train.labels,
        test_images=test.images,
        test_labels=test.labels,
        checksums={name: FILES[name][0] for name in FILES},
    )


@dataclass(frozen=True)
class Split:
    """Index tensors into the 60k training images: disjoint, seeded, stable for a seed."""

    train: torch.Tensor
    val: torch.Tensor


def split_indices(n: int, val_size: int, seed: int, limit: int = 0) -> Split:
    """Hold out `val_size` images for validation; `limit` caps the training part (0: all)."""
    import torch

    if not 0 < val_size < n:
        raise DataError(f"validation size {val_size} must be between 1 and {n - 1}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    if limit:
        train = train[:limit]
    return Split(train=train.sort().values, val=val.sort().values)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), scaled to [0, 1] then standardised (as
    `standardise`, in place on the tensor it made: 150 ms less at start-up for 60,000 images)."""
    return images.unsqueeze(1).float().div_(255.0).sub_(MEAN).div_(STD)


def standardise(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels / 255 (bright ink on black) -> what the model takes: MNIST's mean subtracted,
    divided by its standard deviation; a new tensor (the caller's stays as it was)."""
    return (pixels - MEAN) / STD


@dataclass(frozen=True)
class Tensors:
    """One split's inputs and labels, ready for the model (normalised, on the target device)."""

    x: torch.Tensor  # (N, 1, 28, 28) float32
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.y.shape[0])


def make_tensors(
    images: torch.Tensor, labels: torch.Tensor, device: torch.device | str = "cpu"
) -> Tensors:
    return Tensors(x=normalize(images).to(device), y=labels.to(device))
