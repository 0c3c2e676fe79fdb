"""Tiny synthetic "digit" data sets for the metric tests: ten classes, each a bright square at
its own place on a noisy background, easy enough for a classifier trained in a few steps."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from wganlab.data import ImageSet, to_image_tensor


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    x = rng.integers(0, 40, size=(n, 28, 28))
    for i, c in enumerate(labels):
        r, q = 3 + 12 * (c // 5), 2 + 5 * (c % 5) + rng.integers(-1, 2)
        x[i, r:r + 8, q:q + 5] = rng.integers(200, 256)
    return x.astype(np.uint8), labels.astype(np.int64)


def synthetic_sets(n_train: int = 400, n_test: int = 100) -> tuple[ImageSet, ImageSet]:
    out = []
    for n, seed in ((n_train, 0), (n_test, 1)):
        x, y = synthetic_digits(n, seed)
        out.append(ImageSet(to_image_tensor(x), torch.from_numpy(y), "synthetic"))
    return out[0], out[1]


def write_idx_folder(folder: Path, n_train: int = 400, n_test: int = 100) -> Path:
    """The synthetic sets as a standard folder of gzipped IDX files."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = synthetic_digits(n, seed)
        head = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in x.shape)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + x.tobytes()))
        head = bytes([0, 0, 8, 1]) + len(y).to_bytes(4, "big")
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(head + y.astype(np.uint8).tobytes()))
    return folder
