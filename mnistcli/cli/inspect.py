"""`mnistcli inspect`: its options, the settings they make, the description, and its view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mnistcli.cli.options import (
    ConfigOpt,
    JsonOpt,
    RunsOpt,
    consoles,
    setting_flags,
    setting_option,
    settings_values,
    stderr_log,
)
from mnistcli.config import default_text

ModelOpt = Annotated[
    str | None,
    setting_option(
        "train.model",
        "-m",
        metavar="NAME",
        help="Model to describe, by name.",
        default=f"train.model, {default_text('train.model')}",
    ),
]
CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        metavar="PATH",
        help="A checkpoint file, a run folder (its best.pt) or 'latest'. "
        "\\[default: the latest run's best.pt when there is one]",
        show_default=False,
    ),
]
BatchSizeOpt = Annotated[
    int | None,
    setting_option(
        "train.batch_size",
        "-b",
        help="Batch for the activation memory figure.",
        default=f"train.batch_size, {default_text('train.batch_size')}",
    ),
]
ImageOpt = Annotated[
    Path | None,
    typer.Option(
        "--image",
        metavar="IMAGE",
        help="Also show what every layer outputs for this image (feature maps, the first "
        "convolution's filters, hidden units, logits); needs a trained checkpoint.",
        show_default=False,
    ),
]
LayerOpt = Annotated[
    str | None,
    typer.Option(
        "--layer",
        metavar="NAME",
        help="With --image: show only this layer's output (a name from the layer table, "
        "such as features.0).",
        show_default=False,
    ),
]
RawOpt = Annotated[
    bool, typer.Option("--raw", help="Take --image as is: a 28x28 MNIST-style digit.")
]
OutDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--out-dir",
        metavar="DIR",
        help="With --image: write feature_maps.png and filters.png into DIR.",
        show_default=False,
    ),
]


def inspect_model(
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    batch_size: BatchSizeOpt = None,
    image: ImageOpt = None,
    layer: LayerOpt = None,
    raw: RawOpt = False,
    save: OutDirOpt = None,
    runs_dir: RunsOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show each layer's output shape, parameters and MACs for one (N, 1, 28, 28) input.

    Then the totals (parameters, MACs per image, parameter and activation memory), the output
    size formula worked for each conv and pool layer, and what the checkpoint holds: when and
    how it was trained, its accuracy and data checksums, and whether its weights load.
    With --image, also what every layer outputs for that image: feature maps, the first
    convolution's filters, the hidden units and the logits (--out-dir DIR: the same as PNGs).
    """
    from mnistcli.render.inspect_view import print_inspection, print_warnings, print_written
    from mnistcli.settings import inspect_settings
    from mnistcli.summary import inspect_model as describe_model

    values = settings_values(setting_flags(inspect_model, locals()), config)
    settings = inspect_settings(
        values, checkpoint=checkpoint, image=image, raw=raw, save=save, layer=layer
    )
    cons = consoles()
    found = describe_model(settings, log=stderr_log(as_json, cons.err))
    print_warnings(cons.err, found)
    saved: list[Path] = []
    if found.activations is not None and settings.save is not None:
        from mnistcli.render.feature_figures import save_feature_figures

        saved = save_feature_figures(found.activations, settings.save)
    if as_json:
        typer.echo(json.dumps(found.to_dict(saved), indent=2))
    else:
        print_inspection(cons.out, found)
    print_written(cons.err, saved)
