"""The W1 benchmark's yardstick (closed-form W1 against POT on large samples) and its runner."""
from __future__ import annotations

import json
import math

import numpy as np
import ot
import pytest
import torch
from scipy.stats import norm

from wganlab.cli import main
from wganlab.data.w1pairs import gaussian_w1, w1_pairs
from wganlab.report.w1bench import pot_w1
from wganlab.metrics.toy import exact_w1
from wganlab.report.w1bench import BenchSettings, markdown, run_bench, run_one, summarise

torch.set_num_threads(1)


@pytest.mark.parametrize("mu, sigma", [(1.0, 1.0), (0.5, 2.0), (-0.3, 0.4), (0.0, 3.0)])
def test_gaussian_w1_quadrature_against_closed_form_and_pot(mu, sigma):
    value = gaussian_w1(mu, sigma)
    # F^-1 - G^-1 = (1 - sigma) Z - mu with Z ~ N(0, 1): the mean of a folded normal
    m, s = -mu, abs(1.0 - sigma)
    folded = m * (1 - 2 * norm.cdf(-m / s)) + s * math.sqrt(2 / math.pi) * math.exp(
        -m * m / (2 * s * s)) if s > 0 else abs(m)
    assert value == pytest.approx(folded, abs=1e-7)
    rng = np.random.default_rng(0)
    n = 400_000
    x, y = rng.standard_normal(n), mu + sigma * rng.standard_normal(n)
    assert ot.wasserstein_1d(x, y, p=1) == pytest.approx(value, rel=0.01, abs=0.005)


@pytest.mark.parametrize("name", ["lines-0.1", "lines-0.5", "lines-1", "lines-2", "sphere-128",
                                  "gauss-shift", "gauss-scale"])
def test_closed_form_pairs_against_pot_on_large_samples(name):
    pair = w1_pairs()[name]
    g = torch.Generator().manual_seed(0)
    if pair.dim == 1:  # POT's exact 1-D solver takes far larger samples
        p, q = pair.sample_p(200_000, g), pair.sample_q(200_000, g)
        emp = float(ot.wasserstein_1d(p[:, 0].double().numpy(), q[:, 0].double().numpy(), p=1))
    else:
        emp = exact_w1(pair.sample_p(1500, g), pair.sample_q(1500, g))
    assert emp == pytest.approx(pair.w1, rel=0.02, abs=0.005)


def test_mixture_pair_is_computed_by_pot_with_a_small_spread():
    pair = w1_pairs()["8v25-gaussians"]
    assert pair.w1 is None
    mean, sd = pot_w1(pair, n=1500, repeats=2)
    assert 0.3 < mean < 3 and sd < 0.05 * mean


def test_a_bjorck_critic_finds_the_distance_between_parallel_lines():
    s = BenchSettings(steps=150, width=32, eval_every=50, eval_points=1024,
                      transport_points=128)
    r = run_one(w1_pairs()["lines-0.5"], "bjorck", 0, 0.5, s)
    assert r["estimate"] / 0.5 >= 0.95 and r["estimate"] <= 0.5 * (1 + 1e-3) + 0.02
    assert r["lipschitz_certified"] <= 1 + 1e-3
    assert r["transport_slope1_share"] >= 0.9
    assert r["cpu_to_95"] is not None and 0 < r["cpu_to_95"] <= r["cpu_seconds"]
    # a clipped critic sees the distance only up to its tiny, unknown Lipschitz constant
    c = run_one(w1_pairs()["lines-0.5"], "clip", 0, 0.5, s)
    assert c["estimate"] < 0.05 and c["lipschitz_measured"] < 0.05


def test_run_bench_resumes_and_the_tables_cover_every_cell(tmp_path, capsys):
    out = tmp_path / "w1.json"
    s = BenchSettings(steps=20, width=8, eval_every=10, eval_points=256, transport_points=32)
    run_bench(out, ["sn", "invclip-bounded"], ["lines-1"], [0], s, log=lambda m: None)
    first = json.loads(out.read_text())
    assert len(first["runs"]) == 2 and first["truth"]["lines-1"]["w1"] == 1.0
    calls = []
    run_bench(out, ["sn", "invclip-bounded"], ["lines-1"], [0, 1], s, log=calls.append)
    results = json.loads(out.read_text())
    assert len(results["runs"]) == 4 and len(calls) == 2  # seed 0 was not run again
    summ = summarise(results["runs"])
    assert summ["sn"]["lines-1"]["seeds"] == 2
    text = markdown(results)
    assert text.count("| sn |") == 5 and "invclip-bounded" in text
    assert main(["w1bench", "--out", str(out), "--report-only"]) == 0
    assert "estimate ÷ true W1" in capsys.readouterr().out


def test_unknown_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown task or constraint.*lines-1"):
        run_bench(tmp_path / "x.json", ["sn"], ["lines-7"], [0])
