"""The image metric suite, each metric beside the value real held-out data gets.

Generated images are embedded by the evaluator classifier and compared with a fixed sample of
the real training split: Fréchet distance and KID of the features, k-NN precision/recall, class
coverage and KL to the real class histogram, and the classifier's "inception score". Every
metric ``eval/x`` comes with ``eval/x_ref``: the same metric for the held-out real test split
against the same training sample, at the same sample size where the test split is large enough
(``eval/ref_n`` says how many test images it used). That is what "perfect" looks like.

The real side (training-sample features, k-NN radii, reference values) is cached in memory and
on disk keyed by the data's content hash, the evaluator's weights and the sample size, so a
periodic evaluation only embeds and compares the generated images.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import features as ft
from .evaluator import (Evaluator, cache_dir, evaluator_for, load_entry, read_sidecar,
                        save_entry)

#: k of the k-NN manifolds (Kynkäänniemi et al. 2019)
PR_K = 3
#: KID: number of random subsets and their size (capped by the sample sizes)
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
#: seed of the fixed real samples (independent of the evaluation seed, so caches are reused)
REAL_SEED = 0
#: bump when a metric's definition changes: cached reference values are then recomputed
STATS_VERSION = "rs2"


@dataclass
class RealReference:
    """The real side of the comparison at one sample size."""
    feats: torch.Tensor        # (n_real, D) features of a fixed training sample
    radii: torch.Tensor        # (n_real,) k-NN radii of those features
    mu: torch.Tensor
    cov: torch.Tensor
    class_hist: torch.Tensor   # (K,) label histogram of the whole training split
    ref: dict[str, float]      # metrics of the held-out test sample: what "perfect" scores

    @property
    def n(self) -> int:
        return len(self.feats)


def compare(real: RealReference, feats: torch.Tensor, probs: torch.Tensor,
            seed: int = 0) -> dict[str, float]:
    """Every image metric of one embedded set against the real reference (no ``eval/`` prefix)."""
    mu, cov = ft.feature_stats(feats)
    kid_mean, kid_std = ft.kid(feats, real.feats, KID_SUBSETS, KID_SUBSET_SIZE, seed)
    precision, recall = ft.precision_recall(real.feats, feats, PR_K, real_radii=real.radii)
    pred = probs.argmax(1)
    return {
        "fd": ft.frechet_distance(mu, cov, real.mu, real.cov),
        "kid": kid_mean, "kid_std": kid_std,
        "precision": precision, "recall": recall,
        "coverage": ft.class_coverage(pred, real.class_hist),
        "class_kl": ft.class_kl(pred, real.class_hist),
        "is": ft.classifier_score(probs),
    }


def _sample_indices(n_total: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[:n].sort().values


def _build_reference(train, test, evaluator: Evaluator, n: int) -> RealReference:
    n_real = min(n, len(train))
    feats, _ = evaluator.embed(train.images[_sample_indices(len(train), n_real, REAL_SEED)])
    hist = ft.class_histogram(train.labels, evaluator.n_classes)
    mu, cov = ft.feature_stats(feats)
    real = RealReference(feats, ft.knn_radii(feats, PR_K), mu, cov, hist, {})
    m = min(n, len(test))
    t_feats, t_probs = evaluator.embed(test.images[_sample_indices(len(test), m, REAL_SEED + 1)])
    real.ref = compare(real, t_feats, t_probs, seed=REAL_SEED)
    real.ref["ref_n"] = float(m)
    return real


_MEMORY: dict[tuple, RealReference] = {}
_HASHES: dict[int, tuple] = {}  # id(images tensor) -> (weak reference, version, hash)


def content_hash(images) -> str:
    """``ImageSet.content_hash()`` remembered per tensor (rehashing each evaluation wastes time);
    an in-place change of the tensor (its version counter) forces a new hash."""
    version = (images.images._version, images.labels._version, len(images))
    hit = _HASHES.get(id(images.images))
    if hit is not None and hit[0]() is images.images and hit[1] == version:
        return hit[2]
    h = images.content_hash()
    for k in [k for k, v in _HASHES.items() if v[0]() is None]:
        del _HASHES[k]
    _HASHES[id(images.images)] = (weakref.ref(images.images), version, h)
    return h


def real_reference(train, test, evaluator: Evaluator, n: int,
                   directory: str | Path | None = None) -> RealReference:
    """The cached real side for sample size ``n`` (memory, then disk, then computed)."""
    key = (STATS_VERSION, content_hash(train), content_hash(test),
           evaluator.weights_sha[:16], n)
    if key in _MEMORY:
        return _MEMORY[key]
    stem = "realstats-" + "-".join(map(str, key))
    path = cache_dir(directory) / f"{stem}.safetensors"
    sidecar = path.with_suffix(".json")
    real = None
    if path.exists() or sidecar.exists():
        try:
            real = _load_reference(path, sidecar)
        except ValueError as e:
            warnings.warn(f"real-statistics cache rejected, recomputing: {e}", stacklevel=2)
    if real is None:
        real = _build_reference(train, test, evaluator, n)
        tensors = {"feats": real.feats.contiguous(), "radii": real.radii.contiguous(),
                   "class_hist": real.class_hist.contiguous()}
        save_entry(path, sidecar, tensors, {"ref": real.ref})
    _MEMORY[key] = real
    return real


def _load_reference(path: Path, sidecar: Path) -> RealReference:
    meta = read_sidecar(sidecar, ("ref",))
    try:
        ref = {k: float(v) for k, v in meta["ref"].items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"sidecar {sidecar} holds no reference values: {e}") from None
    t, _ = load_entry(path, sidecar, meta)
    try:
        feats, radii, hist = t["feats"], t["radii"], t["class_hist"]
    except KeyError as e:
        raise ValueError(f"{path} lacks the tensor {e}") from None
    mu, cov = ft.feature_stats(feats)
    return RealReference(feats, radii, mu, cov, hist, ref)


def clear_memory_cache() -> None:
    _MEMORY.clear()


def as_images(samples: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Generated samples as (N, C, S, S) like the real images (flat MLP outputs are reshaped)."""
    x = torch.as_tensor(samples).detach().cpu().float()
    shape = like.shape[1:]
    if x.shape[1:] != shape:
        if x[0].numel() != shape.numel():
            raise ValueError(f"generated samples of shape {tuple(x.shape)} do not fit real "
                             f"images of shape {tuple(shape)}")
        x = x.reshape(len(x), *shape)
    return x


def image_metrics(fake: torch.Tensor, train, test, seed: int = 0,
                  evaluator: Optional[Evaluator] = None,
                  directory: str | Path | None = None) -> dict[str, float]:
    """All image metrics of ``fake`` (N, 1, S, S) in [-1, 1] against the real ``train`` /
    ``test`` :class:`~wganlab.data.ImageSet` pair, as flat ``eval/...`` keys with references."""
    x = as_images(fake, train.images)
    evaluator = evaluator or evaluator_for(train, test, directory,
                                           data_hash=content_hash(train))
    real = real_reference(train, test, evaluator, len(x), directory)
    return score_images(x, evaluator, real, seed)


def score_images(x: torch.Tensor, evaluator: Evaluator, real: RealReference,
                 seed: int = 0) -> dict[str, float]:
    """The metrics of images ``x`` (already shaped like the real ones) against a prepared real
    reference: the cheap part that periodic evaluation repeats."""
    if len(x) < PR_K + 2:
        raise ValueError(f"image metrics need at least {PR_K + 2} samples, got {len(x)}")
    out: dict[str, float] = {}
    if bool(torch.isfinite(x).all()):
        feats, probs = evaluator.embed(x.clamp(-1, 1))
        values = compare(real, feats, probs, seed)
    else:  # a diverged generator: say so with NaNs rather than crash the run
        values = {k: float("nan") for k in real.ref if k != "ref_n"}
    for k, v in values.items():
        out[f"eval/{k}"] = v
        out[f"eval/{k}_ref"] = real.ref[k]
    out["eval/classifier_acc"] = evaluator.accuracy
    out["eval/n"] = float(len(x))
    out["eval/real_n"] = float(real.n)
    out["eval/ref_n"] = real.ref["ref_n"]
    return out
