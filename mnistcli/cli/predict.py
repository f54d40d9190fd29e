"""`mnistcli predict`: its options, the settings they make, the predictions, and their view."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from mnistcli.cli.options import (
    CheckpointOpt,
    ConfigOpt,
    DeviceOpt,
    RunsOpt,
    consoles,
    setting_flags,
    setting_option,
    settings_values,
    stderr_log,
)

PathsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="PATH...",
        help="Image files (PNG, JPEG, BMP, GIF, TIFF, WebP), folders (their images) or "
        "globs such as 'scans/*.png'.",
        show_default=False,
    ),
]
TopKOpt = Annotated[
    int | None,
    setting_option("predict.top_k", "-k", help="Most likely digits to list (1-10)."),
]
ShowOpt = Annotated[bool, typer.Option("--show", help="Also draw the 28x28 input the model saw.")]
ExplainOpt = Annotated[
    bool,
    typer.Option(
        "--explain",
        help="Also show which pixels decided: the input beside its saliency (integrated "
        'gradients of the predicted digit); --json adds "saliency", 28x28.',
    ),
]
RawOpt = Annotated[
    bool,
    typer.Option(
        "--raw",
        help="No preprocessing: for images that already are MNIST-style 28x28 digits "
        "(bright ink on black).",
    ),
]
AsJsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON object per image, one per line (path, status, digit, "
        "probability, top_k, error), nothing else.",
    ),
]


def predict(
    paths: PathsArg,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = None,
    top_k: TopKOpt = None,
    show: ShowOpt = False,
    explain: ExplainOpt = False,
    raw: RawOpt = False,
    runs_dir: RunsOpt = None,
    config: ConfigOpt = None,
    as_json: AsJsonOpt = False,
) -> None:
    """Read the digit in each image: a photo, a scan, a drawing or a screenshot.

    Each image is made like an MNIST digit: grayscale (transparency on white),
    inverted if the background is light, uneven lighting and contrast evened
    out (the lines of ruled or squared paper go black), cropped to the ink
    (specks ignored), scaled into 20x20 (a stroke far thinner or thicker than
    MNIST's brought back into its range) and centred by its centre of mass in
    28x28. A blank image says "no digit found". A file
    that cannot be read gets a one-line error, the others are still predicted,
    and the exit code is 1. --explain shows which pixels decided each digit.
    """
    from mnistcli.loading import open_model
    from mnistcli.predict import collect_paths, predict_paths
    from mnistcli.settings import predict_settings

    values = settings_values(setting_flags(predict, locals()), config)
    settings = predict_settings(values, checkpoint=checkpoint, raw=raw, explain=explain)
    cons = consoles()
    model = open_model(
        settings.checkpoint,
        settings.device,
        runs_dir=settings.runs_dir,
        need_module=settings.explain,
        channels_last=True,
        log=stderr_log(as_json, cons.err),
    )
    if not as_json:
        cons.err.print(
            f"model: {escape(str(model.path))} ({model.description}) on {model.device}",
            soft_wrap=True,
        )
    preds = []
    for pred in predict_paths(collect_paths(paths), model, top_k=settings.top_k, raw=settings.raw):
        if pred.error:
            cons.err.print(f"[bold red]error:[/] {escape(pred.error)}", soft_wrap=True)
        if as_json and not settings.explain:  # with --explain, once the saliency is known
            typer.echo(json.dumps(pred.to_dict()))
        preds.append(pred)
    explained = None
    if settings.explain and model.module is not None:
        from mnistcli.explain import explain_predictions

        explained = explain_predictions(model.module, preds, model.device)
    if as_json:
        for item in explained or []:
            typer.echo(json.dumps(item.to_dict()))
    else:
        from mnistcli.render.explain_view import print_predictions

        print_predictions(cons.out, preds, explained, show=show)
    if any(p.error for p in preds):
        raise typer.Exit(1)
