"""Run folders: creating one, listing them and how each stands (read from metrics.json and
config.json, without torch), finding one ('latest', a folder, a file), the files beside the
checkpoints (config.json, metrics.csv, metrics.json), and clearing temporary files a killed
process left behind.

    runs/
      latest -> 20250101-120000/     a relative symlink: the newest run, or the one chosen
      20250101-120000/               best.pt, last.pt, config.json, metrics.*, curves.png

'latest' means the run runs/latest points to when it has finished an epoch (it has a best.pt),
else the newest run that has: a run stopped before its first epoch ended is never picked.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from mnistcli.errors import CheckpointError, ConfigError, OutputError, TrainingError
from mnistcli.files import write_atomic
from mnistcli.records import EpochStats, RunStatus, parse_run_status

LATEST = "latest"  # runs/latest -> the newest run folder
# Files a model can be opened from without a run folder (see loading.open_model).
MODEL_SUFFIXES = (".pt", ".onnx", ".safetensors", ".pt2")
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
            raise ConfigError(taken_message(run_dir))
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


def taken_message(run_dir: Path) -> str:
    """Why --name cannot reuse `run_dir`, and the command that works for the run it holds."""
    status = read_run(run_dir).status
    if status.finished:
        return (
            f"run folder {run_dir} already holds {'an' if status.value[0] in 'aeiou' else 'a'} "
            f"{status} run; pick another --name, or use it with "
            f"'mnistcli eval --checkpoint {run_dir}'"
        )
    return (
        f"run folder {run_dir} already holds an interrupted run; continue it with "
        f"'mnistcli train --resume {run_dir}' or pick another --name"
    )


def resolve_checkpoint(
    arg: str | Path | None,
    runs_dir: Path,
    *,
    kind: str = "best",
    flag: str = "--checkpoint",
    log: Callable[[str], None] | None = None,
) -> Path:
    """`--checkpoint` as given: a file, a run folder (its best.pt), or none or 'latest' (the
    latest run: see latest_run), which `log` is told ("using run NAME (latest)").

    A folder without the checkpoint is refused with what to do instead, naming `flag` (the
    option the user typed): a run that has not finished an epoch (resume it), a runs folder
    (name one of its runs), a run that saved nothing, or a folder that is no run at all."""
    if arg is None or str(arg) == LATEST:
        latest = latest_run(runs_dir, finished_epoch=kind == "best")
        if latest is None:
            raise CheckpointError(_no_latest_message(runs_dir))
        if log is not None:
            log(f"using run {latest.name} (latest)")
        return latest / f"{kind}.pt"
    path = Path(arg)
    if path.is_dir() and not (path / f"{kind}.pt").exists():
        why = _runs_folder_message(path, runs_dir, kind, flag)
        why = why or _no_checkpoint_message(path, runs_dir, model_files=kind == "best")
        if why is not None:
            raise CheckpointError(why)
    path = path / f"{kind}.pt" if path.is_dir() else path
    if path.name == "best.pt" and not path.exists() and (path.parent / "last.pt").is_file():
        raise CheckpointError(
            f"run {path.parent} has not finished an epoch yet, so it has no best.pt; continue "
            f"it with 'mnistcli train --resume {_quoted(path.parent)}' (or pass its last.pt)"
        )
    return path


def _quoted(path: Path) -> str:
    """`path` as a shell reads it back: advice is a command to copy, spaces and all."""
    return shlex.quote(str(path))


def _runs_command(runs_dir: Path) -> str:
    """The command that lists the runs in `runs_dir`."""
    return f"'mnistcli runs --runs-dir {_quoted(runs_dir)}'"


def _runs_folder_message(folder: Path, runs_dir: Path, kind: str, flag: str) -> str | None:
    """When `folder` holds runs (given where one run was meant): say so, with the run of it
    to name (the latest for a model, the newest interrupted one for `--resume`) and, for a
    model, how to use its latest instead; None when it holds no runs."""
    held = list_runs(folder)
    if not held and not (folder / LATEST).is_dir():
        return None
    said = f"{folder} is a runs folder, not a run"
    if kind == "last":  # --resume: only an interrupted run can go on
        stopped = [
            r for r in held if r.status is RunStatus.INTERRUPTED and (r.path / "last.pt").is_file()
        ]
        if not stopped:
            return (
                f"{said}, and none of its runs was interrupted, so there is nothing to "
                f"resume; start a new one with 'mnistcli train --runs-dir {_quoted(folder)}'"
            )
        return f"{said}: name the run to continue, e.g. {flag} {_quoted(stopped[0].path)}"
    latest = latest_run(folder)
    if latest is None:
        return f"{said}; {_no_latest_message(folder)}"
    if folder.resolve() == runs_dir.resolve():
        instead = f"leave {flag} out"
    else:
        instead = f"leave {flag} out and pass --runs-dir {_quoted(folder)}"
    return (
        f"{said}: name one of its runs ({flag} {_quoted(folder / latest.name)}; "
        f"{_runs_command(folder)} lists them), or {instead} to use its latest"
    )


def _no_checkpoint_message(folder: Path, runs_dir: Path, *, model_files: bool = True) -> str | None:
    """When `folder` holds no checkpoint at all (best.pt or last.pt): a run killed before its
    first save, or a folder that is no run; what to do (with `model_files`, pass a model file
    found in it: what --checkpoint takes, not --resume). None when it holds a checkpoint."""
    if (folder / "best.pt").is_file() or (folder / "last.pt").is_file():
        return None
    if _is_run(folder):
        return (
            f"run {folder} stopped before an epoch was saved, so there is nothing to use or "
            f"resume; name another run ({_runs_command(folder.parent)} lists them) or train "
            f"one with 'mnistcli train'"
        )
    models = sorted(p.name for p in folder.glob("*") if p.suffix in MODEL_SUFFIXES)
    if models and model_files:
        return (
            f"{folder} is not a run (it has no best.pt); pass one of its model files, e.g. "
            f"{_quoted(folder / models[0])}"
        )
    return (
        f"{folder} is not a run: there is no checkpoint in it; name a run that "
        f"{_runs_command(runs_dir)} lists, or train one with 'mnistcli train'"
    )


def _no_latest_message(runs_dir: Path) -> str:
    """Why there is no latest run, and what to do: train one, or resume one stopped early."""
    stopped = latest_run(runs_dir, finished_epoch=False)
    if stopped is not None:
        return (
            f"no run in {runs_dir} has finished an epoch yet; continue {stopped} with "
            f"'mnistcli train --resume {stopped}', or pass --checkpoint PATH"
        )
    return (
        f"no trained model found in {runs_dir}; train one first with 'mnistcli train' "
        f"or pass --checkpoint PATH"
    )


def resume_path(arg: str, runs_dir: Path) -> Path:
    """`--resume` takes a run folder, its last.pt, or 'latest' (here: the latest run with a
    last.pt, even one stopped before its first epoch ended)."""
    path = resolve_checkpoint(arg, runs_dir, kind="last", flag="--resume")
    if path.name == "best.pt":
        path = path.with_name("last.pt")
    if not path.exists():
        raise CheckpointError(f"nothing to resume at {arg}: {path} does not exist")
    return path


def checkpoint_to_describe(
    arg: str | None, runs_dir: Path, *, log: Callable[[str], None] | None = None
) -> Path | None:
    """What `inspect` describes: the checkpoint asked for, else the latest run's best.pt (as
    resolve_checkpoint picks it), else none (the model alone)."""
    if arg is None and latest_run(runs_dir) is None:
        return None
    return resolve_checkpoint(arg, runs_dir, log=log)


def latest_run(runs_dir: Path, *, finished_epoch: bool = True) -> Path | None:
    """The run 'latest' means: the one runs/latest points to, else the newest run folder (by
    its last save). `finished_epoch`: only runs that have finished an epoch (a best.pt)
    count; otherwise any with a checkpoint (what --resume latest continues)."""
    wanted = "best.pt" if finished_epoch else "last.pt"
    link = runs_dir / LATEST
    if link.is_symlink() or link.is_dir():
        target = link.resolve()
        if (target / wanted).is_file():
            return target
    if not runs_dir.is_dir():
        return None
    found = [
        p
        for p in runs_dir.iterdir()
        if p.is_dir() and not p.is_symlink() and p.name != LATEST and (p / wanted).is_file()
    ]
    return max(found, key=_last_saved) if found else None


def _last_saved(run_dir: Path) -> float:
    """When the run last saved a checkpoint (seconds since the epoch)."""
    times = [p.stat().st_mtime for p in (run_dir / "last.pt", run_dir / "best.pt") if p.exists()]
    return max(times, default=0.0)


def use_run(runs_dir: Path, name: str) -> Path:
    """`mnistcli runs use NAME`: point runs/latest at the run NAME (a folder under `runs_dir`
    or a path to one inside it), which must have finished an epoch."""
    run_dir = Path(name) if Path(name).is_dir() and "/" in name else runs_dir / name
    if not run_dir.is_dir() or run_dir.name == LATEST:
        known = sorted(r.name for r in list_runs(runs_dir))
        close = get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; 'mnistcli runs' lists them"
        raise CheckpointError(f"no run called {name!r} in {runs_dir}{hint}")
    if run_dir.resolve().parent != runs_dir.resolve():
        raise CheckpointError(f"{run_dir} is not a run folder inside {runs_dir}")
    if not (run_dir / "best.pt").is_file():
        why = _no_checkpoint_message(run_dir, runs_dir, model_files=False)
        raise CheckpointError(
            why
            or f"run {run_dir} has not finished an epoch, so there is no model to use; "
            f"continue it with 'mnistcli train --resume {_quoted(run_dir)}'"
        )
    if not point_latest(runs_dir, run_dir):
        raise OutputError(
            f"cannot point {runs_dir / LATEST} at {run_dir.name}: it is a real folder, or "
            f"symbolic links cannot be made here"
        )
    return run_dir


def point_latest(runs_dir: Path, run_dir: Path) -> bool:
    """Make runs/latest a relative symlink to `run_dir`, replacing the old one atomically.
    False when it cannot (then latest_run scans the folders instead)."""
    link = runs_dir / LATEST
    if link.exists() and not link.is_symlink():
        return False  # someone's real folder called 'latest': leave it alone
    if run_dir.resolve().parent != runs_dir.resolve():
        return False  # a run resumed from elsewhere: runs/latest keeps pointing into runs/
    tmp = runs_dir / f".{LATEST}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)  # no symlinks here (some Windows set-ups): latest_run() scans
        return False
    return True


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


# ---------------------------------------------------------------------------------------------
# Listing the runs: what each one's files say, read without torch


@dataclass(frozen=True)
class RunInfo:
    """One run folder as `mnistcli runs` lists it."""

    name: str
    path: Path
    started: datetime | None  # local time its config.json was written (the run's start)
    recipe: str | None
    device: str | None  # where it trained ("cpu", "cuda:0"), or the device asked for
    epochs_run: int
    epochs_planned: int | None
    best_epoch: int | None  # None until an epoch is validated
    val_acc: float | None  # the best epoch's validation accuracy
    test_acc: float | None  # scored once the run finished
    status: RunStatus
    usable: bool  # it has a best.pt: eval, predict, export and 'latest' can use it
    latest: bool = False  # the run 'latest' means

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["path"] = str(self.path)
        doc["started"] = self.started.isoformat(timespec="seconds") if self.started else None
        doc["status"] = str(self.status)
        return doc


def read_run(run_dir: Path) -> RunInfo:
    """What `run_dir`'s metrics.json and config.json say about it (either may be missing or
    damaged: a run killed early, or an older version's), and which checkpoints it holds."""
    summary = _json_dict(run_dir / "metrics.json").get("summary")
    summary = summary if isinstance(summary, dict) else {}
    config = _json_dict(run_dir / "config.json")
    hyper = summary.get("hyper") if isinstance(summary.get("hyper"), dict) else None
    hyper = hyper or (config.get("hyper") if isinstance(config.get("hyper"), dict) else {})
    has_last, has_best = (run_dir / "last.pt").is_file(), (run_dir / "best.pt").is_file()
    stored = summary.get("stop_reason")
    if not isinstance(stored, str):
        status = RunStatus.INTERRUPTED if has_last else RunStatus.EMPTY
    else:
        status = parse_run_status(stored)
        if status is RunStatus.INTERRUPTED and not (has_last or has_best):
            status = RunStatus.EMPTY  # nothing was saved: nothing to resume
    best_epoch = _number(summary.get("best_epoch"), int)
    started_at = _mtime(run_dir / "config.json") or _mtime(run_dir)
    return RunInfo(
        name=run_dir.name,
        path=run_dir,
        started=datetime.fromtimestamp(started_at) if started_at else None,
        recipe=_text(hyper.get("recipe")),
        device=_text(summary.get("device")) or _text(config.get("device")),
        epochs_run=_number(summary.get("epochs_run"), int) or 0,
        epochs_planned=_number(hyper.get("epochs"), int),
        best_epoch=best_epoch or None,
        val_acc=_number(summary.get("best_val_acc"), float) if best_epoch else None,
        test_acc=_number(summary.get("test_acc"), float),
        status=status,
        usable=has_best,
    )


def list_runs(runs_dir: Path) -> tuple[RunInfo, ...]:
    """Every run folder under `runs_dir`, newest first, the one 'latest' means marked."""
    try:
        folders = [
            p
            for p in runs_dir.iterdir()
            if p.is_dir() and not p.is_symlink() and p.name != LATEST and _is_run(p)
        ]
    except OSError:
        return ()
    latest = latest_run(runs_dir)
    found = [read_run(p) for p in folders]
    found.sort(key=lambda r: (r.started or datetime.min, r.name), reverse=True)
    return tuple(
        RunInfo(**{**r.__dict__, "latest": latest is not None and r.path == latest}) for r in found
    )


def _is_run(folder: Path) -> bool:
    """Whether `folder` was made by `mnistcli train` (a file only a run writes)."""
    return any((folder / f).is_file() for f in ("config.json", "metrics.json", "last.pt"))


def _json_dict(path: Path) -> dict[str, Any]:
    """A JSON file's top-level object, or {} when it is missing, unreadable or not an object."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _number(value: Any, kind: type) -> Any:
    """`value` when it is a number of `kind` (an int counts as a float; a bool never does)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind is int and not isinstance(value, int):
        return None
    return kind(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
