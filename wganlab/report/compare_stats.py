"""The numbers of a comparison, from the runs' metrics records: each run's series, final values
and time to a threshold; per constraint the spread over seeds; per pair of constraints a
paired verdict with its exact sign-flip p. Pure functions of plain data (no files)."""
from __future__ import annotations

import itertools
import math
import statistics
from typing import TYPE_CHECKING, Any, Optional

from .keys import AXES, metric_direction

if TYPE_CHECKING:
    from .compare_plan import Threshold


def columns(records: list[dict[str, Any]]) -> dict[str, list]:
    """Records -> {key: [value or None per record]} (compact and plot-ready)."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    return {k: [r.get(k) for r in records] for k in keys}


def final_values(records: list[dict[str, Any]], eval_res: dict[str, float]) -> dict[str, float]:
    """The last value of every logged key, the final evaluation, and the cost per step."""
    out: dict[str, float] = {}
    for r in records:
        for k, v in r.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = float(v)
    out.update({k: v for k, v in eval_res.items() if isinstance(v, float)})
    c = out.get("critic_step") or 0
    if c:
        out["ms_per_critic_step_wall"] = 1000 * out.get("wall_time", 0.0) / c
        out["ms_per_critic_step_cpu"] = 1000 * out.get("cpu_time", 0.0) / c
    return out


def time_to_threshold(series: dict[str, list], th: Threshold) -> Optional[dict[str, float]]:
    """The first logged point where the threshold is met: its step and training times."""
    for i, v in enumerate(series.get(th.key, [])):
        if th.met(v):
            return {a: series[a][i] for a in AXES if a in series}
    return None


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles of one metric over seeds."""
    v = sorted(values)
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q[0], "q3": q[2],
            "n": len(v)}


def summarise(runs: list[dict[str, Any]], constraints: list[str]) -> dict[str, dict]:
    """{constraint: {key: spread over its finished runs' final values}}."""
    out: dict[str, dict] = {}
    for c in constraints:
        finals = [r["final"] for r in runs if r["constraint"] == c and r.get("ok")]
        keys = sorted({k for f in finals for k in f})
        out[c] = {k: spread([f[k] for f in finals if k in f and math.isfinite(f[k])])
                  for k in keys if any(k in f and math.isfinite(f[k]) for f in finals)}
    return out


def sign_flip_p(diffs: list[float]) -> float:
    """Exact two-sided paired permutation (sign-flip) test of a zero mean difference.

    With n pairs the smallest possible p is 2 / 2**n: 0.25 for 3 seeds, 0.0625 for 5."""
    n = len(diffs)
    if n == 0:
        return 1.0
    observed = abs(sum(diffs))
    hits = sum(1 for signs in itertools.product((1, -1), repeat=n)
               if abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12)
    return hits / 2 ** n


def pairwise(runs: list[dict[str, Any]], baseline: str, other: str, key: str
             ) -> Optional[dict[str, Any]]:
    """``other`` vs ``baseline`` on ``key``, paired by seed: seeds better, p, a verdict."""
    better = metric_direction(key)
    if better is None:
        return None
    by = {(r["constraint"], r["seed"]): r["final"].get(key) for r in runs if r.get("ok")}
    seeds = sorted({s for (c, s) in by if c == other} & {s for (c, s) in by if c == baseline})
    pairs = [(by[(other, s)], by[(baseline, s)]) for s in seeds
             if by[(other, s)] is not None and by[(baseline, s)] is not None]
    if not pairs:
        return None
    sign = -1.0 if better == "lower" else 1.0  # positive diff = other is better
    diffs = [sign * (a - b) for a, b in pairs]
    wins = sum(d > 0 for d in diffs)
    n = len(diffs)
    p = sign_flip_p(diffs)
    min_p = 2 / 2 ** n
    if p <= 0.05:
        verdict = "better" if wins > n / 2 else "worse"
        sure = f"p = {p:.3g}"
    elif wins in (0, n) and any(diffs):
        verdict = ("better" if wins == n else "worse") + " on every seed"
        sure = (f"p = {p:.3g}; {n} seeds cannot reach p < 0.05 (smallest possible p "
                f"{min_p:.3g}): suggestive only")
    else:
        verdict = "no clear difference"
        sure = f"p = {p:.3g}"
    return {"key": key, "baseline": baseline, "other": other, "n": n, "wins": wins,
            "p": p, "min_p": min_p, "verdict": verdict, "sure": sure,
            "median_diff": statistics.median([a - b for a, b in pairs])}
