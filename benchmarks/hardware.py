"""How fast the trainer runs on this machine: threads per run, bf16 autocast, sweep jobs.

    python benchmarks/hardware.py threads   # 1 vs all cores per preset, quiet and next to a busy process
    python benchmarks/hardware.py bf16      # float32 vs bf16 critic step per preset, one thread
    python benchmarks/hardware.py jobs      # a 4-run toy sweep, wganlab compare --jobs 1 vs --jobs 2

Every timing is of the real trainer (``wganlab.train.Trainer._critic_step``: the generator's
forward for the fakes, the critic's forward and backward, the optimizer step, clipping), in
blocks that alternate between the settings compared, so a change of machine load hits both;
medians over blocks. The 1-minute load average is recorded with every result. Writes
benchmarks/results/{threads,bf16_speed,jobs}.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from wganlab.config import load_config
from wganlab.train import Trainer
from wganlab.train.threads import auto_threads, idle_cores

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ("toy", "mnist_mlp", "mnist_dcgan")
#: critic steps per timed block (about a second of work each on one thread)
STEPS = {"toy": 100, "mnist_mlp": 30, "mnist_dcgan": 3}
QUIET = ["train.tensorboard=false", "train.progress=false", "train.warmup_generator_steps=0"]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def trainer(preset: str, *sets: str) -> Trainer:
    return Trainer(load_config(preset, QUIET + list(sets)), tempfile.mkdtemp(prefix="hw-"))


def block(t: Trainer, steps: int) -> tuple[float, float]:
    """Wall and thread-CPU milliseconds per critic step over ``steps`` steps."""
    w0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(steps):
        t._critic_step(diagnose=False)
    return (1000 * (time.perf_counter() - w0) / steps, 1000 * (time.thread_time() - c0) / steps)


@contextmanager
def busy_process():
    """One other process spinning on a core: the common case on a shared machine."""
    proc = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    time.sleep(1.0)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def bench_threads(reps: int) -> dict:
    cores = os.cpu_count() or 1
    settings = sorted({1, cores})
    out = {"cores": cores, "settings": settings, "cases": []}
    for condition in ("quiet", "busy"):
        ctx = busy_process() if condition == "busy" else _nothing()
        with ctx:
            for preset in PRESETS:
                t = trainer(preset, "train.threads=1")
                auto = auto_threads(t.config.model.name)  # what train.threads=auto picks now
                idle = idle_cores()
                block(t, max(1, STEPS[preset] // 4))  # warm-up
                wall = {n: [] for n in settings}
                loads = [load()]
                for _ in range(reps):
                    for n in settings:
                        torch.set_num_threads(n)
                        wall[n].append(block(t, STEPS[preset])[0])
                    loads.append(load())
                med = {n: statistics.median(v) for n, v in wall.items()}
                best = min(med.values())
                case = {"preset": preset, "condition": condition, "idle_cores_at_start": idle,
                        "auto_picks": auto, "ms_per_critic_step_wall": med,
                        "blocks": wall, "load_1min": [min(loads), max(loads)],
                        "auto_vs_best": med[min(auto, cores)] / best}
                out["cases"].append(case)
                save(out, "threads.json")  # a long benchmark keeps what it measured
                print(f"{condition:5s} {preset:12s} " + "  ".join(
                    f"{n} thr {med[n]:8.2f} ms" for n in settings)
                      + f"  auto={auto} ({case['auto_vs_best']:.2f}x best)  load {loads}",
                      flush=True)
    torch.set_num_threads(1)
    return out


@contextmanager
def _nothing():
    yield


def bench_bf16(reps: int) -> dict:
    torch.set_num_threads(1)
    out = {"cases": []}
    for preset in PRESETS:
        ts = {amp: trainer(preset, "train.threads=1", f"train.amp={amp}")
              for amp in ("false", "bf16")}
        for t in ts.values():
            block(t, max(1, STEPS[preset] // 4))
        cpu = {amp: [] for amp in ts}
        wall = {amp: [] for amp in ts}
        loads = [load()]
        for _ in range(reps):
            for amp, t in ts.items():
                w, c = block(t, STEPS[preset])
                wall[amp].append(w)
                cpu[amp].append(c)
            loads.append(load())
        med = {amp: statistics.median(v) for amp, v in cpu.items()}
        case = {"preset": preset, "ms_per_critic_step_cpu": med,
                "ms_per_critic_step_wall": {a: statistics.median(v) for a, v in wall.items()},
                "speedup_cpu": med["false"] / med["bf16"], "load_1min": [min(loads), max(loads)]}
        out["cases"].append(case)
        print(f"{preset:12s} fp32 {med['false']:8.2f} ms  bf16 {med['bf16']:8.2f} ms  "
              f"speed-up {case['speedup_cpu']:.2f}x (thread CPU time)  load {loads}", flush=True)
    return out


def bench_jobs(reps: int, steps: int) -> dict:
    """Wall time of the same 4-run toy sweep with --jobs 1 and --jobs 2 (fresh folders)."""
    out = {"runs": 4, "generator_steps": steps, "wall_s": {"1": [], "2": []}, "load_1min": []}
    for _ in range(reps):
        for jobs in ("1", "2"):
            with tempfile.TemporaryDirectory() as d:
                cmd = [sys.executable, "-m", "wganlab", "compare", "--config", "toy",
                       "--constraints", "clip,gp", "--seeds", "0,1", "--generator-steps",
                       str(steps), "--no-final-eval", "--jobs", jobs, "--out", d,
                       "--set", "train.tensorboard=false",
                       "--set", "train.warmup_generator_steps=0"]
                out["load_1min"].append(load())
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                out["wall_s"][jobs].append(time.perf_counter() - t0)
                print(f"--jobs {jobs}: {out['wall_s'][jobs][-1]:.1f} s  load {load()}", flush=True)
    med = {j: statistics.median(v) for j, v in out["wall_s"].items()}
    out["median_wall_s"] = med
    out["ratio_jobs1_over_jobs2"] = med["1"] / med["2"]
    print(f"ratio --jobs 1 / --jobs 2: {out['ratio_jobs1_over_jobs2']:.2f}x")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["threads", "bf16", "jobs"])
    p.add_argument("--reps", type=int, default=5, help="alternating blocks per setting")
    p.add_argument("--steps", type=int, default=300, help="jobs: generator steps per run")
    args = p.parse_args()
    if args.what == "threads":
        res, name = bench_threads(args.reps), "threads.json"
    elif args.what == "bf16":
        res, name = bench_bf16(args.reps), "bf16_speed.json"
    else:
        res, name = bench_jobs(args.reps, args.steps), "jobs.json"
    save(res, name)
    print(f"written to {RESULTS / name}")


def save(res: dict, name: str) -> None:
    res.update({"cpu": _cpu_model(), "torch": torch.__version__,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(res, indent=1))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


if __name__ == "__main__":
    main()
