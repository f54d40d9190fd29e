"""The screenshot of `mnistcli draw`, made by the app itself (Textual's SVG screenshot).

    python docs/draw_screenshot.py --checkpoint runs/latest [--out docs/images/draw.svg]

`make screenshots` (docs/screenshots.py) calls `shoot` with its own small model; this script
alone reshoots draw.svg with any checkpoint.

Draws a 7 with the mouse events a terminal sends (through Textual's pilot), turns the saliency
overlay on, and saves the screen at 110x34, so the picture is what the app shows today.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mnistcli.draw import DrawModel  # noqa: E402
from mnistcli.render.draw_app import DrawApp  # noqa: E402
from mnistcli.runs import resolve_checkpoint  # noqa: E402

SEVEN = [(12, 6), (20, 4), (32, 4), (44, 4), (48, 6), (44, 12), (38, 20), (34, 26)]


async def shoot(model: DrawModel, out: Path) -> int | None:
    """Draw the 7, turn the saliency overlay on, save the screen as SVG; the digit read."""
    app = DrawApp(model)
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.mouse_down("#canvas", offset=SEVEN[0])
        for point in SEVEN[1:]:
            await pilot.hover("#canvas", offset=point)
        await pilot.mouse_up("#canvas", offset=SEVEN[-1])
        await pilot.pause(0.2)
        await pilot.press("s")
        await pilot.pause(0.5)
        app.save_screenshot(filename=out.name, path=str(out.parent))
        return app.reading.digit if app.reading else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="latest")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "draw.svg")
    args = parser.parse_args()
    model = DrawModel(resolve_checkpoint(args.checkpoint, args.runs_dir), "cpu", threads=1)
    digit = asyncio.run(shoot(model, args.out))
    print(f"wrote {args.out} (read as {digit})")


if __name__ == "__main__":
    main()
