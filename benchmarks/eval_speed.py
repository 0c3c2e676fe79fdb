"""How long does scoring 10,000 generated MNIST images take? (target: < 30 s on 2 cores)

Times ``wganlab.metrics.evaluate`` on a sampler of an (untrained) Table I MLP generator, in
three states: cold (evaluator trained or loaded from disk, real statistics computed), warm from
disk (a new process: evaluator and real statistics read from the cache) and warm in memory (the
trainer's periodic case). Wall and CPU seconds are both recorded: on a shared machine the wall
time depends on the other load, the CPU time much less. Results: benchmarks/results/eval_speed.json.

    python benchmarks/eval_speed.py [--threads 2] [--n 10000] [--mnist-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one(args) -> dict:
    import torch

    from wganlab.config import load_config
    from wganlab.metrics import evaluate, generator_sampler
    from wganlab.metrics import images as im
    from wganlab.metrics import suite
    from wganlab.models import build_models
    torch.set_num_threads(args.threads)
    cfg = load_config(None, ["data.name=mnist", f"data.dir={args.mnist_dir}", "model.name=mlp"])
    generator, _ = build_models(cfg.model, cfg.data)
    sampler = generator_sampler(generator, cfg.model.z_dim, seed=0)
    times = {}

    def timed(label, fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        times[label] = {"wall_s": round(time.perf_counter() - w, 2),
                        "cpu_s": round(time.process_time() - c, 2)}
        return out

    res = timed("first call in this process", lambda: evaluate(sampler, cfg.data, args.n, seed=0))
    timed("warm, in memory", lambda: evaluate(sampler, cfg.data, args.n, seed=1))
    timed("sampling alone", lambda: sampler(args.n))
    suite._PREPARED.clear()
    im.clear_memory_cache()
    return {"times": times, "fd": res["eval/fd"], "classifier_acc": res["eval/classifier_acc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--mnist-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_speed.json"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args)))
        return
    runs = []
    for label in ("process 1 (caches as found)", "process 2 (caches on disk)"):
        cmd = [sys.executable, __file__, "--child", "--threads", str(args.threads),
               "--n", str(args.n), "--mnist-dir", args.mnist_dir]
        env = {"OMP_NUM_THREADS": str(args.threads)}
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env={**os.environ, **env})
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["process"] = label
        runs.append(r)
        print(label, r["times"], flush=True)
    result = {"n": args.n, "threads": args.threads, "runs": runs,
              "load_average_after": [round(v, 2) for v in os.getloadavg()],
              "target_seconds": 30}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
