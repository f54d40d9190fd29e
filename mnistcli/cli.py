"""The command line: options -> settings -> core call -> rendering.

This is the one place that catches the project's errors: it prints one line on stderr and sets
the exit code (2 for bad input or environment, 1 when some predictions failed, 130 when
interrupted). torch is imported only inside the commands that need it, so `--help` is instant.
"""

from __future__ import annotations

import enum
import functools
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from mnistcli import __version__
from mnistcli.config import PRECISIONS, RECIPES, Value, resolve
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

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Global options, set by the app callback before any command runs."""

    no_color = False


def _err_console():
    from mnistcli.render.console import make_consoles

    return make_consoles(no_color=State.no_color).err


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` as one line on stderr; return the Exit to raise."""
    _err_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def handles_errors(func: F) -> F:
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
    State.no_color = no_color


# Options shared by several commands ---------------------------------------------------------

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
        help="Where to run. \\[default: auto]",
        show_default=False,
    ),
]
RunsOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Folder that holds the run folders. \\[default: runs]",
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
        help="Cache folder for the verified MNIST files. \\[default: the user cache]",
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
) -> dict[str, Value]:
    """Resolve every layer; `--data DIR` is put in front of the configured mirrors."""
    values = resolve(flags, config=config)
    if data is not None and not data.is_dir():
        raise DataError(
            f"--data {data}: no such folder; pass the folder that holds the four MNIST files"
        )
    if data is not None:
        mirrors = [str(data.resolve()), *list(values["data.mirrors"].value)]
        values["data.mirrors"] = Value(mirrors, "--data")
    return values


def load_data(values: dict[str, Value], log: Callable[[str], None]):
    from mnistcli.data import load_mnist

    return load_mnist(values["data.root"].value, values["data.mirrors"].value, on_message=log)


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


@app.command()
@handles_errors
def train(
    device: DeviceOpt = None,
    epochs: Annotated[
        int | None, typer.Option(help="Most epochs to run. \\[default: 20]", show_default=False)
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Stop after this many epochs without a better validation accuracy; 0 never "
            "stops early. \\[default: 3]",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", "-b", help="Images per step. \\[default: 64]", show_default=False
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Adam learning rate (peak rate with the one-cycle schedule). \\[default: 0.001]",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed for weights, split, shuffling and dropout. \\[default: 0]",
            show_default=False,
        ),
    ] = None,
    val_size: Annotated[
        int | None,
        typer.Option(
            "--val-size",
            help="Training images held out for validation (early stopping and "
            "model selection). \\[default: 5000]",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Train on only this many images (quick runs); 0 for all. \\[default: 0]",
            show_default=False,
        ),
    ] = None,
    recipe: Annotated[
        Recipe | None,
        typer.Option(
            help="Named hyper-parameter set: 'reference' (Adam 1e-3, batch 64) or 'fast' "
            "(one-cycle, larger batches, small shifts). \\[default: reference]",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            help="fp32, or bf16 autocast (mixed precision), or auto: bf16 where the hardware "
            "runs it natively (AVX512-BF16/AMX CPUs, recent GPUs). \\[default: fp32; auto with "
            "the fast recipe]",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for torch; 0 lets torch choose. \\[default: 0]", show_default=False
        ),
    ] = None,
    compile_model: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile the training step (worth it on a GPU; compiling takes a while).",
        ),
    ] = False,
    out: RunsOpt = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Run folder name under --out. \\[default: the date and time]", show_default=False
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue a run: its folder, its last.pt, or 'latest'.",
            show_default=False,
            metavar="RUN",
        ),
    ] = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    config: ConfigOpt = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the final summary.")
    ] = False,
    plain: Annotated[
        bool, typer.Option(help="Plain lines, one per epoch, even on a terminal.")
    ] = False,
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
    settings, values: dict[str, Value], *, quiet: bool, plain: bool, as_json: bool
) -> None:
    """Load the data, pick a view, run the trainer, print the summary."""
    from mnistcli.device import resolve_device
    from mnistcli.render.console import make_consoles
    from mnistcli.render.train_view import LiveView, PlainView, QuietView, summary_table
    from mnistcli.train import train as run

    resolve_device(settings.device)  # a missing GPU is said before MNIST is loaded
    consoles = make_consoles(no_color=State.no_color, plain=plain)
    log = (lambda _m: None) if quiet else (lambda m: consoles.err.print(escape(m)))
    mnist = load_data(values, log)
    view = (
        QuietView()
        if quiet
        else LiveView(consoles.err)
        if consoles.live
        else PlainView(consoles.err)
    )
    stop = StopFlag()
    stop.install()
    with view:
        result = run(settings, mnist, on_event=view, should_stop=stop)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        consoles.out.print(summary_table(result))
    if result.stop_reason == "interrupted":
        epoch, batch = result.interrupted_at or (0, 0)
        what = "SIGTERM" if stop.signum == signal.SIGTERM else "Ctrl-C"
        consoles.err.print(
            f"{what}: stopped in epoch {epoch} after batch {batch}; saved "
            f"{escape(str(result.run_dir / 'last.pt'))}. Continue with: "
            f"mnistcli train --resume {escape(str(result.run_dir))}",
            soft_wrap=True,
        )
        raise typer.Exit(130 if stop.signum == signal.SIGINT else 143)


# mnistcli inspect ----------------------------------------------------------------------------


@app.command("inspect")
@handles_errors
def inspect_model(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            metavar="NAME",
            help="Model to describe, by name. \\[default: train.model, simplecnn]",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            metavar="PATH",
            help="A checkpoint file, a run folder (its best.pt) or 'latest'. "
            "\\[default: the latest run's best.pt when there is one]",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            help="Batch for the activation memory figure. \\[default: train.batch_size, 64]",
            show_default=False,
        ),
    ] = None,
    out: RunsOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show each layer's output shape, parameters and MACs for one (N, 1, 28, 28) input.

    Then the totals (parameters, MACs per image, parameter and activation memory), the output
    size formula worked for each conv and pool layer, and what the checkpoint holds: when and
    how it was trained, its accuracy and data checksums, and whether its weights load.
    """
    from mnistcli.checkpoint import latest_run, load_model, resolve_checkpoint
    from mnistcli.errors import CheckpointError
    from mnistcli.model import MODELS, build_model
    from mnistcli.render.console import make_consoles
    from mnistcli.render.inspect_view import inspect_view
    from mnistcli.summary import checkpoint_info, summarize

    flags = {"train.model": model, "train.batch_size": batch_size, "runs_dir": out}
    values = settings_values(flags, config)
    if values["train.model"].value not in MODELS:
        build_model(values["train.model"].value)  # raises: unknown model, did you mean ...
    consoles = make_consoles(no_color=State.no_color)
    runs_dir = values["runs_dir"].value
    path = None
    if checkpoint is not None:
        path = resolve_checkpoint(checkpoint, runs_dir)
    elif (run := latest_run(runs_dir)) is not None:
        path = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
    net, info = None, None
    if path is not None:
        try:
            net, payload = load_model(path, "cpu")
        except CheckpointError as exc:
            if checkpoint is not None:
                raise
            consoles.err.print(
                f"[yellow]warning:[/] {escape(str(exc))}; describing the model alone",
                soft_wrap=True,
            )
        else:
            if model is not None and payload["model"] != model:
                if checkpoint is not None:
                    raise ConfigError(
                        f"--model {model} does not match {path}, a '{payload['model']}' "
                        f"checkpoint; leave out --model or pick another checkpoint"
                    )
                net = None  # the latest run is of another model: describe the one asked for
            else:
                info = checkpoint_info(payload, path, weights_loaded=True)
    if net is None:
        net = build_model(values["train.model"].value)
    import torch

    # describe the model in its standard layout: a checkpoint loads channels-last (for speed),
    # which would make Flatten copy and change the activation figures
    net = net.to(memory_format=torch.contiguous_format)
    result = summarize(net, batch_size=values["train.batch_size"].value)
    if as_json:
        doc = {**result.to_dict(), "checkpoint": info.to_dict() if info else None}
        typer.echo(json.dumps(doc, indent=2))
    else:
        consoles.out.print(inspect_view(result, info))


# mnistcli eval -------------------------------------------------------------------------------


class EvalSplit(enum.StrEnum):
    test = "test"
    val = "val"


@app.command("eval")
@handles_errors
def eval_model(
    checkpoint: CheckpointOpt = None,
    split: Annotated[
        EvalSplit,
        typer.Option(
            help="The 10,000 test images, or the validation images held out from training "
            "(the same seed and size as the checkpoint's run)."
        ),
    ] = EvalSplit.test,
    device: DeviceOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            help="Images per forward pass. \\[default: 256]",
            show_default=False,
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option(
            help="Most confused pairs to list; 0 for none. \\[default: 10]", show_default=False
        ),
    ] = None,
    gallery: Annotated[
        int | None,
        typer.Option(
            help="Misclassified digits to draw (the most confident first); 0 for none. "
            "\\[default: 16]",
            show_default=False,
        ),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            help="Folder for confusion_matrix.png, misclassified.png and eval.json. "
            "\\[default: the checkpoint's run folder]",
            show_default=False,
        ),
    ] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Write no files.")] = False,
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
    from mnistcli.checkpoint import load_model, resolve_checkpoint
    from mnistcli.config import HyperParams
    from mnistcli.data import split_indices
    from mnistcli.device import resolve_device
    from mnistcli.metrics import evaluate_model
    from mnistcli.render.console import make_consoles
    from mnistcli.render.eval_figures import save_eval_files
    from mnistcli.render.eval_view import print_report
    from mnistcli.train import stats_from_dict

    flags = {
        "device": device,
        "eval.batch_size": batch_size,
        "eval.top": top,
        "eval.gallery": gallery,
        "runs_dir": out,
        "data.root": data_root,
    }
    values = settings_values(flags, config, data)
    consoles = make_consoles(no_color=State.no_color)
    log = (lambda _m: None) if as_json else (lambda m: consoles.err.print(escape(m)))
    path = resolve_checkpoint(checkpoint, values["runs_dir"].value)
    dev = resolve_device(values["device"].value)
    model, payload = load_model(path, dev)
    hyper = HyperParams.from_dict(payload["config"])
    mnist = load_data(values, log)
    if split is EvalSplit.val:
        held_out = split_indices(len(mnist.train_labels), hyper.val_size, hyper.seed).val
        images, labels = mnist.train_images[held_out], mnist.train_labels[held_out]
        log(
            f"note: the validation split ({hyper.val_size:,} images, seed {hyper.seed}) chose "
            f"this checkpoint, so its figures are optimistic; the test split is not"
        )
    else:
        images, labels = mnist.test_images, mnist.test_labels
    result = evaluate_model(
        model,
        images,
        labels,
        device=dev,
        batch_size=values["eval.batch_size"].value,
        top=values["eval.top"].value,
        gallery=values["eval.gallery"].value,
    )
    doc = {
        "checkpoint": str(path),
        "model": payload["model"],
        "epoch": payload["epoch"],
        "split": split.value,
        "device": str(dev),
        **result.to_dict(),
        "saved": [],
    }
    saved: list[Path] = []
    if not no_save:
        folder = save if save is not None else path.parent
        saved = save_eval_files(result, doc, folder, split=split.value, checkpoint=path)
        doc["saved"] = [str(p) for p in saved]
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    n_train = len(mnist.train_labels) - hyper.val_size
    n_train = min(hyper.limit, n_train) if hyper.limit else n_train
    trained = (
        f"{hyper.model}, epoch {payload['epoch']} (of {len(payload['history'])} in this "
        f"checkpoint), recipe {hyper.recipe}, seed {hyper.seed}, {n_train:,} training images"
    )
    print_report(
        consoles.out,
        result,
        checkpoint=str(path),
        split=split.value,
        device=str(dev),
        trained=trained,
        saved=[str(p) for p in saved],
        top=values["eval.top"].value,
        gallery_size=values["eval.gallery"].value,
    )
    try:
        history = [stats_from_dict(h) for h in payload["history"]]
    except (KeyError, TypeError):  # not in the usual form: no curves, but the report stands
        history = []
    if len(history) >= 2:  # the training curves, as `mnistcli train` drew them (stderr)
        from rich.text import Text

        from mnistcli.render.charts import curves

        chart = curves(history, min(consoles.err.width, 120), 14, color=consoles.color)
        consoles.err.print(Text.from_ansi(chart))


# mnistcli predict ----------------------------------------------------------------------------


@app.command()
@handles_errors
def predict(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATH",
            help="Image files (PNG, JPEG, BMP, GIF, TIFF, WebP), folders (their images) or "
            "globs such as 'scans/*.png'.",
            show_default=False,
        ),
    ],
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = None,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            "-k",
            help="Most likely digits to list (1-10). \\[default: 3]",
            show_default=False,
        ),
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Also draw the 28x28 input the model saw.")
    ] = False,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="No preprocessing: for images that already are MNIST-style 28x28 digits "
            "(bright ink on black).",
        ),
    ] = False,
    out: RunsOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object per image, one per line (path, status, digit, "
            "probability, top_k, error), nothing else.",
        ),
    ] = False,
) -> None:
    """Read the digit in each image: a photo, a scan, a drawing or a screenshot.

    Each image is made like an MNIST digit: grayscale (transparency on white),
    inverted if the background is light, uneven lighting and contrast evened
    out (the lines of ruled or squared paper go black), cropped to the ink
    (specks ignored), scaled into 20x20 and centred by its centre of mass in
    28x28. A blank image says "no digit found". A file
    that cannot be read gets a one-line error, the others are still predicted,
    and the exit code is 1.
    """
    from mnistcli.checkpoint import load_model, resolve_checkpoint
    from mnistcli.device import resolve_device
    from mnistcli.predict import TorchBackend, collect_paths, predict_paths
    from mnistcli.render.console import make_consoles
    from mnistcli.render.predict_view import predict_view

    flags = {"device": device, "runs_dir": out, "predict.top_k": top_k}
    values = settings_values(flags, config)
    consoles = make_consoles(no_color=State.no_color)
    path = resolve_checkpoint(checkpoint, values["runs_dir"].value)
    dev = resolve_device(values["device"].value)
    model, payload = load_model(path, dev)
    if not as_json:
        consoles.err.print(
            f"model: {escape(str(path))} ({payload['model']}, epoch {payload['epoch']}) on {dev}",
            soft_wrap=True,
        )
    preds = []
    backend = TorchBackend(model, dev)
    for pred in predict_paths(
        collect_paths(paths), backend, top_k=values["predict.top_k"].value, raw=raw
    ):
        if pred.error:
            consoles.err.print(f"[bold red]error:[/] {escape(pred.error)}", soft_wrap=True)
        if as_json:
            typer.echo(json.dumps(pred.to_dict()))
        preds.append(pred)
    shown = preds if len(preds) > 1 else [p for p in preds if not p.error]
    if shown and not as_json:
        from mnistcli.render.console import is_color

        color = is_color(consoles.out)
        view = predict_view(shown, show=show, color=color, width=consoles.out.width)
        consoles.out.print(view)
    if any(p.error for p in preds):
        raise typer.Exit(1)


def _usage_error(exc: Exception) -> None:
    """A usage error (bad option value, unknown option or command) as one line on stderr."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `mnistcli` alone: the help was shown
        return
    ctx = getattr(exc, "ctx", None)
    hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    message = " ".join(str(exc.format_message()).split()).rstrip(".")  # type: ignore[attr-defined]
    _err_console().print(f"[bold red]error:[/] {escape(message)}{escape(hint)}", soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    # Typer draws usage errors as a boxed panel; every mnistcli error is one line instead.
    # (If a future Typer stops calling this hook, its own panel is shown: still exit code 2.)
    from typer import rich_utils

    rich_utils.rich_format_error = _usage_error
    app()
