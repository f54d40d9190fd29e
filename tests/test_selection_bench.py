"""bench/selection.py compares the epoch-selection rules the trainer applies: its rules must be
the trainer's own, epoch for epoch."""

from __future__ import annotations

import random

import pytest

from mnistcli.records import EpochStats
from mnistcli.run_state import RunState
from tests.helpers import load_bench_script


@pytest.fixture(scope="module")
def selection():
    return load_bench_script("selection")


@pytest.mark.parametrize(
    ("rule", "select"), [("highest", "highest"), ("latest within 1 SE", "latest-within-se")]
)
def test_the_bench_chooses_the_epoch_the_trainer_keeps(selection, rule, select):
    """The trainer chooses epoch by epoch, against the highest so far; the bench chooses once,
    against the highest of all. Over random runs of accuracies they must agree."""
    rng = random.Random(0)
    for _ in range(300):
        n = rng.choice([100, 500, 5000])
        accs = [rng.randint(int(0.9 * n), n) / n for _ in range(rng.randint(1, 30))]
        state = RunState()
        for epoch, acc in enumerate(accs, 1):
            stats = EpochStats(epoch, 0.1, 0.9, 1 - acc, acc, 1e-3, 1.0, 1.0)
            state.record(stats, select, val_images=n)
        assert selection.choose(accs, n, rule) + 1 == state.best.epoch


def test_split_half_scores_each_rule_on_the_half_it_did_not_see(selection):
    """Two epochs equally good (20 of 40 images), right on different images: the one that looks
    better on the choosing half is worse on the other, so "highest" scores below "last"
    there, though both epochs are as accurate. Identical epochs score the same under every rule."""
    right = [[i < 20 for i in range(40)], [10 <= i < 30 for i in range(40)]]
    scores = selection.split_half(right, splits=2000)
    assert set(scores) == set(selection.RULES)
    assert scores["highest"] < scores["last"] - 0.02
    same = selection.split_half([right[0], right[0]], splits=50)
    assert len(set(same.values())) == 1
