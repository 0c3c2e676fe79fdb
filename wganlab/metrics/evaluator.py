"""The evaluator: a small CNN classifier trained on the real training split, cached on disk.

No Inception weights can be downloaded here, so image metrics live in the feature space of a
classifier the tool trains itself the first time it is needed (training time: docs/metrics.md).
It is cached under ``$WGANLAB_CACHE`` (default ``~/.cache/wganlab``), keyed by the
data set's content hash and the recipe version, as safetensors weights plus a JSON sidecar that
holds the weights' sha256 and the held-out accuracy. A sidecar that does not match its weights
(truncated, corrupted, edited file) is reported and the classifier is rebuilt, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from ..atomic import atomic_write, atomic_write_json
from ..models.mode import evaluating

#: bump when the architecture or the training recipe changes: old caches are then ignored
RECIPE_VERSION = "cnn1"
#: optimizer steps (batch 128): ~5 epochs of full MNIST, ~70 of the 4,500-digit default
DEFAULT_STEPS = 2500
FEATURE_DIM = 128


class EvaluatorNet(nn.Module):
    """Three stride-2 convolutions and a 128-unit penultimate layer: cheap (~0.8 M MACs per
    32x32 image) yet accurate on MNIST (held-out accuracy: docs/metrics.md)."""

    def __init__(self, n_classes: int = 10, channels: int = 1):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 16, 5, 2, 2), nn.ReLU(),   # 32 -> 16
            nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),         # 16 -> 8
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),         # 8 -> 4
            nn.AdaptiveAvgPool2d(4),                       # identity at 32x32; other sizes fit
            nn.Flatten(),
        )
        self.fc = nn.Linear(64 * 16, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cache_dir(override: str | Path | None = None) -> Path:
    """Where caches live: the argument, else ``$WGANLAB_CACHE``, else ``~/.cache/wganlab``."""
    if override is not None:
        return Path(override)
    env = os.environ.get("WGANLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "wganlab"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Evaluator:
    """A trained classifier plus what identifies it."""
    net: EvaluatorNet
    accuracy: float       # on the held-out (test) split
    data_hash: str        # content hash of the training split
    weights_sha: str      # sha256 of the cached weights file
    n_classes: int

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 2000
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (N, 128) and class probabilities (N, K) of images in [-1, 1]."""
        feats, probs = [], []
        with evaluating(self.net):
            for s in range(0, len(images), batch_size):
                x = images[s:s + batch_size].float()
                f = self.net.features(x)
                feats.append(f)
                probs.append(self.net.head(f).softmax(1))
        return torch.cat(feats), torch.cat(probs)


def _accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with evaluating(net), torch.no_grad():
        pred = torch.cat([net(images[s:s + 2000]).argmax(1)
                          for s in range(0, len(images), 2000)])
    return float((pred == labels).float().mean())


def random_shift(x: torch.Tensor, pixels: int, g: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random offset of up to ``pixels`` (background -1 fills in):
    cheap augmentation that keeps the small default set from being memorised."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, value=-1.0).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    off = torch.randint(0, 2 * pixels + 1, (2, b), generator=g)
    rows = (torch.arange(h)[None, :] + off[0, :, None])[:, :, None]
    cols = (torch.arange(w)[None, :] + off[1, :, None])[:, None, :]
    return padded[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2).contiguous()


def train_classifier(images: torch.Tensor, labels: torch.Tensor, n_classes: int,
                     steps: int = DEFAULT_STEPS, batch_size: int = 128,
                     seed: int = 0) -> EvaluatorNet:
    """Deterministic, seeded training (Adam, cosine-decayed lr); leaves the caller's global RNG
    untouched so evaluating mid-training does not change a run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EvaluatorNet(n_classes, images.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
        g = torch.Generator().manual_seed(seed)
        perm, pos = torch.randperm(len(images), generator=g), 0
        net.train()
        for _ in range(steps):
            if pos + batch_size > len(images):
                perm, pos = torch.randperm(len(images), generator=g), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            x = random_shift(images[idx], 2, g)
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return net


def _paths(directory: Path, data_hash: str) -> tuple[Path, Path]:
    stem = f"evaluator-{RECIPE_VERSION}-{data_hash}"
    return directory / f"{stem}.safetensors", directory / f"{stem}.json"


# ----------------------------------------------------------------------------- cache files
# A cache entry is a safetensors file plus a JSON sidecar holding its sha256 and what describes
# it (the evaluator's weights here, the real statistics in images.py).

def save_entry(path: Path, sidecar: Path, tensors: dict[str, torch.Tensor],
               meta: dict) -> str:
    """``tensors`` to ``path``, then ``meta`` and their sha256 to ``sidecar``, each atomically
    (a reader sees a sidecar only once its file is whole). Returns the sha256."""
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
    sha = sha256_file(path)
    atomic_write_json(sidecar, {"sha256": sha, **meta})
    return sha


def read_sidecar(sidecar: Path, keys: tuple[str, ...] = ()) -> dict:
    """A sidecar's JSON object, checked to hold ``sha256`` and ``keys``; else ValueError."""
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"sidecar {sidecar} is unreadable: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"sidecar {sidecar} is not a JSON object")
    for key in ("sha256", *keys):
        if key not in meta:
            raise ValueError(f"sidecar {sidecar} lacks the key {key!r}")
    return meta


def load_entry(path: Path, sidecar: Path, meta: dict) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of ``path`` and its sha256, once it matches the sha256 in ``meta`` (read
    from ``sidecar``); else ValueError saying what is wrong."""
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    sha = sha256_file(path)
    if sha != meta["sha256"]:
        raise ValueError(f"{path} does not match the sha256 in {sidecar} (truncated or corrupted)")
    try:
        return load_file(path), sha
    except Exception as e:  # noqa: BLE001 - any failure means the file cannot be trusted
        raise ValueError(f"{path} cannot be loaded: {e}") from None


def _load_cached(weights: Path, sidecar: Path, data_hash: str, n_classes: int,
                 channels: int) -> Evaluator:
    """The cached evaluator, or ValueError saying what is wrong with the cache files."""
    meta = read_sidecar(sidecar, ("accuracy", "data_hash", "recipe", "n_classes"))
    if meta["data_hash"] != data_hash or meta["recipe"] != RECIPE_VERSION:
        raise ValueError(f"sidecar {sidecar} describes another data set or recipe")
    if meta["n_classes"] != n_classes:
        raise ValueError(f"sidecar {sidecar} has {meta['n_classes']} classes, data has {n_classes}")
    state, sha = load_entry(weights, sidecar, meta)
    net = EvaluatorNet(n_classes, channels)
    try:
        net.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file cannot be trusted
        raise ValueError(f"weights file {weights} cannot be loaded: {e}") from None
    net.eval()
    return Evaluator(net, float(meta["accuracy"]), data_hash, sha, n_classes)


def get_evaluator(train_images: torch.Tensor, train_labels: torch.Tensor,
                  test_images: torch.Tensor, test_labels: torch.Tensor,
                  data_hash: str, directory: str | Path | None = None,
                  steps: Optional[int] = None, verbose: bool = True) -> Evaluator:
    """The evaluator for a data set: from the cache when valid, else trained and cached
    (``steps`` of training; None: ``DEFAULT_STEPS``, read at call time so tests can lower it)."""
    steps = DEFAULT_STEPS if steps is None else steps
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    channels = train_images.shape[1]
    key = data_hash if steps == DEFAULT_STEPS else f"{data_hash}-s{steps}"
    mem = _MEMORY.get((str(cache_dir(directory)), key))
    if mem is not None:
        return mem
    weights, sidecar = _paths(cache_dir(directory), key)
    if weights.exists() or sidecar.exists():
        try:
            ev = _load_cached(weights, sidecar, data_hash, n_classes, channels)
            _MEMORY[(str(cache_dir(directory)), key)] = ev
            return ev
        except ValueError as e:
            warnings.warn(f"evaluator cache rejected, retraining: {e}", stacklevel=2)
    if verbose:
        print(f"[wganlab] training the evaluator classifier on {len(train_images)} images "
              f"(cached in {weights.parent}) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    net = train_classifier(train_images, train_labels, n_classes, steps=steps)
    acc = _accuracy(net, test_images, test_labels)
    seconds = time.perf_counter() - t0
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    meta = {"accuracy": acc, "data_hash": data_hash, "recipe": RECIPE_VERSION,
            "n_classes": n_classes, "steps": steps, "n_train": len(train_images),
            "n_test": len(test_images), "train_seconds": round(seconds, 1)}
    sha = save_entry(weights, sidecar, state, meta)
    if verbose:
        print(f"[wganlab] evaluator trained in {seconds:.0f} s, held-out accuracy "
              f"{100 * acc:.2f} %", file=sys.stderr, flush=True)
    ev = Evaluator(net, acc, data_hash, sha, n_classes)
    _MEMORY[(str(cache_dir(directory)), key)] = ev
    return ev


_MEMORY: dict[tuple[str, str], Evaluator] = {}


def clear_memory_cache() -> None:
    """Forget evaluators held in memory (tests; after deleting cache files)."""
    _MEMORY.clear()


def evaluator_for(train, test, directory: str | Path | None = None,
                  steps: Optional[int] = None, verbose: bool = True,
                  data_hash: Optional[str] = None) -> Evaluator:
    """:func:`get_evaluator` for two :class:`wganlab.data.ImageSet` splits."""
    return get_evaluator(train.images, train.labels, test.images, test.labels,
                         data_hash or train.content_hash(), directory, steps, verbose)


__all__ = ["Evaluator", "EvaluatorNet", "get_evaluator", "evaluator_for", "train_classifier",
           "cache_dir", "clear_memory_cache", "save_entry", "read_sidecar", "load_entry",
           "RECIPE_VERSION", "DEFAULT_STEPS"]
