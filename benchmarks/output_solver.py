"""The ``output`` solver on realistic pre-projection states: impact versus plain clipping, cost.

Trains the Table I MLP (or Table II DCGAN) critic on full MNIST with RMSprop lr 2e-4, batch 128,
driven by plain clipping, against the matching generator trained once per 100 critic steps
(the paper's early schedule; same set-up as benchmarks/realistic_states.py). After ``--warm``
critic steps, at each of the next ``--eval`` steps the state right after ``opt.step()`` (W_unc)
is copied into a twin critic and every projection is applied to the copy:

- ``impact_ratio``: ||f_proj - f_unc|| / ||f_clip - f_unc|| on 256 fixed real digits (the
  reference's measure; f_clip: plain clipping of the same W_unc); ``impact_ratio_batch``: the
  same on the step's own batch (real + fake, what the solver optimises);
- ``ms``: thread CPU time of rescale + clip; ``cost``: that divided by the thread CPU time of
  the critic step (forward, backward, RMSprop step; the generator's forward excluded, so the
  fraction is conservative) measured with the output solver's capture hooks installed;
  ``hook_overhead``: critic-step time with the hooks / without (a separate timing pass).

The output solver gets the sensitivities of the driving critic's own forward/backward (the
records of its capture are handed to the twin: same layers, same batch), as in training.

    OMP_NUM_THREADS=1 python benchmarks/output_solver.py --model mlp --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import BOUNDS, critic_step, generator_step, mnist_images, models  # noqa: E402
from wganlab import InvariantClip, WeightClip  # noqa: E402
from wganlab.data import BatchStream  # noqa: E402
from wganlab.rescale import critic_output, find_pairs  # noqa: E402
from wganlab.rescale import output as O  # noqa: E402


def quantiles(xs):
    if not xs:
        return None
    t = torch.tensor(xs, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {"p10": q[0], "median": q[1], "p90": q[2], "n": len(xs)}


def pair_layers(C):
    layers = []
    for p in find_pairs(C):
        for m in (p.layer_in, p.layer_out):
            if all(m is not q for q in layers):
                layers.append(m)
    return layers


def timed_step(G, C, opt, real):
    """critic_step, returning (batch, thread seconds of the critic's part)."""
    with torch.no_grad():
        fake = G(torch.randn(real.shape[0], 100))
    t = time.thread_time()
    batch = torch.cat([real, fake])
    out = C(batch).reshape(-1)
    n = len(real)
    loss = -(out[:n].mean() - out[n:].mean())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return batch, time.thread_time() - t


def run(model: str, seed: int, warm: int, n_eval: int, variants: dict, gen_every: int,
        trajectory: str = "clip"):
    torch.manual_seed(seed)
    images = mnist_images()
    stream = BatchStream(images, 128, seed)
    probe = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:256]]
    G, C = models(model)
    bounds = BOUNDS[model]
    opt_c = torch.optim.RMSprop(C.parameters(), lr=2e-4)
    opt_g = torch.optim.RMSprop(G.parameters(), lr=2e-4)
    driver = WeightClip(C, bounds) if trajectory == "clip" else \
        InvariantClip(C, bounds, solver=trajectory)
    twin = copy.deepcopy(C)
    plain = WeightClip(twin, bounds)
    projs = {name: InvariantClip(twin, bounds, solver=s, options=o)
             for name, (s, o) in variants.items()}
    cap_c = O.ActivationCapture(pair_layers(C))   # the driven critic's steps, for the twin
    rows = {name: {"impact_ratio": [], "impact_ratio_batch": [], "ms": [], "cost": [],
                   "logd_absmax": [], "conflicted": []} for name in variants}
    step_s, clip_ms = [], []
    t0 = time.time()
    for step in range(warm + n_eval):
        batch, dt = timed_step(G, C, opt_c, stream.next())
        if step >= warm:
            step_s.append(dt)
            with torch.no_grad():
                snap = [p.detach().clone() for p in C.parameters()]
                f_unc, fb_unc = critic_output(C, probe), critic_output(C, batch)

                def load():
                    for p, s in zip(twin.parameters(), snap):
                        p.copy_(s)
                load()
                t = time.thread_time()
                plain.clip_()
                clip_ms.append((time.thread_time() - t) * 1e3)
                d_clip = float((critic_output(twin, probe) - f_unc).norm())
                db_clip = float((critic_output(twin, batch) - fb_unc).norm())
                for name, proj in projs.items():
                    load()
                    cap_t = O.capture_in(proj._work, pair_layers(twin))
                    cap_t.records.clear()
                    cap_t.records.extend(cap_c.records)
                    proj.observe(batch)
                    t = time.thread_time()
                    scales = proj.rescale()
                    proj.clip_()
                    el = time.thread_time() - t
                    r = rows[name]
                    r["ms"].append(el * 1e3)
                    r["cost"].append(el / dt)
                    if d_clip > 0:
                        r["impact_ratio"].append(
                            float((critic_output(twin, probe) - f_unc).norm()) / d_clip)
                    if db_clip > 0:
                        r["impact_ratio_batch"].append(
                            float((critic_output(twin, batch) - fb_unc).norm()) / db_clip)
                    r["logd_absmax"].append(float(torch.cat(scales).double().log().abs().max()))
        if trajectory != "clip":
            driver.observe(batch)   # the output solver needs the step's batch (and capture)
        driver.step(opt_c)
        cap_c.records.clear()
        if (step + 1) % gen_every == 0:
            generator_step(G, C, opt_g, 128)
    cap_c.close()
    # hook overhead: a few steps of a copy with and without the capture
    over = []
    C2 = copy.deepcopy(C)
    o2 = torch.optim.RMSprop(C2.parameters(), lr=2e-4)
    cap2 = O.ActivationCapture(pair_layers(C2))
    for k in range(2 * min(n_eval, 20)):
        cap2.enabled = k % 2 == 0
        _, dt = timed_step(G, C2, o2, stream.next())
        cap2.records.clear()
        over.append((cap2.enabled, dt))
    cap2.close()
    on = [d for e, d in over if e]
    off = [d for e, d in over if not e]
    return {
        "seed": seed, "seconds": round(time.time() - t0, 1),
        "critic_step_ms": quantiles([s * 1e3 for s in step_s]),
        "plain_clip_ms": quantiles(clip_ms),
        "hook_overhead": (sorted(on)[len(on) // 2] / sorted(off)[len(off) // 2]) if off else None,
        "projections": {n: {k: quantiles(v) for k, v in r.items()} for n, r in rows.items()},
    }


def summarise_e2e(dirs: list[str], out: Path) -> None:
    """End-to-end runs (``wganlab train`` dirs): steps, CPU time, per-unit balance over
    training (logged by InvariantClip; for other constraints computed from the final critic),
    and ``eval.json`` when ``wganlab eval`` was run. Added to the results file as ``e2e``."""
    from safetensors.torch import load_file
    from wganlab.config import load_config
    from wganlab.models import build_models
    from wganlab.rescale import log_balance, unit_norms
    runs = {}
    for d in map(Path, dirs):
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        if not rows:
            print(d.name, "no metrics yet")
            continue
        last = rows[-1]
        bal = [(r["generator_step"], r["cpu_time"], r["balance/L0_absmedian"],
                r.get("balance/L2_absmedian")) for r in rows if "balance/L0_absmedian" in r]
        final_bal = None
        if (d / "critic.safetensors").exists():
            cfg = load_config(str(d / "config.yaml"))
            _, C = build_models(cfg.model, cfg.data)
            C.load_state_dict(load_file(str(d / "critic.safetensors")))
            final_bal = [float(log_balance(*(x.double() for x in unit_norms(p))).abs().median())
                         for p in find_pairs(C)]
        ev = json.loads((d / "eval.json").read_text()) if (d / "eval.json").exists() else None
        runs[d.name] = {"generator_steps": last["generator_step"],
                        "critic_steps": last["critic_step"], "cpu_time": last["cpu_time"],
                        "w_estimate_last": last.get("w_estimate"),
                        "balance_absmedian_L0_L2_over_training": bal,
                        "final_balance_absmedian_per_pair": final_bal,
                        "impact_last": last.get("invclip/impact", last.get("clip/impact")),
                        "eval": ev}
        print(d.name, {k: v for k, v in runs[d.name].items()
                       if k != "balance_absmedian_L0_L2_over_training"})
        if bal:
            print("  balance L0 |median| (gen step: value):",
                  ", ".join(f"{g}: {b:.3f}" for g, _, b, _ in bal[:: max(1, len(bal) // 8)]))
    results = json.loads(out.read_text()) if out.exists() else {}
    results["e2e"] = {"command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
                      "runs": runs}
    out.write_text(json.dumps(results, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mlp", choices=["mlp", "dcgan"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--eval", type=int, default=50)
    ap.add_argument("--gen-every", type=int, default=100)
    ap.add_argument("--full", action="store_true", help="also the output solver on all samples")
    ap.add_argument("--variant", default=None, metavar="JSON",
                    help='an extra output-solver variant, e.g. \'{"log_range": 0.15}\'')
    ap.add_argument("--trajectory", default="clip",
                    help="projection driving training: clip, or an invclip solver (e.g. paper)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "output_solver.json"))
    ap.add_argument("--e2e", nargs="+", help="only summarise these training run dirs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.e2e:
        summarise_e2e(args.e2e, Path(args.out))
        return
    variants = {"exact": ("exact", {}), "output": ("output", {})}
    if args.full:
        variants["output_all_samples"] = ("output", {"subsample": 0})
        variants["output_balance100"] = ("output", {"balance_weight": 100.0})
    if args.variant:
        variants["output " + args.variant] = ("output", json.loads(args.variant))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    key = f"{args.model}_warm{args.warm}" + ("" if args.trajectory == "clip"
                                             else f"_{args.trajectory}_trajectory")
    entry = {"command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
             "setup": {"model": args.model, "data": "full MNIST train, 32x32",
                       "optimizer": "RMSprop lr 2e-4", "batch": 128,
                       "bounds": BOUNDS[args.model], "trajectory": args.trajectory,
                       "warm_steps": args.warm, "eval_steps": args.eval,
                       "generator": f"trained once per {args.gen_every} critic steps",
                       "probe": "256 fixed real digits", "variants": variants},
             "seeds": []}
    results[key] = entry
    for seed in args.seeds:
        res = run(args.model, seed, args.warm, args.eval, variants, args.gen_every,
                  args.trajectory)
        entry["seeds"].append(res)
        out.write_text(json.dumps(results, indent=1))
        print(f"seed {seed} ({res['seconds']}s): critic step "
              f"{res['critic_step_ms']['median']:.1f} ms, hooks x{res['hook_overhead']:.3f}")
        for n, r in res["projections"].items():
            q, qb, c = r["impact_ratio"], r["impact_ratio_batch"], r["cost"]
            print(f"  {n:<20} impact/clip {q['median']:.3f} ({q['p10']:.3f}-{q['p90']:.3f})  "
                  f"batch {qb['median']:.3f}  cost {c['median'] * 100:.1f}% "
                  f"({r['ms']['median']:.2f} ms)  |log d| max "
                  f"{r['logd_absmax']['median']:.3f}", flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
