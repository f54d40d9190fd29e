import os
import pickle

import pytest
import torch

from mnistcli import checkpoint as ckpt
from mnistcli.errors import CheckpointError
from mnistcli.model import SimpleCNN
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
        "rng": {"torch": torch.get_rng_state()},
    }
    body.update(extra)
    return body


def test_round_trip_with_rng_state_under_weights_only(tmp_path):
    path = tmp_path / "best.pt"
    ckpt.save_checkpoint(payload(), path)
    loaded = ckpt.load_checkpoint(path)
    assert torch.equal(loaded["rng"]["torch"], torch.get_rng_state())
    model, meta = ckpt.load_model(path)
    assert meta["epoch"] == 1 and not model.training


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    """The disk fills up half-way through writing the new checkpoint (inside write_atomic)."""
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(payload(epoch=1), path)
    before = path.read_bytes()
    half = HalfWrite("last.pt").install(monkeypatch)
    with pytest.raises(OSError, match="No space left on device"):
        ckpt.save_checkpoint(payload(epoch=2), path)
    [(_, written)] = half.partial
    assert written > 800_000  # half of a 1.7 MB checkpoint reached the disk before the error
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
    assert ckpt.load_checkpoint(path)["epoch"] == 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "truncated, corrupt or not a PyTorch file"),
        (b"not a checkpoint at all", "truncated, corrupt or not a PyTorch file"),
    ],
)
def test_corrupt_files_give_one_line_errors(tmp_path, content, fragment):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=fragment) as err:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "best.pt"
    ckpt.save_checkpoint(payload(), path)
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
        ckpt.load_model(path)
    state = SimpleCNN().state_dict()
    state["classifier.4.weight"] = torch.zeros(11, 128)
    torch.save(payload(model_state=state), path)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        ckpt.load_model(path)
    state = SimpleCNN().state_dict()
    state["classifier.4.bias"][0] = float("nan")
    torch.save(payload(model_state=state), path)
    with pytest.raises(CheckpointError, match="non-finite"):
        ckpt.load_model(path)
    torch.save(payload(model="resnet9000"), path)
    with pytest.raises(CheckpointError, match="does not know"):
        ckpt.load_model(path)
    torch.save(payload(history="oops"), path)
    with pytest.raises(CheckpointError, match="field 'history'"):
        ckpt.load_checkpoint(path)


def test_resolve_and_latest(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(CheckpointError, match=r"no trained model found.*mnistcli train"):
        ckpt.resolve_checkpoint(None, runs)
    for name in ("old", "new"):
        (runs / name).mkdir(parents=True)
        ckpt.save_checkpoint(payload(), runs / name / "last.pt")
    ckpt.point_latest(runs, runs / "old")
    assert ckpt.resolve_checkpoint(None, runs) == (runs / "old" / "best.pt").resolve()
    assert ckpt.resolve_checkpoint(runs / "new", runs) == runs / "new" / "best.pt"
    (runs / "latest").unlink()
    assert ckpt.latest_run(runs) in (runs / "old", runs / "new")


def test_settings_of_the_wrong_type_in_a_checkpoint_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save(payload(config={"val_size": "x"}), path)
    with pytest.raises(CheckpointError, match="setting 'val_size' is 'x'"):
        ckpt.load_checkpoint(path)
    torch.save(payload(epoch=True), path)
    with pytest.raises(CheckpointError, match="field 'epoch'"):
        ckpt.load_checkpoint(path)
