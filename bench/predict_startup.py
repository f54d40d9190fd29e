"""Start-up cost of predicting one image with an exported model, next to a bare `import torch`.

    python bench/predict_startup.py --model runs/latest/model.onnx [--repeats 5]

Each figure is a fresh child process, measured from here: wall time (median of --repeats, the
commands interleaved so that a busy moment hurts all of them alike) and peak memory (the
child's ru_maxrss from os.wait4, the largest over the repeats). The commands:

- `import torch`: `python -c "import torch"`, the floor of any predict that uses torch;
- `onnx backend`: mnistcli.onnx_runtime.OnnxModel alone on the digit read with Pillow (pixels / 255,
  no preprocessing), asserting that torch was never imported: the floor of the ONNX path;
- `mnistcli predict`: the whole command on model.onnx and one 112x112 dark-on-light digit, so
  the full MNIST-style preprocessing runs, as a user runs it.

mnistcli's own modules are byte-compiled first (compileall), as `pip install` does for an
installed package: a PYTHONDONTWRITEBYTECODE environment (some CI images and containers set it)
would otherwise recompile them from source in every measured process, ~20 ms that no installed
copy pays.

Targets (issue 14), for `mnistcli predict`: at most 0.25x the wall time of `import torch`,
peak memory under 200 MiB.
Run it on a quiet machine: other work running at the same time makes every figure wrong.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BACKEND = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from mnistcli.onnx_runtime import OnnxModel
x = np.asarray(Image.open(sys.argv[1]).convert("L").resize((28, 28)), np.float32)[None, None] / 255
logits = OnnxModel(Path(sys.argv[2]), threads=1)(x)
assert "torch" not in sys.modules, "the ONNX path imported torch"
print(int(logits.argmax()))
"""


def measure(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (bytes) of one child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{(out + err).decode(errors='replace')}")
    # ru_maxrss: KiB on Linux, bytes on macOS
    return seconds, usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def digit_png(folder: Path) -> Path:
    """A 112x112 dark stroke on light paper, as a scan of a handwritten 1 would be."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (112, 112), 235)
    ImageDraw.Draw(im).line([(56, 20), (52, 92)], fill=30, width=9)
    path = folder / "digit.png"
    im.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/latest/model.onnx"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"{args.model} not found: run 'mnistcli export' first or pass --model")
    py = sys.executable
    compileall.compile_dir(REPO / "mnistcli", quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        image = digit_png(Path(tmp))
        commands = {
            "import torch": [py, "-c", "import torch"],
            "onnx backend": [py, "-c", BACKEND, str(image), str(args.model)],
            "mnistcli predict": [
                *[py, "-m", "mnistcli", "predict", "--checkpoint"],
                *[str(args.model), str(image)],
            ],
        }
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
        for argv in commands.values():  # warm the file cache once, unmeasured
            measure(argv)
        for _ in range(args.repeats):
            for name, argv in commands.items():
                runs[name].append(measure(argv))
    figures = {
        name: {
            "seconds_median": statistics.median(s for s, _ in got),
            "seconds_all": [round(s, 4) for s, _ in got],
            "peak_mib": max(m for _, m in got) / 2**20,
        }
        for name, got in runs.items()
    }
    base = figures["import torch"]["seconds_median"]
    for fig in figures.values():
        fig["ratio_to_import_torch"] = fig["seconds_median"] / base
    backend = figures["mnistcli predict"]
    doc = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": py},
        "model": str(args.model),
        "repeats": args.repeats,
        "load_average": os.getloadavg(),
        "figures": figures,
        "targets_met": {
            "time <= 0.25x import torch": backend["ratio_to_import_torch"] <= 0.25,
            "peak < 200 MiB": backend["peak_mib"] < 200,
        },
    }
    print(f"{'command':<18} {'median s':>9} {'x torch':>8} {'peak MiB':>9}")
    for name, fig in figures.items():
        print(
            f"{name:<18} {fig['seconds_median']:>9.3f} {fig['ratio_to_import_torch']:>8.3f} "
            f"{fig['peak_mib']:>9.1f}"
        )
    print(f"load average during the run: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(json.dumps(doc["targets_met"]))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
