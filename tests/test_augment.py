"""augment.py: random shifts and affine warps of the training digits."""

import pytest
import torch

from mnistcli import augment, data


def test_normalize_and_shift_a_batch():
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    images[:, 10:18, 10:18] = 255
    x = data.normalize(images)
    assert x.shape == (3, 1, 28, 28)
    assert x.min().item() == pytest.approx(-data.MEAN / data.STD, rel=1e-5)
    same = augment.affine_by(x, augment.random_affines(3, 0.0, 0, 0, 0, torch.Generator()))
    assert torch.allclose(same, x, atol=1e-5)
    shifts = augment.random_affines(3, 2.0, 0, 0, 0, torch.Generator().manual_seed(0))
    moved = augment.affine_by(x, shifts)
    assert moved.shape == x.shape and not torch.allclose(moved, x)
    # background stays background after the shift
    assert moved[:, :, 0, 0].allclose(torch.full((3, 1), -data.MEAN / data.STD), atol=1e-5)


def test_affine_maps_without_warps_are_the_shifts():
    shifts = augment.random_shifts(6, 1.5, torch.Generator().manual_seed(4))
    theta = augment.random_affines(6, 1.5, 0.0, 0.0, 0.0, torch.Generator().manual_seed(4))
    assert torch.equal(theta[:, :, 2], shifts)  # the same draws, in the same order
    assert torch.equal(theta[:, :, :2], torch.eye(2).expand(6, 2, 2))
    x = data.normalize(torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8))
    # a whole-pixel shift moves the pixels (x by +2: content 2 columns to the left, as
    # affine_grid maps output to input coordinates)
    theta[:, :, 2] = torch.tensor([2.0, 0.0])
    moved = augment.affine_by(x, theta)
    assert torch.allclose(moved[..., :-2], x[..., 2:], atol=1e-5)


def test_affine_maps_stay_within_their_ranges():
    theta = augment.random_affines(2000, 2.0, 12.0, 0.1, 10.0, torch.Generator().manual_seed(0))
    linear = theta[:, :, :2]
    zoom = 1 / linear.det().abs().sqrt()  # rotation and shear keep the area: det = 1 / zoom^2
    assert 0.9 - 1e-5 <= zoom.min() < 0.92 and 1.08 < zoom.max() <= 1.1 + 1e-5
    assert theta[:, :, 2].abs().max() <= 2.0 and theta[:, :, 2].abs().max() > 1.9
    # the first column is the rotation's (cos, sin) over the zoom: its angle is the rotation
    angle = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]))
    assert angle.abs().max() <= 12 + 1e-4 and angle.abs().max() > 11.5
    again = augment.random_affines(2000, 2.0, 12.0, 0.1, 10.0, torch.Generator().manual_seed(0))
    assert torch.equal(theta, again)


def test_a_quarter_turn_rotates_the_image():
    x = data.normalize(torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8))
    theta = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])  # exactly 90 degrees
    out = augment.affine_by(x, theta)
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-4) or torch.allclose(
        out, torch.rot90(x, -1, dims=(2, 3)), atol=1e-4
    )
    assert not torch.allclose(out, x, atol=1e-2)
