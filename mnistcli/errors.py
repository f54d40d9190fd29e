"""The project's exceptions: each message is written for the user (what went wrong, what to do)."""

from __future__ import annotations

import os


def printable(text: str) -> str:
    """`text` as it may be shown on a terminal: each character that is not printable (control
    characters such as ESC or a newline, C1 controls, invisible separators, the undecodable
    bytes of a file name) becomes its Python escape (`\\x1b`, `\\n`), so that a file name
    can neither move the cursor, retitle the window nor split a line. Printable letters of any
    script stay as they are, and so does a backslash (paths on Windows are full of them)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class MnistcliError(Exception):
    """Base class; the CLI prints the message on one line and exits with `exit_code`. The
    message goes through `printable`: messages name files, and a file's name may hold anything."""

    exit_code = 2

    def __init__(self, message: str = "") -> None:
        super().__init__(printable(message))


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
    `reason` is the message without it. `path` is the real name, to open or to report in JSON;
    the message and `reason` are for showing, with the name made `printable`."""

    exit_code = 1

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        self.reason = printable(reason)
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
