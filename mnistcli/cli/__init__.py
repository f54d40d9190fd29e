"""The command line: the app, its global options, and the one place that turns errors into one
line on stderr and an exit code (2 for bad input or environment, 1 when some predictions
failed, 130 when interrupted). Each command lives in its own module beside its options
(train, inspect, eval, predict, export), as options -> settings -> one core call -> rendering;
they import torch only inside the command, so `--help` is instant.

--help follows one convention everywhere (help.py checks it in the tests): an upper-case
placeholder for each value (N, DIR, FILE, PATH...), none for flags, and help paragraphs that
rewrap to the terminal's width.
"""

from __future__ import annotations

import ast
import enum
import functools
import gc
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from mnistcli import __version__
from mnistcli.cli import draw, eval, export, inspect, predict, runs, train
from mnistcli.cli.conventions import Command, Group, paragraphs
from mnistcli.cli.options import GlobalOptions, renamed_flag
from mnistcli.cli.piped import trimmed_stdout
from mnistcli.config import did_you_mean
from mnistcli.errors import MnistcliError
from mnistcli.render.console import say

if TYPE_CHECKING:
    from rich.console import Console

Handler = TypeVar("Handler", bound=Callable[..., Any])

# Where the name a module is imported by is not the name pip installs it by.
PIP_NAMES = {"PIL": "pillow"}


def _err_console() -> Console:
    from mnistcli.render.console import make_consoles

    return make_consoles(no_color=GlobalOptions.no_color).err


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` as one line on stderr; return the Exit to raise."""
    say(_err_console(), f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def handles_errors(func: Handler) -> Handler:
    """Turn the project's errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MnistcliError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except ModuleNotFoundError as exc:  # an install that lacks one of its dependencies
            package = (exc.name or "").split(".")[0]
            if not package or package == "mnistcli":
                raise
            package = PIP_NAMES.get(package, package)
            raise fail(f"the package '{package}' is not installed; pip install {package}") from None
        except BrokenPipeError:  # `mnistcli ... | head`: the reader left; nothing to report
            sys.stderr = None  # type: ignore[assignment]
            raise typer.Exit(1) from None
        except OSError as exc:  # the last net: a file the system refused, on one line
            where = f"{exc.filename}: " if exc.filename else ""
            message = f"{where}{exc.strerror or exc}; check the path and its permissions"
            raise fail(message, 1) from None

    return wrapper  # type: ignore[return-value]


def _usage_error(exc: typer.TyperException) -> None:
    """A usage error (bad option value, unknown option or command) as one line on stderr; a
    flag that was renamed says its new name."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `mnistcli` alone: the help was shown
        return
    ctx = getattr(exc, "ctx", None)
    hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    message = _bad_value(exc) or " ".join(str(exc.format_message()).split()).rstrip(".")
    option = getattr(exc, "option_name", None)  # click's NoSuchOption
    if option is not None and ctx is not None:
        message = renamed_flag(ctx.info_name or "", option) or message
    say(_err_console(), f"[bold red]error:[/] {escape(message)}{escape(hint)}")


# How Typer words a value outside a command's choices (an Enum): "'x' is not one of 'a', 'b'.",
# behind "Value error, " where pydantic checks it. Read back to say it in mnistcli's words.
_NOT_ONE_OF = re.compile(r"^(?:Value error, )?(?P<value>'.*') is not one of (?P<choices>'.*')\.?$")
# pydantic's error types for a number that does not parse, in the words of mnistcli's messages
_NOT_A_NUMBER = {
    "int_parsing": "not a whole number",
    "int_from_float": "not a whole number",
    "float_parsing": "not a number",
}


def _bad_value(exc: typer.TyperException) -> str | None:
    """A bad option value (click's BadParameter) as `--flag VALUE: what is wrong`, with the
    choices and the closest one when it is not one of them; None for other usage errors.

    Typer's own text names the option twice ("Invalid value for '--split': Value error,
    'x' is not one of ..."): the library's words, not the user's."""
    param = getattr(exc, "param", None)
    # BadParameter itself: its subclasses (a missing argument...) word their own errors
    if type(exc).__name__ != "BadParameter" or param is None or not isinstance(exc.message, str):
        return None
    opts = getattr(param, "opts", None) or []
    longest = max(opts, key=len) if getattr(param, "param_type_name", "") == "option" else ""
    flag = longest or getattr(param, "human_readable_name", None) or "value"
    reason = " ".join(exc.message.split()).removeprefix("Value error, ").rstrip(".")
    value: Any = None
    problems = getattr(exc.__cause__, "errors", None)  # pydantic's ValidationError, if any
    if callable(problems) and (first := next(iter(problems()), None)) is not None:
        value = first.get("input")
        reason = _NOT_A_NUMBER.get(first.get("type"), reason)
    if (match := _NOT_ONE_OF.match(" ".join(exc.message.split()))) is not None:
        try:
            given = ast.literal_eval(match["value"])
            choices = [str(c) for c in ast.literal_eval(f"[{match['choices']}]")]
        except (ValueError, SyntaxError):
            pass
        else:
            value = given if value is None else value
            close = did_you_mean(str(value), choices)
            reason = f"not one of {match['choices']}{close}"
    if value is None:
        return f"{flag}: {reason}"
    return f"{flag} {_as_typed(str(value))}: {reason}"


def _as_typed(value: str) -> str:
    """A value as a shell would take it back (quoted when it has spaces), or as Python writes
    it when it holds control characters, so the error stays one line."""
    return shlex.quote(value) if value.isprintable() else repr(value)


# Typer's own completion flags take no value: `--install-completion zsh` installed the
# completion of the shell found running (bash, from a bash prompt) and ignored "zsh".
# mnistcli's take the shell; alone, they mean 'auto' (OneLineErrors.main adds it).
Shell = enum.Enum(  # type: ignore[misc]
    "Shell", {s: s for s in ("auto", "bash", "zsh", "fish", "powershell", "pwsh")}, type=str
)
COMPLETION_FLAGS = ("--install-completion", "--show-completion")


def _shell_given(args: list[str]) -> list[str]:
    """`args` with 'auto' after a completion flag that names no shell (the flag last, or
    followed by another option); only the options before the command are the app's."""
    for i, arg in enumerate(args):
        if not arg.startswith("-"):
            break
        if arg in COMPLETION_FLAGS and (i + 1 == len(args) or args[i + 1].startswith("-")):
            return [*args[: i + 1], "auto", *args[i + 1 :]]
    return args


def _completion(install: bool) -> Callable[[typer.Context, Any], None]:
    """The callback of --install-completion / --show-completion: Typer's own, given the shell."""

    def callback(ctx: typer.Context, value: Any) -> None:
        if value is None or ctx.resilient_parsing:
            return
        from typer.completion import install_callback, show_callback

        shell = True if value.value == "auto" else value.value  # True: detect the shell
        (install_callback if install else show_callback)(ctx, None, shell)  # type: ignore[arg-type]

    return callback


class OneLineErrors(Group):
    """The app's command group: Typer draws usage errors as a boxed panel, mnistcli's are one
    line. It runs Typer's own main loop with standalone_mode=False, which hands the errors back
    instead of drawing them, and exits as standalone mode would (exit codes, 'Aborted.').
    `--version` after a command prints the version as it does before one (`git`'s habit)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        args = _shell_given(list(sys.argv[1:] if args is None else args))
        with trimmed_stdout():
            if not standalone_mode:  # a caller that handles the errors itself
                return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = self._run(args, prog_name, complete_var, **extra)
        sys.exit(code)

    def _run(
        self, args: list[str], prog_name: str | None, complete_var: str | None, **extra: Any
    ) -> int:
        """Typer's main loop, its usage errors drawn as one line; the exit code."""
        try:
            # returns an Exit's code (--help, --version, typer.Exit) or the command's None
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # click's usage errors, as Typer vendors them
            if getattr(exc, "option_name", None) in ("--version", "-V"):
                typer.echo(f"mnistcli {__version__}")
                return 0
            _usage_error(exc)
            code = exc.exit_code
        except typer.Abort:  # end of input at a prompt
            _err_console().print("[red]Aborted.[/]")
            code = 1
        return code if isinstance(code, int) else 0


app = typer.Typer(
    name="mnistcli",
    cls=OneLineErrors,
    help="Train, evaluate, inspect and run a small CNN for handwritten digits (MNIST).",
    no_args_is_help=True,
    add_completion=False,  # main_options declares the completion flags, with a SHELL
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
    install_completion: Annotated[
        Shell | None,
        typer.Option(
            "--install-completion",
            metavar="SHELL",
            callback=_completion(install=True),
            expose_value=False,
            is_eager=True,
            help="Install tab completion for SHELL: bash, zsh, fish, powershell or pwsh "
            "(alone: the shell running mnistcli).",
            show_default=False,
        ),
    ] = None,
    show_completion: Annotated[
        Shell | None,
        typer.Option(
            "--show-completion",
            metavar="SHELL",
            callback=_completion(install=False),
            expose_value=False,
            is_eager=True,
            help="Print the completion script for SHELL, to install it by hand.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """mnistcli: train, eval, predict and inspect, sharing one model and one trainer."""
    GlobalOptions.no_color = no_color


def _add(name: str, command: Callable[..., Any]) -> None:
    """Register a command: its docstring as rewrappable help, the one error handler around it."""
    app.command(name, cls=Command, help=paragraphs(command.__doc__))(handles_errors(command))


# The commands, in the order --help lists them.
_add("train", train.train)
_add("inspect", inspect.inspect_model)
_add("eval", eval.eval_model)
_add("predict", predict.predict)
_add("export", export.export_cmd)
_add("draw", draw.draw)
app.add_typer(runs.runs_app(handles_errors), name="runs")


def main() -> None:
    """Console-script entry point (and `python -m mnistcli`)."""
    try:
        app()
    finally:
        # The process ends here. Python's shutdown would search every object left (torch
        # makes several hundred thousand) for reference cycles to free: a third of a second
        # for memory the system takes back anyway. Frozen objects are not searched; the
        # command's files are closed by now. (Not in app(): a caller in-process keeps its GC.)
        gc.freeze()
