"""`mnistcli predict`: settings it builds, output for one and many images, --json, bad input,
and a real subprocess (exit codes, stderr, piped output, no torchvision)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data import normalize
from tests.helpers import run_cli

runner = CliRunner()


def paper_digit(digit: torch.Tensor, scale: int = 5, margin: int = 60) -> Image.Image:
    """A real MNIST digit as dark ink on light paper, enlarged, off-centre, in RGB."""
    im = Image.frombytes("L", (28, 28), bytes(digit.flatten().tolist()))
    im = im.resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC).point(lambda v: 255 - v)
    canvas = Image.new("L", (im.width + 2 * margin, im.height + margin), 250)
    canvas.paste(im, (margin // 3, margin // 2))
    return canvas.convert("RGB")


@pytest.fixture(scope="module")
def expected(trained_run, real_mnist) -> list[int]:
    """The model's predictions on the first 4 original 28x28 test digits."""
    from mnistcli.loading import load_model

    model, _ = load_model(trained_run / "best.pt")
    with torch.inference_mode():
        return model(normalize(real_mnist.test_images[:4])).argmax(1).tolist()


@pytest.fixture
def images(tmp_path, real_mnist) -> Path:
    """A folder of four user-style digit images in several formats, one blank page."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for i, fmt in enumerate(["png", "jpg", "webp", "bmp"]):
        paper_digit(real_mnist.test_images[i]).save(folder / f"d{i}.{fmt}")
    Image.new("L", (120, 90), 255).save(folder / "zz_blank.png")
    return folder


@pytest.mark.slow
def test_one_image_shows_the_digit_its_probability_and_the_top_k(trained_run, images, expected):
    result = runner.invoke(
        app, ["predict", str(images / "d0.png"), "--checkpoint", str(trained_run), "-k", "4"]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"digit {expected[0]}" in out
    chart = [line for line in out.splitlines() if "%" in line and "digit" not in line]
    assert len(chart) == 4  # --top-k 4: four bars
    first = chart[0].strip("│ ").split()
    assert first[0] == str(expected[0]) and "█" in first[1]
    assert f"model: {trained_run / 'best.pt'}" in result.stderr


@pytest.mark.slow
def test_show_draws_the_28x28_input(trained_run, images):
    result = runner.invoke(
        app, ["predict", str(images / "d1.jpg"), "--checkpoint", str(trained_run), "--show"]
    )
    assert result.exit_code == 0
    art = [line for line in result.stdout.splitlines() if line.count("│") >= 3]
    assert len(art) == 28  # without colour: 28 lines of two characters per pixel
    assert any("██" in line for line in art) and "28x28 input" in result.stdout


@pytest.mark.slow
def test_many_images_give_a_table_and_a_summary(trained_run, images, expected):
    result = runner.invoke(app, ["predict", str(images), "--checkpoint", str(trained_run)])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if "scans" in line}
    for i, fmt in enumerate(["png", "jpg", "webp", "bmp"]):
        row = rows[str(images / f"d{i}.{fmt}")]
        assert row[1] == str(expected[i]) and row[2].endswith("%")
    assert "no digit found" in " ".join(rows[str(images / "zz_blank.png")])
    assert "5 images: 4 predicted, 1 no digit found" in result.stdout


@pytest.mark.slow
def test_json_is_one_object_per_image_and_nothing_else(trained_run, images, expected):
    args = ["predict", str(images / "d0.png"), str(images / "zz_blank.png"), str(images / "x.png")]
    result = runner.invoke(app, [*args, "--checkpoint", str(trained_run), "--json", "-k", "2"])
    assert result.exit_code == 1
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["status"] for d in docs] == ["ok", "no digit", "error"]
    ok, blank, failed = docs
    assert ok["digit"] == expected[0] and ok["path"] == str(images / "d0.png")
    assert [t["digit"] for t in ok["top_k"]] == [expected[0], ok["top_k"][1]["digit"]]
    assert ok["probability"] == ok["top_k"][0]["probability"] and 0 < ok["probability"] <= 1
    assert blank["digit"] is None and blank["probability"] is None and blank["top_k"] == []
    assert failed["error"].endswith("no such file or folder") and failed["digit"] is None
    assert result.stderr.strip() == f"error: {images / 'x.png'}: no such file or folder"
    assert "model:" not in result.stderr


@pytest.mark.slow
def test_bad_files_are_reported_and_the_others_still_predicted(trained_run, images, tmp_path):
    (images / "notes.png").write_text("not an image")
    (tmp_path / "[red]x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = runner.invoke(
        app,
        [
            "predict",
            str(images),
            str(tmp_path / "missing.png"),
            str(tmp_path / "*.gif"),
            str(tmp_path / "[red]x.png"),
            "--checkpoint",
            str(trained_run),
        ],
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith("model: ")]
    assert len(errors) == 4 and all(line.startswith("error: ") for line in errors)
    assert "notes.png: not an image this program reads" in errors[0]
    assert errors[1].endswith("missing.png: no such file or folder")
    assert errors[2].endswith("*.gif: no files match this pattern")
    assert "[red]x.png: not an image" in errors[3]  # a file name with markup prints as itself
    assert "9 images: 4 predicted, 1 no digit found, 4 failed" in result.stdout
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_quoted_glob_is_expanded(trained_run, images):
    result = runner.invoke(
        app, ["predict", str(images / "d*.*"), "--checkpoint", str(trained_run), "--json"]
    )
    assert result.exit_code == 0
    paths = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    names = ["d0.png", "d1.jpg", "d2.webp", "d3.bmp"]  # in name order, the blank page left out
    assert paths == [str(images / name) for name in names]


@pytest.mark.slow
def test_raw_takes_mnist_format_images_as_they_are(trained_run, real_mnist, tmp_path, expected):
    Image.frombytes("L", (28, 28), bytes(real_mnist.test_images[2].flatten().tolist())).save(
        tmp_path / "raw.png"
    )
    Image.new("L", (32, 32)).save(tmp_path / "big.png")
    args = ["predict", "--raw", "--json", "--checkpoint", str(trained_run)]
    result = runner.invoke(app, [*args, str(tmp_path / "raw.png"), str(tmp_path / "big.png")])
    assert result.exit_code == 1
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["digit"] == expected[2]
    assert "--raw needs a 28x28 image, this one is 32x32" in second["error"]


@pytest.mark.slow
def test_settings_come_from_flags_environment_and_config(trained_run, images, monkeypatch):
    """The core patched: the exact top-k, raw flag, workers and device the command passes on."""
    import mnistcli.predict

    seen = {}

    def fake(feed, backend, *, top_k, min_confidence, batch_size=256):
        seen.update(paths=list(feed.items), device=str(backend.device), top_k=top_k)
        seen.update(raw=feed.raw, min_confidence=min_confidence)
        return iter(())

    monkeypatch.setattr(mnistcli.predict, "predict_feed", fake)
    monkeypatch.setenv("MNISTCLI_PREDICT_TOP_K", "5")
    args = ["predict", str(images / "d0.png"), "--checkpoint", str(trained_run), "-d", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    assert seen == {
        **{"paths": [images / "d0.png"], "device": "cpu", "top_k": 5, "raw": False},
        "min_confidence": 0.5,
    }
    flags = ["--top-k", "2", "--raw", "--min-confidence", "0.9"]
    assert runner.invoke(app, [*args, *flags]).exit_code == 0
    assert seen["top_k"] == 2 and seen["raw"] is True and seen["min_confidence"] == 0.9
    result = runner.invoke(app, [*args, "--min-confidence", "1.5"])
    assert result.exit_code == 2 and "predict.min_confidence = 1.5" in result.stderr
    result = runner.invoke(app, [*args, "--top-k", "11"])
    assert result.exit_code == 2 and "predict.top_k = 11" in result.stderr
    assert "between 1 and 10" in result.stderr


@pytest.mark.slow
def test_no_checkpoint_is_a_usage_error(tmp_path, images):
    result = runner.invoke(app, ["predict", str(images), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "no trained model found" in result.stderr and "mnistcli train" in result.stderr
    result = runner.invoke(app, ["predict"])
    assert result.exit_code == 2 and "Missing argument" in result.output


def test_help_lists_the_options():
    result = runner.invoke(app, ["predict", "--help"])
    assert result.exit_code == 0
    for option in ("--checkpoint", "--device", "--top-k", "--show", "--raw", "--runs-dir"):
        assert option in result.output


@pytest.mark.slow
def test_real_subprocess_piped_without_torchvision(trained_run, images, tmp_path):
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    proc = run_cli(
        *["predict", str(images), "--checkpoint", str(trained_run), "--show"],
        cwd=tmp_path,
        timeout=120,
        python_args=("-X", "importtime"),
    )
    imports = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    stderr = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert any(line.rstrip().endswith("| torch") for line in imports)
    assert not any("torchvision" in line for line in imports)
    assert proc.returncode == 1
    assert stderr[0].startswith("model: ") and len(stderr) == 2
    assert stderr[1].startswith("error: ") and "broken.jpg: cannot decode the image" in stderr[1]
    assert "6 images: 4 predicted, 1 no digit found, 1 failed" in proc.stdout
    assert proc.stdout.count("╭") == 4  # --show: a gallery of the four inputs with a digit
    assert proc.stdout.count("██") > 40
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr
    assert [line for line in proc.stdout.splitlines() if line != line.rstrip()] == []  # no padding


def test_digit_art_in_colour_packs_two_pixel_rows_per_cell_and_in_shades_without():
    from rich.console import Console

    from mnistcli.render.predict_view import digit_art

    pixels = torch.zeros(28, 28, dtype=torch.uint8)
    pixels[0, 0] = 255
    pixels[1, 1] = 128
    art = digit_art(pixels, color=True)
    lines = art.plain.split("\n")
    assert len(lines) == 14 and {len(line) for line in lines} == {28}
    console = Console()
    first, second = (art.get_style_at_offset(console, i) for i in (0, 1))
    assert first.color.get_truecolor() == (255, 255, 255)  # upper pixel: the foreground
    assert first.bgcolor.get_truecolor() == (0, 0, 0)
    assert second.color.get_truecolor() == (0, 0, 0)
    assert second.bgcolor.get_truecolor() == (128, 128, 128)  # lower pixel: the background
    plain = digit_art(pixels, color=False).plain.split("\n")
    assert len(plain) == 28 and {len(line) for line in plain} == {56}
    assert plain[0].startswith("██  ") and plain[1].startswith("  ▒▒")
    assert plain[27].strip() == ""  # blank rows are kept: the whole 28x28 is shown


def test_every_row_fits_the_terminal_and_the_note_says_what_gave_way():
    """At any width from 40 columns, with the low-confidence mark and probabilities of
    100.0%, no line is wider than the terminal: the top-k list gives way first (the note
    says how much), then long paths fold."""
    from mnistcli.predict import Prediction
    from mnistcli.render.predict_view import RowFormat

    for width in (40, 60, 80, 100, 120, 200):
        for top_k in (1, 3, 10):
            for path in ("a.png", "/tmp/pw/imgs/d00957.png", "scans/" + "x" * 90 + ".png"):
                fmt = RowFormat([path], width, top_k)
                ranked = tuple((d, 1.0) for d in range(top_k))
                low = Prediction(path, 0, 1.0, ranked, low_confidence=True)
                lines = [fmt.header(), *fmt.row(low), *fmt.row(Prediction(path))]
                assert max(line.cell_len for line in lines) <= width, (width, top_k, path)
                note = fmt.note()
                if fmt.shown < top_k:
                    assert note is not None and note.plain.startswith(
                        f"top-k: {fmt.shown} of {top_k} fit in {width} columns"
                    )
                else:
                    assert note is None
    fmt = RowFormat(["/tmp/pw/imgs/d00957.png"], 80, 3)
    assert (fmt.image, fmt.shown) == (23, 2)  # the path whole, one top-k entry gives way
    assert RowFormat(["/tmp/pw/imgs/d00957.png"], 80, 3, marks=False).shown == 3
    assert RowFormat(["a.png"], None, 10).shown == 10  # a pipe: everything


def test_rows_say_why_a_file_failed_mark_low_confidence_and_fold_long_paths():
    from mnistcli.predict import Prediction
    from mnistcli.render.console import probability
    from mnistcli.render.predict_view import RowFormat, summary_line

    ok = Prediction("a.png", 4, 0.46, ((4, 0.46), (9, 0.40)), low_confidence=True)
    failed = Prediction("b.png", error="b.png: cannot decode the image", reason="cannot decode")
    fmt = RowFormat(["a.png", "b.png"], None, top_k=2)
    assert fmt.header().plain == "image  digit   prob.  top-k"
    assert fmt.row(ok)[0].plain == "a.png      4   46.0%  4 46.0%  9 40.0%  low confidence"
    assert fmt.row(failed)[0].plain.endswith("-          failed: cannot decode")
    long = "scans/" + "x" * 100 + ".png"
    folded = RowFormat([long], 60, top_k=1).row(Prediction(long, 1, 0.9, ((1, 0.9),)))
    assert "".join(line.plain.split("  ")[0] for line in folded) == long  # folded, never cut
    assert len(RowFormat([long], None).row(Prediction(long, 1, 0.9, ((1, 0.9),)))) == 1
    assert summary_line([ok, failed], 0.5).plain == (
        "2 images: 1 predicted (1 low confidence, below 50.0%), 1 failed; digits 4: 1"
    )
    assert [probability(p) for p in (1.0, 0.99999, 0.0004, 0.5)] == [
        *("100.0%", "99.9%", "0.0%", "50.0%")
    ]


def test_a_failed_rows_reason_folds_under_itself_and_piped_rows_never_wrap():
    """At 80 columns a long failure reason continues under its column, between words; in a
    pipe (no width) a row of ten guesses stays one line whatever the console's width."""
    import io

    from rich.console import Console

    from mnistcli.predict import Prediction
    from mnistcli.render.explain_view import print_predictions
    from mnistcli.render.predict_view import RowFormat

    reason = "not an image this program reads (PNG, JPEG, BMP, GIF, TIFF or WebP)"
    bad = Prediction("mix/t0110_bad.png", error="x", reason=reason)
    lines = RowFormat(["mix/t0110_bad.png"], 80, 3).row(bad)
    assert len(lines) == 2 and all(line.cell_len <= 80 for line in lines)
    column = lines[0].plain.index("failed:")
    assert lines[1].plain.startswith(" " * column) and lines[1].plain.strip() in reason
    for width in (60, 40):  # too little room beside the row: the reason goes below it
        narrow = RowFormat(["/tmp/sweepA/mix/t0110_bad.png"], width, 3).row(bad)
        assert all(line.cell_len <= width for line in narrow), width
        assert " ".join(" ".join(line.plain.split()) for line in narrow).endswith(reason)
    ranked = tuple((d, 0.1) for d in range(10))
    preds = [Prediction(f"dir/{i}.png", 0, 0.1, ranked) for i in range(2)]
    buffer = io.StringIO()
    piped = Console(file=buffer, width=80, force_terminal=False, color_system=None)
    print_predictions(piped, preds, None, show=False)
    rows = [line for line in buffer.getvalue().splitlines() if line.startswith("dir/")]
    assert len(rows) == 2 and all(row.count("%") == 11 for row in rows)  # prob. and 10 guesses


def test_the_low_confidence_threshold_is_shown_as_set():
    from mnistcli.predict import Prediction
    from mnistcli.render.predict_view import summary_line

    low = Prediction("a.png", 4, 0.99, ((4, 0.99),), low_confidence=True)
    assert "below 99.95%)" in summary_line([low], 0.9995).plain  # not rounded to 99.9%
    assert "below 50.0%)" in summary_line([low], 0.5).plain
