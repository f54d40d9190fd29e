"""`--device cuda` on a real GPU: training (fp32, bf16, compiled), resume, checkpoints that move
to the CPU, eval and predict on the GPU, device errors, data resident on the GPU, and no host
synchronisation per batch. Skipped where no CUDA GPU is available; bench/gpu_check.sh runs them
on a GPU machine with `pytest -m cuda`."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mnistcli import resume, run_state
from mnistcli import train as trainer
from mnistcli.checkpoint import load_checkpoint
from mnistcli.cli import app
from mnistcli.events import BatchDone, EpochStarted
from tests.helpers import SHARED_MNIST, make_settings, run_cli

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

runner = CliRunner()


def cuda_settings(tmp: Path, mnist_root: Path, **hyper):
    """make_settings on the GPU, with real MNIST's cache as the data root."""
    return dataclasses.replace(make_settings(tmp, mnist_root, **hyper), device="cuda")


def data_args(mnist_root: Path) -> list[str]:
    return ["--data-root", str(mnist_root), "--data", str(SHARED_MNIST)]


# --- training on the GPU -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compile"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trains_a_few_hundred_steps(tmp_path, real_mnist, mnist_root, precision, compiled):
    events = []
    settings = cuda_settings(
        tmp_path,
        mnist_root,
        epochs=3,
        limit=6400,
        val_size=1000,
        batch_size=64,
        precision=precision,
    )
    settings = dataclasses.replace(settings, compile=compiled)
    result = trainer.train(settings, real_mnist, on_event=events.append)
    started = events[0]
    assert started.device == "cuda:0" and started.precision == precision
    assert started.batches_per_epoch * result.epochs_run == 300  # 6,400 / 64 x 3 epochs
    assert result.device == "cuda:0" and result.stop_reason == "finished"
    assert result.best_val_acc >= 0.95 and result.test_acc >= 0.95  # chance is 0.10
    assert result.history[-1].train_loss < result.history[0].train_loss
    state = load_checkpoint(result.run_dir / "best.pt").model_state
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in state.values())
    assert all(not k.startswith("_orig_mod") for k in state)  # compile's wrapper not saved


def history_of(result) -> list[tuple[int, float]]:
    return [(h.epoch, h.lr) for h in result.history]


@pytest.mark.slow
def test_interrupted_run_resumes_on_cuda(tmp_path, real_mnist, mnist_root, monkeypatch):
    hyper = {
        "epochs": 2,
        "patience": 0,
        "limit": 3200,
        "val_size": 1000,
        "batch_size": 64,
        "shift": 1.0,
        "schedule": "onecycle",
        "lr": 3e-3,
        "precision": "bf16",
    }
    full = trainer.train(cuda_settings(tmp_path / "full", mnist_root, **hyper), real_mnist)
    settings = cuda_settings(tmp_path / "cut", mnist_root, **hyper)
    batches = {"n": 0}

    def count(event):
        if isinstance(event, BatchDone):
            batches["n"] += 1

    monkeypatch.setattr(run_state, "PROGRESS_INTERVAL", 0.0)  # an event every batch
    cut = trainer.train(
        settings, real_mnist, on_event=count, should_stop=lambda: batches["n"] >= 30
    )
    monkeypatch.undo()
    assert cut.stop_reason == "interrupted" and cut.interrupted_at == (1, 30)
    last = load_checkpoint(cut.run_dir / "last.pt")  # loads on the CPU: map_location
    assert last.meta.step == 30 and last.resume is not None and "cuda" in last.resume.rng
    resumed = trainer.train(
        dataclasses.replace(settings, resume=str(cut.run_dir), name=None), real_mnist
    )
    assert resumed.device == "cuda:0" and resumed.run_dir == cut.run_dir
    assert history_of(resumed) == history_of(full)  # same epochs, same schedule
    # cuDNN may pick non-deterministic kernels, so equal within floating-point noise
    for a, b in zip(resumed.history, full.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=0.05)
        assert a.val_loss == pytest.approx(b.val_loss, rel=0.05)
        assert abs(a.val_acc - b.val_acc) <= 0.01
    assert abs(resumed.test_acc - full.test_acc) <= 0.01


# --- a GPU-trained checkpoint: on the CPU, and eval/predict on the GPU ----------------------------


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory, real_mnist, mnist_root) -> Path:
    """A run trained on the GPU (2 epochs on 6,000 images): its folder."""
    tmp = tmp_path_factory.mktemp("cuda-run")
    settings = cuda_settings(tmp, mnist_root, epochs=2, limit=6000, val_size=1000)
    result = trainer.train(settings, real_mnist)
    assert result.device == "cuda:0" and result.test_acc > 0.95
    return result.run_dir


@pytest.mark.slow
def test_the_train_command_on_cuda(tmp_path, mnist_root):
    pytest.importorskip("plotext")  # the train command draws curves with it
    args = ["train", "--device", "cuda", "--epochs", "1", "--limit", "6000", "--val-size", "500"]
    args += ["--json", "--runs-dir", str(tmp_path / "runs"), *data_args(mnist_root)]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["device"] == "cuda:0" and doc["stop_reason"] == "finished"
    assert doc["test_acc"] > 0.9
    summary = json.loads((Path(doc["run_dir"]) / "metrics.json").read_text())["summary"]
    assert summary["device"] == "cuda:0" and summary["test_acc"] == doc["test_acc"]


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory, real_mnist) -> tuple[Path, list[int]]:
    """The first 20 test digits as 28x28 PNG files (MNIST style) and their labels."""
    folder = tmp_path_factory.mktemp("digits")
    for i in range(20):
        image = real_mnist.test_images[i].numpy()
        Image.fromarray(image).save(folder / f"d{i:02d}.png")
    return folder, real_mnist.test_labels[:20].tolist()


def eval_json(run: Path, device: str, mnist_root: Path) -> dict:
    args = ["eval", "--checkpoint", str(run), "--device", device, "--json", "--no-save"]
    result = runner.invoke(app, [*args, *data_args(mnist_root)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def predict_json(folder: Path, run: Path, device: str) -> list[dict]:
    args = ["predict", str(folder), "--raw", "--checkpoint", str(run), "--json"]
    result = runner.invoke(app, [*args, "--device", device])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_cuda_checkpoint_is_used_on_the_cpu(here, cuda_run, mnist_root, digit_pngs):
    test = load_checkpoint(cuda_run / "best.pt").meta.test
    assert test is not None
    trained_acc = test.acc  # measured on the GPU at the end of training
    on_cpu = eval_json(cuda_run, "cpu", mnist_root)
    assert on_cpu["device"] == "cpu" and on_cpu["n"] == 10_000
    assert abs(on_cpu["accuracy"] - trained_acc) <= 0.002  # a few borderline images at most

    folder, labels = digit_pngs
    preds = predict_json(folder, cuda_run, "cpu")
    digits = [p["digit"] for p in preds]
    assert sum(d == y for d, y in zip(digits, labels, strict=True)) >= 18

    result = runner.invoke(app, ["inspect", "--json", "--checkpoint", str(cuda_run)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)["checkpoint"]
    assert info["weights_loaded"] is True and info["kind"] == "best"
    assert info["test_acc"] == pytest.approx(trained_acc)
    # the resumable last.pt (optimizer state from the GPU) also loads and is described on the CPU
    result = runner.invoke(app, ["inspect", "--checkpoint", str(cuda_run / "last.pt")])
    assert result.exit_code == 0, result.output
    assert "verified: they load into simplecnn" in result.stdout


@pytest.mark.slow
def test_eval_and_predict_on_cuda_agree_with_the_cpu(here, cuda_run, mnist_root, digit_pngs):
    on_gpu = eval_json(cuda_run, "cuda", mnist_root)
    on_cpu = eval_json(cuda_run, "cpu", mnist_root)
    assert on_gpu["device"] == "cuda:0" and on_gpu["n"] == 10_000
    assert abs(on_gpu["accuracy"] - on_cpu["accuracy"]) <= 0.001
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-3)

    folder, _ = digit_pngs
    gpu = predict_json(folder, cuda_run, "cuda")
    cpu = predict_json(folder, cuda_run, "cpu")
    assert [p["digit"] for p in gpu] == [p["digit"] for p in cpu]
    for g, c in zip(gpu, cpu, strict=True):  # cuDNN convolves in TF32: close, not equal
        assert g["probability"] == pytest.approx(c["probability"], abs=0.01)


@pytest.mark.slow
def test_a_gpu_index_beyond_the_machine_is_a_one_line_error(here, cuda_run):
    count = torch.cuda.device_count()
    for command in ("eval", "predict"):
        args = [command, "--checkpoint", str(cuda_run), "--device", f"cuda:{count}"]
        result = runner.invoke(app, args if command == "eval" else [*args, str(here)])
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
        assert f"--device cuda:{count}" in result.stderr
        assert f"has {count} CUDA device(s)" in result.stderr


def test_train_refuses_a_gpu_index_beyond_the_machine(here):
    pytest.importorskip("plotext")  # the train command draws curves with it
    count = torch.cuda.device_count()
    proc = run_cli("train", "--device", f"cuda:{count}", cwd=here)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"--device cuda:{count}: this machine has {count} CUDA device(s)" in lines[0]
    assert not (here / "runs").exists()  # refused before a run folder was made


# --- the training loop on the GPU: resident data, no per-batch host synchronisation ------------


@pytest.mark.slow
def test_training_data_is_resident_on_the_gpu(tmp_path, real_mnist, mnist_root, monkeypatch):
    made = []

    def recording(images, labels, device="cpu"):
        tensors = real_make(images, labels, device)
        made.append(tensors)
        return tensors

    real_make = trainer.make_tensors
    monkeypatch.setattr(resume, "make_tensors", recording)  # the training and validation sets
    monkeypatch.setattr(trainer, "make_tensors", recording)  # the test set
    allocated = []

    def on_event(event):
        if isinstance(event, EpochStarted):
            allocated.append(torch.cuda.memory_allocated())

    settings = cuda_settings(tmp_path, mnist_root, epochs=1, limit=20_000, val_size=1000)
    trainer.train(settings, real_mnist, on_event=on_event)
    assert [len(t) for t in made] == [20_000, 1000, 10_000]  # train, val, test
    assert all(t.x.device.type == "cuda" and t.y.device.type == "cuda" for t in made)
    assert allocated[0] >= 20_000 * 28 * 28 * 4  # the float32 training images, on the GPU


def sync_warnings(settings, mnist, interval: float, monkeypatch) -> int:
    """Host synchronisations during one training run, counted by CUDA's sync debug mode."""
    with monkeypatch.context() as patch:
        patch.setattr(run_state, "PROGRESS_INTERVAL", interval)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.train(settings, mnist)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


@pytest.mark.slow
def test_no_host_synchronisation_per_batch(tmp_path, real_mnist, mnist_root, monkeypatch):
    # the fast recipe's path: bf16 autocast, random shifts, one-cycle schedule, fused Adam
    hyper = {"epochs": 1, "val_size": 1000, "batch_size": 64, "precision": "bf16"}
    hyper |= {"shift": 1.5, "schedule": "onecycle", "lr": 3e-3}
    small = cuda_settings(tmp_path / "a", mnist_root, limit=40 * 64, **hyper)
    large = cuda_settings(tmp_path / "b", mnist_root, limit=160 * 64, **hyper)
    trainer.train(cuda_settings(tmp_path / "warm", mnist_root, limit=640, **hyper), real_mnist)

    quiet_small = sync_warnings(
        small, real_mnist, interval=1e9, monkeypatch=monkeypatch
    )  # progress once, at the end
    quiet_large = sync_warnings(large, real_mnist, interval=1e9, monkeypatch=monkeypatch)
    assert quiet_small > 0  # the counter sees the epoch's end (loss, validation, checkpoints)
    # 120 more batches, and no more synchronisations: none happens per batch
    assert quiet_large - quiet_small <= 4, (quiet_small, quiet_large)

    # and the counter does see one per batch when progress is asked for after every batch
    chatty = cuda_settings(tmp_path / "c", mnist_root, limit=40 * 64, **hyper)
    chatty_small = sync_warnings(chatty, real_mnist, interval=0.0, monkeypatch=monkeypatch)
    # (39 more batches report; one of those syncs may coincide with the epoch's own, seen on
    # an H200: 38)
    assert chatty_small - quiet_small >= 30, (quiet_small, chatty_small)
