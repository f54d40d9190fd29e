"""`mnistcli eval`: its options, the settings they make, the evaluation, and its report."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mnistcli.cli.options import (
    CheckpointOpt,
    ConfigOpt,
    DataOpt,
    DataRootOpt,
    DeviceOpt,
    JsonOpt,
    RunsOpt,
    consoles,
    setting_flags,
    setting_option,
    settings_values,
    stderr_log,
)
from mnistcli.errors import ImageError, InputError
from mnistcli.render.console import say

if TYPE_CHECKING:
    from mnistcli.config import Setting
    from mnistcli.labelled import ImagesReport
    from mnistcli.metrics import EvalReport
    from mnistcli.render.console import Consoles
    from mnistcli.settings import EvalSettings


class EvalSplit(enum.StrEnum):
    test = "test"
    val = "val"


SplitOpt = Annotated[
    EvalSplit | None,
    typer.Option(
        "--split",
        metavar="SPLIT",
        help="test: the 10,000 test images; val: the validation images held out from training "
        "(the same seed and size as the checkpoint's run). \\[default: test]",
        show_default=False,
    ),
]
BatchSizeOpt = Annotated[
    int | None, setting_option("eval.batch_size", "-b", help="Images per forward pass.")
]
PairsOpt = Annotated[
    int | None, setting_option("eval.pairs", help="Most confused pairs to list; 0 for none.")
]
GalleryOpt = Annotated[
    int | None,
    setting_option(
        "eval.gallery",
        help="Misclassified digits to draw (the most confident first); 0 for none.",
    ),
]
OutDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--out-dir",
        metavar="DIR",
        help="Folder for confusion_matrix.png, misclassified.png and eval.json. "
        "\\[default: the checkpoint's run folder]",
        show_default=False,
    ),
]
NoSaveOpt = Annotated[bool, typer.Option("--no-save", help="Write no files.")]
ImagesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--images",
        metavar="PATH",
        help="Score your own labelled images instead of MNIST: a folder with one folder per "
        "digit (DIR/0/*.png ... DIR/9/*.png), or files, folders and quoted globs labelled by "
        "the digit folder they are in, or - for paths on standard input; repeat for more. "
        "Each image is prepared exactly as predict prepares it.",
        show_default=False,
    ),
]
LabelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        metavar="FILE",
        help="A CSV or TSV file with 'path' and 'label' columns giving each image's digit "
        "(paths relative to the file); its rows are the images unless --images is given.",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None,
    setting_option(
        "predict.workers",
        "-j",
        help="With --images: processes that read and prepare the images; 1 for this process "
        "alone, 0 for one per core.",
    ),
]


def eval_model(
    checkpoint: CheckpointOpt = None,
    split: SplitOpt = None,
    device: DeviceOpt = None,
    batch_size: BatchSizeOpt = None,
    pairs: PairsOpt = None,
    gallery: GalleryOpt = None,
    save: OutDirOpt = None,
    no_save: NoSaveOpt = False,
    runs_dir: RunsOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    images: ImagesOpt = None,
    labels: LabelsOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Evaluate a checkpoint on MNIST: accuracy with a 95% interval, confusion matrix, per-class
    precision/recall/F1, the most confused pairs and a gallery of mistakes drawn in the terminal.

    Also writes confusion_matrix.png, misclassified.png and eval.json (with --split val:
    *_val.png and eval_val.json; with --images: *_images.png and eval_images.json) into the
    run folder, or --out-dir DIR.

    With --images (or --labels) it scores your own labelled images: "no digit found" counts
    as wrong, unreadable files are listed and left out of the figures.
    """
    from mnistcli.metrics import evaluate_checkpoint
    from mnistcli.render.progress_view import task_progress
    from mnistcli.settings import eval_settings

    if split is not None and (images or labels is not None):
        given = "--images" if images else "--labels"
        raise InputError(
            f"--split chooses an MNIST split; {given} scores your images: leave one out"
        )
    values = settings_values(setting_flags(eval_model, locals()), config, data)
    settings = eval_settings(
        values,
        checkpoint=checkpoint,
        split=(split or EvalSplit.test).value,
        save=save,
        write_files=not no_save,
    )
    cons = consoles()
    if images or labels is not None:
        _eval_images(settings, values, images or [], labels, cons, as_json=as_json)
        return
    # progress on stderr whenever it is a terminal, --json or not: stdout holds the results
    with task_progress(cons.err) as progress:
        report = evaluate_checkpoint(
            settings,
            log=stderr_log(as_json, cons.err),
            on_data=progress.data,
            on_progress=progress.scoring,
        )
    _report(report, settings, cons, as_json=as_json)


def _eval_images(
    settings: EvalSettings,
    values: dict[str, Setting],
    images: list[str],
    labels: Path | None,
    cons: Consoles,
    *,
    as_json: bool,
) -> None:
    """eval --images: the layout checked before torch loads, the images prepared on every core
    while it does, eval's report on them, the files left out listed on stderr."""
    import sys

    from rich.markup import escape

    from mnistcli.labelled import ImagesReport, collect_labelled, evaluate_images
    from mnistcli.loading import open_model
    from mnistcli.predict import ImageFeed, default_workers
    from mnistcli.render.predict_view import files_progress

    labelled = collect_labelled(images, labels, stdin=sys.stdin if "-" in images else None)
    for line in labelled.warnings:
        say(cons.err, f"[yellow]warning:[/] {escape(line)}")
    if not labelled.items:
        raise InputError(f"no images to score in {labelled.source or 'standard input'}")
    if all(isinstance(item, ImageError) for item in labelled.items):
        if len(labelled.items) == 1:  # its own line says it all
            raise InputError(str(labelled.items[0]))
        for item in labelled.items:
            say(cons.err, f"[bold red]error:[/] {escape(str(item))}")
        raise InputError(f"none of the {len(labelled.items):,} images can be scored")
    workers = values["predict.workers"].value or default_workers()
    with (
        ImageFeed(labelled.items, workers=workers) as feed,
        files_progress(cons.err, len(labelled.items)) as progress,
    ):
        model = open_model(
            settings.checkpoint,
            settings.device,
            runs_dir=settings.runs_dir,
            channels_last=True,
            threads=feed.model_threads(),
        )
        progress.phase("scoring", len(labelled.items))
        evaluation, left_out = evaluate_images(
            labelled,
            feed,
            model,
            top=settings.pairs,
            gallery=settings.gallery,
            batch_size=settings.batch_size,
            on_prediction=lambda _pred: progress.advance(),
        )
    report = ImagesReport(
        checkpoint=model.path,
        model=model.description,
        device=model.device,
        source=labelled.source,
        evaluation=evaluation,
        left_out=left_out,
        warnings=tuple(labelled.warnings),
    )
    for line in left_out:
        say(cons.err, f"[yellow]left out:[/] {escape(line)}")
    if not evaluation.n:  # every file unreadable: a report of nothing would replace a real one
        raise InputError(f"none of the {len(labelled.items):,} images can be scored")
    _report(report, settings, cons, as_json=as_json)


def _report(
    report: EvalReport | ImagesReport, settings: EvalSettings, cons: Consoles, *, as_json: bool
) -> None:
    """Either report (MNIST's or your images'): its files written unless --no-save, then the
    JSON document on stdout, or the report drawn."""
    from mnistcli.labelled import ImagesReport
    from mnistcli.render.eval_figures import save_eval_files
    from mnistcli.render.eval_view import print_eval, print_images_eval

    saved: list[Path] = []
    if settings.write_files:
        saved = save_eval_files(report, settings.save or report.checkpoint.parent)
    if as_json:
        typer.echo(json.dumps(report.to_dict(saved), indent=2))
    elif isinstance(report, ImagesReport):
        print_images_eval(cons.out, report, saved, top=settings.pairs, gallery=settings.gallery)
    else:
        print_eval(cons.out, cons.err, report, saved, top=settings.pairs, gallery=settings.gallery)
