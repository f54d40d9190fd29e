"""mnistcli's --help convention, for every command and group: an upper-case placeholder for
each value (N, DIR, FILE, PATH...), none for flags, and help paragraphs that rewrap to the
terminal's width (tests/test_cli_help.py checks it)."""

from __future__ import annotations

import inspect as pyinspect
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


class _PlaceholderArgument(TyperArgument):
    """An argument whose placeholder is its only label: `PATH...` in the usage line and the
    Arguments panel, without Typer's `{PATH}...` braces or a second `<list[str]>` column."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None

    def get_usage_pieces(self, ctx: typer.Context) -> list[str]:
        name = self.display_name_raw
        return [name if self.required else f"[{name}]"]


def _conventional(params: list[Any]) -> list[Any]:
    """Typer 0.29's help shows a type placeholder beside every option, flags included (`--json
    <bool>`); a flag takes no value, so it shows none. Values show their declared metavar."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif type(param) is TyperArgument:
            # Typer builds every argument as a TyperArgument; the subclass only changes how
            # --help shows it, so swapping the class keeps its parsing as it is.
            param.__class__ = _PlaceholderArgument
    return params


class Command(TyperCommand):
    """Every mnistcli command: its --help in the app's one convention (see _conventional)."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _conventional(super().get_params(ctx))


def paragraphs(doc: str | None) -> str:
    """A docstring as help text: its paragraphs (blank-line separated) each on one line, so
    --help rewraps them to the terminal instead of keeping the source's line breaks (Typer's
    rich mode keeps them everywhere but in the first paragraph of a command's own help)."""
    text = pyinspect.cleandoc(doc or "")
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n"))


class Group(TyperGroup):
    """A command group (`mnistcli runs`) under the same --help convention as Command."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _conventional(super().get_params(ctx))
