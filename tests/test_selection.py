"""Which epoch best.pt keeps (`[train] select`): the trainer decides epoch by epoch, against the
highest validation accuracy so far, yet must keep the epoch its rule names over the whole run.
(bench/selfcheck.py checks that bench/selection.py's rules are these.)"""

from __future__ import annotations

import math
import random

import pytest

from mnistcli.records import EpochStats
from mnistcli.run_state import RunState


def kept_by_rule(accs: list[float], n: int, select: str) -> int:
    """The 1-based epoch a rule names, looking at the whole run at once. "highest": the first
    epoch with the highest accuracy; "latest-within-se": the latest epoch whose accuracy is at
    least the highest minus one standard error, sqrt(p(1-p)/n), of that highest p."""
    top = max(accs)
    if select == "highest":
        return accs.index(top) + 1
    floor = top - math.sqrt(top * (1 - top) / n)
    return max(i for i, a in enumerate(accs) if a >= floor) + 1


def record_all(accs: list[float], n: int, select: str) -> RunState:
    state = RunState()
    for epoch, acc in enumerate(accs, 1):
        state.record(EpochStats(epoch, 0.1, 0.9, 1 - acc, acc, 1e-3, 1.0, 1.0), select, n)
    return state


@pytest.mark.parametrize("select", ["highest", "latest-within-se"])
def test_the_trainer_keeps_the_epoch_its_rule_names(select):
    rng = random.Random(0)
    for _ in range(300):
        n = rng.choice([100, 500, 5000])
        accs = [rng.randint(int(0.9 * n), n) / n for _ in range(rng.randint(1, 30))]
        state = record_all(accs, n, select)
        assert state.best.epoch == kept_by_rule(accs, n, select), (accs, n)
        assert state.best.val_acc == accs[state.best.epoch - 1]


def test_the_rules_differ_where_a_later_epoch_is_within_one_standard_error():
    # on 400 images one standard error of 0.95 is 1.09 points: epoch 3 (94.0%) is within it
    accs = [0.90, 0.95, 0.94, 0.80]
    assert record_all(accs, 400, "highest").best.epoch == 2
    assert record_all(accs, 400, "latest-within-se").best.epoch == 3
    # on 10,000 images the standard error is 0.22 points: only the highest epoch qualifies
    assert record_all(accs, 10_000, "latest-within-se").best.epoch == 2
