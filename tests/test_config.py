from pathlib import Path

import pytest

from mnistcli.config import RECIPES, read_config_file, resolve
from mnistcli.errors import ConfigError
from mnistcli.settings import train_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".mnistcli.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_reference_recipe(tmp_path):
    values = resolve({}, env={}, cwd=tmp_path)
    s = train_settings(values)
    assert (s.hyper.epochs, s.hyper.patience, s.hyper.batch_size, s.hyper.lr) == (20, 3, 64, 1e-3)
    assert s.hyper.val_size == 5000 and s.device == "auto"
    assert values["train.epochs"].source == "recipe reference"


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    write(tmp_path, "[train]\nepochs = 7\npatience = 5\nbatch_size = 32\n")
    env = {"MNISTCLI_TRAIN_PATIENCE": "4", "MNISTCLI_TRAIN_BATCH_SIZE": "16"}
    values = resolve({"train.batch_size": 8}, env=env, cwd=tmp_path)
    assert values["train.epochs"].value == 7  # file
    assert values["train.patience"].value == 4  # env beats file
    assert values["train.batch_size"].value == 8  # flag beats env
    assert values["train.lr"].value == 1e-3  # default (recipe)
    assert values["train.batch_size"].source == "--batch-size"
    assert values["train.patience"].source == "MNISTCLI_TRAIN_PATIENCE"


def test_recipe_fills_only_unset_keys(tmp_path):
    write(tmp_path, '[train]\nrecipe = "fast"\nepochs = 9\n')
    values = resolve({}, env={}, cwd=tmp_path)
    assert values["train.epochs"].value == 9
    assert values["train.batch_size"].value == RECIPES["fast"]["batch_size"]
    assert values["train.schedule"].value == "onecycle"


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, "[train]\nepoch = 3\n")
    with pytest.raises(ConfigError) as err:
        read_config_file(path)
    msg = str(err.value)
    assert "train.epoch" in msg and str(path) in msg and "did you mean 'train.epochs'" in msg


def test_unknown_section_and_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[trian\].*did you mean 'train'"):
        read_config_file(write(tmp_path, "[trian]\nepochs = 3\n"))
    with pytest.raises(ConfigError, match=r"'train.epochs' in .* must be an integer, got 'ten'"):
        read_config_file(write(tmp_path, '[train]\nepochs = "ten"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config_file(write(tmp_path, "[train\n"))


def test_environment_typos_and_bad_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"MNISTCLI_TRAIN_EPOHCS.*did you mean"):
        resolve({}, env={"MNISTCLI_TRAIN_EPOHCS": "3"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="MNISTCLI_TRAIN_LR must be a number"):
        resolve({}, env={"MNISTCLI_TRAIN_LR": "fast"}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"train.epochs": 0}, "train.epochs = 0 (from --epochs) is invalid"),
        ({"train.lr": -1.0}, "train.lr"),
        ({"device": "gpu"}, "use auto, cpu, cuda, cuda:N or mps"),
        ({"data.val_size": 0}, "data.val_size"),
        ({"train.recipe": "fsat"}, "did you mean 'fast'"),
        ({"train.shift": 9.0}, "the largest random shift in pixels, between 0 and 8"),
        ({"train.rotate": 90.0}, "train.rotate"),
        ({"train.select": "latest"}, "choose one of: highest, latest-within-se"),
    ],
)
def test_range_checks_name_the_key_and_source(tmp_path, flags, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        resolve(flags, env={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("ema", "'train.ema' in {path} was removed (no recipe used it"),
        ("elastic", "'train.elastic' in {path} was removed"),
        ("clean_epochs", "'train.clean_epochs' in {path} was removed"),
        ("weight_decay", "'train.weight_decay' in {path} was removed"),
        ("augment", "'train.augment' in {path} was renamed 'train.shift'"),
    ],
)
def test_a_removed_or_renamed_setting_is_a_one_line_error(tmp_path, key, says):
    """Not "unknown key, did you mean": the file or variable names a setting that existed."""
    path = write(tmp_path, f"[train]\n{key} = 0\n")
    with pytest.raises(ConfigError) as info:
        resolve({}, env={}, cwd=tmp_path)
    message = str(info.value)
    assert says.format(path=path) in message and "\n" not in message
    assert "did you mean" not in message
    variable = f"MNISTCLI_TRAIN_{key.upper()}"
    with pytest.raises(ConfigError, match=f"environment variable {variable}: the setting was"):
        resolve({}, env={variable: "0"}, cwd=tmp_path / "elsewhere")


def test_relative_paths_in_file_resolve_against_the_file(tmp_path):
    sub = tmp_path / "proj"
    sub.mkdir()
    write(sub, 'runs_dir = "out"\n[data]\nmirrors = ["local", "https://example.org/m/"]\n')
    values = resolve({}, env={}, cwd=sub)
    assert values["runs_dir"].value == sub / "out"
    assert values["data.mirrors"].value == [str(sub / "local"), "https://example.org/m/"]


def test_explicit_config_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve({}, config=tmp_path / "nope.toml", env={}, cwd=tmp_path)


def test_repository_config_file_is_valid():
    repo = Path(__file__).resolve().parent.parent
    values = read_config_file(repo / ".mnistcli.toml")
    mirrors = values["data.mirrors"].value
    assert mirrors[0].endswith("shared/mnist") and mirrors[1].startswith("https://")


def test_text_in_toml_is_not_parsed_as_a_number_and_binary_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="must be an integer, got '10'"):
        read_config_file(write(tmp_path, '[train]\nepochs = "10"\n'))
    with pytest.raises(ConfigError, match="must be a list of strings"):
        read_config_file(write(tmp_path, '[data]\nmirrors = "a,b"\n'))
    path = tmp_path / ".mnistcli.toml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not a text"):
        read_config_file(path)


def test_device_with_a_trailing_newline_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="use auto, cpu"):
        resolve({}, env={"MNISTCLI_DEVICE": "cpu\n"}, cwd=tmp_path)


def test_sources_and_errors_name_the_flag_the_user_typed(tmp_path):
    values = resolve(
        {"runs_dir": Path("r"), "data.root": Path("d"), "train.batch_size": 8}, env={}, cwd=tmp_path
    )
    assert values["runs_dir"].source == "--runs-dir" and values["data.root"].source == "--data-root"
    assert values["train.batch_size"].source == "--batch-size"
    with pytest.raises(ConfigError, match=r"predict.top_k = 11 \(from --top-k\)"):
        resolve({"predict.top_k": 11}, env={}, cwd=tmp_path)


def test_help_defaults_come_from_the_schema():
    from typer.testing import CliRunner

    from mnistcli.cli import app
    from mnistcli.config import SCHEMA, default_text

    text = " ".join(CliRunner().invoke(app, ["train", "--help"]).output.split())
    assert SCHEMA["train"]["epochs"].default == RECIPES["reference"]["epochs"]
    for key in ("train.epochs", "train.patience", "train.lr", "data.val_size", "runs_dir"):
        assert f"[default: {default_text(key)}]" in text, key


def test_settings_defaults_are_the_schemas(tmp_path):
    """The typed settings take their defaults from SCHEMA, and resolving nothing gives them."""
    import dataclasses

    from mnistcli.config import SCHEMA
    from mnistcli.settings import DataSettings, HyperParams

    for f in dataclasses.fields(HyperParams):
        section = "data" if f.name == "val_size" else "train"
        assert f.default == SCHEMA[section][f.name].default, f.name
    assert DataSettings(Path("."), ()).val_size == SCHEMA["data"]["val_size"].default
    resolved = train_settings(resolve({}, env={}, cwd=tmp_path))
    assert resolved.hyper == HyperParams()


def test_command_settings_defaults_are_the_schemas():
    """eval, predict, inspect and export settings take their defaults from SCHEMA too."""
    import dataclasses

    from mnistcli.config import SCHEMA
    from mnistcli.settings import EvalSettings, ExportSettings, InspectSettings, PredictSettings

    checked = set()
    sections = {
        EvalSettings: "eval",
        PredictSettings: "predict",
        InspectSettings: "train",
        ExportSettings: "export",
    }
    keys: dict[str, str] = {}
    for cls, section in sections.items():
        for f in dataclasses.fields(cls):
            for where in (section, ""):
                key = keys.get(f.name, f.name) if cls is EvalSettings else f.name
                if key in SCHEMA[where]:
                    spec = SCHEMA[where][key]
                    assert f.default == spec.kind(spec.default), (cls.__name__, f.name)
                    checked.add(f"{cls.__name__}.{f.name}")
    assert checked == {
        *("EvalSettings.device", "EvalSettings.runs_dir", "EvalSettings.batch_size"),
        *("EvalSettings.pairs", "EvalSettings.gallery"),
        *("PredictSettings.device", "PredictSettings.runs_dir", "PredictSettings.top_k"),
        *("PredictSettings.min_confidence", "PredictSettings.workers"),
        *("InspectSettings.model", "InspectSettings.runs_dir", "InspectSettings.batch_size"),
        *("ExportSettings.runs_dir", "ExportSettings.format", "ExportSettings.check_images"),
    }
