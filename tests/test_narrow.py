"""Narrow terminals: eval's matrix and per-class table and inspect's tables at 100, 80, 60 and 40
columns (and below), in colour and without. Every count stays whole and on screen, or a line
says what was left out; no line is wider than the terminal; no '…'."""

from __future__ import annotations

import io
import re

import pytest
import torch
from rich.console import Console

from mnistcli.metrics import evaluate_tensors
from mnistcli.render.eval_view import print_report
from mnistcli.render.inspect_view import inspect_view

ANSI = re.compile(r"\x1b\[[0-9;]*m")
WIDTHS = (100, 80, 60, 40)


def render(width: int, color: bool, draw) -> str:
    """What `draw(console)` prints on a console `width` columns wide, escape codes removed."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        color_system="truecolor" if color else None,
        no_color=not color,
        highlight=False,
    )
    draw(console)
    return ANSI.sub("", buffer.getvalue())


def check_fits(text: str, width: int) -> None:
    for line in text.splitlines():
        assert len(line) <= width, f"{len(line)} > {width}: {line!r}"
    assert "…" not in text


@pytest.fixture(scope="module")
def evaluation():
    """A 10,000-image evaluation whose diagonal holds four-digit counts and one 3-digit mistake
    count, so the widest form needs every column it has."""
    confusion = torch.full((10, 10), 3, dtype=torch.long)
    confusion.fill_diagonal_(950)
    confusion[1, 1], confusion[7, 9], confusion[4, 9] = 1121, 104, 45
    targets = torch.arange(10).repeat_interleave(confusion.sum(1))
    preds = torch.cat([torch.arange(10).repeat_interleave(row) for row in confusion])
    logits = torch.nn.functional.one_hot(preds, 10).float() * 5
    from mnistcli.data import Tensors

    data = Tensors(x=torch.zeros(len(targets), 1, 1, 1), y=targets)
    ev, _ = evaluate_tensors(None, data, logits=logits, top=3)
    assert ev.confusion == tuple(tuple(r) for r in confusion.tolist())
    return ev


def matrix_from(text: str) -> list[list[int]] | None:
    """The ten matrix rows as printed, in any of the forms: 'label c0 .. c9' with the diagonal
    [bracketed], or with the diagonal as '·' and its count last."""
    start = text.index("confusion matrix")
    rows: list[list[int]] = []
    for line in text[start:].splitlines():
        cells = line.split()
        if len(cells) in (11, 12) and cells[0] == str(len(rows)) and cells[-1] != "ok":
            values = cells[1:]
            if len(values) == 11:  # the diagonal moved to the last column
                t = len(rows)
                assert values[t] == "·"
                values = [*values[:t], values[-1], *values[t + 1 : 10]]
            rows.append([int(v.strip("[]")) for v in values])
        if len(rows) == 10:
            return rows
    return None


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("width", WIDTHS)
def test_eval_report_keeps_every_count_whole_at_each_width(evaluation, width, color):
    text = render(
        width,
        color,
        lambda c: print_report(
            c, evaluation, checkpoint="runs/r/best.pt", split="test", device="cpu"
        ),
    )
    check_fits(text, width)
    assert matrix_from(text) == [list(r) for r in evaluation.confusion]
    for s in evaluation.per_class:  # every percentage whole, with or without its '%'
        assert f"{100 * s.precision:.2f}" in text and f"{100 * s.recall:.2f}" in text
    if width < 63:  # the full headers do not fit: short ones, explained
        assert "prec: precision" in text and "precisi" not in text.replace("precision", "")


def test_full_forms_are_kept_where_they_fit(evaluation):
    text = render(
        100,
        False,
        lambda c: print_report(c, evaluation, checkpoint="m", split="test", device="cpu"),
    )
    assert "[1121]" in text and "  [n]: correct predictions (the diagonal)" in text
    assert "precision   recall" in text and "macro avg" in text


def test_a_matrix_that_cannot_fit_says_so_in_one_line(evaluation):
    text = render(
        24, False, lambda c: print_report(c, evaluation, checkpoint="m", split="test", device="cpu")
    )
    check_fits(text, 24)
    flat = " ".join(text.split())
    assert "confusion matrix left out: it needs" in flat and "--json" in flat
    assert "terminal has 24" in flat


@pytest.fixture(scope="module")
def summary():
    from mnistcli.model import build_model
    from mnistcli.summary import summarize

    return summarize(build_model("simplecnn"))


@pytest.mark.parametrize("width", WIDTHS)
def test_inspect_tables_keep_shapes_and_counts_whole(summary, width):
    text = render(width, False, lambda c: c.print(inspect_view(summary, None, c)))
    check_fits(text, width)
    for layer in summary.layers:
        assert layer.name in text
        if layer.params:
            assert f"{layer.params:,}" in text
        if layer.macs:
            assert f"{layer.macs:,}" in text
    for formula in (f for layer in summary.layers for f in layer.formulas):
        assert formula in text.replace("\n", "")
    assert f"{summary.params:,}" in text and f"{summary.macs:,}" in text


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("width", WIDTHS)
def test_a_digit_without_images_shows_dashes_and_stays_out_of_the_average(width, color):
    """Your own digits without a folder for 4: its row reads '-' for its scores (not 0.00%),
    a note says why, the average is over the nine present, and the worst F1 in red is a
    digit present (3, whose images were all taken for 7s)."""
    from mnistcli.metrics import class_scores, macro_average
    from mnistcli.render.eval_view import class_view

    cm = torch.eye(10, dtype=torch.long) * 2
    cm[4, 4], cm[3, 3], cm[3, 7] = 0, 0, 2
    scores = class_scores(cm)
    macro = macro_average(scores)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        no_color=not color,
    )
    console.print(class_view(console, scores, macro))
    raw = buffer.getvalue()
    text = ANSI.sub("", raw)
    check_fits(text, width)
    row = next(line.split() for line in text.splitlines() if line.split()[:1] == ["4"])
    assert row == ["4", "-", "-", "-", "0", "0"]
    assert "no images of the digit and none predicted as it" in " ".join(text.split())
    # precision over the nine present: seven 100%s, 3 never predicted (0%) and 7 at 50%
    assert f"{100 * 7.5 / 9:.2f}" in text
    if color:
        red = [line for line in raw.splitlines() if "\x1b[1;31m" in line]
        assert len(red) == 1 and ANSI.sub("", red[0]).split()[0] == "3"
    if width < 63:
        assert "the mean over the digits present" in " ".join(text.split())
