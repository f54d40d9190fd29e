"""What every command shares: the options several of them take, options for config.SCHEMA's keys
made from SCHEMA itself, the resolution of the settings, and the consoles.

A setting's option is declared once, beside its command, with `setting_option(key, help=...)`:
its flag is SCHEMA's (config.flag_name) and its help ends with SCHEMA's default. The command
hands its arguments to `setting_flags`, which finds those options again by their key; so neither
a flag name, a default nor a flag-to-key map is written twice.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from mnistcli.config import Setting, default_text, flag_name, resolve, spec
from mnistcli.errors import DataError

if TYPE_CHECKING:
    from rich.console import Console

    from mnistcli.render.console import Consoles


class GlobalOptions:
    """Options given before the command, set by the app callback before any command runs."""

    no_color = False


def consoles(*, plain: bool = False) -> Consoles:
    """The stdout and stderr consoles, honouring --no-color (and --plain for train)."""
    from mnistcli.render.console import make_consoles

    return make_consoles(no_color=GlobalOptions.no_color, plain=plain)


# The placeholder a setting's option shows when its declaration names none, by SCHEMA's type.
PLACEHOLDERS: dict[type, str] = {int: "N", Path: "DIR"}


def setting_option(
    key: str,
    *short: str,
    help: str,
    default: str | None = None,
    metavar: str | None = None,
    **kwargs: Any,
) -> Any:
    """A typer.Option for the flag that sets the config key `key` ("train.epochs"): the flag is
    SCHEMA's, the help ends with ' [default: ...]' from SCHEMA (or `default`, where the help
    words it otherwise), the placeholder is `metavar` or PLACEHOLDERS' for the key's type.
    `setting_flags` reads the key back from the option."""
    option = typer.Option(
        flag_name(key),
        *short,
        help=f"{help} \\[default: {default or default_text(key)}]",  # escaped for rich markup
        show_default=False,
        metavar=metavar or PLACEHOLDERS.get(spec(key).kind),
        **kwargs,
    )
    option.setting_key = key  # type: ignore[attr-defined]
    return option


def setting_flags(command: Callable[..., Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """config.resolve's flags, {key: value or None when not given}, for each of `command`'s
    parameters declared with setting_option; `arguments` are the command's (its locals())."""
    flags = {}
    for name, hint in typing.get_type_hints(command, include_extras=True).items():
        for meta in getattr(hint, "__metadata__", ()):
            key = getattr(meta, "setting_key", None)
            if key is not None:
                value = arguments[name]
                flags[key] = value.value if isinstance(value, enum.Enum) else value
    return flags


# Options shared by several commands ---------------------------------------------------------

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="Config file to use instead of ./.mnistcli.toml.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None,
    setting_option(
        "device", "-d", metavar="DEVICE", help="Where to run: auto, cpu, cuda, cuda:N or mps."
    ),
]
RunsOpt = Annotated[
    Path | None, setting_option("runs_dir", help="Folder that holds the run folders.")
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        metavar="DIR",
        help="A folder holding the four MNIST files (.gz or not), tried before the "
        "configured mirrors.",
        show_default=False,
    ),
]
DataRootOpt = Annotated[
    Path | None, setting_option("data.root", help="Cache folder for the verified MNIST files.")
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

# Flags a command once had under another name, or whose name now means something else there:
# {command: {old spelling: (new flag, what it sets)}}. Typing one is a one-line error that
# names the new flag (cli.OneLineErrors), never a silent change of meaning.
_RUNS = ("--runs-dir", "the folder that holds the run folders")
RENAMED: dict[str, dict[str, tuple[str, str]]] = {
    "train": {"--out": _RUNS, "-o": _RUNS},
    "predict": {"--out": _RUNS, "-o": _RUNS},
    "eval": {
        "--out": _RUNS,
        "-o": _RUNS,
        "--save": ("--out-dir", "the folder for the figures and eval.json"),
        "--top": ("--pairs", "the number of most confused pairs to list"),
    },
    "inspect": {
        "--out": _RUNS,
        "-o": _RUNS,
        "--save": ("--out-dir", "the folder for the --image figures"),
    },
}


def renamed_flag(command: str, flag: str) -> str | None:
    """The one-line message for a flag `command` no longer has under that name, or None."""
    new = RENAMED.get(command, {}).get(flag)
    if new is None:
        return None
    return f"{command} {flag} is now {new[0]} ({new[1]})"


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


def stderr_log(quiet: bool, err: Console) -> Callable[[str], None]:
    """Messages (downloads, notes) on stderr, or nowhere with --quiet/--json."""
    return (lambda _m: None) if quiet else (lambda m: err.print(escape(m)))
