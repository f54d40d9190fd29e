"""Piped output without padding: rich pads every line of a table, a panel or --help to the full
width with spaces, which a file or a pipe keeps (`grep 'x$'`, diffs, editors showing trailing
whitespace). While stdout is not a terminal, mnistcli writes it through TrimmedLines, which drops
the spaces at the end of each line; on a terminal stdout is left alone."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import TextIO


class TrimmedLines(io.TextIOBase):
    """A text stream that writes to `stream` with each line's trailing spaces removed.

    A line is trimmed when its newline arrives; the text after the last newline waits for the
    next write (rich writes one print in one call) and goes out as it is on flush."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        if lines:
            self.stream.write("\n".join(line.rstrip(" ") for line in lines) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.stream.write(self._pending)
            self._pending = ""
        self.stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real stream
        return False


@contextlib.contextmanager
def trimmed_stdout() -> Iterator[None]:
    """Within the block, sys.stdout drops trailing spaces when it is not a terminal."""
    original = sys.stdout
    if original is None or _is_terminal(original) or isinstance(original, TrimmedLines):
        yield
        return
    trimmed = TrimmedLines(original)
    sys.stdout = trimmed  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.stdout is trimmed:
            sys.stdout = original
        with contextlib.suppress(BrokenPipeError, ValueError):  # the reader left, or closed
            trimmed.flush()
