"""Running an ONNX export without torch: the contract every mnistcli export keeps, and the
model run by onnxruntime on the CPU.

The contract: one input `image`, (N, 1, 28, 28) float32, pixel values / 255, bright ink on
black (MNIST's form), and one output `logits`, (N, 10) float32; the training normalisation is
inside the model. This module imports onnxruntime and numpy only, never torch, so `predict` on
an .onnx file starts in a fraction of torch's import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistcli.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import numpy as np

INPUT, OUTPUT = "image", "logits"  # the ONNX contract's names
SIDE, CLASSES = 28, 10
LABELS = tuple(str(d) for d in range(CLASSES))  # logit i is the digit i


def is_onnx(path: Path) -> bool:
    """Whether `path` names an ONNX model (which runs on onnxruntime, not PyTorch)."""
    return path.suffix.lower() == ".onnx"


def open_onnx(path: Path, device: str, *, threads: int = 0) -> OnnxModel:
    """An ONNX model for eval or predict: onnxruntime's CPU provider, so a GPU is refused."""
    if device not in ("auto", "cpu"):
        raise ConfigError(
            f"--device {device}: an .onnx model runs on onnxruntime's CPU provider here; "
            f"leave --device out, or use the .pt checkpoint on the GPU"
        )
    return OnnxModel(path, threads=threads)


class OnnxModel:
    """An ONNX model that keeps the contract, run by onnxruntime on the CPU.

    `model(images)` maps (N, 1, 28, 28) float32 pixels / 255 to (N, 10) float32 logits, both
    numpy arrays. Anything that breaks the contract is refused with a one-line CheckpointError.
    `metadata` holds the model's properties (what `mnistcli export` stored; see
    loading.onnx_meta).
    """

    def __init__(self, path: Path, *, threads: int = 0) -> None:
        import onnxruntime as ort

        check_file(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings would clutter stderr
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types for every bad file
            detail = " ".join(str(exc).split())[:120]
            raise CheckpointError(
                f"cannot load {path}: it is truncated, corrupt or not an ONNX model ({detail})"
            ) from None
        self.path = path
        _check_contract(self.session, path)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import numpy as np

        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (1, SIDE, SIDE):
            raise ValueError(f"expected (N, 1, {SIDE}, {SIDE}) images, got {x.shape}")
        try:
            (logits,) = self.session.run([OUTPUT], {INPUT: x})
        except Exception as exc:
            detail = " ".join(str(exc).split())[:160]
            raise CheckpointError(f"{self.path} failed to run: {detail}") from None
        if logits.shape != (x.shape[0], CLASSES) or logits.dtype != np.float32:
            raise CheckpointError(
                f"{self.path} breaks mnistcli's ONNX contract: it returned {logits.dtype} "
                f"logits of shape {logits.shape} for {x.shape[0]} images, not ({x.shape[0]}, 10)"
            )
        return logits

    def logits(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """(N, 10) logits for (N, 1, 28, 28) inputs, in batches."""
        import numpy as np

        if len(images) == 0:
            return np.zeros((0, CLASSES), np.float32)
        parts = [self(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(parts)


def check_file(path: Path) -> None:
    """A model file must exist and not be a folder (said before any library reads it)."""
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist; write one with 'mnistcli export'")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a model file such as {path}/model.onnx")


def _check_contract(session: Any, path: Path) -> None:
    """Exactly one input `image` float32 (batch, 1, 28, 28), one output `logits` (batch, 10)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()

    def shape(arg: Any) -> str:
        return f"'{arg.name}' {arg.type} {list(arg.shape)}"

    def dynamic(dim: Any) -> bool:
        return not isinstance(dim, int)

    ok = (
        len(inputs) == 1
        and len(outputs) == 1
        and inputs[0].name == INPUT
        and inputs[0].type == "tensor(float)"
        and len(inputs[0].shape) == 4
        and dynamic(inputs[0].shape[0])
        and list(inputs[0].shape[1:]) == [1, SIDE, SIDE]
        and outputs[0].name == OUTPUT
        and outputs[0].type == "tensor(float)"
        and len(outputs[0].shape) == 2
        and outputs[0].shape[1] == CLASSES
    )
    if not ok:
        got = ", ".join(shape(a) for a in inputs) + " -> " + ", ".join(shape(a) for a in outputs)
        raise CheckpointError(
            f"{path} breaks mnistcli's ONNX contract (one input 'image' float32 [N, 1, 28, 28] "
            f"with a dynamic N, one output 'logits' [N, 10]); it has {got}"
        )
