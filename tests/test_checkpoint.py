import dataclasses
import os
import pickle
from pathlib import Path

import pytest
import torch

from mnistcli import checkpoint as ckpt
from mnistcli import runs as run_folders
from mnistcli.errors import CheckpointError
from mnistcli.loading import load_model
from mnistcli.model import SimpleCNN
from mnistcli.records import EpochTotals
from tests.helpers import HalfWrite


def payload(**extra):
    body = {
        "format": ckpt.FORMAT,
        "format_version": ckpt.FORMAT_VERSION,
        "kind": "best",
        "model": "simplecnn",
        "model_state": SimpleCNN().state_dict(),
        "epoch": 1,
        "history": [],
        "config": {},
        "optimizer_state": {},
        "scheduler_state": None,
        "rng": {"torch": torch.get_rng_state()},
    }
    body.update(extra)
    return body


def save(body, path):
    """Save a payload dict through the typed Checkpoint (the only way the code writes one)."""
    ckpt.save_checkpoint(ckpt.Checkpoint.from_payload(body, path), path)


def test_round_trip_with_rng_state_under_weights_only(tmp_path):
    path = tmp_path / "best.pt"
    save(payload(), path)
    loaded = ckpt.load_checkpoint(path)
    assert torch.equal(loaded.resume.rng["torch"], torch.get_rng_state())
    model, meta = load_model(path)
    assert meta.epoch == 1 and not model.training


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    """The disk fills up half-way through writing the new checkpoint (inside write_atomic)."""
    path = tmp_path / "last.pt"
    save(payload(epoch=1), path)
    before = path.read_bytes()
    half = HalfWrite("last.pt").install(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        save(payload(epoch=2), path)
    [(_, written)] = half.partial
    assert written > 800_000  # half of a 1.7 MB checkpoint reached the disk before the error
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
    assert ckpt.load_checkpoint(path).meta.epoch == 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "truncated, corrupt or not a PyTorch file"),
        (b"not a checkpoint at all", "truncated, corrupt or not a PyTorch file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), r"not a PyTorch file \(Unsupported operand"),
    ],
)
def test_corrupt_files_give_one_line_errors(tmp_path, content, fragment):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=fragment) as err:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(err.value)
    assert "Weights only load failed" not in str(err.value)  # torch's advice, not the reason


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "best.pt"
    save(payload(), path)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        ckpt.load_checkpoint(path)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "payload": Boom()}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        ckpt.load_checkpoint(path)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(raw)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_other_dicts_architectures_and_bad_weights_are_refused(tmp_path):
    path = tmp_path / "a.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not an mnistcli checkpoint"):
        ckpt.load_checkpoint(path)
    torch.save(payload(model_state={"fc.weight": torch.zeros(2, 2)}), path)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_model(path)
    state = SimpleCNN().state_dict()
    state["classifier.4.weight"] = torch.zeros(11, 128)
    torch.save(payload(model_state=state), path)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(path)
    state = SimpleCNN().state_dict()
    state["classifier.4.bias"][0] = float("nan")
    torch.save(payload(model_state=state), path)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_model(path)
    torch.save(payload(model="resnet9000"), path)
    with pytest.raises(CheckpointError, match="does not know"):
        load_model(path)
    torch.save(payload(history="oops"), path)
    with pytest.raises(CheckpointError, match="field 'history'"):
        ckpt.load_checkpoint(path)


def test_resolve_and_latest(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(CheckpointError, match=r"no trained model found.*mnistcli train"):
        run_folders.resolve_checkpoint(None, runs)
    for name in ("old", "new"):
        (runs / name).mkdir(parents=True)
        save(payload(), runs / name / "last.pt")
    run_folders.point_latest(runs, runs / "old")
    with pytest.raises(CheckpointError, match=r"no run in .* has finished an epoch.*--resume"):
        run_folders.resolve_checkpoint(None, runs)  # only last.pt: nothing 'latest' can use
    for name in ("old", "new"):
        save(payload(), runs / name / "best.pt")
    assert run_folders.resolve_checkpoint(None, runs) == (runs / "old" / "best.pt").resolve()
    assert run_folders.resolve_checkpoint(runs / "new", runs) == runs / "new" / "best.pt"
    (runs / "latest").unlink()
    assert run_folders.latest_run(runs) in (runs / "old", runs / "new")


def test_settings_of_the_wrong_type_in_a_checkpoint_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save(payload(config={"val_size": "x"}), path)
    with pytest.raises(CheckpointError, match="setting 'val_size' is 'x'"):
        ckpt.load_checkpoint(path)
    torch.save(payload(epoch=True), path)
    with pytest.raises(CheckpointError, match="field 'epoch'"):
        ckpt.load_checkpoint(path)


V1_BEST = Path(__file__).parent / "data" / "v1-best.pt"  # written by mnistcli 0.1.0 (format 1)


def test_a_format_1_checkpoint_loads_and_round_trips_unchanged():
    raw = torch.load(V1_BEST, weights_only=True)
    loaded = ckpt.load_checkpoint(V1_BEST)
    meta = loaded.meta
    assert (meta.kind, meta.epoch, meta.finished) == ("best", 1, True)
    assert meta.stop_reason == "completed" and meta.status == "finished"  # the old word, read
    assert [h.epoch for h in meta.history] == [1, 2] and meta.history[1].train_acc == 0.978
    assert meta.best == ckpt.Best(1, 1.0, raw["best"]["val_loss"])
    assert meta.test == ckpt.TestScore(loss=raw["test"]["loss"], acc=1.0, n=200)
    assert meta.hyper.batch_size == 50 and meta.data == {"synthetic": "0"}
    # what this version writes for it is format 2: the same fields, "wait" under its field's
    # name, and the setting "augment" under its new name "shift"
    again = loaded.to_payload()
    assert again["format_version"] == 2 and again["epochs_without_gain"] == raw["wait"]
    assert again.keys() == (raw.keys() - {"wait"}) | {"epochs_without_gain"}
    for key in raw.keys() - {"model_state", "wait", "format_version"}:
        assert again[key] == raw[key], key
    assert ckpt.Checkpoint.from_payload(again, V1_BEST) == loaded
    assert meta.hyper.shift == raw["config"]["augment"] == 0.0
    model, _ = load_model(V1_BEST)
    assert sum(p.numel() for p in model.parameters()) == 421_642


def test_a_format_1_last_pt_stopped_mid_epoch_resumes(tmp_path, tiny_mnist):
    """A last.pt laid out as mnistcli 0.1.0 wrote it mid-epoch (keys as listed there)."""
    from mnistcli import train as trainer
    from mnistcli.events import EpochStarted
    from tests.helpers import make_settings

    best = torch.load(V1_BEST, weights_only=True)
    model = SimpleCNN()
    model.load_state_dict(best["model_state"])
    last = {
        **{k: best[k] for k in ("format", "model", "config", "data", "versions", "created")},
        "format_version": 1,
        "kind": "last",
        "epoch": 1,
        "step": 3,
        "history": best["history"][:1],
        "best": best["best"],
        "wait": 0,
        "finished": False,
        "model_state": model.state_dict(),
        "optimizer_state": torch.optim.Adam(model.parameters()).state_dict(),
        "scheduler_state": None,
        "rng": {"torch": torch.get_rng_state()},
        "partial": {"loss_sum": 30.5, "correct": 141, "seen": 150, "seconds": 0.04},
    }
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    torch.save(last, run_dir / "last.pt")
    torch.save(best | {"finished": False}, run_dir / "best.pt")
    meta = ckpt.load_checkpoint(run_dir / "last.pt").meta
    assert meta.in_progress == EpochTotals(30.5, 141, 150, 0.04) and meta.step == 3
    settings = dataclasses.replace(make_settings(tmp_path), resume=str(run_dir), name=None)
    started = []
    result = trainer.train(settings, tiny_mnist, on_event=started.append)
    first = next(e for e in started if isinstance(e, EpochStarted))
    assert (first.epoch, first.first_batch) == (2, 3)
    assert result.stop_reason == "finished" and [h.epoch for h in result.history] == [1, 2]
    assert result.history[0].train_loss == best["history"][0]["train_loss"]
    assert ckpt.load_checkpoint(run_dir / "last.pt").meta.finished


def test_a_boolean_setting_is_checked_as_a_boolean(tmp_path, monkeypatch):
    """check_config reads HyperParams' real types: a new bool field needs no table."""
    from mnistcli.settings import HyperParams

    @dataclasses.dataclass(frozen=True)
    class WithFlag(HyperParams):
        mirror: bool = False

    monkeypatch.setattr(ckpt, "HyperParams", WithFlag)
    ckpt.check_config({"mirror": True, "epochs": 3, "lr": 1}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="setting 'mirror' is 1, not a bool"):
        ckpt.check_config({"mirror": 1}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="setting 'epochs' is True, not a int"):
        ckpt.check_config({"epochs": True}, tmp_path / "c.pt")


def test_format_2_writes_keys_named_as_their_fields(tmp_path):
    """epochs_without_gain and in_progress are stored under their own names, and read back."""
    meta = ckpt.CheckpointMeta(
        kind="last",
        model="simplecnn",
        epoch=2,
        config={},
        step=3,
        epochs_without_gain=1,
        in_progress=EpochTotals(30.5, 141, 150, 0.04),
    )
    body = ckpt.Checkpoint(meta, SimpleCNN().state_dict()).to_payload()
    assert body["format_version"] == 2
    assert body["epochs_without_gain"] == 1 and "wait" not in body
    assert body["in_progress"] == {"loss_sum": 30.5, "correct": 141, "seen": 150, "seconds": 0.04}
    save(body, tmp_path / "last.pt")
    assert ckpt.load_checkpoint(tmp_path / "last.pt").meta == meta


def test_checkpoints_of_runs_with_the_removed_settings_at_zero_still_load(tmp_path):
    """elastic, ema, clean_epochs and weight_decay were removed; a format 1 last.pt that lists
    them (at their neutral 0) and calls `shift` "augment" loads, with its settings read."""
    config = {
        "epochs": 3,
        "augment": 1.5,
        "elastic": 0.0,
        "ema": 0.0,
        "clean_epochs": 0,
        "weight_decay": 0.0,
    }
    body = payload(config=config, format_version=1, kind="last", wait=2)
    torch.save(body, tmp_path / "last.pt")
    loaded = ckpt.load_checkpoint(tmp_path / "last.pt")
    assert loaded.meta.epochs_without_gain == 2
    assert loaded.meta.hyper.shift == 1.5 and loaded.meta.hyper.epochs == 3
    assert loaded.resume is not None
    model, _ = load_model(tmp_path / "last.pt")
    assert not model.training
