"""The manual and the front page: the command reference says what --help says, every image
they show exists and is one docs/screenshots.py makes, and the README stays a front page."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from typer.cli import app as typer_cli
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
# ![alt](path) and <img src="path">, the two ways Markdown shows an image
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)|<img[^>]+src=\"([^\"]+)\"")


def reference_now() -> str:
    """docs/reference.md as `make docs-reference` would write it now."""
    args = ["mnistcli.cli", "utils", "docs", "--name", "mnistcli", "--title", "Command reference"]
    done = CliRunner().invoke(typer_cli, args)
    assert done.exit_code == 0, done.output
    return done.stdout.removesuffix("\n")  # typer.echo's newline after the page


def test_command_reference_matches_the_app():
    reference = reference_now()
    assert "## `mnistcli train`" in reference and "--patience" in reference
    committed = (DOCS / "reference.md").read_text(encoding="utf-8")
    assert committed == reference, "docs/reference.md is out of date: run make docs-reference"


def screenshot_script() -> ModuleType:
    """docs/screenshots.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("screenshots", DOCS / "screenshots.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules["screenshots"] = script  # dataclasses look their module up while defined
    spec.loader.exec_module(script)
    return script


def images(page: Path) -> list[str]:
    return [a or b for a, b in IMAGE.findall(page.read_text(encoding="utf-8"))]


def test_every_image_the_readme_and_docs_show_exists():
    missing = [
        f"{page.relative_to(REPO)}: {src}"
        for page in PAGES
        for src in images(page)
        if not src.startswith(("http://", "https://")) and not (page.parent / src).is_file()
    ]
    assert missing == [], "run make screenshots (and commit docs/images)"
    assert images(REPO / "README.md"), "the front page shows the commands"


def test_every_image_is_one_the_screenshot_script_makes():
    """So `make screenshots` regenerates every picture: none is made by hand, none goes stale."""
    script = screenshot_script()
    made = {f"{shot.name}.svg" for shot in script.SHOTS} | {"draw.svg"}
    shown = {Path(src).name for page in PAGES for src in images(page)}
    assert shown <= made
    for page in PAGES:
        for src in images(page):
            assert (page.parent / src).resolve().parent == DOCS / "images", (page, src)


def test_readme_is_a_front_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "make train" in readme and "make test" in readme  # the two set-up commands
    assert readme.index("![") < readme.index("make train")  # it opens with a screenshot
    assert "## Learn from the code" in readme


def test_final_screen_replays_a_live_redraw():
    """The screenshot script keeps what a terminal shows after rich redraws a live view."""
    script = screenshot_script()
    frame1 = "header\n\x1b[1mepoch 1\x1b[0m\nbar 10%"
    redraw = "\r\x1b[2K\x1b[1A\x1b[2K\x1b[1A\x1b[2K"  # rich's position_cursor for 3 lines
    frame2 = "header\n\x1b[1mepoch 2\x1b[0m\nbar 100%\n"
    lines = script.final_screen(frame1 + redraw + frame2 + "summary\n")
    assert lines == ["header", "\x1b[1mepoch 2\x1b[0m", "bar 100%", "summary"]
