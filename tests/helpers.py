"""Helpers that tests import: where the repository and the MNIST copy are, a synthetic MNIST,
TrainSettings for a test run, the one way to run mnistcli in a subprocess, and a write that
fails half-way. (conftest.py holds fixtures only; tests import from here, never from conftest.)"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The MNIST copy beside the repository; on a machine without it (the GPU machine of
# bench/gpu_check.sh), the copy `make gpu-prepare` puts in the tree's ignored .mnist/ folder.
SHARED_MNIST = REPO.parent / "shared" / "mnist"
if not SHARED_MNIST.is_dir() and (REPO / ".mnist").is_dir():
    SHARED_MNIST = REPO / ".mnist"


def cli_command(*args: str, python_args: tuple[str, ...] = ()) -> list[str]:
    """The argv of `python [python_args] -m mnistcli args`, with this test run's interpreter."""
    return [sys.executable, *python_args, "-m", "mnistcli", *args]


def start_cli(
    *args: str, cwd: Path, python_args: tuple[str, ...] = (), **kwargs: Any
) -> subprocess.Popen:
    """mnistcli as a running subprocess with stdout and stderr piped (not a terminal)."""
    return subprocess.Popen(
        cli_command(*args, python_args=python_args),
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = 240,
    python_args: tuple[str, ...] = (),
    **kwargs: Any,
) -> subprocess.CompletedProcess:
    """mnistcli as a finished subprocess with stdout and stderr piped (not a terminal)."""
    proc = start_cli(*args, cwd=cwd, python_args=python_args, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class HalfWrite:
    """Makes write_atomic (mnistcli/files.py) fail half-way through writing a file: half of the
    bytes reach the temporary file on disk, then the write raises OSError(ENOSPC), as a disk
    that fills up during a save does.

    Only files named `target` count (any file when None); the first `skip` of them are written
    normally. `partial` records (temporary file, bytes on disk) at each failure, so a test can
    show that the failure came after the temporary file was written to. Only mnistcli/files.py
    sees the change: its `os` and `tempfile` are replaced, not the modules themselves.
    """

    def __init__(self, target: str | None = None, skip: int = 0) -> None:
        self.target = target
        self.skip = skip
        self.seen = 0
        self.partial: list[tuple[Path, int]] = []
        self._temp: Path | None = None

    def install(self, monkeypatch) -> HalfWrite:
        import tempfile
        import types

        import mnistcli.files

        for name, module, replacement in (
            ("os", os, {"fdopen": self._fdopen}),
            ("tempfile", tempfile, {"mkstemp": self._mkstemp}),
        ):
            patched = types.ModuleType(name)
            patched.__dict__.update(module.__dict__, **replacement)
            monkeypatch.setattr(mnistcli.files, name, patched)
        return self

    def _mkstemp(self, *args: Any, **kwargs: Any) -> tuple[int, str]:
        import tempfile

        fd, tmp = tempfile.mkstemp(*args, **kwargs)
        self._temp = Path(tmp)
        return fd, tmp

    def _fdopen(self, fd: int, *args: Any, **kwargs: Any):
        fh = os.fdopen(fd, *args, **kwargs)
        temp = self._temp
        if temp is None or (self.target and not temp.name.startswith(f".{self.target}.")):
            return fh
        self.seen += 1
        return fh if self.seen <= self.skip else _FailingFile(fh, temp, self.partial)


class _FailingFile:
    """A binary file whose write() writes half of its bytes, then fails with ENOSPC."""

    def __init__(self, fh, path: Path, partial: list[tuple[Path, int]]) -> None:
        self._fh = fh
        self._path = path
        self._partial = partial

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def write(self, data: bytes) -> int:
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        self._partial.append((self._path, self._path.stat().st_size))
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def synthetic_mnist(n_train: int = 600, n_test: int = 200, seed: int = 0):
    """A learnable stand-in for MNIST: class k is a bright bar at a class-specific place, plus
    noise. Same shapes and dtypes as the real thing, so every code path runs in milliseconds."""
    import torch

    from mnistcli.data import Mnist

    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % 10
        images = (torch.rand(n, 28, 28, generator=g) * 60).to(torch.uint8)
        for k in range(10):
            rows = slice(3 + 2 * k, 5 + 2 * k)
            images[labels == k, rows, 4:24] = 255
        return images, labels.long()

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    return Mnist(
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        checksums={"synthetic": "0"},
    )


def make_settings(tmp: Path, data_root: Path | None = None, **hyper):
    """TrainSettings for a test run in `tmp`, with hyper-parameters overridden by keyword."""
    from mnistcli.settings import DataSettings, HyperParams, TrainSettings

    return TrainSettings(
        hyper=HyperParams(**hyper),
        data=DataSettings(root=data_root or tmp / "data", mirrors=(str(SHARED_MNIST),)),
        device="cpu",
        runs_dir=tmp / "runs",
        name="test",
    )


def on_a_terminal(
    args: list[str], cwd: Path, env: dict[str, str], *, stream: str, columns: int = 80
) -> tuple[str, str]:
    """Run mnistcli with `stream` ("stdout", "stderr" or "both") on a pseudo-terminal
    `columns` wide and the other on a pipe; returns (what the pipe got, what the terminal
    received)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    for name in ("stdout", "stderr") if stream == "both" else (stream,):
        streams[name] = side
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistcli", *args],
        cwd=cwd,
        env={k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")},
        stdin=subprocess.DEVNULL,
        **streams,
    )
    os.close(side)
    received = bytearray()
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        received += chunk
    piped = {"stdout": proc.stderr, "stderr": proc.stdout}.get(stream)
    other = piped.read().decode() if piped else ""
    screen = received.decode(errors="replace").replace("\r\n", "\n")
    assert proc.wait(timeout=120) == 0, screen + other
    os.close(main)
    return other, screen
