"""examples/: the textbook loop a learner reads first runs, and learns."""

from __future__ import annotations

import struct
import sys

import pytest

from tests.helpers import REPO, synthetic_mnist


def _write_idx(path, tensor, magic: int) -> None:
    dims = tuple(tensor.shape)
    path.write_bytes(struct.pack(f">I{len(dims)}I", magic, *dims) + tensor.numpy().tobytes())


@pytest.fixture
def textbook_loop():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import textbook_loop

        yield textbook_loop
    finally:
        sys.path.remove(str(REPO / "examples"))


def test_the_textbook_loop_trains_on_a_tiny_subset(tmp_path, textbook_loop, capsys):
    """torchvision's MNIST layout (MNIST/raw, the IDX files) filled with the synthetic digits."""
    mnist = synthetic_mnist(n_train=320, n_test=100)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, images, labels in (
        ("train", mnist.train_images, mnist.train_labels),
        ("t10k", mnist.test_images, mnist.test_labels),
    ):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.byte(), 2049)
    acc = textbook_loop.main(["--root", str(tmp_path), "--epochs", "3"])
    assert acc > 0.5  # chance is 0.1: the loop learns the synthetic digits
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[-1] == f"epoch 3: test accuracy {acc:.4f}"
