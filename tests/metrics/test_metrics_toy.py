import math

import numpy as np
import pytest
import torch

from wganlab.config import DataConfig
from wganlab.data import mixture_centers, sample_toy
from wganlab.metrics import evaluate, exact_w1, format_table, mode_coverage, w1_baseline
from wganlab.metrics.toy import MODE_HIT_SHARE, expected_quality_share, toy_metrics


def test_w1_of_a_shifted_copy_is_the_shift_length():
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([0.3, -0.4])
    assert exact_w1(x, x + shift) == pytest.approx(0.5, abs=1e-6)  # float32 points
    assert exact_w1(x, x) == pytest.approx(0.0, abs=1e-12)


def test_w1_hand_computed():
    # 1-D on a line: sorted matching 0->2, 1->5 costs (2 + 4) / 2
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = np.array([[5.0, 0.0], [2.0, 0.0]])
    assert exact_w1(x, y) == pytest.approx(3.0)
    # unequal sizes: the single point sends half its mass to each: (1 + 3) / 2
    assert exact_w1(np.zeros((1, 2)), np.array([[1.0, 0.0], [0.0, 3.0]])) == pytest.approx(2.0)
    # Euclidean, not squared: (0,0) -> (3,4) costs 5
    assert exact_w1(np.zeros((1, 2)), np.array([[3.0, 4.0]])) == pytest.approx(5.0)


def test_w1_nonfinite_samples_give_nan():
    x = torch.zeros(4, 2)
    y = x.clone()
    y[0, 0] = float("nan")
    assert math.isnan(exact_w1(x, y))


def test_w1_baseline_is_small_positive_and_cached():
    b = w1_baseline("8gaussians", 300, 0, 0.02)
    assert 0 < b < 0.5
    assert w1_baseline("8gaussians", 300, 0, 0.02) == b


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians"])
def test_mode_coverage_on_perfect_samples_hits_every_mode(name):
    x = sample_toy(name, 4000, torch.Generator().manual_seed(1), 0.02)
    c = mode_coverage(x, mixture_centers(name), 0.02)
    assert c["modes_hit"] == c["modes_total"] == len(mixture_centers(name))
    assert c["high_quality"] == pytest.approx(expected_quality_share(), abs=0.01)
    assert c["mode_kl"] < 0.02


def test_mode_coverage_counts_dropped_modes_and_junk():
    centers = mixture_centers("8gaussians")
    g = torch.Generator().manual_seed(2)
    x = sample_toy("8gaussians", 4000, g, 0.02)
    nearest = torch.cdist(x.double(), centers).argmin(1)
    kept = x[nearest < 3]                            # only 3 of 8 modes
    junk = torch.zeros(len(kept) // 2, 2)            # at the origin: far from every mode
    c = mode_coverage(torch.cat([kept, junk]), centers, 0.02)
    assert c["modes_hit"] == 3
    assert c["high_quality"] == pytest.approx(len(kept) / (len(kept) + len(junk)), abs=0.01)
    assert c["mode_kl"] == pytest.approx(math.log(8 / 3), abs=0.05)
    # a mode with fewer high-quality samples than MODE_HIT_SHARE of its fair share is not hit
    need = int(MODE_HIT_SHARE * 800 / 8)
    for count, hit in ((need - 1, 1), (need, 2)):
        lone = torch.cat([centers[0].repeat(800 - count, 1), centers[1].repeat(count, 1)])
        assert mode_coverage(lone, centers, 0.02)["modes_hit"] == hit


def test_toy_metrics_and_evaluate_dispatch():
    cfg = DataConfig(name="8gaussians")
    g = torch.Generator().manual_seed(3)
    good = evaluate(lambda n: sample_toy("8gaussians", n, g, 0.02), cfg, n_samples=500, seed=0)
    assert set(good) >= {"eval/w1", "eval/w1_baseline", "eval/modes_hit", "eval/high_quality"}
    assert good["eval/modes_hit"] == 8 and good["eval/modes_hit_ref"] == 8
    assert good["eval/w1"] < 2 * good["eval/w1_baseline"]
    bad = evaluate(torch.zeros(500, 2), cfg, seed=0)
    assert bad["eval/w1"] == pytest.approx(2.0, abs=0.01)   # every mode is 2 from the origin
    assert bad["eval/modes_hit"] == 0 and bad["eval/high_quality"] == 0
    roll = toy_metrics(torch.zeros(300, 2), "swissroll", seed=0)
    assert "eval/modes_hit" not in roll and roll["eval/w1"] > roll["eval/w1_baseline"]
    table = format_table(good)
    assert "w1" in table and "8 / 8" in table


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 12), seed=st.integers(0, 10_000),
       dx=st.floats(-3, 3), dy=st.floats(-3, 3))
def test_w1_is_a_metric_and_sees_translations(n, m, seed, dx, dy):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(m, 2, generator=g, dtype=torch.float64)
    z = torch.randn(n + m, 2, generator=g, dtype=torch.float64)
    shift = torch.tensor([dx, dy], dtype=torch.float64)
    # ot.dist's Euclidean distances go through |x|^2 + |y|^2 - 2xy: ~1e-8 rounding near 0
    assert exact_w1(x, x + shift) == pytest.approx(float(shift.norm()), abs=1e-6)
    assert exact_w1(x, y) == pytest.approx(exact_w1(y, x), abs=1e-6)
    assert exact_w1(x, y) <= exact_w1(x, z) + exact_w1(z, y) + 1e-6
    # W1 >= distance between the means (Kantorovich-Rubinstein with a linear function)
    assert exact_w1(x, y) >= float((x.mean(0) - y.mean(0)).norm()) - 1e-6
