"""`mnistcli draw`: its options, the model and MNIST digits it needs, and the Textual app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mnistcli.cli.options import (
    CheckpointOpt,
    ConfigOpt,
    DataOpt,
    DataRootOpt,
    DeviceOpt,
    RunsOpt,
    setting_flags,
    settings_values,
)

SaveToOpt = Annotated[
    Path | None,
    typer.Option(
        "--save-to",
        metavar="DIR",
        help="Keep drawings: a digit key 0-9 saves the canvas as DIR/DIGIT/NNNN.png (dark ink "
        "on white, numbered, never overwritten) and clears it for the next one.",
        show_default=False,
    ),
]


def draw(
    checkpoint: CheckpointOpt = None,
    save_to: SaveToOpt = None,
    device: DeviceOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    runs_dir: RunsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Draw a digit with the mouse and watch the network read it, live.

    A full-screen app: left button draws, right button erases, [ and ] change the brush,
    u undoes a stroke, c clears, q quits (every key is listed at the bottom). As you draw,
    the drawing goes through predict's preprocessing and the model: the 28x28 input it saw
    and the ten probabilities are shown. s overlays the saliency of the top digit on the
    drawing, f shows a layer's feature maps (l: the next layer), r puts a random MNIST
    test digit on the canvas. With an .onnx model the reading runs on onnxruntime; s and f
    load its weights into PyTorch on first use.
    """
    from mnistcli.draw import MnistDigits
    from mnistcli.render.draw_app import run_draw
    from mnistcli.runs import resolve_checkpoint
    from mnistcli.settings import data_settings, predict_settings

    values = settings_values(setting_flags(draw, locals()), config, data)
    settings = predict_settings(values, checkpoint=checkpoint)
    found = data_settings(values)
    path = resolve_checkpoint(settings.checkpoint, settings.runs_dir)
    digits = MnistDigits(found.root, found.mirrors)
    run_draw(path, settings.device, save_to=save_to, digits=digits)
