"""One way to open a model: what `--checkpoint` names (a run folder, 'latest', a .pt checkpoint,
a .safetensors or .onnx export) -> a LoadedModel that eval, predict, inspect, explain and draw
all use.

A LoadedModel computes (N, 10) logits from a (N, 1, 28, 28) float32 batch of pixels / 255
(bright ink on black, imaging.Prepared.image), whatever runs it: the PyTorch model (which this
module standardises as in training) or onnxruntime running an .onnx file itself. Where there is
a PyTorch module (a checkpoint, a .safetensors export, or an .onnx asked for with
`need_module`, its weights read from the graph) it is there too, for --explain and inspect.

This module imports torch only when it builds a PyTorch model: opening an .onnx for predict
or eval never does. The exports' metadata (written by export.py) is read back here, as a
Checkpoint validated like a .pt file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistcli.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    is_pt2_archive,
    load_checkpoint,
    pt2_refused,
    reason,
)
from mnistcli.errors import CheckpointError
from mnistcli.onnx_runtime import CLASSES, OnnxModel, check_file, is_onnx, open_onnx
from mnistcli.runs import resolve_checkpoint

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from mnistcli.checkpoint import CheckpointMeta

    # (N, 1, 28, 28) float32 pixels / 255 -> (N, 10) float32 logits: what predict runs
    PixelLogits = Callable[[np.ndarray], np.ndarray]

EXPORT_FORMAT = "mnistcli-export"  # marker in the metadata every export carries
EXPORT_FORMAT_VERSION = 1  # the metadata: a checkpoint's fields (format 1) plus the contract's
PT2_EXTRA = "mnistcli.json"  # the metadata's name inside a .pt2 archive
BATCH = 1000  # images per forward pass when logits are asked for many at once


# ---------------------------------------------------------------------------------------------
# The model, opened


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for inference, and what the user is told about it.

    Call it (or `logits`) with a (N, 1, 28, 28) float32 batch of pixels / 255 for (N, 10)
    float32 logits. `module` is the PyTorch model (eval mode, on `device`) where there is one:
    None for an .onnx run by onnxruntime.
    """

    path: Path  # the file opened (a run folder and 'latest' resolved)
    meta: CheckpointMeta | None  # None: an .onnx that keeps the contract, not from mnistcli
    description: str  # "simplecnn, epoch 9", for a "model:" line
    device: str  # where it runs, as the user is told: "cpu", "cuda:0", "cpu (onnxruntime)"
    module: nn.Module | None
    run: Callable[[np.ndarray, int], np.ndarray] = field(repr=False)  # (batch, batch_size)
    meta_error: str | None = field(default=None, repr=False)  # why `meta` is None

    def logits(self, batch: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """(N, 10) logits for a (N, 1, 28, 28) batch, `batch_size` images per forward pass."""
        return self.run(batch, batch_size)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch, BATCH)

    def require_meta(self) -> CheckpointMeta:
        """The run's description, or the one-line error saying why the file has none (an .onnx
        not written by `mnistcli export`): eval reports on the run, predict needs only logits."""
        if self.meta is None:
            raise CheckpointError(self.meta_error or f"{self.path} describes no mnistcli run")
        return self.meta


def open_model(
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    *,
    runs_dir: Path = Path("runs"),
    need_module: bool = False,
    channels_last: bool = False,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> LoadedModel:
    """Open what `--checkpoint` names (see runs.resolve_checkpoint: None or 'latest' is the
    latest run's best.pt, a run folder its best.pt) on `device` ('auto', 'cpu', 'cuda:N'...).

    An .onnx file runs on onnxruntime (CPU only) without importing torch, unless
    `need_module` asks for the PyTorch module (gradients for --explain, layers for inspect):
    then its weights are read into PyTorch. `channels_last`: lay the weights out for fast CPU
    inference (eval, predict); the standard layout is what export writes and inspect describes.
    `threads`: the CPU threads the model computes on (torch.set_num_threads, onnxruntime's
    intra-op threads), None for the library's default (one per core).
    `log` is told which run 'latest' picked ("using run NAME (latest)").
    """
    path = resolve_checkpoint(checkpoint, runs_dir, log=log)
    if is_onnx(path) and is_pt2_archive(path):  # a torch.export program under an .onnx name
        raise pt2_refused(path)
    if is_onnx(path) and not need_module:
        onnx = open_onnx(path, device, threads=threads or 0)
        try:
            meta, error = onnx_meta(onnx), None
            description = f"{meta.model}, epoch {meta.epoch}"
        except CheckpointError as exc:  # keeps the contract but not written by mnistcli
            meta, error, description = None, str(exc), "ONNX model"
        return LoadedModel(path, meta, description, "cpu (onnxruntime)", None, onnx.logits, error)
    from mnistcli.device import resolve_device

    dev = resolve_device(device)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    module, meta = load_model(path, dev, channels_last=channels_last)

    def run(batch: np.ndarray, batch_size: int) -> np.ndarray:
        import numpy as np

        if len(batch) == 0:
            return np.zeros((0, CLASSES), np.float32)
        parts = [
            module_logits(module, batch[i : i + batch_size], dev)
            for i in range(0, len(batch), batch_size)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return LoadedModel(path, meta, f"{meta.model}, epoch {meta.epoch}", str(dev), module, run)


def module_logits(
    module: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    batch: np.ndarray,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """A PyTorch model's (N, 10) float32 logits for a (N, 1, 28, 28) batch of pixels / 255:
    standardised as in training (data.MEAN and data.STD), run under inference_mode."""
    import torch

    from mnistcli.data import standardise

    with torch.inference_mode():
        x = standardise(torch.from_numpy(batch).to(device))
        return module(x).float().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# PyTorch: a checkpoint or an export's weights in the model they belong to


def load_model(
    path: Path, device: torch.device | str = "cpu", *, channels_last: bool = False
) -> tuple[nn.Module, CheckpointMeta]:
    """A checkpoint's model, in eval mode on `device`, and its description; also reads the
    exports that hold weights (.safetensors with its sidecar, .onnx's initializers).

    `channels_last`: lay the weights out for fast CPU inference (eval, predict); the default
    standard layout is what export writes and inspect describes."""
    import torch

    from mnistcli.checkpoint import load_weights
    from mnistcli.errors import ConfigError
    from mnistcli.model import build_model

    checkpoint = load_checkpoint_or_export(path)
    try:
        model = build_model(checkpoint.meta.model)
    except ConfigError:
        raise CheckpointError(
            f"checkpoint {path} is for model '{checkpoint.meta.model}', which this "
            f"mnistcli does not know"
        ) from None
    load_weights(model, checkpoint.model_state, path)
    model.to(device).eval()
    if channels_last and torch.device(device).type == "cpu":
        # NHWC convolutions run about twice as fast on the CPU (10k test images, 2 cores:
        # 0.47 s instead of 0.99 s); the weights are only laid out differently.
        model.to(memory_format=torch.channels_last)
    return model, checkpoint.meta


def load_checkpoint_or_export(path: Path) -> Checkpoint:
    """checkpoint.load_checkpoint, or an export that holds weights (.safetensors with its
    sidecar, .onnx's initializers) read as a checkpoint. A .pt2 is refused:
    torch.export.load falls back to unpickling anything, so it could run code."""
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if path.suffix == ".onnx":
        return load_onnx(path)
    if path.suffix == ".pt2" or is_pt2_archive(path):
        raise pt2_refused(path)
    return load_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Exports read back: their metadata, and their weights as a Checkpoint


def read_export(text: str, path: Path, state: dict[str, Any]) -> Checkpoint:
    """The metadata an export carries (JSON) and its weights as a Checkpoint, validated as
    checkpoint.load_checkpoint validates one (no torch needed: `state` may be empty)."""
    try:
        stored = json.loads(text)
    except (ValueError, RecursionError):
        stored = None
    if not isinstance(stored, dict) or stored.get("format") != EXPORT_FORMAT:
        raise CheckpointError(
            f"{path} has no readable mnistcli export metadata; export the checkpoint again "
            f"with 'mnistcli export'"
        )
    version = stored.get("format_version")
    if isinstance(version, int) and version > EXPORT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was exported by a newer mnistcli (format {version}); upgrade mnistcli to "
            f"read it"
        )
    raw = {**stored, "format": FORMAT, "format_version": FORMAT_VERSION, "model_state": state}
    return Checkpoint.from_payload(raw, path)


def onnx_meta(model: OnnxModel) -> CheckpointMeta:
    """What the exported checkpoint said about its run (model, epoch, config, history...),
    from the metadata `mnistcli export` stored in the .onnx; read without torch."""
    text = model.metadata.get("mnistcli")
    if text is None:
        raise CheckpointError(
            f"{model.path} keeps the ONNX contract but was not written by 'mnistcli export' "
            f"(no 'mnistcli' metadata); export the checkpoint with mnistcli"
        )
    return read_export(text, model.path, {}).meta


def load_onnx(path: Path) -> Checkpoint:
    """An ONNX export as a checkpoint, its weights read from the graph's initializers
    (for inspect and --explain, which need the PyTorch model; OnnxModel runs the file itself)."""
    import onnx
    import torch
    from onnx import numpy_helper

    meta = onnx_meta(OnnxModel(path))  # the contract and the metadata, checked
    proto = onnx.load(str(path), load_external_data=False)
    prefix = "net."  # with_normalisation's attribute: initializers keep the state dict's names
    state = {
        init.name.removeprefix(prefix): torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in proto.graph.initializer
        if init.name.startswith(prefix)
    }
    return Checkpoint(meta, state)


def sidecar_path(weights: Path) -> Path:
    """model.safetensors -> model.safetensors.json (a name no run file can have)."""
    return weights.with_name(weights.name + ".json")


def load_safetensors(path: Path, sidecar: Path | None = None) -> Checkpoint:
    """A .safetensors export and its sidecar as a checkpoint.

    safetensors holds only tensors, so loading it cannot run code (like weights_only=True).
    """
    from safetensors.torch import load_file

    check_file(path)
    sidecar = sidecar or sidecar_path(path)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = "it is missing" if isinstance(exc, FileNotFoundError) else "it cannot be read"
        raise CheckpointError(
            f"{path} needs its sidecar {sidecar.name} (model, settings, labels), but {why}; "
            f"export the checkpoint again with 'mnistcli export --format safetensors'"
        ) from None
    read_export(text, sidecar, {})  # a bad sidecar is said before the weights are read
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ...
        detail = reason(str(exc))
        raise CheckpointError(
            f"cannot load {path}: it is truncated, corrupt or not a safetensors file ({detail})"
        ) from None
    return read_export(text, sidecar, state)
