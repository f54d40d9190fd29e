"""mnistcli: train, evaluate, inspect and serve a small CNN for handwritten digits."""

__version__ = "0.1.0"
