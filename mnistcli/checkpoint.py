"""Checkpoints: what one holds (one typed description), atomic save, safe load.

A checkpoint is stored as a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with `torch.load(weights_only=True)` and no allow-list: loading one can never run code from it.
`Checkpoint.to_payload` writes that dict and `Checkpoint.from_payload` reads it; nothing else
touches its keys. Layout (format_version 2): format, format_version, kind, model, epoch, step,
history, best, epochs_without_gain, config, data, versions, created, finished, model_state;
finished runs add stop_reason and test; last.pt adds optimizer_state, scheduler_state, rng (and
in_progress mid-epoch); a run trained by several processes under torchrun adds world_size
(absent: 1). Format 1 differs only in two names, "wait" (epochs_without_gain) and "partial"
(in_progress), and may hold "ema_state" from a setting since removed; both are read.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import re
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistcli import __version__
from mnistcli.errors import CheckpointError
from mnistcli.files import write_atomic
from mnistcli.records import Best, EpochStats, EpochTotals, RunStatus, TestScore, parse_run_status
from mnistcli.settings import HyperParams

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "mnistcli-checkpoint"
FORMAT_VERSION = 2  # the layout above; a reader refuses a newer one, reads format 1

# Fields every checkpoint has, and their stored types (the rest have defaults).
REQUIRED: dict[str, type] = {
    "format": str,
    "format_version": int,
    "kind": str,
    "model": str,
    "model_state": dict,
    "epoch": int,
    "history": list,
    "config": dict,
}


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything a checkpoint says about its run, apart from the tensors."""

    kind: str  # "best" or "last"
    model: str  # a name in mnistcli.model.MODELS
    epoch: int  # epochs completed (for best.pt: the epoch whose weights these are)
    config: dict[str, Any]  # HyperParams.to_dict() of the run
    step: int = 0  # batches done in the epoch after `epoch` (a run stopped mid-epoch)
    history: tuple[EpochStats, ...] | None = ()  # None: stored in a form this version cannot read
    epochs_run: int = 0  # entries in the stored history
    best: Best = field(default_factory=Best)
    epochs_without_gain: int = 0
    data: dict[str, str] = field(default_factory=dict)  # MNIST file -> checksum
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None  # ISO time
    finished: bool = False
    stop_reason: str | None = None  # finished runs: a RunStatus (older: "completed", "early_stop")
    test: TestScore | None = None  # finished runs
    in_progress: EpochTotals | None = None  # last.pt of a run stopped mid-epoch
    world_size: int = 1  # processes that trained it together (torchrun); 1 when absent

    @property
    def hyper(self) -> HyperParams:
        return HyperParams.from_dict(self.config)

    @property
    def status(self) -> RunStatus:
        """How the run stood when this was saved: finished, early-stopped or interrupted."""
        if self.finished:
            return parse_run_status(self.stop_reason, finished=True)
        return RunStatus.INTERRUPTED


@dataclass(frozen=True)
class ResumeState:
    """What only last.pt holds: the optimizer, the schedule and the random generators."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint: its description, the model's weights and (last.pt) the state to resume."""

    meta: CheckpointMeta
    model_state: dict[str, torch.Tensor]
    resume: ResumeState | None = None

    def to_payload(self) -> dict[str, Any]:
        """The dict that is saved (format_version 2)."""
        m = self.meta
        body: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": m.kind,
            "model": m.model,
            "epoch": m.epoch,
            "step": m.step,
            "history": [dataclasses.asdict(h) for h in m.history or ()],
            "best": dataclasses.asdict(m.best),
            "epochs_without_gain": m.epochs_without_gain,
            "config": dict(m.config),
            "data": dict(m.data),
            "versions": dict(m.versions),
            "created": m.created,
            "finished": m.finished,
            "model_state": self.model_state,
        }
        if m.world_size != 1:  # trained under torchrun; absent means one process
            body["world_size"] = m.world_size
        if self.resume is not None:
            body["optimizer_state"] = self.resume.optimizer
            body["scheduler_state"] = self.resume.scheduler
            body["rng"] = self.resume.rng
        if m.in_progress is not None:
            body["in_progress"] = dataclasses.asdict(m.in_progress)
        if m.finished:
            body["stop_reason"] = None if m.stop_reason is None else str(m.stop_reason)
            body["test"] = dataclasses.asdict(m.test) if m.test else None
        return body

    @classmethod
    def from_payload(cls, raw: dict[str, Any], path: Path) -> Checkpoint:
        """Check a loaded dict's fields and types; any damage is a one-line CheckpointError."""
        if raw.get("format") != FORMAT:
            raise CheckpointError(
                f"{path} is not an mnistcli checkpoint (no '{FORMAT}' marker); "
                f"pass a best.pt or last.pt written by 'mnistcli train'"
            )
        for key, kind in REQUIRED.items():
            if not _is(raw.get(key), kind):
                raise _damaged(path, key)
        if raw["format_version"] > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} was written by a newer mnistcli (format "
                f"{raw['format_version']}); upgrade mnistcli to read it"
            )
        check_config(raw["config"], path)
        meta = CheckpointMeta(
            kind=raw["kind"],
            model=raw["model"],
            epoch=raw["epoch"],
            config=dict(raw["config"]),
            step=_field(raw, "step", int, 0, path),
            history=_history(raw["history"]),
            epochs_run=len(raw["history"]),
            best=_record(raw, "best", Best, path) or Best(),
            epochs_without_gain=_field(raw, _key(raw, "epochs_without_gain"), int, 0, path),
            data={str(k): str(v) for k, v in _field(raw, "data", dict, {}, path).items()},
            versions={str(k): str(v) for k, v in _field(raw, "versions", dict, {}, path).items()},
            created=_field(raw, "created", str, None, path),
            finished=_field(raw, "finished", bool, False, path),
            stop_reason=_field(raw, "stop_reason", str, None, path),
            test=_record(raw, "test", TestScore, path),
            in_progress=_record(raw, _key(raw, "in_progress"), EpochTotals, path),
            world_size=_field(raw, "world_size", int, 1, path),
        )
        resume = None
        if isinstance(raw.get("optimizer_state"), dict) and isinstance(raw.get("rng"), dict):
            resume = ResumeState(
                optimizer=raw["optimizer_state"],
                scheduler=_field(raw, "scheduler_state", dict, None, path),
                rng=raw["rng"],
            )
        return cls(meta=meta, model_state=raw["model_state"], resume=resume)


# Format 1's names of the fields whose key now matches the field
FORMAT_1_KEYS = {"epochs_without_gain": "wait", "in_progress": "partial"}


def _key(raw: dict[str, Any], key: str) -> str:
    """The key a field is stored under: its own name, or in format 1 (and exports made from
    format 1 checkpoints) its old one."""
    return key if key in raw or key not in FORMAT_1_KEYS else FORMAT_1_KEYS[key]


def _is(value: Any, kind: Any) -> bool:
    """isinstance for a stored value, where a bool is not a number (and an int is a float)."""
    if kind is float:
        kind = (int, float)
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, kind)


def _damaged(path: Path, key: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is damaged: field '{key}' is missing or of the wrong type"
    )


def _field(raw: dict[str, Any], key: str, kind: type, default: Any, path: Path) -> Any:
    """An optional field: its default when absent (or None), an error when of the wrong type."""
    value = raw.get(key)
    if value is None:
        return default
    if not _is(value, kind):
        raise _damaged(path, key)
    return value


def _record(raw: dict[str, Any], key: str, cls: type, path: Path) -> Any:
    """An optional dict field read into the dataclass `cls`, checking each field's type."""
    value = _field(raw, key, dict, None, path)
    if value is None:
        return None
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    if not all(_is(value.get(name), hints[name]) for name in fields):
        raise _damaged(path, key)
    return cls(**{name: value[name] for name in fields})


def _history(raw: list[Any]) -> tuple[EpochStats, ...] | None:
    """The stored epochs, or None when they are not in the form EpochStats describes."""
    try:
        return tuple(EpochStats(**{k: h[k] for k in EpochStats.__dataclass_fields__}) for h in raw)
    except (KeyError, TypeError):
        return None


def check_config(config: dict[str, Any], path: Path) -> None:
    """The hyper-parameters a checkpoint stores must have the types HyperParams declares."""
    hints = typing.get_type_hints(HyperParams)
    for f in dataclasses.fields(HyperParams):
        if f.name in config and not _is(config[f.name], hints[f.name]):
            raise CheckpointError(
                f"checkpoint {path} is damaged: its setting '{f.name}' is "
                f"{config[f.name]!r}, not a {hints[f.name].__name__}"
            )


def versions() -> dict[str, str]:
    import torch

    return {
        "mnistcli": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Serialise in memory, then write atomically: never a partial file, even on a full disk.

    (torch.save straight into a file opens it before pickling and reports a failed write as
    a RuntimeError from its zip writer; in memory, only write_atomic touches the disk.)
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint.to_payload(), buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> Checkpoint:
    """Load and validate a checkpoint; every failure is a one-line CheckpointError."""
    import torch

    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with 'mnistcli train'")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file such as {path}/best.pt")
    if is_pt2_archive(path):
        raise pt2_refused(path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles; the error says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; all mean "not loadable"
        text = str(exc)
        # torch's weights-only refusal wraps the unpickler's reason in a paragraph of advice
        # ("WeightsUnpickler error: <blank line> Unsupported operand 80"): keep the reason
        unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        detail = reason(unpickler.group(1) if unpickler else text) or type(exc).__name__
        if re.search(r"unsupported global|not an allowed global|is blocked", text, re.I):
            why = "it holds Python objects that could run code, so it was refused unread"
        elif isinstance(exc, PermissionError):
            why = "permission denied"
        else:
            why = "it is truncated, corrupt or not a PyTorch file"
            if not detail.strip().isdigit():  # torch sometimes reports only a number
                why += f" ({detail})"
        raise CheckpointError(f"cannot load checkpoint {path}: {why}") from None
    if not isinstance(payload, dict):
        payload = {}  # not a dict: reported as "not an mnistcli checkpoint"
    return Checkpoint.from_payload(payload, path)


def reason(text: str, limit: int = 100) -> str:
    """The gist of a library's error for a one-line message: its first sentence (torch adds
    paragraphs of advice, "This is an internal miniz error. If you are seeing this..."), at
    most `limit` characters, cut between words."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = re.split(r"(?<=[^.\s]{2})\.\s", first, maxsplit=1)[0].rstrip(". ")
    if len(first) <= limit:
        return first
    return first[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def is_pt2_archive(path: Path) -> bool:
    """Whether `path` is a torch.export program (a zip with an archive_format entry), whatever
    its name: read without torch, and never loaded."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/archive_format") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def pt2_refused(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} is a torch.export program (.pt2), and loading one can run code from it, so "
        f"mnistcli does not open it; use the checkpoint it was exported from, or its .onnx "
        f"or .safetensors export"
    )


def load_weights(model: nn.Module, state: dict[str, Any], path: Path) -> None:
    """Copy a state dict into `model`, refusing any mismatch of names or shapes."""
    import torch

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(
        k
        for k in set(own) & set(state)
        if not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape
    )
    if missing or extra or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {extra[:3]}"
            if extra
            else f"shape mismatch in {wrong[:3]}"
        )
        raise CheckpointError(
            f"checkpoint {path} does not fit the model ({detail}); it was "
            f"trained for another architecture"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} holds non-finite weights ({bad[0]}); it cannot be used"
        )
    model.load_state_dict(state)


def state_dict_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights, detached and copied to the CPU (what a checkpoint stores)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
