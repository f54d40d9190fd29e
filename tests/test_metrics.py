"""metrics: confusion matrix, per-class scores, Wilson interval, confused pairs, mistakes, and
`evaluate_model` end to end, against values computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnistcli.data import MEAN, STD
from mnistcli.metrics import (
    ClassScore,
    ConfusedPair,
    class_scores,
    confusion_matrix,
    evaluate_model,
    macro_average,
    most_confident_mistakes,
    standard_error,
    top_confused_pairs,
    wilson_interval,
)

# Ten predictions over four classes; the matrix below is counted by hand.
TARGETS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
PREDS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1, 3])
EXPECTED_CM = [
    [2, 1, 0, 0],
    [0, 2, 0, 0],
    [1, 1, 2, 0],
    [0, 0, 0, 1],
]


def test_confusion_matrix_rows_true_columns_predicted():
    cm = confusion_matrix(TARGETS, PREDS, num_classes=4)
    assert cm.tolist() == EXPECTED_CM
    assert cm.dtype == torch.int64
    full = confusion_matrix(TARGETS, PREDS)  # 10 classes by default
    assert full.shape == (10, 10)
    assert full[:4, :4].tolist() == EXPECTED_CM
    assert int(full.sum()) == 10


def test_confusion_matrix_refuses_out_of_range_labels():
    with pytest.raises(ValueError, match=r"0\.\.3"):
        confusion_matrix(torch.tensor([0, 4]), torch.tensor([0, 1]), num_classes=4)
    with pytest.raises(ValueError, match="targets"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), num_classes=4)


def test_class_scores_by_hand():
    scores = class_scores(confusion_matrix(TARGETS, PREDS, num_classes=4))
    # precision = diagonal / column sum (3, 4, 2, 1); recall = diagonal / row sum (3, 2, 4, 1)
    expected = [
        (2 / 3, 2 / 3, 2 / 3, 3, 3),
        (2 / 4, 2 / 2, 2 / 3, 2, 4),  # F1 = 2 * 0.5 * 1 / 1.5
        (2 / 2, 2 / 4, 2 / 3, 4, 2),
        (1.0, 1.0, 1.0, 1, 1),
    ]
    for score, (p, r, f1, support, predicted) in zip(scores, expected, strict=True):
        assert score.precision == pytest.approx(p)
        assert score.recall == pytest.approx(r)
        assert score.f1 == pytest.approx(f1)
        assert (score.support, score.predicted) == (support, predicted)
    macro = macro_average(scores)
    assert macro.precision == pytest.approx((2 / 3 + 0.5 + 1 + 1) / 4)
    assert macro.recall == pytest.approx((2 / 3 + 1 + 0.5 + 1) / 4)
    assert macro.f1 == pytest.approx((2 / 3 * 3 + 1) / 4)
    assert macro.support == 10


def test_zero_division_is_zero():
    """Never predicted -> precision 0; no examples -> recall 0; both 0 -> F1 0; neither
    examples nor predictions -> absent, no scores."""
    scores = class_scores(confusion_matrix(torch.tensor([0, 0]), torch.tensor([1, 1]), 3))
    assert scores[0] == ClassScore(0, 0.0, 0.0, 0.0, support=2, predicted=0)
    assert scores[1] == ClassScore(1, 0.0, 0.0, 0.0, support=0, predicted=2)
    assert scores[2] == ClassScore(2, None, None, None, support=0, predicted=0)


def test_top_confused_pairs_ranked_by_count_then_labels():
    cm = torch.zeros(10, 10, dtype=torch.long)
    cm[4, 9], cm[7, 2], cm[2, 7], cm[3, 5], cm[1, 1] = 12, 5, 5, 1, 999
    pairs = top_confused_pairs(cm, 3)
    assert pairs == (ConfusedPair(4, 9, 12), ConfusedPair(2, 7, 5), ConfusedPair(7, 2, 5))
    assert len(top_confused_pairs(cm, 100)) == 4  # zeros and the diagonal are never listed
    assert top_confused_pairs(cm, 0) == ()
    small = top_confused_pairs(confusion_matrix(TARGETS, PREDS, 4), 10)
    assert [(p.true, p.pred, p.count) for p in small] == [(0, 1, 1), (2, 0, 1), (2, 1, 1)]


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Wilson (1927) with z = 1.959964: centre (p + z²/2n)/(1 + z²/n),
        # half-width z/(1 + z²/n) * sqrt(p(1-p)/n + z²/4n²); e.g. 7/10 -> 0.64449 ± 0.24772
        (7, 10, 0.39677, 0.89221),
        (0, 10, 0.0, 0.27753),
        (10, 10, 0.72247, 1.0),
        (9_900, 10_000, 0.98785, 0.99177),  # 0.989812 ± 0.001959
    ],
)
def test_wilson_interval_by_hand(successes, n, low, high):
    ci = wilson_interval(successes, n)
    assert ci.low == pytest.approx(low, abs=1e-5)
    assert ci.high == pytest.approx(high, abs=1e-5)
    assert (ci.level, ci.method) == (0.95, "wilson")


def test_wilson_interval_edges():
    assert (wilson_interval(0, 0).low, wilson_interval(0, 0).high) == (0.0, 1.0)
    wider = wilson_interval(70, 100, level=0.99)
    narrower = wilson_interval(70, 100)
    assert wider.low < narrower.low < 0.7 < narrower.high < wider.high
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_most_confident_mistakes_order_and_pixels():
    probs = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # right
            [0.2, 0.7, 0.1],  # wrong (true 0), 0.7
            [0.05, 0.05, 0.9],  # wrong (true 1), 0.9
            [0.3, 0.7, 0.0],  # wrong (true 2), 0.7: ties keep the lower index first
        ]
    )
    targets = torch.tensor([0, 0, 1, 2])
    images = torch.arange(4).view(4, 1, 1).expand(4, 28, 28).to(torch.uint8)
    mistakes = most_confident_mistakes(probs, targets, images, 10)
    assert [(m.index, m.true, m.pred) for m in mistakes] == [(2, 1, 2), (1, 0, 1), (3, 2, 1)]
    assert mistakes[0].confidence == pytest.approx(0.9)
    assert mistakes[0].true_prob == pytest.approx(0.05)
    assert mistakes[0].pixels == bytes([2]) * 784
    assert len(most_confident_mistakes(probs, targets, images, 2)) == 2
    assert most_confident_mistakes(probs, targets, images, 0) == ()


class ByBrightness(nn.Module):
    """Predicts class k for an image filled with grey level 20 * k (logits: -distance²)."""

    def __init__(self) -> None:
        super().__init__()
        levels = torch.arange(10) * 20.0
        self.register_buffer("centres", (levels / 255 - MEAN) / STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3))
        return -((mean[:, None] - self.centres[None, :]) ** 2) * 50


def test_evaluate_model_end_to_end_across_batches(monkeypatch):
    import types

    import mnistcli.metrics as metrics

    images = (PREDS * 20).to(torch.uint8).view(-1, 1, 1).expand(-1, 28, 28).contiguous()
    model = ByBrightness()
    model.train()  # evaluate_model must switch to eval mode and back
    readings = []  # a fake clock: 101, 102, 104, 108, ... (each difference is unique)

    def clock() -> float:
        readings.append(100.0 + 2.0 ** len(readings))
        return readings[-1]

    monkeypatch.setattr(metrics, "time", types.SimpleNamespace(perf_counter=clock))
    ev = evaluate_model(model, images, TARGETS, batch_size=3, top=2, gallery=5)
    assert model.training
    assert ev.n == 10 and ev.correct == 7 and ev.errors == 3
    assert ev.accuracy == pytest.approx(0.7)
    assert [list(row[:4]) for row in ev.confusion[:4]] == EXPECTED_CM
    assert sum(map(sum, ev.confusion)) == 10
    assert (ev.interval.low, ev.interval.high) == pytest.approx((0.39677, 0.89221), abs=1e-5)
    assert ev.per_class[2].recall == pytest.approx(0.5)
    assert [(p.true, p.pred) for p in ev.pairs] == [(0, 1), (2, 0)]
    assert sorted(m.index for m in ev.mistakes) == [2, 7, 8]
    logits = model(((images.float() / 255 - MEAN) / STD).unsqueeze(1))
    expected_loss = nn.functional.cross_entropy(logits, TARGETS).item()
    assert ev.loss == pytest.approx(expected_loss, rel=1e-5)
    assert len(readings) >= 2 and ev.seconds == readings[-1] - readings[0]  # the whole call
    doc = ev.to_dict()
    assert doc["accuracy_ci"]["method"] == "wilson"
    assert doc["confusion_matrix"][2][:4] == [1, 1, 2, 0]
    assert "pixels" not in doc["misclassified"][0]


@pytest.mark.slow
def test_evaluate_model_agrees_with_the_trainer(trained_run, real_mnist):
    """An independent count of loss and accuracy: the model on the whole set in one pass."""
    from mnistcli.loading import load_model

    model, _ = load_model(trained_run / "best.pt")
    images, labels = real_mnist.test_images[:2000], real_mnist.test_labels[:2000]
    ev = evaluate_model(model, images, labels, batch_size=700, top=5, gallery=3)
    with torch.inference_mode():
        logits = model(((images.float() / 255 - MEAN) / STD).unsqueeze(1))
    loss = nn.functional.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    assert ev.accuracy == pytest.approx(acc)
    assert ev.loss == pytest.approx(loss, rel=1e-4)
    assert 0.7 < ev.accuracy < 1.0
    assert ev.pairs[0].count == max(
        ev.confusion[t][p] for t in range(10) for p in range(10) if t != p
    )
    assert [m.confidence for m in ev.mistakes] == sorted(
        (m.confidence for m in ev.mistakes), reverse=True
    )


@pytest.mark.slow
def test_confusion_matrix_on_real_data_matches_an_independent_count(trained_run, real_mnist):
    """Every cell of the matrix evaluate_model reports, on 4,000 real test images, against
    numpy's bincount of label * 10 + prediction, predictions made here by the model itself."""
    import numpy as np

    from mnistcli.loading import load_model

    model, _ = load_model(trained_run / "best.pt")
    images, labels = real_mnist.test_images[:4000], real_mnist.test_labels[:4000]
    ev = evaluate_model(model, images, labels, batch_size=512, top=3, gallery=0)
    with torch.no_grad():
        x = ((images.float() / 255 - MEAN) / STD).unsqueeze(1)
        preds = torch.cat([model(chunk).argmax(1) for chunk in x.split(1000)]).numpy()
    y = labels.numpy()
    expected = np.bincount(y * 10 + preds, minlength=100).reshape(10, 10)
    assert np.array_equal(np.array(ev.confusion), expected)
    assert ev.correct == int((preds == y).sum()) == int(np.trace(expected))
    assert np.count_nonzero(expected - np.diag(np.diag(expected))) >= 20  # many kinds of error
    for score in ev.per_class:  # the scores are read from the same cells
        assert score.support == int((y == score.label).sum())
        hits = int(((y == score.label) & (preds == score.label)).sum())
        assert score.predicted == int((preds == score.label).sum())
        assert score.recall == pytest.approx(hits / score.support)
        assert score.precision == pytest.approx(hits / score.predicted)


def test_standard_error_of_an_accuracy():
    """sqrt(p(1-p)/n): 0.10 points at 99.5% on 5,000 validation images; none at 0% or 100%."""
    assert standard_error(0.995, 5000) == pytest.approx(0.000997, abs=1e-6)
    assert standard_error(1.0, 5000) == standard_error(0.0, 100) == 0.0


def test_the_macro_average_is_over_the_digits_present():
    """As scikit-learn's classification_report: the mean over the labels found in the true
    labels or the predictions. A digit with no images and no predictions is absent (None
    scores, null in JSON); one with images that all had no digit found is present."""
    # 2 images per digit, all right, no digit 4 (the tester's folder): 100%, not 90%
    targets = torch.tensor([d for d in range(10) if d != 4 for _ in range(2)])
    scores = class_scores(confusion_matrix(targets, targets))
    assert scores[4] == ClassScore(4, None, None, None, support=0, predicted=0)
    macro = macro_average(scores)
    assert (macro.precision, macro.recall, macro.f1) == (1.0, 1.0, 1.0)
    assert (macro.support, macro.predicted) == (18, 18)
    # one digit only: its scores, not a tenth of them
    one = macro_average(class_scores(confusion_matrix(torch.tensor([5]), torch.tensor([5]))))
    assert (one.precision, one.recall, one.f1) == (1.0, 1.0, 1.0)
    # a digit only predicted (precision 0) and one whose images had no digit found (recall 0)
    # are present and count, as zeros
    no_digit = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    scores = class_scores(confusion_matrix(torch.tensor([3, 5]), torch.tensor([3, 6])), no_digit)
    assert scores[6] == ClassScore(6, 0.0, 0.0, 0.0, support=0, predicted=1)
    assert scores[7] == ClassScore(7, 0.0, 0.0, 0.0, support=1, predicted=0)
    assert [s.label for s in scores if s.f1 is not None] == [3, 5, 6, 7]
    macro = macro_average(scores)
    assert macro.precision == pytest.approx(1 / 4) and macro.recall == pytest.approx(1 / 4)
    assert macro_average(class_scores(torch.zeros(10, 10, dtype=torch.long))).f1 == 0.0
    # every digit present (MNIST's splits): the plain mean over all ten, as before
    cm = torch.eye(10, dtype=torch.long) * 7
    cm[4, 9], cm[7, 1] = 3, 2
    full = class_scores(cm)
    assert macro_average(full).f1 == pytest.approx(sum(s.f1 or 0.0 for s in full) / 10)
    assert macro_average(full).precision == pytest.approx(sum(s.precision or 0 for s in full) / 10)


def test_the_json_gives_an_absent_digit_null_scores_and_keeps_its_keys():
    from mnistcli.metrics import evaluation_from_logits

    targets = torch.tensor([5, 5, 3])
    logits = torch.nn.functional.one_hot(targets, 10).float() * 5
    ev, _ = evaluation_from_logits(logits, targets, top=3)
    doc = ev.to_dict()
    assert doc["per_class"][0] == {
        "label": 0,
        **{"precision": None, "recall": None, "f1": None},
        **{"support": 0, "predicted": 0},
    }
    assert doc["per_class"][5]["f1"] == 1.0
    assert doc["macro_avg"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}
