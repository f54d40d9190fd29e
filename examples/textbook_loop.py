"""The textbook MNIST loop: read this first, then mnistcli/train.py, which is the same loop
with resume, augmentation, early stopping and progress around it.

    python examples/textbook_loop.py --root TV_ROOT [--epochs N] [--limit N] [--download]

What most tutorials (and PyTorch's own MNIST example) write: torchvision's `MNIST` dataset
(TV_ROOT/MNIST/raw holds the four IDX files; --download fetches them), `ToTensor`/`Normalize`
per sample, a `DataLoader` of batch 64 with shuffling, the SimpleCNN of mnistcli written the
usual way (conv, ReLU, max-pool), Adam 1e-3; each epoch trains, then scores the test set in
eval mode under `torch.inference_mode()`. bench/textbook_epoch.py runs one epoch of it as the
loop mnistcli is compared with, so mnistcli itself is not imported here.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

try:
    from torchvision import datasets, transforms
except ImportError:  # torchvision is in mnistcli's [bench] and [dev] extras, not its core
    raise SystemExit(
        "examples/textbook_loop.py needs torchvision: pip install torchvision "
        "(or pip install -e '.[dev]')"
    ) from None


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)  # (N, 32, 28, 28), then pooled to 14x14
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)  # (N, 64, 14, 14), then pooled to 7x7
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(F.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)  # (N, 10) logits


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    model.train()  # dropout on
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()  # dropout off
    correct = 0
    with torch.inference_mode():  # no gradients kept
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(loader.dataset)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="torchvision's MNIST folder")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="training images, 0 for all")
    parser.add_argument("--download", action="store_true", help="fetch MNIST into --root")
    args = parser.parse_args(argv)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(args.root, train=True, download=args.download, transform=tf)
    test = datasets.MNIST(args.root, train=False, download=args.download, transform=tf)
    if args.limit:
        train = Subset(train, range(args.limit))
        test = Subset(test, range(min(args.limit, len(test))))
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_loader = DataLoader(train, batch_size=64, shuffle=True)
    test_loader = DataLoader(test, batch_size=1000)
    for epoch in range(1, args.epochs + 1):
        train_epoch(model, train_loader, optimizer)
        acc = accuracy(model, test_loader)
        print(f"epoch {epoch}: test accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
