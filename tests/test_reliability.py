"""Reliability through the real CLI: interruptions, kill -9, a full disk, bad environments.

Every case asserts the exit code, a one-line message on stderr, no traceback, and that files
which existed before are unchanged (by hash) unless the case is meant to update them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import resource
import signal
import time
from pathlib import Path

import pytest
import torch

from mnistcli import train as trainer
from mnistcli.checkpoint import load_checkpoint
from mnistcli.errors import TrainingError
from mnistcli.events import EpochStarted
from tests.helpers import SHARED_MNIST, HalfWrite, make_settings, run_cli, start_cli

# A small real-MNIST run that takes a few seconds: 3 epochs of 1,500 images.
SMALL = [
    "--limit",
    "1500",
    "--val-size",
    "300",
    "--epochs",
    "3",
    "--batch-size",
    "50",
    "--patience",
    "0",
    "--device",
    "cpu",
]


# The kill test trains on 3,000 images (2-3 s of training): room for kills at random moments.
KILL_RUN = ["--limit", "3000", *SMALL[2:]]


def run(*args: str, cwd: Path, timeout: float = 120, **kwargs) -> tuple[int, str, str]:
    proc = run_cli(*args, cwd=cwd, timeout=timeout, **kwargs)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code: int, err: str, expected_code: int, fragment: str) -> None:
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and fragment in lines[-1], err


def hashes(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@pytest.fixture
def workdir(tmp_path, mnist_root):
    """A working directory whose .mnistcli.toml points at the verified data root."""
    (tmp_path / ".mnistcli.toml").write_text(
        f"[data]\nroot = {json.dumps(str(mnist_root))}\n"
        f"mirrors = {json.dumps([str(SHARED_MNIST)])}\n"
    )
    return tmp_path


def history(run_dir: Path) -> list[tuple]:
    doc = json.loads((run_dir / "metrics.json").read_text())
    return [(h["epoch"], h["train_loss"], h["val_loss"], h["val_acc"]) for h in doc["history"]]


@pytest.mark.parametrize(
    ("sig", "code", "word"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_signal_saves_a_resumable_checkpoint(workdir, sig, code, word):
    proc = start_cli("train", *SMALL, "--name", "sig", cwd=workdir)
    for line in proc.stderr:  # plain mode: one line per epoch; signal during epoch 2
        if line.startswith("epoch  1"):
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"{word}: stopped in epoch" in err and "--resume" in err and "Traceback" not in err
    last = load_checkpoint(workdir / "runs" / "sig" / "last.pt")
    assert last.meta.finished is False and last.meta.epoch >= 1
    if sig == signal.SIGTERM:
        return  # resuming is the same for both signals; once is enough for the suite's time
    code, _, err = run("train", "--resume", "runs/sig", cwd=workdir)
    assert code == 0, err
    assert [h[0] for h in history(workdir / "runs" / "sig")] == [1, 2, 3]


def test_kill_9_at_random_moments_never_leaves_a_broken_checkpoint(workdir, real_mnist):
    """Kill the trainer at seeded random moments; after each kill the checkpoints load and the
    run resumes; the final history equals an uninterrupted run's."""
    rng = random.Random(1234)
    run_dir = workdir / "runs" / "k"
    kills = 0
    for _ in range(3):
        resuming = (run_dir / "last.pt").exists()
        args = ["--resume", "runs/k"] if resuming else [*KILL_RUN, "--name", "k"]
        proc = start_cli("train", *args, cwd=workdir)
        proc.stderr.readline()  # the run's first line: data loaded, training starts now
        time.sleep(rng.uniform(0.1, 1.8))  # 9,000 images take 2 s or more: a kill lands in training
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate(timeout=60)
        for name in ("last.pt", "best.pt"):
            if (run_dir / name).exists():
                load_checkpoint(run_dir / name)  # complete, never partial
        if (run_dir / "last.pt").exists() and load_checkpoint(run_dir / "last.pt").meta.finished:
            break
    if not (run_dir / "last.pt").exists():  # every kill came before the first save
        code, _, err = run("train", *KILL_RUN, "--name", "k", cwd=workdir)
        assert code == 0, err
    elif not load_checkpoint(run_dir / "last.pt").meta.finished:
        code, _, err = run("train", "--resume", "runs/k", cwd=workdir)
        assert code == 0, err
    assert kills >= 1
    reference = trainer.train(
        make_settings(
            workdir / "ref", epochs=3, limit=3000, val_size=300, batch_size=50, patience=0
        ),
        real_mnist,
    )
    expected = [(h.epoch, h.train_loss, h.val_loss, h.val_acc) for h in reference.history]
    got = history(run_dir)
    assert [g[0] for g in got] == [1, 2, 3]
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-5, abs=1e-6)


def limit_file_size(nbytes: int):
    def apply() -> None:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


def test_a_full_disk_while_saving_keeps_previous_checkpoints(workdir):
    code, _, err = run(
        "train",
        "--limit",
        "500",
        "--val-size",
        "200",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--name",
        "d",
        cwd=workdir,
    )
    assert code == 0, err
    run_dir = workdir / "runs" / "d"
    last = torch.load(run_dir / "last.pt", weights_only=True)
    last["finished"] = False  # make it resumable for a second epoch
    last["config"]["epochs"] = 2
    torch.save(last, run_dir / "last.pt")
    before = hashes(run_dir)
    code, _, err = run(
        "train", "--resume", "runs/d", cwd=workdir, preexec_fn=limit_file_size(512 * 1024)
    )
    assert_one_line_error(code, err, 2, "could not save")
    assert "intact" in err
    # the write fails past 512 KiB, inside write_atomic; the message names the file
    assert re.search(r"^error: could not save runs/d/(best|last)\.pt: File too large", err, re.M)
    assert hashes(run_dir) == before
    assert not list(run_dir.glob(".*.tmp"))


def test_full_disk_in_process_maps_to_training_error(tmp_path, tiny_mnist, monkeypatch):
    """Epoch 2's last.pt fails half-way through its write: a one-line TrainingError naming the
    file; epoch 1's last.pt is byte for byte as it was and no temporary file is left."""
    settings = make_settings(tmp_path, epochs=2, val_size=100, batch_size=100)
    run_dir = tmp_path / "runs" / "test"
    half = HalfWrite("last.pt", skip=1).install(monkeypatch)  # epoch 1's last.pt goes through
    before = {}

    def on_event(event):
        if isinstance(event, EpochStarted) and event.epoch == 2:
            before.update(hashes(run_dir))

    with pytest.raises(TrainingError) as failure:
        trainer.train(settings, tiny_mnist, on_event=on_event)
    message = str(failure.value)
    assert message.startswith(f"could not save {run_dir / 'last.pt'}: No space left on device")
    assert "intact" in message and "\n" not in message
    [(temp, written)] = half.partial
    assert temp.parent == run_dir and written > 800_000  # half of the checkpoint was on disk
    assert hashes(run_dir)["last.pt"] == before["last.pt"]
    assert load_checkpoint(run_dir / "last.pt").meta.epoch == 1
    assert not list(run_dir.glob(".*.tmp"))


def test_unwritable_output_folder(workdir):
    blocker = workdir / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run("train", *SMALL, "--out", "a-file/runs", cwd=workdir)
    assert_one_line_error(code, err, 2, "cannot create the runs folder")
    assert blocker.read_text() == "not a folder"


def test_data_root_that_cannot_be_written_still_trains_from_the_mirror(tmp_path):
    blocker = tmp_path / "ro"
    blocker.write_text("a file where the data root's parent should be")
    code, out, err = run(
        "train",
        "--limit",
        "300",
        "--val-size",
        "100",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--data-root",
        str(blocker / "root"),
        "--data",
        str(SHARED_MNIST),
        "--quiet",
        cwd=tmp_path,
    )
    assert code == 0, err
    assert "test accuracy" in out and "Traceback" not in err


def test_missing_or_partial_dataset(tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        os.symlink(SHARED_MNIST / name, partial / name)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[data]\nmirrors = {json.dumps([str(partial)])}\n")
    code, _, err = run(
        "train", "--config", str(cfg), "--data-root", str(tmp_path / "r"), cwd=tmp_path
    )
    assert_one_line_error(code, err, 2, "could not get MNIST file t10k-images-idx3-ubyte")
    assert "--data DIR" in err


def test_malicious_checkpoint_is_refused_without_running_code(workdir):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {workdir / 'pwned'}",))

    evil_dir = workdir / "runs" / "evil"
    evil_dir.mkdir(parents=True)
    torch.save({"format": "mnistcli-checkpoint", "x": Boom()}, evil_dir / "last.pt")
    code, _, err = run("train", "--resume", "runs/evil", cwd=workdir)
    assert_one_line_error(code, err, 2, "could run code")
    assert not (workdir / "pwned").exists()


def bad_images(folder: Path, digit) -> dict[str, str]:
    """Every awkward file a user may feed `predict`, and what must happen to it:
    'ok' (predicted, maybe as no digit) or 'error' (one line, the others still predicted)."""
    from PIL import Image

    folder.mkdir()
    ink = Image.fromarray(255 - digit.numpy()).resize((140, 140))  # dark on light, 5x
    ink.save(folder / "good.png")
    (folder / "zero-bytes.png").write_bytes(b"")
    (folder / "not-an-image.png").write_text("hello, I am text")
    full = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(full[: len(full) // 2])
    ink.save(folder / "png-named.jpg")  # wrong extension, real PNG inside
    Image.new("L", (1, 1), 255).save(folder / "one-pixel.png")
    Image.new("L", (64, 64), 255).save(folder / "all-white.png")
    Image.new("L", (64, 64), 0).save(folder / "all-black.png")
    ink.convert("I;16").point(lambda v: v * 257).save(folder / "sixteen-bit.png")
    ink.convert("CMYK").save(folder / "cmyk.jpg")
    frames = [ink.convert("P"), Image.new("P", ink.size, 0)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    # 10,000 x 10,000 = 100 MP: over the limit; a PNG header claiming it is enough to refuse
    Image.new("1", (10_000, 10_000), 1).save(folder / "huge.png")
    return {
        "good.png": "ok",
        "zero-bytes.png": "error",
        "not-an-image.png": "error",
        "truncated.png": "error",
        "png-named.jpg": "ok",
        "one-pixel.png": "ok",
        "all-white.png": "ok",
        "all-black.png": "ok",
        "sixteen-bit.png": "ok",
        "cmyk.jpg": "ok",
        "animated.gif": "ok",
        "huge.png": "error",
    }


def test_predict_bad_image_suite(tmp_path, trained_run, real_mnist):
    folder = tmp_path / "imgs"
    expected = bad_images(folder, real_mnist.test_images[0])
    before = hashes(folder)
    checkpoint_before = hashes(trained_run)
    code, out, err = run(
        "predict", str(folder), "--checkpoint", str(trained_run / "best.pt"), "--json", cwd=tmp_path
    )
    assert code == 1, err  # some failed
    assert "Traceback" not in err and "\x1b[" not in out + err
    results = {Path(doc["path"]).name: doc for doc in map(json.loads, out.splitlines())}
    assert set(results) == set(expected)
    error_lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    for name, outcome in expected.items():
        doc = results[name]
        if outcome == "error":
            assert doc["status"] == "error" and doc["digit"] is None, name
            assert sum(name in ln for ln in error_lines) == 1, (name, err)
        else:
            assert doc["status"] != "error", (name, doc)
    assert results["good.png"]["digit"] == int(real_mnist.test_labels[0])
    for blank in ("all-white.png", "all-black.png", "one-pixel.png"):
        assert results[blank]["digit"] is None, results[blank]  # "no digit found"
    assert results["sixteen-bit.png"]["digit"] == results["good.png"]["digit"]
    assert len(error_lines) == 4 and len(err.splitlines()) == 4  # one line per failure
    assert hashes(folder) == before and hashes(trained_run) == checkpoint_before


def test_eval_and_inspect_refuse_corrupt_checkpoints_without_damage(tmp_path, trained_run):
    copy = tmp_path / "run"
    copy.mkdir()
    data = (trained_run / "best.pt").read_bytes()
    (copy / "best.pt").write_bytes(data[: len(data) // 3])
    before = hashes(copy)
    for command in (["eval", "--no-save"], ["inspect"], ["predict", str(copy / "best.pt")]):
        code, _, err = run(*command, "--checkpoint", str(copy / "best.pt"), cwd=tmp_path)
        assert_one_line_error(code, err, 2, "cannot load checkpoint")
    assert hashes(copy) == before
