"""One epoch of the textbook MNIST loop, as a whole process (bench.py times it start to exit).

    python bench/textbook_epoch.py --root TV_ROOT [--limit N]

The loop is examples/textbook_loop.py, the file a learner reads first: torchvision's `MNIST`
read from TV_ROOT/MNIST/raw (the IDX files, linked there by bench.py: no download), per-sample
transforms through a `DataLoader` of batch 64, the SimpleCNN written the usual way, Adam 1e-3,
one training epoch, then the test set in batches of 1,000 under `inference_mode`. mnistcli
itself is not imported: this is the loop mnistcli is compared with.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from textbook_loop import main

if __name__ == "__main__":
    main([*sys.argv[1:], "--epochs", "1"])
