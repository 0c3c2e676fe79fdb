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


def _block(path, fds, seeds, extra=None):
    import json
    path.mkdir(parents=True)
    runs = [{"constraint": arm, "seed": s, "ok": True,
             "final": {"final/fd": fds[arm] + s, "final/kid": 0.1, "final/coverage": 1.0,
                       **(extra or {})},
             "thresholds": {}} for arm in fds for s in seeds]
    (path / "results.json").write_text(json.dumps({"runs": runs}))


def test_best_control_is_the_lowest_median_fd_and_prints_its_config_name(tmp_path, capsys):
    from study_tables import main
    _block(tmp_path / "main" / "s10-11", {"clip": 500.0, "clip-x0.8": 300.0,
                                          "clip-rebalanced": 350.0, "invclip-balance": 900.0},
           (10, 11))
    _block(tmp_path / "tune-scale", {"clip": 500.0, "clip-x0.8": 300.0}, (100, 101))
    main(["--root", str(tmp_path), "--best-control"])
    assert capsys.readouterr().out.strip() == "clip-x0.8"
    with pytest.raises(SystemExit, match="no main-block results"):
        main(["--root", str(tmp_path / "empty"), "--best-control"])


def test_replication_and_sensitivity_blocks_are_tabulated_against_clip(tmp_path, capsys):
    from study_tables import main
    seeds = (10, 11, 12)
    _block(tmp_path / "main" / "s10-12", {"clip": 500.0, "invclip-exact-bounded": 450.0,
                                          "clip-rebalanced": 350.0}, seeds)
    _block(tmp_path / "fashion", {"clip": 800.0, "invclip-exact-bounded": 700.0}, seeds,
           {"final/classifier_acc": 0.91, "final/fd_ref": 5.0})
    _block(tmp_path / "fashion-control", {"clip-rebalanced": 600.0}, seeds)
    _block(tmp_path / "sensitivity", {"invclip-exact-bounded-0.02": 520.0,
                                      "invclip-exact-bounded-0.5": 400.0}, seeds)
    main(["--root", str(tmp_path), "--boot", "200", "--plot", str(tmp_path / "fd.png")])
    assert (tmp_path / "fd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    fashion = out.split("### Replication: fashion")[1].split("###")[0]
    assert "evaluator held-out accuracy 0.910; real held-out FD 5.0" in fashion
    assert "| invclip-exact-bounded − clip | 3 | 3/3 | -100 [-100, -100] | 0.25 |" in fashion
    assert "| clip-rebalanced − clip | 3 | 3/3 | -200 [-200, -200] | 0.25 |" in fashion
    assert "| invclip-exact-bounded − clip-rebalanced | 3 | 0/3 | 100 [100, 100] | 0.25 |" \
        in fashion
    sens = out.split("### Sensitivity")[1]
    assert "| invclip-exact-bounded-0.02 − clip | 3 | 0/3 | 20 [20, 20] | 0.25 |" in sens
    assert "| invclip-exact-bounded − clip | 3 | 3/3 | -50 [-50, -50] | 0.25 |" in sens
    assert "| invclip-exact-bounded-0.5 − clip | 3 | 3/3 | -100 [-100, -100] | 0.25 |" in sens
    assert "### Replication: digits" not in out


def test_fd_reached_gives_the_last_step_and_the_first_step_below_the_target(tmp_path):
    import json

    from fd_reached import fd_reached
    rows = [{"generator_step": 250, "eval/fd": 900.0}, {"generator_step": 300},
            {"generator_step": 500, "eval/fd": 450.0}, {"generator_step": 750, "eval/fd": 300.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert fd_reached(path, 500) == (750, 500)
    assert fd_reached(path, 100) == (750, 0)
    assert fd_reached(tmp_path / "missing.jsonl", 500) == (0, 0)


def test_dcgan_budget_search_and_block_are_tabulated_against_clip(tmp_path, capsys):
    import json

    from study_tables import dcgan
    d = tmp_path / "dcgan-budget-clip-s0"
    d.mkdir()
    rows = [{"generator_step": 250, "cpu_time": 500.0, "eval/fd": 900.0},
            {"generator_step": 500, "cpu_time": 1000.0, "eval/fd": 450.0}]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _block(tmp_path / "dcgan-block", {"clip": 400, "invclip-paper": 700,
                                      "invclip-exact-bounded": 380}, [0, 1, 2],
           {"invclip/drift_median_L0": -1.5, "invclip/drift_median_L1": 4.0})
    dcgan(tmp_path, n_boot=200)
    out = capsys.readouterr().out
    assert ("by generator step: 250: 900, 500: 450. FD < 500 first at step 500. 500 generator "
            "steps, 2.00 CPU-s each.") in out
    assert "| invclip-paper − clip | 3 | 0/3 | 300 [300, 300] | 0.25 |" in out
    assert "| invclip-exact-bounded − clip | 3 | 3/3 | -20 [-20, -20] | 0.25 |" in out
    assert "- invclip-paper: accumulated log d of the median unit at the end, per layer " \
        "(median over seeds): L0 -1.50, L1 +4.00" in out
