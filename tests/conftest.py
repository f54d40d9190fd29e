"""Shared fixtures: a pinned terminal, tiny synthetic MNIST, the real MNIST copy, trained runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.helpers import SHARED_MNIST, make_settings, synthetic_mnist

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
