"""How good a model is and where it fails: confusion matrix, per-class scores, a confidence
interval for the accuracy, the most confused pairs and the most confident mistakes.

Everything is computed from the model's predictions and returned as small frozen dataclasses;
nothing here draws or prints. Conventions (as scikit-learn's `zero_division=0`): a class that is
never predicted has precision 0, a class with no examples has recall 0, and F1 is 0 when
precision + recall is 0. A class with neither examples nor predictions is absent: it has no
scores (None, null in JSON) and the macro average leaves it out, as scikit-learn's
classification_report averages over the labels found in the true labels or the predictions
(a folder of your own digits may lack a digit; MNIST's splits hold every one).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mnistcli.checkpoint import EpochStats
    from mnistcli.data import OnProgress as OnFileProgress
    from mnistcli.data import Tensors
    from mnistcli.loading import LoadedModel
    from mnistcli.settings import EvalSettings, HyperParams

    # (N, 28, 28) uint8 images -> (N, C) logits: a model run by something other than PyTorch
    LogitsFn = Callable[[torch.Tensor], torch.Tensor]

# (images done, images in all): how far an evaluation has got
OnProgress = Callable[[int, int], None]

NUM_CLASSES = 10
CI_LEVEL = 0.95
CI_METHOD = "wilson"


@dataclass(frozen=True)
class Interval:
    """A confidence interval for a proportion (Wilson score interval)."""

    low: float
    high: float
    level: float = CI_LEVEL
    method: str = CI_METHOD


@dataclass(frozen=True)
class ClassScore:
    """Precision, recall and F1 of one class; `support` true examples, `predicted` predictions.
    The scores are None for a class with neither (absent: there is nothing to score)."""

    label: int
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    predicted: int


@dataclass(frozen=True)
class ConfusedPair:
    """`count` images of class `true` were predicted as `pred` (true != pred)."""

    true: int
    pred: int
    count: int


@dataclass(frozen=True)
class Mistake:
    """One misclassified image: its index in the split, the labels, and the model's confidence."""

    index: int
    true: int
    pred: int
    confidence: float  # softmax probability of `pred`
    true_prob: float  # softmax probability of the true class
    pixels: bytes  # the 28x28 uint8 image, row by row (784 bytes), for drawing
    path: str | None = None  # the file, for images from files (eval --images)

    def to_dict(self) -> dict[str, Any]:
        skip = {"pixels"} if self.path is not None else {"pixels", "path"}  # pixels: for drawing
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass(frozen=True)
class Evaluation:
    """Every figure `mnistcli eval` shows, for one model on one split."""

    n: int
    correct: int
    loss: float  # mean cross-entropy
    interval: Interval  # for the accuracy
    confusion: tuple[tuple[int, ...], ...]  # [true][pred]
    per_class: tuple[ClassScore, ...]
    macro: ClassScore  # mean over the classes present (label -1; support, predicted: totals)
    pairs: tuple[ConfusedPair, ...]  # most confused first
    mistakes: tuple[Mistake, ...]  # most confident mistakes first
    seconds: float  # inference and metrics, not loading
    # per true class, images in which no digit was found (eval --images): wrong, and counted
    # in `n` and each class's support, but in no column of `confusion`; () for MNIST's splits
    no_digit: tuple[int, ...] = ()

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def errors(self) -> int:
        return self.n - self.correct

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "correct": self.correct,
            "errors": self.errors,
            "accuracy_ci": {
                "low": self.interval.low,
                "high": self.interval.high,
                "level": self.interval.level,
                "method": self.interval.method,
            },
            "confusion_matrix": [list(row) for row in self.confusion],
            "confusion_matrix_axes": "rows: true label, columns: predicted label",
            **({"no_digit": list(self.no_digit)} if self.no_digit else {}),
            "per_class": [_score_dict(s) for s in self.per_class],
            "macro_avg": {
                k: v for k, v in _score_dict(self.macro).items() if k not in ("label", "predicted")
            },
            "top_confused": [
                {"true": p.true, "pred": p.pred, "count": p.count} for p in self.pairs
            ],
            "misclassified": [m.to_dict() for m in self.mistakes],
            "seconds": self.seconds,
        }


def _score_dict(s: ClassScore) -> dict[str, Any]:
    return {
        "label": s.label,
        "precision": s.precision,
        "recall": s.recall,
        "f1": s.f1,
        "support": s.support,
        "predicted": s.predicted,
    }


def confusion_matrix(
    targets: torch.Tensor, preds: torch.Tensor, num_classes: int = NUM_CLASSES
) -> torch.Tensor:
    """(C, C) int64 counts on the CPU, rows the true class and columns the predicted one."""
    import torch

    targets, preds = targets.long().cpu().flatten(), preds.long().cpu().flatten()
    if targets.shape != preds.shape:
        raise ValueError(f"{targets.numel()} targets but {preds.numel()} predictions")
    for name, t in (("targets", targets), ("predictions", preds)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}")
    flat = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def class_scores(confusion: torch.Tensor, no_digit: Sequence[int] = ()) -> tuple[ClassScore, ...]:
    """Per-class precision, recall and F1 from a confusion matrix (rows true, columns pred);
    `no_digit[k]`: images of class k given no prediction at all, which lower its recall (and
    make it present). A class with no images and no predictions gets None scores."""
    cm = confusion.long()
    tp = cm.diagonal()
    support, predicted = cm.sum(1), cm.sum(0)
    scores = []
    for k in range(cm.shape[0]):
        hit, pred = int(tp[k]), int(predicted[k])
        sup = int(support[k]) + (no_digit[k] if no_digit else 0)
        if not sup and not pred:
            scores.append(ClassScore(k, None, None, None, 0, 0))
            continue
        precision = hit / pred if pred else 0.0
        recall = hit / sup if sup else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append(ClassScore(k, precision, recall, f1, sup, pred))
    return tuple(scores)


def macro_average(scores: tuple[ClassScore, ...]) -> ClassScore:
    """The unweighted mean of precision, recall and F1 over the classes present (with examples
    or predictions): an absent class says nothing about the model, so it must not pull the
    mean towards 0. All 0 when no class is present."""
    present = [s for s in scores if s.support or s.predicted]
    k = max(len(present), 1)
    return ClassScore(
        label=-1,
        precision=sum(s.precision or 0.0 for s in present) / k,
        recall=sum(s.recall or 0.0 for s in present) / k,
        f1=sum(s.f1 or 0.0 for s in present) / k,
        support=sum(s.support for s in scores),
        predicted=sum(s.predicted for s in scores),
    )


def standard_error(p: float, n: int) -> float:
    """The standard error of an accuracy `p` measured on `n` images: sqrt(p(1-p)/n)."""
    return math.sqrt(p * (1 - p) / n)


def wilson_interval(successes: int, n: int, level: float = CI_LEVEL) -> Interval:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    centre = (p + z²/2n) / (1 + z²/n),  half-width = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²),
    with z the two-sided normal quantile (1.96 for 95%). Unlike p ± z·sqrt(p(1-p)/n) it stays
    inside [0, 1] and does not collapse to a point when p is 0 or 1.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes ({successes}) must lie in 0..n ({n})")
    if n == 0:
        return Interval(0.0, 1.0, level)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(max(0.0, centre - half), min(1.0, centre + half), level)


def top_confused_pairs(confusion: torch.Tensor, k: int) -> tuple[ConfusedPair, ...]:
    """The `k` largest off-diagonal counts, largest first (ties: by true, then predicted label).

    Pairs with a count of 0 are never listed.
    """
    cm = confusion.long().cpu()
    pairs = [
        ConfusedPair(t, p, int(cm[t, p]))
        for t in range(cm.shape[0])
        for p in range(cm.shape[1])
        if t != p and cm[t, p] > 0
    ]
    pairs.sort(key=lambda q: (-q.count, q.true, q.pred))
    return tuple(pairs[: max(k, 0)])


def most_confident_mistakes(
    probs: torch.Tensor, targets: torch.Tensor, images: torch.Tensor, k: int
) -> tuple[Mistake, ...]:
    """The `k` misclassified images the model was surest about (ties: lower index first).

    probs: (N, C) softmax outputs; targets: (N,); images: (N, 28, 28) uint8.
    """
    import torch

    probs, targets = probs.float().cpu(), targets.long().cpu()
    confidence, preds = probs.max(1)
    chosen = mistake_order(probs, targets, k)
    images = images.cpu()
    return tuple(
        Mistake(
            index=i,
            true=int(targets[i]),
            pred=int(preds[i]),
            confidence=float(confidence[i]),
            true_prob=float(probs[i, targets[i]]),
            pixels=bytes(images[i].to(torch.uint8).flatten().tolist()),
        )
        for i in chosen
    )


def mistake_order(probs: torch.Tensor, targets: torch.Tensor, k: int) -> list[int]:
    """The indices of the `k` most confident mistakes, surest first (ties: lower index first):
    the one ranking behind every gallery. probs: (N, C) softmax outputs; targets: (N,)."""
    import torch

    probs, targets = probs.float().cpu(), targets.long().cpu()
    confidence, preds = probs.max(1)
    wrong = (preds != targets).nonzero().flatten()
    if k <= 0 or wrong.numel() == 0:
        return []
    # stable sort on -confidence keeps index order among equal confidences
    order = torch.sort(-confidence[wrong], stable=True).indices[:k]
    return wrong[order].tolist()


def evaluate_model(
    model: nn.Module | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    top: int = 10,
    gallery: int = 16,
    logits_fn: LogitsFn | None = None,
    on_progress: OnProgress | None = None,
) -> Evaluation:
    """Run `model` over (N, 28, 28) uint8 `images` in large batches and compute every figure.

    `logits_fn`, when given, computes the logits from the images in place of `model` (an
    exported model run by onnxruntime). `on_progress(done, total)` is called with the images
    scored so far after each batch. (loading.load_model already put the model in its fastest
    memory layout.)
    """
    from mnistcli.data import make_tensors

    start = time.perf_counter()
    data = make_tensors(images, labels, device)
    logits = _batched_logits(model, data.x, images, batch_size, logits_fn, on_progress)
    result, probs = evaluate_tensors(model, data, batch_size=batch_size, top=top, logits=logits)
    mistakes = most_confident_mistakes(probs, data.y, images, gallery)
    return dataclasses.replace(result, mistakes=mistakes, seconds=time.perf_counter() - start)


def _batched_logits(
    model: nn.Module | None,
    x: torch.Tensor,
    images: torch.Tensor,
    batch_size: int,
    logits_fn: LogitsFn | None,
    on_progress: OnProgress | None,
) -> torch.Tensor | None:
    """The (N, C) logits, one batch at a time so progress can be told; the same batches
    logits_in_batches would run, so the numbers are the same. None: leave it to
    evaluate_tensors (no progress wanted, a torch model)."""
    import torch

    from mnistcli.model import logits_in_batches

    if logits_fn is None and (on_progress is None or model is None):
        return None
    total = len(images)
    if total == 0:
        return logits_fn(images) if logits_fn is not None else None
    parts = []
    for i in range(0, total, batch_size):
        if logits_fn is not None:
            parts.append(logits_fn(images[i : i + batch_size]))
        else:
            assert model is not None
            parts.append(logits_in_batches(model, x[i : i + batch_size], batch_size))
        if on_progress is not None:
            on_progress(min(i + batch_size, total), total)
    return torch.cat(parts)


def evaluate_tensors(
    model: nn.Module | None,
    data: Tensors,
    *,
    batch_size: int = 256,
    top: int = 10,
    logits: torch.Tensor | None = None,
) -> tuple[Evaluation, torch.Tensor]:
    """Every figure but the mistakes, for prepared tensors, and the (N, C) softmax outputs.

    The one evaluation both the trainer (each epoch's validation, the final test set) and
    `mnistcli eval` run. `logits`: the (N, C) outputs already computed, `model` then unused.
    """
    from mnistcli.model import logits_in_batches

    start = time.perf_counter()
    if logits is None:
        if model is None:
            raise ValueError("evaluate_tensors needs a model or its logits")
        logits = logits_in_batches(model, data.x, batch_size)
    logits = logits.to(data.y.device).float()
    evaluation, probs = evaluation_from_logits(logits, data.y, top=top)
    return dataclasses.replace(evaluation, seconds=time.perf_counter() - start), probs


def evaluation_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, *, top: int = 10, no_digit: Sequence[int] = ()
) -> tuple[Evaluation, torch.Tensor]:
    """Every figure but the mistakes from (N, C) logits and their (N,) true labels, and the
    softmax outputs: the one place the figures are computed, for MNIST's splits and for files.

    `no_digit[k]`: images of class k in which no digit was found (eval --images). They are
    wrong: counted in `n`, in no confusion column, and in their class's support.
    """
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        loss = F.cross_entropy(logits, targets).item() if len(targets) else 0.0
        probs = logits.softmax(1)
    cm = confusion_matrix(targets, logits.argmax(1), logits.shape[1])
    correct = int(cm.diagonal().sum())
    n = len(targets) + sum(no_digit)
    scores = class_scores(cm, no_digit)
    evaluation = Evaluation(
        n=n,
        correct=correct,
        loss=loss,
        interval=wilson_interval(correct, n),
        confusion=tuple(tuple(row) for row in cm.tolist()),
        per_class=scores,
        macro=macro_average(scores),
        pairs=top_confused_pairs(cm, top),
        mistakes=(),
        seconds=0.0,
        no_digit=tuple(no_digit),
    )
    return evaluation, probs


# ---------------------------------------------------------------------------------------------
# `mnistcli eval`: one checkpoint on one split


@dataclass(frozen=True)
class EvalReport:
    """A checkpoint evaluated on a split, with what the report says about its run."""

    checkpoint: Path
    model: str
    epoch: int  # the epoch whose weights these are
    split: str  # "test" or "val"
    device: str
    evaluation: Evaluation
    hyper: HyperParams  # of the run that wrote the checkpoint
    n_train: int  # training images that run used
    epochs_in_checkpoint: int
    history: tuple[EpochStats, ...]  # () when the checkpoint's history cannot be read

    def to_dict(self, saved: Sequence[Path] = ()) -> dict[str, Any]:
        """The JSON document (`--json` and eval.json); `saved`: the files written."""
        return {
            "checkpoint": str(self.checkpoint),
            "model": self.model,
            "epoch": self.epoch,
            "split": self.split,
            "device": self.device,
            **self.evaluation.to_dict(),
            "saved": [str(p) for p in saved],
        }


def evaluate_checkpoint(
    settings: EvalSettings,
    *,
    log: Callable[[str], None] = lambda _m: None,
    on_data: OnFileProgress | None = None,
    on_progress: OnProgress | None = None,
) -> EvalReport:
    """Load the checkpoint, then the MNIST part the split lives in (the test files, or the
    training files for the validation split), and evaluate it on the test split or on the
    validation split its own run held out (the trainer's split_indices, same seed and size).
    `on_data` hears how checking or fetching the data files goes, `on_progress` the scoring."""
    from mnistcli.data import TRAIN_COUNT, load_part, split_indices
    from mnistcli.loading import open_model

    loaded = open_model(
        settings.checkpoint,
        settings.device,
        runs_dir=settings.runs_dir,
        channels_last=True,
        log=log,
    )
    meta = loaded.require_meta()
    hyper = meta.hyper
    mirrors = list(settings.data.mirrors)
    if settings.split == "val":
        train = load_part(settings.data.root, mirrors, "train", on_message=log, on_progress=on_data)
        held_out = split_indices(len(train.labels), hyper.val_size, hyper.seed).val
        images, labels = train.images[held_out], train.labels[held_out]
        log(
            f"note: the validation split ({hyper.val_size:,} images, seed {hyper.seed}) chose "
            f"this checkpoint, so its figures are optimistic; the test split is not"
        )
    else:
        test = load_part(settings.data.root, mirrors, "test", on_message=log, on_progress=on_data)
        images, labels = test.images, test.labels
    on_torch = loaded.module is not None  # else onnxruntime runs the file on the CPU
    evaluation = evaluate_model(
        loaded.module,
        images,
        labels,
        device=loaded.device if on_torch else "cpu",
        batch_size=settings.batch_size,
        top=settings.pairs,
        gallery=settings.gallery,
        logits_fn=None if on_torch else _pixel_logits(loaded, settings.batch_size),
        on_progress=on_progress,
    )
    n_train = TRAIN_COUNT - hyper.val_size
    return EvalReport(
        checkpoint=loaded.path,
        model=meta.model,
        epoch=meta.epoch,
        split=settings.split,
        device=loaded.device,
        evaluation=evaluation,
        hyper=hyper,
        n_train=min(hyper.limit, n_train) if hyper.limit else n_train,
        epochs_in_checkpoint=meta.epochs_run,
        history=meta.history or (),
    )


def _pixel_logits(model: LoadedModel, batch_size: int) -> LogitsFn:
    """(N, 28, 28) uint8 images -> (N, 10) logits as torch tensors, from a model that takes
    pixels / 255 (an .onnx run by onnxruntime): the `logits_fn` evaluate_model takes."""
    import numpy as np
    import torch

    def logits(images: torch.Tensor) -> torch.Tensor:
        x = images.cpu().numpy()[:, None].astype(np.float32) / 255.0
        return torch.from_numpy(model.logits(x, batch_size))

    return logits
