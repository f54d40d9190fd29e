"""`mnistcli eval`: its options, the settings they make, the evaluation, and its report."""

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
    DeviceOpt,
    JsonOpt,
    RunsOpt,
    consoles,
    setting_flags,
    setting_option,
    settings_values,
    stderr_log,
)


class EvalSplit(enum.StrEnum):
    test = "test"
    val = "val"


SplitOpt = Annotated[
    EvalSplit,
    typer.Option(
        "--split",
        metavar="SPLIT",
        help="test: the 10,000 test images; val: the validation images held out from training "
        "(the same seed and size as the checkpoint's run).",
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


def eval_model(
    checkpoint: CheckpointOpt = None,
    split: SplitOpt = EvalSplit.test,
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
) -> None:
    """Evaluate a checkpoint on MNIST: accuracy with a 95% interval, confusion matrix, per-class
    precision/recall/F1, the most confused pairs and a gallery of mistakes drawn in the terminal.

    Also writes confusion_matrix.png, misclassified.png and eval.json (with --split val:
    *_val.png and eval_val.json) into the run folder, or --out-dir DIR.
    """
    from mnistcli.metrics import evaluate_checkpoint
    from mnistcli.render.eval_figures import save_eval_files
    from mnistcli.render.eval_view import print_eval
    from mnistcli.render.progress_view import task_progress
    from mnistcli.settings import eval_settings

    values = settings_values(setting_flags(eval_model, locals()), config, data)
    settings = eval_settings(
        values, checkpoint=checkpoint, split=split.value, save=save, write_files=not no_save
    )
    cons = consoles()
    # progress on stderr whenever it is a terminal, --json or not: stdout holds the results
    with task_progress(cons.err) as progress:
        report = evaluate_checkpoint(
            settings,
            log=stderr_log(as_json, cons.err),
            on_data=progress.data,
            on_progress=progress.scoring,
        )
    saved: list[Path] = []
    if settings.write_files:
        saved = save_eval_files(report, settings.save or report.checkpoint.parent)
    if as_json:
        typer.echo(json.dumps(report.to_dict(saved), indent=2))
    else:
        print_eval(cons.out, cons.err, report, saved, top=settings.top, gallery=settings.gallery)
