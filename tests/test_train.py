import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from mnistcli import events as ev
from mnistcli import metrics, run_state
from mnistcli import runs as run_folders
from mnistcli import train as trainer
from mnistcli.checkpoint import load_checkpoint
from mnistcli.errors import CheckpointError, ConfigError, TrainingError
from mnistcli.records import EpochStats
from tests.helpers import make_settings


def scripted_evaluate(monkeypatch, val_accs: list[float], n_val: int):
    """Replace the evaluation: scripted validation accuracies; record the weights the test set
    sees."""
    calls = {"val": iter(val_accs), "test_state": None}

    def fake(model, data, **kwargs):
        if len(data) == n_val:
            acc = next(calls["val"])
            return SimpleNamespace(loss=1.0 - acc, accuracy=acc), None
        calls["test_state"] = {k: v.clone() for k, v in model.state_dict().items()}
        return SimpleNamespace(loss=0.5, accuracy=0.5), None

    monkeypatch.setattr(metrics, "evaluate_tensors", fake)
    return calls


def test_early_stopping_stops_after_patience_and_restores_best(tmp_path, tiny_mnist, monkeypatch):
    calls = scripted_evaluate(monkeypatch, [0.50, 0.70, 0.60, 0.65, 0.69, 0.99], n_val=100)
    events = []
    settings = make_settings(tmp_path, epochs=10, patience=3, val_size=100, batch_size=50)
    result = trainer.train(settings, tiny_mnist, on_event=events.append)
    assert result.stop_reason == "early-stopped"
    assert result.epochs_run == 5 and result.best_epoch == 2 and result.best_val_acc == 0.70
    stops = [e for e in events if isinstance(e, ev.EarlyStopped)]
    assert len(stops) == 1 and stops[0].epoch == 5
    best = load_checkpoint(result.run_dir / "best.pt")
    last = load_checkpoint(result.run_dir / "last.pt")
    assert best.meta.epoch == 2 and last.meta.epoch == 5 and last.meta.finished is True
    # the test set was evaluated on the restored best weights, not on the last epoch's
    for name, tensor in best.model_state.items():
        assert torch.equal(calls["test_state"][name].cpu(), tensor)
    assert any(not torch.equal(last.model_state[k], v) for k, v in best.model_state.items())


def _stats(epoch: int, val_acc: float) -> EpochStats:
    return EpochStats(epoch, 0.1, 0.9, 1.0 - val_acc, val_acc, 1e-3, 1.0, 100.0)


@pytest.mark.parametrize(
    ("select", "chosen"),
    [
        ("highest", [1, 2, 2, 2, 2, 2, 7, 7]),
        # one standard error at 99.58% on 5,000 images is 0.091 points (at 99.70%: 0.077)
        ("latest-within-se", [1, 2, 3, 4, 4, 6, 7, 7]),
    ],
)
def test_the_chosen_epoch_follows_the_selection_rule(select, chosen):
    """`select`: the first highest validation accuracy, or the latest epoch within one standard
    error of the highest so far. Early stopping counts epochs without a new highest either way."""
    state = run_state.RunState()
    accs = [0.9900, 0.9958, 0.9950, 0.9952, 0.9930, 0.9956, 0.9970, 0.9958]
    picked, waits = [], []
    for epoch, acc in enumerate(accs, 1):
        became = state.record(_stats(epoch, acc), select, val_images=5000)
        assert became == (state.best.epoch == epoch)
        picked.append(state.best.epoch)
        waits.append(state.epochs_without_gain)
    assert picked == chosen
    assert waits == [0, 0, 1, 2, 3, 4, 0, 1]
    assert state.best.val_acc == accs[chosen[-1] - 1]


def test_latest_within_se_keeps_that_epoch_in_best_pt(tmp_path, tiny_mnist, monkeypatch):
    """With 100 validation images one standard error at 70% is 4.6 points: epoch 4 (69%) is
    kept, epoch 5 (65%) is not, and patience still runs out 3 epochs after the highest."""
    calls = scripted_evaluate(monkeypatch, [0.50, 0.70, 0.60, 0.69, 0.65, 0.99], n_val=100)
    settings = make_settings(
        tmp_path, epochs=10, patience=3, val_size=100, batch_size=50, select="latest-within-se"
    )
    result = trainer.train(settings, tiny_mnist)
    assert result.stop_reason == "early-stopped" and result.epochs_run == 5
    assert result.best_epoch == 4 and result.best_val_acc == 0.69
    best = load_checkpoint(result.run_dir / "best.pt")
    assert best.meta.epoch == 4 and best.meta.config["select"] == "latest-within-se"
    for name, tensor in best.model_state.items():
        assert torch.equal(calls["test_state"][name].cpu(), tensor)


def test_patience_zero_runs_every_epoch(tmp_path, tiny_mnist, monkeypatch):
    scripted_evaluate(monkeypatch, [0.9, 0.1, 0.1, 0.1], n_val=100)
    settings = make_settings(tmp_path, epochs=4, patience=0, val_size=100, batch_size=100)
    result = trainer.train(settings, tiny_mnist)
    assert result.stop_reason == "finished" and result.epochs_run == 4 and result.best_epoch == 1


def test_training_learns_and_writes_the_run_folder(tmp_path, tiny_mnist):
    events = []
    settings = make_settings(tmp_path, epochs=2, val_size=100, batch_size=32)
    result = trainer.train(settings, tiny_mnist, on_event=events.append)
    assert result.best_val_acc > 0.5  # chance is 0.1
    assert result.test_acc is not None and result.test_acc > 0.5
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"best.pt", "last.pt", "metrics.csv", "metrics.json", "config.json"} <= files
    doc = json.loads((result.run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in doc["history"]] == [1, 2]
    assert doc["summary"]["test_acc"] == result.test_acc
    csv_lines = (result.run_dir / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,train_loss") and len(csv_lines) == 3
    assert (settings.runs_dir / "latest").resolve() == result.run_dir.resolve()
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RunStarted" and kinds[-1] == "TestDone" and "BatchDone" in kinds
    meta = load_checkpoint(result.run_dir / "best.pt").meta
    assert meta.config["epochs"] == 2 and meta.data == {"synthetic": "0"}
    assert set(meta.versions) == {"mnistcli", "torch", "python"} and meta.created
    assert meta.test.acc == result.test_acc


def test_same_seed_gives_the_same_metrics(tmp_path, tiny_mnist):
    runs = []
    for name in ("a", "b"):
        settings = make_settings(tmp_path / name, epochs=2, val_size=100, batch_size=64, shift=1.0)
        runs.append(trainer.train(settings, tiny_mnist).history)
    strip = [[(h.train_loss, h.val_loss, h.val_acc) for h in run] for run in runs]
    assert strip[0] == strip[1]


def history_of(result):
    return [
        (h.epoch, h.train_loss, h.train_acc, h.val_loss, h.val_acc, h.lr) for h in result.history
    ]


WARPS = {
    "rotate": 12.0,
    "scale": 0.1,
    "shear": 10.0,
    "label_smoothing": 0.1,
    "select": "latest-within-se",
}


# mid-epoch (with the best recipe's affine warps, label smoothing and epoch selection; without
# augmentation), and at an epoch boundary
@pytest.mark.parametrize(
    ("stop_after_batches", "warps"),
    [(7, WARPS), (9, {"shift": 0.0}), (10, {})],
)
def test_interrupted_run_resumes_to_the_same_history(
    tmp_path, tiny_mnist, stop_after_batches, warps
):
    hyper = {
        "epochs": 3,
        "patience": 0,
        "val_size": 100,
        "batch_size": 50,
        "shift": 1.0,
        "schedule": "onecycle",
        "lr": 3e-3,
        **warps,
    }
    full = trainer.train(make_settings(tmp_path / "full", **hyper), tiny_mnist)

    settings = make_settings(tmp_path / "cut", **hyper)
    batches = {"n": 0}

    def count(event):
        if isinstance(event, ev.BatchDone):
            batches["n"] += 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_state, "PROGRESS_INTERVAL", 0.0)  # an event every batch
        cut = trainer.train(
            settings,
            tiny_mnist,
            on_event=count,
            should_stop=lambda: batches["n"] >= stop_after_batches,
        )
    assert cut.stop_reason == "interrupted" and cut.test_acc is None
    assert load_checkpoint(cut.run_dir / "last.pt").meta.finished is False
    started = []
    resumed = trainer.train(
        dataclasses.replace(settings, resume=str(cut.run_dir), name=None),
        tiny_mnist,
        on_event=lambda e: started.append(e) if isinstance(e, ev.RunStarted) else None,
    )
    assert resumed.run_dir == cut.run_dir
    # the view is told where the run stood: its best epoch and patience counter, not re-derived
    assert started[0].resumed and started[0].best_epoch == cut.best_epoch
    assert started[0].history == cut.history
    assert history_of(resumed) == history_of(full)
    assert resumed.best_epoch == full.best_epoch and resumed.test_acc == full.test_acc


def test_resume_refuses_finished_runs_and_changed_settings(tmp_path, tiny_mnist):

    settings = make_settings(tmp_path, epochs=1, val_size=100)
    done = trainer.train(settings, tiny_mnist)
    again = dataclasses.replace(settings, resume=str(done.run_dir), name=None)
    with pytest.raises(CheckpointError, match="is finished: nothing to resume"):
        trainer.train(again, tiny_mnist)
    last = torch.load(done.run_dir / "last.pt", weights_only=True)
    last["finished"] = False
    torch.save(last, done.run_dir / "last.pt")
    changed = dataclasses.replace(
        again, hyper=dataclasses.replace(settings.hyper, lr=0.5), explicit=("train.lr",)
    )
    with pytest.raises(ConfigError, match="differs from the resumed run"):
        trainer.train(changed, tiny_mnist)


def test_existing_run_name_is_refused(tmp_path, tiny_mnist):
    settings = make_settings(tmp_path, epochs=1, val_size=100)
    trainer.train(settings, tiny_mnist)
    # a finished run cannot be resumed: the hint names what works for it instead
    with pytest.raises(ConfigError, match="holds a finished run; pick another --name") as info:
        trainer.train(settings, tiny_mnist)
    assert "--resume" not in str(info.value) and "mnistcli eval --checkpoint" in str(info.value)


def test_nan_loss_stops_and_keeps_previous_checkpoints(tmp_path, tiny_mnist, monkeypatch):
    settings = make_settings(tmp_path, epochs=3, val_size=100, batch_size=100)
    real_ce = torch.nn.functional.cross_entropy
    state = {"epoch2": False}

    def on_event(event):
        if isinstance(event, ev.EpochDone) and event.stats.epoch == 1:
            state["epoch2"] = True

    def poisoned(logits, target, *args, **kwargs):
        loss = real_ce(logits, target, *args, **kwargs)
        return loss * float("nan") if state["epoch2"] else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    with pytest.raises(TrainingError, match="NaN or infinite in epoch 2"):
        trainer.train(settings, tiny_mnist, on_event=on_event)
    last = load_checkpoint(settings.runs_dir / "test" / "last.pt")
    assert last.meta.epoch == 1
    assert all(torch.isfinite(v).all() for v in last.model_state.values())


def test_bf16_autocast_trains_and_saves_float32_weights(tmp_path, tiny_mnist):
    events = []
    settings = make_settings(tmp_path, epochs=2, val_size=100, batch_size=64, precision="bf16")
    result = trainer.train(settings, tiny_mnist, on_event=events.append)
    assert events[0].precision == "bf16"
    assert result.best_val_acc > 0.5
    state = load_checkpoint(result.run_dir / "best.pt").model_state
    assert all(v.dtype == torch.float32 for v in state.values())


def test_interrupted_before_any_validation_writes_strict_json(tmp_path, tiny_mnist, monkeypatch):
    settings = make_settings(tmp_path, epochs=2, val_size=100, batch_size=50)
    monkeypatch.setattr(run_state, "PROGRESS_INTERVAL", 0.0)
    result = trainer.train(settings, tiny_mnist, should_stop=lambda: True)
    assert result.stop_reason == "interrupted" and result.best_epoch == 0
    doc = result.to_dict()
    assert doc["best_val_acc"] is None and doc["best_val_loss"] is None
    json.dumps(doc, allow_nan=False)  # no Infinity, no -1 placeholders
    summary = json.loads((result.run_dir / "metrics.json").read_text())["summary"]
    assert summary["best_val_loss"] is None


def test_a_refused_device_leaves_no_run_folder(tmp_path, tiny_mnist):

    from mnistcli.errors import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    settings = dataclasses.replace(make_settings(tmp_path, epochs=1), device="cuda")
    with pytest.raises(DeviceError):
        trainer.train(settings, tiny_mnist)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    with pytest.raises(ConfigError, match="at most 200"):
        run_folders.create_run(tmp_path / "runs", "a" * 300)


def test_steps_run_in_train_mode_and_validation_in_eval_mode_without_gradients(
    tmp_path, tiny_mnist, monkeypatch
):
    """The train/eval pair: dropout on for every optimizer step, off (and no autograd) for
    every validation and the test set, epoch after epoch."""
    from mnistcli import model as models

    seen = []
    real_build = models.build_model

    def recording(name):
        net = real_build(name)
        net.register_forward_pre_hook(
            lambda module, _: seen.append((module.training, torch.is_inference_mode_enabled()))
        )
        return net

    monkeypatch.setattr(models, "build_model", recording)
    settings = make_settings(tmp_path, epochs=2, val_size=100, batch_size=100, limit=300)
    trainer.train(settings, tiny_mnist)
    steps = [s for s in seen if s[0]]
    scored = [s for s in seen if not s[0]]
    assert len(steps) == 2 * 3  # 300 training images, batches of 100, 2 epochs
    assert all(not inference for _, inference in steps)
    assert len(scored) == 3 and all(inference for _, inference in scored)  # 2 val, 1 test
    # the order of the loop: 3 steps, validation, 3 steps, validation, then the test set
    assert [t for t, _ in seen[:8]] == [True, True, True, False, True, True, True, False]


def test_a_run_trained_by_calling_train_writes_its_curves(tmp_path, tiny_mnist):
    """curves.png comes from the run itself, not from a view: no on_event at all here."""
    from PIL import Image

    settings = make_settings(tmp_path, epochs=2, val_size=100, batch_size=100)
    result = trainer.train(settings, tiny_mnist)
    with Image.open(result.run_dir / "curves.png") as image:
        assert image.size == (1200, 480)


def test_a_run_that_used_a_removed_setting_is_not_resumed(tmp_path, tiny_mnist):
    """A last.pt trained with ema (removed) at a real value cannot go on as it started."""
    settings = make_settings(tmp_path, epochs=2, val_size=100, batch_size=100)
    cut = trainer.train(settings, tiny_mnist, should_stop=lambda: True)
    last = torch.load(cut.run_dir / "last.pt", weights_only=True)
    last["config"]["ema"] = 0.999
    torch.save(last, cut.run_dir / "last.pt")
    again = dataclasses.replace(settings, resume=str(cut.run_dir), name=None)
    with pytest.raises(ConfigError, match=r"train\.ema = 0\.999, a setting this mnistcli removed"):
        trainer.train(again, tiny_mnist)
    last["config"]["ema"] = 0.0  # at its neutral value it resumes
    torch.save(last, cut.run_dir / "last.pt")
    assert trainer.train(again, tiny_mnist).stop_reason == "finished"
