"""File names with control characters: shown with visible escapes (\\x1b, \\n) in rows, error
messages, panel titles and gallery captions, never sent to the terminal as they are; --json and
the files opened keep the real name."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.errors import ImageError, printable
from mnistcli.metrics import Mistake
from mnistcli.predict import Prediction

runner = CliRunner()

# ESC sequences (clear screen, colour, OSC 0 window title ended by BEL), a newline, a tab, a C1
# control (CSI, 0x9b) and letters that are printable and must stay: é, 数字
NASTY = {
    "bad\x1b[2Jclear.png": "bad\\x1b[2Jclear.png",
    "evil\x1b[31mRED\x1b[0m\x1b]0;TITLE\x07.png": "evil\\x1b[31mRED\\x1b[0m\\x1b]0;TITLE\\x07.png",
    "new\nline.png": "new\\nline.png",
    "tab\tcsi\x9b é 数字.png": "tab\\tcsi\\x9b é 数字.png",
}


def controls(text: str) -> set[str]:
    """The characters of `text` that a terminal would act on (a line's own newline aside)."""
    return {c for c in text if not c.isprintable() and c != "\n"}


def test_printable_escapes_what_is_not_printable_and_keeps_letters():
    for name, shown in NASTY.items():
        assert printable(name) == shown
        assert printable(shown) == shown  # shown twice, escaped once
    assert printable("scans/été 7.png") == "scans/été 7.png"
    assert printable("C:\\scans\\7.png") == "C:\\scans\\7.png"
    assert printable("\udcff\u200b\xa0") == "\\udcff\\u200b\\xa0"  # undecodable byte, invisibles


def test_an_image_error_shows_its_path_escaped_and_keeps_the_real_one():
    name = "scans/evil\x1b[31m\n.png"
    exc = ImageError("cannot decode the image (bad\x1b[0m)", name)
    assert str(exc) == "scans/evil\\x1b[31m\\n.png: cannot decode the image (bad\\x1b[0m)"
    assert exc.reason == "cannot decode the image (bad\\x1b[0m)"
    assert exc.path == name  # to open, and for --json
    again = pickle.loads(pickle.dumps(exc))  # from a worker process
    assert (str(again), again.path, again.reason) == (str(exc), name, exc.reason)


@pytest.mark.parametrize("width", [None, 120])
def test_predict_rows_show_escaped_names_in_columns_sized_from_them(width):
    """The path column is as wide as the longest name as shown, in terminal cells (数 takes
    two), so the digits line up on screen."""
    from rich.cells import cell_len

    from mnistcli.render.predict_view import RowFormat

    names = [f"scans/{n}" for n in NASTY]
    fmt = RowFormat(names, width, top_k=2)
    assert fmt.image == max(cell_len(printable(n)) for n in names)
    rows = []
    for name in names:
        lines = fmt.row(Prediction(name, 7, 0.9, ((7, 0.9), (1, 0.1))))
        assert len(lines) == 1  # a newline in the name splits nothing
        rows.append(lines[0].plain)
        assert lines[0].plain.startswith(printable(name))
    assert all(not controls(r) for r in rows)
    assert len({cell_len(r[: r.index("  7  ")]) for r in rows}) == 1  # the digits line up
    failed = ImageError("not an image this program reads", "scans/bad\x1b[2J.png")
    row = fmt.row(Prediction(failed.path or "", error=str(failed), reason=failed.reason))
    assert row[0].plain.startswith("scans/bad\\x1b[2J.png") and not controls(row[0].plain)


def test_a_long_name_folds_by_terminal_cells():
    from rich.cells import cell_len

    from mnistcli.render.predict_view import RowFormat

    name = "数字" * 30 + "\x1b.png"
    lines = RowFormat([name], 40, top_k=1).row(Prediction(name, 7, 0.9, ((7, 0.9),)))
    assert max(cell_len(line.plain) for line in lines) <= 40
    assert "".join(line.plain.split("  ")[0] for line in lines) == printable(name)


def render(renderable, width: int = 120) -> str:
    """What prints on a console without colour codes: any control left came from a name."""
    console = Console(width=width, color_system=None, highlight=False)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


def test_panel_titles_and_gallery_captions_show_escaped_names():
    from mnistcli.render.eval_view import gallery as eval_gallery
    from mnistcli.render.explain_view import explain_panel
    from mnistcli.render.predict_view import gallery, prediction_panel

    pixels = np.zeros((28, 28), np.uint8)
    pixels[8:20, 12:16] = 255
    name = "d/evil\x1b]0;T\x07\n.png"
    pred = Prediction(name, 1, 0.9, ((1, 0.9),), pixels=pixels)
    for view in (
        prediction_panel(pred, show=False, color=False),
        explain_panel(pred, None, color=False, width=120),
        gallery([pred, pred], color=True),
    ):
        out = render(view)
        assert "\\x1b]0;T\\x07\\n.png" in out and not controls(out)
    wrong = Mistake(3, 7, 1, 0.9, 0.05, pixels.tobytes(), path=name)
    out = render(eval_gallery([wrong], 1, 120, color=False))
    assert "\\n.png" in out and not controls(out)


@pytest.fixture
def nasty_folder(tmp_path, real_mnist):
    """DIR/<digit>/ with real digits under nasty names, and a broken file under one."""
    from tests.test_cli_labelled import scan

    root = tmp_path / "digits"
    for i, name in enumerate(NASTY):
        label = int(real_mnist.test_labels[i])
        # the last one filed under a wrong digit: a mistake, for the gallery
        folder = root / str((label + 1) % 10 if i == len(NASTY) - 1 else label)
        folder.mkdir(parents=True, exist_ok=True)
        scan(real_mnist.test_images[i]).save(folder / name)
    (root / "0").mkdir(exist_ok=True)
    (root / "0" / "broken\x1b[2J.png").write_bytes(b"not an image")
    return root


@pytest.mark.slow
def test_predict_and_eval_never_send_a_file_names_controls_to_the_terminal(
    trained_run, nasty_folder
):
    ck = ["--checkpoint", str(trained_run)]
    files = sorted(str(p) for p in nasty_folder.rglob("*.png"))
    shown = runner.invoke(app, ["predict", *files, *ck])
    assert shown.exit_code == 1  # the broken file
    for escaped in NASTY.values():
        assert escaped in shown.stdout
    assert "broken\\x1b[2J.png" in shown.stdout and "broken\\x1b[2J.png" in shown.stderr
    assert not controls(shown.stdout) and not controls(shown.stderr)

    as_json = runner.invoke(app, ["predict", *files, "--json", *ck])
    docs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [d["path"] for d in docs] == files  # the real names
    assert sum(d["status"] == "ok" for d in docs) == len(NASTY)

    report = runner.invoke(app, ["eval", "--images", str(nasty_folder), "--no-save", *ck])
    assert report.exit_code == 0, report.output
    assert "left out: " in report.stderr and "broken\\x1b[2J.png: " in report.stderr
    assert "tab\\tcsi\\x9b é 数字.png"[-12:] in report.stdout  # the gallery names the mistake
    assert not controls(report.stdout) and not controls(report.stderr)
