"""Metrics for 2-D toy data: the exact Wasserstein-1 distance and mode coverage.

On toy data the true W1 between sample sets is computable (an assignment problem solved exactly
by POT's network simplex), so a constraint's effect on the real distance is measured, not
guessed. Because two finite samples of the *same* distribution are still at a positive W1, every
W1 comes with its finite-sample baseline: the W1 between two independent real sets of the same
size. A generator is as good as W1 can tell when ``w1`` reaches ``w1_baseline``.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from ..data.toy import mixture_centers, sample_toy

#: a mode is "hit" when it receives at least this share of the samples it would get under the
#: true (uniform) mixture, counting only high-quality samples (within 3 sigma of it)
MODE_HIT_SHARE = 0.2
#: a sample is "high quality" when it lies within this many standard deviations of a mode centre
QUALITY_SIGMAS = 3.0
#: network simplex iteration cap: generous, 2,000 x 2,000 problems need ~1e6
EMD_MAX_ITER = 10_000_000


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a point set of shape (N, D), got {x.shape}")
    return x


def exact_w1(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Exact W1 between the empirical measures of two point sets (uniform weights,
    Euclidean ground cost)."""
    import ot  # POT is heavy to import: only where exact W1 is needed

    x, y = _as_numpy(x), _as_numpy(y)
    if len(x) == 0 or len(y) == 0:
        raise ValueError("exact_w1 needs two non-empty point sets")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    cost = ot.dist(x, y, metric="euclidean")
    a = np.full(len(x), 1.0 / len(x))
    b = np.full(len(y), 1.0 / len(y))
    return float(ot.emd2(a, b, cost, numItermax=EMD_MAX_ITER))


def real_sample(name: str, n: int, seed: int, std: float = 0.02) -> torch.Tensor:
    """``n`` points of a toy distribution from a private generator (never the training stream)."""
    g = torch.Generator().manual_seed(10_007 * seed + 3)
    return sample_toy(name, n, g, std)


#: the baseline averages this many independent pairs (one pair's W1 fluctuates by ~20 % on the
#: mixtures, because the mode proportions of two samples differ)
BASELINE_PAIRS = 3


@lru_cache(maxsize=32)
def w1_baseline(name: str, n: int, seed: int = 0, std: float = 0.02) -> float:
    """Mean W1 between two independent real sets of size ``n``: what a perfect generator
    scores on average (W1 of finite samples is biased upwards)."""
    vals = [exact_w1(real_sample(name, n, 1_000_003 + 2 * (BASELINE_PAIRS * seed + i), std),
                     real_sample(name, n, 1_000_004 + 2 * (BASELINE_PAIRS * seed + i), std))
            for i in range(BASELINE_PAIRS)]
    return float(sum(vals) / len(vals))


def mode_coverage(samples: torch.Tensor | np.ndarray, centers: torch.Tensor | np.ndarray,
                  std: float) -> dict[str, float]:
    """Modes hit, share of high-quality samples, and KL(mode histogram || uniform).

    A sample is high quality when it lies within ``QUALITY_SIGMAS`` * std of its nearest centre
    (for an isotropic 2-D Gaussian, 1 - exp(-4.5) = 98.9 % of true samples do). A mode is hit
    when its high-quality samples reach ``MODE_HIT_SHARE`` of its fair share N / K. The KL is
    over high-quality samples only; with none it is log K (as bad as a single mode)."""
    x, c = _as_numpy(samples), _as_numpy(centers)
    k = len(c)
    finite = np.isfinite(x).all(1)
    d = np.linalg.norm(x[finite, None, :] - c[None, :, :], axis=2)
    nearest, dist = d.argmin(1), d.min(1)
    good = dist <= QUALITY_SIGMAS * std
    counts = np.bincount(nearest[good], minlength=k).astype(np.float64)
    n = len(x)
    hit = counts >= MODE_HIT_SHARE * n / k
    if counts.sum() > 0:
        p = counts / counts.sum()
        nz = p > 0
        kl = float(np.sum(p[nz] * np.log(p[nz] * k)))
    else:  # nothing near any mode: as far from uniform as a single mode
        kl = math.log(k)
    return {"modes_hit": float(hit.sum()), "modes_total": float(k),
            "high_quality": float(good.sum() / n), "mode_kl": kl}


def toy_metrics(fake: torch.Tensor | np.ndarray, name: str, seed: int = 0,
                std: float = 0.02) -> dict[str, float]:
    """All toy metrics of ``fake`` (N, 2) against a fresh real sample of the same size, each
    beside its reference (a second real sample)."""
    x = _as_numpy(fake)
    if x.shape[1] != 2:
        raise ValueError(f"toy data is 2-D, got samples of shape {x.shape}")
    n = len(x)
    real = real_sample(name, n, seed, std)
    out = {"eval/w1": exact_w1(x, real), "eval/w1_baseline": w1_baseline(name, n, seed, std),
           "eval/n": float(n)}
    if name in ("8gaussians", "25gaussians"):
        centers = mixture_centers(name)
        ref = mode_coverage(real_sample(name, n, seed + 7_919, std), centers, std)
        for key, value in mode_coverage(x, centers, std).items():
            out[f"eval/{key}"] = value
            if key != "modes_total":
                out[f"eval/{key}_ref"] = ref[key]
    return out


def expected_quality_share(sigmas: float = QUALITY_SIGMAS) -> float:
    """Share of a 2-D isotropic Gaussian within ``sigmas`` standard deviations of its mean."""
    return 1.0 - math.exp(-0.5 * sigmas ** 2)
