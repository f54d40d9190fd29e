"""Latency of `mnistcli draw`: from a stroke segment to the new bars on the screen.

    python bench/draw_latency.py --checkpoint runs/latest [--hz 60] [--repeats 3] [--json OUT]

The app runs headless (Textual's test driver: the screen is composed as on a terminal, then
thrown away) at 120x40, with the model loaded as `mnistcli draw` loads it. A scripted drawing
(a 1, a 7, a 0 and a 4, each stroke a polyline sampled as a mouse reports it, `--hz` events a
second, several cells apart on fast parts) is fed as the mouse events the terminal driver
makes (textual's xterm parser builds the same events from ESC [ < b ; x ; y M). Each event is
one stroke segment. Its latency runs from the moment the event is posted to the moment the
bars of a reading that includes it are on the screen (the app's `bars_shown`, called after the
screen refresh that shows them). Readings are throttled (at most one per READ_INTERVAL), so
events that arrive together share one reading and each counts its own wait.

Target (issue 24): p95 <= 50 ms on a 2-core CPU. Also printed: the digit read after each
drawing (a check that the script draws what it says). Run it on a quiet machine: the load
average before and after is reported with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from textual import events  # noqa: E402

from mnistcli.draw import DrawModel  # noqa: E402
from mnistcli.render.draw_app import DrawApp  # noqa: E402
from mnistcli.runs import resolve_checkpoint  # noqa: E402

# Strokes in canvas cells (56 columns x 28 lines at 120x40): each digit a list of polylines.
DIGITS: dict[int, list[list[tuple[int, int]]]] = {
    1: [[(28, 3), (28, 25)]],
    7: [[(16, 4), (40, 4), (24, 25)]],
    0: [[(28, 3), (18, 8), (16, 16), (20, 23), (28, 25), (37, 22), (40, 14), (36, 6), (28, 3)]],
    4: [[(32, 3), (16, 17), (42, 17)], [(34, 8), (34, 26)]],
}
STEP = 2.5  # cells between two mouse events: a brisk stroke


def sampled(line: list[tuple[int, int]], step: float = STEP) -> list[tuple[int, int]]:
    """A polyline as the mouse reports it: a point every `step` cells, whole cells."""
    points = [line[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(line):
        n = max(1, round(max(abs(x1 - x0), abs(y1 - y0)) / step))
        points += [
            (round(x0 + (x1 - x0) * k / n), round(y0 + (y1 - y0) * k / n)) for k in range(1, n + 1)
        ]
    return points


class TimedApp(DrawApp):
    """The app, noting when the bars of each reading reach the screen."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.shown: list[tuple[int, float]] = []  # (drawing version, seconds)

    def bars_shown(self, version: int) -> None:
        self.shown.append((version, time.perf_counter()))


async def draw(app: TimedApp, pilot, hz: float) -> tuple[list[float], dict[int, int | None]]:
    """Feed the scripted drawing; the latency of every segment (seconds) and each digit read."""
    origin = app.query_one("#canvas").region.offset
    posted: list[tuple[int, float]] = []  # (the drawing version the event makes, posted at)
    read: dict[int, int | None] = {}

    def post(kind: type[events.MouseEvent], x: int, y: int) -> None:
        sx, sy = origin.x + x, origin.y + y
        posted.append((len(posted) + 1 + start, time.perf_counter()))
        app.post_message(kind(None, sx, sy, 0, 0, 1, False, False, False, screen_x=sx, screen_y=sy))

    for digit, strokes in DIGITS.items():
        # the app is idle here: every event from now on adds one version to the drawing
        start = app.version - len(posted)
        for line in strokes:
            points = sampled(line)
            for i, (x, y) in enumerate(points):
                post(events.MouseDown if i == 0 else events.MouseMove, x, y)
                await asyncio.sleep(1 / hz)
            post(events.MouseUp, *points[-1])
            await asyncio.sleep(1 / hz)
        await wait_until_read(app, pilot)
        read[digit] = app.reading.digit if app.reading else None
        await pilot.press("c")
        await wait_until_read(app, pilot)
    latencies = []
    for version, at in posted:
        shown = next(t for v, t in app.shown if v >= version)
        latencies.append(shown - at)
    return latencies, read


async def wait_until_read(app: TimedApp, pilot) -> None:
    for _ in range(500):
        await pilot.pause(0.01)
        if app.up_to_date and app.shown and app.shown[-1][0] == app.version:
            return
    raise RuntimeError("the app never caught up with the drawing")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(model: DrawModel, hz: float, repeats: int) -> dict[str, object]:
    latencies: list[float] = []
    reads = []
    app = TimedApp(model)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        for _ in range(repeats):
            got, read = await draw(app, pilot, hz)
            latencies += got
            reads.append(read)
    ms = [1000 * v for v in latencies]
    return {
        "segments": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(percentile(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
        "read": reads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="latest", help="a run folder, a .pt or .onnx")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--hz", type=float, default=60.0, help="mouse events per second")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    path = resolve_checkpoint(args.checkpoint, args.runs)
    load_before = os.getloadavg()
    model = DrawModel(path, "cpu", threads=1)
    found = asyncio.run(measure(model, args.hz, args.repeats))
    doc = {
        "checkpoint": str(path),
        "model": model.description,
        "backend": model.where,
        "hz": args.hz,
        **found,
        "target_p95_ms": 50,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(doc, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
