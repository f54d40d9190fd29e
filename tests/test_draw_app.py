"""`mnistcli draw` through Textual's own harness (App.run_test and its pilot): mouse strokes on
the canvas and the top digit read, erasing, undo, clear, the brush keys, drawing with the
keyboard, saving with a digit key, a random MNIST digit, the saliency and feature-map views,
the layout at each terminal size, an unreadable checkpoint, and an .onnx model without torch."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from mnistcli.draw import DrawModel, MnistDigits
from mnistcli.loading import open_model
from mnistcli.predict import predict_paths
from mnistcli.render.draw_app import DrawApp
from mnistcli.render.draw_widgets import FULL, HALF
from tests.helpers import REPO, SHARED_MNIST

runner = CliRunner()


@pytest.fixture(scope="module")
def model(trained_run) -> Iterator[DrawModel]:
    """The model as the app loads it (one torch thread), the thread count restored after."""
    import torch

    threads = torch.get_num_threads()
    yield DrawModel(trained_run / "best.pt", "cpu", threads=1)
    torch.set_num_threads(threads)


def asynchronous(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test (the pilot is async) in its own event loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def text_of(app: DrawApp, selector: str, width: int = 100) -> str:
    """What a Static widget shows, as plain text."""
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(app.query_one(selector).content)
    return console.export_text()


async def settle(pilot, app: DrawApp) -> None:
    """Wait until the reading has caught up with the drawing (and the screen with both)."""
    for _ in range(200):
        await pilot.pause(0.01)
        if app.up_to_date:
            break
    await pilot.pause()


async def vertical_stroke(
    pilot, app: DrawApp, x: int = 28, top: int = 4, bottom: int = 24, *, button: int = 1
) -> None:
    """Press at (x, top) on the canvas, drag down four cells at a time (a fast stroke),
    release at bottom."""
    await pilot.mouse_down("#canvas", offset=(x, top), button=button)
    for y in range(top + 4, bottom, 4):
        await pilot.hover("#canvas", offset=(x, y))
    await pilot.mouse_up("#canvas", offset=(x, bottom))
    await settle(pilot, app)


@asynchronous
async def test_a_vertical_stroke_reads_as_a_one_and_the_bars_mark_it(model):
    app = DrawApp(model)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        assert "no digit found" in text_of(app, "#bars")
        await vertical_stroke(pilot, app)
        # a continuous stroke: every canvas row between the press and the release has ink
        column = app.canvas.ink[:, 28]
        assert (column[9:49] == 1.0).all() and column[:6].max() == 0
        assert app.reading is not None and app.reading.digit == 1
        bars = text_of(app, "#bars").splitlines()
        assert bars[0].startswith("reads as 1")
        marked = [line for line in bars if line.rstrip().endswith("◀")]
        assert len(marked) == 1 and marked[0].startswith("1 ")
        # the model's input: the stroke, centred as MNIST's digits are
        assert app.reading.pixels[6:22, 13:15].min() > 0


@asynchronous
async def test_the_right_button_erases(model):
    app = DrawApp(model)
    async with app.run_test(size=(120, 40)) as pilot:
        await vertical_stroke(pilot, app)
        await pilot.mouse_down("#canvas", offset=(20, 14), button=3)
        for x in range(22, 38, 2):
            await pilot.hover("#canvas", offset=(x, 14))
        await pilot.mouse_up("#canvas", offset=(38, 14))
        await settle(pilot, app)
        assert app.canvas.ink[27:30, 28].max() == 0  # cut through the middle
        assert app.canvas.ink[12, 28] == 1.0 and app.canvas.ink[44, 28] == 1.0


@asynchronous
async def test_undo_restores_the_previous_drawing_exactly_and_clear_empties_it(model):
    app = DrawApp(model)
    async with app.run_test(size=(120, 40)) as pilot:
        await vertical_stroke(pilot, app, x=20)
        one_stroke = app.canvas.ink.copy()
        first_reading = app.reading
        await vertical_stroke(pilot, app, x=36, top=2, bottom=26)
        assert not np.array_equal(app.canvas.ink, one_stroke)
        await pilot.press("u")
        await settle(pilot, app)
        assert np.array_equal(app.canvas.ink, one_stroke)
        assert app.reading is not None and first_reading is not None
        assert np.array_equal(app.reading.pixels, first_reading.pixels)
        await pilot.press("c")
        await settle(pilot, app)
        assert app.canvas.blank and app.reading is not None and app.reading.blank
        assert "no digit found" in text_of(app, "#bars")
        await pilot.press("u")  # clearing is a step too
        await settle(pilot, app)
        assert np.array_equal(app.canvas.ink, one_stroke)


@asynchronous
async def test_brush_keys_and_drawing_with_the_keyboard(model):
    app = DrawApp(model)
    async with app.run_test(size=(120, 40)) as pilot:
        start = app.canvas.brush
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert app.canvas.brush == start + 1.0
        await pilot.press("left_square_bracket")
        assert app.canvas.brush == start + 0.5
        assert f"brush {start + 0.5:g}" in str(app.query_one("#frame").border_title)
        # arrows move the cursor from the middle, space puts the pen down and lifts it
        await pilot.press("up", "up", "up", "up", "space", *["down"] * 8, "space")
        await settle(pilot, app)
        assert app.canvas.ink[20:36, 28].min() == 1.0 and app.canvas.ink[40:, 28].max() == 0
        assert app.canvas.ink[28, 10] == 0 and not app.canvas.drawing
        await pilot.press("down", "down")  # pen up: the cursor moves without drawing
        await settle(pilot, app)
        assert app.canvas.ink[40:, 28].max() == 0


@asynchronous
async def test_a_digit_key_saves_a_png_that_predict_reads_the_same_way(model, tmp_path):
    app = DrawApp(model, save_to=tmp_path / "mine")
    async with app.run_test(size=(120, 40)) as pilot:
        await vertical_stroke(pilot, app)
        assert app.reading is not None
        seen = app.reading
        await pilot.press("1")
        await settle(pilot, app)
        saved = tmp_path / "mine" / "1" / "0001.png"
        assert saved.is_file()
        assert app.canvas.blank  # cleared for the next one
        counts = text_of(app, "#counts", width=200)
        assert "  0:0  1:1  2:0  " in counts and counts.rstrip().endswith("9:0")
        assert "saved" in text_of(app, "#status", width=200)
        await pilot.press("7")  # nothing to save on a blank canvas
        assert not (tmp_path / "mine" / "7").exists()
    backend = open_model(model.path, "cpu")
    (pred,) = predict_paths([saved], backend, top_k=10)
    assert pred.digit == seen.digit == 1
    assert np.array_equal(pred.pixels, seen.pixels)
    assert seen.probabilities is not None
    assert pred.probability == pytest.approx(float(seen.probabilities[1]), abs=1e-6)


@asynchronous
async def test_a_digit_key_without_save_to_says_how_to_keep_drawings(model):
    app = DrawApp(model)
    async with app.run_test(size=(120, 40)) as pilot:
        await vertical_stroke(pilot, app)
        await pilot.press("3")
        assert "--save-to DIR" in text_of(app, "#status", width=200)
        assert not app.canvas.blank


@asynchronous
async def test_saliency_and_feature_maps_follow_the_drawing(model):
    app = DrawApp(model)
    async with app.run_test(size=(120, 40)) as pilot:
        await vertical_stroke(pilot, app)
        await pilot.press("s")
        await pilot.pause(0.3)
        overlay = app.view.overlay
        assert overlay is not None and overlay.max() == pytest.approx(1.0, abs=0.01)
        assert not overlay[app.canvas.ink == 0].any()
        await pilot.press("f")
        await pilot.pause(0.3)
        shown = text_of(app, "#insight")
        assert "layer 1 of" in shown and "features.0  Conv2d" in shown
        await pilot.press("l")
        await pilot.pause(0.1)
        assert "layer 2 of" in text_of(app, "#insight")
        # a new stroke redraws both
        await vertical_stroke(pilot, app, x=40, top=2, bottom=10)
        await pilot.pause(0.3)
        assert app.view.overlay is not None and not np.array_equal(app.view.overlay, overlay)
        await pilot.press("s", "f")
        await pilot.pause(0.2)
        assert app.view.overlay is None and text_of(app, "#insight").strip() == ""


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="real MNIST not found")
@asynchronous
async def test_r_puts_a_random_mnist_test_digit_on_the_canvas(model, mnist_root, real_mnist):
    digits = MnistDigits(mnist_root, [str(SHARED_MNIST)], seed=0)
    app = DrawApp(model, digits=digits)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r")
        for _ in range(300):  # loaded in a worker thread
            await pilot.pause(0.02)
            if not app.canvas.blank:
                break
        await settle(pilot, app)
        status = text_of(app, "#status", width=200)
        assert "MNIST test digit #" in status
        index = int(status.split("#")[1].split(",")[0])
        label = int(status.split("labelled ")[1].split()[0])
        assert label == int(real_mnist.test_labels[index])
        bright = real_mnist.test_images[index].numpy() > 128
        assert app.canvas.ink[::2, ::2][bright].mean() > 0.5
        await pilot.press("u")
        await settle(pilot, app)
        assert app.canvas.blank


@asynchronous
async def test_the_layout_fits_the_terminal_or_says_how_large_it_must_be(model):
    app = DrawApp(model)
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        assert app.too_small
        message = text_of(app, "#too-small", width=60)
        assert "The terminal is 60x20" in message and "needs at least 78x" in message
        assert "for the full-size canvas" in message
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not app.too_small and app.view.scale == HALF
        assert tuple(app.view.size) == (28, 14)
        await vertical_stroke(pilot, app, x=14, top=2, bottom=12)
        assert app.reading is not None and app.reading.digit == 1
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert app.view.scale == FULL and tuple(app.view.size) == (56, 28)


def test_a_bad_checkpoint_or_no_terminal_is_one_line_and_exit_2_before_the_screen_opens(
    tmp_path, monkeypatch, trained_run
):
    from mnistcli.cli import app

    opened = []
    monkeypatch.setattr(DrawApp, "run", lambda self: opened.append(self))
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    for args in (["--checkpoint", str(bad)], ["--checkpoint", str(tmp_path / "none.pt")]):
        result = runner.invoke(app, ["draw", *args])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert opened == []
    # a good checkpoint, but no terminal to draw in (the runner pipes both ends)
    result = runner.invoke(app, ["draw", "--checkpoint", str(trained_run)])
    assert result.exit_code == 2 and opened == []
    assert "needs a terminal" in result.stderr and len(result.stderr.strip().splitlines()) == 1


ONNX_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from mnistcli.draw import DrawModel
from mnistcli.render.draw_app import DrawApp

async def main():
    app = DrawApp(DrawModel(Path(sys.argv[1]), "auto"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.mouse_down("#canvas", offset=(28, 4))
        for y in range(6, 24, 2):
            await pilot.hover("#canvas", offset=(28, y))
        await pilot.mouse_up("#canvas", offset=(28, 24))
        await pilot.pause(0.2)
        found = {"read": app.reading.probabilities is not None,
                 "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}
        await pilot.press("s")
        await pilot.pause(0.5)
        found["status"] = str(app.query_one("#status").content)
        found["running"] = app.is_running
    print(json.dumps(found))

asyncio.run(main())
"""


def test_an_onnx_model_reads_drawings_without_importing_torch(tmp_path):
    """The plain reading runs on onnxruntime; s then needs the weights in PyTorch, which a
    model not written by mnistcli cannot give: a message on the status line, not a crash."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((784, 10), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "foreign",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [weights],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, tmp_path / "foreign.onnx")
    proc = subprocess.run(
        [sys.executable, "-c", ONNX_SCRIPT, str(tmp_path / "foreign.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["read"] and found["torch"] == []
    assert found["running"] and found["status"].startswith("error: ")
    assert "not written by 'mnistcli export'" in found["status"]
