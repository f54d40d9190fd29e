"""What the network does with an image: which pixels decided (attributions), and what every
layer outputs (activations, captured with forward hooks).

Attributions are integrated gradients (Sundararajan et al., 2017) of the predicted digit's
probability, from a black image (the MNIST background) to the input, summed over the 32
midpoints of the straight path: attribution = (x - black) * mean gradient. They add up to
p(x) - p(black) (the completeness axiom), so a pixel's saliency is its share of the probability.
Only the positive part is kept as saliency: pixels that spoke for the predicted digit. Written
here in 20 lines of torch rather than taken from Captum: Captum 0.9 gives the same numbers (to
float precision, method "riemann_middle") but its `captum.attr` always imports matplotlib
(8 more packages, 81 MB, about 0.4 s more start-up, and a font cache written to the user's home).

The faithfulness of the saliency is measured, not assumed: `deletion_test` blanks the pixels it
ranks highest and compares the drop in probability with blanking as many random ink pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mnistcli.predict import Prediction

STEPS = 32  # points on the path from black to the image; more changes the maps by < 1%
CHUNK = 1024  # images x steps per forward/backward pass: bounds memory (about 100 MB)


def _model_inputs(pixels: Any, device: torch.device | str) -> torch.Tensor:
    """(N, 28, 28) uint8 pixels (a tensor, an array or a list of (28, 28) images) -> the
    normalised (N, 1, 28, 28) float32 model input, as in training."""
    import torch

    from mnistcli.data import normalize

    if isinstance(pixels, list | tuple):
        pixels = torch.stack([torch.as_tensor(p) for p in pixels]) if pixels else None
    if pixels is None:
        return torch.empty(0, 1, 28, 28, device=device)
    return normalize(torch.as_tensor(pixels)).to(device)


def integrated_gradients(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, steps: int = STEPS
) -> torch.Tensor:
    """(N, 1, 28, 28) attributions of each target class's probability, from a black image.

    Only gradients with respect to the input are computed (not the weights'); the model is
    evaluated in eval mode (no dropout) and left in the mode it was in.
    """
    import torch

    from mnistcli.data import normalize

    black = normalize(torch.zeros(1, 28, 28, dtype=torch.uint8)).to(x.device, x.dtype)
    alphas = (torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps  # midpoints
    total = torch.zeros_like(x)
    per_chunk = max(1, CHUNK // steps)  # images per pass, all their steps at once
    was_training = model.training
    model.eval()
    try:
        for start in range(0, x.shape[0], per_chunk):
            xs, ts = x[start : start + per_chunk], targets[start : start + per_chunk]
            path = black + alphas.view(-1, 1, 1, 1, 1) * (xs - black)  # (steps, n, 1, 28, 28)
            path = path.reshape(-1, *xs.shape[1:]).requires_grad_(True)
            probs = torch.softmax(model(path).float(), dim=1)
            chosen = probs.gather(1, ts.repeat(steps)[:, None]).sum()
            (grad,) = torch.autograd.grad(chosen, path)
            total[start : start + per_chunk] = grad.view(steps, *xs.shape).mean(0)
    finally:
        model.train(was_training)
    return (x - black) * total


def saliency_maps(
    model: nn.Module, pixels: Any, digits: Sequence[int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(N, 28, 28) float32 saliency >= 0 on the CPU: how much each pixel of each image spoke
    for `digits` (the predicted digit), in units of probability."""
    import torch

    x = _model_inputs(pixels, device)
    targets = torch.as_tensor(list(digits), dtype=torch.long, device=x.device)
    if x.shape[0] == 0:
        return torch.zeros(0, 28, 28)
    return integrated_gradients(model, x, targets)[:, 0].clamp(min=0).float().cpu() + 0.0  # no -0.0


def saliency_lists(saliency: torch.Tensor, digits: int = 6) -> list[list[list[float]]]:
    """(N, 28, 28) saliency as nested lists of floats rounded to `digits` decimals (JSON)."""
    return [[[round(v, digits) for v in row] for row in image] for image in saliency.tolist()]


@dataclass(frozen=True)
class Explained:
    """A prediction with its saliency (`predict --explain`): None for a blank image or a file
    that could not be read."""

    prediction: Prediction
    saliency: torch.Tensor | None  # (28, 28) float32 >= 0 on the CPU

    def to_dict(self) -> dict[str, Any]:
        """The prediction's JSON object plus "saliency": 28x28 nested lists, or null."""
        sal = None if self.saliency is None else saliency_lists(self.saliency[None])[0]
        return {**self.prediction.to_dict(), "saliency": sal}


def explain_predictions(
    model: nn.Module,
    preds: Sequence[Prediction],
    device: torch.device | str = "cpu",
    *,
    batch_size: int = 64,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Explained]:
    """Each prediction with the saliency of its predicted digit over the 28x28 input the model
    saw, computed `batch_size` images at a time for all the images that hold a digit;
    `on_progress(done, total)` after each batch (a hundred images take seconds)."""

    ok = [i for i, p in enumerate(preds) if p.digit is not None and p.pixels is not None]
    saliency: list[torch.Tensor | None] = [None] * len(preds)
    for start in range(0, len(ok), batch_size):
        part = ok[start : start + batch_size]
        maps = saliency_maps(
            model, [preds[i].pixels for i in part], [preds[i].digit for i in part], device
        )
        for i, sal in zip(part, maps, strict=True):
            saliency[i] = sal
        if on_progress is not None:
            on_progress(start + len(part), len(ok))
    return [Explained(p, s) for p, s in zip(preds, saliency, strict=True)]


# ---------------------------------------------------------------------------------------------
# Faithfulness: the deletion test


@dataclass(frozen=True)
class DeletionResult:
    """Mean drop of the predicted digit's probability when ink pixels are blanked (set to 0)."""

    images: int
    fraction: float  # of each image's ink pixels blanked
    drop_salient: float  # blanking the most salient ink pixels
    drop_random: float  # blanking as many random ink pixels (mean of `repeats` draws)
    repeats: int

    @property
    def ratio(self) -> float:
        return self.drop_salient / self.drop_random if self.drop_random > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def deletion_test(
    model: nn.Module,
    pixels: torch.Tensor,
    saliency: torch.Tensor,
    *,
    fraction: float = 0.15,
    repeats: int = 10,
    seed: int = 0,
) -> DeletionResult:
    """Blank the `fraction` of each image's ink pixels (uint8 > 0) that `saliency` ranks
    highest, and as many random ink pixels (`repeats` draws); compare the mean drop in the
    probability of the digit predicted on the intact image. (N, 28, 28) uint8 and float."""
    import torch

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    flat, scores = pixels.reshape(len(pixels), -1), saliency.reshape(len(pixels), -1)
    variants, kept = [], []
    for i in range(len(pixels)):
        ink = (flat[i] > 0).nonzero()[:, 0]
        k = max(1, round(fraction * len(ink)))
        if len(ink) < 2:
            continue  # nothing to compare on an (almost) empty image
        kept.append(i)
        top = ink[scores[i][ink].argsort(descending=True)[:k]]
        draws = [ink[torch.randperm(len(ink), generator=gen)[:k]] for _ in range(repeats)]
        for chosen in [None, top, *draws]:
            image = flat[i].clone()
            if chosen is not None:
                image[chosen] = 0
            variants.append(image.view(28, 28))
    from mnistcli.model import logits_in_batches

    if not kept:
        return DeletionResult(0, fraction, 0.0, 0.0, repeats)
    x = _model_inputs(torch.stack(variants), device)
    probs = torch.softmax(logits_in_batches(model, x).float(), dim=1).cpu()
    probs = probs.view(len(kept), repeats + 2, 10)
    predicted = probs[:, 0].argmax(1)
    p = probs.gather(2, predicted.view(-1, 1, 1).expand(-1, repeats + 2, 1))[..., 0]
    return DeletionResult(
        images=len(kept),
        fraction=fraction,
        drop_salient=float((p[:, 0] - p[:, 1]).mean()),
        drop_random=float((p[:, :1] - p[:, 2:]).mean()),
        repeats=repeats,
    )


# ---------------------------------------------------------------------------------------------
# Activations of one image, layer by layer


@dataclass(frozen=True)
class LayerActivation:
    """One leaf module's output for one image, in forward order."""

    name: str  # qualified name in the model, e.g. "features.0"
    type: str  # class name, e.g. "Conv2d"
    shape: tuple[int, ...]  # without the batch dimension, e.g. (32, 28, 28)
    mean: float
    max: float
    min: float
    fraction_zero: float  # of the values that are exactly 0 (ReLU's and pooling's work)
    values: torch.Tensor  # the output itself, float32 on the CPU, `shape`

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.name,
            "type": self.type,
            "shape": list(self.shape),
            "mean": self.mean,
            "max": self.max,
            "min": self.min,
            "fraction_zero": self.fraction_zero,
        }


@dataclass(frozen=True)
class Activations:
    """Every layer's output for one image, the probabilities, and the first conv's filters."""

    layers: tuple[LayerActivation, ...]
    probabilities: tuple[float, ...]  # softmax of the model's output
    filters_layer: str | None  # name of the first Conv2d
    filters: torch.Tensor | None  # its weights, (out, in, kh, kw) float32 on the CPU

    @property
    def digit(self) -> int:
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)


def capture_activations(model: nn.Module, pixels: Any) -> Activations:
    """Run one (28, 28) uint8 image through `model` (eval mode, no gradients) and keep what
    every leaf module outputs. Outputs are copied as they come: an in-place ReLU would
    otherwise overwrite the convolution's output it works on."""
    import torch

    first = next(model.parameters())
    x = _model_inputs([pixels], first.device).to(first.dtype)
    names = {module: name for name, module in model.named_modules()}
    leaves = [m for m in model.modules() if next(m.children(), None) is None and m is not model]
    layers: list[LayerActivation] = []

    def keep(module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            return
        values = output.detach()[0].float().cpu().contiguous().clone()
        layers.append(
            LayerActivation(
                name=names.get(module, type(module).__name__),
                type=type(module).__name__,
                shape=tuple(values.shape),
                mean=float(values.mean()),
                max=float(values.max()),
                min=float(values.min()),
                fraction_zero=float((values == 0).float().mean()),
                values=values,
            )
        )

    handles = [leaf.register_forward_hook(keep) for leaf in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return Activations(
        layers=tuple(layers),
        probabilities=tuple(torch.softmax(logits.float(), dim=1)[0].tolist()),
        filters_layer=names[conv] if conv is not None else None,
        filters=conv.weight.detach().float().cpu().contiguous().clone() if conv else None,
    )
