"""Typed settings per command, built from the resolved values of config.py.

config.py resolves every layer (defaults < recipe < .mnistcli.toml < MNISTCLI_* < flags) into
plain values that remember where they came from; this module turns them into the small frozen
dataclasses the core takes (HyperParams, TrainSettings, EvalSettings...), whose field defaults
are read from config.SCHEMA, the one home of every default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistcli.config import SCHEMA, Setting
from mnistcli.errors import ConfigError


def _default(section: str) -> Callable[[str], Any]:
    """The dataclasses' field defaults, read from SCHEMA (the one home of every default)."""
    return lambda key: SCHEMA[section][key].default


_top, _data, _train = _default(""), _default("data"), _default("train")


@dataclass(frozen=True)
class DataSettings:
    """Where MNIST lives and how the validation split is cut."""

    root: Path
    mirrors: tuple[str, ...]
    val_size: int = _data("val_size")


@dataclass(frozen=True)
class HyperParams:
    """Everything that defines a training run's result; stored in every checkpoint."""

    model: str = _train("model")
    recipe: str = _train("recipe")
    epochs: int = _train("epochs")
    patience: int = _train("patience")
    batch_size: int = _train("batch_size")
    lr: float = _train("lr")
    schedule: str = _train("schedule")
    shift: float = _train("shift")  # largest random shift, pixels (0: none)
    rotate: float = _train("rotate")  # largest random rotation, degrees (0: none)
    scale: float = _train("scale")  # largest random change of size (0.1: 0.9-1.1x; 0: none)
    shear: float = _train("shear")  # largest random shear, degrees (0: none)
    label_smoothing: float = _train("label_smoothing")  # F.cross_entropy's (0: none)
    precision: str = _train("precision")  # fp32, bf16 (autocast) or auto
    select: str = _train("select")  # how best.pt's epoch is chosen: see SELECTIONS
    seed: int = _train("seed")
    val_size: int = _data("val_size")
    limit: int = _train("limit")  # training images used, 0 for all

    @property
    def augmented(self) -> bool:
        """Whether training images are altered at all (random shifts or affine warps)."""
        return any(v > 0 for v in (self.shift, self.rotate, self.scale, self.shear))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> HyperParams:
        """From a stored dict; runs saved before the rename call `shift` "augment", and the
        settings removed since (elastic, ema, clean_epochs, weight_decay) are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "augment" in raw and "shift" not in raw:
            raw = {**raw, "shift": raw["augment"]}
        return cls(**{k: v for k, v in raw.items() if k in names})

    @staticmethod
    def removed_in_use(raw: Mapping[str, Any]) -> list[str]:
        """The removed settings a stored dict sets to something other than their neutral 0
        (a run that used them cannot be resumed as it was)."""
        return [k for k in ("elastic", "ema", "clean_epochs", "weight_decay") if raw.get(k)]


@dataclass(frozen=True)
class TrainSettings:
    """What `mnistcli train` runs: the hyper-parameters plus where and how."""

    hyper: HyperParams
    data: DataSettings
    device: str = _top("device")
    runs_dir: Path = Path(_top("runs_dir"))
    name: str | None = None
    resume: str | None = None
    threads: int = _train("threads")
    compile: bool = False  # torch.compile the training forward pass
    explicit: tuple[str, ...] = field(default=())  # keys set by a flag (resume checks them)


def data_settings(values: Mapping[str, Setting]) -> DataSettings:
    return DataSettings(
        root=values["data.root"].value,
        mirrors=tuple(values["data.mirrors"].value),
        val_size=values["data.val_size"].value,
    )


def train_settings(
    values: Mapping[str, Setting],
    *,
    name: str | None = None,
    resume: str | None = None,
    compile: bool = False,
) -> TrainSettings:
    names = [f.name for f in dataclasses.fields(HyperParams) if f.name != "val_size"]
    hyper = HyperParams(
        **{name: values[f"train.{name}"].value for name in names},
        val_size=values["data.val_size"].value,
    )
    explicit = tuple(sorted(k for k, v in values.items() if v.source.startswith("--")))
    return TrainSettings(
        hyper=hyper,
        data=data_settings(values),
        device=values["device"].value,
        runs_dir=values["runs_dir"].value,
        name=name,
        resume=resume,
        threads=values["train.threads"].value,
        compile=compile,
        explicit=explicit,
    )


_eval, _predict, _export = _default("eval"), _default("predict"), _default("export")


@dataclass(frozen=True)
class EvalSettings:
    """What `mnistcli eval` runs: which checkpoint, on which split, and what it writes."""

    data: DataSettings
    device: str = _top("device")
    runs_dir: Path = Path(_top("runs_dir"))
    checkpoint: str | None = None  # a file, a run folder or 'latest'; None: the latest run
    split: str = "test"  # "test", or "val": the run's own validation images
    batch_size: int = _eval("batch_size")
    pairs: int = _eval("pairs")  # confused pairs listed
    gallery: int = _eval("gallery")  # mistakes kept for drawing
    save: Path | None = None  # where the files go; None: the checkpoint's run folder
    write_files: bool = True


@dataclass(frozen=True)
class PredictSettings:
    """What `mnistcli predict` runs: which checkpoint, on what, and how many candidates."""

    device: str = _top("device")
    runs_dir: Path = Path(_top("runs_dir"))
    checkpoint: str | None = None
    top_k: int = _predict("top_k")
    raw: bool = False  # no preprocessing: the images already are MNIST-style 28x28 digits
    explain: bool = False  # also each image's saliency (integrated gradients)
    min_confidence: float = _predict("min_confidence")  # answers below it are marked
    workers: int = _predict("workers")  # processes preparing images; 0: one per core


@dataclass(frozen=True)
class InspectSettings:
    """What `mnistcli inspect` describes: a model by name, and the checkpoint to check."""

    model: str = _train("model")
    model_given: bool = False  # --model was typed: a checkpoint of another model is refused
    runs_dir: Path = Path(_top("runs_dir"))
    checkpoint: str | None = None  # None: the latest run's, when there is one
    batch_size: int = _train("batch_size")  # for the batch activation figure
    image: Path | None = None  # also every layer's output for this image (needs a checkpoint)
    raw: bool = False  # take the image as is: a 28x28 MNIST-style digit
    save: Path | None = None  # with an image: write feature_maps.png and filters.png here
    layer: str | None = None  # with an image: show this layer's output only (by its name)


@dataclass(frozen=True)
class ExportSettings:
    """What `mnistcli export` writes: which checkpoint, in which format, where, and on how many
    test digits the written file is checked."""

    data: DataSettings
    runs_dir: Path = Path(_top("runs_dir"))
    checkpoint: str | None = None
    format: str = _export("format")  # one of EXPORT_FORMATS
    out: Path | None = None  # None: model.<format> next to the checkpoint
    check_images: int = _export("check_images")  # the first N test digits; 0: all


def eval_settings(
    values: Mapping[str, Setting],
    *,
    checkpoint: str | None = None,
    split: str = "test",
    save: Path | None = None,
    write_files: bool = True,
) -> EvalSettings:
    return EvalSettings(
        data=data_settings(values),
        device=values["device"].value,
        runs_dir=values["runs_dir"].value,
        checkpoint=checkpoint,
        split=split,
        batch_size=values["eval.batch_size"].value,
        pairs=values["eval.pairs"].value,
        gallery=values["eval.gallery"].value,
        save=save,
        write_files=write_files,
    )


def predict_settings(
    values: Mapping[str, Setting],
    *,
    checkpoint: str | None = None,
    raw: bool = False,
    explain: bool = False,
) -> PredictSettings:
    return PredictSettings(
        device=values["device"].value,
        runs_dir=values["runs_dir"].value,
        checkpoint=checkpoint,
        top_k=values["predict.top_k"].value,
        raw=raw,
        explain=explain,
        min_confidence=values["predict.min_confidence"].value,
        workers=values["predict.workers"].value,
    )


def inspect_settings(
    values: Mapping[str, Setting],
    *,
    checkpoint: str | None = None,
    image: Path | None = None,
    raw: bool = False,
    save: Path | None = None,
    layer: str | None = None,
) -> InspectSettings:
    needs_image = (
        (save is not None, "--out-dir writes the figures of --image"),
        (raw, "--raw takes --image's file as is"),
        (layer is not None, "--layer picks one layer of --image's output"),
    )
    for given, what in needs_image:
        if given and image is None:
            raise ConfigError(f"{what}; pass --image IMAGE too")
    return InspectSettings(
        model=values["train.model"].value,
        model_given=values["train.model"].source.startswith("--"),
        runs_dir=values["runs_dir"].value,
        checkpoint=checkpoint,
        batch_size=values["train.batch_size"].value,
        image=image,
        raw=raw,
        save=save,
        layer=layer,
    )


def export_settings(
    values: Mapping[str, Setting], *, checkpoint: str | None = None, out: Path | None = None
) -> ExportSettings:
    return ExportSettings(
        data=data_settings(values),
        runs_dir=values["runs_dir"].value,
        checkpoint=checkpoint,
        format=values["export.format"].value,
        out=out,
        check_images=values["export.check_images"].value,
    )
