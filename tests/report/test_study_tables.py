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


def test_main_block_reads_every_seed_group_and_renames_the_retuned_arm(tmp_path, capsys):
    import json

    from study_tables import main

    def group(seeds, fd):
        runs = [{"constraint": arm, "seed": s, "ok": True,
                 "final": {"final/fd": fd[arm] + s, "final/kid": 0.1, "final/coverage": 1.0},
                 "thresholds": {}} for arm in fd for s in seeds]
        return {"runs": runs}

    fds = {"clip": 500.0, "invclip-exact-bounded": 400.0, "clip-x0.8": 300.0}
    for name, seeds in (("s10-11", (10, 11)), ("s12-13", (12, 13))):
        (tmp_path / "main" / name).mkdir(parents=True)
        (tmp_path / "main" / name / "results.json").write_text(json.dumps(group(seeds, fds)))
    main(["--root", str(tmp_path), "--boot", "200"])
    out = capsys.readouterr().out
    assert "| clip-retuned | 4 |" in out and "clip-x0.8" not in out
    assert "| invclip-exact-bounded − clip | 4 | 4/4 | -100 [-100, -100] | 0.125 |" in out
