"""The project's exceptions: each message is written for the user (what went wrong, what to do)."""

from __future__ import annotations

import os


class MnistcliError(Exception):
    """Base class; the CLI prints the message on one line and exits with `exit_code`."""

    exit_code = 2


class ConfigError(MnistcliError):
    """A bad setting: unknown key, wrong type, value out of range."""


class DataError(MnistcliError):
    """MNIST could not be found, fetched or verified."""


class CheckpointError(MnistcliError):
    """A checkpoint is missing, corrupt, untrusted or of another model."""


class DeviceError(MnistcliError):
    """The requested device is not available."""


class TrainingError(MnistcliError):
    """Training cannot go on (a NaN loss, an unwritable run folder)."""


class ImageError(MnistcliError):
    """An image could not be read. The message starts with the file's `path` when one is known;
    `reason` is the message without it."""

    exit_code = 1

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(reason if self.path is None else f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str | None]]:
        # rebuilt from reason and path (not the joined message) when it crosses processes
        return (type(self), (self.reason, self.path))


class OutputError(MnistcliError):
    """A result file (a figure, a JSON report) could not be written."""


class ExportError(MnistcliError):
    """An exported model could not be written, or does not reproduce the checkpoint."""


class InputError(MnistcliError):
    """A file given to an option cannot be used (inspect --image): bad input, exit code 2."""
