"""--help in one convention across commands (placeholders, no <bool>, paragraphs that rewrap),
one flag name per idea (old spellings refused with the new name), --version anywhere,
completion for the shell named, and piped output without trailing spaces."""

from __future__ import annotations

import inspect
import itertools
import re

import pytest
import typer
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from mnistcli import __version__
from mnistcli.cli import _shell_given, app, paragraphs
from mnistcli.cli.options import RENAMED
from tests.helpers import run_cli

runner = CliRunner()
GROUP = typer.main.get_command(app)
COMMANDS = GROUP.commands
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9]*(\.\.\.)?")  # N, DIR, FILE, PATH..., SHELL


def params_of(command) -> list:
    """Every parameter --help shows for `command`, the help option included."""
    return command.get_params(typer.Context(command, info_name=command.name))


def help_of(*args: str, width: int = 120) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_every_placeholder_is_upper_case_and_flags_have_none(name):
    command = GROUP if name is None else COMMANDS[name]
    ctx = typer.Context(command, info_name=name)
    for param in params_of(command):
        shown = param.display_type_rich(ctx)
        if isinstance(param, TyperOption) and param.is_flag:
            assert not shown, (name, param.opts, shown)
        elif isinstance(param, TyperArgument):
            assert shown is None and PLACEHOLDER.fullmatch(param.display_name_raw), param.name
        else:
            assert shown and PLACEHOLDER.fullmatch(shown), (name, param.opts, shown)
    text = help_of(*([name] if name else []))
    assert "<" not in text and ">" not in text.replace("->", "")  # no <bool>, <int>, <path>
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<" not in usage, usage


def test_predicts_usage_line_and_argument_read_path_dots():
    text = help_of("predict")
    assert "predict [OPTIONS] PATH..." in text
    assert "list[str]" not in text


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_fits_the_width_and_paragraphs_rewrap(name, width):
    """No line is wider than the terminal, and each docstring paragraph is rewrapped to it:
    its text reads the same joined, and no line of it breaks early (a ragged source wrap)."""
    text = help_of(*([name] if name else []), width=width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    if name is None:
        return
    top = lines[: next(i for i, line in enumerate(lines) if line.startswith("╭"))]
    blocks = [b.strip("\n") for b in "\n".join(line.strip() for line in top).split("\n\n")]
    blocks = [b for b in blocks if b and not b.startswith("Usage:")]
    doc = paragraphs(COMMANDS[name].callback.__doc__).split("\n\n")
    for paragraph in doc:
        block = next(b for b in blocks if paragraph.startswith(b.split("\n")[0]))
        assert " ".join(block.split()) == paragraph
        rows = block.split("\n")
        for row, following in itertools.pairwise(rows):
            # a line broke early if the next line's first word would have fitted on it
            assert len(row) + 1 + len(following.split()[0]) > width - 2, (row, following)


def test_paragraphs_joins_lines_and_keeps_paragraph_breaks():
    doc = """First line
    goes on.

        Second   paragraph,
        wrapped.
    """
    assert paragraphs(doc) == "First line goes on.\n\nSecond paragraph, wrapped."
    assert paragraphs(inspect.cleandoc("one")) == "one" and paragraphs(None) == ""


# --- one name per idea ------------------------------------------------------------------------


def test_the_runs_folder_is_runs_dir_in_every_command_and_out_is_only_what_is_written():
    for name, command in COMMANDS.items():
        opts = {opt for p in params_of(command) for opt in p.opts}
        assert "--runs-dir" in opts, name
        assert "--save" not in opts and "--top" not in opts, name
        if "--out" in opts:  # what the command writes: export's file
            assert name == "export"
    assert {"--out-dir", "--pairs"} <= {o for p in params_of(COMMANDS["eval"]) for o in p.opts}
    assert "--out-dir" in {o for p in params_of(COMMANDS["inspect"]) for o in p.opts}


@pytest.mark.parametrize(
    ("command", "old"), [(c, old) for c, flags in RENAMED.items() for old in flags]
)
def test_an_old_spelling_is_a_one_line_error_naming_the_new_flag(command, old):
    new = RENAMED[command][old][0]
    assert new in {o for p in params_of(COMMANDS[command]) for o in p.opts}
    result = runner.invoke(app, [command, old, "x"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {command} {old} is now {new} (")


def test_the_config_key_of_the_pairs_is_eval_pairs_and_the_old_key_says_so(tmp_path):
    from mnistcli.config import ConfigError, read_config_file

    path = tmp_path / "c.toml"
    path.write_text("[eval]\npairs = 4\n")
    assert read_config_file(path)["eval.pairs"].value == 4
    path.write_text("[eval]\ntop = 4\n")
    with pytest.raises(ConfigError, match=r"'eval\.top' in .* was renamed 'eval\.pairs'"):
        read_config_file(path)


# --- --version, completion --------------------------------------------------------------------


@pytest.mark.parametrize("args", [[], *([name] for name in COMMANDS), ["predict", "-V"]])
def test_version_anywhere_on_the_line(args):
    flag = [] if args and args[-1] == "-V" else ["--version"]
    result = runner.invoke(app, [*args, *flag])
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"mnistcli {__version__}\n", "")


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("zsh", "#compdef"), ("bash", "complete -o default -F"), ("fish", "complete --command")],
)
def test_show_completion_prints_the_shell_asked_for(shell, marker):
    result = runner.invoke(app, ["--show-completion", shell])
    assert result.exit_code == 0, result.output
    assert marker in result.stdout


def test_install_completion_installs_the_shell_asked_for(tmp_path, monkeypatch):
    """From any shell, `--install-completion zsh` writes zsh's files, not bash's."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SHELL", "/bin/bash")
    result = runner.invoke(app, ["--install-completion", "zsh"])
    assert result.exit_code == 0, result.output
    assert "zsh completion installed" in result.stdout
    assert (tmp_path / ".zshrc").is_file() and not (tmp_path / ".bashrc").exists()


def test_a_completion_flag_without_a_shell_means_the_running_one():
    assert _shell_given(["--show-completion"]) == ["--show-completion", "auto"]
    assert _shell_given(["--show-completion", "--no-color"])[1] == "auto"
    assert _shell_given(["--show-completion", "zsh"]) == ["--show-completion", "zsh"]
    assert _shell_given(["train", "--show-completion"]) == ["train", "--show-completion"]
    result = runner.invoke(app, ["--show-completion", "tcsh"])
    assert result.exit_code == 2 and "tcsh: not one of 'auto', 'bash', 'zsh'" in result.stderr


# --- inspect's flags that need --image --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--raw"], "--raw takes --image's file as is"),
        (["--layer", "features.0"], "--layer picks one layer of --image's output"),
        (["--out-dir", "figs"], "--out-dir writes the figures of --image"),
    ],
)
def test_inspect_options_of_the_image_need_an_image(here, args, fragment):
    result = runner.invoke(app, ["inspect", *args])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"error: {fragment}; pass --image IMAGE too\n"


# --- piped output -----------------------------------------------------------------------------


def test_piped_help_has_no_trailing_spaces(tmp_path):
    for args in ([], ["eval"], ["predict"]):
        proc = run_cli(*args, "--help", cwd=tmp_path, timeout=60)
        assert proc.returncode == 0 and proc.stdout.count("\n") > 10
        assert [line for line in proc.stdout.splitlines() if line != line.rstrip()] == []


def test_trimmed_lines_strip_each_line_and_keep_the_rest():
    import io

    from mnistcli.cli.piped import TrimmedLines

    sink = io.StringIO()
    out = TrimmedLines(sink)
    out.write("a table   \n  indented  ")
    assert sink.getvalue() == "a table\n"  # the unfinished line waits for its end
    out.write("row  \n\x1b[1mbold\x1b[0m   \nend")
    out.flush()
    assert sink.getvalue() == "a table\n  indented  row\n\x1b[1mbold\x1b[0m\nend"
