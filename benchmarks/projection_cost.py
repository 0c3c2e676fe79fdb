"""Cost of the projection (rescale + clip) as a fraction of one full critic step.

A critic step here is what a training loop pays per critic update: the generator's forward
pass for the fake half, the critic's forward and backward on 128 real + 128 fake images, and
RMSprop's step. The critics (Table I MLP, Table II DCGAN) are first trained for a while with
plain clipping on full MNIST so the timed states are realistic (saturated weights, most units
violating after a step). Each timed step then applies every projection to the same
post-step state (restored in between) and times it with the thread's CPU clock (robust to
other processes on the machine; all work runs on this one thread).

    OMP_NUM_THREADS=1 python benchmarks/projection_cost.py
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from _common import BOUNDS, critic_step, mnist_images, models
from wganlab import InvariantClip, WeightClip
from wganlab.data import BatchStream

VARIANTS = {
    "clip": None,
    "paper": {"solver": "paper"},
    "paper-guarded": {"solver": "paper-guarded"},
    "exact": {"solver": "exact"},
    "exact+state": {"solver": "exact", "transform_state": True},
    "function": {"solver": "function"},
    "output": {"solver": "output"},
}
#: rescaling on every k-th step only (``every: k``; clipping still every step): amortised cost
EVERY = (4, 8)


def run(model: str, warmup: int, steps: int, images: torch.Tensor, seed: int) -> dict:
    torch.manual_seed(seed)
    G, C = models(model)
    bounds = BOUNDS[model]
    opt = torch.optim.RMSprop(C.parameters(), lr=2e-4)
    stream = BatchStream(images, 128, seed)
    projs = {name: WeightClip(C, bounds) if kw is None else InvariantClip(C, bounds, **kw)
             for name, kw in VARIANTS.items()}
    driver = projs["clip"]
    for _ in range(warmup):
        critic_step(G, C, opt, stream.next())
        driver.step(opt)
    times: dict[str, list[float]] = {name: [] for name in ["step", *VARIANTS]}
    for _ in range(steps):
        t = time.thread_time()
        batch = critic_step(G, C, opt, stream.next())
        times["step"].append(time.thread_time() - t)
        params = [p.detach().clone() for p in C.parameters()]
        state = {p: {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
        for name, proj in projs.items():
            for p, s in state.items():  # state first, parameters last: as opt.step() leaves them
                for k, v in s.items():
                    opt.state[p][k].copy_(v)
            with torch.no_grad():
                for p, s in zip(C.parameters(), params):
                    p.copy_(s)
            proj.observe(batch)
            t = time.thread_time()
            proj.step(opt)
            times[name].append(time.thread_time() - t)
        # the trajectory continues from the plain clip (last restored + clipped below)
        with torch.no_grad():
            for p, s in zip(C.parameters(), params):
                p.copy_(s)
        driver.step(opt)

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]
    step = med(times["step"])
    out = {"step_ms": step * 1e3, "warmup_steps": warmup, "timed_steps": steps, "variants": {}}
    clip = med(times["clip"])
    for name in VARIANTS:
        m = med(times[name])
        out["variants"][name] = {"ms": m * 1e3, "fraction_of_step": m / step,
                                 "extra_over_clip_fraction": (m - clip) / step}
        if name != "clip":
            out["variants"][name]["amortised_fraction_every"] = {
                k: (clip + (m - clip) / k) / step for k in EVERY}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mlp-steps", type=int, default=60)
    ap.add_argument("--dcgan-steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=200, help="MLP warm-up steps (DCGAN: 1/5)")
    ap.add_argument("--out",
                    default=str(Path(__file__).parent / "results" / "projection_cost.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = mnist_images()
    result = {"benchmark": "projection_cost",
              "command": "OMP_NUM_THREADS=1 python benchmarks/projection_cost.py",
              "clock": "time.thread_time (CPU time of the single compute thread), median",
              "batch": 128, "threads": 1, "torch": torch.__version__,
              "load_before": list(os.getloadavg()),
              "mlp": run("mlp", args.warmup, args.mlp_steps, images, args.seed),
              "dcgan": run("dcgan", max(args.warmup // 5, 1), args.dcgan_steps, images,
                           args.seed)}
    result["load_after"] = list(os.getloadavg())
    Path(args.out).write_text(json.dumps(result, indent=1))
    for model in ("mlp", "dcgan"):
        r = result[model]
        print(f"{model}: critic step {r['step_ms']:.1f} ms (CPU, 1 thread, batch 128)")
        for name, v in r["variants"].items():
            every = "".join(f"; every {k}: {100 * f:.2f} %"
                            for k, f in v.get("amortised_fraction_every", {}).items())
            print(f"  {name:<14} {v['ms']:7.2f} ms  {100 * v['fraction_of_step']:6.2f} % of a step"
                  f"  (+{100 * v['extra_over_clip_fraction']:.2f} % over clip{every})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
