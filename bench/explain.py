"""How faithful and how fast `mnistcli predict --explain` is.

    python bench/explain.py [--checkpoint runs/latest/best.pt] [--digits 1000] [--images 100]

1. Faithfulness (deletion test, as `--raw` sees MNIST): for each of the first --digits test
   digits, blank (set to 0) the 15% of its ink pixels with the highest saliency, and as many
   random ink pixels (10 draws); the mean drop of the predicted digit's probability, and the
   ratio of the two (target: >= 4).
2. Speed: wall time of `mnistcli predict --explain --raw --json` as a subprocess on --images
   test digits written as 28x28 PNGs (start-up, model load, preprocessing, attributions and
   output included), median of 3, with torch's thread count as on the machine (target: under
   10 s on 2 cores), and the CPU time it used. Plain `predict` on the same files to compare.

Writes bench/results/explain-<time>.json with the machine's description. Run it on a quiet
machine: other work on the cores makes the times meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench import machine  # noqa: E402
from mnistcli import explain  # noqa: E402
from mnistcli.data import load_mnist, normalize  # noqa: E402
from mnistcli.loading import load_model  # noqa: E402
from mnistcli.model import logits_in_batches  # noqa: E402

SHARED_MNIST = REPO.parent / "shared" / "mnist"


def faithfulness(checkpoint: Path, images: torch.Tensor, labels: torch.Tensor) -> dict:
    model, meta = load_model(checkpoint)
    predicted = logits_in_batches(model, normalize(images)).argmax(1).tolist()
    start = time.perf_counter()
    saliency = explain.saliency_maps(model, images, predicted)
    seconds = time.perf_counter() - start
    result = explain.deletion_test(model, images, saliency, fraction=0.15, repeats=10)
    accuracy = sum(int(p == y) for p, y in zip(predicted, labels.tolist(), strict=True))
    return {
        **result.to_dict(),
        "checkpoint_epoch": meta.epoch,
        "accuracy_on_these_digits": accuracy / len(labels),
        "attribution_seconds": seconds,
    }


def command_seconds(argv: list[str], repeats: int = 3) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of a command. On a busy machine the
    CPU time is the steadier figure: a quiet 2-core machine runs the command in at most that."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "NO_COLOR": "1"})
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def speed(checkpoint: Path, images: torch.Tensor) -> dict:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        for i, digit in enumerate(images):
            Image.frombytes("L", (28, 28), bytes(digit.flatten().tolist())).save(
                Path(tmp) / f"{i:04d}.png"
            )
        base = [sys.executable, "-m", "mnistcli", "predict", tmp, "--checkpoint", str(checkpoint)]
        explained, explained_cpu = command_seconds([*base, "--raw", "--explain", "--json"])
        plain, plain_cpu = command_seconds([*base, "--raw", "--json"])
    return {
        "images": len(images),
        "explain_seconds": explained,
        "explain_cpu_seconds": explained_cpu,
        "predict_seconds": plain,
        "predict_cpu_seconds": plain_cpu,
    }


def main() -> None:
    from mnistcli.config import default_data_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/latest/best.pt"))
    parser.add_argument("--digits", type=int, default=1000)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--data-root", type=Path, default=Path(default_data_root()))
    args = parser.parse_args()
    mnist = load_mnist(args.data_root, [str(SHARED_MNIST)])
    report = {
        "checkpoint": str(args.checkpoint),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "faithfulness": faithfulness(
            args.checkpoint, mnist.test_images[: args.digits], mnist.test_labels[: args.digits]
        ),
        "speed": speed(args.checkpoint, mnist.test_images[: args.images]),
    }
    report["load_average_after"] = os.getloadavg()
    out = REPO / "bench" / "results" / f"explain-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    f, s = report["faithfulness"], report["speed"]
    print(
        f"deletion test, {f['images']} digits, 15% of the ink: salient -{f['drop_salient']:.4f}, "
        f"random -{f['drop_random']:.4f}, ratio {f['ratio']:.1f}x (target >= 4x)"
    )
    print(
        f"predict --explain, {s['images']} images: {s['explain_seconds']:.2f} s wall, "
        f"{s['explain_cpu_seconds']:.2f} s CPU (plain predict {s['predict_seconds']:.2f} s, "
        f"{s['predict_cpu_seconds']:.2f} s CPU; target < 10 s on 2 cores)"
    )
    print(f"load average before/after: {report['load_average']} / {report['load_average_after']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
