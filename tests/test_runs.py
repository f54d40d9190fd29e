import dataclasses
import os
import subprocess
import sys
import time

from mnistcli import runs
from mnistcli import train as trainer
from mnistcli.files import write_atomic
from tests.helpers import make_settings


def dead_pid() -> int:
    """The pid of a process that has just exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    old = time.time() - runs.STALE_AFTER_SECONDS - 60
    dead = tmp_path / f".last.pt.{dead_pid()}.k2j4h5g6.tmp"  # its writer was killed
    mine = tmp_path / f".best.pt.{os.getpid()}.a1b2c3d4.tmp"  # a live writer's, fresh
    aged = tmp_path / f".metrics.json.{os.getpid()}.zz9y8x7w.tmp"  # a live pid, but an hour old
    legacy_fresh = tmp_path / ".last.pt.abcdefgh.tmp"  # no pid (older mnistcli): by age only
    legacy_old = tmp_path / ".best.pt.qwertyui.tmp"
    latest = tmp_path / f".latest.{dead_pid()}.tmp"  # point_latest's symlink
    keep = [tmp_path / "last.pt", tmp_path / "notes.tmp.txt", tmp_path / ".hidden"]
    for path in [dead, mine, aged, legacy_fresh, legacy_old, *keep]:
        path.write_bytes(b"x")
    latest.symlink_to("somewhere")
    for path in (aged, legacy_old):
        os.utime(path, (old, old))
    removed = runs.remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([dead, aged, legacy_old, latest])
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {p.name for p in [mine, legacy_fresh, *keep]}


def test_write_atomic_names_its_temporary_file_with_its_pid(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_atomic(tmp_path / "best.pt", b"data")
    assert seen and seen[0].startswith(f".best.pt.{os.getpid()}.") and seen[0].endswith(".tmp")
    assert runs._TEMP_PID.match(seen[0])["pid"] == str(os.getpid())


def test_resuming_a_run_clears_what_a_killed_save_left(tmp_path, tiny_mnist):
    settings = make_settings(tmp_path, epochs=2, val_size=100, batch_size=100)
    cut = trainer.train(settings, tiny_mnist, should_stop=lambda: True)
    assert cut.stop_reason == "interrupted"
    leftover = cut.run_dir / f".last.pt.{dead_pid()}.0a1b2c3d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    resumed = trainer.train(
        dataclasses.replace(settings, resume=str(cut.run_dir), name=None), tiny_mnist
    )
    assert resumed.stop_reason == "finished"
    assert not leftover.exists()
    assert not list(cut.run_dir.glob(".*.tmp"))


def test_inspect_describes_the_latest_run_with_a_finished_epoch_or_nothing(tmp_path):
    """inspect picks 'latest' as eval and predict do: a run with only last.pt is skipped."""
    assert runs.checkpoint_to_describe(None, tmp_path / "runs") is None
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"")
    assert runs.checkpoint_to_describe(None, tmp_path / "runs") is None
    (run / "best.pt").write_bytes(b"")
    assert runs.checkpoint_to_describe(None, tmp_path / "runs") == run / "best.pt"
    assert runs.checkpoint_to_describe(str(run), tmp_path) == run / "best.pt"


def test_a_killed_export_leaves_nothing_behind_either(tmp_path):
    """files.staged (export's writer) names its temporary files as write_atomic does, with the
    target's suffix kept, so the same clean-up finds them."""
    from mnistcli.files import staged

    names = []
    with staged(tmp_path / "model.onnx") as tmp:
        names.append(tmp.name)
        tmp.write_bytes(b"onnx")
    assert names[0].startswith(f".model.onnx.{os.getpid()}.") and names[0].endswith(".tmp.onnx")
    leftover = tmp_path / f".model.onnx.{dead_pid()}.k2j4h5g6.tmp.onnx"
    leftover.write_bytes(b"half an export")
    assert runs.remove_stale_temp_files(tmp_path) == [leftover]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def _run(runs_dir, name: str, *files: str):
    """A run folder holding `files` (empty stand-ins: only their presence counts here)."""
    run = runs_dir / name
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    for name in files:
        (run / name).write_bytes(b"")
    return run


def test_a_runs_folder_given_as_a_checkpoint_says_so_and_names_a_run(tmp_path):
    """`--checkpoint runs` (the folder of runs, not a run): the error names one of its runs,
    a path that resolves, and how to use its latest instead; never 'runs/best.pt does not
    exist; train one'."""
    import pytest

    from mnistcli.errors import CheckpointError

    held = tmp_path / "elsewhere" / "runs"
    done = _run(held, "a", "best.pt", "last.pt")
    (done / "metrics.json").write_text('{"summary": {"stop_reason": "completed"}}')
    with pytest.raises(CheckpointError) as info:
        runs.resolve_checkpoint(str(held), tmp_path / "runs")
    message = str(info.value)
    assert message.startswith(f"{held} is a runs folder, not a run: name one of its runs")
    assert f"--checkpoint {held / 'a'};" in message and "best.pt does not exist" not in message
    assert message.endswith(
        f"or leave --checkpoint out and pass --runs-dir {held} to use its latest"
    )
    assert runs.resolve_checkpoint(str(held / "a"), tmp_path / "runs") == held / "a" / "best.pt"
    # the configured runs folder itself: leaving --checkpoint out is enough
    with pytest.raises(CheckpointError, match=r"or leave --checkpoint out to use its latest$"):
        runs.resolve_checkpoint(str(held), held)
    # --resume takes the newest interrupted run, or says none can go on
    with pytest.raises(CheckpointError, match="none of its runs was interrupted"):
        runs.resume_path(str(held), held)
    _run(held, "cut", "last.pt")
    with pytest.raises(CheckpointError, match=rf"e\.g\. --resume {held / 'cut'}$"):
        runs.resume_path(str(held), held)


def test_a_folder_without_a_checkpoint_is_not_a_run(tmp_path):
    import pytest

    from mnistcli.errors import CheckpointError

    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CheckpointError, match=r"plain is not a run: there is no checkpoint in it"):
        runs.resolve_checkpoint(str(plain), tmp_path / "runs")
    (plain / "model.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"pass one of its model files, e\.g\. .*model\.onnx"):
        runs.resolve_checkpoint(str(plain), tmp_path / "runs")
    killed = _run(tmp_path / "runs", "killed")  # its config.json, no checkpoint yet
    with pytest.raises(CheckpointError, match="stopped before an epoch was saved"):
        runs.resolve_checkpoint(str(killed), tmp_path / "runs")
    with pytest.raises(CheckpointError, match="stopped before an epoch was saved"):
        runs.resume_path(str(killed), tmp_path / "runs")
