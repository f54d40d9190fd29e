"""The draw app's state without a terminal: strokes, erasing, undo, clear, the brush, the image
the model is shown, saving drawings by digit, and the saliency laid back over the drawing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnistcli.canvas import BRUSH_RANGE, SIDE, Canvas, DigitFolder
from mnistcli.draw import Reading, to_canvas
from mnistcli.errors import OutputError
from mnistcli.imaging import load_image, preprocess


def stroke(canvas: Canvas, *points: tuple[float, float], erase: bool = False) -> None:
    canvas.begin(*points[0], erase=erase)
    for point in points[1:]:
        canvas.extend(*point)
    canvas.end()


def test_a_fast_stroke_has_no_gaps_between_far_apart_mouse_events():
    canvas = Canvas(brush=1.0)
    stroke(canvas, (5, 5), (50, 50))  # two events 64 pixels apart
    diagonal = np.array([canvas.ink[i, i] for i in range(5, 51)])
    assert (diagonal == 1.0).all()
    assert canvas.ink[5, 50] == 0 and canvas.ink[50, 5] == 0  # and nothing far from the line


def test_the_brush_radius_sets_the_stroke_width_and_stays_in_range():
    widths = []
    for brush in (1.0, 3.0):
        canvas = Canvas(brush=brush)
        stroke(canvas, (28, 10), (28, 40))
        widths.append(int((canvas.ink[25] >= 0.5).sum()))
    assert widths == [3, 7]  # 2 x radius + 1 pixels across
    canvas = Canvas()
    for _ in range(40):
        canvas.resize_brush(1)
    assert canvas.brush == BRUSH_RANGE[1]
    for _ in range(40):
        canvas.resize_brush(-1)
    assert canvas.brush == BRUSH_RANGE[0]


def test_an_erasing_stroke_removes_ink_along_its_path_only():
    canvas = Canvas(brush=2.0)
    stroke(canvas, (10, 28), (46, 28))
    stroke(canvas, (28, 10), (28, 46), erase=True)
    assert canvas.ink[28, 28] == 0 and canvas.ink[28, 12] == 1.0 and canvas.ink[28, 44] == 1.0


def test_undo_restores_each_previous_drawing_exactly():
    canvas = Canvas()
    states = [canvas.ink.copy()]
    stroke(canvas, (10, 10), (20, 40), (45, 12))
    states.append(canvas.ink.copy())
    stroke(canvas, (12, 30), (44, 30), erase=True)
    states.append(canvas.ink.copy())
    canvas.resize_brush(3)
    stroke(canvas, (28, 5), (28, 50))
    states.append(canvas.ink.copy())
    canvas.clear()
    assert canvas.blank
    for expected in reversed(states):
        assert canvas.undo()
        assert np.array_equal(canvas.ink, expected)
    assert canvas.blank and not canvas.undo() and not canvas.can_undo


def test_clearing_a_blank_canvas_is_not_an_undo_step():
    canvas = Canvas()
    canvas.clear()
    assert not canvas.can_undo


def test_a_mnist_digit_fills_the_canvas_and_undo_brings_the_drawing_back():
    canvas = Canvas()
    stroke(canvas, (28, 10), (28, 45))
    mine = canvas.ink.copy()
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255
    canvas.load(digit)
    assert canvas.ink.shape == (SIDE, SIDE)
    assert canvas.ink[28, 28] == pytest.approx(1.0) and canvas.ink[2, 2] == 0
    assert canvas.undo() and np.array_equal(canvas.ink, mine)


def test_the_image_is_dark_ink_on_white_at_the_canvas_resolution():
    canvas = Canvas()
    stroke(canvas, (28, 10), (28, 45))
    image = canvas.to_image()
    assert image.mode == "L" and image.size == (SIDE, SIDE)
    pixels = np.asarray(image)
    assert pixels[0, 0] == 255 and pixels[28, 28] == 0


def test_a_blank_canvas_and_a_speck_are_no_digit_a_stroke_is_one():
    canvas = Canvas()
    assert preprocess(canvas.to_image()).blank
    canvas.brush = 0.5
    stroke(canvas, (30, 30))  # one pixel: too small to be a digit
    assert preprocess(canvas.to_image()).blank
    canvas.brush = 2.5
    stroke(canvas, (28, 10), (28, 45))
    prepared = preprocess(canvas.to_image())
    assert not prepared.blank and prepared.pixels.max() == 255


def test_saving_numbers_the_files_per_digit_and_never_overwrites(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "0002.png").write_bytes(b"someone else's")
    (tmp_path / "7" / "notes.txt").write_text("not a drawing")
    folder = DigitFolder(tmp_path)
    assert folder.counts == {**dict.fromkeys(range(10), 0), 7: 1}
    canvas = Canvas()
    stroke(canvas, (28, 10), (28, 45))
    first = folder.save(canvas.to_image(), 7)
    second = folder.save(canvas.to_image(), 7)
    other = folder.save(canvas.to_image(), 1)
    assert [first.name, second.name, other.name] == ["0003.png", "0004.png", "0001.png"]
    assert (tmp_path / "7" / "0002.png").read_bytes() == b"someone else's"
    assert first.parent == tmp_path / "7" and other.parent == tmp_path / "1"
    assert folder.counts[7] == 3 and folder.counts[1] == 1
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temporary left
    with Image.open(first) as saved:
        assert np.array_equal(np.asarray(saved), np.asarray(canvas.to_image()))
    # the file reads as the canvas reads
    assert np.array_equal(load_image(first).pixels, preprocess(canvas.to_image()).pixels)


def test_saving_into_a_file_instead_of_a_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "taken").write_text("a file")
    folder = DigitFolder(tmp_path / "taken")
    with pytest.raises(OutputError, match="cannot save the drawing in"):
        folder.save(Canvas().to_image(), 3)
    assert folder.counts[3] == 0


def test_the_saliency_is_laid_over_the_drawings_own_ink():
    canvas = Canvas()
    stroke(canvas, (20, 8), (20, 48))
    prepared = preprocess(canvas.to_image())
    reading = Reading(prepared.pixels, np.full(10, 0.1))
    over = to_canvas(np.ones((28, 28), np.float32), reading, canvas.ink)
    assert over.shape == (SIDE, SIDE)
    assert not over[canvas.ink == 0].any()  # nothing off the ink
    assert (over[canvas.ink >= 0.5] == 1).mean() > 0.9  # nearly all of the stroke covered
    # a saliency on the upper half of the input lands on the upper half of the stroke
    upper = np.zeros((28, 28), np.float32)
    upper[:14] = 1
    over = to_canvas(upper, reading, canvas.ink)
    assert over[10:24, 20].all() and not over[34:48, 20].any()
    assert not to_canvas(upper, Reading(prepared.pixels, None), Canvas().ink).any()
