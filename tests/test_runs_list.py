"""`mnistcli runs`: the states of runs read from their files, which run 'latest' means, `runs
use`, and the hints that name the command that works."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnistcli import runs
from mnistcli.cli import app
from mnistcli.errors import CheckpointError, ConfigError
from mnistcli.records import RunStatus, parse_run_status
from mnistcli.render.runs_view import fitting_columns, runs_view

runner = CliRunner()


def make_run(
    runs_dir: Path,
    name: str,
    *,
    stop_reason: str | None,
    epochs_run: int = 2,
    planned: int = 5,
    best: bool = True,
    last: bool = True,
    test_acc: float | None = None,
    when: float = 0.0,
) -> Path:
    """A run folder as the trainer leaves it (metrics.json, config.json, checkpoint files),
    its times set to `when` seconds after an arbitrary start."""
    run = runs_dir / name
    run.mkdir(parents=True)
    hyper = {"epochs": planned, "recipe": "fast"}
    (run / "config.json").write_text(json.dumps({"hyper": hyper, "device": "auto"}))
    if stop_reason is not None:
        summary = {
            "stop_reason": stop_reason,
            "device": "cpu",
            "epochs_run": epochs_run,
            "best_epoch": epochs_run if best else 0,
            "best_val_acc": 0.9876 if best else None,
            "test_acc": test_acc,
            "hyper": hyper,
        }
        (run / "metrics.json").write_text(json.dumps({"summary": summary, "history": []}))
    for kind, there in (("best", best), ("last", last)):
        if there:
            (run / f"{kind}.pt").write_bytes(b"")
    for path in [run, *run.iterdir()]:
        os.utime(path, (1_700_000_000 + when, 1_700_000_000 + when))
    return run


@pytest.fixture
def four_runs(tmp_path) -> Path:
    """One run in each state, the newest last; runs/latest points at the empty one."""
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, "old-completed", stop_reason="completed", test_acc=0.99, when=0)
    make_run(runs_dir, "stopped", stop_reason="early_stop", test_acc=0.98, when=10)
    make_run(runs_dir, "cut", stop_reason="interrupted", best=True, when=20)
    make_run(runs_dir, "cut-early", stop_reason="interrupted", epochs_run=0, best=False, when=30)
    empty = make_run(runs_dir, "killed", stop_reason=None, best=False, last=False, when=40)
    runs.point_latest(runs_dir, empty)
    return runs_dir


def test_old_and_new_stop_reasons_read_as_one_set_of_words():
    assert parse_run_status("completed") is RunStatus.FINISHED
    assert parse_run_status("early_stop") is RunStatus.EARLY_STOPPED
    assert parse_run_status("early-stopped") is RunStatus.EARLY_STOPPED
    assert parse_run_status("running") is RunStatus.INTERRUPTED
    assert parse_run_status(None, finished=True) is RunStatus.FINISHED
    assert RunStatus.INTERRUPTED.label == "interrupted (resumable)"


def test_runs_are_listed_newest_first_with_their_states(four_runs):
    found = runs.list_runs(four_runs)
    assert [(r.name, r.status.value) for r in found] == [
        ("killed", "empty"),
        ("cut-early", "interrupted"),
        ("cut", "interrupted"),
        ("stopped", "early-stopped"),
        ("old-completed", "finished"),
    ]
    stopped = found[3]
    assert (stopped.epochs_run, stopped.epochs_planned, stopped.recipe, stopped.device) == (
        2,
        5,
        "fast",
        "cpu",
    )
    assert (stopped.best_epoch, stopped.val_acc, stopped.test_acc) == (2, 0.9876, 0.98)


def test_latest_skips_runs_that_never_finished_an_epoch(four_runs):
    """runs/latest points at an empty run: 'latest' is the newest run with a best.pt."""
    assert runs.latest_run(four_runs) == four_runs / "cut"
    said: list[str] = []
    path = runs.resolve_checkpoint(None, four_runs, log=said.append)
    assert path == four_runs / "cut" / "best.pt" and said == ["using run cut (latest)"]
    assert [r.name for r in runs.list_runs(four_runs) if r.latest] == ["cut"]
    # --resume latest continues the newest run that has a last.pt, even one without an epoch
    assert runs.resume_path("latest", four_runs) == four_runs / "cut-early" / "last.pt"


def test_runs_use_repoints_latest_and_refuses_what_cannot_be_used(four_runs):
    assert runs.use_run(four_runs, "stopped") == four_runs / "stopped"
    assert runs.latest_run(four_runs) == four_runs / "stopped"
    with pytest.raises(CheckpointError, match=r"--resume .*cut-early"):
        runs.use_run(four_runs, "cut-early")
    with pytest.raises(CheckpointError, match="did you mean stopped"):
        runs.use_run(four_runs, "stoped")


def test_a_run_without_best_pt_hints_resume_not_train(four_runs):
    with pytest.raises(CheckpointError, match=r"train --resume .*cut-early"):
        runs.resolve_checkpoint(str(four_runs / "cut-early"), four_runs)
    only_stopped = four_runs.parent / "only"
    make_run(only_stopped, "x", stop_reason="interrupted", epochs_run=0, best=False)
    with pytest.raises(CheckpointError, match=r"no run in .* has finished an epoch yet"):
        runs.resolve_checkpoint(None, only_stopped)


def test_name_of_a_taken_run_hints_what_works_for_it(four_runs):
    with pytest.raises(ConfigError, match="already holds an early-stopped run; pick another"):
        runs.create_run(four_runs, "stopped")
    with pytest.raises(ConfigError, match=r"interrupted run; continue it with .*--resume"):
        runs.create_run(four_runs, "cut")


def test_runs_command_table_and_json(four_runs):
    result = runner.invoke(app, ["runs", "--runs-dir", str(four_runs)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["run", "state"]
    assert "* cut " in result.stdout and "98.76%" in result.stdout
    assert "interrupted: continue with 'mnistcli train --resume RUN'" in result.stdout
    doc = json.loads(runner.invoke(app, ["runs", "--runs-dir", str(four_runs), "--json"]).stdout)
    assert doc["latest"] == "cut"
    assert [r["status"] for r in doc["runs"]][:2] == ["empty", "interrupted"]
    assert doc["runs"][-1]["test_acc"] == 0.99 and doc["runs"][-1]["recipe"] == "fast"


def test_runs_use_command(four_runs):
    result = runner.invoke(app, ["runs", "use", "stopped", "--runs-dir", str(four_runs)])
    assert result.exit_code == 0 and "latest is now stopped" in result.stderr
    bad = runner.invoke(app, ["runs", "use", "killed", "--runs-dir", str(four_runs)])
    assert bad.exit_code == 2 and "has not finished an epoch" in bad.stderr


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_the_table_fits_the_width_and_says_what_it_left_out(four_runs, width):
    from rich.console import Console

    found = runs.list_runs(four_runs)
    console = Console(width=width, record=True, color_system=None)
    console.print(runs_view(found, width))
    text = console.export_text()
    assert all(len(line) <= width for line in text.splitlines())
    shown, dropped = fitting_columns(found, width)
    assert "98.76%" in text if any(c.header == "val acc" for c in shown) else True
    words = " ".join(text.split())  # the notes wrap at narrow widths
    if dropped:
        assert "left out for width: " + ", ".join(c.header for c in dropped) in words
    else:
        assert "left out" not in text
    assert [c.header for c in shown][:2] == ["run", "state"]
    for run in found:  # a state is never cut
        assert run.status.value in text
