"""Reliability through the real CLI: interruptions, kill -9, a full disk, bad environments.

Every case asserts the exit code, a one-line message on stderr, no traceback, and that files
which existed before are unchanged (by hash) unless the case is meant to update them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import resource
import signal
import subprocess
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


# The kill test trains on 3,000 images: three epochs, so that a kill after one leaves another.
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


@pytest.mark.slow
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


def pause_before_replacing_last_pt() -> None:
    """Runs in the child as `python -c SOURCE -m mnistcli ARGS`: mnistcli's command line, except
    that the first rename over an existing last.pt waits. The new checkpoint is then complete in
    its temporary file and the old one still in place; the child says so on stderr and sleeps
    until it is killed. Only mnistcli/files.py sees the change (its `os` is replaced)."""
    import os
    import runpy
    import sys
    import time
    import types
    from pathlib import Path

    import mnistcli.files

    def replace(src: str, dst: str) -> None:
        if Path(dst).name == "last.pt" and Path(dst).exists():
            print(f"paused before renaming {Path(src).name} over last.pt", file=sys.stderr)
            sys.stderr.flush()
            time.sleep(600)
        os.replace(src, dst)

    patched = types.ModuleType("os")
    patched.__dict__.update(os.__dict__, replace=replace)
    mnistcli.files.os = patched
    sys.argv = ["mnistcli", *sys.argv[3:]]  # sys.argv was ["-c", "-m", "mnistcli", ARGS]
    runpy.run_module("mnistcli", run_name="__main__", alter_sys=True)


PAUSE = (
    "-c",
    f"{inspect.getsource(pause_before_replacing_last_pt)}\n{pause_before_replacing_last_pt.__name__}()",
)


def kill_9_at(proc: subprocess.Popen, moment: str, run_dir: Path) -> str:
    """Read the child's stderr until a line starting with `moment`, then kill -9 it there.
    Asserts it was still running, so the kill landed at that moment; returns the line. After
    the kill every checkpoint in `run_dir` loads (complete, never partial)."""
    for line in proc.stderr:
        if line.startswith(moment):
            break
    else:
        raise AssertionError(f"the run ended before {moment!r}: {proc.communicate()}")
    assert proc.poll() is None, "the run ended before the kill"
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    for name in ("last.pt", "best.pt"):
        if (run_dir / name).exists():
            load_checkpoint(run_dir / name)
    return line


@pytest.mark.slow
def test_kill_9_never_leaves_a_broken_checkpoint(workdir, real_mnist):
    """kill -9 at three moments the test sees: as training starts; with epoch N's last.pt
    written to its temporary file but not yet renamed over epoch N-1's; just after an epoch was
    saved and reported. After each kill the checkpoints load and the run resumes; the old
    last.pt survives the second kill byte for byte, the temporary file it left is removed when
    the run resumes, and the final history equals an uninterrupted run's."""
    run_dir = workdir / "runs" / "k"

    def start(python_args: tuple[str, ...] = ()) -> subprocess.Popen:
        resume = (run_dir / "last.pt").exists()
        args = ["--resume", "runs/k"] if resume else [*KILL_RUN, "--name", "k"]
        return start_cli("train", *args, cwd=workdir, python_args=python_args)

    kill_9_at(start(), "training ", run_dir)  # data loaded, the first epoch begins

    proc = start(PAUSE)
    line = kill_9_at(proc, "paused before renaming", run_dir)
    temp = run_dir / line.split()[3]
    assert temp.name.startswith(".last.pt.") and temp.stat().st_size > 0
    before = hashes(run_dir)["last.pt"]
    assert load_checkpoint(run_dir / "last.pt").meta.finished is False
    # the killed child's leftovers: nothing renamed, the old last.pt untouched
    assert temp.exists() and hashes(run_dir)["last.pt"] == before

    line = kill_9_at(start(), "epoch ", run_dir)  # the resumed run's first epoch is saved
    assert not temp.exists()  # a killed writer's temporary file, removed on resume
    assert load_checkpoint(run_dir / "last.pt").meta.epoch == int(line.split()[1]) < 3

    code, _, err = run("train", "--resume", "runs/k", cwd=workdir)
    assert code == 0, err
    assert not list(run_dir.glob(".*.tmp"))
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_unwritable_output_folder(workdir):
    blocker = workdir / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run("train", *SMALL, "--runs-dir", "a-file/runs", cwd=workdir)
    assert_one_line_error(code, err, 2, "cannot create the runs folder")
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
