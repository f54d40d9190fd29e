"""predict on many files: every core (the default --workers) against one (--workers 1).

    python bench/predict_workers.py --checkpoint runs/latest [--images 2000] [--repeats 3]
        [--memory] [--data /work/shared/mnist] [--json results.json]

The images are MNIST test digits drawn dark on light at 64x64 (as a scan would be), written
as PNGs into a temporary folder. Each figure is one fresh `mnistcli predict DIR --json` child
process, measured from here: wall time (the median of --repeats, the two settings interleaved
so that a busy moment hurts both alike) and the peak resident memory of the main process
(ru_maxrss from os.wait4). --memory also compares the peak for 1,000 and 10,000 images with
the default workers (target: within 50 MiB of each other). The load average is recorded
before and after: other work on the machine slows the pool more than the single process.

Target (issue 25): on 2 cores the default is at least 1.6x as fast as --workers 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
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


def write_images(folder: Path, count: int, data: Path) -> None:
    """`count` 64x64 PNGs of MNIST test digits, dark ink on light paper."""
    import numpy as np
    from PIL import Image

    with gzip.open(data / "t10k-images-idx3-ubyte.gz") as fh:
        raw = fh.read()[16:]
    digits = np.frombuffer(raw, np.uint8).reshape(-1, 28, 28)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        im = Image.fromarray(255 - digits[i % len(digits)]).resize((64, 64))
        im.save(folder / f"d{i:05d}.png")


def measure(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (bytes) of one child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{err.decode(errors='replace')}")
    return seconds, usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def predict_argv(folder: Path, checkpoint: str, workers: int | None) -> list[str]:
    """The command as a user types it: the `mnistcli` script installed beside this Python
    (`python -m mnistcli` where there is none)."""
    script = Path(sys.executable).with_name("mnistcli")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mnistcli"]
    argv = [*command, "predict", str(folder), "--json"]
    argv += ["--checkpoint", checkpoint, "--device", "cpu"]
    return argv + ([] if workers is None else ["--workers", str(workers)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "mnist")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    result: dict[str, object] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "images": args.images,
        "load_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        write_images(folder, args.images, args.data)
        times: dict[str, list[float]] = {"default": [], "one": []}
        peaks: dict[str, int] = {"default": 0, "one": 0}
        for _ in range(args.repeats):
            for name, workers in (("default", None), ("one", 1)):
                seconds, peak = measure(predict_argv(folder, args.checkpoint, workers))
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak)
                print(f"{name:>7}: {seconds:6.2f} s, {peak / 2**20:5.0f} MiB", file=sys.stderr)
        default, one = statistics.median(times["default"]), statistics.median(times["one"])
        result |= {
            "seconds_default_workers": default,
            "seconds_one_worker": one,
            "speedup": one / default,
            "images_per_s_default": args.images / default,
            "images_per_s_one": args.images / one,
            "peak_mib_default": peaks["default"] / 2**20,
            "peak_mib_one": peaks["one"] / 2**20,
            "all_seconds": times,
        }
        if args.memory:
            memory = {}
            for count in (1000, 10000):
                sub = Path(tmp) / f"m{count}"
                write_images(sub, count, args.data)
                seconds, peak = measure(predict_argv(sub, args.checkpoint, None))
                memory[str(count)] = {"seconds": seconds, "peak_mib": peak / 2**20}
                print(
                    f"{count:>7} images: {seconds:6.2f} s, {peak / 2**20:5.0f} MiB", file=sys.stderr
                )
            result["memory"] = memory
    result["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
