"""Shared fixtures: a pinned terminal, tiny synthetic MNIST, the real MNIST copy, trained runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

REPO = Path(__file__).resolve().parent.parent
# The MNIST copy beside the repository; on a machine without it (the GPU machine of
# bench/gpu_check.sh), the copy `make gpu-prepare` puts in the tree's ignored .mnist/ folder.
SHARED_MNIST = REPO.parent / "shared" / "mnist"
if not SHARED_MNIST.is_dir() and (REPO / ".mnist").is_dir():
    SHARED_MNIST = REPO / ".mnist"

# A pinned, colourless, non-interactive terminal for every test (and every subprocess it starts),
# so rendered output is the same on every machine and in CI.
os.environ.update(
    {
        "COLUMNS": "120",
        "LINES": "40",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "_TYPER_FORCE_DISABLE_TERMINAL": "1",
        "TYPER_STANDARD_TRACEBACK": "1",
    }
)
for _var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "GITHUB_ACTIONS", "PY_COLORS"):
    os.environ.pop(_var, None)
for _var in [v for v in os.environ if v.startswith("MNISTCLI_")]:
    os.environ.pop(_var)


# Property-based tests draw the same examples on every run (deterministic CI), and keep no
# example database in the working tree.
hypothesis_settings.register_profile("mnistcli", derandomize=True, database=None)
hypothesis_settings.load_profile("mnistcli")


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """An empty working folder: no .mnistcli.toml, no runs."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def synthetic_mnist(n_train: int = 600, n_test: int = 200, seed: int = 0):
    """A learnable stand-in for MNIST: class k is a bright bar at a class-specific place, plus
    noise. Same shapes and dtypes as the real thing, so every code path runs in milliseconds."""
    import torch

    from mnistcli.data import Mnist

    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % 10
        images = (torch.rand(n, 28, 28, generator=g) * 60).to(torch.uint8)
        for k in range(10):
            rows = slice(3 + 2 * k, 5 + 2 * k)
            images[labels == k, rows, 4:24] = 255
        return images, labels.long()

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    return Mnist(
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        checksums={"synthetic": "0"},
    )


@pytest.fixture
def tiny_mnist():
    return synthetic_mnist()


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A data root filled once per session from the shared MNIST copy (verified by md5)."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real MNIST not found at {SHARED_MNIST}")
    from mnistcli.data import load_mnist

    root = tmp_path_factory.mktemp("mnist-root")
    load_mnist(root, [str(SHARED_MNIST)])
    return root


@pytest.fixture(scope="session")
def real_mnist(mnist_root):
    from mnistcli.data import load_mnist

    return load_mnist(mnist_root, [str(SHARED_MNIST)])


def make_settings(tmp: Path, data_root: Path | None = None, **hyper):
    """TrainSettings for a test run in `tmp`, with hyper-parameters overridden by keyword."""
    from mnistcli.config import DataSettings, HyperParams, TrainSettings

    return TrainSettings(
        hyper=HyperParams(**hyper),
        data=DataSettings(root=data_root or tmp / "data", mirrors=(str(SHARED_MNIST),)),
        device="cpu",
        runs_dir=tmp / "runs",
        name="test",
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, real_mnist) -> Path:
    """A run folder with best.pt/last.pt from a short real-MNIST run (2,000 images, 1 epoch).

    Good enough for eval/predict/inspect tests (about 85-90% accurate); do not modify it.
    """
    from mnistcli.train import train

    tmp = tmp_path_factory.mktemp("trained")
    settings = make_settings(tmp, epochs=1, limit=2000, val_size=500, seed=0)
    result = train(settings, real_mnist)
    return result.run_dir
