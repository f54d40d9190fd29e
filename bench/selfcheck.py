"""Checks of the benchmark scripts themselves, run by `make bench` before it measures anything
(the unit suite tests mnistcli and never imports bench/).

    python bench/selfcheck.py                      # about 20 s on 2 CPU cores
    python bench/selfcheck.py --data DIR           # MNIST's four .gz files elsewhere

selection.py: its rules choose the epoch the trainer keeps (the trainer decides epoch by epoch
against the highest accuracy so far, the bench once against the highest of all), and its
split-half score sees through an epoch that only looks better. robustness.py: its sample is
fixed, its renderings seeded, and on a quick subset (20 digits per condition, a model trained
here on 2,000 images for one epoch) every condition still gives the digit. Exits 1 with the
failed check's name on stderr.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def check(ok: bool, what: str, detail: object = "") -> None:
    """Stop with the check's name when it fails (not `assert`: `python -O` would skip it)."""
    if not ok:
        raise SystemExit(f"selfcheck failed: {what} {detail}".rstrip())


def selection_matches_the_trainer() -> None:
    """Over random runs of accuracies, selection.choose keeps the epoch the trainer keeps."""
    import selection

    from mnistcli import train as trainer

    rng = random.Random(0)
    for rule, select in (("highest", "highest"), ("latest within 1 SE", "latest-within-se")):
        for _ in range(300):
            n = rng.choice([100, 500, 5000])
            accs = [rng.randint(int(0.9 * n), n) / n for _ in range(rng.randint(1, 30))]
            state = trainer.RunState()
            for epoch, acc in enumerate(accs, 1):
                stats = trainer.EpochStats(epoch, 0.1, 0.9, 1 - acc, acc, 1e-3, 1.0, 1.0)
                state.record(stats, select, val_images=n)
            chosen = selection.choose(accs, n, rule) + 1
            check(chosen == state.best.epoch, f"selection rule {rule!r}", (accs, n))


def split_half_scores_on_the_unseen_half() -> None:
    """Two epochs equally good (20 of 40 images), right on different images: the one that looks
    better on the choosing half is worse on the other, so "highest" scores below "last" there.
    Identical epochs score the same under every rule."""
    import selection

    right = [[i < 20 for i in range(40)], [10 <= i < 30 for i in range(40)]]
    scores = selection.split_half(right, splits=2000)
    check(set(scores) == set(selection.RULES), "split_half scores every rule", scores)
    check(scores["highest"] < scores["last"] - 0.02, "split_half sees through noise", scores)
    same = selection.split_half([right[0], right[0]], splits=50)
    check(len(set(same.values())) == 1, "split_half of identical epochs", same)


def robustness_sample_and_renderings_are_fixed(digit) -> None:
    import numpy as np
    import robustness

    check(robustness.sample(5).tolist() == robustness.sample(5).tolist(), "the sample is fixed")
    check(len(set(robustness.sample(2000).tolist())) == 2000, "the sample has no repeats")
    for name, render in robustness.CONDITIONS.items():
        a = render(digit, np.random.default_rng([0, 1, 2]))
        b = render(digit, np.random.default_rng([0, 1, 2]))
        check(np.array_equal(np.asarray(a), np.asarray(b)), f"rendering {name!r} is seeded")


def robustness_quick_subset(mnist, work: Path, data: Path) -> None:
    """20 digits per condition with the floors of a quickly trained model: a preprocessing
    change that loses digits fails here before the full benchmark spends minutes."""
    import robustness

    from mnistcli.loading import load_model, module_logits
    from mnistcli.settings import DataSettings, HyperParams, TrainSettings
    from mnistcli.train import train

    settings = TrainSettings(
        hyper=HyperParams(epochs=1, limit=2000, val_size=500, seed=0),
        data=DataSettings(work / "data-root", (str(data),)),
        device="cpu",
        runs_dir=work / "runs",
        name="selfcheck",
    )
    model, _ = load_model(train(settings, mnist).run_dir / "best.pt")
    digits = mnist.test_images.numpy()[robustness.sample(20)]
    start = time.perf_counter()
    rows = robustness.score(digits, functools.partial(module_logits, model))
    print(robustness.table(rows, len(digits)), f"\n{time.perf_counter() - start:.1f} s")
    check(set(rows) == set(robustness.CONDITIONS) and len(rows) == 15, "15 conditions", rows)
    check(all(r["no_digit"] == 0 for r in rows.values()), "no digit lost", rows)
    strict = [r["agreement"] for name, r in rows.items() if name.startswith("tight crop")]
    check(min(strict) >= 0.9, "tight crops agree (>= 90%)", rows)
    check(min(r["agreement"] for r in rows.values()) >= 0.8, "every condition >= 80%", rows)
    check(robustness.overall(rows) >= 0.9, "overall agreement >= 90%", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "mnist")
    args = parser.parse_args()
    from mnistcli.data import load_mnist

    selection_matches_the_trainer()
    split_half_scores_on_the_unseen_half()
    with tempfile.TemporaryDirectory(prefix="bench-selfcheck-") as tmp:
        work = Path(tmp)
        mnist = load_mnist(work / "data-root", [str(args.data)])
        robustness_sample_and_renderings_are_fixed(mnist.test_images[0].numpy())
        robustness_quick_subset(mnist, work, args.data)
    print("selfcheck: the benchmark scripts pass their checks")


if __name__ == "__main__":
    main()
