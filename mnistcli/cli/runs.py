"""`mnistcli runs`: the runs under the runs folder and how each stands; `runs use NAME`
chooses which one 'latest' means."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mnistcli.cli.conventions import Command, Group, paragraphs
from mnistcli.cli.options import ConfigOpt, JsonOpt, RunsOpt, consoles, settings_values


def _runs_dir(runs_dir: Path | None, config: Path | None) -> Path:
    return settings_values({"runs_dir": runs_dir}, config)["runs_dir"].value


def list_cmd(
    ctx: typer.Context, runs_dir: RunsOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """List the runs and how each stands; 'runs use NAME' picks the one 'latest' means.

    Newest first: when each started, its recipe and device, epochs run of those planned, the
    best epoch, validation and test accuracy, and its state (finished, early-stopped,
    interrupted and resumable, or empty).

    The run marked * is the one 'latest' means: eval, predict, export and inspect use it
    when --checkpoint is left out. It is the newest run that has finished an epoch, or the
    one chosen with 'mnistcli runs use NAME'.
    """
    runs_dir = _runs_dir(runs_dir, config)
    ctx.obj = runs_dir  # `runs --runs-dir DIR use NAME` uses this folder too
    if ctx.invoked_subcommand is not None:
        return
    from mnistcli.render.fit import UNLIMITED
    from mnistcli.render.runs_view import runs_view
    from mnistcli.runs import list_runs

    runs = list_runs(runs_dir)
    if as_json:
        latest = next((r.name for r in runs if r.latest), None)
        doc = {"runs_dir": str(runs_dir), "latest": latest, "runs": [r.to_dict() for r in runs]}
        typer.echo(json.dumps(doc, indent=2))
        return
    cons = consoles()
    if not runs:
        cons.err.print(
            f"no runs in {escape(str(runs_dir))} yet; train one with 'mnistcli train'",
            soft_wrap=True,
        )
        return
    # a pipe or a file has no width (rich would lay out for 80 columns): every column, whole
    width = cons.out.width if cons.out.is_terminal else None
    if width is None:
        cons.out.width = UNLIMITED
    cons.out.print(runs_view(runs, width))


def use_cmd(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The run's folder name (see 'mnistcli runs').")
    ],
    runs_dir: RunsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Make NAME the run 'latest' means (repoints runs/latest) until the next training run."""
    from mnistcli.runs import use_run

    given = runs_dir is not None or ctx.obj is None  # else `runs --runs-dir DIR use NAME`
    run_dir = use_run(_runs_dir(runs_dir, config) if given else ctx.obj, name)
    consoles().err.print(f"latest is now {escape(run_dir.name)}", soft_wrap=True)


def runs_app(handles_errors: Callable[[Any], Any]) -> typer.Typer:
    """The `runs` group, each command behind the app's error handler (passed in, as
    cli/__init__ imports this module)."""
    app = typer.Typer(
        cls=Group,
        no_args_is_help=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback(invoke_without_command=True, help=paragraphs(list_cmd.__doc__))(
        handles_errors(list_cmd)
    )
    app.command("use", cls=Command, help=paragraphs(use_cmd.__doc__))(handles_errors(use_cmd))
    return app
