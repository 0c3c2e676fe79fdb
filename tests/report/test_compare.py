"""`wganlab compare` end to end on toy data, and the statistics it reports."""
import json
import re
import statistics

import pytest

from wganlab.cli import main
from wganlab.report.compare import (CompareError, Threshold, _has_checkpoint, cell, fmt,
                                    report_metrics, run_order, sign_flip_p)

TINY = ["train.n_critic=2", "train.warmup_generator_steps=0", "train.log_every=2",
        "train.sample_every=3", "train.tensorboard=false", "train.progress=false",
        "model.toy_hidden=16", "data.batch_size=32", "train.eval_every=3",
        "train.eval_samples=200"]


def _compare(out, *extra):
    argv = ["compare", "--config", "toy", "--constraints", "clip,none", "--seeds", "0,1",
            "--generator-steps", "6", "--out", str(out), "--eval-samples", "200",
            "--threshold", "eval/w1<10"]
    for s in TINY:
        argv += ["--set", s]
    return main(argv + list(extra))


def _table_rows(report: str, first_header: str) -> tuple[list[str], dict[str, list[str]]]:
    """The markdown table whose header starts with ``first_header``: header, rows by name."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return header, rows


def test_compare_end_to_end(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert _compare(out) == 0
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for name in ("plots/samples.png", "plots/eval_w1.png", "plots/w_estimate.png"):
        assert (out / name).is_file(), name
        assert f"]({name})" in report

    runs = results["runs"]
    assert [(r["constraint"], r["seed"]) for r in runs] == \
        [("clip", 0), ("none", 0), ("none", 1), ("clip", 1)]  # rotated per seed
    for r in runs:
        assert r["ok"] and r["rc"] == 0
        assert r["final"]["generator_step"] == 6
        assert len(r["load_before"]) == 3 and len(r["load_after"]) == 3
        assert f"constraint.name={r['constraint']}" in r["command"]
        assert "eval/w1" in r["series"] and "final/w1" in r["final"]
        assert r["thresholds"]["eval/w1 < 10"]["generator_step"] == 3
    assert results["machine"]["cpu_count"] >= 1

    # the report's medians and spreads are those of results.json
    header, rows = _table_rows(report, "constraint")
    metrics = report_metrics(results["summary"])
    assert header[2:] == metrics and "final/w1" in metrics
    for c in ("clip", "none"):
        for k in metrics:
            vals = [r["final"][k] for r in runs if r["constraint"] == c]
            expect = f"{fmt(statistics.median(vals))} [{fmt(min(vals))}–{fmt(max(vals))}]"
            assert rows[c][header.index(k)] == expect, (c, k)
    _, cost = _table_rows(report, "constraint | generator steps")  # second table
    assert cost["clip"][1] == cell(results["summary"]["clip"]["generator_step"]) == "6 [6–6]"
    assert "2 seed(s)" in report and "suggestive" in report

    # a second call resumes: every finished run is kept, none retrained
    stamps = {r["name"]: (out / r["run_dir"] / "generator.safetensors").stat().st_mtime_ns
              for r in runs}
    capsys.readouterr()
    assert _compare(out) == 0
    assert capsys.readouterr().err.count("done before, kept") == 4
    for r in runs:
        assert (out / r["run_dir"] / "generator.safetensors").stat().st_mtime_ns == \
            stamps[r["name"]]

    # a partial run (no final weights) with a checkpoint is resumed, not restarted
    part = out / "runs" / "none-s1"
    (part / "generator.safetensors").unlink()
    assert _has_checkpoint(part)
    assert _compare(out) == 0
    err = capsys.readouterr().err
    assert "none-s1: resuming" in err and err.count("done before, kept") == 3
    again = json.loads((out / "results.json").read_text())
    entry = next(r for r in again["runs"] if r["name"] == "none-s1")
    assert entry["ok"] and entry["resumed"] and "--resume" in entry["command"]
    assert entry["final"]["generator_step"] == 6


def test_compare_rejects_unknown_constraint(tmp_path, capsys):
    rc = main(["compare", "--config", "toy", "--constraints", "clip,bogus", "--seeds", "0",
               "--generator-steps", "2", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "bogus" in capsys.readouterr().err
    assert not (tmp_path / "x" / "runs").exists()


def test_compare_needs_one_budget(tmp_path, capsys):
    rc = main(["compare", "--config", "toy", "--constraints", "clip", "--out", str(tmp_path),
               "--generator-steps", "2", "--budget-seconds", "3"])
    assert rc == 2 and "exactly one budget" in capsys.readouterr().err


def test_run_order_interleaves():
    order = run_order(["a", "b", "c"], [0, 1, 2])
    assert order[:3] == [("a", 0), ("b", 0), ("c", 0)]
    assert order[3:6] == [("b", 1), ("c", 1), ("a", 1)]
    assert order[6:] == [("c", 2), ("a", 2), ("b", 2)]
    # each constraint takes every position once across the seeds
    for c in "abc":
        assert sorted(order[3 * i:3 * i + 3].index((c, i)) for i in range(3)) == [0, 1, 2]


def test_sign_flip_p():
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)
    assert sign_flip_p([1.0] * 6) == pytest.approx(2 / 64)
    assert sign_flip_p([1.0, -1.0]) == 1.0
    assert sign_flip_p([]) == 1.0


def test_threshold_parse():
    t = Threshold.parse("eval/fd<200")
    assert (t.key, t.op, t.value) == ("eval/fd", "<", 200.0)
    assert t.met(150.0) and not t.met(250.0) and not t.met(None)
    assert Threshold.parse("eval/recall > 0.5").met(0.6)
    with pytest.raises(CompareError, match="METRIC<VALUE"):
        Threshold.parse("eval/fd=3")


def test_fmt_is_stable():
    assert fmt(1.23456) == "1.235" and fmt(0) == "0" and fmt(None) == "-"
    assert re.fullmatch(r"\d\.\d{3}e-05", fmt(1.5e-5))


def test_a_second_compare_on_the_same_folder_is_refused(tmp_path, capsys):
    """While one process trains a comparison into a folder, another compare there fails at
    once, naming the holder; a report-only call still runs."""
    import subprocess
    import sys
    out = tmp_path / "cmp"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom wganlab.train.rundir import locked\n"
         f"with locked({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _compare(out, "--constraints", "clip", "--seeds", "0",
                        "--generator-steps", "2") == 2
        err = capsys.readouterr().err
        assert "is in use by" in err and "choose another --out" in err
        assert not (out / "runs").exists()
    finally:
        holder.kill()
        holder.wait()
