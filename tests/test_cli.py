"""The command line: settings it builds (core patched), help/version/errors, a real run."""

import errno
import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mnistcli import __version__
from mnistcli.cli import app
from tests.helpers import SHARED_MNIST, cli_command, run_cli

runner = CliRunner()

# Every command the app has, read from the app itself: a new command is covered automatically.
COMMANDS = typer.main.get_command(app).commands


def test_version_and_help_list_every_command():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mnistcli {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    box = result.output[result.output.index("─ Commands ─") :].splitlines()
    box = box[1 : next(i for i, line in enumerate(box) if line.startswith("╰"))]
    rows = {line.split()[1]: line for line in box if line[2:3].strip()}  # not wrapped lines
    assert set(rows) == set(COMMANDS) >= {"train", "eval", "predict", "inspect"}
    for name, command in COMMANDS.items():
        first_words = " ".join(command.help.split()[:4])
        assert rows[name].startswith(f"│ {name} ") and first_words in rows[name], rows[name]


def test_train_help_documents_the_options():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for option in (
        "--device",
        "--epochs",
        "--patience",
        "--batch-size",
        "--lr",
        "--seed",
        "--val-size",
        "--limit",
        "--runs-dir",
        "--name",
        "--resume",
        "--config",
        "--recipe",
        "--quiet",
        "--json",
    ):
        assert option in result.output


SETTINGS_BY_COMMAND = {
    "train": {
        *("device", "runs_dir", "data.root", "data.val_size", "train.epochs", "train.patience"),
        *("train.batch_size", "train.lr", "train.seed", "train.limit", "train.recipe"),
        *("train.precision", "train.threads"),
    },
    "inspect": {"train.model", "train.batch_size", "runs_dir"},
    "eval": {
        *("device", "runs_dir", "data.root", "eval.batch_size", "eval.pairs", "eval.gallery"),
        "predict.workers",
    },
    "predict": {
        *("device", "runs_dir", "predict.top_k", "predict.min_confidence", "predict.workers"),
    },
    "export": {"runs_dir", "data.root", "export.format", "export.check_images"},
    "runs": {"runs_dir"},
    "draw": {"device", "runs_dir", "data.root"},
}


def test_each_commands_setting_options_are_schemas_keys_under_schemas_flags():
    """The flag-to-setting map is read from the options themselves (cli.options.setting_flags):
    each command sets the keys it always did, each through the flag SCHEMA names."""
    from mnistcli.cli.options import setting_flags
    from mnistcli.config import flag_name

    assert set(SETTINGS_BY_COMMAND) == set(COMMANDS)
    for name, command in COMMANDS.items():
        params = {p.name: p for p in command.params}
        flags = setting_flags(command.callback.__wrapped__, {n: n for n in params})
        assert set(flags) == SETTINGS_BY_COMMAND[name], name
        for key, param in flags.items():
            assert params[param].opts[0] == flag_name(key), (name, key, params[param].opts)


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Patch the trainer (and with it data loading); keep the settings the CLI built."""
    import mnistcli.cli.train as train_command

    seen = {}

    def no_data(values, log, **_):  # run_training loads the data; these tests never get that far
        pytest.fail("building the settings must not load MNIST")

    monkeypatch.setattr(train_command, "load_data", no_data)

    def fake_run(settings, values, *, quiet, plain, as_json):
        seen.update(settings=settings, quiet=quiet, plain=plain, as_json=as_json)

    monkeypatch.setattr(train_command, "run_training", fake_run)
    monkeypatch.chdir(tmp_path)
    return seen


def test_train_flags_env_and_file_build_the_expected_settings(captured, tmp_path, monkeypatch):
    (tmp_path / ".mnistcli.toml").write_text("[train]\nepochs = 7\nseed = 5\n")
    monkeypatch.setenv("MNISTCLI_TRAIN_SEED", "9")
    result = runner.invoke(
        app,
        [
            "train",
            "--patience",
            "2",
            "--lr",
            "0.01",
            "--limit",
            "100",
            "--device",
            "cpu",
            "--name",
            "exp",
            "--runs-dir",
            "elsewhere",
        ],
    )
    assert result.exit_code == 0, result.output
    s = captured["settings"]
    assert (s.hyper.epochs, s.hyper.seed, s.hyper.patience, s.hyper.lr) == (7, 9, 2, 0.01)
    assert (s.hyper.limit, s.device, s.name) == (100, "cpu", "exp")
    assert s.runs_dir == tmp_path / "elsewhere"
    assert set(s.explicit) == {"device", "runs_dir", "train.limit", "train.lr", "train.patience"}


def test_recipe_fast_sets_its_hyper_parameters(captured):
    result = runner.invoke(app, ["train", "--recipe", "fast", "--quiet"])
    assert result.exit_code == 0, result.output
    s = captured["settings"]
    assert s.hyper.recipe == "fast" and s.hyper.schedule == "onecycle"
    assert captured["quiet"] is True


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--epochs", "0"], "train.epochs = 0 (from --epochs) is invalid"),
        (["train", "--device", "gpu"], "use auto, cpu, cuda, cuda:N or mps"),
        (["train", "--config", "missing.toml"], "config file missing.toml does not exist"),
    ],
)
def test_bad_settings_are_one_line_errors(captured, args, fragment):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_bad_config_file_names_the_key(captured, tmp_path):
    (tmp_path / ".mnistcli.toml").write_text("[train]\nbatchsize = 32\n")
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2
    assert "unknown key 'train.batchsize'" in result.output
    assert "did you mean 'train.batch_size'" in result.output


def test_usage_errors_exit_2(tmp_path):
    assert runner.invoke(app, ["train", "--patience", "x"]).exit_code == 2
    assert runner.invoke(app, ["trian"]).exit_code == 2
    assert runner.invoke(app, ["train", "--recipe", "slow"]).exit_code == 2


def test_missing_data_is_a_one_line_error(tmp_path):
    proc = run_cli(
        "train",
        "--data-root",
        str(tmp_path / "root"),
        "--config",
        str(write_config(tmp_path, mirrors=[str(tmp_path / "nothing")])),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: could not get MNIST file")
    assert "--data DIR" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_cuda_device_this_machine_lacks_is_a_one_line_error(tmp_path):
    """Without CUDA, --device cuda is refused; with n GPUs, --device cuda:n (one past the last)
    is. Either way: exit 2, one line, before any data is loaded or run folder made."""
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        device = f"cuda:{n}"
        expected = (
            f"error: --device {device}: this machine has {n} CUDA device(s), numbered 0 to {n - 1}"
        )
    else:
        device = "cuda"
        expected = (
            "error: --device cuda asked for CUDA, but no CUDA GPU is available here; "
            "use --device cpu or --device auto"
        )
    proc = run_cli(
        *["train", "--device", device, "--limit", "100", "--data", str(SHARED_MNIST)],
        *["--data-root", str(tmp_path / "root")],
        cwd=tmp_path,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", expected + "\n")
    assert not (tmp_path / "root").exists() and not (tmp_path / "runs").exists()


@pytest.mark.cuda
def test_train_on_the_gpu_through_the_cli(monkeypatch, tmp_path, tiny_mnist):
    """The real trainer on a real GPU: --device cuda trains, and the result says where.
    (The GPU half of the suite: run on a machine with CUDA, e.g. `pytest -m cuda`.)"""
    import torch

    import mnistcli.cli.train as train_command

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    monkeypatch.setattr(train_command, "load_data", lambda values, log, **_: tiny_mnist)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [*["train", "--epochs", "2", "--val-size", "100"], *["--device", "cuda", "--json"]],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["device"] == "cuda:0"  # --device cuda is the current device, named by its index
    assert doc["epochs_run"] == 2 and 0.5 < doc["test_acc"] <= 1.0


def write_config(tmp_path: Path, mirrors: list[str]) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text("[data]\nmirrors = " + json.dumps(mirrors) + "\n")
    return path


@pytest.mark.slow
def test_real_mnist_end_to_end_piped(tmp_path, mnist_root):
    """One epoch on 4,000 real images: well above chance, plain piped output, all files.

    Piped with colour allowed (no NO_COLOR, a colour TERM): a pipe alone means plain lines."""
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("NO_COLOR")
    proc = run_cli(
        "train",
        "--limit",
        "4000",
        "--val-size",
        "1000",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--name",
        "e2e",
        "--data-root",
        str(mnist_root),
        "--config",
        str(write_config(tmp_path, [str(SHARED_MNIST)])),
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr  # no escape code of any kind
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("training simplecnn (421,642 parameters) on cpu")
    epoch_lines = [ln for ln in lines if ln.startswith("epoch  1")]
    assert len(epoch_lines) == 1  # one line per epoch, no progress-bar redraws
    run_dir = tmp_path / "runs" / "e2e"
    doc = json.loads((run_dir / "metrics.json").read_text())
    assert doc["history"][0]["val_acc"] > 0.8  # chance is 0.1
    assert doc["summary"]["test_acc"] > 0.8
    assert f"{100 * doc['summary']['test_acc']:.2f}%" in proc.stdout
    for name in ("best.pt", "last.pt", "metrics.csv", "metrics.json", "config.json", "curves.png"):
        assert (run_dir / name).is_file(), name
    from PIL import Image

    with Image.open(run_dir / "curves.png") as im:
        assert im.size == (1200, 480)
    # --json: one document on stdout, and resuming a finished run is refused cleanly
    proc = run_cli(
        "train",
        "--resume",
        str(run_dir),
        "--data-root",
        str(mnist_root),
        "--config",
        str(write_config(tmp_path, [str(SHARED_MNIST)])),
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "is finished: nothing to resume" in proc.stderr


def test_precision_and_compile_flags_reach_the_settings(captured):
    result = runner.invoke(app, ["train", "--precision", "bf16", "--compile"])
    assert result.exit_code == 0, result.output
    s = captured["settings"]
    assert s.hyper.precision == "bf16" and s.compile is True
    result = runner.invoke(app, ["train", "--recipe", "fast"])
    assert captured["settings"].hyper.precision == "auto" and captured["settings"].compile is False
    assert runner.invoke(app, ["train", "--precision", "fp16"]).exit_code == 2


def test_help_of_every_command_never_imports_torch():
    """`--help` must stay instant: no torch or torchvision import on any help path."""
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mnistcli.cli import app\n"
        f"for args in ([], *([name] for name in {sorted(COMMANDS)!r})):\n"
        "    result = CliRunner().invoke(app, [*args, '--help'])\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'PIL') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_usage_errors_are_one_line_through_the_runner_too():
    """The app's own group draws usage errors (no import hook, no boxed panel), so CliRunner
    sees what a user sees; `mnistcli` alone prints the help, with Typer's exit code 2."""
    result = runner.invoke(app, ["eval", "--split", "train"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: --split train: not one of 'test', 'val'; see 'mnistcli eval --help'\n"
    )
    result = runner.invoke(app, [])
    assert (result.exit_code, result.stderr) == (2, "")
    assert "Usage: mnistcli [OPTIONS] COMMAND [ARGS]..." in result.stdout


def test_usage_errors_are_one_line_through_the_real_cli(tmp_path):
    for args, fragment in (
        (["train", "--epochs", "abc"], "--epochs abc: not a whole number"),
        (["trian"], "No such command 'trian'"),
        (["eval", "--data", str(tmp_path / "nope")], "no such folder"),
    ):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_name_with_resume_and_a_folder_as_config_are_refused(captured, tmp_path):
    result = runner.invoke(app, ["train", "--resume", "latest", "--name", "x"])
    assert result.exit_code == 2 and "cannot go together" in result.output
    result = runner.invoke(app, ["train", "--config", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output


def test_train_json_on_tiny_data_is_one_document(monkeypatch, tmp_path, tiny_mnist):
    """The real trainer on synthetic data through the CLI: --json prints only the result."""
    import mnistcli.cli.train as train_command

    monkeypatch.setattr(train_command, "load_data", lambda values, log, **_: tiny_mnist)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        ["train", "--epochs", "2", "--val-size", "100", "--device", "cpu", "--name", "j", "--json"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["epochs_run"] == 2 and doc["stop_reason"] == "finished"
    assert doc["run_dir"].endswith("j") and 0.5 < doc["test_acc"] <= 1.0
    assert [h["epoch"] for h in doc["history"]] == [1, 2]


def test_live_view_draws_progress_table_and_curves(tmp_path, tiny_mnist):
    """The terminal view, driven by real trainer events into a forced interactive console."""
    import io

    from rich.console import Console

    from mnistcli.render.train_view import LiveView
    from mnistcli.train import train
    from tests.helpers import make_settings

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=True,
        force_interactive=True,
        width=120,
        color_system="truecolor",
    )
    view = LiveView(console)
    with view:
        train(
            make_settings(tmp_path, epochs=3, val_size=100, batch_size=50),
            tiny_mnist,
            on_event=view,
        )
    text = buffer.getvalue()
    assert "\x1b[" in text  # colour and cursor movement on a terminal
    for fragment in (
        "training simplecnn",
        "epochs  (patience",
        "img/s",
        "val acc",
        "★ best",
        "loss   • train   ▞ val",
        "test set (200 images)",
    ):
        assert fragment in text, fragment
    # the last frame reads top to bottom: the curves, then the test set's line
    assert text.rindex("loss   • train") < text.rindex("test set (200 images)")
    assert (tmp_path / "runs" / "test" / "curves.png").is_file()


@pytest.mark.slow
def test_a_real_terminal_gets_the_live_view(tmp_path, mnist_root):
    """On a pseudo-terminal, with colour allowed, training draws the live view: a table and
    curves redrawn in place (cursor movement), not one plain line per epoch."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR")
    controller, terminal = os.openpty()
    args = ["train", "--limit", "300", "--val-size", "100", "--epochs", "2", "--device", "cpu"]
    args += ["--data-root", str(mnist_root), "--data", str(SHARED_MNIST)]
    proc = subprocess.Popen(
        cli_command(*args),
        cwd=tmp_path,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not select.select([controller], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError as exc:  # EIO: the child closed the terminal
                assert exc.errno == errno.EIO
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
        code = proc.wait(timeout=30)
    text = b"".join(chunks).decode()
    assert code == 0, text
    assert "\x1b[?25l" in text  # the live view hides the cursor while it redraws...
    assert re.search(r"\x1b\[\d*A", text)  # ...and moves it up to draw over itself
    assert re.search(r"\x1b\[[0-9;]*m", text)  # in colour
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    # the table of epochs is drawn at least twice: when the test line is added below the curves
    # and when the view closes (the progress bar is drawn only by the refresh timer, so a
    # fast machine may finish an epoch between two frames: it is not asserted)
    assert plain.count("epochs  (patience 0/3)") >= 2, plain
    for fragment in ("┃ val acc ┃", "★ best", "loss   • train   ▞ val", "test set (10,000"):
        assert fragment in plain, fragment
    assert "epoch  1  train loss" not in plain  # not the plain per-epoch lines


def test_an_unforeseen_os_error_is_one_line_and_exit_1(capsys):
    """The last net under every command: an OSError nothing else caught (a file the system
    refused) is one line naming the file, exit code 1, no traceback."""
    from mnistcli.cli import handles_errors

    @handles_errors
    def command():
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/x.png")

    with pytest.raises(typer.Exit) as info:
        command()
    assert info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/data/x.png: Permission denied" in err


@pytest.mark.parametrize(
    ("hyper", "says", "omits"),
    [
        ({}, ["up to 20 epochs", "patience 3"], ["label smoothing", "shifts", "SE"]),
        ({"select": "latest-within-se"}, ["the latest epoch within 1 SE"], []),
        (
            {"epochs": 1, "shift": 2.0, "rotate": 8.0, "label_smoothing": 0.1},
            ["up to 1 epoch,", "shifts up to 2px", "affine warps", "label smoothing 0.1"],
            [],
        ),
        ({"shift": 1.5}, ["shifts up to 1.5px"], ["affine warps"]),
    ],
)
def test_the_run_line_names_every_setting_that_changes_the_training(hyper, says, omits):
    from mnistcli.events import RunStarted
    from mnistcli.render.train_view import describe_run
    from mnistcli.settings import HyperParams

    event = RunStarted(
        run_dir=Path("runs/x"),
        device="cpu",
        precision="fp32",
        hyper=HyperParams(**hyper),
        parameters=421_642,
        n_train=55_000,
        n_val=5_000,
        n_test=10_000,
        batches_per_epoch=860,
        start_epoch=1,
        resumed=False,
        history=(),
        best_epoch=0,
        epochs_without_gain=0,
    )
    line = describe_run(event)
    for fragment in says:
        assert fragment in line, (fragment, line)
    for fragment in omits:
        assert fragment not in line, (fragment, line)


def test_leaving_skips_the_shutdown_search_through_torchs_objects():
    """The command's objects are frozen before Python shuts down, so its last garbage
    collections do not walk the several hundred thousand objects torch made (a third of a
    second at every exit; bench/README.md, "predict on every core")."""
    code = (
        "import atexit, gc, sys\n"
        "import torch\n"
        "from mnistcli.cli import main\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"
        "sys.argv = ['mnistcli', '--version']\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"mnistcli {__version__}"
    assert int(lines[1].split()[1]) > 100_000  # torch's objects, left for the system to free


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["train", "--recipe", "foo"],
            "--recipe foo: not one of 'reference', 'fast', 'best'; see 'mnistcli train --help'",
        ),
        (
            ["train", "--recipe", "fats"],
            "--recipe fats: not one of 'reference', 'fast', 'best' (did you mean 'fast'?); "
            "see 'mnistcli train --help'",
        ),
        (
            ["train", "--precision", "fp8"],
            "--precision fp8: not one of 'fp32', 'bf16', 'auto'; see 'mnistcli train --help'",
        ),
        (
            ["eval", "--split", "foo"],
            "--split foo: not one of 'test', 'val'; see 'mnistcli eval --help'",
        ),
        (
            ["export", "-f", "onx"],
            "--format onx: not one of 'onnx', 'safetensors', 'pt2' (did you mean 'onnx'?); "
            "see 'mnistcli export --help'",
        ),
        (["train", "--lr", "fast"], "--lr fast: not a number; see 'mnistcli train --help'"),
        (
            ["train", "--recipe", "my recipe"],
            "--recipe 'my recipe': not one of 'reference', 'fast', 'best'; "
            "see 'mnistcli train --help'",
        ),
        (
            ["train", "--recipe", "a\nb"],
            "--recipe 'a\\nb': not one of 'reference', 'fast', 'best'; see 'mnistcli train --help'",
        ),
    ],
)
def test_a_bad_value_names_the_flag_and_the_value_once_in_mnistclis_words(args, line):
    """The flag and the value as typed, then what is wrong: no "Invalid value for" and no
    "Value error," (Typer's and pydantic's words), the value never said twice."""
    result = runner.invoke(app, args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"error: {line}\n"


def test_a_missing_argument_keeps_its_own_words():
    """click's MissingParameter is a BadParameter too, without a value: worded as before."""
    result = runner.invoke(app, ["runs", "use"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: Missing argument 'NAME'; see 'mnistcli runs use --help'\n"
