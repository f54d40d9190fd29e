"""Settings: built-in defaults < recipe < .mnistcli.toml < MNISTCLI_* environment < flags.

Every value remembers where it came from, so an error can name the key and the file (or the
variable, or the flag) that set it. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistcli.errors import ConfigError

CONFIG_FILENAME = ".mnistcli.toml"
ENV_PREFIX = "MNISTCLI_"

# The mirrors torchvision itself uses; a local folder listed first wins (see .mnistcli.toml).
PUBLIC_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
SCHEDULES = ("constant", "onecycle")
# How the epoch kept in best.pt is chosen on the validation split (run_state.RunState.record)
SELECTIONS = ("highest", "latest-within-se")
PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 where the hardware runs it natively
EXPORT_FORMATS = ("onnx", "safetensors", "pt2")  # what `mnistcli export` writes


def default_data_root() -> str:
    """The per-user cache folder for MNIST (XDG on Linux)."""
    from platformdirs import user_cache_dir

    return str(Path(user_cache_dir("mnistcli")) / "mnist")


# Recipes: named sets of training hyper-parameters for the same SimpleCNN. A recipe fills in
# every train.* key that no file, variable or flag set.
RECIPES: dict[str, dict[str, Any]] = {
    # The reference design: Adam 1e-3, batch 64, early stopping with patience 3.
    "reference": {
        "epochs": 20,
        "patience": 3,
        "batch_size": 64,
        "lr": 1e-3,
        "schedule": "constant",
        "shift": 0.0,
        "precision": "fp32",
    },
    # Tuned for wall time on a 2-core CPU (bench/README.md has the runs): a one-cycle schedule
    # peaking at 3e-3, batches of 256, random shifts of up to 1.5 px, bf16 autocast where the
    # hardware runs it natively (2.5x the fp32 throughput on an AVX512-BF16 CPU here).
    "fast": {
        "epochs": 10,
        "patience": 3,
        "batch_size": 256,
        "lr": 3e-3,
        "schedule": "onecycle",
        "shift": 1.5,
        "precision": "auto",
    },
    # For accuracy, within 15 textbook epochs of wall time on 2 CPU cores: the same SimpleCNN
    # (dropout 0.5) on random affine warps of every image (shifts up to 2 px, rotations up to
    # 8 degrees, 0.92-1.08x size, shear up to 6 degrees; milder than the 12 / 0.1 / 10 first
    # used, which scored 0.07 points lower on validation over 3 seeds, see bench/README.md), a
    # 40-epoch one-cycle schedule with no early stopping (the best epoch is still chosen on the
    # validation split), label smoothing 0.1, bf16 autocast where the hardware runs it natively.
    # The epoch kept is the latest whose validation accuracy lies within one standard error of
    # the highest: on 5,000 images the highest is often a mid-schedule noise peak, and picking
    # it cost 0.07-0.09 points on held-out halves of the validation split (bench/README.md).
    "best": {
        "epochs": 40,
        "patience": 0,
        "batch_size": 256,
        "lr": 3e-3,
        "schedule": "onecycle",
        "shift": 2.0,
        "rotate": 8.0,
        "scale": 0.08,
        "shear": 6.0,
        "label_smoothing": 0.1,
        "precision": "auto",
        "select": "latest-within-se",
    },
}


@dataclass(frozen=True)
class Spec:
    """One setting: its type, its default, the flag that sets it, and how --help shows it."""

    kind: type
    default: Any
    flag: str | None = None  # the command-line flag, e.g. "--runs-dir" for runs_dir
    shown: str | None = None  # the default as --help words it, when not the value itself


_REFERENCE = RECIPES["reference"]

# section -> key -> Spec: the one home of every default. The "" section holds the keys shared
# by every command; the train defaults are the reference recipe's.
SCHEMA: dict[str, dict[str, Spec]] = {
    "": {
        "device": Spec(str, "auto", "--device"),
        "runs_dir": Spec(Path, "runs", "--runs-dir"),
    },
    "data": {
        "root": Spec(Path, None, "--data-root", shown="the user cache"),  # default_data_root()
        "mirrors": Spec(list, list(PUBLIC_MIRRORS)),
        "val_size": Spec(int, 5000, "--val-size"),
    },
    "train": {
        "model": Spec(str, "simplecnn", "--model"),
        "recipe": Spec(str, "reference", "--recipe"),
        "epochs": Spec(int, _REFERENCE["epochs"], "--epochs"),
        "patience": Spec(int, _REFERENCE["patience"], "--patience"),
        "batch_size": Spec(int, _REFERENCE["batch_size"], "--batch-size"),
        "lr": Spec(float, _REFERENCE["lr"], "--lr"),
        "schedule": Spec(str, _REFERENCE["schedule"]),
        "shift": Spec(float, _REFERENCE["shift"]),
        "rotate": Spec(float, 0.0),
        "scale": Spec(float, 0.0),
        "shear": Spec(float, 0.0),
        "label_smoothing": Spec(float, 0.0),
        "precision": Spec(str, _REFERENCE["precision"], "--precision"),
        "select": Spec(str, "highest"),
        "seed": Spec(int, 0, "--seed"),
        "limit": Spec(int, 0, "--limit"),
        "threads": Spec(int, 0, "--threads"),
    },
    "eval": {
        "batch_size": Spec(int, 256, "--batch-size"),
        "pairs": Spec(int, 10, "--pairs"),  # most confused pairs eval lists
        "gallery": Spec(int, 16, "--gallery"),
    },
    "predict": {
        "top_k": Spec(int, 3, "--top-k"),
        # Below 0.5 the model gives the nine other digits together more probability than its
        # answer: if it is calibrated, such an answer is more often wrong than right.
        "min_confidence": Spec(float, 0.5, "--min-confidence"),
        "workers": Spec(int, 0, "--workers", shown="the number of cores"),  # 0: every core
    },
    "export": {
        "format": Spec(str, "onnx", "--format"),
        "check_images": Spec(int, 0, "--check-images", shown="all 10,000"),  # 0: all
    },
}


# Keys that were settings once: a file or variable that sets one is refused with what to do.
# The four removed ones: no recipe used them and the benchmarks found no gain (bench/README.md).
RETIRED: dict[str, str] = {
    "train.augment": "was renamed 'train.shift' (the largest random shift in pixels)",
    "eval.top": "was renamed 'eval.pairs' (the most confused pairs to list; flag --pairs)",
    **{
        f"train.{key}": "was removed (no recipe used it; bench/README.md has what it did)"
        for key in ("elastic", "ema", "clean_epochs", "weight_decay")
    },
}


# predict's numbers: key, largest value, what it is
_PREDICT_BOUNDS = (
    ("predict.min_confidence", 1, "it is a probability between 0 and 1 (0: mark nothing)"),
    ("predict.workers", 1024, "it must be 0 (every core) or a number of processes"),
)


def spec(qualified: str) -> Spec:
    """The Spec of a qualified key ("train.epochs", "device")."""
    section, _, key = qualified.rpartition(".")
    return SCHEMA[section][key]


def flag_name(qualified: str) -> str:
    """The flag a user types for a key (`--runs-dir` for runs_dir), or the key if it has none."""
    return spec(qualified).flag or qualified


def default_text(qualified: str) -> str:
    """A key's built-in default as --help shows it."""
    s = spec(qualified)
    return s.shown if s.shown is not None else str(s.default)


@dataclass(frozen=True)
class Setting:
    """A resolved setting and its source: "default", a file path, "MNISTCLI_X" or "--flag"."""

    value: Any
    source: str


def _qualified(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _env_name(section: str, key: str) -> str:
    return ENV_PREFIX + (f"{section}_{key}" if section else key).upper()


def _all_keys() -> dict[str, tuple[str, str]]:
    return {_qualified(s, k): (s, k) for s, keys in SCHEMA.items() for k in keys}


def did_you_mean(word: str, options: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest option, or nothing when none is close."""
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(raw: Any, kind: type, where: str, base: Path | None, *, from_env: bool = False) -> Any:
    """Check a TOML value's type, or parse an environment variable's text, for one key."""
    from_text = from_env and isinstance(raw, str) and kind is not str and kind is not Path
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            if from_text and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return raw.lower() in ("1", "true", "yes", "on")
            raise ValueError
        if kind is int:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, int):
                return raw
            if from_text:
                return int(raw)
            raise ValueError
        if kind is float:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, int | float):
                return float(raw)
            if from_text:
                return float(raw)
            raise ValueError
        if kind is list:
            # a comma-separated string only from an environment variable; TOML has lists
            items = raw.split(",") if isinstance(raw, str) and from_env else raw
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError
            return [_resolve_location(i.strip(), base) for i in items if i.strip()]
        if kind is Path:
            if not isinstance(raw, str) or not raw:
                raise ValueError
            path = Path(raw).expanduser()
            return path if path.is_absolute() or base is None else base / path
        if not isinstance(raw, str):
            raise ValueError
        return raw
    except ValueError:
        names = {
            int: "an integer",
            float: "a number",
            bool: "true or false",
            str: "a string",
            Path: "a path (a string)",
            list: "a list of strings",
        }
        raise ConfigError(f"{where} must be {names[kind]}, got {raw!r}") from None


def _resolve_location(entry: str, base: Path | None) -> str:
    """A mirror is a URL (kept as is) or a folder (made absolute against the file that named it)."""
    if "://" in entry:
        return entry
    path = Path(entry).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path)


def read_config_file(path: Path) -> dict[str, Setting]:
    """Parse a .mnistcli.toml into qualified keys; unknown keys and wrong types are errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) file; a config file is TOML") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    base = path.resolve().parent
    values: dict[str, Setting] = {}
    sections = [s for s in SCHEMA if s]
    for name, item in doc.items():
        if isinstance(item, dict):
            if name not in SCHEMA or not name:
                raise ConfigError(
                    f"unknown section [{name}] in {path}{did_you_mean(name, sections)}; "
                    f"known sections: {', '.join(sections)}"
                )
            entries = [(name, k, v) for k, v in item.items()]
        else:
            entries = [("", name, item)]
        for section, key, raw in entries:
            qualified = _qualified(section, key)
            if qualified in RETIRED:
                raise ConfigError(f"'{qualified}' in {path} {RETIRED[qualified]}; edit that line")
            if key not in SCHEMA[section]:
                known = [_qualified(section, k) for k in SCHEMA[section]]
                raise ConfigError(
                    f"unknown key '{qualified}' in {path}"
                    f"{did_you_mean(qualified, list(_all_keys()))}; "
                    f"known keys here: {', '.join(known)}"
                )
            kind = SCHEMA[section][key].kind
            where = f"'{qualified}' in {path}"
            values[qualified] = Setting(_coerce(raw, kind, where, base), str(path))
    return values


def read_environment(env: Mapping[str, str], cwd: Path) -> dict[str, Setting]:
    """MNISTCLI_<SECTION>_<KEY> variables (MNISTCLI_DEVICE, MNISTCLI_TRAIN_EPOCHS, ...)."""
    by_name = {_env_name(s, k): (s, k) for s, keys in SCHEMA.items() for k in keys}
    retired = {_env_name(*q.split(".")): why for q, why in RETIRED.items()}
    values: dict[str, Setting] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        if name in retired:
            raise ConfigError(f"environment variable {name}: the setting {retired[name]}; unset it")
        if name not in by_name:
            raise ConfigError(
                f"unknown environment variable {name}"
                f"{did_you_mean(name, list(by_name))}; unset it or fix its name"
            )
        section, key = by_name[name]
        kind = SCHEMA[section][key].kind
        values[_qualified(section, key)] = Setting(
            _coerce(raw, kind, name, cwd, from_env=True), name
        )
    return values


def find_config_file(explicit: Path | None, cwd: Path) -> Path | None:
    """`--config PATH` must exist; otherwise ./.mnistcli.toml is used when present."""
    if explicit is not None:
        if explicit.is_dir():
            raise ConfigError(f"--config {explicit} is a folder; pass a .toml file")
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist; check the --config path")
        return explicit
    candidate = cwd / CONFIG_FILENAME
    return candidate if candidate.is_file() else None


def resolve(
    flags: Mapping[str, Any],
    *,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Setting]:
    """Merge every layer into one value per qualified key, then validate the result.

    `flags` maps qualified keys ("train.epochs", "device") to what the user typed on the command
    line, with None for "not given". Flag values are taken as already typed by Typer.
    """
    cwd = cwd or Path.cwd()
    env = os.environ if env is None else env
    values = {}
    for qualified, (section, key) in _all_keys().items():
        kind, default = SCHEMA[section][key].kind, SCHEMA[section][key].default
        if kind is Path and default is not None:
            default = cwd / default  # relative defaults are relative to where mnistcli runs
        values[qualified] = Setting(default, "default")
    values["data.root"] = Setting(Path(default_data_root()), "default")
    path = find_config_file(config, cwd)
    layers = [read_config_file(path) if path else {}, read_environment(env, cwd)]
    flag_layer: dict[str, Setting] = {}
    for qualified, raw in flags.items():
        if qualified not in values:
            raise ValueError(f"flag for unknown key {qualified}")  # a programming error
        if raw is not None:
            flag = flag_name(qualified)
            if isinstance(raw, Path) and not raw.is_absolute():
                raw = cwd / raw
            flag_layer[qualified] = Setting(raw, flag)
    layers.append(flag_layer)
    for layer in layers:
        values.update(layer)
    _apply_recipe(values)
    validate(values)
    return values


def _apply_recipe(values: dict[str, Setting]) -> None:
    recipe = values["train.recipe"]
    if recipe.value not in RECIPES:
        raise ConfigError(
            f"unknown recipe '{recipe.value}' from {recipe.source}"
            f"{did_you_mean(recipe.value, list(RECIPES))}; "
            f"choose one of: {', '.join(RECIPES)}"
        )
    for key, setting in RECIPES[recipe.value].items():
        if values[f"train.{key}"].source == "default":
            values[f"train.{key}"] = Setting(setting, f"recipe {recipe.value}")


# Numbers between 0 and a top: (key, top, what it is, as validate's message says it)
_BOUNDED = (
    ("train.shift", 8, "the largest random shift in pixels, between 0 and 8"),
    ("train.rotate", 45, "the largest random rotation in degrees, between 0 and 45"),
    ("train.scale", 0.5, "the largest random change of size, between 0 and 0.5"),
    ("train.shear", 45, "the largest random shear in degrees, between 0 and 45"),
    ("train.label_smoothing", 0.5, "cross-entropy's label smoothing, between 0 and 0.5"),
)


def validate(values: Mapping[str, Setting]) -> None:
    """Range checks with a message that says which key, where it was set and what is allowed."""

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            v = values[key]
            raise ConfigError(f"{key} = {v.value!r} (from {v.source}) is invalid: {what}")

    device = values["device"].value
    need("device", bool(DEVICE_PATTERN.fullmatch(device)), "use auto, cpu, cuda, cuda:N or mps")
    need("train.epochs", values["train.epochs"].value >= 1, "it must be at least 1")
    need(
        "train.patience",
        values["train.patience"].value >= 0,
        "it must be 0 (no early stopping) or more",
    )
    need(
        "train.batch_size",
        1 <= values["train.batch_size"].value <= 65536,
        "it must be between 1 and 65536",
    )
    lr = values["train.lr"].value
    need("train.lr", math.isfinite(lr) and 0 < lr <= 10, "it must be a positive number, e.g. 1e-3")
    for key, choices in (
        ("train.schedule", SCHEDULES),
        ("train.precision", PRECISIONS),
        ("train.select", SELECTIONS),
        ("export.format", EXPORT_FORMATS),
    ):
        value = values[key].value
        need(
            key,
            value in choices,
            f"choose one of: {', '.join(choices)}{did_you_mean(value, list(choices))}",
        )
    for key, top, what in _BOUNDED:
        value = values[key].value
        need(key, math.isfinite(value) and 0 <= value <= top, f"it is {what}")
    need("train.seed", 0 <= values["train.seed"].value < 2**63, "it must be a non-negative integer")
    need(
        "train.limit",
        values["train.limit"].value >= 0,
        "it is a number of training images, 0 for all",
    )
    need(
        "train.threads",
        0 <= values["train.threads"].value <= 1024,
        "it must be 0 (all cores) or a positive number",
    )
    need(
        "data.val_size",
        1 <= values["data.val_size"].value <= 30000,
        "hold out between 1 and 30000 of the 60000 training images",
    )
    need(
        "data.mirrors",
        len(values["data.mirrors"].value) > 0,
        "list at least one folder or URL holding the four MNIST files",
    )
    need(
        "eval.batch_size",
        1 <= values["eval.batch_size"].value <= 65536,
        "it must be between 1 and 65536",
    )
    for key in ("eval.pairs", "eval.gallery"):
        need(key, values[key].value >= 0, "it must be 0 or more")
    need("predict.top_k", 1 <= values["predict.top_k"].value <= 10, "it must be between 1 and 10")
    for key, top, what in _PREDICT_BOUNDS:
        need(key, 0 <= values[key].value <= top, what)
    need(
        "export.check_images",
        values["export.check_images"].value >= 0,
        "it is a number of test digits, 0 for all",
    )
