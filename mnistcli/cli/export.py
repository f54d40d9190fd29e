"""`mnistcli export`: its options, the settings they make, the export and its self-check."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer

from mnistcli.cli.options import (
    CheckpointOpt,
    ConfigOpt,
    DataOpt,
    DataRootOpt,
    JsonOpt,
    RunsOpt,
    consoles,
    setting_flags,
    setting_option,
    settings_values,
    stderr_log,
)
from mnistcli.config import EXPORT_FORMATS
from mnistcli.render.console import say

ExportFormat = enum.Enum("ExportFormat", {f: f for f in EXPORT_FORMATS}, type=str)  # type: ignore[misc]

FormatOpt = Annotated[
    ExportFormat | None,
    setting_option(
        "export.format",
        "-f",
        metavar="FORMAT",
        help="onnx (onnxruntime, any language), safetensors (weights plus a JSON sidecar) "
        "or pt2 (torch.export); with --out, its suffix names the format.",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        metavar="FILE",
        help="File to write; its suffix (.onnx, .safetensors, .pt2) names the format, and "
        "missing folders are made. \\[default: model.onnx, .safetensors or .pt2 next to the "
        "checkpoint]",
        show_default=False,
    ),
]
CheckImagesOpt = Annotated[
    int | None,
    setting_option(
        "export.check_images",
        metavar="N",
        help="Test digits the self-check runs (the first N; 0 for all).",
    ),
]


def export_cmd(
    checkpoint: CheckpointOpt = None,
    fmt: FormatOpt = None,
    out: OutOpt = None,
    check_images: CheckImagesOpt = None,
    runs_dir: RunsOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a checkpoint for use without mnistcli: ONNX, safetensors or torch.export.

    The model's input is (N, 1, 28, 28) float32 pixels / 255, bright ink on black, with the
    training normalisation inside; its output is (N, 10) logits. Before it reports success the
    written file is run on the MNIST test digits against the PyTorch model: every logit within
    1e-4 and every predicted digit the same, or it fails and leaves no file.
    """
    from mnistcli.config import Setting
    from mnistcli.export import export_checkpoint, export_format
    from mnistcli.render.export_view import ExportProgressView, export_lines
    from mnistcli.settings import export_settings

    values = settings_values(setting_flags(export_cmd, locals()), config, data)
    asked = values["export.format"]
    values["export.format"] = Setting(export_format(out, asked), asked.source)
    settings = export_settings(values, checkpoint=checkpoint, out=out)
    cons = consoles()
    with ExportProgressView(cons.err) as progress:
        result = export_checkpoint(
            settings, log=stderr_log(as_json, cons.err), on_progress=progress
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        say(cons.out, export_lines(result))
