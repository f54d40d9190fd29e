"""`inspect --image` and `predict --explain` through the command line: the views, --json,
--out-dir, and one-line errors with their exit codes (in-process and as a real subprocess)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mnistcli.cli import app
from tests.helpers import run_cli

runner = CliRunner()
ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def digits(tmp_path_factory, real_mnist) -> Path:
    """Three MNIST test digits as 28x28 PNGs, a blank one and a file that is no image."""
    folder = tmp_path_factory.mktemp("digits")
    for i in range(3):
        Image.frombytes("L", (28, 28), bytes(real_mnist.test_images[i].flatten().tolist())).save(
            folder / f"d{i}.png"
        )
    Image.new("L", (28, 28), 0).save(folder / "blank.png")
    (folder / "notes.png").write_text("not an image")
    return folder


@pytest.mark.slow
def test_inspect_image_json_lists_every_layer_in_forward_order(trained_run, digits):
    args = ["inspect", "--checkpoint", str(trained_run), "--image", str(digits / "d0.png")]
    result = runner.invoke(app, [*args, "--raw", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    acts = doc["activations"]
    assert [a["layer"] for a in acts] == [layer["name"] for layer in doc["layers"]]
    first = acts[0]
    assert first["type"] == "Conv2d" and first["shape"] == [32, 28, 28]
    assert {"layer", "type", "shape", "mean", "max", "fraction_zero"} <= first.keys()
    relu = acts[2]  # conv, max-pool, ReLU
    assert relu["type"] == "ReLU" and 0 < relu["fraction_zero"] < 1 and relu["mean"] > 0
    assert acts[-1]["shape"] == [10] and doc["image"]["digit"] in range(10)
    assert sum(doc["image"]["probabilities"]) == pytest.approx(1, abs=1e-4)


@pytest.mark.slow
def test_inspect_image_draws_the_layers_and_saves_the_figures(trained_run, digits, tmp_path):
    args = ["inspect", "--checkpoint", str(trained_run), "--image", str(digits / "d1.png")]
    result = runner.invoke(app, [*args, "--raw", "--out-dir", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "features.0  Conv2d  (32, 28, 28)" in out and "its 32 learned 3x3 filters" in out
    assert "features.1  MaxPool2d  (32, 14, 14)" in out and "units 0-" in out
    assert "softmax turns them into probabilities" in out
    assert not ANSI.search(out)
    with Image.open(tmp_path / "figs" / "feature_maps.png") as im:
        assert im.format == "PNG" and im.width > 1000 and im.height > im.width
    with Image.open(tmp_path / "figs" / "filters.png") as im:
        assert im.format == "PNG" and im.width > 500
    assert "wrote" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["missing.png", "notes.png", "."])
def test_inspect_bad_image_is_one_line_and_exit_2(trained_run, digits, name):
    path = str(digits / name)
    result = runner.invoke(app, ["inspect", "--checkpoint", str(trained_run), "--image", path])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_inspect_image_shows_the_input_and_the_verdict_first(trained_run, digits):
    """The answer at the top: the image, the digit and its probability, the 28x28 input the
    model saw; then every layer in forward order; the model's description last."""
    args = ["inspect", "--checkpoint", str(trained_run), "--image", str(digits / "d0.png")]
    doc = json.loads(runner.invoke(app, [*args, "--raw", "--json"]).stdout)
    digit = doc["image"]["digit"]
    p = max(doc["image"]["probabilities"])
    out = runner.invoke(app, [*args, "--raw"]).stdout
    lines = out.splitlines()
    assert lines[0] == str(digits / "d0.png")
    assert lines[1].startswith(f"digit {digit}  ") and lines[1].endswith(f"{100 * p:.1f}%")
    assert "input: 28x28, taken as is (--raw)" in out
    positions = [
        out.index("28x28 input"),
        out.index("features.0  Conv2d"),
        out.index("classifier.4  Linear"),
        out.index("SimpleCNN on one (N, 1, 28, 28) input"),
    ]
    assert positions == sorted(positions)
    assert len(doc["image"]["pixels"]) == 28 and {len(r) for r in doc["image"]["pixels"]} == {28}
    assert doc["image"]["raw"] is True


@pytest.mark.slow
def test_inspect_layer_shows_one_layer_and_refuses_an_unknown_name(trained_run, digits):
    args = ["inspect", "--checkpoint", str(trained_run), "--image", str(digits / "d1.png")]
    result = runner.invoke(app, [*args, "--layer", "classifier.1"])
    assert result.exit_code == 0, result.output
    titles = re.findall(
        r"^(\S+)  (Conv2d|MaxPool2d|ReLU|Flatten|Linear|Dropout)  ", result.stdout, re.M
    )
    assert titles == [("classifier.1", "Linear")]
    assert "128 hidden units" in result.stdout and "SimpleCNN on one" not in result.stdout
    assert result.stdout.splitlines()[0] == str(digits / "d1.png")  # the verdict still on top
    doc = json.loads(runner.invoke(app, [*args, "--layer", "classifier.1", "--json"]).stdout)
    assert [a["layer"] for a in doc["activations"]] == ["classifier.1"]
    assert len(doc["layers"]) == 11  # the description itself is whole
    result = runner.invoke(app, [*args, "--layer", "feature.0"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: --layer feature.0: no such layer (did you mean")
    assert "'features.0'" in result.stderr and "classifier.4" in result.stderr


@pytest.mark.slow
def test_inspect_image_needs_a_checkpoint_and_save_needs_an_image(here, digits):
    result = runner.invoke(app, ["inspect", "--image", str(digits / "d0.png")])
    assert result.exit_code == 2 and "no checkpoint was loaded" in result.stderr
    result = runner.invoke(app, ["inspect", "--out-dir", "figs"])
    assert result.exit_code == 2 and "pass --image" in result.stderr


@pytest.mark.slow
def test_predict_explain_json_adds_a_28x28_saliency(trained_run, digits):
    files = [str(digits / f) for f in ("d0.png", "blank.png", "d2.png")]
    args = ["predict", *files, "--checkpoint", str(trained_run), "--raw", "--explain", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["status"] for d in lines] == ["ok", "no digit", "ok"]
    assert lines[1]["saliency"] is None
    for doc in (lines[0], lines[2]):
        sal = doc["saliency"]
        assert len(sal) == 28 and all(len(row) == 28 for row in sal)
        values = [v for row in sal for v in row]
        assert min(values) >= 0 and max(values) > 0


@pytest.mark.slow
def test_predict_explain_draws_the_input_beside_its_saliency(trained_run, digits):
    args = ["predict", str(digits / "d0.png"), "--checkpoint", str(trained_run), "--raw"]
    result = runner.invoke(app, [*args, "--explain"])
    assert result.exit_code == 0, result.output
    assert "28x28 input" in result.stdout and "why " in result.stdout
    assert "brighter = more responsible" in result.stdout
    blank = runner.invoke(
        app, ["predict", str(digits / "blank.png"), "--checkpoint", str(trained_run), "--explain"]
    )
    assert blank.exit_code == 0 and "no digit found" in blank.stdout and "why" not in blank.stdout


@pytest.mark.slow
def test_subprocess_piped_output_has_no_escape_codes_and_errors_exit_2(trained_run, digits):
    ok = run_cli(
        "predict",
        str(digits / "d0.png"),
        str(digits / "d1.png"),
        "--checkpoint",
        str(trained_run),
        "--raw",
        "--explain",
        cwd=digits,
    )
    assert ok.returncode == 0, ok.stderr
    assert "why " in ok.stdout and not ANSI.search(ok.stdout + ok.stderr)
    assert [line for line in ok.stdout.splitlines() if line != line.rstrip()] == []
    bad = run_cli("inspect", "--checkpoint", str(trained_run), "--image", "missing.png", cwd=digits)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: missing.png: no such file" and bad.stdout == ""
