"""What `mnistcli draw` computes, without the screen: the model the app reads drawings with, one
reading of the canvas, the saliency and the layer outputs for a reading, and MNIST test digits
to put on the canvas.

A drawing is read the way `mnistcli predict` reads a file: the canvas as a dark-on-white image
through imaging.preprocess (crop to the ink, 20 px box, centre of mass), then the model. With an
.onnx model the reading runs on onnxruntime and never imports torch; the saliency and the layer
outputs need the PyTorch module, whose weights are loaded on first use (as `predict --explain`
does with an .onnx file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mnistcli.imaging import preprocess

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn

    from mnistcli.explain import Activations


class DrawModel:
    """The one place the draw app reaches a model: a reading of a prepared image and, on
    demand, the PyTorch module. (Kept to this small surface so that it can be pointed at the
    project's single model loader without touching the app.)

    `threads` sets torch's CPU threads (for the whole process) once torch is in use: the app
    asks for 1, since it runs one 28x28 image at a time, where a second thread only adds
    synchronisation, and on a busy 2-core machine waiting for it cost 90 ms a reading instead
    of 0.3 ms (bench/README.md, draw latency)."""

    def __init__(self, path: Path, device: str, *, threads: int | None = None) -> None:
        from mnistcli.loading import open_model

        self.path = path
        self._device = device
        self._threads = threads
        loaded = open_model(path, device, channels_last=True)
        if loaded.module is not None:
            self._set_threads()
        self.backend = loaded.logits
        self.description = loaded.description  # "simplecnn, epoch 9"
        self.where = loaded.device  # "cpu", "cpu (onnxruntime)"
        self._module: nn.Module | None = loaded.module
        self._module_device = loaded.device

    def read(self, image: np.ndarray) -> np.ndarray:
        """(28, 28) float32 in [0, 1], bright ink on black -> the ten probabilities (float64)."""
        from mnistcli.predict import softmax

        batch = np.ascontiguousarray(image, dtype=np.float32)[None, None]
        return softmax(self.backend(batch))[0]

    def module(self) -> nn.Module:
        """The PyTorch module (for gradients and layer outputs); an export's weights are loaded
        into PyTorch the first time this is asked."""
        if self._module is None:
            from mnistcli.loading import open_model

            loaded = open_model(self.path, self._device, need_module=True)
            self._module, self._module_device = loaded.module, loaded.device
            self._set_threads()
        assert self._module is not None
        return self._module

    def _set_threads(self) -> None:
        if self._threads is not None:
            import torch

            torch.set_num_threads(self._threads)

    @property
    def module_device(self) -> str:
        return self._module_device


@dataclass(frozen=True)
class Reading:
    """What the model made of the drawing: the 28x28 input it saw and its probabilities
    (None when no digit was found: a blank canvas, or too little ink)."""

    pixels: np.ndarray  # (28, 28) uint8, bright ink on black
    probabilities: np.ndarray | None  # (10,) float64

    @property
    def blank(self) -> bool:
        return self.probabilities is None

    @property
    def digit(self) -> int | None:
        return None if self.probabilities is None else int(np.argmax(self.probabilities))


def read_drawing(model: DrawModel, image: Image.Image) -> Reading:
    """A drawing (dark ink on white, as canvas.Canvas.to_image gives it) read as predict reads
    a file: imaging.preprocess, then the model unless no digit was found."""
    prepared = preprocess(image)
    if prepared.blank:
        return Reading(prepared.pixels, None)
    return Reading(prepared.pixels, model.read(prepared.image))


def saliency(model: DrawModel, reading: Reading) -> np.ndarray:
    """(28, 28) float32 >= 0: how much each input pixel spoke for the top digit (integrated
    gradients, explain.saliency_maps); zeros when no digit was found."""
    if reading.digit is None:
        return np.zeros((28, 28), dtype=np.float32)
    from mnistcli.explain import saliency_maps

    module = model.module()
    maps = saliency_maps(module, [reading.pixels], [reading.digit], model.module_device)
    return maps[0].numpy()


def activations(model: DrawModel, reading: Reading) -> Activations:
    """Every layer's output for the input the model saw (explain.capture_activations)."""
    from mnistcli.explain import capture_activations

    return capture_activations(model.module(), np.ascontiguousarray(reading.pixels))


INK_LEVEL = 0.3  # a pixel this bright (of full ink) counts when the ink's extent is measured


def _extent(ink: np.ndarray) -> tuple[float, float, float, float] | None:
    """(top, left, bottom, right) of the pixels at INK_LEVEL or more; None without ink."""
    rows = np.flatnonzero((ink >= INK_LEVEL).any(axis=1))
    cols = np.flatnonzero((ink >= INK_LEVEL).any(axis=0))
    if rows.size == 0:
        return None
    return float(rows[0]), float(cols[0]), float(rows[-1] + 1), float(cols[-1] + 1)


def to_canvas(values: np.ndarray, reading: Reading, ink: np.ndarray) -> np.ndarray:
    """A (28, 28) map over the model's input (a saliency) laid back over the drawing: (side,
    side), zero off the drawing's ink.

    Preprocessing scaled the ink's bounding box into the 20 px box and moved it by its centre of
    mass; the two boxes, measured on the drawing and on the input, give that scale and shift
    back. Approximate by up to a pixel of the input (stroke widths are evened out too): enough
    to show where on the drawing the model looked.
    """
    side = ink.shape[0]
    drawn, seen = _extent(ink), _extent(reading.pixels.astype(np.float32) / 255.0)
    if drawn is None or seen is None:
        return np.zeros_like(ink, dtype=np.float32)
    scale = max(seen[2] - seen[0], seen[3] - seen[1]) / max(
        drawn[2] - drawn[0], drawn[3] - drawn[1]
    )
    middle = np.arange(side, dtype=np.float32) + 0.5  # canvas pixel centres
    # the boxes' centres matched: a stroke thickened or thinned by preprocessing stays centred
    rows = np.floor((seen[0] + seen[2]) / 2 + (middle - (drawn[0] + drawn[2]) / 2) * scale)
    cols = np.floor((seen[1] + seen[3]) / 2 + (middle - (drawn[1] + drawn[3]) / 2) * scale)
    rows, cols = rows.astype(int), cols.astype(int)
    out = values[np.clip(rows, 0, 27)][:, np.clip(cols, 0, 27)].astype(np.float32)
    out[(rows < 0) | (rows > 27), :] = 0
    out[:, (cols < 0) | (cols > 27)] = 0
    return np.where(ink > 0, out, np.float32(0.0))  # on the drawing's own ink only


class MnistDigits:
    """The MNIST test digits, loaded on first use (from the cache, or the configured mirrors:
    slow the first time), to put one on the canvas beside one's own strokes."""

    def __init__(self, root: Path, mirrors: Sequence[str], seed: int | None = None) -> None:
        self.root = root
        self.mirrors = list(mirrors)
        self._rng = np.random.default_rng(seed)
        self._images: np.ndarray | None = None  # (10000, 28, 28) uint8
        self._labels: np.ndarray | None = None

    @property
    def loaded(self) -> bool:
        return self._images is not None

    def load(self) -> None:
        """Fetch, verify and parse MNIST (data.load_mnist; it imports torch)."""
        if self._images is None:
            from mnistcli.data import load_mnist

            mnist = load_mnist(self.root, self.mirrors)
            self._labels = mnist.test_labels.numpy()
            self._images = mnist.test_images.numpy()

    def pick(self) -> tuple[np.ndarray, int, int]:
        """A random test digit: its (28, 28) uint8 pixels, its label and its index."""
        self.load()
        assert self._images is not None and self._labels is not None
        index = int(self._rng.integers(len(self._images)))
        return self._images[index], int(self._labels[index]), index
