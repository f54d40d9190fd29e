"""The two consoles (results on stdout, progress and errors on stderr) and the output mode."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from mnistcli.errors import printable


@dataclass(frozen=True)
class Consoles:
    out: Console  # results, tables, --json
    err: Console  # progress, charts, logs, errors
    live: bool  # animate (rich Live) on stderr, or print plain lines

    @property
    def color(self) -> bool:
        return is_color(self.err)


def same_terminal(a: Console, b: Console) -> bool:
    """Whether `a` and `b` write to one terminal (stdout and stderr on the same screen): what
    one prints while the other shows a live display must go through the live one's console."""
    if not (a.is_terminal and b.is_terminal):
        return False
    try:
        return os.path.samestat(os.fstat(a.file.fileno()), os.fstat(b.file.fileno()))
    except (OSError, ValueError, AttributeError):  # not a real file
        return False


def say(console: Console, markup: str | Text) -> None:
    """One message (an error, a warning, "model: ..."): wrapped between words to a terminal's
    width; on a pipe or in a file, each line whole whatever its length, for grep. Control
    characters (from a file's name) are shown escaped, never sent to the terminal."""
    shown = "\n".join(map(printable, markup.split("\n"))) if isinstance(markup, str) else markup
    console.print(shown, soft_wrap=not console.is_terminal)


def is_color(console: Console) -> bool:
    """Whether `console` will show colour (a colour terminal, and no NO_COLOR/--no-color)."""
    return console.color_system is not None and not console.no_color


def make_consoles(*, no_color: bool = False, plain: bool = False) -> Consoles:
    """Live redraw wherever rich finds an interactive terminal (a TTY, not TERM=dumb,
    TTY_INTERACTIVE), unless --plain asks for lines. NO_COLOR and --no-color remove colour
    only: the live view and its progress stay, drawn without colour."""
    env_no_color = os.environ.get("NO_COLOR", "") != ""
    kwargs = {"no_color": True} if no_color or env_no_color else {}
    out = Console(highlight=False, **kwargs)
    err = Console(stderr=True, highlight=False, **kwargs)
    return Consoles(out=out, err=err, live=err.is_interactive and not plain)


def plural(n: int, noun: str) -> str:
    """'1 epoch', '3 epochs': a count and its noun, in the plural unless it is one."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def percent(fraction: float | None, digits: int = 2, *, below_100: bool = False) -> str:
    """A fraction as a percentage, 0.98765 -> '98.77%'; None -> '-'. With `below_100`, a value
    short of 1 never reads as 100% (0.9996 at one digit -> '99.9%')."""
    if fraction is None:
        return "-"
    value = 100 * fraction
    if below_100 and fraction < 1:
        value = min(value, 100 - 10**-digits)
    return f"{value:.{digits}f}%"


def probability(p: float) -> str:
    """The one way a probability is printed (predict, eval, figures): a percentage with one
    decimal that never reads 100.0% short of certainty (0.9996 -> '99.9%')."""
    return percent(p, 1, below_100=True)
