"""Pure functions on feature matrices (N, D) and class probabilities (N, K).

Nothing here knows where the features come from; :mod:`wganlab.metrics.evaluator` supplies them
from a small classifier trained on the real data (no Inception weights can be downloaded).
Fréchet distance and KID are torchmetrics' (its FID module over precomputed features, its
polynomial-kernel MMD on our seeded subsets), in float64 (KID: float32 unless ``exact``);
precision/recall and the class statistics are our own, on CPU, chunked so memory stays
O(chunk * N). torchmetrics is imported where it is used: importing it takes over a second.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

Array = torch.Tensor | np.ndarray


def _t(x: Array) -> torch.Tensor:
    x = torch.as_tensor(x).detach().cpu().double()
    if x.ndim != 2:
        raise ValueError(f"expected a matrix (N, D), got shape {tuple(x.shape)}")
    return x


# ----------------------------------------------------------------------------- torchmetrics

class PrecomputedFeatures(nn.Module):
    """The identity as torchmetrics' ``feature`` extractor: its FID/KID modules expect images
    that they embed themselves; here the "images" are already (N, D) feature matrices (our own
    classifier's, see :mod:`wganlab.metrics.evaluator`). Returns them as float64, so the
    metric's sums, covariances and result stay in float64 (torchmetrics casts its output back
    to the features' dtype)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)  # read by torchmetrics instead of a dummy image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected features of shape (N, {self.num_features}), "
                             f"got {tuple(x.shape)}")
        return x.double()


#: torchmetrics' Metric gathers its state over torch.distributed when a process group exists;
#: our metrics are computed per process on data that process holds, so they never sync
_LOCAL = {"sync_on_compute": False, "distributed_available_fn": lambda: False}


# ----------------------------------------------------------------------------- Fréchet distance

def feature_stats(feats: Array) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of a feature matrix."""
    f = _t(feats)
    if len(f) < 2:
        raise ValueError("feature statistics need at least 2 samples")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (len(f) - 1)


def frechet_distance(mu1: Array, cov1: Array, mu2: Array, cov2: Array) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^1/2), the W2^2 distance between two Gaussians,
    by torchmetrics' FID formula (tr (C1 C2)^1/2 as the sum of the square roots of the
    eigenvalues of C1 C2), in float64. Rounding can leave an FD of identical statistics a hair
    below 0: it is clamped to 0, a squared distance."""
    from torchmetrics.image.fid import _compute_fid  # torchmetrics takes ~1.4 s to import
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    c1, c2 = torch.as_tensor(cov1).double(), torch.as_tensor(cov2).double()
    if mu1.shape != mu2.shape or c1.shape != c2.shape or c1.shape != mu1.shape * 2:
        raise ValueError(f"means {tuple(mu1.shape)}, {tuple(mu2.shape)} and covariances "
                         f"{tuple(c1.shape)}, {tuple(c2.shape)} do not fit together")
    return float(_compute_fid(mu1, c1, mu2, c2).clamp_min(0))


def frechet_distance_features(x: Array, y: Array) -> float:
    """Fréchet distance between the Gaussian fits of two feature matrices: torchmetrics'
    ``FrechetInceptionDistance`` over the features as they are (:class:`PrecomputedFeatures`)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    x, y = _t(x), _t(y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("feature statistics need at least 2 samples")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"features of different widths: {x.shape[1]} and {y.shape[1]}")
    fid = FrechetInceptionDistance(feature=PrecomputedFeatures(x.shape[1]), **_LOCAL)
    fid.update(x, real=True)
    fid.update(y, real=False)
    return float(fid.compute().clamp_min(0))


# ----------------------------------------------------------------------------- KID

def kid(x: Array, y: Array, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, exact: bool = False) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 (torchmetrics'
    ``poly_mmd`` with its defaults: degree 3, gamma 1/d, coef 1), averaged over random subsets
    (mean, sample std over subsets). Unbiased, so two samples of one distribution give ~0 at
    any size (negative values are possible and are kept). Subsets hold at most half of the
    smaller set (all of it when ``subsets`` is 1), drawn from a private generator seeded with
    ``seed`` (the global RNG is untouched). float32 by default (faster; the sums' relative
    error stays near 1e-6, far below KID's subset-to-subset spread), float64 when ``exact``.

    Not torchmetrics' ``KernelInceptionDistance`` module: it draws its subsets from the global
    RNG (not seedable per call, and it would move a training run's random stream), needs
    ``subset_size`` <= both sample sizes, and reports the population std."""
    from torchmetrics.image.kid import poly_mmd
    x, y = (_t(x), _t(y)) if exact else (_t(x).float(), _t(y).float())
    # subsets of at most half the smaller set, so that they differ and their spread is a spread
    m = min(subset_size, len(x), len(y)) if subsets == 1 else \
        min(subset_size, max(2, min(len(x), len(y)) // 2))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    g = torch.Generator().manual_seed(seed)
    vals = []
    # drawn in the order of wganlab's own KID before torchmetrics (5 x-subsets, then 5 y-subsets):
    # the same seed gives the same subsets, so values did not move with the switch
    for start in range(0, subsets, 5):
        b = min(5, subsets - start)
        xs = [x[torch.randperm(len(x), generator=g)[:m]] for _ in range(b)]
        ys = [y[torch.randperm(len(y), generator=g)[:m]] for _ in range(b)]
        vals += [poly_mmd(a, c).double() for a, c in zip(xs, ys)]
    v = torch.stack(vals)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0


# ----------------------------------------------------------------------------- precision / recall

def _pairwise_chunks(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048):
    """Yield (start, Euclidean distances of a[start:start+chunk] to all of b), float32."""
    b32 = b.float()
    bn = b32.pow(2).sum(1)[None, :]
    for s in range(0, len(a), chunk):
        a32 = a[s:s + chunk].float()
        d2 = torch.addmm(bn, a32, b32.T, alpha=-2.0)  # fused: far faster than broadcasting
        d2 += a32.pow(2).sum(1, keepdim=True)
        yield s, d2.clamp_min_(0).sqrt_()


def knn_radii(x: Array, k: int = 3) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point (the k-NN manifold's radii)."""
    x = _t(x)
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points (got {len(x)})")
    out = torch.empty(len(x))
    for s, d in _pairwise_chunks(x, x):
        # the point itself is at distance ~0 and is the first of the k + 1 smallest
        out[s:s + len(d)] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def precision_recall(real: Array, fake: Array, k: int = 3,
                     real_radii: torch.Tensor | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision is the share of fake
    samples inside the real k-NN manifold (a union of balls, one per real point with radius its
    k-th neighbour distance); recall the share of real samples inside the fake manifold.
    ``real_radii`` may be passed when cached."""
    real, fake = _t(real), _t(fake)
    r_real = knn_radii(real, k) if real_radii is None else real_radii.float()
    r_fake = knn_radii(fake, k)
    in_real = torch.zeros(len(fake), dtype=torch.bool)
    in_fake = torch.zeros(len(real), dtype=torch.bool)
    for s, d in _pairwise_chunks(fake, real):  # d: (chunk of fake, all real)
        in_real[s:s + len(d)] = (d <= r_real).any(1)
        in_fake |= (d <= r_fake[s:s + len(d), None]).any(0)
    return float(in_real.float().mean()), float(in_fake.float().mean())


# ----------------------------------------------------------------------------- class statistics

def class_histogram(labels: Array, n_classes: int) -> torch.Tensor:
    """Normalised histogram of integer labels (or predicted classes)."""
    lab = torch.as_tensor(labels).long().flatten()
    return torch.bincount(lab, minlength=n_classes).double() / max(len(lab), 1)


def class_coverage(pred: Array, real_hist: Array, share: float = 0.5) -> float:
    """Share of classes that the generator produces at least ``share`` times as often as the
    real data does (0.5: a class must get at least half its real frequency)."""
    real_hist = torch.as_tensor(real_hist).double()
    p = class_histogram(pred, len(real_hist))
    present = real_hist > 0
    return float((p[present] >= share * real_hist[present]).double().mean())


def class_kl(pred: Array, real_hist: Array) -> float:
    """KL(p_generated || p_real) of the predicted class histograms: 0 when the generator makes
    every class as often as the real data, log(1 / p_real(c)) (about 2.3 on MNIST) when it makes
    only class c. This direction stays finite when classes are missing."""
    real_hist = torch.as_tensor(real_hist).double()
    p = class_histogram(pred, len(real_hist))
    nz = p > 0
    if (real_hist[nz] == 0).any():
        return float("inf")
    return float((p[nz] * (p[nz] / real_hist[nz]).log()).sum())


def classifier_score(probs: Array, eps: float = 1e-12) -> float:
    """The "inception score" with our classifier: exp(E_x KL(p(y|x) || p(y))). High when each
    sample is classified confidently and the classes are balanced; at most the number of
    classes. One split over all samples (the score depends on N; compare at equal N)."""
    p = _t(probs).clamp_min(eps)
    py = p.mean(0, keepdim=True)
    return float((p * (p.log() - py.log())).sum(1).mean().exp())
