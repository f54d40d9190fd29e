"""`mnistcli train`: its options, the settings they make, the trainer, and the view it reports."""

from __future__ import annotations

import enum
import json
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from mnistcli.cli.options import (
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
from mnistcli.config import PRECISIONS, RECIPES, Setting, default_text
from mnistcli.errors import ConfigError
from mnistcli.render.console import say
from mnistcli.settings import TrainSettings

if TYPE_CHECKING:
    from rich.console import Console

    from mnistcli.data import Mnist

Recipe = enum.Enum("Recipe", {name: name for name in RECIPES}, type=str)  # type: ignore[misc]
Precision = enum.Enum("Precision", {p: p for p in PRECISIONS}, type=str)  # type: ignore[misc]


EpochsOpt = Annotated[int | None, setting_option("train.epochs", help="Most epochs to run.")]
PatienceOpt = Annotated[
    int | None,
    setting_option(
        "train.patience",
        help="Stop after this many epochs without a better validation accuracy; 0 never "
        "stops early.",
    ),
]
BatchSizeOpt = Annotated[
    int | None, setting_option("train.batch_size", "-b", help="Images per step.")
]
LrOpt = Annotated[
    float | None,
    setting_option(
        "train.lr",
        metavar="RATE",
        help="Adam learning rate (peak rate with the one-cycle schedule).",
    ),
]
SeedOpt = Annotated[
    int | None,
    setting_option("train.seed", help="Seed for weights, split, shuffling and dropout."),
]
ValSizeOpt = Annotated[
    int | None,
    setting_option(
        "data.val_size",
        help="Training images held out for validation (early stopping and model selection).",
    ),
]
LimitOpt = Annotated[
    int | None,
    setting_option("train.limit", help="Train on only this many images (quick runs); 0 for all."),
]
RecipeOpt = Annotated[
    Recipe | None,
    setting_option(
        "train.recipe",
        metavar="RECIPE",
        help="Named hyper-parameter set: 'reference' (Adam 1e-3, batch 64), 'fast' "
        "(one-cycle, larger batches, small shifts) or 'best' (40 epochs of random affine "
        "warps, label smoothing).",
    ),
]
PrecisionOpt = Annotated[
    Precision | None,
    setting_option(
        "train.precision",
        metavar="PRECISION",
        help="fp32, or bf16 autocast (mixed precision), or auto: bf16 where the hardware "
        "runs it natively (AVX512-BF16/AMX CPUs, recent GPUs).",
        default=f"{default_text('train.precision')}; {RECIPES['fast']['precision']} with the "
        "fast and best recipes",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    setting_option("train.threads", help="CPU threads for torch; 0 lets torch choose."),
]
CompileModelOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the training step (worth it on a GPU; compiling takes a while).",
    ),
]
NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
        metavar="NAME",
        help="Run folder name under --runs-dir. \\[default: the date and time]",
        show_default=False,
    ),
]
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume",
        help="Continue a run: its folder, its last.pt, or 'latest'.",
        show_default=False,
        metavar="RUN",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final summary.")]
PlainOpt = Annotated[
    bool, typer.Option("--plain", help="Plain lines, one per epoch, even on a terminal.")
]


def train(
    device: DeviceOpt = None,
    epochs: EpochsOpt = None,
    patience: PatienceOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    seed: SeedOpt = None,
    val_size: ValSizeOpt = None,
    limit: LimitOpt = None,
    recipe: RecipeOpt = None,
    precision: PrecisionOpt = None,
    threads: ThreadsOpt = None,
    compile_model: CompileModelOpt = False,
    runs_dir: RunsOpt = None,
    name: NameOpt = None,
    resume: ResumeOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    plain: PlainOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train SimpleCNN on MNIST with early stopping on a validation split.

    Shows live progress, a table of epochs and loss/accuracy curves on a terminal, one line per
    epoch elsewhere. Writes runs/NAME/ with best.pt, last.pt, metrics.csv, metrics.json,
    config.json and curves.png; Ctrl-C saves a checkpoint that --resume continues.
    """
    from mnistcli.settings import train_settings

    values = settings_values(setting_flags(train, locals()), config, data)
    if resume is not None and name is not None:
        raise ConfigError("--name and --resume cannot go together: a resumed run keeps its folder")
    settings = train_settings(values, name=name, resume=resume, compile=compile_model)
    run_training(settings, values, quiet=quiet, plain=plain, as_json=as_json)


def load_data(
    values: dict[str, Setting], log: Callable[[str], None], *, err: Console | None
) -> Mnist:
    """MNIST, fetched and checked; with `err` (the console `log` prints on), the checking and
    any download show their progress there when it is a terminal, as eval's do."""
    from mnistcli.data import load_mnist
    from mnistcli.render.progress_view import task_progress

    root, mirrors = values["data.root"].value, values["data.mirrors"].value
    if err is None:
        return load_mnist(root, mirrors, on_message=log)
    with task_progress(err) as progress:
        return load_mnist(root, mirrors, on_message=log, on_progress=progress.data)


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


def run_training(
    settings: TrainSettings, values: dict[str, Setting], *, quiet: bool, plain: bool, as_json: bool
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
    # --json keeps stdout for the document; on a terminal, stderr still shows the progress
    quiet = quiet or (as_json and not cons.err.is_terminal)
    mnist = load_data(values, stderr_log(quiet, cons.err), err=None if quiet else cons.err)
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
            say(
                cons.err,
                f"{what}: stopped in epoch {epoch} after batch {batch}; saved "
                f"{escape(str(result.run_dir / 'last.pt'))}. Continue with: "
                f"{how}--resume {escape(str(result.run_dir))}",
            )
        raise typer.Exit(130 if stop.signum == signal.SIGINT else 143)
