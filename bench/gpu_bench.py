"""The stages of bench/gpu_check.sh, one per process, each writing one JSON fragment.

    python bench/gpu_bench.py env       --work W --device cuda
    python bench/gpu_bench.py fast      --work W --device cuda --data .mnist [--compile] [--quick]
    python bench/gpu_bench.py reference --work W --device cuda --data .mnist [--quick]
    python bench/gpu_bench.py eval      --work W --device cuda --data .mnist [--quick]
    python bench/gpu_bench.py report    --work W --junit pytest.xml --out results.json

Training runs go through mnistcli's own trainer (the one `mnistcli train` calls), timed by its
events: train seconds run from the first epoch's start to the last epoch's end (validation and
the checkpoints saved between epochs included); start-up (imports, CUDA initialisation, loading
MNIST, moving it to the device) and the final test evaluation are reported apart, and so is
compiling (the first epoch's excess over the median of the others). `report` merges the
fragments into the results file: a stage that failed leaves its figures null and its error in
`stages`, and the other stages still report.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()  # before torch is imported: start-up counts from here

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_ACC = 0.9935  # the fast recipe's goal on the test set (issue 16: within 10 s on a GPU)
TARGET_SECONDS = 10.0
PACKAGES = (
    *("torch", "typer", "rich", "plotext", "platformdirs", "torchinfo", "numpy", "pillow"),
    *("pytest", "hypothesis"),
)


def write_fragment(work: Path, name: str, doc: dict) -> None:
    (work / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({name: doc}, indent=2), flush=True)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load(args: argparse.Namespace):
    from mnistcli.data import load_mnist

    return load_mnist(args.work / "data-root", [str(args.data)])


def settings(args: argparse.Namespace, name: str, **hyper):
    from mnistcli.settings import DataSettings, HyperParams, TrainSettings

    return TrainSettings(
        hyper=HyperParams(**hyper),
        data=DataSettings(args.work / "data-root", (str(args.data),)),
        device=args.device,
        runs_dir=args.work / "runs",
        name=name,
        compile=getattr(args, "compile", False),
    )


def timed_train(args: argparse.Namespace, name: str, **hyper) -> dict:
    """One training run through mnistcli's trainer, timed by its events."""
    from epoch_clock import EpochClock

    from mnistcli.train import train

    mnist = load(args)
    clock = EpochClock()
    result = train(settings(args, name, **hyper), mnist, on_event=clock)
    synchronize(args.device)
    t_end = time.perf_counter()
    first, last = clock.starts[0], clock.ends[-1]
    epochs = [h.seconds for h in result.history]
    later = epochs[1:]
    return {
        "recipe": hyper.get("recipe", "reference"),
        "device": result.device,
        "precision": clock.precision,
        "compile": bool(getattr(args, "compile", False)),
        "seed": hyper.get("seed", 0),
        "test_acc": result.test_acc,
        "train_seconds": round(last - first, 3),
        "wall_seconds": round(t_end - T_PROCESS, 3),
        "startup_seconds": round(first - T_PROCESS, 3),
        "after_training_seconds": round(t_end - last, 3),
        "compile_seconds_estimate": (
            round(epochs[0] - statistics.median(later), 3)
            if getattr(args, "compile", False) and later
            else None
        ),
        "epoch_seconds": [round(s, 3) for s in epochs],
        "samples_per_s": [round(h.samples_per_s) for h in result.history],
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "stop_reason": result.stop_reason,
        "checkpoint": str(result.run_dir / "best.pt"),
    }


def cmd_env(args: argparse.Namespace) -> None:
    from importlib import metadata

    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    doc: dict = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "packages": versions,
        "cpu_count": os.cpu_count(),
    }
    if args.device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        doc |= {
            "device": torch.cuda.get_device_name(0),
            "capability": list(torch.cuda.get_device_capability(0)),
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "device_count": torch.cuda.device_count(),
        }
    else:
        cpu = platform.processor() or platform.machine()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        doc["device"] = f"cpu: {cpu}"
    write_fragment(args.work, "env", doc)


def cmd_fast(args: argparse.Namespace) -> None:
    from mnistcli.config import RECIPES

    hyper = {**RECIPES["fast"], "recipe": "fast", "seed": 0}
    if args.quick:
        hyper |= {"epochs": 2, "limit": 2000, "val_size": 500}
    name = "fast-compile" if args.compile else "fast"
    if args.compile and args.compile_mode:  # an experiment: `mnistcli train` has no such option
        import functools

        import torch

        torch.compile = functools.partial(torch.compile, mode=args.compile_mode)
    doc = timed_train(args, name, **hyper)
    doc["compile_mode"] = (args.compile_mode or "default") if args.compile else None
    doc["quick"] = args.quick
    doc["reached_target"] = bool(
        doc["test_acc"] is not None
        and doc["test_acc"] >= TARGET_ACC
        and doc["train_seconds"] <= TARGET_SECONDS
    )
    write_fragment(args.work, name, doc)


def cmd_reference(args: argparse.Namespace) -> None:
    """`mnistcli train --epochs 1` with the reference recipe: the epoch's seconds."""
    from mnistcli.config import RECIPES

    hyper = {**RECIPES["reference"], "recipe": "reference", "seed": 0, "epochs": 1}
    if args.quick:
        hyper |= {"limit": 2000, "val_size": 500}
    doc = timed_train(args, "reference-epoch", **hyper)
    doc["quick"] = args.quick
    doc["reference_epoch_seconds"] = doc["epoch_seconds"][0]
    write_fragment(args.work, "reference", doc)


def checkpoint_for_eval(work: Path) -> Path:
    for name in ("fast", "reference"):
        fragment = work / f"{name}.json"
        if fragment.exists():
            return Path(json.loads(fragment.read_text())["checkpoint"])
    raise SystemExit("no checkpoint to evaluate: the fast and reference stages both failed")


def cmd_eval(args: argparse.Namespace) -> None:
    """What `mnistcli eval` spends on the 10k test images once the model is loaded (median of
    5, after a warm-up), as bench.py measures it on the CPU; and the whole command's wall time."""
    from mnistcli.loading import load_model
    from mnistcli.metrics import evaluate_model

    checkpoint = checkpoint_for_eval(args.work)
    mnist = load(args)
    model, _ = load_model(checkpoint, args.device)
    evaluate_model(model, mnist.test_images, mnist.test_labels, device=args.device)  # warm-up
    times = []
    for _ in range(5):
        synchronize(args.device)
        t0 = time.perf_counter()
        result = evaluate_model(model, mnist.test_images, mnist.test_labels, device=args.device)
        synchronize(args.device)
        times.append(time.perf_counter() - t0)
    doc = {
        "checkpoint": str(checkpoint),
        "n": result.n,
        "accuracy": result.correct / result.n,
        "eval_10k_seconds": round(statistics.median(times), 4),
        "eval_10k_seconds_all": [round(t, 4) for t in times],
    }
    cli = [sys.executable, "-m", "mnistcli", "eval", "--checkpoint", str(checkpoint)]
    cli += ["--device", args.device, "--json", "--no-save", "--data", str(args.data)]
    cli += ["--data-root", str(args.work / "data-root")]
    t0 = time.perf_counter()
    proc = subprocess.run(cli, capture_output=True, text=True, cwd=args.work, timeout=120)
    doc["eval_cli_wall_seconds"] = round(time.perf_counter() - t0, 3)
    doc["eval_cli_rc"] = proc.returncode
    if proc.returncode == 0:
        doc["eval_cli_accuracy"] = json.loads(proc.stdout)["accuracy"]
    else:
        doc["eval_cli_error"] = proc.stderr.strip()[-500:]
    write_fragment(args.work, "eval", doc)


def junit_counts(path: Path) -> dict:
    """passed/failed/skipped from pytest's JUnit XML (errors count as failed)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    failed = total["failures"] + total["errors"]
    failing = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {
        "passed": total["tests"] - failed - skipped,
        "failed": failed,
        "skipped": skipped,
        "failing": failing,
    }


def read_fragment(work: Path, name: str) -> dict | None:
    path = work / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def read_stages(work: Path) -> dict:
    """stages.txt lines from gpu_check.sh: name, exit code (or 'skipped'), seconds."""
    stages = {}
    path = work / "stages.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, rc, seconds = line.split()
        stages[name] = {"rc": None if rc == "skipped" else int(rc), "seconds": float(seconds)}
        if rc == "skipped":
            stages[name]["skipped"] = "not enough time left in the budget"
        elif rc in ("124", "137"):
            stages[name]["error"] = "timed out"
        elif rc != "0":
            log = work / f"{name}.log"
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            last = lines[-1][-300:] if lines else ""
            stages[name]["error"] = f"exit code {rc}: {last} (gpu_check.log has the rest)"
    return stages


def cmd_report(args: argparse.Namespace) -> None:
    work = args.work
    env = read_fragment(work, "env") or {}
    fast = read_fragment(work, "fast")
    reference = read_fragment(work, "reference")
    evaluation = read_fragment(work, "eval")
    compiled = read_fragment(work, "fast-compile")
    try:
        tests = junit_counts(args.junit)
    except (OSError, ET.ParseError) as exc:
        tests = {"passed": None, "failed": None, "error": f"no test report: {exc}"}
    smi_file = work / "nvidia-smi.txt"
    smi = smi_file.read_text().strip() if smi_file.exists() else ""
    doc = {
        "device": env.get("device"),
        "torch": env.get("torch"),
        "tests": tests,
        "fast_recipe": {
            "test_acc": fast and fast["test_acc"],
            "train_seconds": fast and fast["train_seconds"],
            "wall_seconds": fast and fast["wall_seconds"],
        },
        "reference_epoch_seconds": reference and reference["reference_epoch_seconds"],
        "eval_10k_seconds": evaluation and evaluation["eval_10k_seconds"],
        "fast_recipe_reached_target": fast and fast["reached_target"],
        "target": f"test accuracy >= {TARGET_ACC:.2%} within {TARGET_SECONDS:g} s of training",
        "quick": args.quick,
        "nvidia_smi": smi or None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "env": env,
        "details": {
            "fast": fast,
            "fast_compile": compiled,
            "reference_epoch": reference,
            "eval": evaluation,
        },
        "stages": read_stages(work),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in list(doc)[:8]}, indent=2))
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["env", "fast", "reference", "eval", "report"])
    parser.add_argument("--work", type=Path, required=True, help="folder for fragments and runs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", type=Path, default=REPO / ".mnist", help="MNIST's four files")
    parser.add_argument("--quick", action="store_true", help="tiny subsets, few epochs")
    parser.add_argument("--compile", action="store_true", help="fast: torch.compile the step")
    parser.add_argument(
        "--compile-mode",
        help="fast --compile: torch.compile's mode, e.g. reduce-overhead (CUDA graphs)",
    )
    parser.add_argument("--junit", type=Path, help="report: pytest's JUnit XML")
    parser.add_argument("--out", type=Path, help="report: the results file to write")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    stages = {
        "env": cmd_env,
        "fast": cmd_fast,
        "reference": cmd_reference,
        "eval": cmd_eval,
        "report": cmd_report,
    }
    stages[args.stage](args)


if __name__ == "__main__":
    main()
