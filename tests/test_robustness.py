"""Renderings of MNIST test digits (from bench/robustness.py, the full benchmark of how predict
reads digits made the ways people make them) that earlier versions of imaging.preprocess
declared blank. Stored as PNG in tests/data/once-blank/, named by condition and test-set index,
so this regression test needs neither the benchmark nor MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistcli import imaging

ONCE_BLANK = Path(__file__).parent / "data" / "once-blank"


@pytest.mark.parametrize(
    "name",
    [
        "tight-crop-4-edges-4927.png",  # a thick stroke covering most of the border
        "phone-photo-3393.png",  # a gradient wider than the ink's contrast
        "squared-paper-1093.png",  # grid lines along three edges
        "squared-paper-5246.png",  # grid lines along all four edges
    ],
)
def test_renderings_that_once_gave_no_digit_found(name):
    with Image.open(ONCE_BLANK / name) as im:
        prepared = imaging.preprocess(im)
    assert not prepared.blank
    assert prepared.pixels.shape == (28, 28) and prepared.pixels.dtype == np.uint8
    assert prepared.pixels.max() > 128  # bright ink on black, as the model expects
