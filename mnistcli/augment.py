"""Augmentation: random shifts and affine warps of the training digits, drawn reproducibly.

Every random draw of an epoch comes from a generator seeded by a tuple of integers (seed, epoch,
batch[, rank]), never from the global generator: a resumed run, even one resumed mid-epoch,
draws the same shuffle and the same warps as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from mnistcli import distributed
from mnistcli.data import MEAN, STD

if TYPE_CHECKING:
    import torch

    from mnistcli.distributed import World
    from mnistcli.settings import HyperParams


def seeded_generator(*key: int, device: torch.device | None = None) -> torch.Generator:
    """A generator (on the CPU unless `device`) seeded by a tuple of integers (seed, epoch[,
    batch, ...])."""
    import torch

    value = 0
    for k in key:
        value = (value * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator(device or "cpu").manual_seed(value)


def random_shifts(n: int, max_shift: float, generator: torch.Generator) -> torch.Tensor:
    """(n, 2) translations in pixels, uniform in [-max_shift, max_shift], drawn on the CPU."""
    import torch

    return (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift


def random_affines(
    n: int,
    max_shift: float,
    rotate: float,
    scale: float,
    shear: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """(n, 2, 3) random affine maps, drawn on the CPU: a rotation uniform in +-`rotate` degrees,
    a shear in +-`shear` degrees, a scale in 1 +- `scale` and a translation in +-`max_shift`
    pixels (the last column, in pixels). The shifts are drawn first, as `random_shifts` draws
    them, then the rest."""
    import torch

    shifts = random_shifts(n, max_shift, generator)
    u = torch.rand(n, 3, generator=generator) * 2 - 1
    angle = u[:, 0] * math.radians(rotate)
    zoom = 1 + u[:, 1] * scale
    slant = torch.tan(u[:, 2] * math.radians(shear))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.empty(n, 2, 3)
    # rotation @ shear, divided by the zoom: affine_grid maps output to input coordinates, so
    # dividing the sampling grid by `zoom` enlarges the digit by `zoom`.
    theta[:, 0, 0] = cos / zoom
    theta[:, 0, 1] = (cos * slant - sin) / zoom
    theta[:, 1, 0] = sin / zoom
    theta[:, 1, 1] = (sin * slant + cos) / zoom
    theta[:, :, 2] = shifts
    return theta


def affine_by(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp image i of (N, 1, H, W) `x` (square) by the affine map `theta[i]` ((N, 2, 3) on x's
    device; linear part in normalised coordinates, translation in pixels): one bilinear
    resampling, with the blank background filling what comes in from outside."""
    import torch.nn.functional as F

    theta = theta.clone()
    theta[:, :, 2] *= 2.0 / x.shape[-1]  # pixels -> normalised [-1, 1] coordinates
    theta = theta.to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = -MEAN / STD  # a blank pixel after normalisation
    out = F.grid_sample(
        x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out + background


def epoch_warps(
    hyper: HyperParams,
    world: World,
    epoch: int,
    perm: torch.Tensor,
    batches: int,
    device: torch.device,
) -> tuple[torch.Tensor | None, list[int]]:
    """This rank's augmentation for a whole epoch on `device`: affine maps, (images, 2, 3)
    (with no rotation, scale or shear, pure shifts: the same draws as random_shifts), and where
    batch b's start; None without augmentation. Batch b's are drawn from (seed, epoch, b[, rank])
    on the CPU and moved to the device once per epoch: no host-to-device copy (and so no wait
    for the GPU) per batch."""
    import torch

    if not hyper.augmented:
        return None, []
    key = (world.rank,) if world.is_distributed else ()
    sizes = [len(distributed.rank_slice(perm, b, hyper.batch_size, world)) for b in range(batches)]
    generators = [seeded_generator(hyper.seed, epoch, b, *key) for b in range(batches)]
    pairs = zip(sizes, generators, strict=True)
    parts = [
        random_affines(n, hyper.shift, hyper.rotate, hyper.scale, hyper.shear, g) for n, g in pairs
    ]
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return torch.cat(parts).to(device), offsets
