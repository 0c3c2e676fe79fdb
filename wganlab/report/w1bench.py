"""The W1-estimation benchmark: a critic alone, trained to maximise E_P f − E_Q f under each
constraint, on pairs of distributions whose W1 is known (:mod:`wganlab.data.w1pairs`).

By Kantorovich-Rubinstein duality a 1-Lipschitz critic's estimate is a lower bound on W1 that
a perfect critic reaches, so "estimate ÷ true W1" measures how much of the distance a
constraint lets the critic see. A critic that is only K-Lipschitz estimates K·W1, so the raw
ratio is reported beside two normalised ones: ÷ the measured Lipschitz constant (the largest
gradient norm found on data, interpolates and transport points: a lower bound on the true
constant, so this ratio may exceed 1) and ÷ the certified bound (the product of the layers'
spectral norms: an upper bound, so this ratio is a true lower bound on W1 -- for every
constraint). Also: the share of transport points (on the segments of an optimal coupling,
where the optimal critic has slope exactly 1) whose gradient norm is within 5 % of 1, and the
CPU time to reach 95 % of the final estimate.

Every constraint trains the same small MLP (ReLU; GroupSort where the constraint asks for it,
``model.activation: auto``) with the same optimizer: the target is stationary here, so the
literature's critic optimizers (tuned against a moving generator) would only confound the
comparison.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..atomic import atomic_write_json
from ..config import ConstraintConfig
from ..constraints import build_constraint, critic_activation
from ..data.w1pairs import W1Pair, w1_pairs
from ..metrics.toy import exact_w1
from ..metrics.lipschitz import grad_norms, input_grads, spectral_product
from ..models import toy_critic
from ..models.mode import evaluating

#: every constraint of wganlab, with invclip's exact solver unbounded and bounded
CONSTRAINTS = ("clip", "invclip-exact", "invclip-bounded", "gp", "lp", "r1", "gp-adaptive",
               "sn", "bjorck", "aol", "none")
VARIANTS = {"invclip-exact": {"name": "invclip", "invclip": {"solver": "exact"}},
            "invclip-bounded": {"name": "invclip",
                                "invclip": {"solver": "exact", "max_drift": 0.1}}}
#: the by-construction critics and the share of W1 they must reach on tasks (a)-(c)
TARGET = 0.95



def pot_w1(pair: W1Pair, n: int = 5000, repeats: int = 3, seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) over ``repeats`` independent sample pairs of the exact W1
    between ``n`` points of each side (POT's network simplex)."""
    g = torch.Generator().manual_seed(seed)
    vals = torch.tensor([exact_w1(pair.sample_p(n, g), pair.sample_q(n, g))
                         for _ in range(repeats)], dtype=torch.float64)
    sd = float(vals.std()) if repeats > 1 else math.nan
    return float(vals.mean()), sd


@dataclass(frozen=True)
class BenchSettings:
    """One training of one critic; the same for every constraint and task."""
    steps: int = 500
    batch: int = 256
    width: int = 128
    depth: int = 2
    lr: float = 1e-3
    eval_points: int = 4096
    eval_every: int = 50
    transport_points: int = 512


def run_one(pair: W1Pair, constraint: str, seed: int, truth: float,
            s: BenchSettings = BenchSettings()) -> dict[str, Any]:
    """Train one critic on ``pair`` under ``constraint``; return its record."""
    torch.manual_seed(seed)
    ccfg = ConstraintConfig(name=constraint, variants=VARIANTS)
    critic = toy_critic(pair.dim, s.width, s.depth, critic_activation("auto", ccfg))
    con = build_constraint(critic, ccfg)
    opt = torch.optim.Adam(critic.parameters(), lr=s.lr)
    draw = torch.Generator().manual_seed(1_000 + seed)
    held = torch.Generator().manual_seed(2_000 + seed)
    p_eval, q_eval = pair.sample_p(s.eval_points, held), pair.sample_q(s.eval_points, held)
    curve: list[tuple[float, float]] = []
    cpu = 0.0
    for step in range(1, s.steps + 1):
        t0 = time.process_time()
        p, q = pair.sample_p(s.batch, draw), pair.sample_q(s.batch, draw)
        con.prepare()
        out = critic(torch.cat([p, q])).reshape(-1)
        loss = out[s.batch:].mean() - out[:s.batch].mean()
        penalty = con.penalty(p, q)
        if penalty is not None:
            loss = loss + penalty
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        con.observe(torch.cat([p, q]))
        con.step(opt)
        cpu += time.process_time() - t0
        if step % s.eval_every == 0 or step == s.steps:
            curve.append((cpu, _estimate(critic, p_eval, q_eval)))
    final = curve[-1][1]
    lip = _lipschitz(critic, pair, p_eval, q_eval, held, s.transport_points)
    return {"constraint": constraint, "task": pair.name, "seed": seed, "true_w1": truth,
            "estimate": final, "cpu_seconds": cpu,
            "cpu_to_95": next((c for c, e in curve if e >= 0.95 * final), None) if final > 0
            else None,
            "curve": curve, **lip}


@torch.no_grad()
def _estimate(critic: torch.nn.Module, p: torch.Tensor, q: torch.Tensor) -> float:
    with evaluating(critic):
        return float(critic(p).mean() - critic(q).mean())


def _lipschitz(critic: torch.nn.Module, pair: W1Pair, p: torch.Tensor, q: torch.Tensor,
               g: torch.Generator, n: int) -> dict[str, float]:
    """Measured constant (max gradient norm), certified bound, slope-1 share on transport."""
    import ot

    p, q = p[:n], q[:n]
    plan = ot.emd(torch.full((n,), 1.0 / n, dtype=torch.float64),
                  torch.full((n,), 1.0 / n, dtype=torch.float64),
                  torch.cdist(p.double(), q.double()))
    i, j = torch.nonzero(plan > 0, as_tuple=True)
    t = torch.rand(len(i), 1, generator=g)
    transport = torch.lerp(q[j], p[i], t)
    interp = torch.lerp(q, p, torch.rand(n, 1, generator=g))
    with evaluating(critic):
        norms = {k: grad_norms(input_grads(critic, x, create_graph=False))
                 for k, x in (("data", torch.cat([p, q])), ("interp", interp),
                              ("transport", transport))}
        with torch.no_grad():
            cert = spectral_product(critic)
    near_one = ((norms["transport"] - 1).abs() <= 0.05).double().mean()
    return {"lipschitz_measured": float(max(v.max() for v in norms.values())),
            "lipschitz_certified": float(cert),
            "transport_slope_mean": float(norms["transport"].mean()),
            "transport_slope1_share": float(near_one)}


# ----------------------------------------------------------------------------- the table

def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{constraint: {task: {metric: mean over seeds, metric_sd: sd}}}."""
    metrics: dict[str, Callable[[dict], Optional[float]]] = {
        "ratio": lambda r: r["estimate"] / r["true_w1"],
        "ratio_measured": lambda r: r["estimate"] / r["lipschitz_measured"] / r["true_w1"],
        "ratio_certified": lambda r: r["estimate"] / r["lipschitz_certified"] / r["true_w1"],
        "slope1_share": lambda r: r["transport_slope1_share"],
        "cpu_to_95": lambda r: r["cpu_to_95"],
        "cpu_seconds": lambda r: r["cpu_seconds"],
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in runs:
        out.setdefault(r["constraint"], {}).setdefault(r["task"], {})
    for c, tasks in out.items():
        for task in tasks:
            group = [r for r in runs if r["constraint"] == c and r["task"] == task]
            for name, fn in metrics.items():
                vals = [v for v in map(fn, group) if v is not None and math.isfinite(v)]
                tasks[task][name] = statistics.fmean(vals) if vals else math.nan
                tasks[task][f"{name}_sd"] = statistics.stdev(vals) if len(vals) > 1 else math.nan
                tasks[task]["seeds"] = len(group)
    return out


def markdown(results: dict[str, Any]) -> str:
    """The tables of docs/w1.md: one per metric, constraints x tasks, mean over seeds."""
    summ = results["summary"]
    tasks = [t for t in w1_pairs() if any(t in v for v in summ.values())]
    cons = [c for c in CONSTRAINTS if c in summ] + [c for c in summ if c not in CONSTRAINTS]
    lines = []
    for key, title, fmt in (
            ("ratio", "estimate ÷ true W1", "{:.3g}"),
            ("ratio_measured", "estimate ÷ measured Lipschitz constant ÷ true W1", "{:.3g}"),
            ("ratio_certified", "estimate ÷ certified bound ÷ true W1 (a true lower bound)",
             "{:.3g}"),
            ("slope1_share", "share of transport points with ‖∇f‖ within 5 % of 1", "{:.2f}"),
            ("cpu_to_95", "CPU seconds to 95 % of the final estimate", "{:.2g}")):
        note = "mean ± sd over seeds" if key == "ratio" else "mean over seeds"
        lines += [f"**{title}** ({note})", "",
                  "| constraint | " + " | ".join(tasks) + " |",
                  "|---|" + "---|" * len(tasks)]
        for c in cons:
            cells = []
            for t in tasks:
                m = summ[c].get(t)
                if m is None:
                    cells.append("")
                    continue
                cell = fmt.format(m[key])
                if key == "ratio" and math.isfinite(m["ratio_sd"]):
                    cell += f" ± {m['ratio_sd']:.2g}"
                cells.append(cell)
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the run

def run_bench(out: Path, constraints: list[str], tasks: list[str], seeds: list[int],
              settings: BenchSettings = BenchSettings(),
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every (task, seed, constraint) not yet in ``out`` (a JSON file, rewritten after each
    run so an interrupted benchmark resumes), then the summary."""
    pairs = w1_pairs()
    unknown = [t for t in tasks if t not in pairs] + [c for c in constraints
                                                       if c not in CONSTRAINTS]
    if unknown:
        raise ValueError(f"unknown task or constraint {unknown}; tasks: {', '.join(pairs)}; "
                         f"constraints: {', '.join(CONSTRAINTS)}")
    results: dict[str, Any] = {"settings": asdict(settings), "truth": {}, "runs": []}
    if out.is_file():
        old = json.loads(out.read_text())
        if old.get("settings") == results["settings"]:
            results = old
        else:
            log(f"{out} was made with other settings: starting afresh")

    def save() -> None:
        atomic_write_json(out, results)

    for t in tasks:
        if t not in results["truth"]:
            pair = pairs[t]
            w1, sd = (pair.w1, 0.0) if pair.w1 is not None else pot_w1(pair)
            results["truth"][t] = {"w1": w1, "sd": sd,
                                   "how": "closed form" if pair.w1 is not None
                                   else "POT emd2, 3 pairs of 5,000 points"}
            save()
    done = {(r["task"], r["seed"], r["constraint"]) for r in results["runs"]}
    for seed in seeds:
        for t in tasks:
            for c in constraints:
                if (t, seed, c) in done:
                    continue
                r = run_one(pairs[t], c, seed, results["truth"][t]["w1"], settings)
                results["runs"].append(r)
                log(f"{t} {c} s{seed}: estimate {r['estimate']:.4g} (true "
                    f"{r['true_w1']:.4g}), L measured {r['lipschitz_measured']:.3g}, "
                    f"certified {r['lipschitz_certified']:.3g}, {r['cpu_seconds']:.1f} CPU-s")
                save()
    results["summary"] = summarise(results["runs"])
    save()
    return results
