"""The trainer: one loop for every recipe, early stopping on validation, checkpoints, resume.

It prints nothing. Progress goes to an `on_event` callback as small frozen dataclasses; the
command line decides how to draw them. Model selection uses the validation split held out from
the 60k training images; the test set is evaluated once, on the restored best model, and only
reported.

Reproducibility: the shuffle order and the augmentation of batch b in epoch e are drawn from
generators seeded by (seed, e, b), and the global RNG (dropout) is saved in every checkpoint, so
a resumed run, even one resumed mid-epoch, replays exactly what an uninterrupted run would do.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistcli import checkpoint as ckpt
from mnistcli.config import HyperParams, TrainSettings
from mnistcli.data import Mnist, Tensors, make_tensors, random_shifts, shift_by, split_indices
from mnistcli.errors import CheckpointError, ConfigError, TrainingError
from mnistcli.files import write_atomic

if TYPE_CHECKING:
    import torch
    from torch import nn

PROGRESS_INTERVAL = 0.1  # seconds between BatchDone events (each costs one device sync)


# ---------------------------------------------------------------------------------------------
# Events and results


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    samples_per_s: float


@dataclass(frozen=True)
class RunStarted:
    run_dir: Path
    device: str
    precision: str  # what autocast runs in: "bf16" or "fp32"
    hyper: HyperParams
    parameters: int
    n_train: int
    n_val: int
    n_test: int
    batches_per_epoch: int
    start_epoch: int  # 1-based epoch the loop starts in (> 1 after a resume)
    resumed: bool
    history: tuple[EpochStats, ...]
    best_epoch: int  # 0 before the first validated epoch
    wait: int  # epochs since the last improvement (resumed runs carry theirs)


@dataclass(frozen=True)
class EpochStarted:
    epoch: int
    epochs: int
    batches: int
    first_batch: int  # > 0 when resuming mid-epoch


@dataclass(frozen=True)
class BatchDone:
    epoch: int
    batch: int  # batches done in this epoch
    batches: int
    loss: float  # running mean over the epoch so far
    samples_per_s: float


@dataclass(frozen=True)
class EpochDone:
    stats: EpochStats
    history: tuple[EpochStats, ...]
    best_epoch: int
    is_best: bool
    wait: int  # epochs since the last improvement
    patience: int


@dataclass(frozen=True)
class EarlyStopped:
    epoch: int
    best_epoch: int
    patience: int


@dataclass(frozen=True)
class TestDone:
    test_loss: float
    test_acc: float
    n: int


Event = RunStarted | EpochStarted | BatchDone | EpochDone | EarlyStopped | TestDone


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    device: str
    stop_reason: str  # "completed", "early_stop", "interrupted"
    epochs_run: int
    best_epoch: int
    best_val_acc: float
    best_val_loss: float
    test_acc: float | None
    test_loss: float | None
    seconds: float
    history: tuple[EpochStats, ...] = field(default=())
    interrupted_at: tuple[int, int] | None = None  # (epoch, batch) when interrupted

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        if not self.best_epoch:  # interrupted before the first validation: JSON has no inf
            out["best_val_acc"] = out["best_val_loss"] = None
        return out


# ---------------------------------------------------------------------------------------------
# Small pieces


def _generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of integers (seed, epoch[, batch])."""
    import torch

    value = 0
    for k in key:
        value = (value * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def evaluate(model: nn.Module, data: Tensors, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on `data` (eval mode, no autograd)."""
    import torch.nn.functional as F

    from mnistcli.model import logits_in_batches

    if len(data) == 0:
        return 0.0, 0.0
    logits = logits_in_batches(model, data.x, batch_size)
    loss = F.cross_entropy(logits.float(), data.y).item()
    return loss, (logits.argmax(1) == data.y).sum().item() / len(data)


def _rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epoch_shifts(hyper: HyperParams, epoch: int, n: int, batches: int) -> torch.Tensor:
    """(n, 2) augmentation shifts of one epoch, batch b's drawn from (seed, epoch, b) as always,
    made on the CPU and moved to the device once per epoch (no host-to-device copy per batch)."""
    import torch

    size = hyper.batch_size
    return torch.cat(
        [
            random_shifts(min(size, n - b * size), hyper.augment, _generator(hyper.seed, epoch, b))
            for b in range(batches)
        ]
    )


def stats_from_dict(raw: dict[str, Any]) -> EpochStats:
    """One epoch of a checkpoint's history; KeyError or TypeError when it is not in that form."""
    return EpochStats(**{k: raw[k] for k in EpochStats.__dataclass_fields__})


def _write_metrics(run_dir: Path, history: list[EpochStats], summary: dict[str, Any]) -> None:
    """metrics.csv (one row per epoch) and metrics.json (history plus the run's summary)."""
    rows = [asdict(s) for s in history]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(EpochStats.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(run_dir / "metrics.csv", buf.getvalue().encode())
    doc = {"summary": summary, "history": rows}
    write_atomic(
        run_dir / "metrics.json", (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()
    )


# ---------------------------------------------------------------------------------------------
# Run folders and resume


def new_run_dir(runs_dir: Path, name: str | None) -> Path:
    """runs/<name>, or runs/<date-time> (with -2, -3... if taken); refuses to reuse a run."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(
            f"cannot create the runs folder {runs_dir}: "
            f"{exc.strerror or exc}; choose another with --out"
        ) from None
    if name is not None:
        if not name or name in (".", "..", ckpt.LATEST) or "/" in name or "\\" in name:
            raise ConfigError(
                f"--name {name!r} is not a usable folder name; use letters, digits, '-' or '_'"
            )
        if len(name.encode()) > 200:
            raise ConfigError(f"--name is {len(name)} characters long; use at most 200")
        run_dir = runs_dir / name
        # a folder without checkpoints (a run killed before its first save) can be reused
        if (run_dir / "last.pt").exists() or (run_dir / "best.pt").exists():
            raise ConfigError(
                f"run folder {run_dir} already exists; continue it with "
                f"--resume {run_dir} or pick another --name"
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir, n = runs_dir / stamp, 2
        while run_dir.exists():
            run_dir, n = runs_dir / f"{stamp}-{n}", n + 1
    try:
        run_dir.mkdir(exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(
            f"cannot write to the run folder {run_dir}: "
            f"{exc.strerror or exc}; choose another with --out"
        ) from None
    return run_dir


def resume_path(arg: str, runs_dir: Path) -> Path:
    """`--resume` takes a run folder, its last.pt, or 'latest'."""
    path = ckpt.resolve_checkpoint(arg, runs_dir, kind="last")
    if path.name == "best.pt":
        path = path.with_name("last.pt")
    if not path.exists():
        raise CheckpointError(f"nothing to resume at {arg}: {path} does not exist")
    return path


def check_resume_flags(settings: TrainSettings, saved: HyperParams) -> None:
    """A resumed run keeps its own hyper-parameters; a flag that contradicts them is an error."""
    for key in settings.explicit:
        name = key.split(".")[-1]
        if not key.startswith(("train.", "data.")) or not hasattr(saved, name):
            continue
        asked, had = getattr(settings.hyper, name), getattr(saved, name)
        if asked != had:
            raise ConfigError(
                f"--{name.replace('_', '-')} {asked} differs from the resumed "
                f"run's {name} = {had}; a resumed run keeps its settings (start a "
                f"new run to change them)"
            )


# ---------------------------------------------------------------------------------------------
# The trainer


def train(
    settings: TrainSettings,
    mnist: Mnist,
    *,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train (or resume) one run; returns when done, stopped early, or asked to stop."""
    try:
        return _train(settings, mnist, on_event, should_stop)
    except OSError as exc:  # a full disk or a folder that became unwritable while saving
        where = f" {exc.filename}" if exc.filename else ""
        raise TrainingError(
            f"could not save{where}: {exc.strerror or exc}; files saved before are intact "
            f"(free some space or fix permissions, then continue with --resume)"
        ) from None


def _train(
    settings: TrainSettings,
    mnist: Mnist,
    on_event: Callable[[Event], None] | None,
    should_stop: Callable[[], bool] | None,
) -> TrainResult:
    import torch
    import torch.nn.functional as F

    from mnistcli.device import autocast_dtype, resolve_device
    from mnistcli.model import build_model, count_parameters

    emit = on_event or (lambda _event: None)
    stop = should_stop or (lambda: False)
    t_start = time.perf_counter()

    # --- what to run: a new run, or the state a last.pt holds -----------------------------
    resumed: dict[str, Any] | None = None
    if settings.resume is not None:
        last_path = resume_path(settings.resume, settings.runs_dir)
        resumed = ckpt.load_checkpoint(last_path)
        if resumed.get("finished"):
            raise CheckpointError(
                f"run {last_path.parent} already finished "
                f"({resumed.get('stop_reason', 'completed')}); nothing to "
                f"resume. Start a new run with 'mnistcli train'"
            )
        hyper = HyperParams.from_dict(resumed["config"])
        check_resume_flags(settings, hyper)
        run_dir = last_path.parent
    else:
        hyper = settings.hyper

    # everything that can refuse the settings comes before a new run folder is made
    device = resolve_device(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(hyper.seed)
    model = build_model(hyper.model).to(device)
    if resumed is None:
        run_dir = new_run_dir(settings.runs_dir, settings.name)
    # channels_last makes the CPU convolutions faster here (see bench/); harmless elsewhere.
    model = model.to(memory_format=torch.channels_last)

    # --- data: resident tensors, batches by indexing ------------------------------------------
    split = split_indices(len(mnist.train_labels), hyper.val_size, hyper.seed, hyper.limit)
    train_set = make_tensors(
        mnist.train_images[split.train], mnist.train_labels[split.train], device
    )
    val_set = make_tensors(mnist.train_images[split.val], mnist.train_labels[split.val], device)
    n = len(train_set)
    if n == 0:
        raise ConfigError("no training images left: lower --val-size or raise --limit")
    batches = math.ceil(n / hyper.batch_size)

    amp = autocast_dtype(hyper.precision, device)  # None: float32 throughout
    # torch.compile wraps the module for the training steps only; weights stay shared with
    # `model`, whose state_dict (without the wrapper's prefixes) is what checkpoints store.
    forward = torch.compile(model) if settings.compile else model
    # fused: one kernel for the whole update on a GPU (the CPU measured no gain, see bench/)
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper.lr, fused=device.type == "cuda")
    scheduler = None
    if hyper.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=hyper.lr, total_steps=hyper.epochs * batches
        )

    history: list[EpochStats] = []
    best = {"epoch": 0, "val_acc": -1.0, "val_loss": math.inf}
    wait, start_epoch, start_batch = 0, 1, 0
    partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    best_state: dict[str, torch.Tensor] | None = None

    if resumed is not None:
        ckpt.load_weights(model, resumed["model_state"], last_path)
        try:
            optimizer.load_state_dict(resumed["optimizer_state"])
            if scheduler is not None:
                scheduler.load_state_dict(resumed["scheduler_state"])
            _set_rng_state(resumed["rng"])
            best = dict(resumed["best"])
            wait = int(resumed["wait"])
            history = [stats_from_dict(h) for h in resumed["history"]]
            start_epoch = int(resumed["epoch"]) + 1
            start_batch = int(resumed.get("step", 0))
            partial = dict(resumed.get("partial") or partial)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{last_path} lacks the state needed to resume ({exc}); start a new run"
            ) from None
        best_path = run_dir / "best.pt"
        if best["epoch"] > 0 and best_path.exists():
            best_state = ckpt.load_checkpoint(best_path)["model_state"]
    else:
        write_atomic(
            run_dir / "config.json",
            (
                json.dumps(
                    {
                        "hyper": hyper.to_dict(),
                        "device": settings.device,
                        "data": {
                            "root": str(settings.data.root),
                            "mirrors": list(settings.data.mirrors),
                            "checksums": mnist.checksums,
                        },
                    },
                    indent=2,
                )
                + "\n"
            ).encode(),
        )
    ckpt.point_latest(settings.runs_dir, run_dir)

    def payload(kind: str, epoch: int, step: int, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": ckpt.FORMAT,
            "format_version": ckpt.FORMAT_VERSION,
            "kind": kind,
            "model": hyper.model,
            "epoch": epoch,
            "step": step,
            "history": [asdict(h) for h in history],
            "best": dict(best),
            "wait": wait,
            "config": hyper.to_dict(),
            "data": dict(mnist.checksums),
            "versions": ckpt.versions(),
            "created": ckpt.now_iso(),
            "finished": False,
        }
        body.update(extra)
        return body

    def last_payload(epoch: int, step: int, **extra: Any) -> dict[str, Any]:
        """Everything a resume needs: weights, optimizer, schedule, RNG, position in the run."""
        return payload(
            "last",
            epoch,
            step,
            model_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            optimizer_state=optimizer.state_dict(),
            scheduler_state=scheduler.state_dict() if scheduler is not None else None,
            rng=_rng_state(),
            **extra,
        )

    def save_last(epoch: int, step: int, **extra: Any) -> None:
        ckpt.save_checkpoint(last_payload(epoch, step, **extra), run_dir / "last.pt")

    def summary(reason: str, test: tuple[float, float] | None = None) -> dict[str, Any]:
        return {
            "stop_reason": reason,
            "best_epoch": best["epoch"],
            # no validated epoch yet (interrupted in epoch 1): null, not -1 and Infinity
            "best_val_acc": best["val_acc"] if best["epoch"] else None,
            "best_val_loss": best["val_loss"] if best["epoch"] else None,
            "test_acc": test[1] if test else None,
            "test_loss": test[0] if test else None,
            "device": str(device),
            "hyper": hyper.to_dict(),
        }

    def interrupted(epoch: int, batch: int) -> TrainResult:
        _write_metrics(run_dir, history, summary("interrupted"))
        return TrainResult(
            run_dir=run_dir,
            device=str(device),
            stop_reason="interrupted",
            epochs_run=len(history),
            best_epoch=best["epoch"],
            best_val_acc=best["val_acc"],
            best_val_loss=best["val_loss"],
            test_acc=None,
            test_loss=None,
            seconds=time.perf_counter() - t_start,
            history=tuple(history),
            interrupted_at=(epoch, batch),
        )

    emit(
        RunStarted(
            run_dir=run_dir,
            device=str(device),
            precision="bf16" if amp is not None else "fp32",
            hyper=hyper,
            parameters=count_parameters(model),
            n_train=n,
            n_val=len(val_set),
            n_test=len(mnist.test_labels),
            batches_per_epoch=batches,
            start_epoch=start_epoch,
            resumed=resumed is not None,
            history=tuple(history),
            best_epoch=best["epoch"],
            wait=wait,
        )
    )

    # --- the loop ----------------------------------------------------------------------------
    reason = "completed"
    epoch = start_epoch
    if resumed is not None and patience_exhausted(wait, hyper.patience):
        reason = "early_stop"
    while reason == "completed" and epoch <= hyper.epochs:
        model.train()
        perm = torch.randperm(n, generator=_generator(hyper.seed, epoch)).to(device)
        shifts = _epoch_shifts(hyper, epoch, n, batches).to(device) if hyper.augment > 0 else None
        emit(
            EpochStarted(epoch=epoch, epochs=hyper.epochs, batches=batches, first_batch=start_batch)
        )
        loss_sum = torch.tensor(partial["loss_sum"], device=device)
        correct = torch.tensor(int(partial["correct"]), device=device)
        seen = int(partial["seen"])
        t_epoch = time.perf_counter() - float(partial["seconds"])
        t_loop = t_shown = time.perf_counter()
        seen_at_start = seen
        for b in range(start_batch, batches):
            idx = perm[b * hyper.batch_size : (b + 1) * hyper.batch_size]
            x, y = train_set.x[idx], train_set.y[idx]
            if shifts is not None:
                x = shift_by(x, shifts[b * hyper.batch_size : (b + 1) * hyper.batch_size])
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = forward(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            seen += int(y.shape[0])
            now = time.perf_counter()
            if now - t_shown >= PROGRESS_INTERVAL or b == batches - 1:
                running = loss_sum.item() / seen
                if not math.isfinite(running):
                    _stop_on_nan(epoch, b + 1, run_dir)
                t_shown = now
                emit(
                    BatchDone(
                        epoch=epoch,
                        batch=b + 1,
                        batches=batches,
                        loss=running,
                        samples_per_s=(seen - seen_at_start) / max(now - t_loop, 1e-9),
                    )
                )
            if stop() and b + 1 < batches:
                save_last(
                    epoch - 1,
                    b + 1,
                    partial={
                        "loss_sum": loss_sum.item(),
                        "correct": int(correct.item()),
                        "seen": seen,
                        "seconds": time.perf_counter() - t_epoch,
                    },
                )
                return interrupted(epoch, b + 1)
        train_loss, train_acc = loss_sum.item() / seen, correct.item() / seen
        if not math.isfinite(train_loss):
            _stop_on_nan(epoch, batches, run_dir)
        val_loss, val_acc = evaluate(model, val_set)
        if not math.isfinite(val_loss):
            _stop_on_nan(epoch, batches, run_dir)
        seconds = time.perf_counter() - t_epoch
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            train_acc=train_acc,
            val_loss=val_loss,
            val_acc=val_acc,
            lr=optimizer.param_groups[0]["lr"],
            seconds=seconds,
            samples_per_s=seen / max(seconds, 1e-9),
        )
        history.append(stats)
        is_best = val_acc > best["val_acc"]
        if is_best:
            best = {"epoch": epoch, "val_acc": val_acc, "val_loss": val_loss}
            wait = 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            ckpt.save_checkpoint(
                payload("best", epoch, 0, model_state=best_state), run_dir / "best.pt"
            )
        else:
            wait += 1
        save_last(epoch, 0)
        _write_metrics(run_dir, history, summary("running"))
        emit(
            EpochDone(
                stats=stats,
                history=tuple(history),
                best_epoch=best["epoch"],
                is_best=is_best,
                wait=wait,
                patience=hyper.patience,
            )
        )
        start_batch, partial = 0, {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        if patience_exhausted(wait, hyper.patience):
            reason = "early_stop"
            emit(EarlyStopped(epoch=epoch, best_epoch=best["epoch"], patience=hyper.patience))
        elif stop() and epoch < hyper.epochs:
            return interrupted(epoch, batches)  # last.pt of this epoch is already saved
        epoch += 1

    # --- restore the best weights, report the test set once -----------------------------------
    if best_state is None:
        raise TrainingError("training finished without a single validated epoch")
    final_last = last_payload(len(history), 0)  # the last epoch's weights, before restoring
    ckpt.load_weights(model, best_state, run_dir / "best.pt")
    test_set = make_tensors(mnist.test_images, mnist.test_labels, device)
    test_loss, test_acc = evaluate(model, test_set)
    emit(TestDone(test_loss=test_loss, test_acc=test_acc, n=len(test_set)))
    test = {"loss": test_loss, "acc": test_acc, "n": len(test_set)}
    done = {"finished": True, "stop_reason": reason, "test": test}
    ckpt.save_checkpoint(
        payload("best", best["epoch"], 0, model_state=best_state, **done), run_dir / "best.pt"
    )
    final_last.update(done)
    ckpt.save_checkpoint(final_last, run_dir / "last.pt")
    _write_metrics(run_dir, history, summary(reason, (test_loss, test_acc)))
    return TrainResult(
        run_dir=run_dir,
        device=str(device),
        stop_reason=reason,
        epochs_run=len(history),
        best_epoch=best["epoch"],
        best_val_acc=best["val_acc"],
        best_val_loss=best["val_loss"],
        test_acc=test_acc,
        test_loss=test_loss,
        seconds=time.perf_counter() - t_start,
        history=tuple(history),
    )


def patience_exhausted(wait: int, patience: int) -> bool:
    """Early stopping: `patience` epochs in a row without a better validation accuracy."""
    return patience > 0 and wait >= patience


def _stop_on_nan(epoch: int, batch: int, run_dir: Path) -> None:
    raise TrainingError(
        f"the loss became NaN or infinite in epoch {epoch}, batch {batch}; "
        f"training stopped and the checkpoints in {run_dir} were kept as they "
        f"were (try a lower --lr)"
    )
