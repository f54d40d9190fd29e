"""`mnistcli inspect`: the table, --json, checkpoint details, errors, and a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mnistcli.cli import app
from tests.helpers import run_cli

runner = CliRunner()


@pytest.fixture
def runs_copy(tmp_path, trained_run) -> Path:
    """A runs folder holding a copy of the trained run (so tests may damage it)."""
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "r1")
    return runs


def test_table_shows_layers_totals_and_formulas(here):
    result = runner.invoke(app, ["inspect"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    lines = out.splitlines()
    conv1 = next(line for line in lines if line.strip().startswith("features.0 "))
    assert "Conv2d" in conv1 and "(N, 32, 28, 28)" in conv1
    assert conv1.split()[-2:] == ["320", "225,792"]
    fc1 = next(line for line in lines if line.strip().startswith("classifier.1 "))
    assert fc1.split()[-2:] == ["401,536", "401,408"]
    total = next(line for line in lines if line.strip().startswith("total "))
    assert total.split()[-2:] == ["421,642", "4,241,152"]
    assert "trainable parameters  421,642" in out
    assert "4,241,152 (4.24 M)" in out
    assert "1.61 MiB (float32)" in out
    assert "11.52 MiB per batch of 64" in out  # 188,712 bytes per image x 64
    assert "H, W: (28 + 2*1 - 3)/1 + 1 = 28" in out
    assert "H, W: (14 + 2*0 - 2)/2 + 1 = 7" in out
    assert "checkpoint" not in out  # no runs here


def test_json_is_one_document_with_the_same_figures(here):
    result = runner.invoke(app, ["inspect", "--json", "--batch-size", "7"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"] == "SimpleCNN" and doc["input_shape"] == [1, 1, 28, 28]
    assert doc["params"] == doc["trainable_params"] == 421_642
    assert doc["macs"] == 4_241_152 and doc["macs_outside_layers"] == 0
    assert [layer["output_shape"] for layer in doc["layers"]][:3] == [
        [1, 32, 28, 28],
        [1, 32, 14, 14],
        [1, 32, 14, 14],
    ]
    assert sum(layer["macs"] for layer in doc["layers"]) == doc["macs"]
    assert doc["batch_size"] == 7
    assert doc["activation_bytes_batch"] == 7 * doc["activation_bytes"]
    assert doc["layers"][0]["formulas"] == ["H, W: (28 + 2*1 - 3)/1 + 1 = 28"]
    assert doc["checkpoint"] is None


def test_batch_size_comes_from_the_config(here):
    (here / "cfg.toml").write_text('[train]\nrecipe = "fast"\n')
    result = runner.invoke(app, ["inspect", "--json", "--config", "cfg.toml"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["batch_size"] == 256  # the fast recipe's batch


@pytest.mark.slow
def test_checkpoint_details_and_weights_check(here, trained_run):
    payload = torch.load(trained_run / "best.pt", weights_only=True)
    result = runner.invoke(app, ["inspect", "--json", "--checkpoint", str(trained_run)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)["checkpoint"]
    assert info["path"] == str(trained_run / "best.pt")
    assert info["weights_loaded"] is True and info["kind"] == "best"
    assert info["created"] == payload["created"]
    assert info["epochs_run"] == len(payload["history"])
    assert info["best_epoch"] == payload["best"]["epoch"]
    assert info["best_val_acc"] == pytest.approx(payload["best"]["val_acc"])
    assert info["test_acc"] == pytest.approx(payload["test"]["acc"])
    assert info["config"] == payload["config"] and info["data"] == payload["data"]
    assert info["versions"] == payload["versions"]

    result = runner.invoke(app, ["inspect", "--checkpoint", str(trained_run / "last.pt")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "verified: they load into simplecnn" in out
    assert f"acc {100 * payload['test']['acc']:.2f}%" in out
    assert f"val acc {100 * payload['best']['val_acc']:.2f}%" in out
    assert "train-images-idx3-ubyte: " + payload["data"]["train-images-idx3-ubyte"] in out
    assert "limit=2000" in out
    assert info["world_size"] == 1 and "processes" not in out


def test_a_run_trained_under_torchrun_says_by_how_many_processes(here, runs_copy):
    path = runs_copy / "r1" / "best.pt"
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "world_size": 2}, path)  # as rank 0 of `torchrun --nproc-per-node 2`
    result = runner.invoke(app, ["inspect", "--json", "--checkpoint", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint"]["world_size"] == 2
    result = runner.invoke(app, ["inspect", "--checkpoint", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 epoch run by 2 processes (torchrun)" in result.stdout


@pytest.mark.slow
def test_latest_run_is_shown_by_default(here, runs_copy):
    result = runner.invoke(app, ["inspect", "--json", "--runs-dir", str(runs_copy)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint"]["path"] == str(runs_copy / "r1" / "best.pt")


@pytest.mark.slow
def test_a_corrupt_latest_run_is_a_warning_not_an_error(here, runs_copy):
    best = runs_copy / "r1" / "best.pt"
    best.write_bytes(best.read_bytes()[:300])
    result = runner.invoke(app, ["inspect", "--json", "--runs-dir", str(runs_copy)])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["checkpoint"] is None
    assert result.stderr.startswith("warning: cannot load checkpoint")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "missing.pt"], "error: checkpoint missing.pt does not exist"),
        (["--checkpoint", "latest"], "error: no trained model found in"),
        (["--model", "simplecn"], "did you mean 'simplecnn'?"),
        (["--batch-size", "0"], "train.batch_size = 0 (from --batch-size) is invalid"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(here, args, message):
    result = runner.invoke(app, ["inspect", *args])
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused(here, trained_run, monkeypatch):
    from mnistcli import model as model_module

    monkeypatch.setitem(model_module.MODELS, "other", torch.nn.Linear)
    result = runner.invoke(
        app, ["inspect", "--model", "other", "--checkpoint", str(trained_run / "best.pt")]
    )
    assert result.exit_code == 2
    assert "--model other does not match" in result.stderr


@pytest.mark.slow
def test_subprocess_corrupt_checkpoint_and_piped_output(tmp_path, trained_run):
    bad = tmp_path / "bad.pt"
    bad.write_bytes((trained_run / "best.pt").read_bytes()[:1000])
    proc = run_cli("inspect", "--checkpoint", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: cannot load checkpoint {bad}: it is truncated")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr

    proc = run_cli("inspect", "--checkpoint", str(trained_run), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "Traceback" not in proc.stdout
    assert "\x1b[" not in proc.stdout
    assert "421,642" in proc.stdout and "verified: they load into simplecnn" in proc.stdout
    assert [line for line in proc.stdout.splitlines() if line != line.rstrip()] == []


@pytest.mark.slow
def test_inspect_never_imports_torchvision(tmp_path, trained_run):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mnistcli.cli import app\n"
        f"r = CliRunner().invoke(app, ['inspect', '--checkpoint', {str(trained_run)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torchvision' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, text=True, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
