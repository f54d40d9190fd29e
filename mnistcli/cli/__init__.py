"""The command line: the app, its global options, and the one place that turns errors into one
line on stderr and an exit code (2 for bad input or environment, 1 when some predictions
failed, 130 when interrupted). Each command lives in its own module beside its options
(train, inspect, eval, predict, export), as options -> settings -> one core call -> rendering;
they import torch only inside the command, so `--help` is instant.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperGroup

from mnistcli import __version__
from mnistcli.cli import eval, export, inspect, predict, train
from mnistcli.cli.options import GlobalOptions
from mnistcli.errors import MnistcliError

if TYPE_CHECKING:
    from rich.console import Console

Command = TypeVar("Command", bound=Callable[..., Any])


def _err_console() -> Console:
    from mnistcli.render.console import make_consoles

    return make_consoles(no_color=GlobalOptions.no_color).err


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


def _usage_error(exc: typer.TyperException) -> None:
    """A usage error (bad option value, unknown option or command) as one line on stderr."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `mnistcli` alone: the help was shown
        return
    ctx = getattr(exc, "ctx", None)
    hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    message = " ".join(str(exc.format_message()).split()).rstrip(".")
    _err_console().print(f"[bold red]error:[/] {escape(message)}{escape(hint)}", soft_wrap=True)


class OneLineErrors(TyperGroup):
    """The app's command group: Typer draws usage errors as a boxed panel, mnistcli's are one
    line. It runs Typer's own main loop with standalone_mode=False, which hands the errors back
    instead of drawing them, and exits as standalone mode would (exit codes, 'Aborted.')."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:  # a caller that handles the errors itself
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            # returns an Exit's code (--help, --version, typer.Exit) or the command's None
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # click's usage errors, as Typer vendors them
            _usage_error(exc)
            code = exc.exit_code
        except typer.Abort:  # end of input at a prompt
            _err_console().print("[red]Aborted.[/]")
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="mnistcli",
    cls=OneLineErrors,
    help="Train, evaluate, inspect and run a small CNN for handwritten digits (MNIST).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


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
        bool,
        typer.Option("--no-color", help="No colour (as with NO_COLOR=1); progress still shows."),
    ] = False,
) -> None:
    """mnistcli: train, eval, predict and inspect, sharing one model and one trainer."""
    GlobalOptions.no_color = no_color


# The commands, in the order --help lists them; each wrapped in the one error handler.
app.command()(handles_errors(train.train))
app.command("inspect")(handles_errors(inspect.inspect_model))
app.command("eval")(handles_errors(eval.eval_model))
app.command()(handles_errors(predict.predict))
app.command("export")(handles_errors(export.export_cmd))


def main() -> None:
    """Console-script entry point."""
    app()
