"""Which epoch to keep: the selection rules of `[train] select` compared on validation alone.

    python bench/selection.py --recipe best --seeds 3 4            # 2 whole runs, ~6 min each
    python bench/selection.py --recipe reference --seeds 0 1
    python bench/selection.py --recipe best --quick                # 2 epochs on 2,000 images

Trains each seed through mnistcli's trainer and keeps, for every epoch, which validation images
the validated model got right. Then, many times over, splits the validation images in two
halves at random, lets each rule choose an epoch on one half and scores that epoch on the other:
a rule that chases noise scores lower on the half it did not see. No test image takes part in
that comparison. The test accuracy of every epoch is recorded too, and printed after it, for
the record only (it chooses nothing).

Rules: "highest" (the first epoch with the highest accuracy: `select = "highest"`),
"latest within 1 SE" (`select = "latest-within-se"`), "latest within 0.5 SE", and "last" (the
final epoch). --set key=value changes one setting. Writes the JSON to --out (default:
bench/results/selection-<recipe>.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def choose(accs: list[float], n: int, rule: str) -> int:
    """The 0-based epoch a rule keeps, given each epoch's accuracy on n images."""
    from mnistcli.metrics import standard_error

    top = max(accs)
    margin = {"highest": None, "latest within 1 SE": 1.0, "latest within 0.5 SE": 0.5}.get(rule)
    if rule == "last":
        return len(accs) - 1
    if margin is None:
        return accs.index(top)
    floor = top - margin * standard_error(top, n)
    return max(i for i, a in enumerate(accs) if a >= floor)


RULES = ("highest", "latest within 1 SE", "latest within 0.5 SE", "last")


def split_half(val_right: list[list[bool]], splits: int, seed: int = 0) -> dict[str, float]:
    """Each rule's mean accuracy on the half it did not choose on, over `splits` random halves."""
    import torch

    right = torch.tensor(val_right, dtype=torch.float64)  # (epochs, images)
    n = right.shape[1]
    generator = torch.Generator().manual_seed(seed)
    scores: dict[str, list[float]] = {rule: [] for rule in RULES}
    for _ in range(splits):
        order = torch.randperm(n, generator=generator)
        a, b = order[: n // 2], order[n // 2 :]
        acc_a, acc_b = right[:, a].mean(1).tolist(), right[:, b].mean(1).tolist()
        for rule in RULES:
            scores[rule].append(acc_b[choose(acc_a, len(a), rule)])
    return {rule: statistics.fmean(s) for rule, s in scores.items()}


def run_seed(args: argparse.Namespace, mnist, work: Path, seed: int, hyper: dict) -> dict:
    """One training run, with every epoch's right and wrong answers on validation and test."""
    import torch
    from recipe_check import seed_settings

    from mnistcli import metrics
    from mnistcli.data import make_tensors
    from mnistcli.model import logits_in_batches
    from mnistcli.train import train

    settings = seed_settings(args, work, seed, hyper, args.threads)
    test = make_tensors(mnist.test_images, mnist.test_labels, args.device)
    val_size = settings.hyper.val_size
    val_right, test_acc = [], []
    evaluate = metrics.evaluate_tensors

    def spying(model, data, **kwargs):
        # the trainer validates each epoch through this; the final test evaluation passes here
        # too, with 10,000 images, and is told apart by its size
        if len(data) == val_size and len(data) != len(test):
            with torch.inference_mode():
                val_right.append((logits_in_batches(model, data.x).argmax(1) == data.y).tolist())
                hits = (logits_in_batches(model, test.x).argmax(1) == test.y).sum().item()
            test_acc.append(hits / len(test))
        return evaluate(model, data, **kwargs)

    metrics.evaluate_tensors = spying
    try:
        result = train(settings, mnist)
    finally:
        metrics.evaluate_tensors = evaluate
    val_acc = [sum(r) / len(r) for r in val_right]
    if [round(a, 6) for a in val_acc] != [round(h.val_acc, 6) for h in result.history]:
        raise SystemExit("the recorded validation answers disagree with the run's history")
    held_out = split_half(val_right, args.splits)
    chosen = {rule: choose(val_acc, val_size, rule) for rule in RULES}
    return {
        "seed": seed,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "run_test_acc": result.test_acc,
        "held_out_half_acc": held_out,
        "chosen_epoch": {rule: e + 1 for rule, e in chosen.items()},
        "test_acc_of_chosen": {rule: test_acc[e] for rule, e in chosen.items()},
        "val_acc_by_epoch": [round(a, 5) for a in val_acc],
        "test_acc_by_epoch": [round(a, 5) for a in test_acc],
    }


def main() -> None:
    from recipe_check import recipe_parser, recipe_setup

    parser = recipe_parser(__doc__, [3, 4])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's)")
    parser.add_argument("--splits", type=int, default=4000, help="random halvings per run")
    args = parser.parse_args()
    hyper, mnist, work = recipe_setup(args, "selection-")
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(args, mnist, work, seed, hyper))
        row = runs[-1]
        print(f"seed {seed}: {row['epochs_run']} epochs, kept epoch {row['best_epoch']}")
        base = row["held_out_half_acc"]["highest"]
        for rule in RULES:
            score, test = row["held_out_half_acc"][rule], row["test_acc_of_chosen"][rule]
            print(
                f"  {rule:22s} held-out half {100 * score:.3f}% ({100 * (score - base):+.3f}) "
                f"| epoch {row['chosen_epoch'][rule]:2d}, test {100 * test:.2f}%"
            )
    doc = {"recipe": args.recipe, "hyper": hyper, "quick": args.quick, "runs": runs}
    out = args.out or REPO / "bench" / "results" / f"selection-{args.recipe}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
