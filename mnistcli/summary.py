"""Layer-by-layer shapes, parameters and MACs of any model, found by running it once.

Shapes come from forward hooks on every leaf module; multiply-accumulates (MACs) come from
torch's own `FlopCounterMode` (1 MAC = 2 FLOPs; bias additions and element-wise ops such as
ReLU or max-pooling count 0, as in fvcore and Lightning). Nothing here is a typed-in table, so a
changed architecture is reported as it is. The output-size formulas of conv and pool layers are
written from each layer's own kernel, stride, padding and dilation and the size that reached it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mnistcli.checkpoint import CheckpointMeta
    from mnistcli.explain import Activations, LayerActivation
    from mnistcli.settings import InspectSettings

MNIST_IMAGE = (1, 28, 28)  # (channels, height, width) of one MNIST image


@dataclass(frozen=True)
class LayerInfo:
    """One call of a leaf module during the forward pass of a single image."""

    index: int  # call order, from 1
    name: str  # qualified name in the model, e.g. "features.0"
    type: str  # class name, e.g. "Conv2d"
    settings: str  # key hyper-parameters, e.g. "3x3, stride 1, padding 1"
    input_shape: tuple[int, ...]  # (1, C, H, W): batch of one
    output_shape: tuple[int, ...]
    params: int  # the module's own parameters; 0 when it was already listed (a reused module)
    trainable_params: int
    macs: int  # multiply-accumulates for one image
    activation_bytes: int  # new memory its output takes; 0 for views, in-place ops and identity
    formulas: tuple[str, ...] = ()  # worked output-size formulas (conv and pool layers)


@dataclass(frozen=True)
class ModelSummary:
    """The rows and totals of one model on one input shape."""

    model: str  # class name
    input_shape: tuple[int, ...]  # (1, C, H, W)
    dtype: str  # of the parameters and the input, e.g. "float32"
    batch_size: int  # for the batch activation figure
    layers: tuple[LayerInfo, ...]
    params: int
    trainable_params: int
    param_bytes: int
    buffer_bytes: int  # e.g. BatchNorm running statistics
    macs: int  # per image, including ops outside the listed layers
    input_bytes: int  # one image
    activation_bytes: int  # one image: the sum over layers
    activation_bytes_batch: int  # batch_size images (activations grow linearly with the batch)

    @property
    def layer_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["macs_outside_layers"] = self.macs - self.layer_macs
        return doc


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about the run that wrote it; `weights_loaded` once verified."""

    path: str
    kind: str  # "best" or "last"
    model: str
    created: str | None  # ISO time
    finished: bool
    stop_reason: str | None  # as stored (runs before RunStatus: "completed", "early_stop")
    status: str  # a RunStatus: finished, early-stopped or interrupted
    epoch: int  # the epoch whose weights these are (last.pt: epochs completed)
    step: int  # last.pt of a run stopped part-way: batches done in epoch `epoch` + 1
    epochs_run: int
    best_epoch: int | None
    best_val_acc: float | None
    best_val_loss: float | None
    test_acc: float | None  # only in finished runs
    test_loss: float | None
    test_n: int | None
    config: dict[str, Any]
    data: dict[str, str]  # file name -> checksum
    versions: dict[str, str]
    weights_loaded: bool
    world_size: int = 1  # processes that trained it together (torchrun)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    model: nn.Module, input_shape: tuple[int, ...] = MNIST_IMAGE, batch_size: int = 64
) -> ModelSummary:
    """Run one image of `input_shape` (no batch dimension) through `model` in eval mode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.zeros((1, *input_shape), device=device, dtype=dtype)

    names = {module: name for name, module in model.named_modules()}
    leaves = [m for m in model.modules() if next(m.children(), None) is None and m is not model]
    if not leaves:  # a model with no sub-modules is its own only layer
        leaves = [model]
    rows: list[LayerInfo] = []
    seen: set[int] = set()  # modules already listed: a reused module's weights count once
    started: dict[int, tuple[int, tuple[int, ...], list[int]]] = {}
    counter = FlopCounterMode(display=False)

    def before(module: nn.Module, args: tuple[Any, ...]) -> None:
        tensors = _tensors(args)
        shape = tuple(tensors[0].shape) if tensors else ()
        started[id(module)] = (counter.get_total_flops(), shape, [_storage(t) for t in tensors])

    def after(module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        flops0, in_shape, in_storages = started.pop(id(module))
        outs = _tensors(output)
        new = [t for t in outs if _storage(t) not in in_storages]
        own = list(module.parameters(recurse=False))
        fresh = id(module) not in seen
        seen.add(id(module))
        out_shape = tuple(outs[0].shape) if outs else ()
        rows.append(
            LayerInfo(
                index=len(rows) + 1,
                name=names.get(module) or type(module).__name__,
                type=type(module).__name__,
                settings=layer_settings(module),
                input_shape=in_shape,
                output_shape=out_shape,
                params=sum(p.numel() for p in own) if fresh else 0,
                trainable_params=sum(p.numel() for p in own if p.requires_grad) if fresh else 0,
                macs=(counter.get_total_flops() - flops0) // 2,
                activation_bytes=sum(t.numel() * t.element_size() for t in new),
                formulas=output_size_formulas(module, in_shape, out_shape),
            )
        )

    handles = []
    for leaf in leaves:
        handles.append(leaf.register_forward_pre_hook(before))
        handles.append(leaf.register_forward_hook(after))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    activation = sum(r.activation_bytes for r in rows)
    return ModelSummary(
        model=type(model).__name__,
        input_shape=tuple(x.shape),
        dtype=str(dtype).removeprefix("torch."),
        batch_size=batch_size,
        layers=tuple(rows),
        params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        macs=counter.get_total_flops() // 2,
        input_bytes=x.numel() * x.element_size(),
        activation_bytes=activation,
        activation_bytes_batch=activation * batch_size,
    )


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a module's inputs or output (a tensor, or tuples/lists/dicts of them)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, tuple | list):
        return [t for item in value for t in _tensors(item)]
    return []


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _pair(value: Any, n: int) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,) * n


def layer_settings(module: nn.Module) -> str:
    """A layer's key hyper-parameters in a few words; other layers use their own extra_repr()."""
    from torch import nn

    def size(value: Any) -> str:  # 3 for (3, 3), 3x5 for (3, 5)
        values = _pair(value, 1)
        return "x".join(str(v) for v in values) if len(set(values)) > 1 else str(values[0])

    def kernel(value: Any) -> str:  # always every axis: 3x3
        return "x".join(str(v) for v in _pair(value, _spatial_dims(module)))

    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        parts = [
            f"{module.in_channels}->{module.out_channels}",
            f"kernel {kernel(module.kernel_size)}",
            f"stride {size(module.stride)}",
            f"pad {size(module.padding)}",
        ]
        if any(d != 1 for d in module.dilation):
            parts.append(f"dilation {size(module.dilation)}")
        if module.groups != 1:
            parts.append(f"groups {module.groups}")
        if module.bias is None:
            parts.append("no bias")
        return ", ".join(parts)
    pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
    if isinstance(module, pools):
        parts = [
            f"kernel {kernel(module.kernel_size)}",
            f"stride {size(module.stride)}",
        ]
        if any(p != 0 for p in _pair(module.padding, 1)):
            parts.append(f"pad {size(module.padding)}")
        dilation = getattr(module, "dilation", 1)  # max-pools have one, average pools do not
        if any(d != 1 for d in _pair(dilation, 1)):
            parts.append(f"dilation {size(dilation)}")
        if module.ceil_mode:
            parts.append("ceil mode")
        return ", ".join(parts)
    if isinstance(module, nn.Linear):
        bias = "" if module.bias is not None else ", no bias"
        return f"{module.in_features}->{module.out_features}{bias}"
    if isinstance(module, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d):
        return f"p={module.p:g}"
    if isinstance(module, nn.Flatten):
        return f"dims {module.start_dim}..{module.end_dim}"
    return module.extra_repr()


def output_size_formulas(
    module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> tuple[str, ...]:
    """The output size of a conv or pool layer, worked for the size that reached it.

    PyTorch's rule (Conv2d and MaxPool2d docs): out = floor((in + 2*p - d*(k - 1) - 1)/s) + 1,
    written (in + 2*p - k)/s + 1 when d = 1. One line when every spatial axis agrees.
    """
    n = _spatial_dims(module)
    if not n or len(in_shape) < n + 1 or len(out_shape) < n + 1:
        return ()
    kernel = _pair(module.kernel_size, n)
    stride = _pair(module.stride, n)
    dilation = _pair(getattr(module, "dilation", 1), n)
    ceil = bool(getattr(module, "ceil_mode", False))
    padding = module.padding
    if isinstance(padding, str):  # Conv 'valid' (none) or 'same' (stride 1: keep the size)
        totals = tuple(
            0 if padding == "valid" else d * (k - 1) for k, d in zip(kernel, dilation, strict=True)
        )
    else:
        totals = tuple(2 * p for p in _pair(padding, n))
    axes = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}[n]
    sizes = in_shape[-n:]
    lines = []
    for axis, size, k, s, d, pad, actual in zip(
        axes, sizes, kernel, stride, dilation, totals, out_shape[-n:], strict=True
    ):
        pad_text = f"2*{pad // 2}" if pad % 2 == 0 else str(pad)
        span = f"{k}" if d == 1 else f"{d}*({k} - 1) - 1"
        numerator = size + pad - (d * (k - 1) + 1)
        if numerator % s == 0:
            text = f"({size} + {pad_text} - {span})/{s} + 1"
            value = numerator // s + 1
        else:
            rounding = "ceil" if ceil else "floor"
            text = f"{rounding}(({size} + {pad_text} - {span})/{s}) + 1"
            value = (math.ceil if ceil else math.floor)(numerator / s) + 1
        if ceil and (value - 1) * s >= size + pad // 2:  # PyTorch: the last window must start
            value -= 1  # inside the input or left padding (its ceil_mode rule)
            text += " - 1"
        if value != actual:  # a case this rule does not cover: show no formula, not a wrong one
            return ()
        lines.append((axis, f"{text} = {value}"))
    if len({line[1] for line in lines}) == 1:
        return (f"{', '.join(axes)}: {lines[0][1]}",)
    return tuple(f"{axis}: {text}" for axis, text in lines)


def _spatial_dims(module: nn.Module) -> int:
    """1, 2 or 3 for the conv and pool layers whose output size has a formula; 0 otherwise."""
    from torch import nn

    kinds = {
        1: (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d),
        2: (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d),
        3: (nn.Conv3d, nn.MaxPool3d, nn.AvgPool3d),
    }
    return next((n for n, types in kinds.items() if isinstance(module, types)), 0)


def checkpoint_info(meta: CheckpointMeta, path: Path, *, weights_loaded: bool) -> CheckpointInfo:
    """What a loaded, validated checkpoint says about its run (see checkpoint.load_checkpoint)."""
    best, test = meta.best, meta.test
    val_acc, val_loss = best.reported()
    return CheckpointInfo(
        path=str(path),
        kind=meta.kind,
        model=meta.model,
        created=meta.created,
        finished=meta.finished,
        stop_reason=meta.stop_reason,
        status=str(meta.status),
        epoch=meta.epoch,
        step=meta.step,
        epochs_run=meta.epochs_run,
        best_epoch=best.epoch if best.validated else None,
        best_val_acc=_number(val_acc),
        best_val_loss=_number(val_loss),
        test_acc=_number(test.acc) if test else None,
        test_loss=_number(test.loss) if test else None,
        test_n=test.n if test else None,
        config=dict(meta.config),
        data=dict(meta.data),
        versions=dict(meta.versions),
        weights_loaded=weights_loaded,
        world_size=meta.world_size,
    )


def _number(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Inspection:
    """What `mnistcli inspect` shows: the model summary and the checkpoint found, if any, and
    with an image (`--image`), what every layer of the checkpoint's model outputs for it."""

    summary: ModelSummary
    checkpoint: CheckpointInfo | None
    warning: str | None = None  # the latest run's checkpoint could not be used (why)
    image: str | None = None  # the image's path, as given
    activations: Activations | None = None  # every layer's output for `image`
    blank: bool = False  # no digit found in `image`: the layers saw a blank input
    pixels: tuple[tuple[int, ...], ...] | None = None  # the 28x28 input the model saw, 0-255
    raw: bool = False  # `image` was taken as is, not prepared as predict prepares it
    layer: str | None = None  # show only this layer's output (`--layer`), a name in activations

    def shown_layers(self) -> list[LayerActivation]:
        """The layers to show: the one asked for with --layer, or every one in forward order."""
        layers = self.activations.layers if self.activations is not None else ()
        return [a for a in layers if self.layer is None or a.name == self.layer]

    def to_dict(self, saved: Sequence[Path] = ()) -> dict[str, Any]:
        """The JSON document; with an image, "image" (`saved`: the figures written; "pixels":
        the 28x28 input the model saw) and "activations", one entry per layer in forward order
        (only the --layer one when a layer was asked for)."""
        info = self.checkpoint.to_dict() if self.checkpoint else None
        doc = {**self.summary.to_dict(), "checkpoint": info}
        if self.activations is not None:
            doc["image"] = {
                "path": self.image,
                "digit": self.activations.digit,
                "saved": [str(p) for p in saved],
                "probabilities": [round(p, 6) for p in self.activations.probabilities],
                "raw": self.raw,
                "pixels": [list(row) for row in self.pixels or ()],
            }
            doc["activations"] = [layer.to_dict() for layer in self.shown_layers()]
        return doc


def inspect_model(
    settings: InspectSettings, *, log: Callable[[str], None] | None = None
) -> Inspection:
    """Describe the model; check the checkpoint asked for, or else the latest run's one
    (`log` is told which run that is).

    A checkpoint asked for must load and be of the model asked for; the latest run's is only
    described when it does, with a warning when it does not load.
    """

    from mnistcli.errors import CheckpointError, ConfigError
    from mnistcli.loading import open_model
    from mnistcli.model import MODELS, build_model
    from mnistcli.runs import checkpoint_to_describe

    if settings.model not in MODELS:
        build_model(settings.model)  # raises: unknown model, did you mean ...
    path = checkpoint_to_describe(settings.checkpoint, settings.runs_dir, log=log)
    asked = settings.checkpoint is not None
    net, info, warning = None, None, None
    if path is not None:
        try:
            # the PyTorch model even for an .onnx (its weights read from the graph)
            loaded = open_model(path, "cpu", need_module=True)
            net, meta = loaded.module, loaded.require_meta()
        except CheckpointError as exc:
            if asked:
                raise
            warning = str(exc)
        else:
            if settings.model_given and meta.model != settings.model:
                if asked:
                    raise ConfigError(
                        f"--model {settings.model} does not match {path}, a '{meta.model}' "
                        f"checkpoint; leave out --model or pick another checkpoint"
                    )
                net = None  # the latest run is of another model: describe the one asked for
            else:
                info = checkpoint_info(meta, path, weights_loaded=True)
    if net is None:
        net = build_model(settings.model)
    found = Inspection(summarize(net, batch_size=settings.batch_size), info, warning)
    if settings.image is None:
        return found
    if info is None:
        why = f" (the latest run's did not load: {warning})" if warning else ""
        raise CheckpointError(
            f"--image shows what a trained model does with an image, and no checkpoint was "
            f"loaded{why}; pass --checkpoint PATH or train one first (mnistcli train)"
        )
    return image_activations(found, net, settings.image, raw=settings.raw, layer=settings.layer)


def image_activations(
    found: Inspection, net: nn.Module, image: Path, *, raw: bool, layer: str | None = None
) -> Inspection:
    """`found` with what every layer of `net` outputs for the digit in `image` (prepared as
    `predict` prepares it, or taken as is with `raw`), and the layer to show (`layer`, by name;
    an unknown one is refused with the names there are). A file that cannot be used is bad
    input here (exit code 2), not one failed prediction among others."""
    from mnistcli.config import did_you_mean
    from mnistcli.errors import ConfigError, ImageError, InputError
    from mnistcli.explain import capture_activations
    from mnistcli.imaging import load_image

    names = [info.name for info in found.summary.layers]
    if layer is not None and layer not in names:  # refused before the image is read
        raise ConfigError(
            f"--layer {layer}: no such layer{did_you_mean(layer, names)}; "
            f"the layers are {', '.join(names)}"
        )
    try:
        prepared = load_image(image, raw=raw)
    except ImageError as exc:
        raise InputError(str(exc)) from None
    acts = capture_activations(net, prepared.pixels)
    pixels = tuple(tuple(int(v) for v in row) for row in prepared.pixels.tolist())
    return replace(
        found,
        image=str(image),
        activations=acts,
        blank=prepared.blank,
        pixels=pixels,
        raw=raw,
        layer=layer,
    )
