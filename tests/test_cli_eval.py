"""`mnistcli eval`: printed figures, --json, saved files, rendering, bad checkpoints, and a real
subprocess on the full test set."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.metrics import Mistake
from mnistcli.render.console import probability
from tests.helpers import SHARED_MNIST, on_a_terminal, run_cli

runner = CliRunner()


@pytest.fixture
def run_copy(tmp_path, trained_run) -> Path:
    """A copy of the trained run, so eval may write its files into it."""
    target = tmp_path / "runs" / "r1"
    shutil.copytree(trained_run, target)
    return target


def data_args(mnist_root: Path) -> list[str]:
    return ["--data-root", str(mnist_root), "--data", str(SHARED_MNIST)]


def matrix_rows(text: str) -> list[list[int]]:
    """The ten matrix rows of printed output: 'label  c0 ... c9', the diagonal [bracketed]."""
    start = text.index("confusion matrix")
    rows = []
    for line in text[start:].splitlines():
        cells = line.split()
        if len(cells) == 11 and cells[0] == str(len(rows)):
            rows.append([int(c.strip("[]").replace(",", "")) for c in cells[1:]])
        if len(rows) == 10:
            break
    return rows


# --- printed output, --json and saved files ------------------------------------------------


@pytest.mark.slow
def test_val_split_printed_json_and_files_agree(here, run_copy, mnist_root):
    args = ["eval", "--checkpoint", str(run_copy), "--split", "val", "--pairs", "4"]
    args += ["--gallery", "3", *data_args(mnist_root)]
    printed = runner.invoke(app, args)
    assert printed.exit_code == 0, printed.output
    as_json = runner.invoke(app, [*args, "--json", "--no-save"])
    assert as_json.exit_code == 0, as_json.output
    assert as_json.stderr == ""
    doc = json.loads(as_json.stdout)  # one JSON document, nothing else

    # the held-out split of the checkpoint's run: val_size 500, seed 0 (see conftest)
    assert doc["split"] == "val" and doc["n"] == 500
    saved = json.loads((run_copy / "eval_val.json").read_text())
    assert saved["confusion_matrix"] == doc["confusion_matrix"]
    assert saved["accuracy"] == doc["accuracy"]
    history = json.loads((run_copy / "metrics.json").read_text())["history"]
    assert doc["accuracy"] == pytest.approx(history[-1]["val_acc"])  # what training measured
    assert doc["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-4)

    out = printed.stdout
    assert f"accuracy   {100 * doc['accuracy']:.2f}%" in out
    ci = doc["accuracy_ci"]
    assert f"95% CI {100 * ci['low']:.2f}% to {100 * ci['high']:.2f}% (Wilson" in out
    assert f"errors     {doc['errors']:,} of 500" in out
    assert f"mean loss  {doc['loss']:.4f}" in out
    assert matrix_rows(out) == doc["confusion_matrix"]
    for cls in doc["per_class"]:
        row = next(
            line.split()
            for line in out[out.index("per class") :].splitlines()
            if line.split()[:1] == [str(cls["label"])]
        )
        assert row[1:4] == [f"{100 * cls[k]:.2f}%" for k in ("precision", "recall", "f1")]
        assert row[4] == f"{cls['support']:,}"
    assert len(doc["top_confused"]) == 4
    for pair in doc["top_confused"]:
        assert re.search(rf"^  {pair['true']} -> {pair['pred']}  +{pair['count']} ", out, re.M)
    assert len(doc["misclassified"]) == 3
    for m in doc["misclassified"]:
        caption = f"{m['true']} -> {m['pred']}  {probability(m['confidence'])}  #{m['index']}"
        assert caption in out
    assert "▀" in out or "▄" in out or "█" in out  # the digits are drawn


@pytest.mark.slow
def test_settings_reach_the_core(here, run_copy, mnist_root, monkeypatch):
    """Flags become the exact arguments of evaluate_model; --split val is the run's own split."""
    import mnistcli.metrics as metrics
    from mnistcli.data import load_mnist, split_indices

    seen = {}
    real = metrics.evaluate_model

    def spy(model, images, labels, **kwargs):
        seen.update(kwargs, images=images, labels=labels)
        return real(model, images[:50], labels[:50], **kwargs)

    monkeypatch.setattr(metrics, "evaluate_model", spy)
    args = ["eval", "--checkpoint", str(run_copy / "best.pt"), "--split", "val", "--no-save"]
    args += ["-b", "7", "--pairs", "2", "--gallery", "0", "--device", "cpu", *data_args(mnist_root)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["batch_size"] == 7 and seen["top"] == 2 and seen["gallery"] == 0
    assert str(seen["device"]) == "cpu"
    mnist = load_mnist(mnist_root, [str(SHARED_MNIST)])
    val = split_indices(60_000, 500, 0).val
    assert torch.equal(seen["labels"], mnist.train_labels[val])
    assert "most confident mistakes" not in result.stdout  # --gallery 0
    assert not list(run_copy.glob("eval*.json"))  # --no-save


@pytest.mark.slow
def test_full_test_set_as_a_subprocess(tmp_path, run_copy, mnist_root):
    save = tmp_path / "figures"
    proc = run_cli(
        *["eval", "--checkpoint", str(run_copy / "best.pt")],
        *["--out-dir", str(save), "--gallery", "16", *data_args(mnist_root)],
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr  # piped: no escape codes
    assert [line for line in proc.stdout.splitlines() if line != line.rstrip()] == []
    doc = json.loads((save / "eval.json").read_text())
    assert doc["n"] == 10_000 and doc["split"] == "test"
    assert sum(map(sum, doc["confusion_matrix"])) == 10_000
    assert matrix_rows(proc.stdout) == doc["confusion_matrix"]
    assert "[bracketed]" not in proc.stdout and "[n]: correct predictions" in proc.stdout
    assert f"{doc['errors']:,} of 10,000" in proc.stdout
    assert sorted(p.name for p in save.iterdir()) == [
        "confusion_matrix.png",
        "eval.json",
        "misclassified.png",
    ]
    with Image.open(save / "confusion_matrix.png") as im:
        assert (im.format, im.size) == ("PNG", (700, 700))
    with Image.open(save / "misclassified.png") as im:
        # 8 columns of 84 px digits + 8 px gaps; 2 rows of 84 + 22 (caption) + 8, 36 px title
        assert (im.format, im.size) == ("PNG", (744, 272))
    assert not (run_copy / "eval.json").exists()  # --out-dir DIR, not the run folder


# --- rendering -------------------------------------------------------------------------------


def sample_matrix() -> list[list[int]]:
    cm = [[(7 * t + 3 * p) % 13 for p in range(10)] for t in range(10)]
    for i in range(10):
        cm[i][i] = 950 + 20 * i  # 950 .. 1130
    cm[4][9] = 1234
    return cm


@pytest.mark.parametrize("color", [False, True])
def test_rendered_matrix_contains_every_count(color):
    from mnistcli.render.eval_view import confusion_table

    console = Console(width=120, force_terminal=color, color_system="truecolor" if color else None)
    with console.capture() as cap:
        console.print(confusion_table(sample_matrix(), color=color))
    text = cap.get()
    assert ("\x1b[" in text) == color
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert matrix_rows(plain) == sample_matrix()
    if not color:  # without colour the diagonal stands out by its brackets
        assert "[950]" in plain and "[1130]" in plain and "[1234]" not in plain


def test_gallery_without_colour_uses_half_blocks():
    from mnistcli.render.eval_view import gallery

    pixels = bytearray(784)
    for y in range(6, 22):
        pixels[y * 28 + 14] = 255  # a vertical stroke: a "1"
    mistakes = [Mistake(i, 1, 7, 0.875, 0.1, bytes(pixels)) for i in range(5)]
    console = Console(width=80, color_system=None)
    with console.capture() as cap:
        console.print(gallery(mistakes, 5, 80, color=False))
    lines = cap.get().splitlines()
    assert lines[0] == "most confident mistakes (5 of 5)"
    art = [line for line in lines[2:] if line.strip() and "->" not in line]
    assert art and set("".join(art)) <= set(" ▀▄█")
    assert "█" in "".join(art)
    captions = [line for line in lines[2:] if "->" in line]
    assert captions[0].count("1 -> 7  87.5%") == 3  # 3 tiles of 24 columns fit in 80
    assert "#4" in captions[1]


def test_digit_rows_reads_bytes_and_tensors_alike_and_crops_the_margin():
    from mnistcli.render.digits import digit_rows

    image = torch.zeros(28, 28, dtype=torch.uint8)
    image[2, 2] = 255  # ink on the upper pixel of the first cropped cell
    image[5, 3] = 99  # below the ink threshold: blank without colour
    image[7, 4] = 200  # lower pixel of a cell
    flat = bytes(image.flatten().tolist())
    for style in ("blocks", "shades"):
        assert [t.plain for t in digit_rows(flat, color=False, plain=style)] == [
            t.plain for t in digit_rows(image, color=False, plain=style)
        ]
    rows = [t.plain for t in digit_rows(flat, color=False, crop=2)]
    assert len(rows) == 12 and {len(r) for r in rows} == {24}
    assert rows[0][0] == "▀" and rows[1][1] == " " and rows[2][2] == "▄"
    assert set("".join(rows)) == {" ", "▀", "▄"}
    coloured = digit_rows(flat, color=True, crop=2)
    assert [t.plain for t in coloured] == ["▀" * 24] * 12
    style = coloured[2].get_style_at_offset(Console(), 2)
    assert style.color.get_truecolor() == (0, 0, 0)
    assert style.bgcolor.get_truecolor() == (200, 200, 200)


@pytest.mark.slow
def test_a_history_in_another_form_only_drops_the_curves(here, trained_run, mnist_root):
    first = torch.load(trained_run / "best.pt", weights_only=True)["history"][0]
    outputs = {}
    for name, history in (
        ("good", [first, {**first, "epoch": 2, "val_loss": first["val_loss"] / 2}]),
        ("oddy", ["epoch one", {"epoch": 2}]),
    ):
        (here / name).mkdir()  # the same file name in both: the padded report lines match
        path = crafted(here / name / "best.pt", trained_run, history=history)
        args = ["eval", "--checkpoint", str(path), "--split", "val", "--gallery", "0"]
        result = runner.invoke(app, [*args, "--no-save", *data_args(mnist_root)])
        assert result.exit_code == 0, result.output
        out = result.stdout.replace(str(path.parent), "FOLDER")
        out = re.sub(r"^time .*$", "time (measured)", out, count=1, flags=re.M)
        outputs[name] = (out, result.stderr)
    (good_out, good_err), (odd_out, odd_err) = outputs["good"], outputs["oddy"]
    # stderr: the same note on the validation split; the curves follow it only for the good one
    assert odd_err.startswith("note: the validation split") and good_err.startswith(odd_err)
    curves = good_err[len(odd_err) :]
    assert "loss   • train   ▞ val" in curves and "accuracy %   • train" in curves
    assert "▞" not in odd_err and "┤" not in odd_err
    assert odd_out == good_out  # the report itself is the same, line for line
    assert f"accuracy   {100 * first['val_acc']:.2f}%" in odd_out


# --- bad input: one line on stderr, exit code 2 ------------------------------------------------


def crafted(path: Path, trained_run: Path, **changes) -> Path:
    payload = torch.load(trained_run / "best.pt", weights_only=True)
    payload.update(changes)
    torch.save(payload, path)
    return path


def bad_checkpoints(tmp: Path, trained_run: Path) -> dict[str, tuple[Path, str]]:
    text = tmp / "notes.pt"
    text.write_text("not a checkpoint\n")
    truncated = tmp / "truncated.pt"
    truncated.write_bytes((trained_run / "best.pt").read_bytes()[:20_000])
    other = crafted(
        tmp / "other.pt",
        trained_run,
        model_state={"fc.weight": torch.zeros(10, 784), "fc.bias": torch.zeros(10)},
    )
    state = dict(torch.load(trained_run / "best.pt", weights_only=True)["model_state"])
    state["features.0.weight"] = torch.zeros(16, 1, 3, 3)
    narrower = crafted(tmp / "narrower.pt", trained_run, model_state=state)
    foreign = tmp / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    return {
        "text": (text, "truncated, corrupt or not a PyTorch file"),
        "truncated": (truncated, "truncated, corrupt or not a PyTorch file"),
        "other architecture": (other, "another architecture"),
        "other shapes": (narrower, "shape mismatch"),
        "not mnistcli": (foreign, "not an mnistcli checkpoint"),
        "missing": (tmp / "nope.pt", "does not exist"),
    }


@pytest.mark.slow
def test_bad_checkpoints_exit_2_with_one_line(here, trained_run):
    for name, (path, message) in bad_checkpoints(here, trained_run).items():
        result = runner.invoke(app, ["eval", "--checkpoint", str(path)])
        assert result.exit_code == 2, (name, result.output)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert message in lines[0], (name, lines[0])


def test_no_checkpoint_names_the_command_that_makes_one(here):
    proc = run_cli("eval", cwd=here, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "no trained model found" in proc.stderr and "mnistcli train" in proc.stderr


def test_bad_options(here):
    for args, message in [
        (["--pairs", "-1"], "eval.pairs = -1 (from --pairs) is invalid"),
        (["--gallery", "-2"], "eval.gallery = -2 (from --gallery) is invalid"),
        (["--batch-size", "0"], "eval.batch_size = 0"),
        (["--split", "train"], "--split train: not one of 'test', 'val'"),
    ]:
        result = runner.invoke(app, ["eval", *args])
        assert result.exit_code == 2, args
        assert message in result.stderr, (args, result.stderr)


def test_help_lists_the_options():
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    for option in ("--checkpoint", "--split", "--device", "--pairs", "--gallery", "--out-dir"):
        assert option in result.stdout
    assert "test" in result.stdout and "val" in result.stdout


@pytest.mark.slow
def test_unwritable_save_folder_is_one_line(here, run_copy, mnist_root):
    blocker = here / "a-file"
    blocker.write_text("in the way")
    args = ["eval", "--checkpoint", str(run_copy), "--split", "val", "--gallery", "0"]
    result = runner.invoke(app, [*args, "--out-dir", str(blocker / "sub"), *data_args(mnist_root)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot write the results to ")
    assert "--no-save" in errors[0] and "Traceback" not in result.stderr


def test_curves_png_marks_the_best_epoch(tmp_path):
    """curves.png: a dashed line in MARK's grey at the best epoch, in both charts; none without
    a best epoch."""
    import numpy as np

    from mnistcli.figures import MARK, save_curves
    from mnistcli.records import EpochStats

    history = [
        EpochStats(e, 1 / e, 0.9 + e / 100, 1.2 / e, 0.9 + e / 110, 1e-3, 1.0, 1.0)
        for e in range(1, 6)
    ]

    def columns(best):
        save_curves(history, tmp_path / "c.png", best)
        with Image.open(tmp_path / "c.png") as im:
            pixels = np.asarray(im.convert("RGB"))
        grey = (pixels == np.array(MARK, np.uint8)).all(axis=2)
        return np.flatnonzero(grey.sum(axis=0) > 100)  # columns with a tall grey line

    assert len(columns(None)) == 0
    left, right = columns(2), columns(4)
    assert len(left) >= 2 and len(right) >= 2  # one line in each of the two charts
    assert (right > left).all()  # a later epoch, further right


# --- only the split's files; progress on a terminal only ----------------------------------


@pytest.mark.slow
def test_test_split_needs_only_the_test_files(tmp_path, run_copy):
    """A data folder holding only the two t10k files is enough for `eval` (the test split)."""
    only_test = tmp_path / "only-test"
    only_test.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED_MNIST / name, only_test / name)
    root = tmp_path / "root"
    args = ["eval", "--checkpoint", str(run_copy), "--no-save", "--json"]
    result = runner.invoke(app, [*args, "--data", str(only_test), "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 10_000
    assert sorted(p.name for p in root.iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]


@pytest.mark.slow
def test_progress_on_a_terminal_even_with_no_color_and_json(tmp_path, run_copy, mnist_root):
    import os

    env = {**os.environ, "TERM": "xterm-256color", "NO_COLOR": "1", "COLUMNS": "80"}
    args = ["eval", "--checkpoint", str(run_copy), "--no-save", "--json", "-b", "100"]
    out, screen = on_a_terminal([*args, *data_args(mnist_root)], tmp_path, env, stream="stderr")
    assert json.loads(out)["n"] == 10_000  # stdout: the JSON document alone
    assert "scoring" in screen and "/10,000 images" in screen
    assert "\x1b[3" not in screen  # NO_COLOR: no colour codes, the progress all the same

    piped = run_cli(*args, *data_args(mnist_root), cwd=tmp_path, timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""  # no terminal: no progress at all


@pytest.mark.slow
@pytest.mark.parametrize("columns", [60, 40])
def test_a_narrow_terminal_shows_every_confusion_count(tmp_path, run_copy, mnist_root, columns):
    """In a real terminal 60 or 40 columns wide, every count of the confusion matrix is on the
    screen, whole, and no line is wider than the terminal (issue 23: never hidden silently)."""
    import os

    args = ["eval", "--checkpoint", str(run_copy), "--no-save", *data_args(mnist_root)]
    doc = json.loads(run_cli(*args, "--json", cwd=tmp_path, timeout=120).stdout)
    env = {**os.environ, "TERM": "xterm-256color", "NO_COLOR": "1"}
    _, screen = on_a_terminal(args, tmp_path, env, stream="stdout", columns=columns)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen).splitlines()
    assert max(len(line) for line in plain) <= columns
    start = next(i for i, line in enumerate(plain) if line.startswith("confusion matrix"))
    rows = {}
    for line in plain[start + 1 :]:
        cells = line.split()
        counts_only = all(re.fullmatch(r"\[?\d+\]?|·", c) for c in cells[1:])
        if cells and cells[0].isdigit() and len(cells) >= 11 and counts_only:
            rows[int(cells[0])] = sorted(int(c.strip("[]")) for c in cells[1:] if c != "·")
        if len(rows) == 10:
            break
    assert sorted(rows) == list(range(10)), plain[start : start + 16]
    for t, counts in rows.items():
        assert counts == sorted(doc["confusion_matrix"][t]), (t, counts)


def test_the_curves_without_colour_end_no_line_in_spaces():
    """eval's curves on a piped stderr: plotext pads its lines to the chart's width; a file
    must not keep the padding (the house rule for piped text)."""
    from mnistcli.records import EpochStats
    from mnistcli.render.charts import curves

    history = [
        EpochStats(e, 1 / e, 0.9 + e / 100, 1.2 / e, 0.9 + e / 110, 1e-3, 1.0, 1.0)
        for e in range(1, 6)
    ]
    plain = curves(history, 100, 14, color=False)
    assert "accuracy %" in plain and not [line for line in plain.splitlines() if line.endswith(" ")]
