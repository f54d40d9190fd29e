"""The training loop: where the network learns. Read `train` first; the rest is bookkeeping.

Each epoch: the model in train mode (dropout on) takes one optimizer step per batch of
shuffled training images (forward, loss, zero_grad, backward, step); then, in eval mode and
without gradients, it is scored on the validation images held out from the 60k training set.
The best epoch's weights are kept (best.pt), and training stops early when validation accuracy
has not improved for `patience` epochs. At the end the best weights are restored and the test
set is evaluated once, only to be reported.

What the loop needs around it lives in its own modules and is called from here: opening a run,
new or resumed from last.pt (resume.py), where it stands and saving it (run_state.py), the
shuffled, sharded and augmented batches (augment.py, distributed.py), and the events a view
draws (events.py).
The trainer prints nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from mnistcli import checkpoint as ckpt
from mnistcli import distributed
from mnistcli.data import Mnist, make_tensors
from mnistcli.errors import TrainingError
from mnistcli.events import EarlyStopped, EpochDone, Event, TestDone, TrainResult
from mnistcli.figures import save_curves
from mnistcli.records import EpochStats, RunStatus, TestScore
from mnistcli.resume import open_run
from mnistcli.run_state import EpochTally, Run, nan_error
from mnistcli.settings import TrainSettings

__all__ = ["TrainResult", "train"]


def train(
    settings: TrainSettings,
    mnist: Mnist,
    *,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train (or resume) one run; returns when done, stopped early, or asked to stop.
    Under torchrun every rank calls this and they train together (see distributed.py)."""
    world = distributed.world_from_env()
    try:
        run = open_run(settings, mnist, on_event or _ignore, should_stop or _never, world=world)
        model, optimizer, hyper, state = run.model, run.optimizer, run.hyper, run.state
        while state.epoch < hyper.epochs and not run.out_of_patience():
            epoch = state.epoch + 1

            # Train: one pass over the shuffled training images, one step per batch.
            model.train()  # dropout on
            tally = run.start_epoch(epoch)  # a resumed epoch goes on from the batch it left
            for images, labels in run.epoch_batches(epoch):  # (B, 1, 28, 28), (B,)
                with run.autocast():  # bf16 where the recipe asks and the hardware has it
                    logits = run.forward(images)  # (B, 10)
                    loss = F.cross_entropy(logits, labels, label_smoothing=hyper.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if run.scheduler is not None:
                    run.scheduler.step()  # the one-cycle schedule moves the rate every step
                tally.add(loss.detach(), logits.detach(), labels)  # reports progress now and then
                if run.stop_requested(tally.batches_done):  # Ctrl-C or SIGTERM
                    return pause(run, tally)

            # Validate: the held-out images, dropout off, no gradients.
            model.eval()
            with torch.inference_mode():
                val_loss, val_acc = run.evaluate(run.val_set)
            end_epoch(run, tally, val_loss, val_acc)

            # Early stopping: `patience` epochs in a row without a better validation accuracy.
            if run.out_of_patience():
                run.emit(EarlyStopped(state.epoch, state.best.epoch, hyper.patience))
            elif run.stop_requested() and state.epoch < hyper.epochs:
                return stop_run(run, (state.epoch, run.batches))  # last.pt is already saved
        done = RunStatus.EARLY_STOPPED if run.out_of_patience() else RunStatus.FINISHED
        return finish_run(run, done)
    except OSError as exc:  # a full disk or a folder that became unwritable while saving
        where = f" {exc.filename}" if exc.filename else ""
        raise TrainingError(
            f"could not save{where}: {exc.strerror or exc}; files saved before are intact "
            f"(free some space or fix permissions, then continue with --resume)"
        ) from None
    finally:
        distributed.finish(world)


def end_epoch(run: Run, tally: EpochTally, val_loss: float, val_acc: float) -> None:
    """Record the finished epoch; save last.pt (and best.pt when it becomes the chosen
    epoch), metrics and curves.png; tell the caller."""
    state, hyper, epoch = run.state, run.hyper, tally.epoch
    totals = tally.totals()  # summed over the ranks under torchrun
    train_loss, train_acc = totals.loss_sum / totals.seen, totals.correct / totals.seen
    for value in (train_loss, val_loss):
        if not math.isfinite(value):
            raise nan_error(epoch, run.batches, run.run_dir)
    stats = EpochStats(
        epoch=epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=val_loss,
        val_acc=val_acc,
        lr=run.optimizer.param_groups[0]["lr"],
        seconds=totals.seconds,
        samples_per_s=totals.seen / max(totals.seconds, 1e-9),
    )
    is_best = state.record(stats, hyper.select, len(run.val_set))
    if is_best:
        run.best_state = ckpt.state_dict_copy(run.model)
        run.save(run.checkpoint("best"))
    run.save(run.checkpoint("last"))
    run.write_metrics(run.result("running"))
    if run.world.is_main:
        save_curves(state.history, run.run_dir / "curves.png", state.best.epoch)
    run.emit(
        EpochDone(
            stats=stats,
            history=tuple(state.history),
            best_epoch=state.best.epoch,
            is_best=is_best,
            epochs_without_gain=state.epochs_without_gain,
            patience=hyper.patience,
        )
    )


def pause(run: Run, tally: EpochTally) -> TrainResult:
    """Asked to stop part-way through an epoch: last.pt keeps the batches done and their
    totals, so --resume goes on from the next batch exactly."""
    run.state.step = tally.batches_done
    run.state.in_progress = tally.totals()
    run.save(run.checkpoint("last"))
    return stop_run(run, (tally.epoch, tally.batches_done))


def stop_run(run: Run, at: tuple[int, int]) -> TrainResult:
    """Asked to stop: last.pt is saved; metrics.json says so. `at`: (epoch, batch)."""
    result = run.result(RunStatus.INTERRUPTED, interrupted_at=at)
    run.write_metrics(result)
    return result


def finish_run(run: Run, reason: RunStatus) -> TrainResult:
    """Restore the best epoch's weights, evaluate the test set once, mark both files done."""
    if run.best_state is None:
        raise TrainingError("training finished without a single validated epoch")
    last = run.checkpoint("last")  # the last epoch's weights, before restoring the best
    ckpt.load_weights(run.model, run.best_state, run.run_dir / "best.pt")
    test_set = make_tensors(run.mnist.test_images, run.mnist.test_labels, run.device)
    test_loss, test_acc = run.evaluate(test_set)
    test = TestScore(loss=test_loss, acc=test_acc, n=len(test_set))
    run.emit(TestDone(test))
    for checkpoint in (run.checkpoint("best"), last):
        done = replace(checkpoint.meta, finished=True, stop_reason=reason, test=test)
        run.save(replace(checkpoint, meta=done))
    result = run.result(reason, test)
    run.write_metrics(result)
    return result


def _ignore(_event: Event) -> None:
    return None


def _never() -> bool:
    return False
