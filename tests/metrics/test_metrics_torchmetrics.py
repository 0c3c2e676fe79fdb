"""Fréchet distance and KID through torchmetrics agree with wganlab's own formulas (kept here as
the reference: the hand-written implementation they replaced) on the same features."""
import math

import pytest
import torch

from wganlab.metrics import features as ft

#: agreement asked of the torchmetrics-based metrics with the reference formulas
REL = 1e-3


# ----------------------------------------------------------------------------- the reference

def _psd_sqrt(c: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((c + c.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def reference_fd(mu1, cov1, mu2, cov2) -> float:
    """tr (C1 C2)^1/2 from the symmetric PSD matrix C1^1/2 C2 C1^1/2 (same spectrum)."""
    mu1, mu2, c1, c2 = (torch.as_tensor(t).double() for t in (mu1, mu2, cov1, cov2))
    s1 = _psd_sqrt(c1)
    m = s1 @ c2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    d = (mu1 - mu2).pow(2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * tr_sqrt
    return float(d.clamp_min(0))


def reference_fd_features(x, y) -> float:
    return reference_fd(*ft.feature_stats(x), *ft.feature_stats(y))


def _poly_kernel_sum(a: torch.Tensor, b: torch.Tensor, same: bool) -> torch.Tensor:
    k = torch.baddbmm(torch.ones(1, 1, 1, dtype=a.dtype), a, b.transpose(1, 2),
                      alpha=1.0 / a.shape[-1]).pow_(3)
    total = k.sum((1, 2))
    if same:
        total -= k.diagonal(dim1=1, dim2=2).sum(1)
    return total.double()


def reference_kid(x, y, subsets=100, subset_size=1000, seed=0, exact=False):
    x = torch.as_tensor(x).double() if exact else torch.as_tensor(x).float()
    y = torch.as_tensor(y).double() if exact else torch.as_tensor(y).float()
    m = min(subset_size, len(x), len(y)) if subsets == 1 else \
        min(subset_size, max(2, min(len(x), len(y)) // 2))
    g = torch.Generator().manual_seed(seed)
    vals = []
    for start in range(0, subsets, 5):
        b = min(5, subsets - start)
        xs = x[torch.stack([torch.randperm(len(x), generator=g)[:m] for _ in range(b)])]
        ys = y[torch.stack([torch.randperm(len(y), generator=g)[:m] for _ in range(b)])]
        off = m * (m - 1)
        vals.append(_poly_kernel_sum(xs, xs, True) / off + _poly_kernel_sum(ys, ys, True) / off
                    - 2 * _poly_kernel_sum(xs, ys, False) / (m * m))
    v = torch.cat(vals)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0


# ----------------------------------------------------------------------------- feature sets

def _gen(seed):
    return torch.Generator().manual_seed(seed)


def gaussian(n, d, seed, mean=0.0, spread=1.0, correlated=False):
    """N(mean, spread^2 A A^T / d) samples (A random when ``correlated``, else I)."""
    g = _gen(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    if correlated:
        z = z @ torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return mean + spread * z


def relu_features(n, d, seed, dead=8, shift=0.0):
    """Like the evaluator's penultimate ReLU features: non-negative, correlated, ``dead`` units
    never active (zero variance, a singular covariance)."""
    f = torch.relu(gaussian(n, d, seed, mean=shift, correlated=True) + 0.3)
    f[:, :dead] = 0
    return f


#: (name, x, y): different means, covariances, sizes; a rank-deficient pair; a same-law pair
PAIRS = [
    ("mean shift", gaussian(500, 64, 1), gaussian(700, 64, 2, mean=0.3)),
    ("covariance", gaussian(1000, 64, 3, correlated=True), gaussian(1000, 64, 4, spread=1.5)),
    ("both", gaussian(2000, 64, 5, mean=1.0, correlated=True),
     gaussian(1500, 64, 6, mean=-0.5, spread=0.7, correlated=True)),
    ("relu, singular", relu_features(1200, 64, 7), relu_features(800, 64, 8, shift=0.2)),
    ("same law", gaussian(2000, 64, 9), gaussian(2000, 64, 10)),
]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ----------------------------------------------------------------------------- FD

@pytest.mark.parametrize("name,x,y", PAIRS, ids=[p[0] for p in PAIRS])
def test_fd_agrees_with_the_reference(name, x, y):
    want = reference_fd_features(x, y)
    assert _rel(ft.frechet_distance_features(x, y), want) < REL
    assert _rel(ft.frechet_distance(*ft.feature_stats(x), *ft.feature_stats(y)), want) < REL


def test_fd_closed_form_of_two_gaussians():
    # ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) with commuting S1 = Q diag(a) Q^T,
    # S2 = Q diag(b) Q^T: tr (S1 S2)^1/2 = sum sqrt(a b)
    d = 64
    g = _gen(11)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    a = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.1
    b = torch.rand(d, generator=g, dtype=torch.float64) * 2 + 0.05
    s1, s2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    mu1 = torch.randn(d, generator=g, dtype=torch.float64)
    mu2 = torch.randn(d, generator=g, dtype=torch.float64)
    exact = float((mu1 - mu2).pow(2).sum() + a.sum() + b.sum() - 2 * (a * b).sqrt().sum())
    assert _rel(ft.frechet_distance(mu1, s1, mu2, s2), exact) < 1e-9
    assert _rel(reference_fd(mu1, s1, mu2, s2), exact) < 1e-9
    # the non-commuting case has no such shortcut: the two formulas still agree
    s3 = gaussian(200, d, 12).T.cov()
    assert _rel(ft.frechet_distance(mu1, s1, mu2, s3), reference_fd(mu1, s1, mu2, s3)) < 1e-9
    # and samples of the two laws land near the exact value (sampling error only)
    n = 20000
    x = mu1 + (torch.randn(n, d, generator=g, dtype=torch.float64) * a.sqrt()) @ q.T
    y = mu2 + (torch.randn(n, d, generator=g, dtype=torch.float64) * b.sqrt()) @ q.T
    assert ft.frechet_distance_features(x, y) == pytest.approx(exact, rel=0.05)


def test_fd_features_stay_float64_and_checks_its_input():
    x = gaussian(300, 16, 13).float()
    y = gaussian(300, 16, 14).float() + 0.1
    assert ft.frechet_distance_features(x, y) == pytest.approx(
        reference_fd_features(x, y), rel=1e-9)  # float32 features, float64 maths
    with pytest.raises(ValueError, match="at least 2 samples"):
        ft.frechet_distance_features(x[:1], y)
    with pytest.raises(ValueError, match="different widths"):
        ft.frechet_distance_features(x, y[:, :8])
    with pytest.raises(ValueError, match="do not fit"):
        ft.frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


def test_fd_never_syncs_over_a_process_group(monkeypatch):
    # torchmetrics gathers a metric's state over torch.distributed when a group exists: one
    # rank evaluating alone would hang, and gathered copies would change the value
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    x, y = gaussian(200, 8, 15), gaussian(200, 8, 16)
    assert ft.frechet_distance_features(x, y) == pytest.approx(reference_fd_features(x, y))


# ----------------------------------------------------------------------------- KID

@pytest.mark.parametrize("name,x,y", PAIRS, ids=[p[0] for p in PAIRS])
def test_kid_agrees_with_the_reference(name, x, y):
    # float64: the same subsets, the same sums up to rounding
    got, got_std = ft.kid(x, y, subsets=20, subset_size=1000, seed=3, exact=True)
    want, want_std = reference_kid(x, y, subsets=20, subset_size=1000, seed=3, exact=True)
    assert _rel(got_std, want_std) < REL
    if name == "same law":  # KID ~ 0: relative to its spread over subsets
        assert abs(got - want) < REL * want_std
    else:
        assert _rel(got, want) < REL
    # float32 (the default): rounding of the kernel sums, far below the subsets' spread
    got32, std32 = ft.kid(x, y, subsets=20, subset_size=1000, seed=3)
    assert abs(got32 - want) < REL * max(abs(want), want_std)
    assert _rel(std32, want_std) < REL


def test_kid_one_subset_is_the_whole_unbiased_mmd():
    x, y = gaussian(300, 64, 17), gaussian(250, 64, 18, mean=0.2)
    got, std = ft.kid(x, y, subsets=1, subset_size=10_000, exact=True)
    want, _ = reference_kid(x, y, subsets=1, subset_size=10_000, exact=True)
    assert std == 0.0 and _rel(got, want) < 1e-9


def test_kid_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = ft.kid(gaussian(100, 8, 19), gaussian(100, 8, 20), subsets=7, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert ft.kid(gaussian(100, 8, 19), gaussian(100, 8, 20), subsets=7, seed=1) == first
