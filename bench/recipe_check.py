"""A recipe's test accuracy over several seeds, trained through mnistcli's own trainer.

    python bench/recipe_check.py --recipe best --seeds 0 1 2 --device cuda --data .mnist
    python bench/recipe_check.py --recipe best --device cpu --quick        # a tiny subset
    python bench/recipe_check.py --recipe best --set epochs=40 --set rotate=15 ...

For each seed: the test accuracy of the restored best model (chosen on the validation split, as
`mnistcli train` chooses it), the best epoch and its validation accuracy, and the train seconds
from the first epoch's start to the last epoch's end (validation and the checkpoints between
epochs included; start-up and the final test evaluation apart). Then the median test accuracy
and whether it reached --target. Writes the JSON to --out (default: $OUT/recipe-check-<recipe>
.json when OUT is set, else bench/results/). The accuracy of a recipe does not depend on the
machine it trains on beyond run-to-run noise; its wall time does: measure that on the CPU.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_overrides(items: list[str]) -> dict:
    """`key=value` pairs, each value coerced to the type of the HyperParams field."""
    import dataclasses

    from mnistcli.settings import HyperParams

    kinds = {f.name: type(getattr(HyperParams(), f.name)) for f in dataclasses.fields(HyperParams)}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in kinds:
            raise SystemExit(f"--set {item!r}: expected key=value with key one of {sorted(kinds)}")
        out[key] = kinds[key](raw)
    return out


def seed_settings(args: argparse.Namespace, work: Path, seed: int, hyper: dict, threads: int = 0):
    """The TrainSettings of one seed's run, in the work folder."""
    from mnistcli.settings import DataSettings, HyperParams, TrainSettings

    return TrainSettings(
        hyper=HyperParams(**{**hyper, "seed": seed}),
        data=DataSettings(work / "data-root", (str(args.data),)),
        device=args.device,
        runs_dir=work / "runs",
        name=f"{args.recipe}-seed{seed}",
        threads=threads,
    )


def run_seed(args: argparse.Namespace, mnist, work: Path, seed: int, hyper: dict) -> dict:
    """One training run; its figures."""
    import torch
    from epoch_clock import EpochClock

    from mnistcli.train import train

    clock = EpochClock()
    settings = seed_settings(args, work, seed, hyper)
    t0 = time.perf_counter()
    result = train(settings, mnist, on_event=clock)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return {
        "seed": seed,
        "test_acc": result.test_acc,
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "epochs_run": result.epochs_run,
        "stop_reason": result.stop_reason,
        "train_seconds": round(clock.train_seconds, 3),
        "run_seconds": round(time.perf_counter() - t0, 3),
        "precision": clock.precision,
        "device": result.device,
        "val_acc_by_epoch": [round(h.val_acc, 5) for h in result.history],
    }


def recipe_parser(doc: str, seeds: list[int]) -> argparse.ArgumentParser:
    """The arguments of every script that trains a recipe over seeds (this one, selection.py)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--recipe", default="best")
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "mnist")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="2 epochs on 2,000 images")
    parser.add_argument("--out", type=Path, default=None)
    return parser


def recipe_setup(args: argparse.Namespace, prefix: str) -> tuple[dict, Any, Path]:
    """The recipe's settings (--quick and --set applied), MNIST, and a fresh work folder."""
    from mnistcli.config import RECIPES
    from mnistcli.data import load_mnist

    if args.recipe not in RECIPES:
        raise SystemExit(f"unknown recipe {args.recipe!r}; known: {', '.join(RECIPES)}")
    hyper = {**RECIPES[args.recipe], "recipe": args.recipe}
    if args.quick:
        hyper |= {"epochs": 2, "limit": 2000, "val_size": 500}
    hyper |= parse_overrides(args.set)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    return hyper, load_mnist(work / "data-root", [str(args.data)]), work


def main() -> None:
    parser = recipe_parser(__doc__, [0, 1, 2])
    parser.add_argument("--target", type=float, default=0.996)
    args = parser.parse_args()
    hyper, mnist, work = recipe_setup(args, "recipe-check-")
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(args, mnist, work, seed, hyper))
        print(json.dumps(runs[-1]), flush=True)
    accs = [r["test_acc"] for r in runs]
    doc = {
        "recipe": args.recipe,
        "hyper": hyper,
        "quick": args.quick,
        "device": runs[0]["device"],
        "test_acc": accs,
        "median_test_acc": statistics.median(accs),
        "train_seconds": [r["train_seconds"] for r in runs],
        "median_train_seconds": statistics.median(r["train_seconds"] for r in runs),
        "target": args.target,
        "reached_target": statistics.median(accs) >= args.target,
        "process_seconds": round(time.perf_counter() - T_PROCESS, 1),
        "runs": runs,
    }
    if args.device.startswith("cuda"):
        import torch

        doc["gpu"] = torch.cuda.get_device_name(0)
    out = args.out
    if out is None:
        folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "bench" / "results"
        out = folder / f"recipe-check-{args.recipe}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"{args.recipe}: test {', '.join(f'{100 * a:.2f}%' for a in accs)}; median "
        f"{100 * doc['median_test_acc']:.2f}% (target {100 * args.target:.2f}%); train s "
        f"{doc['train_seconds']}; written {out}"
    )


if __name__ == "__main__":
    main()
