"""mnistcli benchmark: one run, one machine, ratios measured side by side.

    python bench/bench.py            # everything (about 10-15 minutes on 2 CPU cores)
    python bench/bench.py --quick    # every stage on tiny subsets, end to end (under a minute)

Prints a table and writes bench/results/<time>.json with the machine description. Figures:
- the machine's float32 matmul GFLOP/s (the ceiling for a conv net on the CPU);
- training samples/s of mnistcli's trainer (reference recipe) and of a textbook loop (torchvision
  MNIST dataset + DataLoader + ToTensor/Normalize, batch 64, Adam), each as a fraction of the
  ceiling, counting the FLOPs of one SimpleCNN training step (3x the forward FLOPs);
- for each recipe: wall time, epochs, and test accuracy of the restored best model (the test set
  is read once, after training, exactly as `mnistcli train` does); the fast recipe over 3 seeds;
- eval time for the 10,000 test images once the model is loaded;
- wall time of `mnistcli --help` and `mnistcli predict one.png` next to `python -c "import torch"`;
- whole processes, start to exit, interleaved, median of 3: one textbook epoch
  (bench/textbook_epoch.py) against `mnistcli train --epochs 1`; the fast recipe (3 seeds, and
  once with --precision fp32, as on a CPU without bf16) and the best recipe (seed 0) as
  multiples of that textbook epoch. A plotext bar chart of the ratios follows the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mnistcli.config import RECIPES  # noqa: E402
from mnistcli.data import FILES, load_mnist  # noqa: E402
from mnistcli.events import BatchDone, RunStarted  # noqa: E402
from mnistcli.model import SimpleCNN  # noqa: E402
from mnistcli.settings import DataSettings, HyperParams, TrainSettings  # noqa: E402
from mnistcli.train import train  # noqa: E402

TARGET_ACC = 0.9935


def forward_flops_per_image() -> float:
    """FLOPs of one SimpleCNN forward pass on one image, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model = SimpleCNN().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    return float(counter.get_total_flops())


def matmul_gflops(n: int = 1024, seconds: float = 3.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def settings_for(tmp: Path, data_root: Path, mirrors: list[str], **hyper) -> TrainSettings:
    return TrainSettings(
        hyper=HyperParams(**hyper),
        data=DataSettings(data_root, tuple(mirrors)),
        device="cpu",
        runs_dir=tmp,
        name=None,
    )


def mnistcli_throughput(
    mnist,
    tmp: Path,
    data_root: Path,
    mirrors: list[str],
    images: int,
    recipe: str = "reference",
    **overrides,
) -> tuple[float, str]:
    """Samples/s of the trainer's loop with a recipe's settings, from its own progress events,
    and the precision it ran in."""
    speeds: list[float] = []
    precision = []

    def on_event(event):
        if isinstance(event, BatchDone):
            speeds.append(event.samples_per_s)
        elif isinstance(event, RunStarted):
            precision.append(event.precision)

    hyper = {
        **RECIPES[recipe],
        "recipe": recipe,
        "shift": 0.0,
        "schedule": "constant",
        **overrides,
    }
    s = settings_for(
        tmp, data_root, mirrors, **{**hyper, "epochs": 1, "limit": images, "val_size": 1000}
    )
    train(s, mnist, on_event=on_event)
    return speeds[-1], precision[0]


def torchvision_root(data_root: Path) -> Path:
    """A folder torchvision's MNIST reads without downloading: MNIST/raw/ holds links to the
    IDX files that load_mnist unpacked from --data."""
    tv_root = Path(tempfile.mkdtemp(prefix="tv-mnist-"))
    raw = tv_root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        (raw / name).symlink_to(data_root / name)
    return tv_root


def timed_process(argv: list[str], cwd: Path) -> tuple[float, str]:
    """Seconds from the start of a child process to its exit, and its stdout."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, cwd=cwd, env=env, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr[-500:]}")
    return seconds, proc.stdout


def mnistcli_train_argv(tmp: Path, data_root: Path, *args: str) -> list[str]:
    out = ["--device", "cpu", "--data-root", str(data_root), "--runs-dir", str(tmp / "wp-runs")]
    return [sys.executable, "-m", "mnistcli", "train", *out, "--json", *args]


def whole_processes(tmp: Path, data_root: Path, quick: bool) -> dict:
    """One textbook epoch and `mnistcli train --epochs 1`, each a whole process, interleaved,
    median of 3 (1 with --quick, on 2,000 images)."""
    tv_root = torchvision_root(data_root)
    small = ["--limit", "2000"] if quick else []
    book_argv = [sys.executable, str(REPO / "bench" / "textbook_epoch.py"), "--root", str(tv_root)]
    ours_argv = mnistcli_train_argv(tmp, data_root, "--epochs", "1", *small)
    if quick:
        ours_argv += ["--val-size", "500"]
    book, ours = [], []
    for _ in range(1 if quick else 3):
        book.append(timed_process([*book_argv, *small], tmp)[0])
        ours.append(timed_process(ours_argv, tmp)[0])
    return {
        "textbook_epoch_s": [round(t, 2) for t in book],
        "mnistcli_epoch_s": [round(t, 2) for t in ours],
        "textbook_epoch_median_s": round(statistics.median(book), 2),
        "mnistcli_epoch_median_s": round(statistics.median(ours), 2),
        "speedup": round(statistics.median(book) / statistics.median(ours), 2),
    }


def recipe_process(tmp: Path, data_root: Path, recipe: str, seed: int, *extra: str) -> dict:
    """`mnistcli train --recipe R --seed S` as a whole process: its seconds and test accuracy."""
    argv = mnistcli_train_argv(tmp, data_root, "--recipe", recipe, "--seed", str(seed), *extra)
    seconds, stdout = timed_process(argv, tmp)
    doc = json.loads(stdout)
    return {
        "recipe": recipe,
        "seed": seed,
        "extra": list(extra),
        "wall_s": round(seconds, 1),
        "test_acc": doc.get("test_acc"),
        "epochs_run": doc.get("epochs_run"),
        "best_epoch": doc.get("best_epoch"),
    }


def recipe_processes(tmp: Path, data_root: Path, seeds: int, textbook_s: float) -> dict:
    """The fast recipe over `seeds` seeds, once more in float32 (a CPU without bf16), and the
    best recipe once, as whole processes; wall times as multiples of one textbook epoch."""
    runs = [recipe_process(tmp, data_root, "fast", s) for s in range(seeds)]
    runs.append(recipe_process(tmp, data_root, "fast", 0, "--precision", "fp32"))
    runs.append(recipe_process(tmp, data_root, "best", 0))
    for run in runs:
        run["textbook_epochs"] = round(run["wall_s"] / textbook_s, 2)
    fast = runs[:seeds]
    return {
        "runs": runs,
        "fast_median_wall_s": statistics.median(r["wall_s"] for r in fast),
        "fast_median_textbook_epochs": round(
            statistics.median(r["wall_s"] for r in fast) / textbook_s, 2
        ),
        "fast_median_test_acc": statistics.median(r["test_acc"] for r in fast),
    }


def ratio_chart(r: dict) -> str:
    """A plotext bar chart of the ratios measured, as plain text."""
    import plotext as plt

    labels, values = [], []
    wp = r["whole_process"]
    labels.append("textbook / mnistcli epoch, processes")
    values.append(wp["speedup"])
    labels.append("mnistcli / textbook img/s, in-process")
    values.append(r["throughput"]["speedup_vs_textbook"])
    labels.append("share of fp32 ceiling / 50% target")
    values.append(r["throughput"]["mnistcli_fraction_of_ceiling"] / 0.5)
    for run in r.get("recipes", {}).get("runs", []):
        tag = f"{run['recipe']} s{run['seed']}{' fp32' if run['extra'] else ''} / textbook"
        labels.append(tag)
        values.append(run["textbook_epochs"])
    fig = plt.figure
    fig.clear()
    plt.terminal.limit(False, False)
    fig.plot_size(100, 4 + 3 * len(values))
    fig.theme("colorless")
    values = [round(v, 2) for v in values]
    fig.draw(fig.bar(labels, values, orientation="horizontal", labeled=True))
    fig.title("ratios (textbook epochs for the recipes)")
    fig.ruler(0).lim(0, max(values) * 1.1)
    return fig.build().string(colorless=True)


def textbook_throughput(data_root: Path, seconds: float) -> float:
    """The loop most tutorials write: per-sample PIL transforms through a DataLoader."""
    import torch.nn.functional as F
    from torchvision import datasets, transforms

    tv_root = torchvision_root(data_root)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.MNIST(str(tv_root), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True)
    torch.manual_seed(0)
    model = SimpleCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    seen, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 5:  # warm-up batches excluded
            seen, t0 = 0, time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        seen += len(y)
        if t0 is not None and time.perf_counter() - t0 > seconds:
            break
    return seen / (time.perf_counter() - t0)


def recipe_run(
    mnist, tmp: Path, data_root: Path, mirrors: list[str], recipe: str, seed: int
) -> dict:
    hyper = {**RECIPES[recipe], "recipe": recipe, "seed": seed}
    s = settings_for(tmp, data_root, mirrors, **hyper)
    t0 = time.perf_counter()
    result = train(s, mnist)
    wall = time.perf_counter() - t0
    to_best = sum(h.seconds for h in result.history[: result.best_epoch])
    return {
        "recipe": recipe,
        "seed": seed,
        "wall_s": round(wall, 1),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds_to_best_epoch": round(to_best, 1),
        "best_val_acc": result.best_val_acc,
        "test_acc": result.test_acc,
        "reached_target": bool(result.test_acc and result.test_acc >= TARGET_ACC),
    }


def eval_seconds(mnist, checkpoint: Path, repeats: int = 3) -> float:
    """What `mnistcli eval` spends on the 10k test images once the model is loaded: inference
    in batches plus every metric (median of `repeats`)."""
    from mnistcli.loading import load_model
    from mnistcli.metrics import evaluate_model

    model, _ = load_model(checkpoint, channels_last=True)  # as eval loads it
    evaluate_model(model, mnist.test_images, mnist.test_labels)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate_model(model, mnist.test_images, mnist.test_labels)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def command_seconds(argv: list[str], repeats: int = 5, cwd: Path | None = None) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, cwd=cwd)
        times.append(time.perf_counter() - t0)
        if proc.returncode not in (0,):
            raise RuntimeError(f"{argv} failed: {proc.stderr.decode()[-300:]}")
    return statistics.median(times)


def cli_timings(mnist, tmp: Path, data_root: Path, mirrors: list[str], repeats: int = 5) -> dict:
    exe = Path(sys.executable).with_name("mnistcli")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "mnistcli"]  # not installed
    s = settings_for(tmp / "cli-runs", data_root, mirrors, epochs=1, limit=2000, val_size=500)
    run = train(s, mnist)
    from PIL import Image

    png = tmp / "one.png"
    Image.fromarray(255 - mnist.test_images[0].numpy()).resize((112, 112)).save(png)
    out = {
        "import_torch_s": command_seconds([sys.executable, "-c", "import torch"], repeats),
        "help_s": command_seconds([*cli, "--help"], repeats),
    }
    try:
        out["predict_one_png_s"] = command_seconds(
            [*cli, "predict", str(png), "--checkpoint", str(run.run_dir / "best.pt")], repeats
        )
    except RuntimeError as exc:  # predict missing or failing: report, don't hide
        out["predict_one_png_s"] = None
        out["predict_error"] = str(exc)
    out["checkpoint"] = str(run.run_dir / "best.pt")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the full training runs")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the fast recipe")
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "mnist"),
        help="folder with the MNIST files (default: ../shared/mnist)",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mnistcli-bench-"))
    data_root = tmp / "data"
    mirrors = [args.data]
    mnist = load_mnist(data_root, mirrors)
    results: dict = {
        "machine": machine(),
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }

    flops_step = 3 * forward_flops_per_image()
    ceiling = matmul_gflops(seconds=1.0 if args.quick else 3.0)
    results["matmul_gflops"] = round(ceiling, 1)
    results["train_step_mflop_per_image"] = round(flops_step / 1e6, 2)
    images = 3000 if args.quick else 30000
    ours, _ = mnistcli_throughput(mnist, tmp / "tp", data_root, mirrors, images)
    ours_auto, auto_precision = mnistcli_throughput(
        mnist, tmp / "tpa", data_root, mirrors, images, precision="auto"
    )
    fast, fast_precision = mnistcli_throughput(
        mnist, tmp / "tpf", data_root, mirrors, images, recipe="fast"
    )
    book = textbook_throughput(data_root, seconds=3 if args.quick else 20)
    results["throughput"] = {
        "mnistcli_samples_per_s": round(ours),
        "mnistcli_fraction_of_ceiling": round(ours * flops_step / (ceiling * 1e9), 3),
        "textbook_samples_per_s": round(book),
        "textbook_fraction_of_ceiling": round(book * flops_step / (ceiling * 1e9), 3),
        "speedup_vs_textbook": round(ours / book, 2),
        # the reference recipe with --precision auto (bf16 autocast where native)
        "reference_auto_samples_per_s": round(ours_auto),
        "reference_auto_precision": auto_precision,
        "reference_auto_speedup_vs_textbook": round(ours_auto / book, 2),
        # the fast recipe's step (batch 256, its precision); its share of the *float32* ceiling
        "fast_recipe_samples_per_s": round(fast),
        "fast_recipe_precision": fast_precision,
        "fast_recipe_fraction_of_fp32_ceiling": round(fast * flops_step / (ceiling * 1e9), 3),
        "fast_speedup_vs_textbook": round(fast / book, 2),
    }
    results["cli"] = {
        k: (round(v, 3) if isinstance(v, float) else v)
        for k, v in cli_timings(mnist, tmp, data_root, mirrors, 1 if args.quick else 5).items()
    }
    results["eval_10k_s"] = round(eval_seconds(mnist, Path(results["cli"]["checkpoint"])), 3)
    if results["cli"].get("predict_one_png_s") is not None:
        results["cli"]["predict_minus_import_torch_s"] = round(
            results["cli"]["predict_one_png_s"] - results["cli"]["import_torch_s"], 3
        )

    results["whole_process"] = whole_processes(tmp, data_root, args.quick)
    if not args.quick:
        textbook_s = results["whole_process"]["textbook_epoch_median_s"]
        results["recipes"] = recipe_processes(tmp, data_root, args.seeds, textbook_s)
        results["reference_recipe"] = recipe_run(
            mnist, tmp / "ref", data_root, mirrors, "reference", 0
        )

    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print()
    print(ratio_chart(results))
    print(f"\nwritten: {out_path}")


def print_table(r: dict) -> None:
    t = r["throughput"]
    rows = [
        (
            "machine",
            f"{r['machine']['cpu']}, {r['machine']['cores']} cores, "
            f"torch {r['machine']['torch']} ({r['machine']['torch_threads']} threads)",
        ),
        ("float32 matmul ceiling", f"{r['matmul_gflops']:.1f} GFLOP/s"),
        ("SimpleCNN train step", f"{r['train_step_mflop_per_image']:.2f} MFLOP/image"),
        (
            "mnistcli train (reference)",
            f"{t['mnistcli_samples_per_s']:,} img/s = "
            f"{100 * t['mnistcli_fraction_of_ceiling']:.0f}% of ceiling",
        ),
        (
            "textbook DataLoader loop",
            f"{t['textbook_samples_per_s']:,} img/s = "
            f"{100 * t['textbook_fraction_of_ceiling']:.0f}% of ceiling",
        ),
        ("speed-up vs textbook", f"{t['speedup_vs_textbook']:.2f}x"),
        (
            f"reference, --precision auto ({t['reference_auto_precision']})",
            f"{t['reference_auto_samples_per_s']:,} img/s, "
            f"{t['reference_auto_speedup_vs_textbook']:.2f}x textbook",
        ),
        (
            f"mnistcli train (fast, {t['fast_recipe_precision']})",
            f"{t['fast_recipe_samples_per_s']:,} img/s = "
            f"{100 * t['fast_recipe_fraction_of_fp32_ceiling']:.0f}% of the fp32 ceiling, "
            f"{t['fast_speedup_vs_textbook']:.2f}x textbook",
        ),
        ("eval, 10k test images", f"{r['eval_10k_s']:.3f} s"),
        ("python -c 'import torch'", f"{r['cli']['import_torch_s']:.3f} s"),
        ("mnistcli --help", f"{r['cli']['help_s']:.3f} s"),
    ]
    if r["cli"].get("predict_one_png_s") is not None:
        rows.append(
            (
                "mnistcli predict one.png",
                f"{r['cli']['predict_one_png_s']:.3f} s "
                f"(import torch + {r['cli']['predict_minus_import_torch_s']:.3f} s)",
            )
        )
    else:
        rows.append(("mnistcli predict one.png", r["cli"].get("predict_error", "n/a")))
    wp = r["whole_process"]
    rows.append(
        (
            "textbook epoch, whole process",
            f"{wp['textbook_epoch_median_s']:.2f} s (median of {wp['textbook_epoch_s']})",
        )
    )
    rows.append(
        (
            "mnistcli train --epochs 1, process",
            f"{wp['mnistcli_epoch_median_s']:.2f} s (median of {wp['mnistcli_epoch_s']}), "
            f"{wp['speedup']:.2f}x faster",
        )
    )
    if "recipes" in r:
        f = r["recipes"]
        for run in f["runs"]:
            rows.append(
                (
                    f"{run['recipe']} recipe, seed {run['seed']} {' '.join(run['extra'])}",
                    f"{run['wall_s']:.1f} s = {run['textbook_epochs']:.2f} textbook epochs, "
                    f"{run['epochs_run']} epochs, best {run['best_epoch']}, test "
                    f"{100 * run['test_acc']:.2f}%",
                )
            )
        rows.append(
            (
                "fast recipe, median",
                f"{f['fast_median_wall_s']:.1f} s = {f['fast_median_textbook_epochs']:.2f} "
                f"textbook epochs, test {100 * f['fast_median_test_acc']:.2f}%",
            )
        )
    if "reference_recipe" in r:
        ref = r["reference_recipe"]
        rows.append(
            (
                "reference recipe",
                f"{ref['wall_s']:.1f} s, {ref['epochs_run']} epochs, "
                f"best {ref['best_epoch']} (reached after "
                f"{ref['seconds_to_best_epoch']:.0f} s), test "
                f"{100 * ref['test_acc']:.2f}%",
            )
        )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
