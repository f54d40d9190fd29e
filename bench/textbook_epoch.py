"""One epoch of the textbook MNIST loop, as a whole process (bench.py times it start to exit).

    python bench/textbook_epoch.py --root TV_ROOT [--limit N]

What most tutorials (and PyTorch's own MNIST example) write: torchvision's `MNIST` dataset
read from TV_ROOT/MNIST/raw (the IDX files, linked there by bench.py: no download),
`ToTensor`/`Normalize` per sample, a `DataLoader` with batch 64 and shuffling, the SimpleCNN of
the reference design written the usual way (conv, ReLU, max-pool), Adam 1e-3, one training
epoch, then the test set through a `DataLoader` of 1,000 in `no_grad`. mnistcli itself is not
imported: this is the loop mnistcli is compared with.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import datasets, transforms


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(F.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--limit", type=int, default=0, help="training images, 0 for all")
    args = parser.parse_args()
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(args.root, train=True, download=False, transform=tf)
    test = datasets.MNIST(args.root, train=False, download=False, transform=tf)
    if args.limit:
        train = torch.utils.data.Subset(train, range(args.limit))
        test = torch.utils.data.Subset(test, range(min(args.limit, len(test))))
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for x, y in torch.utils.data.DataLoader(train, batch_size=64, shuffle=True):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test, batch_size=1000):
            correct += int((model(x).argmax(1) == y).sum())
    print(f"test accuracy {correct / len(test):.4f}")


if __name__ == "__main__":
    main()
