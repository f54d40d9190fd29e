"""Atomic file writes: a file is either its old complete version or its new complete version."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename over `path`, fsync the folder.

    The temporary file lives beside the target so the rename never crosses file systems (where
    it would become a copy); any failure, Ctrl-C included, removes it and leaves `path` as it was.
    """
    write_all_atomic({path: data})


def write_all_atomic(files: Mapping[Path, bytes | None]) -> None:
    """Replace every path mapped to bytes and remove every path mapped to None, all or none:
    files that belong together (a report and its figures) never mix old and new versions.

    Every new file is written and fsynced beside its target first, the part that can run out
    of disk; only when all are staged are they renamed into place (renames take no space) and
    the others removed. A failure while staging removes the temporary files and leaves every
    target exactly as it was.
    """
    with contextlib.ExitStack() as stack:
        for path, data in files.items():
            if data is not None:
                fd, _tmp = stack.enter_context(_beside(path, ".tmp"))
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
        # leaving the stack renames each staged file over its target, or on an error removes them
    for path, data in files.items():
        if data is None:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write and check a file at; when the block ends without
    an error the file is fsynced and renamed over `path`, otherwise it is removed.

    For writers that need a path rather than bytes (onnx, safetensors, torch.export), and for
    files that must pass a check before they replace anything.
    """
    # the target's suffix kept: some writers check it (torch.export wants a file ending in .pt2)
    with _beside(path, f".tmp{path.suffix}") as (fd, tmp):
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())


@contextlib.contextmanager
def _beside(path: Path, suffix: str) -> Iterator[tuple[int, Path]]:
    """The one temporary-file mechanism behind write_all_atomic and staged: an open descriptor
    and its path beside `path` (the caller writes and closes it); renamed over `path` when the
    block ends without an error, removed otherwise. The name, .NAME.PID.RANDOM`suffix`, holds
    the pid so that runs.remove_stale_temp_files can tell a killed writer's leftovers."""
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=suffix
    )
    tmp = Path(name)
    try:
        yield fd, tmp
        # mkstemp makes the file private (0600); give it the mode a plain open() would have
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file; say which one it was
        raise
    _fsync_dir(path.parent)


def _file_mode(path: Path) -> int:
    """The existing file's mode, or 0o666 less the process umask for a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)
