"""Helpers that tests import: the one way to run mnistcli in a subprocess, and a write that fails
half-way. (conftest.py holds fixtures only; tests import from here, never from conftest.)"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


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
    """Makes a file written by mnistcli.files.write_atomic (the first one after `skip` others)
    fail half-way: half of its bytes reach the temporary file on disk, then the write raises
    OSError(ENOSPC), as a disk that fills up during a save does.

    `partial_sizes` records the bytes on disk when each error was raised, so a test can show
    that the failure happened inside write_atomic, after the temporary file was written to.
    Only mnistcli/files.py sees the change (its `os` is replaced, not the os module).
    """

    def __init__(self, skip: int = 0) -> None:
        self.skip = skip
        self.opened = 0
        self.partial_sizes: list[int] = []

    def install(self, monkeypatch) -> HalfWrite:
        import types

        import mnistcli.files

        patched = types.ModuleType("os")
        patched.__dict__.update(os.__dict__)
        patched.fdopen = self._fdopen
        monkeypatch.setattr(mnistcli.files, "os", patched)
        return self

    def _fdopen(self, fd: int, *args: Any, **kwargs: Any):
        fh = os.fdopen(fd, *args, **kwargs)
        self.opened += 1
        return fh if self.opened <= self.skip else _FailingFile(fh, self)


class _FailingFile:
    """A binary file whose write() writes half of its bytes, then fails with ENOSPC."""

    def __init__(self, fh, owner: HalfWrite) -> None:
        self._fh = fh
        self._owner = owner

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def write(self, data: bytes) -> int:
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        self._owner.partial_sizes.append(os.fstat(self._fh.fileno()).st_size)
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)
