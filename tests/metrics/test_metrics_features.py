import math

import numpy as np
import pytest
import scipy.linalg
import torch

from wganlab.metrics import features as ft


def _gauss(n, d, seed, mean=0.0, scale=1.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64) * scale + mean


def test_fd_of_a_set_with_itself_is_zero():
    x = _gauss(500, 16, 0)
    assert ft.frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_closed_form_for_gaussians():
    # N(m, diag(a)) vs N(0, diag(b)): |m|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    m = torch.tensor([1.0, 2.0, 0.0])
    expected = 5.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert ft.frechet_distance(m, torch.diag(a), torch.zeros(3), torch.diag(b)) == \
        pytest.approx(expected, abs=1e-9)
    # a shifted copy of one sample: exactly the squared shift
    x = _gauss(2000, 8, 1)
    shift = torch.full((8,), 0.5)
    assert ft.frechet_distance_features(x, x + shift) == pytest.approx(8 * 0.25, rel=1e-9)
    # samples of N(0, I) vs N(mu, 4 I): near |mu|^2 + d (2 - 1)^2
    y = _gauss(20000, 8, 2, mean=1.0, scale=2.0)
    assert ft.frechet_distance_features(_gauss(20000, 8, 3), y) == pytest.approx(16.0, rel=0.03)


def test_fd_matches_the_scipy_sqrtm_formula_and_survives_singular_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T, b @ b.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = (np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2)
           - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2).real))
    assert ft.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-8)
    collapsed = torch.ones(100, 6, dtype=torch.float64)  # zero covariance
    d = ft.frechet_distance_features(collapsed, torch.as_tensor(rng.normal(size=(100, 6))))
    assert math.isfinite(d) and d > 0


def test_kid_is_unbiased_and_matches_a_direct_computation():
    # independent pairs of samples of one distribution: the estimates average to ~0
    vals = torch.tensor([ft.kid(_gauss(100, 8, 2 * i), _gauss(100, 8, 2 * i + 1), subsets=1)[0]
                         for i in range(100, 160)])
    assert abs(vals.mean()) < 3 * vals.std() / math.sqrt(len(vals))
    x, y = _gauss(400, 8, 4), _gauss(400, 8, 5)
    same, std = ft.kid(x, y, subsets=20, subset_size=200, seed=0)
    shifted, _ = ft.kid(x, y + 1.0, subsets=20, subset_size=200, seed=0)
    assert shifted > 10 * max(std, abs(same))
    # one subset holding everything equals the textbook formula
    a, b = _gauss(30, 4, 6), _gauss(25, 4, 7) + 0.3
    k = lambda p, q: (p @ q.T / 4 + 1) ** 3  # noqa: E731
    m = 25
    a = a[:m]
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    direct = ((kxx.sum() - kxx.trace()) / (m * (m - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
              - 2 * kxy.mean())
    got, _ = ft.kid(a, b, subsets=1, subset_size=m, exact=True)
    assert got == pytest.approx(float(direct), rel=1e-9)
    got32, _ = ft.kid(a, b, subsets=1, subset_size=m)
    assert got32 == pytest.approx(float(direct), rel=1e-4)


def test_knn_radii_match_brute_force():
    x = _gauss(300, 5, 8)
    d = torch.cdist(x, x)
    expected = d.sort(1).values[:, 3]
    assert torch.allclose(ft.knn_radii(x, 3).double(), expected, atol=1e-4)


def test_precision_recall_identical_disjoint_and_collapsed():
    x = _gauss(500, 8, 9)
    assert ft.precision_recall(x, x) == (1.0, 1.0)
    assert ft.precision_recall(x, x + 100.0) == (0.0, 0.0)
    collapsed = x[:1].repeat(500, 1) + 1e-3 * _gauss(500, 8, 10)
    p, r = ft.precision_recall(x, collapsed)
    assert p == 1.0 and r < 0.05
    # a fake set from the same distribution: both high, not perfect
    p, r = ft.precision_recall(x, _gauss(500, 8, 11))
    assert 0.5 < p < 1 and 0.5 < r < 1


def test_class_statistics():
    real = torch.full((10,), 0.1, dtype=torch.float64)
    uniform = torch.arange(1000) % 10
    assert ft.class_coverage(uniform, real) == 1.0
    assert ft.class_kl(uniform, real) == pytest.approx(0.0, abs=1e-12)
    single = torch.zeros(1000, dtype=torch.long)
    assert ft.class_coverage(single, real) == pytest.approx(0.1)
    assert ft.class_kl(single, real) == pytest.approx(math.log(10))
    confident = torch.nn.functional.one_hot(uniform, 10).double()
    assert ft.classifier_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert ft.classifier_score(torch.nn.functional.one_hot(single, 10).double()) == \
        pytest.approx(1.0, abs=1e-6)
    assert ft.classifier_score(torch.full((50, 10), 0.1)) == pytest.approx(1.0)
