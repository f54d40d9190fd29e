"""Exported models: ONNX, safetensors and torch.export writers, each checking itself after
writing.

Every export takes the same input as the ONNX contract (onnx_runtime): (N, 1, 28, 28) float32,
pixel values / 255, bright ink on black (MNIST's form); the training normalisation is inside the
model. Every export carries the checkpoint's description as metadata, which loading.py reads
back (loading.read_export): eval, predict and inspect open exports through loading.open_model.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistcli import __version__
from mnistcli.config import EXPORT_FORMATS, Setting, flag_name
from mnistcli.errors import ConfigError, ExportError, OutputError
from mnistcli.files import staged
from mnistcli.loading import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    PT2_EXTRA,
    load_checkpoint_or_export,
    load_model,
    load_safetensors,
    onnx_meta,
    read_export,
    sidecar_path,
)
from mnistcli.onnx_runtime import CLASSES, INPUT, LABELS, OUTPUT, SIDE, OnnxModel

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import numpy as np
    import torch
    from torch import nn

    from mnistcli.checkpoint import CheckpointMeta
    from mnistcli.settings import ExportSettings

TOLERANCE = 1e-4  # largest |logit difference| the self-check accepts
PREPROCESSING = (
    "mnistcli {version}: make the image look like an MNIST digit first: grayscale "
    "(transparency laid on white), inverted if the background is light so the ink is bright on "
    "black, cropped to the ink, scaled so its longer side is 20 px, centred by its centre of mass "
    "in 28x28, then pixel values (0-255) divided by 255; the normalisation (mean {mean}, std "
    "{std}) is inside the model. mnistcli.imaging.preprocess does all of it; "
    "'mnistcli predict --show' draws the result."
)


# ---------------------------------------------------------------------------------------------
# Writing and checking an export


@dataclass(frozen=True)
class ExportCheck:
    """The written file run on test digits against the PyTorch model."""

    n: int
    torch_accuracy: float
    export_accuracy: float
    max_abs_diff: float  # largest |logit difference| over every image and class
    mismatches: int  # images whose predicted digit differs
    tolerance: float = TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.mismatches == 0


@dataclass(frozen=True)
class ExportResult:
    """What `mnistcli export` wrote and how its self-check went."""

    format: str
    path: Path
    files: tuple[Path, ...]  # every file written (the .safetensors sidecar too)
    bytes: int
    checkpoint: Path
    check: ExportCheck
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": str(self.path),
            "files": [str(p) for p in self.files],
            "bytes": self.bytes,
            "checkpoint": str(self.checkpoint),
            "check": {**asdict(self.check), "passed": self.check.passed},
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class ExportProgress:
    """How far an export has got, for a progress display: `stage` is "reference" (the PyTorch
    model's logits on the test digits), "writing" or "checking" (the written file on them);
    `done` of `total` images (writing: 0 or 1 file)."""

    stage: str
    done: int
    total: int


CHECK_BATCH = 500  # test digits per step of the self-check (one progress report each)


def _ignore(_progress: ExportProgress) -> None:
    return None


def export_format(out: Path | None, asked: Setting) -> str:
    """The format to write: the one --out's suffix names (.onnx, .safetensors, .pt2) unless
    `asked` (export.format and where it came from) names one; both given, they must agree,
    since the suffix is how every reader, mnistcli's included, tells the formats apart."""
    if out is None:
        return asked.value
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; give a file name such as {out}/model.onnx")
    suffix = out.suffix.lower().removeprefix(".")
    choices = ", ".join(f".{f}" for f in EXPORT_FORMATS)
    if asked.source == "default":
        if suffix in EXPORT_FORMATS:
            return suffix
        named = f"'{out.suffix}'" if out.suffix else "no suffix"
        raise ConfigError(
            f"--out {out} has {named}, so the format is unknown; end the name with one of {choices}"
        )
    if suffix != asked.value:
        given = (
            f"{asked.source} {asked.value}"
            if asked.source.startswith("--")
            else f"{flag_name('export.format')} {asked.value} (from {asked.source})"
        )
        raise ConfigError(
            f"{given} writes a .{asked.value} file but --out {out} names another; name it "
            f"{out.with_suffix('.' + asked.value)}, or leave --format out"
        )
    return suffix


def default_out(checkpoint: Path, fmt: str) -> Path:
    """model.onnx (.safetensors, .pt2) next to the checkpoint: each format (config.EXPORT_FORMATS,
    checked by config.validate) is its file's suffix."""
    return checkpoint.parent / f"model.{fmt}"


def outputs(out: Path, fmt: str) -> tuple[Path, ...]:
    return (out, sidecar_path(out)) if fmt == "safetensors" else (out,)


def check_writable(out: Path, checkpoint: Path) -> None:
    """Refuse an --out that cannot be written (or is the checkpoint) before anything slow."""
    if out.exists() and checkpoint.exists() and out.resolve() == checkpoint.resolve():
        raise OutputError(f"--out {out} is the checkpoint itself; choose another file name")
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; give a file name such as {out}/model.onnx")
    folder = out.parent  # missing folders are made when the file is written: check the first
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"--out {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: the folder {folder} is not writable")


@contextlib.contextmanager
def parents_made(path: Path) -> Iterator[None]:
    """Make `path`'s missing folders for the block; remove them again if it fails, so a
    failed export leaves nothing behind."""
    missing = []
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
    try:
        yield
    except BaseException:
        for made in missing:
            with contextlib.suppress(OSError):
                made.rmdir()  # only if still empty
        raise


# torch.export, torch.onnx and onnxscript log through these (and dynamo warns via warnings)
TORCH_LOGGERS = ("torch", "onnxscript", "onnx_ir", "onnx")


@contextlib.contextmanager
def torch_quiet() -> Iterator[None]:
    """Keep torch's own log lines (Python logging, warnings, and C++ glog lines such as
    "W1204 ...", written straight to file descriptor 2) off the user's screen while an
    exporter runs; a failure still raises, and says what went wrong itself."""
    loggers = [logging.getLogger(name) for name in TORCH_LOGGERS]
    levels = [lg.level for lg in loggers]
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        stack.callback(lambda: [lg.setLevel(lv) for lg, lv in zip(loggers, levels, strict=True)])
        stack.enter_context(_fd2_captured())
        yield


@contextlib.contextmanager
def _fd2_captured() -> Iterator[None]:
    """Point file descriptor 2 (stderr) at a scratch file for the block, where C++ code's
    output goes, then back; without a real descriptor 2 (a test runner), leave it."""
    import sys

    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as scratch:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def export_model(
    checkpoint: Path,
    fmt: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    out: Path | None = None,
    *,
    on_progress: Callable[[ExportProgress], None] = _ignore,
) -> ExportResult:
    """Export `checkpoint`, run the written file on (N, 28, 28) uint8 `images` against the
    PyTorch model, and put it in place only if every logit agrees within TOLERANCE and every
    predicted digit is the same; otherwise raise ExportError and leave nothing behind (the
    folders made for it included). `on_progress` hears how far it has got."""
    import numpy as np

    start = time.perf_counter()
    out = out if out is not None else default_out(checkpoint, fmt)
    check_writable(out, checkpoint)
    model, meta = load_model(checkpoint, "cpu")
    net = with_normalisation(model)
    x = images.numpy()[:, None].astype(np.float32) / 255.0  # (N, 1, 28, 28) pixels / 255
    y = labels.numpy()
    reference = _in_steps(lambda part: torch_logits(net, part), x, "reference", on_progress)
    stored = export_metadata(meta, checkpoint, accuracy(reference, y), len(y))
    try:
        with parents_made(out), contextlib.ExitStack() as stack:
            tmps = [stack.enter_context(staged(p)) for p in outputs(out, fmt)]
            on_progress(ExportProgress("writing", 0, 1))
            with torch_quiet():
                WRITERS[fmt](net, tmps, stored)
                read = READERS[fmt](tmps)
            on_progress(ExportProgress("writing", 1, 1))
            check = compare(reference, _in_steps(read, x, "checking", on_progress), y)
            if not check.passed:
                raise ExportError(
                    f"the {fmt} export does not reproduce {checkpoint}: max |logit difference| "
                    f"{check.max_abs_diff:.2e} (limit {TOLERANCE:.0e}), {check.mismatches} of "
                    f"{check.n} predicted digits differ; nothing was written"
                )
            size = sum(p.stat().st_size for p in tmps)
    except OSError as exc:  # creating, writing or renaming the files; nothing is left behind
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    files = outputs(out, fmt)
    return ExportResult(fmt, out, files, size, checkpoint, check, time.perf_counter() - start)


def _in_steps(
    logits: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    stage: str,
    on_progress: Callable[[ExportProgress], None],
) -> np.ndarray:
    """`logits` of `x`, CHECK_BATCH images at a time, each step reported to `on_progress`."""
    import numpy as np

    parts = []
    on_progress(ExportProgress(stage, 0, len(x)))
    for i in range(0, len(x), CHECK_BATCH):
        parts.append(logits(x[i : i + CHECK_BATCH]))
        on_progress(ExportProgress(stage, min(i + CHECK_BATCH, len(x)), len(x)))
    return np.concatenate(parts) if parts else np.zeros((0, CLASSES), np.float32)


def with_normalisation(model: nn.Module) -> nn.Module:
    """`model` behind the training normalisation: its input is pixels / 255 (the contract)."""
    from torch import nn

    from mnistcli.data import standardise

    class Normalised(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.net(standardise(image))

    return Normalised(model).eval()


def torch_logits(net: nn.Module, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    import torch

    from mnistcli.model import logits_in_batches

    return logits_in_batches(net, torch.from_numpy(x), batch_size).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean()) if len(labels) else 0.0


def compare(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray) -> ExportCheck:
    import numpy as np

    diff = float(np.abs(reference - exported).max()) if reference.size else 0.0
    return ExportCheck(
        n=len(labels),
        torch_accuracy=accuracy(reference, labels),
        export_accuracy=accuracy(exported, labels),
        max_abs_diff=diff if math.isfinite(diff) else math.inf,
        mismatches=int((reference.argmax(1) != exported.argmax(1)).sum()),
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_metadata(
    meta: CheckpointMeta, checkpoint: Path, test_accuracy: float, test_n: int
) -> dict[str, Any]:
    """The checkpoint's fields as it stores them (no weights, no optimizer) plus the contract:
    one dict every format stores, read back by `read_export`."""
    from mnistcli.checkpoint import Checkpoint
    from mnistcli.data import MEAN, STD

    fields = Checkpoint(meta, {}).to_payload()
    for key in ("format", "format_version", "model_state"):
        del fields[key]
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        **fields,
        "mnistcli_version": __version__,
        "source_checkpoint": checkpoint.name,
        "source_checkpoint_sha256": sha256(checkpoint),
        "test_accuracy": test_accuracy,
        "test_images": test_n,
        "input": {"name": INPUT, "shape": ["N", 1, SIDE, SIDE], "dtype": "float32"},
        "output": {"name": OUTPUT, "shape": ["N", CLASSES]},
        "normalisation": {"mean": MEAN, "std": STD, "inside_model": True},
        "labels": list(LABELS),
        "preprocessing": PREPROCESSING.format(version=__version__, mean=MEAN, std=STD),
    }


def _example(batch: int = 2) -> torch.Tensor:
    import torch

    # a batch of 2, not 1: torch.export would specialise a batch of 1 as a constant
    return torch.zeros(batch, 1, SIDE, SIDE)


def _batch_dim() -> dict[str, dict[int, Any]]:
    import torch

    return {INPUT: {0: torch.export.Dim("batch")}}


def write_onnx(net: nn.Module, paths: Sequence[Path], meta: dict[str, Any]) -> None:
    """torch.onnx's dynamo exporter, with the metadata as model properties."""
    import onnx
    import torch

    program = torch.onnx.export(
        net,
        (_example(),),
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=_batch_dim(),
        dynamo=True,
        verbose=False,
    )
    proto = program.model_proto
    props = {
        "labels": json.dumps(meta["labels"]),
        "preprocessing": meta["preprocessing"],
        "mnistcli_version": meta["mnistcli_version"],
        "source_checkpoint_sha256": meta["source_checkpoint_sha256"],
        "test_accuracy": repr(meta["test_accuracy"]),
        "test_images": str(meta["test_images"]),
        "mnistcli": json.dumps(meta),
    }
    onnx.helper.set_model_props(proto, props)
    proto.producer_name, proto.producer_version = "mnistcli", __version__
    paths[0].write_bytes(proto.SerializeToString())


def write_safetensors(net: nn.Module, paths: Sequence[Path], meta: dict[str, Any]) -> None:
    """The weights (the model's own state dict names) and the metadata as a JSON sidecar."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in net.net.state_dict().items()}
    save_file(state, str(paths[0]), metadata={"format": EXPORT_FORMAT, "model": meta["model"]})
    paths[1].write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def write_pt2(net: nn.Module, paths: Sequence[Path], meta: dict[str, Any]) -> None:
    """torch.export's program (normalisation included), the metadata as an extra file."""
    import torch

    program = torch.export.export(net, (_example(),), dynamic_shapes=_batch_dim())
    # through memory: the archive's top folder is then torch's own name, not the temporary
    # file's (".model.pt2.<pid>.<random>.tmp")
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={PT2_EXTRA: json.dumps(meta)})
    paths[0].write_bytes(buffer.getvalue())


def read_onnx(paths: Sequence[Path]) -> Callable[[np.ndarray], np.ndarray]:
    model = OnnxModel(paths[0])
    onnx_meta(model)  # the metadata must read back too
    return model.logits


def read_safetensors(paths: Sequence[Path]) -> Callable[[np.ndarray], np.ndarray]:
    from mnistcli.checkpoint import load_weights
    from mnistcli.model import build_model

    checkpoint = load_safetensors(paths[0], paths[1])
    model = build_model(checkpoint.meta.model)
    load_weights(model, checkpoint.model_state, paths[0])
    net = with_normalisation(model)
    return lambda x: torch_logits(net, x)


def read_pt2(paths: Sequence[Path]) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    extra = {PT2_EXTRA: ""}
    program = torch.export.load(paths[0], extra_files=extra)
    read_export(extra[PT2_EXTRA], paths[0], {})
    module = program.module()  # an exported module has no eval(): it was traced in eval mode

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.cat(
                [module(torch.from_numpy(x[i : i + 1000])) for i in range(0, len(x), 1000)]
            ).numpy()

    return run


WRITERS = {"onnx": write_onnx, "safetensors": write_safetensors, "pt2": write_pt2}
READERS = {"onnx": read_onnx, "safetensors": read_safetensors, "pt2": read_pt2}


def export_checkpoint(
    settings: ExportSettings,
    *,
    log: Callable[[str], None] = lambda _m: None,
    on_progress: Callable[[ExportProgress], None] = _ignore,
) -> ExportResult:
    """`mnistcli export`: find the checkpoint (`log` hears which run 'latest' picked), refuse
    a bad --out or checkpoint before MNIST is loaded, then export it and check the written
    file on the first test digits."""
    from mnistcli.data import load_part
    from mnistcli.runs import resolve_checkpoint

    fmt = settings.format
    path = resolve_checkpoint(settings.checkpoint, settings.runs_dir, log=log)
    out = settings.out if settings.out is not None else default_out(path, fmt)
    check_writable(out, path)
    load_checkpoint_or_export(path)
    test = load_part(settings.data.root, list(settings.data.mirrors), "test", on_message=log)
    n = settings.check_images or len(test.labels)
    images, labels = test.images[:n], test.labels[:n]
    return export_model(path, fmt, images, labels, out, on_progress=on_progress)
