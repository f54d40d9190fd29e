"""`mnistcli runs`: the states of runs read from their files, which run 'latest' means, `runs
use`, and the hints that name the command that works."""

from __future__ import annotations

import json
import os
import re
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
    assert (
        "interrupted: continue one with 'mnistcli train --resume' and its folder" in result.stdout
    )
    doc = json.loads(runner.invoke(app, ["runs", "--runs-dir", str(four_runs), "--json"]).stdout)
    assert doc["latest"] == "cut"
    assert [r["status"] for r in doc["runs"]][:2] == ["empty", "interrupted"]
    assert doc["runs"][-1]["test_acc"] == 0.99 and doc["runs"][-1]["recipe"] == "fast"


def test_runs_use_command(four_runs):
    result = runner.invoke(app, ["runs", "use", "stopped", "--runs-dir", str(four_runs)])
    assert result.exit_code == 0 and "latest is now stopped" in result.stderr
    bad = runner.invoke(app, ["runs", "use", "cut-early", "--runs-dir", str(four_runs)])
    assert bad.exit_code == 2 and "has not finished an epoch" in bad.stderr
    bad = runner.invoke(app, ["runs", "use", "killed", "--runs-dir", str(four_runs)])
    assert bad.exit_code == 2 and "nothing to use or resume" in bad.stderr


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


# --- piped output, advice that works, folders that are not runs ------------------------------


def test_piped_runs_show_every_column_whatever_columns_says(four_runs, monkeypatch):
    """A pipe or a file has no width: rich would lay the table out for COLUMNS (or 80) and
    leave columns out; every column comes, the notes on one line each, no trailing spaces."""
    monkeypatch.setenv("COLUMNS", "50")
    result = runner.invoke(app, ["runs", "--runs-dir", str(four_runs)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "run", "state", "test", "acc", "val", "acc", "epochs", "best", "started", "recipe", "device"
    ]  # fmt: skip
    assert "left out" not in result.stdout
    assert all(line == line.rstrip() for line in lines)
    assert "* latest: what eval, predict, export and inspect use without --checkpoint" in lines
    stopped = next(line for line in lines if line.startswith("  stopped"))
    assert stopped.split()[-2:] == ["fast", "cpu"] and "98.76%" in stopped


def test_a_narrow_terminal_still_leaves_columns_out_and_names_them(four_runs):
    from tests.helpers import on_a_terminal

    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": repo, "TERM": "xterm"}  # a dumb terminal is 80 wide
    _, screen = on_a_terminal(
        ["runs", "--runs-dir", str(four_runs)], four_runs, env, stream="stdout", columns=60
    )
    screen = re.sub(r"\x1b\[[0-9;]*m", "", screen)  # bold headers: NO_COLOR keeps styles
    lines = screen.splitlines()
    assert all(len(line) <= 60 for line in lines), screen
    assert lines[0].split()[:2] == ["run", "state"] and "device" not in lines[0]
    assert "left out for width:" in screen and "device" in " ".join(screen.split())


def test_the_interrupted_note_names_a_folder_that_resume_takes(four_runs, tmp_path):
    result = runner.invoke(app, ["runs", "--runs-dir", str(four_runs)])
    newest = four_runs / "cut-early"  # the newest of the two interrupted runs
    note = (
        f"interrupted: continue one with 'mnistcli train --resume' and its folder (e.g. {newest})"
    )
    assert note in result.stdout
    assert runs.resume_path(str(newest), four_runs) == newest / "last.pt"
    one = tmp_path / "one"
    make_run(one, "cut", stop_reason="interrupted")
    result = runner.invoke(app, ["runs", "--runs-dir", str(one)])
    assert f"interrupted: continue with 'mnistcli train --resume {one / 'cut'}'" in result.stdout


def test_runs_use_refuses_a_folder_that_is_not_a_run_and_says_what_to_do(four_runs):
    (four_runs / "empty").mkdir()
    result = runner.invoke(app, ["runs", "use", "empty", "--runs-dir", str(four_runs)])
    assert (result.exit_code, result.stdout) == (2, "")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a run: there is no checkpoint in it" in lines[0]
    assert f"'mnistcli runs --runs-dir {four_runs}' lists" in lines[0]
    assert "--resume" not in lines[0]  # the advice it gave before fails: nothing to resume
    # a run killed before its first save appears in 'runs' as empty: nothing to use or resume
    with pytest.raises(CheckpointError, match=r"stopped before an epoch was saved, so there is"):
        runs.use_run(four_runs, "killed")
    assert runs.latest_run(four_runs) == four_runs / "cut"  # latest left alone


def test_runs_use_on_an_interrupted_run_advises_a_resume_that_works(four_runs):
    with pytest.raises(CheckpointError) as info:
        runs.use_run(four_runs, "cut-early")
    advice = str(info.value).split("'mnistcli train --resume ")[1].rstrip("'")
    assert runs.resume_path(advice, four_runs) == four_runs / "cut-early" / "last.pt"
