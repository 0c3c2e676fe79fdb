"""The statistics of benchmarks/study_tables.py against known values."""
import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from study_tables import bootstrap_median_ci, holm  # noqa: E402

from wganlab.report.compare import sign_flip_p  # noqa: E402


def test_holm_matches_the_step_down_definition():
    # sorted p 0.01, 0.02, 0.04 -> 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_sign_flip_p_is_exact_for_twelve_seeds():
    diffs = [-5.0] * 12
    assert sign_flip_p(diffs) == pytest.approx(2 / 2 ** 12)
    diffs = [-3.0, 1.0, -2.0, -4.0, 0.5, -1.0]
    obs = abs(sum(diffs))
    want = sum(abs(sum(s * d for s, d in zip(signs, diffs))) >= obs
               for signs in itertools.product((1, -1), repeat=6)) / 64
    assert sign_flip_p(diffs) == pytest.approx(want)


def test_bootstrap_ci_brackets_the_median_and_is_degenerate_for_equal_values():
    lo, hi = bootstrap_median_ci([1.0, 2.0, 3.0, 4.0, 10.0], 2000)
    assert lo <= 3.0 <= hi and lo >= 1.0 and hi <= 10.0
    assert bootstrap_median_ci([2.0] * 5, 100) == (2.0, 2.0)
