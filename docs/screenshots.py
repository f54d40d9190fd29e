"""The screenshots in README.md and docs/, made from the real commands so they cannot go stale.

    make screenshots                         # or: python docs/screenshots.py [--data DIR]

Trains a small model (seeded, a few thousand images, a few epochs) in a temporary folder, runs
`mnistcli train`, `eval`, `predict --explain` and `inspect --image` there, each in a
pseudo-terminal of a fixed size (so every command sees a real colour terminal and draws what a
user sees, live view included), replays what the terminal received into its final screen, and
records that screen as SVG with rich's `Console(record=True)` into docs/images/. `mnistcli
draw` is a Textual app: its screenshot is Textual's own `App.save_screenshot`.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import tempfile
import termios
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from rich.console import Console
from rich.terminal_theme import MONOKAI
from rich.text import Text

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "docs" / "images"
COLUMNS = 100
ROWS = 40

# A small, seeded run: enough epochs for curves and a best epoch, seconds on a laptop CPU.
TRAIN = ["train", "--limit", "4000", "--epochs", "4", "--seed", "0", "--name", "demo"]


@dataclass(frozen=True)
class Shot:
    """One screenshot: the command line after `mnistcli`, and which lines of its screen to keep."""

    name: str  # docs/images/<name>.svg
    args: tuple[str, ...]
    first: str | None = None  # keep from the first line that contains this text
    max_lines: int | None = None  # and at most this many lines (None: to the end)


SHOTS = (
    Shot("train", tuple(TRAIN)),
    Shot(
        "eval", ("eval", "--checkpoint", "runs/demo", "--no-save", "--pairs", "3", "--gallery", "3")
    ),
    Shot("predict-explain", ("predict", "--checkpoint", "runs/demo", "--explain", "seven.png")),
    Shot(
        "inspect-image",
        ("inspect", "--checkpoint", "runs/demo", "--image", "seven.png"),
        max_lines=46,  # the input and the verdict first, then the first layers' outputs
    ),
)


def draw_seven(path: Path) -> None:
    """A 7 in dark ink on light paper, the way a user's photo or drawing looks (not MNIST's)."""
    image = Image.new("L", (160, 160), 235)
    pen = ImageDraw.Draw(image)
    pen.line([(40, 38), (118, 34), (112, 52), (70, 130)], fill=30, width=11, joint="curve")
    pen.line([(62, 84), (104, 84)], fill=30, width=9)
    image.save(path)


def run_in_terminal(args: list[str], cwd: Path, columns: int, rows: int) -> bytes:
    """Run `args` with stdout and stderr on a pseudo-terminal of columns x rows; its bytes."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    attrs = termios.tcgetattr(follower)
    attrs[1] &= ~termios.ONLCR  # keep "\n" as the program wrote it
    termios.tcsetattr(follower, termios.TCSANOW, attrs)
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "CI")}
    env.update(
        TERM="xterm-256color",
        COLUMNS=str(columns),
        LINES=str(rows),
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistcli", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the program closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    if proc.wait() != 0:
        output = b"".join(chunks).decode(errors="replace")
        raise SystemExit(f"mnistcli {' '.join(args)} failed ({proc.returncode}):\n{output}")
    return b"".join(chunks)


# The escape sequences a rich program sends: CSI (cursor moves, erasing, colours), OSC
# (hyperlinks, titles), and the two-byte ones.
ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def final_screen(stream: str) -> list[str]:
    """The lines a terminal shows after `stream`, colours kept as SGR codes.

    Enough of a terminal for rich: it redraws a live view by moving the cursor up and erasing
    whole lines, and writes each line from its start, so a line is kept as the text written to
    it since it was last erased (a write at column 0 replaces it)."""
    lines = [""]
    row, at_start, pending = 0, True, ""  # pending: colours set before a line's first text
    for token in re.split(f"({ESCAPE.pattern}|\r|\n)", stream):
        if not token:
            continue
        if token in ("\n", "\r"):
            if token == "\n":
                row += 1
                lines.extend([""] * (row + 1 - len(lines)))
            at_start = True
        elif token.startswith("\x1b["):
            command, count = token[-1], token[2:-1]
            if command == "A":
                row = max(0, row - int(count or 1))
            elif command == "B":
                row += int(count or 1)
                lines.extend([""] * (row + 1 - len(lines)))
            elif command == "K" and count in ("2", ""):
                lines[row], at_start = "", True
            elif command == "m" and at_start:
                pending += token
            elif command == "m":
                lines[row] += token
        elif token.startswith("\x1b"):
            continue  # titles, hyperlinks, cursor shape: nothing on the screen
        else:
            lines[row] = pending + token if at_start else lines[row] + token
            at_start, pending = False, ""
    while lines and not Text.from_ansi(lines[-1]).plain.strip():
        lines.pop()
    return lines


def keep(lines: list[str], shot: Shot) -> list[str]:
    """The part of the screen a shot shows, with a last line saying what was left out."""
    plain = [Text.from_ansi(line).plain for line in lines]
    start = next((i for i, p in enumerate(plain) if shot.first and shot.first in p), 0)
    end = len(lines) if shot.max_lines is None else min(len(lines), start + shot.max_lines)
    kept = lines[start:end]
    if end < len(lines):
        kept.append(f"\x1b[2m... ({len(lines) - end} more lines)\x1b[0m")
    return kept


def save_svg(lines: list[str], title: str, path: Path, columns: int) -> None:
    """Record the lines in a rich console of the terminal's width and write it as SVG."""
    console = Console(
        record=True,
        width=columns,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
    )
    for line in lines:
        console.print(Text.from_ansi(line), no_wrap=True, overflow="crop")
    console.save_svg(str(path), title=title, theme=MONOKAI)


def shoot_draw(workdir: Path, out: Path) -> int | None:
    """draw's screenshot, made by the app itself: Textual's `App.save_screenshot` of a 7 drawn
    with mouse events, the saliency overlay on (docs/draw_screenshot.py), with train's model."""
    sys.path.insert(0, str(REPO / "docs"))
    from draw_screenshot import shoot

    from mnistcli.draw import DrawModel

    model = DrawModel(workdir / "runs" / "demo" / "best.pt", "cpu", threads=1)
    return asyncio.run(shoot(model, out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a folder holding the four MNIST files")
    parser.add_argument("--out", type=Path, default=IMAGES, help="where the SVGs go")
    parser.add_argument("--only", nargs="*", help="these screenshots only (train is always run)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = ["--data", str(Path(args.data).resolve())] if args.data else []
    config = ["--config", str(REPO / ".mnistcli.toml")]
    with tempfile.TemporaryDirectory(prefix="mnistcli-shots-") as tmp:
        workdir = Path(tmp)
        draw_seven(workdir / "seven.png")
        for shot in SHOTS:
            wanted = args.only is None or shot.name in args.only
            if not wanted and shot.name != "train":  # the others need train's model
                continue
            needs_data = shot.args[0] in ("train", "eval")
            command = [*shot.args, *config, *(data if needs_data else [])]
            if shot.args[0] == "train":
                command += ["--runs-dir", "runs"]
            stream = run_in_terminal(command, workdir, COLUMNS, ROWS)
            if wanted:
                lines = keep(final_screen(stream.decode("utf-8", errors="replace")), shot)
                shown = " ".join(shot.args).replace("--checkpoint runs/demo ", "")
                save_svg(lines, f"mnistcli {shown}", args.out / f"{shot.name}.svg", COLUMNS)
                print(f"wrote {args.out / shot.name}.svg ({len(lines)} lines)")
        if args.only is not None and "draw" not in args.only:
            return
        digit = shoot_draw(workdir, args.out / "draw.svg")
        print(f"wrote {args.out / 'draw.svg'} (the 7 read as {digit})")


if __name__ == "__main__":
    main()
