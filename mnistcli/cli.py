"""The command line: options -> settings -> core call -> rendering.

This is the one place that catches the project's errors: it prints one line on stderr and sets
the exit code (2 for bad input or environment, 1 when some predictions failed, 130 when
interrupted). torch is imported only inside the commands that need it, so `--help` is instant.
"""

from __future__ import annotations

import enum
import functools
import importlib.abc
import importlib.util
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from mnistcli import __version__
from mnistcli.config import EXPORT_FORMATS, PRECISIONS, RECIPES, Setting, default_text, resolve
from mnistcli.errors import ConfigError, DataError, MnistcliError

app = typer.Typer(
    name="mnistcli",
    help="Train, evaluate, inspect and run a small CNN for handwritten digits (MNIST).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

Recipe = enum.Enum("Recipe", {name: name for name in RECIPES}, type=str)  # type: ignore[misc]
Precision = enum.Enum("Precision", {p: p for p in PRECISIONS}, type=str)  # type: ignore[misc]
ExportFormat = enum.Enum("ExportFormat", {f: f for f in EXPORT_FORMATS}, type=str)  # type: ignore[misc]

Command = TypeVar("Command", bound=Callable[..., Any])


class GlobalOptions:
    """Options given before the command, set by the app callback before any command runs."""

    no_color = False


def _err_console():
    from mnistcli.render.console import make_consoles

    return make_consoles(no_color=GlobalOptions.no_color).err


def consoles(*, plain: bool = False):
    """The stdout and stderr consoles, honouring --no-color (and --plain for train)."""
    from mnistcli.render.console import make_consoles

    return make_consoles(no_color=GlobalOptions.no_color, plain=plain)


def default(key: str) -> str:
    """' \\[default: N]' for a help text, from config.SCHEMA (escaped for rich markup)."""
    return f" \\[default: {default_text(key)}]"


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` as one line on stderr; return the Exit to raise."""
    _err_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def handles_errors(func: Command) -> Command:
    """Turn the project's errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MnistcliError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except BrokenPipeError:  # `mnistcli ... | head`: the reader left; nothing to report
            sys.stderr = None  # type: ignore[assignment]
            raise typer.Exit(1) from None
        except OSError as exc:  # the last net: a file the system refused, on one line
            where = f"{exc.filename}: " if exc.filename else ""
            message = f"{where}{exc.strerror or exc}; check the path and its permissions"
            raise fail(message, 1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mnistcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="No colour and no live redraw (as with NO_COLOR=1).")
    ] = False,
) -> None:
    """mnistcli: train, eval, predict and inspect, sharing one model and one trainer."""
    GlobalOptions.no_color = no_color


# Options shared by several commands ---------------------------------------------------------
# Help texts take their defaults from config.SCHEMA through default(); never type one here.

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file to use instead of ./.mnistcli.toml.", show_default=False
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        "-d",
        metavar="auto|cpu|cuda|cuda:N|mps",
        help="Where to run." + default("device"),
        show_default=False,
    ),
]
RunsOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Folder that holds the run folders." + default("runs_dir"),
        show_default=False,
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="A folder holding the four MNIST files (.gz or not), tried before the "
        "configured mirrors.",
        show_default=False,
    ),
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Cache folder for the verified MNIST files." + default("data.root"),
        show_default=False,
    ),
]
CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        metavar="PATH",
        help="A checkpoint file, a run folder (its best.pt) or 'latest'. "
        "\\[default: the latest run's best.pt]",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout, nothing else.")
]


def settings_values(
    flags: dict[str, Any], config: Path | None, data: Path | None = None
) -> dict[str, Setting]:
    """Resolve every layer; `--data DIR` is put in front of the configured mirrors."""
    values = resolve(flags, config=config)
    if data is not None and not data.is_dir():
        raise DataError(
            f"--data {data}: no such folder; pass the folder that holds the four MNIST files"
        )
    if data is not None:
        mirrors = [str(data.resolve()), *list(values["data.mirrors"].value)]
        values["data.mirrors"] = Setting(mirrors, "--data")
    return values


def load_data(values: dict[str, Setting], log: Callable[[str], None]):
    from mnistcli.data import load_mnist

    return load_mnist(values["data.root"].value, values["data.mirrors"].value, on_message=log)


def stderr_log(quiet: bool, err) -> Callable[[str], None]:
    """Messages (downloads, notes) on stderr, or nowhere with --quiet/--json."""
    return (lambda _m: None) if quiet else (lambda m: err.print(escape(m)))


class StopFlag:
    """SIGINT/SIGTERM ask the trainer to stop after the current batch; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def handler(self, signum: int, _frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> None:
        signal.signal(signal.SIGINT, self.handler)
        signal.signal(signal.SIGTERM, self.handler)


# mnistcli train ------------------------------------------------------------------------------


TrainEpochsOpt = Annotated[
    int | None,
    typer.Option(help="Most epochs to run." + default("train.epochs"), show_default=False),
]
TrainPatienceOpt = Annotated[
    int | None,
    typer.Option(
        help="Stop after this many epochs without a better validation accuracy; 0 never "
        "stops early." + default("train.patience"),
        show_default=False,
    ),
]
TrainBatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        "-b",
        help="Images per step." + default("train.batch_size"),
        show_default=False,
    ),
]
TrainLrOpt = Annotated[
    float | None,
    typer.Option(
        help="Adam learning rate (peak rate with the one-cycle schedule)." + default("train.lr"),
        show_default=False,
    ),
]
TrainSeedOpt = Annotated[
    int | None,
    typer.Option(
        help="Seed for weights, split, shuffling and dropout." + default("train.seed"),
        show_default=False,
    ),
]
TrainValSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--val-size",
        help="Training images held out for validation (early stopping and "
        "model selection)." + default("data.val_size"),
        show_default=False,
    ),
]
TrainLimitOpt = Annotated[
    int | None,
    typer.Option(
        help="Train on only this many images (quick runs); 0 for all." + default("train.limit"),
        show_default=False,
    ),
]
TrainRecipeOpt = Annotated[
    Recipe | None,
    typer.Option(
        help="Named hyper-parameter set: 'reference' (Adam 1e-3, batch 64), 'fast' "
        "(one-cycle, larger batches, small shifts) or 'best' (40 epochs of random affine "
        "warps, label smoothing)." + default("train.recipe"),
        show_default=False,
    ),
]
TrainPrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        help="fp32, or bf16 autocast (mixed precision), or auto: bf16 where the hardware "
        "runs it natively (AVX512-BF16/AMX CPUs, recent GPUs). \\[default: "
        f"{default_text('train.precision')}; {RECIPES['fast']['precision']} with the fast "
        "and best recipes]",
        show_default=False,
    ),
]
TrainThreadsOpt = Annotated[
    int | None,
    typer.Option(
        help="CPU threads for torch; 0 lets torch choose." + default("train.threads"),
        show_default=False,
    ),
]
TrainCompileModelOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the training step (worth it on a GPU; compiling takes a while).",
    ),
]
TrainNameOpt = Annotated[
    str | None,
    typer.Option(
        help="Run folder name under --out. \\[default: the date and time]", show_default=False
    ),
]
TrainResumeOpt = Annotated[
    str | None,
    typer.Option(
        help="Continue a run: its folder, its last.pt, or 'latest'.",
        show_default=False,
        metavar="RUN",
    ),
]
TrainQuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary.")]
TrainPlainOpt = Annotated[
    bool, typer.Option(help="Plain lines, one per epoch, even on a terminal.")
]


@app.command()
@handles_errors
def train(
    device: DeviceOpt = None,
    epochs: TrainEpochsOpt = None,
    patience: TrainPatienceOpt = None,
    batch_size: TrainBatchSizeOpt = None,
    lr: TrainLrOpt = None,
    seed: TrainSeedOpt = None,
    val_size: TrainValSizeOpt = None,
    limit: TrainLimitOpt = None,
    recipe: TrainRecipeOpt = None,
    precision: TrainPrecisionOpt = None,
    threads: TrainThreadsOpt = None,
    compile_model: TrainCompileModelOpt = False,
    out: RunsOpt = None,
    name: TrainNameOpt = None,
    resume: TrainResumeOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    config: ConfigOpt = None,
    quiet: TrainQuietOpt = False,
    plain: TrainPlainOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train SimpleCNN on MNIST with early stopping on a validation split.

    Shows live progress, a table of epochs and loss/accuracy curves on a terminal, one line per
    epoch elsewhere. Writes runs/<name>/ with best.pt, last.pt, metrics.csv, metrics.json,
    config.json and curves.png; Ctrl-C saves a checkpoint that --resume continues.
    """
    from mnistcli.config import train_settings

    flags = {
        "device": device,
        "train.epochs": epochs,
        "train.patience": patience,
        "train.batch_size": batch_size,
        "train.lr": lr,
        "train.seed": seed,
        "data.val_size": val_size,
        "train.limit": limit,
        "train.recipe": recipe.value if recipe else None,
        "train.threads": threads,
        "train.precision": precision.value if precision else None,
        "runs_dir": out,
        "data.root": data_root,
    }
    values = settings_values(flags, config, data)
    if resume is not None and name is not None:
        raise ConfigError("--name and --resume cannot go together: a resumed run keeps its folder")
    settings = train_settings(values, name=name, resume=resume, compile=compile_model)
    run_training(settings, values, quiet=quiet or as_json, plain=plain, as_json=as_json)


def run_training(
    settings, values: dict[str, Setting], *, quiet: bool, plain: bool, as_json: bool
) -> None:
    """Load the data, pick a view, run the trainer, print the summary."""
    from mnistcli.device import resolve_device
    from mnistcli.distributed import world_from_env
    from mnistcli.render.train_view import LiveView, PlainView, QuietView, summary_table
    from mnistcli.train import train as run

    resolve_device(settings.device)  # a missing GPU is said before MNIST is loaded
    world = world_from_env()
    if not world.is_main:  # under torchrun, rank 0 alone prints
        quiet, as_json = True, False
    cons = consoles(plain=plain)
    mnist = load_data(values, stderr_log(quiet, cons.err))
    view = QuietView() if quiet else LiveView(cons.err) if cons.live else PlainView(cons.err)
    stop = StopFlag()
    stop.install()
    with view:
        result = run(settings, mnist, on_event=view, should_stop=stop)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif world.is_main:
        cons.out.print(summary_table(result))
    if result.stop_reason == "interrupted":
        epoch, batch = result.interrupted_at or (0, 0)
        what = "SIGTERM" if stop.signum == signal.SIGTERM else "Ctrl-C"
        how = "the same torchrun command with " if world.is_distributed else "mnistcli train "
        if world.is_main:
            cons.err.print(
                f"{what}: stopped in epoch {epoch} after batch {batch}; saved "
                f"{escape(str(result.run_dir / 'last.pt'))}. Continue with: "
                f"{how}--resume {escape(str(result.run_dir))}",
                soft_wrap=True,
            )
        raise typer.Exit(130 if stop.signum == signal.SIGINT else 143)


# mnistcli inspect ----------------------------------------------------------------------------


InspectModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME",
        help=f"Model to describe, by name. \\[default: train.model, {default_text('train.model')}]",
        show_default=False,
    ),
]
InspectCheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        metavar="PATH",
        help="A checkpoint file, a run folder (its best.pt) or 'latest'. "
        "\\[default: the latest run's best.pt when there is one]",
        show_default=False,
    ),
]
InspectBatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        "-b",
        help="Batch for the activation memory figure. \\[default: train.batch_size, "
        f"{default_text('train.batch_size')}]",
        show_default=False,
    ),
]
InspectImageOpt = Annotated[
    Path | None,
    typer.Option(
        "--image",
        metavar="IMG",
        help="Also show what every layer outputs for this image (feature maps, the first "
        "convolution's filters, hidden units, logits); needs a trained checkpoint.",
        show_default=False,
    ),
]
InspectRawOpt = Annotated[
    bool, typer.Option("--raw", help="Take --image as is: a 28x28 MNIST-style digit.")
]
InspectSaveOpt = Annotated[
    Path | None,
    typer.Option(
        "--save",
        metavar="DIR",
        help="With --image: write feature_maps.png and filters.png into DIR.",
        show_default=False,
    ),
]


@app.command("inspect")
@handles_errors
def inspect_model(
    model: InspectModelOpt = None,
    checkpoint: InspectCheckpointOpt = None,
    batch_size: InspectBatchSizeOpt = None,
    image: InspectImageOpt = None,
    raw: InspectRawOpt = False,
    save: InspectSaveOpt = None,
    out: RunsOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show each layer's output shape, parameters and MACs for one (N, 1, 28, 28) input.

    Then the totals (parameters, MACs per image, parameter and activation memory), the output
    size formula worked for each conv and pool layer, and what the checkpoint holds: when and
    how it was trained, its accuracy and data checksums, and whether its weights load.
    With --image, also what every layer outputs for that image: feature maps, the first
    convolution's filters, the hidden units and the logits (--save DIR: the same as PNGs).
    """
    from mnistcli.config import inspect_settings
    from mnistcli.summary import inspect_model as describe_model

    flags = {"train.model": model, "train.batch_size": batch_size, "runs_dir": out}
    values = settings_values(flags, config)
    settings = inspect_settings(values, checkpoint=checkpoint, image=image, raw=raw, save=save)
    print_inspection(describe_model(settings), settings.save, as_json=as_json)


def print_inspection(found, save: Path | None, *, as_json: bool) -> None:
    """Warnings on stderr; the layer table (and with --image, every layer's output) or the
    JSON document on stdout; with --save, the figures written and named on stderr."""
    from mnistcli.render.console import is_color
    from mnistcli.render.inspect_view import inspect_view

    cons = consoles()
    if found.warning:
        cons.err.print(
            f"[yellow]warning:[/] {escape(found.warning)}; describing the model alone",
            soft_wrap=True,
        )
    if found.blank:
        cons.err.print(
            f"[yellow]warning:[/] no digit found in {escape(str(found.image))}; showing what "
            f"the layers make of a blank input",
            soft_wrap=True,
        )
    saved: list[Path] = []
    if found.activations is not None and save is not None:
        from mnistcli.render.feature_figures import save_feature_figures

        saved = save_feature_figures(found.activations, save)
    if as_json:
        typer.echo(json.dumps(found.to_dict(saved), indent=2))
    else:
        cons.out.print(inspect_view(found.summary, found.checkpoint))
    if found.activations is not None and not as_json:
        from mnistcli.render.feature_view import activations_view

        view = activations_view(found.activations, color=is_color(cons.out), width=cons.out.width)
        cons.out.print(view)
    for path in saved:
        cons.err.print(f"wrote {escape(str(path))}", soft_wrap=True)


# mnistcli eval -------------------------------------------------------------------------------


class EvalSplit(enum.StrEnum):
    test = "test"
    val = "val"


EvalSplitOpt = Annotated[
    EvalSplit,
    typer.Option(
        help="The 10,000 test images, or the validation images held out from training "
        "(the same seed and size as the checkpoint's run)."
    ),
]
EvalBatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        "-b",
        help="Images per forward pass." + default("eval.batch_size"),
        show_default=False,
    ),
]
EvalTopOpt = Annotated[
    int | None,
    typer.Option(
        help="Most confused pairs to list; 0 for none." + default("eval.top"),
        show_default=False,
    ),
]
EvalGalleryOpt = Annotated[
    int | None,
    typer.Option(
        help="Misclassified digits to draw (the most confident first); 0 for none."
        + default("eval.gallery"),
        show_default=False,
    ),
]
EvalSaveOpt = Annotated[
    Path | None,
    typer.Option(
        help="Folder for confusion_matrix.png, misclassified.png and eval.json. "
        "\\[default: the checkpoint's run folder]",
        show_default=False,
    ),
]
EvalNoSaveOpt = Annotated[bool, typer.Option("--no-save", help="Write no files.")]


@app.command("eval")
@handles_errors
def eval_model(
    checkpoint: CheckpointOpt = None,
    split: EvalSplitOpt = EvalSplit.test,
    device: DeviceOpt = None,
    batch_size: EvalBatchSizeOpt = None,
    top: EvalTopOpt = None,
    gallery: EvalGalleryOpt = None,
    save: EvalSaveOpt = None,
    no_save: EvalNoSaveOpt = False,
    out: RunsOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a checkpoint on MNIST: accuracy with a 95% interval, confusion matrix, per-class
    precision/recall/F1, the most confused pairs and a gallery of mistakes drawn in the terminal.

    Also writes confusion_matrix.png, misclassified.png and eval.json (with --split val:
    *_val.png and eval_val.json) into the run folder, or --save DIR.
    """
    from mnistcli.config import eval_settings
    from mnistcli.metrics import evaluate_checkpoint
    from mnistcli.render.eval_figures import save_eval_files
    from mnistcli.render.eval_view import print_eval

    flags = {
        "device": device,
        "eval.batch_size": batch_size,
        "eval.top": top,
        "eval.gallery": gallery,
        "runs_dir": out,
        "data.root": data_root,
    }
    values = settings_values(flags, config, data)
    settings = eval_settings(
        values, checkpoint=checkpoint, split=split.value, save=save, write_files=not no_save
    )
    cons = consoles()
    report = evaluate_checkpoint(settings, log=stderr_log(as_json, cons.err))
    saved: list[Path] = []
    if settings.write_files:
        saved = save_eval_files(report, settings.save or report.checkpoint.parent)
    if as_json:
        typer.echo(json.dumps(report.to_dict(saved), indent=2))
    else:
        print_eval(cons.out, cons.err, report, saved, top=settings.top, gallery=settings.gallery)


# mnistcli predict ----------------------------------------------------------------------------


PredictPathsOpt = Annotated[
    list[str],
    typer.Argument(
        metavar="PATH",
        help="Image files (PNG, JPEG, BMP, GIF, TIFF, WebP), folders (their images) or "
        "globs such as 'scans/*.png'.",
        show_default=False,
    ),
]
PredictTopKOpt = Annotated[
    int | None,
    typer.Option(
        "--top-k",
        "-k",
        help="Most likely digits to list (1-10)." + default("predict.top_k"),
        show_default=False,
    ),
]
PredictShowOpt = Annotated[
    bool, typer.Option("--show", help="Also draw the 28x28 input the model saw.")
]
PredictExplainOpt = Annotated[
    bool,
    typer.Option(
        "--explain",
        help="Also show which pixels decided: the input beside its saliency (integrated "
        'gradients of the predicted digit); --json adds "saliency", 28x28.',
    ),
]
PredictRawOpt = Annotated[
    bool,
    typer.Option(
        "--raw",
        help="No preprocessing: for images that already are MNIST-style 28x28 digits "
        "(bright ink on black).",
    ),
]
PredictAsJsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON object per image, one per line (path, status, digit, "
        "probability, top_k, error), nothing else.",
    ),
]


@app.command()
@handles_errors
def predict(
    paths: PredictPathsOpt,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = None,
    top_k: PredictTopKOpt = None,
    show: PredictShowOpt = False,
    explain: PredictExplainOpt = False,
    raw: PredictRawOpt = False,
    out: RunsOpt = None,
    config: ConfigOpt = None,
    as_json: PredictAsJsonOpt = False,
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
    from mnistcli.config import predict_settings
    from mnistcli.loading import open_model
    from mnistcli.predict import collect_paths, predict_paths

    flags = {"device": device, "runs_dir": out, "predict.top_k": top_k}
    values = settings_values(flags, config)
    settings = predict_settings(values, checkpoint=checkpoint, raw=raw, explain=explain)
    cons = consoles()
    model = open_model(
        settings.checkpoint,
        settings.device,
        runs_dir=settings.runs_dir,
        need_module=settings.explain,
        channels_last=True,
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
    print_predictions(cons, preds, explained, show=show, as_json=as_json)
    if any(p.error for p in preds):
        raise typer.Exit(1)


def print_predictions(cons, preds: list, explained: list | None, *, show: bool, as_json: bool):
    """The predictions' view on stdout (with --explain, each input beside its saliency); with
    --json and --explain, each image's JSON line with its "saliency"."""
    from mnistcli.render.console import is_color

    if as_json:
        for item in explained or []:
            typer.echo(json.dumps(item.to_dict()))
        return
    keep = [i for i, p in enumerate(preds) if len(preds) > 1 or not p.error]
    if not keep:  # a single image that failed: its error line says it all
        return
    color, width = is_color(cons.out), cons.out.width
    if explained is not None:
        from mnistcli.render.explain_view import explain_view

        view = explain_view([explained[i] for i in keep], color=color, width=width)
    else:
        from mnistcli.render.predict_view import predict_view

        view = predict_view([preds[i] for i in keep], show=show, color=color, width=width)
    cons.out.print(view)


# mnistcli export -----------------------------------------------------------------------------


ExportFormatOpt = Annotated[
    ExportFormat | None,
    typer.Option(
        "--format",
        "-f",
        help="onnx (onnxruntime, any language), safetensors (weights plus a JSON sidecar) "
        "or pt2 (torch.export)." + default("export.format"),
        show_default=False,
    ),
]
ExportOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="File to write. \\[default: model.onnx, .safetensors or .pt2 next to the checkpoint]",
        show_default=False,
    ),
]
ExportCheckImagesOpt = Annotated[
    int | None,
    typer.Option(
        "--check-images",
        metavar="N",
        help="Test digits the self-check runs (the first N; 0 for all)."
        + default("export.check_images"),
        show_default=False,
    ),
]


@app.command("export")
@handles_errors
def export_cmd(
    checkpoint: CheckpointOpt = None,
    fmt: ExportFormatOpt = None,
    out: ExportOutOpt = None,
    check_images: ExportCheckImagesOpt = None,
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
    from mnistcli.config import export_settings
    from mnistcli.export import export_checkpoint
    from mnistcli.render.export_view import export_lines

    flags = {
        "export.format": fmt.value if fmt else None,
        "export.check_images": check_images,
        "data.root": data_root,
    }
    settings = export_settings(settings_values(flags, config, data), checkpoint=checkpoint, out=out)
    cons = consoles()
    result = export_checkpoint(settings, log=stderr_log(as_json, cons.err))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        cons.out.print(export_lines(result), soft_wrap=True)


def _usage_error(exc: Exception) -> None:
    """A usage error (bad option value, unknown option or command) as one line on stderr."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `mnistcli` alone: the help was shown
        return
    ctx = getattr(exc, "ctx", None)
    hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    message = " ".join(str(exc.format_message()).split()).rstrip(".")  # type: ignore[attr-defined]
    _err_console().print(f"[bold red]error:[/] {escape(message)}{escape(hint)}", soft_wrap=True)


class _OneLineUsageErrors(importlib.abc.MetaPathFinder):
    """Typer draws usage errors with typer.rich_utils as a boxed panel; mnistcli's are one line.
    That module (rich's markdown and more: about 40 ms) is imported only when Typer needs it, so
    it is patched as it loads rather than imported up front, which keeps `predict` on an .onnx
    model quick. (If a future Typer stops calling this hook, its own panel is shown: still exit
    code 2.)"""

    NAME = "typer.rich_utils"

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.NAME:
            return None
        sys.meta_path.remove(self)  # one use: find the real module below this finder
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                run(module)
                module.rich_format_error = _usage_error

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def main() -> None:
    """Console-script entry point."""
    if _OneLineUsageErrors.NAME in sys.modules:
        sys.modules[_OneLineUsageErrors.NAME].rich_format_error = _usage_error  # type: ignore[attr-defined]
    elif not any(isinstance(f, _OneLineUsageErrors) for f in sys.meta_path):
        sys.meta_path.insert(0, _OneLineUsageErrors())
    app()
