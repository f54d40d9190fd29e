"""Run folders: creating one, finding one ('latest', a folder, a file), the files beside the
checkpoints (config.json, metrics.csv, metrics.json), and clearing temporary files a killed
process left behind.

    runs/
      latest -> 20250101-120000/     a relative symlink to the newest run
      20250101-120000/               best.pt, last.pt, config.json, metrics.*, curves.png
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnistcli.errors import CheckpointError, ConfigError, TrainingError
from mnistcli.files import write_atomic
from mnistcli.records import EpochStats

LATEST = "latest"  # runs/latest -> the newest run folder
STALE_AFTER_SECONDS = 600  # a temporary file this old is left over, whoever wrote it
# What files.write_atomic (".best.pt.<pid>.<random>.tmp") and point_latest (".latest.<pid>.tmp")
# name their temporary files; older versions wrote ".best.pt.<random>.tmp" (no pid).
# files.write_atomic/staged name their temporary files .NAME.PID.RANDOM.tmp[.SUFFIX]
_TEMP = re.compile(r"^\..+\.tmp(?:\.[A-Za-z0-9]+)?$")
_TEMP_PID = re.compile(r"^\..+?\.(?P<pid>\d+)(?:\.[A-Za-z0-9_]+)?\.tmp(?:\.[A-Za-z0-9]+)?$")


def create_run(runs_dir: Path, name: str | None) -> Path:
    """runs/<name>, or runs/<date-time> (with -2, -3... if taken); refuses to reuse a run."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(
            f"cannot create the runs folder {runs_dir}: "
            f"{exc.strerror or exc}; choose another with --runs-dir"
        ) from None
    if name is not None:
        if not name or name in (".", "..", LATEST) or "/" in name or "\\" in name:
            raise ConfigError(
                f"--name {name!r} is not a usable folder name; use letters, digits, '-' or '_'"
            )
        if len(name.encode()) > 200:
            raise ConfigError(f"--name is {len(name)} characters long; use at most 200")
        run_dir = runs_dir / name
        # a folder without checkpoints (a run killed before its first save) can be reused
        if (run_dir / "last.pt").exists() or (run_dir / "best.pt").exists():
            raise ConfigError(
                f"run folder {run_dir} already exists; continue it with "
                f"--resume {run_dir} or pick another --name"
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir, n = runs_dir / stamp, 2
        while run_dir.exists():
            run_dir, n = runs_dir / f"{stamp}-{n}", n + 1
    try:
        run_dir.mkdir(exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(
            f"cannot write to the run folder {run_dir}: "
            f"{exc.strerror or exc}; choose another with --runs-dir"
        ) from None
    return run_dir


def resolve_checkpoint(arg: str | Path | None, runs_dir: Path, *, kind: str = "best") -> Path:
    """`--checkpoint` as given: a file, a run folder (its best.pt), or none (the latest run)."""
    if arg is None or str(arg) == LATEST:
        latest = latest_run(runs_dir)
        if latest is None:
            raise CheckpointError(
                f"no trained model found in {runs_dir}; train one first with "
                f"'mnistcli train' or pass --checkpoint PATH"
            )
        return latest / f"{kind}.pt"
    path = Path(arg)
    return path / f"{kind}.pt" if path.is_dir() else path


def resume_path(arg: str, runs_dir: Path) -> Path:
    """`--resume` takes a run folder, its last.pt, or 'latest'."""
    path = resolve_checkpoint(arg, runs_dir, kind="last")
    if path.name == "best.pt":
        path = path.with_name("last.pt")
    if not path.exists():
        raise CheckpointError(f"nothing to resume at {arg}: {path} does not exist")
    return path


def checkpoint_to_describe(arg: str | None, runs_dir: Path) -> Path | None:
    """What `inspect` describes: the checkpoint asked for, else the latest run's best.pt (its
    last.pt while no epoch has been validated), else none (the model alone)."""
    if arg is not None:
        return resolve_checkpoint(arg, runs_dir)
    run = latest_run(runs_dir)
    if run is None:
        return None
    return run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"


def latest_run(runs_dir: Path) -> Path | None:
    """The run that runs/latest points to, else the newest run folder holding a checkpoint."""
    link = runs_dir / LATEST
    if link.is_symlink() or link.is_dir():
        target = link.resolve()
        if target.is_dir():
            return target
    if not runs_dir.is_dir():
        return None
    runs = [
        p
        for p in runs_dir.iterdir()
        if p.is_dir() and not p.is_symlink() and (p / "last.pt").is_file()
    ]
    return max(runs, key=lambda p: (p / "last.pt").stat().st_mtime) if runs else None


def point_latest(runs_dir: Path, run_dir: Path) -> None:
    """Make runs/latest a relative symlink to `run_dir`, replacing the old one atomically."""
    link = runs_dir / LATEST
    if link.exists() and not link.is_symlink():
        return  # someone's real folder called 'latest': leave it alone
    if run_dir.resolve().parent != runs_dir.resolve():
        return  # a run resumed from elsewhere: runs/latest keeps pointing into runs/
    tmp = runs_dir / f".{LATEST}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)  # no symlinks here (some Windows set-ups): latest_run() scans


def remove_stale_temp_files(folder: Path, *, now: float | None = None) -> list[Path]:
    """Delete the temporary files (".name.<pid>.<random>.tmp") that a process killed during a
    save left in `folder`: those whose process is gone, and any older than
    STALE_AFTER_SECONDS. A live process's fresh temporary file is left alone. Returns them."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for path in entries:
        if not _TEMP.match(path.name):
            continue
        try:
            info = path.lstat()
            if path.is_dir() and not path.is_symlink():
                continue
            match = _TEMP_PID.match(path.name)
            gone = match is not None and not _process_alive(int(match["pid"]))
            if gone or now - info.st_mtime > STALE_AFTER_SECONDS:
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # vanished meanwhile, or not ours to delete: leave it
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process `pid` exists (POSIX). Elsewhere assume it does: only age decides."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or a number the kernel refuses
    return True


@dataclass(frozen=True)
class EvalPaths:
    """Where `mnistcli eval` writes: eval.json and two figures (a _val suffix for --split val)."""

    report: Path
    matrix: Path
    mistakes: Path


def eval_paths(folder: Path, split: str) -> EvalPaths:
    suffix = "" if split == "test" else f"_{split}"
    return EvalPaths(
        report=folder / f"eval{suffix}.json",
        matrix=folder / f"confusion_matrix{suffix}.png",
        mistakes=folder / f"misclassified{suffix}.png",
    )


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """A JSON document, indented, written atomically."""
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())


def write_config(run_dir: Path, doc: dict[str, Any]) -> None:
    """config.json: the resolved settings of a run."""
    write_json(run_dir / "config.json", doc)


def write_metrics(run_dir: Path, history: Sequence[EpochStats], summary: dict[str, Any]) -> None:
    """metrics.csv (one row per epoch) and metrics.json (history plus the run's summary)."""
    rows = [asdict(s) for s in history]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(EpochStats.__dataclass_fields__))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(run_dir / "metrics.csv", buf.getvalue().encode())
    doc = {"summary": summary, "history": rows}
    write_atomic(
        run_dir / "metrics.json", (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()
    )
