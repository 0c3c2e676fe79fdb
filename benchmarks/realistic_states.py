"""What each projection does to realistic pre-projection states of the Table I critic.

Trains the Table I MLP critic on full MNIST (RMSprop lr 2e-4, batch 128, seed 0) with a given
projection (plain clipping by default) against the Table I generator, which is trained too,
once per 100 critic steps (the paper's schedule for its first epochs). At every critic step the
state right after ``opt.step()`` (W_unc) is copied, and every projection is applied to the
copy. Reported per projection, over the steps (median, p10, p90):

- ``box_ratio``: eq. (7) distance to the box after rescaling / before (plain clip: 1);
- ``impact_ratio``: ||f_proj - f_unc|| / ||f_clip - f_unc|| on 256 fixed real digits, where
  f_proj is the critic after rescale + clip and f_clip after plain clipping of the same W_unc
  (1: as harmful as plain clipping).

    OMP_NUM_THREADS=1 python benchmarks/realistic_states.py --steps 300
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from _common import BOUNDS, box_distance, critic_step, generator_step, mnist_images, models
from wganlab import InvariantClip, WeightClip
from wganlab.data import BatchStream
from wganlab.rescale import critic_output, find_pairs, log_balance, unit_norms

SOLVERS = ["paper", "paper-guarded", "exact", "function"]


def quantiles(xs: list[float]) -> dict[str, float]:
    t = torch.tensor(xs, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {"p10": q[0], "median": q[1], "p90": q[2], "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trajectory", default="clip",
                    help="projection that drives training: clip or an invclip solver")
    ap.add_argument("--transform-state", action="store_true",
                    help="with an invclip trajectory: transform RMSprop's state")
    ap.add_argument("--gen-every", type=int, default=100)
    ap.add_argument("--solvers", nargs="+", default=SOLVERS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    images = mnist_images()
    stream = BatchStream(images, 128, args.seed)
    probe = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:256]]
    G, C = models("mlp")
    bounds = BOUNDS["mlp"]
    opt_c = torch.optim.RMSprop(C.parameters(), lr=2e-4)
    opt_g = torch.optim.RMSprop(G.parameters(), lr=2e-4)
    if args.trajectory == "clip":
        driver = WeightClip(C, bounds)
    else:
        driver = InvariantClip(C, bounds, solver=args.trajectory,
                               transform_state=args.transform_state)
    twin = copy.deepcopy(C)
    plain = WeightClip(twin, bounds)
    projs = {s: InvariantClip(twin, bounds, solver=s) for s in args.solvers}

    rows: dict[str, dict[str, list[float]]] = {
        s: {"box_ratio": [], "impact_ratio": [], "impact": [], "logd_median": [], "ms": [],
            **{f"box_ratio_L{k}": [] for k in range(3)}} for s in args.solvers}
    clip_impacts: list[float] = []
    clip_rel: list[float] = []
    violating: dict[int, list[float]] = {k: [] for k in range(3)}
    balance: list[float] = []
    t0 = time.time()
    first = find_pairs(C)[0]

    def load() -> None:
        for p, s in zip(twin.parameters(), snapshot):
            p.copy_(s)

    for step in range(args.steps):
        batch = critic_step(G, C, opt_c, stream.next())
        with torch.no_grad():
            snapshot = [p.detach().clone() for p in C.parameters()]
            f_unc = critic_output(C, probe)
            load()
            targets = list(next(iter(projs.values())).targets) if projs else []
            before = box_distance(targets)
            per_before = [box_distance([t for t in targets if t[0] == k]) for k in range(3)]
            for k, p, b in targets:
                violating[k].append(float((p.abs() > b).float().mean()))
            plain.clip_()
            d_clip = float((critic_output(twin, probe) - f_unc).norm())
            clip_impacts.append(d_clip)
            clip_rel.append(d_clip / float(f_unc.norm()))
            for s, proj in projs.items():
                load()
                proj.observe(batch)
                t = time.perf_counter()
                scales = proj.rescale()
                after = box_distance(proj.targets)
                per_after = [box_distance([t for t in proj.targets if t[0] == k])
                             for k in range(3)]
                proj.clip_()
                rows[s]["ms"].append((time.perf_counter() - t) * 1e3)
                d = float((critic_output(twin, probe) - f_unc).norm())
                r = rows[s]
                if before > 0:
                    r["box_ratio"].append(after / before)
                for k in range(3):
                    if per_before[k] > 0:
                        r[f"box_ratio_L{k}"].append(per_after[k] / per_before[k])
                if d_clip > 0:
                    r["impact_ratio"].append(d / d_clip)
                r["impact"].append(d)
                r["logd_median"].append(float(torch.cat(scales).double().log().abs().median()))
        driver.observe(batch)
        driver.step(opt_c)
        if step % 10 == 0 or step == args.steps - 1:
            balance.append(float(log_balance(*unit_norms(first)).abs().median()))
        if (step + 1) % args.gen_every == 0:
            generator_step(G, C, opt_g, 128)
    elapsed = time.time() - t0

    result = {
        "benchmark": "realistic_states",
        "command": f"OMP_NUM_THREADS=1 python benchmarks/realistic_states.py --steps {args.steps}"
                   f" --seed {args.seed} --trajectory {args.trajectory}"
                   + (" --transform-state" if args.transform_state else ""),
        "setup": {"critic": "Table I MLP", "data": "full MNIST train, padded to 32x32",
                  "optimizer": "RMSprop lr 2e-4", "batch": 128, "bounds": bounds,
                  "generator": f"Table I, trained once per {args.gen_every} critic steps",
                  "trajectory": args.trajectory, "probe": "256 fixed real digits",
                  "steps": args.steps, "seconds": round(elapsed, 1)},
        "clip_impact": quantiles(clip_impacts),
        "clip_relative_impact": quantiles(clip_rel),
        "fraction_outside_box_after_step": {f"L{k}": quantiles(v) for k, v in violating.items()},
        "balance_L0_absmedian_every_10_steps": balance,
        "solvers": {s: {k: quantiles(v) for k, v in r.items() if v} for s, r in rows.items()},
    }
    out = Path(args.out or Path(__file__).parent / "results" /
               f"realistic_states_{args.trajectory}{'_ts' if args.transform_state else ''}.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"{args.steps} steps in {elapsed:.0f}s, trajectory {args.trajectory}; wrote {out}")
    print(f"{'projection':<15}{'box after/before':>28}{'impact / clip impact':>30}{'ms':>8}")
    print(f"{'clip':<15}{'1':>28}{'1':>30}")
    for s, r in result["solvers"].items():
        b, i = r.get("box_ratio"), r.get("impact_ratio")
        fmt = (lambda q: f"{q['median']:.3g} ({q['p10']:.3g}-{q['p90']:.3g})" if q else "-")
        print(f"{s:<15}{fmt(b):>28}{fmt(i):>30}{r['ms']['median']:>8.2f}")


if __name__ == "__main__":
    main()
